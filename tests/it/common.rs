//! Helpers: a `pflow` command isolated in a temp home, workflow files, and a
//! trace-file reader that checks each line against opentelemetry-proto.

use assert_cmd::Command;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use serde_json::Value;
use std::path::{Path, PathBuf};

pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn traces_dir(&self) -> PathBuf {
        self.home().join("traces")
    }

    /// `pflow` with PFLOW_HOME in the temp dir and no OTEL_* leaking in.
    pub fn pflow(&self) -> Command {
        let mut c = Command::cargo_bin("pflow").expect("binary");
        c.env("PFLOW_HOME", self.home());
        for (k, _) in std::env::vars() {
            if k.starts_with("OTEL_") || k.starts_with("PFLOW_") && k != "PFLOW_HOME" {
                c.env_remove(k);
            }
        }
        c.current_dir(self.dir.path());
        c
    }

    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, content).unwrap();
        p
    }

    pub fn workflow(&self, name: &str, v: Value) -> PathBuf {
        self.write(name, &serde_json::to_string_pretty(&v).unwrap())
    }

    pub fn trace_files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = match std::fs::read_dir(self.traces_dir()) {
            Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
            Err(_) => vec![],
        };
        v.sort();
        v
    }
}

/// Runs and parses the single JSON object on stdout.
pub fn run_json(cmd: &mut Command) -> (Value, i32, String) {
    let out = cmd.output().expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {stdout}"));
    (
        v,
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A span flattened from the trace file.
#[derive(Debug, Clone)]
pub struct SpanView {
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent: String,
    pub kind: i64,
    pub status_code: i64,
    pub status_message: String,
    pub attrs: serde_json::Map<String, Value>,
    pub events: Vec<(String, serde_json::Map<String, Value>)>,
    pub start: u64,
    pub end: u64,
}

impl SpanView {
    pub fn attr(&self, k: &str) -> Option<&Value> {
        self.attrs.get(k)
    }
    pub fn s(&self, k: &str) -> &str {
        self.attrs.get(k).and_then(Value::as_str).unwrap_or("")
    }
    pub fn i(&self, k: &str) -> i64 {
        self.attrs.get(k).and_then(Value::as_i64).unwrap_or(-1)
    }
}

fn any_value(v: &Value) -> Value {
    let Some(obj) = v.as_object() else {
        return Value::Null;
    };
    if let Some(s) = obj.get("stringValue") {
        return s.clone();
    }
    if let Some(i) = obj.get("intValue") {
        return match i {
            Value::String(s) => Value::from(s.parse::<i64>().unwrap_or_default()),
            other => other.clone(),
        };
    }
    if let Some(b) = obj.get("boolValue") {
        return b.clone();
    }
    if let Some(d) = obj.get("doubleValue") {
        return d.clone();
    }
    if let Some(a) = obj.get("arrayValue") {
        return Value::Array(
            a["values"]
                .as_array()
                .map(|vs| vs.iter().map(any_value).collect())
                .unwrap_or_default(),
        );
    }
    Value::Null
}

fn attrs(v: &Value) -> serde_json::Map<String, Value> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|kv| {
                    (
                        kv["key"].as_str().unwrap_or("").to_string(),
                        any_value(&kv["value"]),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn u(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        other => other.as_u64().unwrap_or(0),
    }
}

/// Puts back what the compact form leaves out of spans, as pflow's trace
/// readers do (`pflow::telemetry::compact::restore_span`).
pub fn restore_request(req: &mut ExportTraceServiceRequest) {
    for rs in &mut req.resource_spans {
        for ss in &mut rs.scope_spans {
            ss.spans
                .iter_mut()
                .for_each(pflow::telemetry::compact::restore_span);
        }
    }
}

/// OTLP requires an attribute key to appear once per span; a field recorded twice on a
/// `tracing` span is exported twice, and backends then keep either value.
fn assert_unique_keys(attributes: &Value, span: &str) {
    let mut seen = std::collections::HashSet::new();
    for kv in attributes.as_array().into_iter().flatten() {
        let key = kv["key"].as_str().unwrap_or("");
        assert!(
            seen.insert(key),
            "span {span:?} carries attribute {key:?} twice"
        );
    }
}

/// Reads a trace file: every line must be an `ExportTraceServiceRequest` in
/// OTLP/JSON (checked with opentelemetry-proto's serde mapping), read back
/// as pflow's readers do (`pflow::traces::parse_request`, then
/// [`restore_request`]).
pub fn read_trace(path: &Path) -> (Vec<SpanView>, Vec<Value>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut spans = Vec::new();
    let mut resources = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let proto: Result<ExportTraceServiceRequest, _> = serde_json::from_str(line);
        let proto = proto.unwrap_or_else(|e| {
            panic!("line {} of {} is not OTLP/JSON: {e}", i + 1, path.display())
        });
        assert!(!proto.resource_spans.is_empty());
        let mut restored = pflow::traces::parse_request(line).unwrap();
        restore_request(&mut restored);
        let v: Value = serde_json::to_value(&restored).unwrap();
        for rs in v["resourceSpans"].as_array().unwrap() {
            resources.push(Value::Object(attrs(&rs["resource"]["attributes"])));
            for ss in rs["scopeSpans"].as_array().unwrap() {
                for s in ss["spans"].as_array().unwrap() {
                    assert_unique_keys(&s["attributes"], s["name"].as_str().unwrap_or(""));
                    spans.push(SpanView {
                        name: s["name"].as_str().unwrap().to_string(),
                        trace_id: s["traceId"].as_str().unwrap().to_string(),
                        span_id: s["spanId"].as_str().unwrap().to_string(),
                        parent: s["parentSpanId"].as_str().unwrap_or("").to_string(),
                        kind: s["kind"].as_i64().unwrap_or(0),
                        status_code: s["status"]["code"].as_i64().unwrap_or(0),
                        status_message: s["status"]["message"].as_str().unwrap_or("").to_string(),
                        attrs: attrs(&s["attributes"]),
                        events: s["events"]
                            .as_array()
                            .map(|es| {
                                es.iter()
                                    .map(|e| {
                                        (
                                            e["name"].as_str().unwrap_or("").to_string(),
                                            attrs(&e["attributes"]),
                                        )
                                    })
                                    .collect()
                            })
                            .unwrap_or_default(),
                        start: u(&s["startTimeUnixNano"]),
                        end: u(&s["endTimeUnixNano"]),
                    });
                }
            }
        }
    }
    (spans, resources)
}

pub fn by_name<'a>(spans: &'a [SpanView], name: &str) -> &'a SpanView {
    spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
        panic!(
            "no span `{name}` in {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        )
    })
}

