//! The observability stack run for real: the Jaeger v2 and Collector binaries
//! `scripts/stack.sh build` makes, started here on free loopback ports with
//! the shipped `otel-collector.yaml` and `jaeger.yaml` (addresses and paths
//! injected through their `${env:…}` references), killed when a test ends.
//! Without the binaries these tests fail on CI and skip loudly elsewhere.

use super::common::{
    openai_server, pflow_ok, read_trace, repo, run_json, tool_present, with_openai, Env, SpanView,
};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone)]
struct Bins {
    jaeger: PathBuf,
    otelcol: PathBuf,
}

/// The binaries: `PFLOW_STACK_JAEGER` / `PFLOW_STACK_OTELCOL`, else where
/// `scripts/stack.sh paths` says its cache keeps them.
fn bins() -> Option<Bins> {
    let out = Command::new("bash")
        .arg(repo("scripts/stack.sh"))
        .arg("paths")
        .output()
        .expect("bash runs scripts/stack.sh");
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    let from = |var: &str, key: &str| {
        std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
            listed
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .map(PathBuf::from)
                .unwrap_or_default()
        })
    };
    let b = Bins {
        jaeger: from("PFLOW_STACK_JAEGER", "jaeger"),
        otelcol: from("PFLOW_STACK_OTELCOL", "otelcol"),
    };
    let present = b.jaeger.is_file() && b.otelcol.is_file();
    if !present {
        eprintln!(
            "\n*** stack tests: Jaeger/Collector binaries missing ({} / {}); \
             build them with `scripts/stack.sh build` ***\n",
            b.jaeger.display(),
            b.otelcol.display()
        );
    }
    tool_present(present, "the stack binaries (scripts/stack.sh build)").then_some(b)
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("addr").to_string()
}

/// A child process killed (and reaped) when dropped.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Jaeger and the Collector, wired as docker-compose.yml wires them.
struct Stack {
    bins: Bins,
    dir: tempfile::TempDir,
    /// What the replay receiver reads (`$PFLOW_HOME/traces` in real use).
    replay_dir: PathBuf,
    env: Vec<(String, String)>,
    otlp_grpc: String,
    otlp_http: String,
    prometheus: String,
    jaeger_http: String,
    collector: Option<Proc>,
    _jaeger: Proc,
}

impl Stack {
    /// Starts both on free ports, picking new ones if a port was taken
    /// between choosing and binding it.
    fn start(bins: Bins, capture_content: bool) -> Stack {
        let mut last = String::new();
        for _ in 0..3 {
            match Stack::try_start(bins.clone(), capture_content) {
                Ok(s) => return s,
                Err(e) => last = e,
            }
        }
        panic!("the stack did not start: {last}");
    }

