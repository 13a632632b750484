//! `llm`: one LLM call, with exact tokens and cost. Each provider attempt is
//! a CLIENT span named and attributed per the OpenTelemetry GenAI
//! conventions (`chat gpt-4o`), carrying usage, cost and — in the local
//! trace — the prompt and the response. Retries on 429/5xx/timeouts back
//! off (honouring `Retry-After`); usage of failed attempts still counts.

use super::{opt, req, Node, NodeContext, NodeError, NodeOutput, NodeSpec, Params};
use crate::llm::{self, Api, LlmError, LlmRequest, LlmResponse, Provider, Usage};
use crate::pricing::PriceTable;
use futures::future::BoxFuture;
use serde_json::{json, Map, Value};
use tracing::field::Empty;
use tracing::Instrument;

pub struct Llm;

/// Provider-level retries when the node sets none.
const DEFAULT_RETRIES: u64 = 2;

static SPEC: NodeSpec = NodeSpec {
    name: "llm",
    description: "Call an LLM. The model is `provider/model` or a well-known name (gpt-*, o1/o3/o4*, claude-*, gemini-*); `echo` answers offline with the prompt. Default model: $PFLOW_DEFAULT_MODEL, else `echo`.",
    params: &[
        req("prompt", "string", "the user message"),
        opt("system", "string", "system instructions"),
        opt("model", "string", "e.g. gpt-4o, claude-sonnet-4-5, gemini-2.5-flash, ollama/llama3.2, echo"),
        opt("temperature", "number", "sampling temperature"),
        opt("max_tokens", "integer", "output token limit"),
        opt("stream", "boolean", "stream the response (default false); usage comes from the stream"),
        opt("api", "string", "`chat` (default) or `responses` (OpenAI Responses API)"),
        opt("images", "array", "image file paths or URLs"),
        opt("retries", "integer", "provider retries on 429, 5xx and timeouts (default 2)"),
    ],
    outputs: &[
        req("response", "any", "the text; parsed JSON when the text is JSON"),
        req("llm_usage", "object", "{model, provider, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, total_tokens, estimated, cost_usd}"),
    ],
    dynamic_outputs: false,
};

/// How a call's cost was determined.
struct Priced {
    usd: Option<f64>,
    /// `table`, `override`, `provider`, `free`, `local`, `unpriced`, `unknown_usage`.
    source: &'static str,
    key: Option<String>,
    cache_savings_usd: f64,
}

fn price_call(
    provider: Provider,
    model: &str,
    resp: Option<&LlmResponse>,
    usage: &Usage,
    table: &PriceTable,
) -> Priced {
    let none = |source| Priced {
        usd: None,
        source,
        key: None,
        cache_savings_usd: 0.0,
    };
    if provider == Provider::Echo {
        return Priced {
            usd: Some(0.0),
            source: "free",
            key: None,
            cache_savings_usd: 0.0,
        };
    }
    if let Some(c) = resp.and_then(|r| r.provider_cost_usd) {
        return Priced {
            usd: Some(c),
            source: "provider",
            key: None,
            cache_savings_usd: 0.0,
        };
    }
    if !usage.is_known() {
        return none("unknown_usage");
    }
    let prefix = match provider {
        Provider::Gemini => Some("gemini"),
        Provider::Ollama => Some("ollama"),
        Provider::Anthropic => Some("anthropic"),
        _ => None,
    };
    // The billed version (response model) first, then what was asked for.
    let found = resp
        .and_then(|r| r.response_model.as_deref())
        .and_then(|m| table.lookup(m, prefix))
        .or_else(|| table.lookup(model, prefix));
    match found {
        Some(p) => {
            let c = crate::pricing::cost(&usage.counts(), &p.price);
            Priced {
                usd: Some(c.total_usd),
                source: p.source.cost_source(),
                key: Some(p.key),
                cache_savings_usd: c.cache_savings_usd,
            }
        }
        // A local model with no listed price costs nothing to call.
        None if provider == Provider::Ollama => Priced {
            usd: Some(0.0),
            source: "local",
            key: None,
            cache_savings_usd: 0.0,
        },
        None => none("unpriced"),
    }
}

