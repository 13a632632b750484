//! SIGINT/SIGTERM in the middle of a parallel batch: exit code, trace saved
//! with interrupted spans, and no orphaned child processes.

use super::common::*;
use serde_json::json;
use std::time::{Duration, Instant};

fn interrupt(signal: i32, expected: i32) {
    let env = Env::new();
    // A distinctive duration so we can look for orphans of this test only.
    let marker = format!("{}.{}", 40 + signal, std::process::id() % 1000);
    let p = env.workflow("slow.json", json!({"ir_version": "0.1.0", "nodes": [
        {"id": "fan", "type": "shell", "batch": {"items": [1, 2, 3], "parallel": true}, "params": {"command": format!("sleep {marker}; echo never")}}]}));
    let bin = assert_cmd::cargo::cargo_bin("pflow");
    let mut child = std::process::Command::new(bin)
        .env("PFLOW_HOME", env.home())
        .args(["--output-format", "json", "run"])
        .arg(&p)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the sleeps are running.
    let t = Instant::now();
    while count_procs(&marker) < 3 && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(count_procs(&marker), 3, "children did not start");
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(expected));
    let mut out = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["error"]["type"], json!("interrupted"));
    let files = env.trace_files();
    assert_eq!(files.len(), 1, "trace saved on interrupt");
    let (spans, _) = read_trace(&files[0]);
    let items: Vec<&SpanView> = spans
        .iter()
        .filter(|s| s.s("pflow.node.role") == "batch_item")
        .collect();
    assert_eq!(items.len(), 3);
    for s in spans
        .iter()
        .filter(|s| s.attr("pflow.node.status").is_some())
    {
        assert_eq!(s.s("pflow.node.status"), "interrupted", "{}", s.name);
        assert_eq!(s.status_code, 2);
    }
    let root = spans.iter().find(|s| s.parent.is_empty()).unwrap();
    assert_eq!(root.s("pflow.run.status"), "interrupted");
    assert_eq!(root.i("pflow.run.exit_code"), expected as i64);
    // The run history has it too, with its status and exit code.
    let conn = rusqlite::Connection::open(env.home().join("history.db")).unwrap();
    let row: (String, i64) = conn
        .query_row("SELECT status, exit_code FROM runs", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(row, ("interrupted".to_string(), expected as i64));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        count_procs(&marker),
        0,
        "orphaned child processes left behind"
    );
}

#[test]
fn sigint_mid_batch() {
    interrupt(libc::SIGINT, 130);
}

#[test]
fn sigterm_mid_batch() {
    interrupt(libc::SIGTERM, 143);
}
