//! Terminal rendering of saved traces: the run list, the span tree with
//! durations, tokens and cost per node and per LLM call (failures marked),
//! and one node's details (params, template resolutions, store writes,
//! prompt and response). Colour is the caller's choice ([`Style`]), so the
//! same text is pinned by snapshot tests.

use super::{AttrValue, Trace, TraceSpan};
use crate::accounting::Usage;
use crate::format;
use crate::telemetry::attr;
use std::collections::HashMap;
use std::fmt::Write as _;

/// ANSI styling, on only when the caller says so (a TTY without `NO_COLOR`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Style {
    pub color: bool,
}

impl Style {
    /// Colour when `tty` and `NO_COLOR` is unset or empty.
    pub fn detect(tty: bool) -> Style {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style {
            color: tty && !no_color,
        }
    }

    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    /// A table's column headings, dimmed, as a line of `out`.
    pub fn heading(&self, out: &mut String, text: &str) {
        let _ = writeln!(out, "{}", self.dim(text));
    }
    pub fn red(&self, s: &str) -> String {
        self.paint("31", s)
    }
    pub fn green(&self, s: &str) -> String {
        self.paint("32", s)
    }
    pub fn yellow(&self, s: &str) -> String {
        self.paint("33", s)
    }
    pub fn magenta(&self, s: &str) -> String {
        self.paint("35", s)
    }
    pub fn dim(&self, s: &str) -> String {
        self.paint("2", s)
    }
    pub fn bold(&self, s: &str) -> String {
        self.paint("1", s)
    }
}

/// The LLM usage of one span alone (an LLM call's own, else nothing).
fn own(s: &TraceSpan) -> Usage {
    let f = s.facts();
    let mut u = Usage::default();
    if f.is_llm() {
        u.add_call(&f.call_usage());
    }
    u
}

/// The LLM usage of every span and everything below it, by span id.
fn sums<'a>(
    span: &'a TraceSpan,
    kids: &HashMap<&str, Vec<&'a TraceSpan>>,
    out: &mut HashMap<&'a str, Usage>,
) -> Usage {
    let mut s = own(span);
    for c in kids.get(span.span_id.as_str()).into_iter().flatten() {
        s.add(&sums(c, kids, out));
    }
    // Only spans with calls below them show a sum: no entry for the rest.
    if s.llm_calls > 0 {
        out.insert(span.span_id.as_str(), s.clone());
    }
    s
}

fn error_text(s: &TraceSpan, max_chars: usize) -> Option<String> {
    if !s.failed() && s.attr(attr::ERROR_TYPE).is_none() {
        return None;
    }
    let kind = s.str_attr(attr::ERROR_TYPE).unwrap_or("error");
    let msg = s.status_message.lines().next().unwrap_or("");
    let mut t = if msg.is_empty() || msg == kind {
        kind.to_string()
    } else {
        format!("{kind}: {msg}")
    };
    if t.chars().count() > max_chars {
        t = t.chars().take(max_chars - 1).collect::<String>() + "…";
    }
    Some(t)
}

/// The span tree: one line a span, with duration, tokens and cost.
pub fn render_tree(trace: &Trace, style: &Style) -> String {
    render_tree_marked(trace, style, None)
}

