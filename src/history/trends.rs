//! Per-call figures from the history's `run_calls` rows: latency
//! percentiles, output tokens per second and cost per call per model (what
//! `pflow stats --by model` and the stats page add to the sums), and the
//! most expensive nodes of all workflows.
//!
//! Percentiles use the nearest-rank method: the p-th percentile of n sorted
//! values is the value at rank ⌈p/100 · n⌉, always one of the recorded
//! latencies, so a user can find the call behind it.

use crate::accounting::reported::UsageSource;
use crate::accounting::round_usd;
use crate::accounting::stored::{usage_at, UsageSums, USAGE_SUMS};
use rusqlite::{params, Connection};
use serde::Serialize;
use std::collections::BTreeMap;

/// The nearest-rank `p`-th percentile (0 < p ≤ 100) of ascending `sorted`.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() || !(p > 0.0 && p <= 100.0) {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// What the per-call rows say about one model.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ModelPerf {
    /// Successful calls with a recorded latency (runs recorded before
    /// per-call history have none).
    pub calls_timed: u64,
    /// Median call latency (nearest rank), in ms.
    pub latency_p50_ms: Option<f64>,
    /// 95th-percentile call latency (nearest rank), in ms.
    pub latency_p95_ms: Option<f64>,
    /// Output tokens per second of call time, over the calls whose token
    /// counts the provider reported (null when none did).
    pub output_tokens_per_s: Option<f64>,
}

/// [`ModelPerf`] of every model with calls in runs started at or after `since_ms`.
pub fn model_perf(
    conn: &Connection,
    since_ms: i64,
) -> rusqlite::Result<BTreeMap<String, ModelPerf>> {
    let mut stmt = conn.prepare_cached(
        "SELECT c.model, c.duration_ms, c.tokens_output, c.usage_source IN (?2, ?3)
         FROM run_calls c JOIN runs r ON r.id = c.run_id
         WHERE r.time_unix_ms >= ?1 AND c.failed = 0",
    )?;
    let reported = [UsageSource::Provider, UsageSource::ProviderStream].map(UsageSource::as_str);
    #[derive(Default)]
    struct Acc {
        latencies: Vec<f64>,
        output: u64,
        secs: f64,
    }
    let mut by: BTreeMap<String, Acc> = BTreeMap::new();
    let rows = stmt.query_map(params![since_ms, reported[0], reported[1]], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, f64>(1)?,
            r.get::<_, i64>(2)?.max(0) as u64,
            r.get::<_, Option<bool>>(3)?.unwrap_or(false),
        ))
    })?;
    for row in rows {
        let (model, ms, output, reported) = row?;
        let a = by.entry(model).or_default();
        a.latencies.push(ms);
        if reported && output > 0 && ms > 0.0 {
            a.output += output;
            a.secs += ms / 1000.0;
        }
    }
    Ok(by
        .into_iter()
        .map(|(model, mut a)| {
            a.latencies.sort_by(f64::total_cmp);
            let perf = ModelPerf {
                calls_timed: a.latencies.len() as u64,
                latency_p50_ms: percentile(&a.latencies, 50.0),
                latency_p95_ms: percentile(&a.latencies, 95.0),
                output_tokens_per_s: (a.secs > 0.0)
                    .then(|| (a.output as f64 / a.secs * 10.0).round() / 10.0),
            };
            (model, perf)
        })
        .collect())
}

/// Cost per call of a usage sum: null when some call had no known price.
pub fn cost_per_call(u: &UsageSums) -> Option<f64> {
    (u.llm_calls > 0)
        .then_some(u.cost.usd)
        .flatten()
        .map(|usd| round_usd(usd / u.llm_calls as f64))
}

/// One node of one workflow, summed over the runs in range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeCost {
    pub workflow: String,
    /// The node path with batch items rolled up under their batch node.
    pub node: String,
    pub runs: u64,
    /// Node time summed over runs, in ms.
    pub duration_ms: f64,
    #[serde(flatten)]
    pub usage: UsageSums,
}

/// The `limit` workflow nodes that cost the most (then used the most
/// tokens) in runs started at or after `since_ms`; nodes without LLM calls
/// are left out.
pub fn top_nodes(
    conn: &Connection,
    since_ms: i64,
    limit: usize,
) -> rusqlite::Result<Vec<NodeCost>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT COALESCE(r.workflow_name, '(unnamed)'), t.node_path, COUNT(DISTINCT t.run_id),
            COALESCE(SUM(t.duration_ms), 0.0), {USAGE_SUMS}
         FROM run_nodes t JOIN runs r ON r.id = t.run_id
         WHERE r.time_unix_ms >= ?1 AND t.section = 'workflow'
         GROUP BY 1, 2 HAVING SUM(t.llm_calls) > 0
         ORDER BY 12 DESC, 8 DESC, 1, 2 LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![since_ms, limit as i64], |r| {
        Ok(NodeCost {
            workflow: r.get(0)?,
            node: r.get(1)?,
            runs: r.get::<_, i64>(2)?.max(0) as u64,
            duration_ms: r.get(3)?,
            usage: usage_at(r, 4)?,
        })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(10.0));
        assert_eq!(percentile(&v, 95.0), Some(19.0));
        assert_eq!(percentile(&v, 100.0), Some(20.0));
        assert_eq!(percentile(&[7.0], 95.0), Some(7.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), Some(2.0));
        assert_eq!(percentile::<f64>(&[], 50.0), None);
        assert_eq!(percentile(&v, 0.0), None);
    }
}
