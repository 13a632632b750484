//! `pflow trace diff A B`: two saved runs side by side, node by node (matched
//! by `pflow.node.path`, the last attempt compared): duration, tokens by
//! kind, cost, model, status, and what changed in the resolved params and
//! the prompts, as a short line diff. A summary line gives the deltas: how a
//! user sees the effect of a prompt or model change.

use super::{show, AttrValue, Trace, TraceSpan};
use crate::accounting::{batch_of, Tokens, Usage};
use crate::telemetry::attr;
use serde::Serialize;
use serde_json::Value;
use std::fmt::Write as _;

/// At most this many prompt diff lines per node; the rest is counted.
pub const MAX_PROMPT_DIFF_LINES: usize = 20;
/// Param values are previewed to this many characters.
const PREVIEW_CHARS: usize = 60;

/// Token counts by kind, as the diff lists them.
fn kinds(t: &Tokens) -> [(&'static str, u64); 5] {
    [
        ("input", t.input),
        ("output", t.output),
        ("cache_read", t.cache_read),
        ("cache_write", t.cache_write),
        ("reasoning", t.reasoning),
    ]
}

/// One node of one run: its last attempt.
#[derive(Debug, Clone, Serialize)]
pub struct NodeSide {
    #[serde(rename = "type")]
    pub node_type: Option<String>,
    pub attempts: u64,
    pub duration_ms: f64,
    pub status: String,
    pub llm_calls: u64,
    pub tokens: Tokens,
    /// Null when the attempt made no LLM call.
    pub cost_usd: Option<f64>,
    /// False when a call's cost is unknown (`cost_usd` is then a lower bound).
    pub cost_complete: bool,
    pub model: Option<String>,
    /// Batch nodes only: the items whose usage is summed in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_items: Option<u64>,
    /// A restored or cached node (status `restored`/`cached`): where its
    /// outputs came from and what they cost when first made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reused: Option<String>,
    #[serde(skip)]
    params: Option<String>,
    #[serde(skip)]
    params_digest: Option<String>,
    /// What the fields above show.
    #[serde(skip)]
    usage: Usage,
    #[serde(skip)]
    prompt: Option<String>,
}

impl NodeSide {
    fn set_usage(&mut self, u: Usage) {
        self.llm_calls = u.llm_calls;
        self.tokens = u.tokens;
        self.cost_usd = (u.llm_calls > 0).then_some(u.cost.rounded().lower_bound_usd);
        self.cost_complete = u.cost.complete;
        self.usage = u;
    }
}

/// A param that differs: `added`, `removed` or `changed`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamChange {
    pub key: String,
    pub change: &'static str,
    pub a: Option<String>,
    pub b: Option<String>,
}

/// One node present in both runs.
#[derive(Debug, Clone, Serialize)]
pub struct NodeDiff {
    pub node: String,
    pub changed: bool,
    pub a: NodeSide,
    pub b: NodeSide,
    pub params: Vec<ParamChange>,
    /// `- old` / `+ new` lines of the prompt (system instructions first),
    /// at most [`MAX_PROMPT_DIFF_LINES`].
    pub prompt_diff: Vec<String>,
    /// Diff lines left out past the cap.
    pub prompt_diff_more: usize,
}

/// A number of A and of B.
#[derive(Debug, Clone, Serialize)]
pub struct Delta {
    pub a: f64,
    pub b: f64,
    pub delta: f64,
    /// Relative change in percent; null when A is 0.
    pub pct: Option<f64>,
}

