//! The live feed (`pflow run … --live`): an observer the metrics processor
//! hands every ended span to, which turns it into a small, redacted event
//! for the terminal, the live page and `pflow trace tail`.
//!
//! It observes and never steers: `observe` builds one small struct from the
//! facts the metrics already read, takes one short lock and sends on a
//! bounded broadcast channel, whose send never waits. A consumer that falls
//! behind (a slow browser, a stalled terminal) loses the oldest events it has
//! not read yet and is told how many ([`FeedItem::Lagged`]); the run never
//! waits for it. Late consumers (a page opened mid-run, `trace tail`) first
//! get the history kept here (the newest [`HISTORY_EVENTS`] events).
//!
//! When `--live` is off there is no feed: the metrics processor's `Option`
//! is `None` and nothing here runs. The saved trace is not touched: the feed
//! reads the span the file exporter writes, it never changes it.

use super::metrics::SpanFacts;
use super::redact;
use crate::accounting::span::SpanKind;
use opentelemetry::trace::Status;
use opentelemetry_sdk::trace::SpanData;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

/// Events each consumer may fall behind before it loses the oldest.
pub const CHANNEL_EVENTS: usize = 4096;

/// Events kept for consumers that join late (a page opened mid-run).
pub const HISTORY_EVENTS: usize = 20_000;

/// An error message is cut to this many characters in an event (the trace keeps it whole).
const MESSAGE_CHARS: usize = 300;

/// `start`: the run began (its trace id and what runs).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunStart {
    pub trace_id: Option<String>,
    /// `run` or `plan`.
    pub command: String,
    /// The workflow file, or `planned-workflow.json` for a planned run.
    pub workflow: String,
    /// Wall clock, Unix epoch milliseconds.
    pub started_ms: f64,
    pub pid: u32,
}

/// `span`: one ended span, as the terminal and the page show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LiveSpan {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub name: String,
    /// `run`, `workflow`, `node`, `batch`, `batch_item`, `llm`, `planner`, `planner_step`, `other`.
    pub kind: String,
    /// The node path (an LLM call: the node it was made for).
    pub node: Option<String>,
    pub node_type: Option<String>,
    pub model: Option<String>,
    /// `ok` or `error`, or a node's own status when it says more (`interrupted`, `cancelled`, `cached`, `restored`).
    pub status: String,
    pub error_type: Option<String>,
    /// The span's status message (redacted, cut to a few hundred characters).
    pub message: Option<String>,
    /// Wall clock, Unix epoch milliseconds.
    pub start_ms: f64,
    pub end_ms: f64,
    pub duration_ms: f64,
    /// An LLM call's tokens (input includes cache reads and writes).
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cache_read_tokens: Option<u64>,
    pub cost_usd: Option<f64>,
    /// A node or LLM attempt past the first.
    pub attempt: Option<i64>,
}

/// `end`: the run's result, sent once every span has ended and the trace is saved.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunEnd {
    /// `ok`, `failed`, `invalid`, `budget_exceeded`, `interrupted`.
    pub status: String,
    pub exit_code: i32,
    pub trace_id: Option<String>,
    /// Where the trace was saved (none: a successful run without `--trace`).
    pub trace_file: Option<String>,
    pub duration_ms: f64,
    pub llm_calls: u64,
    pub tokens_total: u64,
    /// `null` when a call was unpriced (then `cost_lower_bound_usd` is what is known).
    pub cost_usd: Option<f64>,
    pub cost_lower_bound_usd: f64,
    /// The run's `metrics`, as `--output-format json` prints them.
    pub metrics: Option<serde_json::Value>,
}

/// What an event carries.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    Start(RunStart),
    Span(Box<LiveSpan>),
    End(Box<RunEnd>),
}

impl EventKind {
    /// The server-sent event's name: `start`, `span`, `end`.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Start(_) => "start",
            EventKind::Span(_) => "span",
            EventKind::End(_) => "end",
        }
    }

    /// Parses an event's JSON `data` by its name (for `pflow trace tail`).
    pub fn parse(name: &str, data: &str) -> Option<EventKind> {
        match name {
            "start" => serde_json::from_str(data).ok().map(EventKind::Start),
            "span" => serde_json::from_str(data)
                .ok()
                .map(|s| EventKind::Span(Box::new(s))),
            "end" => serde_json::from_str(data)
                .ok()
                .map(|e| EventKind::End(Box::new(e))),
            _ => None,
        }
    }
}

