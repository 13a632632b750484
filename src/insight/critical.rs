//! Where a run's wall time went: the critical path (the chain of spans that
//! set the run's end, through nested spans and parallel batch items), each
//! node's self time (its wall time less the nodes nested in it), and what
//! each parallel batch reached (items in flight at once, items queued, the
//! slowest item). All of it from span start and end times alone.

use crate::accounting::batch_of;
use crate::accounting::span::SpanKind;
use crate::telemetry::attr;
use crate::traces::{AttrValue, Trace, TraceSpan};
use serde::Serialize;
use std::collections::HashMap;

/// One span on the critical path.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PathStep {
    pub span_id: String,
    /// The span as the viewers name it (`node fetch`, `chat gpt-4o`).
    pub name: String,
    /// `run`, `workflow`, `node`, `batch`, `batch_item`, `llm`, `planner`, `other`.
    pub kind: &'static str,
    /// The node path, for node, batch and batch item spans.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Depth below the path's first span.
    pub depth: usize,
    /// Start, in ms from the start of the run.
    pub start_ms: f64,
    pub duration_ms: f64,
    /// Time no child span covered.
    pub self_ms: f64,
}

/// What one parallel (or sequential) batch reached.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BatchReport {
    pub node: String,
    /// Items (from `pflow.batch.size`, else the items seen).
    pub items: u64,
    pub parallel: bool,
    /// `pflow.batch.max_concurrent`, when recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u64>,
    /// The most items in flight at one time.
    pub concurrency_reached: u64,
    /// Items that started only after another item of the batch had ended
    /// (they waited for a free slot).
    pub items_queued: u64,
    /// The batch span's wall time.
    pub wall_ms: f64,
    /// The item that took longest (all its attempts), and how long.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slowest_item: Option<String>,
    pub slowest_item_ms: f64,
}

/// The viewers' short name for a span's kind: a planning step reads as the
/// planner, as the critical path shows it.
pub fn kind_name(k: SpanKind) -> &'static str {
    match k {
        SpanKind::PlannerStep => SpanKind::Planner.as_str(),
        k => k.as_str(),
    }
}

/// A node, batch or batch item span.
fn is_node(k: SpanKind) -> bool {
    matches!(k, SpanKind::Node | SpanKind::Batch | SpanKind::BatchItem)
}

/// The spans of a trace with their classification and children, computed once.
pub(crate) struct Tree<'a> {
    pub spans: Vec<&'a TraceSpan>,
    pub kinds: HashMap<&'a str, SpanKind>,
    pub kids: HashMap<&'a str, Vec<&'a TraceSpan>>,
    pub t0: u64,
}

