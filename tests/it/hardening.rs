//! Inputs that crashed or hung pflow: each must now be a clear error or be
//! bounded, never a panic (exit 101) or an unbounded read.

use super::common::*;
use serde_json::json;
use std::time::{Duration, Instant};

fn no_panic(out: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_ne!(out.status.code(), Some(101), "pflow panicked: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

fn echo_workflow(env: &Env) -> std::path::PathBuf {
    env.workflow(
        "ok.json",
        json!({"ir_version": "0.1.0", "nodes": [
        {"id": "a", "type": "echo", "params": {"x": 1}}], "edges": []}),
    )
}

/// A one-node `llm` workflow asking `gpt-4o-mini` with `retries`.
fn ask_workflow(env: &Env, retries: u64) -> std::path::PathBuf {
    env.workflow("ask.json", json!({"ir_version": "0.1.0", "nodes": [
        {"id": "ask", "type": "llm", "params": {"model": "gpt-4o-mini", "prompt": "hi", "retries": retries}}],
        "edges": []}))
}

/// `cmd` run on `wf` with `--output-format json`: its JSON output and exit code.
fn json_run(
    mut cmd: assert_cmd::Command,
    wf: &std::path::Path,
) -> (serde_json::Value, Option<i32>) {
    let out = cmd
        .args(["--output-format", "json"])
        .arg(wf)
        .output()
        .unwrap();
    no_panic(&out);
    (
        serde_json::from_slice(&out.stdout).unwrap(),
        out.status.code(),
    )
}

#[test]
fn otlp_headers_with_a_percent_before_a_multibyte_char_do_not_panic() {
    let env = Env::new();
    let wf = echo_workflow(&env);
    let out = env
        .pflow()
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
        .env("OTEL_EXPORTER_OTLP_HEADERS", "x=%aé")
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "300")
        .arg(&wf)
        .output()
        .unwrap();
    no_panic(&out);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        env.trace_files().len(),
        0,
        "a successful run keeps no trace unless asked"
    );
}

