//! `pflow stats report`: one self-contained HTML page of the run history —
//! cost and tokens by day, by model and by workflow, latency percentiles and
//! output tokens per second per model, the most expensive nodes and the
//! history's suggestions. It follows the trace report's rules and shares its
//! helpers ([`crate::traces::report`]): inline CSS and script, a CSP that
//! forbids every fetch, every value HTML-escaped, the data block
//! script-escaped. Everything is rendered here, so the page reads the same
//! with scripts off; the script only switches the day chart between cost and
//! tokens.
//!
//! Every number cell carries its raw value in `data-v` (what the history
//! holds), beside the formatted text a person reads.

use super::query::{self, Group, GroupBy, Totals};
use super::suggest::{self, Suggestion, WithMessage};
use super::trends::{self, NodeCost};
use super::{db, HistoryError};
use crate::pricing::PriceTable;
use crate::traces::report::{card, esc, page_head, share_bar, ReportError, ScriptJson, CSS};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

const STATS_CSS: &str = include_str!("report_assets/stats.css");
const STATS_JS: &str = include_str!("report_assets/stats.js");

/// The page lists at most this many of the most expensive nodes.
pub const TOP_NODES: usize = 15;

/// Everything the page shows, read in one pass over the history.
#[derive(Debug, Clone, Serialize)]
pub struct StatsPage {
    pub generated: String,
    pub since: Option<String>,
    pub totals: Totals,
    pub days: Vec<Group>,
    /// With the per-call columns (cost per call, latency, tokens per second).
    pub models: Vec<Group>,
    pub workflows: Vec<Group>,
    pub nodes: Vec<NodeCost>,
    pub suggestions: Vec<Suggestion>,
}

/// Reads the page's data from the history at `path` (runs started at or
/// after `since`); an empty page when there is no history yet.
pub fn gather(
    path: &Path,
    since: Option<DateTime<Utc>>,
    prices: &PriceTable,
    now: DateTime<Utc>,
) -> Result<StatsPage, HistoryError> {
    let page = StatsPage {
        generated: now.to_rfc3339_opts(SecondsFormat::Secs, true),
        since: since.map(|s| s.to_rfc3339_opts(SecondsFormat::Secs, true)),
        totals: Totals::default(),
        days: vec![],
        models: vec![],
        workflows: vec![],
        nodes: vec![],
        suggestions: vec![],
    };
    if !path.exists() {
        return Ok(page);
    }
    let since_ms = since.map_or(i64::MIN, |s| s.timestamp_millis());
    let read = |conn: &mut rusqlite::Connection| -> rusqlite::Result<StatsPage> {
        let days = query::query(conn, since, GroupBy::Day)?;
        Ok(StatsPage {
            totals: days.totals,
            days: days.groups,
            models: query::query(conn, since, GroupBy::Model)?.groups,
            workflows: query::query(conn, since, GroupBy::Workflow)?.groups,
            nodes: trends::top_nodes(conn, since_ms, TOP_NODES)?,
            suggestions: suggest::suggestions_in(conn, None, since, prices)?,
            ..page.clone()
        })
    };
    db::with_retry(path, |conn| read(conn).map_err(HistoryError::sql(path)))
}

/// A number cell: the raw value in `data-v`, the formatted one shown.
fn num(out: &mut String, key: &str, raw: impl std::fmt::Display, shown: &str) {
    let _ = write!(
        out,
        "<td class=\"num\" data-k=\"{}\" data-v=\"{}\">{}</td>",
        esc(key),
        esc(&raw.to_string()),
        esc(shown)
    );
}

/// A cell for a value that may be unknown: `–` and an empty `data-v`.
fn opt_num<T: std::fmt::Display>(
    out: &mut String,
    key: &str,
    v: Option<T>,
    shown: impl Fn(&T) -> String,
) {
    match v {
        Some(v) => num(out, key, &v, &shown(&v)),
        None => num(out, key, "", "–"),
    }
}

fn usd(v: &f64) -> String {
    crate::format::usd(*v)
}

fn ms(v: &f64) -> String {
    format!("{v:.1} ms")
}

fn share(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        part / whole
    } else {
        0.0
    }
}

/// The usage cells every grouped table shares: calls, tokens in, out, total, cost.
fn usage_cells(out: &mut String, u: &query::UsageSums) {
    num(out, "llm_calls", u.llm_calls, &u.llm_calls.to_string());
    num(
        out,
        "tokens_input",
        u.tokens.input,
        &u.tokens.input.to_string(),
    );
    num(
        out,
        "tokens_output",
        u.tokens.output,
        &u.tokens.output.to_string(),
    );
    num(
        out,
        "tokens_total",
        u.tokens_total,
        &u.tokens_total.to_string(),
    );
    num(
        out,
        "cost_usd",
        u.cost.lower_bound_usd,
        &crate::format::cost(&u.cost),
    );
}

