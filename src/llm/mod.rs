//! LLM providers over their real HTTP wire formats, streaming and not, with
//! exact usage extraction. One call = one attempt: the caller (the `llm`
//! node) wraps each attempt in a span and decides about retries with
//! [`LlmError::is_retryable`] and [`backoff`].
//!
//! Providers: `openai` (Chat Completions and the Responses API; any
//! OpenAI-compatible server via `OPENAI_BASE_URL`), `anthropic` (Messages),
//! `gemini` (generateContent), `ollama` (native `/api/chat`) and `echo`
//! (offline: answers with the prompt, counts tokens with a real tokenizer).
//!
//! ```
//! use pflow::llm::{resolve_model, Provider};
//! assert_eq!(resolve_model("claude-sonnet-4-5").unwrap(), (Provider::Anthropic, "claude-sonnet-4-5".to_string()));
//! assert_eq!(resolve_model("openai/gpt-4o").unwrap(), (Provider::OpenAi, "gpt-4o".to_string()));
//! ```

mod anthropic;
pub mod budget;
mod echo;
mod gemini;
mod o200k;
mod ollama;
mod openai;
pub mod sse;
pub mod traced;
pub mod usage;

pub use echo::count_tokens;
pub use usage::{Usage, UsageSource};

use base64::Engine;
use serde::Serialize;
use serde_json::Value;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    OpenAi,
    Anthropic,
    Gemini,
    Ollama,
    Echo,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
            Provider::Gemini => "gemini",
            Provider::Ollama => "ollama",
            Provider::Echo => "echo",
        }
    }

    /// `gen_ai.provider.name` (GenAI conventions; `ollama` and `echo` are custom values).
    pub fn semconv_name(self) -> &'static str {
        match self {
            Provider::Gemini => "gcp.gemini",
            other => other.as_str(),
        }
    }

    /// How its calls are priced (see [`crate::pricing`]'s policy).
    pub fn pricing(self) -> crate::pricing::ProviderPricing {
        use crate::pricing::ProviderPricing;
        match self {
            Provider::Echo => ProviderPricing {
                free: true,
                ..Default::default()
            },
            Provider::Ollama => ProviderPricing {
                prefix: Some("ollama"),
                local: true,
                free: false,
            },
            Provider::Gemini => ProviderPricing {
                prefix: Some("gemini"),
                ..Default::default()
            },
            Provider::Anthropic => ProviderPricing {
                prefix: Some("anthropic"),
                ..Default::default()
            },
            Provider::OpenAi => ProviderPricing::default(),
        }
    }

    /// How it counts an image's prompt tokens (its documented rule).
    pub fn image_rule(self) -> budget::ImageRule {
        use budget::ImageRule;
        match self {
            Provider::Echo => ImageRule::Free,
            Provider::Gemini => ImageRule::PerImage(258),
            Provider::Anthropic => ImageRule::Pixels {
                pixels_per_token: 750,
                max: 1_600,
            },
            Provider::OpenAi | Provider::Ollama => ImageRule::Tiles,
        }
    }

    /// `gen_ai.operation.name` of its calls.
    pub fn operation(self) -> &'static str {
        match self {
            Provider::Gemini => "generate_content",
            _ => "chat",
        }
    }

    /// The provider a span's `gen_ai.provider.name` names.
    pub fn from_semconv_name(s: &str) -> Option<Provider> {
        match s {
            "gcp.gemini" => Some(Provider::Gemini),
            other => Self::parse(other),
        }
    }

    fn parse(s: &str) -> Option<Provider> {
        Some(match s {
            "openai" => Provider::OpenAi,
            "anthropic" => Provider::Anthropic,
            "gemini" | "google" => Provider::Gemini,
            "ollama" => Provider::Ollama,
            "echo" => Provider::Echo,
            _ => return None,
        })
    }
}

/// Which OpenAI API to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Chat,
    Responses,
}

