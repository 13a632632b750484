//! Suggestions from the run history, each with the numbers behind it and
//! never applied: pflow reports them (`pflow stats suggest`, the stats
//! page), the user decides.
//!
//! - **Cheaper model**: a node (same workflow name and node path, batch
//!   indexes removed) whose latest calls use a model while the history shows
//!   another model on the same node, with output of similar size, at a
//!   clearly lower cost per call.
//! - **`max_tokens` far above use**: a node whose `max_tokens` setting is
//!   many times the most output it ever produced. Besides being a loose cap,
//!   the budget guard ([`crate::llm::budget`]) reserves the full `max_tokens`
//!   of output for every call before it is made, so an oversized setting
//!   makes `--max-cost` refuse or hold calls that would have fitted.
//!
//! Only successful workflow calls with known token counts count (failed
//! attempts have no output; planner calls belong to no workflow node).

use super::query::strip_indexes;
use super::trends::percentile;
use super::{db, HistoryError};
use crate::accounting::round_usd;
use crate::pricing::PriceTable;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// A model needs this many successful calls on a node before it is compared
/// or its output range trusted.
pub const MIN_CALLS: u64 = 3;
/// An alternative must cost at most this share of the current model's cost per call.
pub const CHEAPER_RATIO: f64 = 0.8;
/// Output is of similar size when the mean output tokens of the two models
/// differ by at most this factor.
pub const SIMILAR_OUTPUT_FACTOR: f64 = 1.33;
/// `max_tokens` is far above use when it is more than this many times the most output used.
pub const MAX_TOKENS_FACTOR: u64 = 4;

/// One model's calls on one node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelOnNode {
    pub model: String,
    /// Successful calls.
    pub calls: u64,
    /// Mean cost per call; null when some call had no known price.
    pub cost_per_call_usd: Option<f64>,
    /// Mean output tokens per call.
    pub output_tokens_mean: f64,
    pub output_tokens_max: u64,
}

/// One suggestion; `kind` names it in JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Suggestion {
    CheaperModel {
        workflow: String,
        node: String,
        /// The model of the node's latest call.
        current: ModelOnNode,
        /// A model the history shows on the same node, cheaper, with similar output.
        alternative: ModelOnNode,
        /// Current minus alternative cost per call.
        saving_per_call_usd: f64,
        /// The saving as a share of the current cost per call (0–1).
        saving_share: f64,
    },
    MaxTokens {
        workflow: String,
        node: String,
        model: String,
        /// The node's current `max_tokens` setting.
        max_tokens: u64,
        /// Successful calls made with that setting and model.
        calls: u64,
        output_tokens_max: u64,
        /// Nearest-rank 95th percentile of output tokens.
        output_tokens_p95: u64,
        /// A setting with room to spare: the next power of two at or above
        /// twice the most used (at least 16).
        suggested_max_tokens: u64,
        /// USD per million output tokens of the model (null when unpriced).
        output_price_per_million: Option<f64>,
        /// What the budget guard reserves for one call's output at the
        /// current setting, and at the suggested one.
        reserved_output_usd_per_call: Option<f64>,
        reserved_output_usd_at_suggested: Option<f64>,
    },
}

