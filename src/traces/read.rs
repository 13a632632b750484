//! Reading a trace file as a stream: one OTLP/JSON line at a time, so a
//! viewer's memory is bounded by what it keeps, not by the file. Every span
//! passes through the metrics [`Aggregator`] and the run's overview (status,
//! times, workflow name); only the spans a [`Keep`] selects are redacted,
//! converted and held.

use super::{attrs, shown, AttrValue, Attrs, Trace, TraceError, TraceEvent, TraceSpan};
use crate::accounting::span::SpanFacts;
use crate::format::hex;
use crate::telemetry::attr;
use crate::telemetry::metrics::{Aggregator, MetricsSummary};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue as ProtoKv};
use opentelemetry_proto::tonic::trace::v1::Span as ProtoSpan;
use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::path::Path;

/// The longest line read. pflow writes lines of at most 256 KiB (one span
/// larger than that alone on its line); a longer line is a broken or
/// foreign file, refused before it is held whole.
pub const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

/// Text the kept spans may hold in all (names, values, messages): past it no
/// further span is kept, whatever [`Keep`] allows, so a trace of huge values
/// cannot fill memory either.
pub const MAX_KEPT_BYTES: usize = 64 * 1024 * 1024;

/// Which spans of a trace file a reader keeps in memory. The overview and the
/// metrics always cover every span.
#[derive(Debug, Clone, Copy)]
pub enum Keep<'a> {
    /// Every span (`trace diff`, `reprice`: they compare or price each one).
    All,
    /// At most this many: the first to end (file order), with their parents,
    /// so the tree above them stays whole.
    First(usize),
    /// The spans of one node, by path or else by id (every attempt, the batch
    /// span) and the spans below them down to the next node: its LLM calls.
    /// At most `usize` spans.
    Node(&'a str, usize),
}

/// What a viewer shows about the whole run, gathered from every span.
#[derive(Debug, Clone, Default)]
pub(super) struct Overview {
    pub metrics: MetricsSummary,
    pub total_spans: usize,
    pub trace_id: String,
    pub start_ns: Option<u64>,
    pub end_ns: u64,
    /// `pflow.run.status` of the run span.
    pub run_status: Option<String>,
    /// The run span's (else the first parentless span's) status message, when it failed.
    pub root_error: Option<String>,
    pub any_failed: bool,
    /// The top workflow's name (depth 0), else the run span's.
    pub workflow_name: Option<String>,
    pub root_workflow_name: Option<String>,
    /// A continued run's origin: (`pflow.run.resumed_from`, `pflow.run.resume_mode`).
    pub resumed_from: Option<(String, String)>,
    pub dropped_spans: Option<i64>,
    /// Node path → node type, for the report's tables.
    pub node_types: HashMap<String, String>,
    /// Node paths in order of first appearance (at most [`NODE_NAMES`]).
    pub node_names: indexmap::IndexSet<String>,
}

/// How far past `Keep::First(n)` the parents of kept spans may go (the
/// nesting depth of a trace: run, workflow, node, item, call, sub-workflow…).
pub const ANCESTOR_SLACK: usize = 64;

/// Node names remembered for "did you mean" (a huge batch has one per item).
const NODE_NAMES: usize = 10_000;

/// A span's rough footprint in memory, for [`MAX_KEPT_BYTES`].
fn footprint(s: &TraceSpan) -> usize {
    fn attrs(a: &Attrs) -> usize {
        a.iter()
            .map(|(k, v)| {
                48 + k.len()
                    + match v {
                        AttrValue::Str(s) => s.len(),
                        AttrValue::Array(a) => a.iter().map(|x| 16 + x.to_string().len()).sum(),
                        _ => 0,
                    }
            })
            .sum()
    }
    256 + s.name.len()
        + s.status_message.len()
        + attrs(&s.attributes)
        + s.events
            .iter()
            .map(|e| 64 + e.name.len() + attrs(&e.attributes))
            .sum::<usize>()
}

fn raw_str<'a>(kvs: &'a [ProtoKv], key: &str) -> Option<&'a str> {
    kvs.iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        })
}