const USAGE_HEAD: &str = "<th class=\"num\">LLM calls</th><th class=\"num\">Tokens in</th>\
    <th class=\"num\">Tokens out</th><th class=\"num\">Tokens</th><th class=\"num\">Cost</th>";

/// Cost and tokens per day as columns of bars (both drawn; the page shows one).
fn day_chart(out: &mut String, days: &[Group]) {
    let max_cost = days
        .iter()
        .map(|d| d.usage.cost.lower_bound_usd)
        .fold(0.0, f64::max);
    let max_tokens = days.iter().map(|d| d.usage.tokens_total).max().unwrap_or(0);
    out.push_str("<div class=\"chart\" id=\"day-chart\" data-metric=\"cost\">");
    for d in days {
        let c = share(d.usage.cost.lower_bound_usd, max_cost) * 100.0;
        let t = share(d.usage.tokens_total as f64, max_tokens as f64) * 100.0;
        let _ = write!(
            out,
            "<div class=\"col\" title=\"{}: {} · {} tokens\"><div class=\"bars\">\
             <div class=\"bar-v cost\" style=\"height:{c:.1}%\"></div>\
             <div class=\"bar-v tokens\" style=\"height:{t:.1}%\"></div></div>\
             <div class=\"col-label\">{}</div></div>",
            esc(&d.key),
            esc(&crate::format::cost(&d.usage.cost)),
            d.usage.tokens_total,
            esc(d.key.get(5..).unwrap_or(&d.key)),
        );
    }
    out.push_str("</div>");
}

/// Which columns a grouped table has besides the key, runs and usage.
#[derive(Clone, Copy)]
struct Cols {
    failed: bool,
    duration: bool,
    cost_per_call: bool,
    /// Each row's share of this cost, when given.
    share_of: Option<f64>,
}

