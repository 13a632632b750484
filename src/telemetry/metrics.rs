//! The metrics processor: an OpenTelemetry `SpanProcessor` that folds spans
//! into the run's metrics summary as they end.
//!
//! The summary is computed from span attributes only (names in
//! [`super::attr`]), so any backend that receives the spans can compute the
//! same numbers. It keeps aggregates, never span copies. The JSON shape is a
//! wire format: [`MetricsSummary`] and friends are separate serde types with a
//! `schema_version`.

use super::attr;
use indexmap::IndexMap;
use opentelemetry::trace::Status;
use opentelemetry::{Context, KeyValue, Value as OtelValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Token counts, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    pub total: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub reasoning: u64,
}

/// LLM usage of one node or one model.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Usage {
    pub llm_calls: u64,
    pub tokens: Tokens,
    /// Sum of the priced calls; see `cost_complete`.
    pub cost_usd: f64,
    /// False when a call's cost is unknown (unpriced model).
    pub cost_complete: bool,
    /// Calls whose tokens were counted locally because the provider reported none.
    pub estimated_calls: u64,
    /// Calls per `pflow.usage.source` (`provider`, `provider_stream`,
    /// `estimated`; `none` for an attempt that failed before any usage arrived).
    pub token_sources: IndexMap<String, u64>,
    /// Calls per `pflow.cost.source` (`table`, `override`, `provider`, `free`,
    /// `local`, `unpriced`, `unknown_usage`; `none` when no cost was recorded).
    pub cost_sources: IndexMap<String, u64>,
    /// What the cache reads saved: their cost at the input price minus what they cost.
    pub cache_savings_usd: f64,
}

impl Usage {
    fn add(&mut self, f: &SpanFacts) {
        self.llm_calls += 1;
        self.estimated_calls += u64::from(f.estimated);
        let source = |s: &Option<String>| s.clone().unwrap_or_else(|| "none".into());
        *self
            .token_sources
            .entry(source(&f.usage_source))
            .or_insert(0) += 1;
        *self.cost_sources.entry(source(&f.cost_source)).or_insert(0) += 1;
        self.cache_savings_usd += f.cache_savings_usd;
        let t = &mut self.tokens;
        t.input += f.input_tokens;
        t.output += f.output_tokens;
        t.total += f.input_tokens + f.output_tokens;
        t.cache_read += f.cache_read;
        t.cache_write += f.cache_write;
        t.reasoning += f.reasoning;
        match f.cost_usd {
            Some(c) if !f.unpriced => self.cost_usd += c,
            _ => self.cost_complete = false,
        }
    }

    fn rounded(&self) -> Usage {
        Usage {
            cost_usd: round_usd(self.cost_usd),
            cache_savings_usd: round_usd(self.cache_savings_usd),
            ..self.clone()
        }
    }
}

/// One section (`workflow` or `planner`) of the summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SectionMetrics {
    pub duration_ms: f64,
    pub nodes_executed: u64,
    pub llm_calls: u64,
    pub tokens: Tokens,
    pub cost_usd: f64,
    /// False when some LLM call had no known price: `cost_usd` is then a lower bound.
    pub cost_complete: bool,
    /// LLM calls whose tokens are estimates (the provider reported no usage).
    pub estimated_calls: u64,
    /// LLM calls per token source (see [`Usage::token_sources`]).
    pub token_sources: IndexMap<String, u64>,
    /// LLM calls per cost source (see [`Usage::cost_sources`]).
    pub cost_sources: IndexMap<String, u64>,
    /// What cache reads saved in this section, in USD.
    pub cache_savings_usd: f64,
    /// Wall time per node path (`id`, `parent/child`, `id[3]`), summed over attempts.
    pub node_timings: IndexMap<String, f64>,
    /// LLM calls, tokens and cost per node path (nodes that called an LLM).
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
    pub cost_usd: f64,
    pub cost_complete: bool,
    /// What cache reads saved across sections, in USD.
    pub cache_savings_usd: f64,
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

