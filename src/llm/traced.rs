//! One LLM call as the trace shows it: each provider attempt a CLIENT span
//! named and attributed per the OpenTelemetry GenAI conventions (`chat
//! gpt-4o`), carrying usage, cost and — in the local trace — the prompt and
//! the response. Retries on 429/5xx/timeouts back off (honouring
//! `Retry-After`); usage of failed attempts still counts. Used by the `llm`
//! node and by the planner.

use super::budget::Budget;
use super::{Api, LlmClient, LlmError, LlmRequest, LlmResponse, Provider, Usage};
use crate::pricing::PriceTable;
use crate::telemetry::attr;
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
    table.price(&call_facts(provider, model, resp, usage))
}

/// [`price_call`] for a live call: a cost that overflows is that call's error.
pub fn try_price_call(
    provider: Provider,
    model: &str,
    resp: Option<&LlmResponse>,
    usage: &Usage,
    table: &PriceTable,
) -> Result<Priced, crate::pricing::CostOverflow> {
    table.try_price(&call_facts(provider, model, resp, usage))
}

fn call_facts<'a>(
    provider: Provider,
    model: &'a str,
    resp: Option<&'a LlmResponse>,
    usage: &Usage,
) -> crate::pricing::CallFacts<'a> {
    crate::pricing::CallFacts {
        provider: provider.pricing(),
        model,
        response_model: resp.and_then(|r| r.response_model.as_deref()),
        provider_cost_usd: resp.and_then(|r| r.provider_cost_usd),
        tokens: usage.is_known().then(|| usage.counts()),
    }
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

fn record_usage(span: &tracing::Span, u: &Usage) {
    let rec = |k: &str, v: Option<u64>| {
        if let Some(v) = v {
            span.record(k, v as i64);
        }
    };
    rec(attr::USAGE_INPUT_TOKENS, u.input_tokens);
    rec(attr::USAGE_OUTPUT_TOKENS, u.output_tokens);
    rec(attr::USAGE_CACHE_READ, u.cache_read_tokens);
    rec(attr::USAGE_CACHE_CREATION, u.cache_write_tokens);
    rec(attr::USAGE_CACHE_WRITE, u.cache_write_tokens);
    rec(attr::USAGE_REASONING, u.reasoning_tokens);
    // Only when there is one: it changes the price of the writes, and reprice needs it.
    rec(
        attr::USAGE_CACHE_WRITE_1H,
        u.cache_write_1h_tokens.filter(|n| *n > 0),
    );
    span.record(attr::USAGE_SOURCE, u.source.as_str());
    span.record(
        attr::USAGE_ESTIMATED,
        u.source == super::UsageSource::Estimated,
    );
}

fn record_failure(span: &tracing::Span, e: &LlmError) {
    crate::telemetry::record_exception(span, e.kind(), &e.to_string());
}

