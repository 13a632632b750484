//! Saved traces: finding them (`FILE`, a trace id or prefix, `last`,
//! `last~N`), loading an OTLP/JSON trace file into plain spans, and
//! recomputing the run's `metrics` from it with the same aggregation code
//! the live run used. The viewer commands (`pflow trace list|show|summary|
//! report`) are built on this.
//!
//! ```no_run
//! let dir = pflow::telemetry::pflow_home().join("traces");
//! let path = pflow::traces::resolve("last", &dir).unwrap();
//! let trace = pflow::traces::load(&path).unwrap();
//! println!("{} spans, {}", trace.spans.len(), pflow::format::cost(&trace.metrics().total.cost));
//! ```

pub mod diff;
pub mod markdown;
mod read;
pub mod report;
pub mod reprice;
pub mod show;

pub use read::{Keep, MAX_KEPT_BYTES, MAX_LINE_BYTES};

use crate::telemetry::metrics::{MetricsSummary, SpanFacts};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue as ProtoKv};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The most spans a viewer (`trace show`, `trace report`) holds: the first
/// to end, with their parents. Past it the viewer says how many it left out;
/// totals and tables still count every span.
pub const SPAN_LIMIT: usize = 20_000;

/// File names end with this; the trace id stands before it.
pub const TRACE_SUFFIX: &str = ".otlp.json";

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot read `{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{}` line {line}: not an OTLP/JSON ExportTraceServiceRequest: {message}", path.display())]
    Format {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("no saved traces in `{}` (run with --trace to keep one)", dir.display())]
    NoTraces { dir: PathBuf },
    #[error("`{arg}`: only {count} saved trace(s) in `{}`", dir.display())]
    NotThatMany {
        arg: String,
        count: usize,
        dir: PathBuf,
    },
    #[error("`{arg}` is neither a file nor the id (or id prefix) of a trace in `{}`", dir.display())]
    NotFound { arg: String, dir: PathBuf },
    #[error("trace id prefix `{arg}` is ambiguous: {}", candidates.join(", "))]
    Ambiguous {
        arg: String,
        candidates: Vec<String>,
    },
    #[error("`{}` holds no spans", path.display())]
    Empty { path: PathBuf },
}

impl TraceError {
    /// Stable short name for the JSON `error.type`.
    pub fn kind(&self) -> &'static str {
        match self {
            TraceError::Io { .. } => "io_error",
            TraceError::Format { .. } => "trace_format_error",
            TraceError::NoTraces { .. } => "no_traces",
            TraceError::NotThatMany { .. } | TraceError::NotFound { .. } => "trace_not_found",
            TraceError::Ambiguous { .. } => "trace_ambiguous",
            TraceError::Empty { .. } => "trace_empty",
        }
    }

    /// 2 for what the user named wrongly, 1 for files that are broken.
    pub fn exit_code(&self) -> crate::outcome::ExitCode {
        match self {
            TraceError::Format { .. } | TraceError::Empty { .. } => {
                crate::outcome::ExitCode::Failed
            }
            _ => crate::outcome::ExitCode::Invalid,
        }
    }
}

/// An attribute value as the file holds it.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    Array(Vec<AttrValue>),
}

impl AttrValue {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            AttrValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            AttrValue::Int(i) => Some(*i),
            AttrValue::Double(d) => Some(*d as i64),
            AttrValue::Str(s) => s.parse().ok(),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            AttrValue::Double(d) => Some(*d),
            AttrValue::Int(i) => Some(*i as f64),
            AttrValue::Str(s) => s.parse().ok(),
            _ => None,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            AttrValue::Str(s) => serde_json::Value::String(s.clone()),
            AttrValue::Int(i) => (*i).into(),
            AttrValue::Double(d) => serde_json::Number::from_f64(*d)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            AttrValue::Bool(b) => (*b).into(),
            AttrValue::Array(a) => a.iter().map(AttrValue::to_json).collect(),
        }
    }

    fn to_otel(&self) -> opentelemetry::Value {
        use opentelemetry::{Array, StringValue, Value};
        match self {
            AttrValue::Str(s) => Value::from(s.clone()),
            AttrValue::Int(i) => Value::I64(*i),
            AttrValue::Double(d) => Value::F64(*d),
            AttrValue::Bool(b) => Value::Bool(*b),
            AttrValue::Array(a) => Value::Array(Array::String(
                a.iter().map(|v| StringValue::from(v.to_string())).collect(),
            )),
        }
    }
}

