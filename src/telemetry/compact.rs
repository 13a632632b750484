//! The trace file's compact form: what a reader can derive is not written.
//!
//! The trace file writer leaves out, per node span, the attributes that hold
//! their default (`pflow.node.path` equal to `pflow.node.id`, role `node`,
//! attempt 1 of 1, action `default` on success) and, per event, a `false`
//! `pflow.value.truncated`, a `pflow.value.size` equal to the preview's length
//! in bytes, and a value preview that repeats the node's
//! `pflow.node.params` (a literal param shown again by `pflow.template.resolved`,
//! or an output such as `file_path` that echoes its param). Every reader of a
//! trace file ([`crate::traces::parse`], `pflow trace export`) puts them back
//! with [`restore`], so viewers and backends see every documented attribute.
//!
//! Each rule is written once, as a derivation ([`derived`]) used both ways:
//! the writer drops a value only when the derivation gives it back exactly,
//! so [`restore`] after [`compact`] is the identity.
//!
//! [`strip_empty_fields`] then removes the proto3 default fields
//! (`"traceState":""`, zero dropped counts, empty links, an empty status
//! message, an unset status) from the encoded line: the OTLP/JSON mapping lets a writer omit
//! them and every OTLP/JSON reader fills them back in.

use super::attr;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value as V, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use std::sync::LazyLock;

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

/// What the span's other attributes say `key` is, when absent.
fn derived(span_attrs: &[KeyValue], key: &str) -> Option<V> {
    // Only node spans have these defaults.
    let id = get_str(span_attrs, attr::NODE_ID)?;
    match key {
        k if k == attr::NODE_PATH => Some(V::StringValue(id.to_string())),
        k if k == attr::NODE_ROLE => Some(V::StringValue(attr::ROLE_NODE.to_string())),
        k if k == attr::NODE_ATTEMPT || k == attr::NODE_MAX_ATTEMPTS => Some(V::IntValue(1)),
        k if k == attr::NODE_ACTION => (get_str(span_attrs, attr::NODE_STATUS) == Some("ok"))
            .then(|| V::StringValue("default".to_string())),
        _ => None,
    }
}

/// The node attributes that may be left out when [`derived`] gives them back.
const NODE_DEFAULTS: [&str; 5] = [
    attr::NODE_PATH,
    attr::NODE_ROLE,
    attr::NODE_ATTEMPT,
    attr::NODE_MAX_ATTEMPTS,
    attr::NODE_ACTION,
];

/// The whole params preview of a span as JSON, when it parses (a cut preview does not).
fn params(span_attrs: &[KeyValue]) -> Option<serde_json::Map<String, serde_json::Value>> {
    match serde_json::from_str(get_str(span_attrs, attr::NODE_PARAMS)?) {
        Ok(serde_json::Value::Object(m)) => Some(m),
        _ => None,
    }
}

/// The param an event's value would repeat: the resolved template's param,
/// or the output of the same name.
fn event_param<'a>(name: &str, ev_attrs: &'a [KeyValue]) -> Option<&'a str> {
    if name == attr::EVENT_TEMPLATE_RESOLVED {
        get_str(ev_attrs, attr::PARAM)
    } else if name == attr::EVENT_STORE_WRITE {
        let key = get_str(ev_attrs, attr::STORE_KEY)?;
        key.rsplit('.').next()
    } else {
        None
    }
}

