//! The questions `pflow stats` asks: totals since a point in time, usage
//! grouped by day (UTC), workflow, model or node, and pruning old runs.

use super::{db, HistoryError};
pub use crate::accounting::stored::UsageSums;
use crate::accounting::stored::{tokens_at, usage_at, TOKEN_COLUMNS, USAGE_SUMS};
use crate::accounting::Tokens;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, Row};
use serde::Serialize;
use std::path::Path;

/// What `pflow stats --by` groups on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    Day,
    Workflow,
    Model,
    Node,
}

impl GroupBy {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Day => "day",
            GroupBy::Workflow => "workflow",
            GroupBy::Model => "model",
            GroupBy::Node => "node",
        }
    }
}

/// Totals over the runs in range.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub runs: u64,
    pub ok: u64,
    /// Every run that did not succeed (`failed`, `invalid` and `interrupted`).
    pub failed: u64,
    pub invalid: u64,
    pub interrupted: u64,
    pub duration_ms: f64,
    #[serde(flatten)]
    pub usage: UsageSums,
    /// Nodes restored from checkpoints or served from the memo cache: the
    /// work not repeated, and what it cost when first made (not in `cost_usd`);
    /// left out when no run reused anything.
    #[serde(skip_serializing_if = "ReusedSums::is_empty")]
    pub reused: ReusedSums,
}

/// `totals.reused` of `pflow stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReusedSums {
    pub nodes: u64,
    pub llm_calls: u64,
    pub tokens_total: u64,
    /// Null when a reused call's original cost is unknown.
    pub cost_reused_usd: Option<f64>,
}

impl ReusedSums {
    pub fn is_empty(&self) -> bool {
        self.nodes == 0
    }
}

/// One row of the grouped table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    pub key: String,
    /// Runs that contributed to this group.
    pub runs: u64,
    /// Run-level groups (`day`, `workflow`) only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ok: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<u64>,
    /// Run time (`day`, `workflow`) or node time (`node`); null for `model`.
    pub duration_ms: Option<f64>,
    #[serde(flatten)]
    pub usage: UsageSums,
    /// `model` groups only: cost per call and what the per-call rows say
    /// (latency percentiles, output tokens per second).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub per_call: Option<PerCall>,
}

/// The per-call columns of a `model` group (`cost_per_call_usd`,
/// `calls_timed`, `latency_p50_ms`, `latency_p95_ms`, `output_tokens_per_s`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PerCall {
    /// The group's cost over its LLM calls; null when some call had no known price.
    pub cost_per_call_usd: Option<f64>,
    #[serde(flatten)]
    pub perf: super::trends::ModelPerf,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    pub totals: Totals,
    pub groups: Vec<Group>,
}

/// The grouping query for `by`: one row per key, the usage columns of
/// [`USAGE_SUMS`] after `key, runs, ok, failed, duration`.
pub(crate) fn group_sql(by: GroupBy) -> String {
    let (key, from, runs, ok, failed, duration, order) = match by {
        GroupBy::Day => (
            "strftime('%Y-%m-%d', t.time_unix_ms / 1000, 'unixepoch')",
            "runs t",
            "COUNT(*)",
            "SUM(t.status = 'ok')",
            "SUM(t.status <> 'ok')",
            "SUM(t.duration_ms)",
            "key",
        ),
        GroupBy::Workflow => (
            "COALESCE(t.workflow_name, '(unnamed)')",
            "runs t",
            "COUNT(*)",
            "SUM(t.status = 'ok')",
            "SUM(t.status <> 'ok')",
            "SUM(t.duration_ms)",
            "13 DESC, 9 DESC, key",
        ),
        GroupBy::Model => (
            "t.model",
            "run_models t JOIN runs r ON r.id = t.run_id",
            "COUNT(DISTINCT t.run_id)",
            "NULL",
            "NULL",
            "NULL",
            "13 DESC, 9 DESC, key",
        ),
        GroupBy::Node => (
            // Planner steps keep their section so they never merge with a workflow node of the same id.
            "CASE t.section WHEN 'workflow' THEN t.node_path ELSE t.section || ':' || t.node_path END",
            "run_nodes t JOIN runs r ON r.id = t.run_id",
            "COUNT(DISTINCT t.run_id)",
            "NULL",
            "NULL",
            "SUM(t.duration_ms)",
            "13 DESC, 9 DESC, key",
        ),
    };
    let time = if from.starts_with("runs") {
        "t.time_unix_ms"
    } else {
        "r.time_unix_ms"
    };
    // Columns: 1 key, 2 runs, 3 ok, 4 failed, 5 duration, 6 calls, 7-12 tokens (9 total),
    // 13 cost, 14 complete: groups other than days sort most expensive first.
    format!(
        "SELECT {key} AS key, {runs}, {ok}, {failed}, {duration}, {USAGE_SUMS}
         FROM {from} WHERE {time} >= ?1 GROUP BY key ORDER BY {order}"
    )
}