impl Delta {
    fn of(a: f64, b: f64) -> Delta {
        Delta {
            a,
            b,
            delta: b - a,
            pct: (a != 0.0).then(|| (b - a) / a * 100.0),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelChange {
    pub a: String,
    pub b: String,
    pub nodes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub duration_ms: Delta,
    pub tokens_total: Delta,
    pub cost_usd: Delta,
    pub nodes_changed: u64,
    pub model_changes: Vec<ModelChange>,
    /// The summary as one line of text.
    pub line: String,
}

/// Which run is which.
#[derive(Debug, Clone, Serialize)]
pub struct RunRef {
    pub trace_id: String,
    pub file: String,
    pub workflow: Option<String>,
    pub status: String,
}

impl RunRef {
    fn of(t: &Trace) -> RunRef {
        RunRef {
            trace_id: t.trace_id().to_string(),
            file: t.path.display().to_string(),
            workflow: t.workflow_name().map(str::to_string),
            status: t.status().to_string(),
        }
    }
}

/// The whole comparison (`--output-format json` prints it as is).
#[derive(Debug, Clone, Serialize)]
pub struct TraceDiff {
    pub a: RunRef,
    pub b: RunRef,
    pub nodes: Vec<NodeDiff>,
    pub only_in_a: Vec<String>,
    pub only_in_b: Vec<String>,
    pub summary: Summary,
}

/// The LLM spans made for one node attempt (through any non-node spans between).
fn llm_calls<'a>(
    span: &'a TraceSpan,
    kids: &std::collections::HashMap<&str, Vec<&'a TraceSpan>>,
) -> Vec<&'a TraceSpan> {
    let mut out = Vec::new();
    let mut stack = vec![span];
    while let Some(x) = stack.pop() {
        for c in kids.get(x.span_id.as_str()).into_iter().flatten() {
            if c.is_llm() {
                out.push(*c);
            } else if c.str_attr(attr::NODE_ROLE).is_none() {
                stack.push(c);
            }
        }
    }
    out.sort_by_key(|c| (c.start_ns, c.end_ns));
    out
}

fn prompt_text(s: &TraceSpan) -> Option<String> {
    let system = s
        .str_attr(attr::GEN_AI_SYSTEM_INSTRUCTIONS)
        .map(show::message_text);
    let prompt = s
        .str_attr(attr::GEN_AI_INPUT_MESSAGES)
        .map(show::message_text);
    match (system, prompt) {
        (None, None) => None,
        (s, p) => {
            Some(s.map(|s| format!("system: {s}\n")).unwrap_or_default() + &p.unwrap_or_default())
        }
    }
}

/// Node path → its side, in the order the nodes started.
fn nodes_of(t: &Trace) -> Vec<(String, NodeSide)> {
    let kids = t.children();
    let mut spans: Vec<&TraceSpan> = t
        .spans
        .iter()
        .filter(|s| s.str_attr(attr::NODE_ROLE).is_some() && s.str_attr(attr::NODE_PATH).is_some())
        .collect();
    spans.sort_by_key(|s| (s.start_ns, s.end_ns));
    // Attempts grouped by path in one pass, in the order the paths first
    // started: linear in the number of spans (a 20k-node trace took 37 s when
    // each path scanned every span).
    let mut by_path: indexmap::IndexMap<String, Vec<&TraceSpan>> = indexmap::IndexMap::new();
    for s in &spans {
        let p = s.str_attr(attr::NODE_PATH).unwrap_or_default();
        match by_path.get_mut(p) {
            Some(v) => v.push(s),
            None => {
                by_path.insert(p.to_string(), vec![s]);
            }
        }
    }
    let sides = by_path
        .into_iter()
        .filter_map(|(path, attempts)| {
            let last = *attempts.iter().max_by_key(|s| {
                (
                    s.attr(attr::NODE_ATTEMPT)
                        .and_then(AttrValue::as_i64)
                        .unwrap_or(1),
                    s.start_ns,
                )
            })?;
            let calls = llm_calls(last, &kids);
            let mut usage = Usage::default();
            let mut models: Vec<String> = Vec::new();
            for c in &calls {
                usage.add_call(&c.facts().call_usage());
                if let Some(m) = c.str_attr(attr::GEN_AI_REQUEST_MODEL) {
                    if !models.iter().any(|x| x == m) {
                        models.push(m.to_string());
                    }
                }
            }
            let side = NodeSide {
                node_type: last.str_attr(attr::NODE_TYPE).map(str::to_string),
                attempts: attempts.len() as u64,
                duration_ms: last.duration().as_secs_f64() * 1000.0,
                status: last
                    .str_attr(attr::NODE_STATUS)
                    .unwrap_or(if last.failed() { "error" } else { "ok" })
                    .to_string(),
                llm_calls: 0,
                tokens: Tokens::default(),
                cost_usd: None,
                cost_complete: true,
                model: (!models.is_empty()).then(|| models.join(",")),
                usage: Usage::default(),
                batch_items: None,
                reused: last.reuse_note(),
                params: last.str_attr(attr::NODE_PARAMS).map(str::to_string),
                params_digest: last.str_attr(attr::NODE_PARAMS_DIGEST).map(str::to_string),
                prompt: calls.last().and_then(|c| prompt_text(c)),
            };
            let mut side = side;
            side.set_usage(usage);
            Some((path, side))
        })
        .collect::<Vec<_>>();
    roll_up(sides)
}

/// Batch items' LLM usage summed into their batch node's side (the items stay
/// listed). Batch nodes are found by path in a map, so this stays linear.
fn roll_up(mut sides: Vec<(String, NodeSide)>) -> Vec<(String, NodeSide)> {
    let index: std::collections::HashMap<String, usize> = sides
        .iter()
        .enumerate()
        .map(|(i, (p, _))| (p.clone(), i))
        .collect();
    for i in 0..sides.len() {
        let Some(&b) = batch_of(&sides[i].0).and_then(|batch| index.get(batch)) else {
            continue;
        };
        if b == i {
            continue;
        }
        let item_usage = sides[i].1.usage.clone();
        let item_model = sides[i].1.model.clone();
        let side = &mut sides[b].1;
        let mut usage = side.usage.clone();
        usage.add(&item_usage);
        side.set_usage(usage);
        *side.batch_items.get_or_insert(0) += 1;
        if side.model.is_none() {
            side.model = item_model;
        }
    }
    sides
}

fn preview(v: &Value) -> String {
    let s = match v {
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        other => other.to_string(),
    };
    if s.chars().count() > PREVIEW_CHARS {
        s.chars().take(PREVIEW_CHARS - 1).collect::<String>() + "…"
    } else {
        s
    }
}

/// Key-level changes judged by `pflow.node.params_digest` (the full values'
/// digests), the previews only shown: a value whose preview was cut is
/// compared whole.
pub fn param_changes_by_digest(
    a: Option<&str>,
    b: Option<&str>,
    digest_a: &str,
    digest_b: &str,
) -> Vec<ParamChange> {
    let object = |s: &str| -> serde_json::Map<String, Value> {
        match serde_json::from_str(s) {
            Ok(Value::Object(m)) => m,
            _ => Default::default(),
        }
    };
    let (da, db) = (object(digest_a), object(digest_b));
    let (pa, pb) = (object(a.unwrap_or("")), object(b.unwrap_or("")));
    let shown = |p: &serde_json::Map<String, Value>, k: &str| {
        Some(p.get(k).map_or_else(|| "…".to_string(), preview))
    };
    let mut out = Vec::new();
    for (k, x) in &da {
        match db.get(k) {
            None => out.push(ParamChange {
                key: k.clone(),
                change: "removed",
                a: shown(&pa, k),
                b: None,
            }),
            Some(y) if y != x => out.push(ParamChange {
                key: k.clone(),
                change: "changed",
                a: shown(&pa, k),
                b: shown(&pb, k),
            }),
            Some(_) => {}
        }
    }
    for k in db.keys() {
        if !da.contains_key(k) {
            out.push(ParamChange {
                key: k.clone(),
                change: "added",
                a: None,
                b: shown(&pb, k),
            });
        }
    }
    out
}

/// Key-level changes between two `pflow.node.params` previews (traces
/// written before `pflow.node.params_digest` existed).
pub fn param_changes(a: Option<&str>, b: Option<&str>) -> Vec<ParamChange> {
    let parse = |s: Option<&str>| -> Value {
        s.map(|s| serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_string())))
            .unwrap_or(Value::Null)
    };
    let (va, vb) = (parse(a), parse(b));
    let (Value::Object(ma), Value::Object(mb)) = (&va, &vb) else {
        if va == vb {
            return vec![];
        }
        return vec![ParamChange {
            key: "(params)".into(),
            change: "changed",
            a: Some(preview(&va)),
            b: Some(preview(&vb)),
        }];
    };
    let mut out = Vec::new();
    for (k, x) in ma {
        match mb.get(k) {
            None => out.push(ParamChange {
                key: k.clone(),
                change: "removed",
                a: Some(preview(x)),
                b: None,
            }),
            Some(y) if y != x => out.push(ParamChange {
                key: k.clone(),
                change: "changed",
                a: Some(preview(x)),
                b: Some(preview(y)),
            }),
            Some(_) => {}
        }
    }
    for (k, y) in mb {
        if !ma.contains_key(k) {
            out.push(ParamChange {
                key: k.clone(),
                change: "added",
                a: None,
                b: Some(preview(y)),
            });
        }
    }
    out
}

