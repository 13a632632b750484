//! Backend profiles: the last transform before spans leave the machine.
//! pflow records spans in one canonical shape (OpenTelemetry GenAI names plus
//! `pflow.*`); a profile adds the attributes a particular backend reads
//! (OpenInference for Arize Phoenix, `langfuse.*` for Langfuse), derived from
//! the canonical ones, so tokens, cost and span types show up there with no
//! configuration on the backend's side.
//!
//! The semantic-conventions switch (`OTEL_SEMCONV_STABILITY_OPT_IN` containing
//! `gen_ai_latest_experimental`) is applied here too: exported spans then carry
//! only the newer GenAI names. Both act on exported copies only; the local
//! trace file and the metrics summary always see the canonical spans.

use super::attr;
use crate::accounting::reported::Usage;
use serde_json::{json, Map, Value};

/// `PFLOW_OTEL_PROFILE`: which backend's attributes exported spans carry.
pub const PROFILE_ENV: &str = "PFLOW_OTEL_PROFILE";
/// The OpenTelemetry stability opt-in list, and the value that selects the newest GenAI names.
pub const SEMCONV_OPT_IN_ENV: &str = "OTEL_SEMCONV_STABILITY_OPT_IN";
pub const GEN_AI_LATEST: &str = "gen_ai_latest_experimental";

/// Names that `gen_ai_latest_experimental` leaves out of exported spans (each has a newer spelling
/// on the same span: `gen_ai.usage.cache_write.input_tokens`, `gen_ai.provider.name`).
pub const DEPRECATED_GEN_AI: &[&str] = &[attr::USAGE_CACHE_CREATION, attr::GEN_AI_SYSTEM];

/// A backend profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// GenAI conventions only: spans as recorded.
    #[default]
    Otel,
    /// Adds OpenInference attributes (Arize Phoenix).
    Phoenix,
    /// Adds the `langfuse.*` and `gen_ai.usage.cost` attributes Langfuse reads.
    Langfuse,
}

/// A profile name that is not one of [`Profile::NAMES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown OTel profile `{value}` ({origin}): expected one of otel, phoenix, langfuse")]
pub struct ProfileError {
    pub value: String,
    /// `--otel-profile` or `PFLOW_OTEL_PROFILE`.
    pub origin: &'static str,
}

impl Profile {
    pub const NAMES: &'static [&'static str] = &["otel", "phoenix", "langfuse"];

    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Otel => "otel",
            Profile::Phoenix => "phoenix",
            Profile::Langfuse => "langfuse",
        }
    }

    fn parse(value: &str, origin: &'static str) -> Result<Profile, ProfileError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "otel" => Ok(Profile::Otel),
            "phoenix" => Ok(Profile::Phoenix),
            "langfuse" => Ok(Profile::Langfuse),
            _ => Err(ProfileError {
                value: value.to_string(),
                origin,
            }),
        }
    }

    /// The flag's value wins over `PFLOW_OTEL_PROFILE`; neither: `otel`.
    pub fn resolve(flag: Option<&str>) -> Result<Profile, ProfileError> {
        if let Some(f) = flag {
            return Profile::parse(f, "--otel-profile");
        }
        match std::env::var(PROFILE_ENV) {
            Ok(v) if !v.trim().is_empty() => Profile::parse(&v, PROFILE_ENV),
            _ => Ok(Profile::Otel),
        }
    }
}

/// Whether `OTEL_SEMCONV_STABILITY_OPT_IN` (a comma-separated list) holds `gen_ai_latest_experimental`.
pub fn semconv_latest_from_env() -> bool {
    std::env::var(SEMCONV_OPT_IN_ENV)
        .map(|v| opt_in_has_latest(&v))
        .unwrap_or(false)
}

fn opt_in_has_latest(list: &str) -> bool {
    list.split(',').any(|t| t.trim() == GEN_AI_LATEST)
}

/// What exported spans look like.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportShape {
    pub profile: Profile,
    /// Only the newest GenAI names (`gen_ai_latest_experimental`).
    pub semconv_latest: bool,
    /// Content may leave the machine: gates the profile's content attributes too.
    pub capture_content: bool,
}

/// An attribute value, the same for SDK spans and OTLP protos.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Str(String),
    Int(i64),
    F64(f64),
    Bool(bool),
}

impl Val {
    fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }
    fn as_i64(&self) -> Option<i64> {
        match self {
            Val::Int(i) => Some(*i),
            Val::F64(f) if f.fract() == 0.0 => Some(*f as i64),
            Val::Str(s) => s.parse().ok(),
            _ => None,
        }
    }
    fn as_f64(&self) -> Option<f64> {
        match self {
            Val::F64(f) => Some(*f),
            Val::Int(i) => Some(*i as f64),
            Val::Str(s) => s.parse().ok(),
            _ => None,
        }
    }
}

