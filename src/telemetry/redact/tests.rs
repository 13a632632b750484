use super::*;

#[path = "../../../tests/corpus/secrets.rs"]
mod corpus;

#[test]
fn rules_compile() {
    let r = Redactor::new(vec![]);
    assert_eq!(r.regexes.len(), RULES.len());
    for i in 0..RULES.len() {
        r.regex(i);
    }
    r.always_set();
}

#[test]
fn every_corpus_kind_is_redacted_alone_in_text_and_in_json() {
    let r = Redactor::new(vec![]);
    let mut g = corpus::Gen::new();
    let samples = corpus::kinds(&mut g);
    assert!(samples.len() >= 60, "{} kinds", samples.len());
    let mut failures = Vec::new();
    for s in &samples {
        for text in [
            s.text.clone(),
            format!("log: {} and more", s.text),
            serde_json::to_string(&s.text).unwrap_or_default(),
        ] {
            let out = r.redact_str(&text);
            for (kind, f) in corpus::leaks(std::slice::from_ref(s), &out) {
                failures.push(format!("{kind}: `{f}` survived in `{out}`"));
            }
        }
    }
    // All of them in one text (as a shell's stdout would carry them).
    let blob = corpus::blob(&samples);
    for text in [
        blob.clone(),
        serde_json::to_string(&blob).unwrap_or_default(),
    ] {
        let out = r.redact_str(&text);
        for (kind, f) in corpus::leaks(&samples, &out) {
            failures.push(format!("{kind} (in the blob): `{f}` in {out}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn bearer_url_password_private_key_and_assignments() {
    let r = Redactor::new(vec![]);
    assert_eq!(
        r.redact_str("Authorization: Bearer abc.def-ghi_jkl"),
        "Authorization: [REDACTED]"
    );
    assert_eq!(
        r.redact_str("postgres://admin:hunter2pw@db:5432/x"),
        "postgres://admin:[REDACTED]@db:5432/x"
    );
    assert_eq!(
        r.redact_str("redis://:hunter2pw@cache:6379"),
        "redis://:[REDACTED]@cache:6379"
    );
    assert_eq!(
        r.redact_str("postgres://u:p@ss/w0rd@db/x"),
        "postgres://u:[REDACTED]@db/x"
    );
    let pk = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----";
    assert_eq!(r.redact_str(pk), REDACTED);
    assert_eq!(
        r.redact_str("password=swordfish99 ok"),
        "password=[REDACTED] ok"
    );
    assert_eq!(
        r.redact_str(r#"{"api_key": "zzz-value", "n": 1}"#),
        r#"{"api_key":"[REDACTED]","n":1}"#
    );
    assert_eq!(
        r.redact_str("see https://x.io/a?page=2&token=abcdef123456&z=1"),
        "see https://x.io/a?page=2&token=[REDACTED]&z=1"
    );
}

#[test]
fn literals_and_their_encodings_are_scrubbed() {
    let r = Redactor::new(vec!["my-internal-secret-value".into(), "short".into()]);
    assert_eq!(
        r.redact_str("x my-internal-secret-value y"),
        "x [REDACTED] y"
    );
    assert_eq!(r.redact_str("short stays"), "short stays");
    r.add_secret("p@ss w/rd!value");
    assert!(!r.redact_str("q=p%40ss%20w%2Frd%21value").contains("w%2Frd"));
    let b64 = base64::engine::general_purpose::STANDARD.encode("p@ss w/rd!value");
    assert!(
        !r.redact_str(&b64).contains(&b64[..8]),
        "{}",
        r.redact_str(&b64)
    );
}

#[test]
fn otlp_header_values_even_malformed_are_literals() {
    let v = header_values("Authorization: Bearer abcdefgh12345,x-key=val%20ue123");
    let values: Vec<&str> = v.iter().map(|(_, v)| v.as_str()).collect();
    assert!(values.contains(&"abcdefgh12345"), "{values:?}");
    assert!(values.contains(&"val ue123"), "{values:?}");
    // Percent-decoding never panics on a cut UTF-8 sequence.
    let _ = header_values("x=%aé,y=%,z=%e2%82");
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
    assert_eq!(
        r.redact_str("task-1234567890abcdefghij"),
        "task-1234567890abcdefghij"
    );
}

#[test]
fn plain_text_is_untouched_and_borrowed() {
    let r = Redactor::new(vec![]);
    for s in [
        "hello world, the task is done; tokens=42 key points",
        "commit 3f786850e387550fdab836ed7e6dc881de23001b is on main",
        "gen_ai.usage.input_tokens=12 max_tokens: 300",
        "see https://example.com/docs?page=2&lang=en",
        "/home/user/projects/pflow/src/telemetry/redact.rs:42",
        // Opens like a JSON array (a progress line), is not one.
        "[0.53s] ✓ token_count (1/3 nodes) · 0 tok · $0.000000",
    ] {
        assert!(
            matches!(r.redact_str(s), Cow::Borrowed(_)),
            "{s} -> {}",
            r.redact_str(s)
        );
    }
}

/// Text that opens and closes like JSON but has a secret-named key is
/// parsed and redacted; text that only opens like it keeps the text rules.
#[test]
fn only_text_that_closes_like_json_is_parsed() {
    let r = Redactor::new(vec![]);
    assert_eq!(
        r.redact_str(r#"  {"password": "hunter2-x"}  "#),
        r#"{"password":"[REDACTED]"}"#
    );
    assert_eq!(
        r.redact_str("[0.1s] password=hunter2-x"),
        "[0.1s] password=[REDACTED]"
    );
}

#[test]
fn json_shapes() {
    let r = Redactor::new(vec![]);
    let mut v = serde_json::json!({
        "headers": {"Authorization": "abc", "Accept": "json", "X-Auth": "q1w2e3r4"},
        "api_key": "zzz",
        "password": {"value": "hunter22"},
        "env": [{"name": "DB_PASSWORD", "value": "pw-in-pair"}, {"name": "MODE", "value": "prod"}],
        "pairs": [["Authorization", "Bearer-in-pair"], ["Accept", "text/plain"]],
        "params": "{\"command\": \"x\", \"token\": \"nested-json-token\"}",
        "list": ["ghp_abcdefghijklmnopqrstuvwxyz0123456789"],
    });
    r.redact_json(&mut v);
    assert_eq!(v["headers"]["Authorization"], REDACTED);
    assert_eq!(v["headers"]["X-Auth"], REDACTED);
    assert_eq!(v["headers"]["Accept"], "json");
    assert_eq!(v["api_key"], REDACTED);
    assert_eq!(v["password"], REDACTED);
    assert_eq!(v["env"][0]["value"], REDACTED);
    assert_eq!(v["env"][1]["value"], "prod");
    assert_eq!(v["pairs"][0][1], REDACTED);
    assert_eq!(v["pairs"][1][1], "text/plain");
    let params = v["params"].as_str().unwrap_or_default();
    assert!(!params.contains("nested-json-token"), "{params}");
    assert!(params.contains("\"command\":\"x\""), "{params}");
    assert_eq!(v["list"][0], REDACTED);
}

#[test]
fn controls_are_escaped_for_display() {
    assert_eq!(
        escape_controls("a\x1b]52;c;ZXZpbA==\x07b\nc\u{9b}31m"),
        "a\\x1b]52;c;ZXZpbA==\\x07b\nc\\u{9b}31m"
    );
    assert!(matches!(escape_controls("plain\ttext\n"), Cow::Borrowed(_)));
}

#[test]
fn urls_lose_credentials_and_secret_query_values() {
    let u = reqwest::Url::parse("https://alice:hunter2@api.example.com:8443/v1/x?key=AIzaSyA1234567890abcdefghijklmnopqrstu&q=weather").unwrap();
    let r = super::redact_url(&u);
    assert_eq!(
        r,
        "https://REDACTED:REDACTED@api.example.com:8443/v1/x?key=REDACTED&q=weather"
    );
    let plain = reqwest::Url::parse("http://127.0.0.1:9/a?b=c").unwrap();
    assert_eq!(super::redact_url(&plain), "http://127.0.0.1:9/a?b=c");
}
