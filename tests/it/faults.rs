//! Fault injection: the trace directory unwritable, full or deleted; nodes
//! that panic or hang; signals in a parallel batch with queued items; LLM
//! providers that refuse, reset, truncate, answer garbage or rate-limit; and
//! 200 concurrent calls. The run's result and exit code never depend on the
//! trace; every attempt is a span and every billed token is counted.

use super::common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

// ---------------------------------------------------------------- helpers

/// A std `Command` running `pflow` like `Env::pflow`, optionally under a
/// file-size limit (`ulimit -f BLOCKS`, 512-byte blocks).
fn pflow_cmd(env: &Env, ulimit_blocks: Option<u32>) -> Command {
    let bin = assert_cmd::cargo::cargo_bin("pflow");
    let mut c = match ulimit_blocks {
        Some(b) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("ulimit -f {b}; exec \"$0\" \"$@\""))
                .arg(bin);
            c
        }
        None => Command::new(bin),
    };
    for (k, _) in std::env::vars() {
        if k.starts_with("OTEL_") || k.starts_with("PFLOW_") {
            c.env_remove(k);
        }
    }
    c.env("PFLOW_HOME", env.home()).current_dir(env.dir.path());
    c
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}); status {:?}; stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Every file in the trace directory (temp files included).
fn dir_entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => vec![],
    }
}

/// A workflow whose trace is far bigger than a few KiB (600 item spans, so
/// a full line of 512 spans is written while the batch still runs), and
/// that succeeds or fails (exit 1) as asked.
fn big_workflow(fail: bool) -> Value {
    let items: Vec<u32> = (0..600).collect();
    let mut nodes = vec![
        json!({"id": "fan", "type": "echo", "batch": {"items": items, "parallel": true},
        "params": {"text": format!("item ${{item}} {}", "x".repeat(200))}}),
    ];
    if fail {
        nodes.push(json!({"id": "boom", "type": "shell", "params": {"command": "echo broken >&2; exit 3"}}));
    }
    let edges: Vec<Value> = if fail {
        vec![json!({"from": "fan", "to": "boom"})]
    } else {
        vec![]
    };
    json!({"ir_version": "0.1.0", "nodes": nodes, "edges": edges, "outputs": {"count": {"source": "${fan.count}"}}})
}

/// The result, error type and exit code of a normal run, to compare with.
fn baseline(wf: &Value, args: &[&str]) -> (Value, Value, i32) {
    let env = Env::new();
    let p = env.workflow("wf.json", wf.clone());
    let out = pflow_cmd(&env, None)
        .args(args)
        .args(["--output-format", "json", "run"])
        .arg(&p)
        .output()
        .unwrap();
    let v = json_of(&out);
    (
        v["result"].clone(),
        v["error"]["type"].clone(),
        out.status.code().unwrap(),
    )
}

/// Runs `wf` with a broken trace directory and checks the contract: same
/// result and exit code as a normal run, exactly one warning (about the
/// trace, containing `needle`), no trace file, nothing left in the directory.
fn same_run_one_warning(env: &Env, ulimit: Option<u32>, needle: &str, extra: &[(&str, &str)]) {
    for (fail, args) in [(false, vec!["--trace"]), (true, vec![])] {
        let wf = big_workflow(fail);
        let (want_result, want_error, want_code) = baseline(&wf, &args);
        let p = env.workflow("wf.json", wf);
        let out = pflow_cmd(env, ulimit)
            .envs(extra.iter().copied())
            .args(&args)
            .args(["--output-format", "json", "run"])
            .arg(&p)
            .output()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), None, "pflow killed by a signal");
        assert_eq!(out.status.code(), Some(want_code), "fail={fail}");
        let v = json_of(&out);
        assert_eq!(v["result"], want_result);
        assert_eq!(v["error"]["type"], want_error);
        assert_eq!(v["trace_file"], Value::Null);
        let warnings = v["warnings"].as_array().unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let w = warnings[0].as_str().unwrap();
        assert!(w.contains("trace") && w.contains(needle), "{w}");
        assert_eq!(dir_entries(&env.traces_dir()), Vec::<String>::new());
    }
}