/// The span tree with the spans in `critical` (span ids) marked `●`: the
/// critical path of `pflow trace show --critical-path`.
pub fn render_tree_marked(
    trace: &Trace,
    style: &Style,
    critical: Option<&std::collections::HashSet<&str>>,
) -> String {
    let kids = trace.children();
    let roots: Vec<&TraceSpan> = {
        let ids: std::collections::HashSet<&str> =
            trace.spans.iter().map(|s| s.span_id.as_str()).collect();
        let mut r: Vec<&TraceSpan> = trace
            .spans
            .iter()
            .filter(|s| !ids.contains(s.parent_span_id.as_str()))
            .collect();
        r.sort_by_key(|s| s.start_ns);
        r
    };
    let mut totals = HashMap::new();
    for r in &roots {
        sums(r, &kids, &mut totals);
    }
    let mut rows: Vec<(String, &TraceSpan)> = Vec::new();
    fn walk<'a>(
        s: &'a TraceSpan,
        prefix: &str,
        last: bool,
        top: bool,
        kids: &HashMap<&str, Vec<&'a TraceSpan>>,
        rows: &mut Vec<(String, &'a TraceSpan)>,
    ) {
        let branch = if top {
            ""
        } else if last {
            "└─ "
        } else {
            "├─ "
        };
        rows.push((format!("{prefix}{branch}"), s));
        let child_prefix = if top {
            String::new()
        } else if last {
            format!("{prefix}   ")
        } else {
            format!("{prefix}│  ")
        };
        let cs = kids.get(s.span_id.as_str()).cloned().unwrap_or_default();
        let n = cs.len();
        for (i, c) in cs.into_iter().enumerate() {
            walk(c, &child_prefix, i + 1 == n, false, kids, rows);
        }
    }
    for r in &roots {
        walk(r, "", true, true, &kids, &mut rows);
    }
    let label = |s: &TraceSpan| {
        let on_path = critical.is_some_and(|c| c.contains(s.span_id.as_str()));
        let mark = match (on_path, s.failed()) {
            (true, true) => "● ✗ ",
            (true, false) => "● ",
            (false, true) => "✗ ",
            (false, false) => "",
        };
        let attempt = s
            .attr(attr::NODE_ATTEMPT)
            .or_else(|| s.attr(attr::LLM_ATTEMPT))
            .and_then(AttrValue::as_i64)
            .filter(|a| *a > 1)
            .map(|a| format!(" (attempt {a})"))
            .unwrap_or_default();
        format!("{mark}{}{attempt}", s.label())
    };
    let labels: Vec<String> = rows
        .iter()
        .map(|(p, s)| format!("{p}{}", label(s)))
        .collect();
    let width = format::column_width(labels.iter().map(String::as_str), 20, 70);
    let mut out = String::new();
    style.heading(
        &mut out,
        &format!(
            "{:<width$}  {:>10}  {:>15}  {:>11}",
            "SPAN", "DURATION", "TOKENS in→out", "COST"
        ),
    );
    for (prefix, s) in &rows {
        let s = *s;
        let room = width.saturating_sub(prefix.chars().count()).max(1);
        let mut name = label(s);
        if name.chars().count() > room {
            name = name.chars().take(room - 1).collect::<String>() + "…";
        }
        let pad = room.saturating_sub(name.chars().count());
        let sum = totals.get(s.span_id.as_str()).cloned().unwrap_or_default();
        let (tokens, cost) = if sum.llm_calls > 0 {
            (
                format!("{}→{}", sum.tokens.input, sum.tokens.output),
                format::cost(&sum.cost),
            )
        } else {
            (String::new(), String::new())
        };
        let on_path = critical.is_some_and(|c| c.contains(s.span_id.as_str()));
        let name = if s.failed() {
            style.red(&name)
        } else if on_path {
            style.magenta(&name)
        } else if s.is_llm() {
            style.yellow(&name)
        } else {
            name
        };
        let name = format!("{prefix}{name}");
        let _ = write!(
            out,
            "{name}{}  {:>10}  {:>15}  {:>11}",
            " ".repeat(pad),
            format::duration_ms(s.duration().as_secs_f64() * 1000.0),
            tokens,
            cost
        );
        if let Some(e) = error_text(s, 100) {
            let _ = write!(out, "  {}", style.red(&e));
        }
        if let Some(note) = s.reuse_note() {
            let _ = write!(out, "  {}", style.dim(&format!("↺ {note}")));
        }
        let trimmed = out.trim_end_matches(' ').len();
        out.truncate(trimmed);
        out.push('\n');
    }
    out
}

/// `slow 2.01 s (57%) · fan 1.50 s (43%)`.
fn shares(
    list: &[crate::insight::NodeShare],
    value: impl Fn(&crate::insight::NodeShare) -> String,
) -> String {
    list.iter()
        .map(|n| {
            format!(
                "{} {} ({})",
                n.node,
                value(n),
                crate::format::percent(n.share)
            )
        })
        .collect::<Vec<_>>()
        .join(" · ")
}

/// A hit rate as a percentage, `-` without input.
pub fn hit_rate(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{:.1}%", r * 100.0))
}

/// One line of cache figures: `99.8% hit · 4,012 read · 0 written · saved $… · writes $…`.
pub fn cache_line(f: &crate::insight::CacheFigures) -> String {
    format!(
        "{} hit · {} read · {} written · saved {} · writes cost {}",
        hit_rate(f.hit_rate),
        format::thousands(f.cache_read_tokens),
        format::thousands(f.cache_write_tokens),
        format::usd(f.saved_usd),
        format::usd_or_unknown(f.write_cost_usd),
    )
}

