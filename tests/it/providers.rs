//! Every recorded provider response (tests/fixtures/llm) served from a local
//! HTTP server to the real client, streaming and not: usage must match
//! `expected.json`, cost `expected-cost.json`; request shapes and failure
//! modes are checked against the providers' wire formats.

use pflow::llm::{Api, LlmClient, LlmError, LlmRequest, Provider, ProviderConfig, UsageSource};
use pflow::pricing::{cost, PriceTable};
use serde_json::Value;
use std::time::Duration;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use super::common::{llm_fixture as fixture, sse_from_jsonl};

fn config(base: &str) -> ProviderConfig {
    ProviderConfig {
        openai_base_url: format!("{base}/v1"),
        openai_api_key: Some("sk-test-openai-key-123456".into()),
        anthropic_base_url: base.into(),
        anthropic_api_key: Some("sk-ant-test-key-123456".into()),
        gemini_base_url: base.into(),
        gemini_api_key: Some("AIza-test-key".into()),
        ollama_host: base.into(),
        timeout: Duration::from_secs(5),
    }
}

fn request(provider: Provider, model: &str, stream: bool, api: Api) -> LlmRequest {
    LlmRequest {
        provider,
        model: model.into(),
        prompt: "Hello".into(),
        system: Some("Be brief".into()),
        temperature: Some(0.2),
        max_tokens: Some(100),
        stream,
        api,
        images: vec![],
        json_mode: false,
        json_schema: None,
    }
}

/// How each fixture is served: provider, API, HTTP path, streaming, body as sent on the wire.
fn plan(name: &str) -> (Provider, Api, &'static str, bool, Vec<u8>, &'static str) {
    let body = fixture(name);
    let sse = "text/event-stream";
    let json = "application/json";
    match name {
        // The spec example lists the chunks; on the wire each is an SSE data line.
        "openai-chat-stream-no-usage.jsonl" => (
            Provider::OpenAi,
            Api::Chat,
            "/v1/chat/completions",
            true,
            sse_from_jsonl(name),
            sse,
        ),
        n if n.starts_with("openai-chat-stream") => (
            Provider::OpenAi,
            Api::Chat,
            "/v1/chat/completions",
            true,
            body,
            sse,
        ),
        n if n.starts_with("openai-chat") || n == "ollama-openai-chat.json" => (
            Provider::OpenAi,
            Api::Chat,
            "/v1/chat/completions",
            false,
            body,
            json,
        ),
        "openai-responses-stream.sse" => (
            Provider::OpenAi,
            Api::Responses,
            "/v1/responses",
            true,
            body,
            sse,
        ),
        n if n.starts_with("openai-responses") || n.starts_with("openrouter-responses") => (
            Provider::OpenAi,
            Api::Responses,
            "/v1/responses",
            false,
            body,
            json,
        ),
        n if n.starts_with("anthropic") && n.ends_with(".sse") => (
            Provider::Anthropic,
            Api::Chat,
            "/v1/messages",
            true,
            body,
            sse,
        ),
        n if n.starts_with("anthropic") => (
            Provider::Anthropic,
            Api::Chat,
            "/v1/messages",
            false,
            body,
            json,
        ),
        "gemini-stream-generate-content.sse" => (
            Provider::Gemini,
            Api::Chat,
            "/v1beta/models/MODEL:streamGenerateContent",
            true,
            body,
            sse,
        ),
        n if n.starts_with("gemini") => (
            Provider::Gemini,
            Api::Chat,
            "/v1beta/models/MODEL:generateContent",
            false,
            body,
            json,
        ),
        "ollama-chat-stream.jsonl" => (
            Provider::Ollama,
            Api::Chat,
            "/api/chat",
            true,
            body,
            "application/x-ndjson",
        ),
        "ollama-chat.json" => (Provider::Ollama, Api::Chat, "/api/chat", false, body, json),
        other => panic!("no plan for fixture {other}"),
    }
}

