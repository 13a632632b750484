//! The trace file exporter: streams finished spans to a writer thread that
//! encodes them as OTLP/JSON, one `ExportTraceServiceRequest` per line (the
//! format the Collector's file exporter writes and its `otlpjsonfile`
//! receiver reads).
//!
//! Nodes never wait on disk: `on_end` only queues the span. Nothing is lost
//! either: the queue is drained at `finish`. Where the bytes go is decided
//! up front: a temp file in the trace directory when the trace will be kept
//! (`--trace`), encoded as the spans arrive; when it is kept only if the run
//! fails (the default), the spans are held unencoded (up to [`DEFER_BYTES`])
//! and encoded only if `finish` saves them, so a successful run pays for no
//! encoding. `finish` renames the temp file into place (atomic), or drops it.
//! Spans are encoded straight from `SpanData` ([`super::otlp_json`]), not
//! through the proto structs: the same bytes at a third of the cost.
//!
//! Memory stays bounded on very large runs: the queue to the writer holds at
//! most [`QUEUE_BATCHES`] batches (a node waits only when the writer is that
//! far behind), the in-memory buffer spills to a temp file past
//! [`SPILL_BYTES`], and the encoded trace is capped at `PFLOW_TRACE_MAX_BYTES`
//! (see [`Capped`]): past the cap spans are counted, not written, and the run
//! span is written last with `pflow.trace.truncated` / `pflow.trace.dropped_spans`.

use super::attr;
use super::otlp_json::{write_span, Envelope};
use super::redact::Redactor;
use opentelemetry::{Array, KeyValue, Value as OtelValue};
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};
use opentelemetry_sdk::Resource;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Spans per encoded line, so one line stays a reasonable size.
const SPANS_PER_LINE: usize = 512;

/// Bytes per encoded line, at most (a line of one span larger than this is
/// written whole). Readers of OTLP/JSON files cut long lines: the Collector's
/// `otlpjsonfile` receiver at 1 MiB by default, splitting the line and losing
/// its spans. 512 large spans pass that, so lines are split by size too.
pub const LINE_MAX_BYTES: usize = 256 * 1024;

/// Line bodies kept for reuse (a line has a group per instrumentation scope).
const MAX_SPARE_BODIES: usize = 4;

/// Batches queued for the writer before `on_end` waits for it: bounds the
/// spans held in memory when encoding falls behind the nodes (about 8k spans).
pub const QUEUE_BATCHES: usize = 16;

/// An in-memory trace (kept only if the run fails) moves to a temp file in the
/// trace directory past this size, so a large successful run holds no trace in RAM.
pub const SPILL_BYTES: usize = 8 * 1024 * 1024;

/// The default of `PFLOW_TRACE_MAX_BYTES`: 256 MiB of encoded trace.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// Set on the run span of a trace that hit the cap.
pub const TRUNCATED: &str = attr::TRACE_TRUNCATED;
/// Spans ended but not written because of the cap.
pub const DROPPED_SPANS: &str = attr::TRACE_DROPPED_SPANS;

/// `PFLOW_TRACE_MAX_BYTES` (bytes; `0` turns the cap off), with a warning for a bad value.
pub fn max_bytes_from_env() -> (u64, Option<String>) {
    match std::env::var("PFLOW_TRACE_MAX_BYTES") {
        Err(_) => (DEFAULT_MAX_BYTES, None),
        Ok(v) if v.trim().is_empty() => (DEFAULT_MAX_BYTES, None),
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(n) => (n, None),
            Err(_) => (
                DEFAULT_MAX_BYTES,
                Some(format!(
                    "PFLOW_TRACE_MAX_BYTES=`{v}` is not a number of bytes; using {}",
                    human_bytes(DEFAULT_MAX_BYTES)
                )),
            ),
        },
    }
}

/// `256 MiB`, `195.3 KiB`, `512 bytes`.
pub fn human_bytes(n: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if n >= MIB {
        if n.is_multiple_of(MIB) {
            format!("{} MiB", n / MIB)
        } else {
            format!("{:.1} MiB", n as f64 / MIB as f64)
        }
    } else if n >= 1024 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} bytes")
    }
}

enum Msg {
    /// A full buffer of spans, handed over in one go (one wake-up per batch, not per span).
    Batch(Vec<SpanData>),
    /// Spans are pending again after a quiet spell, for a writer that encodes
    /// them as they come (one per quiet spell, not per span).
    Wake,
    /// Ends the file; `save` says whether it is kept (held spans are encoded only then).
    Finish {
        save: bool,
        reply: mpsc::Sender<Written>,
    },
}

/// Spans a trace kept only on failure (the default mode) holds unencoded:
/// encoding is most of a trace's cost and most runs succeed, so it waits
/// until `finish` knows the trace is saved. Past this estimate of their size
/// in memory the held spans are encoded (and spilled past [`SPILL_BYTES`])
/// as `--trace` does, so memory stays bounded on very large runs.
pub const DEFER_BYTES: usize = 32 * 1024 * 1024;

