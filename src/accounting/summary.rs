//! The one aggregation: finished spans folded into the run's metrics summary
//! (the `metrics` object of `--output-format json`), in any order. It keeps
//! aggregates, never span copies. The JSON shape is a wire format with a
//! `schema_version`.

use super::span::{SpanFacts, SpanKind};
use super::{batch_of, round_usd, CostTotal, Reused, Tokens, Usage};
use indexmap::IndexMap;
use serde::Serialize;
use std::time::{Duration, SystemTime};

/// One section (`workflow` or `planner`) of the summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SectionMetrics {
    pub duration_ms: f64,
    /// Node executions, top level and nested (a batch node once; retries not counted).
    pub nodes_executed: u64,
    /// Batch items run, counted apart from the nodes.
    pub batch_items: u64,
    /// The section's LLM calls, tokens and cost (`cost_usd` null when some
    /// call had no known price, `cost_usd_lower_bound`, `cost_complete`).
    #[serde(flatten)]
    pub usage: Usage,
    /// Wall time per node path (`id`, `parent/child`, `id[3]`), summed over attempts.
    pub node_timings: IndexMap<String, f64>,
    /// LLM calls, tokens and cost per node path (nodes that called an LLM);
    /// a batch node's entry sums its items, which are listed under it.
    pub node_usage: IndexMap<String, Usage>,
    /// Planner only: `A` (a saved workflow reused) or `B` (a new one generated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_taken: Option<String>,
    /// Planner only: workflow generation attempts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u64>,
    /// Planner only: ms per planning step (attempts summed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_timings: Option<IndexMap<String, f64>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TotalMetrics {
    pub duration_ms: f64,
    pub llm_calls: u64,
    pub tokens_total: u64,
    #[serde(flatten)]
    pub cost: CostTotal,
    /// What cache reads saved across sections, in USD.
    pub cache_savings_usd: f64,
    /// Only when nodes were restored or cached: the work reused, beside what this run spent.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub reused: Option<ReusedTotal>,
}

/// `total.reused_llm_calls`, `total.reused_tokens_total`, `total.cost_reused_usd`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ReusedTotal {
    pub reused_llm_calls: u64,
    pub reused_tokens_total: u64,
    /// What the reused calls cost when first made; null when any of them is unknown.
    pub cost_reused_usd: Option<f64>,
}

/// `metrics.reused`: nodes restored from a checkpoint or served from the
/// memo cache, and the LLM work they did not repeat.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReusedMetrics {
    pub nodes_restored: u64,
    pub nodes_cached: u64,
    pub llm_calls: u64,
    pub tokens: Tokens,
    /// What those calls cost when first made; null when any was unpriced or unknown.
    pub cost_reused_usd: Option<f64>,
    /// Per node path: how it was reused, from which run, and what it reused.
    pub nodes: IndexMap<String, ReusedNode>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReusedNode {
    /// `restored` or `cached`.
    pub status: String,
    pub origin_run_id: Option<String>,
    pub llm_calls: u64,
    pub tokens_total: u64,
    pub cost_reused_usd: Option<f64>,
}

/// The `metrics` object of `--output-format json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MetricsSummary {
    pub schema_version: u32,
    pub workflow: SectionMetrics,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub planner: Option<SectionMetrics>,
    pub total: TotalMetrics,
    /// Usage per model (as requested), across sections.
    pub models: IndexMap<String, Usage>,
    /// Models called without a known price (their cost is null, not 0).
    pub unpriced_models: Vec<String>,
    /// The run's budget, when `--max-cost` or `--max-tokens-total` was set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetMetrics>,
    /// Only when nodes were restored or cached (see [`ReusedMetrics`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reused: Option<ReusedMetrics>,
    /// Every LLM call attempt, in the order they ended: what the run history
    /// keeps per call (latency percentiles, per-node suggestions). Not part
    /// of the JSON summary; at most [`CALL_RECORD_LIMIT`] of them.
    #[serde(skip)]
    pub calls: Vec<CallRecord>,
}

