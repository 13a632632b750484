//! Appending one run: its totals in `runs`, its usage per model in
//! `run_models`, per node in `run_node_sets` (one JSON array per section, read
//! through the `run_nodes` view) and per LLM call in `run_calls`,
//! all in one transaction so a reader never sees half a run and concurrent
//! runs never lose one.

use super::{db, HistoryError};
use crate::accounting::{batch_of, Tokens, Usage};
use crate::telemetry::metrics::MetricsSummary;
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Transaction};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Which workflow ran: its name and a hash of its IR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowIdent {
    pub name: Option<String>,
    /// sha256 (hex) of the IR as pflow serializes it: compact JSON, keys in
    /// the order written. Formatting and whitespace in the file do not change it.
    pub hash: String,
}

impl WorkflowIdent {
    pub fn of(ir: &crate::ir::WorkflowIr) -> WorkflowIdent {
        let bytes = serde_json::to_vec(ir).unwrap_or_default();
        let digest = Sha256::digest(&bytes);
        WorkflowIdent {
            name: ir.name().map(str::to_string),
            hash: crate::format::hex(&digest),
        }
    }
}

/// One run as it is recorded.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// When the run started.
    pub time: DateTime<Utc>,
    /// `run` or `plan`.
    pub command: String,
    pub workflow_name: Option<String>,
    pub workflow_hash: Option<String>,
    /// `ok`, `failed`, `invalid` or `interrupted`.
    pub status: String,
    pub exit_code: i32,
    pub trace_id: Option<String>,
    pub trace_file: Option<PathBuf>,
    pub metrics: MetricsSummary,
}

/// Appends `run` to the database at `path` (created on first use); returns its row id.
pub fn record(path: &Path, run: &RunRecord) -> Result<i64, HistoryError> {
    db::with_retry(path, |conn| {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(HistoryError::sql(path))?;
        let id = insert(&tx, run).map_err(HistoryError::sql(path))?;
        tx.commit().map_err(HistoryError::sql(path))?;
        Ok(id)
    })
}

/// The usage columns every table shares: `llm_calls`, the six token counts,
/// `cost_usd` (the priced sum) and `cost_complete`.
fn usage_columns(u: &Usage) -> [Value; 9] {
    let t = &u.tokens;
    let n = |v: u64| Value::Integer(i(v));
    [
        n(u.llm_calls),
        n(t.input),
        n(t.output),
        n(t.total),
        n(t.cache_read),
        n(t.cache_write),
        n(t.reasoning),
        Value::Real(u.cost.lower_bound_usd),
        Value::Integer(i64::from(u.cost.complete)),
    ]
}

