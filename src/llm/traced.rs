//! One LLM call as the trace shows it: each provider attempt a CLIENT span
//! named and attributed per the OpenTelemetry GenAI conventions (`chat
//! gpt-4o`), carrying usage, cost and — in the local trace — the prompt and
//! the response. Retries on 429/5xx/timeouts back off (honouring
//! `Retry-After`); usage of failed attempts still counts. Used by the `llm`
//! node and by the planner.

use super::budget::Budget;
use super::{Api, LlmClient, LlmError, LlmRequest, LlmResponse, Provider, Usage};
use crate::pricing::PriceTable;
use serde_json::json;
use tracing::field::Empty;
use tracing::Instrument;

/// Where a call belongs in the run.
#[derive(Debug, Clone)]
pub struct CallOptions {
    /// Extra attempts on retryable errors.
    pub retries: u64,
    /// The node the call is made for (per-node sums), if any.
    pub node_path: Option<String>,
    /// `workflow` or `planner`.
    pub section: &'static str,
}

/// A successful call.
#[derive(Debug)]
pub struct Done {
    pub response: LlmResponse,
    pub priced: Priced,
    pub attempts: u64,
}

/// A failed call, after its retries.
#[derive(Debug)]
pub struct Failed {
    pub error: LlmError,
    pub attempts: u64,
}

/// How a call's cost was determined: the accounting model's per-call cost.
pub use crate::accounting::Cost as Priced;

/// Prices one call (or one failed attempt's partial usage, `resp` None).
pub fn price_call(
    provider: Provider,
    model: &str,
    resp: Option<&LlmResponse>,
    usage: &Usage,
    table: &PriceTable,
) -> Priced {
    price_usage(
        provider,
        model,
        resp.and_then(|r| r.response_model.as_deref()),
        resp.and_then(|r| r.provider_cost_usd),
        usage,
        table,
    )
}

/// The pricing policy ([`crate::pricing::CallFacts`]) applied to the facts a
/// span keeps, so `pflow trace reprice` applies exactly what the live call did.
pub fn price_usage(
    provider: Provider,
    model: &str,
    response_model: Option<&str>,
    provider_cost_usd: Option<f64>,
    usage: &Usage,
    table: &PriceTable,
) -> Priced {
    table.price(&crate::pricing::CallFacts {
        provider: provider.pricing(),
        model,
        response_model,
        provider_cost_usd,
        tokens: usage.is_known().then(|| usage.counts()),
    })
}

pub fn operation(provider: Provider) -> &'static str {
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
    // Only when there is one: it changes the price of the writes, and reprice needs it.
    rec(
        "pflow.usage.cache_write_1h.input_tokens",
        u.cache_write_1h_tokens.filter(|n| *n > 0),
    );
    span.record("pflow.usage.source", u.source.as_str());
    span.record(
        "pflow.usage.estimated",
        u.source == super::UsageSource::Estimated,
    );
}

fn record_cost(span: &tracing::Span, p: &Priced) {
    if let Some(c) = p.usd {
        span.record("pflow.cost.usd", c);
        span.record("gen_ai.usage.cost", c);
    }
    span.record("pflow.cost.source", p.source.as_str());
    if let Some(k) = &p.key {
        span.record("pflow.cost.price_key", k.as_str());
    }
    // Whenever a table price was used, 0 included: "nothing was cached" is
    // a fact, while absent means no input price to compare with.
    if p.key.is_some() {
        span.record("pflow.cost.cache_savings_usd", p.cache_savings_usd);
    }
}

