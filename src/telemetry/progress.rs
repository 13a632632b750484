//! Live run progress, observed from spans: a `tracing` layer watches the
//! workflow, node, planner and LLM spans open, record and close, and keeps a
//! small shared state (node executions and batch items done / expected,
//! counted as the run's summary counts them; the node running; running
//! tokens and cost) that a renderer (the CLI's bar) reads on its own thread.
//!
//! Like the rest of telemetry it observes and never steers: each callback
//! takes one short mutex, and completed-node lines for plain output are sent
//! down an unbounded channel, so a node never waits on the terminal.

use super::attr;
use crate::accounting::Spend;
use std::fmt;
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// The handle shared by the layer (which writes) and the renderer (which
/// reads). Cheap to clone.
#[derive(Clone)]
pub struct ProgressSink {
    inner: Arc<Inner>,
}

struct Inner {
    start: Instant,
    state: Mutex<State>,
    /// Plain mode: one line per completed top-level node goes here.
    lines: Mutex<Option<mpsc::Sender<String>>>,
}

impl fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProgressSink").finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct State {
    /// Nodes expected: the top workflow's, plus each nested workflow's as it
    /// starts; `None` before the top workflow starts (planning).
    nodes_total: Option<u64>,
    /// Node executions finished (ok or failed for good), top level and
    /// nested, batch items apart: the summary's `nodes_executed`.
    nodes_done: u64,
    /// Batch items announced by the batches started so far.
    items_total: u64,
    /// Batch items finished: the summary's `batch_items`.
    items_done: u64,
    /// Node (and planner step) spans open, in start order: the last is "current".
    open: Vec<(u64, String)>,
    /// Tokens and cost of the calls so far.
    spent: Spend,
    /// A call's cost is unknown (unpriced model, no usage): the cost is a lower bound.
    cost_incomplete: bool,
    /// [`State::totals`] for the spend it was made from: a line per node
    /// formatted the same two numbers (floats) again while nothing was spent.
    totals_memo: Option<(u64, u64, bool, String)>,
}

impl ProgressSink {
    /// `lines`: where plain output goes (one line per completed top-level
    /// node); `None` when a live display reads [`ProgressSink::bar_text`].
    pub fn new(lines: Option<mpsc::Sender<String>>) -> Self {
        ProgressSink {
            inner: Arc::new(Inner {
                start: Instant::now(),
                state: Mutex::new(State::default()),
                lines: Mutex::new(lines),
            }),
        }
    }

    /// The layer to install in the run's subscriber.
    pub fn layer(&self) -> ProgressLayer {
        ProgressLayer { sink: self.clone() }
    }

    /// Time since the sink was created (the run's start).
    pub fn elapsed(&self) -> Duration {
        self.inner.start.elapsed()
    }

    /// The live display's text, e.g. `[00:03] 4/7 nodes, 3/10 items · count[3] · 1,234 tok · $0.0021`.
    pub fn bar_text(&self) -> String {
        self.state().bar_text(self.elapsed())
    }