/// What the aggregation needs from one finished span.
#[derive(Debug, Default, Clone)]
pub struct SpanFacts {
    pub is_run: bool,
    pub workflow_depth: Option<i64>,
    pub node_role: Option<String>,
    pub node_path: Option<String>,
    /// The node an LLM call was made for.
    pub llm_node_path: Option<String>,
    pub attempt: i64,
    pub section: Option<String>,
    pub llm: bool,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub reasoning: u64,
    pub cost_usd: Option<f64>,
    /// `pflow.cost.source` is `unpriced`.
    pub unpriced: bool,
    /// `pflow.cost.source`.
    pub cost_source: Option<String>,
    /// `pflow.usage.source`.
    pub usage_source: Option<String>,
    /// `pflow.cost.cache_savings_usd` (0 when absent).
    pub cache_savings_usd: f64,
    /// `pflow.usage.estimated`.
    pub estimated: bool,
    /// Any `gen_ai.usage.*` token attribute was present.
    pub has_usage: bool,
    pub operation: Option<String>,
    pub provider_name: Option<String>,
    pub response_model: Option<String>,
    pub error_type: Option<String>,
    pub node_type: Option<String>,
    pub node_status: Option<String>,
    pub run_status: Option<String>,
    /// The planner's own span (`plan` operation, not a step).
    pub planner_root: bool,
    pub planner_path: Option<String>,
    pub planner_attempts: Option<i64>,
    pub planner_step: Option<String>,
    pub model: Option<String>,
    pub start: Option<SystemTime>,
    pub duration: Duration,
    pub failed: bool,
    /// Root span only: the `pflow.budget.*` attributes, when a budget was set.
    pub budget: Option<BudgetMetrics>,
}