fn operation(provider: Provider) -> &'static str {
    match provider {
        Provider::Gemini => "generate_content",
        _ => "chat",
    }
}

fn record_usage(span: &tracing::Span, u: &Usage) {
    let rec = |k: &str, v: Option<u64>| {
        if let Some(v) = v {
            span.record(k, v as i64);
        }
    };
    rec("gen_ai.usage.input_tokens", u.input_tokens);
    rec("gen_ai.usage.output_tokens", u.output_tokens);
    rec("gen_ai.usage.cache_read.input_tokens", u.cache_read_tokens);
    rec(
        "gen_ai.usage.cache_creation.input_tokens",
        u.cache_write_tokens,
    );
    rec(
        "gen_ai.usage.cache_write.input_tokens",
        u.cache_write_tokens,
    );
    rec("gen_ai.usage.reasoning.output_tokens", u.reasoning_tokens);
    span.record("pflow.usage.source", u.source.as_str());
    span.record(
        "pflow.usage.estimated",
        u.source == llm::UsageSource::Estimated,
    );
}

fn record_cost(span: &tracing::Span, p: &Priced) {
    if let Some(c) = p.usd {
        span.record("pflow.cost.usd", c);
        span.record("gen_ai.usage.cost", c);
    }
    span.record("pflow.cost.source", p.source);
    if let Some(k) = &p.key {
        span.record("pflow.cost.price_key", k.as_str());
    }
    if p.cache_savings_usd > 0.0 {
        span.record("pflow.cost.cache_savings_usd", p.cache_savings_usd);
    }
}

