//! `llm`: one LLM call, with exact tokens and cost. Each provider attempt is
//! a CLIENT span named and attributed per the OpenTelemetry GenAI
//! conventions (`chat gpt-4o`), carrying usage, cost and — in the local
//! trace — the prompt and the response. Retries on 429/5xx/timeouts back
//! off (honouring `Retry-After`); usage of failed attempts still counts.

use super::{specs, Node, NodeContext, NodeError, NodeFuture, NodeOutput, NodeSpec, Params};
use crate::llm::traced::{self, Priced};
use crate::llm::{self, Api, LlmError, LlmRequest, LlmResponse, Provider};
use serde_json::{json, Map, Value};

pub struct Llm;

/// Provider-level retries when the node sets none.
const DEFAULT_RETRIES: u64 = 2;

impl Node for Llm {
    fn spec(&self) -> &'static NodeSpec {
        &specs::LLM
    }

    fn run<'a>(&'a self, ctx: &'a NodeContext, params: Params) -> NodeFuture<'a> {
        Box::pin(async move {
            let prompt = params
                .text_opt("prompt")
                .ok_or_else(|| NodeError::param("prompt", "is required"))?;
            let model_name = params
                .str_opt("model")?
                .map(str::to_string)
                .unwrap_or_else(llm::default_model);
            let (provider, model) = llm::resolve_model(&model_name)
                .map_err(|e| NodeError::new(e.kind(), e.to_string()))?;
            let api = match params.str_opt("api")?.unwrap_or("chat") {
                "chat" => Api::Chat,
                "responses" => Api::Responses,
                other => {
                    return Err(NodeError::param(
                        "api",
                        format!("`{other}` is not `chat` or `responses`"),
                    ))
                }
            };
            if api == Api::Responses && provider != Provider::OpenAi && provider != Provider::Echo {
                return Err(NodeError::param(
                    "api",
                    format!(
                        "the Responses API is OpenAI's; `{model_name}` is served by {}",
                        provider.as_str()
                    ),
                ));
            }
            let images = match params.get("images") {
                None => vec![],
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|v| {
                        v.as_str().map(str::to_string).ok_or_else(|| {
                            NodeError::param("images", "must be a list of paths or URLs")
                        })
                    })
                    .collect::<Result<_, _>>()?,
                Some(Value::String(s)) => vec![s.clone()],
                Some(_) => {
                    return Err(NodeError::param(
                        "images",
                        "must be a list of paths or URLs",
                    ))
                }
            };
            let max_tokens = match params.f64_opt("max_tokens")? {
                Some(m) if m >= 1.0 && m.fract() == 0.0 => Some(m as u64),
                Some(_) => {
                    return Err(NodeError::param("max_tokens", "must be a positive integer"))
                }
                None => None,
            };
            let request = LlmRequest {
                system: params.text_opt("system"),
                temperature: params.f64_opt("temperature")?,
                max_tokens,
                stream: params.bool_or("stream", false)?,
                api,
                images,
                ..LlmRequest::new(provider, model.clone(), prompt)
            };
            let retries = params
                .f64_opt("retries")?
                .map(|r| r.max(0.0) as u64)
                .unwrap_or(DEFAULT_RETRIES)
                .min(10);
            let opts = traced::CallOptions {
                retries,
                node_path: Some(ctx.path.clone()),
                section: "workflow",
            };
            match ctx.services.call_llm(&request, &opts).await {
                Ok(done) => Ok(outputs(provider, &model, done.response, &done.priced)),
                Err(failed) => Err(node_error(&failed.error, provider, failed.attempts)),
            }
        })
    }
}

fn node_error(e: &LlmError, provider: Provider, attempts: u64) -> NodeError {
    let mut msg = e.to_string();
    if attempts > 1 {
        msg = format!("{msg} (after {attempts} attempts)");
    }
    if matches!(e, LlmError::Connect(_)) && provider != Provider::Echo {
        msg.push_str("; is the provider reachable? (base URL from OPENAI_BASE_URL / ANTHROPIC_BASE_URL / GEMINI_BASE_URL / OLLAMA_HOST)");
    }
    let err = NodeError::new(e.kind(), msg).with_details(
        json!({"provider": provider.as_str(), "attempts": attempts, "retryable": e.is_retryable()}),
    );
    // A refused call was never sent: no attempt span recorded it.
    if attempts > 0 && !matches!(e, LlmError::Budget(_)) {
        err.recorded()
    } else {
        err
    }
}

fn outputs(provider: Provider, model: &str, resp: LlmResponse, priced: &Priced) -> NodeOutput {
    let u = &resp.usage;
    let usage = json!({
        "model": resp.response_model.clone().unwrap_or_else(|| model.to_string()),
        "provider": provider.as_str(),
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_read_tokens": u.cache_read_tokens,
        "cache_write_tokens": u.cache_write_tokens,
        "reasoning_tokens": u.reasoning_tokens,
        "total_tokens": u.total(),
        "estimated": u.source == llm::UsageSource::Estimated,
        "usage_source": u.source.as_str(),
        "cost_usd": priced.usd,
        "cost_source": priced.source.as_str(),
    });
    let trimmed = resp.text.trim();
    let response = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        serde_json::from_str(trimmed).unwrap_or(Value::String(resp.text))
    } else {
        Value::String(resp.text)
    };
    let mut m = Map::new();
    m.insert("response".into(), response);
    m.insert("llm_usage".into(), usage);
    NodeOutput::new(m)
}
