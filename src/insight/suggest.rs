//! Suggestions from one trace, each with the numbers behind it; pflow
//! never applies one. A node that spent most of its time on failed attempts
//! and retry waits; a parallel batch held back by its `max_concurrent`; a
//! prompt prefix sent again and again that no call read from a cache.

use super::cache::MissedPrefix;
use super::critical::{BatchReport, Tree};
use crate::accounting::batch_of;
use crate::accounting::span::SpanKind;
use crate::format;
use crate::telemetry::attr;
use crate::traces::{AttrValue, TraceSpan};
use indexmap::IndexMap;
use serde::Serialize;

/// What a suggestion is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SuggestionKind {
    /// Most of a node's time went to failed attempts and waits between them.
    RetryWait,
    /// A parallel batch ran at its `max_concurrent` with items queued.
    BatchConcurrencyCap,
    /// A repeated prompt prefix was never read from a cache.
    UncachedPrefix,
    /// The history shows a cheaper model on the same node with similar output
    /// (`pflow stats suggest`, shown beside the trace's own).
    CheaperModel,
    /// The history shows the node's `max_tokens` far above what it used.
    MaxTokens,
}

impl Suggestion {
    /// The evidence as text: `items 4 · max_concurrent 2 · wall 1.65 s · …`.
    pub fn evidence_text(&self) -> String {
        self.evidence
            .iter()
            .map(|(k, v)| {
                if let Some(name) = k.strip_suffix("_ms") {
                    format!("{name} {}", format::duration_ms(*v))
                } else if k.ends_with("_usd") {
                    format!("{k} {}", format::usd(*v))
                } else if k.ends_with("share") {
                    format!("{k} {}", crate::format::percent(*v))
                } else {
                    format!("{k} {v}")
                }
            })
            .collect::<Vec<_>>()
            .join(" · ")
    }
}

impl SuggestionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SuggestionKind::RetryWait => "retry_wait",
            SuggestionKind::BatchConcurrencyCap => "batch_concurrency_cap",
            SuggestionKind::UncachedPrefix => "uncached_prefix",
            SuggestionKind::CheaperModel => "cheaper_model",
            SuggestionKind::MaxTokens => "max_tokens",
        }
    }
}

/// One suggestion: what, where, why, and the numbers it rests on.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Suggestion {
    pub kind: SuggestionKind,
    /// The node path it concerns.
    pub node: String,
    pub message: String,
    /// The figures behind it, by name (`*_ms`, `*_usd`, counts, shares 0–1).
    pub evidence: IndexMap<&'static str, f64>,
}

/// A node is reported when at least this share of its time went to retries.
pub const RETRY_SHARE: f64 = 0.5;

/// ... and when those retries took at least this share of the run's wall
/// time (a few ms of retries in a long run are not worth a line).
pub const RETRY_RUN_SHARE: f64 = 0.05;

/// A batch is reported when its wall time is at least this multiple of its
/// slowest item (what it could approach with enough slots).
pub const CAP_SLOWDOWN: f64 = 1.2;

#[derive(Default)]
struct Retries {
    attempts: u64,
    retries: u64,
    wall_ns: u64,
    retry_ns: u64,
    llm_retries: u64,
}

