// Debian's Chromium, headless, through playwright-core, with the background
// traffic switched off: what every page check here drives (PFLOW_CHROMIUM
// points elsewhere).
import { chromium } from "playwright-core";

export function launch() {
  return chromium.launch({
    executablePath: process.env.PFLOW_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-default-apps",
      "--no-first-run",
    ],
  });
}
