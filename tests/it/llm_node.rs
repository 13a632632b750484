//! The `llm` node end to end: the real binary against a local server that
//! speaks the providers' wire formats. Tokens, costs, spans, retries,
//! unpriced models, price overrides and 50 parallel calls summing exactly.

use super::common::*;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/llm")
            .join(name),
    )
    .unwrap()
}

fn llm_wf(model: &str, extra: Value) -> Value {
    let mut params = json!({"prompt": "Weather in ${city}?", "model": model});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            params[k] = v;
        }
    }
    json!({"ir_version": "0.1.0", "inputs": {"city": {"type": "string", "default": "SF"}},
        "nodes": [{"id": "ask", "type": "llm", "params": params}],
        "outputs": {"answer": {"source": "${ask.response}"}, "usage": {"source": "${ask.llm_usage}"}}})
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_call_tokens_cost_and_genai_span() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(fixture("openai-chat.json"), "application/json"),
        )
        .mount(&server)
        .await;
    let env = Env::new();
    let wf = env.workflow(
        "wf.json",
        llm_wf("gpt-4o", json!({"temperature": 0.3, "max_tokens": 50})),
    );
    let (v, code, stderr) = run_json(
        with_openai(&env, &server)
            .args(["--trace", "--output-format", "json"])
            .arg(&wf),
    );
    assert_eq!(code, 0, "{v}\n{stderr}");
    let u = &v["result"]["usage"];
    assert_eq!(u["model"], json!("gpt-4o-2024-08-06"));
    assert_eq!(u["input_tokens"], json!(14));
    assert_eq!(u["output_tokens"], json!(37));
    assert_eq!(u["total_tokens"], json!(51));
    assert_eq!(u["estimated"], json!(false));
    assert_eq!(u["cost_usd"], json!(0.000405));
    assert!(v["result"]["answer"]
        .as_str()
        .unwrap()
        .starts_with("I'm unable"));
    let m = &v["metrics"];
    assert_eq!(m["workflow"]["llm_calls"], json!(1));
    assert_eq!(
        m["workflow"]["tokens"],
        json!({"input": 14, "output": 37, "total": 51, "cache_read": 0, "cache_write": 0, "cache_write_1h": 0, "reasoning": 0})
    );
    assert_eq!(m["workflow"]["cost_usd"], json!(0.000405));
    assert_eq!(m["total"]["cost_usd"], json!(0.000405));
    assert_eq!(
        m["workflow"]["node_usage"]["ask"]["cost_usd"],
        json!(0.000405)
    );
    assert_eq!(m["models"]["gpt-4o"]["llm_calls"], json!(1));
    assert_eq!(m["unpriced_models"], json!([]));
    let (spans, _) = read_trace(std::path::Path::new(v["trace_file"].as_str().unwrap()));
    let s = by_name(&spans, "chat gpt-4o");
    assert_eq!(s.kind, 3, "CLIENT");
    assert_eq!(s.parent, by_name(&spans, "node ask").span_id);
    assert_eq!(s.s("gen_ai.operation.name"), "chat");
    assert_eq!(s.s("gen_ai.provider.name"), "openai");
    assert_eq!(s.s("gen_ai.request.model"), "gpt-4o");
    assert_eq!(s.s("gen_ai.response.model"), "gpt-4o-2024-08-06");
    assert_eq!(
        s.s("gen_ai.response.id"),
        "chatcmpl-ABfvaueLEMLNYbT8YzpJxsmiQ6HSY"
    );
    // A real string array, not JSON text in a string.
    assert_eq!(
        s.attr("gen_ai.response.finish_reasons"),
        Some(&json!(["stop"]))
    );
    assert_eq!(s.attr("gen_ai.request.temperature"), Some(&json!(0.3)));
    assert_eq!(s.i("gen_ai.request.max_tokens"), 50);
    assert_eq!(s.i("gen_ai.usage.input_tokens"), 14);
    assert_eq!(s.i("gen_ai.usage.output_tokens"), 37);
    assert_eq!(s.i("gen_ai.usage.cache_read.input_tokens"), 0);
    assert_eq!(s.attr("pflow.cost.usd"), Some(&json!(0.000405)));
    assert_eq!(s.s("pflow.cost.source"), "table");
    assert_eq!(s.s("pflow.cost.price_key"), "gpt-4o-2024-08-06");
    assert_eq!(s.s("pflow.usage.source"), "provider");
    assert_eq!(s.s("server.address"), "127.0.0.1");
    assert!(
        s.s("gen_ai.input.messages").contains("Weather in SF?"),
        "prompt in the local trace"
    );
    assert!(
        s.s("gen_ai.output.messages").contains("I'm unable"),
        "response in the local trace"
    );
    let out = with_openai(&env, &server).arg(&wf).output().unwrap();
    let text_stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        text_stderr.contains("1 LLM call · 51 tokens · $0.000405"),
        "{text_stderr}"
    );
    assert!(!stderr.contains("LLM call"), "JSON mode keeps stderr quiet");
    let raw = std::fs::read_to_string(v["trace_file"].as_str().unwrap()).unwrap();
    assert!(
        !raw.contains("sk-test-key-abcdefghijklmnop"),
        "API key leaked into the trace"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_stream_with_cache_through_the_binary() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            fixture("anthropic-messages-stream-compaction-cache.sse"),
            "text/event-stream",
        ))
        .mount(&server)
        .await;
    let env = Env::new();
    let wf = env.workflow(
        "wf.json",
        llm_wf("claude-sonnet-4-6", json!({"stream": true})),
    );
    let (v, code, _) = run_json(
        env.pflow()
            .env("ANTHROPIC_BASE_URL", server.uri())
            .env("ANTHROPIC_API_KEY", "sk-ant-xyz-1234567890")
            .args(["--output-format", "json"])
            .arg(&wf),
    );
    assert_eq!(code, 0, "{v}");
    let t = &v["metrics"]["workflow"]["tokens"];
    assert_eq!(t["input"], json!(55377));
    assert_eq!(t["cache_read"], json!(55096));
    assert_eq!(t["output"], json!(91));
    assert_eq!(v["metrics"]["total"]["cost_usd"], json!(0.0187368));
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_on_429_are_visible_and_counted() {
    let server = rate_limited_once("0", "rate limit reached").await;
    let env = Env::new();
    let wf = env.workflow("wf.json", llm_wf("gpt-4o", json!({})));
    let (v, code, _) = run_json(
        with_openai(&env, &server)
            .args(["--trace", "--output-format", "json"])
            .arg(&wf),
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(requests(&server).await, 2);
    assert_eq!(
        v["metrics"]["workflow"]["llm_calls"],
        json!(2),
        "each attempt is a call"
    );
    assert_eq!(
        v["metrics"]["total"]["tokens_total"],
        json!(51),
        "the failed attempt had no usage"
    );
    let (spans, _) = read_trace(std::path::Path::new(v["trace_file"].as_str().unwrap()));
    let attempts: Vec<&SpanView> = spans.iter().filter(|s| s.name == "chat gpt-4o").collect();
    assert_eq!(attempts.len(), 2);
    let first = attempts
        .iter()
        .find(|s| s.i("pflow.llm.attempt") == 1)
        .unwrap();
    assert_eq!(first.status_code, 2);
    assert_eq!(first.s("error.type"), "rate_limited");
    assert!(first.events.iter().any(|(n, _)| n == "pflow.llm.retry"));
    assert_registered(std::path::Path::new(v["trace_file"].as_str().unwrap()));
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_key_fails_clearly_without_echoing_it() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(401).set_body_raw(
            r#"{"error": {"message": "Incorrect API key provided: sk-test-key-abcdefghijklmnop"}}"#,
            "application/json",
        ))
        .mount(&server)
        .await;
    let env = Env::new();
    let wf = env.workflow("wf.json", llm_wf("gpt-4o", json!({})));
    let (v, code, stderr) = run_json(
        with_openai(&env, &server)
            .args(["--output-format", "json"])
            .arg(&wf),
    );
    assert_eq!(code, 1);
    assert_eq!(v["error"]["type"], json!("unauthorized"));
    let all = format!("{v}{stderr}");
    assert!(!all.contains("sk-test-key-abcdefghijklmnop"), "{all}");
    let raw = std::fs::read_to_string(v["trace_file"].as_str().unwrap()).unwrap();
    assert!(!raw.contains("sk-test-key-abcdefghijklmnop"));
}

