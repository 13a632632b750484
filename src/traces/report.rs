//! `pflow trace report`: one self-contained HTML file for a saved trace — a
//! waterfall of every span (parallel batch items side by side in time), the
//! cost and token breakdown by node and by model, and any span's details on
//! click. Nothing in it points outside the file (inline CSS and vanilla JS, a
//! CSP that forbids every fetch), so it can be mailed or archived as is.
//!
//! The span data travels as JSON in a `<script type="application/json">`
//! block with every `<`, `>` and `&` written as a `\u` escape, so prompt text
//! can never close the script tag; the page inserts all of it with
//! `textContent`. The tables are rendered here, HTML-escaped, so they are
//! there even with scripts off.

use super::{Trace, TraceSpan};
use crate::insight::Insight;
use crate::telemetry::attr;
use crate::telemetry::metrics::{SectionMetrics, Usage};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The waterfall draws at most this many rows (plain DOM stays responsive);
/// the tables are always complete.
pub const ROW_LIMIT: usize = 5000;

/// The critical path's table lists at most this many spans (a long batch
/// can put thousands on it); the waterfall marks every one.
pub const PATH_ROWS: usize = 200;

/// The page carries the details of at most this many spans (load the trace
/// with `Keep::First(SPAN_LIMIT)`), so a huge trace makes a page of bounded
/// size from bounded memory; the page and the command say how many it left
/// out. The tables still count every span.
pub use super::SPAN_LIMIT;

/// How many spans of the file the page leaves out.
pub fn omitted_spans(trace: &Trace) -> usize {
    trace.total_spans().saturating_sub(shown_spans(trace))
}

fn shown_spans(trace: &Trace) -> usize {
    trace.spans.len().min(SPAN_LIMIT)
}

/// The pages' shared look (the stats page adds its own rules after it).
pub(crate) const CSS: &str = include_str!("report_assets/report.css");

/// The Content-Security-Policy of every pflow page: nothing may be fetched;
/// only the page's own inline style and script run.
pub(crate) const CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:";
const JS: &str = include_str!("report_assets/report.js");

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write the report to `{}`: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a span is, for its colour in the waterfall.
fn kind(s: &TraceSpan) -> &'static str {
    if s.is_llm() {
        "llm"
    } else if s.str_attr(attr::NODE_ROLE) == Some(attr::ROLE_BATCH_ITEM) {
        "item"
    } else if s.str_attr(attr::NODE_ROLE).is_some() {
        "node"
    } else if s.str_attr(attr::SECTION) == Some("planner")
        || s.str_attr(attr::GEN_AI_OPERATION_NAME) == Some("plan")
    {
        "planner"
    } else if s.attr(attr::RUN_STATUS).is_some() || s.attr(attr::WORKFLOW_NAME).is_some() {
        "workflow"
    } else {
        "other"
    }
}

/// Spans in tree order (children by start time) with their depth. Spans a
/// walk from the roots cannot reach (a parent cycle in a hand-edited file)
/// follow at depth 0, so none is lost and none repeats.
fn tree_order(trace: &Trace) -> Vec<(usize, &TraceSpan)> {
    let kids = trace.children();
    let ids: HashSet<&str> = trace.spans.iter().map(|s| s.span_id.as_str()).collect();
    let mut roots: Vec<&TraceSpan> = trace
        .spans
        .iter()
        .filter(|s| !ids.contains(s.parent_span_id.as_str()))
        .collect();
    roots.sort_by_key(|s| (s.start_ns, s.end_ns));
    let mut seen: HashSet<*const TraceSpan> = HashSet::new();
    let mut out = Vec::with_capacity(trace.spans.len());
    // Roots first; then every span again, which only adds the unreachable ones.
    for start in roots.into_iter().chain(trace.spans.iter()) {
        let mut stack: Vec<(usize, &TraceSpan)> = vec![(0, start)];
        while let Some((d, s)) = stack.pop() {
            if !seen.insert(s as *const TraceSpan) {
                continue;
            }
            out.push((d, s));
            if let Some(cs) = kids.get(s.span_id.as_str()) {
                stack.extend(cs.iter().rev().map(|c| (d + 1, *c)));
            }
        }
    }
    out
}

fn attrs_json(a: &super::Attrs) -> Value {
    Value::Array(
        a.iter()
            .map(|(k, v)| json!([k, v.to_json()]))
            .collect::<Vec<_>>(),
    )
}