/// A request's sampling settings under a provider's names: `temperature`
/// and the output limit as `max_key`, each only when set.
fn sampling(req: &LlmRequest, max_key: &str) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    if let Some(t) = req.temperature {
        m.insert("temperature".into(), serde_json::json!(t));
    }
    if let Some(n) = req.max_tokens {
        m.insert(max_key.into(), serde_json::json!(n));
    }
    m
}

/// Adds the sampling settings to a request body (a JSON object).
fn add_sampling(body: &mut Value, req: &LlmRequest, max_key: &str) {
    if let Some(o) = body.as_object_mut() {
        o.extend(sampling(req, max_key));
    }
}

/// The model used when a node names none: `PFLOW_DEFAULT_MODEL`, else `echo`
/// (offline, free: a workflow runs end to end before any key is set up).
pub fn default_model() -> String {
    std::env::var("PFLOW_DEFAULT_MODEL")
        .ok()
        .filter(|m| !m.trim().is_empty())
        .unwrap_or_else(|| "echo".into())
}

/// `provider/model`, or a plain name whose provider is inferred from
/// well-known prefixes (gpt-*, o1/o3/o4*, chatgpt-*, claude-*, gemini-*).
pub fn resolve_model(name: &str) -> Result<(Provider, String), LlmError> {
    let name = name.trim();
    if name == "echo" {
        return Ok((Provider::Echo, "echo".into()));
    }
    if let Some((p, m)) = name.split_once('/') {
        if let Some(p) = Provider::parse(p) {
            if m.is_empty() {
                return Err(LlmError::UnknownModel(format!(
                    "`{name}` names no model after the provider"
                )));
            }
            return Ok((p, m.to_string()));
        }
    }
    let lower = name.to_ascii_lowercase();
    let is_o_series =
        lower.len() >= 2 && lower.starts_with('o') && lower.as_bytes()[1].is_ascii_digit();
    let provider = if lower.starts_with("gpt-")
        || lower.starts_with("chatgpt-")
        || is_o_series
        || lower.starts_with("text-")
    {
        Provider::OpenAi
    } else if lower.starts_with("claude-") {
        Provider::Anthropic
    } else if lower.starts_with("gemini-") {
        Provider::Gemini
    } else {
        return Err(LlmError::UnknownModel(format!(
            "cannot tell which provider serves `{name}`; write it as `provider/model` (providers: openai, anthropic, gemini, ollama, echo), e.g. `ollama/{name}`"
        )));
    };
    Ok((provider, name.to_string()))
}

/// One LLM request.
#[derive(Debug, Clone)]
pub struct LlmRequest {
    pub provider: Provider,
    pub model: String,
    pub prompt: String,
    pub system: Option<String>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u64>,
    pub stream: bool,
    pub api: Api,
    /// Local paths (sent inline, base64) or http(s) URLs.
    pub images: Vec<String>,
    /// Ask for a JSON object (the provider's JSON mode where it has one).
    pub json_mode: bool,
    /// With `json_mode`: the JSON Schema the answer must follow, sent as the
    /// provider's structured-output schema (OpenAI `json_schema`, Gemini
    /// `responseJsonSchema`, Ollama `format`, Anthropic a forced tool call).
    pub json_schema: Option<Value>,
}

impl LlmRequest {
    /// A plain chat request: no system prompt, sampling or output limit, no
    /// images, free text; callers set what they need with struct update.
    pub fn new(provider: Provider, model: impl Into<String>, prompt: impl Into<String>) -> Self {
        LlmRequest {
            provider,
            model: model.into(),
            prompt: prompt.into(),
            system: None,
            temperature: None,
            max_tokens: None,
            stream: false,
            api: Api::Chat,
            images: vec![],
            json_mode: false,
            json_schema: None,
        }
    }
}