/// One event of the feed, its JSON encoded once for every consumer.
#[derive(Debug)]
pub struct LiveEvent {
    /// 1, 2, 3, … in the order events were published (the SSE `id`).
    pub seq: u64,
    pub kind: EventKind,
    pub json: String,
}

/// What a consumer reads next.
#[derive(Debug, Clone)]
pub enum FeedItem {
    Event(Arc<LiveEvent>),
    /// This consumer fell behind: that many events were dropped for it.
    Lagged(u64),
}

/// The feed; cheap to clone (all clones share it).
#[derive(Clone)]
pub struct LiveFeed {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LiveFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveFeed").finish_non_exhaustive()
    }
}

struct Inner {
    state: Mutex<State>,
    tx: broadcast::Sender<Arc<LiveEvent>>,
}

#[derive(Default)]
struct State {
    seq: u64,
    history: VecDeque<Arc<LiveEvent>>,
    /// Events that fell out of the history (a very large run).
    forgotten: u64,
    ended: bool,
}

/// A consumer: the history when it joined, then the events as they come.
pub struct Subscription {
    backlog: VecDeque<Arc<LiveEvent>>,
    /// Events older than the backlog that the history no longer holds.
    pub forgotten: u64,
    rx: broadcast::Receiver<Arc<LiveEvent>>,
    ended: bool,
}

impl Subscription {
    /// The next item; `None` once the `end` event was read (or the feed is gone).
    pub async fn next(&mut self) -> Option<FeedItem> {
        if self.ended {
            return None;
        }
        let got = match self.backlog.pop_front() {
            Some(e) => Ok(e),
            None => self.rx.recv().await,
        };
        self.settle(got)
    }

    /// [`Subscription::next`] for a plain thread (the terminal printer).
    pub fn blocking_next(&mut self) -> Option<FeedItem> {
        if self.ended {
            return None;
        }
        let got = match self.backlog.pop_front() {
            Some(e) => Ok(e),
            None => self.rx.blocking_recv(),
        };
        self.settle(got)
    }

