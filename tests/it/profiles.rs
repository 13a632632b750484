//! Backend profiles end to end: a workflow with an `llm` node (OpenAI mocked
//! with a recorded response) exports to an in-process OTLP receiver with
//! `--otel-profile` / `PFLOW_OTEL_PROFILE` = otel, phoenix, langfuse; each
//! profile's attributes arrive with exact values, content only with capture;
//! the semconv opt-in changes exported names but not the local file; `pflow
//! trace export` applies the profile too; an unknown profile is exit 2.

use super::common::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const PROMPT: &str = "Weather in SF?";
const ANSWER_START: &str = "I'm unable to provide real-time weather updates.";

async fn openai(fixture: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(llm_fixture(fixture), "application/json"),
        )
        .mount(&server)
        .await;
    server
}

/// An OTLP/HTTP protobuf receiver that accepts everything.
async fn receiver() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(Vec::new(), "application/x-protobuf"))
        .mount(&server)
        .await;
    server
}

/// What the receiver got, read back like a trace file (same normalisation of values).
async fn received(env: &Env, server: &MockServer) -> Vec<SpanView> {
    let lines: Vec<String> = server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == "/v1/traces")
        .map(|r| {
            let req = ExportTraceServiceRequest::decode(&r.body[..]).expect("OTLP protobuf");
            serde_json::to_string(&req).unwrap()
        })
        .collect();
    assert!(!lines.is_empty(), "nothing exported");
    let p = env.write("received.otlp.json", &lines.join("\n"));
    read_trace(&p).0
}

fn workflow(env: &Env) -> std::path::PathBuf {
    env.workflow(
        "wf.json",
        json!({"ir_version": "0.1.0", "metadata": {"name": "weather"},
            "nodes": [
                {"id": "greet", "type": "echo", "params": {"text": "hello"}},
                {"id": "ask", "type": "llm", "params": {"model": "gpt-4o", "prompt": PROMPT, "temperature": 0.3}}],
            "edges": [{"from": "greet", "to": "ask"}]}),
    )
}

fn cmd(env: &Env, llm: &MockServer, otlp: &MockServer) -> assert_cmd::Command {
    let mut c = env.pflow();
    c.env("OPENAI_BASE_URL", format!("{}/v1", llm.uri()))
        .env("OPENAI_API_KEY", "sk-test-key-abcdefghijklmnop")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.uri())
        .env("OTEL_METRICS_EXPORTER", "none")
        .env_remove("PFLOW_OTEL_PROFILE")
        .env_remove("OTEL_SEMCONV_STABILITY_OPT_IN")
        .env_remove("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT");
    c
}

/// Runs the workflow exporting with `args` (and `envs`); returns (run JSON, exported spans).
async fn run(args: &[&str], envs: &[(&str, &str)]) -> (Value, Vec<SpanView>, Env) {
    let (llm, otlp) = (openai("openai-chat.json").await, receiver().await);
    let env = Env::new();
    let wf = workflow(&env);
    let mut c = cmd(&env, &llm, &otlp);
    for (k, v) in envs {
        c.env(k, v);
    }
    let (v, code, stderr) = run_json(c.args(args).args(["--output-format", "json"]).arg(&wf));
    assert_eq!(code, 0, "{v} {stderr}");
    assert_eq!(v["warnings"], json!([]), "{v}");
    let spans = received(&env, &otlp).await;
    (v, spans, env)
}

fn profile_keys(s: &SpanView) -> Vec<&String> {
    s.attrs
        .keys()
        .filter(|k| {
            k.starts_with("openinference.")
                || k.starts_with("llm.")
                || k.starts_with("langfuse.")
                || k.starts_with("input.")
                || k.starts_with("output.")
                || k.starts_with("tool.")
        })
        .collect()
}

fn f(s: &SpanView, k: &str) -> f64 {
    s.attr(k)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("`{k}` missing on {}: {:?}", s.name, s.attrs))
}

/// The cost the run computed: > 0 and equal to the span's canonical `pflow.cost.usd`.
fn cost(v: &Value, chat: &SpanView) -> f64 {
    let c = v["metrics"]["total"]["cost_usd"].as_f64().unwrap();
    assert!(c > 0.0, "gpt-4o is priced: {v}");
    assert_eq!(f(chat, "pflow.cost.usd"), c);
    c
}

fn root(spans: &[SpanView]) -> &SpanView {
    spans
        .iter()
        .find(|s| s.name == "pflow run")
        .expect("root span exported")
}