/// A rough size of a span in memory: its strings plus a fixed cost per
/// attribute and event (enough to bound memory, not to account it exactly).
fn approx_bytes(s: &SpanData) -> usize {
    fn attrs(kvs: &[KeyValue]) -> usize {
        kvs.iter()
            .map(|kv| {
                64 + kv.key.as_str().len()
                    + match &kv.value {
                        OtelValue::String(v) => v.as_str().len(),
                        _ => 0,
                    }
            })
            .sum()
    }
    512 + s.name.len()
        + attrs(&s.attributes)
        + s.events
            .iter()
            .map(|e| 96 + e.name.len() + attrs(&e.attributes))
            .sum::<usize>()
}

/// The writer's spans not yet encoded, while the trace may still be dropped.
struct Deferred {
    /// `false` once the trace is known to be kept (`--trace`) or grew past
    /// [`DEFER_BYTES`]: from then on every batch is encoded as it arrives.
    active: bool,
    batches: Vec<Vec<SpanData>>,
    bytes: usize,
}

impl Deferred {
    /// Holds `batch`, or encodes it (and everything held) once deferring stops.
    fn take(&mut self, batch: Vec<SpanData>, encode: &mut impl FnMut(Vec<SpanData>)) {
        if self.active {
            self.bytes += batch.iter().map(approx_bytes).sum::<usize>();
            self.batches.push(batch);
            if self.bytes <= DEFER_BYTES {
                return;
            }
            self.active = false;
            self.flush(encode);
        } else {
            encode(batch);
        }
    }

    fn flush(&mut self, encode: &mut impl FnMut(Vec<SpanData>)) {
        for b in std::mem::take(&mut self.batches) {
            encode(b);
        }
        self.bytes = 0;
    }
}

/// Spans ended but not yet handed to the writer.
#[derive(Debug, Default)]
struct Inbox {
    spans: Mutex<Vec<SpanData>>,
    /// The writer encodes spans as they come and found none in its last
    /// tick: the next span wakes it ([`Msg::Wake`]).
    asleep: AtomicBool,
}

type Pending = Arc<Inbox>;

impl Inbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<SpanData>> {
        self.spans.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn take_pending(p: &Pending) -> Vec<SpanData> {
    std::mem::take(&mut *p.lock())
}

/// While spans keep coming to a writer that encodes them as they come
/// (`--trace`), it takes them this often. The run's end waits for whatever
/// the writer has not encoded yet: taken only in batches of
/// [`SPANS_PER_LINE`], that was most of a short run's spans, ~8 µs a node
/// of its wall time.
const TICK: Duration = Duration::from_millis(1);
/// How long the writer waits when nothing came in a tick, or while it holds
/// spans unencoded (the default mode).
const QUIET: Duration = Duration::from_millis(200);
/// How long encoded spans may wait in a line not yet written.
const LINE_AGE: Duration = Duration::from_millis(200);

/// Where encoded lines accumulate.
pub enum Sink {
    /// Encoded lines, and the directory to spill them to past [`SPILL_BYTES`].
    Memory(Vec<u8>, Option<PathBuf>),
    File {
        file: std::io::BufWriter<tempfile::NamedTempFile>,
        error: Option<String>,
    },
}

impl Sink {
    fn write_line(&mut self, line: &[u8]) {
        match self {
            Sink::Memory(buf, spill) => {
                buf.extend_from_slice(line);
                buf.push(b'\n');
                if buf.len() > SPILL_BYTES {
                    if let Some(dir) = spill.take() {
                        // Can't spill (directory unusable)? Stay in memory, still under the cap.
                        if let (Sink::File { mut file, error }, None) = open_sink(&dir, true) {
                            if file.write_all(buf).is_ok() {
                                *self = Sink::File { file, error };
                            }
                        }
                    }
                }
            }
            Sink::File { file, error } => {
                if error.is_none() {
                    if let Err(e) = file.write_all(line).and_then(|_| file.write_all(b"\n")) {
                        *error = Some(e.to_string());
                    }
                }
            }
        }
    }

    /// Hands buffered lines to the file, so a killed run's temp file holds them.
    fn flush(&mut self) {
        if let Sink::File { file, error } = self {
            if error.is_none() {
                if let Err(e) = file.flush() {
                    *error = Some(e.to_string());
                }
            }
        }
    }
}

/// Makes a file-size limit (`ulimit -f`) a write error instead of a crash.
///
/// The default action of SIGXFSZ kills the process, so a run whose trace
/// file outgrows the limit would die with its result unprinted and a partial
/// temp file left behind. With a handler installed, the write fails with
/// EFBIG and the exporter turns it into its one warning. A handler (unlike
/// SIG_IGN) is reset to the default on `exec`, so commands the shell node
/// starts still get the standard behaviour.
pub fn survive_file_size_limit() {
    #[cfg(unix)]
    {
        extern "C" fn on_sigxfsz(_: libc::c_int) {}
        // SAFETY: the handler does nothing, so it is async-signal-safe; the
        // sigaction struct is zeroed (empty mask, no flags) before use.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigxfsz as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGXFSZ, &sa, std::ptr::null_mut());
        }
    }
}

/// Creates `dir` (0700) if missing.
pub fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