fn i(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(crate) fn insert(tx: &Transaction, run: &RunRecord) -> rusqlite::Result<i64> {
    let m = &run.metrics;
    // History rows leave the run: redacted like every other surface.
    let red = |s: &str| crate::telemetry::redact::redact(s).into_owned();
    let tokens = m.planner.as_ref().map_or(m.workflow.usage.tokens, |p| {
        Tokens::sum(&m.workflow.usage.tokens, &p.usage.tokens)
    });
    tx.execute(
        "INSERT INTO runs (time, time_unix_ms, command, workflow_name, workflow_hash, status,
            exit_code, duration_ms, llm_calls, tokens_input, tokens_output, tokens_total,
            tokens_cache_read, tokens_cache_write, tokens_reasoning, cost_usd, cost_complete,
            trace_id, trace_file)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
        params![
            run.time.to_rfc3339_opts(SecondsFormat::Millis, true),
            run.time.timestamp_millis(),
            red(&run.command),
            run.workflow_name.as_deref().map(red),
            run.workflow_hash,
            run.status,
            run.exit_code,
            m.total.duration_ms,
            i(m.total.llm_calls),
            i(tokens.input),
            i(tokens.output),
            i(m.total.tokens_total),
            i(tokens.cache_read),
            i(tokens.cache_write),
            i(tokens.reasoning),
            m.total.cost.lower_bound_usd,
            m.total.cost.complete,
            run.trace_id,
            run.trace_file.as_ref().map(|p| p.display().to_string()),
        ],
    )?;
    let id = tx.last_insert_rowid();
    // Work restored or served from the memo: what it cost when first made, beside this run's cost.
    if let Some(r) = &m.reused {
        tx.execute(
            "UPDATE runs SET reused_nodes = ?2, reused_llm_calls = ?3, reused_tokens_total = ?4,
                cost_reused_usd = ?5, cost_reused_complete = ?6 WHERE id = ?1",
            params![
                id,
                i(r.nodes_restored + r.nodes_cached),
                i(r.llm_calls),
                i(r.tokens.total),
                r.cost_reused_usd.unwrap_or(0.0),
                r.cost_reused_usd.is_some(),
            ],
        )?;
    }
    let mut model_row = tx.prepare_cached(
        "INSERT INTO run_models (run_id, model, llm_calls, tokens_input, tokens_output,
            tokens_total, tokens_cache_read, tokens_cache_write, tokens_reasoning, cost_usd,
            cost_complete) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    for (model, u) in &m.models {
        let key = [Value::Integer(id), Value::Text(red(model))];
        model_row.execute(params_from_iter(key.into_iter().chain(usage_columns(u))))?;
    }
    let mut call_row = tx.prepare_cached(
        "INSERT INTO run_calls (run_id, seq, section, node_path, model, duration_ms, tokens_input,
            tokens_output, tokens_cache_read, tokens_cache_write, tokens_reasoning, cost_usd,
            usage_source, max_tokens, time_to_first_chunk_ms, failed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?;
    for (seq, c) in m.calls.iter().enumerate() {
        let t = &c.tokens;
        call_row.execute(params![
            id,
            seq as i64,
            c.section,
            c.node_path.as_deref().map(red),
            red(&c.model),
            c.duration_ms,
            i(t.input),
            i(t.output),
            i(t.cache_read),
            i(t.cache_write),
            i(t.reasoning),
            c.cost_usd,
            c.usage_source.as_deref().map(red),
            c.max_tokens.map(i),
            c.time_to_first_chunk_ms,
            c.failed,
        ])?;
    }
    let mut set_row = tx
        .prepare_cached("INSERT INTO run_node_sets (run_id, section, nodes) VALUES (?1, ?2, ?3)")?;
    let sections = std::iter::once(("workflow", &m.workflow))
        .chain(m.planner.as_ref().map(|p| ("planner", p)));
    for (section, s) in sections {
        // Nodes that ran, plus any that called an LLM without a node span of
        // their own; batch items are rolled up into their batch node's row.
        // (Each with its duration as it comes: no second lookup by path.)
        let paths = s
            .node_timings
            .iter()
            .map(|(p, d)| (p, *d))
            .chain(
                s.node_usage
                    .keys()
                    .filter(|k| !s.node_timings.contains_key(*k))
                    .map(|p| (p, 0.0)),
            )
            .filter(|(p, _)| batch_of(p).is_none());
        let mut nodes = Vec::with_capacity(64 * s.node_timings.len() + 2);
        nodes.push(b'[');
        for (path, duration_ms) in paths {
            if nodes.len() > 1 {
                nodes.push(b',');
            }
            let usage = s.node_usage.get(path).filter(|u| **u != Usage::default());
            // Borrowed when there is nothing to hide (every path, nearly).
            let path = crate::telemetry::redact::redact(path);
            match usage {
                // The `run_nodes` view reads a missing usage as zero, cost known.
                None => serde_json::to_writer(&mut nodes, &(path, duration_ms)),
                // The usage columns in `usage_columns`' order: the view reads them by position.
                Some(u) => {
                    let mut row = vec![serde_json::json!(path), serde_json::json!(duration_ms)];
                    row.extend(usage_columns(u).into_iter().map(|c| match c {
                        Value::Integer(n) => serde_json::json!(n),
                        Value::Real(x) => serde_json::json!(x),
                        _ => serde_json::Value::Null,
                    }));
                    serde_json::to_writer(&mut nodes, &row)
                }
            }
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        }
        if nodes.len() == 1 {
            continue;
        }
        nodes.push(b']');
        let nodes = String::from_utf8(nodes)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        set_row.execute(params![id, section, nodes])?;
    }
    Ok(id)
}
