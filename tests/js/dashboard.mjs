// Opens the operator dashboard in headless Chromium, with the operator key as
// HTTP Basic credentials, waits for its numbers, prints them as JSON and
// saves a screenshot.
// usage: node dashboard.mjs BASE_URL OPERATOR_KEY SCREENSHOT_PATH
import { chromium } from "playwright-core";

const [base, key, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const context = await browser.newContext({
    httpCredentials: { username: "operator", password: key },
    viewport: { width: 1280, height: 860 },
  });
  const page = await context.newPage();
  const response = await page.goto(`${base}/ops/dashboard`);
  if (!response.ok()) throw new Error(`dashboard answered ${response.status()}`);
  await page.waitForSelector("body[data-loaded=true]", { timeout: 15000 });
  const numbers = await page.evaluate(() =>
    Object.fromEntries(
      [...document.querySelectorAll("[data-testid]")].map((node) => [node.dataset.testid, node.textContent.trim()]),
    ),
  );
  numbers.bars = await page.evaluate(() => document.querySelectorAll("#timeline rect, #share rect").length);
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify(numbers));
} finally {
  await browser.close();
}