/// What a span is, for the backends' span types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `pflow run …` / `pflow plan …`.
    Root,
    /// `invoke_workflow …`.
    Workflow,
    /// `plan pflow`.
    Planner,
    /// `plan {step}`.
    PlannerStep,
    /// `chat gpt-4o` and friends.
    Llm,
    /// A node that orchestrates (an `llm` node around its calls, a nested workflow, a batch).
    ChainNode,
    /// A node that acts (shell, http, files, …).
    ToolNode,
    Other,
}

/// Read access to a span's attributes.
pub trait Attrs {
    fn get(&self, key: &str) -> Option<Val>;
}

impl<F: Fn(&str) -> Option<Val>> Attrs for F {
    fn get(&self, key: &str) -> Option<Val> {
        self(key)
    }
}

/// The accounting model's span kind, refined into what a backend shows.
fn classify(a: &dyn Attrs) -> Kind {
    use crate::accounting::span::{classify, SpanKind};
    let s = |k: &str| a.get(k).map(|v| v.as_str().unwrap_or_default().to_string());
    match classify(&s) {
        SpanKind::Run => Kind::Root,
        SpanKind::Workflow => Kind::Workflow,
        SpanKind::Planner => Kind::Planner,
        SpanKind::PlannerStep => Kind::PlannerStep,
        SpanKind::LlmCall => Kind::Llm,
        SpanKind::Batch => Kind::ChainNode,
        SpanKind::Node | SpanKind::BatchItem => match s(attr::NODE_TYPE).as_deref() {
            Some("llm" | "workflow") => Kind::ChainNode,
            _ => Kind::ToolNode,
        },
        SpanKind::Other => Kind::Other,
    }
}

/// What the export transform does to one span.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    /// Attributes to add (a key the span already has is left as it is).
    pub add: Vec<(String, Val)>,
    /// Attributes to remove.
    pub drop: &'static [&'static str],
}

/// The span's changes for `shape`. `error` is the span's status description when it failed.
pub fn changes(shape: &ExportShape, a: &dyn Attrs, error: Option<&str>) -> Changes {
    let mut out = Changes {
        add: Vec::new(),
        drop: if shape.semconv_latest {
            DEPRECATED_GEN_AI
        } else {
            &[]
        },
    };
    match shape.profile {
        Profile::Otel => {}
        Profile::Phoenix => phoenix(&mut out.add, a, shape.capture_content),
        Profile::Langfuse => langfuse(&mut out.add, a, shape.capture_content, error),
    }
    out
}

/// Token counts of an LLM span, from the canonical names (a negative count is not one).
fn usage(a: &dyn Attrs) -> Usage {
    let n = |k: &str| {
        a.get(k)
            .and_then(|v| v.as_i64())
            .and_then(|v| u64::try_from(v).ok())
    };
    Usage {
        input_tokens: n(attr::USAGE_INPUT_TOKENS),
        output_tokens: n(attr::USAGE_OUTPUT_TOKENS),
        cache_read_tokens: n(attr::USAGE_CACHE_READ),
        cache_write_tokens: n(attr::USAGE_CACHE_WRITE).or_else(|| n(attr::USAGE_CACHE_CREATION)),
        reasoning_tokens: n(attr::USAGE_REASONING),
        ..Usage::default()
    }
}

