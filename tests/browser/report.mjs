// Drives a `pflow trace report` HTML file in Debian's Chromium through
// playwright-core, like a person would, and prints what it saw as one JSON
// object (tests/it/browser.rs asserts on it; benches/report-render.sh reads
// its timings).
//
//   node report.mjs interact REPORT.html SPAN_ID   click, double-click, back, deep link
//   node report.mjs render REPORT.html              time until the page has drawn
//   node report.mjs critical REPORT.html            the rows and bars marked as the critical path
//   node report.mjs details REPORT.html SPAN_ID    the details pane of #span=SPAN_ID, as text
import { launch } from "./chromium.mjs";
import { pathToFileURL } from "node:url";

const [mode, file, spanId] = process.argv.slice(2);
const url = pathToFileURL(file).href;

const browser = await launch();

try {
  const page = await browser.newPage();
  const details = () => page.locator("#details h3").first().textContent();
  const toolsText = () => page.locator(".wf-tools .muted").first().textContent();
  const out = {};

  if (mode === "render") {
    const t0 = Date.now();
    await page.goto(url, { waitUntil: "load" });
    await page.waitForSelector("body[data-rendered=true]", { timeout: 120000 });
    out.render_ms = Date.now() - t0;
    out.rows = Number(await page.getAttribute("body", "data-rows"));
  } else if (mode === "interact") {
    await page.goto(url);
    await page.waitForSelector("body[data-rendered=true]");
    out.rows = await page.locator(".row[data-id]").count();
    out.initial_details = (await page.locator("#details").innerText()).trim();

    // Click a row: its details open and the URL names it.
    const row = page.locator(`.row[data-id="${spanId}"]`);
    out.row_name = (await row.locator(".nm").textContent()).trim();
    await row.click();
    out.clicked_details = await details();
    out.clicked_selected = await row.evaluate((r) => r.classList.contains("selected"));
    out.hash_after_click = await page.evaluate(() => location.hash);

    // Double-click zooms the timeline to that span; Back restores the full view.
    out.tools_before = await toolsText();
    await page.locator(`.row[data-id="${spanId}"]`).dblclick();
    out.tools_zoomed = await toolsText();
    out.reset_button = await page.locator(".wf-tools button").count();
    await page.goBack();
    await page.waitForFunction(
      (before) => document.querySelector(".wf-tools .muted").textContent === before,
      out.tools_before,
      { timeout: 5000 },
    ).catch(() => {});
    out.tools_after_back = await toolsText();

    // A deep link opens the span in a fresh page.
    const fresh = await browser.newPage();
    await fresh.goto(`${url}#span=${spanId}`);
    await fresh.waitForSelector("body[data-rendered=true]");
    out.deep_link_details = await fresh.locator("#details h3").first().textContent();
    out.deep_link_selected = await fresh
      .locator(`.row[data-id="${spanId}"]`)
      .evaluate((r) => r.classList.contains("selected"));
  } else if (mode === "critical") {
    await page.goto(url);
    await page.waitForSelector("body[data-rendered=true]");
    // Every row as drawn: its name, whether it is marked, and the ring its bar shows.
    out.rows = await page.locator(".row[data-id]").evaluateAll((rows) =>
      rows.map((r) => {
        const bar = r.querySelector(".bar");
        return {
          name: r.querySelector(".nm").textContent.trim(),
          critical: r.classList.contains("critical"),
          bar_ring: getComputedStyle(bar).boxShadow,
          row_stripe: getComputedStyle(r).boxShadow,
          weight: getComputedStyle(r.querySelector(".nm")).fontWeight,
        };
      }),
    );
    out.chain = (await page.locator("#critical-path .chain").innerText()).trim();
    out.chain_visible = await page.locator("#critical-path .chain").isVisible();
    out.cache_section = await page.locator("#cache-savings").count();
    out.suggestions = await page.locator("#suggestions li").allInnerTexts();
  } else if (mode === "details") {
    await page.goto(`${url}#span=${spanId}`);
    await page.waitForSelector("body[data-rendered=true]");
    out.title = await details();
    out.text = await page.locator("#details").innerText();
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
  console.log(JSON.stringify(out));
} finally {
  await browser.close();
}