/// Writes the page's data into `out`: spans in tree order with times in ms
/// from the run start. One span's JSON exists at a time, escaped straight
/// into the page, so the page is the only copy of its data.
fn write_data(trace: &Trace, critical: &HashSet<&str>, out: &mut String) {
    let t0 = trace.start_ns();
    let ms = |ns: u64| ns.saturating_sub(t0) as f64 / 1e6;
    let head = json!({
        "trace_id": trace.trace_id(),
        "total_ms": ms(trace.end_ns()),
        "row_limit": ROW_LIMIT,
        "span_limit": SPAN_LIMIT,
        "omitted_spans": omitted_spans(trace),
        "names": names(),
    });
    let mut w = ScriptJson(out);
    // `{…head…,"spans":[…]}`: the head object without its closing brace.
    let head = head.to_string();
    w.push(&head[..head.len() - 1]);
    w.push(",\"spans\":[");
    for (i, (depth, s)) in tree_order(trace).into_iter().take(SPAN_LIMIT).enumerate() {
        if i > 0 {
            w.push(",");
        }
        let span = json!({
            "id": s.span_id,
            "parent": s.parent_span_id,
            "name": s.label(),
            "kind": kind(s),
            "depth": depth,
            "start": ms(s.start_ns),
            "end": ms(s.end_ns.max(s.start_ns)),
            "failed": s.failed(),
            // On the critical path: the chain of spans that set the run's wall time.
            "critical": critical.contains(s.span_id.as_str()),
            "status": s.status_message,
            // A restored or cached node: how, from which run, what it reused.
            "reuse": s.reuse_note(),
            "attrs": attrs_json(&s.attributes),
            "events": s.events.iter().map(|e| json!({
                "name": e.name,
                "t": ms(e.time_ns),
                "attrs": attrs_json(&e.attributes),
            })).collect::<Vec<_>>(),
        });
        // Writing JSON into a String cannot fail.
        let _ = serde_json::to_writer(&mut w, &span);
    }
    w.push("]}");
}

/// The name registry as the page's script reads it (`N.NODE_PATH`): the
/// script spells no attribute name of its own.
fn names() -> Value {
    Value::Object(
        attr::REGISTRY
            .iter()
            .map(|n| (n.id.to_string(), Value::String(n.name.to_string())))
            .collect(),
    )
}

/// Appends JSON to a page so it is safe inside a `<script>` element: no
/// `<`, `>` or `&` left to end it or open a comment; `\u2028`/`\u2029`
/// escaped for old parsers.
pub(crate) struct ScriptJson<'a>(pub(crate) &'a mut String);

impl ScriptJson<'_> {
    pub(crate) fn push(&mut self, s: &str) {
        for c in s.chars() {
            match c {
                '<' => self.0.push_str("\\u003c"),
                '>' => self.0.push_str("\\u003e"),
                '&' => self.0.push_str("\\u0026"),
                '\u{2028}' => self.0.push_str("\\u2028"),
                '\u{2029}' => self.0.push_str("\\u2029"),
                c => self.0.push(c),
            }
        }
    }
}

impl std::io::Write for ScriptJson<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // serde_json writes whole characters (it cuts strings only at the
        // ASCII bytes it escapes), so every piece is UTF-8 on its own.
        let s = std::str::from_utf8(buf)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        self.push(s);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Text for HTML element content and quoted attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn cost_cell(cost: &crate::accounting::CostTotal) -> String {
    crate::format::cost(cost)
}

pub(crate) fn card(out: &mut String, label: &str, value: &str, sub: &str) {
    let _ = write!(
        out,
        "<div class=\"card\"><div class=\"card-label\">{}</div><div class=\"card-value\">{}</div><div class=\"card-sub\">{}</div></div>",
        esc(label),
        esc(value),
        esc(sub)
    );
}

pub(crate) fn share_bar(share: f64) -> String {
    let pct = (share * 100.0).clamp(0.0, 100.0);
    format!(
        "<div class=\"share\"><div class=\"share-bar\" style=\"width:{pct:.1}%\"></div><span>{pct:.0}%</span></div>"
    )
}