impl std::fmt::Display for AttrValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttrValue::Str(s) => f.write_str(s),
            other => write!(f, "{}", other.to_json()),
        }
    }
}

/// Text as the viewers show it: control characters escaped, so a value
/// cannot drive the terminal (`trace show`) or hide in a report.
fn shown(s: &str) -> String {
    crate::telemetry::redact::escape_controls(s).into_owned()
}

fn convert(v: Option<&AnyValue>) -> Option<AttrValue> {
    Some(match v?.value.as_ref()? {
        any_value::Value::StringValue(s) => AttrValue::Str(shown(s)),
        any_value::Value::IntValue(i) => AttrValue::Int(*i),
        any_value::Value::DoubleValue(d) => AttrValue::Double(*d),
        any_value::Value::BoolValue(b) => AttrValue::Bool(*b),
        any_value::Value::ArrayValue(a) => {
            AttrValue::Array(a.values.iter().filter_map(|v| convert(Some(v))).collect())
        }
        any_value::Value::KvlistValue(kv) => AttrValue::Str(
            kv.values
                .iter()
                .map(|kv| {
                    format!(
                        "{}={}",
                        kv.key,
                        convert(kv.value.as_ref())
                            .map(|v| v.to_string())
                            .unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join(","),
        ),
        any_value::Value::BytesValue(b) => AttrValue::Str(format!("<{} bytes>", b.len())),
        // A string-table index: pflow never writes these; keep the number.
        any_value::Value::StringValueStrindex(i) => AttrValue::Int(i64::from(*i)),
    })
}

/// Attributes in file order.
pub type Attrs = Vec<(String, AttrValue)>;

fn attrs(kvs: &[ProtoKv]) -> Attrs {
    kvs.iter()
        .filter_map(|kv| Some((kv.key.clone(), convert(kv.value.as_ref())?)))
        .collect()
}

/// Looks up an attribute by key.
pub fn get<'a>(attrs: &'a Attrs, key: &str) -> Option<&'a AttrValue> {
    attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

#[derive(Debug, Clone)]
pub struct TraceEvent {
    pub name: String,
    pub time_ns: u64,
    pub attributes: Attrs,
}

/// One span of a saved trace.
#[derive(Debug, Clone)]
pub struct TraceSpan {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for the root (or a span whose parent is in the caller's process).
    pub parent_span_id: String,
    pub name: String,
    /// OTLP span kind: 1 internal, 2 server, 3 client, …
    pub kind: i32,
    pub start_ns: u64,
    pub end_ns: u64,
    /// OTLP status code: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    pub status_message: String,
    pub attributes: Attrs,
    pub events: Vec<TraceEvent>,
}

impl TraceSpan {
    pub fn attr(&self, key: &str) -> Option<&AttrValue> {
        get(&self.attributes, key)
    }

    pub fn str_attr(&self, key: &str) -> Option<&str> {
        self.attr(key).and_then(AttrValue::as_str)
    }

    /// The name the viewers show: span names are low-cardinality (`pflow
    /// run`, `node each`), so the run's file and a node's full path (`node
    /// each[1]`, `node outer/inner`) come from the attributes. Traces written
    /// before span names were shortened show the same.
    pub fn label(&self) -> String {
        use crate::accounting::span::SpanKind;
        use crate::telemetry::attr;
        match self.kind() {
            SpanKind::Node | SpanKind::Batch | SpanKind::BatchItem => {
                match self.str_attr(attr::NODE_PATH) {
                    Some(path) => attr::node_span(path),
                    None => self.name.clone(),
                }
            }
            SpanKind::Run => {
                let command = self.str_attr(attr::RUN_COMMAND).unwrap_or("run");
                match self.str_attr(attr::WORKFLOW_FILE) {
                    Some(file) if command == "run" && self.name == attr::run_span(command) => {
                        shown(&format!("{} {}", attr::run_span(command), file))
                    }
                    _ => self.name.clone(),
                }
            }
            _ => self.name.clone(),
        }
    }

    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.end_ns.saturating_sub(self.start_ns))
    }

    pub fn failed(&self) -> bool {
        self.status_code == 2
    }

    /// What the span is, by the accounting model's one classifier.
    pub fn kind(&self) -> crate::accounting::span::SpanKind {
        self.facts().kind()
    }

    /// An LLM call span.
    pub fn is_llm(&self) -> bool {
        self.facts().is_llm()
    }

    /// A restored or cached node: `restored from run R (span S) · 1 LLM
    /// call, 30 tokens, $0.0041 when first made`; `None` for any other span.
    pub fn reuse_note(&self) -> Option<String> {
        let f = self.facts();
        let how = f.reuse_status()?.to_string();
        let mut note = format!(
            "{how} from run {}",
            f.origin_run_id.as_deref().unwrap_or("?")
        );
        if let Some(span) = self.str_attr(crate::telemetry::attr::NODE_ORIGIN_SPAN_ID) {
            note.push_str(&format!(" (span {span})"));
        }
        match f.reused {
            Some(u) if u.llm_calls > 0 => note.push_str(&format!(
                " · {}, {} when first made",
                crate::format::count(u.llm_calls, "LLM call"),
                u.cost_usd
                    .map_or_else(|| "cost unknown".into(), crate::format::usd_compact)
            )),
            Some(_) => {}
            None => note.push_str(" · original usage unknown"),
        }
        Some(note)
    }

    /// The facts the metrics aggregation reads, from this span's attributes.
    pub fn facts(&self) -> SpanFacts {
        let kvs: Vec<opentelemetry::KeyValue> = self
            .attributes
            .iter()
            .map(|(k, v)| opentelemetry::KeyValue::new(k.clone(), v.to_otel()))
            .collect();
        let mut f = SpanFacts::from_attributes(kvs.iter());
        f.start = Some(SystemTime::UNIX_EPOCH + Duration::from_nanos(self.start_ns));
        f.duration = self.duration();
        f.failed = self.failed();
        f
    }
}

/// A loaded trace file: the spans a [`Keep`] selected, and the overview
/// and metrics of every span in the file.
#[derive(Debug, Clone)]
pub struct Trace {
    pub path: PathBuf,
    pub resource: Attrs,
    /// The kept spans, in file order (the order spans ended).
    pub spans: Vec<TraceSpan>,
    overview: read::Overview,
}

/// Loads a whole trace file (OTLP/JSON, one request per line): every span
/// in memory. The viewers use [`load_with`] to keep a bounded number.
pub fn load(path: &Path) -> Result<Trace, TraceError> {
    load_with(path, Keep::All)
}

/// Streams a trace file line by line, keeping the spans `keep` selects; the
/// metrics and overview cover every span. Memory is what is kept (at most
/// [`MAX_KEPT_BYTES`] of text) plus one line (at most [`MAX_LINE_BYTES`]).
pub fn load_with(path: &Path, keep: Keep<'_>) -> Result<Trace, TraceError> {
    let file =
        crate::limits::open_regular(path, crate::limits::MAX_TRACE_BYTES).map_err(|source| {
            TraceError::Io {
                path: path.to_path_buf(),
                source,
            }
        })?;
    read::read(std::io::BufReader::with_capacity(1 << 20, file), path, keep)
}

/// One OTLP/JSON line. The proto3 JSON mapping writes non-finite doubles as
/// the strings `"NaN"`, `"Infinity"`, `"-Infinity"`, which the generated
/// types refuse: those values are kept as strings (`as_f64` reads them back).
pub fn parse_request(line: &str) -> Result<ExportTraceServiceRequest, serde_json::Error> {
    let first = match serde_json::from_str(line) {
        Ok(req) => return Ok(req),
        Err(e) => e,
    };
    if !line.contains("NaN") && !line.contains("Infinity") {
        return Err(first);
    }
    let mut v: serde_json::Value = serde_json::from_str(line)?;
    fn fix(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                let special = m
                    .get("doubleValue")
                    .and_then(|d| d.as_str())
                    .filter(|d| matches!(*d, "NaN" | "Infinity" | "-Infinity"))
                    .map(str::to_string);
                if let Some(d) = special {
                    m.remove("doubleValue");
                    m.insert("stringValue".into(), d.into());
                }
                m.values_mut().for_each(fix);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(fix),
            _ => {}
        }
    }
    fix(&mut v);
    serde_json::from_value(v).map_err(|_| first)
}