/// The footer under the tree: the critical path, the top nodes by self
/// time, cost and tokens, what each batch reached, the prompt cache, and
/// the suggestions.
pub fn render_insight(ins: &crate::insight::Insight, style: &Style) -> String {
    let mut out = render_top(ins, style);
    render_details(ins, style, &mut out);
    out
}

/// The critical path and the top nodes by self time, cost and tokens.
pub fn render_top(ins: &crate::insight::Insight, style: &Style) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {}",
        style.bold(&format!(
            "critical path ({}):",
            format::duration_ms(ins.wall_ms)
        )),
        if ins.critical_path.iter().any(|s| s.node.is_some()) {
            ins.chain_text()
        } else {
            "no node on it".into()
        }
    );
    if !ins.top_self_time.is_empty() {
        let _ = writeln!(
            out,
            "{} {}",
            style.bold("top self time:"),
            shares(&ins.top_self_time, |n| format::duration_ms(n.value))
        );
    }
    if !ins.top_cost.is_empty() {
        let _ = writeln!(
            out,
            "{} {}",
            style.bold("top cost:"),
            shares(&ins.top_cost, |n| {
                let v = format::usd(n.value);
                if n.lower_bound {
                    format!("≥ {v}")
                } else {
                    v
                }
            })
        );
    }
    if !ins.top_tokens.is_empty() {
        let _ = writeln!(
            out,
            "{} {}",
            style.bold("top tokens:"),
            shares(&ins.top_tokens, |n| format::thousands(n.value as u64))
        );
    }
    out
}

/// Batches, the prompt cache and the suggestions.
fn render_details(ins: &crate::insight::Insight, style: &Style, out: &mut String) {
    for b in &ins.batches {
        let _ = writeln!(
            out,
            "{} {}",
            style.bold(&format!("batch {}:", b.node)),
            batch_line(b)
        );
    }
    let c = &ins.cache;
    if c.total.used() {
        let _ = writeln!(
            out,
            "{} {}",
            style.bold("prompt cache:"),
            cache_line(&c.total)
        );
        for (m, f) in c.by_model.iter().filter(|(_, f)| f.llm_calls > 0) {
            let _ = writeln!(out, "  model {m}: {}", cache_line(f));
        }
        for (n, f) in c.by_node.iter().filter(|(_, f)| f.llm_calls > 0) {
            let _ = writeln!(out, "  node {n}: {}", cache_line(f));
        }
    }
    // A missed prefix is one of the suggestions below, with its numbers.
    if !ins.suggestions.is_empty() {
        let _ = writeln!(out, "{}", style.bold("suggestions (not applied):"));
        for s in &ins.suggestions {
            let _ = writeln!(out, "  • {}", s.message);
        }
    }
}

/// `4 items · max_concurrent 2 · reached 2 · 2 queued · slowest fan[1] 1.00 s · wall 1.50 s`.
pub fn batch_line(b: &crate::insight::BatchReport) -> String {
    format!(
        "{} · {} · reached {} at once · {} queued · slowest {} {} · wall {}",
        format::count(b.items, "item"),
        match (b.parallel, b.max_concurrent) {
            (true, Some(c)) => format!("parallel, max_concurrent {c}"),
            (true, None) => "parallel".into(),
            (false, _) => "sequential".into(),
        },
        b.concurrency_reached,
        b.items_queued,
        b.slowest_item.as_deref().unwrap_or("-"),
        format::duration_ms(b.slowest_item_ms),
        format::duration_ms(b.wall_ms),
    )
}

/// ` (+4 batch items)` after the node count, when any batch item ran.
pub fn batch_items_note(m: &crate::telemetry::metrics::MetricsSummary) -> String {
    if m.workflow.batch_items > 0 {
        format!(
            " (+{})",
            format::count(m.workflow.batch_items, "batch item")
        )
    } else {
        String::new()
    }
}

