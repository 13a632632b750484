//! OTLP/JSON straight from the SDK's `SpanData`, for the trace file.
//!
//! Going through `opentelemetry-proto` (SpanData → proto structs → serde →
//! a pass removing proto3 defaults) cost the writer thread ~11 µs a span,
//! most of it in the copy into proto structs and the default-stripping
//! pass over every line: with `--trace` that was a quarter of a run's CPU.
//! Here each span is written once, in the field order and encoding the
//! proto's serde mapping uses (ids in hex, 64-bit integers as strings,
//! enums as numbers), already without the fields at their default that
//! [`super::compact::strip_empty_fields`] would remove. A test pins the
//! bytes to the proto path's on every kind of span, so readers (pflow's own,
//! the Collector's `otlpjsonfile` receiver) see exactly what they saw.
//!
//! The envelope (resource and scope) is still encoded by the proto crate,
//! once per run and per scope, and reused for every line.

use opentelemetry::trace::{SpanKind, Status};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::AnyValue;
use opentelemetry_proto::tonic::resource::v1::Resource as ProtoResource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_sdk::trace::SpanData;
use std::time::{SystemTime, UNIX_EPOCH};

/// The bytes around the spans of a line: the resource's part, and each
/// scope's (encoded on first use).
pub struct Envelope {
    /// `{"resourceSpans":[{"resource":{…},"scopeSpans":[`
    head: Vec<u8>,
    /// `],"schemaUrl":"…"}]}`
    tail: Vec<u8>,
    scopes: Vec<ScopeEnvelope>,
}

struct ScopeEnvelope {
    scope: InstrumentationScope,
    /// `{"scope":{…},"spans":[`
    head: Vec<u8>,
    /// `],"schemaUrl":"…"}`
    tail: Vec<u8>,
}

/// Splits an encoded (and default-stripped) envelope where its empty list
/// `marker` (`"spans":[]`) is, keeping `[` with the head and `]` with the tail.
/// The marker's quotes are structural: inside a JSON string they are escaped.
fn split_at_list(json: Vec<u8>, marker: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let at = json
        .windows(marker.len())
        .rposition(|w| w == marker)
        .map(|i| i + marker.len() - 1);
    match at {
        Some(i) => (json[..i].to_vec(), json[i..].to_vec()),
        // Cannot happen for serde's encoding of these structs; an empty
        // envelope still gives lines every OTLP/JSON reader accepts.
        None => (
            b"{\"resourceSpans\":[{\"scopeSpans\":[".to_vec(),
            b"]}]}".to_vec(),
        ),
    }
}

