//! `pflow trace reprice`: every LLM call of a saved trace priced again from
//! its stored token counts with today's table (or `--pricing` overrides),
//! old against new per call, per node and in total. The rules are the live
//! call's own ([`crate::llm::traced::price_usage`]); the trace file is only
//! read, never written.
//!
//! Provider-reported costs (`provider`, e.g. OpenRouter) are what was billed,
//! so they are kept as they were, unless the price table holds an *override*
//! for the model: an explicit override is the user's statement of the price.
//! Echo stays `free`, an unlisted Ollama model `local`.

use super::{show, AttrValue, Trace, TraceSpan};
use crate::accounting::{round_usd, CostSource, CostTotal};
use crate::llm::traced::price_usage;
use crate::llm::{Provider, Usage, UsageSource};
use crate::pricing::{PriceTable, TokenCounts};
use crate::telemetry::attr;
use indexmap::IndexMap;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

/// One LLM call (attempt), old against new.
#[derive(Debug, Clone, Serialize)]
pub struct CallReprice {
    pub span_id: String,
    pub node: String,
    pub model: String,
    pub response_model: Option<String>,
    pub provider: Option<String>,
    pub tokens: TokenCounts,
    /// `pflow.usage.source` (`none` when the attempt recorded no usage).
    pub token_source: String,
    pub old_usd: Option<f64>,
    /// `pflow.cost.source` as recorded (`none` when absent).
    pub old_source: String,
    pub old_price_key: Option<String>,
    pub new_usd: Option<f64>,
    pub new_source: String,
    pub new_price_key: Option<String>,
    /// New minus old; null when either is unknown.
    pub delta_usd: Option<f64>,
}

