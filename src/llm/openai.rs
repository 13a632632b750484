//! OpenAI: Chat Completions and the Responses API, streaming and not. Also
//! any OpenAI-compatible server (Ollama's /v1, vLLM, LM Studio, OpenRouter)
//! through `OPENAI_BASE_URL`; a key is required only for api.openai.com.

use super::usage::{from_openai_chat, from_openai_responses, Usage, UsageSource};
use super::{
    load_image, read_json, str_field, Api, Body, Image, LlmClient, LlmError, LlmRequest,
    LlmResponse, SseStream,
};
use serde_json::{json, Value};

fn is_official(base: &str) -> bool {
    base.contains("api.openai.com")
}

pub(super) async fn complete(c: &LlmClient, req: &LlmRequest) -> Result<LlmResponse, LlmError> {
    let base = c.config.endpoint(super::Provider::OpenAi);
    let key = c.config.openai_api_key.clone();
    if key.is_none() && is_official(&base) {
        return Err(LlmError::MissingApiKey {
            provider: "openai",
            env_var: "OPENAI_API_KEY",
        });
    }
    let auth = key.as_ref().map(|k| format!("Bearer {k}"));
    let mut headers: Vec<(&str, &str)> = vec![];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    let (path, body) = match req.api {
        Api::Chat => ("chat/completions", chat_request(req, &base)?),
        Api::Responses => ("responses", responses_request(req)?),
    };
    let resp = c
        .post(
            &format!("{base}/{path}"),
            &headers,
            &body,
            key.as_deref(),
            "openai",
        )
        .await?;
    match (req.api, req.stream) {
        (Api::Chat, false) => chat_body(&read_json(resp).await?),
        (Api::Chat, true) => super::timed_stream(resp, chat_stream).await,
        (Api::Responses, false) => {
            from_response_object(&read_json(resp).await?, UsageSource::Provider)
        }
        (Api::Responses, true) => super::timed_stream(resp, responses_stream).await,
    }
}

fn user_content(req: &LlmRequest, responses_api: bool) -> Result<Value, LlmError> {
    if req.images.is_empty() {
        return Ok(Value::String(req.prompt.clone()));
    }
    let text_type = if responses_api { "input_text" } else { "text" };
    let mut parts = vec![json!({"type": text_type, "text": req.prompt})];
    for src in &req.images {
        let url = match load_image(src)? {
            Image::Url(u) => u,
            Image::Inline {
                media_type,
                data_b64,
            } => format!("data:{media_type};base64,{data_b64}"),
        };
        parts.push(if responses_api {
            json!({"type": "input_image", "image_url": url})
        } else {
            json!({"type": "image_url", "image_url": {"url": url}})
        });
    }
    Ok(Value::Array(parts))
}

/// The Chat Completions request body.
fn chat_request(req: &LlmRequest, base: &str) -> Result<Value, LlmError> {
    let mut messages = Vec::new();
    if let Some(s) = &req.system {
        messages.push(json!({"role": "system", "content": s}));
    }
    messages.push(json!({"role": "user", "content": user_content(req, false)?}));
    let mut body = json!({"model": req.model, "messages": messages});
    // api.openai.com wants max_completion_tokens (reasoning models reject max_tokens);
    // compatible servers mostly know only max_tokens.
    let max_key = if is_official(base) {
        "max_completion_tokens"
    } else {
        "max_tokens"
    };
    super::add_sampling(&mut body, req, max_key);
    if req.stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    if req.json_mode {
        body["response_format"] = match &req.json_schema {
            Some(schema) => {
                json!({"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}})
            }
            None => json!({"type": "json_object"}),
        };
    }
    Ok(body)
}

/// A Chat Completions response object.
pub(super) fn chat_body(v: &Value) -> Result<LlmResponse, LlmError> {
    let choice = v.pointer("/choices/0").cloned().unwrap_or(Value::Null);
    Ok(LlmResponse {
        text: choice
            .pointer("/message/content")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        usage: from_openai_chat(v.get("usage").unwrap_or(&Value::Null))?,
        response_model: str_field(v, "model"),
        response_id: str_field(v, "id"),
        finish_reasons: v["choices"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| str_field(c, "finish_reason"))
                    .collect()
            })
            .unwrap_or_default(),
        provider_cost_usd: v.pointer("/usage/cost").and_then(Value::as_f64),
        service_tier: str_field(v, "service_tier"),
        first_chunk_at: None,
    })
}