/// A run keeps at most this many per-call records (a few dozen bytes each),
/// so a huge fan-out cannot grow the aggregation without bound; the usage
/// totals still count every call.
pub const CALL_RECORD_LIMIT: usize = 100_000;

/// One LLM call attempt, as the run history records it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallRecord {
    /// `workflow` or `planner`.
    pub section: String,
    /// The node the call was made for (`each[3]/ask`), when known.
    pub node_path: Option<String>,
    /// The model as requested.
    pub model: String,
    /// The attempt's wall time.
    pub duration_ms: f64,
    pub tokens: Tokens,
    /// Null when the call had no known price.
    pub cost_usd: Option<f64>,
    /// Where the token counts came from (`pflow.usage.source`: `provider`,
    /// `provider_stream`, `estimated`, `unknown`); `None` when not recorded.
    pub usage_source: Option<String>,
    /// The request's `max_tokens`, when the node set one.
    pub max_tokens: Option<u64>,
    /// Streaming: time to the first chunk.
    pub time_to_first_chunk_ms: Option<f64>,
    /// The attempt failed (its span has an error status or `error.type`).
    pub failed: bool,
}

/// `metrics.budget`: the limits, what was spent, and where the guard stopped
/// the run (read from the root span's `pflow.budget.*` attributes).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BudgetMetrics {
    pub max_cost_usd: Option<f64>,
    pub max_tokens_total: Option<u64>,
    pub spent_usd: f64,
    pub tokens_used: u64,
    /// A limit stopped the run (a call refused, or actual spend past it).
    pub exceeded: bool,
    /// `before_call` or `after_call`.
    pub stopped: Option<String>,
    /// The node whose call was refused or crossed the limit (null: the planner).
    pub node: Option<String>,
    pub model: Option<String>,
    pub next_call_estimate_usd: Option<f64>,
    pub next_call_estimate_tokens: Option<u64>,
    /// `max_cost`, `max_tokens_total` or `unpriced_model` (null when not stopped).
    pub reason: Option<String>,
    pub allow_unpriced: bool,
}

