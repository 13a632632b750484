//! `pflow trace reprice` and `pflow trace diff` on saved traces, and where
//! the metrics' numbers come from (`token_sources`, `cost_sources`,
//! `cache_savings_usd`), against a local mock of the OpenAI API.

use super::common::*;
use serde_json::{json, Value};
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const REVIEW: &str = "20261201T190339.377Z_e4dc5f3657d643f701f02e0e78d8b794.otlp.json";

fn env_with_review() -> (Env, std::path::PathBuf) {
    let env = Env::new();
    std::fs::create_dir_all(env.traces_dir()).unwrap();
    let dest = env.traces_dir().join(REVIEW);
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/traces")
            .join(REVIEW),
        &dest,
    )
    .unwrap();
    (env, dest)
}

fn close(a: &Value, b: f64) -> bool {
    a.as_f64().is_some_and(|a| (a - b).abs() < 1e-12)
}

#[test]
fn reprice_with_an_override_prices_the_stored_tokens_and_leaves_the_file() {
    let (env, file) = env_with_review();
    let before = std::fs::read(&file).unwrap();
    let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
    // The fixture's calls were billed as gpt-4o-2024-08-06 (the response model is looked up first).
    let prices = env.write(
        "prices.json",
        r#"{"gpt-4o-2024-08-06": {"input": 5.0, "output": 30.0}}"#,
    );
    let (v, code, err) = run_json(
        env.pflow()
            .args(["--output-format", "json", "--pricing"])
            .arg(&prices)
            .args(["trace", "reprice", "e4dc5f36"]),
    );
    assert_eq!(code, 0, "{v}\n{err}");
    assert_eq!(v["trace_id"], json!("e4dc5f3657d643f701f02e0e78d8b794"));
    assert_eq!(v["pricing"], json!(prices.display().to_string()));
    let calls = v["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    // 14 input and 37 output tokens per call.
    let expected = (14.0 * 5.0 + 37.0 * 30.0) / 1e6;
    for c in calls {
        assert_eq!(c["tokens"]["input"], json!(14));
        assert_eq!(c["tokens"]["output"], json!(37));
        assert_eq!(c["old_usd"], json!(0.000405), "{c}");
        assert_eq!(c["old_source"], json!("table"));
        assert_eq!(c["new_source"], json!("override"));
        assert_eq!(c["new_price_key"], json!("gpt-4o-2024-08-06"));
        assert!(close(&c["new_usd"], expected), "{c}");
        assert!(close(&c["delta_usd"], expected - 0.000405), "{c}");
    }
    let nodes: Vec<&str> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["ask", "critic"]);
    assert_eq!(v["nodes"][0]["model"], json!("gpt-4o"));
    assert_eq!(v["nodes"][0]["old_source"], json!("table"));
    assert_eq!(v["nodes"][0]["new_source"], json!("override"));
    assert!(close(&v["total"]["old_usd"], 0.00081));
    assert!(close(&v["total"]["new_usd"], 2.0 * expected));
    assert!(close(&v["total"]["delta_usd"], 2.0 * expected - 0.00081));
    assert_eq!(v["unpriced_before"], json!([]));
    assert_eq!(v["unpriced_after"], json!([]));

    let out = env
        .pflow()
        .arg("--pricing")
        .arg(&prices)
        .args(["trace", "reprice", "last"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ask     gpt-4o    $0.000405    $0.001180   +$0.000775  table → override"),
        "{text}"
    );
    assert!(
        text.contains("unpriced before: none · after: none"),
        "{text}"
    );

    assert_eq!(std::fs::read(&file).unwrap(), before, "trace file changed");
    assert_eq!(std::fs::metadata(&file).unwrap().modified().unwrap(), mtime);
    assert_eq!(env.trace_files().len(), 1, "no file written beside it");
}

#[test]
fn reprice_without_overrides_matches_the_recorded_costs() {
    let (env, _) = env_with_review();
    let (v, code, err) =
        run_json(
            env.pflow()
                .args(["--output-format", "json", "trace", "reprice", "last"]),
        );
    assert_eq!(code, 0, "{v}\n{err}");
    assert_eq!(v["pricing"], Value::Null);
    for c in v["calls"].as_array().unwrap() {
        assert_eq!(c["new_usd"], c["old_usd"], "{c}");
        assert_eq!(c["new_source"], json!("table"));
        assert_eq!(c["delta_usd"], json!(0.0));
    }
    for n in v["nodes"].as_array().unwrap() {
        assert_eq!(n["delta_usd"], json!(0.0), "{n}");
    }
    assert_eq!(v["total"]["old_usd"], v["total"]["new_usd"]);
    assert_eq!(v["total"]["delta_usd"], json!(0.0));
    let (v, code, _) =
        run_json(
            env.pflow()
                .args(["--output-format", "json", "trace", "reprice", "nope"]),
        );
    assert_eq!(code, 2, "{v}");
}

/// The OpenAI chat payload of `openai-chat.json`, answered as `model` with other token counts.
fn chat_reply(model: &str, prompt_tokens: u64, completion_tokens: u64) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&llm_fixture("openai-chat.json")).unwrap();
    v["model"] = json!(model);
    v["usage"]["prompt_tokens"] = json!(prompt_tokens);
    v["usage"]["completion_tokens"] = json!(completion_tokens);
    v["usage"]["total_tokens"] = json!(prompt_tokens + completion_tokens);
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn diff_of_two_runs_shows_the_prompt_and_model_change() {
    let server = MockServer::start().await;
    for (model, reply) in [
        ("gpt-4o-mini", chat_reply("gpt-4o-mini-2024-07-18", 20, 30)),
        ("gpt-4o", chat_reply("gpt-4o-2024-08-06", 26, 90)),
    ] {
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .and(body_partial_json(json!({ "model": model })))
            .respond_with(ResponseTemplate::new(200).set_body_raw(reply, "application/json"))
            .mount(&server)
            .await;
    }
    let env = Env::new();
    env.workflow(
        "wf.json",
        json!({"ir_version": "0.1.0", "metadata": {"name": "notes"},
            "inputs": {"prompt_style": {"type": "string", "default": "short"},
                       "model": {"type": "string", "default": "gpt-4o-mini"}},
            "nodes": [
                {"id": "prep", "type": "echo", "params": {"text": "Weather notes for SF."}},
                {"id": "summarize", "type": "llm", "params": {"model": "${model}",
                    "prompt": "Notes:\n${prep.text}\nWrite a ${prompt_style} summary.\nEnd."}}
            ],
            "edges": [{"from": "prep", "to": "summarize"}],
            "outputs": {"answer": {"source": "${summarize.response}"}}}),
    );
    for args in [
        ["prompt_style=short", "model=gpt-4o-mini"],
        ["prompt_style=detailed", "model=gpt-4o"],
    ] {
        let out = with_openai(&env, &server)
            .args(["run", "wf.json", "--trace"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(env.trace_files().len(), 2);
    let out = env
        .pflow()
        .args(["trace", "diff", "last~1", "last"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("- Write a short summary."), "{text}");
    assert!(text.contains("+ Write a detailed summary."), "{text}");
    assert!(text.contains("model      gpt-4o-mini → gpt-4o"), "{text}");
    assert!(
        text.contains("model gpt-4o-mini → gpt-4o in 1 node"),
        "{text}"
    );
    insta::with_settings!({filters => vec![
        (r"[0-9a-f]{32}", "[trace_id]"),
        (r"[+-]?\d+\.\d+ m?s", "[time]"),
        (r"Δ duration \[time\] \([+-]\d+%\)", "Δ duration [time]"),
    ]}, {
        insta::assert_snapshot!("diff_prompt_and_model", text);
    });

    let (v, code, _) =
        run_json(
            env.pflow()
                .args(["--output-format", "json", "trace", "diff", "last~1", "last"]),
        );
    assert_eq!(code, 0, "{v}");
    let s = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "summarize")
        .unwrap();
    assert_eq!(s["changed"], json!(true));
    assert_eq!(s["a"]["model"], json!("gpt-4o-mini"));
    assert_eq!(s["b"]["model"], json!("gpt-4o"));
    assert_eq!(s["a"]["tokens"]["output"], json!(30));
    assert_eq!(s["b"]["tokens"]["output"], json!(90));
    let keys: Vec<&str> = s["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["model", "prompt"]);
    let prep = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "prep")
        .unwrap();
    assert_eq!(prep["changed"], json!(false));
    assert_eq!(v["summary"]["nodes_changed"], json!(1));
    assert_eq!(v["summary"]["tokens_total"]["delta"], json!(66.0));
    // 20 × 0.15 + 30 × 0.6 against 26 × 2.5 + 90 × 10, per million.
    assert!(close(&v["summary"]["cost_usd"]["a"], 0.000021));
    assert!(close(&v["summary"]["cost_usd"]["b"], 0.000965));
    assert_eq!(
        v["summary"]["model_changes"],
        json!([{"a": "gpt-4o-mini", "b": "gpt-4o", "nodes": 1}])
    );
}

/// Runs `wf` traced and returns (printed metrics, its `trace summary`, the LLM span).
fn run_and_summary(
    env: &Env,
    server: &MockServer,
    wf: &std::path::Path,
) -> (Value, Value, SpanView) {
    let (v, code, err) = run_json(
        with_openai(env, server)
            .args(["--trace", "--output-format", "json"])
            .arg(wf),
    );
    assert_eq!(code, 0, "{v}\n{err}");
    let file = v["trace_file"].as_str().unwrap().to_string();
    let out = env
        .pflow()
        .args(["trace", "summary", &file])
        .output()
        .unwrap();
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (spans, _) = read_trace(std::path::Path::new(&file));
    let llm = spans
        .into_iter()
        .find(|s| s.attrs.contains_key("gen_ai.request.model"))
        .unwrap();
    (v["metrics"].clone(), summary, llm)
}

fn one_call_wf(env: &Env, model: &str, stream: bool) -> std::path::PathBuf {
    env.workflow(
        &format!("{model}-{stream}.json"),
        json!({"ir_version": "0.1.0",
            "nodes": [{"id": "ask", "type": "llm", "params": {"prompt": "Weather in SF?", "model": model, "stream": stream}}],
            "outputs": {"answer": {"source": "${ask.response}"}}}),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_state_where_tokens_and_costs_come_from() {
    let env = Env::new();

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            llm_fixture("openai-chat-stream-include-usage.sse"),
            "text/event-stream",
        ))
        .mount(&server)
        .await;
    let (m, summary, span) = run_and_summary(&env, &server, &one_call_wf(&env, "gpt-4o", true));
    assert_eq!(m, summary, "trace summary equals the printed metrics");
    assert_eq!(span.s("pflow.usage.source"), "provider_stream");
    assert_eq!(
        m["workflow"]["token_sources"],
        json!({"provider_stream": 1})
    );
    assert_eq!(m["workflow"]["cost_sources"], json!({"table": 1}));
    assert_eq!(
        m["workflow"]["node_usage"]["ask"]["token_sources"],
        json!({"provider_stream": 1})
    );
    assert_eq!(m["models"]["gpt-4o"]["cost_sources"], json!({"table": 1}));
    assert_eq!(span.attr("pflow.cost.cache_savings_usd"), Some(&json!(0.0)));
    assert_eq!(m["workflow"]["cache_savings_usd"], json!(0.0));

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            sse_from_jsonl("openai-chat-stream-no-usage.jsonl"),
            "text/event-stream",
        ))
        .mount(&server)
        .await;
    let (m, summary, span) =
        run_and_summary(&env, &server, &one_call_wf(&env, "gpt-4o-mini", true));
    assert_eq!(m, summary);
    assert_eq!(span.s("pflow.usage.source"), "estimated");
    assert_eq!(m["workflow"]["token_sources"], json!({"estimated": 1}));
    assert_eq!(
        m["models"]["gpt-4o-mini"]["token_sources"],
        json!({"estimated": 1})
    );

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            llm_fixture("openai-chat-cache-read.json"),
            "application/json",
        ))
        .mount(&server)
        .await;
    let (m, summary, span) =
        run_and_summary(&env, &server, &one_call_wf(&env, "gpt-5.6-sol", false));
    assert_eq!(m, summary);
    let saved = span
        .attr("pflow.cost.cache_savings_usd")
        .unwrap()
        .as_f64()
        .unwrap();
    // 4012 cached tokens at 4.00 instead of 0.40 per million.
    assert!((saved - 4012.0 * 3.6 / 1e6).abs() < 1e-12, "{saved}");
    assert_eq!(m["workflow"]["cache_savings_usd"], json!(saved));
    assert_eq!(
        m["workflow"]["node_usage"]["ask"]["cache_savings_usd"],
        json!(saved)
    );
    assert_eq!(
        m["models"]["gpt-5.6-sol"]["cache_savings_usd"],
        json!(saved)
    );
    assert_eq!(m["total"]["cache_savings_usd"], json!(saved));
    assert_eq!(m["workflow"]["token_sources"], json!({"provider": 1}));
}
