//! Secret redaction for everything that leaves the process as telemetry.
//!
//! Two rules: values under secret-looking names (token, key, secret,
//! password, authorization…) are replaced whole, and any string is scanned for
//! common credential formats (OpenAI/Anthropic/Google keys, bearer tokens, AWS
//! keys, GitHub tokens, JWTs, private keys, passwords in URLs) and for the
//! literal values of secret-named environment variables.
//!
//! ```
//! let r = pflow::telemetry::redact::Redactor::new(Vec::new());
//! assert_eq!(r.redact_str("key sk-proj-abcdefghijklmnop1234"), "key [REDACTED]");
//! assert!(pflow::telemetry::redact::is_secret_name("OPENAI_API_KEY"));
//! ```

use regex::{Regex, RegexSet};
use std::borrow::Cow;

pub const REDACTED: &str = "[REDACTED]";

/// Whether a param, header, env var or JSON key name suggests a secret.
pub fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    // "tokens" (token counts like `input_tokens`) is data, "token" is a credential.
    if n.contains("token") && !n.contains("tokens") {
        return true;
    }
    const PARTS: &[&str] = &[
        "secret",
        "password",
        "passwd",
        "passphrase",
        "authorization",
        "api_key",
        "api-key",
        "apikey",
        "access_key",
        "private_key",
        "credential",
        "cookie",
        "session_id",
        "x-api-key",
        "x-goog-api-key",
    ];
    if PARTS.iter().any(|p| n.contains(p)) {
        return true;
    }
    n == "key" || n == "auth" || n.ends_with("_key") || n.ends_with("-key") || n.ends_with(".key")
}

/// (pattern, replacement) pairs; `$1` keeps a non-secret prefix.
const PATTERNS: &[(&str, &str)] = &[
    (
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|\z)",
        REDACTED,
    ),
    // Distinctive prefixes match even glued to a word (`user_ghp_…`, `VTjghp_…`: found by
    // fuzzing); the generic ones (`sk-…`, `AKIA…`, `AIza…`) need a word boundary, or
    // identifiers like `task-…` would be scrubbed.
    (
        r"sk-(?:proj-|ant-(?:api\d\d-|admin\d\d-)?|or-v1-|svcacct-)[A-Za-z0-9_\-]{16,}",
        REDACTED,
    ),
    (r"\bsk-[A-Za-z0-9_\-]{16,}", REDACTED),
    (r"\bAIza[0-9A-Za-z_\-]{30,}", REDACTED),
    (r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b", REDACTED),
    (r"(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}", REDACTED),
    (r"github_pat_[A-Za-z0-9_]{20,}", REDACTED),
    (r"glpat-[A-Za-z0-9_\-]{20,}", REDACTED),
    (r"xox[abposr]-[A-Za-z0-9\-]{10,}", REDACTED),
    (
        r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",
        REDACTED,
    ),
    (
        r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9\-._~+/]{8,}=*",
        "$1 [REDACTED]",
    ),
    (
        r"([a-zA-Z][a-zA-Z0-9+.\-]*://[^/\s:@]+:)[^@\s/]+@",
        "$1[REDACTED]@",
    ),
    (
        r#"(?i)((?:aws_secret_access_key|password|passwd|secret|api[_-]?key|access[_-]?token|auth[_-]?token|client[_-]?secret)["']?\s*[:=]\s*["']?)[^\s"'&,;]{4,}"#,
        "${1}[REDACTED]",
    ),
];

/// Compiled redaction rules plus the secret values known at start-up.
#[derive(Debug)]
pub struct Redactor {
    set: RegexSet,
    rules: Vec<(Regex, &'static str)>,
    literals: Vec<String>,
}

impl Redactor {
    /// `literals`: exact secret values to scrub (e.g. from the environment).
    pub fn new(mut literals: Vec<String>) -> Self {
        literals.retain(|s| s.len() >= 8);
        literals.sort_by_key(|s| std::cmp::Reverse(s.len()));
        literals.dedup();
        // The patterns are constants; a failure here is a programming error caught by tests.
        let set =
            RegexSet::new(PATTERNS.iter().map(|(p, _)| *p)).expect("redaction patterns compile");
        let rules = PATTERNS
            .iter()
            .map(|(p, r)| (Regex::new(p).expect("redaction pattern compiles"), *r))
            .collect();
        Redactor {
            set,
            rules,
            literals,
        }
    }

    /// A redactor that also scrubs the values of secret-named environment variables.
    pub fn from_env() -> Self {
        let literals = std::env::vars()
            .filter(|(k, _)| is_secret_name(k))
            .map(|(_, v)| v)
            .collect();
        Self::new(literals)
    }