/// One table of [`Group`]s (by day, model or workflow), `id` naming it.
fn group_table(out: &mut String, id: &str, key_head: &str, mono: bool, groups: &[Group], c: Cols) {
    let _ = write!(
        out,
        "<table class=\"grid\" id=\"{id}\"><thead><tr><th>{}</th><th class=\"num\">Runs</th>",
        esc(key_head)
    );
    if c.failed {
        out.push_str("<th class=\"num\">Failed</th>");
    }
    if c.duration {
        out.push_str("<th class=\"num\">Duration</th>");
    }
    out.push_str(USAGE_HEAD);
    if c.cost_per_call {
        out.push_str("<th class=\"num\">Cost / call</th>");
    }
    if c.share_of.is_some() {
        out.push_str("<th class=\"share-col\">Share of cost</th>");
    }
    out.push_str("</tr></thead><tbody>");
    for g in groups {
        let _ = write!(
            out,
            "<tr data-key=\"{}\"><td{}>{}</td>",
            esc(&g.key),
            if mono { " class=\"mono\"" } else { "" },
            esc(&g.key)
        );
        num(out, "runs", g.runs, &g.runs.to_string());
        if c.failed {
            let failed = g.failed.unwrap_or(0);
            num(out, "failed", failed, &failed.to_string());
        }
        if c.duration {
            let d = g.duration_ms.unwrap_or(0.0);
            num(out, "duration_ms", d, &crate::format::duration_coarse(d));
        }
        usage_cells(out, &g.usage);
        if c.cost_per_call {
            let pc = g.per_call.as_ref().and_then(|p| p.cost_per_call_usd);
            opt_num(out, "cost_per_call_usd", pc, usd);
        }
        share_cell(out, &g.usage, c.share_of);
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
}

/// The share-of-cost bar, when the table has one.
fn share_cell(out: &mut String, u: &query::UsageSums, of: Option<f64>) {
    if let Some(total) = of {
        let _ = write!(
            out,
            "<td>{}</td>",
            share_bar(share(u.cost.lower_bound_usd, total))
        );
    }
}

/// Latency percentiles per model: the numbers and a bar from p50 to p95 on a shared scale.
fn latency_table(out: &mut String, models: &[Group]) {
    let perf = |g: &Group| {
        g.per_call
            .as_ref()
            .map(|p| p.perf.clone())
            .unwrap_or_default()
    };
    let max = models
        .iter()
        .filter_map(|g| perf(g).latency_p95_ms)
        .fold(0.0, f64::max);
    out.push_str(
        "<table class=\"grid\" id=\"latency\"><thead><tr><th>Model</th><th class=\"num\">Timed calls</th>\
         <th class=\"num\">p50</th><th class=\"num\">p95</th><th class=\"num\">Output tokens/s</th>\
         <th class=\"range-col\">p50 – p95</th></tr></thead><tbody>",
    );
    for g in models {
        let p = perf(g);
        let _ = write!(
            out,
            "<tr data-key=\"{}\"><td class=\"mono\">{}</td>",
            esc(&g.key),
            esc(&g.key)
        );
        num(
            out,
            "calls_timed",
            p.calls_timed,
            &p.calls_timed.to_string(),
        );
        opt_num(out, "latency_p50_ms", p.latency_p50_ms, ms);
        opt_num(out, "latency_p95_ms", p.latency_p95_ms, ms);
        opt_num(out, "output_tokens_per_s", p.output_tokens_per_s, |v| {
            format!("{v:.1}")
        });
        let range = match (p.latency_p50_ms, p.latency_p95_ms) {
            // Light up to p50, strong from p50 to p95, on the slowest model's p95 scale.
            (Some(a), Some(b)) if max > 0.0 => format!(
                "<div class=\"range\" title=\"p50 {} · p95 {}\"><div class=\"range-base\" style=\"width:{:.1}%\"></div>\
                 <div class=\"range-bar\" style=\"left:{:.1}%;width:{:.1}%\"></div></div>",
                esc(&ms(&a)),
                esc(&ms(&b)),
                a / max * 100.0,
                a / max * 100.0,
                ((b - a) / max * 100.0).max(0.5)
            ),
            _ => String::new(),
        };
        let _ = write!(out, "<td>{range}</td></tr>");
    }
    out.push_str("</tbody></table>");
}

fn nodes_table(out: &mut String, nodes: &[NodeCost], total_cost: f64) {
    if nodes.is_empty() {
        out.push_str("<p class=\"muted\">No node has called an LLM yet.</p>");
        return;
    }
    let _ = write!(
        out,
        "<table class=\"grid\" id=\"nodes\"><thead><tr><th>Workflow</th><th>Node</th><th class=\"num\">Runs</th>\
         {USAGE_HEAD}<th class=\"share-col\">Share of cost</th></tr></thead><tbody>"
    );
    for n in nodes {
        let _ = write!(
            out,
            "<tr data-key=\"{}/{}\"><td>{}</td><td class=\"mono\">{}</td>",
            esc(&n.workflow),
            esc(&n.node),
            esc(&n.workflow),
            esc(&n.node)
        );
        num(out, "runs", n.runs, &n.runs.to_string());
        usage_cells(out, &n.usage);
        share_cell(out, &n.usage, Some(total_cost));
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
}

fn suggestions_list(out: &mut String, suggestions: &[Suggestion]) {
    if suggestions.is_empty() {
        out.push_str(
            "<p class=\"muted\" id=\"no-suggestions\">No suggestions: no node shows a cheaper model \
             with similar output, or a max_tokens far above its use.</p>",
        );
        return;
    }
    out.push_str("<ul class=\"suggestions\" id=\"suggestions\">");
    for s in suggestions {
        let _ = write!(
            out,
            "<li data-kind=\"{}\" data-workflow=\"{}\" data-node=\"{}\"><span class=\"tag\">{}</span> \
             <b>{}</b> · <code>{}</code><div class=\"why\">{}</div></li>",
            esc(s.kind()),
            esc(s.workflow()),
            esc(s.node()),
            esc(&s.kind().replace('_', " ")),
            esc(s.workflow()),
            esc(s.node()),
            esc(&s.message())
        );
    }
    out.push_str("</ul>");
}

fn panel(out: &mut String, id: &str, title: &str, sub: &str, body: impl FnOnce(&mut String)) {
    let _ = write!(
        out,
        "<section class=\"panel\" id=\"{id}-panel\"><div class=\"section-head\"><h2>{}</h2><span class=\"muted\">{}</span></div>",
        esc(title),
        esc(sub)
    );
    body(out);
    out.push_str("</section>");
}

/// The whole page.
pub fn render_html(p: &StatsPage) -> String {
    let mut out = String::with_capacity(32 * 1024);
    let range = p
        .since
        .as_deref()
        .map_or("all time".to_string(), |s| format!("since {s}"));
    page_head(
        &mut out,
        &format!("pflow stats · {range}"),
        &[CSS, STATS_CSS],
    );
    let _ = write!(
        out,
        "<header class=\"top\"><div class=\"title-row\"><span class=\"brand\">pflow stats</span><h1>Run history</h1></div>\
         <div class=\"meta\"><span>{}</span><span>generated {}</span></div><div class=\"cards\">",
        esc(&range),
        esc(&p.generated),
    );
    let t = &p.totals;
    card(
        &mut out,
        "Runs",
        &t.runs.to_string(),
        &format!("{} ok, {} failed", t.ok, t.failed),
    );
    card(
        &mut out,
        "LLM calls",
        &t.usage.llm_calls.to_string(),
        &crate::format::count(p.models.len() as u64, "model"),
    );
    card(
        &mut out,
        "Tokens",
        &t.usage.tokens_total.to_string(),
        &format!("{} in, {} out", t.usage.tokens.input, t.usage.tokens.output),
    );
    card(
        &mut out,
        "Cost",
        &crate::format::cost(&t.usage.cost),
        "priced at run time",
    );
    card(
        &mut out,
        "Suggestions",
        &p.suggestions.len().to_string(),
        "from the history",
    );
    out.push_str("</div></header>\n");
    if t.runs == 0 {
        out.push_str("<p class=\"notice warn\" id=\"empty\">No runs recorded in this range.</p>");
    }
    let total_cost = t.usage.cost.lower_bound_usd;
    panel(&mut out, "days", "By day", "UTC", |o| {
        o.push_str(
            "<div class=\"chart-tools\"><button type=\"button\" data-metric=\"cost\" class=\"on\">Cost</button>\
             <button type=\"button\" data-metric=\"tokens\">Tokens</button></div>",
        );
        day_chart(o, &p.days);
        // A long history scrolls inside the panel; the chart above shows it whole.
        o.push_str("<div class=\"scroll\">");
        group_table(
            o,
            "days",
            "Day (UTC)",
            false,
            &p.days,
            Cols {
                failed: true,
                duration: false,
                cost_per_call: false,
                share_of: None,
            },
        );
        o.push_str("</div>");
    });
    panel(
        &mut out,
        "models",
        "By model",
        "most expensive first",
        |o| {
            group_table(
                o,
                "models",
                "Model",
                true,
                &p.models,
                Cols {
                    failed: false,
                    duration: false,
                    cost_per_call: true,
                    share_of: Some(total_cost),
                },
            )
        },
    );
    panel(
        &mut out,
        "latency",
        "Latency by model",
        "successful calls; nearest-rank percentiles; output tokens per second of call time where the provider reported tokens",
        |o| latency_table(o, &p.models),
    );
    panel(
        &mut out,
        "workflows",
        "By workflow",
        "most expensive first",
        |o| {
            group_table(
                o,
                "workflows",
                "Workflow",
                false,
                &p.workflows,
                Cols {
                    failed: true,
                    duration: true,
                    cost_per_call: false,
                    share_of: Some(total_cost),
                },
            )
        },
    );
    panel(
        &mut out,
        "nodes",
        "Most expensive nodes",
        &format!("top {TOP_NODES} by cost, then tokens"),
        |o| nodes_table(o, &p.nodes, total_cost),
    );
    panel(
        &mut out,
        "suggest",
        "Suggestions",
        "never applied automatically",
        |o| suggestions_list(o, &p.suggestions),
    );
    let _ = write!(
        out,
        "<footer>Generated by pflow {} from the run history. Self-contained: this file loads nothing from the network.</footer>\n\
         <script type=\"application/json\" id=\"pflow-stats\">",
        env!("CARGO_PKG_VERSION"),
    );
    let data = serde_json::json!({
        "page": p,
        "suggestions": p.suggestions.iter().map(WithMessage::from).collect::<Vec<_>>(),
    });
    ScriptJson(&mut out).push(&data.to_string());
    let _ = write!(
        out,
        "</script>\n<script>{STATS_JS}</script>\n</body></html>\n"
    );
    out
}

/// Writes the page atomically.
pub fn write(page: &StatsPage, path: &Path) -> Result<(), ReportError> {
    crate::traces::report::write_page(&render_html(page), path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVIL: &str = "</script><img src=x onerror=alert(1)><!-- & -->";

    #[test]
    fn names_cannot_escape_the_markup_or_the_data_block() {
        let u = query::UsageSums::default();
        let g = Group {
            key: EVIL.into(),
            runs: 1,
            ok: Some(1),
            failed: Some(0),
            duration_ms: Some(1.0),
            usage: u,
            per_call: None,
        };
        let page = StatsPage {
            generated: "2025-01-01T00:00:00Z".into(),
            since: None,
            totals: Totals {
                runs: 1,
                ..Default::default()
            },
            days: vec![],
            models: vec![g.clone()],
            workflows: vec![g],
            nodes: vec![],
            suggestions: vec![],
        };
        let html = render_html(&page);
        assert!(!html.contains("<img"), "escaped everywhere");
        assert_eq!(html.matches("</script>").count(), 2, "only the page's own");
        assert!(html.contains(crate::traces::report::CSP));
        assert!(!html.contains("http://") && !html.contains("https://"));
    }
}