/// Per-node table of one section: duration, LLM calls, tokens, cost, share.
fn node_table(out: &mut String, trace: &Trace, sec: &SectionMetrics) {
    let mut names: Vec<&String> = sec.node_timings.keys().collect();
    for k in sec.node_usage.keys() {
        if !names.contains(&k) {
            names.push(k);
        }
    }
    if names.is_empty() {
        out.push_str("<p class=\"muted\">No nodes ran.</p>");
        return;
    }
    let node_type = |path: &str| trace.node_type(path).unwrap_or("").to_string();
    out.push_str(
        "<table class=\"grid\"><thead><tr><th>Node</th><th>Type</th><th class=\"num\">Duration</th>\
         <th class=\"num\">LLM calls</th><th class=\"num\">Tokens in</th><th class=\"num\">Tokens out</th>\
         <th class=\"num\">Cost</th><th class=\"share-col\">Share of cost</th></tr></thead><tbody>",
    );
    let default = Usage::default();
    for name in names {
        let u = sec.usage_of(name).unwrap_or(&default);
        let dur = sec
            .node_timings
            .get(name)
            .map(|ms| crate::format::duration_ms(*ms))
            .unwrap_or_default();
        let share = if sec.usage.cost.lower_bound_usd > 0.0 {
            u.cost.lower_bound_usd / sec.usage.cost.lower_bound_usd
        } else {
            0.0
        };
        let (calls, tin, tout, cost, bar) = if u.llm_calls > 0 {
            (
                u.llm_calls.to_string(),
                u.tokens.input.to_string(),
                u.tokens.output.to_string(),
                cost_cell(&u.cost),
                share_bar(share),
            )
        } else {
            Default::default()
        };
        let _ = write!(
            out,
            "<tr><td class=\"mono\">{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            esc(name),
            esc(&node_type(name)),
            esc(&dur),
            calls,
            tin,
            tout,
            esc(&cost),
            bar
        );
    }
    let _ = write!(
        out,
        "</tbody><tfoot><tr><td>Total</td><td></td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
         <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td></td></tr></tfoot></table>",
        esc(&crate::format::duration_ms(sec.duration_ms)),
        sec.usage.llm_calls,
        sec.usage.tokens.input,
        sec.usage.tokens.output,
        esc(&cost_cell(&sec.usage.cost)),
    );
}

/// Nodes this run did not run again: restored from a checkpoint or served
/// from the memo cache, with the run that made them and what they cost then.
fn reused_table(out: &mut String, r: &crate::accounting::summary::ReusedMetrics) {
    out.push_str(
        "<table class=\"grid\" id=\"reused\"><thead><tr><th>Reused node</th><th>How</th><th>From run</th>\
         <th class=\"num\">LLM calls</th><th class=\"num\">Tokens</th><th class=\"num\">Cost when first made</th></tr></thead><tbody>",
    );
    for (path, n) in &r.nodes {
        let _ = write!(
            out,
            "<tr><td class=\"mono\">{}</td><td>{}</td><td class=\"mono\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(path),
            esc(&n.status),
            esc(n.origin_run_id.as_deref().unwrap_or("?")),
            n.llm_calls,
            n.tokens_total,
            esc(&n.cost_reused_usd.map_or_else(|| "unknown".into(), crate::format::usd_compact)),
        );
    }
    out.push_str("</tbody></table>");
}

fn model_table(out: &mut String, models: &indexmap::IndexMap<String, Usage>, unpriced: &[String]) {
    if models.is_empty() {
        out.push_str("<p class=\"muted\">No LLM calls.</p>");
        return;
    }
    let mut all = crate::accounting::CostTotal::default();
    for u in models.values() {
        all.add(&u.cost);
    }
    let total = all.lower_bound_usd;
    out.push_str(
        "<table class=\"grid\"><thead><tr><th>Model</th><th class=\"num\">Calls</th><th class=\"num\">Input</th>\
         <th class=\"num\">Output</th><th class=\"num\">Cache read</th><th class=\"num\">Cache write</th>\
         <th class=\"num\">Reasoning</th><th class=\"num\">Cost</th><th class=\"share-col\">Share of cost</th></tr></thead><tbody>",
    );
    for (m, u) in models {
        let cost = if unpriced.contains(m) && u.cost.lower_bound_usd == 0.0 {
            "unpriced".to_string()
        } else {
            cost_cell(&u.cost)
        };
        let share = if total > 0.0 {
            u.cost.lower_bound_usd / total
        } else {
            0.0
        };
        let t = &u.tokens;
        let _ = write!(
            out,
            "<tr><td class=\"mono\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            esc(m),
            u.llm_calls,
            t.input,
            t.output,
            t.cache_read,
            t.cache_write,
            t.reasoning,
            esc(&cost),
            share_bar(share)
        );
    }
    out.push_str("</tbody></table>");
}

/// One top list as table rows: node, figure, share bar.
fn top_rows(
    out: &mut String,
    title: &str,
    list: &[crate::insight::NodeShare],
    value: &dyn Fn(&crate::insight::NodeShare) -> String,
) {
    if list.is_empty() {
        return;
    }
    let _ = write!(
        out,
        "<table class=\"grid top\"><thead><tr><th>{}</th><th class=\"num\"></th><th class=\"share-col\">Share of run</th></tr></thead><tbody>",
        esc(title)
    );
    for n in list {
        let _ = write!(
            out,
            "<tr><td class=\"mono\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            esc(&n.node),
            esc(&value(n)),
            share_bar(n.share)
        );
    }
    out.push_str("</tbody></table>");
}

