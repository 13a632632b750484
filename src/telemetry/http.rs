//! HTTP CLIENT spans, per the OpenTelemetry HTTP client conventions: one for
//! each request the `http` node sends and for each LLM attempt's request, so
//! backends draw the outbound edge (service graphs) and the W3C trace context
//! sent with the request names this span as the parent of whatever the
//! server records.
//!
//! The span carries `http.request.method`, `url.full` (redacted by the one
//! redactor), `server.address`/`server.port`, `http.response.status_code`
//! and, on failure, `error.type` with an error status; its resource use:
//! `http.request.body.size`, `pflow.http.time_to_first_byte_s` (to the
//! response head) and, for the `http` node that reads the body under it,
//! `http.response.body.size`. It never carries an
//! exception event: the failure is recorded once, on the span that owns it
//! (the node or the LLM attempt).

use super::attr;
use tracing::field::Empty;

/// Opens the CLIENT span of one request (not entered: instrument the future with it).
pub fn client_span(method: &str, url: &reqwest::Url) -> tracing::Span {
    let known = attr::http_span(method) != "HTTP";
    let span = tracing::info_span!(
        target: "pflow::http",
        "http",
        otel.name = attr::http_span(method),
        otel.kind = "client",
        { attr::HTTP_REQUEST_METHOD } = if known { method } else { "_OTHER" },
        { attr::HTTP_REQUEST_METHOD_ORIGINAL } = Empty,
        { attr::URL_FULL } = super::redact::redact_url(url).as_str(),
        { attr::SERVER_ADDRESS } = Empty,
        { attr::SERVER_PORT } = Empty,
        { attr::HTTP_RESPONSE_STATUS_CODE } = Empty,
        { attr::HTTP_REQUEST_BODY_SIZE } = Empty,
        { attr::HTTP_RESPONSE_BODY_SIZE } = Empty,
        { attr::HTTP_TIME_TO_FIRST_BYTE } = Empty,
        { attr::ERROR_TYPE } = Empty,
        otel.status_code = Empty,
        otel.status_description = Empty,
    );
    if !known {
        span.record(attr::HTTP_REQUEST_METHOD_ORIGINAL, method);
    }
    if let Some(host) = url.host_str() {
        span.record(attr::SERVER_ADDRESS, host);
        if let Some(port) = url.port_or_known_default() {
            span.record(attr::SERVER_PORT, i64::from(port));
        }
    }
    span
}

/// The request's body size, when it has one held in memory (every body pflow sends).
pub fn record_request_body(span: &tracing::Span, request: &reqwest::Request) {
    if let Some(b) = request.body().and_then(reqwest::Body::as_bytes) {
        span.record(attr::HTTP_REQUEST_BODY_SIZE, b.len() as i64);
    }
}

/// The response head arrived `sent.elapsed()` after the request went out.
pub fn record_first_byte(span: &tracing::Span, sent: std::time::Instant) {
    span.record(attr::HTTP_TIME_TO_FIRST_BYTE, sent.elapsed().as_secs_f64());
}

/// The response body was read whole: `len` bytes (no content coding is
/// negotiated, so these are the bytes that crossed the wire, less chunk framing).
pub fn record_response_body(span: &tracing::Span, len: usize) {
    span.record(attr::HTTP_RESPONSE_BODY_SIZE, len as i64);
}

/// The response arrived: its status; 4xx and 5xx make the span an error
/// (`error.type` is the status code, as the conventions say).
pub fn record_status(span: &tracing::Span, status: u16) {
    span.record(attr::HTTP_RESPONSE_STATUS_CODE, i64::from(status));
    if status >= 400 {
        span.record(attr::ERROR_TYPE, status.to_string().as_str());
        span.record("otel.status_code", "error");
    }
}

/// No response (connection refused, timeout, a broken body): `kind` is the error class.
pub fn record_error(span: &tracing::Span, kind: &str, message: &str) {
    span.record(attr::ERROR_TYPE, kind);
    span.record("otel.status_description", message);
}

/// Adds the W3C trace context (`traceparent`, `tracestate`) naming `span` as
/// the parent to `request`, leaving a header the request already has (one a
/// workflow set itself). Nothing is added when telemetry is off.
pub fn inject_context(span: &tracing::Span, request: &mut reqwest::Request) {
    use reqwest::header::{HeaderName, HeaderValue};
    for (k, v) in super::trace_context_of(span) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(&v),
        ) {
            request.headers_mut().entry(name).or_insert(value);
        }
    }
}