/// A tmpfs mounted for the test, unmounted when dropped (before the temp dir goes).
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, opts: &str) -> Result<Mount, String> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Mount(dir.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Waits (bounded) for processes to be reaped; returns how many are left.
fn procs_after_reaping(marker: &str) -> usize {
    let t = Instant::now();
    while count_procs(marker) > 0 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    count_procs(marker)
}

fn trace_of(v: &Value) -> Vec<SpanView> {
    read_trace(Path::new(v["trace_file"].as_str().expect("trace_file"))).0
}

// ---------------------------------------------------------------- the trace directory

#[test]
fn file_size_limit_fails_the_trace_not_the_run() {
    // ulimit -f 8: 4 KiB per file. Without a SIGXFSZ handler the kernel kills
    // pflow at the first write past it (exit 153, temp file left behind).
    let env = Env::new();
    let p = env.workflow("wf.json", big_workflow(false));
    // The history database and the checkpoint would fail under the same
    // limit: keep this test about the trace.
    let mut c = pflow_cmd(&env, Some(8));
    c.env("PFLOW_HISTORY", "off")
        .env("PFLOW_CHECKPOINTS", "off");
    let out = c.args(["--trace", "run"]).arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "600\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("File too large"), "{stderr}");
    assert_eq!(dir_entries(&env.traces_dir()), Vec::<String>::new());

    // JSON mode, a succeeding run with --trace and a failing run (trace kept
    // in memory, written at the end): same results as without the limit.
    same_run_one_warning(
        &env,
        Some(8),
        "File too large",
        &[("PFLOW_HISTORY", "off"), ("PFLOW_CHECKPOINTS", "off")],
    );
}

#[test]
fn shell_commands_keep_the_default_file_size_signal() {
    // pflow catches SIGXFSZ; a caught signal is reset on exec, so a command
    // past the limit is still killed by it (128 + 25) as it would be outside pflow.
    let env = Env::new();
    let p = env.workflow(
        "wf.json",
        json!({"ir_version": "0.1.0", "nodes": [{"id": "big", "type": "shell",
        "params": {"command": "head -c 100000 /dev/zero > big.bin; echo status=$?"}}],
        "outputs": {"out": {"source": "${big.stdout}"}}}),
    );
    let mut c = pflow_cmd(&env, Some(8));
    c.env("PFLOW_HISTORY", "off");
    let out = c
        .args(["--output-format", "json", "run"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(json_of(&out)["result"]["out"], json!("status=153\n"));
}

#[test]
fn full_tmpfs_trace_directory() {
    let env = Env::new();
    let _mount = match Mount::tmpfs(&env.traces_dir(), "size=16k,mode=0700") {
        Ok(m) => m,
        Err(e) => {
            eprintln!("skipped: cannot mount a tmpfs ({e}); the ulimit test covers a full disk");
            return;
        }
    };
    // History lives beside, on the real disk: the trace is the only casualty.
    same_run_one_warning(&env, None, "No space left on device", &[]);
}

#[test]
fn read_only_trace_directory() {
    // Root ignores permission bits, so a read-only mount (EROFS) it is; a
    // regular file in the way of the home directory is covered in run.rs.
    let env = Env::new();
    let _mount = match Mount::tmpfs(&env.traces_dir(), "ro,size=16k") {
        Ok(m) => m,
        Err(e) => {
            eprintln!("skipped: cannot mount a read-only tmpfs ({e})");
            return;
        }
    };
    same_run_one_warning(&env, None, "Read-only file system", &[]);
}

#[test]
fn trace_directory_deleted_during_the_run_still_gets_the_trace() {
    let env = Env::new();
    let p = env.workflow("wf.json", json!({"ir_version": "0.1.0", "nodes": [
        {"id": "clean", "type": "shell", "params": {"command": "rm -rf \"$PFLOW_HOME/traces\"; echo gone"}},
        {"id": "after", "type": "echo", "params": {"v": "${clean.stdout}"}}],
        "edges": [{"from": "clean", "to": "after"}],
        "outputs": {"out": {"source": "${after.v}"}}}));
    let out = pflow_cmd(&env, None)
        .env("PFLOW_HISTORY", "off")
        .args(["--trace", "--output-format", "json", "run"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v = json_of(&out);
    assert_eq!(v["result"]["out"], json!("gone\n"));
    assert_eq!(v["warnings"], json!([]));
    let spans = trace_of(&v);
    assert!(
        spans.iter().any(|s| s.name == "node after"),
        "whole trace kept"
    );
    let entries = dir_entries(&env.traces_dir());
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(entries[0].ends_with(".otlp.json"));
}

// ---------------------------------------------------------------- nodes

#[test]
fn a_panicking_node_fails_cleanly_and_keeps_its_trace() {
    let env = Env::new();
    // A lone node: the run fails (exit 1) with error type `panic`.
    let p = env.workflow(
        "wf.json",
        json!({"ir_version": "0.1.0", "nodes": [
        {"id": "bad", "type": "echo", "params": {"debug_panic": "kaboom"}}]}),
    );
    let (v, code, _) = run_json(env.pflow().args(["--output-format", "json"]).arg(&p));
    assert_eq!(code, 1);
    assert_eq!(v["error"]["type"], json!("panic"));
    assert!(
        v["error"]["message"].as_str().unwrap().contains("kaboom"),
        "{v}"
    );
    let spans = trace_of(&v);
    let bad = by_name(&spans, "node bad");
    assert_eq!(bad.s("pflow.node.status"), "error");
    assert_eq!(bad.s("error.type"), "panic");
    let root = spans.iter().find(|s| s.parent.is_empty()).unwrap();
    assert_eq!(root.s("pflow.run.status"), "failed");

    // One parallel item panics under `continue`: the others finish, the run goes on.
    let p = env.workflow("batch.json", json!({"ir_version": "0.1.0", "nodes": [
        {"id": "fan", "type": "echo", "batch": {"items": [false, "item one blew up", false], "parallel": true, "error_handling": "continue"},
         "params": {"debug_panic": "${item}", "i": "${__index__}"}}],
        "outputs": {"failed": {"source": "${fan.failed}"}}}));
    let (v, code, _) = run_json(
        env.pflow()
            .args(["--trace", "--output-format", "json"])
            .arg(&p),
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["result"]["failed"], json!(1));
    let spans = trace_of(&v);
    let status = |path: &str| {
        let s = spans
            .iter()
            .find(|s| s.s("pflow.node.path") == path)
            .unwrap();
        (
            s.s("pflow.node.status").to_string(),
            s.s("error.type").to_string(),
        )
    };
    assert_eq!(status("fan[0]"), ("ok".into(), "".into()));
    assert_eq!(status("fan[1]"), ("error".into(), "panic".into()));
    assert_eq!(status("fan[2]"), ("ok".into(), "".into()));
}

#[test]
fn a_command_past_its_timeout_is_killed_with_its_children() {
    let env = Env::new();
    let marker = format!("30.{}7", std::process::id() % 1000);
    // A background grandchild too: the whole process group must go.
    let p = env.workflow("wf.json", json!({"ir_version": "0.1.0", "nodes": [
        {"id": "hang", "type": "shell", "params": {"command": format!("sleep {marker} & sleep {marker}; echo never"), "timeout": 0.5}}]}));
    let (v, code, _) = run_json(env.pflow().args(["--output-format", "json"]).arg(&p));
    assert_eq!(code, 1);
    assert_eq!(v["error"]["type"], json!("timeout"));
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("timed out"));
    let spans = trace_of(&v);
    let hang = by_name(&spans, "node hang");
    assert_eq!(hang.s("error.type"), "timeout");
    assert_eq!(hang.status_code, 2);
    assert_eq!(procs_after_reaping(&marker), 0, "orphaned sleep");
}

fn interrupt_with_queued_items(signal: i32, expected: i32) {
    // 6 items, 2 at a time: when the signal lands, 2 run and 4 wait.
    let env = Env::new();
    let marker = format!("{}.{}3", 20 + signal, std::process::id() % 1000);
    let p = env.workflow("slow.json", json!({"ir_version": "0.1.0", "nodes": [
        {"id": "fan", "type": "shell", "batch": {"items": [1, 2, 3, 4, 5, 6], "parallel": true, "max_concurrent": 2},
         "params": {"command": format!("sleep {marker}; echo unique-marker-XYZ")}}]}));
    let child = pflow_cmd(&env, None)
        .args(["--output-format", "json", "run"])
        .arg(&p)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while count_procs(&marker) < 2 && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(count_procs(&marker), 2, "children did not start");
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(expected));
    let v = json_of(&out);
    assert_eq!(v["error"]["type"], json!("interrupted"));
    let spans = trace_of(&v);
    let items: Vec<&SpanView> = spans
        .iter()
        .filter(|s| s.s("pflow.node.role") == "batch_item")
        .collect();
    assert_eq!(items.len(), 2, "queued items never started");
    let batch = spans
        .iter()
        .find(|s| s.s("pflow.node.role") == "batch")
        .unwrap();
    for s in items.iter().copied().chain([batch]) {
        assert_eq!(s.s("pflow.node.status"), "interrupted", "{}", s.name);
        assert!(!s.parent.is_empty());
    }
    assert!(items.iter().all(|s| s.parent == batch.span_id));
    let root = spans.iter().find(|s| s.parent.is_empty()).unwrap();
    assert_eq!(root.s("pflow.run.status"), "interrupted");
    assert_eq!(procs_after_reaping(&marker), 0, "orphaned sleep");
}

#[test]
fn sigint_with_queued_batch_items() {
    interrupt_with_queued_items(libc::SIGINT, 130);
}

#[test]
fn sigterm_with_queued_batch_items() {
    interrupt_with_queued_items(libc::SIGTERM, 143);
}

// ---------------------------------------------------------------- LLM providers

fn llm_wf(model: &str, params: Value) -> Value {
    let mut p = json!({"prompt": "Say hello", "model": model});
    for (k, v) in params.as_object().unwrap() {
        p[k] = v.clone();
    }
    json!({"ir_version": "0.1.0", "nodes": [{"id": "ask", "type": "llm", "params": p}],
        "outputs": {"answer": {"source": "${ask.response}"}}})
}

fn with_provider(env: &Env, base: &str) -> assert_cmd::Command {
    let mut c = env.pflow();
    c.env("OPENAI_BASE_URL", format!("{base}/v1"))
        .env("OPENAI_API_KEY", "sk-test-key-abcdefghijklmnop")
        .env("ANTHROPIC_BASE_URL", base)
        .env("ANTHROPIC_API_KEY", "sk-ant-test-abcdefghijklmnop");
    c
}

fn llm_spans<'a>(spans: &'a [SpanView], name: &str) -> Vec<&'a SpanView> {
    let mut v: Vec<&SpanView> = spans.iter().filter(|s| s.name == name).collect();
    v.sort_by_key(|s| s.i("pflow.llm.attempt"));
    v
}

fn price(model: &str, prefix: Option<&str>, input: u64, output: u64) -> f64 {
    let p = pflow::pricing::PriceTable::builtin()
        .lookup(model, prefix)
        .unwrap()
        .price;
    pflow::pricing::cost(
        &pflow::pricing::TokenCounts {
            input,
            output,
            ..Default::default()
        },
        &p,
    )
    .total_usd
}

#[test]
fn connection_refused_is_retried_then_fails_clearly() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = Env::new();
    let p = env.workflow("wf.json", llm_wf("gpt-4o", json!({"retries": 1})));
    let (v, code, _) = run_json(
        with_provider(&env, &format!("http://127.0.0.1:{port}"))
            .args(["--output-format", "json"])
            .arg(&p),
    );
    assert_eq!(code, 1);
    assert_eq!(v["error"]["type"], json!("connect_error"));
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("after 2 attempts") && msg.contains("OPENAI_BASE_URL"),
        "{msg}"
    );
    assert_eq!(v["metrics"]["workflow"]["llm_calls"], json!(2));
    let spans = trace_of(&v);
    let calls = llm_spans(&spans, "chat gpt-4o");
    assert_eq!(
        calls
            .iter()
            .map(|s| s.i("pflow.llm.attempt"))
            .collect::<Vec<_>>(),
        [1, 2]
    );
    assert!(calls
        .iter()
        .all(|s| s.s("error.type") == "connect_error" && s.status_code == 2));
    assert!(calls[0].events.iter().any(|(n, _)| n == "pflow.llm.retry"));
}