fn count(r: &Row, i: usize) -> rusqlite::Result<u64> {
    Ok(r.get::<_, Option<i64>>(i)?.unwrap_or(0).max(0) as u64)
}

/// Totals and groups of the runs that started at or after `since` (all when `None`).
pub fn query(
    conn: &Connection,
    since: Option<DateTime<Utc>>,
    by: GroupBy,
) -> rusqlite::Result<Stats> {
    let since_ms = since.map_or(i64::MIN, |s| s.timestamp_millis());
    let totals = conn.query_row(
        &format!(
            "SELECT COUNT(*), COALESCE(SUM(t.status = 'ok'), 0), COALESCE(SUM(t.status <> 'ok'), 0),
                COALESCE(SUM(t.status = 'invalid'), 0), COALESCE(SUM(t.status = 'interrupted'), 0),
                COALESCE(SUM(t.duration_ms), 0.0),
                COALESCE(SUM(t.reused_nodes), 0), COALESCE(SUM(t.reused_llm_calls), 0),
                COALESCE(SUM(t.reused_tokens_total), 0), COALESCE(SUM(t.cost_reused_usd), 0.0),
                COALESCE(MIN(t.cost_reused_complete), 1), {USAGE_SUMS}
             FROM runs t WHERE t.time_unix_ms >= ?1"
        ),
        params![since_ms],
        |r| {
            Ok(Totals {
                runs: count(r, 0)?,
                ok: count(r, 1)?,
                failed: count(r, 2)?,
                invalid: count(r, 3)?,
                interrupted: count(r, 4)?,
                duration_ms: r.get(5)?,
                reused: ReusedSums {
                    nodes: count(r, 6)?,
                    llm_calls: count(r, 7)?,
                    tokens_total: count(r, 8)?,
                    cost_reused_usd: r
                        .get::<_, bool>(10)?
                        .then(|| r.get::<_, f64>(9).map(crate::accounting::round_usd))
                        .transpose()?,
                },
                usage: usage_at(r, 11)?,
            })
        },
    )?;
    let mut stmt = conn.prepare(&group_sql(by))?;
    let mut groups = stmt
        .query_map(params![since_ms], |r| {
            Ok(Group {
                key: r.get(0)?,
                runs: count(r, 1)?,
                ok: r.get::<_, Option<i64>>(2)?.map(|n| n.max(0) as u64),
                failed: r.get::<_, Option<i64>>(3)?.map(|n| n.max(0) as u64),
                duration_ms: r.get(4)?,
                usage: usage_at(r, 5)?,
                per_call: None,
            })
        })?
        .collect::<rusqlite::Result<Vec<Group>>>()?;
    if by == GroupBy::Model {
        let mut perf = super::trends::model_perf(conn, since_ms)?;
        for g in &mut groups {
            g.per_call = Some(PerCall {
                cost_per_call_usd: super::trends::cost_per_call(&g.usage),
                perf: perf.remove(&g.key).unwrap_or_default(),
            });
        }
    }
    Ok(Stats { totals, groups })
}

/// `pflow stats`: empty stats when no history exists yet (the file is not created).
pub fn stats(
    path: &Path,
    since: Option<DateTime<Utc>>,
    by: GroupBy,
) -> Result<Stats, HistoryError> {
    if !path.exists() {
        return Ok(Stats {
            totals: Totals::default(),
            groups: vec![],
        });
    }
    db::with_retry(path, |conn| {
        query(conn, since, by).map_err(HistoryError::sql(path))
    })
}

/// At most this many of a workflow's latest successful runs feed its expected cost.
pub const PAST_RUNS_LIMIT: u64 = 50;

