//! OpenTelemetry metrics, derived from the same spans as everything else and
//! exported over the OTLP settings once, when the run ends (a run is short:
//! one collection holds it all).
//!
//! GenAI metrics, by default the semantic-conventions v1.41 set:
//! `gen_ai.client.token.usage` (histogram, `{token}`, by `gen_ai.token.type`),
//! `gen_ai.client.operation.duration` (histogram, `s`) and, for streamed
//! calls, `gen_ai.client.operation.time_to_first_chunk` (histogram, `s`).
//! Under `OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental`, the set
//! the GenAI repository replaced them with, and only that:
//! `gen_ai.client.inference.duration`,
//! `gen_ai.client.inference.usage.input_tokens` / `.output_tokens` and
//! `gen_ai.client.inference.time_to_first_chunk`. Every GenAI point carries
//! operation, provider, request and response model and `server.address` /
//! `server.port`, with the conventions' bucket boundaries. pflow's own:
//! `pflow.llm.cost` (`{USD}` by model), `pflow.node.duration` (seconds by
//! node type and status) and `pflow.runs` (by status).

use super::attr;
use super::metrics::SpanFacts;
use super::otlp::{build_metric_exporter, OtlpSettings};
use opentelemetry::metrics::{Counter, Histogram, MeterProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{
    InstrumentKind, ManualReader, Pipeline, SdkMeterProvider, Temporality,
};
use opentelemetry_sdk::Resource;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Token buckets from the GenAI conventions: powers of 4 from 1 to 4^13.
pub fn token_buckets() -> Vec<f64> {
    (0..14).map(|i| 4f64.powi(i)).collect()
}

/// Duration buckets from the GenAI conventions: 0.01 s doubling to 81.92 s.
pub fn duration_buckets() -> Vec<f64> {
    (0..14).map(|i| 0.01 * 2f64.powi(i)).collect()
}

/// Time-to-first-chunk buckets from the GenAI conventions (seconds).
pub fn chunk_buckets() -> Vec<f64> {
    vec![
        0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.12, 0.14, 0.16, 0.18, 0.2, 0.25, 0.3,
        0.35, 0.4, 0.45, 0.5, 0.75, 1.0, 2.0, 5.0,
    ]
}

/// Lets the provider own the reader while we keep a handle to collect from it.
#[derive(Debug, Clone)]
struct SharedReader(Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline)
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// The GenAI instruments of one semantic-conventions version.
#[derive(Debug)]
enum GenAiInstruments {
    /// v1.41: one token histogram split by `gen_ai.token.type`.
    V141 {
        token_usage: Histogram<u64>,
        duration: Histogram<f64>,
        first_chunk: Histogram<f64>,
    },
    /// `gen_ai_latest_experimental`: input and output tokens apart.
    Latest {
        input_tokens: Histogram<u64>,
        output_tokens: Histogram<u64>,
        duration: Histogram<f64>,
        first_chunk: Histogram<f64>,
    },
}

impl GenAiInstruments {
    fn new(meter: &opentelemetry::metrics::Meter, latest: bool) -> Self {
        let tokens = |name: &'static str, what: &'static str| {
            meter
                .u64_histogram(name)
                .with_unit("{token}")
                .with_description(what)
                .with_boundaries(token_buckets())
                .build()
        };
        let seconds = |name: &'static str, what: &'static str, buckets: Vec<f64>| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(what)
                .with_boundaries(buckets)
                .build()
        };
        if latest {
            GenAiInstruments::Latest {
                input_tokens: tokens(
                    attr::METRIC_INFERENCE_INPUT_TOKENS,
                    "The number of input (prompt) tokens used per inference operation",
                ),
                output_tokens: tokens(
                    attr::METRIC_INFERENCE_OUTPUT_TOKENS,
                    "The number of output (completion) tokens used per inference operation",
                ),
                duration: seconds(
                    attr::METRIC_INFERENCE_DURATION,
                    "GenAI inference operation duration",
                    duration_buckets(),
                ),
                first_chunk: seconds(
                    attr::METRIC_INFERENCE_TIME_TO_FIRST_CHUNK,
                    "Time to receive the first chunk of a streamed response",
                    chunk_buckets(),
                ),
            }
        } else {
            GenAiInstruments::V141 {
                token_usage: tokens(
                    attr::METRIC_TOKEN_USAGE,
                    "Number of input and output tokens used",
                ),
                duration: seconds(
                    attr::METRIC_OPERATION_DURATION,
                    "GenAI operation duration",
                    duration_buckets(),
                ),
                first_chunk: seconds(
                    attr::METRIC_TIME_TO_FIRST_CHUNK,
                    "Time to receive the first chunk of a streamed response",
                    chunk_buckets(),
                ),
            }
        }
    }

    fn record(&self, f: &SpanFacts, secs: f64, attrs: &[KeyValue]) {
        let (duration, first_chunk) = match self {
            GenAiInstruments::V141 {
                duration,
                first_chunk,
                ..
            }
            | GenAiInstruments::Latest {
                duration,
                first_chunk,
                ..
            } => (duration, first_chunk),
        };
        duration.record(secs, attrs);
        if let Some(t) = f.time_to_first_chunk {
            first_chunk.record(t, attrs);
        }
        if !f.has_usage {
            return;
        }
        match self {
            GenAiInstruments::V141 { token_usage, .. } => {
                let with = |t: &'static str| {
                    let mut a = attrs.to_vec();
                    a.push(KeyValue::new(attr::GEN_AI_TOKEN_TYPE, t));
                    a
                };
                token_usage.record(f.tokens.input, &with("input"));
                token_usage.record(f.tokens.output, &with("output"));
            }
            GenAiInstruments::Latest {
                input_tokens,
                output_tokens,
                ..
            } => {
                input_tokens.record(f.tokens.input, attrs);
                output_tokens.record(f.tokens.output, attrs);
            }
        }
    }
}