/// `- old` / `+ new` lines between two texts, capped; returns the lines and how many were left out.
pub fn line_diff(a: &str, b: &str, cap: usize) -> (Vec<String>, usize) {
    use similar::{ChangeTag, TextDiff};
    let diff = TextDiff::from_lines(a, b);
    let mut lines = Vec::new();
    for c in diff.iter_all_changes() {
        let sign = match c.tag() {
            ChangeTag::Delete => "-",
            ChangeTag::Insert => "+",
            ChangeTag::Equal => continue,
        };
        lines.push(format!(
            "{sign} {}",
            c.value().trim_end_matches(['\n', '\r'])
        ));
    }
    let more = lines.len().saturating_sub(cap);
    lines.truncate(cap);
    (lines, more)
}

fn node_diff(node: String, a: NodeSide, b: NodeSide) -> NodeDiff {
    // A reused node did not run: it has no params or prompt of its own to compare.
    let reused = a.reused.is_some() || b.reused.is_some();
    let params = match (&a.params_digest, &b.params_digest) {
        _ if reused => vec![],
        (Some(da), Some(db)) => {
            param_changes_by_digest(a.params.as_deref(), b.params.as_deref(), da, db)
        }
        _ => param_changes(a.params.as_deref(), b.params.as_deref()),
    };
    let (prompt_diff, prompt_diff_more) = match (&a.prompt, &b.prompt) {
        _ if reused => (vec![], 0),
        (None, None) => (vec![], 0),
        (x, y) => line_diff(
            x.as_deref().unwrap_or(""),
            y.as_deref().unwrap_or(""),
            MAX_PROMPT_DIFF_LINES,
        ),
    };
    let cost_differs = match (a.cost_usd, b.cost_usd) {
        (Some(x), Some(y)) => (x - y).abs() > 1e-12,
        (x, y) => x.is_some() != y.is_some(),
    };
    let changed = !params.is_empty()
        || !prompt_diff.is_empty()
        || a.model != b.model
        || a.status != b.status
        || a.tokens != b.tokens
        || a.attempts != b.attempts
        || a.llm_calls != b.llm_calls
        || cost_differs;
    NodeDiff {
        node,
        changed,
        a,
        b,
        params,
        prompt_diff,
        prompt_diff_more,
    }
}