/// The header above the tree: what ran, when, how it ended, the totals.
pub fn render_header(trace: &Trace, style: &Style) -> String {
    let m = trace.metrics();
    let status = trace.status();
    let status = match status {
        "ok" => style.green("✓ ok"),
        other => style.red(&format!("✗ {other}")),
    };
    let when = chrono::DateTime::from_timestamp_nanos(trace.start_ns() as i64)
        .format("%Y-%m-%d %H:%M:%S UTC");
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {}  {}",
        style.bold("trace"),
        trace.trace_id(),
        status
    );
    let _ = writeln!(
        out,
        "{when} · workflow {} · {} · {}{} · {} · {} · {}",
        trace.workflow_name().unwrap_or("?"),
        format::duration_ms(m.total.duration_ms),
        format::count(m.workflow.nodes_executed, "node"),
        batch_items_note(&m),
        format::count(m.total.llm_calls, "LLM call"),
        format::count(m.total.tokens_total, "token"),
        format::cost_with_unpriced(&m.total.cost, m.unpriced_models.len()),
    );
    if let Some((from, mode)) = trace.resumed_from() {
        let _ = writeln!(
            out,
            "{}",
            style.yellow(&format!(
                "↺ continues run {from} ({mode}; linked to its root span)"
            ))
        );
    }
    if let Some(r) = &m.reused {
        let _ = writeln!(
            out,
            "{}",
            style.yellow(&format!(
                "↺ reused: {} restored + {} cached · {} · {} · {} when first made (not spent by this run)",
                format::count(r.nodes_restored, "node"),
                r.nodes_cached,
                format::count(r.llm_calls, "LLM call"),
                format::count(r.tokens.total, "token"),
                r.cost_reused_usd
                    .map_or_else(|| "cost unknown".into(), format::usd_compact)
            ))
        );
    }
    for note in [trace.truncation_note(), trace.omitted_note()]
        .into_iter()
        .flatten()
    {
        let _ = writeln!(out, "{}", style.yellow(&note));
    }
    out
}

/// Node paths in the trace (every span, kept or not), for "did you mean".
pub fn node_names(trace: &Trace) -> Vec<&str> {
    trace.node_names()
}

/// The spans of one node (every attempt and, for a batch, the batch span):
/// matched by path, else by id.
pub fn node_spans<'a>(trace: &'a Trace, id: &str) -> Vec<&'a TraceSpan> {
    let by = |k: &str| -> Vec<&TraceSpan> {
        let mut v: Vec<&TraceSpan> = trace
            .spans
            .iter()
            .filter(|s| s.str_attr(attr::NODE_ROLE).is_some() && s.str_attr(k) == Some(id))
            .collect();
        v.sort_by_key(|s| s.start_ns);
        v
    };
    let v = by(attr::NODE_PATH);
    if v.is_empty() {
        by(attr::NODE_ID)
    } else {
        v
    }
}

fn pretty(s: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(s) {
        Ok(v @ (serde_json::Value::Object(_) | serde_json::Value::Array(_))) => {
            serde_json::to_string_pretty(&v).unwrap_or_else(|_| s.to_string())
        }
        _ => s.to_string(),
    }
}

