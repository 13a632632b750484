//! Resource use per node, through the binary: a `shell` pipeline's CPU time
//! and peak RSS from `wait4`, an `http` node's exact body sizes and time to
//! first byte against a loopback server, a streamed LLM call's time to first
//! chunk and output tokens per second, pflow's own busy time, and how
//! `pflow trace show --node` prints them.

use super::common::*;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use wiremock::matchers::{body_string, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn python3() -> bool {
    tool_present(
        std::process::Command::new("python3")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "python3",
    )
}

/// A 60 MiB buffer touched page by page, then ≥ 0.3 s of CPU: run as the
/// first stage of a pipeline, so `sh` forks it and waits for it (a
/// descendant's usage, not `sh`'s own).
const BURN: &str = "python3 -c 'import time\nb = bytearray(60 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\nprint(len(b))' | cat";

fn last_trace(env: &Env) -> Vec<SpanView> {
    let files = env.trace_files();
    let file = files.last().expect("a trace file");
    read_trace(file).0
}

fn num(s: &SpanView, k: &str) -> f64 {
    s.attr(k)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("`{k}` missing on `{}`: {:?}", s.name, s.attrs))
}

#[test]
fn shell_command_cpu_and_peak_rss_come_from_wait4() {
    if !python3() {
        return;
    }
    let env = Env::new();
    let wf = env.workflow(
        "wf.json",
        json!({"ir_version": "0.1.0", "nodes": [
            {"id": "burn", "type": "shell", "params": {"command": BURN}},
            {"id": "idle", "type": "shell", "params": {"command": "true"}}
        ], "edges": [{"from": "burn", "to": "idle"}]}),
    );
    pflow_ok(env.pflow().args(["run", "--trace"]).arg(&wf));
    let spans = last_trace(&env);
    let burn = by_path(&spans, "burn");
    let wrote = &burn
        .events
        .iter()
        .find(|(n, a)| n == "pflow.store.write" && a["pflow.store.key"] == "burn.stdout")
        .expect("stdout written")
        .1;
    assert_eq!(wrote["pflow.value.preview"], json!("62914560\n"));
    let cpu = num(burn, "pflow.process.cpu.user_us") + num(burn, "pflow.process.cpu.system_us");
    // process_time() counts user + system: the loop alone is 0.3 s of it.
    assert!(cpu >= 290_000.0, "{cpu} µs: {:?}", burn.attrs);
    // The CPU was spent while the span was open: no more than its length.
    assert!(
        cpu <= (burn.end - burn.start) as f64 / 1000.0 * 2.0,
        "{cpu} µs"
    );
    let rss = num(burn, "pflow.process.memory.peak_bytes");
    assert!(rss >= (60 << 20) as f64, "{rss}");
    assert!(rss < (1u64 << 30) as f64, "{rss}");
    // pflow's own share: it read the pipes and ran the node's code.
    assert!(num(burn, "pflow.node.busy_us") > 0.0);
    // `true` is tiny: its CPU is its own, not the previous command's, and
    // its peak is below the pages it inherited from pflow's fork: left out.
    let idle = by_path(&spans, "idle");
    assert!(num(idle, "pflow.process.cpu.user_us") < 100_000.0);
    assert!(idle.attr("pflow.process.memory.peak_bytes").is_none());

    let shown = pflow_ok(env.pflow().args(["trace", "show", "--node", "burn"]));
    let shown = String::from_utf8_lossy(&shown.stdout);
    let line = shown
        .lines()
        .find(|l| l.trim_start().starts_with("resources:"))
        .unwrap_or_else(|| panic!("no resources line:\n{shown}"));
    assert!(
        line.contains("command cpu") && line.contains("command peak rss"),
        "{line}"
    );
    assert!(
        line.contains("MiB") && line.contains("pflow busy"),
        "{line}"
    );
}

#[test]
fn the_html_report_shows_a_nodes_resources() {
    if !python3() || !super::browser::browser_ready() {
        return;
    }
    let env = Env::new();
    let wf = env.workflow(
        "wf.json",
        json!({"ir_version": "0.1.0", "nodes": [
            {"id": "burn", "type": "shell", "params": {"command": BURN}}
        ]}),
    );
    pflow_ok(env.pflow().args(["run", "--trace"]).arg(&wf));
    let burn = by_path(&last_trace(&env), "burn").span_id.clone();
    let html = env.dir.path().join("report.html");
    pflow_ok(env.pflow().args(["trace", "report", "-o"]).arg(&html));
    let seen = super::browser::node_script(
        "report.mjs",
        &["details".as_ref(), html.as_os_str(), burn.as_ref()],
    );
    assert_eq!(seen["title"], json!("node burn"), "{seen}");
    let text = seen["text"].as_str().unwrap_or_default();
    // Section titles are drawn in capitals; the section ends at the params.
    let resources = text
        .split("RESOURCES")
        .nth(1)
        .and_then(|r| r.split("PARAMS").next())
        .unwrap_or_else(|| panic!("no Resources section: {text}"));
    for label in [
        "Command CPU (user)",
        "Command CPU (system)",
        "Command peak RSS",
        "pflow busy time",
    ] {
        assert!(resources.contains(label), "{label}: {resources}");
    }
    assert!(resources.contains(" MiB"), "{resources}");
}

