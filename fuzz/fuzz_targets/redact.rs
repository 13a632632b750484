//! Redaction of telemetry text and JSON. Besides "never panics", checks the
//! promise that matters: a known secret placed in arbitrary text never
//! survives, and neither does a configured literal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pflow::telemetry::redact::Redactor;
use std::sync::OnceLock;

/// One credential of each format the redactor knows (from its unit tests).
const SECRETS: &[&str] = &[
    "sk-proj-Abc123def456GHI789jkl012MNO345pqr678STU901vwx",
    "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789ABCDEF-_xyz",
    "AIzaSyD-1234567890abcdefghijklmnopqrstu",
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
    "glpat-abcdefghij0123456789",
    "xoxb-1234567890-abcdefghij",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
];

/// Lowercase alphanumerics only: cannot overlap `[REDACTED]`, so any survivor is a leak.
const LITERAL: &str = "internalsecret0value9";

fn redactor() -> &'static Redactor {
    static R: OnceLock<Redactor> = OnceLock::new();
    R.get_or_init(|| Redactor::new(vec![LITERAL.to_string()]))
}

/// Keys are names, not values, and are kept as written; every string value is checked.
fn assert_no_literal(v: &serde_json::Value) {
    match v {
        serde_json::Value::String(s) => {
            assert!(
                !s.contains(LITERAL),
                "literal survived JSON redaction: {s:?}"
            )
        }
        serde_json::Value::Array(items) => items.iter().for_each(assert_no_literal),
        serde_json::Value::Object(m) => m.values().for_each(assert_no_literal),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let r = redactor();
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let _ = r.redact_str(&text);

    // Any JSON document: secret-named keys and credential-shaped strings anywhere.
    if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(rest) {
        r.redact_json(&mut v);
        assert_no_literal(&v);
    }

    // A known secret, space-separated inside arbitrary text, must not survive.
    let secret = SECRETS[pick as usize % SECRETS.len()];
    let cut = text
        .char_indices()
        .map(|(i, _)| i)
        .nth(rest.len() / 2)
        .unwrap_or(text.len());
    let (a, b) = text.split_at(cut);
    for s in [secret, LITERAL] {
        let planted = format!("{a} {s} {b}");
        let out = r.redact_str(&planted);
        // Copies already in the text may legitimately stay (e.g. `AKIA…` glued to a word);
        // the planted, space-separated one must not.
        let before = a.matches(s).count() + b.matches(s).count();
        assert!(
            out.matches(s).count() <= before,
            "`{s}` survived in {planted:?}: {out:?}"
        );
    }
});