/// The calls of one node (or of the planner), summed.
#[derive(Debug, Clone, Serialize)]
pub struct NodeReprice {
    pub node: String,
    /// The requested model(s), comma-separated when a node called several.
    pub model: String,
    /// Sum of the known costs (see `old_source` for `unpriced` calls).
    pub old_usd: f64,
    pub new_usd: f64,
    pub delta_usd: f64,
    /// The calls' cost source(s), comma-separated when they differ.
    pub old_source: String,
    pub new_source: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TotalReprice {
    pub old_usd: f64,
    pub new_usd: f64,
    pub delta_usd: f64,
    /// False when a call had no known cost before (then `old_usd` is a lower bound).
    pub old_complete: bool,
    pub new_complete: bool,
}

/// The whole report (`--output-format json` prints it as is).
#[derive(Debug, Clone, Serialize)]
pub struct Reprice {
    pub trace_id: String,
    pub file: String,
    /// The override file the new prices came from; null for the built-in table alone.
    pub pricing: Option<String>,
    pub calls: Vec<CallReprice>,
    pub nodes: Vec<NodeReprice>,
    pub total: TotalReprice,
    /// Models without a known price in the trace, and with the new prices.
    pub unpriced_before: Vec<String>,
    pub unpriced_after: Vec<String>,
}

fn count(s: &TraceSpan, k: &str) -> Option<u64> {
    s.attr(k)
        .and_then(AttrValue::as_i64)
        .map(|v| v.max(0) as u64)
}

/// The usage a span recorded, as the pricing rules take it.
pub fn span_usage(s: &TraceSpan) -> Usage {
    let source = match s.str_attr(attr::USAGE_SOURCE) {
        Some("provider_stream") => UsageSource::ProviderStream,
        Some("estimated") => UsageSource::Estimated,
        Some("unknown") => UsageSource::Unknown,
        _ => UsageSource::Provider,
    };
    Usage {
        input_tokens: count(s, attr::USAGE_INPUT_TOKENS),
        output_tokens: count(s, attr::USAGE_OUTPUT_TOKENS),
        cache_read_tokens: count(s, attr::USAGE_CACHE_READ),
        cache_write_tokens: count(s, attr::USAGE_CACHE_WRITE)
            .or_else(|| count(s, attr::USAGE_CACHE_CREATION)),
        cache_write_1h_tokens: count(s, attr::USAGE_CACHE_WRITE_1H),
        reasoning_tokens: count(s, attr::USAGE_REASONING),
        source,
    }
}

/// The node an LLM call counts for: its node path, else its section.
pub fn call_node(s: &TraceSpan) -> String {
    match s.str_attr(attr::LLM_NODE_PATH).filter(|p| !p.is_empty()) {
        Some(p) => p.to_string(),
        None if s.str_attr(attr::SECTION) == Some("planner") => "(planner)".into(),
        None => "(no node)".into(),
    }
}

fn reprice_call(s: &TraceSpan, table: &PriceTable) -> CallReprice {
    let model = s
        .str_attr(attr::GEN_AI_REQUEST_MODEL)
        .unwrap_or("unknown")
        .to_string();
    let response_model = s.str_attr(attr::GEN_AI_RESPONSE_MODEL).map(str::to_string);
    let provider_name = s.str_attr(attr::GEN_AI_PROVIDER_NAME).map(str::to_string);
    let provider = provider_name
        .as_deref()
        .and_then(Provider::from_semconv_name)
        .or_else(|| crate::llm::resolve_model(&model).ok().map(|(p, _)| p))
        .unwrap_or(Provider::OpenAi);
    let usage = span_usage(s);
    let old_usd = s.attr(attr::COST_USD).and_then(AttrValue::as_f64);
    let old_source = s.str_attr(attr::COST_SOURCE).map(str::to_string);
    let priced = |provider_cost| {
        price_usage(
            provider,
            &model,
            response_model.as_deref(),
            provider_cost,
            &usage,
            table,
        )
    };
    let (new_usd, new_source, new_key) = match old_source.as_deref() {
        // An attempt that failed before any usage arrived: nothing to price, then or now.
        None => (None, "none".to_string(), None),
        Some(s) if s == CostSource::NotBilled.as_str() => (old_usd, s.to_string(), None),
        // A provider-reported cost is what was billed; the policy lets an override beat it.
        Some(s) => {
            let billed = (s == CostSource::Provider.as_str())
                .then_some(old_usd)
                .flatten();
            let p = priced(billed);
            (p.usd, p.source.to_string(), p.key)
        }
    };
    let new_usd = new_usd.map(round_usd);
    CallReprice {
        span_id: s.span_id.clone(),
        node: call_node(s),
        response_model,
        provider: provider_name,
        tokens: usage.counts(),
        token_source: s.str_attr(attr::USAGE_SOURCE).unwrap_or("none").to_string(),
        old_usd,
        old_source: old_source.unwrap_or_else(|| "none".into()),
        old_price_key: s.str_attr(attr::COST_PRICE_KEY).map(str::to_string),
        delta_usd: old_usd.zip(new_usd).map(|(o, n)| round_usd(n - o)),
        new_usd,
        new_source,
        new_price_key: new_key,
        model,
    }
}

fn joined(v: &[String]) -> String {
    let mut out: Vec<&str> = Vec::new();
    for s in v {
        if !out.contains(&s.as_str()) {
            out.push(s);
        }
    }
    out.join(",")
}

/// The calls' old or new cost; attempts that recorded no usage (`none`)
/// cost nothing either way.
fn total<'a>(calls: impl IntoIterator<Item = &'a CallReprice>, new: bool) -> CostTotal {
    let mut t = CostTotal::default();
    for c in calls {
        let (usd, source) = if new {
            (c.new_usd, c.new_source.as_str())
        } else {
            (c.old_usd, c.old_source.as_str())
        };
        if source != "none" {
            t.add_call(
                usd,
                Some(CostSource::parse(source).unwrap_or(CostSource::Table)),
            );
        }
    }
    t.rounded()
}

