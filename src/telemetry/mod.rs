//! Telemetry: turns the `tracing` spans the runtime emits into OpenTelemetry
//! spans, folds them into the metrics summary, and writes the trace file.
//!
//! Only this module touches OpenTelemetry types. Everything that consumes
//! spans is plugged in here at start-up: the metrics processor (sees every
//! span as it ends, in-process) and the trace file exporter (a writer thread;
//! never blocks a node), and, when the CLI asks, the progress layer (sees
//! spans open and close, even with telemetry off). The runtime knows nothing
//! of files, metrics or progress.
//!
//! ```no_run
//! use pflow::telemetry::{Telemetry, TelemetryConfig, TraceMode};
//! let t = Telemetry::init(TelemetryConfig { mode: TraceMode::Full { save_always: true }, ..TelemetryConfig::from_env() });
//! tracing::dispatcher::with_default(&t.dispatch(), || {
//!     let _run = tracing::info_span!("run").entered();
//! });
//! let finished = t.finish(false, "run");
//! println!("{:?}", finished.trace_file);
//! ```

pub mod attr;
pub mod compact;
pub mod file;
pub mod http;
pub mod live;
pub mod metrics;
pub mod otel_metrics;
pub mod otlp;
pub mod otlp_json;
pub mod preview;
pub mod profile;
pub mod progress;
pub mod redact;
pub mod resources;

use file::{TraceFileHandle, TraceFileProcessor};
use metrics::{MetricsProcessor, MetricsSummary};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanLimits};
use opentelemetry_sdk::Resource;
use std::path::PathBuf;
use std::sync::Arc;
use tracing_subscriber::layer::SubscriberExt;

/// How much telemetry to collect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceMode {
    /// `OTEL_SDK_DISABLED=true`: no spans, no metrics, no file.
    Off,
    /// Spans feed the metrics summary only; debug-tier events are not recorded.
    MetricsOnly,
    /// Everything, with a trace file kept always (`--trace`) or only on failure.
    Full { save_always: bool },
}

#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    pub mode: TraceMode,
    /// Where trace files go: `$PFLOW_HOME/traces`.
    pub trace_dir: PathBuf,
    pub service_name: String,
    /// OTLP export, when an endpoint is configured.
    pub otlp: Option<otlp::OtlpSettings>,
    /// Extra resource attributes (`OTEL_RESOURCE_ATTRIBUTES` and the workflow name).
    pub resource_attributes: Vec<(String, String)>,
    /// The live progress display's observer; installed even when telemetry is off.
    pub progress: Option<progress::ProgressSink>,
    /// `--live`: the feed every ended span is published to.
    pub live: Option<live::LiveFeed>,
}

/// `OTEL_RESOURCE_ATTRIBUTES`: `k=v,k2=v2`, percent-encoded values.
pub fn env_resource_attributes() -> Vec<(String, String)> {
    std::env::var("OTEL_RESOURCE_ATTRIBUTES")
        .ok()
        .and_then(|s| otlp::parse_headers(&s).ok())
        .map(|m| {
            let mut v: Vec<(String, String)> = m.into_iter().collect();
            v.sort();
            v
        })
        .unwrap_or_default()
}