    pub fn redact_str<'a>(&self, s: &'a str) -> Cow<'a, str> {
        let mut out: Cow<'a, str> = Cow::Borrowed(s);
        for lit in &self.literals {
            if out.contains(lit.as_str()) {
                out = Cow::Owned(out.replace(lit.as_str(), REDACTED));
            }
        }
        let matches = self.set.matches(&out);
        if !matches.matched_any() {
            return out;
        }
        for i in matches.iter() {
            let (re, rep) = &self.rules[i];
            if let Cow::Owned(replaced) = re.replace_all(&out, *rep) {
                out = Cow::Owned(replaced);
            }
        }
        out
    }

    /// Redacts a JSON value in place: secret-named keys lose their value,
    /// strings are scanned for credential formats.
    pub fn redact_json(&self, v: &mut serde_json::Value) {
        match v {
            serde_json::Value::String(s) => {
                if let Cow::Owned(r) = self.redact_str(s) {
                    *s = r;
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|i| self.redact_json(i)),
            serde_json::Value::Object(map) => {
                for (k, val) in map.iter_mut() {
                    if is_secret_name(k) && !val.is_null() && !val.is_object() {
                        *val = serde_json::Value::String(REDACTED.into());
                    } else {
                        self.redact_json(val);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Credential formats that must never survive redaction.
    pub(crate) const CORPUS: &[&str] = &[
        "sk-proj-Abc123def456GHI789jkl012MNO345pqr678STU901vwx",
        "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789ABCDEF-_xyz",
        "sk-or-v1-0123456789abcdef0123456789abcdef0123456789abcdef",
        "sk-1234567890abcdefghijklmnop",
        "AIzaSyD-1234567890abcdefghijklmnopqrstu",
        "AKIAIOSFODNN7EXAMPLE",
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
        "glpat-abcdefghij0123456789",
        "xoxb-1234567890-abcdefghij",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ];

    #[test]
    fn corpus_is_redacted_alone_and_in_text() {
        let r = Redactor::new(vec![]);
        for secret in CORPUS {
            let out = r.redact_str(secret);
            assert!(!out.contains(secret), "{secret} survived: {out}");
            let text = format!("config: {secret}, more text");
            let out = r.redact_str(&text);
            assert!(!out.contains(secret), "{secret} survived in text: {out}");
            assert!(out.contains(REDACTED));
        }
    }

    #[test]
    fn bearer_url_password_private_key_and_assignments() {
        let r = Redactor::new(vec![]);
        assert_eq!(
            r.redact_str("Authorization: Bearer abc.def-ghi_jkl"),
            "Authorization: Bearer [REDACTED]"
        );
        assert_eq!(
            r.redact_str("postgres://admin:hunter2pw@db:5432/x"),
            "postgres://admin:[REDACTED]@db:5432/x"
        );
        let pk = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----";
        assert_eq!(r.redact_str(pk), REDACTED);
        assert_eq!(
            r.redact_str("password=swordfish99 ok"),
            "password=[REDACTED] ok"
        );
        assert_eq!(
            r.redact_str("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            "aws_secret_access_key = [REDACTED]"
        );
    }

    #[test]
    fn literals_from_environment_are_scrubbed() {
        let r = Redactor::new(vec!["my-internal-secret-value".into(), "short".into()]);
        assert_eq!(
            r.redact_str("x my-internal-secret-value y"),
            "x [REDACTED] y"
        );
        assert_eq!(r.redact_str("short stays"), "short stays");
    }

    /// Fuzzing found a GitHub token glued to the word before it surviving (`\b` never matched).
    #[test]
    fn prefixed_tokens_glued_to_a_word_are_redacted() {
        let r = Redactor::new(vec![]);
        for s in [
            "AETVTjghp_abcdefghijklmnopqrstuvwxyz0123456789\" ,",
            "user_github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
            "keysk-proj-Abc123def456GHI789jkl012MNO345pqr678STU901vwx",
            "xglpat-abcdefghij0123456789 axoxb-1234567890-abcdefghij",
        ] {
            let out = r.redact_str(s);
            for leak in ["ghp_", "github_pat_", "sk-proj-", "glpat-", "xoxb-"] {
                assert!(!out.contains(leak), "{s} -> {out}");
            }
        }
        // Generic prefixes still need a boundary: ordinary identifiers stay.
        assert_eq!(
            r.redact_str("task-1234567890abcdefghij"),
            "task-1234567890abcdefghij"
        );
    }

    #[test]
    fn plain_text_is_untouched_and_borrowed() {
        let r = Redactor::new(vec![]);
        let s = "hello world, the task is done; tokens=42 key points";
        assert!(matches!(r.redact_str(s), Cow::Borrowed(_)));
    }

    #[test]
    fn secret_names() {
        for n in [
            "api_key",
            "OPENAI_API_KEY",
            "Authorization",
            "x-api-key",
            "password",
            "github_token",
            "client_secret",
            "key",
        ] {
            assert!(is_secret_name(n), "{n}");
        }
        for n in [
            "content",
            "file_path",
            "keys",
            "monkey",
            "input_tokens",
            "tokens_total",
            "command",
        ] {
            assert!(!is_secret_name(n), "{n}");
        }
    }

    #[test]
    fn json_keys_and_nested_strings() {
        let r = Redactor::new(vec![]);
        let mut v = serde_json::json!({"headers": {"Authorization": "abc", "Accept": "json"}, "api_key": "zzz", "list": ["ghp_abcdefghijklmnopqrstuvwxyz0123456789"]});
        r.redact_json(&mut v);
        assert_eq!(v["headers"]["Authorization"], REDACTED);
        assert_eq!(v["headers"]["Accept"], "json");
        assert_eq!(v["api_key"], REDACTED);
        assert_eq!(v["list"][0], REDACTED);
    }
}
