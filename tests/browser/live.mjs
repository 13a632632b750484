// Watches `pflow run … --live`'s page in Debian's Chromium while the run goes
// and prints what it saw as one JSON object (tests/it/browser.rs asserts on it).
//
//   node live.mjs URL GO_FILE
//
// The run's middle node waits for GO_FILE: the page is checked mid-run (the
// first node's row drawn, the run still going), then GO_FILE is created and
// the page is checked again once the `end` event has arrived.
import { chromium } from "playwright-core";
import { writeFileSync } from "node:fs";

const [url, goFile] = process.argv.slice(2);

const browser = await chromium.launch({
  executablePath: process.env.PFLOW_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
    "--disable-default-apps", "--no-first-run"],
});

try {
  const page = await browser.newPage();
  const out = { console_errors: [], requests: [] };
  page.on("console", (m) => { if (m.type() === "error") out.console_errors.push(m.text()); });
  page.on("request", (r) => out.requests.push(r.url()));
  const rows = () => page.locator("#waterfall tr").count();
  const text = async (sel) => ((await page.locator(sel).first().textContent()) || "").trim();

  await page.goto(url);
  // Mid-run: the first node's row is drawn while the run waits for GO_FILE.
  await page.waitForSelector('#waterfall tr[data-kind="node"]', { timeout: 30000 });
  out.mid_state = await page.getAttribute("body", "data-state");
  out.mid_rows = await rows();
  out.mid_badge = await text("#badge");
  out.mid_names = await page.locator("#waterfall td.name").allTextContents();
  out.mid_bar_width = await page.locator("#waterfall .bar").first().evaluate((b) => b.getBoundingClientRect().width);
  out.title = await text("#title");

  writeFileSync(goFile, "go");
  await page.waitForSelector("body[data-state=ended]", { timeout: 30000 });
  out.end_rows = await rows();
  out.end_badge = await text("#badge");
  out.end_names = await page.locator("#waterfall td.name").allTextContents();
  out.end_file = await text("#file");
  out.end_calls = await text("#calls");
  out.end_tokens = await text("#tokens");
  out.end_status = await page.getAttribute("body", "data-status");
  // Bars are laid out on the run's time axis: the last node starts right of the first.
  out.bar_lefts = await page.locator("#waterfall tr[data-kind=node] .bar")
    .evaluateAll((bs) => bs.map((b) => b.getBoundingClientRect().left));
  console.log(JSON.stringify(out));
} finally {
  await browser.close();
}