/// Calls the model, one span per attempt. Each attempt is first checked
/// against `budget` (a refused attempt is never sent and has no span: it
/// fails with [`LlmError::Budget`]) and settled with its priced usage after.
pub async fn call(
    client: &LlmClient,
    prices: &PriceTable,
    budget: &Budget,
    request: &LlmRequest,
    opts: &CallOptions,
) -> Result<Done, Failed> {
    let provider = request.provider;
    let model = request.model.clone();
    let api = request.api;
    let server = client.config().server(provider);
    let mut attempt: u64 = 1;
    // The worst case is the same for every attempt: counted once, when a limit needs it.
    let mut estimate = None;
    loop {
        let reservation = loop {
            let admission = budget.admit(&model, opts.node_path.as_deref(), || {
                estimate
                    .get_or_insert_with(|| super::budget::estimate(request, prices))
                    .clone()
            });
            match admission {
                super::budget::Admission::Go(r) => break r,
                // Calls in flight decide whether this one fits: ask again once they settle.
                super::budget::Admission::Wait => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await
                }
                super::budget::Admission::Refused(stop) => {
                    return Err(Failed {
                        error: LlmError::Budget(stop),
                        attempts: attempt - 1,
                    })
                }
            }
        };
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
            pflow.llm.node_path = opts.node_path.as_deref().unwrap_or(""),
            pflow.llm.attempt = attempt as i64,
            pflow.llm.stream = request.stream,
            pflow.llm.api = if api == Api::Responses { "responses" } else { "chat" },
            pflow.section = opts.section,
            pflow.llm.input_bytes = (request.prompt.len() + request.system.as_ref().map_or(0, String::len)) as i64,
            pflow.llm.output_bytes = Empty,
            pflow.usage.source = Empty,
            pflow.usage.cache_write_1h.input_tokens = Empty,
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
        let result = client.complete(request).instrument(span.clone()).await;
        match result {
            Ok(mut resp) => {
                if !resp.usage.is_known() {
                    // No usage from the provider: count with the tokenizer, marked estimated.
                    resp.usage = super::estimate_usage(request, &resp.text);
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
                let priced = price_call(provider, &model, Some(&resp), &resp.usage, prices);
                record_cost(&span, &priced);
                // What the provider billed teaches later reservations (not a local count).
                let billed_prompt = resp
                    .usage
                    .input_tokens
                    .filter(|_| resp.usage.source != super::UsageSource::Estimated);
                reservation.settle_billed(
                    priced.usd,
                    resp.usage.total().unwrap_or(0),
                    billed_prompt,
                );
                if detail {
                    let out = json!([{"role": "assistant", "parts": [{"type": "text", "content": crate::telemetry::preview::preview_message(&resp.text).text}], "finish_reason": resp.finish_reasons.first()}]);
                    span.record("gen_ai.output.messages", out.to_string().as_str());
                }
                return Ok(Done {
                    response: resp,
                    priced,
                    attempts: attempt,
                });
            }
            Err(e) => {
                match e.partial_usage() {
                    Some(u) => {
                        record_usage(&span, u);
                        let priced = price_call(provider, &model, None, u, prices);
                        record_cost(&span, &priced);
                        reservation.settle(priced.usd, u.total().unwrap_or(0));
                    }
                    None => {
                        // Refused before any work (429, 4xx, 5xx, no connection):
                        // nothing billed, so the run's cost stays complete. A
                        // timeout or a broken transfer may have been billed:
                        // its cost stays unknown.
                        if e.not_billed() {
                            record_cost(
                                &span,
                                &Priced::plain(Some(0.0), crate::accounting::CostSource::NotBilled),
                            );
                        }
                        reservation.settle(Some(0.0), 0)
                    }
                }
                tracing::error!(parent: &span, { "exception.type" = e.kind(), "exception.message" = %e }, "exception");
                span.record("error.type", e.kind());
                span.record("otel.status_description", e.to_string().as_str());
                let retry = e.is_retryable() && attempt <= opts.retries;
                if !retry {
                    return Err(Failed {
                        error: e,
                        attempts: attempt,
                    });
                }
                let wait = e
                    .retry_after()
                    .map(|d| d.min(std::time::Duration::from_secs(60)))
                    .unwrap_or_else(|| super::backoff(attempt as u32));
                tracing::info!(parent: &span, { pflow.llm.next_attempt = (attempt + 1) as i64, pflow.llm.wait_s = wait.as_secs_f64() }, "pflow.llm.retry");
                drop(span);
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
        }
    }
}
