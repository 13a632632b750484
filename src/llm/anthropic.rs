//! Anthropic Messages API (`/v1/messages`), streaming and not. Input usage
//! excludes both cache buckets; streaming usage is split between
//! `message_start` and the cumulative `message_delta`.

use super::usage::{from_anthropic, AnthropicStreamUsage};
use super::{
    load_image, read_json, str_field, Body, Image, LlmClient, LlmError, LlmRequest, LlmResponse,
    Provider, SseStream,
};
use serde_json::{json, Value};

/// Anthropic requires max_tokens; this is used when the node sets none.
const DEFAULT_MAX_TOKENS: u64 = 4096;

pub(super) async fn complete(c: &LlmClient, req: &LlmRequest) -> Result<LlmResponse, LlmError> {
    let key = super::required_key(
        &c.config.anthropic_api_key,
        "anthropic",
        "ANTHROPIC_API_KEY",
    )?;
    let base = c.config.endpoint(Provider::Anthropic);
    let content = if req.images.is_empty() {
        json!(req.prompt)
    } else {
        let mut parts = Vec::new();
        for src in &req.images {
            parts.push(match load_image(src)? {
                Image::Url(u) => json!({"type": "image", "source": {"type": "url", "url": u}}),
                Image::Inline { media_type, data_b64 } => json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data_b64}}),
            });
        }
        parts.push(json!({"type": "text", "text": req.prompt}));
        Value::Array(parts)
    };
    let mut body = json!({
        "model": req.model,
        "max_tokens": req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        "messages": [{"role": "user", "content": content}],
    });
    if let Some(s) = &req.system {
        body["system"] = json!(s);
    }
    if let Some(t) = req.temperature {
        body["temperature"] = json!(t);
    }
    // Anthropic has no JSON mode: a forced call of an `answer` tool whose
    // input schema is the wanted JSON gives a structured answer.
    if let (true, Some(schema)) = (req.json_mode, &req.json_schema) {
        body["tools"] = json!([{"name": "answer", "description": "Give the answer as structured data.", "input_schema": schema}]);
        body["tool_choice"] = json!({"type": "tool", "name": "answer"});
    }
    if req.stream {
        body["stream"] = json!(true);
    }
    let headers = [
        ("x-api-key", key.as_str()),
        ("anthropic-version", "2023-06-01"),
    ];
    let resp = c
        .post(
            &format!("{base}/v1/messages"),
            &headers,
            &body,
            Some(&key),
            "anthropic",
        )
        .await?;
    if !req.stream {
        let v = read_json(resp).await?;
        return message_body(&v, req.json_schema.is_some());
    }
    super::timed_stream(resp, message_stream).await
}

/// A Messages response; with `tool_answer` the answer is the forced `answer` tool call's input.
pub(super) fn message_body(v: &Value, tool_answer: bool) -> Result<LlmResponse, LlmError> {
    let mut text = v["content"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["type"] == "text")
        .filter_map(|b| b["text"].as_str())
        .collect::<String>();
    // A forced `answer` tool call carries the structured answer as its input.
    if tool_answer {
        if let Some(input) = v["content"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|b| b["type"] == "tool_use" && b["name"] == "answer")
            .map(|b| b["input"].clone())
        {
            text = input.to_string();
        }
    }
    Ok(LlmResponse {
        text,
        usage: from_anthropic(v.get("usage").unwrap_or(&Value::Null))?,
        response_model: str_field(v, "model"),
        response_id: str_field(v, "id"),
        finish_reasons: str_field(v, "stop_reason").into_iter().collect(),
        provider_cost_usd: None,
        service_tier: v
            .pointer("/usage/service_tier")
            .and_then(Value::as_str)
            .map(str::to_string),
        first_chunk_at: None,
    })
}

/// A Messages stream: typed events, usage split over `message_start` and `message_delta`.
pub(super) async fn message_stream(body: Body) -> Result<LlmResponse, LlmError> {
    let mut out = LlmResponse::default();
    let mut usage = AnthropicStreamUsage::default();
    let mut stopped = false;
    let mut stream = SseStream::from_body(body);
    while let Some(events) = stream.next_or_fail(|| usage.partial()).await {
        let events = events?;
        for ev in events {
            let v = ev.json()?;
            usage.event(&v);
            match v["type"].as_str().unwrap_or_default() {
                "message_start" => {
                    out.response_id = v
                        .pointer("/message/id")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    out.response_model = v
                        .pointer("/message/model")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                }
                "content_block_delta"
                    if v.pointer("/delta/type").and_then(Value::as_str) == Some("text_delta") =>
                {
                    out.text.push_str(
                        v.pointer("/delta/text")
                            .and_then(Value::as_str)
                            .unwrap_or_default(),
                    );
                }
                "message_delta" => {
                    if let Some(r) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                        out.finish_reasons = vec![r.to_string()];
                    }
                }
                "message_stop" => stopped = true,
                "error" => {
                    let msg = v
                        .pointer("/error/message")
                        .and_then(Value::as_str)
                        .unwrap_or("stream error")
                        .to_string();
                    return Err(LlmError::Stream {
                        message: msg,
                        partial: Box::new(usage.partial()),
                    });
                }
                _ => {}
            }
        }
    }
    out.usage = usage.usage()?;
    if !stopped {
        return Err(LlmError::Stream {
            message: "the stream ended before `message_stop`".into(),
            partial: Box::new(out.usage),
        });
    }
    Ok(out)
}