/// The span of node path `path` (a batch item is `id[i]`, a nested node
/// `parent/child`), its first attempt: span names carry only the node id.
pub fn by_path<'a>(spans: &'a [SpanView], path: &str) -> &'a SpanView {
    spans
        .iter()
        .filter(|s| s.attr("pflow.node.path").and_then(Value::as_str) == Some(path))
        .min_by_key(|s| s.start)
        .unwrap_or_else(|| panic!("no span of node path `{path}`"))
}

/// A recorded LLM response body from `tests/fixtures/llm`.
pub fn llm_fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/llm")
            .join(name),
    )
    .unwrap()
}

/// Chunks listed one JSON object per line, as they travel on the wire:
/// SSE `data:` events ending with `[DONE]`.
pub fn sse_from_jsonl(name: &str) -> Vec<u8> {
    let text = String::from_utf8(llm_fixture(name)).unwrap();
    let mut wire = String::new();
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        wire.push_str(&format!("data: {l}\n\n"));
    }
    wire.push_str("data: [DONE]\n\n");
    wire.into_bytes()
}

/// Whether an external tool a test needs is there. Off CI a missing tool
/// skips the test with a note; on CI (`CI` set), whose set-up installs it,
/// a missing tool fails the test instead of passing it silently.
pub fn tool_present(present: bool, what: &str) -> bool {
    if !present {
        assert!(
            std::env::var_os("CI").is_none(),
            "{what} is missing on CI, whose set-up (.ci/run) provides it"
        );
        eprintln!("skipped: {what} is not installed");
    }
    present
}

