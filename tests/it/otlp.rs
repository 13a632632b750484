//! OTLP export end to end: in-process receivers (HTTP protobuf, HTTP JSON,
//! gRPC, built on opentelemetry-proto) get every span with its attributes;
//! content stays local unless opted in; secrets never leave; trace context
//! flows in (TRACEPARENT) and out (shell env, HTTP headers); a backend that
//! is down, slow or failing never changes a run's result.

use super::common::*;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const SECRET: &str = "ghp_abcdefghijklmnopqrstuvwxyz0123456789";

fn workflow(env: &Env) -> std::path::PathBuf {
    env.workflow("wf.json", json!({"ir_version": "0.1.0", "metadata": {"name": "exported"},
        "nodes": [
            {"id": "greet", "type": "echo", "params": {"text": "hello private data", "note": format!("token {SECRET}")}},
            {"id": "ask", "type": "llm", "params": {"model": "echo", "prompt": "secret prompt text"}}],
        "edges": [{"from": "greet", "to": "ask"}]}))
}

/// Spans flattened from received requests: (name, attributes, event attribute keys, trace id hex, parent hex).
/// A received span: name, attributes, event attribute keys, trace id, parent span id.
type Received = (
    String,
    serde_json::Map<String, Value>,
    Vec<String>,
    String,
    String,
);

fn flatten(reqs: &[ExportTraceServiceRequest]) -> (Vec<Received>, serde_json::Map<String, Value>) {
    let mut spans = Vec::new();
    let mut resource = serde_json::Map::new();
    for r in reqs {
        let v = serde_json::to_value(r).unwrap();
        for rs in v["resourceSpans"].as_array().unwrap() {
            for kv in rs["resource"]["attributes"].as_array().unwrap() {
                resource.insert(kv["key"].as_str().unwrap().into(), kv["value"].clone());
            }
            for ss in rs["scopeSpans"].as_array().unwrap() {
                for s in ss["spans"].as_array().unwrap() {
                    let attrs = s["attributes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|kv| (kv["key"].as_str().unwrap().to_string(), kv["value"].clone()))
                        .collect();
                    let ev_keys = s["events"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .flat_map(|e| {
                            e["attributes"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|kv| kv["key"].as_str().unwrap().to_string())
                        })
                        .collect();
                    spans.push((
                        s["name"].as_str().unwrap().to_string(),
                        attrs,
                        ev_keys,
                        s["traceId"].as_str().unwrap().to_string(),
                        s["parentSpanId"].as_str().unwrap_or("").to_string(),
                    ));
                }
            }
        }
    }
    (spans, resource)
}

pub(super) async fn http_receiver(json_body: bool) -> MockServer {
    let server = MockServer::start().await;
    let (ct, body): (&str, Vec<u8>) = if json_body {
        ("application/json", b"{}".to_vec())
    } else {
        ("application/x-protobuf", Vec::new())
    };
    // Traces (/v1/traces) and metrics (/v1/metrics) alike.
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, ct))
        .mount(&server)
        .await;
    server
}

pub(super) async fn received_http(
    server: &MockServer,
    json_body: bool,
) -> Vec<ExportTraceServiceRequest> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == "/v1/traces")
        .map(|r| {
            if json_body {
                serde_json::from_slice(&r.body).expect("OTLP/JSON body")
            } else {
                ExportTraceServiceRequest::decode(&r.body[..]).expect("OTLP protobuf body")
            }
        })
        .collect()
}

