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

/// Node, playwright-core and Chromium are there (else skip, or fail on CI).
pub(super) fn browser_ready() -> bool {
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

/// Runs a script of tests/browser with `args`; what it printed, as JSON.
pub(super) fn node_script(script: &str, args: &[&std::ffi::OsStr]) -> Value {
    let out = Command::new("node")
        .current_dir(repo("tests/browser"))
        .arg(script)
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
    let seen = node_script(
        "report.mjs",
        &["interact".as_ref(), html.as_os_str(), ASK_LLM_SPAN.as_ref()],
    );
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

/// `pflow run … --live`'s page in a real browser: mid-run it already draws the
/// spans that ended, and once the run ends it shows the result; it fetches
/// nothing but its own page and event stream.
#[test]
fn the_live_page_draws_the_waterfall_as_the_run_goes() {
    if !browser_ready() {
        return;
    }
    let env = Env::new();
    let go = env.dir.path().join("go");
    let wf = env.workflow(
        "live.json",
        serde_json::json!({"ir_version": "0.1.0", "metadata": {"name": "live-page"},
            "nodes": [
                {"id": "first", "type": "shell", "params": {"command": "echo one"}},
                {"id": "gate", "type": "shell", "params": {"command": format!(
                    "for i in $(seq 600); do [ -f '{}' ] && exit 0; sleep 0.1; done; exit 9", go.display())}},
                {"id": "ask", "type": "llm", "params": {"model": "echo", "prompt": "hello"}},
                {"id": "last", "type": "shell", "params": {"command": "echo done"}}
            ],
            "edges": [{"from": "first", "to": "gate"}, {"from": "gate", "to": "ask"}, {"from": "ask", "to": "last"}]}),
    );
    let mut run = std::process::Command::new(assert_cmd::cargo::cargo_bin("pflow"))
        .env("PFLOW_HOME", env.home())
        .env_remove("OTEL_SDK_DISABLED")
        .current_dir(env.dir.path())
        .args(["run", wf.to_str().unwrap(), "--live", "--trace"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(run.stderr.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut err, &mut first).unwrap();
    let url = first
        .strip_prefix("live view: ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("{first}"))
        .to_string();
    let out = Command::new("node")
        .current_dir(repo("tests/browser"))
        .arg("live.mjs")
        .arg(&url)
        .arg(&go)
        .output()
        .expect("node runs");
    // Whatever the browser saw, the run must end on its own.
    std::fs::write(&go, "go").unwrap();
    let status = run.wait().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(status.success());
    let seen: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let s = |k: &str| seen[k].as_str().unwrap_or_default().to_string();
    // Mid-run: running, the first node drawn, the gate not yet.
    assert_eq!(s("mid_state"), "running", "{seen}");
    assert_eq!(s("mid_badge"), "running", "{seen}");
    assert!(s("title").ends_with("live.json"), "{seen}");
    let mid: Vec<&str> = seen["mid_names"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(mid.contains(&"node first"), "{seen}");
    assert!(!mid.contains(&"node gate"), "{seen}");
    assert!(seen["mid_bar_width"].as_f64() > Some(0.0), "{seen}");
    // The end: every span, the result and where the trace went.
    let end: Vec<&str> = seen["end_names"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for name in [
        "pflow run",
        "invoke_workflow live-page",
        "node first",
        "node gate",
        "node ask",
        "chat echo",
        "node last",
    ] {
        assert!(end.contains(&name), "{name} missing: {seen}");
    }
    assert_eq!(
        end[0], "pflow run",
        "rows in start order, the run first: {seen}"
    );
    assert_eq!(s("end_badge"), "✓ ok", "{seen}");
    assert_eq!(s("end_status"), "ok");
    assert_eq!(s("end_calls"), "1");
    assert!(
        s("end_file").starts_with("saved ") && s("end_file").ends_with(".otlp.json"),
        "{seen}"
    );
    let lefts: Vec<f64> = seen["bar_lefts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert!(lefts.len() == 4 && lefts[3] > lefts[0], "{seen}");
    // Nothing but the page and its stream was fetched; no script error.
    for r in seen["requests"].as_array().unwrap() {
        let r = r.as_str().unwrap();
        assert!(r == url || r == format!("{url}events"), "fetched {r}");
    }
    assert_eq!(seen["console_errors"], serde_json::json!([]), "{seen}");
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
    let seen = node_script("report.mjs", &["critical".as_ref(), html.as_os_str()]);
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
