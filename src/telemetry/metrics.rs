//! The metrics processor: an OpenTelemetry `SpanProcessor` that folds spans
//! into the run's metrics summary as they end, with the accounting model's
//! one aggregation ([`crate::accounting::summary`]).

pub use crate::accounting::span::SpanFacts;
pub use crate::accounting::summary::{
    Aggregator, BudgetMetrics, MetricsSummary, SectionMetrics, TotalMetrics,
};
pub use crate::accounting::{Tokens, Usage};
use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The span processor; cheap to clone (shares the aggregates).
///
/// It can hand each span on to a `next` processor after reading it: the SDK
/// clones `SpanData` for every processor but the last, so chaining the trace
/// file behind the metrics saves one copy of every span.
#[derive(Debug, Clone, Default)]
pub struct MetricsProcessor {
    agg: Arc<Mutex<Aggregator>>,
    next: Vec<Arc<dyn SpanProcessor>>,
    otel: Option<Arc<super::otel_metrics::OtelMetrics>>,
    /// `--live`: the feed sees each span with the facts read here (no copy of the span).
    live: Option<super::live::LiveFeed>,
}

impl MetricsProcessor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Also records OTel metrics (for OTLP export) from every span.
    pub fn with_otel_metrics(mut self, m: Arc<super::otel_metrics::OtelMetrics>) -> Self {
        self.otel = Some(m);
        self
    }

    /// Also publishes every span to the live feed (`--live`).
    pub fn with_live(mut self, feed: super::live::LiveFeed) -> Self {
        self.live = Some(feed);
        self
    }

    /// Passes every span on to `next` once aggregated.
    pub fn with_next(mut self, next: impl SpanProcessor + 'static) -> Self {
        self.next.push(Arc::new(next));
        self
    }

    /// The summary of every span ended so far.
    pub fn summary(&self) -> MetricsSummary {
        match self.agg.lock() {
            Ok(a) => a.summary(),
            Err(poisoned) => poisoned.into_inner().summary(),
        }
    }
}

impl SpanProcessor for MetricsProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        let facts = SpanFacts::from_span(&span);
        match self.agg.lock() {
            Ok(mut a) => a.add(&facts),
            Err(poisoned) => poisoned.into_inner().add(&facts),
        }
        if let Some(o) = &self.otel {
            o.record(&facts);
        }
        if let Some(l) = &self.live {
            l.observe(&span, &facts);
        }
        // Every consumer but the last gets a copy; the last takes the span itself.
        if let Some((last, rest)) = self.next.split_last() {
            for n in rest {
                n.on_end(span.clone());
            }
            last.on_end(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.next.iter().try_for_each(|n| n.force_flush())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.next
            .iter()
            .try_for_each(|n| n.shutdown_with_timeout(timeout))
    }
}
