//! Ollama's native `/api/chat` (JSON, or JSON lines when streaming). Usage
//! is on the `done: true` object only, and its counts may be missing.

use super::usage::{from_ollama, Usage, UsageSource};
use super::{
    load_image, parse_json, read_json, str_field, Body, Image, LlmClient, LlmError, LlmRequest,
    LlmResponse, Provider,
};
use serde_json::{json, Value};

pub(super) async fn complete(c: &LlmClient, req: &LlmRequest) -> Result<LlmResponse, LlmError> {
    let base = c.config.endpoint(Provider::Ollama);
    let mut messages = Vec::new();
    if let Some(s) = &req.system {
        messages.push(json!({"role": "system", "content": s}));
    }
    let mut user = json!({"role": "user", "content": req.prompt});
    if !req.images.is_empty() {
        let mut imgs = Vec::new();
        for src in &req.images {
            match load_image(src)? {
                Image::Inline { data_b64, .. } => imgs.push(json!(data_b64)),
                Image::Url(u) => {
                    return Err(LlmError::Image(format!(
                        "`{u}`: Ollama takes images inline; give a local file path"
                    )))
                }
            }
        }
        user["images"] = Value::Array(imgs);
    }
    messages.push(user);
    let mut body = json!({"model": req.model, "messages": messages, "stream": req.stream});
    let options = super::sampling(req, "num_predict");
    if req.json_mode {
        body["format"] = req.json_schema.clone().unwrap_or_else(|| json!("json"));
    }
    if !options.is_empty() {
        body["options"] = Value::Object(options);
    }
    let resp = c
        .post(&format!("{base}/api/chat"), &[], &body, None, "ollama")
        .await?;
    if !req.stream {
        return chat_body(&read_json(resp).await?);
    }
    super::timed_stream(resp, chat_stream).await
}

/// A non-streaming `/api/chat` response.
pub(super) fn chat_body(v: &Value) -> Result<LlmResponse, LlmError> {
    Ok(LlmResponse {
        text: v
            .pointer("/message/content")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        usage: from_ollama(v)?,
        response_model: str_field(v, "model"),
        response_id: None,
        finish_reasons: str_field(v, "done_reason").into_iter().collect(),
        provider_cost_usd: None,
        service_tier: None,
        first_chunk_at: None,
    })
}

/// A streaming `/api/chat` response: JSON lines, the last with `done: true` and the usage.
pub(super) async fn chat_stream(mut body: Body) -> Result<LlmResponse, LlmError> {
    let mut out = LlmResponse {
        usage: Usage::unknown(),
        ..Default::default()
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut done = false;
    loop {
        let chunk = match body.chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => {
                return Err(LlmError::Stream {
                    message: e,
                    partial: Box::new(out.usage),
                })
            }
        };
        buf.extend_from_slice(&chunk);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            done |= line_into(&mut out, &line)?;
        }
    }
    if !buf.iter().all(u8::is_ascii_whitespace) {
        done |= line_into(&mut out, &buf)?;
    }
    if !done {
        return Err(LlmError::Stream {
            message: "the stream ended before the `done: true` object".into(),
            partial: Box::new(out.usage),
        });
    }
    Ok(out)
}

fn line_into(out: &mut LlmResponse, line: &[u8]) -> Result<bool, LlmError> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(false);
    }
    let v = parse_json(line)?;
    if let Some(e) = v.get("error") {
        return Err(LlmError::Stream {
            message: e.as_str().unwrap_or("stream error").to_string(),
            partial: Box::new(out.usage.clone()),
        });
    }
    if let Some(t) = v.pointer("/message/content").and_then(Value::as_str) {
        out.text.push_str(t);
    }
    out.response_model = str_field(&v, "model").or(out.response_model.take());
    if v.get("done").and_then(Value::as_bool) == Some(true) {
        out.usage = from_ollama(&v)?;
        if out.usage.is_known() {
            out.usage.source = UsageSource::ProviderStream;
        }
        out.finish_reasons = str_field(&v, "done_reason").into_iter().collect();
        return Ok(true);
    }
    Ok(false)
}
