//! Prompt-cache effectiveness of one run, per LLM node and per model: the
//! hit rate (cache reads over input tokens), the tokens read from and
//! written to the cache, what the reads saved and what the writes cost —
//! and prompts sent again and again that were never read from a cache,
//! with what caching them would save at the model's own cache prices.
//!
//! Token counts and savings come from the accounting model's per-node and
//! per-model [`Usage`]; every amount this module computes itself (what the
//! writes cost, what a missed prefix would save) is a difference of two
//! calls priced by [`crate::pricing::cost`], the one place rates are picked.

use crate::accounting::{batch_of, Tokens, Usage};
use crate::llm::Provider;
use crate::pricing::{ModelPrice, PriceTable};
use crate::telemetry::attr;
use crate::telemetry::metrics::MetricsSummary;
use crate::traces::{reprice, show, TraceSpan};
use indexmap::IndexMap;
use serde::Serialize;

/// Providers cache a prompt prefix only from this many tokens (OpenAI's
/// automatic caching and Anthropic's smallest `cache_control` block; some
/// models need more): a shorter repeated prefix is not reported.
pub const MIN_CACHEABLE_TOKENS: u64 = 1024;

/// The cache figures of one scope (a node, a model, the run).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CacheFigures {
    pub llm_calls: u64,
    pub input_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    /// Cache reads over input tokens; `None` without input.
    pub hit_rate: Option<f64>,
    /// What the cache reads saved against the uncached input price.
    pub saved_usd: f64,
    /// What the cache writes cost; `None` when some write had no known price.
    pub write_cost_usd: Option<f64>,
    /// What the writes cost above the same tokens as plain input (the
    /// write premium); `None` when unknown.
    pub write_premium_usd: Option<f64>,
}

impl CacheFigures {
    fn from_usage(u: &Usage) -> CacheFigures {
        let t = &u.tokens;
        CacheFigures {
            llm_calls: u.llm_calls,
            input_tokens: t.input,
            cache_read_tokens: t.cache_read,
            cache_write_tokens: t.cache_write,
            hit_rate: (t.input > 0).then(|| t.cache_read as f64 / t.input as f64),
            saved_usd: u.cache_savings_usd,
            write_cost_usd: Some(0.0),
            write_premium_usd: Some(0.0),
        }
    }

    fn add_writes(&mut self, w: Option<(f64, f64)>) {
        match w {
            Some((cost, premium)) => {
                self.write_cost_usd = self.write_cost_usd.map(|c| c + cost);
                self.write_premium_usd = self.write_premium_usd.map(|c| c + premium);
            }
            None => {
                self.write_cost_usd = None;
                self.write_premium_usd = None;
            }
        }
    }

    /// Any cache traffic at all.
    pub fn used(&self) -> bool {
        self.cache_read_tokens > 0 || self.cache_write_tokens > 0
    }
}

/// A prompt prefix several calls sent and no call read from a cache.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MissedPrefix {
    pub model: String,
    /// The nodes whose calls sent it.
    pub nodes: Vec<String>,
    pub calls: u64,
    /// The prefix's tokens (counted with pflow's tokenizer, at most the
    /// smallest input any of the calls reported).
    pub prefix_tokens: u64,
    /// Its start, for recognising it.
    pub preview: String,
    /// The calls' cost as made.
    pub cost_usd: f64,
    /// The calls' cost had the first written the prefix to the cache and
    /// the others read it, at the model's cache prices.
    pub cached_cost_usd: f64,
    /// `cost_usd - cached_cost_usd`.
    pub would_save_usd: f64,
    /// The price-table entry the prices came from.
    pub price_key: String,
}

/// The run's cache effectiveness.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CacheReport {
    pub total: CacheFigures,
    /// LLM nodes (batch items under their batch), in run order.
    pub by_node: IndexMap<String, CacheFigures>,
    pub by_model: IndexMap<String, CacheFigures>,
    pub missed_prefixes: Vec<MissedPrefix>,
}

/// The price a call was (or would be) charged by: the entry named in
/// `pflow.cost.price_key`, else the policy's pick for its model.
fn call_price(s: &TraceSpan, table: &PriceTable) -> Option<(String, ModelPrice)> {
    if let Some(p) = s
        .str_attr(attr::COST_PRICE_KEY)
        .and_then(|k| table.lookup(k, None))
    {
        return Some((p.key, p.price));
    }
    let model = s.str_attr(attr::GEN_AI_REQUEST_MODEL)?;
    let prefix = s
        .str_attr(attr::GEN_AI_PROVIDER_NAME)
        .and_then(Provider::from_semconv_name)
        .and_then(|p| p.pricing().prefix);
    let p = table.resolve(model, s.str_attr(attr::GEN_AI_RESPONSE_MODEL), prefix)?;
    Some((p.key, p.price))
}