impl Envelope {
    pub fn new(resource: &ResourceAttributesWithSchema) -> Envelope {
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(ProtoResource {
                    attributes: resource.attributes.0.clone(),
                    dropped_attributes_count: 0,
                    entity_refs: vec![],
                }),
                scope_spans: vec![],
                schema_url: resource.schema_url.clone().unwrap_or_default(),
            }],
        };
        let json = super::compact::strip_empty_fields(serde_json::to_vec(&req).unwrap_or_default());
        let (head, tail) = split_at_list(json, br#""scopeSpans":[]"#);
        Envelope {
            head,
            tail,
            scopes: Vec::new(),
        }
    }

    /// The index of `scope`'s envelope, encoding it the first time.
    pub fn scope_index(&mut self, scope: &InstrumentationScope) -> usize {
        if let Some(i) = self.scopes.iter().position(|s| &s.scope == scope) {
            return i;
        }
        let ss = ScopeSpans {
            scope: Some((scope, None).into()),
            spans: vec![],
            schema_url: scope.schema_url().unwrap_or_default().to_owned(),
        };
        let json = super::compact::strip_empty_fields(serde_json::to_vec(&ss).unwrap_or_default());
        let (head, tail) = split_at_list(json, br#""spans":[]"#);
        self.scopes.push(ScopeEnvelope {
            scope: scope.clone(),
            head,
            tail,
        });
        self.scopes.len() - 1
    }

    /// The bytes a line adds around the spans of `scopes` (one group each).
    pub fn overhead(&self, scopes: impl Iterator<Item = usize>) -> usize {
        let mut n = self.head.len() + self.tail.len();
        for (k, i) in scopes.enumerate() {
            let s = &self.scopes[i];
            n += s.head.len() + s.tail.len() + usize::from(k > 0);
        }
        n
    }

    /// One line: every `(scope, spans)` group (spans already joined by commas).
    pub fn line<'a>(&self, groups: impl Iterator<Item = (usize, &'a [u8])> + Clone) -> Vec<u8> {
        // Sized up front: grown by doubling, a 256 KiB line was copied ~5 times.
        let size = self.overhead(groups.clone().map(|(i, _)| i))
            + groups.clone().map(|(_, b)| b.len()).sum::<usize>();
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(&self.head);
        for (k, (i, spans)) in groups.enumerate() {
            if k > 0 {
                out.push(b',');
            }
            let s = &self.scopes[i];
            out.extend_from_slice(&s.head);
            out.extend_from_slice(spans);
            out.extend_from_slice(&s.tail);
        }
        out.extend_from_slice(&self.tail);
        out
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn int(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn string(out: &mut Vec<u8>, s: &str) {
    // serde_json's escaping: the same bytes the proto path wrote.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn hex(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    crate::format::hex_into(out, bytes);
    out.push(b'"');
}

fn value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::String(s) => {
            out.extend_from_slice(br#"{"stringValue":"#);
            string(out, s.as_str());
            out.push(b'}');
        }
        Value::Bool(b) => {
            out.extend_from_slice(if *b {
                br#"{"boolValue":true}"#
            } else {
                br#"{"boolValue":false}"#
            });
        }
        Value::I64(i) => {
            out.extend_from_slice(br#"{"intValue":""#);
            int(out, *i);
            out.extend_from_slice(b"\"}");
        }
        // Doubles (NaN and infinities as strings) and arrays are rare: the
        // proto crate's own mapping encodes them.
        other => {
            let _ = serde_json::to_writer(&mut *out, &AnyValue::from(other.clone()));
        }
    }
}

fn attributes(out: &mut Vec<u8>, kvs: &[KeyValue]) {
    out.extend_from_slice(br#""attributes":["#);
    for (k, kv) in kvs.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"key":"#);
        string(out, kv.key.as_str());
        out.extend_from_slice(br#","value":"#);
        value(out, &kv.value);
        out.push(b'}');
    }
    out.push(b']');
}

fn count(out: &mut Vec<u8>, name: &str, n: u32) {
    if n != 0 {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
        int(out, n);
    }
}

/// `{"traceId":…,"spanId":…` and a non-empty `traceState`: how a span and a link both open.
fn open_context(out: &mut Vec<u8>, cx: &opentelemetry::trace::SpanContext) {
    out.extend_from_slice(br#"{"traceId":"#);
    hex(out, &cx.trace_id().to_bytes());
    out.extend_from_slice(br#","spanId":"#);
    hex(out, &cx.span_id().to_bytes());
    let header = cx.trace_state().header();
    if !header.is_empty() {
        out.extend_from_slice(br#","traceState":"#);
        string(out, &header);
    }
}

/// `flags` as the proto sets them: the trace flags, plus "has is-remote" and
/// "is remote" (`SpanFlags`).
fn flags(trace_flags: u8, remote: bool) -> u32 {
    u32::from(trace_flags) | 0x100 | if remote { 0x200 } else { 0 }
}

fn kind(k: &SpanKind) -> u8 {
    match k {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

/// Appends `s` as one OTLP/JSON span object.
pub fn write_span(out: &mut Vec<u8>, s: &SpanData) {
    let cx = &s.span_context;
    open_context(out, cx);
    out.extend_from_slice(br#","parentSpanId":"#);
    if s.parent_span_id == opentelemetry::trace::SpanId::INVALID {
        out.extend_from_slice(b"\"\"");
    } else {
        hex(out, &s.parent_span_id.to_bytes());
    }
    out.extend_from_slice(br#","flags":"#);
    int(
        out,
        flags(cx.trace_flags().to_u8(), s.parent_span_is_remote),
    );
    out.extend_from_slice(br#","name":"#);
    string(out, &s.name);
    out.extend_from_slice(br#","kind":"#);
    int(out, kind(&s.span_kind));
    out.extend_from_slice(br#","startTimeUnixNano":""#);
    int(out, nanos(s.start_time));
    out.extend_from_slice(br#"","endTimeUnixNano":""#);
    int(out, nanos(s.end_time));
    out.extend_from_slice(b"\",");
    attributes(out, &s.attributes);
    count(out, "droppedAttributesCount", s.dropped_attributes_count);
    out.extend_from_slice(br#","events":["#);
    for (k, e) in s.events.events.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"timeUnixNano":""#);
        int(out, nanos(e.timestamp));
        out.extend_from_slice(br#"","name":"#);
        string(out, &e.name);
        out.push(b',');
        attributes(out, &e.attributes);
        count(out, "droppedAttributesCount", e.dropped_attributes_count);
        out.push(b'}');
    }
    out.push(b']');
    count(out, "droppedEventsCount", s.events.dropped_count);
    if !s.links.links.is_empty() {
        out.extend_from_slice(br#","links":["#);
        for (k, l) in s.links.links.iter().enumerate() {
            if k > 0 {
                out.push(b',');
            }
            let lc = &l.span_context;
            open_context(out, lc);
            out.push(b',');
            attributes(out, &l.attributes);
            count(out, "droppedAttributesCount", l.dropped_attributes_count);
            out.extend_from_slice(br#","flags":"#);
            int(out, flags(lc.trace_flags().to_u8(), lc.is_remote()));
            out.push(b'}');
        }
        out.push(b']');
    }
    count(out, "droppedLinksCount", s.links.dropped_count);
    match &s.status {
        Status::Unset => {}
        Status::Ok => out.extend_from_slice(br#","status":{"code":1}"#),
        Status::Error { description } => {
            out.extend_from_slice(br#","status":{"#);
            if !description.is_empty() {
                out.extend_from_slice(br#""message":"#);
                string(out, description);
                out.push(b',');
            }
            out.extend_from_slice(br#""code":2}"#);
        }
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{Link, SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    use opentelemetry::{Array, StringValue};
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use std::borrow::Cow;
    use std::time::Duration;

    fn span(i: u64, scope: &InstrumentationScope) -> SpanData {
        let t0 = UNIX_EPOCH + Duration::from_nanos(1_796_559_572_082_458_587 + i);
        let ctx = |t: u128, s: u64, state: &str, remote: bool| {
            SpanContext::new(
                TraceId::from(t),
                SpanId::from(s),
                TraceFlags::SAMPLED,
                remote,
                TraceState::from_key_value(
                    state
                        .split(',')
                        .filter(|p| !p.is_empty())
                        .filter_map(|p| p.split_once('=')),
                )
                .unwrap_or_default(),
            )
        };
        let mut events = SpanEvents::default();
        let mut links = SpanLinks::default();
        let mut attributes = vec![
            KeyValue::new("pflow.node.id", format!("n{i}")),
            KeyValue::new("quote\"d\nkey", "tab\tand \u{1F600} and \\ and \u{7}"),
            KeyValue::new("n", -42_i64),
            KeyValue::new("yes", true),
        ];
        match i % 6 {
            0 => {
                attributes.push(KeyValue::new("f", 0.1_f64));
                attributes.push(KeyValue::new("nan", f64::NAN));
                attributes.push(KeyValue::new("inf", f64::NEG_INFINITY));
                attributes.push(KeyValue::new("whole", 3.0_f64));
            }
            1 => {
                attributes.push(KeyValue::new(
                    "gen_ai.response.finish_reasons",
                    Value::Array(Array::String(vec![
                        StringValue::from("stop"),
                        "len\"gth".into(),
                    ])),
                ));
                attributes.push(KeyValue::new("ints", Value::Array(Array::I64(vec![1, -2]))));
                attributes.push(KeyValue::new(
                    "bools",
                    Value::Array(Array::Bool(vec![true])),
                ));
                attributes.push(KeyValue::new("floats", Value::Array(Array::F64(vec![0.5]))));
            }
            2 => {
                events.events.push(opentelemetry::trace::Event::new(
                    "pflow.store.write",
                    t0 + Duration::from_micros(3),
                    vec![KeyValue::new("pflow.store.key", "a.x")],
                    2,
                ));
                events.events.push(opentelemetry::trace::Event::new(
                    "exception",
                    t0 + Duration::from_micros(4),
                    vec![],
                    0,
                ));
                events.dropped_count = 3;
            }
            3 => {
                links.links.push(Link::new(
                    ctx(7, 8, "vendor=a", true),
                    vec![KeyValue::new("pflow.link.type", "resumed_from")],
                    1,
                ));
                links
                    .links
                    .push(Link::new(ctx(9, 10, "", false), vec![], 0));
                links.dropped_count = 4;
            }
            _ => {}
        }
        let status = match i % 4 {
            0 => Status::Unset,
            1 => Status::Ok,
            2 => Status::error("boom \"quoted\""),
            _ => Status::error(""),
        };
        SpanData {
            span_context: ctx(
                0xabc + u128::from(i % 2),
                0x1000 + i,
                if i.is_multiple_of(5) { "k=v" } else { "" },
                false,
            ),
            parent_span_id: if i.is_multiple_of(3) {
                SpanId::INVALID
            } else {
                SpanId::from(0xfeed)
            },
            parent_span_is_remote: i.is_multiple_of(7),
            span_kind: [
                SpanKind::Internal,
                SpanKind::Server,
                SpanKind::Client,
                SpanKind::Producer,
                SpanKind::Consumer,
            ][(i % 5) as usize]
                .clone(),
            name: Cow::Owned(format!("node n{i} \"x\"")),
            start_time: t0,
            end_time: t0 + Duration::from_micros(10),
            attributes,
            dropped_attributes_count: (i % 2) as u32,
            events,
            links,
            status,
            instrumentation_scope: scope.clone(),
        }
    }

    #[test]
    fn lines_are_byte_for_byte_what_the_proto_mapping_wrote() {
        let scope = crate::telemetry::scope();
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_schema_url(
                [
                    KeyValue::new("service.name", "pflow"),
                    KeyValue::new("k\"", 1_i64),
                ],
                "https://opentelemetry.io/schemas/1.41.0",
            )
            .build();
        let resource = ResourceAttributesWithSchema::from(&resource);
        let spans: Vec<SpanData> = (0..24).map(|i| span(i, &scope)).collect();
        // The reference: proto structs, serde, then the default-stripping pass.
        let reference = crate::telemetry::compact::strip_empty_fields(
            serde_json::to_vec(&ExportTraceServiceRequest {
                resource_spans: group_spans_by_resource_and_scope(spans.clone(), &resource),
            })
            .unwrap(),
        );
        let mut env = Envelope::new(&resource);
        let i = env.scope_index(&scope);
        let mut body = Vec::new();
        for (k, s) in spans.iter().enumerate() {
            if k > 0 {
                body.push(b',');
            }
            write_span(&mut body, s);
        }
        let line = env.line(std::iter::once((i, &body[..])));
        assert_eq!(
            String::from_utf8(line.clone()).unwrap(),
            String::from_utf8(reference).unwrap()
        );
        assert_eq!(line.len(), env.overhead(std::iter::once(i)) + body.len());
    }

    #[test]
    fn two_scopes_make_two_groups_in_one_line() {
        let a = crate::telemetry::scope();
        let b = InstrumentationScope::builder("other").build();
        let resource = ResourceAttributesWithSchema::from(
            &opentelemetry_sdk::Resource::builder_empty().build(),
        );
        let spans = vec![span(4, &a), span(5, &b)];
        let reference = crate::telemetry::compact::strip_empty_fields(
            serde_json::to_vec(&ExportTraceServiceRequest {
                resource_spans: group_spans_by_resource_and_scope(spans.clone(), &resource),
            })
            .unwrap(),
        );
        let mut env = Envelope::new(&resource);
        let (ia, ib) = (env.scope_index(&a), env.scope_index(&b));
        assert_eq!(env.scope_index(&a), ia, "a scope is encoded once");
        let (mut x, mut y) = (Vec::new(), Vec::new());
        write_span(&mut x, &spans[0]);
        write_span(&mut y, &spans[1]);
        let line = env.line([(ia, &x[..]), (ib, &y[..])].into_iter());
        assert_eq!(
            String::from_utf8(line.clone()).unwrap(),
            String::from_utf8(reference).unwrap()
        );
        assert_eq!(
            line.len(),
            env.overhead([ia, ib].into_iter()) + x.len() + y.len()
        );
    }
}
