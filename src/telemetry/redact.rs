//! The redaction boundary: every string pflow lets out of the process (trace
//! file, OTLP export, span names, resource attributes, its own stderr and
//! stdout messages, the JSON `error` and `warnings`, history rows, `trace
//! show`, `trace report`, `trace export`) goes through the one process-wide
//! [`Redactor`] returned by [`global`]. A workflow's declared outputs are the
//! user's data and are not redacted.
//!
//! Three layers, strongest first:
//! - a literal scrub of every value pflow knows is secret: the values of
//!   secret-named environment variables (provider API keys among them), OTLP
//!   header values, and values a node passes to a child in a secret-named
//!   `env` entry ([`add_secret`]); also their base64 and percent-encoded forms;
//! - credential formats ([`rules`]); a rule with keywords (most) runs only
//!   when an Aho-Corasick scan finds one of them, the few without are one
//!   `RegexSet` pass. Each regex is compiled on its first use: compiling all
//!   85 up front cost ~35M instructions (~10 ms) per run, most of them for
//!   rules a run never needs;
//! - the name rule ([`names::is_secret_name`]) over text (`password=…`,
//!   `"api_key": "…"`, header lines, URL userinfo and query parameters) and over
//!   any JSON shape ([`Redactor::redact_json`]): values under secret names
//!   replaced whole (objects too), name/value pairs, JSON text inside strings.
//!
//! ```
//! let r = pflow::telemetry::redact::Redactor::new(Vec::new());
//! assert_eq!(r.redact_str("key sk-proj-abcdefghijklmnop1234"), "key [REDACTED]");
//! assert!(pflow::telemetry::redact::is_secret_name("OPENAI_API_KEY"));
//! ```

pub mod names;
pub mod rules;

pub use names::{is_secret_env_var, is_secret_name, is_secret_query_param};

use aho_corasick::AhoCorasick;
use base64::Engine as _;
use regex::{Captures, Regex, RegexSet};
use rules::{Action, RULES};
use serde_json::Value;
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

pub const REDACTED: &str = "[REDACTED]";

/// Literal secrets shorter than this are not scrubbed: they would hit ordinary words.
const MIN_LITERAL_LEN: usize = 6;

/// A string longer than this that parses as JSON is not re-parsed for the
/// JSON-shape rules (the text rules still apply): bounds the cost.
const MAX_EMBEDDED_JSON: usize = 1 << 20;

/// Compiled redaction rules plus the secret values known to the process.
#[derive(Debug)]
pub struct Redactor {
    keywords: AhoCorasick,
    /// For each keyword (the automaton's pattern id), its rule in [`RULES`].
    keyword_rule: Vec<usize>,
    /// Rules that run on every string.
    always: Vec<usize>,
    always_set: OnceLock<RegexSet>,
    /// One per rule in [`RULES`], compiled on first use ([`Redactor::regex`]).
    regexes: Vec<OnceLock<Regex>>,
    literals: RwLock<Arc<Literals>>,
    /// Whether any literal was ever added: until then a scan takes no read
    /// lock (an atomic write to a line the run's thread and the progress
    /// writer, which both redact, would pass back and forth).
    has_literals: AtomicBool,
}

/// The known secrets and one automaton over them all (rebuilt when one is
/// added, which happens a few times per run), so scrubbing costs one scan
/// whatever their number.
#[derive(Debug, Default)]
struct Literals {
    list: Vec<String>,
    ac: Option<AhoCorasick>,
}

impl Redactor {
    /// `literals`: exact secret values to scrub (e.g. from the environment).
    pub fn new(literals: Vec<String>) -> Self {
        let always: Vec<usize> = (0..RULES.len())
            .filter(|&i| RULES[i].keywords.is_empty())
            .collect();
        let keyword_rule: Vec<usize> = RULES
            .iter()
            .enumerate()
            .flat_map(|(i, r)| r.keywords.iter().map(move |_| i))
            .collect();
        let regexes = RULES.iter().map(|_| OnceLock::new()).collect();
        // A DFA: every string is scanned, and ~150 short keywords make a small one.
        let keywords = AhoCorasick::builder()
            .kind(Some(aho_corasick::AhoCorasickKind::DFA))
            .ascii_case_insensitive(true)
            .build(RULES.iter().flat_map(|r| r.keywords.iter()))
            .expect("redaction keywords compile");
        let r = Redactor {
            keywords,
            keyword_rule,
            always,
            always_set: OnceLock::new(),
            regexes,
            literals: RwLock::new(Arc::new(Literals::default())),
            has_literals: AtomicBool::new(false),
        };
        for l in literals {
            r.add_secret(&l);
        }
        r
    }