#[tokio::test(flavor = "multi_thread")]
async fn server_errors_are_retried_as_spans_then_fail() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500).set_body_raw(
            r#"{"error": {"message": "upstream exploded"}}"#,
            "application/json",
        ))
        .mount(&server)
        .await;
    let env = Env::new();
    let p = env.workflow("wf.json", llm_wf("gpt-4o", json!({"retries": 2})));
    let (v, code, _) = run_json(
        with_provider(&env, &server.uri())
            .args(["--output-format", "json"])
            .arg(&p),
    );
    assert_eq!(code, 1);
    assert_eq!(v["error"]["type"], json!("server_error"));
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("upstream exploded") && msg.contains("500"),
        "{msg}"
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
    let spans = trace_of(&v);
    let calls = llm_spans(&spans, "chat gpt-4o");
    assert_eq!(
        calls
            .iter()
            .map(|s| s.i("pflow.llm.attempt"))
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(calls.iter().all(|s| s.s("error.type") == "server_error"));
    assert_eq!(v["metrics"]["total"]["cost_complete"], json!(true));
    let retries = calls
        .iter()
        .filter(|s| s.events.iter().any(|(n, _)| n == "pflow.llm.retry"))
        .count();
    assert_eq!(retries, 2, "the last attempt has no retry after it");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_json_is_a_clear_error_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw("{\"id\": \"x\", \"choices\": [", "application/json"),
        )
        .mount(&server)
        .await;
    let env = Env::new();
    let p = env.workflow("wf.json", llm_wf("gpt-4o", json!({})));
    let (v, code, _) = run_json(
        with_provider(&env, &server.uri())
            .args(["--output-format", "json"])
            .arg(&p),
    );
    assert_eq!(code, 1);
    assert_eq!(v["error"]["type"], json!("invalid_response"));
    assert!(
        v["error"]["message"].as_str().unwrap().contains("JSON"),
        "{v}"
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    let spans = trace_of(&v);
    assert_eq!(llm_spans(&spans, "chat gpt-4o").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limit_waits_what_retry_after_says() {
    let server = rate_limited_once("1", "slow down").await;
    let env = Env::new();
    let p = env.workflow("wf.json", llm_wf("gpt-4o", json!({})));
    let (v, code, _) = run_json(
        with_provider(&env, &server.uri())
            .args(["--trace", "--output-format", "json"])
            .arg(&p),
    );
    assert_eq!(code, 0, "{v}");
    let spans = trace_of(&v);
    let calls = llm_spans(&spans, "chat gpt-4o");
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].s("error.type"), "rate_limited");
    let retry = &calls[0]
        .events
        .iter()
        .find(|(n, _)| n == "pflow.llm.retry")
        .expect("retry event")
        .1;
    assert_eq!(retry["pflow.llm.wait_s"], json!(1.0));
    assert_eq!(retry["pflow.llm.next_attempt"], json!(2));
    assert_eq!(calls[1].status_code, 0);
    assert_eq!(v["metrics"]["total"]["tokens_total"], json!(51));
    assert_eq!(v["metrics"]["total"]["cost_usd"], json!(0.000405));
    // The refused attempt billed nothing: $0, and the run's cost is complete.
    assert_eq!(calls[0].s("pflow.cost.source"), "not_billed");
    assert_eq!(calls[0].attr("pflow.cost.usd"), Some(&json!(0.0)));
    assert_eq!(v["metrics"]["total"]["cost_complete"], json!(true));
}

