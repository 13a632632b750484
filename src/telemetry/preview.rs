//! Bounded, redacted previews of values for span attributes and events.
//!
//! A 50 MB string in the store must not become 50 MB of trace: previews keep
//! at most `PFLOW_TRACE_MAX_VALUE_BYTES` (default 4096) and note the full size,
//! computed without building the full serialisation in memory. Binary-looking
//! text is summarised, never dumped. Every preview is redacted.
//!
//! ```
//! use pflow::telemetry::preview::{preview_with, PreviewSettings};
//! let s = PreviewSettings::new(8);
//! let p = preview_with(&serde_json::json!("hello, world"), &s);
//! assert_eq!(p.text, "hello, w");
//! assert_eq!((p.size, p.truncated), (12, true));
//! ```

use super::redact::{self, REDACTED};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

pub const DEFAULT_MAX_VALUE_BYTES: usize = 4096;
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 65536;

/// Preview limits. Previews are redacted (with [`redact::global`]) before they
/// are cut, so a cut never leaves a credential too short for its rule.
#[derive(Debug, Clone, Copy)]
pub struct PreviewSettings {
    pub max_bytes: usize,
    /// Limit for LLM prompts and responses, which users read whole when debugging.
    pub max_message_bytes: usize,
}

impl PreviewSettings {
    pub fn new(max_bytes: usize) -> Self {
        PreviewSettings {
            max_bytes,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }

    /// `PFLOW_TRACE_MAX_VALUE_BYTES` and secrets from the environment.
    pub fn from_env() -> Self {
        let max_bytes = std::env::var("PFLOW_TRACE_MAX_VALUE_BYTES")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(DEFAULT_MAX_VALUE_BYTES);
        let max_message_bytes = std::env::var("PFLOW_TRACE_MAX_MESSAGE_BYTES")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
        PreviewSettings {
            max_bytes,
            max_message_bytes,
        }
    }
}

// Two numbers read for every preview, several times a node: atomics, not a
// lock and a shared count (that cache line bounced between the run's threads).
static MAX_BYTES: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_VALUE_BYTES);
static MAX_MESSAGE_BYTES: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_MESSAGE_BYTES);

/// Installs the process-wide preview settings (done by `telemetry::Telemetry::init`).
pub fn install(settings: PreviewSettings) {
    MAX_BYTES.store(settings.max_bytes, Ordering::Relaxed);
    MAX_MESSAGE_BYTES.store(settings.max_message_bytes, Ordering::Relaxed);
}

/// The installed settings, or defaults.
pub fn settings() -> PreviewSettings {
    PreviewSettings {
        max_bytes: MAX_BYTES.load(Ordering::Relaxed),
        max_message_bytes: MAX_MESSAGE_BYTES.load(Ordering::Relaxed),
    }
}

/// A bounded view of a value.
#[derive(Debug, Clone, PartialEq)]
pub struct Preview {
    pub text: String,
    /// Full size in bytes (UTF-8 for strings, compact JSON otherwise).
    pub size: usize,
    pub truncated: bool,
}

/// Preview with the installed settings.
pub fn preview(v: &Value) -> Preview {
    preview_with(v, &settings())
}

/// Preview of a value stored or passed under `name`: a secret-looking name
/// (e.g. `api_key`, `headers.Authorization`) hides the whole value.
///
/// For span and event attributes only: a whole (uncut) preview is left for
/// the exporters to redact, as they redact every attribute string
/// (`file::redact_span`) — on the writer thread, off the node's path. Only a
/// cut needs redacting first, so no credential is cut too short to be seen.
pub fn preview_named(name: &str, v: &Value) -> Preview {
    let last = last_segment(name);
    if redact::hides_value(false, last, v) {
        return Preview {
            text: REDACTED.to_string(),
            size: 0,
            truncated: true,
        };
    }
    let st = settings();
    match v {
        Value::String(s) => limited_string_preview(s, st.max_bytes, Redaction::WhenCut),
        _ => bounded_json(&KeyRedacted(v, None), &st, Redaction::WhenCut),
    }
}