/// Prices `trace` again with `table`; `pricing` names the override file, if any.
pub fn reprice(trace: &Trace, table: &PriceTable, pricing: Option<&Path>) -> Reprice {
    let mut llm: Vec<&TraceSpan> = trace.spans.iter().filter(|s| s.is_llm()).collect();
    llm.sort_by_key(|s| (s.start_ns, s.end_ns));
    let calls: Vec<CallReprice> = llm.iter().map(|s| reprice_call(s, table)).collect();
    let mut by_node: IndexMap<&str, Vec<&CallReprice>> = IndexMap::new();
    for c in &calls {
        by_node.entry(c.node.as_str()).or_default().push(c);
    }
    let nodes: Vec<NodeReprice> = by_node
        .iter()
        .map(|(node, cs)| {
            let old = total(cs.iter().copied(), false).lower_bound_usd;
            let new = total(cs.iter().copied(), true).lower_bound_usd;
            NodeReprice {
                node: node.to_string(),
                model: joined(&cs.iter().map(|c| c.model.clone()).collect::<Vec<_>>()),
                old_usd: old,
                new_usd: new,
                delta_usd: round_usd(new - old),
                old_source: joined(&cs.iter().map(|c| c.old_source.clone()).collect::<Vec<_>>()),
                new_source: joined(&cs.iter().map(|c| c.new_source.clone()).collect::<Vec<_>>()),
            }
        })
        .collect();
    let old = total(&calls, false);
    let new = total(&calls, true);
    let unpriced = |f: &dyn Fn(&CallReprice) -> bool| {
        let mut v: Vec<String> = Vec::new();
        for c in calls.iter().filter(|c| f(c)) {
            if !v.contains(&c.model) {
                v.push(c.model.clone());
            }
        }
        v
    };
    let unpriced_before = unpriced(&|c| c.old_source == "unpriced");
    let unpriced_after = unpriced(&|c| c.new_source == "unpriced");
    Reprice {
        trace_id: trace.trace_id().to_string(),
        file: trace.path.display().to_string(),
        pricing: pricing.map(|p| p.display().to_string()),
        total: TotalReprice {
            old_usd: old.lower_bound_usd,
            new_usd: new.lower_bound_usd,
            delta_usd: round_usd(new.lower_bound_usd - old.lower_bound_usd),
            old_complete: old.complete,
            new_complete: new.complete,
        },
        calls,
        nodes,
        unpriced_before,
        unpriced_after,
    }
}

fn sources(old: &str, new: &str) -> String {
    if old == new {
        old.to_string()
    } else {
        format!("{old} → {new}")
    }
}