fn indent(s: &str, by: &str) -> String {
    s.lines()
        .map(|l| format!("{by}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The text of GenAI message JSON (`[{"role", "parts": [{"content"}]}]`), else the raw value.
pub fn message_text(raw: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(raw) else {
        return raw.to_string();
    };
    let mut parts = Vec::new();
    for m in v.as_array().into_iter().flatten() {
        if let Some(c) = m.get("content").and_then(|c| c.as_str()) {
            parts.push(c.to_string());
        }
        for p in m
            .get("parts")
            .and_then(|p| p.as_array())
            .into_iter()
            .flatten()
        {
            if let Some(c) = p.get("content").and_then(|c| c.as_str()) {
                parts.push(c.to_string());
            }
        }
    }
    if parts.is_empty() {
        pretty(raw)
    } else {
        parts.join("\n")
    }
}

/// Multi-line text as a JSON string literal, so it stays on one line.
fn one_line(s: &str) -> String {
    if s.contains('\n') {
        serde_json::Value::String(s.to_string()).to_string()
    } else {
        s.to_string()
    }
}

/// ` value` inline, or the lines of a multi-line value indented below.
fn block(s: &str, by: &str) -> String {
    if s.contains('\n') {
        format!("\n{}", indent(s.trim_end_matches('\n'), by))
    } else {
        format!(" {s}")
    }
}

fn value_line(attrs: &super::Attrs) -> String {
    let preview = super::get(attrs, attr::VALUE_PREVIEW)
        .map(|v| v.to_string())
        .unwrap_or_default();
    let size = super::get(attrs, attr::VALUE_SIZE).and_then(AttrValue::as_i64);
    let truncated = super::get(attrs, attr::VALUE_TRUNCATED) == Some(&AttrValue::Bool(true));
    match (truncated, size) {
        (true, Some(n)) => format!("{preview} … ({n} bytes, truncated)"),
        _ => preview,
    }
}

/// A span's resource use on one line (`shell` command, pflow's own share,
/// HTTP sizes and first byte, LLM streaming speed), or `None` when it has none.
pub fn resources_line(s: &TraceSpan) -> Option<String> {
    let int = |k: &str| {
        s.attr(k)
            .and_then(AttrValue::as_i64)
            .and_then(|v| u64::try_from(v).ok())
    };
    let float = |k: &str| s.attr(k).and_then(AttrValue::as_f64);
    let ms_of_us = |us: u64| {
        if us < 1000 {
            format!("{us} µs")
        } else {
            format::duration_ms(us as f64 / 1000.0)
        }
    };
    let mut parts = Vec::new();
    if let (Some(u), Some(sys)) = (int(attr::PROCESS_CPU_USER), int(attr::PROCESS_CPU_SYSTEM)) {
        parts.push(format!(
            "command cpu {} user + {} sys",
            ms_of_us(u),
            ms_of_us(sys)
        ));
    }
    if let Some(b) = int(attr::PROCESS_MEMORY_PEAK) {
        parts.push(format!("command peak rss {}", format::bytes(b)));
    }
    if let Some(us) = int(attr::NODE_BUSY_US) {
        parts.push(format!("pflow busy {}", ms_of_us(us)));
    }
    if let Some(b) = int(attr::NODE_RSS_PEAK) {
        parts.push(format!("pflow peak rss ↑ {}", format::bytes(b)));
    }
    if let Some(b) = int(attr::HTTP_REQUEST_BODY_SIZE) {
        parts.push(format!("sent {}", format::bytes(b)));
    }
    if let Some(b) = int(attr::HTTP_RESPONSE_BODY_SIZE) {
        parts.push(format!("received {}", format::bytes(b)));
    }
    if let Some(t) = float(attr::HTTP_TIME_TO_FIRST_BYTE) {
        parts.push(format!("first byte {}", format::duration_ms(t * 1000.0)));
    }
    if let Some(t) = float(attr::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK) {
        parts.push(format!("first chunk {}", format::duration_ms(t * 1000.0)));
    }
    if let Some(r) = float(attr::LLM_OUTPUT_TOKENS_PER_S) {
        parts.push(format!("{r:.1} output tokens/s"));
    }
    (!parts.is_empty()).then(|| parts.join(" · "))
}

/// One node's details: every attempt with its params, template
/// resolutions, store writes, errors, and the LLM calls made for it.
pub fn render_node(trace: &Trace, id: &str, style: &Style) -> Result<String, String> {
    let spans = node_spans(trace, id);
    if spans.is_empty() {
        let names = node_names(trace);
        let hint = names
            .iter()
            .map(|n| (strsim::jaro_winkler(n, id), n))
            .filter(|(d, _)| *d > 0.8)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, n)| format!(" Did you mean `{n}`?"))
            .unwrap_or_default();
        return Err(format!(
            "no node `{id}` in `{}`.{hint} Nodes: {}",
            trace.path.display(),
            names.join(", ")
        ));
    }
    let kids = trace.children();
    let mut out = String::new();
    for s in spans {
        let role = s.str_attr(attr::NODE_ROLE).unwrap_or("node");
        let attempt = s.attr(attr::NODE_ATTEMPT).and_then(AttrValue::as_i64);
        let status = s.str_attr(attr::NODE_STATUS).unwrap_or("ok");
        let status = if status == "ok" {
            style.green(status)
        } else if s.reuse_note().is_some() {
            style.yellow(status)
        } else {
            style.red(status)
        };
        let _ = writeln!(
            out,
            "{} {}  ({}{}{})  {}  {}",
            style.bold("node"),
            s.str_attr(attr::NODE_PATH).unwrap_or(id),
            s.str_attr(attr::NODE_TYPE).unwrap_or("?"),
            if role == "node" {
                String::new()
            } else {
                format!(", {role}")
            },
            attempt
                .filter(|a| *a > 1)
                .map(|a| format!(", attempt {a}"))
                .unwrap_or_default(),
            status,
            format::duration_ms(s.duration().as_secs_f64() * 1000.0),
        );
        if let Some(e) = error_text(s, usize::MAX) {
            let _ = writeln!(out, "  {} {}", style.red("error:"), e);
        }
        if let Some(note) = s.reuse_note() {
            let _ = writeln!(out, "  ↺ {note}");
            if let Some(t) = s.str_attr(attr::NODE_ORIGIN_TRACE_ID) {
                let _ = writeln!(out, "  origin trace: {t}");
            }
        }
        if let Some(a) = s.str_attr(attr::NODE_ACTION) {
            let _ = writeln!(out, "  action: {a}");
        }
        if let Some(r) = resources_line(s) {
            let _ = writeln!(out, "  resources: {r}");
        }
        if let Some(p) = s.str_attr(attr::NODE_PARAMS) {
            let _ = writeln!(out, "  params:\n{}", indent(&pretty(p), "    "));
        }
        // Each template resolved and store write, with its value.
        let sections = [
            ("templates", attr::EVENT_TEMPLATE_RESOLVED),
            ("store writes", attr::EVENT_STORE_WRITE),
        ];
        for (title, event) in sections {
            let events: Vec<_> = s.events.iter().filter(|e| e.name == event).collect();
            if !events.is_empty() {
                let _ = writeln!(out, "  {title}:");
            }
            for e in events {
                let text = |k: &str| {
                    super::get(&e.attributes, k)
                        .map(|v| v.to_string())
                        .unwrap_or_default()
                };
                let what = if event == attr::EVENT_STORE_WRITE {
                    format!("{} =", text(attr::STORE_KEY))
                } else {
                    let t = text(attr::TEMPLATE);
                    format!("{}: {} →", text(attr::PARAM), one_line(&t))
                };
                let _ = writeln!(
                    out,
                    "    {what}{}",
                    block(&value_line(&e.attributes), "      ")
                );
            }
        }
        for e in s.events.iter().filter(|e| e.name == attr::EVENT_EXCEPTION) {
            let msg = super::get(&e.attributes, attr::EXCEPTION_MESSAGE)
                .map(|v| v.to_string())
                .unwrap_or_default();
            let _ = writeln!(out, "  {} {msg}", style.red("exception:"));
        }
        let mut llm: Vec<&TraceSpan> = Vec::new();
        let mut stack: Vec<&TraceSpan> = vec![s];
        while let Some(x) = stack.pop() {
            for c in kids.get(x.span_id.as_str()).into_iter().flatten() {
                if c.is_llm() {
                    llm.push(c);
                } else if c.str_attr(attr::NODE_ROLE).is_none() {
                    stack.push(c);
                }
            }
        }
        // The node's own requests (an LLM call's request shows under the call).
        let mut http: Vec<&TraceSpan> = kids
            .get(s.span_id.as_str())
            .into_iter()
            .flatten()
            .copied()
            .filter(|c| c.attr(attr::HTTP_REQUEST_METHOD).is_some())
            .collect();
        http.sort_by_key(|c| c.start_ns);
        for c in http {
            let _ = writeln!(
                out,
                "  {} {}  {}{}",
                style.yellow("http"),
                c.name,
                format::duration_ms(c.duration().as_secs_f64() * 1000.0),
                c.attr(attr::HTTP_RESPONSE_STATUS_CODE)
                    .and_then(AttrValue::as_i64)
                    .map(|st| format!("  {st}"))
                    .unwrap_or_default(),
            );
            if let Some(r) = resources_line(c) {
                let _ = writeln!(out, "    resources: {r}");
            }
        }
        llm.sort_by_key(|c| c.start_ns);
        for c in llm {
            let u = own(c);
            let _ = writeln!(
                out,
                "  {} {}  {}  {}→{} tokens  {}{}",
                style.yellow("llm"),
                c.name,
                format::duration_ms(c.duration().as_secs_f64() * 1000.0),
                u.tokens.input,
                u.tokens.output,
                format::usd_or_unknown(c.attr(attr::COST_USD).and_then(AttrValue::as_f64)),
                c.str_attr(attr::COST_SOURCE)
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default()
            );
            if let Some(e) = error_text(c, usize::MAX) {
                let _ = writeln!(out, "    {} {e}", style.red("error:"));
            }
            if let Some(r) = resources_line(c) {
                let _ = writeln!(out, "    resources: {r}");
            }
            for (k, title) in [
                (attr::GEN_AI_SYSTEM_INSTRUCTIONS, "system"),
                (attr::GEN_AI_INPUT_MESSAGES, "prompt"),
                (attr::GEN_AI_OUTPUT_MESSAGES, "response"),
            ] {
                if let Some(v) = c.str_attr(k) {
                    let _ = writeln!(out, "    {title}:\n{}", indent(&message_text(v), "      "));
                }
            }
        }
        out.push('\n');
    }
    Ok(out)
}

/// One row of `pflow trace list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ListRow {
    pub time: String,
    pub trace_id: String,
    pub workflow: Option<String>,
    pub status: String,
    pub duration_ms: f64,
    pub tokens_total: u64,
    #[serde(flatten)]
    pub cost: crate::accounting::CostTotal,
    pub file: String,
    /// Set when the file could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ListRow {
    pub fn of(file: &super::TraceFile) -> ListRow {
        let name = file
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let time_of_name = || {
            chrono::NaiveDateTime::parse_from_str(
                name.split('_').next().unwrap_or(""),
                "%Y%m%dT%H%M%S%.3fZ",
            )
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default()
        };
        // Only the overview: no span is kept, whatever the file's size.
        match super::load_with(&file.path, super::Keep::First(0)) {
            Ok(t) => {
                let m = t.metrics();
                ListRow {
                    time: chrono::DateTime::from_timestamp_nanos(t.start_ns() as i64)
                        .format("%Y-%m-%d %H:%M:%S")
                        .to_string(),
                    trace_id: t.trace_id().to_string(),
                    workflow: t.workflow_name().map(str::to_string),
                    status: t.status().to_string(),
                    duration_ms: m.total.duration_ms,
                    tokens_total: m.total.tokens_total,
                    cost: m.total.cost,
                    file: file.path.display().to_string(),
                    error: None,
                }
            }
            Err(e) => ListRow {
                time: time_of_name(),
                trace_id: file.trace_id.clone(),
                workflow: None,
                status: "unreadable".into(),
                duration_ms: 0.0,
                tokens_total: 0,
                cost: crate::accounting::CostTotal::new(0.0, false),
                file: file.path.display().to_string(),
                error: Some(e.to_string()),
            },
        }
    }
}