/// One LLM response.
#[derive(Debug, Clone, Default)]
pub struct LlmResponse {
    pub text: String,
    pub usage: Usage,
    pub response_model: Option<String>,
    pub response_id: Option<String>,
    pub finish_reasons: Vec<String>,
    /// Cost reported by the provider itself (e.g. OpenRouter's `usage.cost`).
    pub provider_cost_usd: Option<f64>,
    pub service_tier: Option<String>,
    /// A streamed response: when its first chunk arrived.
    pub first_chunk_at: Option<std::time::Instant>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum LlmError {
    #[error("no API key for {provider}: set {env_var}")]
    MissingApiKey {
        provider: &'static str,
        env_var: &'static str,
    },
    #[error("{provider} rejected the API key (HTTP {status}): {message}")]
    Unauthorized {
        provider: &'static str,
        status: u16,
        message: String,
    },
    #[error("rate limited (HTTP 429){}: {message}", retry_after.map(|d| format!(", retry after {:.1}s", d.as_secs_f64())).unwrap_or_default())]
    RateLimited {
        retry_after: Option<Duration>,
        message: String,
    },
    #[error("server error (HTTP {status}): {message}")]
    Server { status: u16, message: String },
    #[error("request rejected (HTTP {status}): {message}")]
    BadRequest { status: u16, message: String },
    #[error("no response within {:.1}s", after.as_secs_f64())]
    Timeout { after: Duration },
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("stream broken: {message}")]
    Stream {
        message: String,
        partial: Box<Usage>,
    },
    #[error("invalid response: {0}")]
    InvalidResponse(String),
    #[error("{0}")]
    UnknownModel(String),
    #[error("image: {0}")]
    Image(String),
    /// Billed, but its cost is not a finite number (a huge price × a huge count).
    #[error(transparent)]
    CostOverflow(#[from] crate::pricing::CostOverflow),
    /// Refused by the run's budget guard before it was sent.
    #[error(transparent)]
    Budget(Box<budget::BudgetExceeded>),
}

impl LlmError {
    /// Worth another attempt: rate limits, server errors, timeouts, broken connections.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            LlmError::RateLimited { .. }
                | LlmError::Server { .. }
                | LlmError::Timeout { .. }
                | LlmError::Connect(_)
                | LlmError::Stream { .. }
        )
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LlmError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The provider refused the attempt before generating anything, so it
    /// billed nothing (unlike a timeout or a broken stream, which may have been).
    pub fn not_billed(&self) -> bool {
        matches!(
            self,
            LlmError::MissingApiKey { .. }
                | LlmError::Unauthorized { .. }
                | LlmError::RateLimited { .. }
                | LlmError::Server { .. }
                | LlmError::BadRequest { .. }
                | LlmError::Connect(_)
                | LlmError::UnknownModel(_)
                | LlmError::Image(_)
        )
    }

    /// Stable short name for `error.type`.
    pub fn kind(&self) -> &'static str {
        match self {
            LlmError::MissingApiKey { .. } => "missing_api_key",
            LlmError::Unauthorized { .. } => "unauthorized",
            LlmError::RateLimited { .. } => "rate_limited",
            LlmError::Server { .. } => "server_error",
            LlmError::BadRequest { .. } => "bad_request",
            LlmError::Timeout { .. } => "timeout",
            LlmError::Connect(_) => "connect_error",
            LlmError::Stream { .. } => "stream_error",
            LlmError::InvalidResponse(_) => "invalid_response",
            LlmError::UnknownModel(_) => "unknown_model",
            LlmError::Image(_) => "image_error",
            LlmError::CostOverflow(_) => "cost_overflow",
            LlmError::Budget(b) => b.kind(),
        }
    }

    /// Usage that arrived before a stream broke (still billed, still counted).
    pub fn partial_usage(&self) -> Option<&Usage> {
        match self {
            LlmError::Stream { partial, .. } if partial.is_known() => Some(partial),
            _ => None,
        }
    }
}

/// Usage counted locally (o200k_base tokenizer) for a call whose provider
/// reported none: prompt side = system + prompt, output = the answer.
pub fn estimate_usage(req: &LlmRequest, answer: &str) -> Usage {
    let mut prompt_side = req.system.clone().map(|s| s + "\n").unwrap_or_default();
    prompt_side.push_str(&req.prompt);
    Usage {
        input_tokens: count_tokens(&prompt_side),
        output_tokens: count_tokens(answer),
        cache_read_tokens: Some(0),
        cache_write_tokens: Some(0),
        cache_write_1h_tokens: Some(0),
        reasoning_tokens: None,
        source: UsageSource::Estimated,
    }
}