/// A count as an attribute value (counts past i64 saturate).
fn int(n: u64) -> Val {
    Val::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

fn model(a: &dyn Attrs) -> Option<String> {
    a.get(attr::GEN_AI_RESPONSE_MODEL)
        .or_else(|| a.get(attr::GEN_AI_REQUEST_MODEL))
        .and_then(|v| v.as_str().map(str::to_string))
        .filter(|m| !m.is_empty())
}

fn cost(a: &dyn Attrs) -> Option<f64> {
    a.get(attr::COST_USD)
        .or_else(|| a.get(attr::USAGE_COST))
        .and_then(|v| v.as_f64())
}

/// Temperature and max tokens as a JSON object, when any is set.
fn invocation_parameters(a: &dyn Attrs) -> Option<String> {
    let mut m = Map::new();
    if let Some(t) = a
        .get(attr::GEN_AI_REQUEST_TEMPERATURE)
        .and_then(|v| v.as_f64())
    {
        m.insert("temperature".into(), json!(t));
    }
    if let Some(t) = a
        .get(attr::GEN_AI_REQUEST_MAX_TOKENS)
        .and_then(|v| v.as_i64())
    {
        m.insert("max_tokens".into(), json!(t));
    }
    (!m.is_empty()).then(|| Value::Object(m).to_string())
}

fn string(a: &dyn Attrs, k: &str) -> Option<String> {
    a.get(k).and_then(|v| v.as_str().map(str::to_string))
}

/// (role, text) of each message in a GenAI messages JSON string (text parts joined).
fn messages(raw: &str) -> Vec<(String, String)> {
    let Ok(Value::Array(list)) = serde_json::from_str::<Value>(raw) else {
        return Vec::new();
    };
    list.iter()
        .map(|m| {
            let role = m["role"].as_str().unwrap_or("user").to_string();
            let text = m["parts"]
                .as_array()
                .map(|parts| {
                    parts
                        .iter()
                        .filter_map(|p| p["content"].as_str())
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default();
            (role, text)
        })
        .collect()
}

/// The text of `gen_ai.system_instructions` (a JSON list of parts).
fn system_text(raw: &str) -> Option<String> {
    let Ok(Value::Array(parts)) = serde_json::from_str::<Value>(raw) else {
        return None;
    };
    let t: Vec<&str> = parts.iter().filter_map(|p| p["content"].as_str()).collect();
    (!t.is_empty()).then(|| t.join("\n"))
}

/// OpenInference's `llm.provider` for a GenAI provider name.
fn openinference_provider(p: &str) -> &str {
    match p {
        "gcp.gemini" | "gcp.vertex_ai" | "gcp.gen_ai" => "google",
        "azure.ai.openai" | "azure.ai.inference" => "azure",
        "aws.bedrock" => "aws",
        "mistral_ai" => "mistralai",
        "x_ai" => "xai",
        other => other,
    }
}

/// OpenInference's `llm.system` (the model family's API) for a GenAI provider name.
fn openinference_system(p: &str) -> &str {
    match p {
        "gcp.gemini" | "gcp.vertex_ai" | "gcp.gen_ai" => "vertexai",
        "azure.ai.openai" => "openai",
        "mistral_ai" => "mistralai",
        other => other,
    }
}

fn phoenix(add: &mut Vec<(String, Val)>, a: &dyn Attrs, capture: bool) {
    let kind = classify(a);
    let span_kind = match kind {
        Kind::Llm => "LLM",
        Kind::Planner => "AGENT",
        Kind::ToolNode => "TOOL",
        Kind::Root | Kind::Workflow | Kind::PlannerStep | Kind::ChainNode => "CHAIN",
        Kind::Other => return,
    };
    let mut put = |k: &str, v: Val| add.push((k.to_string(), v));
    put("openinference.span.kind", Val::Str(span_kind.into()));
    match kind {
        Kind::Llm => {
            if let Some(m) = model(a) {
                put("llm.model_name", Val::Str(m));
            }
            if let Some(p) =
                string(a, attr::GEN_AI_PROVIDER_NAME).or_else(|| string(a, attr::GEN_AI_SYSTEM))
            {
                put("llm.provider", Val::Str(openinference_provider(&p).into()));
                put("llm.system", Val::Str(openinference_system(&p).into()));
            }
            let u = usage(a);
            let pairs = [
                ("llm.token_count.prompt", u.input_tokens),
                ("llm.token_count.completion", u.output_tokens),
                (
                    "llm.token_count.prompt_details.cache_read",
                    u.cache_read_tokens,
                ),
                (
                    "llm.token_count.prompt_details.cache_write",
                    u.cache_write_tokens,
                ),
                (
                    "llm.token_count.completion_details.reasoning",
                    u.reasoning_tokens,
                ),
                ("llm.token_count.total", u.total()),
            ];
            for (k, v) in pairs {
                if let Some(v) = v {
                    put(k, int(v));
                }
            }
            if let Some(c) = cost(a) {
                put("llm.cost.total", Val::F64(c));
            }
            if let Some(p) = invocation_parameters(a) {
                put("llm.invocation_parameters", Val::Str(p));
            }
            if capture {
                let mut i = 0;
                if let Some(s) =
                    string(a, attr::GEN_AI_SYSTEM_INSTRUCTIONS).and_then(|s| system_text(&s))
                {
                    put(
                        "llm.input_messages.0.message.role",
                        Val::Str("system".into()),
                    );
                    put("llm.input_messages.0.message.content", Val::Str(s));
                    i = 1;
                }
                if let Some(raw) = string(a, attr::GEN_AI_INPUT_MESSAGES) {
                    for (role, text) in messages(&raw) {
                        put(
                            &format!("llm.input_messages.{i}.message.role"),
                            Val::Str(role),
                        );
                        put(
                            &format!("llm.input_messages.{i}.message.content"),
                            Val::Str(text),
                        );
                        i += 1;
                    }
                    put("input.value", Val::Str(raw));
                    put("input.mime_type", Val::Str("application/json".into()));
                }
                if let Some(raw) = string(a, attr::GEN_AI_OUTPUT_MESSAGES) {
                    for (j, (role, text)) in messages(&raw).into_iter().enumerate() {
                        put(
                            &format!("llm.output_messages.{j}.message.role"),
                            Val::Str(role),
                        );
                        put(
                            &format!("llm.output_messages.{j}.message.content"),
                            Val::Str(text),
                        );
                    }
                    put("output.value", Val::Str(raw));
                    put("output.mime_type", Val::Str("application/json".into()));
                }
            }
        }
        Kind::ToolNode | Kind::ChainNode => {
            if kind == Kind::ToolNode {
                if let Some(t) = string(a, attr::NODE_TYPE) {
                    put("tool.name", Val::Str(t));
                }
            }
            if capture {
                if let Some(p) = string(a, attr::NODE_PARAMS) {
                    put("input.value", Val::Str(p));
                    put("input.mime_type", Val::Str("application/json".into()));
                }
            }
        }
        Kind::Planner => {
            if capture {
                if let Some(r) = string(a, attr::PLANNER_REQUEST) {
                    put("input.value", Val::Str(r));
                    put("input.mime_type", Val::Str("text/plain".into()));
                }
            }
        }
        Kind::Root | Kind::Workflow | Kind::PlannerStep | Kind::Other => {}
    }
}

fn langfuse(add: &mut Vec<(String, Val)>, a: &dyn Attrs, capture: bool, error: Option<&str>) {
    let kind = classify(a);
    let ty = match kind {
        Kind::Llm => "generation",
        Kind::Planner => "agent",
        Kind::ToolNode => "tool",
        Kind::Root | Kind::Workflow | Kind::PlannerStep | Kind::ChainNode => "chain",
        Kind::Other => "span",
    };
    let mut put = |k: &str, v: Val| add.push((k.to_string(), v));
    put("langfuse.observation.type", Val::Str(ty.into()));
    if let Some(e) = error {
        put("langfuse.observation.level", Val::Str("ERROR".into()));
        put(
            "langfuse.observation.status_message",
            Val::Str(e.to_string()),
        );
    }
    match kind {
        Kind::Root => {
            if let Some(n) = string(a, attr::WORKFLOW_NAME) {
                put("langfuse.trace.name", Val::Str(n));
            }
        }
        Kind::Llm => {
            if let Some(m) = model(a) {
                put("langfuse.observation.model.name", Val::Str(m));
            }
            if let Some(p) = invocation_parameters(a) {
                put("langfuse.observation.model.parameters", Val::Str(p));
            }
            let u = usage(a);
            if let Some(total) = u.total() {
                // Langfuse sums usage keys into a total and prices each key: the parts are
                // disjoint (uncached input, cache reads, cache writes; output without reasoning,
                // reasoning), and the total is given explicitly.
                let t = u.counts();
                let mut d = Map::new();
                d.insert("input".into(), json!(t.uncached_input()));
                d.insert("output".into(), json!(t.visible_output()));
                let parts = [
                    ("input_cache_read", t.cache_read),
                    ("input_cache_creation", t.cache_write),
                    ("output_reasoning", t.reasoning),
                ];
                for (k, n) in parts.into_iter().filter(|(_, n)| *n > 0) {
                    d.insert(k.into(), json!(n));
                }
                d.insert("total".into(), json!(total));
                put(
                    "langfuse.observation.usage_details",
                    Val::Str(Value::Object(d).to_string()),
                );
            }
            if let Some(c) = cost(a) {
                put(
                    "langfuse.observation.cost_details",
                    Val::Str(json!({ "total": c }).to_string()),
                );
                put(attr::USAGE_COST, Val::F64(c));
            }
            if capture {
                if let Some(i) = string(a, attr::GEN_AI_INPUT_MESSAGES) {
                    put("langfuse.observation.input", Val::Str(i));
                }
                if let Some(o) = string(a, attr::GEN_AI_OUTPUT_MESSAGES) {
                    put("langfuse.observation.output", Val::Str(o));
                }
            }
        }
        Kind::ToolNode | Kind::ChainNode => {
            if capture {
                if let Some(p) = string(a, attr::NODE_PARAMS) {
                    put("langfuse.observation.input", Val::Str(p));
                }
            }
        }
        Kind::Planner => {
            if capture {
                if let Some(r) = string(a, attr::PLANNER_REQUEST) {
                    put("langfuse.observation.input", Val::Str(r));
                }
            }
        }
        Kind::Workflow | Kind::PlannerStep | Kind::Other => {}
    }
}

// ---- Adapters: SDK spans (live export) and OTLP protos (`pflow trace export`).

fn from_otel(v: &opentelemetry::Value) -> Option<Val> {
    use opentelemetry::Value as V;
    Some(match v {
        V::Bool(b) => Val::Bool(*b),
        V::I64(i) => Val::Int(*i),
        V::F64(f) => Val::F64(*f),
        V::String(s) => Val::Str(s.as_str().to_string()),
        _ => return None,
    })
}

fn to_otel(v: Val) -> opentelemetry::Value {
    match v {
        Val::Str(s) => s.into(),
        Val::Int(i) => i.into(),
        Val::F64(f) => f.into(),
        Val::Bool(b) => b.into(),
    }
}

/// Applies `shape` to a span bound for an OTLP exporter.
pub fn apply_span_data(span: &mut opentelemetry_sdk::trace::SpanData, shape: &ExportShape) {
    if shape.profile == Profile::Otel && !shape.semconv_latest {
        return;
    }
    let error = match &span.status {
        opentelemetry::trace::Status::Error { description } => Some(description.to_string()),
        _ => None,
    };
    let ch = {
        let attrs = &span.attributes;
        let get = |k: &str| {
            attrs
                .iter()
                .find(|kv| kv.key.as_str() == k)
                .and_then(|kv| from_otel(&kv.value))
        };
        changes(shape, &get, error.as_deref())
    };
    span.attributes
        .retain(|kv| !ch.drop.contains(&kv.key.as_str()));
    for (k, v) in ch.add {
        if !span.attributes.iter().any(|kv| kv.key.as_str() == k) {
            span.attributes
                .push(opentelemetry::KeyValue::new(k, to_otel(v)));
        }
    }
}

/// Applies `shape` to a span read back from a trace file.
pub fn apply_proto(span: &mut opentelemetry_proto::tonic::trace::v1::Span, shape: &ExportShape) {
    use opentelemetry_proto::tonic::common::v1::{any_value::Value as P, AnyValue, KeyValue};
    if shape.profile == Profile::Otel && !shape.semconv_latest {
        return;
    }
    // Status code 2 is ERROR in the OTLP proto.
    let error = span
        .status
        .as_ref()
        .filter(|s| s.code == 2)
        .map(|s| s.message.clone());
    let ch = {
        let attrs = &span.attributes;
        let get = |k: &str| {
            attrs
                .iter()
                .find(|kv| kv.key == k)
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .and_then(|v| {
                    Some(match v {
                        P::StringValue(s) => Val::Str(s.clone()),
                        P::IntValue(i) => Val::Int(*i),
                        P::DoubleValue(f) => Val::F64(*f),
                        P::BoolValue(b) => Val::Bool(*b),
                        _ => return None,
                    })
                })
        };
        changes(shape, &get, error.as_deref())
    };
    span.attributes
        .retain(|kv| !ch.drop.contains(&kv.key.as_str()));
    for (k, v) in ch.add {
        if span.attributes.iter().any(|kv| kv.key == k) {
            continue;
        }
        let value = match v {
            Val::Str(s) => P::StringValue(s),
            Val::Int(i) => P::IntValue(i),
            Val::F64(f) => P::DoubleValue(f),
            Val::Bool(b) => P::BoolValue(b),
        };
        span.attributes.push(KeyValue {
            key: k,
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::KeyValue;
    use std::collections::BTreeMap;

    const INPUT: &str = r#"[{"role":"user","parts":[{"type":"text","content":"Weather in SF?"}]}]"#;
    const OUTPUT: &str = r#"[{"role":"assistant","parts":[{"type":"text","content":"Sunny."}],"finish_reason":"stop"}]"#;
    const SYSTEM: &str = r#"[{"type":"text","content":"Be brief."}]"#;

    /// A canonical LLM span as `llm::traced` records it.
    fn llm_attrs(content: bool) -> Vec<KeyValue> {
        let mut v = vec![
            KeyValue::new("gen_ai.operation.name", "chat"),
            KeyValue::new("gen_ai.provider.name", "openai"),
            KeyValue::new("gen_ai.system", "openai"),
            KeyValue::new("gen_ai.request.model", "gpt-4o"),
            KeyValue::new("gen_ai.response.model", "gpt-4o-2024-08-06"),
            KeyValue::new("gen_ai.request.temperature", 0.3),
            KeyValue::new("gen_ai.request.max_tokens", 50i64),
            KeyValue::new("gen_ai.usage.input_tokens", 100i64),
            KeyValue::new("gen_ai.usage.output_tokens", 40i64),
            KeyValue::new("gen_ai.usage.cache_read.input_tokens", 30i64),
            KeyValue::new("gen_ai.usage.cache_creation.input_tokens", 20i64),
            KeyValue::new("gen_ai.usage.cache_write.input_tokens", 20i64),
            KeyValue::new("gen_ai.usage.reasoning.output_tokens", 10i64),
            KeyValue::new("gen_ai.usage.cost", 0.0125),
            KeyValue::new("pflow.cost.usd", 0.0125),
            KeyValue::new("pflow.llm.attempt", 1i64),
        ];
        if content {
            v.push(KeyValue::new("gen_ai.system_instructions", SYSTEM));
            v.push(KeyValue::new("gen_ai.input.messages", INPUT));
            v.push(KeyValue::new("gen_ai.output.messages", OUTPUT));
        }
        v
    }

    fn span(
        attrs: Vec<KeyValue>,
        status: opentelemetry::trace::Status,
    ) -> opentelemetry_sdk::trace::SpanData {
        opentelemetry_sdk::trace::SpanData {
            span_context: opentelemetry::trace::SpanContext::empty_context(),
            parent_span_id: opentelemetry::trace::SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: opentelemetry::trace::SpanKind::Internal,
            name: "s".into(),
            start_time: std::time::SystemTime::UNIX_EPOCH,
            end_time: std::time::SystemTime::UNIX_EPOCH,
            attributes: attrs,
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status,
            instrumentation_scope: Default::default(),
        }
    }

    fn shaped(
        attrs: Vec<KeyValue>,
        profile: Profile,
        capture: bool,
        latest: bool,
    ) -> BTreeMap<String, opentelemetry::Value> {
        let mut s = span(attrs, opentelemetry::trace::Status::Unset);
        let shape = ExportShape {
            profile,
            semconv_latest: latest,
            capture_content: capture,
        };
        apply_span_data(&mut s, &shape);
        let map: BTreeMap<_, _> = s
            .attributes
            .iter()
            .map(|kv| (kv.key.to_string(), kv.value.clone()))
            .collect();
        assert_eq!(map.len(), s.attributes.len(), "a key was added twice");
        map
    }

    /// What a profile added: keys not in the canonical span.
    fn added(
        profile: Profile,
        attrs: Vec<KeyValue>,
        capture: bool,
    ) -> BTreeMap<String, opentelemetry::Value> {
        let before: Vec<String> = attrs.iter().map(|kv| kv.key.to_string()).collect();
        let mut m = shaped(attrs, profile, capture, false);
        m.retain(|k, _| !before.contains(k));
        m
    }

    fn s(v: &str) -> opentelemetry::Value {
        v.to_string().into()
    }

    #[test]
    fn profile_names_parse_and_bad_ones_name_the_value() {
        assert_eq!(Profile::parse("phoenix", "x"), Ok(Profile::Phoenix));
        assert_eq!(Profile::parse(" Langfuse ", "x"), Ok(Profile::Langfuse));
        assert_eq!(Profile::parse("otel", "x"), Ok(Profile::Otel));
        let e = Profile::resolve(Some("jaeger")).unwrap_err();
        assert_eq!(e.origin, "--otel-profile");
        let msg = e.to_string();
        assert!(
            msg.contains("`jaeger`") && msg.contains("otel, phoenix, langfuse"),
            "{msg}"
        );
        for n in Profile::NAMES {
            assert_eq!(Profile::parse(n, "x").unwrap().as_str(), *n);
        }
    }

    #[test]
    fn opt_in_list_is_comma_separated() {
        assert!(opt_in_has_latest("gen_ai_latest_experimental"));
        assert!(opt_in_has_latest("http, gen_ai_latest_experimental"));
        assert!(!opt_in_has_latest("http"));
        assert!(!opt_in_has_latest("gen_ai_latest_experimental_x"));
    }

    #[test]
    fn otel_profile_changes_nothing() {
        let attrs = llm_attrs(true);
        let before: BTreeMap<_, _> = attrs
            .iter()
            .map(|kv| (kv.key.to_string(), kv.value.clone()))
            .collect();
        assert_eq!(shaped(attrs, Profile::Otel, true, false), before);
    }

    #[test]
    fn phoenix_llm_span_gets_openinference_tokens_cost_and_model() {
        let a = added(Profile::Phoenix, llm_attrs(true), false);
        let want: BTreeMap<String, opentelemetry::Value> = [
            ("openinference.span.kind", s("LLM")),
            ("llm.model_name", s("gpt-4o-2024-08-06")),
            ("llm.provider", s("openai")),
            ("llm.system", s("openai")),
            ("llm.token_count.prompt", 100i64.into()),
            ("llm.token_count.completion", 40i64.into()),
            ("llm.token_count.total", 140i64.into()),
            ("llm.token_count.prompt_details.cache_read", 30i64.into()),
            ("llm.token_count.prompt_details.cache_write", 20i64.into()),
            ("llm.token_count.completion_details.reasoning", 10i64.into()),
            ("llm.cost.total", 0.0125.into()),
            (
                "llm.invocation_parameters",
                s(r#"{"temperature":0.3,"max_tokens":50}"#),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(a, want, "content must stay out without capture");
    }

    #[test]
    fn phoenix_content_only_with_capture() {
        let a = added(Profile::Phoenix, llm_attrs(true), true);
        assert_eq!(a["input.value"], s(INPUT));
        assert_eq!(a["input.mime_type"], s("application/json"));
        assert_eq!(a["output.value"], s(OUTPUT));
        assert_eq!(a["llm.input_messages.0.message.role"], s("system"));
        assert_eq!(a["llm.input_messages.0.message.content"], s("Be brief."));
        assert_eq!(a["llm.input_messages.1.message.role"], s("user"));
        assert_eq!(
            a["llm.input_messages.1.message.content"],
            s("Weather in SF?")
        );
        assert_eq!(a["llm.output_messages.0.message.role"], s("assistant"));
        assert_eq!(a["llm.output_messages.0.message.content"], s("Sunny."));
        // Capture on but the span has no content (it was never recorded): nothing invented.
        let a = added(Profile::Phoenix, llm_attrs(false), true);
        assert!(
            !a.keys()
                .any(|k| k.starts_with("input.") || k.contains("messages")),
            "{a:?}"
        );
    }

    #[test]
    fn span_kinds_for_each_pflow_span() {
        let kind = |attrs: Vec<KeyValue>, p: Profile, key: &str| {
            shaped(attrs, p, false, false).get(key).cloned()
        };
        // Attributes, OpenInference kind, Langfuse type.
        type Pairs = &'static [(&'static str, &'static str)];
        #[rustfmt::skip]
        let table: [(Pairs, &str, &str); 7] = [
            (&[("pflow.run.command", "run"), ("pflow.workflow.name", "w")], "CHAIN", "chain"),
            (&[("gen_ai.operation.name", "invoke_workflow")], "CHAIN", "chain"),
            (&[("gen_ai.operation.name", "plan"), ("gen_ai.request.model", "m")], "AGENT", "agent"),
            (&[("gen_ai.operation.name", "plan"), ("pflow.planner.step", "generate")], "CHAIN", "chain"),
            (&[("pflow.node.role", "node"), ("pflow.node.type", "shell")], "TOOL", "tool"),
            (&[("pflow.node.role", "node"), ("pflow.node.type", "llm")], "CHAIN", "chain"),
            (&[("pflow.node.role", "batch"), ("pflow.node.type", "shell")], "CHAIN", "chain"),
        ];
        let kvs = |pairs: &[(&'static str, &'static str)]| -> Vec<KeyValue> {
            pairs.iter().map(|&(k, v)| KeyValue::new(k, v)).collect()
        };
        let mut cases: Vec<_> = table.iter().map(|&(a, oi, lf)| (kvs(a), oi, lf)).collect();
        cases.push((llm_attrs(false), "LLM", "generation"));
        for (attrs, oi, lf) in cases {
            assert_eq!(
                kind(attrs.clone(), Profile::Phoenix, "openinference.span.kind"),
                Some(s(oi)),
                "{attrs:?}"
            );
            assert_eq!(
                kind(
                    attrs.clone(),
                    Profile::Langfuse,
                    "langfuse.observation.type"
                ),
                Some(s(lf)),
                "{attrs:?}"
            );
            assert_eq!(kind(attrs, Profile::Otel, "openinference.span.kind"), None);
        }
        // The run (row 0) names the trace; a shell node (row 4) names its tool.
        let root = shaped(kvs(table[0].0), Profile::Langfuse, false, false);
        assert_eq!(root["langfuse.trace.name"], s("w"));
        let tool = shaped(kvs(table[4].0), Profile::Phoenix, false, false);
        assert_eq!(tool["tool.name"], s("shell"));
    }

    #[test]
    fn langfuse_llm_span_gets_usage_and_cost_details() {
        let mut attrs = llm_attrs(true);
        // A trace written before `gen_ai.usage.cost` existed still gets it.
        attrs.retain(|kv| kv.key.as_str() != "gen_ai.usage.cost");
        let a = added(Profile::Langfuse, attrs, false);
        let usage: Value =
            serde_json::from_str(&a["langfuse.observation.usage_details"].as_str()).unwrap();
        // Disjoint parts: 100 input = 50 uncached + 30 read + 20 written; 40 output = 30 + 10 reasoning.
        assert_eq!(
            usage,
            json!({"input": 50, "input_cache_read": 30, "input_cache_creation": 20, "output": 30, "output_reasoning": 10, "total": 140})
        );
        let cost: Value =
            serde_json::from_str(&a["langfuse.observation.cost_details"].as_str()).unwrap();
        assert_eq!(cost, json!({"total": 0.0125}));
        assert_eq!(a["gen_ai.usage.cost"], 0.0125.into());
        assert_eq!(a["langfuse.observation.type"], s("generation"));
        assert_eq!(a["langfuse.observation.model.name"], s("gpt-4o-2024-08-06"));
        assert_eq!(
            a["langfuse.observation.model.parameters"],
            s(r#"{"temperature":0.3,"max_tokens":50}"#)
        );
        assert_eq!(a.len(), 6, "{a:?}");
        let a = added(Profile::Langfuse, llm_attrs(true), true);
        assert_eq!(a["langfuse.observation.input"], s(INPUT));
        assert_eq!(a["langfuse.observation.output"], s(OUTPUT));
    }

    #[test]
    fn langfuse_marks_failed_spans_as_errors() {
        let mut sp = span(
            vec![
                KeyValue::new("pflow.node.role", "node"),
                KeyValue::new("pflow.node.type", "shell"),
            ],
            opentelemetry::trace::Status::error("exit status 3"),
        );
        apply_span_data(
            &mut sp,
            &ExportShape {
                profile: Profile::Langfuse,
                ..Default::default()
            },
        );
        let get = |k: &str| {
            sp.attributes
                .iter()
                .find(|kv| kv.key.as_str() == k)
                .map(|kv| kv.value.clone())
        };
        assert_eq!(get("langfuse.observation.level"), Some(s("ERROR")));
        assert_eq!(
            get("langfuse.observation.status_message"),
            Some(s("exit status 3"))
        );
    }

    #[test]
    fn semconv_latest_drops_the_deprecated_names_only() {
        let m = shaped(llm_attrs(false), Profile::Otel, false, true);
        assert!(!m.contains_key("gen_ai.usage.cache_creation.input_tokens"));
        assert!(!m.contains_key("gen_ai.system"));
        assert_eq!(m["gen_ai.usage.cache_write.input_tokens"], 20i64.into());
        assert_eq!(m["gen_ai.provider.name"], s("openai"));
        assert_eq!(m.len(), llm_attrs(false).len() - 2);
        // Profiles still derive from the newer names.
        let m = shaped(llm_attrs(false), Profile::Phoenix, false, true);
        assert_eq!(
            m["llm.token_count.prompt_details.cache_write"],
            20i64.into()
        );
        assert_eq!(m["llm.provider"], s("openai"));
    }

    #[test]
    fn proto_spans_get_the_same_attributes() {
        use opentelemetry_proto::tonic::trace::v1::{status::StatusCode, Span, Status};
        let sdk = span(llm_attrs(true), opentelemetry::trace::Status::error("boom"));
        let groups = opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope(
            vec![sdk.clone()],
            &opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema::default(),
        );
        let mut proto: Span = groups[0].scope_spans[0].spans[0].clone();
        assert_eq!(
            proto.status,
            Some(Status {
                code: StatusCode::Error as i32,
                message: "boom".into()
            })
        );
        let shape = ExportShape {
            profile: Profile::Langfuse,
            semconv_latest: true,
            capture_content: true,
        };
        apply_proto(&mut proto, &shape);
        let mut sdk = sdk;
        apply_span_data(&mut sdk, &shape);
        let keys = |v: Vec<String>| {
            let mut v = v;
            v.sort();
            v
        };
        assert_eq!(
            keys(proto.attributes.iter().map(|kv| kv.key.clone()).collect()),
            keys(sdk.attributes.iter().map(|kv| kv.key.to_string()).collect())
        );
        let usage = proto
            .attributes
            .iter()
            .find(|kv| kv.key == "langfuse.observation.usage_details")
            .unwrap();
        let want = sdk
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == "langfuse.observation.usage_details")
            .unwrap();
        assert_eq!(
            format!("{:?}", usage.value.as_ref().unwrap().value),
            format!("Some(StringValue({:?}))", want.value.as_str())
        );
    }
}