#[test]
fn a_failing_command_keeps_its_usage_and_a_killed_one_has_none() {
    let env = Env::new();
    let wf = env.workflow(
        "wf.json",
        json!({"ir_version": "0.1.0", "nodes": [
            {"id": "fails", "type": "shell", "params": {"command": "exit 3", "ignore_errors": true}},
            {"id": "slow", "type": "shell", "params": {"command": "sleep 30", "timeout": 0.3}}
        ], "edges": [{"from": "fails", "to": "slow"}]}),
    );
    let out = env
        .pflow()
        .args(["run", "--trace"])
        .arg(&wf)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let spans = last_trace(&env);
    let fails = by_path(&spans, "fails");
    assert!(fails.attr("pflow.process.cpu.system_us").is_some());
    let slow = by_path(&spans, "slow");
    assert_eq!(slow.s("error.type"), "timeout");
    assert!(
        slow.attr("pflow.process.cpu.user_us").is_none(),
        "{:?}",
        slow.attrs
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn http_node_records_exact_body_sizes_and_time_to_first_byte() {
    let server = MockServer::start().await;
    let sent = "x".repeat(1000);
    Mock::given(method("POST"))
        .and(path("/upload"))
        .and(body_string(sent.clone()))
        .respond_with(
            ResponseTemplate::new(200)
                .set_delay(Duration::from_millis(150))
                .set_body_raw(vec![b'y'; 12_345], "text/plain"),
        )
        .mount(&server)
        .await;
    let env = Env::new();
    let wf = env.workflow(
        "wf.json",
        json!({"ir_version": "0.1.0", "nodes": [
            {"id": "up", "type": "http", "params": {"url": format!("{}/upload", server.uri()), "body": sent}}
        ]}),
    );
    pflow_ok(env.pflow().args(["run", "--trace"]).arg(&wf));
    let spans = last_trace(&env);
    let req = by_name(&spans, "POST");
    assert_eq!(req.i("http.request.body.size"), 1000);
    assert_eq!(req.i("http.response.body.size"), 12_345);
    let ttfb = num(req, "pflow.http.time_to_first_byte_s");
    let span_s = (req.end - req.start) as f64 / 1e9;
    assert!((0.15..=span_s).contains(&ttfb), "{ttfb} of {span_s}");
    let node = by_path(&spans, "up");
    assert_eq!(req.parent, node.span_id);
    assert!(num(node, "pflow.node.busy_us") > 0.0);

    let shown = pflow_ok(env.pflow().args(["trace", "show", "--node", "up"]));
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("http POST"), "{shown}");
    assert!(
        shown.contains("sent 1000 B · received 12.1 KiB · first byte"),
        "{shown}"
    );
}

/// An OpenAI-compatible server that streams the recorded chunks of
/// `openai-chat-stream-include-usage.sse` (2 output tokens): the first after
/// 200 ms, then one every 100 ms.
async fn slow_stream_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let wire = String::from_utf8(llm_fixture("openai-chat-stream-include-usage.sse")).unwrap();
    let events: Vec<String> = wire
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| format!("{e}\n\n"))
        .collect();
    assert_eq!(events.len(), 6);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let events = events.clone();
            tokio::spawn(async move {
                read_request(&mut sock).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
                let _ = sock.write_all(head.as_bytes()).await;
                for (i, e) in events.iter().enumerate() {
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    let chunk = format!("{:x}\r\n{e}\r\n", e.len());
                    let _ = sock.write_all(chunk.as_bytes()).await;
                    let _ = sock.flush().await;
                }
                let _ = sock.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    base
}

#[tokio::test(flavor = "multi_thread")]
async fn streamed_llm_call_has_time_to_first_chunk_and_tokens_per_second() {
    let base = slow_stream_server().await;
    let env = Env::new();
    let wf = env.workflow(
        "wf.json",
        json!({"ir_version": "0.1.0", "nodes": [
            {"id": "ask", "type": "llm", "params": {"prompt": "Say foo", "model": "gpt-4o", "stream": true}}
        ]}),
    );
    pflow_ok(
        env.pflow()
            .env("OPENAI_BASE_URL", format!("{base}/v1"))
            .env("OPENAI_API_KEY", "sk-test-key-abcdefghijklmnop")
            .args(["run", "--trace"])
            .arg(&wf),
    );
    let spans = last_trace(&env);
    let call = by_name(&spans, "chat gpt-4o");
    assert_eq!(call.i("gen_ai.usage.output_tokens"), 2);
    let ttfc = num(call, "gen_ai.response.time_to_first_chunk");
    let span_s = (call.end - call.start) as f64 / 1e9;
    assert!(ttfc >= 0.2 && ttfc < span_s, "{ttfc} of {span_s}");
    // 2 tokens over the ≥ 0.5 s from the first chunk to the last.
    let rate = num(call, "pflow.llm.output_tokens_per_s");
    assert!(rate > 0.0 && rate <= 4.0, "{rate}");
    let generating = 2.0 / rate;
    assert!(
        generating >= 0.5 && generating <= span_s - ttfc + 0.01,
        "{generating} s of {span_s} s after {ttfc} s"
    );
    // The attempt's request: its body size and the 200 ms to its head.
    let req = spans
        .iter()
        .find(|s| s.name == "POST" && s.parent == call.span_id)
        .expect("the attempt's HTTP span");
    assert!(req.i("http.request.body.size") > 0);
    assert!(num(req, "pflow.http.time_to_first_byte_s") >= 0.2);

    let shown = pflow_ok(env.pflow().args(["trace", "show", "--node", "ask"]));
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains("first chunk") && shown.contains("output tokens/s"),
        "{shown}"
    );
}

#[test]
fn telemetry_off_records_nothing_and_costs_nothing() {
    // With telemetry off the meter is skipped, the command still reaped.
    let env = Env::new();
    let wf = env.workflow(
        "wf.json",
        json!({"ir_version": "0.1.0", "nodes": [
            {"id": "s", "type": "shell", "params": {"command": "echo hi"}}
        ]}),
    );
    let out = pflow_ok(
        env.pflow()
            .env("OTEL_SDK_DISABLED", "true")
            .args(["run", "--trace"])
            .arg(&wf),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("hi"));
    assert!(env.trace_files().is_empty());
}