/// What a raw server does with a connection after reading the request.
#[derive(Clone, Copy)]
enum Fault {
    /// Anthropic stream: headers and `message_start` (usage included), then a reset (RST).
    ResetMidStream,
    /// Anthropic stream: every text delta, then a clean close before `message_delta`/`message_stop`.
    TruncatedSse,
    /// OpenAI, not streaming: headers and half the JSON body, then a reset.
    ResetMidBody,
}

/// Closes with SO_LINGER 0, so the peer sees a reset rather than an end of stream.
fn reset(sock: tokio::net::TcpStream) {
    let std = sock.into_std().unwrap();
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    unsafe {
        use std::os::fd::AsRawFd;
        libc::setsockopt(
            std.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// A loopback HTTP server: the first connection suffers `fault`, later ones
/// get the whole fixture (Anthropic stream, or OpenAI chat for `ResetMidBody`).
async fn faulty_server(fault: Fault) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let c2 = count.clone();
    let (fixture, ctype) = match fault {
        Fault::ResetMidBody => ("openai-chat.json", "application/json"),
        _ => ("anthropic-messages-stream.sse", "text/event-stream"),
    };
    let full = String::from_utf8(llm_fixture(fixture)).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let n = c2.fetch_add(1, Ordering::SeqCst);
            let full = full.clone();
            tokio::spawn(async move {
                read_request(&mut sock).await;
                let head = |len: usize| {
                    format!("HTTP/1.1 200 OK\r\ncontent-type: {ctype}\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n")
                };
                if n > 0 {
                    let _ = sock.write_all(head(full.len()).as_bytes()).await;
                    let _ = sock.write_all(full.as_bytes()).await;
                    return;
                }
                match fault {
                    Fault::ResetMidStream => {
                        let part = &full[..full.find("event: content_block_start").unwrap()];
                        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                        let chunk = format!("{:x}\r\n{part}\r\n", part.len());
                        let _ = sock.write_all(head.as_bytes()).await;
                        let _ = sock.write_all(chunk.as_bytes()).await;
                        let _ = sock.flush().await;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        reset(sock);
                    }
                    Fault::TruncatedSse => {
                        let part = &full[..full.find("event: message_delta").unwrap()];
                        let _ = sock.write_all(head(part.len()).as_bytes()).await;
                        let _ = sock.write_all(part.as_bytes()).await;
                    }
                    Fault::ResetMidBody => {
                        let _ = sock.write_all(head(full.len()).as_bytes()).await;
                        let _ = sock.write_all(&full.as_bytes()[..full.len() / 2]).await;
                        let _ = sock.flush().await;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        reset(sock);
                    }
                }
            });
        }
    });
    (base, count)
}

