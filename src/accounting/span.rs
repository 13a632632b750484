//! The span classifier: which part of a run a finished span is (the run,
//! a workflow, a node, a batch, a batch item, an LLM call, the planner or
//! one of its steps), and the facts the aggregation reads from it. It reads
//! attribute names from [`crate::telemetry::attr`] only, so a live span and a
//! span loaded from a trace file are classified alike.

use super::summary::BudgetMetrics;
use super::{CallUsage, CostSource, Tokens};
use crate::telemetry::attr;
use opentelemetry::trace::Status;
use opentelemetry::{KeyValue, Value as OtelValue};
use opentelemetry_sdk::trace::SpanData;
use std::time::{Duration, SystemTime};

/// What a span is, for the accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// The root span (`pflow run …`).
    Run,
    /// `invoke_workflow {name}` (top level or nested).
    Workflow,
    /// One attempt of a node.
    Node,
    /// The span around a batch node's items.
    Batch,
    /// One item of a batch.
    BatchItem,
    /// One provider attempt of an LLM call.
    LlmCall,
    /// The planner's own span.
    Planner,
    /// One planning step.
    PlannerStep,
    /// Anything else (HTTP client spans, …).
    Other,
}

impl SpanKind {
    /// The kind's name where a viewer or the live feed shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            SpanKind::Run => "run",
            SpanKind::Workflow => "workflow",
            SpanKind::Node => "node",
            SpanKind::Batch => "batch",
            SpanKind::BatchItem => "batch_item",
            SpanKind::LlmCall => "llm",
            SpanKind::Planner => "planner",
            SpanKind::PlannerStep => "planner_step",
            SpanKind::Other => "other",
        }
    }
}

/// What a span is, from its attributes (`get` returns a value as text, `None`
/// when absent): the one rule every reader of spans applies — the metrics,
/// the trace commands, the OTel metrics and the backend profiles.
pub fn classify<S: AsRef<str>>(get: &dyn Fn(&str) -> Option<S>) -> SpanKind {
    if get(attr::RUN_STATUS).is_some() || get(attr::RUN_COMMAND).is_some() {
        return SpanKind::Run;
    }
    let op = get(attr::GEN_AI_OPERATION_NAME);
    let op = op.as_ref().map(AsRef::as_ref);
    let llm_marker = [
        attr::USAGE_INPUT_TOKENS,
        attr::USAGE_OUTPUT_TOKENS,
        attr::COST_SOURCE,
        attr::LLM_NODE_PATH,
    ]
    .iter()
    .any(|k| get(k).is_some());
    if llm_marker || op.is_some_and(|o| LLM_OPERATIONS.contains(&o)) {
        return SpanKind::LlmCall;
    }
    match get(attr::NODE_ROLE).as_ref().map(AsRef::as_ref) {
        Some(attr::ROLE_BATCH) => return SpanKind::Batch,
        Some(attr::ROLE_BATCH_ITEM) => return SpanKind::BatchItem,
        Some(_) => return SpanKind::Node,
        // Role `node` is left out (telemetry::compact): any span with a node id.
        None if get(attr::NODE_ID).is_some() => return SpanKind::Node,
        None => {}
    }
    if get(attr::PLANNER_STEP).is_some() {
        SpanKind::PlannerStep
    } else if op == Some("plan") {
        SpanKind::Planner
    } else if get(attr::WORKFLOW_DEPTH).is_some() || op == Some("invoke_workflow") {
        SpanKind::Workflow
    } else {
        SpanKind::Other
    }
}

/// `pflow.node.status` of a node restored from a checkpoint.
pub const STATUS_RESTORED: &str = "restored";
/// `pflow.node.status` of a memo hit.
pub const STATUS_CACHED: &str = "cached";