static ENDS_WITH_RUN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Said by the `pflow` binary, whose process ends with its run: what a run
/// holds to its end (the spans kept for a trace that is not saved, the run's
/// report) is then left to the exit rather than freed block by block. For a
/// 10,000-node run that was ~1.4k instructions a node, on memory long cold.
pub fn process_ends_with_run() {
    ENDS_WITH_RUN.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// See [`process_ends_with_run`].
pub fn ends_with_run() -> bool {
    ENDS_WITH_RUN.load(std::sync::atomic::Ordering::Relaxed)
}

/// `$PFLOW_HOME`, else `~/.pflow`.
pub fn pflow_home() -> PathBuf {
    if let Some(h) = std::env::var_os("PFLOW_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".pflow")
}

/// Whether `OTEL_SDK_DISABLED` is set to true.
pub fn sdk_disabled() -> bool {
    std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

impl TelemetryConfig {
    /// Defaults from the environment (`OTEL_SDK_DISABLED`, `PFLOW_HOME`, `OTEL_SERVICE_NAME`).
    pub fn from_env() -> Self {
        TelemetryConfig {
            mode: if sdk_disabled() {
                TraceMode::Off
            } else {
                TraceMode::Full { save_always: false }
            },
            trace_dir: pflow_home().join("traces"),
            service_name: std::env::var("OTEL_SERVICE_NAME")
                .ok()
                .filter(|s| !s.is_empty())
                .or_else(|| {
                    env_resource_attributes()
                        .into_iter()
                        .find(|(k, _)| k == attr::SERVICE_NAME)
                        .map(|(_, v)| v)
                })
                .unwrap_or_else(|| "pflow".into()),
            otlp: None,
            resource_attributes: env_resource_attributes(),
            progress: None,
            live: None,
        }
    }
}

/// A run's telemetry pipeline. Call [`Telemetry::finish`] when the root span has closed.
#[must_use = "finish() saves the trace"]
pub struct Telemetry {
    config: TelemetryConfig,
    provider: Option<SdkTracerProvider>,
    metrics: Option<MetricsProcessor>,
    file: Option<TraceFileHandle>,
    dispatch: tracing::Dispatch,
    warnings: Vec<String>,
    sink_failed: bool,
    otlp: Option<otlp::OtlpHandle>,
    otel_metrics: Option<Arc<otel_metrics::OtelMetrics>>,
}

/// What finishing the telemetry produced.
#[derive(Debug, Default)]
pub struct Finished {
    pub trace_file: Option<PathBuf>,
    pub warnings: Vec<String>,
}

impl Telemetry {
    /// Builds the pipeline. Never fails: problems (e.g. an unwritable trace
    /// directory) become warnings and the run goes on.
    pub fn init(config: TelemetryConfig) -> Telemetry {
        preview::install(preview::PreviewSettings::from_env());
        if config.mode == TraceMode::Off {
            // No OpenTelemetry at all; progress still needs spans and their fields.
            let dispatch = match &config.progress {
                Some(p) => tracing::Dispatch::new(
                    tracing_subscriber::registry()
                        .with(p.layer())
                        .with(tracing::level_filters::LevelFilter::INFO),
                ),
                None => tracing::Dispatch::none(),
            };
            return Telemetry {
                config,
                provider: None,
                metrics: None,
                file: None,
                dispatch,
                warnings: Vec::new(),
                sink_failed: false,
                otlp: None,
                otel_metrics: None,
            };
        }
        let mut warnings = Vec::new();
        let mut attrs = vec![
            KeyValue::new(
                attr::SERVICE_NAME,
                redact::global()
                    .redact_str(&config.service_name)
                    .into_owned(),
            ),
            KeyValue::new(attr::SERVICE_VERSION, env!("CARGO_PKG_VERSION")),
            KeyValue::new(attr::SERVICE_INSTANCE_ID, instance_id()),
            KeyValue::new("process.pid", std::process::id() as i64),
            KeyValue::new("process.executable.name", "pflow"),
            // No `process.runtime.*`: a Rust binary runs on no runtime to name.
            KeyValue::new("os.type", std::env::consts::OS),
            KeyValue::new(attr::HOST_ARCH, attr::host_arch(std::env::consts::ARCH)),
        ];
        if let Some(h) = hostname() {
            attrs.push(KeyValue::new(attr::HOST_NAME, h));
        }
        // Resource attributes come from the environment (`OTEL_RESOURCE_ATTRIBUTES`):
        // redacted here, once, for the trace file and every export.
        let red = redact::global();
        for (k, v) in &config.resource_attributes {
            if k != attr::SERVICE_NAME {
                let v = if redact::is_secret_name(k) {
                    redact::REDACTED.to_string()
                } else {
                    red.redact_str(v).into_owned()
                };
                attrs.push(KeyValue::new(k.clone(), v));
            }
        }
        // `telemetry.sdk.{name,language,version}` from the SDK itself.
        let resource = Resource::builder_empty()
            .with_detector(Box::new(
                opentelemetry_sdk::resource::TelemetryResourceDetector,
            ))
            .with_schema_url(attrs, attr::SCHEMA_URL)
            .build();
        let otel_metrics = config
            .otlp
            .as_ref()
            .filter(|o| o.metrics_endpoint.is_some())
            .map(|o| Arc::new(otel_metrics::OtelMetrics::new(o, &resource)));
        let mut metrics = MetricsProcessor::new();
        if let Some(m) = &otel_metrics {
            metrics = metrics.with_otel_metrics(m.clone());
        }
        if let Some(feed) = &config.live {
            metrics = metrics.with_live(feed.clone());
        }
        let limits = SpanLimits {
            max_events_per_span: 4096,
            max_attributes_per_span: 256,
            max_attributes_per_event: 64,
            ..SpanLimits::default()
        };
        let mut file = None;
        let mut sink_failed = false;
        let full = matches!(config.mode, TraceMode::Full { .. });
        let mut chain = metrics.clone();
        if let TraceMode::Full { save_always } = config.mode {
            let (sink, warning) = file::open_sink(&config.trace_dir, save_always);
            sink_failed = warning.is_some();
            warnings.extend(warning);
            let (max_bytes, bad_max) = file::max_bytes_from_env();
            warnings.extend(bad_max);
            let (processor, handle) =
                TraceFileProcessor::new(sink, &resource, redact::global(), max_bytes, !save_always);
            chain = chain.with_next(processor);
            file = Some(handle);
        }
        let mut otlp_handle = None;
        compact::keep_value_sizes(config.otlp.as_ref().is_some_and(|o| !o.capture_content));
        if let Some(settings) = &config.otlp {
            match otlp::OtlpProcessor::start(settings, &resource, redact::global()) {
                Ok((processor, handle)) => {
                    chain = chain.with_next(processor);
                    otlp_handle = Some(handle);
                }
                Err(e) => warnings.push(e),
            }
        }
        let provider = SdkTracerProvider::builder()
            .with_resource(resource.clone())
            .with_span_limits(limits)
            .with_span_processor(chain)
            .build();
        let tracer = provider.tracer_with_scope(scope());
        // Detail (template resolutions, store writes) is DEBUG: recorded only in full mode.
        let level = if full {
            tracing::level_filters::LevelFilter::DEBUG
        } else {
            tracing::level_filters::LevelFilter::INFO
        };
        let otel_layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            // Nothing reads `opentelemetry::Context::current()` (trace context
            // is taken from the span itself: `trace_context_of`), so entering
            // a span need not attach its context: ~2% of a traced run's CPU.
            .with_context_activation(false)
            .with_target(false)
            .with_level(false);
        // Only pflow's own spans and events: dependencies' tracing events
        // (hyper's "connecting to …") are not part of pflow's vocabulary, and
        // the progress layer reads only pflow's spans too. One global filter,
        // not a per-layer one: per-layer filtering kept a filter state per
        // span and event (~4.5k instructions a node), and a `tracing::enabled!`
        // it rejected left a "disabled" mark for the thread's next span.
        let subscriber = tracing_subscriber::registry()
            .with(otel_layer)
            .with(config.progress.as_ref().map(progress::ProgressSink::layer))
            .with(tracing_subscriber::filter::Targets::new().with_target("pflow", level));
        Telemetry {
            config,
            provider: Some(provider),
            metrics: Some(metrics),
            file,
            dispatch: tracing::Dispatch::new(subscriber),
            sink_failed,
            warnings,
            otlp: otlp_handle,
            otel_metrics,
        }
    }

    /// The `tracing` dispatcher to install (globally or per thread).
    pub fn dispatch(&self) -> tracing::Dispatch {
        self.dispatch.clone()
    }

    pub fn mode(&self) -> TraceMode {
        self.config.mode
    }

    /// Warnings from start-up (printed by the CLI).
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// The 32-hex trace id of a span, when telemetry is on.
    pub fn trace_id(&self, span: &tracing::Span) -> Option<String> {
        self.provider.as_ref()?;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let cx = tracing::dispatcher::with_default(&self.dispatch, || span.context());
        let id = cx.span().span_context().trace_id();
        (id != opentelemetry::trace::TraceId::INVALID).then(|| id.to_string())
    }

    /// The summary of every span ended so far; `None` when telemetry is off.
    pub fn metrics(&self) -> Option<MetricsSummary> {
        self.metrics.as_ref().map(MetricsProcessor::summary)
    }

    /// Ends the pipeline; when `save`, the trace file is written (atomically)
    /// and its path returned. `trace_id` names the file.
    pub fn finish(self, save: bool, trace_id: &str) -> Finished {
        let mut out = Finished {
            trace_file: None,
            warnings: self.warnings,
        };
        if let Some(provider) = &self.provider {
            let _ = provider.force_flush();
        }
        if let Some(handle) = &self.file {
            let name = format!(
                "{}_{}.otlp.json",
                chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
                trace_id
            );
            let res = handle.finish(save, &self.config.trace_dir, &name);
            out.trace_file = res.path;
            // One clear warning per problem: a directory that failed at start-up fails again here.
            if !self.sink_failed {
                out.warnings.extend(res.warning);
            }
        }
        // Spans and metrics go out side by side, so a dead backend costs one
        // export timeout in total, and its failures make one warning line.
        let (spans_warning, metrics_warning) = std::thread::scope(|scope| {
            let metrics = self
                .otel_metrics
                .as_ref()
                .map(|m| scope.spawn(move || m.export()));
            let spans = self.otlp.as_ref().and_then(|h| h.finish());
            (spans, metrics.and_then(|t| t.join().ok().flatten()))
        });
        match (spans_warning, metrics_warning) {
            (Some(s), Some(_)) => out
                .warnings
                .push(format!("{s} (metrics not delivered either)")),
            (Some(w), None) | (None, Some(w)) => out.warnings.push(w),
            (None, None) => {}
        }
        if let Some(provider) = self.provider {
            let _ = provider.shutdown();
        }
        out
    }

    /// Makes `span` (the run's root) a child of the trace in `TRACEPARENT` /
    /// `TRACESTATE`, so a run joins its caller's trace (a CI pipeline, a script).
    pub fn adopt_env_parent(&self, span: &tracing::Span) {
        let Some(tp) = std::env::var("TRACEPARENT")
            .ok()
            .filter(|v| !v.trim().is_empty())
        else {
            return;
        };
        use opentelemetry::propagation::TextMapPropagator;
        let mut carrier = std::collections::HashMap::new();
        carrier.insert("traceparent".to_string(), tp.trim().to_string());
        if let Ok(ts) = std::env::var("TRACESTATE") {
            carrier.insert("tracestate".to_string(), ts);
        }
        let cx = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&carrier);
        if cx.span().span_context().is_valid() {
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            let _ = tracing::dispatcher::with_default(&self.dispatch, || span.set_parent(cx));
        }
    }
}

/// A failure that happened in `span` itself: one `exception` event there
/// (`exception.type`, `exception.message`), `error.type` and Error status.
/// Record it once, on the span where it happened; the spans it propagates
/// through get [`mark_failed`].
pub fn record_exception(span: &tracing::Span, kind: &str, message: &str) {
    exception_event(span, kind, message);
    mark_failed(span, kind, message);
}

/// Only the `exception` event, for a span whose status is set by its own guard
/// when the error leaves it (a workflow's step limit or budget stop): marking it
/// here too would export `error.type` twice.
pub fn exception_event(span: &tracing::Span, kind: &str, message: &str) {
    tracing::error!(parent: span, { { attr::EXCEPTION_TYPE } = kind, { attr::EXCEPTION_MESSAGE } = message }, "{}", attr::EVENT_EXCEPTION);
}

/// A failure that reached `span` from below (a node's, an LLM attempt's):
/// `error.type` and Error status, without a second `exception` event.
pub fn mark_failed(span: &tracing::Span, kind: &str, message: &str) {
    span.record(attr::ERROR_TYPE, kind);
    span.record("otel.status_description", message);
}

/// Sets a string-array attribute (`gen_ai.response.finish_reasons`) on
/// `span`'s OpenTelemetry span: a `tracing` field cannot hold an array, so it
/// goes to the OTel span directly and reaches the file and the export as a
/// real array. Nothing happens when telemetry is off.
pub fn set_str_array(span: &tracing::Span, key: &'static str, values: &[String]) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let list: Vec<opentelemetry::StringValue> = values.iter().map(|v| v.clone().into()).collect();
    span.set_attribute(
        key,
        opentelemetry::Value::Array(opentelemetry::Array::String(list)),
    );
}

/// W3C trace context of the current span, as `(name, value)` pairs
/// (`traceparent`, `tracestate`), for child processes and outgoing requests.
/// Empty when telemetry is off.
pub fn current_trace_context() -> Vec<(String, String)> {
    trace_context_of(&tracing::Span::current())
}

/// W3C trace context naming `span` as the parent (see [`current_trace_context`]).
pub fn trace_context_of(span: &tracing::Span) -> Vec<(String, String)> {
    use opentelemetry::propagation::TextMapPropagator;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return Vec::new();
    }
    let mut carrier = std::collections::HashMap::new();
    opentelemetry_sdk::propagation::TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    let mut v: Vec<(String, String)> = carrier.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    v.sort();
    v
}

/// pflow's instrumentation scope: name, version and the conventions' schema URL.
pub fn scope() -> opentelemetry::InstrumentationScope {
    opentelemetry::InstrumentationScope::builder("pflow")
        .with_version(env!("CARGO_PKG_VERSION"))
        .with_schema_url(attr::SCHEMA_URL)
        .build()
}

/// `service.instance.id`: a random (version 4) UUID, new for each process.
fn instance_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Sets `key` on `span`'s OpenTelemetry span only (nothing when telemetry is
/// off), for attributes no `tracing` layer reads: a field declared on the
/// `tracing` span instead costs every span of its kind room for it (the
/// OpenTelemetry layer reserves one slot per declared field) and every layer
/// a visit when it is recorded. A node span declared 32 fields and set 3–5.
pub fn set_attribute(
    span: &tracing::Span,
    key: &'static str,
    value: impl Into<opentelemetry::Value>,
) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    span.set_attribute(key, value);
}

