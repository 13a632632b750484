//! `pflow stats`: totals and grouped usage from the run history, and `prune`.
//! (Recording a finished run is part of the run lifecycle, [`crate::run`].)

use super::output::{fail, print_json, usage_error};
use super::OutputFormat;
use crate::history::suggest::{Suggestion, WithMessage};
use crate::history::{self, GroupBy, Stats};
use crate::outcome::ExitCode;
use crate::pricing::PriceTable;
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum By {
    Day,
    Workflow,
    Model,
    Node,
}

impl From<By> for GroupBy {
    fn from(b: By) -> GroupBy {
        match b {
            By::Day => GroupBy::Day,
            By::Workflow => GroupBy::Workflow,
            By::Model => GroupBy::Model,
            By::Node => GroupBy::Node,
        }
    }
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Only runs since then: 30m, 12h, 7d, 4w, or a date (YYYY-MM-DD, RFC 3339). Default: all.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Group the table by day (UTC), workflow, model or node.
    #[arg(long, value_enum, default_value = "day")]
    pub by: By,
}

#[derive(Debug, Subcommand)]
pub enum StatsCommand {
    /// Delete recorded runs older than an age (e.g. 90d).
    Prune {
        /// Age of the oldest run to keep: 30m, 12h, 90d, 4w.
        #[arg(long, value_name = "AGE")]
        older_than: String,
    },
    /// Write a self-contained HTML page of the history: cost and tokens by day, model and
    /// workflow, latency percentiles per model, the most expensive nodes, suggestions.
    Report {
        /// Where to write the page.
        #[arg(short = 'o', long, value_name = "FILE", default_value = "stats.html")]
        output: PathBuf,
        /// Only runs since then: 30m, 12h, 7d, 4w, or a date (YYYY-MM-DD, RFC 3339). Default: all.
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
    },
    /// Suggestions from the history, with the numbers behind each (never applied):
    /// a cheaper model seen on the same node with similar output, a max_tokens far above use.
    Suggest {
        /// Only this workflow (its name, as `pflow stats --by workflow` lists it).
        #[arg(long, value_name = "NAME")]
        workflow: Option<String>,
        /// Only runs since then: 30m, 12h, 7d, 4w, or a date (YYYY-MM-DD, RFC 3339). Default: all.
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
    },
}

