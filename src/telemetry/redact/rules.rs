//! The credential formats the redactor detects, written for pflow from the
//! token formats the providers document (prefixes, alphabets, lengths).
//!
//! Why not a rule set taken as a dependency: the crates.io crates that carry
//! gitleaks-derived rules were evaluated (December 2026): `keyspoor` 0.1.4
//! (Apache-2.0, gitleaks v8.30 rules) needs Rust 1.96, newer than this
//! toolchain (1.95), and is a first release; `keyhog` 0.5 (MIT/Apache) is a
//! whole scanner (GPU, ML, git/cloud sources, live verification) whose rule
//! engine is not a separate small library; `secrets-le` ships only a binary.
//! None fits a redactor that runs on every span of every run.
//!
//! Each rule names the keywords that must appear (ASCII case-insensitive)
//! before its regex is worth running; rules without keywords run always.
//! Order matters: scheme rules (`Bearer …`) run before the name rule, which
//! would otherwise hide the scheme word and leave the token.

/// What a match is replaced with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The whole match becomes `[REDACTED]`.
    Whole,
    /// Only this capture group is replaced (keeps `Bearer `, `scheme://user:`…).
    Group(usize),
    /// `name = value` / `"name": "value"` / `Name: value`: group 2 is the name,
    /// group 4 the value, replaced when the name is a secret name.
    Assign,
    /// `name` + separator matched (group 1, group 2); the value after the
    /// match is read by the engine and replaced when the name is secret.
    NameValue,
    /// A URL query parameter: group 2 the name, group 3 the value.
    Query,
    /// A 40-character base64 run (AWS secret access keys): group 1, replaced
    /// when it mixes cases and digits (so git hashes and words stay).
    Entropy40,
    /// A base64 run: replaced when its decoded text holds a credential.
    Base64,
}

#[derive(Debug)]
pub struct Rule {
    pub id: &'static str,
    pub keywords: &'static [&'static str],
    pub pattern: &'static str,
    pub action: Action,
}

const fn r(
    id: &'static str,
    keywords: &'static [&'static str],
    pattern: &'static str,
    action: Action,
) -> Rule {
    Rule {
        id,
        keywords,
        pattern,
        action,
    }
}

use Action::*;

/// Name fragments that the name rule's text forms need to see.
const NAME_KEYWORDS: &[&str] = &[
    "token",
    "secret",
    "pass",
    "pwd",
    "key",
    "auth",
    "cookie",
    "credential",
    "session",
    "dsn",
    "conn",
    "webhook",
    "mnemonic",
    "sig",
    "jwt",
    "ssws",
    "sas",
    "phrase",
];