/// What earlier successful runs of one workflow (same IR hash) used, as
/// stored tokens: the estimate picks the runs that called the same models
/// and prices them again at today's prices ([`crate::runtime::estimate`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PastRuns {
    /// The latest [`PAST_RUNS_LIMIT`] runs, newest first.
    pub runs: Vec<PastRun>,
}

/// One earlier run's workflow usage.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PastRun {
    /// Tokens per model (as requested).
    pub models: std::collections::BTreeMap<String, Tokens>,
    /// Tokens per node path with batch indexes removed (`each[3]/ask` →
    /// `each/ask`), summed within the run.
    pub nodes: std::collections::BTreeMap<String, Tokens>,
}

/// `each[3]/ask` → `each/ask`: batch items of one node grouped together.
pub fn strip_indexes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        match after.find(']') {
            Some(close) if close > 0 && after[..close].bytes().all(|b| b.is_ascii_digit()) => {
                out.push_str(&rest[..open]);
                rest = &after[close + 1..];
            }
            _ => {
                out.push_str(&rest[..=open]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// [`past_runs`] on an open connection.
pub fn past_runs_in(conn: &Connection, workflow_hash: &str) -> rusqlite::Result<PastRuns> {
    let mut stmt = conn.prepare(
        "SELECT id FROM runs WHERE workflow_hash = ?1 AND status = 'ok' AND command = 'run'
         ORDER BY time_unix_ms DESC, id DESC LIMIT ?2",
    )?;
    let ids = stmt
        .query_map(params![workflow_hash, PAST_RUNS_LIMIT as i64], |r| {
            r.get::<_, i64>(0)
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut model_rows = conn.prepare_cached(&format!(
        "SELECT model, {TOKEN_COLUMNS} FROM run_models WHERE run_id = ?1"
    ))?;
    let mut node_rows = conn.prepare_cached(&format!(
        "SELECT node_path, {TOKEN_COLUMNS} FROM run_nodes WHERE run_id = ?1 AND section = 'workflow'"
    ))?;
    let mut runs = Vec::with_capacity(ids.len());
    for id in &ids {
        let mut run = PastRun::default();
        for row in model_rows.query_map(params![id], |r| {
            Ok((r.get::<_, String>(0)?, tokens_at(r, 1)?))
        })? {
            let (model, t) = row?;
            run.models.entry(model).or_default().add(&t);
        }
        for row in node_rows.query_map(params![id], |r| {
            Ok((r.get::<_, String>(0)?, tokens_at(r, 1)?))
        })? {
            let (path, t) = row?;
            run.nodes.entry(strip_indexes(&path)).or_default().add(&t);
        }
        runs.push(run);
    }
    Ok(PastRuns { runs })
}

/// The earlier successful `pflow run`s of the workflow whose IR hashes to
/// `workflow_hash`; empty when there is no history yet (the file is not created).
pub fn past_runs(path: &Path, workflow_hash: &str) -> Result<PastRuns, HistoryError> {
    if !path.exists() {
        return Ok(PastRuns::default());
    }
    db::with_retry(path, |conn| {
        past_runs_in(conn, workflow_hash).map_err(HistoryError::sql(path))
    })
}

/// Deletes the runs that started before `cutoff`, with their model and node rows; returns how many runs.
pub fn prune(path: &Path, cutoff: DateTime<Utc>) -> Result<u64, HistoryError> {
    if !path.exists() {
        return Ok(0);
    }
    db::with_retry(path, |conn| {
        let sql = HistoryError::sql(path);
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sql)?;
        let ms = cutoff.timestamp_millis();
        // Explicit child deletes: they do not depend on foreign_keys being on.
        let run = |t: &rusqlite::Transaction, q: &str| t.execute(q, params![ms]);
        let removed = (|| {
            run(&tx, "DELETE FROM run_models WHERE run_id IN (SELECT id FROM runs WHERE time_unix_ms < ?1)")?;
            run(&tx, "DELETE FROM run_node_sets WHERE run_id IN (SELECT id FROM runs WHERE time_unix_ms < ?1)")?;
            run(&tx, "DELETE FROM run_calls WHERE run_id IN (SELECT id FROM runs WHERE time_unix_ms < ?1)")?;
            run(&tx, "DELETE FROM runs WHERE time_unix_ms < ?1")
        })()
        .map_err(HistoryError::sql(path))?;
        tx.commit().map_err(HistoryError::sql(path))?;
        Ok(removed as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::CostTotal;
    use crate::history::record::{record, RunRecord};
    use crate::telemetry::metrics::{MetricsSummary, Usage};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn usage(calls: u64, input: u64, output: u64, cost: f64) -> Usage {
        Usage {
            llm_calls: calls,
            tokens: Tokens::call(input, output),
            cost: CostTotal::new(cost, true),
            estimated_calls: 0,
            ..Usage::default()
        }
    }

    /// A run of `name` with one LLM node `ask` on `model` and a shell node `prep`.
    /// A run as a row: time, workflow, status, model, (calls, input, output, cost).
    type Row<'a> = (&'a str, &'a str, &'a str, &'a str, (u64, u64, u64, f64));

    fn runs(rows: &[Row]) -> Vec<RunRecord> {
        rows.iter()
            .map(|&(time, name, status, model, (c, i, o, usd))| {
                run(time, name, status, model, usage(c, i, o, usd))
            })
            .collect()
    }

    fn run(time: &str, name: &str, status: &str, model: &str, u: Usage) -> RunRecord {
        let mut m = MetricsSummary::default();
        m.workflow.usage.llm_calls = u.llm_calls;
        m.workflow.usage.tokens = u.tokens;
        m.workflow.usage.cost = u.cost;
        m.workflow.node_timings.insert("prep".into(), 5.0);
        m.workflow.node_timings.insert("ask".into(), 100.0);
        m.workflow.node_usage.insert("ask".into(), u.clone());
        m.total.duration_ms = 110.0;
        m.total.llm_calls = u.llm_calls;
        m.total.tokens_total = u.tokens.total;
        m.total.cost = u.cost;
        m.models.insert(model.into(), u);
        RunRecord {
            time: at(time),
            command: "run".into(),
            workflow_name: Some(name.into()),
            workflow_hash: Some("abc".into()),
            status: status.into(),
            exit_code: if status == "ok" { 0 } else { 1 },
            trace_id: None,
            trace_file: None,
            metrics: m,
        }
    }

    fn fixture() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("history.db");
        #[rustfmt::skip]
        let rows = runs(&[
            ("2025-01-01T10:00:00Z", "a", "ok", "gpt-4o", (1, 100, 50, 0.5)),
            ("2025-01-01T23:59:59Z", "b", "failed", "echo", (2, 10, 10, 0.0)),
            ("2025-01-02T00:00:00Z", "a", "ok", "gpt-4o", (1, 200, 100, 1.0)),
        ]);
        for r in rows {
            record(&db, &r).unwrap();
        }
        (dir, db)
    }

    #[test]
    fn node_rows_read_back_as_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("history.db");
        let mut r = run(
            "2025-01-01T10:00:00Z",
            "a",
            "ok",
            "m",
            usage(2, 7, 3, 0.125),
        );
        r.metrics.workflow.node_usage.get_mut("ask").unwrap().cost = CostTotal::new(0.125, false);
        // Usage without a node span of its own, a batch item (rolled into its node) and a planner step.
        r.metrics
            .workflow
            .node_usage
            .insert("late".into(), usage(1, 1, 1, 0.0));
        r.metrics.workflow.node_timings.insert("fan[3]".into(), 9.0);
        let mut planner = crate::telemetry::metrics::SectionMetrics::default();
        planner.node_timings.insert("plan \"x\" [y]".into(), 0.5);
        r.metrics.planner = Some(planner);
        record(&db, &r).unwrap();
        let conn = db::open(&db).unwrap();
        /// section, path, duration, calls, input, output, total, cost, complete
        type NodeRow = (String, String, f64, i64, i64, i64, i64, f64, i64);
        let rows: Vec<NodeRow> = conn
            .prepare(
                "SELECT section, node_path, duration_ms, llm_calls, tokens_input, tokens_output,
                    tokens_total, cost_usd, cost_complete FROM run_nodes ORDER BY 1, 2",
            )
            .unwrap()
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                ))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let row = |sec: &str, p: &str, d, c, i, o, t, usd, complete| {
            (sec.to_string(), p.to_string(), d, c, i, o, t, usd, complete)
        };
        assert_eq!(
            rows,
            [
                row("planner", "plan \"x\" [y]", 0.5, 0, 0, 0, 0, 0.0, 1),
                row("workflow", "ask", 100.0, 2, 7, 3, 10, 0.125, 0),
                row("workflow", "late", 0.0, 1, 1, 1, 2, 0.0, 1),
                row("workflow", "prep", 5.0, 0, 0, 0, 0, 0.0, 1),
            ]
        );
        // A zero-usage node reads the same SQLite types as one with usage.
        let types: Vec<String> = conn
            .prepare("SELECT DISTINCT typeof(duration_ms) || typeof(llm_calls) || typeof(cost_usd) || typeof(cost_complete) FROM run_nodes")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(types, ["realintegerrealinteger"]);
    }

    #[test]
    fn totals_and_days() {
        let (_d, db) = fixture();
        let s = stats(&db, None, GroupBy::Day).unwrap();
        assert_eq!(s.totals.runs, 3);
        assert_eq!((s.totals.ok, s.totals.failed), (2, 1));
        assert_eq!(s.totals.usage.llm_calls, 4);
        assert_eq!(s.totals.usage.tokens.input, 310);
        assert_eq!(s.totals.usage.tokens_total, 470);
        assert_eq!(s.totals.usage.cost.usd, Some(1.5));
        assert_eq!(s.totals.duration_ms, 330.0);
        let days: Vec<_> = s
            .groups
            .iter()
            .map(|g| (g.key.as_str(), g.runs, g.failed))
            .collect();
        assert_eq!(
            days,
            [("2025-01-01", 2, Some(1)), ("2025-01-02", 1, Some(0))]
        );
    }

    #[test]
    fn since_filters_by_start_time() {
        let (_d, db) = fixture();
        let s = stats(&db, Some(at("2025-01-01T23:59:59Z")), GroupBy::Workflow).unwrap();
        assert_eq!(s.totals.runs, 2);
        // Most expensive first.
        let keys: Vec<_> = s
            .groups
            .iter()
            .map(|g| (g.key.as_str(), g.runs, g.usage.cost.lower_bound_usd))
            .collect();
        assert_eq!(keys, [("a", 1, 1.0), ("b", 1, 0.0)]);
    }

    #[test]
    fn models_and_nodes_group_child_rows() {
        let (_d, db) = fixture();
        let s = stats(&db, None, GroupBy::Model).unwrap();
        let m: Vec<_> = s
            .groups
            .iter()
            .map(|g| {
                (
                    g.key.as_str(),
                    g.runs,
                    g.usage.llm_calls,
                    g.usage.tokens_total,
                    g.duration_ms,
                )
            })
            .collect();
        assert_eq!(m, [("gpt-4o", 2, 2, 450, None), ("echo", 1, 2, 20, None)]);
        let s = stats(&db, None, GroupBy::Node).unwrap();
        let n: Vec<_> = s
            .groups
            .iter()
            .map(|g| (g.key.as_str(), g.runs, g.usage.llm_calls, g.duration_ms))
            .collect();
        assert_eq!(n, [("ask", 3, 4, Some(300.0)), ("prep", 3, 0, Some(15.0))]);
    }

    #[test]
    fn prune_removes_runs_and_their_rows() {
        let (_d, db) = fixture();
        assert_eq!(prune(&db, at("2025-01-02T00:00:00Z")).unwrap(), 2);
        let s = stats(&db, None, GroupBy::Model).unwrap();
        assert_eq!(s.totals.runs, 1);
        assert_eq!(s.groups.len(), 1);
        let conn = db::open(&db).unwrap();
        let orphans: i64 = conn
            .query_row(
                "SELECT (SELECT count(*) FROM run_models) + (SELECT count(*) FROM run_nodes)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(orphans, 1 + 2);
    }

    #[test]
    fn past_runs_give_medians_per_workflow_and_node() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("history.db");
        #[rustfmt::skip]
        let mut recs = runs(&[
            ("2025-01-01T10:00:00Z", "a", "ok", "gpt-4o", (1, 100, 50, 0.5)),
            ("2025-01-01T11:00:00Z", "a", "ok", "gpt-4o", (1, 200, 100, 0.9)),
            ("2025-01-01T12:00:00Z", "a", "ok", "gpt-4o", (1, 300, 100, 0.6)),
            // A failed run and another workflow's run do not count.
            ("2025-01-01T13:00:00Z", "a", "failed", "gpt-4o", (1, 9, 9, 9.0)),
            ("2025-01-01T14:00:00Z", "b", "ok", "gpt-4o", (1, 9, 9, 7.0)),
        ]);
        recs[4].workflow_hash = Some("other".into());
        // Batch items of `each` are rolled up under `each` (as the metrics
        // give them); the run without it counts 0 there.
        let mut each = usage(2, 20, 0, 0.5);
        each.items.insert("each[0]".into(), usage(1, 10, 0, 0.25));
        each.items.insert("each[1]".into(), usage(1, 10, 0, 0.25));
        recs[2]
            .metrics
            .workflow
            .node_usage
            .insert("each".into(), each);
        for r in &recs {
            record(&db, r).unwrap();
        }
        let p = past_runs(&db, "abc").unwrap();
        // The three ok runs of `abc`, newest first, with their stored tokens.
        assert_eq!(p.runs.len(), 3);
        let inputs: Vec<u64> = p.runs.iter().map(|r| r.models["gpt-4o"].input).collect();
        assert_eq!(inputs, [300, 200, 100]);
        assert_eq!(p.runs[0].nodes["ask"].total, 400);
        assert_eq!(p.runs[0].nodes["each"].input, 20);
        assert!(!p.runs[1].nodes.contains_key("each"));
    }

    #[test]
    fn model_groups_carry_latency_percentiles_cost_per_call_and_speed() {
        use crate::accounting::summary::CallRecord;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("history.db");
        let call = |ms: f64, output: u64, estimated: bool, failed: bool| CallRecord {
            section: "workflow".into(),
            node_path: Some("ask".into()),
            model: "gpt-4o".into(),
            duration_ms: ms,
            tokens: Tokens::call(10, output),
            cost_usd: Some(0.25),
            usage_source: Some(if estimated { "estimated" } else { "provider" }.into()),
            failed,
            ..Default::default()
        };
        let mut a = run(
            "2025-01-01T10:00:00Z",
            "a",
            "ok",
            "gpt-4o",
            usage(2, 100, 50, 0.5),
        );
        a.metrics.calls = vec![call(100.0, 20, false, false), call(300.0, 40, false, false)];
        let mut b = run(
            "2025-01-02T10:00:00Z",
            "a",
            "ok",
            "gpt-4o",
            usage(2, 100, 50, 0.5),
        );
        // A failed attempt has no latency worth counting; an estimated count no speed.
        b.metrics.calls = vec![call(200.0, 1000, true, false), call(9000.0, 0, false, true)];
        record(&db, &a).unwrap();
        record(&db, &b).unwrap();
        let s = stats(&db, None, GroupBy::Model).unwrap();
        let p = s.groups[0]
            .per_call
            .as_ref()
            .expect("model groups have per-call columns");
        assert_eq!(p.cost_per_call_usd, Some(0.25));
        assert_eq!(p.perf.calls_timed, 3);
        assert_eq!(p.perf.latency_p50_ms, Some(200.0));
        assert_eq!(p.perf.latency_p95_ms, Some(300.0));
        // (20 + 40) tokens over 0.4 s.
        assert_eq!(p.perf.output_tokens_per_s, Some(150.0));
        let v = serde_json::to_value(&s.groups[0]).unwrap();
        assert_eq!(v["latency_p50_ms"], 200.0);
        assert_eq!(v["cost_per_call_usd"], 0.25);
        // Other groupings keep their columns as they were.
        let d = serde_json::to_value(&stats(&db, None, GroupBy::Day).unwrap().groups[0]).unwrap();
        assert!(d.get("latency_p50_ms").is_none() && d.get("cost_per_call_usd").is_none());
        // Pruning takes the call rows with their runs.
        prune(&db, at("2025-01-02T00:00:00Z")).unwrap();
        let n: i64 = db::open(&db)
            .unwrap()
            .query_row("SELECT count(*) FROM run_calls", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
    }

    #[test]
    fn missing_history_is_empty_and_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("history.db");
        let s = stats(&db, None, GroupBy::Day).unwrap();
        assert_eq!(s.totals.runs, 0);
        assert!(s.groups.is_empty());
        assert!(!db.exists());
        assert_eq!(prune(&db, Utc::now()).unwrap(), 0);
    }
}