/// Parses trace file text; `path` names it in errors.
pub fn parse(text: &str, path: &Path) -> Result<Trace, TraceError> {
    read::read(text.as_bytes(), path, Keep::All)
}

impl Trace {
    /// The run's `metrics`, recomputed with the live run's aggregation over
    /// every span in the file (kept or not).
    pub fn metrics(&self) -> MetricsSummary {
        self.overview.metrics.clone()
    }

    /// Spans in the file, kept or not.
    pub fn total_spans(&self) -> usize {
        self.overview.total_spans
    }

    /// Spans in the file that were not kept.
    pub fn omitted_spans(&self) -> usize {
        self.total_spans().saturating_sub(self.spans.len())
    }

    /// The run span's error (else a parentless span's), when the run failed.
    pub fn root_error(&self) -> Option<&str> {
        self.overview.root_error.as_deref()
    }

    /// Spans the writer left out because the file hit `PFLOW_TRACE_MAX_BYTES`
    /// (`pflow.trace.dropped_spans` on the run span); `None` for a complete trace.
    pub fn dropped_spans(&self) -> Option<i64> {
        self.overview.dropped_spans
    }

    /// One line saying the file is incomplete, when it was capped.
    pub fn truncation_note(&self) -> Option<String> {
        self.dropped_spans().map(|n| {
            format!(
                "note: this trace is incomplete: it hit PFLOW_TRACE_MAX_BYTES and {n} spans were not written; \
                 the numbers here cover only the spans in the file (the run's own metrics were complete)"
            )
        })
    }