#[tokio::test]
async fn every_fixture_through_the_real_client() {
    let expected: Value = serde_json::from_slice(&fixture("expected.json")).unwrap();
    let expected_cost: Value = serde_json::from_slice(&fixture("expected-cost.json")).unwrap();
    let mut checked = 0;
    for (name, exp) in expected.as_object().unwrap() {
        let model = expected_cost[name]["model"]
            .as_str()
            .unwrap_or("m")
            .to_string();
        let (provider, api, p, stream, body, ct) = plan(name);
        let server = MockServer::start().await;
        let p = p.replace("MODEL", &model);
        Mock::given(method("POST"))
            .and(path(p.as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_raw(body, ct))
            .expect(1)
            .mount(&server)
            .await;
        let client = LlmClient::new(config(&server.uri()));
        let resp = client
            .complete(&request(provider, &model, stream, api))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let u = &resp.usage;
        if exp["usage_present"] == Value::Bool(false) {
            assert!(!u.is_known(), "{name}: usage must be unknown, got {u:?}");
            assert_eq!(u.input_tokens, None, "{name}: unknown is not 0");
            checked += 1;
            continue;
        }
        let num = |k: &str| exp[k].as_u64();
        assert_eq!(u.input_tokens, num("input_total"), "{name} input");
        assert_eq!(u.output_tokens, num("output"), "{name} output");
        assert_eq!(u.cache_read_tokens, num("cache_read"), "{name} cache_read");
        assert_eq!(
            u.cache_write_tokens,
            num("cache_write"),
            "{name} cache_write"
        );
        assert_eq!(
            u.cache_write_1h_tokens,
            num("cache_write_1h"),
            "{name} cache_write_1h"
        );
        assert_eq!(
            u.reasoning_tokens,
            num("reasoning"),
            "{name} reasoning (null = not reported)"
        );
        let uncached =
            // Absent cache writes (OpenAI reports none) are none: 0 in the sum.
            u.input_tokens.unwrap() - u.cache_read_tokens.unwrap() - u.cache_write_tokens.unwrap_or(0);
        assert_eq!(Some(uncached), num("input_uncached"), "{name} uncached");
        assert_eq!(
            u.source,
            if stream {
                UsageSource::ProviderStream
            } else {
                UsageSource::Provider
            },
            "{name}"
        );
        if let Some(c) = exp.get("provider_cost_usd").and_then(Value::as_f64) {
            assert_eq!(resp.provider_cost_usd, Some(c), "{name} provider cost");
        }
        // Tool and function-call answers carry no text.
        assert!(
            !resp.text.is_empty()
                || name.contains("tool-use")
                || name == "openai-responses-stream.sse",
            "{name}: no text"
        );
        // Cost from the built-in table.
        let ec = &expected_cost[name];
        if let (Some(key), Some(want)) = (ec["price_key"].as_str(), ec["cost_usd"].as_f64()) {
            let price = PriceTable::builtin()
                .lookup(key, None)
                .unwrap_or_else(|| panic!("{name}: no price for {key}"));
            let got = cost(&u.counts(), &price.price).total_usd;
            assert!(
                (got - want).abs() <= want * 1e-9 + 1e-15,
                "{name}: cost {got} != {want}"
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 25, "every fixture checked");
}

#[tokio::test]
async fn request_shapes_follow_each_wire_format() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", "Bearer sk-test-openai-key-123456"))
        .respond_with(|req: &Request| {
            let b: Value = serde_json::from_slice(&req.body).unwrap();
            assert_eq!(b["stream_options"]["include_usage"], Value::Bool(true));
            assert_eq!(b["messages"][0]["role"], "system");
            assert_eq!(b["max_tokens"], 100, "compatible servers get max_tokens");
            ResponseTemplate::new(200).set_body_raw(
                fixture("openai-chat-stream-include-usage.sse"),
                "text/event-stream",
            )
        })
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(header("x-api-key", "sk-ant-test-key-123456"))
        .and(header("anthropic-version", "2023-06-01"))
        .respond_with(|req: &Request| {
            let b: Value = serde_json::from_slice(&req.body).unwrap();
            assert_eq!(b["system"], "Be brief");
            assert_eq!(b["max_tokens"], 100);
            ResponseTemplate::new(200)
                .set_body_raw(fixture("anthropic-messages.json"), "application/json")
        })
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1beta/models/gemini-2.5-flash:generateContent"))
        .and(header("x-goog-api-key", "AIza-test-key"))
        .respond_with(|req: &Request| {
            let b: Value = serde_json::from_slice(&req.body).unwrap();
            assert_eq!(b["systemInstruction"]["parts"][0]["text"], "Be brief");
            assert_eq!(b["generationConfig"]["maxOutputTokens"], 100);
            ResponseTemplate::new(200)
                .set_body_raw(fixture("gemini-generate-content.json"), "application/json")
        })
        .expect(1)
        .mount(&server)
        .await;
    let c = LlmClient::new(config(&server.uri()));
    c.complete(&request(Provider::OpenAi, "gpt-4o", true, Api::Chat))
        .await
        .unwrap();
    c.complete(&request(
        Provider::Anthropic,
        "claude-sonnet-4-5",
        false,
        Api::Chat,
    ))
    .await
    .unwrap();
    let g = c
        .complete(&request(
            Provider::Gemini,
            "gemini-2.5-flash",
            false,
            Api::Chat,
        ))
        .await
        .unwrap();
    assert_eq!(g.response_model.as_deref(), Some("gemini-2.5-flash"));
    assert_eq!(g.finish_reasons, ["STOP"]);
}

async fn failing(status: u16, headers: &[(&str, &str)], body: &str) -> LlmError {
    let server = MockServer::start().await;
    let mut t =
        ResponseTemplate::new(status).set_body_raw(body.as_bytes().to_vec(), "application/json");
    for (k, v) in headers {
        t = t.insert_header(*k, *v);
    }
    Mock::given(method("POST"))
        .respond_with(t)
        .mount(&server)
        .await;
    LlmClient::new(config(&server.uri()))
        .complete(&request(Provider::OpenAi, "gpt-4o", false, Api::Chat))
        .await
        .unwrap_err()
}

#[tokio::test]
async fn http_failures_map_to_clear_errors() {
    let e = failing(
        401,
        &[],
        r#"{"error": {"message": "Incorrect API key provided: sk-test-openai-key-123456"}}"#,
    )
    .await;
    assert!(
        matches!(e, LlmError::Unauthorized { status: 401, .. }),
        "{e:?}"
    );
    assert!(
        !e.to_string().contains("sk-test-openai-key-123456"),
        "the key must never be echoed: {e}"
    );
    assert!(!e.is_retryable());
    let e = failing(
        429,
        &[("retry-after", "2")],
        r#"{"error": {"message": "slow down"}}"#,
    )
    .await;
    assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
    assert!(e.is_retryable() && e.to_string().contains("slow down"));
    let e = failing(503, &[], "upstream down").await;
    assert!(matches!(e, LlmError::Server { status: 503, .. }) && e.is_retryable());
    let e = failing(400, &[], r#"{"error": {"message": "bad model"}}"#).await;
    assert!(matches!(e, LlmError::BadRequest { .. }) && !e.is_retryable());
    let e = failing(200, &[], "this is not json").await;
    assert!(matches!(e, LlmError::InvalidResponse(_)), "{e:?}");
}

#[tokio::test]
async fn truncated_streams_refused_connections_and_timeouts() {
    // Cut before the usage chunk and [DONE].
    let full = String::from_utf8(fixture("openai-chat-stream-include-usage.sse")).unwrap();
    let cut = &full[..full.find("\"choices\":[]").unwrap()];
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(cut.as_bytes().to_vec(), "text/event-stream"),
        )
        .mount(&server)
        .await;
    let e = LlmClient::new(config(&server.uri()))
        .complete(&request(Provider::OpenAi, "gpt-4o", true, Api::Chat))
        .await
        .unwrap_err();
    assert!(
        matches!(e, LlmError::InvalidResponse(_) | LlmError::Stream { .. }),
        "{e:?}"
    );

    // Anthropic cut after message_start: the input usage that arrived is kept.
    let full = String::from_utf8(fixture("anthropic-messages-stream.sse")).unwrap();
    let cut = &full[..full.find("event: content_block_start").unwrap()];
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(cut.as_bytes().to_vec(), "text/event-stream"),
        )
        .mount(&server)
        .await;
    let e = LlmClient::new(config(&server.uri()))
        .complete(&request(
            Provider::Anthropic,
            "claude-3-opus-latest",
            true,
            Api::Chat,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        e.partial_usage().and_then(|u| u.input_tokens),
        Some(11),
        "{e:?}"
    );
    assert!(e.is_retryable());

    // Nothing listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = LlmClient::new(config(&format!("http://127.0.0.1:{port}")))
        .complete(&request(Provider::OpenAi, "gpt-4o", false, Api::Chat))
        .await
        .unwrap_err();
    assert!(matches!(e, LlmError::Connect(_)), "{e:?}");

    // Slower than the timeout.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_delay(Duration::from_secs(3))
                .set_body_raw(fixture("openai-chat.json"), "application/json"),
        )
        .mount(&server)
        .await;
    let mut cfg = config(&server.uri());
    cfg.timeout = Duration::from_millis(300);
    let e = LlmClient::new(cfg)
        .complete(&request(Provider::OpenAi, "gpt-4o", false, Api::Chat))
        .await
        .unwrap_err();
    assert!(matches!(e, LlmError::Timeout { .. }), "{e:?}");
}

#[tokio::test]
async fn missing_keys_name_the_variable() {
    let mut cfg = config("http://127.0.0.1:9");
    cfg.anthropic_api_key = None;
    let e = LlmClient::new(cfg)
        .complete(&request(
            Provider::Anthropic,
            "claude-sonnet-4-5",
            false,
            Api::Chat,
        ))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("ANTHROPIC_API_KEY"), "{e}");
    let mut cfg = config("http://127.0.0.1:9");
    cfg.openai_base_url = "https://api.openai.com/v1".into();
    cfg.openai_api_key = None;
    let e = LlmClient::new(cfg)
        .complete(&request(Provider::OpenAi, "gpt-4o", false, Api::Chat))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("OPENAI_API_KEY"), "{e}");
}

