//! OTLP export of the run's spans to a Collector or any backend, configured
//! by the standard `OTEL_EXPORTER_OTLP_*` variables (or `--otlp-endpoint`).
//!
//! Export must never get in the way of a run: spans are queued (bounded;
//! what overflows is counted) and sent from a dedicated thread with its own
//! small tokio runtime; every export is bounded by the OTLP timeout, and the
//! end of the run waits for the last batch at most that long. Failures are
//! counted and reported in one warning line, never as a failed run.
//!
//! What leaves the machine follows the content policy: prompts, responses,
//! resolved params and value previews stay local unless the user opts in
//! (`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true` or
//! `--capture-content`); sizes always go. Everything exported is redacted.

use super::attr;
use super::profile::ExportShape;
use super::redact::Redactor;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Spans queued but not yet exported, at most; beyond this they are dropped and counted.
const MAX_QUEUE: usize = 65_536;
const BATCH: usize = 512;
/// `OTEL_EXPORTER_OTLP_TIMEOUT` default: a few seconds, as promised to users.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// The status text exported without content capture: the error type, not the message.
fn contentless_status(error_type: Option<&str>) -> String {
    error_type.unwrap_or("error").to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
    HttpJson,
}

impl OtlpProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            OtlpProtocol::Grpc => "grpc",
            OtlpProtocol::HttpProtobuf => "http/protobuf",
            OtlpProtocol::HttpJson => "http/json",
        }
    }
}

