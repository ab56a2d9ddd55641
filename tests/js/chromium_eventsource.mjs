// Reads our stream with headless Chromium's own EventSource, opened from a
// page on the API's origin with a short-lived stream ticket (browsers cannot
// send an Authorization header on EventSource). Prints {type, id, data} lines.
// usage: node chromium_eventsource.mjs ORIGIN TICKET COUNT TYPE [TYPE...]
import { chromium } from "playwright-core";

const [origin, ticket, count, ...types] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
try {
  const page = await browser.newPage();
  await page.goto(`${origin}/healthz`);
  const seen = await page.evaluate(
    ({ ticket, wanted, types }) =>
      new Promise((resolve, reject) => {
        const seen = [];
        const source = new EventSource(`/v3/realtime/stream?ticket=${encodeURIComponent(ticket)}`);
        setTimeout(() => reject(new Error(`timed out after ${seen.length} events`)), 30000);
        for (const type of types) {
          source.addEventListener(type, (event) => {
            seen.push({ type: event.type, id: event.lastEventId, data: event.data });
            if (seen.length >= wanted) {
              source.close();
              resolve(seen);
            }
          });
        }
      }),
    { ticket, wanted: Number(count), types },
  );
  for (const item of seen) console.log(JSON.stringify(item));
} finally {
  await browser.close();
}
