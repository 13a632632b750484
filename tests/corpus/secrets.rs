//! Fake credentials of many kinds, generated afresh on every test run (no
//! real-looking secret is ever committed), each inside the text it would
//! come in: a config line, a header, a URL, a connection string.
//!
//! Shared by the redactor's unit tests (`src/telemetry/redact/tests.rs`) and
//! the binary-level corpus test (`tests/it/redaction.rs`).

#![allow(dead_code)]

/// One credential kind: the text carrying it, and the fragments (random
/// parts of 8+ characters) none of which may survive anywhere.
#[derive(Debug, Clone)]
pub struct Sample {
    pub kind: &'static str,
    pub text: String,
    pub fragments: Vec<String>,
}

/// A small xorshift generator seeded from the clock: fresh secrets per run.
pub struct Gen(u64);

impl Gen {
    pub fn new() -> Gen {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        Gen(t ^ (u64::from(std::process::id()) << 32) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn from(&mut self, alphabet: &[u8], n: usize) -> String {
        (0..n)
            .map(|_| alphabet[(self.next() % alphabet.len() as u64) as usize] as char)
            .collect()
    }

    /// Mixed case and digits, at least one of each (so every format rule's
    /// alphabet sees a realistic value).
    pub fn alnum(&mut self, n: usize) -> String {
        loop {
            let s = self.from(
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                n,
            );
            if n < 3
                || (s.bytes().any(|b| b.is_ascii_uppercase())
                    && s.bytes().any(|b| b.is_ascii_lowercase())
                    && s.bytes().any(|b| b.is_ascii_digit()))
            {
                return s;
            }
        }
    }
    pub fn alpha(&mut self, n: usize) -> String {
        self.from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", n)
    }
    pub fn lower(&mut self, n: usize) -> String {
        self.from(b"abcdefghijklmnopqrstuvwxyz", n)
    }
    pub fn upper_alnum(&mut self, n: usize) -> String {
        self.from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", n)
    }
    pub fn hex(&mut self, n: usize) -> String {
        self.from(b"0123456789abcdef", n)
    }
    pub fn digits(&mut self, n: usize) -> String {
        let mut s = self.from(b"123456789", 1);
        s.push_str(&self.from(b"0123456789", n - 1));
        s
    }
    pub fn b64(&mut self, n: usize) -> String {
        loop {
            let s = self.from(
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
                n,
            );
            if s.bytes().any(|b| b.is_ascii_uppercase())
                && s.bytes().any(|b| b.is_ascii_lowercase())
                && s.bytes().any(|b| b.is_ascii_digit())
            {
                return s;
            }
        }
    }
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The corpus: at least 60 kinds (`kinds().len()` is checked by the tests).
pub fn kinds(g: &mut Gen) -> Vec<Sample> {
    let mut v: Vec<Sample> = Vec::new();
    // A secret that is its own text.
    let mut plain = |kind: &'static str, secret: String| {
        v.push(Sample {
            kind,
            text: format!("the {kind} credential is {secret} (do not share)"),
            fragments: vec![secret],
        });
    };
    plain("openai-project", format!("sk-proj-{}", g.alnum(48)));
    plain(
        "openai-service-account",
        format!("sk-svcacct-{}", g.alnum(40)),
    );
    plain("anthropic", format!("sk-ant-api03-{}", g.alnum(80)));
    plain("openrouter", format!("sk-or-v1-{}", g.hex(64)));
    plain("openai-legacy", format!("sk-{}", g.alnum(48)));
    plain("google-api-key", format!("AIza{}", g.alnum(35)));
    plain("google-oauth-token", format!("ya29.{}", g.alnum(60)));
    plain("google-client-secret", format!("GOCSPX-{}", g.alnum(28)));
    plain("aws-access-key-id", format!("AKIA{}", g.upper_alnum(16)));
    plain("aws-secret-access-key", g.b64(40));
    plain("aws-session-token", format!("FwoGZXIvYXdzE{}", g.b64(180)));
    plain(
        "aws-session-token-v2",
        format!("IQoJb3JpZ2luX2Vj{}", g.b64(200)),
    );
    plain("github-classic", format!("ghp_{}", g.alnum(36)));
    plain("github-oauth", format!("gho_{}", g.alnum(36)));
    plain(
        "github-fine-grained",
        format!("github_pat_{}_{}", g.alnum(22), g.alnum(59)),
    );
    plain("gitlab", format!("glpat-{}", g.alnum(20)));
    plain(
        "slack-bot",
        format!("xoxb-{}-{}-{}", g.digits(12), g.digits(12), g.alnum(24)),
    );
    plain(
        "slack-app",
        format!(
            "xapp-1-A{}-{}-{}",
            g.upper_alnum(10),
            g.digits(13),
            g.hex(64)
        ),
    );
    plain(
        "slack-webhook",
        format!(
            "https://hooks.slack.com/services/T{}/B{}/{}",
            g.upper_alnum(8),
            g.upper_alnum(10),
            g.alnum(24)
        ),
    );
    plain(
        "jwt",
        format!("eyJhbGciOiJIUzI1NiJ9.eyJ{}.{}", g.alnum(40), g.alnum(43)),
    );
    plain("stripe-secret", format!("sk_live_{}", g.alnum(24)));
    plain("stripe-restricted", format!("rk_live_{}", g.alnum(24)));
    plain("stripe-webhook", format!("whsec_{}", g.alnum(32)));
    plain("huggingface", format!("hf_{}", g.alpha(34)));
    plain("twilio-api-key", format!("SK{}", g.hex(32)));
    plain("twilio-account-sid", format!("AC{}", g.hex(32)));
    plain("sendgrid", format!("SG.{}.{}", g.alnum(22), g.alnum(43)));
    plain("npm", format!("npm_{}", g.alnum(36)));
    plain("pypi", format!("pypi-AgEIcHlwaS5vcmc{}", g.alnum(60)));
    plain(
        "discord-webhook",
        format!(
            "https://discord.com/api/webhooks/{}/{}",
            g.digits(18),
            g.alnum(68)
        ),
    );
    plain(
        "discord-bot",
        format!("M{}.{}.{}", g.alnum(23), g.alnum(6), g.alnum(27)),
    );
    plain(
        "telegram-bot",
        format!("{}:AA{}", g.digits(10), g.alnum(33)),
    );
    plain("mailgun", format!("key-{}", g.hex(32)));
    plain("shopify", format!("shpat_{}", g.hex(32)));
    plain("square-access", format!("EAAA{}", g.alnum(60)));
    plain("square-oauth", format!("sq0csp-{}", g.alnum(43)));
    plain("vault", format!("hvs.{}", g.alnum(90)));
    plain("databricks", format!("dapi{}", g.hex(32)));
    plain("age", format!("AGE-SECRET-KEY-1{}", g.upper_alnum(58)));
    plain("digitalocean", format!("dop_v1_{}", g.hex(64)));
    plain("linear", format!("lin_api_{}", g.alnum(40)));
    plain("notion", format!("ntn_{}", g.alnum(46)));
    plain("postman", format!("PMAK-{}-{}", g.hex(24), g.hex(34)));
    plain("grafana", format!("glsa_{}_{}", g.alnum(32), g.hex(8)));
    plain("newrelic", format!("NRAK-{}", g.upper_alnum(27)));
    plain("groq", format!("gsk_{}", g.alnum(52)));
    plain("docker-hub", format!("dckr_pat_{}", g.alnum(27)));
    plain("doppler", format!("dp.pt.{}", g.alnum(43)));
    plain("pulumi", format!("pul-{}", g.hex(40)));
    plain("replicate", format!("r8_{}", g.alnum(37)));
    plain("langsmith", format!("lsv2_pt_{}_{}", g.hex(32), g.hex(10)));
    plain("mailchimp", format!("{}-us14", g.hex(32)));
    plain("hex-private-key", format!("0x{}", g.hex(64)));
    plain("bearer", format!("Bearer {}", g.alnum(40)));
    // Secrets that need their context: the fragments are the random parts.
    let mut ctx = |kind: &'static str, text: String, fragments: Vec<String>| {
        v.push(Sample {
            kind,
            text,
            fragments,
        })
    };
    let body = g.b64(64);
    ctx(
        "pem-rsa",
        format!("-----BEGIN RSA PRIVATE KEY-----\nMIIEow{body}\n-----END RSA PRIVATE KEY-----"),
        vec![body],
    );
    let body = g.b64(70);
    ctx(
        "pem-openssh",
        format!(
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl{body}\n-----END OPENSSH PRIVATE KEY-----"
        ),
        vec![body],
    );
    let k = g.b64(86);
    ctx(
        "azure-storage",
        format!("DefaultEndpointsProtocol=https;AccountName=acct1;AccountKey={k}==;EndpointSuffix=core.windows.net"),
        vec![k],
    );
    let k = g.alnum(43);
    ctx(
        "azure-sas",
        format!(
            "https://acct1.blob.core.windows.net/c/b.txt?sv=2022-11-02&se=2030-01-01&sp=r&sig={}",
            pct(&format!("{k}="))
        ),
        vec![k],
    );
    let k = g.b64(43);
    ctx(
        "azure-service-bus",
        format!("Endpoint=sb://ns1.servicebus.windows.net/;SharedAccessKeyName=Root;SharedAccessKey={k}="),
        vec![k],
    );
    let k = g.hex(32);
    ctx("datadog", format!("DD_API_KEY={k}"), vec![k]);
    let k = g.hex(40);
    ctx("datadog-app", format!("DD-APPLICATION-KEY: {k}"), vec![k]);
    let k = g.alnum(32);
    ctx(
        "twilio-auth-token",
        format!("TWILIO_AUTH_TOKEN=\"{k}\""),
        vec![k],
    );
    let k = g.alnum(32);
    ctx(
        "url-token-param",
        format!("https://api.example.com/v1/items?page=2&token={k}"),
        vec![k],
    );
    let k = g.alnum(32);
    ctx(
        "url-key-param",
        format!("https://maps.example.com/q?key={k}&z=3"),
        vec![k],
    );
    let k = g.alnum(24);
    ctx(
        "url-code-param",
        format!("https://app.example.com/callback?code={k}&state=xyz"),
        vec![k],
    );
    let k = g.hex(64);
    ctx(
        "url-amz-signature",
        format!("https://bucket1.s3.amazonaws.com/o.bin?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20260101T000000Z&X-Amz-Signature={k}"),
        vec![k],
    );
    let k = g.alnum(32);
    ctx(
        "cookie-header",
        format!("Cookie: theme=dark; session={k}; lang=en"),
        vec![k],
    );
    let k = g.alnum(32);
    ctx(
        "set-cookie",
        format!("Set-Cookie: sid={k}; Path=/; HttpOnly"),
        vec![k],
    );
    let k = g.alnum(24);
    ctx(
        "redis-empty-user",
        format!("redis://:{k}@cache.internal:6379/0"),
        vec![k],
    );
    let (a, b, c) = (g.alnum(10), g.alnum(10), g.alnum(10));
    ctx(
        "url-password-with-at-and-slash",
        format!("postgres://admin:{a}@{b}/{c}@db.internal:5432/app"),
        vec![a, b, c],
    );
    let k = g.alnum(16);
    ctx(
        "url-password",
        format!("mysql://root:{k}@10.0.0.5:3306/app"),
        vec![k],
    );
    let k = g.hex(32);
    ctx(
        "sentry-dsn",
        format!("SENTRY_DSN=https://{k}@o1.ingest.sentry.io/123"),
        vec![k],
    );
    let inner = format!("sk_live_{}", g.alnum(24));
    let enc = base64(inner.as_bytes());
    ctx(
        "base64-encoded-key",
        format!("encoded: {enc}"),
        vec![enc, inner],
    );
    let k = g.alnum(16);
    let basic = base64(format!("deploy:{k}").as_bytes());
    ctx(
        "basic-auth",
        format!("Authorization: Basic {basic}"),
        vec![basic, k],
    );
    let k = g.alnum(20);
    ctx("password-assignment", format!("password={k}"), vec![k]);
    let k = g.alnum(14);
    ctx("pwd-assignment", format!("pwd: {k}"), vec![k]);
    let k = g.alnum(14);
    ctx("pass-assignment", format!("DB_PASS={k}"), vec![k]);
    let k = g.b64(44);
    ctx(
        "private-key-json",
        format!("{{\"privateKey\": \"{k}\"}}"),
        vec![k],
    );
    let k = g.alnum(20);
    ctx(
        "access-key-assignment",
        format!("accessKey = '{k}'"),
        vec![k],
    );
    let words: Vec<String> = (0..12).map(|_| g.lower(6)).collect();
    let phrase = words.join(" ");
    ctx(
        "mnemonic",
        format!("mnemonic = \"{phrase}\""),
        vec![words[..3].join(" "), words[9..].join(" ")],
    );
    let k = g.alnum(30);
    ctx("x-auth-header", format!("X-Auth: {k}"), vec![k]);
    let k = g.hex(40);
    ctx(
        "x-signature-header",
        format!("X-Signature: sha1={k}"),
        vec![k],
    );
    let k = g.alnum(16);
    ctx(
        "conn-str",
        format!("conn_str=\"Server=db1;User Id=sa;Password={k};\""),
        vec![k],
    );
    let k = g.alnum(32);
    ctx(
        "webhook-url",
        format!("webhook_url=https://hooks.example.com/in/{k}"),
        vec![k],
    );
    let k = g.alnum(16);
    ctx(
        "dsn",
        format!("dsn: postgresql://app:{k}@db1/prod"),
        vec![k],
    );
    let k = g.alnum(40);
    ctx(
        "client-secret-json",
        format!("{{\"client_secret\":\"{k}\"}}"),
        vec![k],
    );
    v
}

/// Every sample's text, one per line.
pub fn blob(samples: &[Sample]) -> String {
    samples
        .iter()
        .map(|s| s.text.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The kinds whose fragments appear in `haystack`, with the fragment found.
pub fn leaks<'a>(samples: &'a [Sample], haystack: &str) -> Vec<(&'a str, String)> {
    let mut out = Vec::new();
    for s in samples {
        for f in &s.fragments {
            if haystack.contains(f.as_str()) {
                out.push((s.kind, f.clone()));
            }
        }
    }
    out
}