impl Suggestion {
    pub fn kind(&self) -> &'static str {
        match self {
            Suggestion::CheaperModel { .. } => "cheaper_model",
            Suggestion::MaxTokens { .. } => "max_tokens",
        }
    }

    pub fn workflow(&self) -> &str {
        match self {
            Suggestion::CheaperModel { workflow, .. } | Suggestion::MaxTokens { workflow, .. } => {
                workflow
            }
        }
    }

    pub fn node(&self) -> &str {
        match self {
            Suggestion::CheaperModel { node, .. } | Suggestion::MaxTokens { node, .. } => node,
        }
    }

    /// One sentence with the numbers behind the suggestion.
    pub fn message(&self) -> String {
        use crate::format::usd_compact as usd;
        let opt_usd = |v: Option<f64>| v.map_or_else(|| "unknown".to_string(), usd);
        match self {
            Suggestion::CheaperModel {
                node,
                current: c,
                alternative: a,
                saving_per_call_usd,
                saving_share,
                ..
            } => format!(
                "`{node}` has also run on `{}` with similar output: {} per call over {} calls \
                 ({:.1} output tokens on average) against {} per call over {} calls \
                 ({:.1} output tokens) on `{}`, its current model — {} ({:.0}%) less per call. \
                 Compare a few outputs before switching.",
                a.model,
                opt_usd(a.cost_per_call_usd),
                a.calls,
                a.output_tokens_mean,
                opt_usd(c.cost_per_call_usd),
                c.calls,
                c.output_tokens_mean,
                c.model,
                usd(*saving_per_call_usd),
                saving_share * 100.0,
            ),
            Suggestion::MaxTokens {
                model,
                max_tokens,
                calls,
                output_tokens_max,
                output_tokens_p95,
                suggested_max_tokens,
                output_price_per_million,
                reserved_output_usd_per_call,
                reserved_output_usd_at_suggested,
                ..
            } => {
                // The echo model's reservation is its echoed prompt, never max_tokens.
                let echo = matches!(
                    crate::llm::resolve_model(model),
                    Ok((crate::llm::Provider::Echo, _))
                );
                let reserve = match (
                    output_price_per_million,
                    reserved_output_usd_per_call,
                    reserved_output_usd_at_suggested,
                ) {
                    (Some(p), Some(now), Some(then)) if !echo => format!(
                        " Under --max-cost the budget guard reserves {max_tokens} output tokens \
                         ({} at ${p}/M for `{model}`) before every call, against {} at \
                         max_tokens {suggested_max_tokens}.",
                        usd(*now),
                        usd(*then)
                    ),
                    _ if echo => String::new(),
                    _ => format!(
                        " Under --max-cost or --max-tokens-total the budget guard reserves \
                         {max_tokens} output tokens before every call."
                    ),
                };
                format!(
                    "max_tokens is {max_tokens} but {calls} calls on `{model}` used at most \
                     {output_tokens_max} output tokens (p95 {output_tokens_p95}); \
                     max_tokens {suggested_max_tokens} would leave room to spare.{reserve}"
                )
            }
        }
    }
}

/// A suggestion with its message, as `pflow stats suggest --output-format json` prints it.
#[derive(Debug, Serialize)]
pub struct WithMessage<'a> {
    #[serde(flatten)]
    pub suggestion: &'a Suggestion,
    pub message: String,
}

impl<'a> From<&'a Suggestion> for WithMessage<'a> {
    fn from(s: &'a Suggestion) -> Self {
        WithMessage {
            suggestion: s,
            message: s.message(),
        }
    }
}

/// One successful workflow call as the suggestions read it.
struct Call {
    model: String,
    output: u64,
    cost_usd: Option<f64>,
    max_tokens: Option<u64>,
}

/// A node's calls, oldest first.
type NodeCalls = BTreeMap<(String, String), Vec<Call>>;

fn node_calls(
    conn: &Connection,
    workflow: Option<&str>,
    since_ms: i64,
) -> rusqlite::Result<NodeCalls> {
    let mut stmt = conn.prepare(
        "SELECT r.workflow_name, c.node_path, c.model, c.tokens_output, c.cost_usd, c.max_tokens
         FROM run_calls c JOIN runs r ON r.id = c.run_id
         WHERE c.failed = 0 AND c.section = 'workflow' AND c.node_path IS NOT NULL
           AND c.usage_source IS NOT NULL AND c.usage_source <> ?3
           AND r.workflow_name IS NOT NULL AND r.time_unix_ms >= ?1
           AND (?2 IS NULL OR r.workflow_name = ?2)
         ORDER BY r.time_unix_ms, r.id, c.seq",
    )?;
    let mut out: NodeCalls = BTreeMap::new();
    // A call whose provider sent no usage has no output size to compare.
    let unknown = crate::accounting::reported::UsageSource::Unknown.as_str();
    let rows = stmt.query_map(params![since_ms, workflow, unknown], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            Call {
                model: r.get(2)?,
                output: r.get::<_, i64>(3)?.max(0) as u64,
                cost_usd: r.get(4)?,
                max_tokens: r.get::<_, Option<i64>>(5)?.map(|m| m.max(0) as u64),
            },
        ))
    })?;
    for row in rows {
        let (wf, path, call) = row?;
        out.entry((wf, strip_indexes(&path)))
            .or_default()
            .push(call);
    }
    Ok(out)
}