/// The run list as an aligned table (times in UTC).
pub fn render_list(rows: &[ListRow], style: &Style) -> String {
    let wf_width = format::column_width(
        rows.iter().map(|r| r.workflow.as_deref().unwrap_or("?")),
        8,
        32,
    );
    let mut out = String::new();
    style.heading(
        &mut out,
        &format!(
            "{:<19}  {:<wf_width$}  {:<11}  {:>10}  {:>8}  {:>11}  FILE",
            "TIME (UTC)", "WORKFLOW", "STATUS", "DURATION", "TOKENS", "COST"
        ),
    );
    for r in rows {
        let mut wf = r.workflow.clone().unwrap_or_else(|| "?".into());
        if wf.chars().count() > wf_width {
            wf = wf.chars().take(wf_width - 1).collect::<String>() + "…";
        }
        let status = format!("{:<11}", r.status);
        let status = if r.status == "ok" {
            style.green(&status)
        } else {
            style.red(&status)
        };
        let file = std::path::Path::new(&r.file)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| r.file.clone());
        let _ = writeln!(
            out,
            "{:<19}  {:<wf_width$}  {status}  {:>10}  {:>8}  {:>11}  {file}",
            r.time,
            wf,
            format::duration_ms(r.duration_ms),
            r.tokens_total,
            format::cost(&r.cost),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn style_paints_only_when_on() {
        assert_eq!(Style { color: false }.red("x"), "x");
        assert_eq!(Style { color: true }.red("x"), "\x1b[31mx\x1b[0m");
    }

    #[test]
    fn message_text_reads_genai_parts() {
        let raw = r#"[{"role":"user","parts":[{"type":"text","content":"hi there"}]}]"#;
        assert_eq!(message_text(raw), "hi there");
        assert_eq!(message_text("plain"), "plain");
    }
}
