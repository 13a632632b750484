//! The compact form of pflow's spans: what a reader can derive is not
//! recorded, and proto3 default fields are not written.
//!
//! **Derivable attributes** are left out when the span is built (src/runtime),
//! so the trace file, every OTLP export and the Collector's replay of the file
//! carry the same spans (Jaeger shows a span once only when its copies are
//! identical). docs/telemetry.md ("Node span") documents each default:
//!
//! - node spans: `pflow.node.path` equal to `pflow.node.id`, role `node`,
//!   attempt 1 of 1, status `ok`, action `default` (on success);
//! - value events (`pflow.template.resolved`, `pflow.store.write`): a `false`
//!   `pflow.value.truncated`, a `pflow.value.size` equal to the preview's
//!   length in bytes (kept when the run exports without content:
//!   [`value_sizes_kept`]), and a preview that repeats a param the span's whole
//!   `pflow.node.params` already shows ([`value_text`]).
//!
//! Each rule is written once here and used both ways: the runtime leaves a
//! value out only when [`restore_span`] (every trace-file reader:
//! `pflow trace show|summary|report|diff|reprice`) gives it back exactly, and
//! `pflow trace export` without content writes back the sizes a file left
//! out before it drops the previews ([`left_out_size`]).
//!
//! [`strip_empty_fields`] removes the fields at their proto3 default
//! (`"traceState":""`, zero dropped counts, empty links, an empty status
//! message, an unset status) from an encoded line: the OTLP/JSON mapping
//! lets a writer omit them and every OTLP/JSON reader (pflow's, the
//! Collector's) reads them back as the defaults, so the spans are the same.

use super::attr;
use opentelemetry_proto::tonic::common::v1::{any_value::Value as V, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::sync::LazyLock;

/// Whether value events keep a size equal to their preview's length (set
/// once per run, before any span): a live OTLP export without content
/// capture drops the previews, and the Collector's replay of the trace file
/// drops them too but cannot compute their lengths, so both copies carry
/// the sizes, and stay identical.
static KEEP_VALUE_SIZES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// See [`KEEP_VALUE_SIZES`]: on when the run exports over OTLP without content.
pub fn keep_value_sizes(on: bool) {
    KEEP_VALUE_SIZES.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether a value event records a `pflow.value.size` equal to its preview's length.
pub fn value_sizes_kept() -> bool {
    KEEP_VALUE_SIZES.load(std::sync::atomic::Ordering::Relaxed)
}

/// `pflow.node.action` of a successful node that names no other.
pub const DEFAULT_ACTION: &str = "default";
/// `pflow.node.status` of a node that succeeded.
pub const STATUS_OK: &str = "ok";

/// The params a whole `pflow.node.params` preview shows (a cut preview is
/// not JSON: nothing is derived from it).
pub fn shown_params(preview: &str) -> Option<Map<String, Value>> {
    match serde_json::from_str(preview) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

/// The param whose value a value event shows: the resolved template's
/// param, or the output written under the same name (`w.file_path`).
pub fn event_param<'a>(
    event: &str,
    param: Option<&'a str>,
    store_key: Option<&'a str>,
) -> Option<&'a str> {
    if event == attr::EVENT_TEMPLATE_RESOLVED {
        param
    } else if event == attr::EVENT_STORE_WRITE {
        // The part after the last dot (`.` is ASCII: a byte scan, no char decoding).
        store_key.map(|k| {
            k.bytes()
                .rposition(|b| b == b'.')
                .map_or(k, |i| &k[i + 1..])
        })
    } else {
        None
    }
}

/// A value as a value preview shows it: a string as itself, anything else
/// as compact JSON. A whole value event preview equal to its param's text
/// in the span's whole params preview is left out.
pub fn value_text(v: &Value) -> Cow<'_, str> {
    match v {
        Value::String(s) => Cow::Borrowed(s),
        other => Cow::Owned(other.to_string()),
    }
}

fn param_text(params: &Map<String, Value>, key: &str) -> Option<String> {
    params.get(key).map(|v| value_text(v).into_owned())
}