/// A Chat Completions stream: `choices[].delta` chunks, usage on the last, then `[DONE]`.
pub(super) async fn chat_stream(body: Body) -> Result<LlmResponse, LlmError> {
    let mut out = LlmResponse {
        usage: Usage::unknown(),
        ..Default::default()
    };
    let mut done = false;
    let mut stream = SseStream::from_body(body);
    while let Some(events) = stream.next_or_fail(|| out.usage.clone()).await {
        let events = events?;
        for ev in events {
            if ev.data.trim() == "[DONE]" {
                done = true;
                continue;
            }
            let v = ev.json()?;
            if let Some(err) = v.get("error") {
                return Err(LlmError::Stream {
                    message: super::error_message(&err.to_string()),
                    partial: Box::new(out.usage),
                });
            }
            out.response_id = out.response_id.or_else(|| str_field(&v, "id"));
            out.response_model = out.response_model.or_else(|| str_field(&v, "model"));
            if let Some(t) = str_field(&v, "service_tier") {
                out.service_tier = Some(t);
            }
            for ch in v["choices"].as_array().into_iter().flatten() {
                if let Some(t) = ch.pointer("/delta/content").and_then(Value::as_str) {
                    out.text.push_str(t);
                }
                if let Some(f) = str_field(ch, "finish_reason") {
                    out.finish_reasons.push(f);
                }
            }
            // Only the final chunk (choices: []) carries numbers; the others send null.
            if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                out.usage = from_openai_chat(u)?;
                out.usage.source = UsageSource::ProviderStream;
                out.provider_cost_usd = u.get("cost").and_then(Value::as_f64);
            }
        }
    }
    if !done {
        return Err(LlmError::Stream {
            message: "the stream ended before `data: [DONE]`".into(),
            partial: Box::new(out.usage),
        });
    }
    Ok(out)
}

/// The Responses API request body.
fn responses_request(req: &LlmRequest) -> Result<Value, LlmError> {
    let input = if req.images.is_empty() {
        json!(req.prompt)
    } else {
        json!([{"role": "user", "content": user_content(req, true)?}])
    };
    let mut body = json!({"model": req.model, "input": input});
    if let Some(s) = &req.system {
        body["instructions"] = json!(s);
    }
    super::add_sampling(&mut body, req, "max_output_tokens");
    if req.stream {
        body["stream"] = json!(true);
    }
    if req.json_mode {
        body["text"] = match &req.json_schema {
            Some(schema) => {
                json!({"format": {"type": "json_schema", "name": "answer", "schema": schema}})
            }
            None => json!({"format": {"type": "json_object"}}),
        };
    }
    Ok(body)
}

/// A Responses API stream: typed events, the whole response on `response.completed`.
pub(super) async fn responses_stream(body: Body) -> Result<LlmResponse, LlmError> {
    let mut text = String::new();
    let mut usage = Usage::unknown();
    let mut stream = SseStream::from_body(body);
    while let Some(events) = stream.next_or_fail(|| usage.clone()).await {
        let events = events?;
        for ev in events {
            let v = ev.json()?;
            match v.get("type").and_then(Value::as_str).unwrap_or_default() {
                "response.output_text.delta" => {
                    text.push_str(v.get("delta").and_then(Value::as_str).unwrap_or_default())
                }
                // Usage is null until the terminal event.
                "response.completed" | "response.incomplete" | "response.failed" => {
                    let r = v.get("response").cloned().unwrap_or(Value::Null);
                    let mut out = from_response_object(&r, UsageSource::ProviderStream)?;
                    if out.text.is_empty() {
                        out.text = text;
                    }
                    if v["type"] == "response.failed" {
                        let msg = r
                            .pointer("/error/message")
                            .and_then(Value::as_str)
                            .unwrap_or("response failed")
                            .to_string();
                        return Err(LlmError::Stream {
                            message: msg,
                            partial: Box::new(out.usage),
                        });
                    }
                    return Ok(out);
                }
                "error" => {
                    return Err(LlmError::Stream {
                        message: super::error_message(&v.to_string()),
                        partial: Box::new(usage),
                    });
                }
                _ => {
                    if let Some(u) = v.pointer("/response/usage").filter(|u| u.is_object()) {
                        usage = from_openai_responses(u)?;
                        usage.source = UsageSource::ProviderStream;
                    }
                }
            }
        }
    }
    Err(LlmError::Stream {
        message: "the stream ended before `response.completed`".into(),
        partial: Box::new(usage),
    })
}

pub(super) fn from_response_object(
    v: &Value,
    source: UsageSource,
) -> Result<LlmResponse, LlmError> {
    let mut text = String::new();
    for item in v["output"].as_array().into_iter().flatten() {
        if item["type"] == "message" {
            for part in item["content"].as_array().into_iter().flatten() {
                if part["type"] == "output_text" {
                    text.push_str(part["text"].as_str().unwrap_or_default());
                }
            }
        }
    }
    let mut usage = from_openai_responses(v.get("usage").unwrap_or(&Value::Null))?;
    if usage.is_known() {
        usage.source = source;
    }
    let status = str_field(v, "status");
    let finish = match (
        status.as_deref(),
        v.pointer("/incomplete_details/reason")
            .and_then(Value::as_str),
    ) {
        (Some("incomplete"), Some(reason)) => vec![reason.to_string()],
        (Some(s), _) => vec![s.to_string()],
        _ => vec![],
    };
    Ok(LlmResponse {
        text,
        usage,
        response_model: str_field(v, "model"),
        response_id: str_field(v, "id"),
        finish_reasons: finish,
        provider_cost_usd: v.pointer("/usage/cost").and_then(Value::as_f64),
        service_tier: str_field(v, "service_tier"),
        first_chunk_at: None,
    })
}