/// The instruments, fed from finished spans.
#[derive(Debug)]
pub struct OtelMetrics {
    provider: SdkMeterProvider,
    reader: Arc<ManualReader>,
    settings: OtlpSettings,
    genai: GenAiInstruments,
    cost: Counter<f64>,
    node_duration: Histogram<f64>,
    runs: Counter<u64>,
}

impl OtelMetrics {
    pub fn new(settings: &OtlpSettings, resource: &Resource) -> OtelMetrics {
        let reader = Arc::new(
            ManualReader::builder()
                .with_temporality(settings.temporality)
                .build(),
        );
        let provider = SdkMeterProvider::builder()
            .with_resource(resource.clone())
            .with_reader(SharedReader(reader.clone()))
            .build();
        let meter = provider.meter_with_scope(super::scope());
        OtelMetrics {
            genai: GenAiInstruments::new(&meter, settings.semconv_latest),
            cost: meter
                .f64_counter(attr::METRIC_LLM_COST)
                .with_unit("{USD}")
                .with_description("Cost of LLM calls")
                .build(),
            node_duration: meter
                .f64_histogram(attr::METRIC_NODE_DURATION)
                .with_unit("s")
                .with_description("Duration of node executions")
                .with_boundaries(duration_buckets())
                .build(),
            runs: meter
                .u64_counter(attr::METRIC_RUNS)
                .with_unit("{run}")
                .with_description("Workflow runs by status")
                .build(),
            provider,
            reader,
            settings: settings.clone(),
        }
    }