    /// A redactor that also scrubs the values of secret-named environment
    /// variables and of the OTLP headers (`OTEL_EXPORTER_OTLP_[TRACES_|METRICS_]HEADERS`).
    pub fn from_env() -> Self {
        let r = Self::new(Vec::new());
        for (k, v) in std::env::vars_os() {
            let (Some(k), Some(v)) = (k.to_str(), v.to_str()) else {
                continue;
            };
            if is_secret_env_var(k) {
                r.add_secret(v);
            }
            if k.starts_with("OTEL_EXPORTER_OTLP") && k.ends_with("HEADERS") {
                for (_, value) in header_values(v) {
                    r.add_secret(&value);
                }
            }
        }
        r
    }

    /// Adds a value known to be secret: it is scrubbed wherever it appears
    /// from now on, as is, base64-encoded and percent-encoded.
    pub fn add_secret(&self, value: &str) {
        let value = value.trim();
        if value.len() < MIN_LITERAL_LEN {
            return;
        }
        let Ok(mut guard) = self.literals.write() else {
            return;
        };
        if guard.list.iter().any(|l| l == value) {
            return;
        }
        let mut next: Vec<String> = guard.list.clone();
        next.push(value.to_string());
        let b64 = base64::engine::general_purpose::STANDARD.encode(value);
        // Only whole 3-byte groups encode the same whatever follows the value.
        next.push(b64[..value.len() / 3 * 4].to_string());
        let pct = percent_encode(value);
        if pct != value {
            next.push(pct);
        }
        let json = serde_json::to_string(value).unwrap_or_default();
        let json = json.trim_matches('"');
        if json != value {
            next.push(json.to_string());
        }
        next.retain(|l| l.len() >= MIN_LITERAL_LEN);
        next.sort();
        next.dedup();
        // Leftmost-longest: a secret that contains another goes whole.
        let ac = AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::LeftmostLongest)
            .build(&next)
            .ok();
        *guard = Arc::new(Literals { list: next, ac });
        self.has_literals.store(true, Ordering::Release);
    }

    // The rules are constants; a compile failure is a programming error that
    // every test run catches (`rules_compile` compiles them all).
    fn regex(&self, rule: usize) -> &Regex {
        self.regexes[rule]
            .get_or_init(|| Regex::new(RULES[rule].pattern).expect("redaction rule compiles"))
    }

    fn always_set(&self) -> &RegexSet {
        self.always_set.get_or_init(|| {
            RegexSet::new(self.always.iter().map(|&i| RULES[i].pattern))
                .expect("redaction rules compile")
        })
    }

    fn literals(&self) -> Arc<Literals> {
        self.literals.read().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn redact_str<'a>(&self, s: &'a str) -> Cow<'a, str> {
        // Nothing shorter than the shortest known secret can hold one (the
        // formats are all longer).
        if s.len() < MIN_LITERAL_LEN || BENCH_BYPASS.load(std::sync::atomic::Ordering::Relaxed) {
            return Cow::Borrowed(s);
        }
        self.redact_depth(s, 0)
    }

    fn redact_depth<'a>(&self, s: &'a str, depth: u8) -> Cow<'a, str> {
        let mut out: Cow<'a, str> = Cow::Borrowed(s);
        let literals = self
            .has_literals
            .load(Ordering::Acquire)
            .then(|| self.literals());
        if let Some(ac) = literals.as_ref().and_then(|l| l.ac.as_ref()) {
            if ac.is_match(out.as_ref()) {
                let mut dst = String::with_capacity(out.len());
                ac.replace_all_with(&out, &mut dst, |_, _, dst| {
                    dst.push_str(REDACTED);
                    true
                });
                out = Cow::Owned(dst);
            }
        }
        if depth == 0 {
            if let Some(j) = self.embedded_json(&out) {
                out = Cow::Owned(j);
            }
        }
        let mut hits: Vec<usize> = Vec::new();
        // A keyed rule runs only when one of its keywords is in the text.
        let mut seen = [false; RULES.len()];
        for m in self.keywords.find_overlapping_iter(out.as_ref()) {
            let rule = self.keyword_rule[m.pattern().as_usize()];
            if !seen[rule] {
                seen[rule] = true;
                hits.push(rule);
            }
        }
        // The rules without keywords all need a run of 24+ token characters;
        // ordinary prose has none, and a byte scan is far cheaper than the set.
        if has_token_run(out.as_bytes(), 24) {
            hits.extend(
                self.always_set()
                    .matches(&out)
                    .iter()
                    .map(|i| self.always[i]),
            );
        }
        if hits.is_empty() {
            return out;
        }
        hits.sort_unstable();
        for i in hits {
            let action = RULES[i].action;
            if action == Action::Base64 && depth > 0 {
                continue;
            }
            if action == Action::NameValue {
                if let Some(r) = name_values(self.regex(i), &out) {
                    out = Cow::Owned(r);
                }
                continue;
            }
            let replaced = self
                .regex(i)
                .replace_all(&out, |c: &Captures| self.replacement(action, c, depth));
            // A closure replacement is always owned; keep the borrow when nothing changed.
            if let Cow::Owned(r) = replaced {
                if r != out.as_ref() {
                    out = Cow::Owned(r);
                }
            }
        }
        out
    }

    /// The text that replaces one match of a rule.
    fn replacement(&self, action: Action, c: &Captures, depth: u8) -> String {
        let whole = c.get(0).map(|m| m.as_str()).unwrap_or_default();
        let keep_all_but = |g: usize| -> String {
            let (Some(m), Some(g)) = (c.get(0), c.get(g)) else {
                return whole.to_string();
            };
            let (a, b) = (g.start() - m.start(), g.end() - m.start());
            if g.as_str() == REDACTED {
                return whole.to_string();
            }
            format!("{}{REDACTED}{}", &whole[..a], &whole[b..])
        };
        match action {
            Action::Whole => REDACTED.to_string(),
            Action::Group(g) => keep_all_but(g),
            Action::Assign => {
                let name = c.get(2).map(|m| m.as_str()).unwrap_or_default();
                let value = c.get(4).map(|m| m.as_str()).unwrap_or_default();
                if !is_secret_name(name) || value.is_empty() || value == REDACTED {
                    return whole.to_string();
                }
                // Quoted values keep their quotes (the text stays valid JSON).
                let Some(g) = c.get(4) else {
                    return whole.to_string();
                };
                let m0 = c.get(0).map(|m| m.start()).unwrap_or_default();
                let (a, b) = (g.start() - m0, g.end() - m0);
                let q = value.chars().next().filter(|q| *q == '"' || *q == '\'');
                match q {
                    Some(q) if value.len() >= 2 => {
                        format!("{}{q}{REDACTED}{q}{}", &whole[..a], &whole[b..])
                    }
                    _ => format!("{}{REDACTED}{}", &whole[..a], &whole[b..]),
                }
            }
            // Handled by `name_values` (the value lies past the match).
            Action::NameValue => whole.to_string(),
            Action::Query => {
                let name = c.get(2).map(|m| m.as_str()).unwrap_or_default();
                if is_secret_query_param(name) {
                    keep_all_but(3)
                } else {
                    whole.to_string()
                }
            }
            Action::Entropy40 => {
                let v = c.get(1).map(|m| m.as_str()).unwrap_or_default();
                let mixed = v.bytes().any(|b| b.is_ascii_uppercase())
                    && v.bytes().any(|b| b.is_ascii_lowercase())
                    && v.bytes()
                        .any(|b| b.is_ascii_digit() || b == b'/' || b == b'+');
                if mixed {
                    keep_all_but(1)
                } else {
                    whole.to_string()
                }
            }
            Action::Base64 => match decode_base64(whole) {
                Some(text) if self.redact_depth(&text, depth + 1) != text.as_str() => {
                    REDACTED.to_string()
                }
                _ => whole.to_string(),
            },
        }
    }

    /// JSON text inside a string (`pflow.node.params`, a body, an env value):
    /// the JSON-shape rules applied to it, re-serialised when anything changed.
    fn embedded_json(&self, s: &str) -> Option<String> {
        let t = s.trim_start();
        if !(t.starts_with('{') || t.starts_with('[')) || s.len() > MAX_EMBEDDED_JSON {
            return None;
        }
        // JSON text ends with its closing bracket (the parser refuses anything
        // after it): `[0.12s] ✓ read (1/7 nodes) …`, every progress line, is
        // not scanned for secret names only to fail to parse.
        if !t.trim_end().ends_with(['}', ']']) {
            return None;
        }
        // The shape rules only act on secret names: without one, no parse.
        if !names::has_secret_root(s) {
            return None;
        }
        let mut v: Value = serde_json::from_str(s).ok()?;
        if !self.redact_json_shapes(&mut v) {
            return None;
        }
        serde_json::to_string(&v).ok()
    }

    /// Redacts a JSON value in place: values under secret-named keys are
    /// replaced whole (objects and arrays too), `{"name": SECRET_NAME, "value": X}`
    /// and `[SECRET_NAME, X]` pairs lose `X`, strings are scanned.
    pub fn redact_json(&self, v: &mut Value) {
        self.redact_json_inner(v, true);
    }

    /// Only the JSON-shape rules (the strings are scanned by the caller). Returns
    /// whether anything changed.
    fn redact_json_shapes(&self, v: &mut Value) -> bool {
        self.redact_json_inner(v, false)
    }

    fn redact_json_inner(&self, v: &mut Value, scan_strings: bool) -> bool {
        match v {
            Value::String(s) => {
                if !scan_strings {
                    // Nested JSON text still gets the shape rules.
                    if let Some(j) = self.embedded_json(s) {
                        *s = j;
                        return true;
                    }
                    return false;
                }
                if let Cow::Owned(r) = self.redact_str(s) {
                    *s = r;
                    return true;
                }
                false
            }
            Value::Array(items) => {
                let mut changed = false;
                if is_secret_tuple(items) {
                    items[1] = Value::String(REDACTED.into());
                    changed = true;
                }
                for i in items.iter_mut() {
                    changed |= self.redact_json_inner(i, scan_strings);
                }
                changed
            }
            Value::Object(map) => {
                let mut changed = false;
                let pair = is_secret_pair(map);
                for (k, val) in map.iter_mut() {
                    if hides_value(pair, k, val) {
                        *val = Value::String(REDACTED.into());
                        changed = true;
                    } else {
                        changed |= self.redact_json_inner(val, scan_strings);
                    }
                }
                changed
            }
            _ => false,
        }
    }

    /// Only the text rules, on every string of `v` (keys and shapes left as they are).
    pub fn redact_json_strings(&self, v: &mut Value) {
        match v {
            Value::String(s) => {
                if let Cow::Owned(r) = self.redact_str(s) {
                    *s = r;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| self.redact_json_strings(i)),
            Value::Object(map) => map.values_mut().for_each(|i| self.redact_json_strings(i)),
            _ => {}
        }
    }
}