fn model_on_node<'a>(model: &str, calls: impl Iterator<Item = &'a Call>) -> ModelOnNode {
    let (mut n, mut out_sum, mut out_max, mut cost, mut priced) = (0u64, 0u64, 0u64, 0.0, true);
    for c in calls {
        n += 1;
        out_sum += c.output;
        out_max = out_max.max(c.output);
        match c.cost_usd {
            Some(u) => cost += u,
            None => priced = false,
        }
    }
    ModelOnNode {
        model: model.to_string(),
        calls: n,
        cost_per_call_usd: (priced && n > 0).then(|| round_usd(cost / n as f64)),
        output_tokens_mean: if n == 0 {
            0.0
        } else {
            (out_sum as f64 / n as f64 * 10.0).round() / 10.0
        },
        output_tokens_max: out_max,
    }
}

fn cheaper_model(wf: &str, node: &str, calls: &[Call]) -> Option<Suggestion> {
    let current_model = &calls.last()?.model;
    let mut models: BTreeMap<&str, ModelOnNode> = BTreeMap::new();
    for c in calls {
        models.entry(&c.model).or_insert_with(|| {
            model_on_node(&c.model, calls.iter().filter(|x| x.model == c.model))
        });
    }
    let current = models.get(current_model.as_str())?.clone();
    let current_cost = current.cost_per_call_usd.filter(|c| *c > 0.0)?;
    if current.calls < MIN_CALLS {
        return None;
    }
    let similar = |a: f64, b: f64| {
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        hi <= lo * SIMILAR_OUTPUT_FACTOR
    };
    let best = models
        .values()
        .filter(|m| m.model != current.model && m.calls >= MIN_CALLS)
        .filter(|m| similar(m.output_tokens_mean, current.output_tokens_mean))
        .filter_map(|m| Some((m.cost_per_call_usd?, m)))
        .filter(|(cost, _)| *cost <= current_cost * CHEAPER_RATIO)
        .min_by(|a, b| a.0.total_cmp(&b.0))?;
    let saving = round_usd(current_cost - best.0);
    Some(Suggestion::CheaperModel {
        workflow: wf.to_string(),
        node: node.to_string(),
        saving_per_call_usd: saving,
        saving_share: ((saving / current_cost) * 1000.0).round() / 1000.0,
        alternative: best.1.clone(),
        current,
    })
}

fn max_tokens(wf: &str, node: &str, calls: &[Call], prices: &PriceTable) -> Option<Suggestion> {
    let last = calls.last()?;
    let setting = last.max_tokens?;
    let mut used: Vec<u64> = calls
        .iter()
        .filter(|c| c.model == last.model && c.max_tokens == Some(setting))
        .map(|c| c.output)
        .collect();
    if (used.len() as u64) < MIN_CALLS {
        return None;
    }
    used.sort_unstable();
    let most = *used.last()?;
    if setting <= most.saturating_mul(MAX_TOKENS_FACTOR) {
        return None;
    }
    let suggested = (most.saturating_mul(2)).max(16).next_power_of_two();
    if suggested >= setting {
        return None;
    }
    let price = prices
        .lookup(&last.model, None)
        .map(|p| p.price.output)
        .filter(|p| p.is_finite() && *p >= 0.0);
    let reserve = |tokens: u64| price.map(|p| round_usd(tokens as f64 * p / 1e6));
    Some(Suggestion::MaxTokens {
        workflow: wf.to_string(),
        node: node.to_string(),
        model: last.model.clone(),
        max_tokens: setting,
        calls: used.len() as u64,
        output_tokens_max: most,
        output_tokens_p95: percentile(&used, 95.0).unwrap_or(most),
        suggested_max_tokens: suggested,
        output_price_per_million: price,
        reserved_output_usd_per_call: reserve(setting),
        reserved_output_usd_at_suggested: reserve(suggested),
    })
}

