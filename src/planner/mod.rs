//! The planner: from a plain-language request to a workflow, every step a
//! span under one `plan pflow` span and every LLM call a GenAI span in the
//! `planner` section, so its time, tokens and cost show next to the run's.
//!
//! Path A reuses a saved workflow that already does the job; path B selects
//! node types, finds the request's parameters, generates the IR and checks
//! it with the same validator as `pflow validate`, feeding errors back (at
//! most three attempts). Both paths then map the request's values onto the
//! workflow's inputs. Prompts live in `src/planner/prompts/`.

use crate::ir::validate::Severity;
use crate::ir::{self, WorkflowIr};
use crate::llm::traced::CallOptions;
use crate::llm::{self, LlmRequest, Provider};
use crate::nodes::Services;
use crate::runtime::{CompileContext, Runtime};
use crate::telemetry::attr;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::field::Empty;
use tracing::Instrument;

const PROMPT_DISCOVERY: &str = include_str!("prompts/discovery.md");
const PROMPT_SELECT: &str = include_str!("prompts/select_nodes.md");
const PROMPT_EXTRACT: &str = include_str!("prompts/extract_params.md");
const PROMPT_GENERATE: &str = include_str!("prompts/generate.md");
const PROMPT_MAP: &str = include_str!("prompts/map_inputs.md");

/// Generation attempts before the planner gives up.
pub const MAX_ATTEMPTS: u32 = 3;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Debug, Clone)]
pub struct PlannerConfig {
    pub model: String,
    pub timeout: Duration,
    /// Where saved workflows live (path A).
    pub library: PathBuf,
}

impl PlannerConfig {
    /// `--planner-model`, else `PFLOW_PLANNER_MODEL`, else `PFLOW_DEFAULT_MODEL`.
    pub fn resolve_model(flag: Option<&str>) -> Result<String, PlannerError> {
        let m = flag
            .map(str::to_string)
            .or_else(|| std::env::var("PFLOW_PLANNER_MODEL").ok())
            .or_else(|| std::env::var("PFLOW_DEFAULT_MODEL").ok())
            .filter(|m| !m.trim().is_empty());
        match m {
            Some(m) if m != "echo" => Ok(m),
            _ => Err(PlannerError::NoModel),
        }
    }
}

/// Which way the planner went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanPath {
    /// A saved workflow was reused.
    A,
    /// A new workflow was generated.
    B,
}

/// A planned workflow, ready to compile and run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub ir: WorkflowIr,
    pub path: PlanPath,
    /// The saved workflow reused on path A.
    pub reused: Option<String>,
    /// Input values found in the request.
    pub inputs: Map<String, Value>,
    pub attempts: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum PlannerError {
    #[error("the planner needs a model that can plan: pass --planner-model (e.g. gpt-4o-mini, claude-haiku-4-5, ollama/llama3.2) or set PFLOW_PLANNER_MODEL")]
    NoModel,
    #[error("planner step `{step}`: the model call failed: {message}")]
    Llm { step: &'static str, message: String },
    #[error("planner step `{step}`: the model's answer was not usable after {attempts} attempts: {reason}")]
    Malformed {
        step: &'static str,
        attempts: u32,
        reason: String,
    },
    #[error("no valid workflow after {attempts} attempts; last errors:\n{}", diagnostics.join("\n"))]
    Invalid {
        attempts: u32,
        diagnostics: Vec<String>,
    },
    #[error("planning took longer than {:.0}s (--planner-timeout)", .0.as_secs_f64())]
    Timeout(Duration),
    #[error("{0}")]
    Model(String),
    /// The run's budget guard refused a planner call.
    #[error(transparent)]
    Budget(Box<llm::budget::BudgetExceeded>),
}

impl PlannerError {
    pub fn kind(&self) -> &'static str {
        match self {
            PlannerError::NoModel => "planner_no_model",
            PlannerError::Llm { .. } => "planner_llm_error",
            PlannerError::Malformed { .. } => "planner_malformed_output",
            PlannerError::Invalid { .. } => "planner_invalid_workflow",
            PlannerError::Timeout(_) => "planner_timeout",
            PlannerError::Model(_) => "planner_model",
            PlannerError::Budget(b) => b.kind(),
        }
    }
}