/// Compares run `a` with run `b`.
pub fn diff(a: &Trace, b: &Trace) -> TraceDiff {
    let na = nodes_of(a);
    // Keyed by path, in B's order: each lookup is O(1), so the diff is linear.
    let mut nb: indexmap::IndexMap<String, Option<NodeSide>> = nodes_of(b)
        .into_iter()
        .map(|(p, side)| (p, Some(side)))
        .collect();
    let mut nodes = Vec::new();
    let mut only_in_a = Vec::new();
    for (path, sa) in na {
        match nb.get_mut(&path).and_then(Option::take) {
            Some(sb) => nodes.push(node_diff(path, sa, sb)),
            None => only_in_a.push(path),
        }
    }
    let only_in_b: Vec<String> = nb
        .into_iter()
        .filter_map(|(p, side)| side.map(|_| p))
        .collect();
    let (ma, mb) = (a.metrics(), b.metrics());
    let mut model_changes: Vec<ModelChange> = Vec::new();
    for d in &nodes {
        if let (Some(x), Some(y)) = (&d.a.model, &d.b.model) {
            if x != y {
                match model_changes.iter_mut().find(|m| m.a == *x && m.b == *y) {
                    Some(m) => m.nodes += 1,
                    None => model_changes.push(ModelChange {
                        a: x.clone(),
                        b: y.clone(),
                        nodes: 1,
                    }),
                }
            }
        }
    }
    let mut summary = Summary {
        duration_ms: Delta::of(ma.total.duration_ms, mb.total.duration_ms),
        tokens_total: Delta::of(ma.total.tokens_total as f64, mb.total.tokens_total as f64),
        cost_usd: Delta::of(ma.total.cost.lower_bound_usd, mb.total.cost.lower_bound_usd),
        nodes_changed: nodes.iter().filter(|d| d.changed).count() as u64,
        model_changes,
        line: String::new(),
    };
    summary.cost_usd.delta = crate::accounting::round_usd(summary.cost_usd.delta);
    summary.line = summary_line(&summary, only_in_a.len(), only_in_b.len());
    TraceDiff {
        a: RunRef::of(a),
        b: RunRef::of(b),
        nodes,
        only_in_a,
        only_in_b,
        summary,
    }
}