impl<'a> Tree<'a> {
    pub fn new(trace: &'a Trace) -> Tree<'a> {
        let spans: Vec<&TraceSpan> = trace.spans.iter().collect();
        let kinds = spans
            .iter()
            .map(|s| (s.span_id.as_str(), s.kind()))
            .collect();
        Tree {
            spans,
            kinds,
            kids: trace.children(),
            t0: trace.start_ns(),
        }
    }

    pub fn kind(&self, s: &TraceSpan) -> SpanKind {
        self.kinds
            .get(s.span_id.as_str())
            .copied()
            .unwrap_or(SpanKind::Other)
    }

    fn children(&self, s: &TraceSpan) -> &[&'a TraceSpan] {
        self.kids
            .get(s.span_id.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The span whose end is the run's end: the latest-ending span without
    /// a parent in the file (the run span in a pflow trace).
    fn root(&self) -> Option<&'a TraceSpan> {
        let ids: std::collections::HashSet<&str> =
            self.spans.iter().map(|s| s.span_id.as_str()).collect();
        self.spans
            .iter()
            .copied()
            .filter(|s| !ids.contains(s.parent_span_id.as_str()))
            .max_by_key(|s| (s.end_ns, std::cmp::Reverse(s.start_ns)))
    }

    fn ms(&self, ns: u64) -> f64 {
        ns.saturating_sub(self.t0) as f64 / 1e6
    }
}

fn end(s: &TraceSpan) -> u64 {
    s.end_ns.max(s.start_ns)
}

/// Start and end times, in ns.
type Intervals = Vec<(u64, u64)>;

/// Merged, sorted, non-overlapping intervals.
fn merge(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

fn length(v: &[(u64, u64)]) -> u64 {
    v.iter().map(|(a, b)| b - a).sum()
}

/// How much of merged `a` merged `b` covers.
fn overlap(a: &[(u64, u64)], b: &[(u64, u64)]) -> u64 {
    let (mut i, mut j, mut sum) = (0, 0, 0u64);
    while i < a.len() && j < b.len() {
        let lo = a[i].0.max(b[j].0);
        let hi = a[i].1.min(b[j].1);
        sum += hi.saturating_sub(lo);
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    sum
}

/// A span's time that none of its children covered.
fn self_ns(tree: &Tree, s: &TraceSpan) -> u64 {
    let own = [(s.start_ns, end(s))];
    let kids = merge(
        tree.children(s)
            .iter()
            .map(|c| (c.start_ns, end(c)))
            .collect(),
    );
    length(&own) - overlap(&own, &kids)
}

/// The critical path, in order: the root, then for every span on the path
/// the chain of its children that set its end — the child that ended last,
/// then the child that ended last before that one started, and so on —
/// each followed by its own path. Parallel batch items that overlapped the
/// chosen one are off the path; items that waited for a slot are on it.
pub(crate) fn critical_path(tree: &Tree) -> Vec<PathStep> {
    let mut out = Vec::new();
    if let Some(root) = tree.root() {
        walk(tree, root, 0, &mut out);
    }
    out
}

fn walk(tree: &Tree, s: &TraceSpan, depth: usize, out: &mut Vec<PathStep>) {
    let k = tree.kind(s);
    out.push(PathStep {
        span_id: s.span_id.clone(),
        name: s.label(),
        kind: kind_name(k),
        node: is_node(k)
            .then(|| s.str_attr(attr::NODE_PATH).map(str::to_string))
            .flatten(),
        depth,
        start_ms: tree.ms(s.start_ns),
        duration_ms: (end(s) - s.start_ns) as f64 / 1e6,
        self_ms: self_ns(tree, s) as f64 / 1e6,
    });
    // Newest end first; a child that ended after its parent (clock skew) still counts.
    let mut kids: Vec<&TraceSpan> = tree.children(s).to_vec();
    kids.sort_by_key(|c| std::cmp::Reverse((end(c), c.start_ns)));
    let mut chain = Vec::new();
    let mut cursor = u64::MAX;
    for c in kids {
        if end(c) <= cursor {
            cursor = c.start_ns;
            chain.push(c);
        }
    }
    // Depth-first on a deep trace: the recursion is bounded by span nesting,
    // which the runtime bounds (nested workflows have a depth limit).
    for c in chain.into_iter().rev() {
        walk(tree, c, depth + 1, out);
    }
}

/// Each node's self time in ms, by node path (batch items under their
/// batch): the wall time its spans cover, less the wall time of the nodes
/// nested in it (a nested workflow's nodes, a batch's items count for the
/// batch). Parallel spans of one node count once, so no share passes 100%.
pub(crate) fn node_self_times(tree: &Tree) -> Vec<(String, f64)> {
    let folded = |s: &TraceSpan| -> Option<String> {
        let p = s.str_attr(attr::NODE_PATH)?;
        Some(batch_of(p).unwrap_or(p).to_string())
    };
    // Per node path: its own intervals, and those of the nodes nested in it.
    let mut own: indexmap::IndexMap<String, (Intervals, Intervals)> = Default::default();
    let mut by_start: Vec<&&TraceSpan> = tree.spans.iter().collect();
    by_start.sort_by_key(|s| s.start_ns);
    for s in by_start {
        if !is_node(tree.kind(s)) {
            continue;
        }
        let Some(p) = folded(s) else { continue };
        let mut nested = Vec::new();
        let mut stack: Vec<&TraceSpan> = tree.children(s).to_vec();
        while let Some(c) = stack.pop() {
            if is_node(tree.kind(c)) && folded(c).as_deref() != Some(p.as_str()) {
                nested.push((c.start_ns, end(c)));
            } else {
                // Its own items are the batch's time; any span may hold nested nodes.
                stack.extend(tree.children(c).iter().copied());
            }
        }
        let e = own.entry(p).or_default();
        e.0.push((s.start_ns, end(s)));
        e.1.extend(nested);
    }
    own.into_iter()
        .map(|(p, (mine, nested))| {
            let mine = merge(mine);
            let nested = merge(nested);
            (p, (length(&mine) - overlap(&mine, &nested)) as f64 / 1e6)
        })
        .collect()
}

/// What each batch reached: the items' own intervals (all attempts of an
/// item, the retry waits between them included: the item holds its slot).
pub(crate) fn batches(tree: &Tree) -> Vec<BatchReport> {
    let mut out = Vec::new();
    let mut batch_spans: Vec<&TraceSpan> = tree
        .spans
        .iter()
        .copied()
        .filter(|s| tree.kind(s) == SpanKind::Batch)
        .collect();
    batch_spans.sort_by_key(|s| s.start_ns);
    for b in batch_spans {
        let mut items: indexmap::IndexMap<String, (u64, u64)> = Default::default();
        for c in tree.children(b) {
            if tree.kind(c) != SpanKind::BatchItem {
                continue;
            }
            let path = c
                .str_attr(attr::NODE_PATH)
                .unwrap_or(&c.span_id)
                .to_string();
            let e = items.entry(path).or_insert((c.start_ns, end(c)));
            e.0 = e.0.min(c.start_ns);
            e.1 = e.1.max(end(c));
        }
        let mut edges: Vec<(u64, i32)> = items
            .values()
            .flat_map(|(a, z)| [(*a, 1), (*z, -1)])
            .collect();
        // An item that ends as another starts frees its slot first.
        edges.sort_unstable();
        let (mut now, mut peak) = (0i64, 0i64);
        for (_, d) in edges {
            now += i64::from(d);
            peak = peak.max(now);
        }
        let first_end = items.values().map(|(_, z)| *z).min().unwrap_or(0);
        let queued = items.values().filter(|(a, _)| *a >= first_end).count() as u64;
        let slowest = items
            .iter()
            .max_by_key(|(p, (a, z))| (z - a, std::cmp::Reverse(p.as_str())))
            .map(|(p, (a, z))| (p.clone(), (z - a) as f64 / 1e6));
        let int = |k: &str| {
            b.attr(k)
                .and_then(AttrValue::as_i64)
                .map(|v| v.max(0) as u64)
        };
        out.push(BatchReport {
            node: b
                .str_attr(attr::NODE_PATH)
                .unwrap_or(&b.span_id)
                .to_string(),
            items: int(attr::BATCH_SIZE).unwrap_or(items.len() as u64),
            parallel: b.attr(attr::BATCH_PARALLEL) == Some(&AttrValue::Bool(true)),
            max_concurrent: int(attr::BATCH_MAX_CONCURRENT),
            concurrency_reached: peak.max(0) as u64,
            items_queued: queued,
            wall_ms: (end(b) - b.start_ns) as f64 / 1e6,
            slowest_item_ms: slowest.as_ref().map_or(0.0, |s| s.1),
            slowest_item: slowest.map(|s| s.0),
        });
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A span: id, parent, start and end in ms, and string/int attributes.
    pub(crate) type S<'a> = (
        &'a str,
        &'a str,
        u64,
        u64,
        Vec<(&'a str, serde_json::Value)>,
    );

    /// A trace file of `spans` (times in ms), loaded as the viewers load one.
    pub(crate) fn trace(spans: &[S]) -> Trace {
        let spans: Vec<serde_json::Value> = spans
            .iter()
            .map(|(id, parent, a, z, attrs)| {
                let kvs: Vec<serde_json::Value> = attrs
                    .iter()
                    .map(|(k, v)| {
                        let value = match v {
                            serde_json::Value::String(s) => json!({"stringValue": s}),
                            serde_json::Value::Bool(b) => json!({"boolValue": b}),
                            n => json!({"intValue": n.to_string()}),
                        };
                        json!({"key": k, "value": value})
                    })
                    .collect();
                json!({"traceId": "0af7651916cd43dd8448eb211c80319c",
                    "spanId": format!("{id:0>16}"), "parentSpanId": if parent.is_empty() { String::new() } else { format!("{parent:0>16}") },
                    "name": format!("s {id}"), "kind": 1,
                    "startTimeUnixNano": (a * 1_000_000).to_string(), "endTimeUnixNano": (z * 1_000_000).to_string(),
                    "attributes": kvs})
            })
            .collect();
        let line = json!({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]});
        crate::traces::parse(&line.to_string(), std::path::Path::new("t.otlp.json")).unwrap()
    }

    pub(crate) fn node(path: &str) -> Vec<(&str, serde_json::Value)> {
        vec![
            (attr::NODE_ROLE, json!("node")),
            (attr::NODE_PATH, json!(path)),
        ]
    }

    fn item(path: &str) -> Vec<(&str, serde_json::Value)> {
        vec![
            (attr::NODE_ROLE, json!("batch_item")),
            (attr::NODE_PATH, json!(path)),
        ]
    }

    fn run() -> Vec<(&'static str, serde_json::Value)> {
        vec![(attr::RUN_STATUS, json!("ok"))]
    }

    /// run 0–100: a 0–10, b 10–60 holding the nested node b/x 20–50, and a
    /// batch f 60–100 of three items in two slots: f[0] 60–70, f[1] 60–95,
    /// f[2] 70–100.
    fn shape() -> Trace {
        let mut batch = node("f");
        batch[0].1 = json!("batch");
        batch.push((attr::BATCH_PARALLEL, json!(true)));
        batch.push((attr::BATCH_MAX_CONCURRENT, json!(2)));
        batch.push((attr::BATCH_SIZE, json!(3)));
        trace(&[
            ("1", "", 0, 100, run()),
            ("2", "1", 0, 10, node("a")),
            ("3", "1", 10, 60, node("b")),
            ("4", "3", 20, 50, node("b/x")),
            ("5", "1", 60, 100, batch),
            ("6", "5", 60, 70, item("f[0]")),
            ("7", "5", 60, 95, item("f[1]")),
            ("8", "5", 70, 100, item("f[2]")),
        ])
    }

    #[test]
    fn the_path_follows_the_last_to_end_back_through_waiting_items() {
        let t = shape();
        let tree = Tree::new(&t);
        let p = critical_path(&tree);
        let nodes: Vec<&str> = p.iter().filter_map(|s| s.node.as_deref()).collect();
        assert_eq!(nodes, ["a", "b", "b/x", "f", "f[0]", "f[2]"]);
        let b = p.iter().find(|s| s.node.as_deref() == Some("b")).unwrap();
        assert_eq!((b.depth, b.duration_ms, b.self_ms), (1, 50.0, 20.0));
        assert_eq!(p[0].kind, "run");
    }

    #[test]
    fn self_time_leaves_out_nested_nodes_and_counts_parallel_items_once() {
        let t = shape();
        let tree = Tree::new(&t);
        let s: std::collections::HashMap<String, f64> =
            node_self_times(&tree).into_iter().collect();
        assert_eq!(s["a"], 10.0);
        assert_eq!(s["b"], 20.0, "b less b/x");
        assert_eq!(s["b/x"], 30.0);
        assert_eq!(s["f"], 40.0, "the batch's wall time, items in it");
        assert!(!s.contains_key("f[1]"));
    }

    #[test]
    fn batches_report_peak_queue_and_slowest_item() {
        let t = shape();
        let b = batches(&Tree::new(&t));
        assert_eq!(
            b,
            [BatchReport {
                node: "f".into(),
                items: 3,
                parallel: true,
                max_concurrent: Some(2),
                concurrency_reached: 2,
                items_queued: 1,
                wall_ms: 40.0,
                slowest_item: Some("f[1]".into()),
                slowest_item_ms: 35.0,
            }]
        );
    }

    #[test]
    fn interval_maths() {
        let a = merge(vec![(0, 10), (5, 15), (20, 30)]);
        assert_eq!(a, vec![(0, 15), (20, 30)]);
        assert_eq!(length(&a), 25);
        let b = merge(vec![(10, 22), (29, 40)]);
        assert_eq!(overlap(&a, &b), 5 + 2 + 1);
        assert_eq!(overlap(&a, &[]), 0);
    }
}