/// The last segment of a dotted or indexed name (`w.results[0].token` →
/// `token`), whose name says whether a value is secret. A byte scan: both
/// separators are ASCII, and a generic `rsplit` over two `char`s cost a few
/// hundred instructions on every value event.
fn last_segment(name: &str) -> &str {
    match name.bytes().rposition(|b| b == b'.' || b == b'[') {
        Some(i) => &name[i + 1..],
        None => name,
    }
}

/// Whether preview `p` only repeats `shown` (the text its param shows in
/// the span's whole params preview): then a value event leaves it out.
pub fn repeats(p: &Preview, shown: Option<&str>) -> bool {
    !p.truncated && shown == Some(p.text.as_str())
}

/// [`preview_named`] of `v`, or `None` when it only [`repeats`] `shown`.
/// A string is compared, not copied: an output that repeats its param (an
/// `echo`'s `message`) makes no preview to be left out.
pub fn preview_unless_shown(name: &str, v: &Value, shown: Option<&str>) -> Option<Preview> {
    if let (Value::String(s), Some(t)) = (v, shown) {
        let last = last_segment(name);
        if s == t && !redact::hides_value(false, last, v) && kept_whole(s, settings().max_bytes) {
            return None;
        }
    }
    let p = preview_named(name, v);
    (!repeats(&p, shown)).then_some(p)
}

/// Whether a string's preview is the whole string (when only a cut is
/// redacted): text, not binary, within the preview size.
fn kept_whole(s: &str, max_bytes: usize) -> bool {
    s.len() <= max_bytes && !looks_binary(s)
}

/// When a preview's text is redacted.
#[derive(Clone, Copy, PartialEq)]
enum Redaction {
    Always,
    /// Only when cut: a whole preview becomes an attribute the exporters redact.
    WhenCut,
}

/// Preview of an LLM prompt or response (`PFLOW_TRACE_MAX_MESSAGE_BYTES`, default 64 KiB).
pub fn preview_message(s: &str) -> Preview {
    let st = settings();
    limited_string_preview(s, st.max_message_bytes, Redaction::Always)
}

/// Preview of a string with the installed settings.
pub fn preview_str(s: &str) -> Preview {
    let st = settings();
    string_preview(s, &st)
}

pub fn preview_with(v: &Value, st: &PreviewSettings) -> Preview {
    match v {
        Value::String(s) => string_preview(s, st),
        _ => bounded_json(&KeyRedacted(v, None), st, Redaction::Always),
    }
}

/// Preview of a params object, without copying it (params may hold 50 MB).
/// Only its text is kept (no size), so a long string is read no further than
/// the preview can show: a 50 MB value costs what its first 4 KiB cost.
/// Redacted when cut (see [`preview_named`]).
pub fn preview_map(m: &serde_json::Map<String, Value>) -> Preview {
    let st = settings();
    bounded_json(
        &MapRedacted(m, Some(keep_bytes(st.max_bytes))),
        &st,
        Redaction::WhenCut,
    )
}

/// A digest of each param's full value (`{"key": "<16 hex>"}`, JSON text),
/// stored beside a cut preview so `pflow trace diff` can tell a changed
/// value from one whose preview was merely cut: the 64-bit XXH3 of a string's
/// text, or of the key-redacted compact JSON of any other value (streamed,
/// never copied). XXH3 reads tens of GB/s: a 50 MB value costs a few ms.
pub fn digest_map(m: &serde_json::Map<String, Value>) -> String {
    digest_map_with(m, |_, v| value_digest(v))
}

/// [`digest_map`] with each shown value's digest from `digest(key, value)`:
/// the runtime passes one that remembers the digest of a large value many
/// params reference whole, so it is read once ([`value_digest`] otherwise).
pub fn digest_map_with(
    m: &serde_json::Map<String, Value>,
    mut digest: impl FnMut(&str, &Value) -> u64,
) -> String {
    let mut out = serde_json::Map::new();
    // The same JSON-shape rules as the preview: a value hidden there is hashed as hidden.
    let pair = redact::is_secret_pair(m);
    for (k, v) in m {
        let h = if redact::hides_value(pair, k, v) {
            // The hidden value's JSON text, `"[REDACTED]"`.
            xxhash_rust::xxh3::xxh3_64(format!("\"{REDACTED}\"").as_bytes())
        } else {
            digest(k, v)
        };
        out.insert(k.clone(), Value::String(format!("{h:016x}")));
    }
    Value::Object(out).to_string()
}