/// A local OpenAI-compatible server answering every chat call with the
/// recorded `openai-chat.json` response.
pub async fn openai_server() -> wiremock::MockServer {
    use wiremock::matchers::{method, path};
    let server = wiremock::MockServer::start().await;
    wiremock::Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            wiremock::ResponseTemplate::new(200)
                .set_body_raw(llm_fixture("openai-chat.json"), "application/json"),
        )
        .mount(&server)
        .await;
    server
}

/// A local OpenAI-compatible server that refuses the first request with `429`,
/// `retry-after: RETRY_AFTER` and `message`, then answers every later one with
/// the recorded `openai-chat.json` response ([`requests`] counts them).
pub async fn rate_limited_once(retry_after: &str, message: &str) -> wiremock::MockServer {
    use std::sync::atomic::{AtomicBool, Ordering};
    let server = wiremock::MockServer::start().await;
    let refused = AtomicBool::new(false);
    let body = serde_json::json!({"error": {"message": message}}).to_string();
    let retry_after = retry_after.to_string();
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(move |_: &wiremock::Request| {
            if !refused.swap(true, Ordering::SeqCst) {
                wiremock::ResponseTemplate::new(429)
                    .insert_header("retry-after", retry_after.as_str())
                    .set_body_raw(body.clone(), "application/json")
            } else {
                wiremock::ResponseTemplate::new(200)
                    .set_body_raw(llm_fixture("openai-chat.json"), "application/json")
            }
        })
        .mount(&server)
        .await;
    server
}

/// How many requests the mock server received.
pub async fn requests(server: &wiremock::MockServer) -> usize {
    server.received_requests().await.map_or(0, |r| r.len())
}

/// `pflow` pointed at the mock server as its OpenAI endpoint, with a test key.
pub fn with_openai(env: &Env, server: &wiremock::MockServer) -> Command {
    let mut c = env.pflow();
    c.env("OPENAI_BASE_URL", format!("{}/v1", server.uri()))
        .env("OPENAI_API_KEY", "sk-test-key-abcdefghijklmnop");
    c
}

/// Running `sleep` processes whose command line contains `marker` (orphan checks).
pub fn count_procs(marker: &str) -> usize {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                if cmd.starts_with("sleep ") && cmd.contains(marker) {
                    n += 1;
                }
            }
        }
    }
    n
}

/// Every span name, span attribute, event name and event attribute in the
/// trace file (and every `pflow.*`/`gen_ai.*` resource attribute) is listed
/// in pflow's name registry, `src/telemetry/attr.rs`. Returns how many
/// distinct names were checked.
pub fn assert_registered(path: &Path) -> usize {
    use pflow::telemetry::attr::{lookup, Kind, REGISTRY};
    let (spans, resources) = read_trace(path);
    let mut seen = std::collections::BTreeSet::new();
    let mut missing = Vec::new();
    let mut check = |kind: Kind, name: &str| {
        if seen.insert((kind as u8, name.to_string())) && lookup(kind, name).is_none() {
            missing.push(format!("{kind:?} `{name}`"));
        }
    };
    for s in &spans {
        check(Kind::Span, &s.name);
        for k in s.attrs.keys() {
            check(Kind::Attr, k);
        }
        for (name, attrs) in &s.events {
            check(Kind::Event, name);
            for k in attrs.keys() {
                check(Kind::EventAttr, k);
            }
        }
    }
    for r in &resources {
        for k in r.as_object().into_iter().flat_map(|o| o.keys()) {
            if (k.starts_with("pflow.") || k.starts_with("gen_ai."))
                && !REGISTRY.iter().any(|n| n.name == k)
            {
                missing.push(format!("resource `{k}`"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{}: names not in src/telemetry/attr.rs: {missing:?}",
        path.display()
    );
    seen.len()
}

/// A path in the repository (shipped configs, scripts, fixtures).
pub fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Runs `pflow`, asserting it succeeded (its stderr is the failure message).
pub fn pflow_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().expect("run pflow");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Reads one HTTP/1 request from a loopback peer: headers, then `content-length` bytes of body.
pub async fn read_request(sock: &mut tokio::net::TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let Ok(n) = sock.read(&mut tmp).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return;
            }
        }
    }
}