#[tokio::test(flavor = "multi_thread")]
async fn unpriced_model_is_null_listed_and_warned() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(fixture("ollama-openai-chat.json"), "application/json"),
        )
        .mount(&server)
        .await;
    let env = Env::new();
    let wf = env.workflow("wf.json", llm_wf("openai/qwen3:0.6b", json!({})));
    let (v, code, stderr) = run_json(
        with_openai(&env, &server)
            .args(["--output-format", "json"])
            .arg(&wf),
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["result"]["usage"]["cost_usd"], Value::Null);
    assert_eq!(v["metrics"]["unpriced_models"], json!(["qwen3:0.6b"]));
    assert_eq!(v["metrics"]["total"]["cost_complete"], json!(false));
    assert_eq!(v["metrics"]["total"]["tokens_total"], json!(151));
    let w = v["warnings"].as_array().unwrap();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].as_str().unwrap().contains("qwen3:0.6b"));
    let _ = stderr;
}

#[tokio::test(flavor = "multi_thread")]
async fn price_overrides_from_home_and_flag() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(fixture("openai-chat.json"), "application/json"),
        )
        .mount(&server)
        .await;
    let env = Env::new();
    let wf = env.workflow("wf.json", llm_wf("gpt-4o", json!({})));
    std::fs::create_dir_all(env.home()).unwrap();
    std::fs::write(
        env.home().join("pricing.json"),
        r#"{"gpt-4o-2024-08-06": {"output": 20.0}}"#,
    )
    .unwrap();
    let (v, code, _) = run_json(
        with_openai(&env, &server)
            .args(["--output-format", "json"])
            .arg(&wf),
    );
    assert_eq!(code, 0, "{v}");
    // 14 × 2.5 + 37 × 20 per million.
    assert_eq!(v["result"]["usage"]["cost_usd"], json!(0.000775));
    assert_eq!(v["result"]["usage"]["cost_source"], json!("override"));
    let flag = env.write("p.json", r#"{"gpt-4o-2024-08-06": {"input": 0.0025}}"#);
    let (v, _, _) = run_json(
        with_openai(&env, &server)
            .args(["--output-format", "json", "--pricing"])
            .arg(&flag)
            .arg(&wf),
    );
    assert!(v["warnings"][0].as_str().unwrap().contains("per-1K"), "{v}");
    let bad = env.write("bad.json", "{\n  \"gpt-4o\": {\"input\": 1.0,,}\n}");
    let (v, code, _) = run_json(
        with_openai(&env, &server)
            .args(["--output-format", "json", "--pricing"])
            .arg(&bad)
            .arg(&wf),
    );
    assert_eq!(code, 2, "a malformed price file stops the run");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("line 2"),
        "{v}"
    );
    let out = env
        .pflow()
        .args(["pricing", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = env
        .pflow()
        .args([
            "pricing",
            "show",
            "gpt-4o-2024-08-06",
            "--output-format",
            "json",
        ])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["source"], json!("override"));
    assert_eq!(v["price_per_million_tokens"]["output"], json!(20.0));
    let out = env
        .pflow()
        .args(["pricing", "show", "claude-sonnet-4-5-20250929"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("built-in table") && text.contains("input        3"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_parallel_calls_sum_exactly() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(|req: &Request| {
            // Each answer's usage depends on the prompt, so a lost or doubled call shows.
            let b: Value = serde_json::from_slice(&req.body).unwrap();
            let prompt = b["messages"][0]["content"].as_str().unwrap_or("").to_string();
            let i: u64 = prompt.trim_start_matches("item ").parse().unwrap_or(0);
            let body = json!({"id": format!("c{i}"), "model": "gpt-4o-mini-2024-07-18", "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("ok {i}")}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 100 + i, "completion_tokens": 10 + i, "total_tokens": 110 + 2 * i, "prompt_tokens_details": {"cached_tokens": i}}});
            ResponseTemplate::new(200).set_delay(std::time::Duration::from_millis(50)).set_body_json(body)
        })
        .mount(&server)
        .await;
    let env = Env::new();
    let items: Vec<u64> = (0..50).collect();
    let wf = env.workflow("wf.json", json!({"ir_version": "0.1.0", "nodes": [{"id": "fan", "type": "llm", "batch": {"items": items, "parallel": true, "max_concurrent": 50}, "params": {"prompt": "item ${item}", "model": "gpt-4o-mini"}}]}));
    let (v, code, _) = run_json(
        with_openai(&env, &server)
            .args(["--trace", "--output-format", "json"])
            .arg(&wf),
    );
    assert_eq!(code, 0, "{v}");
    let sum: u64 = (0..50).sum();
    let t = &v["metrics"]["workflow"]["tokens"];
    assert_eq!(t["input"], json!(100 * 50 + sum));
    assert_eq!(t["output"], json!(10 * 50 + sum));
    assert_eq!(t["cache_read"], json!(sum));
    assert_eq!(v["metrics"]["workflow"]["llm_calls"], json!(50));
    // Exact cost: every call priced with the same table, summed.
    let price = pflow::pricing::PriceTable::builtin()
        .lookup("gpt-4o-mini-2024-07-18", None)
        .unwrap()
        .price;
    let want: f64 = (0..50u64)
        .map(|i| {
            pflow::pricing::cost(
                &pflow::pricing::TokenCounts {
                    input: 100 + i,
                    output: 10 + i,
                    cache_read: i,
                    ..Default::default()
                },
                &price,
            )
            .total_usd
        })
        .sum();
    let got = v["metrics"]["total"]["cost_usd"].as_f64().unwrap();
    assert!((got - want).abs() < 1e-9, "{got} vs {want}");
    let (spans, _) = read_trace(std::path::Path::new(v["trace_file"].as_str().unwrap()));
    let calls: Vec<&SpanView> = spans
        .iter()
        .filter(|s| s.name == "chat gpt-4o-mini")
        .collect();
    assert_eq!(calls.len(), 50);
    for c in calls {
        let item = spans
            .iter()
            .find(|s| s.span_id == c.parent)
            .expect("parent");
        assert_eq!(item.s("pflow.node.role"), "batch_item");
        assert_eq!(c.s("pflow.llm.node_path"), item.s("pflow.node.path"));
    }
}

#[test]
fn echo_model_runs_offline() {
    let env = Env::new();
    let wf = env.workflow("wf.json", llm_wf("echo", json!({"system": "sys"})));
    let (v, code, _) = run_json(
        env.pflow()
            .args(["--output-format", "json"])
            .arg(&wf)
            .arg("city=Paris"),
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["result"]["answer"], json!("Weather in Paris?"));
    let u = &v["result"]["usage"];
    assert_eq!(u["estimated"], json!(true));
    assert_eq!(u["cost_usd"], json!(0.0));
    assert!(u["input_tokens"].as_u64().unwrap() > 3);
    assert_eq!(v["metrics"]["total"]["cost_complete"], json!(true));
}

#[test]
fn unknown_model_name_is_a_clear_error() {
    let env = Env::new();
    let wf = env.workflow("wf.json", llm_wf("llama3.2", json!({})));
    let (v, code, _) = run_json(env.pflow().args(["--output-format", "json"]).arg(&wf));
    // Found by validation, before any node runs.
    assert_eq!(code, 2, "{v}");
    assert_eq!(v["error"]["type"], json!("validation_error"));
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("params.model") && msg.contains("`ollama/llama3.2`"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_usage_is_estimated_with_the_tokenizer_and_marked() {
    let wire = sse_from_jsonl("openai-chat-stream-no-usage.jsonl");
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(wire, "text/event-stream"))
        .mount(&server)
        .await;
    let env = Env::new();
    let wf = env.workflow("wf.json", llm_wf("gpt-4o-mini", json!({"stream": true})));
    let (v, code, _) = run_json(
        with_openai(&env, &server)
            .args(["--trace", "--output-format", "json"])
            .arg(&wf),
    );
    assert_eq!(code, 0, "{v}");
    let u = &v["result"]["usage"];
    assert_eq!(u["estimated"], json!(true));
    assert_eq!(u["usage_source"], json!("estimated"));
    assert_eq!(
        u["output_tokens"],
        json!(pflow::llm::count_tokens(v["result"]["answer"].as_str().unwrap()).unwrap())
    );
    assert!(
        u["cost_usd"].as_f64().unwrap() > 0.0,
        "estimated usage is still priced"
    );
    let (spans, _) = read_trace(std::path::Path::new(v["trace_file"].as_str().unwrap()));
    let s = by_name(&spans, "chat gpt-4o-mini");
    assert_eq!(s.attr("pflow.usage.estimated"), Some(&json!(true)));
    assert_eq!(s.s("pflow.usage.source"), "estimated");
    assert_eq!(v["metrics"]["workflow"]["estimated_calls"], json!(1));
    assert_eq!(
        v["metrics"]["models"]["gpt-4o-mini"]["estimated_calls"],
        json!(1)
    );
}