/// The text table: one row per node, then the total.
pub fn render(r: &Reprice, style: &show::Style) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {}  prices: {}",
        style.bold("reprice"),
        r.trace_id,
        match &r.pricing {
            Some(p) => format!("built-in table + overrides from {p}"),
            None => "built-in table".into(),
        }
    );
    if r.calls.is_empty() {
        let _ = writeln!(out, "no LLM calls in this trace");
        return out;
    }
    let nw = crate::format::column_width(r.nodes.iter().map(|n| n.node.as_str()), 5, 40);
    let mw = crate::format::column_width(r.nodes.iter().map(|n| n.model.as_str()), 5, 40);
    style.heading(
        &mut out,
        &format!(
            "{:<nw$}  {:<mw$}  {:>11}  {:>11}  {:>11}  SOURCE",
            "NODE", "MODEL", "OLD", "NEW", "DELTA"
        ),
    );
    for n in &r.nodes {
        let _ = writeln!(
            out,
            "{:<nw$}  {:<mw$}  {:>11}  {:>11}  {:>11}  {}",
            n.node,
            n.model,
            crate::format::usd(n.old_usd),
            crate::format::usd(n.new_usd),
            crate::format::usd_delta(n.delta_usd),
            sources(&n.old_source, &n.new_source)
        );
    }
    let mark = |complete: bool| if complete { "" } else { "+?" };
    let _ = writeln!(
        out,
        "{:<nw$}  {:<mw$}  {:>11}  {:>11}  {:>11}",
        style.bold("total"),
        "",
        format!(
            "{}{}",
            crate::format::usd(r.total.old_usd),
            mark(r.total.old_complete)
        ),
        format!(
            "{}{}",
            crate::format::usd(r.total.new_usd),
            mark(r.total.new_complete)
        ),
        crate::format::usd_delta(r.total.delta_usd),
    );
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    let _ = writeln!(
        out,
        "unpriced before: {} · after: {}",
        list(&r.unpriced_before),
        list(&r.unpriced_after)
    );
    let total = out.trim_end_matches(' ').len();
    out.truncate(total);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traces::parse;

    /// A one-span trace file line with the given string/int/double attributes.
    fn trace_of(attrs: &[(&str, serde_json::Value)]) -> Trace {
        let kvs: Vec<serde_json::Value> = attrs
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    serde_json::Value::String(s) => serde_json::json!({"stringValue": s}),
                    serde_json::Value::Number(n) if n.is_f64() => {
                        serde_json::json!({"doubleValue": n})
                    }
                    n => serde_json::json!({"intValue": n.to_string()}),
                };
                serde_json::json!({"key": k, "value": value})
            })
            .collect();
        let line = serde_json::json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
            "traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331",
            "name": "chat x", "kind": 3, "startTimeUnixNano": "1", "endTimeUnixNano": "2",
            "attributes": kvs}]}]}]});
        parse(&line.to_string(), Path::new("t.otlp.json")).unwrap()
    }

    fn llm(model: &str, source: &str, usd: f64) -> Vec<(&'static str, serde_json::Value)> {
        vec![
            (attr::GEN_AI_PROVIDER_NAME, "openai".into()),
            (attr::GEN_AI_REQUEST_MODEL, model.to_string().into()),
            (attr::USAGE_INPUT_TOKENS, 1000.into()),
            (attr::USAGE_OUTPUT_TOKENS, 500.into()),
            (attr::USAGE_CACHE_READ, 200.into()),
            (attr::USAGE_SOURCE, "provider".into()),
            (attr::COST_USD, serde_json::json!(usd)),
            (attr::COST_SOURCE, source.to_string().into()),
            (attr::LLM_NODE_PATH, "ask".into()),
        ]
    }

    #[test]
    fn same_prices_give_no_delta_and_overrides_apply() {
        let t = trace_of(&llm("gpt-4o", "table", 0.1));
        let table = PriceTable::builtin();
        let r = reprice(&t, table, None);
        let c = &r.calls[0];
        assert_eq!(c.new_source, "table");
        assert_eq!(c.new_price_key.as_deref(), Some("gpt-4o"));
        // 800 uncached × 2.5 + 200 × 1.25 + 500 × 10, per million.
        assert_eq!(c.new_usd, Some(0.00725));
        let (o, _) = PriceTable::with_overrides_str(r#"{"gpt-4o": {"output": 20}}"#, "o").unwrap();
        let r = reprice(&t, &o, Some(Path::new("o.json")));
        assert_eq!(r.calls[0].new_source, "override");
        assert_eq!(r.calls[0].new_usd, Some(0.01225));
        assert_eq!(r.nodes[0].old_usd, 0.1);
        assert_eq!(r.total.delta_usd, round_usd(0.01225 - 0.1));
        assert_eq!(r.pricing.as_deref(), Some("o.json"));
    }

    #[test]
    fn provider_costs_stay_unless_overridden() {
        let t = trace_of(&llm("gpt-4o", "provider", 0.5));
        let r = reprice(&t, PriceTable::builtin(), None);
        assert_eq!(r.calls[0].new_source, "provider");
        assert_eq!(r.calls[0].new_usd, Some(0.5));
        assert_eq!(r.total.delta_usd, 0.0);
        let (o, _) = PriceTable::with_overrides_str(r#"{"gpt-4o": {"input": 1}}"#, "o").unwrap();
        let r = reprice(&t, &o, None);
        assert_eq!(r.calls[0].new_source, "override");
    }

    #[test]
    fn unpriced_models_are_listed_before_and_after() {
        let mut a = llm("my-model", "unpriced", 0.0);
        a.retain(|(k, _)| *k != attr::COST_USD);
        let t = trace_of(&a);
        let r = reprice(&t, PriceTable::builtin(), None);
        assert_eq!(r.unpriced_before, ["my-model"]);
        assert_eq!(r.unpriced_after, ["my-model"]);
        assert!(!r.total.new_complete);
        let (o, _) =
            PriceTable::with_overrides_str(r#"{"my-model": {"input": 1, "output": 2}}"#, "o")
                .unwrap();
        let r = reprice(&t, &o, None);
        assert!(r.unpriced_after.is_empty());
        assert!(r.total.new_complete && !r.total.old_complete);
        // 800 × 1 + 200 × 1 (no cache price: input rate) + 500 × 2, per million.
        assert_eq!(r.calls[0].new_usd, Some(0.002));
        assert_eq!(r.calls[0].delta_usd, None, "no old cost to compare with");
    }

    #[test]
    fn deltas_are_signed() {
        assert_eq!(crate::format::usd_delta(0.00037), "+$0.000370");
        assert_eq!(crate::format::usd_delta(-0.000012), "-$0.000012");
        assert_eq!(crate::format::usd_delta(1e-12), "$0.000000");
    }
}