    fn try_start(bins: Bins, capture_content: bool) -> Result<Stack, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let replay_dir = dir.path().join("traces");
        for d in ["traces", "out", "state"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let (otlp_grpc, otlp_http, prometheus, jaeger_http) =
            (free_addr(), free_addr(), free_addr(), free_addr());
        let jaeger_otlp = free_addr();
        let path = |p: &str| dir.path().join(p).display().to_string();
        let env: Vec<(String, String)> = [
            ("PFLOW_STACK_OTLP_GRPC", otlp_grpc.clone()),
            ("PFLOW_STACK_OTLP_HTTP", otlp_http.clone()),
            ("PFLOW_STACK_PROMETHEUS", prometheus.clone()),
            ("PFLOW_STACK_HEALTH", free_addr()),
            ("PFLOW_STACK_JAEGER_OTLP", jaeger_otlp.clone()),
            ("PFLOW_STACK_TRACES_DIR", path("traces")),
            ("PFLOW_STACK_OUT_DIR", path("out")),
            ("PFLOW_STACK_STATE_DIR", path("state")),
            ("PFLOW_STACK_JAEGER_OTLP_GRPC", jaeger_otlp),
            ("PFLOW_STACK_JAEGER_OTLP_HTTP", free_addr()),
            ("PFLOW_STACK_JAEGER_HTTP", jaeger_http.clone()),
            ("PFLOW_STACK_JAEGER_QUERY_GRPC", free_addr()),
            ("PFLOW_STACK_JAEGER_HEALTH", free_addr()),
            (
                "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",
                capture_content.to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).unwrap().1.clone();
        let mut jaeger = spawn(&bins.jaeger, "jaeger.yaml", dir.path(), &env, "jaeger");
        wait_healthy(
            &mut jaeger,
            &format!("http://{}/status", get("PFLOW_STACK_JAEGER_HEALTH")),
        )?;
        let mut s = Stack {
            bins,
            dir,
            replay_dir,
            env,
            otlp_grpc,
            otlp_http,
            prometheus,
            jaeger_http,
            collector: None,
            _jaeger: jaeger,
        };
        s.try_start_collector().map(|()| s)
    }

    fn var(&self, k: &str) -> String {
        self.env.iter().find(|(n, _)| n == k).unwrap().1.clone()
    }

    fn start_collector(&mut self) {
        if let Err(e) = self.try_start_collector() {
            panic!("{e}");
        }
    }

    fn try_start_collector(&mut self) -> Result<(), String> {
        let mut c = spawn(
            &self.bins.otelcol,
            "otel-collector.yaml",
            self.dir.path(),
            &self.env,
            "otelcol",
        );
        wait_healthy(
            &mut c,
            &format!("http://{}/", self.var("PFLOW_STACK_HEALTH")),
        )?;
        self.collector = Some(c);
        Ok(())
    }

    /// Stops the Collector the way `docker stop` does (SIGTERM), so it flushes.
    fn stop_collector(&mut self) {
        if let Some(mut c) = self.collector.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.child.id() as libc::pid_t, libc::SIGTERM) };
            let _ = c.child.wait();
        }
    }

    fn collector_log(&self) -> String {
        self.collector.as_ref().map(Proc::log).unwrap_or_default()
    }

    fn file_output(&self) -> PathBuf {
        self.dir.path().join("out/traces.jsonl")
    }
}

fn spawn(bin: &Path, config: &str, dir: &Path, env: &[(String, String)], name: &str) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).unwrap();
    let child = Command::new(bin)
        .arg(format!("--config={}", repo(config).display()))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    Proc { child, log }
}

fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(f)
}

/// GET: the status and body, or None when nothing answers.
fn get(url: &str) -> Option<(u16, String)> {
    block(async {
        let r = reqwest::get(url).await.ok()?;
        let code = r.status().as_u16();
        Some((code, r.text().await.ok()?))
    })
}

fn post(url: &str, body: Vec<u8>) -> (u16, String) {
    block(async {
        let r = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        let code = r.status().as_u16();
        (code, r.text().await.unwrap_or_default())
    })
}