fn convert_span(s: ProtoSpan) -> TraceSpan {
    let (status_code, status_message) =
        s.status.map(|st| (st.code, st.message)).unwrap_or_default();
    TraceSpan {
        trace_id: hex(&s.trace_id),
        span_id: hex(&s.span_id),
        parent_span_id: hex(&s.parent_span_id),
        name: shown(&s.name),
        kind: s.kind,
        start_ns: s.start_time_unix_nano,
        end_ns: s.end_time_unix_nano,
        status_code,
        status_message: shown(&status_message),
        attributes: attrs(&s.attributes),
        events: s
            .events
            .into_iter()
            .map(|e| TraceEvent {
                name: shown(&e.name),
                time_ns: e.time_unix_nano,
                attributes: attrs(&e.attributes),
            })
            .collect(),
    }
}

/// The facts of a span that is not kept (so not redacted): its text fields
/// go through the redactor here, as a kept span's attributes did. The
/// destructuring names every field, so a new text field cannot slip past.
fn redact_facts(f: &mut SpanFacts) {
    let red = |s: &mut Option<String>| {
        if let Some(v) = s.as_mut() {
            if let std::borrow::Cow::Owned(x) = crate::telemetry::redact::redact(v) {
                *v = x;
            }
        }
    };
    let SpanFacts {
        is_run: _,
        workflow_depth: _,
        node_role,
        node_path,
        llm_node_path,
        attempt: _,
        section,
        llm: _,
        tokens: _,
        cost_usd: _,
        unpriced: _,
        cost_source,
        usage_source,
        cache_savings_usd: _,
        estimated: _,
        has_usage: _,
        operation,
        provider_name,
        response_model,
        error_type,
        node_type,
        node_status,
        run_status,
        planner_root: _,
        planner_path,
        planner_attempts: _,
        planner_step,
        model,
        start: _,
        duration: _,
        failed: _,
        budget,
        server_address,
        server_port: _,
        time_to_first_chunk: _,
        request_max_tokens: _,
        origin_run_id,
        reused: _,
    } = f;
    for s in [
        node_role,
        node_path,
        llm_node_path,
        section,
        cost_source,
        usage_source,
        operation,
        provider_name,
        response_model,
        error_type,
        node_type,
        node_status,
        run_status,
        planner_path,
        planner_step,
        model,
        server_address,
        origin_run_id,
    ] {
        red(s);
    }
    if let Some(b) = budget {
        let crate::accounting::summary::BudgetMetrics {
            stopped,
            node,
            model,
            reason,
            ..
        } = b;
        for s in [stopped, node, model, reason] {
            red(s);
        }
    }
}

/// Chooses the spans to keep as they stream by.
struct Selector<'a> {
    keep: Keep<'a>,
    /// [`MAX_KEPT_BYTES`], smaller in tests.
    max_bytes: usize,
    kept: Vec<TraceSpan>,
    kept_bytes: usize,
    kept_ids: HashSet<String>,
    /// `First`: parents of kept spans not seen yet; each holds a slot.
    wanted: HashSet<String>,
    /// `Node`: spans without a node role, by parent id, until the node
    /// above them ends (children end first) and says whether they are ours.
    pending: HashMap<String, Vec<TraceSpan>>,
    pending_count: usize,
    /// `Node`: the spans matched by path, and by id.
    by_path: Vec<TraceSpan>,
    by_id: Vec<TraceSpan>,
}

/// What to do with one span, decided from its raw ids and attributes.
enum Verdict {
    Keep,
    Drop,
    /// `Node` mode: a node span (ours or not), or a span that may be below ours.
    NodeSpan {
        ours_by_path: bool,
        ours_by_id: bool,
    },
    Pending,
}

impl<'a> Selector<'a> {
    fn new(keep: Keep<'a>, max_bytes: usize) -> Self {
        Selector {
            keep,
            max_bytes,
            kept: Vec::new(),
            kept_bytes: 0,
            kept_ids: HashSet::new(),
            wanted: HashSet::new(),
            pending: HashMap::new(),
            pending_count: 0,
            by_path: Vec::new(),
            by_id: Vec::new(),
        }
    }

    fn full(&self) -> bool {
        self.kept_bytes >= self.max_bytes
    }