/// `--since` parsed against `now`.
fn parse_since(
    since: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, history::HistoryError> {
    since
        .map(|s| history::duration::parse_since(s, now))
        .transpose()
}

/// The price table for the budget figures of suggestions: overrides as a run would load them.
fn prices(pricing: Option<&Path>) -> Result<PriceTable, String> {
    let (table, _, _) = super::load_prices(pricing)?;
    Ok(table.unwrap_or_else(|| PriceTable::builtin().clone()))
}

fn report_cmd(
    output: &Path,
    since: Option<&str>,
    pricing: Option<&Path>,
    format: OutputFormat,
) -> i32 {
    let now = Utc::now();
    let since = match parse_since(since, now) {
        Ok(s) => s,
        Err(e) => return usage_error(format, &e.to_string()),
    };
    let prices = match prices(pricing) {
        Ok(p) => p,
        Err(e) => return usage_error(format, &e),
    };
    let page = match history::report::gather(&history::db_path(), since, &prices, now) {
        Ok(p) => p,
        Err(e) => return failure(format, &e.to_string()),
    };
    if let Err(e) = history::report::write(&page, output) {
        // As `pflow trace report` reports it.
        return fail(
            format,
            ExitCode::Failed,
            "io_error",
            &e.to_string(),
            serde_json::Value::Null,
        );
    }
    match format {
        OutputFormat::Json => print_json(&json!({
            "report": output.display().to_string(),
            "since": since_str(since),
            "runs": page.totals.runs,
            "suggestions": page.suggestions.len(),
        })),
        OutputFormat::Text => println!(
            "wrote {} ({}, {})",
            output.display(),
            crate::format::count(page.totals.runs, "run"),
            crate::format::count(page.suggestions.len() as u64, "suggestion")
        ),
    }
    0
}

fn suggest_cmd(
    workflow: Option<&str>,
    since: Option<&str>,
    pricing: Option<&Path>,
    format: OutputFormat,
) -> i32 {
    let since = match parse_since(since, Utc::now()) {
        Ok(s) => s,
        Err(e) => return usage_error(format, &e.to_string()),
    };
    let prices = match prices(pricing) {
        Ok(p) => p,
        Err(e) => return usage_error(format, &e),
    };
    let found = match history::suggest::for_workflow(&history::db_path(), workflow, since, &prices)
    {
        Ok(s) => s,
        Err(e) => return failure(format, &e.to_string()),
    };
    match format {
        OutputFormat::Json => print_json(&json!({
            "workflow": workflow,
            "since": since_str(since),
            "suggestions": found.iter().map(WithMessage::from).collect::<Vec<_>>(),
        })),
        OutputFormat::Text => {
            let _ = std::io::stdout()
                .lock()
                .write_all(suggest_text(&found, workflow).as_bytes());
        }
    }
    0
}

pub fn suggest_text(found: &[Suggestion], workflow: Option<&str>) -> String {
    let scope = workflow.map_or("the history".to_string(), |w| format!("workflow `{w}`"));
    if found.is_empty() {
        return format!(
            "no suggestions for {scope}: no node shows a cheaper model with similar output, or a max_tokens far above its use\n"
        );
    }
    let mut out = format!(
        "{} for {scope} (never applied automatically)\n",
        crate::format::count(found.len() as u64, "suggestion")
    );
    for s in found {
        out.push_str(&format!(
            "\n{} · {} · {}\n  {}\n",
            s.workflow(),
            s.node(),
            s.kind().replace('_', " "),
            s.message()
        ));
    }
    out
}

pub fn stats_cmd(
    action: Option<&StatsCommand>,
    args: &StatsArgs,
    pricing: Option<&Path>,
    format: OutputFormat,
) -> i32 {
    match action {
        Some(StatsCommand::Report { output, since }) => {
            return report_cmd(output, since.as_deref(), pricing, format)
        }
        Some(StatsCommand::Suggest { workflow, since }) => {
            return suggest_cmd(workflow.as_deref(), since.as_deref(), pricing, format)
        }
        _ => {}
    }
    let db = history::db_path();
    let now = Utc::now();
    if let Some(StatsCommand::Prune { older_than }) = action {
        let age = match history::duration::parse_older_than(older_than) {
            Ok(a) => a,
            Err(e) => return usage_error(format, &e.to_string()),
        };
        let cutoff = chrono::Duration::from_std(age)
            .ok()
            .and_then(|d| now.checked_sub_signed(d))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        return match history::prune(&db, cutoff) {
            Ok(n) => {
                match format {
                    OutputFormat::Json => print_json(&json!({
                        "removed": n,
                        "older_than": older_than,
                        "cutoff": cutoff.to_rfc3339_opts(SecondsFormat::Secs, true),
                    })),
                    OutputFormat::Text => println!(
                        "removed {n} run{} older than {older_than} (before {})",
                        if n == 1 { "" } else { "s" },
                        cutoff.to_rfc3339_opts(SecondsFormat::Secs, true)
                    ),
                }
                0
            }
            Err(e) => failure(format, &e.to_string()),
        };
    }
    let since = match parse_since(args.since.as_deref(), now) {
        Ok(s) => s,
        Err(e) => return usage_error(format, &e.to_string()),
    };
    let by = GroupBy::from(args.by);
    match history::stats(&db, since, by) {
        Ok(s) => {
            match format {
                OutputFormat::Json => print_json(&stats_json(&s, since, by)),
                OutputFormat::Text => {
                    let _ = std::io::stdout()
                        .lock()
                        .write_all(stats_text(&s, since, by).as_bytes());
                }
            }
            0
        }
        Err(e) => failure(format, &e.to_string()),
    }
}

fn failure(format: OutputFormat, message: &str) -> i32 {
    fail(
        format,
        ExitCode::Failed,
        "history_error",
        message,
        serde_json::Value::Null,
    )
}

fn since_str(since: Option<DateTime<Utc>>) -> Option<String> {
    since.map(|s| s.to_rfc3339_opts(SecondsFormat::Secs, true))
}

pub fn stats_json(s: &Stats, since: Option<DateTime<Utc>>, by: GroupBy) -> serde_json::Value {
    json!({
        "since": since_str(since),
        "by": by.as_str(),
        "runs": s.totals.runs,
        "totals": s.totals,
        "groups": s.groups,
    })
}

use crate::format::duration_coarse as duration;

pub fn stats_text(s: &Stats, since: Option<DateTime<Utc>>, by: GroupBy) -> String {
    let range = since_str(since).map_or("all time".to_string(), |s| format!("since {s}"));
    let t = &s.totals;
    if t.runs == 0 {
        return format!("no runs recorded ({range})\n");
    }
    let mut out = String::new();
    out.push_str(&format!("pflow runs, {range}\n"));
    // `failed` is every run that did not succeed, as in the JSON; the
    // invalid and interrupted ones are its parts.
    let parts: Vec<String> = [(t.invalid, "invalid"), (t.interrupted, "interrupted")]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
    let not_ok = match (t.failed, parts.is_empty()) {
        (0, _) => String::new(),
        (n, true) => format!(", {n} failed"),
        (n, false) => format!(", {n} failed: {}", parts.join(", ")),
    };
    out.push_str(&format!("  runs       {} ({} ok{not_ok})\n", t.runs, t.ok));
    out.push_str(&format!("  duration   {}\n", duration(t.duration_ms)));
    out.push_str(&format!("  llm calls  {}\n", t.usage.llm_calls));
    out.push_str(&format!(
        "  tokens     {} (input {}, output {})\n",
        t.usage.tokens_total, t.usage.tokens.input, t.usage.tokens.output
    ));
    out.push_str(&format!(
        "  cost       {}\n",
        crate::format::cost(&t.usage.cost)
    ));
    if t.reused.nodes > 0 {
        out.push_str(&format!(
            "  reused     {} restored or cached · {} · {} · {} when first made (not spent again)\n",
            crate::format::count(t.reused.nodes, "node"),
            crate::format::count(t.reused.llm_calls, "LLM call"),
            crate::format::count(t.reused.tokens_total, "token"),
            t.reused
                .cost_reused_usd
                .map_or_else(|| "cost unknown".into(), crate::format::usd_compact),
        ));
    }
    if s.groups.is_empty() {
        return out;
    }
    let with_time = by != GroupBy::Model;
    let per_call = by == GroupBy::Model;
    let mut rows: Vec<Vec<String>> = vec![{
        let mut h = vec![by.as_str().to_uppercase(), "RUNS".into()];
        if with_time {
            h.push("DURATION".into());
        }
        h.extend(["LLM CALLS".into(), "TOKENS".into(), "COST".into()]);
        if per_call {
            h.extend([
                "COST/CALL".into(),
                "P50".into(),
                "P95".into(),
                "TOK/S".into(),
            ]);
        }
        h
    }];
    for g in &s.groups {
        let mut r = vec![g.key.clone(), g.runs.to_string()];
        if with_time {
            r.push(duration(g.duration_ms.unwrap_or(0.0)));
        }
        r.extend([
            g.usage.llm_calls.to_string(),
            g.usage.tokens_total.to_string(),
            crate::format::cost(&g.usage.cost),
        ]);
        if let (true, Some(p)) = (per_call, &g.per_call) {
            let dash = || "–".to_string();
            r.extend([
                p.cost_per_call_usd.map_or_else(dash, crate::format::usd),
                p.perf
                    .latency_p50_ms
                    .map_or_else(dash, crate::format::duration_coarse),
                p.perf
                    .latency_p95_ms
                    .map_or_else(dash, crate::format::duration_coarse),
                p.perf
                    .output_tokens_per_s
                    .map_or_else(dash, |v| format!("{v:.1}")),
            ]);
        }
        rows.push(r);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    out.push('\n');
    for r in &rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            let pad = widths[c] - cell.chars().count();
            if c == 0 {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            } else {
                // Numbers right-aligned, two spaces between columns.
                line.push_str("  ");
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_history_is_friendly() {
        let s = Stats {
            totals: Default::default(),
            groups: vec![],
        };
        assert_eq!(
            stats_text(&s, None, GroupBy::Day),
            "no runs recorded (all time)\n"
        );
        let v = stats_json(&s, None, GroupBy::Model);
        assert_eq!(v["runs"], 0);
        assert_eq!(v["by"], "model");
        assert_eq!(v["groups"], json!([]));
    }
}