pub const RULES: &[Rule] = &[
    r(
        "private-key-pem",
        &["PRIVATE KEY"],
        r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?(?:-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\z)",
        Whole,
    ),
    r(
        "age-secret-key",
        &["AGE-SECRET-KEY-"],
        r"AGE-SECRET-KEY-1[0-9A-Za-z]{40,}",
        Whole,
    ),
    // Scheme words before the token: run before the name rule (see module docs).
    r(
        "auth-scheme",
        &["bearer", "basic", "token", "ssws", "digest", "apikey"],
        r"(?i)(?-u:\b)(?:bearer|basic|token|ssws|apikey)[ \t]+([A-Za-z0-9\-._~+/]{8,}=*)",
        Group(1),
    ),
    // OpenAI, Anthropic, OpenRouter, Langfuse, DeepSeek…: `sk-` keys.
    r(
        "sk-prefixed-key",
        &["sk-", "pk-lf-"],
        r"(?:sk-(?:proj-|ant-(?:api\d\d-|admin\d\d-|sid\d\d-)?|or-v1-|svcacct-|admin-|lf-)|pk-lf-)[A-Za-z0-9_\-]{16,}",
        Whole,
    ),
    r(
        "sk-generic",
        &["sk-"],
        r"(?-u:\b)sk-[A-Za-z0-9_\-]{16,}",
        Whole,
    ),
    r(
        "google-api-key",
        &["AIza"],
        r"AIza[0-9A-Za-z_\-]{30,}",
        Whole,
    ),
    r(
        "google-oauth-token",
        &["ya29."],
        r"ya29\.[0-9A-Za-z_\-]{20,}",
        Whole,
    ),
    r(
        "google-client-secret",
        &["GOCSPX-"],
        r"GOCSPX-[A-Za-z0-9_\-]{20,}",
        Whole,
    ),
    r(
        "google-refresh-token",
        &["1//0"],
        r"1//0[A-Za-z0-9_\-]{40,}",
        Whole,
    ),
    r(
        "aws-access-key-id",
        &[
            "AKIA", "ASIA", "AGPA", "AIDA", "AROA", "AIPA", "ANPA", "ANVA", "APKA", "ABIA", "ACCA",
            "A3T",
        ],
        r"(?:A3T[A-Z0-9]|AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA|ABIA|ACCA)[A-Z0-9]{16}",
        Whole,
    ),
    // STS session tokens are base64 of a binary blob that starts the same way.
    r(
        "aws-session-token",
        &["ZXIvYXdz", "b3JpZ2lu"],
        r"[A-Za-z0-9+/]{0,12}(?:ZXIvYXdz|b3JpZ2lu)[A-Za-z0-9/+=]{20,}",
        Whole,
    ),
    r(
        "github-token",
        &["ghp_", "gho_", "ghu_", "ghs_", "ghr_"],
        r"gh[pousr]_[A-Za-z0-9]{30,}",
        Whole,
    ),
    r(
        "github-fine-grained",
        &["github_pat_"],
        r"github_pat_[A-Za-z0-9_]{20,}",
        Whole,
    ),
    r(
        "gitlab-token",
        &["gl"],
        r"gl(?:pat|dt|rt|ptt|soat|cbt|oas|ft|imt|agent|ffct)-[A-Za-z0-9_\-]{20,}",
        Whole,
    ),
    r(
        "gitlab-runner-registration",
        &["GR1348941"],
        r"GR1348941[A-Za-z0-9_\-]{20,}",
        Whole,
    ),
    r(
        "slack-token",
        &["xox", "xapp-"],
        r"(?:xox[abposrec]|xapp)-[A-Za-z0-9\-]{10,}",
        Whole,
    ),
    r(
        "slack-webhook",
        &["hooks.slack.com"],
        r"(?:https?://)?hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_\-]+",
        Whole,
    ),
    r(
        "discord-webhook",
        &["discord"],
        r"(?:https?://)?(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/\d+/[A-Za-z0-9_\-]+",
        Whole,
    ),
    r(
        "discord-bot-token",
        &[],
        r"(?-u:\b)[MNO][A-Za-z0-9_\-]{23,27}\.[A-Za-z0-9_\-]{6}\.[A-Za-z0-9_\-]{27,40}",
        Whole,
    ),
    r(
        "telegram-bot-token",
        &[":AA"],
        r"(?-u:\b)\d{8,10}:AA[A-Za-z0-9_\-]{30,}",
        Whole,
    ),
    r(
        "jwt",
        &["eyJ"],
        r"eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",
        Whole,
    ),
    r(
        "stripe-key",
        &["_live_", "_test_"],
        r"(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]{10,}",
        Whole,
    ),
    r(
        "stripe-webhook-secret",
        &["whsec_"],
        r"whsec_[A-Za-z0-9+/=]{20,}",
        Whole,
    ),
    r(
        "huggingface-token",
        &["hf_", "api_org_"],
        r"(?:hf|api_org)_[A-Za-z0-9]{30,}",
        Whole,
    ),
    r(
        "twilio-sid-or-key",
        &[],
        r"(?-u:\b)(?:AC|SK)[0-9a-fA-F]{32}(?-u:\b)",
        Whole,
    ),
    r(
        "sendgrid-key",
        &["SG."],
        r"SG\.[A-Za-z0-9_\-]{16,}\.[A-Za-z0-9_\-]{16,}",
        Whole,
    ),
    r("npm-token", &["npm_"], r"npm_[A-Za-z0-9]{36}", Whole),
    r("pypi-token", &["pypi-"], r"pypi-[A-Za-z0-9_\-]{50,}", Whole),
    r(
        "azure-ad-client-secret",
        &["Q~"],
        r"[A-Za-z0-9_~.\-]{3}\dQ~[A-Za-z0-9_~.\-]{31,34}",
        Whole,
    ),
    r("mailgun-key", &["key-"], r"key-[0-9a-f]{32}", Whole),
    r(
        "mailgun-private-key",
        &[],
        r"(?-u:\b)[0-9a-f]{32}-[0-9a-f]{8}-[0-9a-f]{8}(?-u:\b)",
        Whole,
    ),
    r(
        "shopify-token",
        &["shp"],
        r"shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}",
        Whole,
    ),
    r(
        "square-token",
        &["EAAA", "sq0"],
        r"(?:EAAA[A-Za-z0-9_\-]{60}|sq0(?:atp|csp|idp)-[0-9A-Za-z_\-]{22,43})",
        Whole,
    ),
    r(
        "vault-token",
        &["hvs.", "hvb.", "hvr."],
        r"hv[sbr]\.[A-Za-z0-9_\-]{24,}",
        Whole,
    ),
    r(
        "databricks-token",
        &["dapi"],
        r"dapi[a-f0-9]{32}(?:-\d)?",
        Whole,
    ),
    r(
        "digitalocean-token",
        &["_v1_"],
        r"do[opr]_v1_[a-f0-9]{64}",
        Whole,
    ),
    r(
        "linear-key",
        &["lin_api_"],
        r"lin_api_[A-Za-z0-9]{40}",
        Whole,
    ),
    r(
        "notion-token",
        &["secret_", "ntn_"],
        r"(?:secret_|ntn_)[A-Za-z0-9]{40,}",
        Whole,
    ),
    r(
        "atlassian-token",
        &["ATATT"],
        r"ATATT3[A-Za-z0-9_\-=]{50,}",
        Whole,
    ),
    r(
        "postman-key",
        &["PMAK-"],
        r"PMAK-[a-f0-9]{24}-[a-f0-9]{34}",
        Whole,
    ),
    r(
        "grafana-token",
        &["glc_", "glsa_"],
        r"(?:glc_[A-Za-z0-9+/=]{32,}|glsa_[A-Za-z0-9]{32}_[a-f0-9]{8})",
        Whole,
    ),
    r(
        "newrelic-key",
        &["NRAK-", "NRJS-", "NRII-"],
        r"NR(?:AK|JS|II)-[A-Za-z0-9]{19,}",
        Whole,
    ),
    r(
        "sentry-token",
        &["sntry"],
        r"sntry[su]_[A-Za-z0-9+/=_]{30,}",
        Whole,
    ),
    r(
        "doppler-token",
        &["dp."],
        r"dp\.(?:pt|st|sa|ct|scim|audit)\.[A-Za-z0-9]{40,}",
        Whole,
    ),
    r("pulumi-token", &["pul-"], r"pul-[a-f0-9]{40}", Whole),
    r(
        "terraform-cloud-token",
        &["atlasv1"],
        r"[A-Za-z0-9]{14}\.atlasv1\.[A-Za-z0-9_\-=]{60,}",
        Whole,
    ),
    r("replicate-token", &["r8_"], r"r8_[A-Za-z0-9]{37}", Whole),
    r("groq-key", &["gsk_"], r"gsk_[A-Za-z0-9]{48,}", Whole),
    r("xai-key", &["xai-"], r"xai-[A-Za-z0-9]{60,}", Whole),
    r(
        "perplexity-key",
        &["pplx-"],
        r"pplx-[A-Za-z0-9]{40,}",
        Whole,
    ),
    r(
        "langsmith-key",
        &["lsv2_"],
        r"lsv2_(?:pt|sk)_[a-f0-9]{32}_[a-f0-9]{10}",
        Whole,
    ),
    r(
        "supabase-key",
        &["sbp_", "sb_secret_"],
        r"(?:sbp_[a-f0-9]{40}|sb_secret_[A-Za-z0-9_\-]{20,})",
        Whole,
    ),
    r(
        "docker-hub-token",
        &["dckr_"],
        r"dckr_(?:pat|oat)_[A-Za-z0-9_\-]{20,}",
        Whole,
    ),
    r(
        "alibaba-access-key",
        &["LTAI"],
        r"LTAI[A-Za-z0-9]{12,20}",
        Whole,
    ),
    r(
        "dropbox-token",
        &["sl."],
        r"sl\.[A-Za-z0-9_\-]{130,}",
        Whole,
    ),
    r(
        "airtable-token",
        &["pat"],
        r"pat[A-Za-z0-9]{14}\.[a-f0-9]{64}",
        Whole,
    ),
    r(
        "figma-token",
        &["figd_"],
        r"figd_[A-Za-z0-9_\-]{40,}",
        Whole,
    ),
    r(
        "mailchimp-key",
        &["-us"],
        r"[0-9a-f]{32}-us\d{1,2}(?-u:\b)",
        Whole,
    ),
    r(
        "braintree-token",
        &["access_token$"],
        r"access_token\$(?:production|sandbox)\$[0-9a-z]{16}\$[0-9a-f]{32}",
        Whole,
    ),
    r(
        "twitter-bearer",
        &["AAAAAAAAAAAAAAAAAAAAA"],
        r"A{20,}[A-Za-z0-9%]{30,}",
        Whole,
    ),
    r(
        "razorpay-key",
        &["rzp_"],
        r"rzp_(?:live|test)_[A-Za-z0-9]{14,}",
        Whole,
    ),
    r(
        "flutterwave-key",
        &["FLWSECK"],
        r"FLWSECK(?:_TEST)?-[a-hA-H0-9]{32}-X",
        Whole,
    ),
    r(
        "contentful-token",
        &["CFPAT-"],
        r"CFPAT-[A-Za-z0-9_\-]{43}",
        Whole,
    ),
    r("prefect-key", &["pnu_"], r"pnu_[A-Za-z0-9]{36}", Whole),
    r(
        "rubygems-key",
        &["rubygems_"],
        r"rubygems_[a-f0-9]{48}",
        Whole,
    ),
    r("nuget-key", &["oy2"], r"oy2[a-z0-9]{43}", Whole),
    r("artifactory-key", &["AKCp"], r"AKCp[A-Za-z0-9]{69}", Whole),
    r("buildkite-token", &["bkua_"], r"bkua_[a-f0-9]{40}", Whole),
    r(
        "sourcegraph-token",
        &["sgp_"],
        r"sgp_(?:[a-f0-9]{16}_)?[a-f0-9]{40}",
        Whole,
    ),
    r("heroku-key", &["HRKU-"], r"HRKU-[A-Za-z0-9_\-]{30,}", Whole),
    r(
        "mapbox-token",
        &["k.eyJ"],
        r"[sp]k\.eyJ[A-Za-z0-9_\-]{20,}\.[A-Za-z0-9_\-]{20,}",
        Whole,
    ),
    r(
        "fly-token",
        &["fo1_", "fm2_"],
        r"(?:fo1|fm2)_[A-Za-z0-9_\-+/=]{30,}",
        Whole,
    ),
    r("netlify-token", &["nfp_"], r"nfp_[A-Za-z0-9]{36}", Whole),
    r("adafruit-key", &["aio_"], r"aio_[A-Za-z0-9]{28}", Whole),
    r(
        "shippo-token",
        &["shippo_"],
        r"shippo_(?:live|test)_[a-f0-9]{40}",
        Whole,
    ),
    r(
        "plaid-token",
        &["access-"],
        r"access-(?:sandbox|development|production)-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        Whole,
    ),
    r(
        "onepassword-token",
        &["ops_eyJ"],
        r"ops_eyJ[A-Za-z0-9+/=_\-]{40,}",
        Whole,
    ),
    r(
        "hex-private-key",
        &["0x"],
        r"(?-u:\b)0x[a-fA-F0-9]{64}(?-u:\b)",
        Whole,
    ),
    // URL userinfo: empty users (`redis://:pw@h`) and passwords holding `@`
    // or `/` (the password runs to the last `@` before the host). A backslash
    // ends it: in JSON text `\n` is the end of the line.
    r(
        "url-password",
        &["://"],
        r#"([A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'"<>\\]*:)([^\s'"<>\\]*)@(?:[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(?:[:/?#\s'"<>,;)\]\\]|$)"#,
        Group(2),
    ),
    r(
        "url-user-token",
        &["://"],
        r#"[A-Za-z][A-Za-z0-9+.\-]*://([^\s:/@'"<>\\]{16,})@"#,
        Group(1),
    ),
    r(
        "url-query-param",
        &["?", "&", ";"],
        r#"([?&;])([A-Za-z0-9_.\-\[\]]{1,64})=([^&#\s'"<>;\\]+)"#,
        Query,
    ),
    // Header lines (`Cookie: a=b; c=d`, `X-Auth: Digest …`): the rest of the line.
    r(
        "secret-header-line",
        NAME_KEYWORDS,
        r"(?m)^([ \t]*)([A-Za-z][A-Za-z0-9_\-]{0,63})([ \t]*:[ \t]*)([^\r\n]+)",
        Assign,
    ),
    // The name rule in text: `password=…`, `"api_key": "…"`, `AccountKey=…;`,
    // also JSON-escaped (`\"token\": \"…\"`). Only the name and separator are
    // matched, so a value holding `NAME=` (`log: DD_API_KEY=…`) is still seen;
    // the value is read by hand (quoted, escaped-quoted or up to a delimiter).
    r(
        "secret-assignment",
        NAME_KEYWORDS,
        r#"([A-Za-z][A-Za-z0-9_.\-]{0,63})(\\?["']?[ \t]*(?::=|=>|[:=])[ \t]*)"#,
        NameValue,
    ),
    r(
        "aws-secret-access-key",
        &[],
        r"(?:^|[^A-Za-z0-9/+=])([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)",
        Entropy40,
    ),
    r(
        "base64-encoded-secret",
        &[],
        r"[A-Za-z0-9+/_\-]{24,}={0,2}",
        Base64,
    ),
];