    fn verdict(&mut self, span_id: &str, s: &ProtoSpan) -> Verdict {
        match self.keep {
            Keep::All => Verdict::Keep,
            Keep::First(n) => {
                // A parent takes the slot its child reserved for it, and may
                // reserve one for its own parent: past `n` by at most the depth.
                let parent_of_kept = self.wanted.remove(span_id);
                let room = if parent_of_kept {
                    self.kept.len() < n + ANCESTOR_SLACK
                } else {
                    self.kept.len() + self.wanted.len() < n
                };
                if room && !self.full() {
                    Verdict::Keep
                } else {
                    Verdict::Drop
                }
            }
            Keep::Node(id, n) => {
                let room = self.held() < n && !self.full();
                match raw_str(&s.attributes, attr::NODE_ROLE) {
                    // Every node span ends the wait of the spans below it, kept or not.
                    Some(_) => Verdict::NodeSpan {
                        ours_by_path: room && raw_str(&s.attributes, attr::NODE_PATH) == Some(id),
                        ours_by_id: room && raw_str(&s.attributes, attr::NODE_ID) == Some(id),
                    },
                    None if room => Verdict::Pending,
                    None => Verdict::Drop,
                }
            }
        }
    }

    fn held(&self) -> usize {
        self.kept.len() + self.by_path.len() + self.by_id.len() + self.pending_count
    }

    fn take(&mut self, span: TraceSpan) {
        self.kept_bytes += footprint(&span);
        if let Keep::First(_) = self.keep {
            if !span.parent_span_id.is_empty() && !self.kept_ids.contains(&span.parent_span_id) {
                self.wanted.insert(span.parent_span_id.clone());
            }
            self.kept_ids.insert(span.span_id.clone());
        }
        self.kept.push(span);
    }

    /// `Node` mode: the spans waiting below `id`, and below those, removed.
    fn drain_pending(&mut self, id: &str) -> Vec<TraceSpan> {
        let mut out = Vec::new();
        let mut stack = vec![id.to_string()];
        while let Some(p) = stack.pop() {
            if let Some(v) = self.pending.remove(&p) {
                self.pending_count -= v.len();
                stack.extend(v.iter().map(|c| c.span_id.clone()));
                out.extend(v);
            }
        }
        out
    }

    fn finish(mut self) -> Vec<TraceSpan> {
        if let Keep::Node(..) = self.keep {
            // By path when any span matched it, else by id (as the viewer looks nodes up).
            let mut v = if self.by_path.is_empty() {
                std::mem::take(&mut self.by_id)
            } else {
                std::mem::take(&mut self.by_path)
            };
            v.append(&mut self.kept);
            return v;
        }
        self.kept
    }
}

impl Overview {
    /// Counts one span. A span that is not kept was not redacted: the text
    /// taken from it here (status message, workflow name) is redacted now.
    fn add(&mut self, span: &TraceSpan, facts: &SpanFacts, agg: &mut Aggregator) {
        self.total_spans += 1;
        if self.trace_id.is_empty() {
            self.trace_id = span.trace_id.clone();
        }
        self.start_ns = Some(
            self.start_ns
                .map_or(span.start_ns, |s| s.min(span.start_ns)),
        );
        self.end_ns = self.end_ns.max(span.end_ns);
        self.any_failed |= facts.failed;
        let status_message = || {
            Some(crate::telemetry::redact::for_display(&span.status_message))
                .filter(|m| !m.is_empty())
        };
        let workflow = || {
            span.str_attr(attr::WORKFLOW_NAME)
                .map(crate::telemetry::redact::for_display)
        };
        if facts.run_status.is_some() && self.run_status.is_none() {
            self.run_status = facts.run_status.clone();
            self.root_error = if facts.failed { status_message() } else { None };
            self.root_workflow_name = workflow();
            self.resumed_from = span.str_attr(attr::RUN_RESUMED_FROM).map(|from| {
                let mode = span.str_attr(attr::RUN_RESUME_MODE).unwrap_or("resume");
                (
                    crate::telemetry::redact::for_display(from),
                    crate::telemetry::redact::for_display(mode),
                )
            });
        } else if span.parent_span_id.is_empty() && self.run_status.is_none() {
            if self.root_error.is_none() && facts.failed {
                self.root_error = status_message();
            }
            if self.root_workflow_name.is_none() {
                self.root_workflow_name = workflow();
            }
        }
        if self.workflow_name.is_none() && facts.workflow_depth == Some(0) {
            self.workflow_name = workflow();
        }
        if self.dropped_spans.is_none() && span.attr(crate::telemetry::file::TRUNCATED).is_some() {
            self.dropped_spans = Some(
                span.attr(crate::telemetry::file::DROPPED_SPANS)
                    .and_then(AttrValue::as_i64)
                    .unwrap_or(0),
            );
        }
        if let (Some(role), Some(p)) = (&facts.node_role, &facts.node_path) {
            // Items share their batch node's type and row: one entry per node, not per item.
            if let Some(t) = facts
                .node_type
                .as_ref()
                .filter(|_| role != attr::ROLE_BATCH_ITEM)
            {
                if !self.node_types.contains_key(p) {
                    self.node_types.insert(p.clone(), t.clone());
                }
            }
            if self.node_names.len() < NODE_NAMES && !self.node_names.contains(p) {
                self.node_names.insert(p.clone());
            }
        }
        agg.add(facts);
    }
}

