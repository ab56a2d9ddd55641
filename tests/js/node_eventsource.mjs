// Reads our stream with npm's `eventsource` (a WHATWG-compliant client) and
// prints each dispatched event as one JSON line: {type, id, data}.
// usage: node node_eventsource.mjs URL TOKEN COUNT TYPE [TYPE...]
import { EventSource } from "eventsource";

const [url, token, count, ...types] = process.argv.slice(2);
const wanted = Number(count);
const seen = [];

const source = new EventSource(url, {
  fetch: (input, init) =>
    fetch(input, { ...init, headers: { ...init.headers, Authorization: `Bearer ${token}` } }),
});
const timer = setTimeout(() => {
  console.error(`timed out after ${seen.length} events`);
  process.exit(2);
}, 30000);

for (const type of types) {
  source.addEventListener(type, (event) => {
    seen.push({ type: event.type, id: event.lastEventId, data: event.data });
    if (seen.length >= wanted) {
      source.close();
      clearTimeout(timer);
      for (const item of seen) console.log(JSON.stringify(item));
    }
  });
}
source.onerror = (error) => console.error("eventsource error", error.message ?? error);
