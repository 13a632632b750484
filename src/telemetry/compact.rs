//! The trace file's compact form: proto3 default fields left out.
//!
//! [`strip_empty_fields`] removes the fields at their proto3 default
//! (`"traceState":""`, zero dropped counts, empty links, an empty status
//! message, an unset status) from an encoded line: the OTLP/JSON mapping
//! lets a writer omit them and every OTLP/JSON reader (pflow's, the
//! Collector's) reads them back as the defaults, so the spans are the same.
//!
//! Attributes are never left out here, even when derivable: the Collector's
//! replay pipeline sends the file's spans to a backend beside the live
//! export, and Jaeger shows a span once only when both copies are identical.

use std::sync::LazyLock;

/// Proto3 default fields as serde writes them. Each pattern has unescaped
/// quotes in places a JSON string cannot hold them (inside a string every
/// `"` is escaped), so it only ever matches the structure itself.
const EMPTY_FIELDS: [(&str, &str); 7] = [
    // An unset status (code 0) as a whole; listed first, it wins over the message rule.
    (r#","status":{"message":"","code":0}"#, ""),
    (r#","traceState":"""#, ""),
    (r#","droppedAttributesCount":0"#, ""),
    (r#","droppedEventsCount":0"#, ""),
    (r#","links":[]"#, ""),
    (r#","droppedLinksCount":0"#, ""),
    (r#"{"message":"","#, "{"),
];

static EMPTY: LazyLock<Option<aho_corasick::AhoCorasick>> = LazyLock::new(|| {
    aho_corasick::AhoCorasick::builder()
        .match_kind(aho_corasick::MatchKind::LeftmostFirst)
        .build(EMPTY_FIELDS.iter().map(|(p, _)| p))
        .ok()
});

/// An encoded OTLP/JSON line without its default-valued fields.
pub fn strip_empty_fields(line: Vec<u8>) -> Vec<u8> {
    match EMPTY.as_ref() {
        Some(ac) => {
            let with: Vec<&str> = EMPTY_FIELDS.iter().map(|(_, r)| *r).collect();
            ac.replace_all_bytes(&line, &with)
        }
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value::Value as V, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::trace::v1::span::Event;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

    #[test]
    fn stripped_lines_parse_to_the_same_request() {
        let kv = |k: &str, v: &str| KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(V::StringValue(v.into())),
            }),
            ..Default::default()
        };
        // A value holding the patterns as text stays untouched.
        let tricky = r#"{"x":",\"traceState\":\"\"","links":[],"message":"",}"#;
        let span = |code| Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: "node a".into(),
            attributes: vec![kv("pflow.node.params", tricky)],
            events: vec![Event {
                time_unix_nano: 5,
                name: "pflow.store.write".into(),
                attributes: vec![kv("pflow.store.key", "a.x")],
                dropped_attributes_count: 0,
            }],
            status: Some(Status {
                message: String::new(),
                code,
            }),
            ..Default::default()
        };
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: None,
                scope_spans: vec![ScopeSpans {
                    scope: None,
                    spans: vec![span(0), span(1)],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        let full = serde_json::to_vec(&req).unwrap();
        let short = strip_empty_fields(full.clone());
        assert!(
            short.len() + 150 < full.len(),
            "{} vs {}",
            short.len(),
            full.len()
        );
        let back: ExportTraceServiceRequest = serde_json::from_slice(&short).unwrap();
        // An unset status is left out whole: read back, it is no status at all.
        let mut want = req;
        want.resource_spans[0].scope_spans[0].spans[0].status = None;
        assert_eq!(back, want);
    }
}