/// What a call's cache writes cost and their premium over plain input:
/// `Some((0, 0))` without writes or for a free call, `None` when its writes
/// have no known price.
fn write_cost(s: &TraceSpan, t: &Tokens, table: &PriceTable) -> Option<(f64, f64)> {
    if t.cache_write == 0 {
        return Some((0.0, 0.0));
    }
    match s.str_attr(attr::COST_SOURCE) {
        Some("free") | Some("local") | Some("not_billed") => return Some((0.0, 0.0)),
        Some("table") | Some("override") => {}
        // A provider-billed, unpriced or unknown call: its rates are not known here.
        _ => return None,
    }
    let (_, price) = call_price(s, table)?;
    let as_made = crate::pricing::cost(t, &price);
    let plain = Tokens {
        cache_write: 0,
        cache_write_1h: 0,
        ..*t
    };
    let premium = as_made.total_usd - crate::pricing::cost(&plain, &price).total_usd;
    Some((as_made.cache_write_usd, premium))
}

/// The LLM node a call counts for, batch items under their batch.
fn call_scope(s: &TraceSpan) -> String {
    let n = reprice::call_node(s);
    batch_of(&n).map(str::to_string).unwrap_or(n)
}

/// Cache effectiveness from the run's metrics (tokens and savings) and its
/// LLM call spans (write prices, prompts).
pub(crate) fn analyze(
    tree: &super::critical::Tree,
    m: &MetricsSummary,
    table: &PriceTable,
) -> CacheReport {
    let mut r = CacheReport::default();
    let mut all = Usage::default();
    for u in m.models.values() {
        all.add(u);
    }
    r.total = CacheFigures::from_usage(&all);
    for (node, u) in m
        .workflow
        .node_usage
        .iter()
        .chain(m.planner.iter().flat_map(|p| p.node_usage.iter()))
    {
        r.by_node.insert(node.clone(), CacheFigures::from_usage(u));
    }
    for (model, u) in &m.models {
        r.by_model
            .insert(model.clone(), CacheFigures::from_usage(u));
    }
    let calls: Vec<&TraceSpan> = tree
        .spans
        .iter()
        .copied()
        .filter(|s| tree.kind(s) == crate::accounting::span::SpanKind::LlmCall)
        .collect();
    // In call order: the first call of a repeated prefix is the one that would write it.
    let mut calls = calls;
    calls.sort_by_key(|s| s.start_ns);
    for s in &calls {
        let t = reprice::span_usage(s).counts();
        let w = write_cost(s, &t, table);
        r.total.add_writes(w);
        if let Some(f) = r.by_node.get_mut(&call_scope(s)) {
            f.add_writes(w);
        }
        let model = s.str_attr(attr::GEN_AI_REQUEST_MODEL).unwrap_or("unknown");
        if let Some(f) = r.by_model.get_mut(model) {
            f.add_writes(w);
        }
    }
    r.missed_prefixes = missed_prefixes(&calls, table);
    r
}

/// The text of a message attribute (system instructions or input messages).
fn text(s: &TraceSpan, key: &str) -> String {
    s.str_attr(key).map(show::message_text).unwrap_or_default()
}

fn common_prefix<'a>(a: &'a str, b: &str) -> &'a str {
    let n = a
        .char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or(a.len().min(b.len()), |((i, _), _)| i);
    // `n` is a char boundary of `a`: either a found index or the shorter length.
    let n = (0..=n).rev().find(|i| a.is_char_boundary(*i)).unwrap_or(0);
    &a[..n]
}