/// Delay before attempt `attempt + 1`: exponential from 0.5 s, capped at 8 s, ±25% jitter.
pub fn backoff(attempt: u32) -> Duration {
    let base = 0.5 * 2f64.powi(attempt.saturating_sub(1).min(10) as i32);
    let jitter = 0.75 + rand::random::<f64>() * 0.5;
    Duration::from_secs_f64(base.min(8.0) * jitter)
}

/// Endpoints and keys, from the environment like each official SDK.
#[derive(Clone)]
pub struct ProviderConfig {
    /// Includes the version: `https://api.openai.com/v1`.
    pub openai_base_url: String,
    pub openai_api_key: Option<String>,
    /// Host root: `https://api.anthropic.com`.
    pub anthropic_base_url: String,
    pub anthropic_api_key: Option<String>,
    /// Host root: `https://generativelanguage.googleapis.com`.
    pub gemini_base_url: String,
    pub gemini_api_key: Option<String>,
    /// `host:port` or a URL; default `http://localhost:11434`.
    pub ollama_host: String,
    pub timeout: Duration,
}

impl std::fmt::Debug for ProviderConfig {
    // Keys never appear in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("openai_base_url", &self.openai_base_url)
            .field("anthropic_base_url", &self.anthropic_base_url)
            .field("gemini_base_url", &self.gemini_base_url)
            .field("ollama_host", &self.ollama_host)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn env(k: &str) -> Option<String> {
    std::env::var(k)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

impl ProviderConfig {
    /// `OPENAI_BASE_URL`, `OPENAI_API_KEY`, `ANTHROPIC_BASE_URL`, `ANTHROPIC_API_KEY`,
    /// `GEMINI_BASE_URL`, `GEMINI_API_KEY`, `OLLAMA_HOST`, `PFLOW_LLM_TIMEOUT` (seconds, default 120).
    pub fn from_env() -> Self {
        ProviderConfig {
            openai_base_url: env("OPENAI_BASE_URL")
                .unwrap_or_else(|| "https://api.openai.com/v1".into()),
            openai_api_key: env("OPENAI_API_KEY"),
            anthropic_base_url: env("ANTHROPIC_BASE_URL")
                .unwrap_or_else(|| "https://api.anthropic.com".into()),
            anthropic_api_key: env("ANTHROPIC_API_KEY"),
            gemini_base_url: env("GEMINI_BASE_URL")
                .unwrap_or_else(|| "https://generativelanguage.googleapis.com".into()),
            gemini_api_key: env("GEMINI_API_KEY"),
            ollama_host: env("OLLAMA_HOST").unwrap_or_else(|| "http://localhost:11434".into()),
            timeout: crate::limits::secs(
                env("PFLOW_LLM_TIMEOUT")
                    .and_then(|t| t.parse().ok())
                    .filter(|t: &f64| *t > 0.0)
                    .unwrap_or(120.0),
                crate::limits::MAX_TIMEOUT,
            ),
        }
    }

    /// The base URL requests for `provider` go to.
    pub fn endpoint(&self, provider: Provider) -> String {
        match provider {
            Provider::OpenAi => self.openai_base_url.trim_end_matches('/').to_string(),
            Provider::Anthropic => self.anthropic_base_url.trim_end_matches('/').to_string(),
            Provider::Gemini => self.gemini_base_url.trim_end_matches('/').to_string(),
            Provider::Ollama => {
                let h = self.ollama_host.trim_end_matches('/');
                if h.contains("://") {
                    h.to_string()
                } else {
                    format!("http://{h}")
                }
            }
            Provider::Echo => String::new(),
        }
    }

    /// `server.address` and `server.port` for spans.
    pub fn server(&self, provider: Provider) -> Option<(String, u16)> {
        let url = reqwest::Url::parse(&self.endpoint(provider)).ok()?;
        Some((url.host_str()?.to_string(), url.port_or_known_default()?))
    }
}

/// The client: one connection pool for every call of a run.
#[derive(Debug, Clone)]
pub struct LlmClient {
    http: reqwest::Client,
    config: ProviderConfig,
}

impl LlmClient {
    pub fn new(config: ProviderConfig) -> Self {
        let http = reqwest::Client::builder()
            .user_agent(concat!("pflow/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10).min(config.timeout))
            .build()
            .unwrap_or_default();
        LlmClient { http, config }
    }

    pub fn config(&self) -> &ProviderConfig {
        &self.config
    }

    /// One attempt. The whole call (including a stream) is bounded by the configured timeout.
    pub async fn complete(&self, req: &LlmRequest) -> Result<LlmResponse, LlmError> {
        let fut = async {
            match req.provider {
                Provider::Echo => echo::complete(req),
                Provider::OpenAi => openai::complete(self, req).await,
                Provider::Anthropic => anthropic::complete(self, req).await,
                Provider::Gemini => gemini::complete(self, req).await,
                Provider::Ollama => ollama::complete(self, req).await,
            }
        };
        match tokio::time::timeout(self.config.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(LlmError::Timeout {
                after: self.config.timeout,
            }),
        }
    }

    /// POSTs JSON and maps HTTP failures to [`LlmError`]; `secret` is scrubbed from messages.
    async fn post(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: &Value,
        secret: Option<&str>,
        provider: &'static str,
    ) -> Result<reqwest::Response, LlmError> {
        use crate::telemetry::http;
        use tracing::Instrument;
        let mut rb = self.http.post(url).json(body);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let mut request = rb
            .build()
            .map_err(|e| transport_error(&e, self.config.timeout))?;
        // The attempt's HTTP CLIENT span; the server sees it as the parent.
        let span = http::client_span("POST", request.url());
        http::inject_context(&span, &mut request);
        http::record_request_body(&span, &request);
        let sent = std::time::Instant::now();
        let resp = self
            .http
            .execute(request)
            .instrument(span.clone())
            .await
            .map_err(|e| {
                let err = transport_error(&e, self.config.timeout);
                http::record_error(&span, err.kind(), &err.to_string());
                err
            })?;
        let status = resp.status().as_u16();
        http::record_first_byte(&span, sent);
        http::record_status(&span, status);
        if resp.status().is_success() {
            return Ok(resp);
        }
        let retry_after = retry_after(resp.headers());
        let text = resp.text().await.unwrap_or_default();
        let mut message = error_message(&text);
        if let Some(s) = secret.filter(|s| !s.is_empty()) {
            // The error is library API too: it never holds the key it was called with.
            // The boundary also knows the key, for wherever else it shows up.
            crate::telemetry::redact::add_secret(s);
            message = message.replace(s, crate::telemetry::redact::REDACTED);
        }
        Err(match status {
            401 | 403 => LlmError::Unauthorized {
                provider,
                status,
                message,
            },
            429 => LlmError::RateLimited {
                retry_after,
                message,
            },
            500..=599 => LlmError::Server { status, message },
            _ => LlmError::BadRequest { status, message },
        })
    }
}

fn transport_error(e: &reqwest::Error, timeout: Duration) -> LlmError {
    if e.is_timeout() {
        return LlmError::Timeout { after: timeout };
    }
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    if e.is_connect() {
        LlmError::Connect(s)
    } else if e.is_body() || e.is_decode() {
        LlmError::Stream {
            message: s,
            partial: Box::new(Usage::unknown()),
        }
    } else {
        LlmError::Connect(s)
    }
}

/// `Retry-After` (seconds or HTTP date) or `retry-after-ms`.
fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    if let Some(ms) = h
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
    {
        return Some(crate::limits::secs(ms / 1000.0, crate::limits::MAX_TIMEOUT));
    }
    let v = h
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .to_string();
    if let Ok(secs) = v.parse::<f64>() {
        // `inf` and `1e300` parse as floats: capped, never a panic.
        return Some(crate::limits::secs(secs, crate::limits::MAX_TIMEOUT));
    }
    let when = chrono::DateTime::parse_from_rfc2822(&v).ok()?;
    let delta = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

/// The provider's own error message (`error.message`, `error`, `message`), else the body's start.
fn error_message(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        let m = v
            .pointer("/error/message")
            .or_else(|| v.get("error"))
            .or_else(|| v.get("message"));
        if let Some(m) = m {
            return match m {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
        }
    }
    let t: String = body.chars().take(300).collect();
    if t.is_empty() {
        "(empty body)".into()
    } else {
        t
    }
}

/// A response body read chunk by chunk: from the network, or from memory
/// (recorded payloads, for [`wire`]), so both go through the same parsers.
enum Body {
    /// The response, and when its first non-empty chunk arrived.
    Http(reqwest::Response, FirstChunk),
    Memory(std::collections::VecDeque<bytes::Bytes>),
}

type FirstChunk = std::sync::Arc<std::sync::OnceLock<std::time::Instant>>;

impl Body {
    async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, String> {
        match self {
            Body::Http(resp, first) => {
                let c = next_chunk(resp).await;
                if let Ok(Some(b)) = &c {
                    if !b.is_empty() {
                        let _ = first.set(std::time::Instant::now());
                    }
                }
                c
            }
            Body::Memory(chunks) => Ok(chunks.pop_front()),
        }
    }
}

/// Reads a streamed response with `parse`, noting when its first chunk
/// arrived (the span's time to first chunk).
async fn timed_stream<F, Fut>(resp: reqwest::Response, parse: F) -> Result<LlmResponse, LlmError>
where
    F: FnOnce(Body) -> Fut,
    Fut: std::future::Future<Output = Result<LlmResponse, LlmError>>,
{
    let first = FirstChunk::default();
    let mut out = parse(Body::Http(resp, first.clone())).await?;
    out.first_chunk_at = first.get().copied();
    Ok(out)
}

/// The API key a provider cannot be called without.
fn required_key(
    key: &Option<String>,
    provider: &'static str,
    env_var: &'static str,
) -> Result<String, LlmError> {
    key.clone()
        .ok_or(LlmError::MissingApiKey { provider, env_var })
}

/// Server-sent events from a streaming response, a network chunk at a time.
struct SseStream {
    body: Body,
    parser: sse::SseParser,
    eof: bool,
}

impl SseStream {
    fn from_body(body: Body) -> Self {
        SseStream {
            body,
            parser: sse::SseParser::new(),
            eof: false,
        }
    }

    /// The events completed by the next chunk; `None` once the stream has ended.
    async fn next(&mut self) -> Option<Result<Vec<sse::SseEvent>, String>> {
        if self.eof {
            return None;
        }
        Some(match self.body.chunk().await {
            Ok(Some(c)) => Ok(self.parser.feed(&c)),
            Ok(None) => {
                self.eof = true;
                Ok(self.parser.finish())
            }
            Err(e) => Err(e),
        })
    }

    /// [`SseStream::next`], a broken stream turned into [`LlmError::Stream`]
    /// carrying `partial()`, the usage seen before it broke.
    async fn next_or_fail(
        &mut self,
        partial: impl FnOnce() -> Usage,
    ) -> Option<Result<Vec<sse::SseEvent>, LlmError>> {
        Some(self.next().await?.map_err(|message| LlmError::Stream {
            message,
            partial: Box::new(partial()),
        }))
    }
}

/// The whole body of a non-streaming response, as JSON.
async fn read_json(resp: reqwest::Response) -> Result<Value, LlmError> {
    // A body cut off (reset, closed early, too slow) is a broken transfer,
    // retryable like a broken stream, not an invalid answer.
    let bytes = resp.bytes().await.map_err(|e| {
        let mut message = format!("the response body broke off: {e}");
        let mut src = std::error::Error::source(&e);
        while let Some(inner) = src {
            message.push_str(": ");
            message.push_str(&inner.to_string());
            src = inner.source();
        }
        LlmError::Stream {
            message,
            partial: Box::new(Usage::unknown()),
        }
    })?;
    parse_json(&bytes)
}

/// Reads a response body chunk by chunk (for streams), mapping failures.
async fn next_chunk(resp: &mut reqwest::Response) -> Result<Option<bytes::Bytes>, String> {
    resp.chunk().await.map_err(|e| {
        let mut s = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(inner) = src {
            s.push_str(": ");
            s.push_str(&inner.to_string());
            src = inner.source();
        }
        s
    })
}

/// An image for a request: inline bytes with a media type, or a URL.
#[derive(Debug)]
enum Image {
    Inline {
        media_type: String,
        data_b64: String,
    },
    Url(String),
}

fn load_image(src: &str) -> Result<Image, LlmError> {
    if src.starts_with("http://") || src.starts_with("https://") {
        return Ok(Image::Url(src.to_string()));
    }
    let ext = std::path::Path::new(src)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let media_type = match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        other => {
            return Err(LlmError::Image(format!(
                "`{src}`: unsupported image type `.{other}` (png, jpg, gif, webp)"
            )))
        }
    };
    let bytes =
        std::fs::read(src).map_err(|e| LlmError::Image(format!("cannot read `{src}`: {e}")))?;
    Ok(Image::Inline {
        media_type: media_type.into(),
        data_b64: base64::engine::general_purpose::STANDARD.encode(bytes),
    })
}

/// Parses a response body as JSON, with a clear error.
fn parse_json(bytes: &[u8]) -> Result<Value, LlmError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let preview: String = String::from_utf8_lossy(bytes).chars().take(200).collect();
        LlmError::InvalidResponse(format!("body is not JSON ({e}): {preview}"))
    })
}