fn pct(d: &Delta) -> String {
    d.pct.map(|p| format!(" ({p:+.0}%)")).unwrap_or_default()
}

/// `+12.3 ms`, `-1.20 s`.
fn signed_ms(d: f64) -> String {
    let sign = if d < 0.0 { "-" } else { "+" };
    format!("{sign}{}", crate::format::duration_ms(d.abs()))
}

fn plural(n: u64, one: &str) -> String {
    format!("{n} {one}{}", if n == 1 { "" } else { "s" })
}

fn summary_line(s: &Summary, only_a: usize, only_b: usize) -> String {
    let mut parts = vec![
        format!(
            "Δ duration {}{}",
            signed_ms(s.duration_ms.delta),
            pct(&s.duration_ms)
        ),
        format!("Δ tokens {:+}", s.tokens_total.delta as i64),
        format!(
            "Δ cost {}{}",
            crate::format::usd_delta(s.cost_usd.delta),
            pct(&s.cost_usd)
        ),
        format!("{} changed", plural(s.nodes_changed, "node")),
    ];
    for m in &s.model_changes {
        parts.push(format!(
            "model {} → {} in {}",
            m.a,
            m.b,
            plural(m.nodes, "node")
        ));
    }
    if only_a > 0 {
        parts.push(format!("{} only in A", plural(only_a as u64, "node")));
    }
    if only_b > 0 {
        parts.push(format!("{} only in B", plural(only_b as u64, "node")));
    }
    parts.join(" · ")
}

fn arrow<T: PartialEq + std::fmt::Display>(a: T, b: T) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a} → {b}")
    }
}