/// The 64-bit XXH3 of a string's text, or of the key-redacted compact JSON
/// of any other value (streamed, never copied).
pub fn value_digest(v: &Value) -> u64 {
    use xxhash_rust::xxh3::Xxh3Default;
    struct HashWriter(Xxh3Default);
    impl std::io::Write for HashWriter {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.update(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut h = HashWriter(Xxh3Default::new());
    // Writing to a hasher cannot fail.
    let _ = match v {
        Value::String(s) => {
            h.0.update(s.as_bytes());
            Ok(())
        }
        _ => serde_json::to_writer(&mut h, &KeyRedacted(v, None)),
    };
    h.0.digest()
}

/// Bytes of serialised text kept before the cut: a little slack over the
/// limit so a credential cut at the boundary is still recognised.
fn keep_bytes(max_bytes: usize) -> usize {
    max_bytes.saturating_add(256)
}

fn bounded_json<T: Serialize>(v: &T, st: &PreviewSettings, redaction: Redaction) -> Preview {
    let keep = keep_bytes(st.max_bytes);
    // Grown as written: most previews (a node's params) are a few dozen
    // bytes, and a buffer sized for the largest was most of their cost.
    let mut w = BoundedWriter {
        buf: Vec::with_capacity(keep.min(128)),
        keep,
        total: 0,
    };
    // Writing to BoundedWriter cannot fail.
    let _ = serde_json::to_writer(&mut w, v);
    // Only a cut can split a character.
    let text = match String::from_utf8(w.buf) {
        Ok(t) => t,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    if redaction == Redaction::WhenCut && w.total <= st.max_bytes {
        return Preview {
            text,
            size: w.total,
            truncated: false,
        };
    }
    finish(&text, w.total, st.max_bytes, redaction)
}

fn string_preview(s: &str, st: &PreviewSettings) -> Preview {
    limited_string_preview(s, st.max_bytes, Redaction::Always)
}

fn limited_string_preview(s: &str, max_bytes: usize, redaction: Redaction) -> Preview {
    if redaction == Redaction::WhenCut && kept_whole(s, max_bytes) {
        return Preview {
            text: s.to_string(),
            size: s.len(),
            truncated: false,
        };
    }
    if looks_binary(s) {
        return Preview {
            text: format!("<binary data, {} bytes>", s.len()),
            size: s.len(),
            truncated: true,
        };
    }
    let keep = keep_bytes(max_bytes).min(s.len());
    let head = &s[..floor_char_boundary(s, keep)];
    finish(head, s.len(), max_bytes, redaction)
}

fn finish(head: &str, total: usize, max_bytes: usize, redaction: Redaction) -> Preview {
    if redaction == Redaction::WhenCut && total <= max_bytes {
        return Preview {
            text: head.to_string(),
            size: total,
            truncated: false,
        };
    }
    let redacted = redact::global().redact_str(head);
    let cut = floor_char_boundary(&redacted, max_bytes);
    let truncated = total > max_bytes || cut < redacted.len();
    Preview {
        text: redacted[..cut].to_string(),
        size: total,
        truncated,
    }
}

/// Text with NULs or many control/replacement characters is treated as binary.
fn looks_binary(s: &str) -> bool {
    let sample = &s[..floor_char_boundary(s, 4096)];
    // Printable ASCII and whitespace (nearly every value) has no NUL, control
    // or replacement character: a byte scan answers without decoding chars.
    if sample
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) || matches!(b, b'\n' | b'\r' | b'\t'))
    {
        return false;
    }
    if sample.contains('\0') {
        return true;
    }
    let odd = sample
        .chars()
        .filter(|c| *c == '\u{FFFD}' || (c.is_control() && !matches!(c, '\n' | '\r' | '\t')))
        .count();
    odd > 0 && odd * 10 > sample.chars().count()
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

struct BoundedWriter {
    buf: Vec<u8>,
    keep: usize,
    total: usize,
}

impl io::Write for BoundedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.keep.saturating_sub(self.buf.len());
        if room > 0 {
            self.buf.extend_from_slice(&data[..room.min(data.len())]);
        }
        self.total += data.len();
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Serialises a JSON value with the JSON-shape rules of [`redact`] applied.
/// With a clip, strings longer than it are written as their first `clip`
/// bytes: enough for a preview of `clip` bytes (escaping only lengthens
/// text), without reading the rest of a large value.
struct KeyRedacted<'a>(&'a Value, Option<usize>);

struct MapRedacted<'a>(&'a serde_json::Map<String, Value>, Option<usize>);