    /// One line saying the viewer holds only some of the spans, when it does.
    pub fn omitted_note(&self) -> Option<String> {
        let n = self.omitted_spans();
        (n > 0).then(|| {
            format!(
                "note: {} left out: this shows {} of {} spans (the first to end, with their parents); \
                 the totals count every span",
                crate::format::count(n as u64, "span"),
                crate::format::thousands(self.spans.len() as u64),
                crate::format::thousands(self.total_spans() as u64),
            )
        })
    }

    pub fn trace_id(&self) -> &str {
        &self.overview.trace_id
    }

    /// The run this one continued and how (`resume`, `only`, `from`), from the run span.
    pub fn resumed_from(&self) -> Option<(&str, &str)> {
        self.overview
            .resumed_from
            .as_ref()
            .map(|(f, m)| (f.as_str(), m.as_str()))
    }

    /// Earliest start, in ns since the epoch.
    pub fn start_ns(&self) -> u64 {
        self.overview.start_ns.unwrap_or(0)
    }

    /// Latest end, in ns since the epoch.
    pub fn end_ns(&self) -> u64 {
        self.overview.end_ns.max(self.start_ns())
    }

    /// The workflow's name: from the top workflow span, else the run span, else the resource.
    pub fn workflow_name(&self) -> Option<&str> {
        self.overview
            .workflow_name
            .as_deref()
            .or(self.overview.root_workflow_name.as_deref())
            .or_else(|| {
                get(&self.resource, crate::telemetry::attr::WORKFLOW_NAME)
                    .and_then(AttrValue::as_str)
            })
    }

    /// `ok`, `failed`, `invalid`, `interrupted`, … (the run span's status).
    pub fn status(&self) -> &str {
        self.overview
            .run_status
            .as_deref()
            .unwrap_or(if self.overview.any_failed {
                "failed"
            } else {
                "ok"
            })
    }

    /// The node type of each node path, from every span.
    pub fn node_type(&self, path: &str) -> Option<&str> {
        self.overview.node_types.get(path).map(String::as_str)
    }

    /// Node paths in the trace, in order of first appearance (the first 10,000).
    pub fn node_names(&self) -> Vec<&str> {
        self.overview
            .node_names
            .iter()
            .map(String::as_str)
            .collect()
    }

    /// Children of each span id, ordered by start time.
    pub fn children(&self) -> std::collections::HashMap<&str, Vec<&TraceSpan>> {
        let mut m: std::collections::HashMap<&str, Vec<&TraceSpan>> = Default::default();
        for s in &self.spans {
            m.entry(s.parent_span_id.as_str()).or_default().push(s);
        }
        for v in m.values_mut() {
            v.sort_by_key(|s| (s.start_ns, s.end_ns));
        }
        m
    }
}

/// A saved trace file, newest first in [`list_files`].
#[derive(Debug, Clone)]
pub struct TraceFile {
    pub path: PathBuf,
    /// The trace id taken from the file name (may be empty for foreign names).
    pub trace_id: String,
}

fn trace_id_of(name: &str) -> Option<&str> {
    let stem = name.strip_suffix(TRACE_SUFFIX)?;
    Some(stem.rsplit_once('_').map_or("", |(_, id)| id))
}