async fn rate_limited_server(retry_after: &str) -> wiremock::MockServer {
    use wiremock::matchers::method;
    let server = wiremock::MockServer::start().await;
    wiremock::Mock::given(method("POST"))
        .respond_with(
            wiremock::ResponseTemplate::new(429)
                .insert_header("retry-after", retry_after)
                .set_body_string(r#"{"error": {"message": "slow down"}}"#),
        )
        .mount(&server)
        .await;
    server
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_inf_and_1e300_are_capped() {
    for value in ["inf", "1e300", "NaN", "-5"] {
        let server = rate_limited_server(value).await;
        let env = Env::new();
        let wf = ask_workflow(&env, 0);
        let (v, code) = json_run(with_openai(&env, &server), &wf);
        assert_eq!(
            v["error"]["type"], "rate_limited",
            "Retry-After: {value}: {v}"
        );
        assert_eq!(code, Some(1));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_llm_timeout_from_env_is_capped() {
    let server = openai_server().await;
    let env = Env::new();
    let wf = env.workflow("ask.json", json!({"ir_version": "0.1.0", "nodes": [
        {"id": "ask", "type": "llm", "params": {"model": "gpt-4o-mini", "prompt": "hi"}}], "edges": []}));
    let out = with_openai(&env, &server)
        .env("PFLOW_LLM_TIMEOUT", "1e308")
        .arg(&wf)
        .output()
        .unwrap();
    let stderr = no_panic(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

#[test]
fn huge_shell_timeout_is_capped() {
    let env = Env::new();
    let wf = env.workflow("sh.json", json!({"ir_version": "0.1.0",
        "outputs": {"out": {"source": "${sh.stdout}"}}, "nodes": [
        {"id": "sh", "type": "shell", "params": {"command": "echo fine", "timeout": 1e308}}], "edges": []}));
    let out = env.pflow().arg(&wf).output().unwrap();
    let stderr = no_panic(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "fine");
}

/// `/dev/zero` as a workflow, a nested `workflow_ref` or a price file: a
/// clear error at once, not an endless read.
#[cfg(unix)]
#[test]
fn files_pflow_reads_must_be_regular_and_bounded() {
    let env = Env::new();
    let nested = env.workflow("nested.json", json!({"ir_version": "0.1.0", "nodes": [
        {"id": "child", "type": "workflow", "params": {"workflow_ref": "/dev/zero"}}], "edges": []}));
    let nested = nested.to_str().unwrap();
    for args in [
        vec!["run", nested],
        vec!["validate", nested],
        vec!["validate", "/dev/zero"],
        vec!["run", "/dev/zero"],
        vec!["pricing", "check", "/dev/zero"],
    ] {
        let t = Instant::now();
        let out = env
            .pflow()
            .args(&args)
            .timeout(Duration::from_secs(30))
            .output()
            .unwrap();
        let stderr = no_panic(&out);
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{args:?} took {:?}",
            t.elapsed()
        );
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("not a regular file"), "{args:?}: {stderr}");
    }
    let big = env.write("big.json", &" ".repeat(17 * 1024 * 1024));
    let out = env.pflow().arg("validate").arg(&big).output().unwrap();
    let stderr = no_panic(&out);
    assert!(stderr.contains("16 MiB limit"), "{stderr}");
}

/// Terminal escapes in node values and error messages reach the terminal as text.
#[test]
fn control_characters_are_escaped_in_text_output() {
    let env = Env::new();
    let osc52 = "\u{1b}]52;c;ZXZpbA==\u{7}";
    let wf = env.workflow(
        "esc.json",
        json!({"ir_version": "0.1.0",
        "outputs": {"out": {"source": "${a.text}"}},
        "nodes": [
            {"id": "a", "type": "echo", "params": {"text": format!("title{osc52}\u{1b}[31mred")}},
            {"id": "b", "type": "echo", "params": {"fail": format!("boom{osc52}\u{9b}2J")}}],
        "edges": [{"from": "a", "to": "b"}]}),
    );
    let out = env.pflow().arg("--trace").arg(&wf).output().unwrap();
    let stderr = no_panic(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("boom"), "{stderr}");
    for (what, text) in [("stdout", stdout.as_ref()), ("stderr", stderr.as_str())] {
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}') && !text.contains('\u{9b}'),
            "raw escape on {what}: {text:?}"
        );
    }
    for args in [
        vec!["trace", "show"],
        vec!["trace", "show", "--node", "a"],
        vec!["trace", "show", "--node", "b"],
    ] {
        let out = env.pflow().args(&args).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "raw escape from {args:?}: {text:?}"
        );
    }
}

/// `OTEL_EXPORTER_OTLP_ENDPOINT=http://h/p?x=1` posts to `/p/v1/traces?x=1`.
#[tokio::test(flavor = "multi_thread")]
async fn endpoint_query_strings_stay_after_the_signal_path() {
    let receiver = super::otlp::http_receiver(false).await;
    let env = Env::new();
    let wf = echo_workflow(&env);
    let out = env
        .pflow()
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("{}/p?x=1", receiver.uri()),
        )
        .arg(&wf)
        .output()
        .unwrap();
    no_panic(&out);
    let reqs = receiver.received_requests().await.unwrap_or_default();
    let traces: Vec<_> = reqs
        .iter()
        .filter(|r| r.url.path() == "/p/v1/traces")
        .collect();
    assert!(
        !traces.is_empty(),
        "{:?}",
        reqs.iter().map(|r| r.url.to_string()).collect::<Vec<_>>()
    );
    assert_eq!(traces[0].url.query(), Some("x=1"));
}

/// The proto3 JSON mapping writes non-finite doubles as strings: a trace
/// file holding one is read, not refused whole.
#[test]
fn nan_and_infinity_doubles_are_accepted_in_trace_files() {
    let env = Env::new();
    let wf = echo_workflow(&env);
    env.pflow().arg("--trace").arg(&wf).assert().success();
    let file = env.trace_files().pop().unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let attrs = v["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"]
        .as_array_mut()
        .unwrap();
    attrs.push(json!({"key": "x.nan", "value": {"doubleValue": "NaN"}}));
    attrs.push(json!({"key": "x.inf", "value": {"doubleValue": "-Infinity"}}));
    let odd = env.write("odd.otlp.json", &v.to_string());
    for args in [vec!["trace", "show"], vec!["trace", "summary"]] {
        let out = env.pflow().args(&args).arg(&odd).output().unwrap();
        let stderr = no_panic(&out);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    }
}