/// Calls `probe` until `done` accepts its answer or 40 s pass (a guard
/// against a hung peer, not a timing assertion); returns the last answer.
fn poll<T>(mut probe: impl FnMut() -> T, done: impl Fn(&T) -> bool) -> T {
    let until = Instant::now() + Duration::from_secs(40);
    loop {
        let answer = probe();
        if done(&answer) || Instant::now() > until {
            return answer;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until a health endpoint answers 200; an error (with the log) when
/// the process exits first (a port taken meanwhile) or never gets there.
fn wait_healthy(p: &mut Proc, url: &str) -> Result<(), String> {
    let state = poll(
        || {
            if get(url).is_some_and(|(code, _)| code == 200) {
                Some(true)
            } else if matches!(p.child.try_wait(), Ok(Some(_))) {
                Some(false)
            } else {
                None
            }
        },
        Option::is_some,
    );
    match state {
        Some(true) => Ok(()),
        _ => Err(format!("not healthy at {url}:\n{}", p.log())),
    }
}

/// A span as Jaeger's UI API (`/api/traces/{id}`, `/api/transform`) returns it.
#[derive(Debug, Clone)]
struct JSpan {
    id: String,
    parent: String,
    name: String,
    service: String,
    tags: serde_json::Map<String, Value>,
    start_us: u64,
    end_us: u64,
}

/// The spans of the first trace in a UI-API answer (`{"data": [trace]}`).
fn ui_spans(body: &Value) -> Vec<JSpan> {
    let Some(trace) = body["data"].as_array().and_then(|d| d.first()) else {
        return Vec::new();
    };
    let procs = &trace["processes"];
    trace["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let start = s["startTime"].as_u64().unwrap_or(0);
            JSpan {
                id: s["spanID"].as_str().unwrap_or("").to_string(),
                parent: s["references"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|r| r["refType"] == "CHILD_OF")
                    .and_then(|r| r["spanID"].as_str())
                    .unwrap_or("")
                    .to_string(),
                name: s["operationName"].as_str().unwrap_or("").to_string(),
                service: procs[s["processID"].as_str().unwrap_or("")]["serviceName"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                tags: s["tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| {
                        (
                            t["key"].as_str().unwrap_or("").to_string(),
                            t["value"].clone(),
                        )
                    })
                    .collect(),
                start_us: start,
                end_us: start + s["duration"].as_u64().unwrap_or(0),
            }
        })
        .collect()
}

impl Stack {
    /// The trace as stored: `raw=true` skips the query adjusters, one of
    /// which hides spans stored twice.
    fn jaeger_trace(&self, trace_id: &str) -> Vec<JSpan> {
        get(&format!(
            "http://{}/api/traces/{trace_id}?raw=true",
            self.jaeger_http
        ))
        .filter(|(code, _)| *code == 200)
        .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
        .map(|v| ui_spans(&v))
        .unwrap_or_default()
    }

    /// Waits until Jaeger holds at least `n` spans of the trace.
    fn wait_trace(&self, trace_id: &str, n: usize) -> Vec<JSpan> {
        let spans = poll(|| self.jaeger_trace(trace_id), |s| s.len() >= n);
        assert!(
            spans.len() >= n,
            "Jaeger has {} of {n} spans of {trace_id}\n{}",
            spans.len(),
            self.collector_log()
        );
        spans
    }

    /// The trace from `/api/v3/traces/{id}` (OTLP/JSON), via the trace-file reader.
    fn jaeger_trace_v3(&self, trace_id: &str) -> Vec<SpanView> {
        let (code, body) = get(&format!(
            "http://{}/api/v3/traces/{trace_id}",
            self.jaeger_http
        ))
        .expect("Jaeger answers");
        assert_eq!(code, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("JSON");
        let file = self.dir.path().join(format!("v3-{trace_id}.json"));
        std::fs::write(&file, serde_json::to_string(&v["result"]).unwrap()).unwrap();
        read_trace(&file).0
    }
}

/// span id → (parent id, name), the shape both sides must agree on.
fn tree<'a>(
    spans: impl Iterator<Item = (&'a str, &'a str, &'a str)>,
) -> BTreeMap<String, (String, String)> {
    spans
        .map(|(id, parent, name)| (id.to_string(), (parent.to_string(), name.to_string())))
        .collect()
}

fn local_tree(spans: &[SpanView]) -> BTreeMap<String, (String, String)> {
    tree(
        spans
            .iter()
            .map(|s| (s.span_id.as_str(), s.parent.as_str(), s.name.as_str())),
    )
}

fn jaeger_tree(spans: &[JSpan]) -> BTreeMap<String, (String, String)> {
    tree(
        spans
            .iter()
            .map(|s| (s.id.as_str(), s.parent.as_str(), s.name.as_str())),
    )
}

const PROMPT_MARKER: &str = "prompt-marker-7731";

/// An LLM call, three parallel batch items, then a node that fails the run.
fn observed_workflow(env: &Env) -> PathBuf {
    env.workflow(
        "observed.json",
        json!({"ir_version": "0.1.0", "metadata": {"name": "observed"}, "nodes": [
            {"id": "ask", "type": "llm", "params": {"prompt": format!("Weather in SF? {PROMPT_MARKER}"), "model": "gpt-4o"}},
            {"id": "work", "type": "shell", "batch": {"items": ["a", "b", "c"], "parallel": true},
             "params": {"command": "sleep 0.3; echo ${item}"}},
            {"id": "boom", "type": "shell", "params": {"command": "echo broken >&2; exit 3"}}],
         "edges": [{"from": "ask", "to": "work"}, {"from": "work", "to": "boom"}]}),
    )
}

/// Runs the observed workflow (traced), exporting to `endpoint` over
/// `protocol` when given; returns the JSON result and the local trace.
fn run_observed(
    env: &Env,
    server: &wiremock::MockServer,
    otlp: Option<(&str, &str)>,
) -> (Value, Vec<SpanView>) {
    let wf = observed_workflow(env);
    let mut cmd = with_openai(env, server);
    if let Some((endpoint, protocol)) = otlp {
        cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol);
    }
    let (v, code, stderr) = run_json(
        cmd.args(["--output-format", "json", "run", "--trace"])
            .arg(&wf),
    );
    assert_eq!(code, 1, "the last node fails the run: {v}\n{stderr}");
    assert_eq!(v["warnings"], json!([]), "export went through: {v}");
    let spans = read_trace(Path::new(v["trace_file"].as_str().expect("trace_file"))).0;
    (v, spans)
}

fn mock_llm() -> (tokio::runtime::Runtime, wiremock::MockServer) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = rt.block_on(openai_server());
    (rt, server)
}

/// A stack (content policy off), the mock LLM and a pflow home: most tests' start.
struct Started {
    stack: Stack,
    llm: (tokio::runtime::Runtime, wiremock::MockServer),
    env: Env,
}

fn started() -> Option<Started> {
    Some(Started {
        stack: Stack::start(bins()?, false),
        llm: mock_llm(),
        env: Env::new(),
    })
}

#[test]
fn the_shipped_configs_pass_the_built_binaries_validate() {
    let Some(bins) = bins() else { return };
    let dir = tempfile::tempdir().unwrap();
    for (bin, config) in [
        (&bins.otelcol, "otel-collector.yaml"),
        (&bins.jaeger, "jaeger.yaml"),
    ] {
        let out = Command::new(bin)
            .arg("validate")
            .arg(format!("--config={}", repo(config).display()))
            .env("PFLOW_STACK_TRACES_DIR", dir.path())
            .env("PFLOW_STACK_OUT_DIR", dir.path())
            .env("PFLOW_STACK_STATE_DIR", dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{config}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn runs_exported_over_grpc_and_http_read_back_from_jaeger_as_saved() {
    let Some(bins) = bins() else { return };
    let stack = Stack::start(bins, false);
    let (_rt, server) = mock_llm();
    let grpc = format!("http://{}", stack.otlp_grpc);
    let http = format!("http://{}", stack.otlp_http);
    for (endpoint, protocol) in [(grpc.as_str(), "grpc"), (http.as_str(), "http/protobuf")] {
        let env = Env::new();
        let (_, local) = run_observed(&env, &server, Some((endpoint, protocol)));
        let trace_id = local[0].trace_id.clone();
        let remote = stack.wait_trace(&trace_id, local.len());
        assert_eq!(
            jaeger_tree(&remote),
            local_tree(&local),
            "{protocol}: ids, parents, names"
        );
        assert_eq!(remote.len(), local.len(), "{protocol}: each span once");
        let by = |name: &str| {
            remote
                .iter()
                .find(|s| s.name == name)
                .unwrap_or_else(|| panic!("{protocol}: no `{name}` in Jaeger"))
        };
        assert!(remote.iter().all(|s| s.service == "pflow"), "{protocol}");
        let ask = by("node ask");
        assert_eq!(ask.tags["pflow.node.type"], json!("llm"), "{protocol}");
        let llm = remote
            .iter()
            .find(|s| s.tags.contains_key("gen_ai.usage.input_tokens"))
            .unwrap_or_else(|| panic!("{protocol}: no span with GenAI token attributes"));
        let local_llm = local
            .iter()
            .find(|s| s.span_id == llm.id)
            .expect("the same span locally");
        for k in ["gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"] {
            assert_eq!(
                llm.tags[k].as_i64(),
                Some(local_llm.i(k)),
                "{protocol}: {k}"
            );
        }
        let cost = llm.tags["pflow.cost.usd"].as_f64().expect("pflow.cost.usd");
        assert!(cost > 0.0, "{protocol}: cost {cost}");
        // Content stays local by default: the prompt never reached Jaeger.
        assert!(!format!("{remote:?}").contains(PROMPT_MARKER), "{protocol}");
        let boom = by("node boom");
        assert_eq!(
            boom.tags.get("error"),
            Some(&json!(true)),
            "{protocol}: {boom:?}"
        );
        assert_eq!(boom.tags["otel.status_code"], json!("ERROR"), "{protocol}");
        let items: Vec<&JSpan> = remote
            .iter()
            .filter(|s| s.tags.get("pflow.node.role") == Some(&json!("batch_item")))
            .collect();
        assert_eq!(items.len(), 3, "{protocol}");
        let latest_start = items.iter().map(|s| s.start_us).max().unwrap();
        let earliest_end = items.iter().map(|s| s.end_us).min().unwrap();
        assert!(
            latest_start < earliest_end,
            "{protocol}: parallel items overlap in time"
        );
        if protocol == "grpc" {
            let v3 = stack.jaeger_trace_v3(&trace_id);
            assert_eq!(local_tree(&v3), local_tree(&local), "api/v3");
            assert!(v3.iter().all(|s| s.trace_id == trace_id));
        }
    }
}

fn copy_trace(from: &Path, to_dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let to = to_dir.join(from.file_name().unwrap());
    std::fs::copy(from, &to).unwrap();
    // As pflow leaves it: readable by its owner only.
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A saved trace of more than 1 MiB: 600 parallel items with long params.
fn big_saved_trace(env: &Env) -> (PathBuf, Vec<SpanView>) {
    let items: Vec<u32> = (0..600).collect();
    let wf = env.workflow(
        "wide.json",
        json!({"ir_version": "0.1.0", "metadata": {"name": "wide"}, "nodes": [
            {"id": "fan", "type": "echo", "batch": {"items": items, "parallel": true},
             "params": {"text": format!("item ${{item}} {}", "x".repeat(1500))}}]}),
    );
    let (v, code, stderr) = run_json(
        env.pflow()
            .args(["--output-format", "json", "run", "--trace"])
            .arg(&wf),
    );
    assert_eq!(code, 0, "{stderr}");
    let file = PathBuf::from(v["trace_file"].as_str().unwrap());
    assert!(std::fs::metadata(&file).unwrap().len() > 1024 * 1024);
    let spans = read_trace(&file).0;
    (file, spans)
}

#[test]
fn saved_traces_replay_once_without_loss_or_content() {
    let Some(bins) = bins() else { return };
    let (_rt, server) = mock_llm();
    let env = Env::new();
    let (small_v, small) = run_observed(&env, &server, None);
    let small_file = PathBuf::from(small_v["trace_file"].as_str().unwrap());
    assert!(
        std::fs::read_to_string(&small_file)
            .unwrap()
            .contains(PROMPT_MARKER),
        "the local trace keeps the prompt"
    );
    let (big_file, big) = big_saved_trace(&env);

    let mut stack = Stack::start(bins.clone(), false);
    copy_trace(&small_file, &stack.replay_dir);
    copy_trace(&big_file, &stack.replay_dir);
    let small_remote = stack.wait_trace(&small[0].trace_id, small.len());
    let big_remote = stack.wait_trace(&big[0].trace_id, big.len());
    assert_eq!(jaeger_tree(&small_remote), local_tree(&small));
    assert_eq!(small_remote.len(), small.len());
    assert_eq!(big_remote.len(), big.len());
    assert_eq!(
        jaeger_tree(&big_remote),
        local_tree(&big),
        "nothing lost from the >1 MiB file"
    );
    assert!(
        !format!("{small_remote:?}").contains(PROMPT_MARKER),
        "replay drops content"
    );
    let llm = small_remote
        .iter()
        .find(|s| s.tags.contains_key("gen_ai.usage.input_tokens"))
        .expect("llm span");
    assert_eq!(llm.tags.get("pflow.content.omitted"), Some(&json!(true)));

    // A restart reads only what is new (offsets in file_storage): a third file
    // arrives, the first two are not sent again.
    stack.stop_collector();
    stack.start_collector();
    let env2 = Env::new();
    let (third_v, third) = run_observed(&env2, &server, None);
    copy_trace(
        Path::new(third_v["trace_file"].as_str().unwrap()),
        &stack.replay_dir,
    );
    stack.wait_trace(&third[0].trace_id, third.len());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        stack.jaeger_trace(&small[0].trace_id).len(),
        small.len(),
        "no duplicates"
    );
    assert_eq!(
        stack.jaeger_trace(&big[0].trace_id).len(),
        big.len(),
        "no duplicates"
    );
    drop(stack);

    // Opted in: the prompt is replayed too.
    let stack = Stack::start(bins, true);
    copy_trace(&small_file, &stack.replay_dir);
    let remote = stack.wait_trace(&small[0].trace_id, small.len());
    assert!(
        format!("{remote:?}").contains(PROMPT_MARKER),
        "opted in: content replayed"
    );
}

#[test]
fn a_trace_file_uploaded_to_jaegers_transform_comes_back_the_same() {
    let Some(t) = started() else { return };
    let (v, local) = run_observed(&t.env, &t.llm.1, None);
    let text = std::fs::read_to_string(v["trace_file"].as_str().unwrap()).unwrap();
    let mut back = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (code, body) = post(
            &format!("http://{}/api/transform", t.stack.jaeger_http),
            line.as_bytes().to_vec(),
        );
        assert_eq!(code, 200, "{body}");
        back.extend(ui_spans(&serde_json::from_str(&body).unwrap()));
    }
    assert_eq!(jaeger_tree(&back), local_tree(&local));
    assert!(back.iter().all(|s| s.service == "pflow"));
}

#[test]
fn trace_export_to_the_collector_round_trips_through_its_file_exporter() {
    let Some(t) = started() else { return };
    let (v, local) = run_observed(&t.env, &t.llm.1, None);
    let file = v["trace_file"].as_str().unwrap();
    pflow_ok(
        t.env
            .pflow()
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
            .args(["trace", "export", file, "--otlp-endpoint"])
            .arg(format!("http://{}", t.stack.otlp_grpc)),
    );
    // The Collector writes what it received, one OTLP/JSON request per line.
    let written = t.stack.file_output();
    let exported = poll(
        || {
            std::fs::metadata(&written)
                .ok()
                .filter(|m| m.len() > 0)
                .map(|_| read_trace(&written).0)
                .unwrap_or_default()
        },
        |spans| spans.len() >= local.len(),
    );
    assert_eq!(
        local_tree(&exported),
        local_tree(&local),
        "{}",
        t.stack.collector_log()
    );
    let show = t
        .env
        .pflow()
        .args(["trace", "show"])
        .arg(&written)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        show.status.success(),
        "{}",
        String::from_utf8_lossy(&show.stderr)
    );
    for node in ["ask", "work", "boom"] {
        assert!(
            text.contains(node),
            "`pflow trace show` of the Collector's file:\n{text}"
        );
    }
}

#[test]
fn the_collectors_prometheus_endpoint_shows_pflows_metrics() {
    let Some(t) = started() else { return };
    run_observed(
        &t.env,
        &t.llm.1,
        Some((&format!("http://{}", t.stack.otlp_grpc), "grpc")),
    );
    let url = format!("http://{}/metrics", t.stack.prometheus);
    let wanted = [
        "gen_ai_client_token_usage",
        "gen_ai_client_operation_duration",
        "pflow_llm_cost",
        "pflow_node_duration",
    ];
    let body = poll(
        || get(&url).map(|(_, b)| b).unwrap_or_default(),
        |body| wanted.iter().all(|w| body.contains(w)),
    );
    for w in wanted {
        assert!(body.contains(w), "no `{w}` at {url}:\n{body}");
    }
    assert!(body.contains("gen_ai_token_type=\"input\""), "{body}");
}

/// The README's no-Docker walk-through: `scripts/stack.sh up`, a run sent to
/// the Collector, the run in Jaeger's API, `status`, then `down`.
#[test]
fn stack_sh_up_serves_a_run_in_jaeger_and_down_stops_it() {
    if bins().is_none() {
        return;
    }
    let env = Env::new();
    let run_dir = env.dir.path().join("stack-run");
    let vars: Vec<(&str, String)> = vec![
        ("PFLOW_STACK_RUN", run_dir.display().to_string()),
        ("PFLOW_HOME", env.home().display().to_string()),
        ("PFLOW_STACK_OTLP_GRPC", free_addr()),
        ("PFLOW_STACK_OTLP_HTTP", free_addr()),
        ("PFLOW_STACK_PROMETHEUS", free_addr()),
        ("PFLOW_STACK_HEALTH", free_addr()),
        ("PFLOW_STACK_JAEGER_OTLP_GRPC", free_addr()),
        ("PFLOW_STACK_JAEGER_OTLP_HTTP", free_addr()),
        ("PFLOW_STACK_JAEGER_HTTP", free_addr()),
        ("PFLOW_STACK_JAEGER_QUERY_GRPC", free_addr()),
        ("PFLOW_STACK_JAEGER_HEALTH", free_addr()),
    ];
    let script = |cmd: &str| {
        Command::new("bash")
            .arg(repo("scripts/stack.sh"))
            .arg(cmd)
            .envs(vars.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap()
    };
    let get_var = |k: &str| vars.iter().find(|(n, _)| *n == k).unwrap().1.clone();
    // Whatever happens below, `down` runs.
    struct Down<'a>(&'a dyn Fn(&str) -> std::process::Output);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            (self.0)("down");
        }
    }
    let up = script("up");
    let _down = Down(&script);
    assert!(
        up.status.success(),
        "{}{}",
        String::from_utf8_lossy(&up.stdout),
        String::from_utf8_lossy(&up.stderr)
    );
    let status = script("status");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );

    let (v, code, stderr) = run_json(
        env.pflow()
            .env(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://{}", get_var("PFLOW_STACK_OTLP_GRPC")),
            )
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args([
                "--output-format",
                "json",
                "run",
                "--trace",
                "examples/hello.json",
            ]),
    );
    assert_eq!(code, 0, "{stderr}");
    let trace_id = v["trace_id"].as_str().expect("trace_id in the JSON result");
    let local = read_trace(Path::new(v["trace_file"].as_str().unwrap())).0;
    let url = format!(
        "http://{}/api/traces/{trace_id}",
        get_var("PFLOW_STACK_JAEGER_HTTP")
    );
    let remote = poll(
        || {
            get(&url)
                .and_then(|(_, b)| serde_json::from_str::<Value>(&b).ok())
                .map(|v| ui_spans(&v))
                .unwrap_or_default()
        },
        |spans| spans.len() >= local.len(),
    );
    assert_eq!(jaeger_tree(&remote), local_tree(&local));
    assert!(remote.iter().all(|s| s.service == "pflow"));

    let down = script("down");
    assert!(down.status.success());
    assert!(
        !script("status").status.success(),
        "nothing runs after down"
    );
}

