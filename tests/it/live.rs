//! `pflow run … --live` and `pflow trace tail`: spans streamed as they end
//! to stderr lines and to a server-sent-events page on 127.0.0.1, read here
//! by a plain HTTP client while the run goes on; the saved trace the same as
//! without `--live`, no secret in the stream, the port closed after exit, a
//! client that never reads unable to hold the run up.

use super::common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `pflow` as a process to spawn, isolated like [`Env::pflow`].
fn spawn(env: &Env, args: &[&str], extra_env: &[(&str, &str)]) -> Child {
    let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("pflow"));
    c.env("PFLOW_HOME", env.home());
    for (k, _) in std::env::vars() {
        if k.starts_with("OTEL_") || k.starts_with("PFLOW_") && k != "PFLOW_HOME" {
            c.env_remove(k);
        }
    }
    for (k, v) in extra_env {
        c.env(k, v);
    }
    c.current_dir(env.dir.path())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pflow starts")
}

/// A started `--live` run: its process, the URL it printed, and its stderr so far.
struct LiveRun {
    child: Child,
    url: String,
    port: u16,
    /// `/TOKEN/`: every path of the server starts with it.
    base: String,
    stderr: mpsc::Receiver<String>,
    /// Read as it comes: a full pipe would block the run.
    stdout: std::thread::JoinHandle<String>,
}

fn start_live(env: &Env, args: &[&str], extra_env: &[(&str, &str)]) -> LiveRun {
    let mut child = spawn(env, args, extra_env);
    let err = child.stderr.take().unwrap();
    let mut out = child.stdout.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("pflow prints the live URL first");
    let url = first
        .strip_prefix("live view: ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("first stderr line names the URL: {first}"))
        .to_string();
    let (port, base) = url
        .strip_prefix("http://127.0.0.1:")
        .and_then(|r| r.split_once('/'))
        .unwrap_or_else(|| panic!("a 127.0.0.1 URL with a port: {url}"));
    let port = port.parse().unwrap();
    let base = format!("/{base}");
    assert!(
        base.len() == 34 && base.ends_with('/'),
        "a 32-hex token in the path: {url}"
    );
    LiveRun {
        child,
        url,
        port,
        base,
        stderr: rx,
        stdout,
    }
}

impl LiveRun {
    /// Waits for the process (at most a minute: the live view must never hang a run).
    fn wait(mut self) -> (i32, String, String) {
        let t0 = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if t0.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
                panic!("the run did not end within a minute");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = self.stdout.join().unwrap();
        let mut err = Vec::new();
        while let Ok(l) = self.stderr.recv_timeout(Duration::from_secs(5)) {
            err.push(l);
        }
        (status.code().unwrap_or(-1), out, err.join("\n"))
    }
}

/// One server-sent event as received.
#[derive(Debug, Clone)]
struct Event {
    id: Option<u64>,
    name: String,
    data: String,
}

impl Event {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {}", self.data))
    }
}

/// Opens `path` on the run's server with a plain HTTP/1.0 request (the body
/// then ends when the server closes it) and returns the raw stream.
fn request(port: u16, path: &str, host: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("the live server accepts");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    s
}

/// Reads the event stream on a thread: every event, and the raw text (for the secret check).
fn subscribe(run: &LiveRun) -> (mpsc::Receiver<Event>, std::thread::JoinHandle<String>) {
    let port = run.port;
    let s = request(
        port,
        &format!("{}events", run.base),
        &format!("127.0.0.1:{port}"),
    );
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut raw = String::new();
        let mut r = BufReader::new(s);
        let mut head = String::new();
        // Status line and headers.
        loop {
            head.clear();
            if r.read_line(&mut head).unwrap_or(0) == 0 || head.trim().is_empty() {
                break;
            }
            raw.push_str(&head);
        }
        let (mut id, mut name, mut data) = (None, String::from("message"), String::new());
        let mut line = String::new();
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            raw.push_str(&line);
            let l = line.trim_end_matches(['\r', '\n']);
            if l.is_empty() {
                if !data.is_empty() {
                    let _ = tx.send(Event {
                        id,
                        name: name.clone(),
                        data: std::mem::take(&mut data),
                    });
                }
                id = None;
                name = "message".into();
            } else if let Some(v) = l.strip_prefix("id: ") {
                id = v.parse().ok();
            } else if let Some(v) = l.strip_prefix("event: ") {
                name = v.to_string();
            } else if let Some(v) = l.strip_prefix("data: ") {
                data.push_str(v);
            }
            line.clear();
        }
        raw
    });
    (rx, reader)
}

