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
pub mod report;
pub mod reprice;
pub mod show;

use crate::telemetry::metrics::{Aggregator, MetricsSummary, SpanFacts};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue as ProtoKv};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

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

/// A loaded trace file.
#[derive(Debug, Clone)]
pub struct Trace {
    pub path: PathBuf,
    pub resource: Attrs,
    /// In file order (the order spans ended).
    pub spans: Vec<TraceSpan>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Loads a trace file (OTLP/JSON, one request per line).
pub fn load(path: &Path) -> Result<Trace, TraceError> {
    let text =
        crate::limits::read_text(path, crate::limits::MAX_TRACE_BYTES).map_err(|source| {
            TraceError::Io {
                path: path.to_path_buf(),
                source,
            }
        })?;
    parse(&text, path)
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
    let mut trace = Trace {
        path: path.to_path_buf(),
        resource: Vec::new(),
        spans: Vec::new(),
    };
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut req: ExportTraceServiceRequest =
            parse_request(line).map_err(|e| TraceError::Format {
                path: path.to_path_buf(),
                line: i + 1,
                message: e.to_string(),
            })?;
        // The one redaction point of every viewer (show, summary, report, diff).
        crate::telemetry::redact::redact_request(&mut req);
        for rs in req.resource_spans {
            if trace.resource.is_empty() {
                if let Some(r) = &rs.resource {
                    trace.resource = attrs(&r.attributes);
                }
            }
            for ss in rs.scope_spans {
                for s in ss.spans {
                    let (status_code, status_message) =
                        s.status.map(|st| (st.code, st.message)).unwrap_or_default();
                    trace.spans.push(TraceSpan {
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
                    });
                }
            }
        }
    }
    if trace.spans.is_empty() {
        return Err(TraceError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(trace)
}

impl Trace {
    /// The run's `metrics`, recomputed with the live run's aggregation.
    pub fn metrics(&self) -> MetricsSummary {
        let mut agg = Aggregator::default();
        for s in &self.spans {
            agg.add(&s.facts());
        }
        agg.summary()
    }

    /// The run's root span: the one whose parent is not in the file.
    pub fn root(&self) -> Option<&TraceSpan> {
        self.spans
            .iter()
            .find(|s| s.attr(crate::telemetry::attr::RUN_STATUS).is_some())
            .or_else(|| {
                self.spans.iter().find(|s| {
                    s.parent_span_id.is_empty()
                        || !self.spans.iter().any(|p| p.span_id == s.parent_span_id)
                })
            })
    }

    /// Spans the writer left out because the file hit `PFLOW_TRACE_MAX_BYTES`
    /// (`pflow.trace.dropped_spans` on the run span); `None` for a complete trace.
    pub fn dropped_spans(&self) -> Option<i64> {
        use crate::telemetry::file::{DROPPED_SPANS, TRUNCATED};
        self.spans
            .iter()
            .find(|s| s.attr(TRUNCATED).is_some())
            .map(|s| {
                s.attr(DROPPED_SPANS)
                    .and_then(AttrValue::as_i64)
                    .unwrap_or(0)
            })
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

    pub fn trace_id(&self) -> &str {
        self.spans.first().map_or("", |s| s.trace_id.as_str())
    }

    /// Earliest start, in ns since the epoch.
    pub fn start_ns(&self) -> u64 {
        self.spans.iter().map(|s| s.start_ns).min().unwrap_or(0)
    }

    /// The workflow's name: from the top workflow span, else the resource.
    pub fn workflow_name(&self) -> Option<&str> {
        use crate::telemetry::attr;
        self.spans
            .iter()
            .filter(|s| s.attr(attr::WORKFLOW_DEPTH).and_then(AttrValue::as_i64) == Some(0))
            .find_map(|s| s.str_attr(attr::WORKFLOW_NAME))
            .or_else(|| self.root().and_then(|r| r.str_attr(attr::WORKFLOW_NAME)))
            .or_else(|| get(&self.resource, attr::WORKFLOW_NAME).and_then(AttrValue::as_str))
    }

    /// `ok`, `failed`, `invalid`, `interrupted`, … (the root span's status).
    pub fn status(&self) -> &str {
        self.root()
            .and_then(|r| r.str_attr(crate::telemetry::attr::RUN_STATUS))
            .unwrap_or(if self.spans.iter().any(TraceSpan::failed) {
                "failed"
            } else {
                "ok"
            })
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