/// A run exported live and also saved (`--trace`) reaches Jaeger twice, once
/// per pipeline; both copies carry the same content-free spans, so Jaeger's
/// query (what the UI shows) has each span once.
#[test]
fn a_run_exported_live_and_replayed_shows_each_span_once() {
    let Some(t) = started() else { return };
    let endpoint = format!("http://{}", t.stack.otlp_grpc);
    let (v, local) = run_observed(&t.env, &t.llm.1, Some((&endpoint, "grpc")));
    let trace_id = local[0].trace_id.clone();
    t.stack.wait_trace(&trace_id, local.len());
    copy_trace(
        Path::new(v["trace_file"].as_str().unwrap()),
        &t.stack.replay_dir,
    );
    let stored = poll(
        || t.stack.jaeger_trace(&trace_id),
        |s| s.len() >= 2 * local.len(),
    );
    assert_eq!(stored.len(), 2 * local.len(), "stored once per pipeline");
    let url = format!("http://{}/api/traces/{trace_id}", t.stack.jaeger_http);
    let (_, body) = get(&url).expect("Jaeger answers");
    let shown = ui_spans(&serde_json::from_str(&body).unwrap());
    assert_eq!(shown.len(), local.len(), "the query shows each span once");
    assert_eq!(jaeger_tree(&shown), local_tree(&local));
}