/// Whether `b` holds `n` consecutive base64/token characters.
fn has_token_run(b: &[u8], n: usize) -> bool {
    let mut run = 0;
    for &c in b {
        if c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'_' | b'-') {
            run += 1;
            if run >= n {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

/// The JSON-shape rules, shared by [`Redactor::redact_json`] and the
/// streaming preview serialiser (`telemetry::preview`), which redacts values
/// too large to copy.
///
/// `{"name": "DB_PASSWORD", "value": X}` (also `key`, `header`…): an object
/// naming a secret, whose value fields are then hidden.
pub fn is_secret_pair(map: &serde_json::Map<String, Value>) -> bool {
    const NAMES: [&str; 7] = ["name", "key", "header", "field", "Name", "Key", "variable"];
    let names = |v: &Value| v.as_str().is_some_and(is_secret_name);
    // Most maps (a node's params) have fewer keys than there are names: a
    // walk over them beats seven hashed lookups, twice per node.
    if map.len() <= NAMES.len() {
        map.iter()
            .any(|(k, v)| NAMES.contains(&k.as_str()) && names(v))
    } else {
        NAMES.iter().any(|k| map.get(*k).is_some_and(names))
    }
}

/// `["Authorization", X]`: a name/value tuple naming a secret.
pub fn is_secret_tuple(items: &[Value]) -> bool {
    matches!(items, [Value::String(n), v] if is_secret_name(n) && !v.is_null() && v.as_str() != Some(REDACTED))
}

/// Whether the value under `key` is hidden whole (objects and arrays too):
/// a secret name, or the value field of a secret pair (`pair`).
pub fn hides_value(pair: bool, key: &str, v: &Value) -> bool {
    let value_field = pair && matches!(key, "value" | "Value" | "val" | "secret" | "data");
    (value_field || is_secret_name(key)) && !v.is_null() && v.as_str() != Some(REDACTED)
}

/// The name rule over `name <sep> value` text: `re` matches name and
/// separator; the value after it is read here, so that a match never swallows
/// the next `NAME=` (as a regex reading the value too would).
fn name_values(re: &Regex, text: &str) -> Option<String> {
    let mut out = String::new();
    let mut cursor = 0;
    for c in re.captures_iter(text) {
        let (Some(m), Some(name)) = (c.get(0), c.get(1)) else {
            continue;
        };
        // In JSON text the name after `\n` starts with the escape's letter (`npwd`).
        let escaped = text[..name.start()].ends_with('\\');
        let name = if escaped {
            &name.as_str()[1..]
        } else {
            name.as_str()
        };
        if m.start() < cursor || !is_secret_name(name) {
            continue;
        }
        let rest = &text[m.end()..];
        let whole_line = name.to_ascii_lowercase().contains("cookie");
        let Some((start, end)) = value_span(rest, whole_line) else {
            continue;
        };
        let value = &rest[start..end];
        if value.starts_with(REDACTED) {
            continue;
        }
        out.push_str(&text[cursor..m.end() + start]);
        out.push_str(REDACTED);
        cursor = m.end() + end;
    }
    if cursor == 0 {
        return None;
    }
    out.push_str(&text[cursor..]);
    Some(out)
}

/// Where the value at the start of `rest` lies (quotes excluded): `"…"`,
/// `'…'`, `\"…\"` (inside JSON text), or a bare run up to a delimiter; with
/// `whole_line`, the rest of the line.
fn value_span(rest: &str, whole_line: bool) -> Option<(usize, usize)> {
    let b = rest.as_bytes();
    let (start, end) = if let Some(inner) = rest.strip_prefix("\\\"") {
        let close = inner.find("\\\"").map(|i| i + 2).unwrap_or(rest.len());
        (2, close)
    } else if b.first() == Some(&b'"') {
        let mut escaped = false;
        let mut close = rest.len();
        for (i, c) in rest.char_indices().skip(1) {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    close = i;
                    break;
                }
                _ => {}
            }
        }
        (1, close)
    } else if b.first() == Some(&b'\'') {
        (1, rest[1..].find('\'').map(|i| i + 1).unwrap_or(rest.len()))
    } else if whole_line {
        (0, rest.find(['\n', '\r', '"', '\\']).unwrap_or(rest.len()))
    } else {
        let end = rest
            .find(|c: char| {
                c.is_whitespace()
                    || matches!(
                        c,
                        '"' | '\'' | ',' | ';' | '&' | '<' | '>' | '{' | '}' | '[' | ']' | '\\'
                    )
            })
            .unwrap_or(rest.len());
        (0, end)
    };
    (end > start).then_some((start, end))
}

/// Header values of an `OTEL_EXPORTER_OTLP_HEADERS`-style list, whatever its
/// shape: `k=v,k2=v2`, and also the mistaken `k: v` form, so a malformed list
/// is still scrubbed.
fn header_values(s: &str) -> Vec<(String, String)> {
    s.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').or_else(|| pair.split_once(':'))?;
            let v = v.trim();
            let decoded = super::otlp::percent_decode(v);
            Some((k.trim().to_string(), decoded))
        })
        .flat_map(|(k, v)| {
            // `Bearer X`: X alone is the secret too.
            let mut out = vec![(k.clone(), v.clone())];
            if let Some((_, tok)) = v.split_once(' ') {
                out.push((k, tok.trim().to_string()));
            }
            out
        })
        .collect()
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The text a base64 run (standard or URL-safe, padded or not) decodes to,
/// when it is UTF-8.
fn decode_base64(s: &str) -> Option<String> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let t = s.trim_end_matches('=');
    let bytes = if t.contains(['-', '_']) {
        URL_SAFE_NO_PAD.decode(t).ok()?
    } else {
        STANDARD_NO_PAD.decode(t).ok()?
    };
    String::from_utf8(bytes).ok()
}