/// A chain with a slow middle: `fetch` (0.3 s), an LLM call (echo model),
/// then `slow` (1.5 s), so the first spans are out long before the end.
fn chain() -> Value {
    json!({"ir_version": "0.1.0", "metadata": {"name": "live-chain"},
        "nodes": [
            {"id": "fetch", "type": "shell", "params": {"command": "sleep 0.3; echo data"}},
            {"id": "ask", "type": "llm", "params": {"model": "echo", "prompt": "summarise ${fetch.stdout}", "max_tokens": 40}},
            {"id": "slow", "type": "shell", "params": {"command": "sleep 1.5; printf done"}}
        ],
        "edges": [{"from": "fetch", "to": "ask"}, {"from": "ask", "to": "slow"}],
        "outputs": {"out": {"source": "${slow.stdout}"}}})
}

fn port_closed(port: u16) -> bool {
    TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .is_err()
}

#[test]
fn spans_stream_in_order_while_the_run_goes_and_the_end_carries_the_summary() {
    let env = Env::new();
    let wf = env.workflow("chain.json", chain());
    let wf = wf.to_str().unwrap();
    let mut run = start_live(
        &env,
        &["run", wf, "--live", "--trace", "--output-format", "json"],
        &[],
    );
    let url = run.url.clone();
    let port = run.port;
    assert!(
        env.home().join("traces/live").read_dir().unwrap().count() == 1,
        "the run announces itself for `trace tail`"
    );
    let (events, reader) = subscribe(&run);
    let mut got: Vec<Event> = Vec::new();
    let mut fetch_seen_while_running = None;
    while let Ok(e) = events.recv_timeout(Duration::from_secs(30)) {
        if e.name == "span" && e.json()["node"] == "fetch" && e.json()["kind"] == "node" {
            fetch_seen_while_running = Some(run.child.try_wait().unwrap().is_none());
        }
        let end = e.name == "end";
        got.push(e);
        if end {
            break;
        }
    }
    let raw = reader.join().unwrap();
    assert!(
        raw.starts_with("HTTP/1.") && raw.contains("content-type: text/event-stream"),
        "{raw}"
    );
    assert_eq!(
        fetch_seen_while_running,
        Some(true),
        "`fetch` arrives while the run still goes (1.5 s of `slow` to come)"
    );
    // In order: start, the spans in the order they ended, end; ids count up.
    let names: Vec<&str> = got.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names.first(), Some(&"start"), "{names:?}");
    assert_eq!(names.last(), Some(&"end"), "{names:?}");
    let ids: Vec<u64> = got.iter().map(|e| e.id.unwrap()).collect();
    assert_eq!(ids, (1..=got.len() as u64).collect::<Vec<_>>());
    let spans: Vec<Value> = got
        .iter()
        .filter(|e| e.name == "span")
        .map(Event::json)
        .collect();
    let order: Vec<String> = spans
        .iter()
        .filter(|s| s["kind"] != "other")
        .map(|s| {
            format!(
                "{}:{}",
                s["kind"].as_str().unwrap(),
                s["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            "node:node fetch",
            "llm:chat echo",
            "node:node ask",
            "node:node slow",
            "workflow:invoke_workflow live-chain",
            "run:pflow run"
        ]
    );
    for w in spans.windows(2) {
        assert!(w[0]["end_ms"].as_f64() <= w[1]["end_ms"].as_f64(), "{w:?}");
    }
    let llm = spans.iter().find(|s| s["kind"] == "llm").unwrap();
    assert_eq!(llm["node"], "ask");
    assert_eq!(llm["model"], "echo");
    assert!(llm["input_tokens"].as_u64() > Some(0), "{llm}");
    let start = got[0].json();
    let end = got.last().unwrap().json();

    let (code, stdout, stderr) = run.wait();
    assert_eq!(code, 0, "{stderr}");
    // stdout is still the one JSON object, and the end event agrees with it.
    let out: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is one JSON object ({e}): {stdout}"));
    assert_eq!(start["trace_id"], out["trace_id"]);
    assert_eq!(end["status"], "ok");
    assert_eq!(end["exit_code"], 0);
    assert_eq!(end["trace_id"], out["trace_id"]);
    assert_eq!(end["trace_file"], out["trace_file"]);
    assert_eq!(end["llm_calls"], 1);
    assert_eq!(end["tokens_total"], out["metrics"]["total"]["tokens_total"]);
    assert_eq!(end["metrics"], out["metrics"]);
    // The terminal got one line per node and LLM call, then the end line.
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("[+")).collect();
    assert_eq!(lines.len(), 5, "{stderr}");
    assert!(lines[0].contains("✓ node fetch (shell)"), "{stderr}");
    assert!(
        lines[1].contains("✓ llm ask · chat echo") && lines[1].contains(" tok ("),
        "{stderr}"
    );
    assert!(
        lines[4].contains("■ run ok in") && lines[4].contains("1 LLM call"),
        "{stderr}"
    );
    // The server is gone with the run, and so is its announcement.
    assert!(port_closed(port), "{url} still open after exit");
    assert_eq!(
        env.home().join("traces/live").read_dir().unwrap().count(),
        0
    );
}