fn record_cost(span: &tracing::Span, p: &Priced) {
    if let Some(c) = p.usd {
        span.record(attr::COST_USD, c);
        span.record(attr::USAGE_COST, c);
    }
    span.record(attr::COST_SOURCE, p.source.as_str());
    if let Some(k) = &p.key {
        span.record(attr::COST_PRICE_KEY, k.as_str());
    }
    // Whenever a table price was used, 0 included: "nothing was cached" is
    // a fact, while absent means no input price to compare with.
    if p.key.is_some() {
        span.record(attr::COST_CACHE_SAVINGS_USD, p.cache_savings_usd);
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
            otel.name = %attr::llm_span(provider.operation(), &model),
            otel.kind = "client",
            { attr::GEN_AI_OPERATION_NAME } = provider.operation(),
            { attr::GEN_AI_PROVIDER_NAME } = provider.semconv_name(),
            { attr::GEN_AI_SYSTEM } = provider.semconv_name(),
            { attr::GEN_AI_REQUEST_MODEL } = %model,
            { attr::GEN_AI_REQUEST_TEMPERATURE } = Empty,
            { attr::GEN_AI_REQUEST_MAX_TOKENS } = Empty,
            { attr::GEN_AI_RESPONSE_MODEL } = Empty,
            { attr::GEN_AI_RESPONSE_ID } = Empty,
            { attr::GEN_AI_REQUEST_STREAM } = request.stream,
            { attr::GEN_AI_OUTPUT_TYPE } = request.json_mode.then_some("json"),
            { attr::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK } = Empty,
            { attr::LLM_OUTPUT_TOKENS_PER_S } = Empty,
            { attr::USAGE_INPUT_TOKENS } = Empty,
            { attr::USAGE_OUTPUT_TOKENS } = Empty,
            { attr::USAGE_CACHE_READ } = Empty,
            { attr::USAGE_CACHE_CREATION } = Empty,
            { attr::USAGE_CACHE_WRITE } = Empty,
            { attr::USAGE_REASONING } = Empty,
            { attr::USAGE_COST } = Empty,
            { attr::GEN_AI_SYSTEM_INSTRUCTIONS } = Empty,
            { attr::GEN_AI_INPUT_MESSAGES } = Empty,
            { attr::GEN_AI_OUTPUT_MESSAGES } = Empty,
            // At span start: samplers and the conventions need them from the outset.
            { attr::SERVER_ADDRESS } = server.as_ref().map(|(h, _)| h.as_str()),
            { attr::SERVER_PORT } = server.as_ref().map(|(_, p)| i64::from(*p)),
            { attr::ERROR_TYPE } = Empty,
            otel.status_description = Empty,
            // Only for a node's call: the planner's calls belong to no node.
            { attr::LLM_NODE_PATH } = opts.node_path.as_deref(),
            { attr::LLM_ATTEMPT } = attempt as i64,
            { attr::LLM_STREAM } = request.stream,
            { attr::LLM_API } = if api == Api::Responses { "responses" } else { "chat" },
            { attr::SECTION } = opts.section,
            { attr::LLM_INPUT_BYTES } = (request.prompt.len() + request.system.as_ref().map_or(0, String::len)) as i64,
            { attr::LLM_OUTPUT_BYTES } = Empty,
            { attr::USAGE_SOURCE } = Empty,
            { attr::USAGE_CACHE_WRITE_1H } = Empty,
            { attr::USAGE_ESTIMATED } = Empty,
            { attr::COST_USD } = Empty,
            { attr::COST_SOURCE } = Empty,
            { attr::COST_PRICE_KEY } = Empty,
            { attr::COST_CACHE_SAVINGS_USD } = Empty,
        );
        if let Some(t) = request.temperature {
            span.record(attr::GEN_AI_REQUEST_TEMPERATURE, t);
        }
        if let Some(m) = request.max_tokens {
            span.record(attr::GEN_AI_REQUEST_MAX_TOKENS, m as i64);
        }
        let detail = tracing::enabled!(target: "pflow::detail", tracing::Level::DEBUG);
        if detail {
            use crate::telemetry::preview::preview_message;
            if let Some(s) = &request.system {
                span.record(
                    attr::GEN_AI_SYSTEM_INSTRUCTIONS,
                    json!([{"type": "text", "content": preview_message(s).text}])
                        .to_string()
                        .as_str(),
                );
            }
            let input = json!([{"role": "user", "parts": [{"type": "text", "content": preview_message(&request.prompt).text}]}]);
            span.record(attr::GEN_AI_INPUT_MESSAGES, input.to_string().as_str());
        }
        let sent = std::time::Instant::now();
        let result = client.complete(request).instrument(span.clone()).await;
        let done = std::time::Instant::now();
        match result {
            Ok(mut resp) => {
                if !resp.usage.is_known() {
                    // No usage from the provider: count with the tokenizer, marked estimated.
                    resp.usage = super::estimate_usage(request, &resp.text);
                }
                if let Some(m) = &resp.response_model {
                    span.record(attr::GEN_AI_RESPONSE_MODEL, m.as_str());
                }
                if let Some(id) = &resp.response_id {
                    span.record(attr::GEN_AI_RESPONSE_ID, id.as_str());
                }
                span.record(attr::LLM_OUTPUT_BYTES, resp.text.len() as i64);
                if !resp.finish_reasons.is_empty() {
                    crate::telemetry::set_str_array(
                        &span,
                        attr::GEN_AI_RESPONSE_FINISH_REASONS,
                        &resp.finish_reasons,
                    );
                }
                if let Some(first) = resp.first_chunk_at.filter(|_| request.stream) {
                    span.record(
                        attr::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
                        first.saturating_duration_since(sent).as_secs_f64(),
                    );
                }
                record_usage(&span, &resp.usage);
                if let (Some(first), Some(out)) = (
                    resp.first_chunk_at.filter(|_| request.stream),
                    resp.usage.output_tokens,
                ) {
                    // A stream that arrived in one piece has no rate to measure.
                    let generating = done.saturating_duration_since(first).as_secs_f64();
                    if generating >= 0.001 {
                        span.record(attr::LLM_OUTPUT_TOKENS_PER_S, out as f64 / generating);
                    }
                }
                let priced =
                    match try_price_call(provider, &model, Some(&resp), &resp.usage, prices) {
                        Ok(p) => p,
                        Err(overflow) => {
                            // Billed, but not a number: the call fails, its cost unknown.
                            reservation.settle(None, resp.usage.total().unwrap_or(0));
                            let e = LlmError::from(overflow);
                            record_failure(&span, &e);
                            return Err(Failed {
                                error: e,
                                attempts: attempt,
                            });
                        }
                    };
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
                    // The message schema requires a reason: a completed answer
                    // whose provider named none stopped normally.
                    let reason = resp.finish_reasons.first().map_or("stop", String::as_str);
                    let out = json!([{"role": "assistant", "parts": [{"type": "text", "content": crate::telemetry::preview::preview_message(&resp.text).text}], "finish_reason": reason}]);
                    span.record(attr::GEN_AI_OUTPUT_MESSAGES, out.to_string().as_str());
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
                record_failure(&span, &e);
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
                tracing::info!(parent: &span, { { attr::LLM_NEXT_ATTEMPT } = (attempt + 1) as i64, { attr::LLM_WAIT_S } = wait.as_secs_f64() }, "{}", attr::EVENT_LLM_RETRY);
                drop(span);
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
        }
    }
}