impl SectionMetrics {
    /// The usage of the node at `path`: a node's entry, or a batch item's
    /// entry under its batch node.
    pub fn usage_of(&self, path: &str) -> Option<&Usage> {
        self.node_usage.get(path).or_else(|| {
            batch_of(path)
                .and_then(|b| self.node_usage.get(b))
                .and_then(|b| b.items.get(path))
        })
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

#[derive(Debug, Default)]
struct SectionAgg {
    duration: Option<Duration>,
    nodes_executed: u64,
    batch_items: u64,
    usage: Usage,
    /// path -> (first start, summed duration)
    timings: Timings,
    node_usage: IndexMap<String, Usage>,
    path: Option<String>,
    attempts: Option<u64>,
    steps: Timings,
}

/// Per-node (or per-step) first start and summed duration, under a seeded
/// fast hasher: filled once per node, where SipHash was a measurable share.
type Timings = IndexMap<String, (SystemTime, Duration), foldhash::fast::RandomState>;

fn add_timing(map: &mut Timings, key: &str, start: Option<SystemTime>, d: Duration) {
    let start = start.unwrap_or(SystemTime::UNIX_EPOCH);
    let e = map
        .entry(key.to_string())
        .or_insert((start, Duration::ZERO));
    e.0 = e.0.min(start);
    e.1 += d;
}

fn by_start(map: &Timings) -> IndexMap<String, f64> {
    let mut v: Vec<_> = map.iter().collect();
    v.sort_by_key(|(_, (start, _))| *start);
    v.into_iter()
        .map(|(k, (_, d))| (k.clone(), ms(*d)))
        .collect()
}

/// Per-node usage with batch items rolled up under their batch node.
pub fn roll_up(flat: &IndexMap<String, Usage>) -> IndexMap<String, Usage> {
    let mut out: IndexMap<String, Usage> = IndexMap::new();
    for (path, u) in flat {
        match batch_of(path) {
            Some(batch) => {
                let e = out.entry(batch.to_string()).or_default();
                e.add(u);
                *e.batch_items.get_or_insert(0) += 1;
                e.items.insert(path.clone(), u.rounded());
            }
            None => out.entry(path.clone()).or_default().add(u),
        }
    }
    out.values()
        .map(Usage::rounded)
        .zip(out.keys().cloned())
        .map(|(u, k)| (k, u))
        .collect()
}

/// Running aggregates; fed one span at a time, in any order.
#[derive(Debug, Default)]
pub struct Aggregator {
    run: Option<Duration>,
    workflow: SectionAgg,
    planner: Option<SectionAgg>,
    models: IndexMap<String, Usage>,
    unpriced: Vec<String>,
    budget: Option<BudgetMetrics>,
    reused: Option<ReusedMetrics>,
    calls: Vec<CallRecord>,
}

impl Aggregator {
    pub fn add(&mut self, f: &SpanFacts) {
        let kind = f.kind();
        if kind == SpanKind::Run {
            self.run = Some(f.duration);
            if f.budget.is_some() {
                self.budget = f.budget.clone();
            }
            return;
        }
        let section = match f.section.as_deref() {
            Some("planner") => self.planner.get_or_insert_with(Default::default),
            _ => &mut self.workflow,
        };
        match kind {
            SpanKind::Workflow if f.workflow_depth == Some(0) => {
                section.duration = Some(f.duration)
            }
            SpanKind::Planner => {
                section.duration = Some(f.duration);
                section.path = f.planner_path.clone();
                section.attempts = f.planner_attempts.map(|a| a.max(0) as u64);
            }
            SpanKind::PlannerStep => {
                if let Some(step) = &f.planner_step {
                    add_timing(&mut section.steps, step, f.start, f.duration);
                }
            }
            SpanKind::Node if f.reuse_status().is_some() => self.add_reused(f),
            SpanKind::Node | SpanKind::Batch | SpanKind::BatchItem => {
                if f.attempt == 1 {
                    if kind == SpanKind::BatchItem {
                        section.batch_items += 1;
                    } else {
                        section.nodes_executed += 1;
                    }
                }
                if let Some(path) = &f.node_path {
                    add_timing(&mut section.timings, path, f.start, f.duration);
                }
            }
            SpanKind::LlmCall => {
                let call = f.call_usage();
                section.usage.add_call(&call);
                if let Some(p) = f.llm_node_path.as_deref().filter(|p| !p.is_empty()) {
                    section
                        .node_usage
                        .entry(p.to_string())
                        .or_default()
                        .add_call(&call);
                }
                let model = f.model.clone().unwrap_or_else(|| "unknown".into());
                if f.unpriced && !self.unpriced.contains(&model) {
                    self.unpriced.push(model.clone());
                }
                if self.calls.len() < CALL_RECORD_LIMIT {
                    self.calls.push(CallRecord {
                        section: f.section.clone().unwrap_or_else(|| "workflow".into()),
                        node_path: f.llm_node_path.clone().filter(|p| !p.is_empty()),
                        model: model.clone(),
                        duration_ms: ms(f.duration),
                        tokens: call.tokens,
                        cost_usd: f.cost_usd.filter(|_| !f.unpriced),
                        usage_source: f.usage_source.clone(),
                        max_tokens: f.request_max_tokens,
                        time_to_first_chunk_ms: f.time_to_first_chunk.map(|s| s * 1000.0),
                        failed: f.failed || f.error_type.is_some(),
                    });
                }
                self.models.entry(model).or_default().add_call(&call);
            }
            _ => {}
        }
    }

    /// A restored or cached node: counted apart, never as work this run did.
    fn add_reused(&mut self, f: &SpanFacts) {
        let r = self.reused.get_or_insert_with(|| ReusedMetrics {
            cost_reused_usd: Some(0.0),
            ..Default::default()
        });
        let status = f.reuse_status().unwrap_or_default().to_string();
        if status == super::span::STATUS_CACHED {
            r.nodes_cached += 1;
        } else {
            r.nodes_restored += 1;
        }
        // No reused usage recorded (telemetry was off when it ran): its cost is unknown.
        let u = f.reused.unwrap_or(Reused {
            cost_usd: None,
            ..Default::default()
        });
        let mut sum = Reused {
            llm_calls: r.llm_calls,
            tokens: r.tokens,
            cost_usd: r.cost_reused_usd,
        };
        sum.add(&u);
        r.llm_calls = sum.llm_calls;
        r.tokens = sum.tokens;
        r.cost_reused_usd = sum.cost_usd;
        if let Some(path) = &f.node_path {
            r.nodes.insert(
                path.clone(),
                ReusedNode {
                    status,
                    origin_run_id: f.origin_run_id.clone(),
                    llm_calls: u.llm_calls,
                    tokens_total: u.tokens.input + u.tokens.output,
                    cost_reused_usd: u.cost_usd.map(round_usd),
                },
            );
        }
    }

    fn section(agg: &SectionAgg) -> SectionMetrics {
        SectionMetrics {
            duration_ms: ms(agg.duration.unwrap_or_default()),
            nodes_executed: agg.nodes_executed,
            batch_items: agg.batch_items,
            usage: agg.usage.rounded(),
            node_timings: by_start(&agg.timings),
            node_usage: roll_up(&agg.node_usage),
            path_taken: agg.path.clone(),
            attempts: agg.attempts,
            step_timings: (!agg.steps.is_empty()).then(|| by_start(&agg.steps)),
        }
    }

    pub fn summary(&self) -> MetricsSummary {
        let workflow = Self::section(&self.workflow);
        let planner = self.planner.as_ref().map(Self::section);
        let p = planner.as_ref();
        let section_sum = workflow.duration_ms + p.map_or(0.0, |p| p.duration_ms);
        let mut all = workflow.usage.clone();
        if let Some(p) = p {
            all.add(&p.usage);
        }
        MetricsSummary {
            schema_version: 1,
            total: TotalMetrics {
                duration_ms: self.run.map(ms).unwrap_or(section_sum),
                llm_calls: all.llm_calls,
                tokens_total: all.tokens.total,
                cost: all.cost.rounded(),
                cache_savings_usd: round_usd(all.cache_savings_usd),
                reused: self.reused.as_ref().map(|r| ReusedTotal {
                    reused_llm_calls: r.llm_calls,
                    reused_tokens_total: r.tokens.input + r.tokens.output,
                    cost_reused_usd: r.cost_reused_usd.map(round_usd),
                }),
            },
            workflow,
            planner,
            models: self
                .models
                .iter()
                .map(|(k, u)| (k.clone(), u.rounded()))
                .collect(),
            unpriced_models: self.unpriced.clone(),
            budget: self.budget.as_ref().map(|b| BudgetMetrics {
                spent_usd: round_usd(b.spent_usd),
                next_call_estimate_usd: b.next_call_estimate_usd.map(round_usd),
                ..b.clone()
            }),
            reused: self.reused.as_ref().map(|r| ReusedMetrics {
                tokens: Tokens {
                    total: r.tokens.input + r.tokens.output,
                    ..r.tokens
                },
                cost_reused_usd: r.cost_reused_usd.map(round_usd),
                ..r.clone()
            }),
            calls: self.calls.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::span::SpanFacts;
    use crate::telemetry::attr;
    use opentelemetry::KeyValue;
    use std::time::SystemTime;

    fn node(path: &str, role: &str, attempt: i64, ms_: u64, start: u64) -> SpanFacts {
        SpanFacts {
            node_role: Some(role.into()),
            node_path: Some(path.into()),
            attempt,
            start: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(start)),
            duration: Duration::from_millis(ms_),
            ..Default::default()
        }
    }

    #[test]
    fn aggregates_in_any_order() {
        let mut a = Aggregator::default();
        a.add(&node("b", "node", 1, 5, 20));
        a.add(&node("a", "node", 1, 3, 10));
        a.add(&node("a", "node", 2, 4, 14));
        a.add(&node("c", "batch", 1, 9, 30));
        a.add(&node("c[0]", "batch_item", 1, 4, 31));
        a.add(&node("c[1]", "batch_item", 1, 4, 31));
        a.add(&SpanFacts {
            workflow_depth: Some(0),
            duration: Duration::from_millis(40),
            ..Default::default()
        });
        a.add(&SpanFacts {
            llm: true,
            tokens: crate::accounting::Tokens {
                input: 10,
                output: 5,
                cache_read: 2,
                ..Default::default()
            },
            cost_usd: Some(0.001),
            ..Default::default()
        });
        let s = a.summary();
        // a (retried: once), b and the batch c are node executions; its items apart.
        assert_eq!(s.workflow.nodes_executed, 3);
        assert_eq!(s.workflow.batch_items, 2);
        assert_eq!(s.workflow.duration_ms, 40.0);
        let keys: Vec<&String> = s.workflow.node_timings.keys().collect();
        assert_eq!(keys, ["a", "b", "c", "c[0]", "c[1]"]);
        assert_eq!(s.workflow.node_timings["a"], 7.0);
        assert_eq!(s.workflow.usage.tokens.total, 15);
        assert_eq!(s.total.tokens_total, 15);
        assert_eq!(s.total.llm_calls, 1);
        assert_eq!(s.total.duration_ms, 40.0);
        assert!(s.planner.is_none());
    }

    #[test]
    fn reads_attributes() {
        let attrs = [
            KeyValue::new(attr::NODE_ROLE, "node"),
            KeyValue::new(attr::NODE_PATH, "p/c"),
            KeyValue::new(attr::NODE_ATTEMPT, 2i64),
            KeyValue::new(attr::USAGE_INPUT_TOKENS, 7i64),
            KeyValue::new(attr::COST_USD, 0.5),
        ];
        let f = SpanFacts::from_attributes(attrs.iter());
        assert_eq!(f.node_path.as_deref(), Some("p/c"));
        assert_eq!(f.attempt, 2);
        assert!(f.llm);
        assert_eq!(f.tokens.input, 7);
        assert_eq!(f.cost_usd, Some(0.5));
        assert!(f.budget.is_none());
    }

    #[test]
    fn counts_token_and_cost_sources_and_cache_savings() {
        let call = |usage: Option<&str>, cost: Option<&str>, saved: f64| {
            let mut attrs = vec![
                KeyValue::new(attr::GEN_AI_OPERATION_NAME, "chat"),
                KeyValue::new(attr::GEN_AI_REQUEST_MODEL, "m"),
                KeyValue::new(attr::LLM_NODE_PATH, "ask"),
            ];
            if let Some(u) = usage {
                attrs.push(KeyValue::new(attr::USAGE_SOURCE, u.to_string()));
                attrs.push(KeyValue::new(attr::USAGE_INPUT_TOKENS, 10i64));
            }
            if let Some(c) = cost {
                attrs.push(KeyValue::new(attr::COST_SOURCE, c.to_string()));
                attrs.push(KeyValue::new(attr::COST_USD, 0.001));
                attrs.push(KeyValue::new(attr::COST_CACHE_SAVINGS_USD, saved));
            }
            SpanFacts::from_attributes(attrs.iter())
        };
        let mut a = Aggregator::default();
        a.add(&call(Some("provider"), Some("table"), 0.000_1));
        a.add(&call(Some("provider_stream"), Some("table"), 0.000_2));
        a.add(&call(Some("estimated"), Some("override"), 0.0));
        a.add(&call(None, None, 0.0));
        let s = a.summary();
        let want = |pairs: &[(&str, u64)]| -> IndexMap<String, u64> {
            pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        let w = &s.workflow.usage;
        assert_eq!(
            w.token_sources,
            want(&[
                ("provider", 1),
                ("provider_stream", 1),
                ("estimated", 1),
                ("none", 1)
            ])
        );
        assert_eq!(
            w.cost_sources,
            want(&[("table", 2), ("override", 1), ("none", 1)])
        );
        assert_eq!(w.cache_savings_usd, 0.0003);
        assert_eq!(s.total.cache_savings_usd, 0.0003);
        assert_eq!(s.workflow.node_usage["ask"].token_sources, w.token_sources);
        assert_eq!(s.models["m"].cost_sources, w.cost_sources);
        assert_eq!(s.models["m"].cache_savings_usd, 0.0003);
    }

    #[test]
    fn budget_comes_from_the_root_span() {
        let attrs = [
            KeyValue::new(attr::RUN_STATUS, "budget_exceeded"),
            KeyValue::new(attr::BUDGET_MAX_COST_USD, 0.01),
            KeyValue::new(attr::BUDGET_SPENT_USD, 0.012_345_678_912_3),
            KeyValue::new(attr::BUDGET_TOKENS_USED, 120i64),
            KeyValue::new(attr::BUDGET_EXCEEDED, true),
            KeyValue::new(attr::BUDGET_STOPPED, "before_call"),
            KeyValue::new(attr::BUDGET_NODE, "summarize"),
            KeyValue::new(attr::BUDGET_MODEL, "gpt-4o"),
            KeyValue::new(attr::BUDGET_NEXT_CALL_ESTIMATE_TOKENS, 300i64),
        ];
        let mut a = Aggregator::default();
        assert!(a.summary().budget.is_none());
        a.add(&SpanFacts::from_attributes(attrs.iter()));
        let b = a.summary().budget.unwrap();
        assert_eq!(b.max_cost_usd, Some(0.01));
        assert_eq!(b.max_tokens_total, None);
        assert_eq!(b.spent_usd, 0.0123456789);
        assert_eq!(b.tokens_used, 120);
        assert!(b.exceeded);
        assert_eq!(b.stopped.as_deref(), Some("before_call"));
        assert_eq!(b.node.as_deref(), Some("summarize"));
        assert_eq!(b.next_call_estimate_tokens, Some(300));
        let v = serde_json::to_value(&b).unwrap();
        for k in ["max_tokens_total", "next_call_estimate_usd", "reason"] {
            assert!(v[k].is_null(), "{k} serialised as null");
        }
    }

    #[test]
    fn unpriced_scopes_are_null_and_batches_roll_up() {
        let call = |node: &str, model: &str, source: &str, usd: Option<f64>| {
            let mut attrs = vec![
                KeyValue::new(attr::GEN_AI_OPERATION_NAME, "chat"),
                KeyValue::new(attr::GEN_AI_REQUEST_MODEL, model.to_string()),
                KeyValue::new(attr::LLM_NODE_PATH, node.to_string()),
                KeyValue::new(attr::USAGE_INPUT_TOKENS, 10i64),
                KeyValue::new(attr::COST_SOURCE, source.to_string()),
            ];
            if let Some(c) = usd {
                attrs.push(KeyValue::new(attr::COST_USD, c));
            }
            SpanFacts::from_attributes(attrs.iter())
        };
        let mut a = Aggregator::default();
        a.add(&call("fan[0]", "m", "table", Some(0.001)));
        a.add(&call("fan[1]", "m", "table", Some(0.002)));
        a.add(&call("solo", "x", "unpriced", None));
        let s = a.summary();
        let fan = &s.workflow.node_usage["fan"];
        assert_eq!(fan.llm_calls, 2);
        assert_eq!(fan.batch_items, Some(2));
        assert_eq!(fan.cost.usd, Some(0.003));
        assert_eq!(fan.items.len(), 2);
        assert!(!s.workflow.node_usage.contains_key("fan[0]"));
        assert_eq!(s.workflow.node_usage["solo"].cost.usd, None);
        assert_eq!(s.models["x"].cost.usd, None);
        assert_eq!(s.models["m"].cost.usd, Some(0.003));
        assert_eq!(s.workflow.usage.cost.usd, None);
        assert_eq!(s.workflow.usage.cost.lower_bound_usd, 0.003);
        assert_eq!(s.total.cost.usd, None);
        assert_eq!(s.total.cost.lower_bound_usd, 0.003);
        assert_eq!(s.unpriced_models, ["x"]);
        let v = serde_json::to_value(&s).unwrap();
        assert!(v["total"]["cost_usd"].is_null());
        assert_eq!(v["total"]["cost_usd_lower_bound"], 0.003);
        assert_eq!(
            v["workflow"]["node_usage"]["fan"]["items"]["fan[1]"]["llm_calls"],
            1
        );
    }
}
