//! `pflow trace report --format md`: a saved trace as a Markdown summary for
//! a CI job summary (`$GITHUB_STEP_SUMMARY`) or a pull request comment —
//! status, duration, tokens, cost, the prompt cache's share and savings,
//! the slowest and most expensive nodes, the critical path, errors and
//! suggestions. The figures are the HTML report's: the run's metrics from
//! the accounting model and the [`crate::insight`] of the same trace.
//!
//! Everything from the trace is escaped, so a node id or an error message
//! cannot add markup, links or HTML to the page it lands on.

use super::{show, Trace, TraceSpan};
use crate::accounting::span::SpanKind;
use crate::format;
use crate::insight::Insight;
use crate::telemetry::attr;
use std::fmt::Write as _;

/// At most this many errors are listed (the count says how many there were).
const MAX_ERRORS: usize = 10;

/// Text from a trace made inert for Markdown (and the HTML GitHub allows
/// in it): punctuation that opens markup is backslash-escaped, `<`, `>`
/// and `&` become entities, and a line break becomes a space, so the text
/// also stays inside a table cell.
pub fn md(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\n' | '\r' => out.push(' '),
            // What can open emphasis, code, a link or image (`[`), a table cell or
            // a heading; `(`, `!`, `.` and `-` are inert without these.
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '#' | '~' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Failed nodes and LLM calls: `(span label, error)`, first failure first.
fn errors(trace: &Trace) -> Vec<(String, String)> {
    let mut failed: Vec<&TraceSpan> = trace
        .spans
        .iter()
        .filter(|s| {
            s.failed()
                && matches!(
                    s.kind(),
                    SpanKind::Node | SpanKind::BatchItem | SpanKind::Batch | SpanKind::LlmCall
                )
        })
        .collect();
    failed.sort_by_key(|s| s.start_ns);
    failed
        .into_iter()
        .map(|s| {
            let kind = s.str_attr(attr::ERROR_TYPE).unwrap_or("error");
            let msg = s.status_message.lines().next().unwrap_or("");
            let text = if msg.is_empty() || msg == kind {
                kind.to_string()
            } else {
                format!("{kind}: {msg}")
            };
            let text: String = text.chars().take(300).collect();
            (s.label(), text)
        })
        .collect()
}

/// The Markdown summary of `trace`.
pub fn render(trace: &Trace, ins: &Insight) -> String {
    let m = trace.metrics();
    let status = trace.status();
    let mut out = String::new();
    let workflow = trace.workflow_name().unwrap_or("(unnamed workflow)");
    let _ = writeln!(
        out,
        "## {} pflow run: {} ({})\n",
        if status == "ok" { "✅" } else { "❌" },
        md(workflow),
        md(status)
    );
    out.push_str("| | |\n|---|---|\n");
    let started = chrono::DateTime::from_timestamp_nanos(trace.start_ns() as i64)
        .format("%Y-%m-%d %H:%M:%S UTC");
    let mut row = |k: &str, v: String| {
        let _ = writeln!(out, "| {k} | {v} |");
    };
    row("Status", md(status));
    row("Started", started.to_string());
    row("Duration", format::duration_ms(m.total.duration_ms));
    row(
        "Nodes",
        format!(
            "{}{}",
            m.workflow.nodes_executed,
            show::batch_items_note(&m)
        ),
    );
    row("LLM calls", m.total.llm_calls.to_string());
    let t = super::report::run_tokens(&m);
    row(
        "Tokens",
        format!(
            "{} ({} in · {} out)",
            format::thousands(m.total.tokens_total),
            format::thousands(t.input),
            format::thousands(t.output)
        ),
    );
    row(
        "Cost",
        md(&format::cost_with_unpriced(
            &m.total.cost,
            m.unpriced_models.len(),
        )),
    );
    let c = &ins.cache.total;
    if c.used() {
        row(
            "Prompt cache",
            format!(
                "{} of input read from cache · saved {} · writes cost {}",
                show::hit_rate(c.hit_rate),
                format::usd(c.saved_usd),
                format::usd_or_unknown(c.write_cost_usd)
            ),
        );
    }
    row("Trace", format!("`{}`", trace.trace_id()));
    out.push('\n');

    if ins.critical_path.iter().any(|s| s.node.is_some()) {
        let _ = writeln!(
            out,
            "**Critical path** ({}): {}\n",
            format::duration_ms(ins.wall_ms),
            md(&ins.chain_text())
        );
    }
    if !ins.top_self_time.is_empty() {
        out.push_str("### Slowest nodes\n\n| Node | Self time | Share of run |\n|---|--:|--:|\n");
        for n in &ins.top_self_time {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                md(&n.node),
                format::duration_ms(n.value),
                crate::format::percent(n.share)
            );
        }
        out.push('\n');
    }
    if !ins.top_cost.is_empty() {
        out.push_str(
            "### Most expensive nodes\n\n| Node | Cost | Share of cost | Tokens |\n|---|--:|--:|--:|\n",
        );
        for n in &ins.top_cost {
            let tokens = m
                .workflow
                .usage_of(&n.node)
                .or_else(|| m.planner.as_ref().and_then(|p| p.usage_of(&n.node)))
                .map_or(0, |u| u.tokens.total);
            let _ = writeln!(
                out,
                "| {} | {}{} | {} | {} |",
                md(&n.node),
                if n.lower_bound { "≥ " } else { "" },
                format::usd(n.value),
                crate::format::percent(n.share),
                format::thousands(tokens)
            );
        }
        out.push('\n');
    }
    if ins.cache.by_model.values().any(|f| f.used()) || !ins.cache.missed_prefixes.is_empty() {
        out.push_str(
            "### Prompt cache\n\n| Model | Calls | Hit rate | Read | Written | Saved | Writes cost |\n\
             |---|--:|--:|--:|--:|--:|--:|\n",
        );
        for (model, f) in &ins.cache.by_model {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                md(model),
                f.llm_calls,
                show::hit_rate(f.hit_rate),
                format::thousands(f.cache_read_tokens),
                format::thousands(f.cache_write_tokens),
                format::usd(f.saved_usd),
                format::usd_or_unknown(f.write_cost_usd)
            );
        }
        out.push('\n');
        for p in &ins.cache.missed_prefixes {
            let _ = writeln!(
                out,
                "- {} calls to {} sent the same ~{}-token prefix and none read it from a cache: caching would save {}\n",
                p.calls,
                md(&p.model),
                format::thousands(p.prefix_tokens),
                format::usd(p.would_save_usd)
            );
        }
    }
    if !ins.batches.is_empty() {
        out.push_str("### Batches\n\n");
        for b in &ins.batches {
            let _ = writeln!(out, "- **{}**: {}", md(&b.node), md(&show::batch_line(b)));
        }
        out.push('\n');
    }
    let errs = errors(trace);
    if !errs.is_empty() || trace.root_error().is_some() {
        out.push_str("### Errors\n\n");
        if let Some(e) = trace.root_error() {
            let _ = writeln!(out, "- run: {}", md(e));
        }
        for (span, e) in errs.iter().take(MAX_ERRORS) {
            let _ = writeln!(out, "- {}: {}", md(span), md(e));
        }
        if errs.len() > MAX_ERRORS {
            let _ = writeln!(out, "- … {} more", errs.len() - MAX_ERRORS);
        }
        out.push('\n');
    }
    if !ins.suggestions.is_empty() {
        out.push_str("### Suggestions\n\nNot applied; each with the numbers behind it.\n\n");
        for s in &ins.suggestions {
            let _ = writeln!(out, "- {}", md(&s.message));
        }
        out.push('\n');
    }
    for note in [trace.truncation_note(), trace.omitted_note()]
        .into_iter()
        .flatten()
    {
        let _ = writeln!(out, "> {}\n", md(&note));
    }
    let _ = writeln!(
        out,
        "<sub>pflow {} · `pflow trace report --format md`</sub>",
        env!("CARGO_PKG_VERSION")
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_text_cannot_add_markup() {
        let evil = "x | <img src=x onerror=alert(1)> [link](http://e) **b** `c`\n# h";
        let s = md(evil);
        assert!(!s.contains('<') && !s.contains('\n'), "{s}");
        assert!(s.contains("\\|") && s.contains("\\[link\\]") && s.contains("\\*\\*"));
        assert!(s.contains("\\#"));
    }
}