#[tokio::test]
async fn structured_output_per_provider() {
    let schema = serde_json::json!({"type": "object", "properties": {"found": {"type": "boolean"}}, "required": ["found"]});
    let server = MockServer::start().await;
    let s2 = schema.clone();
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(move |req: &Request| {
            let b: Value = serde_json::from_slice(&req.body).unwrap();
            assert_eq!(b["tools"][0]["input_schema"], s2, "the schema is the tool's input");
            assert_eq!(b["tool_choice"], serde_json::json!({"type": "tool", "name": "answer"}));
            ResponseTemplate::new(200).set_body_json(serde_json::json!({"id": "msg_1", "model": "claude-sonnet-4-5", "role": "assistant", "type": "message", "stop_reason": "tool_use",
                "content": [{"type": "tool_use", "id": "tu_1", "name": "answer", "input": {"found": true}}], "usage": {"input_tokens": 20, "output_tokens": 5}}))
        })
        .mount(&server)
        .await;
    let s3 = schema.clone();
    Mock::given(method("POST"))
        .and(path("/v1beta/models/gemini-2.5-flash:generateContent"))
        .respond_with(move |req: &Request| {
            let b: Value = serde_json::from_slice(&req.body).unwrap();
            assert_eq!(
                b["generationConfig"]["responseMimeType"],
                "application/json"
            );
            assert_eq!(b["generationConfig"]["responseJsonSchema"], s3);
            ResponseTemplate::new(200)
                .set_body_raw(fixture("gemini-generate-content.json"), "application/json")
        })
        .mount(&server)
        .await;
    let c = LlmClient::new(config(&server.uri()));
    let mut req = request(Provider::Anthropic, "claude-sonnet-4-5", false, Api::Chat);
    req.json_mode = true;
    req.json_schema = Some(schema.clone());
    let r = c.complete(&req).await.unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&r.text).unwrap(),
        serde_json::json!({"found": true})
    );
    let mut req = request(Provider::Gemini, "gemini-2.5-flash", false, Api::Chat);
    req.json_mode = true;
    req.json_schema = Some(schema);
    c.complete(&req).await.unwrap();
}