fn str_field(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_string)
}

/// Each provider's response parsing without the network: the same code the
/// HTTP path runs, fed a recorded body. For the fuzz targets (`fuzz/`) and
/// tests; not a stable API.
#[doc(hidden)]
pub mod wire {
    use super::{anthropic, gemini, ollama, openai, parse_json, Body, LlmError, LlmResponse};

    /// A provider API's response format.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Wire {
        OpenAiChat,
        OpenAiResponses,
        Anthropic,
        /// Anthropic with a JSON schema: the answer is the forced tool call's input.
        AnthropicTool,
        Gemini,
        /// Ollama's native `/api/chat` (JSON lines when streaming).
        Ollama,
    }

    pub const ALL: [Wire; 6] = [
        Wire::OpenAiChat,
        Wire::OpenAiResponses,
        Wire::Anthropic,
        Wire::AnthropicTool,
        Wire::Gemini,
        Wire::Ollama,
    ];

    /// A non-streaming response body.
    pub fn parse_body(wire: Wire, body: &[u8]) -> Result<LlmResponse, LlmError> {
        let v = parse_json(body)?;
        match wire {
            Wire::OpenAiChat => openai::chat_body(&v),
            Wire::OpenAiResponses => openai::from_response_object(&v, super::UsageSource::Provider),
            Wire::Anthropic => anthropic::message_body(&v, false),
            Wire::AnthropicTool => anthropic::message_body(&v, true),
            Wire::Gemini => gemini::generate_body(&v),
            Wire::Ollama => ollama::chat_body(&v),
        }
    }

    /// A streaming response body, delivered in `chunks` as they came off the network.
    pub fn parse_stream(wire: Wire, chunks: &[&[u8]]) -> Result<LlmResponse, LlmError> {
        let body = Body::Memory(
            chunks
                .iter()
                .map(|c| bytes::Bytes::copy_from_slice(c))
                .collect(),
        );
        futures::executor::block_on(async move {
            match wire {
                Wire::OpenAiChat => openai::chat_stream(body).await,
                Wire::OpenAiResponses => openai::responses_stream(body).await,
                Wire::Anthropic | Wire::AnthropicTool => anthropic::message_stream(body).await,
                Wire::Gemini => gemini::generate_stream(body).await,
                Wire::Ollama => ollama::chat_stream(body).await,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names() {
        assert_eq!(resolve_model("gpt-4o").unwrap().0, Provider::OpenAi);
        assert_eq!(resolve_model("o3-mini").unwrap().0, Provider::OpenAi);
        assert_eq!(
            resolve_model("claude-3-opus-latest").unwrap().0,
            Provider::Anthropic
        );
        assert_eq!(
            resolve_model("gemini-2.5-flash").unwrap().0,
            Provider::Gemini
        );
        assert_eq!(
            resolve_model("ollama/llama3.2").unwrap(),
            (Provider::Ollama, "llama3.2".into())
        );
        assert_eq!(resolve_model("echo").unwrap().0, Provider::Echo);
        let e = resolve_model("llama3.2").unwrap_err().to_string();
        assert!(e.contains("`ollama/llama3.2`"), "{e}");
        assert!(resolve_model("openai/").is_err());
    }

    #[test]
    fn endpoints_follow_the_sdks() {
        let mut c = ProviderConfig::from_env();
        c.ollama_host = "127.0.0.1:9999".into();
        assert_eq!(c.endpoint(Provider::Ollama), "http://127.0.0.1:9999");
        c.openai_base_url = "http://localhost:8000/v1/".into();
        assert_eq!(c.endpoint(Provider::OpenAi), "http://localhost:8000/v1");
        assert_eq!(c.server(Provider::OpenAi), Some(("localhost".into(), 8000)));
        let dbg = format!(
            "{:?}",
            ProviderConfig {
                openai_api_key: Some("sk-secret-value".into()),
                ..c
            }
        );
        assert!(!dbg.contains("sk-secret-value"));
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert!(backoff(1) <= Duration::from_secs_f64(0.625));
        assert!(backoff(3) >= Duration::from_secs_f64(1.5));
        assert!(backoff(20) <= Duration::from_secs(10));
    }

    #[test]
    fn error_messages_come_from_the_body() {
        assert_eq!(
            error_message(r#"{"error": {"message": "bad key", "type": "auth"}}"#),
            "bad key"
        );
        assert_eq!(
            error_message(r#"{"error": "model not found"}"#),
            "model not found"
        );
        assert_eq!(error_message(""), "(empty body)");
    }

    #[test]
    fn images() {
        assert!(matches!(
            load_image("https://x/y.png").unwrap(),
            Image::Url(_)
        ));
        assert!(load_image("x.bmp")
            .unwrap_err()
            .to_string()
            .contains("unsupported"));
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.png");
        std::fs::write(&p, [1u8, 2, 3]).unwrap();
        match load_image(p.to_str().unwrap()).unwrap() {
            Image::Inline {
                media_type,
                data_b64,
            } => {
                assert_eq!(media_type, "image/png");
                assert_eq!(data_b64, "AQID");
            }
            Image::Url(_) => panic!(),
        }
    }

    /// The recorded streams parse to the same answer whether they arrive whole or a byte at a time.
    #[test]
    fn wire_streams_do_not_depend_on_chunking() {
        use wire::{parse_stream, Wire};
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llm");
        for (file, w) in [
            ("openai-chat-stream-include-usage.sse", Wire::OpenAiChat),
            ("openai-responses-stream.sse", Wire::OpenAiResponses),
            ("anthropic-messages-stream-thinking.sse", Wire::Anthropic),
            ("gemini-stream-generate-content.sse", Wire::Gemini),
            ("ollama-chat-stream.jsonl", Wire::Ollama),
        ] {
            let body = std::fs::read(dir.join(file)).unwrap();
            let whole = parse_stream(w, &[&body]).unwrap();
            assert!(whole.usage.is_known(), "{file}: {whole:?}");
            let bytes: Vec<&[u8]> = body.chunks(1).collect();
            let pieces = parse_stream(w, &bytes).unwrap();
            assert_eq!(format!("{whole:?}"), format!("{pieces:?}"), "{file}");
        }
    }
}
