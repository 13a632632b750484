// Loads a `pflow stats report` page in Debian's Chromium through
// playwright-core and prints what it saw as one JSON object
// (tests/it/stats_report.rs asserts on it): every table's rows with their
// shown text and raw `data-v` values, the suggestions, the CSP, any request
// that left the file and any CSP violation, and the day chart's switch.
//
//   node stats.mjs STATS.html
import { launch } from "./chromium.mjs";
import { pathToFileURL } from "node:url";

const [file] = process.argv.slice(2);
const url = pathToFileURL(file).href;

const browser = await launch();

try {
  const page = await browser.newPage();
  const requests = [];
  page.on("request", (r) => requests.push(r.url()));
  await page.addInitScript(() => {
    window.__violations = [];
    document.addEventListener("securitypolicyviolation", (e) =>
      window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`),
    );
  });
  await page.goto(url, { waitUntil: "load" });
  await page.waitForSelector("body[data-rendered=true]", { timeout: 30000 });
  const out = {};
  out.csp = await page.getAttribute('meta[http-equiv="Content-Security-Policy"]', "content");
  out.title = await page.title();
  out.cards = await page.$$eval(".card", (cs) =>
    cs.map((c) => [c.querySelector(".card-label").textContent, c.querySelector(".card-value").textContent]),
  );
  out.tables = await page.$$eval("table.grid[id]", (ts) =>
    Object.fromEntries(
      ts.map((t) => [
        t.id,
        [...t.querySelectorAll("tbody tr")].map((tr) => ({
          key: tr.dataset.key,
          cells: Object.fromEntries(
            [...tr.querySelectorAll("td[data-k]")].map((td) => [
              td.dataset.k,
              { v: td.dataset.v, text: td.textContent },
            ]),
          ),
        })),
      ]),
    ),
  );
  out.suggestions = await page.$$eval("#suggestions li", (ls) =>
    ls.map((l) => ({
      kind: l.dataset.kind,
      workflow: l.dataset.workflow,
      node: l.dataset.node,
      text: l.querySelector(".why").textContent,
    })),
  );
  out.day_bars = await page.locator("#day-chart .col").count();
  out.metric_before = await page.getAttribute("#day-chart", "data-metric");
  await page.click('.chart-tools button[data-metric="tokens"]');
  out.metric_after_click = await page.getAttribute("#day-chart", "data-metric");
  out.token_bar_visible = await page.locator("#day-chart .bar-v.tokens").first().isVisible();
  out.cost_bar_visible = await page.locator("#day-chart .bar-v.cost").first().isVisible();
  out.requests = requests.filter((u) => u !== url);
  out.violations = await page.evaluate(() => window.__violations);
  console.log(JSON.stringify(out));
} finally {
  await browser.close();
}
