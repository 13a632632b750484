//! Large runs: the trace file cap (`PFLOW_TRACE_MAX_BYTES`) for `--trace`
//! and for the in-memory trace a failed run saves.

use super::common::{read_trace, run_json, Env};
use serde_json::{json, Value};
use std::path::Path;

const CAP: u64 = 200_000;

fn chain(n: usize, fail_at_end: bool) -> Value {
    let mut nodes = vec![json!({"id": "n0", "type": "echo", "params": {"value": 0}})];
    let mut edges = vec![];
    for i in 1..n {
        nodes.push(json!({"id": format!("n{i}"), "type": "echo",
            "params": {"value": i, "text": format!("after ${{n{}.value}}", i - 1)}}));
        edges.push(json!({"from": format!("n{}", i - 1), "to": format!("n{i}")}));
    }
    if fail_at_end {
        nodes.push(json!({"id": "boom", "type": "shell", "params": {"command": "exit 3"}}));
        edges.push(json!({"from": format!("n{}", n - 1), "to": "boom"}));
    }
    json!({"ir_version": "0.1.0", "metadata": {"name": "big"}, "nodes": nodes, "edges": edges})
}

/// Checks the capped file: at most the cap plus the run span's line, the note
/// on the run span, and the dropped count matching what is missing.
fn check_capped(path: &Path, warnings: &str, total_spans: i64) {
    let text = std::fs::read_to_string(path).unwrap();
    let last_line = text.lines().last().unwrap().len() as u64 + 1;
    assert!(
        text.len() as u64 <= CAP + last_line,
        "{} bytes > cap {CAP} + last line {last_line}",
        text.len()
    );
    assert!(
        text.len() as u64 - last_line <= CAP,
        "spans past the cap were written"
    );
    let (spans, _) = read_trace(path);
    let run = spans
        .iter()
        .find(|s| s.attr("pflow.trace.truncated").is_some())
        .expect("run span carries the truncation note");
    assert_eq!(run.attr("pflow.trace.truncated"), Some(&json!(true)));
    assert!(
        run.attr("pflow.run.status").is_some(),
        "the note is on the run span"
    );
    let dropped = run.i("pflow.trace.dropped_spans");
    assert!(dropped > 0);
    assert_eq!(spans.len() as i64 + dropped, total_spans);
    assert!(
        warnings.contains(&format!("{dropped} spans not written")),
        "{warnings}"
    );
    assert!(warnings.contains("trace capped at 195.3 KiB"), "{warnings}");
}

#[test]
fn a_traced_run_past_the_cap_writes_a_capped_file_and_says_so() {
    let env = Env::new();
    let wf = env.workflow("big.json", chain(2000, false));
    let (v, code, _) = run_json(
        env.pflow()
            .env("PFLOW_TRACE_MAX_BYTES", CAP.to_string())
            .args(["--trace", "--output-format", "json"])
            .arg(&wf),
    );
    assert_eq!(code, 0, "{v}");
    // The live metrics saw every span.
    assert_eq!(v["metrics"]["workflow"]["nodes_executed"], json!(2000));
    let warnings = v["warnings"].to_string();
    let path = v["trace_file"].as_str().expect("trace saved");
    // 2000 node spans, the workflow span and the run span.
    check_capped(Path::new(path), &warnings, 2002);

    let out = env
        .pflow()
        .args(["trace", "summary", "last"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("this trace is incomplete"), "{stderr}");
    let shown = env
        .pflow()
        .args(["trace", "show", "last"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&shown.stdout).contains("this trace is incomplete"));
}

#[test]
fn the_in_memory_trace_of_a_failed_run_obeys_the_same_cap() {
    let env = Env::new();
    let wf = env.workflow("big.json", chain(2000, true));
    let (v, code, _) = run_json(
        env.pflow()
            .env("PFLOW_TRACE_MAX_BYTES", CAP.to_string())
            .args(["--output-format", "json"])
            .arg(&wf),
    );
    assert_eq!(code, 1, "exit code of a failed run is unchanged: {v}");
    assert_eq!(v["metrics"]["workflow"]["nodes_executed"], json!(2001));
    let path = v["trace_file"]
        .as_str()
        .expect("failed run saves its trace");
    check_capped(Path::new(path), &v["warnings"].to_string(), 2003);
}

#[test]
fn a_run_under_the_cap_is_complete_and_a_bad_cap_warns() {
    let env = Env::new();
    let wf = env.workflow("small.json", chain(20, false));
    let (v, code, _) = run_json(
        env.pflow()
            .env("PFLOW_TRACE_MAX_BYTES", "lots")
            .args(["--trace", "--output-format", "json"])
            .arg(&wf),
    );
    assert_eq!(code, 0);
    let warnings = v["warnings"].to_string();
    assert!(
        warnings.contains("PFLOW_TRACE_MAX_BYTES=`lots`"),
        "{warnings}"
    );
    assert!(!warnings.contains("trace capped"), "{warnings}");
    let (spans, _) = read_trace(Path::new(v["trace_file"].as_str().unwrap()));
    assert_eq!(spans.len(), 22);
    assert!(spans
        .iter()
        .all(|s| s.attr("pflow.trace.truncated").is_none()));
}

/// A 600-item batch once wrote a 1,084,472-byte line (512 item spans), past
/// the 1 MiB the Collector's file reader takes: lines are capped by bytes too.
#[test]
fn a_600_item_batch_writes_no_line_over_the_line_limit() {
    let env = Env::new();
    let items: Vec<u32> = (0..600).collect();
    let wf = json!({"ir_version": "0.1.0", "nodes": [
        {"id": "fan", "type": "echo", "batch": {"items": items, "parallel": true},
         "params": {"text": format!("item ${{item}} {}", "x".repeat(1500))}}]});
    let p = env.workflow("wide.json", wf);
    let (_, code, stderr) = run_json(env.pflow().args([
        "--output-format",
        "json",
        "run",
        p.to_str().unwrap(),
        "--trace",
    ]));
    assert_eq!(code, 0, "{stderr}");
    let files = env.trace_files();
    assert_eq!(files.len(), 1, "{files:?}");
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(
        text.len() > 1024 * 1024,
        "the trace is big enough to matter"
    );
    for (i, line) in text.lines().enumerate() {
        assert!(
            line.len() <= pflow::telemetry::file::LINE_MAX_BYTES,
            "line {} is {} bytes",
            i + 1,
            line.len()
        );
    }
    let (spans, _) = read_trace(&files[0]);
    let items = spans
        .iter()
        .filter(|s| s.s("pflow.node.role") == "batch_item")
        .count();
    assert_eq!(items, 600, "every item span is in the file");
}