fn check_export(reqs: &[ExportTraceServiceRequest], local: &Value, content_exported: bool) {
    let (spans, resource) = flatten(reqs);
    let names: Vec<&str> = spans.iter().map(|s| s.0.as_str()).collect();
    for n in [
        "pflow run",
        "invoke_workflow exported",
        "node greet",
        "node ask",
        "chat echo",
    ] {
        assert!(names.contains(&n), "span `{n}` not exported: {names:?}");
    }
    assert_eq!(resource["service.name"]["stringValue"], json!("pflow"));
    assert_eq!(
        resource["pflow.workflow.name"]["stringValue"],
        json!("exported")
    );
    // Same trace id as the run reported.
    let tid = local["trace_id"].as_str().unwrap();
    assert!(spans.iter().all(|s| s.3 == tid), "trace ids differ");
    // The metrics can be recomputed from what the backend received.
    let chat = spans.iter().find(|s| s.0 == "chat echo").unwrap();
    let tokens = |k: &str| {
        chat.1[k]["intValue"]
            .as_str()
            .map(|s| s.parse::<u64>().unwrap())
            .or_else(|| chat.1[k]["intValue"].as_u64())
            .unwrap()
    };
    assert_eq!(
        tokens("gen_ai.usage.input_tokens") + tokens("gen_ai.usage.output_tokens"),
        local["metrics"]["total"]["tokens_total"].as_u64().unwrap()
    );
    let nodes = spans
        .iter()
        .filter(|s| s.1.get("pflow.node.id").is_some())
        .count() as u64;
    assert_eq!(
        nodes,
        local["metrics"]["workflow"]["nodes_executed"]
            .as_u64()
            .unwrap()
    );
    let all =
        serde_json::to_string(&spans.iter().map(|s| (&s.1, &s.2)).collect::<Vec<_>>()).unwrap();
    assert!(!all.contains(SECRET), "a secret left the machine");
    if content_exported {
        assert!(
            all.contains("secret prompt text"),
            "opted-in content missing"
        );
        assert!(chat.1.contains_key("gen_ai.input.messages"));
    } else {
        assert!(
            !all.contains("secret prompt text") && !all.contains("hello private data"),
            "content left the machine without opt-in"
        );
        assert!(!chat.1.contains_key("gen_ai.input.messages"));
        assert!(chat.1.contains_key("pflow.content.omitted"));
        assert!(
            chat.1.contains_key("pflow.llm.input_bytes")
                && chat.1.contains_key("pflow.llm.output_bytes"),
            "sizes, not text"
        );
        assert!(
            spans
                .iter()
                .all(|s| !s.2.iter().any(|k| k == "pflow.value.preview")),
            "previews exported"
        );
        assert!(
            spans
                .iter()
                .any(|s| s.2.iter().any(|k| k == "pflow.value.size")),
            "sizes must still be exported"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn http_protobuf_export_without_content() {
    let server = http_receiver(false).await;
    let env = Env::new();
    let wf = workflow(&env);
    let (v, code, _) = run_json(
        env.pflow()
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", server.uri())
            .env(
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=ci,team=data%20eng",
            )
            .args(["--trace", "--output-format", "json"])
            .arg(&wf),
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["warnings"], json!([]), "{v}");
    let reqs = received_http(&server, false).await;
    check_export(&reqs, &v, false);
    let (_, resource) = flatten(&reqs);
    assert_eq!(
        resource["deployment.environment"]["stringValue"],
        json!("ci")
    );
    assert_eq!(resource["team"]["stringValue"], json!("data eng"));
    for k in ["service.version", "host.name", "process.pid", "os.type"] {
        assert!(resource.contains_key(k), "resource lacks {k}");
    }
    // The local file keeps the content.
    let raw = std::fs::read_to_string(v["trace_file"].as_str().unwrap()).unwrap();
    assert!(raw.contains("secret prompt text"));
    assert!(!raw.contains(SECRET));
}

#[tokio::test(flavor = "multi_thread")]
async fn http_json_export_with_content_opt_in() {
    let server = http_receiver(true).await;
    let env = Env::new();
    let wf = workflow(&env);
    let (v, code, _) = run_json(
        env.pflow()
            .env(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                format!("{}/v1/traces", server.uri()),
            )
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
            .env("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=team%20key")
            .env("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
            .args(["--output-format", "json"])
            .arg(&wf),
    );
    assert_eq!(code, 0, "{v}");
    let reqs = server.received_requests().await.unwrap();
    assert!(reqs
        .iter()
        .all(|r| r.headers.get("x-api-key").map(|h| h.to_str().unwrap()) == Some("team key")));
    assert!(reqs.iter().all(|r| r
        .headers
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .contains("json")));
    check_export(&received_http(&server, true).await, &v, true);
}

#[derive(Default, Clone)]
struct Receiver(
    Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
);

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.1.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

/// An OTLP/gRPC receiver for traces and metrics on a free local port.
async fn grpc_receiver() -> (std::net::SocketAddr, Receiver) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let recv = Receiver::default();
    let (traces, metrics) = (
        TraceServiceServer::new(recv.clone()),
        MetricsServiceServer::new(recv.clone()),
    );
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(traces)
            .add_service(metrics)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (addr, recv)
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_export_and_cli_endpoint_flag() {
    let (addr, recv) = grpc_receiver().await;
    let env = Env::new();
    let wf = workflow(&env);
    let (v, code, _) = run_json(
        env.pflow()
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
            .args([
                "--otlp-endpoint",
                &format!("http://{addr}"),
                "--output-format",
                "json",
            ])
            .arg(&wf),
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["warnings"], json!([]), "{v}");
    let reqs = recv.0.lock().unwrap().clone();
    check_export(&reqs, &v, false);
    let metrics = recv.1.lock().unwrap().clone();
    assert_eq!(metrics.len(), 1, "one metrics export per run");
    assert!(serde_json::to_string(&metrics[0])
        .unwrap()
        .contains("gen_ai.client.token.usage"));
}

#[tokio::test(flavor = "multi_thread")]
async fn traceparent_in_and_out() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .mount(&server)
        .await;
    let env = Env::new();
    let wf = env.workflow(
        "wf.json",
        json!({"ir_version": "0.1.0", "nodes": [
        {"id": "sh", "type": "shell", "params": {"command": "printf '%s' \"$TRACEPARENT\""}},
        {"id": "get", "type": "http", "params": {"url": format!("{}/x", server.uri())}},
        {"id": "own", "type": "http", "params": {"url": format!("{}/own", server.uri()),
            "headers": {"TraceParent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}}],
        "edges": [{"from": "sh", "to": "get"}, {"from": "get", "to": "own"}], "outputs": {"tp": {"source": "${sh.stdout}"}}}),
    );
    let parent_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_span = "00f067aa0ba902b7";
    let (v, code, _) = run_json(
        env.pflow()
            .env("TRACEPARENT", format!("00-{parent_trace}-{parent_span}-01"))
            .args(["--trace", "--output-format", "json"])
            .arg(&wf),
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        v["trace_id"],
        json!(parent_trace),
        "the run joins the caller's trace"
    );
    let (spans, _) = read_trace(std::path::Path::new(v["trace_file"].as_str().unwrap()));
    let root = spans.iter().find(|s| s.name == "pflow run").unwrap();
    assert_eq!(root.parent, parent_span);
    let sh = by_name(&spans, "node sh");
    let tp = v["result"]["tp"].as_str().unwrap();
    assert_eq!(
        tp,
        format!("00-{parent_trace}-{}-01", sh.span_id),
        "child process gets the node's context"
    );
    let reqs = server.received_requests().await.unwrap();
    let get = by_name(&spans, "node get");
    // The request's own CLIENT span is the parent the server sees.
    let client = spans
        .iter()
        .find(|s| s.name == "GET" && s.parent == get.span_id)
        .expect("the http node's CLIENT span");
    assert_eq!(client.kind, 3, "SPAN_KIND_CLIENT");
    assert_eq!(client.i("http.response.status_code"), 200);
    assert_eq!(client.s("server.address"), "127.0.0.1");
    assert_eq!(
        reqs[0]
            .headers
            .get("traceparent")
            .unwrap()
            .to_str()
            .unwrap(),
        format!("00-{parent_trace}-{}-01", client.span_id)
    );
    // A workflow's own traceparent header wins over the injected one.
    let own = reqs.iter().find(|r| r.url.path() == "/own").unwrap();
    let sent: Vec<_> = own.headers.get_all("traceparent").iter().collect();
    assert_eq!(
        sent,
        ["00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn backends_that_fail_never_change_the_run() {
    let env = Env::new();
    let wf = workflow(&env);
    let (baseline, _, _) = run_json(env.pflow().args(["--output-format", "json"]).arg(&wf));

    // Down: nothing listens.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Failing: 500s. Slow: answers after 30 s. Malformed: 200 with garbage.
    let failing = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500).set_body_string("boom"))
        .mount(&failing)
        .await;
    let slow = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(120)))
        .mount(&slow)
        .await;
    let malformed = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(b"\xff\xfe not protobuf".to_vec(), "application/x-protobuf"),
        )
        .mount(&malformed)
        .await;

    for (label, endpoint, protocol, expect_warning) in [
        (
            "down/http",
            format!("http://127.0.0.1:{port}"),
            "http/protobuf",
            true,
        ),
        (
            "down/grpc",
            format!("http://127.0.0.1:{port}"),
            "grpc",
            true,
        ),
        ("500", failing.uri(), "http/protobuf", true),
        ("slow", slow.uri(), "http/protobuf", true),
        ("malformed", malformed.uri(), "http/protobuf", false),
    ] {
        let t = Instant::now();
        let (v, code, _) = run_json(
            env.pflow()
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
                .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
                .env("OTEL_EXPORTER_OTLP_TIMEOUT", "1000")
                .args(["--output-format", "json"])
                .arg(&wf),
        );
        let took = t.elapsed();
        assert_eq!(code, 0, "{label}: {v}");
        assert_eq!(v["result"], baseline["result"], "{label}");
        assert_eq!(
            v["metrics"]["workflow"]["nodes_executed"],
            baseline["metrics"]["workflow"]["nodes_executed"]
        );
        // A hang guard, not a speed check: the run is bounded by the 1 s export
        // timeout, so it ends far before the 120 s the slow backend holds the
        // request (a loaded 2-core CI machine made a 10 s bound flaky).
        assert!(took < Duration::from_secs(60), "{label}: run took {took:?}");
        let warnings = v["warnings"].as_array().unwrap();
        if expect_warning {
            assert_eq!(warnings.len(), 1, "{label}: one warning line: {warnings:?}");
            let w = warnings[0].as_str().unwrap();
            assert!(
                w.contains("spans not delivered") && w.contains(&endpoint),
                "{label}: {w}"
            );
        }
    }
}

#[test]
fn export_can_be_switched_off() {
    let env = Env::new();
    let wf = workflow(&env);
    // OTEL_TRACES_EXPORTER=none: no export even with an endpoint (nothing listens on it).
    let (v, code, _) = run_json(
        env.pflow()
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
            .env("OTEL_TRACES_EXPORTER", "none")
            .args(["--output-format", "json"])
            .arg(&wf),
    );
    assert_eq!(code, 0);
    assert_eq!(v["warnings"], json!([]));
    let (v, _, _) = run_json(
        env.pflow()
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url")
            .args(["--output-format", "json"])
            .arg(&wf),
    );
    assert!(
        v["warnings"][0]
            .as_str()
            .unwrap()
            .contains("OTLP export off"),
        "{v}"
    );
}

/// Credential formats that must never reach a trace file or an exported span.
const CORPUS: &[&str] = &[
    "sk-proj-Abc123def456GHI789jkl012MNO345pqr678STU901vwx",
    "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789ABCDEF-_xyz",
    "AIzaSyD-1234567890abcdefghijklmnopqrstu",
    "AKIAIOSFODNN7EXAMPLE",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "MIIEowIBAAKCAQEAprivatekeymaterial",
    "hunter2-url-password",
    "opaque-bearer-token-value-123",
    "value-of-a-secret-env-var-987",
    "plain-param-named-password-55",
];

#[tokio::test(flavor = "multi_thread")]
async fn redaction_corpus_on_both_paths() {
    let server = http_receiver(false).await;
    let env = Env::new();
    let text = format!(
        "keys: {} {} {} aws {} aws_secret_access_key={} gh {} {} jwt {} \n-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----\n db postgres://admin:{}@db:5432/x Authorization: Bearer {}",
        CORPUS[0], CORPUS[1], CORPUS[2], CORPUS[3], CORPUS[4], CORPUS[5], CORPUS[6], CORPUS[7], CORPUS[8], CORPUS[9], CORPUS[10]
    );
    let wf = env.workflow("wf.json", json!({"ir_version": "0.1.0", "nodes": [
        {"id": "a", "type": "echo", "params": {"text": text, "password": CORPUS[12], "headers": {"Authorization": format!("Bearer {}", CORPUS[10])}}},
        {"id": "ask", "type": "llm", "params": {"model": "echo", "prompt": "${a.text}"}},
        {"id": "sh", "type": "shell", "params": {"command": "echo \"$MY_SERVICE_TOKEN\"; exit 3"}}],
        "edges": [{"from": "a", "to": "ask"}, {"from": "ask", "to": "sh"}]}));
    let (v, code, stderr) = run_json(
        env.pflow()
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", server.uri())
            .env("MY_SERVICE_TOKEN", CORPUS[11])
            .args(["--trace", "--capture-content", "--output-format", "json"])
            .arg(&wf),
    );
    assert_eq!(code, 1, "the shell step fails on purpose: {v}");
    let file = std::fs::read_to_string(v["trace_file"].as_str().unwrap()).unwrap();
    let exported = serde_json::to_string(&received_http(&server, false).await).unwrap();
    assert!(exported.contains("chat echo"), "nothing exported");
    for s in CORPUS {
        assert!(!file.contains(s), "`{s}` in the trace file");
        assert!(!exported.contains(s), "`{s}` in an exported span");
    }
    // The CLI's own error output does not echo the env secret either (it is the command's stdout, not stderr).
    assert!(!stderr.contains(CORPUS[11]));
}

#[tokio::test(flavor = "multi_thread")]
async fn saved_trace_files_can_be_exported_later() {
    let env = Env::new();
    let wf = workflow(&env);
    let (v, _, _) = run_json(
        env.pflow()
            .args(["--trace", "--output-format", "json"])
            .arg(&wf),
    );
    let file = v["trace_file"].as_str().unwrap().to_string();
    let (local_spans, _) = read_trace(std::path::Path::new(&file));

    // HTTP/protobuf.
    let server = http_receiver(false).await;
    let out = env
        .pflow()
        .args([
            "trace",
            "export",
            &file,
            "--otlp-endpoint",
            &server.uri(),
            "--output-format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["spans"], json!(local_spans.len()));
    let (spans, _) = flatten(&received_http(&server, false).await);
    assert_eq!(spans.len(), local_spans.len());
    let all = serde_json::to_string(&spans.iter().map(|s| &s.1).collect::<Vec<_>>()).unwrap();
    assert!(
        !all.contains("secret prompt text"),
        "content stays local by default"
    );

    // gRPC.
    let (addr, recv) = grpc_receiver().await;
    let out = env
        .pflow()
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .args([
            "trace",
            "export",
            &file,
            "--otlp-endpoint",
            &format!("http://{addr}"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (spans, _) = flatten(&recv.0.lock().unwrap().clone());
    assert_eq!(spans.len(), local_spans.len());

    // No endpoint, a missing file, a backend that is down: clear errors.
    let out = env
        .pflow()
        .args(["trace", "export", &file])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--otlp-endpoint"));
    let out = env
        .pflow()
        .args([
            "trace",
            "export",
            "nope.json",
            "--otlp-endpoint",
            &server.uri(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = env
        .pflow()
        .args([
            "trace",
            "export",
            &file,
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{port}"),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn otel_metrics_follow_the_genai_conventions() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(Vec::new(), "application/x-protobuf"))
        .mount(&server)
        .await;
    let env = Env::new();
    let wf = workflow(&env);
    for (pref, temporality) in [("cumulative", 2), ("delta", 1)] {
        let (v, code, _) = run_json(
            env.pflow()
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", server.uri())
                .env("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", pref)
                .args(["--output-format", "json"])
                .arg(&wf),
        );
        assert_eq!(code, 0, "{v}");
        assert_eq!(v["warnings"], json!([]), "{v}");
        let reqs = server.received_requests().await.unwrap();
        let last = reqs
            .iter()
            .rev()
            .find(|r| r.url.path() == "/v1/metrics")
            .expect("metrics exported");
        let m = ExportMetricsServiceRequest::decode(&last.body[..]).unwrap();
        let mv = serde_json::to_value(&m).unwrap();
        let metrics: Vec<&Value> = mv["resourceMetrics"][0]["scopeMetrics"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["metrics"].as_array().unwrap())
            .collect();
        let find = |name: &str| {
            *metrics
                .iter()
                .find(|m| m["name"] == name)
                .unwrap_or_else(|| {
                    panic!(
                        "metric {name} missing: {:?}",
                        metrics.iter().map(|m| &m["name"]).collect::<Vec<_>>()
                    )
                })
        };
        let usage = find("gen_ai.client.token.usage");
        assert_eq!(usage["unit"], json!("{token}"));
        let points = usage["histogram"]["dataPoints"].as_array().unwrap();
        assert_eq!(
            usage["histogram"]["aggregationTemporality"],
            json!(temporality),
            "{pref}"
        );
        let sum_of =
            |t: &str| -> f64 {
                points
                    .iter()
                    .filter(|p| {
                        p["attributes"].as_array().unwrap().iter().any(|a| {
                            a["key"] == "gen_ai.token.type" && a["value"]["stringValue"] == t
                        })
                    })
                    .map(|p| p["sum"].as_f64().unwrap())
                    .sum()
            };
        assert_eq!(
            sum_of("input") as u64,
            v["metrics"]["workflow"]["tokens"]["input"]
                .as_u64()
                .unwrap()
        );
        assert_eq!(
            sum_of("output") as u64,
            v["metrics"]["workflow"]["tokens"]["output"]
                .as_u64()
                .unwrap()
        );
        let bounds = points[0]["explicitBounds"].as_array().unwrap();
        assert_eq!(bounds.first(), Some(&json!(1.0)));
        assert_eq!(bounds.last(), Some(&json!(67108864.0)));
        let dur = find("gen_ai.client.operation.duration");
        assert_eq!(dur["unit"], json!("s"));
        assert_eq!(
            dur["histogram"]["dataPoints"][0]["explicitBounds"][0],
            json!(0.01)
        );
        let nodes = find("pflow.node.duration");
        let count: u64 = nodes["histogram"]["dataPoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                p["count"]
                    .as_str()
                    .map(|s| s.parse().unwrap())
                    .or(p["count"].as_u64())
                    .unwrap()
            })
            .sum();
        assert_eq!(
            count,
            v["metrics"]["workflow"]["nodes_executed"].as_u64().unwrap()
        );
        let runs = find("pflow.runs");
        assert_eq!(
            runs["sum"]["dataPoints"][0]["attributes"][0]["value"]["stringValue"],
            json!("ok")
        );
        find("pflow.llm.cost");
    }
    // OTEL_METRICS_EXPORTER=none: spans still go, metrics do not.
    let before = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/v1/metrics")
        .count();
    let (v, _, _) = run_json(
        env.pflow()
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", server.uri())
            .env("OTEL_METRICS_EXPORTER", "none")
            .args(["--output-format", "json"])
            .arg(&wf),
    );
    assert_eq!(v["warnings"], json!([]));
    let after = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/v1/metrics")
        .count();
    assert_eq!(before, after);
}
