//! The name rule: whether a param, header, env var, JSON key or query
//! parameter name says its value is a credential.
//!
//! Names are split into words (`DB_PASSWORD`, `x-api-key`, `privateKey`,
//! `AccountKey` → `db password`, `x api key`, `private key`, `account key`)
//! so `pass` or `auth` match as words without catching `passenger` or
//! `author`, and `token` matches without catching token counts (`max_tokens`).

/// Words that make a name secret wherever they stand in it.
const SECRET_WORDS: &[&str] = &[
    "token",
    "secret",
    "secrets",
    "password",
    "passwd",
    "pwd",
    "pass",
    "passphrase",
    "auth",
    "authorization",
    "credential",
    "credentials",
    "cookie",
    "cookies",
    "apikey",
    "dsn",
    "mnemonic",
    "signature",
    "sig",
    "jwt",
    "privatekey",
    "accesskey",
    "accountkey",
    "webhook",
    "ssws",
    "sas",
    "sessionid",
];

/// Word pairs that make a name secret (`session_id`, `conn_str`, `webhook_url`…).
const SECRET_PAIRS: &[(&str, &str)] = &[
    ("session", "id"),
    ("conn", "str"),
    ("connection", "string"),
    ("seed", "phrase"),
    ("recovery", "phrase"),
    ("client", "secret"),
];

/// Glued spellings found inside one word (`githubtoken`, `dbpassword`, `apikey`).
const SECRET_FRAGMENTS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "apikey",
    "authorization",
    "credential",
    "cookie",
    "mnemonic",
    "privatekey",
    "accesskey",
    "accountkey",
    "connectionstring",
    "connstr",
    "webhookurl",
    "sessionid",
    "authtoken",
    "accesstoken",
    "refreshtoken",
];

/// Query parameters that carry a credential in URLs although their name alone
/// would not say so to the name rule (signed URLs, OAuth codes, SAS tokens).
const SECRET_QUERY_PARAMS: &[&str] = &[
    "key",
    "code",
    "sig",
    "signature",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "x-goog-signature",
    "x-goog-credential",
    "sv_sig",
    "auth",
    "access_token",
    "id_token",
    "refresh_token",
    "client_secret",
    "session",
    "sid",
    "otp",
];