/// Per node (batch items under their batch): attempts, and the time from
/// the first attempt's start to the last's (failed attempts and waits),
/// plus inside the last attempt each failed LLM attempt and its wait.
fn retries(tree: &Tree) -> IndexMap<String, Retries> {
    let mut attempts: IndexMap<&str, Vec<&TraceSpan>> = IndexMap::new();
    let mut llm: IndexMap<&str, Vec<&TraceSpan>> = IndexMap::new();
    let mut spans = tree.spans.clone();
    spans.sort_by_key(|s| s.start_ns);
    for s in spans {
        match tree.kind(s) {
            SpanKind::Node | SpanKind::BatchItem => {
                if let Some(p) = s.str_attr(attr::NODE_PATH) {
                    attempts.entry(p).or_default().push(s);
                }
            }
            SpanKind::LlmCall => {
                if let Some(p) = s.str_attr(attr::LLM_NODE_PATH) {
                    llm.entry(p).or_default().push(s);
                }
            }
            _ => {}
        }
    }
    let mut out: IndexMap<String, Retries> = IndexMap::new();
    for (path, a) in attempts {
        let (Some(first), Some(last)) = (a.first(), a.last()) else {
            continue;
        };
        let end = a.iter().map(|s| s.end_ns).max().unwrap_or(last.end_ns);
        let mut retry_ns = last.start_ns.saturating_sub(first.start_ns);
        let mut llm_retries = 0;
        for c in llm.get(path).into_iter().flatten() {
            if c.start_ns < last.start_ns {
                continue;
            }
            for e in c.events.iter().filter(|e| e.name == attr::EVENT_LLM_RETRY) {
                llm_retries += 1;
                let wait = crate::traces::get(&e.attributes, attr::LLM_WAIT_S)
                    .and_then(AttrValue::as_f64)
                    .filter(|w| w.is_finite() && *w > 0.0)
                    .unwrap_or(0.0);
                retry_ns += c.duration().as_nanos() as u64 + (wait * 1e9) as u64;
            }
        }
        let key = batch_of(path).unwrap_or(path).to_string();
        let r = out.entry(key).or_default();
        r.attempts += a.len() as u64;
        r.retries += a.len() as u64 - 1;
        r.llm_retries += llm_retries;
        r.wall_ns += end.saturating_sub(first.start_ns);
        r.retry_ns += retry_ns.min(end.saturating_sub(first.start_ns));
    }
    out
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

pub(crate) fn suggest(
    tree: &Tree,
    run_wall_ms: f64,
    batches: &[BatchReport],
    missed: &[MissedPrefix],
) -> Vec<Suggestion> {
    let mut out = Vec::new();
    for (node, r) in retries(tree) {
        if r.retries + r.llm_retries == 0 || r.wall_ns == 0 {
            continue;
        }
        let share = r.retry_ns as f64 / r.wall_ns as f64;
        if share < RETRY_SHARE || ms(r.retry_ns) < run_wall_ms * RETRY_RUN_SHARE {
            continue;
        }
        let mut what = Vec::new();
        if r.retries > 0 {
            what.push(format::count(r.retries, "node retry"));
        }
        if r.llm_retries > 0 {
            what.push(format::count(r.llm_retries, "LLM retry"));
        }
        out.push(Suggestion {
            kind: SuggestionKind::RetryWait,
            message: format!(
                "node `{node}` spent {} of its {} ({}) on failed attempts and the waits between them ({}): \
                 fix what fails on the first attempt, or shorten `wait` if the failures are brief",
                format::duration_ms(ms(r.retry_ns)),
                format::duration_ms(ms(r.wall_ns)),
                crate::format::percent(share),
                what.join(", "),
            ),
            node,
            evidence: IndexMap::from([
                ("attempts", r.attempts as f64),
                ("node_retries", r.retries as f64),
                ("llm_retries", r.llm_retries as f64),
                ("retry_ms", ms(r.retry_ns)),
                ("wall_ms", ms(r.wall_ns)),
                ("retry_share", share),
                ("run_share", ms(r.retry_ns) / run_wall_ms.max(f64::MIN_POSITIVE)),
            ]),
        });
    }
    for b in batches {
        let Some(cap) = b.max_concurrent else {
            continue;
        };
        if !b.parallel
            || b.concurrency_reached < cap
            || b.items_queued == 0
            || b.items <= cap
            || b.slowest_item_ms <= 0.0
            || b.wall_ms < b.slowest_item_ms * CAP_SLOWDOWN
        {
            continue;
        }
        out.push(Suggestion {
            kind: SuggestionKind::BatchConcurrencyCap,
            message: format!(
                "batch `{}` ran {} at its max_concurrent of {cap} and {} waited for a slot: it took {}, \
                 its slowest item {}; a higher max_concurrent could bring it toward that (mind provider rate limits)",
                b.node,
                format::count(b.items, "item"),
                format::count(b.items_queued, "item"),
                format::duration_ms(b.wall_ms),
                format::duration_ms(b.slowest_item_ms),
            ),
            node: b.node.clone(),
            evidence: IndexMap::from([
                ("items", b.items as f64),
                ("max_concurrent", cap as f64),
                ("concurrency_reached", b.concurrency_reached as f64),
                ("items_queued", b.items_queued as f64),
                ("wall_ms", b.wall_ms),
                ("slowest_item_ms", b.slowest_item_ms),
            ]),
        });
    }
    for p in missed {
        out.push(Suggestion {
            kind: SuggestionKind::UncachedPrefix,
            node: p.nodes.join(", "),
            message: format!(
                "{} to `{}` sent the same ~{}-token prefix and none read it from a cache: caching it \
                 (a stable prefix first; `cache_control` on Anthropic) would have cost {} instead of {}, saving {}",
                format::count(p.calls, "call"),
                p.model,
                format::thousands(p.prefix_tokens),
                format::usd(p.cached_cost_usd),
                format::usd(p.cost_usd),
                format::usd(p.would_save_usd),
            ),
            evidence: IndexMap::from([
                ("calls", p.calls as f64),
                ("prefix_tokens", p.prefix_tokens as f64),
                ("cost_usd", p.cost_usd),
                ("cached_cost_usd", p.cached_cost_usd),
                ("would_save_usd", p.would_save_usd),
            ]),
        });
    }
    out
}

/// A history suggestion in the trace's terms: its sentence and its figures
/// (`history::suggest` decides; this only re-labels, so the two never differ).
impl From<&crate::history::suggest::Suggestion> for Suggestion {
    fn from(h: &crate::history::suggest::Suggestion) -> Self {
        use crate::history::suggest::Suggestion as H;
        let mut evidence = IndexMap::new();
        let kind = match h {
            H::CheaperModel {
                current,
                alternative,
                saving_per_call_usd,
                saving_share,
                ..
            } => {
                if let Some(c) = current.cost_per_call_usd {
                    evidence.insert("current_cost_per_call_usd", c);
                }
                if let Some(a) = alternative.cost_per_call_usd {
                    evidence.insert("alternative_cost_per_call_usd", a);
                }
                evidence.insert("current_calls", current.calls as f64);
                evidence.insert("alternative_calls", alternative.calls as f64);
                evidence.insert("saving_per_call_usd", *saving_per_call_usd);
                evidence.insert("saving_share", *saving_share);
                SuggestionKind::CheaperModel
            }
            H::MaxTokens {
                max_tokens,
                calls,
                output_tokens_max,
                output_tokens_p95,
                suggested_max_tokens,
                ..
            } => {
                evidence.insert("max_tokens", *max_tokens as f64);
                evidence.insert("calls", *calls as f64);
                evidence.insert("output_tokens_max", *output_tokens_max as f64);
                evidence.insert("output_tokens_p95", *output_tokens_p95 as f64);
                evidence.insert("suggested_max_tokens", *suggested_max_tokens as f64);
                SuggestionKind::MaxTokens
            }
        };
        Suggestion {
            kind,
            node: h.node().to_string(),
            message: h.message(),
            evidence,
        }
    }
}