/// Adds event `name` to `span`'s OpenTelemetry span only (nothing when
/// telemetry is off): for pflow's detail events, which no `tracing` layer
/// reads (see [`set_attribute`]).
pub fn add_event(span: &tracing::Span, name: &'static str, attributes: Vec<KeyValue>) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    span.add_event(name, attributes);
}

/// The span id of `span` in hex, when telemetry records it. Its trace id is
/// the run's (every span of a run is in the root's trace): callers have it.
pub fn span_id(span: &tracing::Span) -> Option<String> {
    span_id_bytes(span).map(|b| crate::format::hex(&b))
}

/// [`span_id`] unformatted, for a caller that formats it off the run's thread.
pub fn span_id_bytes(span: &tracing::Span) -> Option<[u8; 8]> {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.span_id().to_bytes())
}

/// Adds a span link from `span` to another run's span (`trace_id`/`span_id`
/// in hex), its `pflow.link.type` saying why; ids that do not parse add nothing.
pub fn link(span: &tracing::Span, trace_id: &str, span_id: &str, kind: &'static str) {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let (Ok(t), Ok(s)) = (TraceId::from_hex(trace_id), SpanId::from_hex(span_id)) else {
        return;
    };
    let cx = SpanContext::new(t, s, TraceFlags::SAMPLED, true, TraceState::default());
    span.add_link_with_attributes(cx, vec![KeyValue::new(attr::LINK_TYPE, kind)]);
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_are_random_version_4_uuids() {
        let (a, b) = (instance_id(), instance_id());
        assert_ne!(a, b);
        let re = regex::Regex::new(
            r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$",
        )
        .unwrap();
        assert!(re.is_match(&a), "{a}");
    }

    #[test]
    fn host_arch_uses_the_conventions_values() {
        assert_eq!(attr::host_arch("x86_64"), "amd64");
        assert_eq!(attr::host_arch("aarch64"), "arm64");
        assert_eq!(attr::host_arch("riscv64"), "riscv64");
    }

    #[test]
    fn the_scope_has_version_and_schema_url() {
        let s = scope();
        assert_eq!(s.name(), "pflow");
        assert_eq!(s.version(), Some(env!("CARGO_PKG_VERSION")));
        assert_eq!(s.schema_url(), Some(attr::SCHEMA_URL));
    }
}
