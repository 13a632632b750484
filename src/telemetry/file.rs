//! The trace file exporter: streams finished spans to a writer thread that
//! encodes them as OTLP/JSON, one `ExportTraceServiceRequest` per line (the
//! format the Collector's file exporter writes and its `otlpjsonfile`
//! receiver reads).
//!
//! Nodes never wait on disk: `on_end` only queues the span. Nothing is lost
//! either: the queue is unbounded and drained at `finish`. Where the bytes
//! go is decided up front: a temp file in the trace directory when the trace
//! will be kept (`--trace`), memory when it is kept only if the run fails.
//! `finish` renames the temp file into place (atomic), or drops it.

use super::redact::Redactor;
use opentelemetry::{Array, KeyValue, Value as OtelValue};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};
use opentelemetry_sdk::Resource;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Spans per encoded line, so one line stays a reasonable size.
const SPANS_PER_LINE: usize = 512;

enum Msg {
    /// A full buffer of spans, handed over in one go (one wake-up per batch, not per span).
    Batch(Vec<SpanData>),
    Finish(mpsc::Sender<Sink>),
}

/// Spans ended but not yet handed to the writer.
type Pending = Arc<Mutex<Vec<SpanData>>>;

fn take_pending(p: &Pending) -> Vec<SpanData> {
    match p.lock() {
        Ok(mut v) => std::mem::take(&mut *v),
        Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
    }
}

/// Where encoded lines accumulate.
pub enum Sink {
    Memory(Vec<u8>),
    File {
        file: std::io::BufWriter<tempfile::NamedTempFile>,
        error: Option<String>,
    },
}

impl Sink {
    fn write_line(&mut self, line: &[u8]) {
        match self {
            Sink::Memory(buf) => {
                buf.extend_from_slice(line);
                buf.push(b'\n');
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
        return (Sink::Memory(Vec::new()), None);
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
                file: std::io::BufWriter::with_capacity(256 * 1024, f),
                error: None,
            },
            None,
        ),
        Err(e) => (
            Sink::Memory(Vec::new()),
            Some(format!("cannot write traces to `{}`: {e}", dir.display())),
        ),
    }
}

/// Span processor feeding the writer thread.
#[derive(Debug)]
pub struct TraceFileProcessor {
    tx: mpsc::Sender<Msg>,
    pending: Pending,
}

/// Handle to finish the file after the provider is done with the processor.
#[derive(Debug, Clone)]
pub struct TraceFileHandle {
    tx: mpsc::Sender<Msg>,
    worker: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl TraceFileProcessor {
    pub fn new(
        sink: Sink,
        resource: &Resource,
        redactor: Arc<Redactor>,
    ) -> (Self, TraceFileHandle) {
        let (tx, rx) = mpsc::channel::<Msg>();
        let resource = ResourceAttributesWithSchema::from(resource);
        let pending: Pending = Arc::new(Mutex::new(Vec::with_capacity(SPANS_PER_LINE)));
        let for_writer = pending.clone();
        let worker = std::thread::Builder::new()
            .name("pflow-trace-writer".into())
            .spawn(move || writer_loop(rx, for_writer, sink, resource, redactor))
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
    mut sink: Sink,
    resource: ResourceAttributesWithSchema,
    redactor: Arc<Redactor>,
) {
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(Msg::Batch(batch)) => encode(&mut sink, batch, &resource, &redactor),
            Ok(Msg::Finish(reply)) => {
                let rest = take_pending(&pending);
                if !rest.is_empty() {
                    encode(&mut sink, rest, &resource, &redactor);
                }
                let _ = reply.send(sink);
                return;
            }
            // Quiet for a while: write what has accumulated so a crash loses little.
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let rest = take_pending(&pending);
                if !rest.is_empty() {
                    encode(&mut sink, rest, &resource, &redactor);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Encodes one batch as a single OTLP/JSON line, redacting every string on the way.
pub fn encode(
    sink: &mut Sink,
    mut spans: Vec<SpanData>,
    resource: &ResourceAttributesWithSchema,
    redactor: &Redactor,
) {
    for s in &mut spans {
        redact_span(s, redactor);
    }
    let req = ExportTraceServiceRequest {
        resource_spans: group_spans_by_resource_and_scope(spans, resource),
    };
    match serde_json::to_vec(&req) {
        Ok(line) => sink.write_line(&line),
        Err(e) => {
            if let Sink::File { error, .. } = sink {
                *error = Some(format!("cannot encode spans: {e}"));
            }
        }
    }
}

/// Redacts every string of a span (attributes, event attributes, status) and
/// drops the `level`/`target` event attributes tracing-opentelemetry adds:
/// they say nothing the event name does not.
pub fn redact_span(s: &mut SpanData, redactor: &Redactor) {
    redact_attrs(&mut s.attributes, redactor);
    for ev in s.events.events.iter_mut() {
        ev.attributes
            .retain(|kv| !matches!(kv.key.as_str(), "level" | "target"));
        redact_attrs(&mut ev.attributes, redactor);
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
        let full = {
            let mut p = match self.pending.lock() {
                Ok(p) => p,
                Err(poisoned) => poisoned.into_inner(),
            };
            p.push(span);
            (p.len() >= SPANS_PER_LINE)
                .then(|| std::mem::replace(&mut *p, Vec::with_capacity(SPANS_PER_LINE)))
        };
        if let Some(batch) = full {
            // A closed channel means the file was already finished: nothing to do.
            let _ = self.tx.send(Msg::Batch(batch));
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
        if self.tx.send(Msg::Finish(reply_tx)).is_err() {
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
        let Some(sink) = sink else {
            return FinishOutcome {
                path: None,
                warning: Some("trace writer did not finish in time; trace not saved".into()),
            };
        };
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
                Sink::Memory(buf) => {
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
                warning: None,
            },
            Err(e) => FinishOutcome {
                path: None,
                warning: Some(format!("could not save trace to `{}`: {e}", dir.display())),
            },
        }
    }
}