/// The side-by-side text view.
pub fn render(d: &TraceDiff, style: &show::Style) -> String {
    let mut out = String::new();
    let run = |r: &RunRef| {
        format!(
            "{} ({}, {})",
            r.trace_id,
            r.workflow.as_deref().unwrap_or("?"),
            r.status
        )
    };
    let _ = writeln!(out, "{} A {}", style.bold("diff"), run(&d.a));
    let _ = writeln!(out, "  →  B {}", run(&d.b));
    let _ = writeln!(out);
    for nd in &d.nodes {
        let (a, b) = (&nd.a, &nd.b);
        let kind = a.node_type.as_deref().unwrap_or("?");
        let dur = format!(
            "{} → {} ({})",
            crate::format::duration_ms(a.duration_ms),
            crate::format::duration_ms(b.duration_ms),
            signed_ms(b.duration_ms - a.duration_ms)
        );
        if !nd.changed {
            let _ = writeln!(
                out,
                "{} {}",
                style.dim(&format!("  {}  ({kind})  {dur}", nd.node)),
                style.dim("unchanged")
            );
            continue;
        }
        let _ = writeln!(
            out,
            "{} {}  ({kind})",
            style.yellow("~"),
            style.bold(&nd.node)
        );
        let _ = writeln!(out, "    duration   {dur}");
        if a.attempts != b.attempts || a.attempts > 1 {
            let _ = writeln!(
                out,
                "    attempts   {} (last attempt compared)",
                arrow(a.attempts, b.attempts)
            );
        }
        let status = arrow(a.status.as_str(), b.status.as_str());
        let _ = writeln!(
            out,
            "    status     {}",
            if a.status != b.status {
                style.red(&status)
            } else {
                status
            }
        );
        for (side, r) in [("A", &a.reused), ("B", &b.reused)] {
            if let Some(note) = r {
                let _ = writeln!(out, "    reused     {side}: ↺ {note}");
            }
        }
        if a.model.is_some() || b.model.is_some() {
            let _ = writeln!(
                out,
                "    model      {}",
                arrow(
                    a.model.as_deref().unwrap_or("-"),
                    b.model.as_deref().unwrap_or("-")
                )
            );
        }
        if a.llm_calls + b.llm_calls > 0 {
            let kinds: Vec<String> = kinds(&a.tokens)
                .iter()
                .zip(kinds(&b.tokens))
                .filter(|((k, x), (_, y))| matches!(*k, "input" | "output") || *x + *y > 0)
                .map(|((k, x), (_, y))| format!("{k} {}", arrow(x, &y)))
                .collect();
            let _ = writeln!(
                out,
                "    tokens     {}  ({:+})",
                kinds.join(" · "),
                b.tokens.total as i64 - a.tokens.total as i64
            );
            let cost = |c: Option<f64>, complete: bool| {
                format!(
                    "{}{}",
                    crate::format::usd_or_unknown(c),
                    if complete { "" } else { "+?" }
                )
            };
            let _ = writeln!(
                out,
                "    cost       {}  ({})",
                arrow(
                    cost(a.cost_usd, a.cost_complete),
                    cost(b.cost_usd, b.cost_complete)
                ),
                crate::format::usd_delta(b.cost_usd.unwrap_or(0.0) - a.cost_usd.unwrap_or(0.0))
            );
        }
        for (i, p) in nd.params.iter().enumerate() {
            let head = if i == 0 { "params" } else { "" };
            let text = match p.change {
                "added" => format!("+ {}: {}", p.key, p.b.as_deref().unwrap_or("")),
                "removed" => format!("- {}: {}", p.key, p.a.as_deref().unwrap_or("")),
                _ => format!(
                    "~ {}: {} → {}",
                    p.key,
                    p.a.as_deref().unwrap_or(""),
                    p.b.as_deref().unwrap_or("")
                ),
            };
            let _ = writeln!(out, "    {head:<10} {text}");
        }
        for (i, l) in nd.prompt_diff.iter().enumerate() {
            let head = if i == 0 { "prompt" } else { "" };
            let l = if l.starts_with('-') {
                style.red(l)
            } else {
                style.green(l)
            };
            let _ = writeln!(out, "    {head:<10} {l}");
        }
        if nd.prompt_diff_more > 0 {
            let _ = writeln!(out, "               … {} more lines", nd.prompt_diff_more);
        }
    }
    let only = [
        (style.red("only in A:"), &d.only_in_a),
        (style.green("only in B:"), &d.only_in_b),
    ];
    for (label, paths) in only.iter().filter(|(_, p)| !p.is_empty()) {
        let _ = writeln!(out, "{label} {}", paths.join(", "));
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "{}", d.summary.line);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_change_by_key() {
        let c = param_changes(
            Some(r#"{"model":"gpt-4o-mini","prompt":"short","x":1}"#),
            Some(r#"{"model":"gpt-4o","prompt":"short","y":[1]}"#),
        );
        assert_eq!(
            c,
            vec![
                ParamChange {
                    key: "model".into(),
                    change: "changed",
                    a: Some("\"gpt-4o-mini\"".into()),
                    b: Some("\"gpt-4o\"".into())
                },
                ParamChange {
                    key: "x".into(),
                    change: "removed",
                    a: Some("1".into()),
                    b: None
                },
                ParamChange {
                    key: "y".into(),
                    change: "added",
                    a: None,
                    b: Some("[1]".into())
                },
            ]
        );
        assert!(param_changes(Some("{}"), Some("{}")).is_empty());
        let long = format!(r#"{{"p":"{}"}}"#, "a".repeat(200));
        let c = param_changes(Some("{}"), Some(&long));
        assert_eq!(c[0].b.as_ref().unwrap().chars().count(), PREVIEW_CHARS);
    }

    #[test]
    fn prompt_diff_is_capped() {
        let (l, more) = line_diff("a\nb\nc\n", "a\nB\nc\n", 20);
        assert_eq!(l, ["- b", "+ B"]);
        assert_eq!(more, 0);
        let a: String = (0..30).map(|i| format!("{i}\n")).collect();
        let (l, more) = line_diff(&a, "", 20);
        assert_eq!(l.len(), 20);
        assert_eq!(more, 10);
    }

    #[test]
    fn summary_reads_like_the_issue() {
        let s = Summary {
            duration_ms: Delta::of(343.7, 464.0),
            tokens_total: Delta::of(100.0, 440.0),
            cost_usd: Delta::of(0.004375, 0.006475),
            nodes_changed: 2,
            model_changes: vec![ModelChange {
                a: "gpt-4o-mini".into(),
                b: "gpt-4o".into(),
                nodes: 1,
            }],
            line: String::new(),
        };
        assert_eq!(
            summary_line(&s, 0, 1),
            "Δ duration +120.3 ms (+35%) · Δ tokens +340 · Δ cost +$0.002100 (+48%) · 2 nodes changed · model gpt-4o-mini → gpt-4o in 1 node · 1 node only in B"
        );
    }
}