/// SIGKILL leaves no shell child running: the kernel kills them with pflow.
#[cfg(target_os = "linux")]
#[test]
fn shell_children_die_with_pflow() {
    let env = Env::new();
    let marker = format!("61.{}", std::process::id() % 1000);
    let wf = env.workflow("slow.json", json!({"ir_version": "0.1.0", "nodes": [
        {"id": "sh", "type": "shell", "params": {"command": format!("sleep {marker}")}}], "edges": []}));
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("pflow"))
        .env("PFLOW_HOME", env.home())
        .arg(&wf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while count_procs(&marker) < 1 && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(count_procs(&marker), 1, "the child did not start");
    child.kill().unwrap();
    let _ = child.wait();
    let t = Instant::now();
    while count_procs(&marker) > 0 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        count_procs(&marker),
        0,
        "the shell child outlived a SIGKILLed pflow"
    );
}

/// A killed run's temp trace goes on the next run after the grace period,
/// with no retention configured; a fresh one (a live run's) stays.
#[test]
fn stale_temp_traces_are_removed_without_retention() {
    let env = Env::new();
    let dir = env.traces_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let stale = dir.join(".pflow-trace-killed.tmp");
    let fresh = dir.join(".pflow-trace-live.tmp");
    std::fs::write(&stale, "{}").unwrap();
    std::fs::write(&fresh, "{}").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(2 * 3600))
        .unwrap();
    let wf = echo_workflow(&env);
    env.pflow().arg(&wf).assert().success();
    assert!(!stale.exists(), "stale temp file kept");
    assert!(fresh.exists(), "a live run's temp file was removed");
}

/// Span names are bounded like values (the workflow's name names a span).
#[test]
fn span_names_are_bounded_like_values() {
    let env = Env::new();
    let long = "n".repeat(200_000);
    let wf = env.workflow(
        "long.json",
        json!({"ir_version": "0.1.0", "metadata": {"name": long},
        "nodes": [{"id": "a", "type": "echo", "params": {"x": 1}}], "edges": []}),
    );
    env.pflow().arg("--trace").arg(&wf).assert().success();
    let (spans, _) = read_trace(&env.trace_files()[0]);
    let longest = spans.iter().map(|s| s.name.len()).max().unwrap_or(0);
    assert!(longest <= 4096 + 8, "a span name of {longest} bytes");
}