/// Where and how to export.
#[derive(Debug, Clone)]
pub struct OtlpSettings {
    /// The full traces URL for HTTP (`…/v1/traces`), the server URL for gRPC.
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    pub headers: HashMap<String, String>,
    pub timeout: Duration,
    /// Export prompts, responses and value previews too.
    pub capture_content: bool,
    /// Where OTel metrics go (`…/v1/metrics`, or the gRPC server); `None`:
    /// `OTEL_METRICS_EXPORTER=none`.
    pub metrics_endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`.
    pub temporality: opentelemetry_sdk::metrics::Temporality,
    /// The backend profile; `from_env` leaves `otel`: set it from
    /// `Profile::resolve(--otel-profile)` (flag, else `PFLOW_OTEL_PROFILE`).
    pub profile: super::profile::Profile,
    /// `OTEL_SEMCONV_STABILITY_OPT_IN` holds `gen_ai_latest_experimental`.
    pub semconv_latest: bool,
}

fn var(keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| {
        std::env::var(k)
            .ok()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    })
}

/// `k1=v1,k2=v2` with percent-encoded values (the OTEL_EXPORTER_OTLP_HEADERS format).
pub fn parse_headers(s: &str) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            // Name the entry by what precedes a `:` or space, never its value
            // (`Authorization: Bearer …` is a common mistake).
            let name: String = pair
                .split([':', ' '])
                .next()
                .unwrap_or_default()
                .chars()
                .take(64)
                .collect();
            format!("OTEL_EXPORTER_OTLP_HEADERS: the entry `{name}` is not key=value (its value is not shown)")
        })?;
        let v = percent_decode(v.trim());
        out.insert(k.trim().to_string(), v);
    }
    Ok(out)
}

/// `http://h/p?x=1` → (`http://h/p`, `?x=1`): the query (or fragment) stays after the path.
fn split_query(url: &str) -> (&str, &str) {
    let at = url.find(['?', '#']).unwrap_or(url.len());
    url.split_at(at)
}

/// A base endpoint with the signal's path (`/v1/traces`) appended to its path,
/// before any query string.
fn with_signal_path(raw: &str, signal: &str) -> String {
    let (base, rest) = split_query(raw);
    format!("{}/v1/{signal}{rest}", base.trim_end_matches('/'))
}

/// `%XX` decoding on bytes (a `%` before a multi-byte character is kept as is,
/// never sliced through); invalid UTF-8 in the result is replaced.
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |x: u8| (x as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl OtlpSettings {
    /// From the standard variables; `None` when no endpoint is configured or
    /// `OTEL_TRACES_EXPORTER` names no `otlp` exporter. An invalid value is an error.
    pub fn from_env(
        cli_endpoint: Option<&str>,
        capture_flag: bool,
    ) -> Result<Option<OtlpSettings>, String> {
        if let Some(exporters) = var(&["OTEL_TRACES_EXPORTER"]) {
            if !exporters.split(',').any(|e| e.trim() == "otlp") {
                return Ok(None);
            }
        }
        let signal_endpoint = var(&["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]);
        let base_endpoint = var(&["OTEL_EXPORTER_OTLP_ENDPOINT"]);
        let (raw, is_signal) = match (cli_endpoint, &signal_endpoint, &base_endpoint) {
            (Some(e), _, _) => (e.to_string(), false),
            (None, Some(e), _) => (e.clone(), true),
            (None, None, Some(e)) => (e.clone(), false),
            (None, None, None) => return Ok(None),
        };
        let url = reqwest::Url::parse(&raw)
            .map_err(|e| format!("OTLP endpoint `{raw}` is not a URL: {e}"))?;
        let protocol = match var(&[
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ])
        .as_deref()
        {
            Some("grpc") => OtlpProtocol::Grpc,
            Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
            Some("http/json") => OtlpProtocol::HttpJson,
            Some(other) => {
                return Err(format!(
                    "OTEL_EXPORTER_OTLP_PROTOCOL `{other}` is not grpc, http/protobuf or http/json"
                ))
            }
            // Unset: port 4317 is the gRPC port by convention, anything else HTTP.
            None if url.port() == Some(4317) => OtlpProtocol::Grpc,
            None => OtlpProtocol::HttpProtobuf,
        };
        let endpoint = match protocol {
            OtlpProtocol::Grpc => raw.clone(),
            // A base endpoint gets the signal path; a per-signal one is used as is.
            _ if is_signal => raw.clone(),
            _ => with_signal_path(&raw, "traces"),
        };
        let headers = match var(&[
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "OTEL_EXPORTER_OTLP_HEADERS",
        ]) {
            Some(h) => parse_headers(&h)?,
            None => HashMap::new(),
        };
        let timeout = match var(&[
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ]) {
            Some(ms) => Duration::from_millis(ms.parse::<u64>().map_err(|_| {
                format!("OTEL_EXPORTER_OTLP_TIMEOUT `{ms}` is not a number of milliseconds")
            })?),
            None => DEFAULT_TIMEOUT,
        };
        let metrics_endpoint = match var(&["OTEL_METRICS_EXPORTER"]) {
            Some(m) if !m.split(',').any(|e| e.trim() == "otlp") => None,
            _ => Some(
                match (var(&["OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"]), protocol) {
                    (Some(e), _) => e,
                    (None, OtlpProtocol::Grpc) => raw.clone(),
                    (None, _) if is_signal => {
                        let (base, rest) = split_query(&raw);
                        with_signal_path(
                            &format!(
                                "{}{rest}",
                                base.trim_end_matches('/').trim_end_matches("/v1/traces")
                            ),
                            "metrics",
                        )
                    }
                    (None, _) => with_signal_path(&raw, "metrics"),
                },
            ),
        };
        use opentelemetry_sdk::metrics::Temporality;
        let temporality = match var(&["OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"]).map(|t| t.to_ascii_lowercase()).as_deref() {
            None | Some("cumulative") => Temporality::Cumulative,
            Some("delta") => Temporality::Delta,
            Some("lowmemory") => Temporality::LowMemory,
            Some(other) => return Err(format!("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE `{other}` is not cumulative, delta or lowmemory")),
        };
        let env_capture =
            var(&["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"]).is_some_and(|v| {
                let v = v.to_ascii_lowercase();
                v == "true" || v == "span_only" || v == "span_and_event"
            });
        Ok(Some(OtlpSettings {
            endpoint,
            protocol,
            headers,
            timeout,
            capture_content: capture_flag || env_capture,
            metrics_endpoint,
            temporality,
            // The caller resolves it (`Profile::resolve`): a flag wins over the variable.
            profile: super::profile::Profile::default(),
            semconv_latest: super::profile::semconv_latest_from_env(),
        }))
    }
}

impl OtlpSettings {
    /// How exported spans are shaped: content policy, profile, semconv switch.
    pub fn export_shape(&self) -> ExportShape {
        ExportShape {
            profile: self.profile,
            semconv_latest: self.semconv_latest,
            capture_content: self.capture_content,
        }
    }
}

/// The OTLP HTTP transport over pflow's own reqwest client (rustls, ring).
#[derive(Debug)]
struct ReqwestTransport(reqwest::Client);

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for ReqwestTransport {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        let mut rb = self
            .0
            .request(parts.method, parts.uri.to_string())
            .body(body);
        for (k, v) in parts.headers.iter() {
            rb = rb.header(k, v);
        }
        let resp = rb.send().await?;
        let mut out = http::Response::builder().status(resp.status().as_u16());
        for (k, v) in resp.headers() {
            out = out.header(k.as_str(), v.as_bytes());
        }
        let body = resp.bytes().await?;
        Ok(out.body(body)?)
    }
}

fn grpc_metadata(s: &OtlpSettings) -> Result<tonic::metadata::MetadataMap, String> {
    let mut meta = tonic::metadata::MetadataMap::new();
    for (k, v) in &s.headers {
        let key = tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
            .map_err(|e| format!("OTLP header `{k}`: {e}"))?;
        let val = v.parse().map_err(|e| format!("OTLP header `{k}`: {e}"))?;
        meta.insert(key, val);
    }
    Ok(meta)
}

fn http_transport(s: &OtlpSettings) -> Result<ReqwestTransport, String> {
    Ok(ReqwestTransport(
        reqwest::Client::builder()
            .timeout(s.timeout)
            .build()
            .map_err(|e| e.to_string())?,
    ))
}

/// A gRPC exporter builder set up for these settings (TLS for `https://`).
fn grpc<B: WithExportConfig + WithTonicConfig>(
    b: B,
    s: &OtlpSettings,
    endpoint: &str,
) -> Result<B, String> {
    let b = b
        .with_endpoint(endpoint)
        .with_timeout(s.timeout)
        .with_metadata(grpc_metadata(s)?);
    Ok(if endpoint.starts_with("https://") {
        b.with_tls_config(tonic::transport::ClientTlsConfig::new().with_webpki_roots())
    } else {
        b
    })
}

/// An HTTP exporter builder set up for these settings.
fn http<B: WithExportConfig + WithHttpConfig>(
    b: B,
    s: &OtlpSettings,
    endpoint: &str,
) -> Result<B, String> {
    Ok(b.with_endpoint(endpoint)
        .with_protocol(if s.protocol == OtlpProtocol::HttpJson {
            Protocol::HttpJson
        } else {
            Protocol::HttpBinary
        })
        .with_timeout(s.timeout)
        .with_headers(s.headers.clone())
        .with_http_client(http_transport(s)?))
}

/// The OTLP metric exporter for these settings (built inside a tokio runtime).
pub fn build_metric_exporter(
    s: &OtlpSettings,
) -> Result<opentelemetry_otlp::MetricExporter, String> {
    let endpoint = s.metrics_endpoint.clone().ok_or("metrics export is off")?;
    let b = opentelemetry_otlp::MetricExporter::builder();
    let built = match s.protocol {
        OtlpProtocol::Grpc => grpc(b.with_tonic(), s, &endpoint)?
            .with_temporality(s.temporality)
            .build(),
        OtlpProtocol::HttpProtobuf | OtlpProtocol::HttpJson => http(b.with_http(), s, &endpoint)?
            .with_temporality(s.temporality)
            .build(),
    };
    built.map_err(|e| format!("cannot set up OTLP metrics export to {endpoint}: {e}"))
}

fn build_exporter(s: &OtlpSettings) -> Result<opentelemetry_otlp::SpanExporter, String> {
    let b = opentelemetry_otlp::SpanExporter::builder();
    let built = match s.protocol {
        OtlpProtocol::Grpc => grpc(b.with_tonic(), s, &s.endpoint)?.build(),
        OtlpProtocol::HttpProtobuf | OtlpProtocol::HttpJson => {
            http(b.with_http(), s, &s.endpoint)?.build()
        }
    };
    built.map_err(|e| format!("cannot set up OTLP export to {}: {e}", s.endpoint))
}

/// Removes content from a span bound for the network (unless opted in) and redacts it.
pub fn apply_policy(span: &mut SpanData, capture_content: bool, redactor: &Redactor) {
    let shape = ExportShape {
        capture_content,
        ..ExportShape::default()
    };
    apply_export_policy(span, &shape, redactor);
}

/// The content policy, then the backend profile and semconv switch, then redaction
/// (last, so attributes a profile derives are redacted too).
pub fn apply_export_policy(span: &mut SpanData, shape: &ExportShape, redactor: &Redactor) {
    if !shape.capture_content {
        let before = span.attributes.len();
        span.attributes
            .retain(|kv| !attr::is_content(attr::Kind::Attr, kv.key.as_str()));
        if span.attributes.len() != before {
            span.attributes
                .push(KeyValue::new(attr::CONTENT_OMITTED, true));
        }
        for ev in span.events.events.iter_mut() {
            let size = ev
                .attributes
                .iter()
                .find(|kv| kv.key.as_str() == attr::EXCEPTION_MESSAGE)
                .map(|kv| kv.value.as_str().len() as i64);
            ev.attributes
                .retain(|kv| !attr::is_content(attr::Kind::EventAttr, kv.key.as_str()));
            if let Some(n) = size {
                ev.attributes
                    .push(KeyValue::new(attr::EXCEPTION_MESSAGE_SIZE, n));
            }
        }
        if matches!(span.status, opentelemetry::trace::Status::Error { .. }) {
            let kind = span
                .attributes
                .iter()
                .find(|kv| kv.key.as_str() == attr::ERROR_TYPE)
                .map(|kv| kv.value.as_str().into_owned());
            span.status = opentelemetry::trace::Status::error(contentless_status(kind.as_deref()));
        }
    }
    super::profile::apply_span_data(span, shape);
    super::file::redact_span(span, redactor);
}

enum Msg {
    Batch(Vec<SpanData>),
    Finish(mpsc::Sender<()>),
}

#[derive(Debug, Default)]
struct Stats {
    queued: AtomicU64,
    sent: AtomicU64,
    dropped_queue: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

/// Queues spans for the export thread.
#[derive(Debug)]
pub struct OtlpProcessor {
    pending: Arc<Mutex<Vec<SpanData>>>,
    tx: mpsc::Sender<Msg>,
    stats: Arc<Stats>,
    shape: ExportShape,
    redactor: &'static Redactor,
}

/// Finishes the export at the end of the run.
#[derive(Debug, Clone)]
pub struct OtlpHandle {
    tx: mpsc::Sender<Msg>,
    stats: Arc<Stats>,
    timeout: Duration,
    endpoint: String,
    protocol: OtlpProtocol,
}

impl OtlpProcessor {
    /// Starts the export thread. Errors (bad endpoint, headers) are reported, never fatal to the run.
    pub fn start(
        settings: &OtlpSettings,
        resource: &Resource,
        redactor: &'static Redactor,
    ) -> Result<(OtlpProcessor, OtlpHandle), String> {
        let (tx, rx) = mpsc::channel::<Msg>();
        let stats = Arc::new(Stats::default());
        let pending: Arc<Mutex<Vec<SpanData>>> = Arc::new(Mutex::new(Vec::with_capacity(BATCH)));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let s = settings.clone();
        let resource = resource.clone();
        let th_stats = stats.clone();
        let th_pending = pending.clone();
        std::thread::Builder::new()
            .name("pflow-otlp-export".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ =
                            ready_tx.send(Err(format!("cannot start the OTLP export thread: {e}")));
                        return;
                    }
                };
                let exporter = rt.block_on(async { build_exporter(&s) });
                let mut exporter = match exporter {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                exporter.set_resource(&resource);
                let _ = ready_tx.send(Ok(()));
                export_loop(&rt, &exporter, &rx, &th_pending, &th_stats, s.timeout);
                let _ = rt.block_on(async {
                    tokio::time::timeout(Duration::from_millis(200), async { exporter.shutdown() })
                        .await
                });
            })
            .map_err(|e| format!("cannot start the OTLP export thread: {e}"))?;
        ready_rx
            .recv()
            .map_err(|_| "the OTLP export thread stopped".to_string())??;
        Ok((
            OtlpProcessor {
                pending,
                tx: tx.clone(),
                stats: stats.clone(),
                shape: settings.export_shape(),
                redactor,
            },
            OtlpHandle {
                tx,
                stats,
                timeout: settings.timeout,
                endpoint: settings.endpoint.clone(),
                protocol: settings.protocol,
            },
        ))
    }
}

fn export_loop(
    rt: &tokio::runtime::Runtime,
    exporter: &opentelemetry_otlp::SpanExporter,
    rx: &mpsc::Receiver<Msg>,
    pending: &Mutex<Vec<SpanData>>,
    stats: &Stats,
    timeout: Duration,
) {
    let send = |batch: Vec<SpanData>, budget: Duration| {
        let n = batch.len() as u64;
        let r = rt.block_on(async { tokio::time::timeout(budget, exporter.export(batch)).await });
        let err = match r {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {:.1}s", budget.as_secs_f64())),
        };
        match err {
            None => {
                stats.sent.fetch_add(n, Ordering::Relaxed);
            }
            Some(e) => {
                stats.failed.fetch_add(n, Ordering::Relaxed);
                if let Ok(mut first) = stats.first_error.lock() {
                    first.get_or_insert(e);
                }
            }
        }
    };
    let take = || match pending.lock() {
        Ok(mut p) => std::mem::take(&mut *p),
        Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
    };
    loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(Msg::Batch(b)) => send(b, timeout),
            Ok(Msg::Finish(reply)) => {
                // One deadline for everything still queued: the run ends at most `timeout` later.
                let deadline = Instant::now() + timeout;
                let mut rest = Vec::new();
                while let Ok(Msg::Batch(b)) = rx.try_recv() {
                    rest.extend(b);
                }
                rest.extend(take());
                for chunk in rest.chunks(BATCH) {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        stats
                            .failed
                            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                        if let Ok(mut first) = stats.first_error.lock() {
                            first.get_or_insert(format!(
                                "export timeout of {:.1}s reached",
                                timeout.as_secs_f64()
                            ));
                        }
                        continue;
                    }
                    send(chunk.to_vec(), left);
                }
                let _ = reply.send(());
                return;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let b = take();
                if !b.is_empty() {
                    send(b, timeout);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

impl SpanProcessor for OtlpProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, mut span: SpanData) {
        let queued = self.stats.queued.fetch_add(1, Ordering::Relaxed) + 1;
        let done = self.stats.sent.load(Ordering::Relaxed)
            + self.stats.failed.load(Ordering::Relaxed)
            + self.stats.dropped_queue.load(Ordering::Relaxed);
        if queued.saturating_sub(done) > MAX_QUEUE as u64 {
            self.stats.dropped_queue.fetch_add(1, Ordering::Relaxed);
            return;
        }
        apply_export_policy(&mut span, &self.shape, self.redactor);
        let full = {
            let mut p = match self.pending.lock() {
                Ok(p) => p,
                Err(poisoned) => poisoned.into_inner(),
            };
            p.push(span);
            (p.len() >= BATCH).then(|| std::mem::replace(&mut *p, Vec::with_capacity(BATCH)))
        };
        if let Some(batch) = full {
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

impl OtlpHandle {
    /// Sends what is left (bounded by the export timeout); returns one warning if spans were lost.
    pub fn finish(&self) -> Option<String> {
        let (reply_tx, reply_rx) = mpsc::channel();
        let answered = self.tx.send(Msg::Finish(reply_tx)).is_ok()
            && reply_rx
                .recv_timeout(self.timeout + Duration::from_millis(500))
                .is_ok();
        let s = &self.stats;
        let queued = s.queued.load(Ordering::Relaxed);
        let lost = if answered {
            s.failed.load(Ordering::Relaxed) + s.dropped_queue.load(Ordering::Relaxed)
        } else {
            queued.saturating_sub(s.sent.load(Ordering::Relaxed))
        };
        if lost == 0 {
            return None;
        }
        let why = s
            .first_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_else(|| "export did not finish in time".into());
        Some(format!(
            "OTLP export to {} ({}): {lost} of {queued} spans not delivered: {why}; the local trace is unaffected",
            self.endpoint,
            self.protocol.as_str()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_with_percent_decoding() {
        let h = parse_headers("api-key=abc%20def, x-team = core ").unwrap();
        assert_eq!(h["api-key"], "abc def");
        assert_eq!(h["x-team"], "core");
        assert!(parse_headers("novalue").is_err());
        assert_eq!(
            with_signal_path("http://h:4318/p?x=1", "traces"),
            "http://h:4318/p/v1/traces?x=1"
        );
        assert_eq!(
            with_signal_path("http://h:4318/", "metrics"),
            "http://h:4318/v1/metrics"
        );
        // A `%` before a multi-byte character panicked (sliced inside it).
        assert_eq!(parse_headers("x=%aé").unwrap()["x"], "%aé");
        assert_eq!(parse_headers("x=%41%").unwrap()["x"], "A%");
        let e = parse_headers("Authorization: Bearer s3cr3t-t0ken").unwrap_err();
        assert!(!e.contains("s3cr3t"), "{e}");
    }
}

/// The content policy on a span read from a trace file (as
/// [`apply_export_policy`] does on live spans).
fn strip_content_proto(sp: &mut opentelemetry_proto::tonic::trace::v1::Span) {
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue as Kv};
    fn text(kvs: &[Kv], key: &str) -> Option<String> {
        match kvs
            .iter()
            .find(|kv| kv.key == key)?
            .value
            .as_ref()?
            .value
            .as_ref()?
        {
            any_value::Value::StringValue(s) => Some(s.clone()),
            any_value::Value::IntValue(n) => Some(n.to_string()),
            _ => None,
        }
    }
    let int = |key: &str, n: i64| Kv {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(n)),
        }),
        ..Default::default()
    };
    let params = text(&sp.attributes, attr::NODE_PARAMS);
    sp.attributes
        .retain(|kv| !attr::is_content(attr::Kind::Attr, kv.key.as_str()));
    for ev in &mut sp.events {
        let size = text(&ev.attributes, attr::EXCEPTION_MESSAGE).map(|s| s.len() as i64);
        // A size the compact form left out goes with the preview it is the length of.
        let value_size = super::compact::left_out_size(
            &ev.name,
            &|k: &str| text(&ev.attributes, k),
            params.as_deref(),
        );
        ev.attributes
            .retain(|kv| !attr::is_content(attr::Kind::EventAttr, kv.key.as_str()));
        if let Some(n) = size {
            ev.attributes.push(int(attr::EXCEPTION_MESSAGE_SIZE, n));
        }
        if let Some(n) = value_size {
            ev.attributes.push(int(attr::VALUE_SIZE, n));
        }
    }
    if let Some(st) = sp.status.as_mut().filter(|st| st.code == 2) {
        let kind = sp
            .attributes
            .iter()
            .find(|kv| kv.key == attr::ERROR_TYPE)
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => Some(s.clone()),
                _ => None,
            });
        st.message = contentless_status(kind.as_deref());
    }
}

/// What `pflow trace export` sent.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FileExportReport {
    pub requests: usize,
    pub spans: usize,
    pub endpoint: String,
    pub protocol: &'static str,
}

/// Sends a saved trace file (OTLP/JSON lines) to a backend: for runs made
/// offline. Content attributes are dropped unless `settings.capture_content`;
/// the profile and semconv switch apply as for live export.
pub async fn export_file(
    path: &std::path::Path,
    settings: &OtlpSettings,
) -> Result<FileExportReport, String> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    let text = crate::limits::read_text(path, crate::limits::MAX_TRACE_BYTES)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let mut requests = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let mut req: ExportTraceServiceRequest =
            crate::traces::parse_request(line).map_err(|e| {
                format!(
                    "`{}` line {}: not an OTLP/JSON ExportTraceServiceRequest: {e}",
                    path.display(),
                    i + 1
                )
            })?;
        // The file was redacted when written, perhaps by an older pflow: again, with today's rules.
        super::redact::redact_request(&mut req);
        if !settings.capture_content {
            for rs in &mut req.resource_spans {
                for ss in &mut rs.scope_spans {
                    for sp in &mut ss.spans {
                        strip_content_proto(sp);
                    }
                }
            }
        }
        let shape = settings.export_shape();
        for sp in req
            .resource_spans
            .iter_mut()
            .flat_map(|rs| rs.scope_spans.iter_mut())
            .flat_map(|ss| ss.spans.iter_mut())
        {
            super::profile::apply_proto(sp, &shape);
        }
        requests.push(req);
    }
    let spans = requests
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum();
    let report = FileExportReport {
        requests: requests.len(),
        spans,
        endpoint: settings.endpoint.clone(),
        protocol: settings.protocol.as_str(),
    };
    match settings.protocol {
        OtlpProtocol::Grpc => {
            use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
            let channel = tonic::transport::Endpoint::from_shared(settings.endpoint.clone())
                .map_err(|e| format!("OTLP endpoint `{}`: {e}", settings.endpoint))?
                .timeout(settings.timeout)
                .connect_timeout(settings.timeout)
                .connect()
                .await
                .map_err(|e| format!("cannot connect to {}: {e}", settings.endpoint))?;
            let mut client = TraceServiceClient::new(channel);
            for req in requests {
                let mut r = tonic::Request::new(req);
                for (k, v) in &settings.headers {
                    if let (Ok(key), Ok(val)) = (
                        tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes()),
                        v.parse(),
                    ) {
                        r.metadata_mut().insert(key, val);
                    }
                }
                client
                    .export(r)
                    .await
                    .map_err(|e| format!("{} refused the trace: {e}", settings.endpoint))?;
            }
        }
        OtlpProtocol::HttpProtobuf | OtlpProtocol::HttpJson => {
            let client = reqwest::Client::builder()
                .timeout(settings.timeout)
                .build()
                .map_err(|e| e.to_string())?;
            for req in requests {
                let (body, ct) = if settings.protocol == OtlpProtocol::HttpJson {
                    (
                        serde_json::to_vec(&req).map_err(|e| e.to_string())?,
                        "application/json",
                    )
                } else {
                    (
                        prost::Message::encode_to_vec(&req),
                        "application/x-protobuf",
                    )
                };
                let mut rb = client
                    .post(&settings.endpoint)
                    .header("content-type", ct)
                    .body(body);
                for (k, v) in &settings.headers {
                    rb = rb.header(k.as_str(), v.as_str());
                }
                let resp = rb
                    .send()
                    .await
                    .map_err(|e| format!("cannot send to {}: {e}", settings.endpoint))?;
                if !resp.status().is_success() {
                    return Err(format!(
                        "{} answered HTTP {}",
                        settings.endpoint,
                        resp.status()
                    ));
                }
            }
        }
    }
    Ok(report)
}