/// Redacts a trace read back from a file (for `trace show`, `report`,
/// `diff` and `export`): it was redacted when written, but perhaps by an
/// older pflow, or written by another tool.
pub fn redact_request(
    req: &mut opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
) {
    for rs in &mut req.resource_spans {
        if let Some(res) = rs.resource.as_mut() {
            redact_proto_attrs(&mut res.attributes);
        }
        for sp in rs.scope_spans.iter_mut().flat_map(|ss| ss.spans.iter_mut()) {
            redact_span(sp);
        }
    }
}

/// [`redact_request`] for one span: its name, attribute and event values,
/// links and status message. The trace viewers redact only the spans they keep.
pub fn redact_span(sp: &mut opentelemetry_proto::tonic::trace::v1::Span) {
    let r = global();
    let text = |s: &mut String| {
        if let Cow::Owned(x) = r.redact_str(s) {
            *s = x;
        }
    };
    text(&mut sp.name);
    redact_proto_attrs(&mut sp.attributes);
    for ev in &mut sp.events {
        text(&mut ev.name);
        redact_proto_attrs(&mut ev.attributes);
    }
    for l in &mut sp.links {
        redact_proto_attrs(&mut l.attributes);
    }
    if let Some(st) = sp.status.as_mut() {
        text(&mut st.message);
    }
}