/// A local OpenAI server answering every chat call with `usage` as given
/// (raw text, so a count past u64 reaches pflow as the server wrote it).
async fn usage_server(usage: &str) -> wiremock::MockServer {
    use wiremock::matchers::method;
    let server = wiremock::MockServer::start().await;
    let body = format!(
        r#"{{"id": "chatcmpl-1", "model": "gpt-4o-mini", "choices": [{{"index": 0,
            "message": {{"role": "assistant", "content": "hi"}}, "finish_reason": "stop"}}],
            "usage": {usage}}}"#
    );
    wiremock::Mock::given(method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_raw(body, "application/json"))
        .mount(&server)
        .await;
    server
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_counts_beyond_u64_negative_or_fractional_are_invalid_responses() {
    for usage in [
        r#"{"prompt_tokens": 18446744073709551616, "completion_tokens": 1}"#,
        r#"{"prompt_tokens": -3, "completion_tokens": 1}"#,
        r#"{"prompt_tokens": 10, "completion_tokens": 1.5}"#,
    ] {
        let server = usage_server(usage).await;
        let env = Env::new();
        let wf = ask_workflow(&env, 2);
        let (v, code) = json_run(with_openai(&env, &server), &wf);
        assert_eq!(v["error"]["type"], "invalid_response", "{usage}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("_tokens"), "names the field: {msg}");
        assert_eq!(code, Some(1));
        // Not retried, like any other invalid response.
        assert_eq!(requests(&server).await, 1, "{usage}");
    }
    // The largest count u64 holds is still a count.
    let server =
        usage_server(r#"{"prompt_tokens": 18446744073709551615, "completion_tokens": 0}"#).await;
    let env = Env::new();
    let (v, code) = json_run(with_openai(&env, &server), &ask_workflow(&env, 0));
    assert_eq!(code, Some(0), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cost_that_overflows_is_an_error_on_the_call_never_inf_or_zero() {
    // 1e308 USD per 1M tokens × 1e12 tokens is past f64::MAX.
    let server = usage_server(r#"{"prompt_tokens": 1000000000000, "completion_tokens": 1}"#).await;
    let env = Env::new();
    let prices = env.write(
        "prices.json",
        r#"{"gpt-4o-mini": {"input": 1e308, "output": 1}}"#,
    );
    let wf = ask_workflow(&env, 2);
    let mut cmd = with_openai(&env, &server);
    cmd.arg("--pricing").arg(&prices);
    let (v, code) = json_run(cmd, &wf);
    assert_eq!(v["error"]["type"], "cost_overflow", "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("gpt-4o-mini") && msg.contains("`input`"),
        "names the model, price key and field: {msg}"
    );
    assert_eq!(code, Some(1));
    assert_eq!(requests(&server).await, 1, "not retried");
    assert!(
        !v.to_string().contains("inf"),
        "no infinite cost anywhere: {v}"
    );

    // The text summary neither.
    let out = with_openai(&env, &server)
        .arg("--pricing")
        .arg(&prices)
        .arg(&wf)
        .output()
        .unwrap();
    let stderr = no_panic(&out);
    assert!(!stderr.contains("inf"), "{stderr}");
    assert!(stderr.contains("gpt-4o-mini"), "{stderr}");
    // The run's cost is unknown: the summary gives a lower bound, never a whole `$0.000000`.
    let summary = stderr
        .lines()
        .find(|l| l.contains("LLM call"))
        .unwrap_or_default();
    assert!(summary.contains("≥ $"), "{stderr}");
    // Nor the node's progress line: it names the error and gives a lower bound.
    let progress = stderr
        .lines()
        .find(|l| l.contains("✗ ask failed"))
        .unwrap_or_default();
    assert!(
        progress.contains("cost_overflow") && progress.contains("≥ $"),
        "{stderr}"
    );

    // A price file that says infinity, or a negative price, is rejected at load, naming it.
    for bad in [
        r#"{"gpt-4o-mini": {"input": 1e400}}"#,
        r#"{"gpt-4o-mini": {"output": -1}}"#,
    ] {
        let f = env.write("bad.json", bad);
        let out = with_openai(&env, &server)
            .arg("--pricing")
            .arg(&f)
            .arg(&wf)
            .output()
            .unwrap();
        let stderr = no_panic(&out);
        assert_ne!(out.status.code(), Some(0), "{bad}: {stderr}");
        assert!(stderr.contains("bad.json"), "{bad}: {stderr}");
    }
}

/// Past `SPAN_LIMIT` (20,000) spans the report holds the first 20,000 and
/// says, on the page and on the command line, how many it left out.
#[test]
fn trace_report_past_the_span_limit_says_what_it_left_out() {
    const LIMIT: usize = 20_000;
    const EXTRA: usize = 37;
    let env = Env::new();
    let wf = echo_workflow(&env);
    env.pflow().arg("--trace").arg(&wf).assert().success();
    let file = env.trace_files().pop().unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let proto = first["resourceSpans"][0]["scopeSpans"][0]["spans"][0].clone();
    let (spans, _) = read_trace(&file);
    let have = spans.len();
    let root = proto["spanId"].as_str().unwrap().to_string();
    let clones: Vec<serde_json::Value> = (0..LIMIT + EXTRA - have)
        .map(|i| {
            let mut s = proto.clone();
            s["spanId"] = json!(format!("{:016x}", 0x1000_0000u64 + i as u64));
            s["parentSpanId"] = json!(root);
            s["name"] = json!(format!("generated {i}"));
            s
        })
        .collect();
    let mut extra = first.clone();
    extra["resourceSpans"][0]["scopeSpans"][0]["spans"] = json!(clones);
    let big = env.write("big.otlp.json", &format!("{text}{}\n", extra));
    let page = env.home().join("big.html");
    let out = env
        .pflow()
        .args(["trace", "report"])
        .arg(&big)
        .arg("--output")
        .arg(&page)
        .output()
        .unwrap();
    let stderr = no_panic(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("{EXTRA} spans left out")),
        "the command says it: {stderr}"
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        html.contains(&format!("{EXTRA} spans left out")) && html.contains("20,037 spans"),
        "the page says it"
    );
    let drawn = html.matches("\"depth\":").count();
    assert_eq!(drawn, LIMIT, "the page holds the first {LIMIT} spans");
}

/// `pflow ARGS` started with stdout to `out`; [`peak_rss_kib`] reaps it.
///
/// pflow is started by a small python3 process that forks, execs pflow and
/// reads its rusage with `wait4`. A child spawned straight from this test
/// process would not do: Rust spawns with `CLONE_VM`, and Linux carries the
/// old address space's high-water mark across `exec`, so the child's
/// `ru_maxrss` would report the test harness's own peak (hundreds of MiB
/// while other tests run), not pflow's.
fn spawn_pflow(env: &Env, args: &[&std::ffi::OsStr], out: &std::path::Path) -> PeakRss {
    const MEASURE: &str = "import os, sys\n\
        pid = os.fork()\n\
        if pid == 0:\n    os.execv(sys.argv[2], sys.argv[2:])\n\
        _, status, ru = os.wait4(pid, 0)\n\
        open(sys.argv[1], 'w').write(f'{ru.ru_maxrss} {os.waitstatus_to_exitcode(status)}')\n";
    let report = out.with_extension("rss");
    let child = std::process::Command::new("python3")
        .arg("-c")
        .arg(MEASURE)
        .arg(&report)
        .arg(assert_cmd::cargo::cargo_bin("pflow"))
        .args(args)
        .env("PFLOW_HOME", env.home())
        .current_dir(env.dir.path())
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 runs pflow");
    PeakRss { child, report }
}

/// A pflow started by [`spawn_pflow`]: its measuring parent and where it reports.
struct PeakRss {
    child: std::process::Child,
    report: std::path::PathBuf,
}

/// Peak RSS (KiB) and exit code of the pflow that `p` ran.
fn peak_rss_kib(p: &mut PeakRss) -> (i64, i32) {
    let status = p.child.wait().expect("wait for the measuring python3");
    assert!(status.success(), "the measuring python3 failed: {status}");
    let text = std::fs::read_to_string(&p.report).expect("the rusage report");
    let mut parts = text
        .split_whitespace()
        .map(|x| x.parse::<i64>().unwrap_or(-1));
    let (rss, code) = (parts.next().unwrap_or(-1), parts.next().unwrap_or(-1));
    (rss, code as i32)
}

/// A trace grown from a real run of [`echo_workflow`]: copies of its node
/// span (new ids; named, and with node id and path, `n<i>` when `distinct`,
/// else all node `a`) until `min_bytes` or `min_spans`, then the real file
/// (its workflow and run spans end after their nodes). Returns the file,
/// the copies made and the spans in all.
fn grown_trace(
    env: &Env,
    name: &str,
    min_bytes: usize,
    min_spans: u64,
    distinct: bool,
) -> (std::path::PathBuf, u64, u64) {
    if env.trace_files().is_empty() {
        let wf = echo_workflow(env);
        env.pflow().arg("--trace").arg(&wf).assert().success();
    }
    let real = std::fs::read_to_string(&env.trace_files()[0]).unwrap();
    let first: serde_json::Value = serde_json::from_str(real.lines().next().unwrap()).unwrap();
    let node = &first["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    assert_eq!(node["name"], "node a", "{node}");
    let mut template = node.clone();
    template["spanId"] = json!("@ID@");
    let mut template = template.to_string();
    if distinct {
        template = template.replace("{\"stringValue\":\"a\"}", "{\"stringValue\":\"n@N@\"}");
        template = template.replace("\"node a\"", "\"node n@N@\"");
    }
    let mut envelope = first.clone();
    envelope["resourceSpans"][0]["scopeSpans"][0]["spans"] = json!(["@SPANS@"]);
    let envelope = envelope.to_string();
    let (open, close) = envelope.split_once("\"@SPANS@\"").unwrap();
    let path = env.dir.path().join(name);
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let (mut written, mut n) = (0usize, 0u64);
    while written < min_bytes || n < min_spans {
        let mut line = String::with_capacity(600 * 1024);
        line.push_str(open);
        for i in 0..256 {
            if i > 0 {
                line.push(',');
            }
            let id = format!("{:016x}", 0x1_0000_0000 + n);
            line.push_str(&template.replace("@ID@", &id).replace("@N@", &n.to_string()));
            n += 1;
        }
        line.push_str(close);
        line.push('\n');
        written += line.len();
        std::io::Write::write_all(&mut out, line.as_bytes()).unwrap();
    }
    std::io::Write::write_all(&mut out, real.as_bytes()).unwrap();
    let total = n + read_trace(&env.trace_files()[0]).0.len() as u64;
    (path, n, total)
}

/// `trace diff` of two 20,000-node traces (37 s when it was quadratic; a
/// million nodes never ended) finishes, comparing every node. A watchdog
/// turns a hang into a failure; the time itself is the benchmarks' business.
#[test]
fn trace_diff_of_twenty_thousand_nodes_finishes() {
    let env = Env::new();
    let (a, n, _) = grown_trace(&env, "a.otlp.json", 0, 20_000, true);
    let (b, _, _) = grown_trace(&env, "b.otlp.json", 0, 20_000, true);
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("pflow"))
        .args(["--output-format", "json", "trace", "diff"])
        .arg(&a)
        .arg(&b)
        .env("PFLOW_HOME", env.home())
        // A file, not a pipe: nobody reads a pipe until the child ends.
        .stdout(std::fs::File::create(env.dir.path().join("diff.json")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(900);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("trace diff of {n} nodes did not finish in 15 minutes");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(child.wait().unwrap().success());
    let d: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.dir.path().join("diff.json")).unwrap()).unwrap();
    // Every generated node, plus the real `a`, is on both sides.
    assert_eq!(d["nodes"].as_array().map(Vec::len), Some(n as usize + 1));
    assert_eq!(d["only_in_a"], json!([]));
}

/// A trace larger than the memory bound (192 MiB of spans, written here from
/// a real node span) is streamed by the viewers: each stays under a fixed
/// peak RSS below the file's own size (loading a trace whole took about ten
/// times its size), and still counts every span.
#[test]
fn trace_viewers_stream_a_huge_trace_in_bounded_memory() {
    const FILE_BYTES: usize = 192 << 20;
    const BOUND_KIB: i64 = 160 << 10;
    let env = Env::new();
    let (big, n, total) = grown_trace(&env, "big.otlp.json", FILE_BYTES, 0, false);
    let written = std::fs::metadata(&big).unwrap().len();

    // The three viewers at once (each child's peak is its own).
    let page = env.dir.path().join("big.html");
    let mut runs: Vec<(&str, std::path::PathBuf, PeakRss)> = [
        ("summary", vec!["trace", "summary", big.to_str().unwrap()]),
        ("show", vec!["trace", "show", big.to_str().unwrap()]),
        (
            "report",
            vec![
                "trace",
                "report",
                big.to_str().unwrap(),
                "--output",
                page.to_str().unwrap(),
            ],
        ),
    ]
    .into_iter()
    .map(|(name, args)| {
        let out = env.dir.path().join(format!("{name}.out"));
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        let pid = spawn_pflow(&env, &args, &out);
        (name, out, pid)
    })
    .collect();
    for (name, _, pid) in &mut runs {
        let (rss, code) = peak_rss_kib(pid);
        assert_eq!(code, 0, "trace {name}");
        assert!(
            rss < BOUND_KIB,
            "trace {name} peaked at {rss} KiB on a {written}-byte trace (bound {BOUND_KIB} KiB)"
        );
    }
    // Every span counts; what a viewer left out, it says.
    let stdout =
        |name: &str| std::fs::read_to_string(env.dir.path().join(format!("{name}.out"))).unwrap();
    let m: serde_json::Value = serde_json::from_str(&stdout("summary")).unwrap();
    assert_eq!(m["workflow"]["nodes_executed"], n + 1, "{m}");
    // `note: N spans left out: this shows K of T spans …`, K at most the limit and its parents.
    let show = stdout("show");
    let note = show
        .lines()
        .find(|l| l.contains("spans left out"))
        .unwrap_or_else(|| panic!("{}", &show[..show.len().min(2000)]));
    let numbers: Vec<u64> = note
        .split(|c: char| !c.is_ascii_digit() && c != ',')
        .filter_map(|w| w.replace(',', "").parse().ok())
        .collect();
    let [left_out, shown, all] = numbers[..] else {
        panic!("{note}")
    };
    assert_eq!((all, left_out + shown), (total, total), "{note}");
    assert!((20_000..20_064).contains(&shown), "{note}");
    assert!(show.lines().count() < 20_100, "the tree holds only those");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains(&format!("{} spans left out", total - 20_000)));
}
