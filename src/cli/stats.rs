//! `pflow stats` (totals and grouped usage from the run history, `prune`),
//! and the end-of-run step that records a run and applies trace retention.
//! History problems become one warning line; they never change an exit code.

use super::output::usage_error;
use super::OutputFormat;
use crate::history::{self, GroupBy, RunRecord, Stats};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use std::io::Write;
use std::path::Path;

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
        #[arg(long, value_name = "AGE")]
        older_than: String,
    },
}

/// What a finished run hands to history.
pub struct FinishedRun<'a> {
    pub started: DateTime<Utc>,
    pub command: &'a str,
    pub ident: Option<history::WorkflowIdent>,
    /// The name to use when the workflow has none (the file's stem).
    pub fallback_name: Option<String>,
    pub status: &'a str,
    pub exit_code: i32,
    pub trace_id: Option<&'a str>,
    pub trace_file: Option<&'a Path>,
    pub metrics: Option<&'a crate::telemetry::metrics::MetricsSummary>,
}

/// Records the run (unless `PFLOW_HISTORY` is off) and applies
/// `PFLOW_TRACE_RETENTION`; returns warnings for the run's report.
pub fn after_run(run: FinishedRun) -> Vec<String> {
    let mut warnings = Vec::new();
    if let (Some(metrics), true) = (run.metrics, history::enabled()) {
        let (name, hash) = match run.ident {
            Some(i) => (i.name.or(run.fallback_name), Some(i.hash)),
            None => (run.fallback_name, None),
        };
        let rec = RunRecord {
            time: run.started,
            command: run.command.to_string(),
            workflow_name: name,
            workflow_hash: hash,
            status: run.status.to_string(),
            exit_code: run.exit_code,
            trace_id: run.trace_id.map(str::to_string),
            trace_file: run.trace_file.map(Path::to_path_buf),
            metrics: metrics.clone(),
        };
        if let Err(e) = history::record(&history::db_path(), &rec) {
            warnings.push(format!(
                "run not recorded in history (set PFLOW_HISTORY=off to stop recording): {e}"
            ));
        }
    }
    let traces = crate::telemetry::pflow_home().join("traces");
    warnings.extend(history::retention::apply_from_env(&traces, run.trace_file));
    warnings
}

pub fn stats_cmd(action: Option<&StatsCommand>, args: &StatsArgs, format: OutputFormat) -> i32 {
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
    let since = match args
        .since
        .as_deref()
        .map(|s| history::duration::parse_since(s, now))
    {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => return usage_error(format, &e.to_string()),
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

fn print_json(v: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer_pretty(&mut out, v);
    let _ = writeln!(out);
}

fn failure(format: OutputFormat, message: &str) -> i32 {
    match format {
        OutputFormat::Json => print_json(
            &json!({"success": false, "error": {"type": "history_error", "message": message}}),
        ),
        OutputFormat::Text => eprintln!("error: {}", super::output::shown(message)),
    }
    1
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

fn duration(ms: f64) -> String {
    let secs = ms / 1000.0;
    if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else if secs < 60.0 {
        format!("{secs:.1}s")
    } else if secs < 3600.0 {
        format!("{}m {:02}s", (secs / 60.0) as u64, (secs % 60.0) as u64)
    } else {
        format!(
            "{}h {:02}m",
            (secs / 3600.0) as u64,
            ((secs % 3600.0) / 60.0) as u64
        )
    }
}

fn cost(usd: f64, complete: bool) -> String {
    // An incomplete total is a lower bound: some calls had no known price.
    format!("{}${usd:.6}", if complete { "" } else { ">=" })
}

pub fn stats_text(s: &Stats, since: Option<DateTime<Utc>>, by: GroupBy) -> String {
    let range = since_str(since).map_or("all time".to_string(), |s| format!("since {s}"));
    let t = &s.totals;
    if t.runs == 0 {
        return format!("no runs recorded ({range})\n");
    }
    let mut out = String::new();
    out.push_str(&format!("pflow runs, {range}\n"));
    let mut not_ok = Vec::new();
    if t.failed > 0 {
        let plain = t.failed - t.invalid - t.interrupted;
        for (n, what) in [
            (plain, "failed"),
            (t.invalid, "invalid"),
            (t.interrupted, "interrupted"),
        ] {
            if n > 0 {
                not_ok.push(format!("{n} {what}"));
            }
        }
    }
    let not_ok = if not_ok.is_empty() {
        String::new()
    } else {
        format!(", {}", not_ok.join(", "))
    };
    out.push_str(&format!("  runs       {} ({} ok{not_ok})\n", t.runs, t.ok));
    out.push_str(&format!("  duration   {}\n", duration(t.duration_ms)));
    out.push_str(&format!("  llm calls  {}\n", t.llm_calls));
    out.push_str(&format!(
        "  tokens     {} (input {}, output {})\n",
        t.tokens_total, t.tokens.input, t.tokens.output
    ));
    out.push_str(&format!(
        "  cost       {}\n",
        cost(t.cost_usd, t.cost_complete)
    ));
    if s.groups.is_empty() {
        return out;
    }
    let with_time = by != GroupBy::Model;
    let mut rows: Vec<Vec<String>> = vec![{
        let mut h = vec![by.as_str().to_uppercase(), "RUNS".into()];
        if with_time {
            h.push("DURATION".into());
        }
        h.extend(["LLM CALLS".into(), "TOKENS".into(), "COST".into()]);
        h
    }];
    for g in &s.groups {
        let mut r = vec![g.key.clone(), g.runs.to_string()];
        if with_time {
            r.push(duration(g.duration_ms.unwrap_or(0.0)));
        }
        r.extend([
            g.llm_calls.to_string(),
            g.tokens_total.to_string(),
            cost(g.cost_usd, g.cost_complete),
        ]);
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
    fn durations_read_naturally() {
        assert_eq!(duration(12.4), "12ms");
        assert_eq!(duration(1520.0), "1.5s");
        assert_eq!(duration(125_000.0), "2m 05s");
        assert_eq!(duration(3_720_000.0), "1h 02m");
    }

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