/// Attribute values of a span, event, link or resource. Keys are pflow's
/// vocabulary (`pflow.cost.price_key` is no secret): only values are scanned.
pub fn redact_proto_attrs(kvs: &mut [opentelemetry_proto::tonic::common::v1::KeyValue]) {
    use opentelemetry_proto::tonic::common::v1::{any_value::Value as V, AnyValue};
    fn value(r: &Redactor, v: &mut AnyValue) {
        match v.value.as_mut() {
            Some(V::StringValue(s)) => {
                if let Cow::Owned(x) = r.redact_str(s) {
                    *s = x;
                }
            }
            Some(V::ArrayValue(a)) => a.values.iter_mut().for_each(|x| value(r, x)),
            Some(V::KvlistValue(kv)) => redact_proto_attrs(&mut kv.values),
            _ => {}
        }
    }
    let r = global();
    for kv in kvs {
        if let Some(v) = kv.value.as_mut() {
            value(r, v);
        }
    }
}

static GLOBAL: OnceLock<Redactor> = OnceLock::new();

/// Set only by `benches/runtime.rs` to measure what redaction costs a run
/// (paired runs with and without it in one process); pflow never sets it.
static BENCH_BYPASS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// For benchmarks only: `true` makes every text scan a no-op (the JSON name
/// rules still apply). Nothing in pflow calls it.
#[doc(hidden)]
pub fn bypass_text_scan_for_benchmark(on: bool) {
    BENCH_BYPASS.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// The process-wide redactor, built on first use from the environment.
pub fn global() -> &'static Redactor {
    GLOBAL.get_or_init(Redactor::from_env)
}

