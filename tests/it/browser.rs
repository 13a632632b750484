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

fn browser_ready() -> bool {
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

/// Runs `node report.mjs ARGS…` and parses the one JSON object it prints.
fn drive(args: &[&str]) -> Value {
    let out = Command::new("node")
        .current_dir(repo("tests/browser"))
        .arg("report.mjs")
        .args(args)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
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
    let seen = drive(&["interact", &html.display().to_string(), ASK_LLM_SPAN]);
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

/// The critical path drawn in Chromium: a chain with a slow node and a
/// batch capped at two slots. Every span on the path (and only those) has
/// the ring on its bar and the stripe on its row; fan[1], which ran beside
/// the path, has neither; the section under the timeline names the chain.
#[test]
fn the_report_highlights_the_critical_path() {
    if !browser_ready() {
        return;
    }
    let env = Env::new();
    let wf = env.workflow(
        "chain.json",
        serde_json::json!({"ir_version": "0.1.0", "metadata": {"name": "chain"}, "nodes": [
            {"id": "a", "type": "shell", "params": {"command": "echo start"}},
            {"id": "slow", "type": "shell", "params": {"command": "sleep 1"}},
            {"id": "fan", "type": "shell", "batch": {"items": [0.2, 1.0, 0.4, 0.9], "parallel": true, "max_concurrent": 2},
             "params": {"command": "sleep ${item}"}},
            {"id": "c", "type": "shell", "params": {"command": "echo done"}}],
          "edges": [{"from": "a", "to": "slow"}, {"from": "slow", "to": "fan"}, {"from": "fan", "to": "c"}]}),
    );
    assert!(wf.ends_with("chain.json"));
    // By its relative name (the run span names the file as given).
    pflow_ok(env.pflow().args(["--trace", "chain.json"]));
    let html = env.dir.path().join("report.html");
    pflow_ok(
        env.pflow()
            .args(["trace", "report", "last", "-o"])
            .arg(&html),
    );
    let seen = drive(&["critical", &html.display().to_string()]);
    let rows = seen["rows"].as_array().unwrap();
    let marked: Vec<&str> = rows
        .iter()
        .filter(|r| r["critical"] == true)
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        marked,
        [
            "pflow run chain.json",
            "invoke_workflow chain",
            "node a",
            "node slow",
            "node fan",
            "node fan[0]",
            "node fan[2]",
            "node fan[3]",
            "node c"
        ],
        "{seen}"
    );
    for r in rows {
        let drawn = r["bar_ring"] != "none" && r["row_stripe"] != "none";
        assert_eq!(drawn, r["critical"] == true, "{r}");
    }
    let off = rows.iter().find(|r| r["name"] == "node fan[1]").unwrap();
    assert_eq!(
        (off["critical"].as_bool(), off["weight"].as_str()),
        (Some(false), Some("400"))
    );
    assert_eq!(seen["chain_visible"], true);
    let chain = seen["chain"].as_str().unwrap();
    assert!(
        chain.contains("a ") && chain.contains("slow 1.") && chain.contains("[fan[0] "),
        "{chain}"
    );
    let suggestions = seen["suggestions"].as_array().unwrap();
    assert!(
        suggestions
            .iter()
            .any(|s| s.as_str().unwrap().contains("max_concurrent of 2")),
        "{seen}"
    );
}