/// The suggestions from calls on an open connection (see [`for_workflow`]).
pub fn suggestions_in(
    conn: &Connection,
    workflow: Option<&str>,
    since: Option<DateTime<Utc>>,
    prices: &PriceTable,
) -> rusqlite::Result<Vec<Suggestion>> {
    let since_ms = since.map_or(i64::MIN, |s| s.timestamp_millis());
    let mut out = Vec::new();
    for ((wf, node), calls) in node_calls(conn, workflow, since_ms)? {
        out.extend(cheaper_model(&wf, &node, &calls));
        out.extend(max_tokens(&wf, &node, &calls, prices));
    }
    Ok(out)
}

/// The suggestions for the workflow named `workflow` (every workflow when
/// `None`) from the runs in the history at `path` that started at or after
/// `since`, ordered by workflow and node. Empty when there is no history
/// (the file is not created). `prices` gives the output rates behind the
/// budget-reservation figures.
pub fn for_workflow(
    path: &Path,
    workflow: Option<&str>,
    since: Option<DateTime<Utc>>,
    prices: &PriceTable,
) -> Result<Vec<Suggestion>, HistoryError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    db::with_retry(path, |conn| {
        suggestions_in(conn, workflow, since, prices).map_err(HistoryError::sql(path))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(model: &str, output: u64, cost: Option<f64>, max: Option<u64>) -> Call {
        Call {
            model: model.into(),
            output,
            cost_usd: cost,
            max_tokens: max,
        }
    }

    fn calls(spec: &[(&str, u64, f64)]) -> Vec<Call> {
        spec.iter()
            .map(|&(m, o, c)| call(m, o, Some(c), None))
            .collect()
    }

    #[test]
    fn a_cheaper_model_with_similar_output_is_suggested() {
        let cs = calls(&[
            ("mini", 40, 0.001),
            ("mini", 44, 0.001),
            ("mini", 42, 0.001),
            ("big", 40, 0.01),
            ("big", 42, 0.01),
            ("big", 44, 0.01),
        ]);
        let s = cheaper_model("wf", "ask", &cs).expect("suggested");
        let Suggestion::CheaperModel {
            current,
            alternative,
            saving_per_call_usd,
            saving_share,
            ..
        } = &s
        else {
            panic!("{s:?}")
        };
        assert_eq!(current.model, "big");
        assert_eq!(current.cost_per_call_usd, Some(0.01));
        assert_eq!(alternative.model, "mini");
        assert_eq!(alternative.calls, 3);
        assert_eq!(alternative.output_tokens_mean, 42.0);
        assert_eq!(*saving_per_call_usd, 0.009);
        assert_eq!(*saving_share, 0.9);
        assert!(
            s.message().contains("`ask` has also run on `mini` with similar output: $0.001000 per call over 3 calls (42.0 output tokens on average) against $0.0100 per call over 3 calls (42.0 output tokens) on `big`"),
            "{}",
            s.message()
        );
    }

    #[test]
    fn no_cheaper_model_when_already_cheapest_output_differs_or_too_few_calls() {
        // The latest model is already the cheap one.
        let mut cs = calls(&[("big", 40, 0.01), ("big", 40, 0.01), ("big", 40, 0.01)]);
        cs.extend(calls(&[
            ("mini", 40, 0.001),
            ("mini", 40, 0.001),
            ("mini", 40, 0.001),
        ]));
        assert!(cheaper_model("wf", "ask", &cs).is_none());
        // Much shorter answers: not a like-for-like replacement.
        let cs = calls(&[
            ("mini", 10, 0.001),
            ("mini", 10, 0.001),
            ("mini", 10, 0.001),
            ("big", 40, 0.01),
            ("big", 40, 0.01),
            ("big", 40, 0.01),
        ]);
        assert!(cheaper_model("wf", "ask", &cs).is_none());
        // Two calls of the alternative are not enough.
        let cs = calls(&[
            ("mini", 40, 0.001),
            ("mini", 40, 0.001),
            ("big", 40, 0.01),
            ("big", 40, 0.01),
            ("big", 40, 0.01),
        ]);
        assert!(cheaper_model("wf", "ask", &cs).is_none());
        // Only 10% cheaper.
        let cs = calls(&[
            ("mini", 40, 0.009),
            ("mini", 40, 0.009),
            ("mini", 40, 0.009),
            ("big", 40, 0.01),
            ("big", 40, 0.01),
            ("big", 40, 0.01),
        ]);
        assert!(cheaper_model("wf", "ask", &cs).is_none());
    }

    /// Records one run of `wf` whose batch node `fan` made `outputs.len()` calls.
    fn record_run(db: &Path, wf: &str, source: &str, outputs: &[u64]) {
        use crate::accounting::summary::CallRecord;
        let m = crate::telemetry::metrics::MetricsSummary {
            calls: outputs
                .iter()
                .enumerate()
                .map(|(i, &o)| CallRecord {
                    section: "workflow".into(),
                    node_path: Some(format!("fan[{i}]")),
                    model: "m".into(),
                    duration_ms: 10.0,
                    tokens: crate::accounting::Tokens::call(5, o),
                    cost_usd: Some(0.001),
                    usage_source: Some(source.into()),
                    max_tokens: Some(1000),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let run = crate::history::RunRecord {
            time: Utc::now(),
            command: "run".into(),
            workflow_name: Some(wf.into()),
            workflow_hash: None,
            status: "ok".into(),
            exit_code: 0,
            trace_id: None,
            trace_file: None,
            metrics: m,
        };
        crate::history::record(db, &run).unwrap();
    }

    #[test]
    fn calls_come_from_the_history_with_batch_items_together_and_unknown_usage_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("history.db");
        let prices = PriceTable::builtin();
        // Nothing recorded yet: no suggestions, no file created.
        assert!(for_workflow(&db, None, None, prices).unwrap().is_empty());
        assert!(!db.exists());
        // Calls whose provider sent no usage say nothing about output size.
        record_run(&db, "a", "unknown", &[0, 0, 0]);
        assert!(for_workflow(&db, None, None, prices).unwrap().is_empty());
        // Three items of one batch are three calls of node `fan`.
        record_run(&db, "b", "provider", &[10, 20, 30]);
        let s = for_workflow(&db, None, None, prices).unwrap();
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(
            (s[0].workflow(), s[0].node(), s[0].kind()),
            ("b", "fan", "max_tokens")
        );
        let Suggestion::MaxTokens {
            calls,
            output_tokens_max,
            output_tokens_p95,
            suggested_max_tokens,
            ..
        } = &s[0]
        else {
            panic!("{s:?}")
        };
        assert_eq!(
            (*calls, *output_tokens_max, *output_tokens_p95),
            (3, 30, 30)
        );
        assert_eq!(*suggested_max_tokens, 64);
        assert!(for_workflow(&db, Some("a"), None, prices)
            .unwrap()
            .is_empty());
        assert_eq!(for_workflow(&db, Some("b"), None, prices).unwrap().len(), 1);
    }

    #[test]
    fn max_tokens_far_above_use() {
        let prices =
            PriceTable::with_overrides_str(r#"{"m": {"input": 1.0, "output": 10.0}}"#, "t")
                .unwrap()
                .0;
        let cs: Vec<Call> = [30, 37, 20]
            .iter()
            .map(|&o| call("m", o, Some(0.0), Some(4096)))
            .collect();
        let s = max_tokens("wf", "ask", &cs, &prices).expect("suggested");
        let Suggestion::MaxTokens {
            max_tokens,
            calls,
            output_tokens_max,
            output_tokens_p95,
            suggested_max_tokens,
            reserved_output_usd_per_call,
            reserved_output_usd_at_suggested,
            ..
        } = &s
        else {
            panic!("{s:?}")
        };
        assert_eq!((*max_tokens, *calls), (4096, 3));
        assert_eq!((*output_tokens_max, *output_tokens_p95), (37, 37));
        assert_eq!(*suggested_max_tokens, 128);
        assert_eq!(*reserved_output_usd_per_call, Some(0.04096));
        assert_eq!(*reserved_output_usd_at_suggested, Some(0.00128));
        // Used up to a quarter of the setting: no suggestion; no setting: none either.
        let near: Vec<Call> = [30, 37, 1024]
            .iter()
            .map(|&o| call("m", o, None, Some(4096)))
            .collect();
        assert!(super::max_tokens("wf", "ask", &near, &prices).is_none());
        let unset: Vec<Call> = [30, 37, 20]
            .iter()
            .map(|&o| call("m", o, None, None))
            .collect();
        assert!(super::max_tokens("wf", "ask", &unset, &prices).is_none());
    }
}