    /// Ends plain output: the line writer sees the channel close once it has
    /// drained it. Spans closing later are still counted, never printed.
    pub fn close_lines(&self) {
        if let Ok(mut l) = self.inner.lines.lock() {
            l.take();
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not silence progress: the state stays usable.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn emit(&self, line: String) {
        if let Ok(l) = self.inner.lines.lock() {
            if let Some(tx) = l.as_ref() {
                let _ = tx.send(line);
            }
        }
    }

    fn has_lines(&self) -> bool {
        self.inner.lines.lock().is_ok_and(|l| l.is_some())
    }
}

impl State {
    /// `4/7 nodes`, `4/7 nodes, 3/10 items`: counted as the summary counts
    /// them. A loop can run more nodes than were planned; the total then
    /// grows with them, so done never exceeds it.
    fn counts(&self) -> String {
        let mut s = String::new();
        self.write_counts(&mut s);
        s
    }

    /// [`State::counts`] onto `out` (a line per node: no string of its own).
    fn write_counts(&self, out: &mut String) {
        use crate::format::write_count;
        use std::fmt::Write;
        let _ = write!(out, "{}/", self.nodes_done);
        match self.nodes_total {
            Some(t) => write_count(out, t.max(self.nodes_done), "node"),
            None => out.push_str("? nodes"),
        }
        if self.items_total == 0 && self.items_done == 0 {
            return;
        }
        let _ = write!(out, ", {}/", self.items_done);
        write_count(out, self.items_total.max(self.items_done), "item");
    }

    fn bar_text(&self, elapsed: Duration) -> String {
        // Before the workflow starts (planning) there is no total to show.
        let mut parts = Vec::new();
        if self.nodes_total.is_some() {
            parts.push(self.counts());
        }
        if let Some((_, current)) = self.open.last() {
            parts.push(current.clone());
        }
        parts.push(format!("{} tok", thousands(self.spent.tokens)));
        let at_least = if self.cost_incomplete { "≥ " } else { "" };
        parts.push(format!(
            "{at_least}{}",
            crate::format::usd_brief(self.spent.usd)
        ));
        format!("[{}] {}", clock(elapsed), parts.join(" · "))
    }

    fn totals(&self) -> String {
        format!(
            "{} tok · {}",
            thousands(self.spent.tokens),
            crate::format::cost(&crate::accounting::CostTotal::new(
                self.spent.usd,
                !self.cost_incomplete
            ))
        )
    }
}

/// `[0.12s] ✓ read (1/7 nodes) · 0 tok · $0.000000`: a top-level node finished.
fn done_line(elapsed: Duration, what: &str, state: &mut State) -> String {
    use std::fmt::Write;
    let mut line = String::with_capacity(48 + what.len());
    // Hundredths, rounded as `{:.2}` rounds, without float formatting.
    let centis = (elapsed.as_micros() + 5_000) / 10_000;
    let _ = write!(line, "[{}.{:02}s] {what} (", centis / 100, centis % 100);
    state.write_counts(&mut line);
    line.push_str(") · ");
    let key = (
        state.spent.tokens,
        state.spent.usd.to_bits(),
        state.cost_incomplete,
    );
    match &state.totals_memo {
        Some((t, u, i, text)) if (*t, *u, *i) == key => line.push_str(text),
        _ => {
            let text = state.totals();
            line.push_str(&text);
            state.totals_memo = Some((key.0, key.1, key.2, text));
        }
    }
    line
}

pub use crate::format::thousands;

pub use crate::format::clock;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Kind {
    #[default]
    Other,
    Workflow,
    Node,
    Planner,
    Llm,
}

/// What the layer keeps on each span it cares about (a registry extension).
#[derive(Debug, Default)]
struct SpanData {
    kind: Kind,
    path: String,
    role: String,
    attempt: i64,
    max_attempts: i64,
    status: Option<String>,
    error_type: Option<String>,
    depth: Option<i64>,
    node_count: Option<i64>,
    batch_size: Option<i64>,
    batch_failed: Option<i64>,
    planner_step: Option<String>,
    input_tokens: i64,
    output_tokens: i64,
    cost_usd: f64,
    /// A finite `pflow.cost.usd` was recorded: without one (a cost that
    /// overflowed, a timeout that may have been billed) the call's cost is unknown.
    priced: bool,
    /// `pflow.cost.source`.
    cost_source: Option<String>,
    /// A `pflow.node.retry` event said another attempt follows.
    retrying: bool,
    /// A node of the top workflow.
    top_level: bool,
    /// Batch nodes: the items already added to the total.
    items_counted: u64,
}

impl SpanData {
    fn is_item(&self) -> bool {
        self.role == attr::ROLE_BATCH_ITEM
    }

    /// A batch node's size, once known, joins the items total (once per span).
    fn count_items(&mut self, st: &mut State) {
        if self.role != attr::ROLE_BATCH {
            return;
        }
        if let Some(n) = self.batch_size {
            let n = n.max(0) as u64;
            st.items_total = (st.items_total + n).saturating_sub(self.items_counted);
            self.items_counted = n;
        }
    }
}

impl Visit for SpanData {
    fn record_i64(&mut self, field: &Field, v: i64) {
        match field.name() {
            attr::NODE_ATTEMPT => self.attempt = v,
            attr::NODE_MAX_ATTEMPTS => self.max_attempts = v,
            attr::WORKFLOW_DEPTH => self.depth = Some(v),
            attr::WORKFLOW_NODE_COUNT => self.node_count = Some(v),
            attr::BATCH_SIZE => self.batch_size = Some(v),
            attr::BATCH_FAILED => self.batch_failed = Some(v),
            attr::USAGE_INPUT_TOKENS => self.input_tokens = v,
            attr::USAGE_OUTPUT_TOKENS => self.output_tokens = v,
            _ => {}
        }
    }
    fn record_u64(&mut self, field: &Field, v: u64) {
        self.record_i64(field, i64::try_from(v).unwrap_or(i64::MAX));
    }
    fn record_f64(&mut self, field: &Field, v: f64) {
        if field.name() == attr::COST_USD && v.is_finite() {
            self.cost_usd = v;
            self.priced = true;
        }
    }
    fn record_str(&mut self, field: &Field, v: &str) {
        match field.name() {
            attr::NODE_ID | attr::NODE_PATH => self.path = v.to_string(),
            attr::NODE_ROLE => self.role = v.to_string(),
            attr::NODE_STATUS => self.status = Some(v.to_string()),
            attr::ERROR_TYPE => self.error_type = Some(v.to_string()),
            attr::PLANNER_STEP => self.planner_step = Some(v.to_string()),
            attr::COST_SOURCE => self.cost_source = Some(v.to_string()),
            _ => {}
        }
    }
    fn record_debug(&mut self, field: &Field, v: &dyn fmt::Debug) {
        // `%value` fields (paths) arrive here; their Debug is their Display.
        match field.name() {
            attr::NODE_ID
            | attr::NODE_PATH
            | attr::NODE_ROLE
            | attr::NODE_STATUS
            | attr::ERROR_TYPE
            | attr::PLANNER_STEP => self.record_str(field, &format!("{v:?}")),
            _ => {}
        }
    }
}

/// The `tracing` layer; see the module docs.
pub struct ProgressLayer {
    sink: ProgressSink,
}

fn kind_of(meta: &tracing::Metadata<'_>) -> Kind {
    match (meta.target(), meta.name()) {
        ("pflow::workflow", "invoke_workflow") => Kind::Workflow,
        ("pflow::node", "node") => Kind::Node,
        ("pflow::llm", _) => Kind::Llm,
        ("pflow::planner", "planner_step") => Kind::Planner,
        _ => Kind::Other,
    }
}

impl<S> Layer<S> for ProgressLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let kind = kind_of(attrs.metadata());
        if kind == Kind::Other {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        // What a node span's absent attributes mean (telemetry::compact):
        // attempt 1 of 1, path = id (set from `pflow.node.id`, declared first).
        let mut data = SpanData {
            kind,
            attempt: 1,
            max_attempts: 1,
            ..SpanData::default()
        };
        attrs.record(&mut data);
        if let Some(parent) = span.parent() {
            if let Some(p) = parent.extensions().get::<SpanData>() {
                data.top_level =
                    kind == Kind::Node && p.kind == Kind::Workflow && p.depth == Some(0);
            }
        }
        {
            let mut st = self.sink.state();
            match kind {
                Kind::Workflow => {
                    // A nested workflow's nodes are node executions too (the summary counts them).
                    let n = data.node_count.map_or(0, |n| n.max(0) as u64);
                    st.nodes_total = Some(st.nodes_total.unwrap_or(0) + n);
                }
                Kind::Node => {
                    st.open.push((id.into_u64(), data.path.clone()));
                    data.count_items(&mut st);
                }
                Kind::Planner => {
                    let step = data.planner_step.as_deref().unwrap_or("pflow");
                    st.open.push((id.into_u64(), format!("plan {step}")));
                }
                _ => {}
            }
        }
        span.extensions_mut().insert(data);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        let Some(data) = ext.get_mut::<SpanData>() else {
            return;
        };
        let before = Spend::of_call(data.cost_usd, data.input_tokens, data.output_tokens);
        values.record(data);
        match data.kind {
            Kind::Llm => {
                // Usage is recorded once per call; adding the change stays right if it is recorded again.
                let after = Spend::of_call(data.cost_usd, data.input_tokens, data.output_tokens);
                let unknown = data
                    .cost_source
                    .as_deref()
                    .and_then(crate::accounting::CostSource::parse)
                    .is_some_and(|c| !c.is_known());
                if after != before || unknown {
                    let mut st = self.sink.state();
                    st.spent.shift(before, after);
                    st.cost_incomplete |= unknown;
                }
            }
            Kind::Node if data.role == attr::ROLE_BATCH && data.batch_size.is_some() => {
                data.count_items(&mut self.sink.state());
            }
            _ => {}
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        // `pflow.node.retry` (the only event carrying the next attempt): another attempt follows.
        if event
            .metadata()
            .fields()
            .field(attr::NODE_NEXT_ATTEMPT)
            .is_none()
        {
            return;
        }
        if let Some(span) = ctx.event_span(event) {
            if let Some(d) = span.extensions_mut().get_mut::<SpanData>() {
                d.retrying = true;
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let ext = span.extensions();
        let Some(data) = ext.get::<SpanData>() else {
            return;
        };
        if data.kind == Kind::Llm && !data.priced {
            // As the accounting model counts it: a call without a cost makes
            // the total a lower bound (`≥ $…`), never a complete `$0.000000`.
            self.sink.state().cost_incomplete = true;
            return;
        }
        if !matches!(data.kind, Kind::Node | Kind::Planner) {
            return;
        }
        let raw = id.into_u64();
        let mut st = self.sink.state();
        let line = {
            if let Some(pos) = st.open.iter().rposition(|(i, _)| *i == raw) {
                st.open.remove(pos);
            }
            if data.kind == Kind::Planner {
                return;
            }
            if data.retrying {
                // Another attempt follows: not done yet.
                (data.top_level && self.sink.has_lines()).then(|| {
                    let what = format!(
                        "↻ {} attempt {}/{} failed: {}, retrying",
                        data.path,
                        data.attempt,
                        data.max_attempts,
                        data.error_type.as_deref().unwrap_or("error")
                    );
                    format!("[{:.2}s] {what}", self.sink.elapsed().as_secs_f64())
                })
            } else {
                if data.is_item() {
                    st.items_done += 1;
                } else {
                    st.nodes_done += 1;
                }
                if data.top_level {
                    self.sink
                        .has_lines()
                        .then(|| done_line(self.sink.elapsed(), &outcome(data), &mut st))
                } else {
                    None
                }
            }
        };
        // Sent under the state lock, so lines keep the order of their counts.
        if let Some(line) = line {
            self.sink.emit(line);
        }
    }
}

/// `✓ read`, `✓ count 10 items, 2 failed`, `✗ fetch failed: http_status`, `✗ fetch interrupted`,
/// `↺ ask restored`.
fn outcome(d: &SpanData) -> String {
    // A node span that succeeded records no status (telemetry::compact).
    match d.status.as_deref() {
        None | Some(crate::telemetry::compact::STATUS_OK) => {
            let mut s = format!("✓ {}", d.path);
            if let Some(n) = d.batch_size {
                s.push_str(&format!(" {n} items"));
                if let Some(f) = d.batch_failed.filter(|f| *f > 0) {
                    s.push_str(&format!(", {f} failed"));
                }
            }
            s
        }
        Some("error") => format!(
            "✗ {} failed: {}",
            d.path,
            d.error_type.as_deref().unwrap_or("error")
        ),
        // Not run again: its outputs came from an earlier run.
        Some(
            s @ (crate::accounting::span::STATUS_RESTORED | crate::accounting::span::STATUS_CACHED),
        ) => {
            format!("↺ {} {s}", d.path)
        }
        Some(other) => format!("✗ {} {other}", d.path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::field::Empty;
    use tracing_subscriber::layer::SubscriberExt;

    /// The line's time rounds as `{:.2}` does; its totals follow the spend
    /// even though they are kept from one line to the next.
    #[test]
    fn done_line_rounds_its_time_and_follows_the_spend() {
        let mut st = State {
            nodes_total: Some(3),
            nodes_done: 1,
            ..State::default()
        };
        let at = |us: u64| Duration::from_micros(us);
        assert_eq!(
            done_line(at(1_234_999), "✓ a", &mut st),
            "[1.23s] ✓ a (1/3 nodes) · 0 tok · $0.000000"
        );
        assert_eq!(
            done_line(at(1_235_000), "✓ a", &mut st),
            "[1.24s] ✓ a (1/3 nodes) · 0 tok · $0.000000"
        );
        st.spent.tokens = 12_345;
        st.spent.usd = 0.5;
        st.nodes_done = 2;
        assert_eq!(
            done_line(at(61_999_999), "✓ b", &mut st),
            "[62.00s] ✓ b (2/3 nodes) · 12,345 tok · $0.500000"
        );
        st.cost_incomplete = true;
        st.items_total = 1;
        assert_eq!(
            done_line(at(5_000), "✓ c", &mut st),
            "[0.01s] ✓ c (2/3 nodes, 0/1 item) · 12,345 tok · ≥ $0.500000"
        );
    }

    /// Runs `f` (which may read the live sink) in a top workflow of `nodes`
    /// nodes, under a progress layer.
    fn with_progress(nodes: i64, f: impl FnOnce(&ProgressSink)) -> (ProgressSink, Vec<String>) {
        let (tx, rx) = mpsc::channel();
        let sink = ProgressSink::new(Some(tx));
        let subscriber = tracing_subscriber::registry().with(sink.layer());
        tracing::subscriber::with_default(subscriber, || {
            let wf = workflow(0, nodes);
            let _w = wf.enter();
            f(&sink)
        });
        sink.close_lines();
        // Elapsed times vary: compare what follows `[..s] `.
        let lines = rx
            .iter()
            .map(|l| l.split_once("] ").map(|(_, r)| r.to_string()).unwrap_or(l))
            .collect();
        (sink, lines)
    }

    /// The bar reads `[clock] {text}`.
    fn assert_bar(sink: &ProgressSink, text: &str) {
        let bar = sink.bar_text();
        assert!(bar.ends_with(&format!("] {text}")), "{bar}");
    }

    fn workflow(depth: i64, count: i64) -> tracing::Span {
        tracing::info_span!(target: "pflow::workflow", "invoke_workflow", pflow.workflow.depth = depth, pflow.workflow.node_count = count)
    }

    fn node(path: &str, role: &str, attempt: i64, max: i64) -> tracing::Span {
        tracing::info_span!(target: "pflow::node", "node", pflow.node.path = %path, pflow.node.role = role,
            pflow.node.attempt = attempt, pflow.node.max_attempts = max,
            pflow.batch.size = Empty, pflow.batch.failed = Empty, pflow.node.status = Empty, "error.type" = Empty)
    }

    /// A batch node of `size` items, and its item `i`.
    fn batch(path: &str, size: i64) -> tracing::Span {
        let b = node(path, "batch", 1, 1);
        b.record("pflow.batch.size", size);
        b
    }

    fn item(batch: &str, i: usize) -> tracing::Span {
        node(&format!("{batch}[{i}]"), "batch_item", 1, 1)
    }

    fn llm(input: i64, output: i64, cost: f64) {
        let s = tracing::info_span!(target: "pflow::llm", "llm",
            "gen_ai.usage.input_tokens" = Empty, "gen_ai.usage.output_tokens" = Empty, pflow.cost.usd = Empty);
        s.record("gen_ai.usage.input_tokens", input);
        s.record("gen_ai.usage.output_tokens", output);
        s.record("pflow.cost.usd", cost);
    }

    #[test]
    fn counts_nodes_at_every_depth_items_apart_tokens_and_failures() {
        let (sink, lines) = with_progress(3, |_| {
            {
                let n = node("read", "node", 1, 1);
                let _e = n.enter();
                n.record("pflow.node.status", "ok");
            }
            {
                let b = batch("count", 2);
                let _e = b.enter();
                for i in 0..2 {
                    let it = item("count", i);
                    let _i = it.enter();
                    llm(1000, 234, 0.0021);
                    it.record("pflow.node.status", "ok");
                }
                b.record("pflow.node.status", "ok");
                b.record("pflow.batch.failed", 0_i64);
            }
            {
                // A nested workflow's nodes are node executions, as in the summary.
                let n = node("fetch", "node", 1, 2);
                let _e = n.enter();
                {
                    let child = workflow(1, 1);
                    let _c = child.enter();
                    let inner = node("fetch/get", "node", 1, 1);
                    inner.record("pflow.node.status", "ok");
                }
                n.record("pflow.node.status", "error");
                n.record("error.type", "http_status");
                tracing::info!(target: "pflow::runtime", parent: &n, { pflow.node.next_attempt = 2_i64 }, "pflow.node.retry");
            }
            let n = node("fetch", "node", 2, 2);
            n.record("pflow.node.status", "error");
            n.record("error.type", "http_status");
        });
        assert_eq!(
            lines,
            [
                "✓ read (1/3 nodes) · 0 tok · $0.000000",
                "✓ count 2 items (2/3 nodes, 2/2 items) · 2,468 tok · $0.004200",
                "↻ fetch attempt 1/2 failed: http_status, retrying",
                "✗ fetch failed: http_status (4/4 nodes, 2/2 items) · 2,468 tok · $0.004200",
            ]
        );
        assert_bar(&sink, "4/4 nodes, 2/2 items · 2,468 tok · $0.0042");
    }

    /// A call that reports tokens but no cost (its cost overflowed, or it
    /// timed out after being billed) leaves the total a lower bound.
    #[test]
    fn a_call_without_a_cost_makes_the_total_a_lower_bound() {
        let (sink, lines) = with_progress(1, |_| {
            let n = node("ask", "node", 1, 1);
            let _e = n.enter();
            {
                let s = tracing::info_span!(target: "pflow::llm", "llm",
                    "gen_ai.usage.input_tokens" = Empty, "error.type" = Empty);
                s.record("gen_ai.usage.input_tokens", 1000_i64);
                s.record("error.type", "cost_overflow");
            }
            n.record("pflow.node.status", "error");
            n.record("error.type", "cost_overflow");
        });
        assert_eq!(
            lines,
            ["✗ ask failed: cost_overflow (1/1 node) · 1,000 tok · ≥ $0.000000"]
        );
        assert!(sink.bar_text().ends_with("1,000 tok · ≥ $0.0000"));
    }

    #[test]
    fn bar_shows_current_node_and_batch_items() {
        let (sink, _) = with_progress(7, |sink| {
            let b = batch("count", 10);
            let _e = b.enter();
            for i in 0..3 {
                item("count", i).record("pflow.node.status", "ok");
            }
            let it = item("count", 3);
            let _i = it.enter();
            llm(1200, 34, 0.0021);
            assert_bar(
                sink,
                "0/7 nodes, 3/10 items · count[3] · 1,234 tok · $0.0021",
            );
        });
        // Items are counted apart, never as nodes: the batch done is one node.
        assert_bar(&sink, "1/7 nodes, 4/10 items · 1,234 tok · $0.0021");
    }

    #[test]
    fn interrupted_and_looped_nodes() {
        let (_, lines) = with_progress(2, |_| {
            for _ in 0..2 {
                let n = node("step", "node", 1, 1);
                n.record("pflow.node.status", "ok");
            }
            let n = node("wait", "node", 1, 1);
            n.record("pflow.node.status", "interrupted");
        });
        assert_eq!(
            lines,
            [
                "✓ step (1/2 nodes) · 0 tok · $0.000000",
                "✓ step (2/2 nodes) · 0 tok · $0.000000",
                "✗ wait interrupted (3/3 nodes) · 0 tok · $0.000000",
            ]
        );
    }

    #[test]
    fn bar_before_and_at_the_start() {
        let st = State {
            nodes_total: Some(7),
            ..State::default()
        };
        assert_eq!(
            st.bar_text(Duration::from_secs(3)),
            "[00:03] 0/7 nodes · 0 tok · $0.0000"
        );
        assert_eq!(
            State::default().bar_text(Duration::ZERO),
            "[00:00] 0 tok · $0.0000"
        );
    }

    /// Runs a top-level node whose work makes an LLM call, with a
    /// `tracing::enabled!` probe at debug level before each span (as the
    /// runtime does), through the subscriber `Telemetry::init` builds.
    fn through_telemetry(mode: super::super::TraceMode) -> String {
        use super::super::{Telemetry, TelemetryConfig};
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel();
        let sink = ProgressSink::new(Some(tx));
        let t = Telemetry::init(TelemetryConfig {
            mode,
            trace_dir: dir.path().to_path_buf(),
            service_name: "test".into(),
            otlp: None,
            resource_attributes: Vec::new(),
            progress: Some(sink.clone()),
            live: None,
        });
        tracing::dispatcher::with_default(&t.dispatch(), || {
            let wf = workflow(0, 1);
            let _w = wf.enter();
            let _ = tracing::enabled!(target: "pflow::detail", tracing::Level::DEBUG);
            let n = node("ask", "node", 1, 1);
            let _e = n.enter();
            let _ = tracing::enabled!(target: "pflow::detail", tracing::Level::DEBUG);
            llm(40, 2, 0.5);
            n.record("pflow.node.status", "ok");
        });
        sink.close_lines();
        let _ = t.finish(false, "0");
        let lines: Vec<String> = rx.iter().collect();
        assert_eq!(lines.len(), 1, "{lines:?}");
        lines[0].split_once("] ").unwrap().1.to_string()
    }

    #[test]
    fn installed_by_telemetry_in_every_mode() {
        use super::super::TraceMode;
        for mode in [
            TraceMode::Off,
            TraceMode::MetricsOnly,
            TraceMode::Full { save_always: false },
        ] {
            assert_eq!(
                through_telemetry(mode),
                "✓ ask (1/1 node) · 42 tok · $0.500000",
                "{mode:?}"
            );
        }
    }
}