    fn settle(
        &mut self,
        got: Result<Arc<LiveEvent>, broadcast::error::RecvError>,
    ) -> Option<FeedItem> {
        let item = match got {
            Ok(e) => {
                self.ended = matches!(e.kind, EventKind::End(_));
                FeedItem::Event(e)
            }
            Err(broadcast::error::RecvError::Lagged(n)) => FeedItem::Lagged(n),
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some(item)
    }

    /// Whether the history it joined with has been read.
    pub fn backlog_empty(&self) -> bool {
        self.backlog.is_empty()
    }

    /// Whether the `end` event was read.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Skips the backlog up to and including event `seq` (a reconnecting page's `Last-Event-ID`).
    pub fn skip_through(&mut self, seq: u64) {
        while self.backlog.front().is_some_and(|e| e.seq <= seq) {
            self.backlog.pop_front();
        }
    }
}

impl Default for LiveFeed {
    fn default() -> Self {
        Self::new()
    }
}

impl LiveFeed {
    pub fn new() -> LiveFeed {
        let (tx, _) = broadcast::channel(CHANNEL_EVENTS);
        LiveFeed {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                tx,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not stop the feed: the state stays usable.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Joins the feed: everything still in the history, then what follows,
    /// with no gap and no repeat (both are taken under the one lock).
    pub fn subscribe(&self) -> Subscription {
        let st = self.state();
        Subscription {
            backlog: st.history.clone(),
            forgotten: st.forgotten,
            rx: self.inner.tx.subscribe(),
            ended: false,
        }
    }

    /// Whether the `end` event was published.
    pub fn ended(&self) -> bool {
        self.state().ended
    }

    /// The `start` event, once published.
    pub fn run_start(&self) -> Option<RunStart> {
        self.state().history.iter().find_map(|e| match &e.kind {
            EventKind::Start(s) => Some(s.clone()),
            _ => None,
        })
    }

    fn publish(&self, kind: EventKind) {
        let json = match &kind {
            EventKind::Start(s) => serde_json::to_string(s),
            EventKind::Span(s) => serde_json::to_string(s),
            EventKind::End(e) => serde_json::to_string(e),
        };
        let Ok(json) = json else { return };
        let mut st = self.state();
        if st.ended {
            return;
        }
        st.seq += 1;
        st.ended = matches!(kind, EventKind::End(_));
        let event = Arc::new(LiveEvent {
            seq: st.seq,
            kind,
            json,
        });
        if st.history.len() >= HISTORY_EVENTS {
            st.history.pop_front();
            st.forgotten += 1;
        }
        st.history.push_back(event.clone());
        // Sent under the lock, so subscribers see the history's order; never waits
        // (no receiver is fine: nobody is watching yet).
        let _ = self.inner.tx.send(event);
    }

    /// Publishes the `start` event.
    pub fn start(&self, start: RunStart) {
        self.publish(EventKind::Start(start));
    }

    /// Publishes the `end` event; nothing is published after it.
    pub fn end(&self, end: RunEnd) {
        self.publish(EventKind::End(Box::new(end)));
    }

    /// Called by the metrics processor for every ended span, with the facts it read.
    pub fn observe(&self, span: &SpanData, facts: &SpanFacts) {
        self.publish(EventKind::Span(Box::new(live_span(span, facts))));
    }
}

fn unix_ms(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// Text from a span, through the one redactor (as the trace file writes it).
fn clean(s: &str) -> String {
    redact::global().redact_str(s).into_owned()
}

/// What a span is besides its facts: ids, name, times and status message.
pub struct SpanParts<'a> {
    pub trace_id: String,
    pub span_id: String,
    /// `None` for a root span.
    pub parent_span_id: Option<String>,
    pub name: &'a str,
    pub start_ms: f64,
    pub end_ms: f64,
    /// The error status's description (empty: none).
    pub message: &'a str,
}

fn live_span(span: &SpanData, f: &SpanFacts) -> LiveSpan {
    let parent = span.parent_span_id;
    let message = match &span.status {
        Status::Error { description } => description.as_ref(),
        _ => "",
    };
    LiveSpan::from_parts(
        SpanParts {
            trace_id: span.span_context.trace_id().to_string(),
            span_id: span.span_context.span_id().to_string(),
            parent_span_id: (parent != opentelemetry::trace::SpanId::INVALID)
                .then(|| parent.to_string()),
            name: &span.name,
            start_ms: unix_ms(span.start_time),
            end_ms: unix_ms(span.end_time),
            message,
        },
        f,
    )
}

impl LiveSpan {
    /// The event for a span (ended now, or read back from a saved trace):
    /// every text through the one redactor.
    pub fn from_parts(p: SpanParts<'_>, f: &SpanFacts) -> LiveSpan {
        let kind = f.kind();
        let llm = kind == SpanKind::LlmCall;
        let message = (!p.message.is_empty()).then(|| {
            let m = clean(p.message);
            match m.char_indices().nth(MESSAGE_CHARS) {
                Some((i, _)) => format!("{}…", &m[..i]),
                None => m,
            }
        });
        // A node's own status says more than the span's (`interrupted`, `cancelled`, `cached`).
        let status = match (&f.node_status, f.failed) {
            (Some(s), _) if s != "ok" && s != "error" => clean(s),
            (_, true) => "error".to_string(),
            _ => "ok".to_string(),
        };
        let tokens = f.tokens();
        LiveSpan {
            trace_id: p.trace_id,
            span_id: p.span_id,
            parent_span_id: p.parent_span_id,
            name: clean(p.name),
            kind: kind.as_str().to_string(),
            node: f
                .node_path
                .as_deref()
                .or(f.llm_node_path.as_deref())
                .map(clean),
            node_type: f.node_type.as_deref().map(clean),
            model: f
                .response_model
                .as_deref()
                .or(f.model.as_deref())
                .map(clean),
            status,
            error_type: f.error_type.as_deref().map(clean),
            message,
            start_ms: p.start_ms,
            end_ms: p.end_ms,
            duration_ms: (p.end_ms - p.start_ms).max(0.0),
            input_tokens: (llm && f.has_usage).then_some(tokens.input),
            output_tokens: (llm && f.has_usage).then_some(tokens.output),
            cache_read_tokens: (llm && tokens.cache_read > 0).then_some(tokens.cache_read),
            cost_usd: if llm { f.cost_usd } else { None },
            attempt: (f.attempt > 1).then_some(f.attempt),
        }
    }
}

/// Whether the terminal shows a line for this span: nodes, batch items, LLM calls and planner steps.
pub fn shows_line(s: &LiveSpan) -> bool {
    matches!(
        s.kind.as_str(),
        "node" | "batch" | "batch_item" | "llm" | "planner_step"
    )
}

/// A span's terminal line, `[+1.52s] ✓ node greet (shell) 1.02 s`, its time
/// counted from the run's start (`run_start_ms`, Unix epoch milliseconds).
pub fn span_line(s: &LiveSpan, run_start_ms: f64) -> String {
    use crate::format::{duration_ms, thousands, usd_compact};
    let mark = match s.status.as_str() {
        "ok" => "✓",
        "error" | "interrupted" => "✗",
        "cached" | "restored" => "↺",
        _ => "·",
    };
    let what = match s.kind.as_str() {
        "llm" => "llm",
        "planner_step" => "planner",
        "batch_item" => "item",
        other => other,
    };
    let mut line = format!(
        "[+{:.2}s] {mark} {what} ",
        ((s.end_ms - run_start_ms) / 1000.0).max(0.0)
    );
    match (s.kind.as_str(), &s.node) {
        ("llm", Some(node)) => line.push_str(&format!("{node} · {}", s.name)),
        (_, Some(node)) => line.push_str(node),
        (_, None) => line.push_str(&s.name),
    }
    if let Some(t) = &s.node_type {
        line.push_str(&format!(" ({t})"));
    }
    if s.status != "ok" && s.status != "error" {
        line.push_str(&format!(" {}", s.status));
    }
    if let Some(a) = s.attempt {
        line.push_str(&format!(" attempt {a}"));
    }
    line.push_str(&format!(" {}", duration_ms(s.duration_ms)));
    if s.input_tokens.is_some() || s.output_tokens.is_some() {
        let (i, o) = (s.input_tokens.unwrap_or(0), s.output_tokens.unwrap_or(0));
        line.push_str(&format!(
            " · {} tok ({} in, {} out)",
            thousands(i + o),
            thousands(i),
            thousands(o)
        ));
    }
    if let Some(c) = s.cost_usd {
        line.push_str(&format!(" · {}", usd_compact(c)));
    }
    if s.status == "error" || s.error_type.is_some() {
        let kind = s.error_type.as_deref().unwrap_or("error");
        match &s.message {
            // `interrupted: interrupted` says it once.
            Some(m) if m != kind => line.push_str(&format!(" · {kind}: {m}")),
            _ => line.push_str(&format!(" · {kind}")),
        }
    }
    line
}

/// The run's last line: `[+3.10s] ■ run ok in 3.10 s · 3 LLM calls · 1,234 tok · $0.0021`.
pub fn end_line(e: &RunEnd) -> String {
    use crate::format::{count, duration_ms, thousands, usd_compact};
    let cost = match e.cost_usd {
        Some(c) => usd_compact(c),
        None => format!("≥ {}", usd_compact(e.cost_lower_bound_usd)),
    };
    let mut line = format!(
        "[+{:.2}s] ■ run {} in {} · exit {} · {} · {} tok · {cost}",
        e.duration_ms / 1000.0,
        e.status,
        duration_ms(e.duration_ms),
        e.exit_code,
        count(e.llm_calls, "LLM call"),
        thousands(e.tokens_total),
    );
    if let Some(f) = &e.trace_file {
        line.push_str(&format!(" · trace {f}"));
    }
    line
}

/// Wall clock now, Unix epoch milliseconds.
pub fn now_ms() -> f64 {
    unix_ms(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(name: &str) -> LiveSpan {
        LiveSpan {
            trace_id: "t".into(),
            span_id: "s".into(),
            parent_span_id: None,
            name: name.into(),
            kind: "node".into(),
            node: Some("greet".into()),
            node_type: Some("shell".into()),
            model: None,
            status: "ok".into(),
            error_type: None,
            message: None,
            start_ms: 1000.0,
            end_ms: 2520.0,
            duration_ms: 1520.0,
            input_tokens: None,
            output_tokens: None,
            cache_read_tokens: None,
            cost_usd: None,
            attempt: None,
        }
    }

    fn start() -> RunStart {
        RunStart {
            trace_id: None,
            command: "run".into(),
            workflow: "wf.json".into(),
            started_ms: 1000.0,
            pid: 1,
        }
    }

    #[tokio::test]
    async fn late_subscribers_get_the_history_then_the_rest_in_order() {
        let feed = LiveFeed::new();
        feed.start(start());
        feed.publish(EventKind::Span(Box::new(span("node a"))));
        let mut sub = feed.subscribe();
        feed.publish(EventKind::Span(Box::new(span("node b"))));
        let mut names = Vec::new();
        feed.end(RunEnd {
            status: "ok".into(),
            exit_code: 0,
            trace_id: None,
            trace_file: None,
            duration_ms: 1.0,
            llm_calls: 0,
            tokens_total: 0,
            cost_usd: Some(0.0),
            cost_lower_bound_usd: 0.0,
            metrics: None,
        });
        // Nothing is published after the end.
        feed.publish(EventKind::Span(Box::new(span("node late"))));
        while let Some(FeedItem::Event(e)) = sub.next().await {
            names.push(format!("{}:{}", e.seq, e.kind.name()));
        }
        assert_eq!(names, ["1:start", "2:span", "3:span", "4:end"]);
        assert!(feed.ended());
    }

    #[tokio::test]
    async fn a_slow_consumer_loses_the_oldest_events_and_never_blocks_the_feed() {
        let feed = LiveFeed::new();
        let mut sub = feed.subscribe();
        for i in 0..CHANNEL_EVENTS + 10 {
            feed.publish(EventKind::Span(Box::new(span(&format!("node {i}")))));
        }
        match sub.next().await {
            Some(FeedItem::Lagged(n)) => assert_eq!(n, 10),
            other => panic!("expected a lag, got {other:?}"),
        }
        match sub.next().await {
            Some(FeedItem::Event(e)) => assert_eq!(e.seq, 11),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_history_is_bounded() {
        let feed = LiveFeed::new();
        for _ in 0..HISTORY_EVENTS + 5 {
            feed.publish(EventKind::Span(Box::new(span("n"))));
        }
        let sub = feed.subscribe();
        assert_eq!(sub.forgotten, 5);
        assert_eq!(sub.backlog.len(), HISTORY_EVENTS);
        assert_eq!(sub.backlog.front().map(|e| e.seq), Some(6));
    }

    #[test]
    fn lines_show_status_timing_tokens_and_cost() {
        assert_eq!(
            span_line(&span("node greet"), 1000.0),
            "[+1.52s] ✓ node greet (shell) 1.52 s"
        );
        let mut llm = span("chat gpt-4o-mini");
        llm.kind = "llm".into();
        llm.node_type = None;
        llm.input_tokens = Some(1200);
        llm.output_tokens = Some(34);
        llm.cost_usd = Some(0.0021);
        llm.duration_ms = 840.0;
        assert_eq!(
            span_line(&llm, 1000.0),
            "[+1.52s] ✓ llm greet · chat gpt-4o-mini 840.0 ms · 1,234 tok (1,200 in, 34 out) · $0.000210"
                .replace("$0.000210", &crate::format::usd_compact(0.0021))
        );
        let mut failed = span("node fetch");
        failed.status = "error".into();
        failed.error_type = Some("exit_code".into());
        failed.message = Some("exited with 3".into());
        assert!(span_line(&failed, 1000.0).ends_with("1.52 s · exit_code: exited with 3"));
    }

    #[test]
    fn events_round_trip_through_their_json() {
        let s = span("node a");
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            EventKind::parse("span", &json),
            Some(EventKind::Span(Box::new(s)))
        );
        assert_eq!(EventKind::parse("nope", "{}"), None);
    }
}
