//! `http`: one HTTP request. JSON responses are parsed, others kept as text;
//! a status of 400 or more fails the node unless `ignore_errors`.

use super::{specs, Node, NodeContext, NodeError, NodeFuture, NodeOutput, NodeSpec, Params};
use crate::telemetry::http;
use serde_json::{json, Map, Value};
use tracing::Instrument;

pub struct Http;

impl Node for Http {
    fn spec(&self) -> &'static NodeSpec {
        &specs::HTTP
    }

    fn run<'a>(&'a self, ctx: &'a NodeContext, params: Params) -> NodeFuture<'a> {
        Box::pin(async move {
            let url = params.str("url")?;
            let has_body = params.get("body").is_some() || params.get("json").is_some();
            let method_s = params
                .str_opt("method")?
                .map(str::to_ascii_uppercase)
                .unwrap_or_else(|| {
                    if has_body {
                        "POST".into()
                    } else {
                        "GET".into()
                    }
                });
            let method = reqwest::Method::from_bytes(method_s.as_bytes()).map_err(|_| {
                NodeError::param("method", format!("`{method_s}` is not an HTTP method"))
            })?;
            let timeout = params.f64_opt("timeout")?.unwrap_or(30.0);
            if !(timeout > 0.0 && timeout.is_finite()) {
                return Err(NodeError::param(
                    "timeout",
                    "must be a positive number of seconds",
                ));
            }
            let mut rb = ctx
                .services
                .http()
                .request(method.clone(), url)
                .timeout(crate::limits::secs(timeout, crate::limits::MAX_TIMEOUT));
            let user_headers = params.object_opt("headers")?;
            if let Some(h) = user_headers {
                for (k, v) in h {
                    let v = v
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string());
                    // A credential header's value is scrubbed wherever it shows up later (a body echoing it).
                    if crate::telemetry::redact::is_secret_name(k) {
                        crate::telemetry::redact::add_secret(&v);
                    }
                    rb = rb.header(k.as_str(), v);
                }
            }
            if let Some(q) = params.object_opt("query")? {
                let pairs: Vec<(String, String)> = q
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            v.as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| v.to_string()),
                        )
                    })
                    .collect();
                rb = rb.query(&pairs);
            }
            if let Some(j) = params.get("json") {
                rb = rb.json(j);
            } else if let Some(b) = params.text_opt("body") {
                rb = rb.body(b);
            }
            let mut request = rb.build().map_err(|e| {
                NodeError::new(
                    "invalid_request",
                    format!("{method_s} {url} failed: {}", error_chain(&e)),
                )
            })?;
            let span = http::client_span(request.method().as_str(), request.url());
            // Propagate the trace, unless the workflow set the headers itself.
            http::inject_context(&span, &mut request);
            http::record_request_body(&span, &request);
            let sent = std::time::Instant::now();
            let resp = ctx
                .services
                .http()
                .execute(request)
                .instrument(span.clone())
                .await
                .map_err(|e| {
                    let kind = if e.is_timeout() {
                        "timeout"
                    } else if e.is_connect() {
                        "connect_error"
                    } else {
                        "http_error"
                    };
                    let message = format!("{method_s} {url} failed: {}", error_chain(&e));
                    http::record_error(&span, kind, &message);
                    NodeError::new(kind, message)
                })?;
            http::record_first_byte(&span, sent);
            http::record_status(&span, resp.status().as_u16());
            let status = resp.status();
            let mut headers = Map::new();
            for (k, v) in resp.headers() {
                headers.insert(
                    k.as_str().to_string(),
                    json!(String::from_utf8_lossy(v.as_bytes())),
                );
            }
            let is_json = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| ct.contains("json"));
            // The body is read under the CLIENT span, which ends once it is in.
            let bytes = resp.bytes().instrument(span.clone()).await.map_err(|e| {
                let message = format!("{method_s} {url}: reading the body failed: {e}");
                // A 4xx/5xx already named the span's error: each key is recorded once.
                if status.as_u16() < 400 {
                    http::record_error(&span, "http_error", &message);
                }
                NodeError::new("http_error", message)
            })?;
            http::record_response_body(&span, bytes.len());
            drop(span);
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let body = if is_json || text.trim_start().starts_with(['{', '[']) {
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            } else {
                Value::String(text)
            };
            let mut outputs = Map::new();
            outputs.insert("response".into(), body);
            outputs.insert("status_code".into(), json!(status.as_u16()));
            outputs.insert("headers".into(), Value::Object(headers));
            if status.as_u16() >= 400 && !params.bool_or("ignore_errors", false)? {
                return Err(NodeError::new(
                    "http_status",
                    format!("{method_s} {url} returned {status}"),
                )
                .with_details(Value::Object(outputs)));
            }
            Ok(NodeOutput::new(outputs))
        })
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