/// Reads OTLP/JSON lines from `input` (`path` names it in errors), keeping
/// the spans `keep` selects.
pub(super) fn read(input: impl BufRead, path: &Path, keep: Keep<'_>) -> Result<Trace, TraceError> {
    read_bounded(input, path, keep, MAX_LINE_BYTES, MAX_KEPT_BYTES)
}

/// [`read`] with the line and kept-text bounds given (tests use small ones).
fn read_bounded(
    mut input: impl BufRead,
    path: &Path,
    keep: Keep<'_>,
    max_line: usize,
    max_kept: usize,
) -> Result<Trace, TraceError> {
    let format_error = |line: usize, message: String| TraceError::Format {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut buf = Vec::new();
    let mut resource: Option<Attrs> = None;
    let mut overview = Overview::default();
    let mut agg = Aggregator::default();
    let mut sel = Selector::new(keep, max_kept);
    let mut line_no = 0;
    loop {
        line_no += 1;
        buf.clear();
        let n = std::io::Read::take(&mut input, max_line as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|source| TraceError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        if n == 0 {
            break;
        }
        if buf.len() > max_line {
            return Err(format_error(
                line_no,
                format!(
                    "the line is longer than {} (pflow writes lines of at most {} KiB)",
                    crate::limits::human(max_line as u64),
                    crate::telemetry::file::LINE_MAX_BYTES / 1024
                ),
            ));
        }
        let line = std::str::from_utf8(&buf)
            .map_err(|e| format_error(line_no, format!("not UTF-8: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let req = super::parse_request(line).map_err(|e| format_error(line_no, e.to_string()))?;
        for rs in req.resource_spans {
            if resource.is_none() {
                if let Some(mut r) = rs.resource {
                    crate::telemetry::redact::redact_proto_attrs(&mut r.attributes);
                    resource = Some(attrs(&r.attributes));
                }
            }
            for mut s in rs.scope_spans.into_iter().flat_map(|ss| ss.spans) {
                // What the compact form left out, back in: every command sees it.
                crate::telemetry::compact::restore_span(&mut s);
                add_span(s, &mut overview, &mut agg, &mut sel);
            }
        }
    }
    if overview.total_spans == 0 {
        return Err(TraceError::Empty {
            path: path.to_path_buf(),
        });
    }
    overview.metrics = agg.summary();
    Ok(Trace {
        path: path.to_path_buf(),
        resource: resource.unwrap_or_default(),
        spans: sel.finish(),
        overview,
    })
}

fn add_span(mut s: ProtoSpan, overview: &mut Overview, agg: &mut Aggregator, sel: &mut Selector) {
    let verdict = sel.verdict(&hex(&s.span_id), &s);
    let keep = match verdict {
        Verdict::Keep | Verdict::Pending => true,
        Verdict::NodeSpan {
            ours_by_path,
            ours_by_id,
        } => ours_by_path || ours_by_id,
        Verdict::Drop => false,
    };
    if keep {
        crate::telemetry::redact::redact_span(&mut s);
    }
    let span = convert_span(s);
    let mut facts = span.facts();
    if !keep {
        // Not kept, so not redacted: only the facts the totals read are.
        redact_facts(&mut facts);
    }
    overview.add(&span, &facts, agg);
    match verdict {
        Verdict::Drop => {}
        Verdict::Keep => sel.take(span),
        Verdict::NodeSpan {
            ours_by_path,
            ours_by_id,
        } => {
            let below = sel.drain_pending(&span.span_id);
            if ours_by_path || ours_by_id {
                let list = if ours_by_path {
                    &mut sel.by_path
                } else {
                    &mut sel.by_id
                };
                sel.kept_bytes += footprint(&span);
                list.push(span);
                list.extend(below);
            } else {
                sel.kept_bytes -= below.iter().map(footprint).sum::<usize>();
            }
        }
        Verdict::Pending => {
            sel.kept_bytes += footprint(&span);
            sel.pending_count += 1;
            sel.pending
                .entry(span.parent_span_id.clone())
                .or_default()
                .push(span);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traces::show::{render_node, Style};

    const FIXTURE: &str =
        "tests/fixtures/traces/20261201T190339.377Z_e4dc5f3657d643f701f02e0e78d8b794.otlp.json";

    fn text() -> String {
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE)).unwrap()
    }

    fn names(t: &Trace) -> Vec<&str> {
        t.spans.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn first_n_keeps_the_first_to_end_with_their_parents_and_counts_every_span() {
        let full = read(text().as_bytes(), Path::new("t"), Keep::All).unwrap();
        let t = read(text().as_bytes(), Path::new("t"), Keep::First(3)).unwrap();
        // The first call, its node, and the workflow and run above them: the tree stays whole.
        assert_eq!(
            names(&t),
            [
                "chat gpt-4o",
                "node ask",
                "invoke_workflow review-notes",
                "pflow run review.json"
            ]
        );
        assert_eq!(t.total_spans(), full.spans.len());
        assert_eq!(t.omitted_spans(), full.spans.len() - 4);
        // Everything about the run comes from every span, kept or not.
        assert_eq!(t.metrics(), full.metrics());
        assert_eq!(t.metrics().total.llm_calls, 2);
        let none = read(text().as_bytes(), Path::new("t"), Keep::First(0)).unwrap();
        assert!(none.spans.is_empty());
        for v in [&t, &none] {
            assert_eq!(v.metrics(), full.metrics());
            assert_eq!(v.status(), full.status());
            assert_eq!(v.workflow_name(), full.workflow_name());
            assert_eq!(v.trace_id(), full.trace_id());
            assert_eq!(v.start_ns(), full.start_ns());
            assert_eq!(v.end_ns(), full.end_ns());
            assert_eq!(v.root_error(), full.root_error());
            assert_eq!(v.node_type("each"), Some("shell"));
            assert_eq!(v.node_names(), full.node_names());
        }
        assert!(
            t.omitted_note().unwrap().contains("9 spans left out"),
            "{:?}",
            t.omitted_note()
        );
        assert!(full.omitted_note().is_none());
    }

    #[test]
    fn node_mode_keeps_one_node_and_the_calls_below_it() {
        let full = read(text().as_bytes(), Path::new("t"), Keep::All).unwrap();
        for id in full.node_names() {
            let t = read(text().as_bytes(), Path::new("t"), Keep::Node(id, 100)).unwrap();
            assert_eq!(
                render_node(&t, id, &Style::default()),
                render_node(&full, id, &Style::default()),
                "{id}"
            );
            assert_eq!(t.metrics(), full.metrics());
        }
        let t = read(text().as_bytes(), Path::new("t"), Keep::Node("critic", 100)).unwrap();
        assert_eq!(names(&t), ["node critic", "chat gpt-4o"]);
        // By path first (the batch span), else by id (its items carry the batch's id).
        let t = read(text().as_bytes(), Path::new("t"), Keep::Node("each", 100)).unwrap();
        assert_eq!(names(&t), ["node each"]);
        let err = render_node(&t, "critc", &Style::default()).unwrap_err();
        assert!(err.contains("Did you mean `critic`?"), "{err}");
    }

    #[test]
    fn kept_text_and_line_length_are_bounded() {
        // A budget of one span's text keeps one span (and no parent past it).
        let t = read_bounded(
            text().as_bytes(),
            Path::new("t"),
            Keep::First(100),
            MAX_LINE_BYTES,
            1,
        )
        .unwrap();
        assert_eq!(names(&t), ["chat gpt-4o"]);
        assert_eq!(t.total_spans(), 13);
        let e = read_bounded(
            text().as_bytes(),
            Path::new("t.json"),
            Keep::All,
            1024,
            MAX_KEPT_BYTES,
        )
        .unwrap_err();
        assert!(matches!(e, TraceError::Format { line: 1, .. }), "{e}");
        assert!(e.to_string().contains("longer than 1024 bytes"), "{e}");
        let e = read(&b"{}\n\xff\n"[..], Path::new("t.json"), Keep::All).unwrap_err();
        assert!(matches!(e, TraceError::Format { line: 2, .. }), "{e}");
    }
}