/// Critical path and bottlenecks, cache savings and suggestions: rendered
/// here (escaped), so they read without scripts.
fn insight_sections(out: &mut String, ins: &Insight) {
    use crate::format;
    out.push_str(
        "<section class=\"panel\" id=\"critical-path\"><div class=\"section-head\"><h2>Critical path and bottlenecks</h2></div>",
    );
    if ins.critical_path.iter().any(|s| s.node.is_some()) {
        let _ = write!(
            out,
            "<p class=\"chain\"><b>{}</b> set by: <span class=\"mono\">{}</span></p>",
            esc(&format::duration_ms(ins.wall_ms)),
            esc(&ins.chain_text())
        );
        out.push_str(
            "<table class=\"grid\" id=\"critical-steps\"><thead><tr><th>Span on the path</th><th class=\"num\">Starts at</th>\
             <th class=\"num\">Duration</th><th class=\"num\">Self time</th></tr></thead><tbody>",
        );
        for s in ins.critical_path.iter().take(PATH_ROWS) {
            let _ = write!(
                out,
                "<tr data-span=\"{}\"><td class=\"mono\" style=\"padding-left:{}px\">{}</td><td class=\"num\">+{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                esc(&s.span_id),
                6 + 14 * s.depth.min(40),
                esc(&s.name),
                esc(&format::duration_ms(s.start_ms)),
                esc(&format::duration_ms(s.duration_ms)),
                esc(&format::duration_ms(s.self_ms)),
            );
        }
        out.push_str("</tbody></table>");
        let more = ins.critical_path.len().saturating_sub(PATH_ROWS);
        if more > 0 {
            let _ = write!(
                out,
                "<p class=\"muted\" id=\"critical-more\">… and {} more {} on the path (the waterfall marks them all).</p>",
                format::thousands(more as u64),
                format::plural(more as u64, "span")
            );
        }
    } else {
        out.push_str("<p class=\"muted\">No node on the critical path.</p>");
    }
    out.push_str("<div class=\"tops\">");
    top_rows(out, "Self time", &ins.top_self_time, &|n| {
        format::duration_ms(n.value)
    });
    top_rows(out, "Cost", &ins.top_cost, &|n| {
        format!(
            "{}{}",
            if n.lower_bound { "≥ " } else { "" },
            format::usd(n.value)
        )
    });
    top_rows(out, "Tokens", &ins.top_tokens, &|n| {
        format::thousands(n.value as u64)
    });
    out.push_str("</div>");
    if !ins.batches.is_empty() {
        out.push_str(
            "<table class=\"grid\" id=\"batches\"><thead><tr><th>Batch</th><th class=\"num\">Items</th><th class=\"num\">max_concurrent</th>\
             <th class=\"num\">Reached</th><th class=\"num\">Queued</th><th>Slowest item</th><th class=\"num\">Wall</th></tr></thead><tbody>",
        );
        for b in &ins.batches {
            let _ = write!(
                out,
                "<tr><td class=\"mono\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                 <td class=\"num\">{}</td><td class=\"mono\">{} {}</td><td class=\"num\">{}</td></tr>",
                esc(&b.node),
                b.items,
                match (b.parallel, b.max_concurrent) {
                    (true, Some(c)) => c.to_string(),
                    (true, None) => "-".into(),
                    (false, _) => "sequential".into(),
                },
                b.concurrency_reached,
                b.items_queued,
                esc(b.slowest_item.as_deref().unwrap_or("-")),
                esc(&format::duration_ms(b.slowest_item_ms)),
                esc(&format::duration_ms(b.wall_ms)),
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</section>\n");

    let c = &ins.cache;
    if c.total.used() || !c.missed_prefixes.is_empty() {
        out.push_str(
            "<section class=\"panel\" id=\"cache-savings\"><div class=\"section-head\"><h2>Cache savings</h2></div>",
        );
        let _ = write!(
            out,
            "<p>{} of input tokens read from the cache · saved {} against the uncached price · writes cost {} ({} above plain input)</p>",
            esc(&crate::traces::show::hit_rate(c.total.hit_rate)),
            esc(&format::usd(c.total.saved_usd)),
            esc(&format::usd_or_unknown(c.total.write_cost_usd)),
            esc(&format::usd_or_unknown(c.total.write_premium_usd)),
        );
        for (title, rows) in [("Model", &c.by_model), ("Node", &c.by_node)] {
            let _ = write!(
                out,
                "<table class=\"grid cache\"><thead><tr><th>{title}</th><th class=\"num\">Calls</th><th class=\"num\">Input</th>\
                 <th class=\"num\">Cache read</th><th class=\"num\">Hit rate</th><th class=\"num\">Cache write</th>\
                 <th class=\"num\">Saved</th><th class=\"num\">Writes cost</th></tr></thead><tbody>"
            );
            for (name, f) in rows.iter().filter(|(_, f)| f.llm_calls > 0) {
                let _ = write!(
                    out,
                    "<tr><td class=\"mono\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                     <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                    esc(name),
                    f.llm_calls,
                    f.input_tokens,
                    f.cache_read_tokens,
                    esc(&crate::traces::show::hit_rate(f.hit_rate)),
                    f.cache_write_tokens,
                    esc(&format::usd(f.saved_usd)),
                    esc(&format::usd_or_unknown(f.write_cost_usd)),
                );
            }
            out.push_str("</tbody></table>");
        }
        for p in &c.missed_prefixes {
            let _ = write!(
                out,
                "<div class=\"notice warn missed-prefix\">{} calls to <code>{}</code> ({}) sent the same ~{}-token prefix and none read it from a cache \
                 (“{}”): caching it would have cost {} instead of {}, saving {}.</div>",
                p.calls,
                esc(&p.model),
                esc(&p.nodes.join(", ")),
                format::thousands(p.prefix_tokens),
                esc(&p.preview),
                esc(&format::usd(p.cached_cost_usd)),
                esc(&format::usd(p.cost_usd)),
                esc(&format::usd(p.would_save_usd)),
            );
        }
        out.push_str("</section>\n");
    }

    if !ins.suggestions.is_empty() {
        out.push_str(
            "<section class=\"panel\" id=\"suggestions\"><div class=\"section-head\"><h2>Suggestions</h2></div>\
             <p class=\"muted\">Not applied; each with the numbers behind it.</p><ul>",
        );
        for s in &ins.suggestions {
            let evidence = s.evidence_text();
            let _ = write!(
                out,
                "<li data-kind=\"{}\">{}<div class=\"muted mono\">{}</div></li>",
                s.kind.as_str(),
                esc(&s.message),
                esc(&evidence)
            );
        }
        out.push_str("</ul></section>\n");
    }
}

fn planner_section(out: &mut String, trace: &Trace, p: &SectionMetrics) {
    out.push_str("<section class=\"panel\"><div class=\"section-head\"><h2>Planner</h2></div>");
    let _ = write!(
        out,
        "<p class=\"muted\">{} · {} LLM call{} · {} tokens · {}{}{}</p>",
        esc(&crate::format::duration_ms(p.duration_ms)),
        p.usage.llm_calls,
        if p.usage.llm_calls == 1 { "" } else { "s" },
        p.usage.tokens.total,
        esc(&cost_cell(&p.usage.cost)),
        p.path_taken
            .as_deref()
            .map(|x| format!(" · path {}", esc(x)))
            .unwrap_or_default(),
        p.attempts
            .map(|a| format!(" · {a} attempt{}", if a == 1 { "" } else { "s" }))
            .unwrap_or_default(),
    );
    if let Some(steps) = p.step_timings.as_ref().filter(|s| !s.is_empty()) {
        out.push_str("<table class=\"grid\"><thead><tr><th>Step</th><th class=\"num\">Duration</th></tr></thead><tbody>");
        for (step, ms) in steps {
            let _ = write!(
                out,
                "<tr><td class=\"mono\">{}</td><td class=\"num\">{}</td></tr>",
                esc(step),
                esc(&crate::format::duration_ms(*ms))
            );
        }
        out.push_str("</tbody></table>");
    }
    if !p.node_usage.is_empty() {
        node_table(out, trace, p);
    }
    out.push_str("</section>");
}

/// The run's tokens by kind: the planner's and the workflow's sections.
pub fn run_tokens(m: &crate::telemetry::metrics::MetricsSummary) -> crate::accounting::Tokens {
    crate::accounting::Tokens::sum_all(
        m.planner
            .iter()
            .chain(std::iter::once(&m.workflow))
            .map(|s| &s.usage.tokens),
    )
}

/// The whole report page, its insight priced with the built-in table.
pub fn render_html(trace: &Trace) -> String {
    render_page(
        trace,
        &crate::insight::analyze(trace, crate::pricing::PriceTable::builtin()),
    )
}

/// The whole report page with the trace's insight (critical path, top
/// nodes, batches, cache savings, suggestions).
pub fn render_page(trace: &Trace, ins: &Insight) -> String {
    let m = trace.metrics();
    let workflow = trace.workflow_name().unwrap_or("(unnamed workflow)");
    let status = trace.status();
    let started = chrono::DateTime::from_timestamp_nanos(trace.start_ns() as i64)
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string();
    let file = trace
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let short_id: String = trace.trace_id().chars().take(8).collect();

    let mut out = String::with_capacity(64 * 1024);
    page_head(
        &mut out,
        &format!("{workflow} · {short_id} · pflow trace"),
        &[CSS],
    );

    // Header: what ran, how it ended, the totals.
    let ok = status == "ok";
    let _ = write!(
        out,
        "<header class=\"top\"><div class=\"title-row\"><span class=\"brand\">pflow trace</span><h1>{}</h1>\
         <span class=\"badge {}\">{}</span></div>\
         <div class=\"meta\"><span>trace <code>{}</code></span><span>{}</span><span>{}</span></div><div class=\"cards\">",
        esc(workflow),
        if ok { "ok" } else { "failed" },
        esc(&if ok { "✓ ok".to_string() } else { format!("✗ {status}") }),
        esc(trace.trace_id()),
        esc(&started),
        esc(&file),
    );
    card(
        &mut out,
        "Duration",
        &crate::format::duration_ms(m.total.duration_ms),
        &format!("{} spans", trace.total_spans()),
    );
    card(
        &mut out,
        "Nodes",
        &m.workflow.nodes_executed.to_string(),
        "executed",
    );
    card(
        &mut out,
        "LLM calls",
        &m.total.llm_calls.to_string(),
        &format!(
            "{} model{}",
            m.models.len(),
            if m.models.len() == 1 { "" } else { "s" }
        ),
    );
    let t = run_tokens(&m);
    let (tin, tout) = (t.input, t.output);
    card(
        &mut out,
        "Tokens",
        &m.total.tokens_total.to_string(),
        &format!("{tin} in · {tout} out"),
    );
    card(
        &mut out,
        "Cost",
        &cost_cell(&m.total.cost),
        if m.total.cost.complete {
            "USD"
        } else {
            "USD, lower bound"
        },
    );
    if ins.cache.total.used() {
        card(
            &mut out,
            "Cache saved",
            &crate::format::usd(ins.cache.total.saved_usd),
            &format!(
                "{} of input from cache",
                crate::traces::show::hit_rate(ins.cache.total.hit_rate)
            ),
        );
    }
    if let Some(r) = &m.reused {
        card(
            &mut out,
            "Reused",
            &r.cost_reused_usd
                .map_or_else(|| "unknown".into(), crate::format::usd_compact),
            &format!(
                "{} restored · {} cached · {} LLM calls, not repeated",
                r.nodes_restored, r.nodes_cached, r.llm_calls
            ),
        );
    }
    out.push_str("</div>");
    if let Some(r) = &m.reused {
        reused_table(&mut out, r);
    }
    if !m.total.cost.complete {
        let models = if m.unpriced_models.is_empty() {
            String::new()
        } else {
            format!(": {}", m.unpriced_models.join(", "))
        };
        let _ = write!(
            out,
            "<div class=\"notice warn\">Cost is incomplete: some calls have no known price{}. The total is a lower bound.</div>",
            esc(&models)
        );
    }
    let omitted = omitted_spans(trace);
    if omitted > 0 {
        let _ = write!(
            out,
            "<div class=\"notice warn\" id=\"omitted-spans\">{} left out: this page holds {} of {} spans (the first to end, with their parents). The totals and tables count every span.</div>",
            esc(&crate::format::count(omitted as u64, "span")),
            crate::format::thousands(shown_spans(trace) as u64),
            crate::format::thousands(trace.total_spans() as u64),
        );
    }
    if let Some(e) = trace.root_error() {
        let _ = write!(out, "<div class=\"notice error\">{}</div>", esc(e));
    }
    out.push_str("</header>\n");

    // Waterfall and details: drawn by the script from the data block.
    out.push_str(
        "<main class=\"layout\"><section class=\"panel wf-panel\"><div class=\"section-head\"><h2>Timeline</h2>\
         <div class=\"legend\">\
         <span><i class=\"sw k-workflow\"></i>workflow</span><span><i class=\"sw k-node\"></i>node</span>\
         <span><i class=\"sw k-item\"></i>batch item</span><span><i class=\"sw k-llm\"></i>LLM call</span>\
         <span><i class=\"sw k-planner\"></i>planner</span><span><i class=\"sw k-failed\"></i>failed</span>\
         <span><i class=\"sw k-critical\"></i>critical path</span>\
         </div></div><div id=\"waterfall\"><noscript><p class=\"muted\">The timeline needs JavaScript.</p></noscript></div></section>\
         <aside id=\"details\" class=\"panel\"><div class=\"placeholder\">Click a span in the timeline to see its attributes, events, prompt and response.</div></aside></main>\n",
    );

    insight_sections(&mut out, ins);
    out.push_str("<section class=\"panel\"><div class=\"section-head\"><h2>Cost and tokens by node</h2></div>");
    node_table(&mut out, trace, &m.workflow);
    out.push_str(
        "</section>\n<section class=\"panel\"><div class=\"section-head\"><h2>By model</h2></div>",
    );
    model_table(&mut out, &m.models, &m.unpriced_models);
    out.push_str("</section>\n");
    if let Some(p) = &m.planner {
        planner_section(&mut out, trace, p);
    }
    let _ = write!(
        out,
        "<footer>Generated by pflow {} from <code>{}</code>. Self-contained: this file loads nothing from the network.</footer>\n\
         <script type=\"application/json\" id=\"pflow-data\">",
        env!("CARGO_PKG_VERSION"),
        esc(&file),
    );
    write_data(trace, &ins.critical_ids(), &mut out);
    let _ = write!(out, "</script>\n<script>{JS}</script>\n</body></html>\n");
    out
}

/// `<trace file name without .otlp.json>.html`, in the current directory.
pub fn default_output(trace_path: &Path) -> PathBuf {
    let name = trace_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "trace".into());
    let stem = name
        .strip_suffix(super::TRACE_SUFFIX)
        .or_else(|| name.strip_suffix(".json"))
        .unwrap_or(&name);
    PathBuf::from(format!("{stem}.html"))
}

/// Writes the report (built-in prices) atomically.
pub fn write(trace: &Trace, path: &Path) -> Result<(), ReportError> {
    write_page(&render_html(trace), path)
}

/// The opening of every pflow page, up to and including `<body>`: the CSP,
/// the title (escaped here) and the inline styles. The body starts with
/// `data-rendered="false"`; the page's script sets it once drawn.
pub(crate) fn page_head(out: &mut String, title: &str, styles: &[&str]) {
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"generator\" content=\"pflow {}\">\
         <title>{}</title><style>",
        env!("CARGO_PKG_VERSION"),
        esc(title),
    );
    styles.iter().for_each(|css| out.push_str(css));
    out.push_str("</style></head>\n<body data-rendered=\"false\">\n");
}

/// Writes a page atomically (a private temp file beside `path`, then a rename).
pub(crate) fn write_page(html: &str, path: &Path) -> Result<(), ReportError> {
    let err = |source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".pflow-report-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(err)?;
    std::io::Write::write_all(&mut tmp, html.as_bytes()).map_err(err)?;
    // The temp file is private (0600) and stays so: the report embeds what the
    // 0600 trace holds.
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traces::AttrValue;

    const EVIL: &str = "</script><img src=x onerror=alert(1)><!-- & -->";

    fn fixture() -> Trace {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(
            "tests/fixtures/traces/20261201T190339.377Z_e4dc5f3657d643f701f02e0e78d8b794.otlp.json",
        );
        crate::traces::load(&p).unwrap()
    }

    /// The page with the data block cut out, and the data block's JSON.
    fn split(html: &str) -> (String, Value) {
        let open = "<script type=\"application/json\" id=\"pflow-data\">";
        let a = html.find(open).expect("data block") + open.len();
        let b = a + html[a..].find("</script>").expect("data block end");
        let data = serde_json::from_str(&html[a..b]).expect("data block is JSON");
        (format!("{}{}", &html[..a], &html[b..]), data)
    }

    #[test]
    fn span_text_cannot_leave_the_data_block() {
        let mut t = fixture();
        t.spans[0]
            .attributes
            .push(("gen_ai.input.messages".into(), AttrValue::Str(EVIL.into())));
        t.spans[1].name = EVIL.into();
        t.spans[1]
            .attributes
            .push((attr::NODE_PATH.into(), AttrValue::Str(EVIL.into())));
        let html = render_html(&t);
        assert!(
            !html.contains("<img"),
            "raw markup from a span reached the page"
        );
        assert!(!html.contains("<!--"));
        // Exactly the two script elements the page has: data and code.
        assert_eq!(html.matches("</script>").count(), 2);
        let (_, data) = split(&html);
        let spans = data["spans"].as_array().unwrap();
        let has = |want: &str| {
            spans.iter().any(|s| {
                s["name"] == want
                    || s["attrs"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|kv| kv[1] == want)
            })
        };
        assert!(has(EVIL), "the data round-trips unchanged");
    }

    /// The script spells no attribute or event name: each one it reads is
    /// `N.ID` from the registry the page carries, and every such ID exists.
    #[test]
    fn script_names_come_from_the_registry() {
        let spelled = regex::Regex::new(r#"["'](pflow\.|gen_ai\.|error\.type|exception)"#).unwrap();
        assert!(!spelled.is_match(JS), "report.js spells a name: use N.<ID>");
        let used = regex::Regex::new(r"\bN\.([A-Z0-9_]+)").unwrap();
        let ids: Vec<&str> = used
            .captures_iter(JS)
            .map(|c| c.get(1).unwrap().as_str())
            .collect();
        assert!(ids.len() >= 10, "{ids:?}");
        for id in ids {
            assert!(
                attr::REGISTRY.iter().any(|n| n.id == id),
                "report.js reads N.{id}, not in attr.rs"
            );
        }
        let (_, data) = split(&render_html(&fixture()));
        assert_eq!(data["names"]["NODE_PATH"], json!(attr::NODE_PATH));
        assert_eq!(
            data["names"].as_object().unwrap().len(),
            attr::REGISTRY.len()
        );
    }

    #[test]
    fn page_refers_to_nothing_outside_itself() {
        let mut t = fixture();
        // A URL inside the trace data is data, not a reference.
        t.spans[0].attributes.push((
            "url.full".into(),
            AttrValue::Str("https://cdn.example/x.js".into()),
        ));
        let html = render_html(&t);
        let (page, data) = split(&html);
        assert!(data.to_string().contains("https://cdn.example/x.js"));
        for bad in [
            "http:", "https:", "//cdn", "src=", "href=", "url(", "@import", "<link",
        ] {
            assert!(!page.contains(bad), "page contains `{bad}`");
        }
        assert!(
            page.contains("default-src 'none'"),
            "a CSP blocks every fetch"
        );
    }

    #[test]
    fn spans_come_in_tree_order_with_depth() {
        let t = fixture();
        let (page, data) = split(&render_html(&t));
        let rows: Vec<(String, u64, String)> = data["spans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap().to_string(),
                    s["depth"].as_u64().unwrap(),
                    s["kind"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(rows.len(), t.spans.len());
        let names: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(
            &names[..6],
            [
                "pflow run review.json",
                "invoke_workflow review-notes",
                "node ask",
                "chat gpt-4o",
                "node split",
                "node each"
            ]
        );
        let item = rows.iter().find(|r| r.0 == "node each[1]").unwrap();
        assert_eq!((item.1, item.2.as_str()), (3, "item"));
        assert_eq!(rows[3].2, "llm");
        assert_eq!(rows[0].2, "workflow");
        let fetch = &data["spans"].as_array().unwrap()
            [names.iter().position(|n| *n == "node fetch").unwrap()];
        assert_eq!(fetch["failed"], true);
        // Parallel batch items overlap in time.
        let span = |n: &str| {
            data["spans"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == n)
                .unwrap()
                .clone()
        };
        assert!(span("node each[1]")["start"].as_f64() < span("node each[0]")["end"].as_f64());
        // Tables: by node and by model, from the same metrics the run printed.
        assert!(page.contains("<td class=\"mono\">each[2]</td>"));
        assert!(page.contains("<td class=\"mono\">gpt-4o</td>"));
        assert!(page.contains("$0.000810"));
    }

    #[test]
    fn parent_cycles_neither_loop_nor_lose_spans() {
        let mut t = fixture();
        let (a, b) = (t.spans[0].span_id.clone(), t.spans[1].span_id.clone());
        t.spans[0].parent_span_id = b;
        t.spans[1].parent_span_id = a;
        let order = tree_order(&t);
        assert_eq!(order.len(), t.spans.len());
        let mut ids: Vec<&str> = order.iter().map(|(_, s)| s.span_id.as_str()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), t.spans.len());
    }

    #[test]
    fn ten_thousand_spans_keep_every_span_and_the_tables() {
        let mut t = fixture();
        let template = t
            .spans
            .iter()
            .find(|s| s.name == "node each[0]")
            .unwrap()
            .clone();
        let parent = template.parent_span_id.clone();
        for i in 0..10_000u64 {
            let mut s = template.clone();
            s.span_id = format!("{:016x}", 0xabc0_0000_0000u64 + i);
            s.parent_span_id = parent.clone();
            s.name = format!("node each[{i}]");
            t.spans.push(s);
        }
        let html = render_html(&t);
        let (page, data) = split(&html);
        assert_eq!(data["spans"].as_array().unwrap().len(), t.spans.len());
        assert_eq!(data["row_limit"], ROW_LIMIT);
        assert!(page.contains("Cost and tokens by node"));
    }

    #[test]
    fn default_name_and_unwritable_targets() {
        assert_eq!(
            default_output(Path::new("/x/20260101T000000.000Z_ab.otlp.json")),
            PathBuf::from("20260101T000000.000Z_ab.html")
        );
        let t = fixture();
        let d = tempfile::tempdir().unwrap();
        let bad = d.path().join("missing/dir/run.html");
        let e = write(&t, &bad).unwrap_err();
        assert!(e.to_string().contains("missing/dir/run.html"), "{e}");
        let good = d.path().join("run.html");
        write(&t, &good).unwrap();
        assert!(std::fs::read_to_string(&good)
            .unwrap()
            .starts_with("<!DOCTYPE html>"));
        // Only the report is left behind, no temp file.
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