/// Opens the sink: a temp file in `dir` when `stream_to_disk`, else memory.
/// Returns a warning when the directory cannot be used (memory is used instead).
pub fn open_sink(dir: &Path, stream_to_disk: bool) -> (Sink, Option<String>) {
    if !stream_to_disk {
        return (Sink::Memory(Vec::new(), Some(dir.to_path_buf())), None);
    }
    let opened = ensure_dir(dir).and_then(|_| {
        tempfile::Builder::new()
            .prefix(".pflow-trace-")
            .suffix(".tmp")
            .tempfile_in(dir)
    });
    match opened {
        Ok(f) => (
            Sink::File {
                // Smaller than most lines, which then go to the file
                // directly instead of being copied through the buffer.
                file: std::io::BufWriter::with_capacity(64 * 1024, f),
                error: None,
            },
            None,
        ),
        Err(e) => (
            Sink::Memory(Vec::new(), None),
            Some(format!("cannot write traces to `{}`: {e}", dir.display())),
        ),
    }
}

/// Span processor feeding the writer thread.
#[derive(Debug)]
pub struct TraceFileProcessor {
    tx: mpsc::SyncSender<Msg>,
    pending: Pending,
}

/// Handle to finish the file after the provider is done with the processor.
#[derive(Debug, Clone)]
pub struct TraceFileHandle {
    tx: mpsc::SyncSender<Msg>,
    worker: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl TraceFileProcessor {
    /// `max_bytes` caps the encoded trace (`0`: no cap). With `defer`, spans
    /// are held unencoded until `finish` says the trace is saved (see [`DEFER_BYTES`]).
    pub fn new(
        sink: Sink,
        resource: &Resource,
        redactor: &'static Redactor,
        max_bytes: u64,
        defer: bool,
    ) -> (Self, TraceFileHandle) {
        Self::with_waits(sink, resource, redactor, max_bytes, defer, QUIET, LINE_AGE)
    }

    /// [`TraceFileProcessor::new`], waiting `quiet` when nothing comes and
    /// writing a line out once it is `line_age` old (tests set them so that
    /// only a wake-up brings the writer back, or a pause never ends a line).
    fn with_waits(
        sink: Sink,
        resource: &Resource,
        redactor: &'static Redactor,
        max_bytes: u64,
        defer: bool,
        quiet: Duration,
        line_age: Duration,
    ) -> (Self, TraceFileHandle) {
        let (tx, rx) = mpsc::sync_channel::<Msg>(QUEUE_BATCHES);
        let resource = ResourceAttributesWithSchema::from(resource);
        let pending: Pending = Arc::new(Inbox {
            spans: Mutex::new(Vec::with_capacity(SPANS_PER_LINE)),
            // A writer encoding spans as they come starts asleep: the first one wakes it.
            asleep: AtomicBool::new(!defer),
        });
        let for_writer = pending.clone();
        let worker = std::thread::Builder::new()
            .name("pflow-trace-writer".into())
            .spawn(move || {
                let out = Capped::new(sink, max_bytes);
                let waits = (quiet, line_age);
                writer_loop(rx, for_writer, out, resource, redactor, defer, waits)
            })
            .ok();
        let worker = Arc::new(Mutex::new(worker));
        (
            TraceFileProcessor {
                tx: tx.clone(),
                pending: pending.clone(),
            },
            TraceFileHandle { tx, worker },
        )
    }
}

fn writer_loop(
    rx: mpsc::Receiver<Msg>,
    pending: Pending,
    mut out: Capped,
    resource: ResourceAttributesWithSchema,
    redactor: &'static Redactor,
    defer: bool,
    (quiet, line_age): (Duration, Duration),
) {
    let mut deferred = Deferred {
        active: defer,
        batches: Vec::new(),
        bytes: 0,
    };
    let mut wait = quiet;
    loop {
        let timed_out = match rx.recv_timeout(wait) {
            Ok(Msg::Batch(batch)) => {
                deferred.take(batch, &mut |b| out.add(b, &resource, redactor));
                false
            }
            Ok(Msg::Wake) => false,
            Ok(Msg::Finish { save, reply }) => {
                let mut unsaved = Vec::new();
                if save {
                    deferred.flush(&mut |b| out.add(b, &resource, redactor));
                    let rest = take_pending(&pending);
                    out.add(rest, &resource, redactor);
                    out.end_line(&resource);
                } else {
                    unsaved = std::mem::take(&mut deferred.batches);
                }
                let mut written = out.finish(&resource);
                written.unsaved = unsaved;
                let _ = reply.send(written);
                return;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => true,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        if deferred.active {
            // Quiet for a while: hold what has accumulated (the trace may
            // still be dropped); the line is written if it is saved.
            if timed_out {
                let rest = take_pending(&pending);
                if !rest.is_empty() {
                    deferred.take(rest, &mut |b| out.add(b, &resource, redactor));
                }
            }
            continue;
        }
        let rest = take_pending(&pending);
        if !rest.is_empty() {
            out.add(rest, &resource, redactor);
            wait = TICK;
            continue;
        }
        // Nothing came in a tick: sleep until the next span wakes the
        // writer. The line is written out once it is `line_age` old (so a
        // crash loses little), not at every pause: a line per pause repeated
        // the resource for every few spans of a run of slow nodes.
        if out.line_age().is_some_and(|a| a >= line_age) {
            out.end_line(&resource);
            out.sink.flush();
        }
        pending.asleep.store(true, Ordering::SeqCst);
        // A span pushed before `asleep` was set sent no wake-up: look again.
        if pending.lock().is_empty() {
            wait = match out.line_age() {
                Some(a) => line_age.saturating_sub(a).max(TICK),
                None => quiet,
            };
        } else {
            pending.asleep.store(false, Ordering::SeqCst);
            wait = TICK;
        }
    }
}

/// What the writer hands back at the end: the sink and, when capped, how many spans it left out.
pub struct Written {
    pub sink: Sink,
    pub max_bytes: u64,
    pub dropped_spans: u64,
    /// The spans held for a trace that is not saved, for the thread that
    /// made them to free (freed by the writer, every block was a
    /// cross-thread free: ~1k instructions a node of the default mode), or
    /// to leave to the process's exit ([`super::process_ends_with_run`]).
    unsaved: Vec<Vec<SpanData>>,
}

/// A sink with a size cap. Lines are written whole while they fit; the line
/// that crosses the cap is cut down to the spans that fit, and every later
/// span is only counted. Run spans (the ones carrying `pflow.run.status`, or
/// without a parent) are held back instead and written last, past the cap, with
/// [`TRUNCATED`] and [`DROPPED_SPANS`]: the file exceeds the cap by that one line.
///
/// Spans are encoded one by one straight into the line being built
/// ([`super::otlp_json`]); a line ends with its batch, or before it would
/// pass [`LINE_MAX_BYTES`].
pub struct Capped {
    sink: Sink,
    max_bytes: u64,
    written: u64,
    capped: bool,
    dropped: u64,
    /// Run spans past the cap, for the last line.
    held: Vec<SpanData>,
    envelope: Option<Envelope>,
    line: Line,
    /// One span's encoding, before it joins the line.
    scratch: Vec<u8>,
    /// Bodies of written lines, cleared, for the next lines' groups.
    spare: Vec<Vec<u8>>,
}

/// The line being built: the spans of each scope, in the order the scopes came.
#[derive(Default)]
struct Line {
    groups: Vec<Group>,
    /// The run spans in the line (their encoding is in `groups`): held if
    /// the line crosses the cap.
    runs: Vec<Option<SpanData>>,
    /// Bytes of the spans and the commas between them.
    bytes: usize,
    /// When its first span was added.
    started: Option<std::time::Instant>,
}

impl Line {
    /// Spans in the line.
    fn len(&self) -> usize {
        self.groups.iter().map(|g| g.spans.len()).sum()
    }
}

struct Group {
    scope: usize,
    body: Vec<u8>,
    /// Each span's byte range in `body`, and its index in `Line::runs` if a run span.
    spans: Vec<(std::ops::Range<usize>, Option<usize>)>,
}

fn is_run_span(s: &SpanData) -> bool {
    s.parent_span_id == opentelemetry::trace::SpanId::INVALID
        || s.attributes
            .iter()
            .any(|kv| kv.key.as_str() == super::attr::RUN_STATUS)
}

impl Capped {
    /// `max_bytes` of `0` means no cap.
    pub fn new(sink: Sink, max_bytes: u64) -> Self {
        Capped {
            sink,
            max_bytes,
            written: 0,
            capped: false,
            dropped: 0,
            held: Vec::new(),
            envelope: None,
            line: Line::default(),
            scratch: Vec::new(),
            spare: Vec::new(),
        }
    }

    fn fits(&self, len: usize) -> bool {
        self.max_bytes == 0 || self.written + (len as u64) < self.max_bytes
    }

    fn write(&mut self, line: Vec<u8>) {
        self.written += line.len() as u64 + 1;
        self.sink.write_line(&line);
    }

    /// How long the line built so far has held spans (`None`: it holds none).
    fn line_age(&self) -> Option<Duration> {
        self.line.started.map(|t| t.elapsed())
    }

    /// Writes the line built so far.
    pub fn end_line(&mut self, resource: &ResourceAttributesWithSchema) {
        if self.line.groups.is_empty() {
            return;
        }
        let envelope = self
            .envelope
            .take()
            .unwrap_or_else(|| Envelope::new(resource));
        self.flush_line(&envelope);
        self.envelope = Some(envelope);
    }

    /// Encodes spans into the line being built, redacting every string on the
    /// way; a line is written once it holds [`SPANS_PER_LINE`] spans or would
    /// pass [`LINE_MAX_BYTES`], else by [`Capped::end_line`].
    pub fn add(
        &mut self,
        spans: Vec<SpanData>,
        resource: &ResourceAttributesWithSchema,
        redactor: &Redactor,
    ) {
        if spans.is_empty() {
            return;
        }
        let mut envelope = self
            .envelope
            .take()
            .unwrap_or_else(|| Envelope::new(resource));
        for mut s in spans {
            let run = is_run_span(&s);
            // Past the cap nothing is encoded: only run spans are kept
            // (redacted), for the last line.
            if !self.capped || run {
                redact_span(&mut s, redactor);
            }
            if !self.capped {
                let scope = envelope.scope_index(&s.instrumentation_scope);
                self.scratch.clear();
                write_span(&mut self.scratch, &s);
                let new_scope = !self.line.groups.iter().any(|g| g.scope == scope);
                let overhead = envelope.overhead(
                    self.line
                        .groups
                        .iter()
                        .map(|g| g.scope)
                        .chain(new_scope.then_some(scope)),
                );
                if !self.line.groups.is_empty()
                    && (self.line.len() >= SPANS_PER_LINE
                        || overhead + self.line.bytes + self.scratch.len() + 1 > LINE_MAX_BYTES)
                {
                    self.flush_line(&envelope);
                }
                if !self.capped {
                    self.append(scope, s, run);
                    continue;
                }
            }
            if run {
                self.held.push(s);
            } else {
                self.dropped += 1;
            }
        }
        self.envelope = Some(envelope);
    }

    /// Adds the span encoded in `scratch` to the line, under its scope.
    fn append(&mut self, scope: usize, s: SpanData, run: bool) {
        let run = run.then(|| {
            self.line.runs.push(Some(s));
            self.line.runs.len() - 1
        });
        let at = match self.line.groups.iter().position(|g| g.scope == scope) {
            Some(i) => i,
            None => {
                let body = self
                    .spare
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(64 * 1024));
                self.line.groups.push(Group {
                    scope,
                    body,
                    spans: Vec::new(),
                });
                self.line.groups.len() - 1
            }
        };
        let g = &mut self.line.groups[at];
        if !g.body.is_empty() {
            g.body.push(b',');
            self.line.bytes += 1;
        }
        let start = g.body.len();
        g.body.extend_from_slice(&self.scratch);
        g.spans.push((start..g.body.len(), run));
        self.line.bytes += self.scratch.len();
        self.line
            .started
            .get_or_insert_with(std::time::Instant::now);
    }

    /// Writes the line built so far, or cuts it down if it crosses the cap.
    fn flush_line(&mut self, envelope: &Envelope) {
        let line = std::mem::take(&mut self.line);
        if line.groups.is_empty() {
            return;
        }
        let bytes = envelope.line(line.groups.iter().map(|g| (g.scope, &g.body[..])));
        if self.fits(bytes.len()) {
            self.write(bytes);
            // The next lines reuse the bodies (grown to a line's size once).
            for g in line.groups {
                if self.spare.len() < MAX_SPARE_BODIES {
                    let mut body = g.body;
                    body.clear();
                    self.spare.push(body);
                }
            }
            return;
        }
        drop(bytes);
        self.capped = true;
        self.cut_to_fit(line, envelope);
    }

    /// The line that crosses the cap: keeps the spans that fit (in order),
    /// holds back run spans, drops and counts the rest.
    fn cut_to_fit(&mut self, mut line: Line, envelope: &Envelope) {
        let mut budget = self.max_bytes.saturating_sub(self.written + 1);
        // The envelope costs the same with fewer spans.
        budget =
            budget.saturating_sub(envelope.overhead(line.groups.iter().map(|g| g.scope)) as u64);
        let mut full = false;
        let mut kept: Vec<(usize, Vec<u8>)> = Vec::new();
        for g in &line.groups {
            let mut body = Vec::new();
            for (range, run) in &g.spans {
                if let Some(i) = run {
                    self.held
                        .extend(line.runs.get_mut(*i).and_then(Option::take));
                    continue;
                }
                // +1 for the comma between spans.
                let size = (range.len() + 1) as u64;
                if !full && size <= budget {
                    budget -= size;
                    if !body.is_empty() {
                        body.push(b',');
                    }
                    body.extend_from_slice(&g.body[range.clone()]);
                } else {
                    full = true;
                    self.dropped += 1;
                }
            }
            if !body.is_empty() {
                kept.push((g.scope, body));
            }
        }
        if !kept.is_empty() {
            let bytes = envelope.line(kept.iter().map(|(s, b)| (*s, &b[..])));
            self.write(bytes);
        }
    }

    /// Writes the held run spans (marked as truncated) and returns the sink.
    pub fn finish(mut self, resource: &ResourceAttributesWithSchema) -> Written {
        if self.capped && !self.held.is_empty() {
            let dropped = i64::try_from(self.dropped).unwrap_or(i64::MAX);
            let mut held = std::mem::take(&mut self.held);
            if self.dropped > 0 {
                for s in &mut held {
                    s.attributes.push(KeyValue::new(TRUNCATED, true));
                    s.attributes.push(KeyValue::new(DROPPED_SPANS, dropped));
                }
            }
            let envelope = self.envelope.get_or_insert_with(|| Envelope::new(resource));
            let mut groups: Vec<(usize, Vec<u8>)> = Vec::new();
            for s in &held {
                let scope = envelope.scope_index(&s.instrumentation_scope);
                let at = match groups.iter().position(|(g, _)| *g == scope) {
                    Some(i) => i,
                    None => {
                        groups.push((scope, Vec::new()));
                        groups.len() - 1
                    }
                };
                let body = &mut groups[at].1;
                if !body.is_empty() {
                    body.push(b',');
                }
                write_span(body, s);
            }
            let bytes = envelope.line(groups.iter().map(|(s, b)| (*s, &b[..])));
            self.write(bytes);
        }
        Written {
            sink: self.sink,
            max_bytes: self.max_bytes,
            dropped_spans: self.dropped,
            unsaved: Vec::new(),
        }
    }
}

/// Redacts every string of a span (attributes, event attributes, status) and
/// drops the `level`/`target` event attributes tracing-opentelemetry adds:
/// they say nothing the event name does not.
pub fn redact_span(s: &mut SpanData, redactor: &Redactor) {
    // Span names can hold user text (a planned run's root is named after the
    // request): redacted, and bounded like a value preview.
    let max = super::preview::settings().max_bytes.max(64);
    if s.name.len() > max {
        s.name = super::preview::preview_str(&s.name).text.into();
    } else if let std::borrow::Cow::Owned(r) = redactor.redact_str(&s.name) {
        s.name = r.into();
    }
    redact_attrs(&mut s.attributes, redactor);
    for ev in s.events.events.iter_mut() {
        ev.attributes
            .retain(|kv| !matches!(kv.key.as_str(), "level" | "target"));
        redact_attrs(&mut ev.attributes, redactor);
        // tracing-opentelemetry names an event after its message.
        if let std::borrow::Cow::Owned(r) = redactor.redact_str(&ev.name) {
            ev.name = r.into();
        }
    }
    if let opentelemetry::trace::Status::Error { description } = &s.status {
        if let std::borrow::Cow::Owned(r) = redactor.redact_str(description) {
            s.status = opentelemetry::trace::Status::error(r);
        }
    }
}

fn redact_attrs(attrs: &mut [KeyValue], redactor: &Redactor) {
    for kv in attrs.iter_mut() {
        match &kv.value {
            // Nothing shorter than 8 bytes can hold a credential the rules know.
            OtelValue::String(s) if s.as_str().len() >= 8 => {
                if let std::borrow::Cow::Owned(r) = redactor.redact_str(s.as_str()) {
                    kv.value = OtelValue::String(r.into());
                }
            }
            OtelValue::Array(Array::String(items)) => {
                let red: Vec<_> = items
                    .iter()
                    .map(|s| redactor.redact_str(s.as_str()).into_owned().into())
                    .collect();
                kv.value = OtelValue::Array(Array::String(red));
            }
            _ => {}
        }
    }
}

impl SpanProcessor for TraceFileProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        let (full, wake) = {
            let mut p = self.pending.lock();
            p.push(span);
            let wake = p.len() == 1 && self.pending.asleep.swap(false, Ordering::SeqCst);
            let full = (p.len() >= SPANS_PER_LINE)
                .then(|| std::mem::replace(&mut *p, Vec::with_capacity(SPANS_PER_LINE)));
            (full, wake)
        };
        // A closed channel means the file was already finished: nothing to do.
        if let Some(batch) = full {
            let _ = self.tx.send(Msg::Batch(batch));
        } else if wake {
            // A full queue means the writer has work already.
            let _ = self.tx.try_send(Msg::Wake);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Copies an orphaned temp file (its directory was deleted) into a new temp
/// file in a re-created `dir`, then renames that into place.
fn rescue(
    mut orphan: tempfile::NamedTempFile,
    dir: &Path,
    final_path: &Path,
) -> std::io::Result<()> {
    use std::io::Seek;
    ensure_dir(dir)?;
    let mut fresh = tempfile::Builder::new()
        .prefix(".pflow-trace-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    orphan.as_file_mut().rewind()?;
    std::io::copy(orphan.as_file_mut(), fresh.as_file_mut())?;
    fresh.as_file().sync_all()?;
    fresh.persist(final_path).map_err(|e| e.error)?;
    Ok(())
}

/// The result of finishing a trace file.
#[derive(Debug, Default)]
pub struct FinishOutcome {
    pub path: Option<PathBuf>,
    pub warning: Option<String>,
}

impl TraceFileHandle {
    /// Stops the writer and, when `save`, moves the trace to `final_path`.
    pub fn finish(&self, save: bool, dir: &Path, final_name: &str) -> FinishOutcome {
        let (reply_tx, reply_rx) = mpsc::channel();
        if self
            .tx
            .send(Msg::Finish {
                save,
                reply: reply_tx,
            })
            .is_err()
        {
            return FinishOutcome {
                path: None,
                warning: Some("trace writer stopped early; trace not saved".into()),
            };
        }
        let sink = reply_rx.recv_timeout(Duration::from_secs(60)).ok();
        if let Ok(mut w) = self.worker.lock() {
            if let Some(h) = w.take() {
                let _ = h.join();
            }
        }
        let Some(Written {
            sink,
            max_bytes,
            dropped_spans,
            unsaved,
        }) = sink
        else {
            return FinishOutcome {
                path: None,
                warning: Some("trace writer did not finish in time; trace not saved".into()),
            };
        };
        if super::ends_with_run() {
            std::mem::forget(unsaved);
        } else {
            drop(unsaved);
        }
        if !save {
            return FinishOutcome::default();
        }
        let final_path = dir.join(final_name);
        let result: Result<(), String> = (|| {
            let tmp = match sink {
                Sink::File { file, error } => {
                    if let Some(e) = error {
                        return Err(e);
                    }
                    file.into_inner().map_err(|e| e.error().to_string())?
                }
                Sink::Memory(buf, _) => {
                    ensure_dir(dir).map_err(|e| e.to_string())?;
                    let mut f = tempfile::Builder::new()
                        .prefix(".pflow-trace-")
                        .suffix(".tmp")
                        .tempfile_in(dir)
                        .map_err(|e| e.to_string())?;
                    f.write_all(&buf).map_err(|e| e.to_string())?;
                    f
                }
            };
            tmp.as_file().sync_all().map_err(|e| e.to_string())?;
            match tmp.persist(&final_path) {
                Ok(_) => Ok(()),
                // The directory went away during the run (cleaned up, `rm -rf`):
                // the open temp file still holds every byte, so copy it into a
                // fresh directory rather than lose the trace.
                Err(e) if e.error.kind() == std::io::ErrorKind::NotFound => {
                    rescue(e.file, dir, &final_path).map_err(|e| e.to_string())
                }
                Err(e) => Err(e.error.to_string()),
            }
        })();
        match result {
            Ok(()) => FinishOutcome {
                path: Some(final_path),
                warning: (dropped_spans > 0).then(|| {
                    format!(
                        "trace capped at {} (PFLOW_TRACE_MAX_BYTES): {dropped_spans} spans not written; \
                         the run's metrics are complete, the trace file is not",
                        human_bytes(max_bytes)
                    )
                }),
            },
            Err(e) => FinishOutcome {
                path: None,
                warning: Some(format!("could not save trace to `{}`: {e}", dir.display())),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_buffer_spills_to_the_trace_dir_when_large() {
        let dir = tempfile::tempdir().unwrap();
        let (mut sink, w) = open_sink(dir.path(), false);
        assert!(w.is_none());
        let line = vec![b'x'; 1024 * 1024];
        for _ in 0..7 {
            sink.write_line(&line);
        }
        assert!(
            matches!(sink, Sink::Memory(..)),
            "under the limit it stays in memory"
        );
        sink.write_line(&line);
        // 8 MiB + 8 newlines: just past the limit, so the 8th line already spilled.
        assert!(matches!(sink, Sink::File { .. }));
        sink.write_line(&line);
        let Sink::File { file, error } = sink else {
            panic!("past SPILL_BYTES the buffer moves to a temp file");
        };
        assert!(error.is_none());
        let tmp = file.into_inner().map_err(|e| e.to_string()).unwrap();
        assert_eq!(
            tmp.as_file().metadata().unwrap().len(),
            9 * (1024 * 1024 + 1)
        );
    }

    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

    /// `n` spans (each with a `pad`-byte attribute), the first half in scope
    /// `a`, the rest in `b`; the last one is the run span (no parent).
    fn spans(n: usize, pad: usize) -> Vec<SpanData> {
        use opentelemetry::trace::{
            SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
        };
        let (a, b) = (
            opentelemetry::InstrumentationScope::builder("a").build(),
            opentelemetry::InstrumentationScope::builder("b").build(),
        );
        (0..n)
            .map(|i| SpanData {
                span_context: SpanContext::new(
                    TraceId::from(1),
                    SpanId::from(i as u64 + 1),
                    TraceFlags::SAMPLED,
                    false,
                    TraceState::default(),
                ),
                parent_span_id: if i + 1 == n {
                    SpanId::INVALID
                } else {
                    SpanId::from(9)
                },
                parent_span_is_remote: false,
                span_kind: SpanKind::Internal,
                name: format!("node n{i}").into(),
                start_time: std::time::UNIX_EPOCH,
                end_time: std::time::UNIX_EPOCH,
                attributes: vec![KeyValue::new("pad", "x".repeat(pad))],
                dropped_attributes_count: 0,
                events: Default::default(),
                links: Default::default(),
                status: Status::Unset,
                instrumentation_scope: if i < n / 2 { a.clone() } else { b.clone() },
            })
            .collect()
    }

    #[test]
    fn a_traced_run_s_spans_reach_its_file_while_it_runs() {
        let dir = tempfile::tempdir().unwrap();
        // A line is written at the first pause.
        let (p, h) = eager(dir.path(), Duration::ZERO);
        let temp_lines = || -> usize {
            std::fs::read_dir(dir.path())
                .unwrap()
                .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                .map(|s| s.lines().count())
                .sum()
        };
        for round in 0..3 {
            for s in spans(3, 10) {
                p.on_end(s);
            }
            let t0 = std::time::Instant::now();
            while temp_lines() < round + 1 && t0.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(TICK);
            }
            assert_eq!(
                temp_lines(),
                round + 1,
                "round {round}: one line per quiet spell"
            );
            wait_asleep(&p, round);
        }
        assert_eq!(saved(&h, dir.path()), (3, 9));
    }

    #[test]
    fn a_pause_shorter_than_the_line_age_does_not_end_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let (p, h) = eager(dir.path(), Duration::from_secs(3600));
        for round in 0..3 {
            for s in spans(3, 10) {
                p.on_end(s);
            }
            // Taken and encoded, then asleep: the pause is over.
            wait_asleep(&p, round);
        }
        // One line: the resource once for all nine spans.
        assert_eq!(saved(&h, dir.path()), (1, 9));
    }

    /// A `--trace` writer into `dir` writing a line out once it is
    /// `line_age` old; only a wake-up brings it back after a quiet spell.
    fn eager(dir: &Path, line_age: Duration) -> (TraceFileProcessor, TraceFileHandle) {
        let (sink, warning) = open_sink(dir, true);
        assert!(warning.is_none());
        TraceFileProcessor::with_waits(
            sink,
            &Resource::builder_empty().build(),
            super::super::redact::global(),
            0,
            false,
            Duration::from_secs(3600),
            line_age,
        )
    }

    /// Waits (up to 30 s) until the writer has taken every span and sleeps.
    fn wait_asleep(p: &TraceFileProcessor, round: usize) {
        let t0 = std::time::Instant::now();
        let asleep = || p.pending.asleep.load(Ordering::SeqCst) && p.pending.lock().is_empty();
        while !asleep() && t0.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(TICK);
        }
        assert!(asleep(), "round {round}: the writer never slept");
    }

    /// Finishes the trace as `t.json` in `dir`: its lines and spans.
    fn saved(h: &TraceFileHandle, dir: &Path) -> (usize, usize) {
        let done = h.finish(true, dir, "t.json");
        assert!(done.warning.is_none(), "{:?}", done.warning);
        let text = std::fs::read_to_string(dir.join("t.json")).unwrap();
        let spans = text
            .lines()
            .map(|l| {
                let r: ExportTraceServiceRequest = serde_json::from_str(l).unwrap();
                r.resource_spans[0]
                    .scope_spans
                    .iter()
                    .map(|s| s.spans.len())
                    .sum::<usize>()
            })
            .sum();
        (text.lines().count(), spans)
    }

    fn encode(out: &mut Capped, spans: Vec<SpanData>) {
        let resource = ResourceAttributesWithSchema::from(&Resource::builder_empty().build());
        // One batch, as its own line(s).
        out.add(spans, &resource, super::super::redact::global());
        out.end_line(&resource);
    }

    fn lines(sink: &Sink) -> Vec<ExportTraceServiceRequest> {
        let Sink::Memory(buf, _) = sink else {
            panic!("small test traces stay in memory")
        };
        buf.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                assert!(l.len() <= LINE_MAX_BYTES, "a line of {} bytes", l.len());
                serde_json::from_slice(l).unwrap()
            })
            .collect()
    }

    fn span_ids(reqs: &[ExportTraceServiceRequest]) -> Vec<(String, u64)> {
        let mut ids = Vec::new();
        for req in reqs {
            for ss in req.resource_spans.iter().flat_map(|rs| &rs.scope_spans) {
                let scope = ss
                    .scope
                    .as_ref()
                    .map(|s| s.name.clone())
                    .unwrap_or_default();
                for sp in &ss.spans {
                    ids.push((
                        scope.clone(),
                        u64::from_be_bytes(sp.span_id.clone().try_into().unwrap()),
                    ));
                }
            }
        }
        ids
    }

    #[test]
    fn long_lines_are_split_under_the_byte_limit_keeping_every_span_in_order() {
        // 600 spans of ~1.8 KiB: about 1.1 MiB as one line.
        let mut out = Capped::new(Sink::Memory(Vec::new(), None), 0);
        encode(&mut out, spans(600, 1800));
        let reqs = lines(&out.sink);
        assert!(reqs.len() >= 5, "{} lines", reqs.len());
        let ids = span_ids(&reqs);
        // Each span stays under the scope it came from, in order.
        for (scope, i) in &ids {
            assert_eq!(scope, if *i <= 300 { "a" } else { "b" });
        }
        assert_eq!(
            ids.iter().map(|(_, i)| *i).collect::<Vec<_>>(),
            (1..=600).collect::<Vec<u64>>()
        );
    }

    #[test]
    fn a_short_line_is_one_line_and_a_single_huge_span_is_written_whole() {
        let mut out = Capped::new(Sink::Memory(Vec::new(), None), 0);
        encode(&mut out, spans(10, 100));
        assert_eq!(lines(&out.sink).len(), 1);

        let mut out = Capped::new(Sink::Memory(Vec::new(), None), 0);
        encode(&mut out, spans(2, LINE_MAX_BYTES).split_off(1));
        let Sink::Memory(buf, _) = &out.sink else {
            panic!()
        };
        assert_eq!(buf.iter().filter(|b| **b == b'\n').count(), 1);
        assert!(buf.len() > LINE_MAX_BYTES);
    }

    #[test]
    fn the_total_cap_still_holds_when_lines_are_split() {
        // 1 MiB of spans under a 600 KiB cap: some lines are written, the rest counted,
        // and the run span comes last, marked.
        let mut out = Capped::new(Sink::Memory(Vec::new(), None), 600 * 1024);
        encode(&mut out, spans(600, 1800));
        assert!(out.capped);
        let resource = ResourceAttributesWithSchema::from(&Resource::builder_empty().build());
        let w = out.finish(&resource);
        let reqs = lines(&w.sink);
        let ids = span_ids(&reqs);
        assert_eq!(
            ids.last().map(|(_, i)| *i),
            Some(600),
            "the run span is written last"
        );
        let written = ids.len() as u64 - 1;
        assert!(written > 0);
        assert_eq!(written + w.dropped_spans, 599);
        let Sink::Memory(buf, _) = &w.sink else {
            panic!()
        };
        let last_line = buf.split(|b| *b == b'\n').rfind(|l| !l.is_empty()).unwrap();
        assert!((buf.len() - last_line.len() - 1) as u64 <= 600 * 1024);
        let run = &reqs.last().unwrap().resource_spans[0].scope_spans[0].spans[0];
        let keys: Vec<&str> = run.attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert!(
            keys.contains(&TRUNCATED) && keys.contains(&DROPPED_SPANS),
            "{keys:?}"
        );
    }

    #[test]
    fn byte_counts_read_well() {
        assert_eq!(human_bytes(DEFAULT_MAX_BYTES), "256 MiB");
        assert_eq!(human_bytes(200_000), "195.3 KiB");
        assert_eq!(human_bytes(10), "10 bytes");
    }
}