/// GenAI operation names that are model calls.
const LLM_OPERATIONS: &[&str] = &["chat", "text_completion", "generate_content"];

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
    /// An LLM call span (see [`SpanFacts::kind`]).
    pub llm: bool,
    /// The `gen_ai.usage.*` token counts (`total` is input plus output).
    pub tokens: Tokens,
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
    /// `server.address` and `server.port` (LLM calls: the metrics carry them).
    pub server_address: Option<String>,
    pub server_port: Option<i64>,
    /// A streamed call's `gen_ai.response.time_to_first_chunk`, in seconds.
    pub time_to_first_chunk: Option<f64>,
    /// An LLM call's `gen_ai.request.max_tokens`, when the node set one.
    pub request_max_tokens: Option<u64>,
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
    /// A restored or cached node: the run that executed it.
    pub origin_run_id: Option<String>,
    /// A restored or cached node: what its LLM calls were (`None`: unknown).
    pub reused: Option<super::Reused>,
}

impl SpanFacts {
    /// Reads the facts from attribute key/value pairs.
    pub fn from_attributes<'a>(attrs: impl IntoIterator<Item = &'a KeyValue>) -> SpanFacts {
        let mut f = SpanFacts {
            attempt: 1,
            ..Default::default()
        };
        let mut node_id = None;
        for kv in attrs {
            let k = kv.key.as_str();
            let text = || Some(kv.value.as_str().into_owned());
            // Arms are tried in order: a node span's own keys come first, and
            // the ones no fact reads (a long run's most common) are passed over
            // before the other sixty names are compared.
            match k {
                attr::NODE_ID => node_id = text(),
                attr::NODE_TYPE => f.node_type = text(),
                attr::NODE_PARAMS
                | attr::NODE_PARAMS_DIGEST
                | attr::NODE_BUSY_US
                | attr::NODE_RSS_PEAK
                | attr::NODE_ACTION => {}
                attr::RUN_STATUS => {
                    f.is_run = true;
                    f.run_status = text();
                }
                attr::RUN_COMMAND => f.is_run = true,
                attr::PLANNER_PATH => f.planner_path = text(),
                attr::PLANNER_ATTEMPTS => f.planner_attempts = as_i64(&kv.value),
                attr::PLANNER_STEP => f.planner_step = text(),
                attr::GEN_AI_PROVIDER_NAME => f.provider_name = text(),
                attr::GEN_AI_RESPONSE_MODEL => f.response_model = text(),
                attr::SERVER_ADDRESS => f.server_address = text(),
                attr::SERVER_PORT => f.server_port = as_i64(&kv.value),
                attr::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK => {
                    f.time_to_first_chunk = as_f64(&kv.value)
                }
                attr::GEN_AI_REQUEST_MAX_TOKENS => {
                    f.request_max_tokens = as_i64(&kv.value).map(|v| v.max(0) as u64)
                }
                attr::ERROR_TYPE => f.error_type = text(),
                attr::NODE_STATUS => f.node_status = text(),
                attr::WORKFLOW_DEPTH => f.workflow_depth = as_i64(&kv.value),
                attr::NODE_ROLE => f.node_role = text(),
                attr::NODE_PATH => f.node_path = text(),
                attr::NODE_ATTEMPT => f.attempt = as_i64(&kv.value).unwrap_or(1),
                attr::SECTION => f.section = text(),
                attr::USAGE_INPUT_TOKENS => {
                    f.llm = true;
                    f.has_usage = true;
                    f.tokens.input = as_u64(&kv.value)
                }
                attr::USAGE_OUTPUT_TOKENS => {
                    f.llm = true;
                    f.has_usage = true;
                    f.tokens.output = as_u64(&kv.value)
                }
                attr::USAGE_CACHE_READ => f.tokens.cache_read = as_u64(&kv.value),
                attr::USAGE_CACHE_WRITE => f.tokens.cache_write = as_u64(&kv.value),
                attr::USAGE_REASONING => f.tokens.reasoning = as_u64(&kv.value),
                attr::USAGE_CACHE_WRITE_1H => f.tokens.cache_write_1h = as_u64(&kv.value),
                attr::COST_USD => f.cost_usd = as_f64(&kv.value),
                attr::COST_SOURCE => {
                    f.llm = true;
                    f.unpriced = kv.value.as_str() == CostSource::Unpriced.as_str();
                    f.cost_source = text();
                }
                attr::USAGE_SOURCE => f.usage_source = text(),
                attr::COST_CACHE_SAVINGS_USD => {
                    f.cache_savings_usd = as_f64(&kv.value).unwrap_or(0.0)
                }
                attr::GEN_AI_REQUEST_MODEL => f.model = text(),
                attr::GEN_AI_OPERATION_NAME => {
                    f.operation = text();
                    if LLM_OPERATIONS.contains(&kv.value.as_str().as_ref()) {
                        f.llm = true;
                    }
                }
                attr::LLM_NODE_PATH => {
                    f.llm = true;
                    f.llm_node_path = text()
                }
                attr::USAGE_ESTIMATED => f.estimated = matches!(kv.value, OtelValue::Bool(true)),
                attr::NODE_ORIGIN_RUN_ID => f.origin_run_id = text(),
                attr::REUSED_LLM_CALLS => {
                    f.reused.get_or_insert_with(Default::default).llm_calls = as_u64(&kv.value)
                }
                attr::REUSED_INPUT_TOKENS => {
                    f.reused.get_or_insert_with(Default::default).tokens.input = as_u64(&kv.value)
                }
                attr::REUSED_OUTPUT_TOKENS => {
                    f.reused.get_or_insert_with(Default::default).tokens.output = as_u64(&kv.value)
                }
                attr::REUSED_COST_USD => {
                    f.reused.get_or_insert_with(Default::default).cost_usd = as_f64(&kv.value)
                }
                k if k.starts_with(attr::BUDGET_PREFIX) => {
                    let b = f.budget.get_or_insert_with(BudgetMetrics::default);
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
        // A node span leaves its defaults out (telemetry::compact): role
        // `node`, path = id, status `ok` (attempt 1 is set above).
        if let Some(id) = node_id {
            f.node_role
                .get_or_insert_with(|| attr::ROLE_NODE.to_string());
            f.node_path.get_or_insert(id);
            f.node_status
                .get_or_insert_with(|| crate::telemetry::compact::STATUS_OK.to_string());
        }
        f
    }

    /// What the span is. An LLM call is a span with a model-call operation,
    /// token usage, a cost source or the node path of a call: the one rule
    /// every reader of spans applies.
    pub fn kind(&self) -> SpanKind {
        // The facts stand for the attributes they were read from; `llm` for
        // any of the LLM-call markers.
        // (Presence is all the rule reads of a depth.)
        classify(&|k: &str| match k {
            attr::RUN_COMMAND => self.is_run.then_some(""),
            attr::LLM_NODE_PATH => self.llm.then_some(""),
            attr::NODE_ROLE => self.node_role.as_deref(),
            attr::GEN_AI_OPERATION_NAME => self.operation.as_deref(),
            attr::PLANNER_STEP => self.planner_step.as_deref(),
            attr::WORKFLOW_DEPTH => self.workflow_depth.map(|_| ""),
            _ => None,
        })
    }

    /// `restored` or `cached`: a node whose outputs were reused, not produced.
    pub fn reuse_status(&self) -> Option<&str> {
        self.node_status
            .as_deref()
            .filter(|s| matches!(*s, STATUS_RESTORED | STATUS_CACHED))
    }

    pub fn is_llm(&self) -> bool {
        self.kind() == SpanKind::LlmCall
    }

    /// The tokens of an LLM call span.
    pub fn tokens(&self) -> Tokens {
        Tokens {
            total: self.tokens.input + self.tokens.output,
            ..self.tokens
        }
    }

    /// What an LLM call span adds to a scope.
    pub fn call_usage(&self) -> CallUsage {
        CallUsage {
            tokens: self.tokens(),
            usd: self.cost_usd,
            cost_source: self.cost_source.as_deref().and_then(CostSource::parse),
            cost_source_name: self.cost_source.clone(),
            usage_source: self.usage_source.clone(),
            cache_savings_usd: self.cache_savings_usd,
            estimated: self.estimated,
        }
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
