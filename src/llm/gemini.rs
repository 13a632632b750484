//! Gemini `generateContent` / `streamGenerateContent?alt=sse`. Thoughts are
//! counted beside the candidates; streaming chunks repeat cumulative usage,
//! so the last one wins.

use super::usage::{from_gemini, Usage, UsageSource};
use super::{
    load_image, read_json, str_field, Body, Image, LlmClient, LlmError, LlmRequest, LlmResponse,
    Provider, SseStream,
};
use serde_json::{json, Value};

pub(super) async fn complete(c: &LlmClient, req: &LlmRequest) -> Result<LlmResponse, LlmError> {
    let key = super::required_key(&c.config.gemini_api_key, "gemini", "GEMINI_API_KEY")?;
    let base = c.config.endpoint(Provider::Gemini);
    let mut parts = vec![json!({"text": req.prompt})];
    for src in &req.images {
        match load_image(src)? {
            Image::Inline {
                media_type,
                data_b64,
            } => parts.push(json!({"inline_data": {"mime_type": media_type, "data": data_b64}})),
            Image::Url(u) => {
                return Err(LlmError::Image(format!(
                    "`{u}`: Gemini takes images inline; give a local file path"
                )))
            }
        }
    }
    let mut body = json!({"contents": [{"role": "user", "parts": parts}]});
    if let Some(s) = &req.system {
        body["systemInstruction"] = json!({"parts": [{"text": s}]});
    }
    let mut gen = super::sampling(req, "maxOutputTokens");
    if req.json_mode {
        gen.insert("responseMimeType".into(), json!("application/json"));
        if let Some(schema) = &req.json_schema {
            gen.insert("responseJsonSchema".into(), schema.clone());
        }
    }
    if !gen.is_empty() {
        body["generationConfig"] = Value::Object(gen);
    }
    let url = if req.stream {
        format!(
            "{base}/v1beta/models/{}:streamGenerateContent?alt=sse",
            req.model
        )
    } else {
        format!("{base}/v1beta/models/{}:generateContent", req.model)
    };
    let headers = [("x-goog-api-key", key.as_str())];
    let resp = c.post(&url, &headers, &body, Some(&key), "gemini").await?;
    if !req.stream {
        return generate_body(&read_json(resp).await?);
    }
    super::timed_stream(resp, generate_stream).await
}

/// A `generateContent` response.
pub(super) fn generate_body(v: &Value) -> Result<LlmResponse, LlmError> {
    let mut out = LlmResponse {
        usage: Usage::unknown(),
        ..Default::default()
    };
    absorb(&mut out, v, UsageSource::Provider)?;
    Ok(out)
}

/// A `streamGenerateContent?alt=sse` stream: each chunk a partial response.
pub(super) async fn generate_stream(body: Body) -> Result<LlmResponse, LlmError> {
    let mut out = LlmResponse {
        usage: Usage::unknown(),
        ..Default::default()
    };
    let mut chunks = 0;
    let mut stream = SseStream::from_body(body);
    while let Some(events) = stream.next_or_fail(|| out.usage.clone()).await {
        let events = events?;
        for ev in events {
            let v = ev.json()?;
            if let Some(err) = v.get("error") {
                return Err(LlmError::Stream {
                    message: super::error_message(&json!({"error": err}).to_string()),
                    partial: Box::new(out.usage),
                });
            }
            absorb(&mut out, &v, UsageSource::ProviderStream)?;
            chunks += 1;
        }
    }
    // Gemini sends no terminator: a finishReason is how a complete answer ends.
    if chunks == 0 || out.finish_reasons.is_empty() {
        return Err(LlmError::Stream {
            message: "the stream ended before a finishReason".into(),
            partial: Box::new(out.usage),
        });
    }
    Ok(out)
}

/// Folds one response (or stream chunk) into `out`: text appended, usage replaced.
fn absorb(out: &mut LlmResponse, v: &Value, source: UsageSource) -> Result<(), LlmError> {
    if let Some(cand) = v.pointer("/candidates/0") {
        for p in cand
            .pointer("/content/parts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            // Thought summaries are not the answer.
            if p.get("thought").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            if let Some(t) = p.get("text").and_then(Value::as_str) {
                out.text.push_str(t);
            }
        }
        if let Some(f) = str_field(cand, "finishReason") {
            out.finish_reasons = vec![f];
        }
    }
    if let Some(u) = v.get("usageMetadata") {
        out.usage = from_gemini(u)?;
        out.usage.source = source;
        out.service_tier = str_field(u, "serviceTier").or(out.service_tier.take());
    }
    out.response_model = str_field(v, "modelVersion").or(out.response_model.take());
    out.response_id = str_field(v, "responseId").or(out.response_id.take());
    Ok(())
}