/// Adds a value known to be secret to the process-wide redactor.
pub fn add_secret(value: &str) {
    global().add_secret(value);
}

/// Redacts with the process-wide redactor.
pub fn redact(s: &str) -> Cow<'_, str> {
    global().redact_str(s)
}

/// A URL as telemetry may show it (`url.full`): credentials in the user
/// info become `REDACTED:REDACTED` (the HTTP conventions' spelling), the
/// values of secret query parameters (`key`, `sig`, `X-Amz-Signature`, …)
/// are replaced, and the rest goes through the redactor like any value.
pub fn redact_url(url: &reqwest::Url) -> String {
    // The redactor first (a key in the path), then the conventions' spelling
    // over its marks where the conventions name the part.
    let scanned = redact(url.as_str());
    let Ok(mut u) = reqwest::Url::parse(&scanned) else {
        return scanned.into_owned();
    };
    if !u.username().is_empty() {
        let _ = u.set_username("REDACTED");
    }
    if u.password().is_some() {
        let _ = u.set_password(Some("REDACTED"));
    }
    if u.query().is_some() {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_secret_query_param(&k) {
                    "REDACTED".to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.into()
}

/// A message pflow prints itself (errors, warnings, progress, viewer text):
/// redacted, and with control characters escaped so that terminal escapes in
/// a value (OSC 52 clipboard writes, title changes, colours) reach the
/// terminal as text. Newlines and tabs stay.
pub fn for_display(s: &str) -> String {
    escape_controls(&redact(s)).into_owned()
}

/// Escapes C0 and C1 control characters except `\n` and `\t` as `\x1b` / `\u{9b}`.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    let is_bad = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !s.chars().any(is_bad) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_bad(c) {
            if (c as u32) < 0x80 {
                out.push_str(&format!("\\x{:02x}", c as u32));
            } else {
                out.push_str(&format!("\\u{{{:x}}}", c as u32));
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests;