impl Node for Llm {
    fn spec(&self) -> &'static NodeSpec {
        &SPEC
    }

    fn run<'a>(
        &'a self,
        ctx: &'a NodeContext,
        params: Params,
    ) -> BoxFuture<'a, Result<NodeOutput, NodeError>> {
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
                provider,
                model: model.clone(),
                prompt,
                system: params.text_opt("system"),
                temperature: params.f64_opt("temperature")?,
                max_tokens,
                stream: params.bool_or("stream", false)?,
                api,
                images,
            };
            let retries = params
                .f64_opt("retries")?
                .map(|r| r.max(0.0) as u64)
                .unwrap_or(DEFAULT_RETRIES)
                .min(10);
            let client = ctx.services.llm();
            let server = client.config().server(provider);
            let mut attempt: u64 = 1;
            loop {
                let span = tracing::info_span!(
                    target: "pflow::llm",
                    "llm",
                    otel.name = %format!("{} {}", operation(provider), model),
                    otel.kind = "client",
                    "gen_ai.operation.name" = operation(provider),
                    "gen_ai.provider.name" = provider.semconv_name(),
                    "gen_ai.system" = provider.semconv_name(),
                    "gen_ai.request.model" = %model,
                    "gen_ai.request.temperature" = Empty,
                    "gen_ai.request.max_tokens" = Empty,
                    "gen_ai.response.model" = Empty,
                    "gen_ai.response.id" = Empty,
                    "gen_ai.response.finish_reasons" = Empty,
                    "gen_ai.usage.input_tokens" = Empty,
                    "gen_ai.usage.output_tokens" = Empty,
                    "gen_ai.usage.cache_read.input_tokens" = Empty,
                    "gen_ai.usage.cache_creation.input_tokens" = Empty,
                    "gen_ai.usage.cache_write.input_tokens" = Empty,
                    "gen_ai.usage.reasoning.output_tokens" = Empty,
                    "gen_ai.usage.cost" = Empty,
                    "gen_ai.system_instructions" = Empty,
                    "gen_ai.input.messages" = Empty,
                    "gen_ai.output.messages" = Empty,
                    "server.address" = Empty,
                    "server.port" = Empty,
                    "error.type" = Empty,
                    otel.status_description = Empty,
                    pflow.llm.node_path = %ctx.path,
                    pflow.llm.attempt = attempt as i64,
                    pflow.llm.stream = request.stream,
                    pflow.llm.api = if api == Api::Responses { "responses" } else { "chat" },
                    pflow.section = "workflow",
                    pflow.llm.input_bytes = (request.prompt.len() + request.system.as_ref().map_or(0, String::len)) as i64,
                    pflow.llm.output_bytes = Empty,
                    pflow.usage.source = Empty,
                    pflow.usage.estimated = Empty,
                    pflow.cost.usd = Empty,
                    pflow.cost.source = Empty,
                    pflow.cost.price_key = Empty,
                    pflow.cost.cache_savings_usd = Empty,
                );
                if let Some(t) = request.temperature {
                    span.record("gen_ai.request.temperature", t);
                }
                if let Some(m) = request.max_tokens {
                    span.record("gen_ai.request.max_tokens", m as i64);
                }
                if let Some((host, port)) = &server {
                    span.record("server.address", host.as_str());
                    span.record("server.port", *port as i64);
                }
                let detail = tracing::enabled!(target: "pflow::detail", tracing::Level::DEBUG);
                if detail {
                    use crate::telemetry::preview::preview_message;
                    if let Some(s) = &request.system {
                        span.record(
                            "gen_ai.system_instructions",
                            json!([{"type": "text", "content": preview_message(s).text}])
                                .to_string()
                                .as_str(),
                        );
                    }
                    let input = json!([{"role": "user", "parts": [{"type": "text", "content": preview_message(&request.prompt).text}]}]);
                    span.record("gen_ai.input.messages", input.to_string().as_str());
                }
                let result = client.complete(&request).instrument(span.clone()).await;
                match result {
                    Ok(mut resp) => {
                        if !resp.usage.is_known() {
                            // No usage from the provider: count with the tokenizer, marked estimated.
                            resp.usage = llm::estimate_usage(&request, &resp.text);
                        }
                        if let Some(m) = &resp.response_model {
                            span.record("gen_ai.response.model", m.as_str());
                        }
                        if let Some(id) = &resp.response_id {
                            span.record("gen_ai.response.id", id.as_str());
                        }
                        span.record("pflow.llm.output_bytes", resp.text.len() as i64);
                        span.record(
                            "gen_ai.response.finish_reasons",
                            json!(resp.finish_reasons).to_string().as_str(),
                        );
                        record_usage(&span, &resp.usage);
                        let priced = price_call(
                            provider,
                            &model,
                            Some(&resp),
                            &resp.usage,
                            ctx.services.prices(),
                        );
                        record_cost(&span, &priced);
                        if detail {
                            let out = json!([{"role": "assistant", "parts": [{"type": "text", "content": crate::telemetry::preview::preview_message(&resp.text).text}], "finish_reason": resp.finish_reasons.first()}]);
                            span.record("gen_ai.output.messages", out.to_string().as_str());
                        }
                        return Ok(outputs(provider, &model, resp, &priced));
                    }
                    Err(e) => {
                        if let Some(u) = e.partial_usage() {
                            record_usage(&span, u);
                            record_cost(
                                &span,
                                &price_call(provider, &model, None, u, ctx.services.prices()),
                            );
                        }
                        tracing::error!(parent: &span, { "exception.type" = e.kind(), "exception.message" = %e }, "exception");
                        span.record("error.type", e.kind());
                        span.record("otel.status_description", e.to_string().as_str());
                        let retry = e.is_retryable() && attempt <= retries;
                        if !retry {
                            return Err(node_error(&e, provider, attempt));
                        }
                        let wait = e
                            .retry_after()
                            .map(|d| d.min(std::time::Duration::from_secs(60)))
                            .unwrap_or_else(|| llm::backoff(attempt as u32));
                        tracing::info!(parent: &span, { pflow.llm.next_attempt = (attempt + 1) as i64, pflow.llm.wait_s = wait.as_secs_f64() }, "pflow.llm.retry");
                        drop(span);
                        tokio::time::sleep(wait).await;
                        attempt += 1;
                    }
                }
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
    NodeError::new(e.kind(), msg).with_details(
        json!({"provider": provider.as_str(), "attempts": attempts, "retryable": e.is_retryable()}),
    )
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
        "cost_source": priced.source,
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