fn all_text(spans: &[SpanView]) -> String {
    serde_json::to_string(&spans.iter().map(|s| &s.attrs).collect::<Vec<_>>()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn otel_profile_adds_nothing_and_is_the_default() {
    for args in [&[][..], &["--otel-profile", "otel"][..]] {
        let (_, spans, _) = run(args, &[]).await;
        for s in &spans {
            assert!(
                profile_keys(s).is_empty(),
                "{}: {:?}",
                s.name,
                profile_keys(s)
            );
        }
        // Today's emission without the opt-in: the old provider name beside
        // the new; OpenAI reports no cache writes, so neither spelling is invented.
        let chat = by_name(&spans, "chat gpt-4o");
        assert_eq!(chat.i("gen_ai.usage.input_tokens"), 14);
        assert!(chat
            .attr("gen_ai.usage.cache_creation.input_tokens")
            .is_none());
        assert!(chat.attr("gen_ai.usage.cache_write.input_tokens").is_none());
        assert_eq!(chat.s("gen_ai.system"), "openai");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn phoenix_profile_adds_openinference_attributes() {
    let (v, spans, _) = run(&["--otel-profile", "phoenix"], &[]).await;
    let chat = by_name(&spans, "chat gpt-4o");
    let c = cost(&v, chat);
    assert_eq!(chat.s("openinference.span.kind"), "LLM");
    assert_eq!(chat.s("llm.model_name"), "gpt-4o-2024-08-06");
    assert_eq!(chat.s("llm.provider"), "openai");
    assert_eq!(chat.s("llm.system"), "openai");
    assert_eq!(chat.i("llm.token_count.prompt"), 14);
    assert_eq!(chat.i("llm.token_count.completion"), 37);
    assert_eq!(chat.i("llm.token_count.total"), 51);
    assert_eq!(chat.i("llm.token_count.prompt_details.cache_read"), 0);
    assert!(chat
        .attr("llm.token_count.prompt_details.cache_write")
        .is_none());
    assert_eq!(chat.i("llm.token_count.completion_details.reasoning"), 0);
    assert_eq!(f(chat, "llm.cost.total"), c);
    assert_eq!(
        chat.s("llm.invocation_parameters"),
        r#"{"temperature":0.3}"#
    );
    let kind = |n: &str| by_name(&spans, n).s("openinference.span.kind").to_string();
    assert_eq!(root(&spans).s("openinference.span.kind"), "CHAIN");
    assert_eq!(kind("invoke_workflow weather"), "CHAIN");
    assert_eq!(kind("node ask"), "CHAIN");
    assert_eq!(kind("node greet"), "TOOL");
    assert_eq!(by_name(&spans, "node greet").s("tool.name"), "echo");
    // No content without capture.
    for s in &spans {
        assert!(
            !s.attrs.keys().any(|k| k.starts_with("input.")
                || k.starts_with("output.")
                || k.starts_with("llm.input_messages")
                || k.starts_with("llm.output_messages")),
            "{}: {:?}",
            s.name,
            s.attrs.keys()
        );
    }
    assert!(!all_text(&spans).contains(PROMPT));
}

#[tokio::test(flavor = "multi_thread")]
async fn langfuse_profile_adds_usage_cost_and_observation_types() {
    // From the variable this time.
    let (v, spans, _) = run(&[], &[("PFLOW_OTEL_PROFILE", "langfuse")]).await;
    let chat = by_name(&spans, "chat gpt-4o");
    let c = cost(&v, chat);
    assert_eq!(chat.s("langfuse.observation.type"), "generation");
    assert_eq!(
        chat.s("langfuse.observation.model.name"),
        "gpt-4o-2024-08-06"
    );
    let usage: Value = serde_json::from_str(chat.s("langfuse.observation.usage_details")).unwrap();
    assert_eq!(usage, json!({"input": 14, "output": 37, "total": 51}));
    let costs: Value = serde_json::from_str(chat.s("langfuse.observation.cost_details")).unwrap();
    assert_eq!(costs, json!({ "total": c }));
    assert_eq!(f(chat, "gen_ai.usage.cost"), c);
    assert_eq!(
        chat.s("langfuse.observation.model.parameters"),
        r#"{"temperature":0.3}"#
    );
    assert_eq!(root(&spans).s("langfuse.trace.name"), "weather");
    let ty = |n: &str| {
        by_name(&spans, n)
            .s("langfuse.observation.type")
            .to_string()
    };
    assert_eq!(root(&spans).s("langfuse.observation.type"), "chain");
    assert_eq!(ty("invoke_workflow weather"), "chain");
    assert_eq!(ty("node ask"), "chain");
    assert_eq!(ty("node greet"), "tool");
    for s in &spans {
        assert!(
            !s.attrs.contains_key("langfuse.observation.input")
                && !s.attrs.contains_key("langfuse.observation.output"),
            "{}",
            s.name
        );
        assert!(
            !s.attrs
                .keys()
                .any(|k| k.starts_with("openinference.") || k.starts_with("llm.")),
            "phoenix attributes in the langfuse profile: {}",
            s.name
        );
    }
    assert!(!all_text(&spans).contains(PROMPT));
}

#[tokio::test(flavor = "multi_thread")]
async fn profile_content_attributes_only_with_capture() {
    let (_, spans, _) = run(&["--otel-profile", "phoenix", "--capture-content"], &[]).await;
    let chat = by_name(&spans, "chat gpt-4o");
    assert!(chat.s("input.value").contains(PROMPT), "{:?}", chat.attrs);
    assert_eq!(chat.s("input.mime_type"), "application/json");
    assert!(chat.s("output.value").contains(ANSWER_START));
    assert_eq!(chat.s("llm.input_messages.0.message.role"), "user");
    assert_eq!(chat.s("llm.input_messages.0.message.content"), PROMPT);
    assert_eq!(chat.s("llm.output_messages.0.message.role"), "assistant");
    assert!(chat
        .s("llm.output_messages.0.message.content")
        .starts_with(ANSWER_START));
    // Node params (resolved, redacted) as the node's input.
    let greet = by_name(&spans, "node greet");
    assert!(
        greet.s("input.value").contains("hello"),
        "{:?}",
        greet.attrs
    );

    let (_, spans, _) = run(
        &[],
        &[
            ("PFLOW_OTEL_PROFILE", "langfuse"),
            ("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true"),
        ],
    )
    .await;
    let chat = by_name(&spans, "chat gpt-4o");
    assert!(chat.s("langfuse.observation.input").contains(PROMPT));
    assert!(chat.s("langfuse.observation.output").contains(ANSWER_START));
}

#[tokio::test(flavor = "multi_thread")]
async fn semconv_opt_in_exports_only_the_newer_names() {
    let (llm, otlp) = (
        openai("openai-chat-cache-write.json").await,
        receiver().await,
    );
    let env = Env::new();
    let wf = env.workflow(
        "wf.json",
        json!({"ir_version": "0.1.0", "nodes": [{"id": "ask", "type": "llm", "params": {"model": "gpt-5.6-sol", "prompt": PROMPT}}]}),
    );
    let (v, code, stderr) = run_json(
        cmd(&env, &llm, &otlp)
            .env(
                "OTEL_SEMCONV_STABILITY_OPT_IN",
                "http, gen_ai_latest_experimental",
            )
            .args([
                "--trace",
                "--otel-profile",
                "phoenix",
                "--output-format",
                "json",
            ])
            .arg(&wf),
    );
    assert_eq!(code, 0, "{v} {stderr}");
    let exported = received(&env, &otlp).await;
    let chat = by_name(&exported, "chat gpt-5.6-sol");
    assert_eq!(chat.i("gen_ai.usage.cache_write.input_tokens"), 4012);
    assert!(chat
        .attr("gen_ai.usage.cache_creation.input_tokens")
        .is_none());
    assert_eq!(chat.s("gen_ai.provider.name"), "openai");
    assert!(chat.attr("gen_ai.system").is_none());
    assert_eq!(chat.i("llm.token_count.prompt_details.cache_write"), 4012);
    // The local file stays canonical: both spellings, and no profile attributes.
    let (local, _) = read_trace(std::path::Path::new(v["trace_file"].as_str().unwrap()));
    let chat = by_name(&local, "chat gpt-5.6-sol");
    assert_eq!(chat.i("gen_ai.usage.cache_write.input_tokens"), 4012);
    assert_eq!(chat.i("gen_ai.usage.cache_creation.input_tokens"), 4012);
    assert_eq!(chat.s("gen_ai.system"), "openai");
    assert!(local.iter().all(|s| profile_keys(s).is_empty()));
    assert_eq!(v["metrics"]["total"]["tokens_total"], json!(4024));
    assert_eq!(
        v["metrics"]["workflow"]["tokens"]["cache_write"],
        json!(4012)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_export_applies_the_profile() {
    let llm = openai("openai-chat.json").await;
    let env = Env::new();
    let wf = workflow(&env);
    let (v, code, _) = run_json(
        env.pflow()
            .env("OPENAI_BASE_URL", format!("{}/v1", llm.uri()))
            .env("OPENAI_API_KEY", "sk-test-key-abcdefghijklmnop")
            .args(["--trace", "--output-format", "json"])
            .arg(&wf),
    );
    assert_eq!(code, 0, "{v}");
    let file = v["trace_file"].as_str().unwrap().to_string();
    let (local, _) = read_trace(std::path::Path::new(&file));
    let local_cost = f(by_name(&local, "chat gpt-4o"), "pflow.cost.usd");

    let export = |otlp: &MockServer| {
        let mut c = env.pflow();
        c.env_remove("OTEL_SEMCONV_STABILITY_OPT_IN").args([
            "trace",
            "export",
            &file,
            "--otlp-endpoint",
            &otlp.uri(),
        ]);
        c
    };
    let otlp = receiver().await;
    let out = export(&otlp)
        .args(["--otel-profile", "phoenix"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spans = received(&env, &otlp).await;
    assert_eq!(spans.len(), local.len());
    let chat = by_name(&spans, "chat gpt-4o");
    assert_eq!(chat.s("openinference.span.kind"), "LLM");
    assert_eq!(chat.i("llm.token_count.prompt"), 14);
    assert_eq!(chat.i("llm.token_count.total"), 51);
    assert_eq!(f(chat, "llm.cost.total"), local_cost);
    assert_eq!(
        by_name(&spans, "node greet").s("openinference.span.kind"),
        "TOOL"
    );
    assert!(
        chat.attr("input.value").is_none(),
        "no content without capture"
    );
    // OpenAI reports no cache writes: neither spelling is invented.
    assert!(chat
        .attr("gen_ai.usage.cache_creation.input_tokens")
        .is_none());

    let otlp = receiver().await;
    let out = export(&otlp)
        .env("PFLOW_OTEL_PROFILE", "langfuse")
        .env(
            "OTEL_SEMCONV_STABILITY_OPT_IN",
            "gen_ai_latest_experimental",
        )
        .arg("--capture-content")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spans = received(&env, &otlp).await;
    let chat = by_name(&spans, "chat gpt-4o");
    assert_eq!(chat.s("langfuse.observation.type"), "generation");
    let usage: Value = serde_json::from_str(chat.s("langfuse.observation.usage_details")).unwrap();
    assert_eq!(usage, json!({"input": 14, "output": 37, "total": 51}));
    assert!(chat.s("langfuse.observation.input").contains(PROMPT));
    assert!(chat
        .attr("gen_ai.usage.cache_creation.input_tokens")
        .is_none());
    assert!(chat.attr("gen_ai.system").is_none());
    assert_eq!(chat.s("gen_ai.provider.name"), "openai");
}

#[test]
fn unknown_profile_is_a_usage_error() {
    let env = Env::new();
    let wf = env.workflow(
        "wf.json",
        json!({"ir_version": "0.1.0", "nodes": [{"id": "a", "type": "echo", "params": {"text": "x"}}]}),
    );
    let out = env
        .pflow()
        .env_remove("PFLOW_OTEL_PROFILE")
        .args(["--otel-profile", "jaeger"])
        .arg(&wf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`jaeger`")
            && err.contains("--otel-profile")
            && err.contains("otel, phoenix, langfuse"),
        "{err}"
    );

    let (v, code, _) = run_json(
        env.pflow()
            .env("PFLOW_OTEL_PROFILE", "datadog")
            .args(["--output-format", "json"])
            .arg(&wf),
    );
    assert_eq!(code, 2);
    assert_eq!(v["error"]["type"], json!("usage_error"));
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("`datadog`") && msg.contains("PFLOW_OTEL_PROFILE"),
        "{msg}"
    );
    assert!(env.trace_files().is_empty(), "refused before the run");

    // The flag wins over the variable.
    let (v, code, _) = run_json(
        env.pflow()
            .env("PFLOW_OTEL_PROFILE", "datadog")
            .args([
                "--otel-profile",
                "phoenix",
                "--trace",
                "--output-format",
                "json",
            ])
            .arg(&wf),
    );
    assert_eq!(code, 0, "{v}");

    let out = env
        .pflow()
        .args([
            "trace",
            "export",
            "last",
            "--otlp-endpoint",
            "http://127.0.0.1:9",
            "--otel-profile",
            "nope",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`nope`"));
}