/// The spans of a trace file with what differs between any two runs taken
/// out: ids, times, the run id, the process.
fn comparable(path: &std::path::Path) -> Vec<String> {
    let (spans, _) = read_trace(path);
    let names: std::collections::HashMap<&str, &str> = spans
        .iter()
        .map(|s| (s.span_id.as_str(), s.name.as_str()))
        .collect();
    let mut out: Vec<String> = spans
        .iter()
        .map(|s| {
            let mut attrs = s.attrs.clone();
            for k in ["pflow.run.id", "gen_ai.response.id"] {
                attrs.remove(k);
            }
            // Resource use is measured, so it differs run to run: compared by
            // presence (peaks are recorded only when they rose, so not even that).
            for k in [
                "pflow.process.cpu.user_us",
                "pflow.process.cpu.system_us",
                "pflow.node.busy_us",
                "pflow.http.time_to_first_byte_s",
                "pflow.llm.output_tokens_per_s",
                "gen_ai.response.time_to_first_chunk",
            ] {
                if let Some(v) = attrs.get_mut(k) {
                    *v = Value::from("measured");
                }
            }
            for k in [
                "pflow.node.rss_peak_bytes",
                "pflow.process.memory.peak_bytes",
            ] {
                attrs.remove(k);
            }
            let events: Vec<String> = s
                .events
                .iter()
                .map(|(n, a)| format!("{n}{}", Value::Object(a.clone())))
                .collect();
            format!(
                "{} < {} | {} {} | {} | {:?}",
                s.name,
                names.get(s.parent.as_str()).unwrap_or(&"-"),
                s.status_code,
                s.status_message,
                // Attribute order is not part of a span (a failed node records
                // its attempt fields at a different point than a run's replay).
                Value::from_iter(
                    attrs
                        .into_iter()
                        .collect::<std::collections::BTreeMap<_, _>>()
                ),
                events
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn the_saved_trace_is_the_same_with_and_without_live() {
    let env = Env::new();
    // Quick and deterministic: no sleeps, a failing node (its trace is saved anyway).
    let wf = env.workflow(
        "same.json",
        json!({"ir_version": "0.1.0", "metadata": {"name": "same"},
            "nodes": [
                {"id": "a", "type": "shell", "params": {"command": "echo one"}},
                {"id": "ask", "type": "llm", "params": {"model": "echo", "prompt": "say ${a.stdout}"}},
                {"id": "items", "type": "shell", "batch": {"items": [1, 2, 3], "as": "x", "parallel": true, "max_concurrent": 2},
                 "params": {"command": "echo ${x}"}},
                {"id": "b", "type": "shell", "params": {"command": "echo oops >&2; exit 3"}}
            ],
            "edges": [{"from": "a", "to": "ask"}, {"from": "ask", "to": "items"}, {"from": "items", "to": "b"}]}),
    );
    let wf = wf.to_str().unwrap();
    let plain = env.pflow().args(["run", wf]).output().unwrap();
    assert_eq!(plain.status.code(), Some(1));
    let live = start_live(&env, &["run", wf, "--live"], &[]);
    let (code, _, stderr) = live.wait();
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("✗ node b (shell)"), "{stderr}");
    let files = env.trace_files();
    let files: Vec<_> = files.iter().filter(|p| p.is_file()).collect();
    assert_eq!(files.len(), 2, "{files:?}");
    let (a, b) = (comparable(files[0]), comparable(files[1]));
    assert!(a.len() > 8, "{a:?}");
    assert_eq!(a, b, "the trace with --live differs from the one without");
}

#[test]
fn secrets_never_reach_the_stream_or_the_terminal() {
    let env = Env::new();
    let secret = "Zq7rT2mXw9LkP4vN8sHc3JdF6gBy";
    let wf = env.workflow(
        "leak.json",
        json!({"ir_version": "0.1.0", "metadata": {"name": "leak"},
            "nodes": [
                {"id": "wait", "type": "shell", "params": {"command": "sleep 0.5"}},
                {"id": "leak", "type": "shell", "params": {"command": "echo \"token is $DEPLOY_API_TOKEN\" >&2; exit 4"}}
            ],
            "edges": [{"from": "wait", "to": "leak"}]}),
    );
    let run = start_live(
        &env,
        &["run", wf.to_str().unwrap(), "--live"],
        &[("DEPLOY_API_TOKEN", secret)],
    );
    let (events, reader) = subscribe(&run);
    let mut failed = None;
    while let Ok(e) = events.recv_timeout(Duration::from_secs(30)) {
        if e.name == "span" && e.json()["node"] == "leak" && e.json()["kind"] == "node" {
            failed = Some(e.json());
        }
        if e.name == "end" {
            break;
        }
    }
    let raw = reader.join().unwrap();
    let (code, stdout, stderr) = run.wait();
    assert_eq!(code, 1, "{stderr}");
    let failed = failed.expect("the failing node's span");
    assert_eq!(failed["status"], "error");
    // The message is there, the secret in it is not: redacted as in the trace.
    let message = failed["message"].as_str().unwrap_or_default();
    assert!(message.contains("[REDACTED]"), "{failed}");
    for (what, text) in [("stream", &raw), ("stderr", &stderr), ("stdout", &stdout)] {
        assert!(
            !text.contains(secret),
            "the secret is in the {what}:\n{text}"
        );
    }
    let trace = std::fs::read_to_string(&env.trace_files()[0]).unwrap();
    assert!(!trace.contains(secret));
}

#[test]
fn a_client_that_never_reads_cannot_hold_the_run() {
    let env = Env::new();
    // 6,000 spans, ~3 MB of events: more than the feed's channel holds
    // (that it drops the oldest for a consumer behind is checked in
    // `telemetry::live`'s unit tests; here the kernel's socket buffers may
    // absorb the rest).
    let items: Vec<u32> = (0..6000).collect();
    let wf = env.workflow(
        "many.json",
        json!({"ir_version": "0.1.0", "metadata": {"name": "many"},
            "nodes": [
                {"id": "wait", "type": "shell", "params": {"command": "sleep 0.3"}},
                {"id": "each", "type": "echo", "batch": {"items": items, "as": "x", "parallel": true, "max_concurrent": 64},
                 "params": {"value": "${x}"}}
            ],
            "edges": [{"from": "wait", "to": "each"}]}),
    );
    let run = start_live(
        &env,
        &["run", wf.to_str().unwrap(), "--live", "--no-progress"],
        &[("PFLOW_PROGRESS", "off")],
    );
    let port = run.port;
    // Connected, never read from (until the run is over).
    let mut stalled = request(
        port,
        &format!("{}events", run.base),
        &format!("127.0.0.1:{port}"),
    );
    let t0 = Instant::now();
    let (code, _, stderr) = run.wait();
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("■ run ok"),
        "the run's end line:\n{}",
        &stderr[stderr.len().saturating_sub(2000)..]
    );
    eprintln!("run with a stalled client: {:?}", t0.elapsed());
    assert!(port_closed(port));
    // The client was subscribed all along.
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    let _ = stalled.read_to_end(&mut got);
    let got = String::from_utf8_lossy(&got);
    assert!(
        got.contains("event: start"),
        "{}",
        &got[..got.len().min(500)]
    );
}

#[test]
fn the_page_is_local_only_and_self_contained() {
    let env = Env::new();
    let wf = env.workflow(
        "page.json",
        json!({"ir_version": "0.1.0", "metadata": {"name": "page"},
            "nodes": [{"id": "wait", "type": "shell", "params": {"command": "sleep 1"}}], "edges": []}),
    );
    let run = start_live(&env, &["run", wf.to_str().unwrap(), "--live"], &[]);
    let port = run.port;
    let read = |path: &str, host: &str| {
        let mut s = request(port, path, host);
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text
    };
    let base = run.base.clone();
    let page = read(&base, &format!("127.0.0.1:{port}"));
    assert!(
        page.starts_with("HTTP/1.0 200") || page.starts_with("HTTP/1.1 200"),
        "{page}"
    );
    let csp = "content-security-policy: default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; img-src data:";
    assert!(page.to_ascii_lowercase().contains(csp), "{page}");
    assert!(page.contains("new EventSource(\"events\")"));
    assert!(!page.contains("https://"));
    // Another site's name resolving to 127.0.0.1 (DNS rebinding) is refused.
    let rebound = read(
        &format!("{base}events"),
        &format!("attacker.example:{port}"),
    );
    assert!(rebound.contains(" 403 "), "{rebound}");
    assert!(read(&format!("{base}nope"), &format!("localhost:{port}")).contains(" 404 "));
    // Other users of the machine reach 127.0.0.1 too: without the URL's token, nothing.
    for path in [
        "/",
        "/events",
        "/run",
        "/0123456789abcdef0123456789abcdef/events",
    ] {
        let r = read(path, &format!("127.0.0.1:{port}"));
        assert!(r.contains(" 404 ") && !r.contains("event:"), "{path}: {r}");
    }
    let bare = read(base.trim_end_matches('/'), &format!("127.0.0.1:{port}"));
    assert!(
        bare.contains(" 308 ") && bare.contains(&format!("location: {base}")),
        "{bare}"
    );
    let announced = std::fs::read_dir(env.home().join("traces/live"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&announced).unwrap().permissions().mode() & 0o777,
        0o600,
        "the announcement holds the token: owner only"
    );
    let (code, _, _) = run.wait();
    assert_eq!(code, 0);
}

#[test]
fn a_busy_live_port_is_a_usage_error_before_anything_runs() {
    let env = Env::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let marker = env.dir.path().join("ran");
    let wf = env.workflow(
        "busy.json",
        json!({"ir_version": "0.1.0", "nodes": [{"id": "touch", "type": "shell",
            "params": {"command": format!("touch {}", marker.display())}}], "edges": []}),
    );
    let out = env
        .pflow()
        .args(["run", wf.to_str().unwrap(), "--live-port", &port])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot serve the live view on 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(!marker.exists(), "nothing ran");
    let misplaced = env.pflow().args(["nodes", "--live"]).output().unwrap();
    assert_eq!(misplaced.status.code(), Some(2));
}

#[test]
fn trace_tail_follows_a_live_run_to_its_end_and_reads_saved_ones() {
    let env = Env::new();
    let none = env.pflow().args(["trace", "tail"]).output().unwrap();
    assert_eq!(none.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no live run"));

    // `--follow` started first waits for the run to appear.
    let tail = spawn(&env, &["trace", "tail", "--follow"], &[]);
    let wf = env.workflow("chain.json", chain());
    let run = start_live(
        &env,
        &["run", wf.to_str().unwrap(), "--live", "--trace"],
        &[],
    );
    let (code, stdout, stderr) = run.wait();
    assert_eq!(code, 0, "{stderr}");
    let out = tail.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("following "), "{text}");
    let spans: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("[+"))
        .collect();
    assert_eq!(spans.len(), 5, "{text}");
    assert!(spans[0].contains("✓ node fetch (shell)"), "{text}");
    assert!(spans[3].contains("✓ node slow (shell)"), "{text}");
    assert!(spans[4].contains("■ run ok"), "{text}");
    // The same lines as the run printed (times apart, they are computed alike).
    let run_lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("[+")).collect();
    let tail_of = |l: &str| l.split_once("] ").map(|x| x.1.to_string()).unwrap();
    assert_eq!(
        spans.iter().map(|l| tail_of(l)).collect::<Vec<_>>(),
        run_lines.iter().map(|l| tail_of(l)).collect::<Vec<_>>()
    );
    assert!(stdout.trim_end().ends_with("done"));

    // A run that is over is read from its saved trace, JSON lines on request.
    let trace_id = env.trace_files()[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .split('_')
        .nth(1)
        .unwrap()
        .trim_end_matches(".otlp.json")
        .to_string();
    let saved = pflow_ok(env.pflow().args(["trace", "tail", &trace_id[..8]]));
    let saved = String::from_utf8_lossy(&saved.stdout);
    assert!(saved.contains("(saved, not live)"), "{saved}");
    assert!(saved.contains("✓ node slow (shell)"), "{saved}");
    let json = pflow_ok(
        env.pflow()
            .args(["trace", "tail", &trace_id, "--output-format", "json"]),
    );
    let events: Vec<Value> = String::from_utf8_lossy(&json.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events.iter().all(|e| e["event"] == "span"));
    assert_eq!(events.last().unwrap()["data"]["kind"], "run");
    // `last` with no run live: the newest saved trace.
    let last = pflow_ok(env.pflow().args(["trace", "tail", "last"]));
    assert!(String::from_utf8_lossy(&last.stdout).contains(&trace_id));
}

#[test]
fn an_interrupted_run_still_ends_its_stream_saves_its_trace_and_closes() {
    let env = Env::new();
    let wf = env.workflow(
        "long.json",
        json!({"ir_version": "0.1.0", "metadata": {"name": "long"},
            "nodes": [
                {"id": "quick", "type": "shell", "params": {"command": "echo hi"}},
                {"id": "long", "type": "shell", "params": {"command": "sleep 30"}}
            ],
            "edges": [{"from": "quick", "to": "long"}]}),
    );
    let run = start_live(&env, &["run", wf.to_str().unwrap(), "--live"], &[]);
    let port = run.port;
    let (events, reader) = subscribe(&run);
    let mut got = Vec::new();
    while let Ok(e) = events.recv_timeout(Duration::from_secs(30)) {
        let quick_done = e.name == "span" && e.json()["node"] == "quick";
        got.push(e);
        if quick_done {
            // SAFETY: signals the child this test started.
            unsafe { libc::kill(run.child.id() as i32, libc::SIGINT) };
        }
        if got.last().unwrap().name == "end" {
            break;
        }
    }
    reader.join().unwrap();
    let (code, _, stderr) = run.wait();
    assert_eq!(code, 130, "{stderr}");
    let end = got.last().unwrap();
    assert_eq!(end.name, "end", "{got:?}");
    let end = end.json();
    assert_eq!(end["status"], "interrupted");
    assert_eq!(end["exit_code"], 130);
    let file = end["trace_file"].as_str().expect("the trace is saved");
    assert!(std::path::Path::new(file).is_file());
    let long = got
        .iter()
        .filter(|e| e.name == "span")
        .map(Event::json)
        .find(|s| s["node"] == "long" && s["kind"] == "node")
        .expect("the interrupted node's span");
    assert_eq!(long["status"], "interrupted", "{long}");
    assert!(port_closed(port));
}