/// The `pflow.value.size` of a value event that left it out: the length
/// of its preview, written or repeated from the params (`None`: the event
/// holds its size, or is no value event). For `pflow trace export` of a
/// file written without a live export (a live export without content kept
/// every size: [`value_sizes_kept`]).
pub fn left_out_size(
    event: &str,
    get: &dyn Fn(&str) -> Option<String>,
    params_preview: Option<&str>,
) -> Option<i64> {
    if (event != attr::EVENT_TEMPLATE_RESOLVED && event != attr::EVENT_STORE_WRITE)
        || get(attr::VALUE_SIZE).is_some()
    {
        return None;
    }
    let preview = match get(attr::VALUE_PREVIEW) {
        Some(p) => p,
        None => {
            let param = get(attr::PARAM);
            let key = get(attr::STORE_KEY);
            let k = event_param(event, param.as_deref(), key.as_deref())?;
            param_text(&shown_params(params_preview?)?, k)?
        }
    };
    Some(preview.len() as i64)
}

fn get<'a>(kvs: &'a [KeyValue], key: &str) -> Option<&'a V> {
    kvs.iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn get_str<'a>(kvs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match get(kvs, key) {
        Some(V::StringValue(s)) => Some(s),
        _ => None,
    }
}

fn kv(key: &str, v: V) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn put_default(attrs: &mut Vec<KeyValue>, key: &str, v: V) {
    if get(attrs, key).is_none() {
        attrs.push(kv(key, v));
    }
}

/// Puts back every attribute the compact form left out of a span read from
/// a trace file (a span that holds them all, from an older file or another
/// tool, is left as it is).
pub fn restore_span(span: &mut Span) {
    if let Some(id) = get_str(&span.attributes, attr::NODE_ID).map(str::to_string) {
        let a = &mut span.attributes;
        put_default(a, attr::NODE_PATH, V::StringValue(id));
        put_default(a, attr::NODE_ROLE, V::StringValue(attr::ROLE_NODE.into()));
        put_default(a, attr::NODE_ATTEMPT, V::IntValue(1));
        put_default(a, attr::NODE_MAX_ATTEMPTS, V::IntValue(1));
        put_default(a, attr::NODE_STATUS, V::StringValue(STATUS_OK.into()));
        if get_str(a, attr::NODE_STATUS) == Some(STATUS_OK) {
            put_default(a, attr::NODE_ACTION, V::StringValue(DEFAULT_ACTION.into()));
        }
    }
    let mut params: Option<Option<Map<String, Value>>> = None;
    for ev in &mut span.events {
        if ev.name != attr::EVENT_TEMPLATE_RESOLVED && ev.name != attr::EVENT_STORE_WRITE {
            continue;
        }
        if get(&ev.attributes, attr::VALUE_TRUNCATED).is_none() {
            ev.attributes
                .push(kv(attr::VALUE_TRUNCATED, V::BoolValue(false)));
        }
        if get(&ev.attributes, attr::VALUE_PREVIEW).is_none() {
            let shown = params.get_or_insert_with(|| {
                get_str(&span.attributes, attr::NODE_PARAMS).and_then(shown_params)
            });
            let k = event_param(
                &ev.name,
                get_str(&ev.attributes, attr::PARAM),
                get_str(&ev.attributes, attr::STORE_KEY),
            );
            if let Some(text) = shown.as_ref().zip(k).and_then(|(m, k)| param_text(m, k)) {
                ev.attributes
                    .push(kv(attr::VALUE_PREVIEW, V::StringValue(text)));
            }
        }
        // After the preview: a size left out is its length.
        if get(&ev.attributes, attr::VALUE_SIZE).is_none() {
            if let Some(len) = get_str(&ev.attributes, attr::VALUE_PREVIEW).map(str::len) {
                ev.attributes
                    .push(kv(attr::VALUE_SIZE, V::IntValue(len as i64)));
            }
        }
    }
}

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

    /// A store write's param is the part of its key after the last dot.
    #[test]
    fn a_store_writes_param_is_its_keys_last_segment() {
        for key in [
            "w.file_path",
            "w.results[2].text",
            "plain",
            "a.b.c",
            "é.ü",
            "w.",
        ] {
            assert_eq!(
                event_param(attr::EVENT_STORE_WRITE, None, Some(key)),
                key.rsplit('.').next(),
                "{key:?}"
            );
        }
        assert_eq!(event_param(attr::EVENT_STORE_WRITE, None, None), None);
        assert_eq!(
            event_param(attr::EVENT_TEMPLATE_RESOLVED, Some("p"), Some("w.x")),
            Some("p")
        );
    }

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