/// A param's preview text as a value preview shows it: a string as itself,
/// anything else as compact JSON.
fn param_preview(params: &serde_json::Map<String, serde_json::Value>, key: &str) -> Option<String> {
    Some(match params.get(key)? {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

fn is_value_event(name: &str) -> bool {
    name == attr::EVENT_TEMPLATE_RESOLVED || name == attr::EVENT_STORE_WRITE
}

/// Leaves out of `span` what [`restore`] derives back exactly.
pub fn compact_span(span: &mut Span) {
    let mut drop_keys: Vec<&'static str> = Vec::new();
    for key in NODE_DEFAULTS {
        if let (Some(have), Some(d)) = (get(&span.attributes, key), derived(&span.attributes, key))
        {
            if *have == d {
                drop_keys.push(key);
            }
        }
    }
    let params = span
        .events
        .iter()
        .any(|e| is_value_event(&e.name))
        .then(|| params(&span.attributes))
        .flatten();
    for ev in &mut span.events {
        if !is_value_event(&ev.name) {
            continue;
        }
        let whole = matches!(
            get(&ev.attributes, attr::VALUE_TRUNCATED),
            Some(V::BoolValue(false))
        );
        if !whole {
            continue;
        }
        let preview = get_str(&ev.attributes, attr::VALUE_PREVIEW);
        let repeats = params.as_ref().is_some_and(|p| {
            event_param(&ev.name, &ev.attributes)
                .and_then(|k| param_preview(p, k))
                .is_some_and(|d| preview == Some(d.as_str()))
        });
        let size_is_len = preview.is_some_and(|p| {
            get(&ev.attributes, attr::VALUE_SIZE) == Some(&V::IntValue(p.len() as i64))
        });
        ev.attributes.retain(|kv| {
            kv.key != attr::VALUE_TRUNCATED
                && !(repeats && kv.key == attr::VALUE_PREVIEW)
                && !(size_is_len && kv.key == attr::VALUE_SIZE)
        });
    }
    span.attributes
        .retain(|kv| !drop_keys.contains(&kv.key.as_str()));
}

/// Puts back what [`compact_span`] left out (a span from an older or a
/// foreign file, holding everything, is left as it is).
pub fn restore_span(span: &mut Span) {
    for key in NODE_DEFAULTS {
        if get(&span.attributes, key).is_none() {
            if let Some(d) = derived(&span.attributes, key) {
                span.attributes.push(kv(key, d));
            }
        }
    }
    let mut params: Option<Option<serde_json::Map<String, serde_json::Value>>> = None;
    for ev in &mut span.events {
        if !is_value_event(&ev.name) {
            continue;
        }
        if get(&ev.attributes, attr::VALUE_TRUNCATED).is_none() {
            ev.attributes
                .push(kv(attr::VALUE_TRUNCATED, V::BoolValue(false)));
        }
        if get(&ev.attributes, attr::VALUE_PREVIEW).is_none() {
            let p = params.get_or_insert_with(|| self::params(&span.attributes));
            if let Some(text) = p
                .as_ref()
                .and_then(|p| param_preview(p, event_param(&ev.name, &ev.attributes)?))
            {
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

fn spans_mut(req: &mut ExportTraceServiceRequest) -> impl Iterator<Item = &mut Span> {
    req.resource_spans
        .iter_mut()
        .flat_map(|rs| rs.scope_spans.iter_mut())
        .flat_map(|ss| ss.spans.iter_mut())
}

/// [`compact_span`] on every span of a request.
pub fn compact(req: &mut ExportTraceServiceRequest) {
    spans_mut(req).for_each(compact_span);
}

/// [`restore_span`] on every span of a request.
pub fn restore(req: &mut ExportTraceServiceRequest) {
    spans_mut(req).for_each(restore_span);
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
    use opentelemetry_proto::tonic::trace::v1::span::Event;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};

    fn s(v: &str) -> V {
        V::StringValue(v.to_string())
    }

    fn event(name: &str, attrs: Vec<KeyValue>) -> Event {
        Event {
            time_unix_nano: 5,
            name: name.to_string(),
            attributes: attrs,
            dropped_attributes_count: 0,
        }
    }

    fn node_span(params: &str, attempt: i64, role: &str, path: &str) -> Span {
        Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            parent_span_id: vec![3; 8],
            name: "node w".into(),
            attributes: vec![
                kv(attr::NODE_ID, s("w")),
                kv(attr::NODE_TYPE, s("write-file")),
                kv(attr::NODE_PATH, s(path)),
                kv(attr::NODE_ROLE, s(role)),
                kv(attr::NODE_ATTEMPT, V::IntValue(attempt)),
                kv(attr::NODE_MAX_ATTEMPTS, V::IntValue(2)),
                kv(attr::NODE_STATUS, s("ok")),
                kv(attr::NODE_ACTION, s("default")),
                kv(attr::NODE_PARAMS, s(params)),
            ],
            events: vec![
                event(
                    attr::EVENT_TEMPLATE_RESOLVED,
                    vec![
                        kv(attr::PARAM, s("content")),
                        kv(attr::TEMPLATE, s("after ${n.value}")),
                        kv(attr::VALUE_PREVIEW, s("after 4")),
                        kv(attr::VALUE_SIZE, V::IntValue(7)),
                        kv(attr::VALUE_TRUNCATED, V::BoolValue(false)),
                    ],
                ),
                event(
                    attr::EVENT_STORE_WRITE,
                    vec![
                        kv(attr::STORE_KEY, s("w.file_path")),
                        kv(attr::VALUE_PREVIEW, s("out/a.txt")),
                        kv(attr::VALUE_SIZE, V::IntValue(9)),
                        kv(attr::VALUE_TRUNCATED, V::BoolValue(false)),
                    ],
                ),
                event(
                    attr::EVENT_STORE_WRITE,
                    vec![
                        kv(attr::STORE_KEY, s("w.written")),
                        kv(attr::VALUE_PREVIEW, s("7")),
                        kv(attr::VALUE_SIZE, V::IntValue(1)),
                        kv(attr::VALUE_TRUNCATED, V::BoolValue(false)),
                    ],
                ),
                event(
                    attr::EVENT_STORE_WRITE,
                    vec![
                        kv(attr::STORE_KEY, s("w.big")),
                        kv(attr::VALUE_PREVIEW, s("xxxx")),
                        kv(attr::VALUE_SIZE, V::IntValue(9000)),
                        kv(attr::VALUE_TRUNCATED, V::BoolValue(true)),
                    ],
                ),
            ],
            status: Some(Status {
                message: String::new(),
                code: 0,
            }),
            ..Default::default()
        }
    }

    fn sorted(mut sp: Span) -> Span {
        sp.attributes.sort_by(|a, b| a.key.cmp(&b.key));
        for e in &mut sp.events {
            e.attributes.sort_by(|a, b| a.key.cmp(&b.key));
        }
        sp
    }

    #[test]
    fn compact_then_restore_gives_every_attribute_back() {
        let params = r#"{"file_path":"out/a.txt","content":"after 4"}"#;
        for sp in [
            node_span(params, 1, "node", "w"),
            node_span(params, 2, "batch_item", "w[3]"),
            // A cut params preview: nothing can be derived from it.
            node_span(r#"{"file_path":"out/a.t"#, 1, "node", "w"),
        ] {
            let original = sp.clone();
            let mut c = sp;
            compact_span(&mut c);
            restore_span(&mut c);
            assert_eq!(sorted(c), sorted(original));
        }
    }

    #[test]
    fn defaults_and_repeated_previews_are_left_out() {
        let mut sp = node_span(
            r#"{"file_path":"out/a.txt","content":"after 4"}"#,
            1,
            "node",
            "w",
        );
        compact_span(&mut sp);
        let keys: Vec<&str> = sp.attributes.iter().map(|k| k.key.as_str()).collect();
        // max_attempts is 2 here: kept; the rest are defaults.
        assert_eq!(
            keys,
            [
                attr::NODE_ID,
                attr::NODE_TYPE,
                attr::NODE_MAX_ATTEMPTS,
                attr::NODE_STATUS,
                attr::NODE_PARAMS
            ]
        );
        let previews: Vec<Option<&str>> = sp
            .events
            .iter()
            .map(|e| get_str(&e.attributes, attr::VALUE_PREVIEW))
            .collect();
        // The template and the file_path output repeat params; `written` and a cut preview stay.
        assert_eq!(previews, [None, None, Some("7"), Some("xxxx")]);
        assert!(get(&sp.events[3].attributes, attr::VALUE_TRUNCATED).is_some());
        // Sizes equal to their preview's length go; the cut one's stays.
        let sizes: Vec<bool> = sp
            .events
            .iter()
            .map(|e| get(&e.attributes, attr::VALUE_SIZE).is_some())
            .collect();
        assert_eq!(sizes, [false, false, false, true]);
    }

    #[test]
    fn a_span_that_is_not_a_node_keeps_everything() {
        let mut sp = node_span("{}", 1, "node", "w");
        sp.attributes.retain(|k| k.key != attr::NODE_ID);
        let before = sp.clone();
        restore_span(&mut sp);
        // Only the events' `truncated: false` are filled (already present here).
        assert_eq!(sorted(sp), sorted(before));
    }

    #[test]
    fn stripped_lines_parse_to_the_same_request() {
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: None,
                scope_spans: vec![ScopeSpans {
                    scope: None,
                    spans: vec![node_span(
                        // A value that holds the patterns as text stays untouched.
                        r#"{"x":",\"traceState\":\"\"","links":[]}"#,
                        1,
                        "node",
                        "w",
                    )],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        let full = serde_json::to_vec(&req).unwrap();
        let short = strip_empty_fields(full.clone());
        assert!(
            short.len() + 100 < full.len(),
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