impl SpanFacts {
    /// Reads the facts from attribute key/value pairs.
    pub fn from_attributes<'a>(attrs: impl IntoIterator<Item = &'a KeyValue>) -> SpanFacts {
        let mut f = SpanFacts {
            attempt: 1,
            ..Default::default()
        };
        for kv in attrs {
            let k = kv.key.as_str();
            match k {
                attr::RUN_STATUS => {
                    f.is_run = true;
                    f.run_status = Some(kv.value.as_str().into_owned());
                }
                attr::RUN_COMMAND => f.is_run = true,
                attr::PLANNER_PATH => f.planner_path = Some(kv.value.as_str().into_owned()),
                attr::PLANNER_ATTEMPTS => f.planner_attempts = as_i64(&kv.value),
                attr::PLANNER_STEP => f.planner_step = Some(kv.value.as_str().into_owned()),
                attr::GEN_AI_PROVIDER_NAME => {
                    f.provider_name = Some(kv.value.as_str().into_owned())
                }
                attr::GEN_AI_RESPONSE_MODEL => {
                    f.response_model = Some(kv.value.as_str().into_owned())
                }
                attr::ERROR_TYPE => f.error_type = Some(kv.value.as_str().into_owned()),
                attr::NODE_TYPE => f.node_type = Some(kv.value.as_str().into_owned()),
                attr::NODE_STATUS => f.node_status = Some(kv.value.as_str().into_owned()),
                attr::WORKFLOW_DEPTH => f.workflow_depth = as_i64(&kv.value),
                attr::NODE_ROLE => f.node_role = Some(kv.value.as_str().into_owned()),
                attr::NODE_PATH => f.node_path = Some(kv.value.as_str().into_owned()),
                attr::NODE_ATTEMPT => f.attempt = as_i64(&kv.value).unwrap_or(1),
                attr::SECTION => f.section = Some(kv.value.as_str().into_owned()),
                attr::USAGE_INPUT_TOKENS => {
                    f.llm = true;
                    f.has_usage = true;
                    f.input_tokens = as_u64(&kv.value)
                }
                attr::USAGE_OUTPUT_TOKENS => {
                    f.llm = true;
                    f.has_usage = true;
                    f.output_tokens = as_u64(&kv.value)
                }
                attr::USAGE_CACHE_READ => f.cache_read = as_u64(&kv.value),
                attr::USAGE_CACHE_WRITE => f.cache_write = as_u64(&kv.value),
                attr::USAGE_REASONING => f.reasoning = as_u64(&kv.value),
                attr::COST_USD => f.cost_usd = as_f64(&kv.value),
                attr::COST_SOURCE => {
                    f.unpriced = kv.value.as_str() == "unpriced";
                    f.cost_source = Some(kv.value.as_str().into_owned());
                }
                attr::USAGE_SOURCE => f.usage_source = Some(kv.value.as_str().into_owned()),
                attr::COST_CACHE_SAVINGS_USD => {
                    f.cache_savings_usd = as_f64(&kv.value).unwrap_or(0.0)
                }
                attr::GEN_AI_REQUEST_MODEL => f.model = Some(kv.value.as_str().into_owned()),
                attr::GEN_AI_OPERATION_NAME => {
                    f.operation = Some(kv.value.as_str().into_owned());
                    if matches!(
                        kv.value.as_str().as_ref(),
                        "chat" | "text_completion" | "generate_content"
                    ) {
                        f.llm = true;
                    }
                }
                attr::LLM_NODE_PATH => f.llm_node_path = Some(kv.value.as_str().into_owned()),
                attr::USAGE_ESTIMATED => f.estimated = matches!(kv.value, OtelValue::Bool(true)),
                k if k.starts_with(attr::BUDGET_PREFIX) => {
                    let b = f.budget.get_or_insert_with(BudgetMetrics::default);
                    let text = || Some(kv.value.as_str().into_owned());
                    let flag = matches!(kv.value, OtelValue::Bool(true));
                    match k {
                        attr::BUDGET_MAX_COST_USD => b.max_cost_usd = as_f64(&kv.value),
                        attr::BUDGET_MAX_TOKENS_TOTAL => {
                            b.max_tokens_total = as_i64(&kv.value).map(|v| v.max(0) as u64)
                        }
                        attr::BUDGET_ALLOW_UNPRICED => b.allow_unpriced = flag,
                        attr::BUDGET_SPENT_USD => b.spent_usd = as_f64(&kv.value).unwrap_or(0.0),
                        attr::BUDGET_TOKENS_USED => b.tokens_used = as_u64(&kv.value),
                        attr::BUDGET_EXCEEDED => b.exceeded = flag,
                        attr::BUDGET_STOPPED => b.stopped = text(),
                        attr::BUDGET_REASON => b.reason = text(),
                        attr::BUDGET_NODE => b.node = text(),
                        attr::BUDGET_MODEL => b.model = text(),
                        attr::BUDGET_NEXT_CALL_ESTIMATE_USD => {
                            b.next_call_estimate_usd = as_f64(&kv.value)
                        }
                        attr::BUDGET_NEXT_CALL_ESTIMATE_TOKENS => {
                            b.next_call_estimate_tokens = as_i64(&kv.value).map(|v| v.max(0) as u64)
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        f.planner_root = f.operation.as_deref() == Some("plan") && f.planner_step.is_none();
        f
    }

    pub fn from_span(span: &SpanData) -> SpanFacts {
        let mut f = Self::from_attributes(span.attributes.iter());
        f.start = Some(span.start_time);
        f.duration = span
            .end_time
            .duration_since(span.start_time)
            .unwrap_or_default();
        f.failed = matches!(span.status, Status::Error { .. });
        f
    }
}

fn as_i64(v: &OtelValue) -> Option<i64> {
    match v {
        OtelValue::I64(i) => Some(*i),
        OtelValue::F64(f) => Some(*f as i64),
        OtelValue::String(s) => s.as_str().parse().ok(),
        _ => None,
    }
}

fn as_u64(v: &OtelValue) -> u64 {
    as_i64(v).map(|i| i.max(0) as u64).unwrap_or(0)
}

fn as_f64(v: &OtelValue) -> Option<f64> {
    match v {
        OtelValue::F64(f) => Some(*f),
        OtelValue::I64(i) => Some(*i as f64),
        OtelValue::String(s) => s.as_str().parse().ok(),
        _ => None,
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

#[derive(Debug)]
struct SectionAgg {
    duration: Option<Duration>,
    nodes_executed: u64,
    usage: Usage,
    /// path -> (first start, summed duration)
    timings: IndexMap<String, (SystemTime, Duration)>,
    node_usage: IndexMap<String, Usage>,
    path: Option<String>,
    attempts: Option<u64>,
    steps: IndexMap<String, (SystemTime, Duration)>,
}

impl Default for SectionAgg {
    fn default() -> Self {
        SectionAgg {
            duration: None,
            nodes_executed: 0,
            usage: Usage {
                cost_complete: true,
                ..Usage::default()
            },
            timings: IndexMap::new(),
            node_usage: IndexMap::new(),
            path: None,
            attempts: None,
            steps: IndexMap::new(),
        }
    }
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
}

impl Aggregator {
    pub fn add(&mut self, f: &SpanFacts) {
        if f.is_run {
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
        if f.workflow_depth == Some(0) {
            section.duration = Some(f.duration);
        }
        if f.planner_root {
            section.duration = Some(f.duration);
            section.path = f.planner_path.clone();
            section.attempts = f.planner_attempts.map(|a| a.max(0) as u64);
        }
        if let Some(step) = &f.planner_step {
            let start = f.start.unwrap_or(SystemTime::UNIX_EPOCH);
            let e = section
                .steps
                .entry(step.clone())
                .or_insert((start, Duration::ZERO));
            e.0 = e.0.min(start);
            e.1 += f.duration;
        }
        if let (Some(role), Some(path)) = (&f.node_role, &f.node_path) {
            if role != attr::ROLE_BATCH && f.attempt == 1 {
                section.nodes_executed += 1;
            }
            let start = f.start.unwrap_or(SystemTime::UNIX_EPOCH);
            let e = section
                .timings
                .entry(path.clone())
                .or_insert((start, Duration::ZERO));
            e.0 = e.0.min(start);
            e.1 += f.duration;
        }
        if f.llm {
            section.usage.add(f);
            let fresh = || Usage {
                cost_complete: true,
                ..Usage::default()
            };
            if let Some(p) = &f.llm_node_path {
                section
                    .node_usage
                    .entry(p.clone())
                    .or_insert_with(fresh)
                    .add(f);
            }
            let model = f.model.clone().unwrap_or_else(|| "unknown".into());
            if f.unpriced && !self.unpriced.contains(&model) {
                self.unpriced.push(model.clone());
            }
            self.models.entry(model).or_insert_with(fresh).add(f);
        }
    }

    fn section(agg: &SectionAgg) -> SectionMetrics {
        let mut timings: Vec<(&String, &(SystemTime, Duration))> = agg.timings.iter().collect();
        timings.sort_by_key(|(_, (start, _))| *start);
        SectionMetrics {
            duration_ms: ms(agg.duration.unwrap_or_default()),
            nodes_executed: agg.nodes_executed,
            llm_calls: agg.usage.llm_calls,
            tokens: agg.usage.tokens,
            cost_usd: round_usd(agg.usage.cost_usd),
            cost_complete: agg.usage.cost_complete,
            estimated_calls: agg.usage.estimated_calls,
            token_sources: agg.usage.token_sources.clone(),
            cost_sources: agg.usage.cost_sources.clone(),
            cache_savings_usd: round_usd(agg.usage.cache_savings_usd),
            node_timings: timings
                .into_iter()
                .map(|(k, (_, d))| (k.clone(), ms(*d)))
                .collect(),
            node_usage: agg
                .node_usage
                .iter()
                .map(|(k, u)| (k.clone(), u.rounded()))
                .collect(),
            path_taken: agg.path.clone(),
            attempts: agg.attempts,
            step_timings: (!agg.steps.is_empty()).then(|| {
                let mut steps: Vec<_> = agg.steps.iter().collect();
                steps.sort_by_key(|(_, (start, _))| *start);
                steps
                    .into_iter()
                    .map(|(k, (_, d))| (k.clone(), ms(*d)))
                    .collect()
            }),
        }
    }

    pub fn summary(&self) -> MetricsSummary {
        let workflow = Self::section(&self.workflow);
        let planner = self.planner.as_ref().map(Self::section);
        let p = planner.as_ref();
        let section_sum = workflow.duration_ms + p.map_or(0.0, |p| p.duration_ms);
        MetricsSummary {
            schema_version: 1,
            total: TotalMetrics {
                duration_ms: self.run.map(ms).unwrap_or(section_sum),
                llm_calls: workflow.llm_calls + p.map_or(0, |p| p.llm_calls),
                tokens_total: workflow.tokens.total + p.map_or(0, |p| p.tokens.total),
                cost_usd: round_usd(workflow.cost_usd + p.map_or(0.0, |p| p.cost_usd)),
                cost_complete: workflow.cost_complete && p.is_none_or(|p| p.cost_complete),
                cache_savings_usd: round_usd(
                    workflow.cache_savings_usd + p.map_or(0.0, |p| p.cache_savings_usd),
                ),
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
        }
    }
}

/// Costs are reported to 1e-10 USD, enough to keep per-token sums exact.
fn round_usd(v: f64) -> f64 {
    (v * 1e10).round() / 1e10
}

/// The span processor; cheap to clone (shares the aggregates).
///
/// It can hand each span on to a `next` processor after reading it: the SDK
/// clones `SpanData` for every processor but the last, so chaining the trace
/// file behind the metrics saves one copy of every span.
#[derive(Debug, Clone, Default)]
pub struct MetricsProcessor {
    agg: Arc<Mutex<Aggregator>>,
    next: Vec<Arc<dyn SpanProcessor>>,
    otel: Option<Arc<super::otel_metrics::OtelMetrics>>,
}

impl MetricsProcessor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Also records OTel metrics (for OTLP export) from every span.
    pub fn with_otel_metrics(mut self, m: Arc<super::otel_metrics::OtelMetrics>) -> Self {
        self.otel = Some(m);
        self
    }

    /// Passes every span on to `next` once aggregated.
    pub fn with_next(mut self, next: impl SpanProcessor + 'static) -> Self {
        self.next.push(Arc::new(next));
        self
    }

    /// The summary of every span ended so far.
    pub fn summary(&self) -> MetricsSummary {
        match self.agg.lock() {
            Ok(a) => a.summary(),
            Err(poisoned) => poisoned.into_inner().summary(),
        }
    }
}

impl SpanProcessor for MetricsProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        let facts = SpanFacts::from_span(&span);
        match self.agg.lock() {
            Ok(mut a) => a.add(&facts),
            Err(poisoned) => poisoned.into_inner().add(&facts),
        }
        if let Some(o) = &self.otel {
            o.record(&facts);
        }
        // Every consumer but the last gets a copy; the last takes the span itself.
        if let Some((last, rest)) = self.next.split_last() {
            for n in rest {
                n.on_end(span.clone());
            }
            last.on_end(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.next.iter().try_for_each(|n| n.force_flush())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.next
            .iter()
            .try_for_each(|n| n.shutdown_with_timeout(timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            input_tokens: 10,
            output_tokens: 5,
            cache_read: 2,
            cost_usd: Some(0.001),
            ..Default::default()
        });
        let s = a.summary();
        assert_eq!(s.workflow.nodes_executed, 4);
        assert_eq!(s.workflow.duration_ms, 40.0);
        let keys: Vec<&String> = s.workflow.node_timings.keys().collect();
        assert_eq!(keys, ["a", "b", "c", "c[0]", "c[1]"]);
        assert_eq!(s.workflow.node_timings["a"], 7.0);
        assert_eq!(s.workflow.tokens.total, 15);
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
        assert_eq!(f.input_tokens, 7);
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
        let w = &s.workflow;
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
        assert_eq!(w.node_usage["ask"].token_sources, w.token_sources);
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
}