/// A JSON object from a model's answer: the whole answer (a ```json fence
/// around it is tolerated), nothing else.
pub fn parse_object(text: &str) -> Result<Map<String, Value>, String> {
    let t = text.trim();
    let t = t
        .strip_prefix("```json")
        .or_else(|| t.strip_prefix("```"))
        .and_then(|r| r.trim_end().strip_suffix("```"))
        .map(str::trim)
        .unwrap_or(t);
    match serde_json::from_str::<Value>(t) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(format!(
            "expected a JSON object, got {}",
            crate::nodes::params_type_name(&other)
        )),
        Err(e) => {
            let preview: String = t.chars().take(80).collect();
            Err(format!("not JSON ({e}); the answer began: {preview:?}"))
        }
    }
}

/// Checks a parsed answer's shape; the message is fed back to the model.
type Check<'a> = dyn Fn(&Map<String, Value>) -> Result<(), String> + 'a;

struct Ctx<'a> {
    services: &'a Services,
    provider: Provider,
    model: String,
}

fn fill(template: &str, vars: &[(&str, String)]) -> String {
    let mut s = template.to_string();
    for (k, v) in vars {
        s = s.replace(&format!("{{{{{k}}}}}"), v);
    }
    s
}

fn step_span(step: &'static str) -> tracing::Span {
    tracing::info_span!(
        target: "pflow::planner",
        "planner_step",
        otel.name = %attr::planner_step_span(step),
        { attr::PLANNER_STEP } = step,
        { attr::PLANNER_ATTEMPT } = Empty,
        { attr::SECTION } = "planner",
        { attr::ERROR_TYPE } = Empty,
        otel.status_description = Empty,
    )
}

fn fail_span(span: &tracing::Span, kind: &str, message: &str) {
    crate::telemetry::record_exception(span, kind, message);
}

/// A step's failure, recorded once: a failed model call was recorded on its
/// LLM span already.
fn fail_step(span: &tracing::Span, e: &PlannerError) {
    match e {
        PlannerError::Llm { .. } => crate::telemetry::mark_failed(span, e.kind(), &e.to_string()),
        _ => fail_span(span, e.kind(), &e.to_string()),
    }
}

impl Ctx<'_> {
    /// One structured call: asks for JSON, parses it strictly; a malformed
    /// answer is retried with the reason, up to [`MAX_ATTEMPTS`].
    async fn ask(
        &self,
        step: &'static str,
        system: String,
        user: String,
        schema: Value,
        check: &Check<'_>,
    ) -> Result<Map<String, Value>, PlannerError> {
        let mut reason = String::new();
        for attempt in 1..=MAX_ATTEMPTS {
            let prompt = if reason.is_empty() {
                user.clone()
            } else {
                format!("{user}\n\nYour previous answer was rejected: {reason}\nAnswer again with the JSON object only.")
            };
            let request = LlmRequest {
                system: Some(system.clone()),
                temperature: Some(0.0),
                max_tokens: Some(4096),
                json_mode: true,
                json_schema: Some(schema.clone()),
                ..LlmRequest::new(self.provider, self.model.clone(), prompt)
            };
            let opts = CallOptions {
                retries: 2,
                node_path: None,
                section: "planner",
            };
            let done =
                self.services
                    .call_llm(&request, &opts)
                    .await
                    .map_err(|f| match f.error {
                        llm::LlmError::Budget(stop) => PlannerError::Budget(stop),
                        other => PlannerError::Llm {
                            step,
                            message: other.to_string(),
                        },
                    })?;
            match parse_object(&done.response.text).and_then(|m| check(&m).map(|_| m)) {
                Ok(m) => return Ok(m),
                Err(r) => {
                    tracing::warn!({ { attr::MALFORMED_STEP } = step, { attr::MALFORMED_ATTEMPT } = attempt as i64, { attr::REASON } = %r }, "{}", attr::EVENT_PLANNER_MALFORMED);
                    reason = r;
                }
            }
        }
        Err(PlannerError::Malformed {
            step,
            attempts: MAX_ATTEMPTS,
            reason,
        })
    }
}

