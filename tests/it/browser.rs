//! `pflow trace report` clicked in a real browser: playwright-core (npm,
//! `tests/browser/`) drives Debian's Chromium headless. Clicking a waterfall
//! row opens its details and names it in the URL, double-click zooms the
//! timeline and the browser's Back restores it, and a `#span=ID` link opens
//! that span. Needs node, `npm ci` in tests/browser and /usr/bin/chromium
//! (.ci/run provides all three; missing on CI fails).

use super::common::{pflow_ok, repo, tool_present, Env};
use serde_json::Value;
use std::process::Command;

/// The `chat gpt-4o` span of the `ask` node in the fixture trace.
const ASK_LLM_SPAN: &str = "fb8d41ef9b7ef44c";
const TRACE: &str =
    "tests/fixtures/traces/20261201T190339.377Z_e4dc5f3657d643f701f02e0e78d8b794.otlp.json";

pub fn browser_ready() -> bool {
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let present = node
        && repo("tests/browser/node_modules/playwright-core").is_dir()
        && std::path::Path::new("/usr/bin/chromium").exists();
    tool_present(
        present,
        "node, playwright-core (`npm ci` in tests/browser) and /usr/bin/chromium",
    )
}

#[test]
fn the_report_responds_to_clicks_double_clicks_back_and_deep_links() {
    if !browser_ready() {
        return;
    }
    let env = Env::new();
    let html = env.dir.path().join("report.html");
    pflow_ok(
        env.pflow()
            .args(["trace", "report"])
            .arg(repo(TRACE))
            .arg("-o")
            .arg(&html),
    );
    let out = Command::new("node")
        .current_dir(repo("tests/browser"))
        .args(["report.mjs", "interact"])
        .arg(&html)
        .arg(ASK_LLM_SPAN)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let s = |k: &str| seen[k].as_str().unwrap_or_default().trim().to_string();
    assert!(seen["rows"].as_u64() > Some(1), "{seen}");
    assert!(s("initial_details").starts_with("Click a span"), "{seen}");
    // Click: the row's own details, the row marked, the URL names the span.
    assert_eq!(s("clicked_details"), s("row_name"), "{seen}");
    assert_eq!(s("clicked_details"), "chat gpt-4o");
    assert_eq!(seen["clicked_selected"], true);
    assert_eq!(s("hash_after_click"), format!("#span={ASK_LLM_SPAN}"));
    // Double-click zooms (the bar says which window), Back restores the whole run.
    assert!(s("tools_before").starts_with("Click a span"), "{seen}");
    assert!(s("tools_zoomed").starts_with("Showing "), "{seen}");
    assert_eq!(seen["reset_button"], 1, "{seen}");
    assert_eq!(s("tools_after_back"), s("tools_before"), "{seen}");
    // Deep link.
    assert_eq!(s("deep_link_details"), "chat gpt-4o", "{seen}");
    assert_eq!(seen["deep_link_selected"], true);
}
