//! Every workflow in `examples/` runs offline and succeeds.

use super::common::*;
use serde_json::json;
use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run_example(name: &str, extra: &[String]) -> serde_json::Value {
    let env = Env::new();
    let out_dir = env.dir.path().join("out");
    let mut cmd = env.pflow();
    cmd.current_dir(repo())
        .args(["run", "--trace", "--output-format", "json"])
        .arg(format!("examples/{name}"))
        .args(extra);
    let (v, code, stderr) = run_json(&mut cmd);
    assert_eq!(code, 0, "{name}: {v}\n{stderr}");
    assert!(v["trace_file"].is_string());
    let _ = out_dir;
    v
}

#[test]
fn hello() {
    let env_out = tempfile::tempdir().unwrap();
    let v = run_example(
        "hello.json",
        &[format!("out_dir={}", env_out.path().display())],
    );
    assert_eq!(v["result"]["lines"], json!(4));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env_out.path().join("report.json")).unwrap())
            .unwrap();
    // Numbers, not `[{"stdout": "12\n", …}]`: the transform nodes keep JSON types.
    assert_eq!(report["words_per_line"], json!([12, 10, 13, 8]));
    assert_eq!(report["lines"].as_array().unwrap().len(), 4);
    let ir = std::fs::read_to_string(repo().join("examples/hello.json")).unwrap();
    assert!(
        !ir.contains("\"type\": \"shell\""),
        "hello.json needs no shell pipeline"
    );
}

/// `${workflow.dir}`: the examples find their data from any directory.
#[test]
fn examples_run_from_any_directory() {
    let env = Env::new();
    let out_dir = env.dir.path().join("out");
    let mut cmd = env.pflow();
    cmd.current_dir(env.dir.path())
        .args(["run", "--output-format", "json"])
        .arg(repo().join("examples/hello.json"))
        .arg(format!("out_dir={}", out_dir.display()));
    let (v, code, stderr) = run_json(&mut cmd);
    assert_eq!(code, 0, "{v}\n{stderr}");
    assert_eq!(v["result"]["lines"], json!(4));
    let mut cmd = env.pflow();
    cmd.args(["run", "--output-format", "json"])
        .arg(repo().join("examples/nested.json"));
    let (v, code, stderr) = run_json(&mut cmd);
    assert_eq!(code, 0, "{v}\n{stderr}");
    assert_eq!(v["result"]["stats"]["words"], json!(43));
}

#[test]
fn parallel_batch() {
    let v = run_example("parallel-batch.json", &[]);
    assert_eq!(v["result"]["finished"], json!(6));
    // 6 × 0.2 s, three at a time: about 0.4 s, far below 1.2 s sequential.
    assert_eq!(
        v["metrics"]["workflow"]["node_timings"]
            .as_object()
            .unwrap()
            .len(),
        8
    );
}

#[test]
fn nested() {
    let v = run_example("nested.json", &[]);
    let message = v["result"]["message"].as_str().unwrap();
    assert!(
        message.ends_with("examples/data/notes.txt has 43 words") && message.starts_with('/'),
        "{message}"
    );
    assert_eq!(
        v["result"]["stats"],
        json!({"lines": 4, "words": 43, "chars": 244})
    );
}

#[test]
fn error_and_retry() {
    let d = tempfile::tempdir().unwrap();
    let v = run_example(
        "error-and-retry.json",
        &[format!("state_file={}", d.path().join("count").display())],
    );
    assert_eq!(v["result"]["flaky"], json!("succeeded on attempt 3\n"));
    assert!(v["result"]["recovery"]
        .as_str()
        .unwrap()
        .starts_with("fetch failed (exit_status)"));
}

#[test]
fn shell_http() {
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("python3 not installed: shell-http example needs it");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let v = run_example(
        "shell-http.json",
        &[
            format!("port={port}"),
            format!("pid_file={}", d.path().join("pid").display()),
        ],
    );
    assert_eq!(v["result"]["status"], json!(200));
    assert!(v["result"]["first_line"]
        .as_str()
        .unwrap()
        .starts_with("pflow runs AI workflows"));
}