fn node_catalog(rt: &Runtime, only: Option<&[String]>) -> String {
    rt.registry()
        .specs()
        .into_iter()
        .filter(|s| only.is_none_or(|o| o.iter().any(|n| n == s.name)))
        .map(|s| {
            let params: Vec<String> = s
                .params
                .iter()
                .map(|p| {
                    format!(
                        "{}{}: {}",
                        p.name,
                        if p.required { " (required)" } else { "" },
                        p.ty
                    )
                })
                .collect();
            let outputs: Vec<&str> = s.outputs.iter().map(|o| o.name).collect();
            format!(
                "- {}: {} params: {}; outputs: {}",
                s.name,
                s.description,
                params.join(", "),
                outputs.join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Plans `request` (bounded by `config.timeout`), under a `plan pflow` span.
pub async fn plan(
    request: &str,
    config: &PlannerConfig,
    runtime: &Runtime,
) -> Result<Plan, PlannerError> {
    let (provider, model) =
        llm::resolve_model(&config.model).map_err(|e| PlannerError::Model(e.to_string()))?;
    let span = tracing::info_span!(
        target: "pflow::planner",
        "planner",
        otel.name = attr::SPAN_PLANNER,
        { attr::GEN_AI_OPERATION_NAME } = "plan",
        { attr::GEN_AI_AGENT_NAME } = attr::PLANNER_AGENT,
        { attr::GEN_AI_REQUEST_MODEL } = %model,
        { attr::SECTION } = "planner",
        { attr::PLANNER_REQUEST } = request,
        { attr::PLANNER_PATH } = Empty,
        { attr::PLANNER_ATTEMPTS } = Empty,
        { attr::PLANNER_WORKFLOW } = Empty,
        { attr::PLANNER_IR } = Empty,
        { attr::ERROR_TYPE } = Empty,
        otel.status_description = Empty,
    );
    let ctx = Ctx {
        services: runtime.services(),
        provider,
        model,
    };
    let work = plan_inner(request, config, runtime, &ctx, &span);
    let result = match tokio::time::timeout(config.timeout, work.instrument(span.clone())).await {
        Ok(r) => r,
        Err(_) => Err(PlannerError::Timeout(config.timeout)),
    };
    match &result {
        Ok(p) => {
            // `plan_inner` records the path as soon as it is chosen, so a generation that
            // then fails still says which path it took; recording it again here would
            // export the key twice.
            span.record(attr::PLANNER_ATTEMPTS, p.attempts as i64);
            if let Some(n) = p.ir.name() {
                span.record(attr::PLANNER_WORKFLOW, n);
            }
            // The plan is in the trace whether it then runs, is refused or fails.
            if let Ok(text) = serde_json::to_string(&p.ir) {
                span.record(attr::PLANNER_IR, text.as_str());
            }
        }
        // A timeout happens here; every other failure was recorded on the step.
        Err(e @ PlannerError::Timeout(_)) => fail_span(&span, e.kind(), &e.to_string()),
        Err(e) => crate::telemetry::mark_failed(&span, e.kind(), &e.to_string()),
    }
    result
}

async fn plan_inner(
    request: &str,
    config: &PlannerConfig,
    runtime: &Runtime,
    ctx: &Ctx<'_>,
    root: &tracing::Span,
) -> Result<Plan, PlannerError> {
    // 1. Discovery.
    let saved = crate::workflows::list(&config.library);
    let span = step_span("discovery");
    let reuse = async {
        if saved.is_empty() {
            return Ok(None);
        }
        let listing = saved
            .iter()
            .map(|w| {
                format!(
                    "- {}: {} (inputs: {})",
                    w.name,
                    w.description.as_deref().unwrap_or(""),
                    w.inputs.join(", ")
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        let names: Vec<String> = saved.iter().map(|w| w.name.clone()).collect();
        let answer = ctx
            .ask(
                "discovery",
                fill(PROMPT_DISCOVERY, &[("workflows", listing)]),
                request.to_string(),
                json!({"type": "object", "properties": {"found": {"type": "boolean"}, "workflow_name": {"type": ["string", "null"], "enum": names.iter().map(|n| json!(n)).chain([Value::Null]).collect::<Vec<_>>()}, "reasoning": {"type": "string"}}, "required": ["found", "workflow_name"]}),
                &|m| match (
                    m.get("found").and_then(Value::as_bool),
                    m.get("workflow_name"),
                ) {
                    (Some(false), _) => Ok(()),
                    (Some(true), Some(Value::String(n))) if names.contains(n) => Ok(()),
                    (Some(true), other) => Err(format!(
                        "`workflow_name` must be one of the saved workflows, got {}",
                        other
                            .map(|v| v.to_string())
                            .unwrap_or_else(|| "nothing".into())
                    )),
                    _ => Err("missing boolean field `found`".into()),
                },
            )
            .await?;
        Ok(answer
            .get("workflow_name")
            .and_then(Value::as_str)
            .filter(|_| answer["found"] == json!(true))
            .map(str::to_string))
    }
    .instrument(span.clone())
    .await;
    let reuse = reuse.inspect_err(|e: &PlannerError| fail_step(&span, e))?;
    drop(span);

    let (ir, path, attempts, mut inputs) = match reuse {
        Some(name) => {
            let ir = crate::workflows::load(&config.library, &name)
                .map_err(|e| PlannerError::Model(e.to_string()))?;
            root.record(attr::PLANNER_PATH, "A");
            (ir, PlanPath::A, 0, Map::new())
        }
        None => {
            root.record(attr::PLANNER_PATH, "B");
            let (ir, attempts, params) = generate(request, runtime, ctx).await?;
            (ir, PlanPath::B, attempts, params)
        }
    };

    // 3. Map the request's values onto the workflow's inputs.
    let span = step_span("map_inputs");
    let mapped = async {
        inputs.retain(|k, _| ir.inputs.contains_key(k));
        let missing: Vec<&String> = ir
            .inputs
            .iter()
            .filter(|(k, i)| i.required && i.default.is_none() && !inputs.contains_key(*k))
            .map(|(k, _)| k)
            .collect();
        if missing.is_empty() {
            return Ok(inputs);
        }
        let listing = ir
            .inputs
            .iter()
            .map(|(k, i)| {
                format!(
                    "- {k}: {}, {}, {}",
                    i.value_type.map(|t| t.as_str()).unwrap_or("any"),
                    if i.required { "required" } else { "optional" },
                    i.description.as_deref().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        let answer = ctx
            .ask(
                "map_inputs",
                fill(PROMPT_MAP, &[("inputs", listing)]),
                request.to_string(),
                json!({"type": "object", "properties": {"inputs": {"type": "object", "properties": ir.inputs.keys().map(|k| (k.clone(), json!({}))).collect::<Map<String, Value>>()}}, "required": ["inputs"]}),
                &|m| match m.get("inputs") {
                    Some(Value::Object(_)) => Ok(()),
                    _ => Err("missing object field `inputs`".into()),
                },
            )
            .await?;
        if let Some(Value::Object(found)) = answer.get("inputs") {
            for (k, v) in found {
                if ir.inputs.contains_key(k) && !v.is_null() {
                    inputs.insert(k.clone(), v.clone());
                }
            }
        }
        Ok(inputs)
    }
    .instrument(span.clone())
    .await
    .inspect_err(|e: &PlannerError| fail_step(&span, e))?;
    Ok(Plan {
        reused: ir
            .name()
            .map(str::to_string)
            .filter(|_| path == PlanPath::A),
        ir,
        path,
        inputs: mapped,
        attempts,
    })
}

/// Path B: select nodes, find parameters, generate and validate (≤ 3 attempts), write metadata.
async fn generate(
    request: &str,
    runtime: &Runtime,
    ctx: &Ctx<'_>,
) -> Result<(WorkflowIr, u32, Map<String, Value>), PlannerError> {
    let known: Vec<String> = runtime.registry().names().map(str::to_string).collect();
    let span = step_span("select_nodes");
    let selected = ctx
        .ask(
            "select_nodes",
            fill(PROMPT_SELECT, &[("nodes", node_catalog(runtime, None))]),
            request.to_string(),
            json!({"type": "object", "properties": {"node_types": {"type": "array", "items": {"type": "string", "enum": known}}, "reasoning": {"type": "string"}}, "required": ["node_types"]}),
            &|m| {
                let list = m
                    .get("node_types")
                    .and_then(Value::as_array)
                    .ok_or("missing array field `node_types`")?;
                if list.is_empty() {
                    return Err("`node_types` is empty".into());
                }
                for t in list {
                    let t = t.as_str().ok_or("`node_types` must hold strings")?;
                    if !known.iter().any(|k| k == t) {
                        return Err(format!(
                            "unknown node type `{t}`; known: {}",
                            known.join(", ")
                        ));
                    }
                }
                Ok(())
            },
        )
        .instrument(span.clone())
        .await
        .inspect_err(|e| fail_step(&span, e))?;
    drop(span);
    let types: Vec<String> = selected["node_types"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();

    let span = step_span("extract_params");
    let params = ctx
        .ask(
            "extract_params",
            PROMPT_EXTRACT.to_string(),
            request.to_string(),
            json!({"type": "object", "properties": {"parameters": {"type": "object"}}, "required": ["parameters"]}),
            &|m| match m.get("parameters") {
                Some(Value::Object(_)) => Ok(()),
                _ => Err("missing object field `parameters`".into()),
            },
        )
        .instrument(span.clone())
        .await
        .inspect_err(|e| fail_step(&span, e))?;
    drop(span);
    let params = params
        .get("parameters")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();

    let system = fill(
        PROMPT_GENERATE,
        &[
            (
                "parameters",
                serde_json::to_string_pretty(&params).unwrap_or_default(),
            ),
            ("nodes", node_catalog(runtime, Some(&types))),
        ],
    );
    let mut feedback = String::new();
    let mut last_errors = Vec::new();
    for attempt in 1..=MAX_ATTEMPTS {
        let span = step_span("generate");
        span.record(attr::PLANNER_ATTEMPT, attempt as i64);
        let user = if feedback.is_empty() {
            request.to_string()
        } else {
            format!("{request}\n\nYour previous workflow was rejected by the validator:\n{feedback}\nFix these errors and answer with the whole corrected workflow.")
        };
        let outcome: Result<WorkflowIr, Vec<String>> = async {
            let answer = ctx
                .ask("generate", system.clone(), user, ir_schema(&types), &|_| {
                    Ok(())
                })
                .await
                .map_err(|e| vec![e.to_string()])?;
            let ir = ir::from_value(&Value::Object(answer), "planned workflow")
                .map_err(|e| vec![e.to_string()])?;
            let span = step_span("validate");
            let _e = span.enter();
            let cx = CompileContext {
                params: params.keys().cloned().collect(),
                stdin: Some(false),
                ..Default::default()
            };
            let errors: Vec<String> = runtime
                .check(&ir, "planned workflow", Path::new("."), &cx)
                .into_iter()
                .filter(|d| d.severity == Severity::Error)
                .map(|d| d.to_string())
                .collect();
            if errors.is_empty() {
                Ok(ir)
            } else {
                fail_span(&span, "validation_error", &errors.join("; "));
                Err(errors)
            }
        }
        .instrument(span.clone())
        .await;
        match outcome {
            Ok(mut ir) => {
                let span = step_span("metadata");
                let _e = span.enter();
                if ir.name().is_none() {
                    ir.metadata.insert("name".into(), json!(slug(request)));
                }
                ir.metadata
                    .entry("description")
                    .or_insert_with(|| json!(request));
                ir.metadata.insert("planned_from".into(), json!(request));
                ir.metadata.insert("planner_model".into(), json!(ctx.model));
                ir.metadata.insert(
                    "created".into(),
                    json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                );
                return Ok((ir, attempt, params));
            }
            Err(errors) => {
                fail_span(&span, "planner_invalid_workflow", &errors.join("; "));
                feedback = errors
                    .iter()
                    .map(|e| format!("- {e}"))
                    .collect::<Vec<_>>()
                    .join("\n");
                last_errors = errors;
            }
        }
    }
    Err(PlannerError::Invalid {
        attempts: MAX_ATTEMPTS,
        diagnostics: last_errors,
    })
}

/// The shape of a workflow, for the model's structured output (the validator checks the rest).
fn ir_schema(types: &[String]) -> Value {
    json!({
        "type": "object",
        "properties": {
            "ir_version": {"type": "string", "enum": ["0.1.0"]},
            "metadata": {"type": "object", "properties": {"name": {"type": "string"}, "description": {"type": "string"}}},
            "inputs": {"type": "object"},
            "outputs": {"type": "object"},
            "nodes": {"type": "array", "items": {"type": "object", "properties": {"id": {"type": "string"}, "type": {"type": "string", "enum": types}, "params": {"type": "object"}}, "required": ["id", "type"]}},
            "edges": {"type": "array", "items": {"type": "object", "properties": {"from": {"type": "string"}, "to": {"type": "string"}, "action": {"type": "string"}}, "required": ["from", "to"]}}
        },
        "required": ["ir_version", "nodes"]
    })
}

/// `summarize report.txt into summary.md` → `summarize-report-txt-into`.
fn slug(request: &str) -> String {
    let s: String = request
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let parts: Vec<&str> = s.split('-').filter(|p| !p.is_empty()).take(4).collect();
    if parts.is_empty() {
        "planned-workflow".into()
    } else {
        parts.join("-")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_json_objects() {
        assert_eq!(parse_object(" {\"a\": 1} ").unwrap()["a"], json!(1));
        assert_eq!(
            parse_object("```json\n{\"a\": 2}\n```").unwrap()["a"],
            json!(2)
        );
        assert!(parse_object("Sure! {\"a\": 1}")
            .unwrap_err()
            .contains("not JSON"));
        assert!(parse_object("[1]").unwrap_err().contains("an array"));
    }

    #[test]
    fn prompts_have_their_markers_and_slots() {
        assert!(
            PROMPT_DISCOVERY.starts_with("STEP: discovery")
                && PROMPT_DISCOVERY.contains("{{workflows}}")
        );
        assert!(
            PROMPT_GENERATE.contains("{{nodes}}") && PROMPT_GENERATE.contains("{{parameters}}")
        );
        assert!(PROMPT_MAP.contains("{{inputs}}"));
        assert_eq!(fill("a {{x}} b", &[("x", "1".into())]), "a 1 b");
    }

    #[test]
    fn slugs() {
        assert_eq!(
            slug("Summarize report.txt into summary.md"),
            "summarize-report-txt-into"
        );
        assert_eq!(slug("!!!"), "planned-workflow");
    }

    #[test]
    fn echo_cannot_plan() {
        assert!(matches!(
            PlannerConfig::resolve_model(Some("echo")),
            Err(PlannerError::NoModel)
        ));
        assert_eq!(
            PlannerConfig::resolve_model(Some("gpt-4o-mini")).unwrap(),
            "gpt-4o-mini"
        );
    }
}