/// The conventions as Jaeger reads them: the `http` node's request and each
/// LLM attempt's request are CLIENT spans with their server address (what
/// service graphs draw), and the root span's name is the same for every run.
#[test]
fn jaeger_shows_client_spans_with_server_address_and_one_root_name() {
    let Some(Started { stack, llm, env }) = started() else {
        return;
    };
    let server = &llm.1;
    let port = server.address().port();
    let wf = env.workflow(
        "client.json",
        json!({"ir_version": "0.1.0", "metadata": {"name": "client-spans"}, "nodes": [
            {"id": "fetch", "type": "http", "params": {"url": format!("{}/v1/chat/completions", server.uri()), "json": {"ping": 1}}},
            {"id": "ask", "type": "llm", "params": {"prompt": "Weather in SF?", "model": "gpt-4o"}}],
         "edges": [{"from": "fetch", "to": "ask"}]}),
    );
    let endpoint = format!("http://{}", stack.otlp_http);
    let mut roots = Vec::new();
    for _ in 0..2 {
        let (v, code, stderr) = run_json(
            with_openai(&env, server)
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
                .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
                .args(["--output-format", "json", "run", "--trace"])
                .arg(&wf),
        );
        assert_eq!(code, 0, "{v}\n{stderr}");
        let local = read_trace(Path::new(v["trace_file"].as_str().expect("trace_file"))).0;
        let remote = stack.wait_trace(v["trace_id"].as_str().unwrap(), local.len());
        let by_id = |id: &str| remote.iter().find(|s| s.id == id);
        let clients: Vec<&JSpan> = remote
            .iter()
            .filter(|s| s.tags.get("span.kind") == Some(&json!("client")))
            .collect();
        // The http node's request, the LLM attempt and the attempt's request.
        let fetch = remote
            .iter()
            .find(|s| s.name == "node fetch")
            .expect("node fetch");
        let http_req = clients
            .iter()
            .find(|s| s.parent == fetch.id)
            .expect("the http node's CLIENT span in Jaeger");
        assert_eq!(http_req.name, "POST");
        assert_eq!(http_req.tags["http.request.method"], json!("POST"));
        assert_eq!(
            http_req.tags["http.response.status_code"].as_i64(),
            Some(200)
        );
        let chat = clients
            .iter()
            .find(|s| s.name == "chat gpt-4o")
            .expect("the LLM attempt's CLIENT span");
        let attempt_req = clients
            .iter()
            .find(|s| s.parent == chat.id)
            .expect("the LLM attempt's HTTP CLIENT span");
        for s in [*http_req, *chat, *attempt_req] {
            assert_eq!(s.tags["server.address"], json!("127.0.0.1"), "{}", s.name);
            assert_eq!(
                s.tags["server.port"].as_i64(),
                Some(i64::from(port)),
                "{}",
                s.name
            );
        }
        assert!(by_id(&chat.parent).is_some_and(|p| p.name == "node ask"));
        let root = remote
            .iter()
            .find(|s| s.parent.is_empty())
            .expect("a root span");
        roots.push(root.name.clone());
    }
    assert_eq!(
        roots,
        ["pflow run", "pflow run"],
        "one root name for every run"
    );
}