/// Calls of one model that sent the same system prompt (or, without one,
/// calls of one node) and never read from a cache: the prompt they share
/// is a prefix caching would have served from the second call on.
fn missed_prefixes(calls: &[&TraceSpan], table: &PriceTable) -> Vec<MissedPrefix> {
    struct Group<'a> {
        calls: Vec<&'a TraceSpan>,
        system: String,
        user_prefix: Option<String>,
    }
    let mut groups: IndexMap<(String, String, String), Group> = IndexMap::new();
    for s in calls {
        let system = text(s, attr::GEN_AI_SYSTEM_INSTRUCTIONS);
        let user = text(s, attr::GEN_AI_INPUT_MESSAGES);
        if system.is_empty() && user.is_empty() {
            continue;
        }
        let model = s
            .str_attr(attr::GEN_AI_REQUEST_MODEL)
            .unwrap_or("unknown")
            .to_string();
        let scope = if system.is_empty() {
            call_scope(s)
        } else {
            String::new()
        };
        let g = groups
            .entry((model, system.clone(), scope))
            .or_insert_with(|| Group {
                calls: Vec::new(),
                system,
                user_prefix: None,
            });
        g.user_prefix = Some(match g.user_prefix.take() {
            None => user,
            Some(p) => common_prefix(&p, &user).to_string(),
        });
        g.calls.push(s);
    }
    let mut out = Vec::new();
    for ((model, _, _), g) in groups {
        if g.calls.len() < 2 {
            continue;
        }
        let usages: Vec<Tokens> = g
            .calls
            .iter()
            .map(|s| reprice::span_usage(s).counts())
            .collect();
        if usages.iter().any(|t| t.cache_read > 0) {
            continue;
        }
        let user_prefix = g.user_prefix.unwrap_or_default();
        let counted = crate::llm::count_tokens(&g.system).unwrap_or(0)
            + crate::llm::count_tokens(&user_prefix).unwrap_or(0);
        let smallest_input = usages.iter().map(|t| t.input).min().unwrap_or(0);
        let prefix = counted.min(smallest_input);
        if prefix < MIN_CACHEABLE_TOKENS {
            continue;
        }
        let priced = g
            .calls
            .iter()
            .all(|s| matches!(s.str_attr(attr::COST_SOURCE), Some("table" | "override")));
        let Some((key, price)) = g.calls.first().and_then(|s| call_price(s, table)) else {
            continue;
        };
        if !priced {
            continue;
        }
        let (mut as_made, mut cached) = (0.0, 0.0);
        for (i, t) in usages.iter().enumerate() {
            as_made += crate::pricing::cost(t, &price).total_usd;
            // The first call writes the prefix, the others read it (what
            // was already written stays written).
            let mut c = *t;
            if i == 0 {
                c.cache_write = c.cache_write.max(prefix);
            } else {
                c.cache_read = prefix;
                c.cache_write = c.cache_write.min(c.input.saturating_sub(prefix));
                c.cache_write_1h = c.cache_write_1h.min(c.cache_write);
            }
            cached += crate::pricing::cost(&c, &price).total_usd;
        }
        let save = crate::accounting::round_usd(as_made - cached);
        if save <= 0.0 {
            continue;
        }
        let mut nodes: Vec<String> = Vec::new();
        for s in &g.calls {
            let n = call_scope(s);
            if !nodes.contains(&n) {
                nodes.push(n);
            }
        }
        let source = if g.system.is_empty() {
            &user_prefix
        } else {
            &g.system
        };
        let mut preview: String = source.chars().take(60).collect();
        if source.chars().count() > 60 {
            preview.push('…');
        }
        out.push(MissedPrefix {
            model,
            nodes,
            calls: g.calls.len() as u64,
            prefix_tokens: prefix,
            preview: preview.replace('\n', " "),
            cost_usd: crate::accounting::round_usd(as_made),
            cached_cost_usd: crate::accounting::round_usd(cached),
            would_save_usd: save,
            price_key: key,
        });
    }
    out.sort_by(|a, b| b.would_save_usd.total_cmp(&a.would_save_usd));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_prefixes_stop_at_characters() {
        assert_eq!(common_prefix("Item 1", "Item 2"), "Item ");
        assert_eq!(common_prefix("abc", "abcdef"), "abc");
        assert_eq!(common_prefix("日本語", "日本人"), "日本");
        assert_eq!(common_prefix("", "x"), "");
    }

    #[test]
    fn write_premium_comes_from_the_model_prices() {
        let t = PriceTable::builtin();
        let price = t.lookup("claude-sonnet-4-5", Some("anthropic")).unwrap();
        let tokens = Tokens {
            input: 1532,
            output: 33,
            cache_read: 1111,
            cache_write: 418,
            ..Default::default()
        };
        let c = crate::pricing::cost(&tokens, &price.price);
        // 418 tokens at 3.75 instead of 3.00 per million.
        assert!((c.cache_write_usd - 418.0 * 3.75e-6).abs() < 1e-12);
    }
}
