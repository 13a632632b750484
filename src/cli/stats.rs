//! `pflow stats`: totals and grouped usage from the run history, and `prune`.
//! (Recording a finished run is part of the run lifecycle, [`crate::run`].)

use super::output::{fail, print_json, usage_error};
use super::OutputFormat;
use crate::history::{self, GroupBy, Stats};
use crate::outcome::ExitCode;
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use std::io::Write;

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
            g.usage.llm_calls.to_string(),
            g.usage.tokens_total.to_string(),
            crate::format::cost(&g.usage.cost),
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
