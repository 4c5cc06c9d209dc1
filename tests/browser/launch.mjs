// Headless Chromium for the browser tests (Debian's build: CHROMIUM), and a `fail` that
// reports, closes the browser and exits non-zero.
import { chromium } from "playwright-core";

export async function launch() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync"],
  });
  const fail = async (message) => { console.error(`FAIL: ${message}`); await browser.close(); process.exit(1); };
  return { browser, fail };
}