    /// Records what a finished span says.
    pub fn record(&self, f: &SpanFacts) {
        let secs = f.duration.as_secs_f64();
        let kind = f.kind();
        if kind == crate::accounting::span::SpanKind::Run {
            self.runs.add(
                1,
                &[KeyValue::new(
                    attr::RUN_STATUS,
                    f.run_status.clone().unwrap_or_else(|| "unknown".into()),
                )],
            );
            return;
        }
        if kind == crate::accounting::span::SpanKind::LlmCall {
            let mut attrs = vec![
                KeyValue::new(
                    attr::GEN_AI_OPERATION_NAME,
                    f.operation.clone().unwrap_or_default(),
                ),
                KeyValue::new(
                    attr::GEN_AI_PROVIDER_NAME,
                    f.provider_name.clone().unwrap_or_default(),
                ),
                KeyValue::new(
                    attr::GEN_AI_REQUEST_MODEL,
                    f.model.clone().unwrap_or_default(),
                ),
            ];
            if let Some(m) = &f.response_model {
                attrs.push(KeyValue::new(attr::GEN_AI_RESPONSE_MODEL, m.clone()));
            }
            if let Some(a) = &f.server_address {
                attrs.push(KeyValue::new(attr::SERVER_ADDRESS, a.clone()));
                if let Some(p) = f.server_port {
                    attrs.push(KeyValue::new(attr::SERVER_PORT, p));
                }
            }
            if let Some(e) = &f.error_type {
                attrs.push(KeyValue::new(attr::ERROR_TYPE, e.clone()));
            }
            self.genai.record(f, secs, &attrs);
            let call = f.call_usage();
            let known = call
                .cost_source
                .is_none_or(crate::accounting::CostSource::is_known);
            if let (Some(c), true) = (call.usd, known) {
                self.cost.add(
                    c,
                    &[KeyValue::new(
                        attr::GEN_AI_REQUEST_MODEL,
                        f.model.clone().unwrap_or_default(),
                    )],
                );
            }
            return;
        }
        if let (Some(role), Some(node_type)) = (&f.node_role, &f.node_type) {
            if role != super::attr::ROLE_BATCH {
                self.node_duration.record(
                    secs,
                    &[
                        KeyValue::new(attr::NODE_TYPE, node_type.clone()),
                        KeyValue::new(attr::NODE_STATUS, f.node_status.clone().unwrap_or_default()),
                    ],
                );
            }
        }
    }

    /// Collects everything recorded and sends it, bounded by the export timeout.
    /// Returns one warning when it could not be delivered.
    pub fn export(&self) -> Option<String> {
        let mut rm = ResourceMetrics::default();
        if let Err(e) = self.reader.collect(&mut rm) {
            return Some(format!("OTel metrics not collected: {e}"));
        }
        let settings = &self.settings;
        let endpoint = settings.metrics_endpoint.clone().unwrap_or_default();
        let result = std::thread::scope(|scope| {
            scope
                .spawn(|| -> Result<(), String> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| e.to_string())?;
                    rt.block_on(async {
                        let exporter = build_metric_exporter(settings)?;
                        let r = tokio::time::timeout(settings.timeout, exporter.export(&rm)).await;
                        let _ = exporter.shutdown_with_timeout(Duration::from_millis(100));
                        match r {
                            Ok(Ok(())) => Ok(()),
                            Ok(Err(e)) => Err(e.to_string()),
                            Err(_) => Err(format!(
                                "no answer within {:.1}s",
                                settings.timeout.as_secs_f64()
                            )),
                        }
                    })
                })
                .join()
                .unwrap_or_else(|_| Err("metrics export thread failed".into()))
        });
        let _ = self.provider.shutdown();
        result.err().map(|e| {
            format!("OTLP metrics export to {endpoint} failed: {e}; the run's result is unaffected")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_boundaries_follow_the_conventions() {
        let t = token_buckets();
        assert_eq!(t.first(), Some(&1.0));
        assert_eq!(t.last(), Some(&67_108_864.0));
        let d = duration_buckets();
        assert_eq!(d.len(), 14);
        assert!((d[13] - 81.92).abs() < 1e-9);
    }
}