async fn broken_stream_is_retried_and_partial_usage_counted(fault: Fault, partial_output: u64) {
    let (base, count) = faulty_server(fault).await;
    let env = Env::new();
    let p = env.workflow(
        "wf.json",
        llm_wf(
            "claude-3-opus-latest",
            json!({"stream": true, "retries": 1, "max_tokens": 100}),
        ),
    );
    let (v, code, _) = run_json(
        with_provider(&env, &base)
            .args(["--trace", "--output-format", "json"])
            .arg(&p),
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(count.load(Ordering::SeqCst), 2);
    assert_eq!(v["result"]["answer"], json!("Hello there!"));
    let spans = trace_of(&v);
    let calls = llm_spans(&spans, "chat claude-3-opus-latest");
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].s("error.type"), "stream_error");
    assert_eq!(calls[0].i("gen_ai.usage.input_tokens"), 11);
    assert_eq!(
        calls[0].i("gen_ai.usage.output_tokens"),
        partial_output as i64
    );
    assert_eq!(calls[1].status_code, 0);
    // The broken attempt was billed: it counts, and is priced.
    let t = &v["metrics"]["workflow"]["tokens"];
    assert_eq!(t["input"], json!(22));
    assert_eq!(t["output"], json!(partial_output + 6));
    assert_eq!(v["metrics"]["workflow"]["llm_calls"], json!(2));
    let want = price(
        "claude-3-opus-latest",
        Some("anthropic"),
        11,
        partial_output,
    ) + 0.000615;
    let got = v["metrics"]["total"]["cost_usd"].as_f64().unwrap();
    assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    assert_eq!(v["metrics"]["workflow"]["cost_complete"], json!(true));
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_reset_mid_stream() {
    broken_stream_is_retried_and_partial_usage_counted(Fault::ResetMidStream, 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn truncated_sse_stream() {
    broken_stream_is_retried_and_partial_usage_counted(Fault::TruncatedSse, 1).await;
}

// ---------------------------------------------------------------- concurrency

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_items_thirty_two_at_a_time_exact_totals_and_spans() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_delay(Duration::from_millis(20))
                .set_body_raw(llm_fixture("openai-chat.json"), "application/json"),
        )
        .mount(&server)
        .await;
    let env = Env::new();
    let items: Vec<u32> = (0..200).collect();
    let p = env.workflow("wf.json", json!({"ir_version": "0.1.0", "nodes": [
        {"id": "start", "type": "echo", "params": {"items": items}},
        {"id": "fan", "type": "llm", "batch": {"items": "${start.items}", "parallel": true, "max_concurrent": 32},
         "params": {"prompt": "item ${item}", "model": "gpt-4o", "retries": 0}},
        {"id": "end", "type": "echo", "params": {"n": "${fan.count}"}}],
        "edges": [{"from": "start", "to": "fan"}, {"from": "fan", "to": "end"}],
        "outputs": {"n": {"source": "${end.n}"}}}));
    let (v, code, _) = run_json(
        with_provider(&env, &server.uri())
            .args(["--trace", "--output-format", "json"])
            .arg(&p),
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        v["result"]["n"],
        json!(200),
        "{} {}",
        v["result"],
        v["warnings"]
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 200);
    // One call: openai-chat.json is 14 in, 37 out, $0.000405 (expected-cost.json).
    let expected: Value = serde_json::from_slice(&llm_fixture("expected-cost.json")).unwrap();
    let one = expected["openai-chat.json"]["cost_usd"].as_f64().unwrap();
    let w = &v["metrics"]["workflow"];
    assert_eq!(w["llm_calls"], json!(200));
    assert_eq!(w["tokens"]["input"], json!(200 * 14));
    assert_eq!(w["tokens"]["output"], json!(200 * 37));
    assert_eq!(w["tokens"]["total"], json!(200 * 51));
    let got = v["metrics"]["total"]["cost_usd"].as_f64().unwrap();
    assert!((got - 200.0 * one).abs() < 1e-9, "{got} vs {}", 200.0 * one);
    // Usage per node path: the batch node sums its items, listed under it, one call each.
    let nodes = w["node_usage"].as_object().unwrap();
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert_eq!(nodes["fan"]["llm_calls"], json!(200));
    assert_eq!(nodes["fan"]["batch_items"], json!(200));
    let per_item = nodes["fan"]["items"].as_object().unwrap();
    assert_eq!(per_item.len(), 200);
    assert!((0..200).all(|i| per_item[&format!("fan[{i}]")]["llm_calls"] == json!(1)));

    let spans = trace_of(&v);
    // root + workflow + start + batch + 200 items + 200 calls (each with its HTTP request) + end.
    assert_eq!(
        spans.len(),
        1 + 1 + 1 + 1 + 200 + 200 * 2 + 1,
        "no span dropped"
    );
    let batch = spans
        .iter()
        .find(|s| s.s("pflow.node.role") == "batch")
        .unwrap();
    let items: Vec<&SpanView> = spans
        .iter()
        .filter(|s| s.s("pflow.node.role") == "batch_item")
        .collect();
    assert_eq!(items.len(), 200);
    assert!(items.iter().all(|s| s.parent == batch.span_id));
    let mut idx: Vec<i64> = items.iter().map(|s| s.i("pflow.batch.index")).collect();
    idx.sort();
    assert_eq!(idx, (0..200).collect::<Vec<i64>>());
    let calls = llm_spans(&spans, "chat gpt-4o");
    assert_eq!(calls.len(), 200);
    let mut parents = std::collections::HashSet::new();
    for c in &calls {
        let item = items
            .iter()
            .find(|s| s.span_id == c.parent)
            .expect("call's parent is an item");
        assert_eq!(c.s("pflow.llm.node_path"), item.s("pflow.node.path"));
        let http: Vec<&SpanView> = spans.iter().filter(|s| s.parent == c.span_id).collect();
        assert!(
            http.len() == 1 && http[0].name == "POST" && http[0].kind == 3,
            "one HTTP CLIENT span per attempt"
        );
        parents.insert(c.parent.clone());
    }
    assert_eq!(parents.len(), 200, "one call per item");
    // Concurrency stayed bounded: never more than 32 items open at once.
    let mut edges: Vec<(u64, i32)> = items
        .iter()
        .flat_map(|s| [(s.start, 1), (s.end, -1)])
        .collect();
    edges.sort_by_key(|&(t, d)| (t, d));
    let (mut open, mut peak) = (0, 0);
    for (_, d) in edges {
        open += d;
        peak = peak.max(open);
    }
    assert!(peak <= 32, "{peak} items at once");
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_reset_mid_body_is_retried() {
    // Not streaming: a body cut by a reset is a transport fault like a broken
    // stream (retryable), not an invalid answer.
    let (base, count) = faulty_server(Fault::ResetMidBody).await;
    let env = Env::new();
    let p = env.workflow("wf.json", llm_wf("gpt-4o", json!({"retries": 1})));
    let (v, code, _) = run_json(
        with_provider(&env, &base)
            .args(["--trace", "--output-format", "json"])
            .arg(&p),
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(count.load(Ordering::SeqCst), 2);
    let spans = trace_of(&v);
    let calls = llm_spans(&spans, "chat gpt-4o");
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].s("error.type"), "stream_error");
    assert_eq!(v["metrics"]["total"]["tokens_total"], json!(51));
    // The cut attempt may have been billed, and nobody knows for how much:
    // the total is unknown, the priced calls' sum only a lower bound.
    assert_eq!(v["metrics"]["total"]["cost_usd"], Value::Null);
    assert_eq!(
        v["metrics"]["total"]["cost_usd_lower_bound"],
        json!(0.000405)
    );
    assert_eq!(calls[0].attr("pflow.cost.usd"), None);
    assert_eq!(v["metrics"]["total"]["cost_complete"], json!(false));
}