/// Trace files in `dir`, newest first (names start with the UTC time).
pub fn list_files(dir: &Path) -> Vec<TraceFile> {
    let mut v: Vec<TraceFile> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let id = trace_id_of(&name)?.to_string();
                Some(TraceFile {
                    path: e.path(),
                    trace_id: id,
                })
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort_by(|a, b| b.path.cmp(&a.path));
    v
}

/// Resolves what a user typed: a file path, `last` / `last~N` (N runs
/// before the newest), or a trace id or unique prefix of one.
pub fn resolve(arg: &str, dir: &Path) -> Result<PathBuf, TraceError> {
    let p = Path::new(arg);
    if p.is_file() {
        return Ok(p.to_path_buf());
    }
    let files = list_files(dir);
    if let Some(rest) = arg.strip_prefix("last") {
        let back = match rest.strip_prefix('~') {
            None if rest.is_empty() => Some(0),
            Some(n) => n.parse::<usize>().ok(),
            None => None,
        };
        if let Some(n) = back {
            if files.is_empty() {
                return Err(TraceError::NoTraces {
                    dir: dir.to_path_buf(),
                });
            }
            return files
                .get(n)
                .map(|f| f.path.clone())
                .ok_or(TraceError::NotThatMany {
                    arg: arg.to_string(),
                    count: files.len(),
                    dir: dir.to_path_buf(),
                });
        }
    }
    let want = arg.to_ascii_lowercase();
    if !want.is_empty() && want.chars().all(|c| c.is_ascii_hexdigit()) {
        let hits: Vec<&TraceFile> = files
            .iter()
            .filter(|f| f.trace_id.starts_with(&want))
            .collect();
        match hits.as_slice() {
            [one] => return Ok(one.path.clone()),
            [] => {}
            many => {
                // Several files of one trace (a joined TRACEPARENT): the newest.
                if many.iter().all(|f| f.trace_id == many[0].trace_id) {
                    return Ok(many[0].path.clone());
                }
                return Err(TraceError::Ambiguous {
                    arg: arg.to_string(),
                    candidates: many.iter().take(5).map(|f| f.trace_id.clone()).collect(),
                });
            }
        }
    }
    Err(TraceError::NotFound {
        arg: arg.to_string(),
        dir: dir.to_path_buf(),
    })
}

/// `$PFLOW_HOME/traces`.
pub fn default_dir() -> PathBuf {
    crate::telemetry::pflow_home().join("traces")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, name: &str) {
        std::fs::write(dir.join(name), "").unwrap();
    }

    #[test]
    fn resolves_last_ids_and_prefixes() {
        let d = tempfile::tempdir().unwrap();
        touch(d.path(), "20260101T000000.000Z_aaaa1111.otlp.json");
        touch(d.path(), "20260102T000000.000Z_aaaa2222.otlp.json");
        touch(d.path(), "20260103T000000.000Z_bbbb3333.otlp.json");
        touch(d.path(), "notes.txt");
        let name = |p: PathBuf| p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name(resolve("last", d.path()).unwrap()).contains("bbbb3333"));
        assert!(name(resolve("last~1", d.path()).unwrap()).contains("aaaa2222"));
        assert!(matches!(
            resolve("last~3", d.path()),
            Err(TraceError::NotThatMany { count: 3, .. })
        ));
        assert!(name(resolve("BBBB", d.path()).unwrap()).contains("bbbb3333"));
        assert!(matches!(
            resolve("aaaa", d.path()),
            Err(TraceError::Ambiguous { .. })
        ));
        assert!(matches!(
            resolve("cccc", d.path()),
            Err(TraceError::NotFound { .. })
        ));
        assert!(matches!(
            resolve("lastx", d.path()),
            Err(TraceError::NotFound { .. })
        ));
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            resolve("last", empty.path()),
            Err(TraceError::NoTraces { .. })
        ));
    }

    #[test]
    fn bad_lines_name_the_line() {
        let e = parse("{\"resourceSpans\": []}\nnot json\n", Path::new("t.json")).unwrap_err();
        assert!(matches!(e, TraceError::Format { line: 2, .. }), "{e}");
        assert!(e.to_string().contains("t.json"));
        let e = parse("{\"resourceSpans\": []}\n", Path::new("t.json")).unwrap_err();
        assert!(matches!(e, TraceError::Empty { .. }));
    }
}