/// Splits `privateKey`, `DB_PASSWORD`, `x-api-key` into lower-case words.
fn words(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if !c.is_ascii_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        if c.is_ascii_uppercase() && prev_lower && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        cur.push(c.to_ascii_lowercase());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Roots every secret word, pair and fragment contains: a name without one
/// is answered without splitting it into words (the common case, and it
/// allocates nothing).
const ROOTS: &[&str] = &[
    "token",
    "secret",
    "pass",
    "pwd",
    "auth",
    "key",
    "cookie",
    "credential",
    "dsn",
    "mnemonic",
    "sig",
    "jwt",
    "webhook",
    "ssws",
    "sas",
    "session",
    "conn",
    "phrase",
];

/// Whether `text` holds a root of a secret name anywhere (ASCII case-insensitive).
pub fn has_secret_root(text: &str) -> bool {
    static ROOT_SCAN: std::sync::OnceLock<Option<aho_corasick::AhoCorasick>> =
        std::sync::OnceLock::new();
    let scan = ROOT_SCAN.get_or_init(|| {
        aho_corasick::AhoCorasick::builder()
            .kind(Some(aho_corasick::AhoCorasickKind::DFA))
            .ascii_case_insensitive(true)
            .build(ROOTS)
            .ok()
    });
    match scan {
        Some(ac) => ac.is_match(text),
        None => true,
    }
}

/// Whether a param, header, env var or JSON key name suggests a secret.
///
/// Remembered per thread for short names: a run asks about the same few
/// (each node's param and output keys) several times a node, and working
/// one out scans it for roots first.
pub fn is_secret_name(name: &str) -> bool {
    const SLOTS: usize = 64;
    const MAX_REMEMBERED: usize = 48;
    type Memo = [Option<(Box<str>, bool)>; SLOTS];
    thread_local! {
        static MEMO: std::cell::RefCell<Memo> =
            const { std::cell::RefCell::new([const { None }; SLOTS]) };
    }
    if name.len() > MAX_REMEMBERED {
        return judge_name(name);
    }
    // FNV-1a: names are short, and a slot only has to spread them.
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let slot = (h % SLOTS as u64) as usize;
    MEMO.with(|m| {
        let Ok(mut m) = m.try_borrow_mut() else {
            return judge_name(name);
        };
        match &m[slot] {
            Some((n, secret)) if **n == *name => *secret,
            _ => {
                let secret = judge_name(name);
                m[slot] = Some((name.into(), secret));
                secret
            }
        }
    })
}

fn judge_name(name: &str) -> bool {
    if name.len() > 128 || !has_secret_root(name) {
        return false;
    }
    let w = words(name);
    if w.is_empty() {
        return false;
    }
    // `token` names a credential when it ends the name (`github_token`,
    // `X-Auth-Token`, `githubtoken`); before another word it is a count or a
    // kind (`token_sources`, `token_count`, `max_tokens`).
    if w.last().is_some_and(|l| l.ends_with("token")) {
        return true;
    }
    if w.iter().any(|x| {
        (SECRET_WORDS.contains(&x.as_str()) && x != "token")
            || SECRET_FRAGMENTS.iter().any(|f| x.contains(f))
    }) {
        return true;
    }
    if w.windows(2)
        .any(|p| SECRET_PAIRS.contains(&(p[0].as_str(), p[1].as_str())))
    {
        return true;
    }
    // `key` alone or last (`api_key`, `stripe_key`, `DD_APP_KEY`, `privateKey`):
    // a name ending in "key" holds a key far more often than an index.
    w.last().is_some_and(|l| l == "key")
}

/// The name rule for URL query parameters: secret names plus signed-URL and OAuth names.
pub fn is_secret_query_param(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    SECRET_QUERY_PARAMS.contains(&n.as_str()) || is_secret_name(name)
}

/// Environment variables whose names look secret but whose values are not
/// (`PWD` is the working directory: scrubbing it would hide every path).
pub fn is_secret_env_var(name: &str) -> bool {
    !matches!(name, "PWD" | "OLDPWD") && is_secret_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_answers_are_the_worked_out_ones() {
        // 200 names over 64 slots: every slot is taken over several times,
        // and each name is asked three times (first, remembered, evicted).
        let names: Vec<String> = (0..200)
            .map(|i| match i % 4 {
                0 => format!("param_{i}"),
                1 => format!("api_key_{i}"),
                2 => format!("x{i}_token"),
                _ => format!("monkey{i}"),
            })
            .collect();
        for _ in 0..3 {
            for n in &names {
                assert_eq!(is_secret_name(n), judge_name(n), "{n}");
            }
        }
        let long = format!("{}_secret", "a".repeat(60));
        assert!(is_secret_name(&long) && is_secret_name(&long));
    }

    #[test]
    fn secret_names_of_every_spelling() {
        for n in [
            "api_key",
            "OPENAI_API_KEY",
            "Authorization",
            "x-api-key",
            "password",
            "github_token",
            "GITHUB_TOKEN",
            "client_secret",
            "key",
            "pwd",
            "pass",
            "db_pass",
            "privateKey",
            "accessKey",
            "AccountKey",
            "SharedAccessKey",
            "dsn",
            "SENTRY_DSN",
            "conn_str",
            "connectionString",
            "webhook_url",
            "SLACK_WEBHOOK_URL",
            "mnemonic",
            "X-Auth",
            "X-Auth-Token",
            "X-Signature",
            "X-Hub-Signature-256",
            "Cookie",
            "Set-Cookie",
            "accessToken",
            "githubtoken",
            "DD_API_KEY",
            "DD-APPLICATION-KEY",
            "session_id",
            "sessionId",
            "seed_phrase",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "x-amz-security-token",
            "DB_PASSWORD",
            "passwd",
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
            "max_tokens",
            "tokenizer",
            "token_sources",
            "token_count",
            "command",
            "author",
            "passenger",
            "bypass",
            "key_points",
            "keyboard",
            "compass",
            "name",
            "value",
            "",
        ] {
            assert!(!is_secret_name(n), "{n}");
        }
        assert!(!is_secret_env_var("PWD"));
        assert!(is_secret_env_var("DB_PWD"));
        assert!(is_secret_query_param("X-Amz-Signature"));
        assert!(is_secret_query_param("code"));
        assert!(!is_secret_query_param("page"));
    }
}