impl Serialize for MapRedacted<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        let pair = redact::is_secret_pair(self.0);
        for (k, v) in self.0 {
            if redact::hides_value(pair, k, v) {
                m.serialize_entry(k, REDACTED)?;
            } else {
                m.serialize_entry(k, &KeyRedacted(v, self.1))?;
            }
        }
        m.end()
    }
}

impl Serialize for KeyRedacted<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                let tuple = redact::is_secret_tuple(items);
                for (n, i) in items.iter().enumerate() {
                    if tuple && n == 1 {
                        seq.serialize_element(REDACTED)?;
                    } else {
                        seq.serialize_element(&KeyRedacted(i, self.1))?;
                    }
                }
                seq.end()
            }
            Value::Object(map) => MapRedacted(map, self.1).serialize(s),
            Value::String(text) => match self.1 {
                Some(clip) if text.len() > clip => {
                    s.serialize_str(&text[..floor_char_boundary(text, clip)])
                }
                _ => s.serialize_str(text),
            },
            other => other.serialize(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn preview_unless_shown_answers_as_the_preview_would() {
        let max = settings().max_bytes;
        let long = "x".repeat(max + 1);
        let fits = "y".repeat(max);
        let cases: Vec<(&str, Value)> = vec![
            ("message", json!("hi")),
            ("message", json!("")),
            ("out.message", json!("hi")),
            ("api_key", json!("hi")),
            ("text", json!("bin\u{0}ary")),
            ("text", json!(long)),
            ("text", json!(fits)),
            ("n", json!(3)),
            ("obj", json!({"a": [1, "b"]})),
            ("obj", json!({"password": "p"})),
        ];
        for (name, v) in &cases {
            let p = preview_named(name, v);
            let texts = [
                Some(p.text.clone()),
                Some(crate::telemetry::compact::value_text(v).into_owned()),
                Some("other".into()),
                None,
            ];
            for t in texts {
                let got = preview_unless_shown(name, v, t.as_deref());
                let repeated = !p.truncated && t.as_deref() == Some(p.text.as_str());
                let want = (!repeated).then(|| p.clone());
                assert_eq!(got, want, "{name} {v} {:.40}", t.unwrap_or_default());
            }
        }
    }

    #[test]
    fn digests_are_xxh3_of_the_text_the_json_or_the_hidden_marker() {
        let m = json!({"text": "abc", "n": [1, {"k": true}], "api_key": "sk-secret-value-123"});
        let d: Value = serde_json::from_str(&digest_map(m.as_object().unwrap())).unwrap();
        let x = |b: &[u8]| format!("{:016x}", xxhash_rust::xxh3::xxh3_64(b));
        assert_eq!(d["text"], x(b"abc"));
        assert_eq!(d["n"], x(br#"[1,{"k":true}]"#));
        assert_eq!(d["api_key"], x(br#""[REDACTED]""#));
        // A caller's digest is used for shown values only.
        let d: Value =
            serde_json::from_str(&digest_map_with(m.as_object().unwrap(), |_, _| 7)).unwrap();
        assert_eq!(d["text"], "0000000000000007");
        assert_eq!(d["api_key"], x(br#""[REDACTED]""#));
    }

    #[test]
    fn digests_tell_values_apart_beyond_the_preview() {
        let long = "x".repeat(10_000);
        let a = json!({"text": format!("{long}a"), "n": 1});
        let b = json!({"text": format!("{long}b"), "n": 1});
        let (da, db) = (
            digest_map(a.as_object().unwrap()),
            digest_map(b.as_object().unwrap()),
        );
        let (va, vb): (Value, Value) = (
            serde_json::from_str(&da).unwrap(),
            serde_json::from_str(&db).unwrap(),
        );
        assert_ne!(va["text"], vb["text"]);
        assert_eq!(va["n"], vb["n"]);
        assert_eq!(va["text"].as_str().unwrap().len(), 16);
    }

    #[test]
    fn a_params_preview_of_a_huge_string_equals_the_full_one() {
        // preview_map reads long strings only as far as the cut: the text
        // must be exactly what serialising the whole value gave.
        let st = PreviewSettings::new(64);
        let big = format!("{}\"quoted\"\n{}", "é".repeat(40), "x".repeat(1_000_000));
        let m = json!({"a": 1, "content": big, "z": "tail"});
        let m = m.as_object().unwrap();
        let full = bounded_json(&MapRedacted(m, None), &st, Redaction::Always);
        let clipped = bounded_json(
            &MapRedacted(m, Some(keep_bytes(64))),
            &st,
            Redaction::Always,
        );
        assert_eq!(clipped.text, full.text);
        assert!(clipped.truncated && full.truncated);
        // Short values are not clipped at all.
        let small = json!({"a": "short", "b": [1, "two"]});
        let small = small.as_object().unwrap();
        assert_eq!(
            bounded_json(
                &MapRedacted(small, Some(keep_bytes(64))),
                &st,
                Redaction::Always
            ),
            bounded_json(&MapRedacted(small, None), &st, Redaction::Always)
        );
    }

    #[test]
    fn small_values_are_whole() {
        let st = PreviewSettings::new(100);
        let p = preview_with(&json!({"a": [1, 2]}), &st);
        assert_eq!(p.text, r#"{"a":[1,2]}"#);
        assert!(!p.truncated);
        assert_eq!(p.size, 11);
    }

    #[test]
    fn big_values_are_cut_with_full_size() {
        let st = PreviewSettings::new(64);
        let big = "x".repeat(5_000_000);
        let p = preview_with(&json!(big), &st);
        assert_eq!(p.text.len(), 64);
        assert_eq!(p.size, 5_000_000);
        assert!(p.truncated);
        let p = preview_with(&json!({"data": big}), &st);
        assert_eq!(p.text.len(), 64);
        assert_eq!(p.size, 5_000_000 + 11);
    }

    #[test]
    fn utf8_boundaries_are_respected() {
        let st = PreviewSettings::new(5);
        let p = preview_with(&json!("ééééé"), &st);
        assert_eq!(p.text, "éé");
    }

    #[test]
    fn binary_is_summarised() {
        let st = PreviewSettings::new(100);
        let p = preview_with(&json!("\u{0}\u{1}\u{2}abc"), &st);
        assert!(p.text.starts_with("<binary data, "), "{}", p.text);
    }

    /// The byte scans give what the `char` scans they replaced gave.
    #[test]
    fn byte_scans_answer_as_the_char_scans_did() {
        for name in [
            "",
            "token",
            "w.token",
            "w.results[0].token",
            "a[",
            "a.",
            ".",
            "[x]",
            "é.ß[ü",
            "n0.results[3].api_key",
            "ünï.cödé",
        ] {
            assert_eq!(
                last_segment(name),
                name.rsplit(['.', '[']).next().unwrap_or(name),
                "{name:?}"
            );
        }
        let slow = |s: &str| {
            let odd = s
                .chars()
                .filter(|c| {
                    *c == '\u{FFFD}' || (c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
                })
                .count();
            s.contains('\0') || (odd > 0 && odd * 10 > s.chars().count())
        };
        for s in [
            "",
            "/tmp/out.txt",
            "plain text\r\n\tline",
            "é",
            "\u{0}",
            "a\u{1}",
            "\u{1}\u{2}abc",
            "abcdefghi\u{7f}",
            "abcdefghijk\u{7f}",
            "\u{FFFD}",
            "x\u{9b}",
            "~ \u{7e}",
        ] {
            assert_eq!(looks_binary(s), slow(s), "{s:?}");
        }
    }

    #[test]
    fn secrets_are_redacted_by_key_and_format() {
        let st = PreviewSettings::new(1000);
        let p = preview_with(
            &json!({"token": "abc", "note": "ghp_abcdefghijklmnopqrstuvwxyz0123456789"}),
            &st,
        );
        assert_eq!(p.text, r#"{"token":"[REDACTED]","note":"[REDACTED]"}"#);
    }
}
