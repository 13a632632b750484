//! The runtime: compiles validated IR into a graph and executes it.
//!
//! Execution follows edges by action from the start node, keeps a shared
//! store where each node's outputs live under its own id, retries failing
//! nodes, runs batches (concurrently when asked, bounded by
//! `max_concurrent`) and nested workflows. Every workflow, node attempt and
//! batch item is a `tracing` span; resolved params, template resolutions and
//! store writes are detail (recorded when `pflow::detail` is enabled at
//! DEBUG), set as attributes and events on those spans' OpenTelemetry side.
//! The runtime never looks at what telemetry does with them.

mod digests;
pub mod estimate;
pub mod template;

use crate::ir::validate::{NodeShape, Severity, Typed, ValidationContext};
use crate::ir::{self, BatchErrorHandling, Diagnostic, IrError, WorkflowIr};
use crate::nodes::{
    NodeContext, NodeError, NodeErrorKind, NodeKind, NodeOutput, Params, Registry, Services,
};
use crate::outcome::{ExitCode, RunStatus};
use crate::telemetry::preview::preview_named;
use crate::telemetry::{attr, compact};
use futures::FutureExt;
use serde_json::{json, Map, Value};
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use template::{CompiledValue, Scope};
use tracing::field::Empty;
use tracing::Instrument;

/// Set by the CLI on SIGINT/SIGTERM: spans ended by cancellation say "interrupted".
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The built-in template for the workflow file's directory.
pub const WORKFLOW_DIR: &str = "${workflow.dir}";

/// Nested workflows deeper than this are refused (a workflow including itself).
pub const MAX_DEPTH: u32 = 10;
/// Batch concurrency when `parallel` is set without `max_concurrent`.
pub const DEFAULT_MAX_CONCURRENT: usize = 10;

/// Why a run did not complete.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Invalid(#[from] IrError),
    #[error("invalid input: {0}")]
    Input(String),
    #[error("node `{node}` failed: {message}")]
    Node {
        node: String,
        node_type: String,
        kind: crate::nodes::NodeErrorKind,
        message: String,
        details: Option<Box<Value>>,
    },
    #[error("step limit reached: {steps} node executions without finishing (last node `{node}`); the workflow probably loops forever. Raise PFLOW_MAX_STEPS if this is intended")]
    StepLimit { steps: usize, node: String },
    #[error("interrupted")]
    Interrupted,
    /// Planning failed (no model, invalid after its attempts, timeout…).
    #[error("planner: {message}")]
    Planner { kind: String, message: String },
    /// The budget guard stopped the run (`--max-cost`, `--max-tokens-total`).
    #[error(transparent)]
    Budget(Box<crate::llm::budget::BudgetExceeded>),
    /// A planned workflow was not approved: nothing of it ran.
    #[error("the planned workflow was not run: {0}")]
    NotApproved(String),
    /// A run to continue (`pflow resume`, `--only`, `--from`) cannot be.
    #[error("{0}")]
    Resume(String),
}

impl RunError {
    /// The documented exit code: 2 for bad input, 1 for a failed run, 3 for a
    /// budget stop, 130 for an interrupt.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            RunError::Invalid(_)
            | RunError::Input(_)
            | RunError::NotApproved(_)
            | RunError::Resume(_) => ExitCode::Invalid,
            RunError::Budget(_) => ExitCode::Budget,
            RunError::Interrupted => ExitCode::Interrupted,
            _ => ExitCode::Failed,
        }
    }

    /// How a run that ended with this error is recorded.
    pub fn status(&self) -> RunStatus {
        match self {
            RunError::Invalid(_)
            | RunError::Input(_)
            | RunError::NotApproved(_)
            | RunError::Resume(_) => RunStatus::Invalid,
            RunError::Budget(_) => RunStatus::BudgetExceeded,
            RunError::Interrupted => RunStatus::Interrupted,
            _ => RunStatus::Failed,
        }
    }

    /// Stable short name for `error.type` and the JSON `error.type`.
    pub fn kind(&self) -> &str {
        match self {
            RunError::Invalid(_) => "validation_error",
            RunError::Input(_) => "input_error",
            RunError::Node { kind, .. } => kind.as_str(),
            RunError::StepLimit { .. } => "step_limit",
            RunError::Interrupted => "interrupted",
            RunError::Planner { kind, .. } => kind,
            RunError::Budget(b) => b.kind(),
            RunError::NotApproved(_) => "plan_not_approved",
            RunError::Resume(_) => "resume_error",
        }
    }
}

/// One compiled node.
#[derive(Debug)]
pub struct CompiledNode {
    pub id: String,
    pub node_type: String,
    /// `node <id>`, made once: formatting it for every attempt's span was
    /// a measurable share of a node's telemetry.
    span_name: String,
    kind: CompiledKind,
    params: Vec<(String, CompiledValue)>,
    batch: Option<CompiledBatch>,
    max_retries: u32,
    wait: Duration,
}

enum CompiledKind {
    Builtin(Arc<dyn crate::nodes::Node>),
    Workflow {
        child: Arc<CompiledWorkflow>,
        param_mapping: Vec<(String, CompiledValue)>,
        output_mapping: Option<Vec<(String, String)>>,
    },
}

impl std::fmt::Debug for CompiledKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CompiledKind::Builtin(n) => write!(f, "Builtin({})", n.spec().name),
            CompiledKind::Workflow { child, .. } => write!(f, "Workflow({})", child.name),
        }
    }
}

#[derive(Debug)]
struct CompiledBatch {
    items: CompiledValue,
    as_name: String,
    parallel: bool,
    max_concurrent: usize,
    error_handling: BatchErrorHandling,
}

/// A workflow ready to run.
#[derive(Debug)]
pub struct CompiledWorkflow {
    pub name: String,
    pub origin: String,
    pub ir: WorkflowIr,
    nodes: Vec<CompiledNode>,
    edges: HashMap<(usize, String), usize>,
    start: usize,
    outputs: Vec<(String, Option<CompiledValue>)>,
    /// Validation warnings (printed, not fatal).
    pub warnings: Vec<Diagnostic>,
    /// `${workflow.dir}`: the workflow file's directory, absolute.
    pub dir: PathBuf,
}

impl CompiledWorkflow {
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The top-level nodes as the checkpoint store sees them: each one's IR
    /// and, for a nested workflow, the child's IR (a changed child changes the node).
    pub fn node_views(&self) -> Vec<crate::checkpoint::NodeView<'_>> {
        // By id, not by a scan per node: a 10,000-node chain spent ~9% of its
        // run comparing ids here.
        let children: HashMap<&str, &WorkflowIr> = self
            .nodes
            .iter()
            .filter_map(|c| match &c.kind {
                CompiledKind::Workflow { child, .. } => Some((c.id.as_str(), &child.ir)),
                CompiledKind::Builtin(_) => None,
            })
            .collect();
        self.ir
            .nodes
            .iter()
            .map(|n| crate::checkpoint::NodeView {
                ir: n,
                child: children.get(n.id.as_str()).copied(),
            })
            .collect()
    }
}

/// Settings for one run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Maximum node executions; default `max(1000, 10 × nodes)`.
    pub max_steps: Option<usize>,
    /// The run's checkpoint: top-level nodes are restored, served from the
    /// memo or run, and each completed one is recorded.
    pub checkpoint: Option<Arc<crate::checkpoint::Session>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            max_steps: std::env::var("PFLOW_MAX_STEPS")
                .ok()
                .and_then(|v| v.parse().ok()),
            checkpoint: None,
        }
    }
}

/// A finished run.
#[derive(Debug, Clone)]
pub struct RunOutput {
    pub outputs: Map<String, Value>,
    pub store: Map<String, Value>,
    pub steps: usize,
    /// The node that ran last (the flow ended after it).
    pub last_node: Option<String>,
    /// Set when the workflow declares no `outputs` and `outputs` are this
    /// node's (the last one run): see [`RunOutput::default_to_last_node`].
    pub result_node: Option<String>,
}

impl RunOutput {
    /// A workflow without declared `outputs` yields the last executed node's outputs.
    pub fn default_to_last_node(&mut self, declares_outputs: bool) {
        if declares_outputs || !self.outputs.is_empty() {
            return;
        }
        let Some(last) = &self.last_node else { return };
        if let Some(Value::Object(m)) = self.store.get(last) {
            self.outputs = m.clone();
            self.result_node = Some(last.clone());
        }
    }
}

/// Compiles and runs workflows with a node registry.
#[derive(Clone)]
pub struct Runtime {
    registry: Arc<Registry>,
    services: Arc<Services>,
    digests: Arc<digests::ParamDigests>,
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime::new(Registry::builtin())
    }
}

/// What the caller knows at compile time beyond the file.
#[derive(Debug, Clone, Default)]
pub struct CompileContext {
    /// Names passed as parameters (`NAME=VALUE`).
    pub params: HashSet<String>,
    /// Whether stdin was piped (`None`: unknown, e.g. `pflow validate`).
    pub stdin: Option<bool>,
    /// The command line is complete: required inputs must be among `params`,
    /// and every name in `params` must be an input or a free `${NAME}`.
    pub command_line: bool,
    /// Skip the required-inputs check of `command_line` (`validate --no-inputs`).
    pub no_inputs: bool,
    /// The values given (for static checks such as an `llm` node's `${model}`).
    pub values: Map<String, Value>,
}

impl CompileContext {
    /// The context of a run or `validate` given these `NAME=VALUE` values.
    pub fn command_line(values: &Map<String, Value>, stdin: Option<bool>) -> Self {
        CompileContext {
            params: values.keys().cloned().collect(),
            stdin,
            command_line: true,
            no_inputs: false,
            values: values.clone(),
        }
    }
}

impl Runtime {
    pub fn new(registry: Registry) -> Self {
        Self::with_services(registry, Services::default())
    }

    /// A runtime whose nodes use these services (price table, LLM endpoints).
    pub fn with_services(registry: Registry, services: Services) -> Self {
        Runtime {
            registry: Arc::new(registry),
            services: Arc::new(services),
            digests: Arc::default(),
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The services nodes (and the planner) use: LLM client, prices, budget.
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// The store takes node `id`'s outputs; what was remembered of the values
    /// there before (their digests) is dropped with them.
    fn put(&self, store: &mut Map<String, Value>, id: &str, outputs: Map<String, Value>) {
        self.digests.forget_root(store, id);
        store.insert(id.to_string(), Value::Object(outputs));
    }

    fn budget_stop(&self) -> Option<Box<crate::llm::budget::BudgetExceeded>> {
        self.services.budget().stopped().map(Box::new)
    }

    fn shape(&self, n: &ir::NodeIr, base_dir: &Path) -> NodeShape {
        let typed = |f: &crate::nodes::Field| Typed::new(f.name, f.ty);
        match self.registry.spec(&n.node_type) {
            None => NodeShape::Unknown {
                known_types: self.registry.names().map(str::to_string).collect(),
            },
            Some(spec) => NodeShape::Known {
                required_params: spec
                    .params
                    .iter()
                    .filter(|p| p.required && p.name != "*")
                    .map(|p| p.name.to_string())
                    .collect(),
                params: if spec.params.iter().any(|p| p.name == "*") {
                    None
                } else {
                    Some(
                        spec.params
                            .iter()
                            .chain(crate::nodes::RUNTIME_PARAMS)
                            .map(typed)
                            .collect(),
                    )
                },
                outputs: if n.node_type == "workflow" {
                    child_outputs(n, base_dir)
                } else if spec.dynamic_outputs {
                    None
                } else {
                    Some(spec.outputs.iter().map(typed).collect())
                },
            },
        }
    }

    /// What validation cannot see from specs alone: every `llm` node's model
    /// resolves to a provider (a literal, the default model, or `${NAME}` of
    /// an input whose value is given or defaulted), and every literal
    /// `transform` filter compiles.
    fn static_checks(&self, ir: &WorkflowIr, cx: &CompileContext, diags: &mut Vec<Diagnostic>) {
        for (i, n) in ir.nodes.iter().enumerate() {
            if !matches!(self.registry.get(&n.node_type), Some(NodeKind::Builtin(b)) if b.spec().name == n.node_type)
            {
                continue;
            }
            match n.node_type.as_str() {
                "llm" => {
                    let (model, source) = match n.params.get("model") {
                        None | Some(Value::Null) => (
                            crate::llm::default_model(),
                            "the default model ($PFLOW_DEFAULT_MODEL)".to_string(),
                        ),
                        Some(Value::String(s)) => match known_text(s, ir, cx) {
                            Some(known) => known,
                            None => continue,
                        },
                        Some(_) => continue, // a type error, reported by validation
                    };
                    if let Err(e) = crate::llm::resolve_model(&model) {
                        diags.push(Diagnostic {
                            severity: Severity::Error,
                            path: format!("nodes[{i}].params.model"),
                            message: format!("node `{}`: {e}", n.id),
                            hint: Some(if source.is_empty() {
                                "name a provider, e.g. `ollama/NAME`, or a known model (`pflow pricing show`)".into()
                            } else {
                                format!("the model comes from {source}")
                            }),
                        });
                    }
                }
                "transform" => {
                    if let Some(Value::String(f)) = n.params.get("filter") {
                        if !crate::ir::template::Template::has_template(f) {
                            if let Err(e) = crate::nodes::check_transform_filter(f) {
                                diags.push(Diagnostic {
                                    severity: Severity::Error,
                                    path: format!("nodes[{i}].params.filter"),
                                    message: format!("node `{}`: {e}", n.id),
                                    hint: Some(
                                        "see the jq manual: https://jqlang.org/manual/".into(),
                                    ),
                                });
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Validates only; returns every diagnostic (including nested workflows).
    pub fn check(
        &self,
        ir: &WorkflowIr,
        origin: &str,
        base_dir: &Path,
        cx: &CompileContext,
    ) -> Vec<Diagnostic> {
        match self.compile_inner(ir.clone(), origin, base_dir, cx, 0) {
            Ok(wf) => wf.warnings.clone(),
            Err(IrError::Invalid { diagnostics, .. }) => diagnostics,
            Err(other) => vec![Diagnostic {
                severity: Severity::Error,
                path: "(file)".into(),
                message: other.to_string(),
                hint: None,
            }],
        }
    }

    /// Validates and compiles. `base_dir` resolves nested `workflow_ref` paths.
    pub fn compile(
        &self,
        ir: WorkflowIr,
        origin: &str,
        base_dir: &Path,
        cx: &CompileContext,
    ) -> Result<Arc<CompiledWorkflow>, IrError> {
        self.compile_inner(ir, origin, base_dir, cx, 0)
            .map(Arc::new)
    }

    fn compile_inner(
        &self,
        ir: WorkflowIr,
        origin: &str,
        base_dir: &Path,
        cx: &CompileContext,
        depth: u32,
    ) -> Result<CompiledWorkflow, IrError> {
        // One shape per node type (a `workflow` node's depends on its child).
        let by_type: RefCell<HashMap<String, Arc<NodeShape>>> = RefCell::default();
        let shape = |n: &ir::NodeIr| {
            if n.node_type == "workflow" {
                return Arc::new(self.shape(n, base_dir));
            }
            if let Some(s) = by_type.borrow().get(&n.node_type) {
                return s.clone();
            }
            let s = Arc::new(self.shape(n, base_dir));
            by_type.borrow_mut().insert(n.node_type.clone(), s.clone());
            s
        };
        let vcx = ValidationContext {
            params: cx.params.clone(),
            stdin: cx.stdin,
            require_inputs: cx.command_line && !cx.no_inputs,
            strict_params: cx.command_line,
            params_path: if depth == 0 {
                "(command line)".into()
            } else {
                "param_mapping".into()
            },
            describe: &shape,
        };
        let mut diags = ir::validate(&ir, &vcx);
        self.static_checks(&ir, cx, &mut diags);
        let invalid = |diagnostics: Vec<Diagnostic>| IrError::Invalid {
            file: origin.to_string(),
            diagnostics,
        };
        if diags.iter().any(|d| d.severity == Severity::Error) {
            return Err(invalid(diags));
        }
        let index: HashMap<&str, usize> = ir
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.as_str(), i))
            .collect();
        let mut nodes = Vec::with_capacity(ir.nodes.len());
        for (i, n) in ir.nodes.iter().enumerate() {
            let path = format!("nodes[{i}]");
            let mut err = |p: String, m: String| {
                diags.push(Diagnostic {
                    severity: Severity::Error,
                    path: p,
                    message: m,
                    hint: None,
                })
            };
            let mut max_retries = 0;
            let mut wait = Duration::ZERO;
            let mut params = Vec::with_capacity(n.params.len());
            for (k, v) in &n.params {
                match k.as_str() {
                    "max_retries" => match v.as_u64() {
                        Some(r) if r <= 100 => max_retries = r as u32,
                        _ => err(
                            format!("{path}.params.max_retries"),
                            format!(
                                "node `{}`: max_retries must be an integer from 0 to 100",
                                n.id
                            ),
                        ),
                    },
                    "wait" => match v.as_f64() {
                        Some(w) if (0.0..=3600.0).contains(&w) => wait = Duration::from_secs_f64(w),
                        _ => err(
                            format!("{path}.params.wait"),
                            format!(
                                "node `{}`: wait must be a number of seconds from 0 to 3600",
                                n.id
                            ),
                        ),
                    },
                    _ if n.node_type == "workflow"
                        && matches!(
                            k.as_str(),
                            "workflow_ref" | "workflow_ir" | "param_mapping" | "output_mapping"
                        ) => {}
                    _ => match CompiledValue::compile(v) {
                        Ok(cv) => params.push((k.clone(), cv)),
                        Err(e) => err(format!("{path}.params.{k}"), e.to_string()),
                    },
                }
            }
            let kind = match self.registry.get(&n.node_type) {
                Some(NodeKind::Builtin(node)) => CompiledKind::Builtin(node.clone()),
                Some(NodeKind::Workflow) => match self.compile_child(n, &path, base_dir, cx, depth)
                {
                    Ok(k) => k,
                    Err(mut ds) => {
                        diags.append(&mut ds);
                        continue;
                    }
                },
                None => continue, // reported by validate
            };
            let batch = match &n.batch {
                None => None,
                Some(b) => match CompiledValue::compile(&b.items) {
                    Ok(items) => Some(CompiledBatch {
                        items,
                        as_name: b.as_name.clone(),
                        parallel: b.parallel,
                        max_concurrent: if b.parallel {
                            b.max_concurrent.unwrap_or(DEFAULT_MAX_CONCURRENT).max(1)
                        } else {
                            1
                        },
                        error_handling: b.error_handling,
                    }),
                    Err(e) => {
                        err(format!("{path}.batch.items"), e.to_string());
                        None
                    }
                },
            };
            nodes.push(CompiledNode {
                id: n.id.clone(),
                span_name: attr::node_span(&n.id),
                node_type: n.node_type.clone(),
                kind,
                params,
                batch,
                max_retries,
                wait,
            });
        }
        let mut outputs = Vec::new();
        for (name, o) in &ir.outputs {
            let src = match &o.source {
                Some(s) => match CompiledValue::compile(&Value::String(s.clone())) {
                    Ok(cv) => Some(cv),
                    Err(e) => {
                        diags.push(Diagnostic {
                            severity: Severity::Error,
                            path: format!("outputs.{name}.source"),
                            message: e.to_string(),
                            hint: None,
                        });
                        None
                    }
                },
                None => None,
            };
            outputs.push((name.clone(), src));
        }
        if diags.iter().any(|d| d.severity == Severity::Error) {
            return Err(invalid(diags));
        }
        let edges = ir
            .edges
            .iter()
            .filter_map(|e| {
                Some((
                    (*index.get(e.from.as_str())?, e.action.clone()),
                    *index.get(e.to.as_str())?,
                ))
            })
            .collect();
        let start = ir
            .start_node
            .as_deref()
            .and_then(|s| index.get(s).copied())
            .unwrap_or(0);
        let name = ir.name().map(str::to_string).unwrap_or_else(|| {
            Path::new(origin)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "workflow".into())
        });
        Ok(CompiledWorkflow {
            name,
            origin: origin.to_string(),
            ir,
            nodes,
            edges,
            start,
            outputs,
            warnings: diags,
            dir: std::path::absolute(base_dir).unwrap_or_else(|_| base_dir.to_path_buf()),
        })
    }

    fn compile_child(
        &self,
        n: &ir::NodeIr,
        path: &str,
        base_dir: &Path,
        _cx: &CompileContext,
        depth: u32,
    ) -> Result<CompiledKind, Vec<Diagnostic>> {
        let d = |p: &str, m: String| {
            vec![Diagnostic {
                severity: Severity::Error,
                path: format!("{path}.params{p}"),
                message: m,
                hint: None,
            }]
        };
        if depth + 1 > MAX_DEPTH {
            return Err(d("", format!("node `{}`: nested workflows deeper than {MAX_DEPTH} levels (does a workflow include itself?)", n.id)));
        }
        let (child_ir, child_origin, child_dir) = match (n.params.get("workflow_ref"), n.params.get("workflow_ir")) {
            (Some(Value::String(r)), None) => {
                let p = base_dir.join(r);
                let ir = ir::load_file(&p).map_err(|e| d(".workflow_ref", format!("node `{}`: {e}", n.id)))?;
                let dir = p.parent().map(Path::to_path_buf).unwrap_or_default();
                (ir, p.display().to_string(), dir)
            }
            (None, Some(v @ Value::Object(_))) => {
                let origin = format!("{path}.params.workflow_ir");
                let ir = ir::from_value(v, &origin).map_err(|e| d(".workflow_ir", e.to_string()))?;
                (ir, origin, base_dir.to_path_buf())
            }
            (Some(_), Some(_)) => return Err(d("", format!("node `{}`: give either workflow_ref or workflow_ir, not both", n.id))),
            _ => return Err(d("", format!("node `{}`: a workflow node needs workflow_ref (a path) or workflow_ir (an object)", n.id))),
        };
        let mapping = |key: &str| -> Result<Option<&Map<String, Value>>, Vec<Diagnostic>> {
            match n.params.get(key) {
                None => Ok(None),
                Some(Value::Object(m)) => Ok(Some(m)),
                Some(_) => Err(d(
                    &format!(".{key}"),
                    format!("node `{}`: {key} must be an object", n.id),
                )),
            }
        };
        let mut param_mapping = Vec::new();
        let mut child_params = HashSet::new();
        if let Some(m) = mapping("param_mapping")? {
            for (k, v) in m {
                child_params.insert(k.clone());
                let cv = CompiledValue::compile(v)
                    .map_err(|e| d(&format!(".param_mapping.{k}"), e.to_string()))?;
                param_mapping.push((k.clone(), cv));
            }
        }
        let output_mapping = match mapping("output_mapping")? {
            None => None,
            Some(m) => {
                let mut out = Vec::new();
                for (k, v) in m {
                    let target = v.as_str().ok_or_else(|| {
                        d(
                            &format!(".output_mapping.{k}"),
                            "output_mapping values must be key names (strings)".into(),
                        )
                    })?;
                    if !child_ir.outputs.contains_key(k) {
                        return Err(d(
                            &format!(".output_mapping.{k}"),
                            format!("node `{}`: child workflow has no output `{k}`", n.id),
                        ));
                    }
                    out.push((k.clone(), target.to_string()));
                }
                Some(out)
            }
        };
        let child_cx = CompileContext {
            params: child_params,
            stdin: Some(false),
            command_line: true,
            no_inputs: false,
            values: Map::new(),
        };
        let child = self
            .compile_inner(child_ir, &child_origin, &child_dir, &child_cx, depth + 1)
            .map_err(|e| match e {
                IrError::Invalid { file, diagnostics } => diagnostics
                    .into_iter()
                    .map(|mut dg| {
                        dg.message = format!(
                            "in nested workflow `{file}` (node `{}`): {}",
                            n.id, dg.message
                        );
                        dg
                    })
                    .collect(),
                other => d("", other.to_string()),
            })?;
        Ok(CompiledKind::Workflow {
            child: Arc::new(child),
            param_mapping,
            output_mapping,
        })
    }

    /// Checks and completes workflow inputs from the given values and defaults.
    pub fn prepare_inputs(
        &self,
        wf: &CompiledWorkflow,
        given: Map<String, Value>,
    ) -> Result<Map<String, Value>, RunError> {
        let mut store = given;
        let mut problems = Vec::new();
        for (name, spec) in &wf.ir.inputs {
            match store.get(name) {
                Some(v) => {
                    if let Some(t) = spec.value_type {
                        let coerced = coerce(v, t);
                        match coerced {
                            Some(c) => {
                                store.insert(name.clone(), c);
                            }
                            None => problems.push(format!(
                                "input `{name}` must be of type {}, got {}",
                                t.as_str(),
                                crate::nodes::params_type_name(v)
                            )),
                        }
                    }
                }
                None => match &spec.default {
                    // A default may name a path next to the workflow file.
                    Some(Value::String(d)) if d.contains(WORKFLOW_DIR) => {
                        let dir = wf.dir.display().to_string();
                        store.insert(name.clone(), Value::String(d.replace(WORKFLOW_DIR, &dir)));
                    }
                    Some(d) => {
                        store.insert(name.clone(), d.clone());
                    }
                    None if spec.required => {
                        let desc = spec
                            .description
                            .as_deref()
                            .map(|d| format!(" ({d})"))
                            .unwrap_or_default();
                        problems.push(format!(
                            "missing required input `{name}`{desc}: pass it as `{name}=VALUE`"
                        ));
                    }
                    None => {
                        store.insert(name.clone(), Value::Null);
                    }
                },
            }
        }
        if problems.is_empty() {
            Ok(store)
        } else {
            Err(RunError::Input(problems.join("; ")))
        }
    }

    /// Runs a compiled workflow (inputs already prepared) under a `invoke_workflow` span.
    pub async fn run(
        &self,
        wf: Arc<CompiledWorkflow>,
        inputs: Map<String, Value>,
        opts: &RunOptions,
    ) -> Result<RunOutput, RunError> {
        self.run_at(wf, inputs, opts.clone(), 0, String::new())
            .await
    }

    fn run_at(
        &self,
        wf: Arc<CompiledWorkflow>,
        inputs: Map<String, Value>,
        opts: RunOptions,
        depth: u32,
        prefix: String,
    ) -> futures::future::BoxFuture<'static, Result<RunOutput, RunError>> {
        let span = tracing::info_span!(
            target: "pflow::workflow",
            "invoke_workflow",
            otel.name = %attr::workflow_span(&wf.name),
            { attr::GEN_AI_OPERATION_NAME } = "invoke_workflow",
            { attr::GEN_AI_WORKFLOW_NAME } = %wf.name,
            { attr::WORKFLOW_NAME } = %wf.name,
            { attr::WORKFLOW_FILE } = %wf.origin,
            { attr::WORKFLOW_DEPTH } = depth as i64,
            { attr::WORKFLOW_NODE_COUNT } = wf.nodes.len() as i64,
            { attr::WORKFLOW_STEPS } = Empty,
            { attr::WORKFLOW_STATUS } = Empty,
            { attr::ERROR_TYPE } = Empty,
            otel.status_description = Empty,
        );
        let rt = self.clone();
        let guard = SpanOutcome::new(span.clone(), attr::WORKFLOW_STATUS);
        async move {
            let r = rt.execute(&wf, inputs, &opts, depth, &prefix).await;
            match &r {
                Ok(out) => {
                    guard.span.record(attr::WORKFLOW_STEPS, out.steps as i64);
                    guard.ok();
                }
                // Each failure's `exception` event was recorded where it happened
                // (a node, or `execute` for the workflow's own step limit and budget
                // stops); the workflow span is marked failed once, here.
                Err(e) => guard.failed_below(e.kind(), &e.to_string()),
            }
            r
        }
        .instrument(span)
        .boxed()
    }

    async fn execute(
        &self,
        wf: &Arc<CompiledWorkflow>,
        inputs: Map<String, Value>,
        opts: &RunOptions,
        depth: u32,
        prefix: &str,
    ) -> Result<RunOutput, RunError> {
        // The workflow's span, which `run_at` entered: its nodes name it as
        // their parent, found once here rather than by every layer per node.
        let parent = tracing::Span::current().id();
        let mut store = inputs;
        let _forget = digests::ForgetStore::new(&self.digests, &store);
        let builtin = ir::validate::WORKFLOW_ROOT;
        if !wf.ir.inputs.contains_key(builtin)
            && !store.contains_key(builtin)
            && !wf.nodes.iter().any(|n| n.id == builtin)
        {
            store.insert(
                builtin.to_string(),
                json!({"dir": wf.dir.display().to_string()}),
            );
        }
        let max_steps = opts
            .max_steps
            .unwrap_or_else(|| (wf.nodes.len() * 10).max(1000));
        let mut current = wf.start;
        let mut steps = 0usize;
        let mut last_node: Option<String>;
        // Checkpoints hold top-level nodes (a nested workflow is one unit).
        let ck = opts.checkpoint.as_ref().filter(|_| depth == 0);
        loop {
            // Spend past a limit (e.g. the planner's, or the previous node's call) ends the run here.
            if let Some(stop) = self.budget_stop() {
                crate::telemetry::exception_event(
                    &tracing::Span::current(),
                    stop.kind(),
                    &stop.to_string(),
                );
                return Err(RunError::Budget(stop));
            }
            let node = &wf.nodes[current];
            steps += 1;
            if steps > max_steps {
                let e = RunError::StepLimit {
                    steps: max_steps,
                    node: format!("{prefix}{}", node.id),
                };
                crate::telemetry::exception_event(
                    &tracing::Span::current(),
                    e.kind(),
                    &e.to_string(),
                );
                return Err(e);
            }
            let path = format!("{prefix}{}", node.id);
            last_node = Some(node.id.clone());
            let mut memo_key = None;
            if let Some(ck) = ck {
                if ck.stop_before(&node.id) {
                    break;
                }
                let reuse = match ck.restore(&node.id) {
                    Ok(Some(r)) => Some(r),
                    Ok(None) => {
                        memo_key = ck.memo_key(&node.id, &store);
                        memo_key.as_deref().and_then(|k| ck.memo_hit(k))
                    }
                    Err(e) => return Err(RunError::Resume(e.to_string())),
                };
                if let Some(r) = reuse {
                    {
                        let span = node_span(node, parent.clone(), &path, ROLE_NODE, 1, 1, None);
                        crate::checkpoint::mark_span(&span, &r);
                    }
                    ck.completed(&node.id, None, &r.outputs, &r.action, memo_key, Some(&r));
                    let action = r.action;
                    self.put(&mut store, &node.id, r.outputs);
                    match wf.edges.get(&(current, action)) {
                        Some(next) => current = *next,
                        None => break,
                    }
                    continue;
                }
            }
            let result = if node.batch.is_some() {
                self.exec_batch(wf, node, &store, &path, opts, depth).await
            } else {
                self.exec_attempts(
                    wf,
                    node,
                    parent.clone(),
                    &store,
                    &[],
                    &path,
                    ROLE_NODE,
                    None,
                    opts,
                    depth,
                )
                .await
            };
            let action = match result {
                Ok(Done { out, span }) => {
                    let action = out.action.unwrap_or_else(|| "default".to_string());
                    if let Some(ck) = ck {
                        ck.completed(&node.id, Some(&span), &out.outputs, &action, memo_key, None);
                    }
                    self.put(&mut store, &node.id, out.outputs);
                    action
                }
                Err(Failure::Interrupted) => return Err(RunError::Interrupted),
                Err(Failure::Budget(stop)) => return Err(RunError::Budget(stop)),
                Err(Failure::Node(err)) => {
                    if wf.edges.contains_key(&(current, "error".to_string())) {
                        let mut ns = match err.details.as_deref() {
                            Some(Value::Object(m)) => m.clone(),
                            _ => Map::new(),
                        };
                        ns.insert(
                            "error".into(),
                            json!({"message": err.message, "type": err.kind}),
                        );
                        self.put(&mut store, &node.id, ns);
                        "error".to_string()
                    } else {
                        return Err(RunError::Node {
                            node: path,
                            node_type: node.node_type.clone(),
                            kind: err.kind,
                            message: err.message,
                            details: err.details,
                        });
                    }
                }
            };
            match wf.edges.get(&(current, action)) {
                Some(next) => current = *next,
                None => break,
            }
        }
        // The last node's call may have crossed a limit: still a budget stop.
        if let Some(stop) = self.budget_stop() {
            crate::telemetry::exception_event(
                &tracing::Span::current(),
                stop.kind(),
                &stop.to_string(),
            );
            return Err(RunError::Budget(stop));
        }
        let outputs = collect_outputs(wf, &store);
        Ok(RunOutput {
            outputs,
            store,
            steps,
            last_node,
            result_node: None,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn exec_attempts(
        &self,
        wf: &Arc<CompiledWorkflow>,
        node: &CompiledNode,
        parent: Option<tracing::Id>,
        store: &Map<String, Value>,
        locals: &[(&str, &Value)],
        path: &str,
        role: &'static str,
        batch_index: Option<usize>,
        opts: &RunOptions,
        depth: u32,
    ) -> Result<Done, Failure> {
        let max_attempts = node.max_retries + 1;
        let mut attempt = 1;
        loop {
            // No node starts once the budget guard has stopped the run.
            if let Some(stop) = self.budget_stop() {
                return Err(Failure::Budget(stop));
            }
            let resolved = resolve_params(node, store, locals, &self.digests);
            let preview = resolved.as_ref().ok().and_then(|r| r.preview.as_deref());
            let span = node_span(
                node,
                parent.clone(),
                path,
                role,
                attempt,
                max_attempts,
                preview,
            );
            if let Some(i) = batch_index {
                crate::telemetry::set_attribute(&span, attr::BATCH_INDEX, i as i64);
            }
            // The guard owns the span; everything else borrows it (each
            // clone's drop walks every layer).
            let guard = SpanOutcome::node(span);
            let span = &guard.span;
            let mut shown = None;
            let mut detail = false;
            // The span is named, not entered: entering and leaving it costs
            // every layer a lookup (a few % of a node's telemetry).
            let result = match resolved {
                Err(e) => Err(e),
                Ok(mut r) => {
                    r.record(span);
                    detail = r.preview.is_some();
                    shown = r.shown;
                    let fut = self.run_node(wf, node, r.params, store, locals, path, opts, depth);
                    // Entered around each poll of the node's future.
                    let fut = crate::telemetry::resources::metered(span, fut);
                    match std::panic::AssertUnwindSafe(fut).catch_unwind().await {
                        Ok(r) => r,
                        Err(panic) => Err(NodeError::new(
                            "panic",
                            format!("node panicked: {}", panic_message(&panic)),
                        )),
                    }
                }
            };
            match result {
                Ok(out) => {
                    // `default` is what an absent action means (telemetry::compact).
                    if let Some(action) = out
                        .action
                        .as_deref()
                        .filter(|a| *a != compact::DEFAULT_ACTION)
                    {
                        crate::telemetry::set_attribute(
                            span,
                            attr::NODE_ACTION,
                            action.to_string(),
                        );
                    }
                    let ns = match batch_index {
                        Some(i) => format!("{}.results[{i}]", node.id),
                        None => node.id.clone(),
                    };
                    record_store_writes(span, detail, &ns, &out.outputs, shown.as_ref());
                    guard.ok();
                    return Ok(Done {
                        out,
                        span: guard.into_span(),
                    });
                }
                Err(err) => {
                    if INTERRUPTED.load(Ordering::Relaxed) {
                        return Err(Failure::Interrupted);
                    }
                    let retry = attempt < max_attempts
                        && err.kind != NodeErrorKind::TemplateError
                        && err.kind != NodeErrorKind::Interrupted;
                    if err.kind == NodeErrorKind::Interrupted {
                        return Err(Failure::Interrupted);
                    }
                    if err.recorded {
                        guard.failed_below(err.kind.as_str(), &err.message);
                    } else {
                        guard.fail(err.kind.as_str(), &err.message);
                    }
                    if err.kind.is_budget() {
                        if let Some(stop) = self.budget_stop() {
                            return Err(Failure::Budget(stop));
                        }
                    }
                    if !retry {
                        return Err(Failure::Node(err));
                    }
                    tracing::info!(parent: span, { { attr::NODE_NEXT_ATTEMPT } = (attempt + 1) as i64, { attr::NODE_WAIT_S } = node.wait.as_secs_f64() }, "{}", attr::EVENT_RETRY);
                    // Ends the attempt's span before the wait.
                    drop(guard);
                    if !node.wait.is_zero() {
                        tokio::time::sleep(node.wait).await;
                    }
                    attempt += 1;
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_node(
        &self,
        wf: &Arc<CompiledWorkflow>,
        node: &CompiledNode,
        params: Map<String, Value>,
        store: &Map<String, Value>,
        locals: &[(&str, &Value)],
        path: &str,
        opts: &RunOptions,
        depth: u32,
    ) -> Result<NodeOutput, NodeError> {
        let _ = wf;
        match &node.kind {
            CompiledKind::Builtin(n) => {
                let ctx = NodeContext {
                    node_id: node.id.clone(),
                    path: path.to_string(),
                    services: self.services.clone(),
                };
                n.run(&ctx, Params(params)).await
            }
            CompiledKind::Workflow {
                child,
                param_mapping,
                output_mapping,
            } => {
                let scope = Scope { store, locals };
                let mut inputs = Map::new();
                for (k, cv) in param_mapping {
                    let v = cv
                        .resolve(&scope, &mut |t, v| {
                            template_event(&format!("param_mapping.{k}"), t, v)
                        })
                        .map_err(|e| {
                            NodeError::new("template_error", format!("param_mapping `{k}`: {e}"))
                        })?;
                    inputs.insert(k.clone(), v);
                }
                let inputs = self.prepare_inputs(child, inputs).map_err(|e| {
                    NodeError::new(
                        "input_error",
                        format!("child workflow `{}`: {e}", child.name),
                    )
                })?;
                let out = self
                    .run_at(
                        child.clone(),
                        inputs,
                        opts.clone(),
                        depth + 1,
                        format!("{path}/"),
                    )
                    .await
                    .map_err(|e| match e {
                        RunError::Interrupted => NodeError::new("interrupted", "interrupted"),
                        RunError::Node {
                            node,
                            kind,
                            message,
                            details,
                            ..
                        } => NodeError::new(
                            kind,
                            format!(
                                "child workflow `{}` failed at node `{node}`: {message}",
                                child.name
                            ),
                        )
                        .with_details(json!({"child_node": node, "details": details}))
                        .recorded(),
                        other => NodeError::new(
                            other.kind().to_string(),
                            format!("child workflow `{}`: {other}", child.name),
                        )
                        .recorded(),
                    })?;
                let outputs = match output_mapping {
                    None => out.outputs,
                    Some(m) => m
                        .iter()
                        .map(|(from, to)| {
                            (
                                to.clone(),
                                out.outputs.get(from).cloned().unwrap_or(Value::Null),
                            )
                        })
                        .collect(),
                };
                Ok(NodeOutput::new(outputs))
            }
        }
    }

    async fn exec_batch(
        &self,
        wf: &Arc<CompiledWorkflow>,
        node: &CompiledNode,
        store: &Map<String, Value>,
        path: &str,
        opts: &RunOptions,
        depth: u32,
    ) -> Result<Done, Failure> {
        let Some(batch) = &node.batch else {
            return Err(Failure::Node(NodeError::new(
                "internal",
                "batch settings missing",
            )));
        };
        // Its parent is the current span (the workflow's, or an outer batch item's).
        let span = node_span(
            node,
            tracing::Span::current().id(),
            path,
            ROLE_BATCH,
            1,
            1,
            None,
        );
        crate::telemetry::set_attribute(&span, attr::BATCH_PARALLEL, batch.parallel);
        crate::telemetry::set_attribute(
            &span,
            attr::BATCH_MAX_CONCURRENT,
            batch.max_concurrent as i64,
        );
        let guard = SpanOutcome::node(span.clone());
        let items = {
            let _e = span.enter();
            let scope = Scope { store, locals: &[] };
            batch
                .items
                .resolve(&scope, &mut |t, v| template_event("batch.items", t, v))
                .map_err(|e| NodeError::new("template_error", format!("batch items: {e}")))
                .and_then(|v| match v {
                    Value::Array(a) => Ok(a),
                    Value::String(s) => match serde_json::from_str::<Value>(&s) {
                        Ok(Value::Array(a)) => Ok(a),
                        _ => Err(NodeError::new("batch_items", "batch items must resolve to an array (got a string that is not a JSON array)")),
                    },
                    other => Err(NodeError::new("batch_items", format!("batch items must resolve to an array, got {}", crate::nodes::params_type_name(&other)))),
                })
        };
        let items = match items {
            Ok(i) => i,
            Err(e) => {
                guard.fail(e.kind.as_str(), &e.message);
                return Err(Failure::Node(e));
            }
        };
        span.record(attr::BATCH_SIZE, items.len() as i64);
        let run_item = |i: usize| {
            let item_path = format!("{path}[{i}]");
            let item = &items[i];
            let idx = json!(i);
            let parent = span.id();
            let span = span.clone();
            async move {
                let locals = [(batch.as_name.as_str(), item), ("__index__", &idx)];
                let r = self
                    .exec_attempts(
                        wf,
                        node,
                        parent,
                        store,
                        &locals,
                        &item_path,
                        ROLE_BATCH_ITEM,
                        Some(i),
                        opts,
                        depth,
                    )
                    .await;
                (i, r)
            }
            .instrument(span)
        };
        let mut results: Vec<Option<Result<NodeOutput, NodeError>>> =
            (0..items.len()).map(|_| None).collect();
        let fail_fast = batch.error_handling == BatchErrorHandling::FailFast;
        let mut first_error: Option<NodeError> = None;
        let mut budget_stop = None;
        {
            use futures::StreamExt;
            let mut stream = futures::stream::iter(0..items.len())
                .map(run_item)
                .buffer_unordered(batch.max_concurrent);
            while let Some((i, r)) = stream.next().await {
                match r {
                    Ok(done) => results[i] = Some(Ok(done.out)),
                    Err(Failure::Interrupted) => return Err(Failure::Interrupted),
                    // Calls already in flight were within the budget: let them
                    // finish (they are billed either way); items not started yet
                    // are refused at once.
                    Err(Failure::Budget(stop)) => budget_stop = budget_stop.or(Some(stop)),
                    Err(Failure::Node(e)) => {
                        if fail_fast {
                            // Dropping the stream cancels the items still running.
                            first_error = Some(NodeError {
                                message: format!("item {i}: {}", e.message),
                                ..e
                            });
                            break;
                        }
                        results[i] = Some(Err(e));
                    }
                }
            }
        }
        if let Some(stop) = budget_stop {
            // A refused call was recorded on its item; a limit crossed by a
            // finished call stops the batch here.
            if stop.stopped == crate::llm::budget::Stopped::AfterCall {
                guard.fail(stop.kind(), &stop.to_string());
            } else {
                guard.failed_below(stop.kind(), &stop.to_string());
            }
            return Err(Failure::Budget(stop));
        }
        if let Some(e) = first_error {
            guard.failed_below(e.kind.as_str(), &e.message);
            return Err(Failure::Node(e));
        }
        let mut failed = 0;
        let mut errors = Vec::new();
        let list: Vec<Value> = results
            .into_iter()
            .enumerate()
            .map(|(i, r)| match r {
                Some(Ok(out)) => Value::Object(out.outputs),
                Some(Err(e)) => {
                    failed += 1;
                    let ev = json!({"index": i, "message": e.message, "type": e.kind});
                    errors.push(ev.clone());
                    json!({"error": ev})
                }
                None => Value::Null,
            })
            .collect();
        span.record(attr::BATCH_FAILED, failed as i64);
        let mut outputs = Map::new();
        outputs.insert("results".into(), Value::Array(list));
        outputs.insert("count".into(), json!(items.len()));
        outputs.insert("failed".into(), json!(failed));
        if !errors.is_empty() {
            outputs.insert("errors".into(), Value::Array(errors));
        }
        let detail = tracing::enabled!(target: "pflow::detail", tracing::Level::DEBUG);
        record_store_writes(&span, detail, &node.id, &outputs, None);
        guard.ok();
        Ok(Done {
            out: NodeOutput::new(outputs),
            span,
        })
    }
}

/// The span of one node attempt, batch item or batch (all fields declared up
/// front, as tracing requires; those never recorded do not appear), child of
/// `parent` (the workflow's, the batch's or an outer item's span, alive while
/// it runs): naming it saves every layer a lookup of the current span.
#[allow(clippy::too_many_arguments)]
fn node_span(
    node: &CompiledNode,
    parent: Option<tracing::Id>,
    path: &str,
    role: &'static str,
    attempt: u32,
    max_attempts: u32,
    params: Option<&str>,
) -> tracing::Span {
    tracing::info_span!(
        target: "pflow::node",
        parent: parent,
        "node",
        otel.name = node.span_name.as_str(),
        { attr::NODE_ID } = node.id.as_str(),
        { attr::NODE_TYPE } = node.node_type.as_str(),
        // Known before the span is made (see `Resolved`).
        { attr::NODE_PARAMS } = params,
        // Defaults are left out (path = id, role `node`, attempt 1 of 1):
        // every reader puts them back (telemetry::compact). Besides, only
        // what the progress layer reads is declared; the other node
        // attributes (action, batch settings, origin, reuse, resources) go
        // to the OpenTelemetry span alone (`telemetry::set_attribute`).
        { attr::NODE_PATH } = (path != node.id).then_some(path),
        { attr::NODE_ROLE } = (role != ROLE_NODE).then_some(role),
        { attr::NODE_ATTEMPT } = (attempt != 1).then_some(attempt as i64),
        { attr::NODE_MAX_ATTEMPTS } = (max_attempts != 1).then_some(max_attempts as i64),
        { attr::BATCH_SIZE } = Empty,
        { attr::BATCH_FAILED } = Empty,
        { attr::NODE_STATUS } = Empty,
        { attr::ERROR_TYPE } = Empty,
        otel.status_description = Empty,
    )
}

const ROLE_NODE: &str = "node";
const ROLE_BATCH: &str = "batch";
const ROLE_BATCH_ITEM: &str = "batch_item";

/// A node that succeeded, with the span of its successful attempt (or batch).
struct Done {
    out: NodeOutput,
    span: tracing::Span,
}

enum Failure {
    Node(NodeError),
    Interrupted,
    /// The budget guard stopped the run: no error edge, no retry.
    Budget(Box<crate::llm::budget::BudgetExceeded>),
}

/// What a whole `pflow.node.params` preview shows, param by param, for the
/// value events to leave out a preview that only repeats one: a literal
/// param borrowed from the compiled node, a resolved one copied, a hidden
/// one as `None` (the preview shows the redaction marker).
struct Shown<'n>(Vec<(&'n str, Option<Cow<'n, Value>>)>);

impl Shown<'_> {
    /// The text param `key` shows ([`compact::value_text`]).
    fn text(&self, key: &str) -> Option<Cow<'_, str>> {
        let (_, v) = self.0.iter().find(|(k, _)| *k == key)?;
        Some(match v {
            Some(v) => compact::value_text(v),
            None => Cow::Borrowed(crate::telemetry::redact::REDACTED),
        })
    }
}

/// A node's params resolved for one attempt, with what its span records of
/// them: the preview is known before the span is made, so the span is made
/// with it (a field recorded at creation costs a visit, one set later a
/// lookup of the span in every layer).
struct Resolved<'n> {
    params: Map<String, Value>,
    /// `pflow.node.params` (detail only).
    preview: Option<String>,
    /// `pflow.node.params_digest`, beside a cut preview.
    digest: Option<String>,
    shown: Option<Shown<'n>>,
    /// Template resolutions, recorded once the span is made.
    templates: Vec<(&'n str, String, crate::telemetry::preview::Preview)>,
}

impl Resolved<'_> {
    /// Records on `span` what its making did not: the digest and the
    /// template resolutions (after the preview, which decides what they repeat).
    fn record(&mut self, span: &tracing::Span) {
        if let Some(d) = self.digest.take() {
            crate::telemetry::set_attribute(span, attr::NODE_PARAMS_DIGEST, d);
        }
        for (k, template, p) in std::mem::take(&mut self.templates) {
            let shown = self.shown.as_ref().and_then(|s| s.text(k));
            let shows = if crate::telemetry::preview::repeats(&p, shown.as_deref()) {
                Shows::Param { len: p.text.len() }
            } else {
                Shows::Own(p)
            };
            value_event(span, None, Some((k, &template)), shows);
        }
    }
}

fn resolve_params<'n>(
    node: &'n CompiledNode,
    store: &Map<String, Value>,
    locals: &[(&str, &Value)],
    digests: &digests::ParamDigests,
) -> Result<Resolved<'n>, NodeError> {
    let scope = Scope { store, locals };
    let detail = tracing::enabled!(target: "pflow::detail", tracing::Level::DEBUG);
    let mut params = Map::with_capacity(node.params.len());
    let mut templates = Vec::new();
    for (k, cv) in &node.params {
        let v = cv
            .resolve(&scope, &mut |t, v| {
                if detail {
                    templates.push((k.as_str(), template_text(t), preview_named(k, v)));
                }
            })
            .map_err(|e| NodeError::new("template_error", format!("param `{k}`: {e}")))?;
        params.insert(k.clone(), v);
    }
    let mut out = Resolved {
        params,
        preview: None,
        digest: None,
        shown: None,
        templates,
    };
    if !detail {
        return Ok(out);
    }
    let params = &out.params;
    let p = crate::telemetry::preview::preview_map(params);
    // A whole preview is the value itself: a digest would only repeat it.
    if p.truncated {
        // A large store value several nodes take whole is hashed once.
        let whole_ref = |k: &str| {
            let (_, cv) = node.params.iter().find(|(name, _)| name == k)?;
            let CompiledValue::Template(t) = cv else {
                return None;
            };
            t.single_reference()
                .filter(|r| !locals.iter().any(|(name, _)| *name == r.root))
        };
        out.digest = Some(crate::telemetry::preview::digest_map_with(
            params,
            |k, v| {
                let hash = crate::telemetry::preview::value_digest;
                match whole_ref(k) {
                    Some(r) => digests.get_or(store, r, v, hash),
                    None => hash(v),
                }
            },
        ));
    } else {
        // What the preview shows, from the params rather than by parsing
        // the preview back (a third of a node's detail cost): the values
        // it hides are hidden here too. A nested hidden value makes its
        // param's text differ from any event preview: that event keeps
        // its own.
        let pair = crate::telemetry::redact::is_secret_pair(params);
        // `params` holds exactly `node.params`' names (unique: compiled from
        // a JSON object), inserted in their order into an insertion-ordered
        // map above: walked side by side, no name is hashed again.
        let m = node.params.iter().zip(params.values()).map(|((k, cv), v)| {
            let v = if crate::telemetry::redact::hides_value(pair, k, v) {
                None
            } else if let CompiledValue::Literal(lit) = cv {
                Some(Cow::Borrowed(lit))
            } else {
                Some(Cow::Owned(v.clone()))
            };
            (k.as_str(), v)
        });
        out.shown = Some(Shown(m.collect()));
    }
    out.preview = Some(p.text);
    Ok(out)
}

fn template_event(param: &str, t: &crate::ir::template::Template, v: &Value) {
    if !tracing::enabled!(target: "pflow::detail", tracing::Level::DEBUG) {
        return;
    }
    value_event(
        &tracing::Span::current(),
        None,
        Some((param, &template_text(t))),
        Shows::Own(preview_named(param, v)),
    );
}

/// What a value event shows of its value.
enum Shows {
    Own(crate::telemetry::preview::Preview),
    /// Nothing: its whole preview, `len` bytes, only repeats a param of the
    /// span's whole params preview (every reader puts it back).
    Param {
        len: usize,
    },
}

/// A `pflow.template.resolved` (`template`: the param and its text) or
/// `pflow.store.write` (`store_key`) event, in compact form: a size equal
/// to the preview's length, a `false` truncation flag and a preview that
/// repeats a param are left out (telemetry::compact).
fn value_event(
    parent: &tracing::Span,
    store_key: Option<String>,
    template: Option<(&str, &str)>,
    shows: Shows,
) {
    let event = match template {
        Some(_) => attr::EVENT_TEMPLATE_RESOLVED,
        None => attr::EVENT_STORE_WRITE,
    };
    let (preview, size, truncated) = match shows {
        Shows::Own(p) => {
            let size = (p.truncated || p.size != p.text.len() || compact::value_sizes_kept())
                .then_some(p.size);
            (Some(p.text), size, p.truncated)
        }
        Shows::Param { len } => (None, compact::value_sizes_kept().then_some(len), false),
    };
    // Straight onto the OpenTelemetry span, in the order the `tracing` event
    // recorded them: as an event it went through every layer, and the
    // OpenTelemetry layer added level and target attributes only to drop them.
    use opentelemetry::KeyValue;
    let mut attrs = Vec::with_capacity(5);
    match template {
        Some((param, text)) => {
            attrs.push(KeyValue::new(attr::PARAM, param.to_string()));
            attrs.push(KeyValue::new(attr::TEMPLATE, text.to_string()));
        }
        None => {
            if let Some(k) = store_key {
                attrs.push(KeyValue::new(attr::STORE_KEY, k));
            }
        }
    }
    if let Some(text) = preview {
        attrs.push(KeyValue::new(attr::VALUE_PREVIEW, text));
    }
    if let Some(size) = size {
        attrs.push(KeyValue::new(attr::VALUE_SIZE, size as i64));
    }
    if truncated {
        attrs.push(KeyValue::new(attr::VALUE_TRUNCATED, true));
    }
    crate::telemetry::add_event(parent, event, attrs);
}

fn template_text(t: &crate::ir::template::Template) -> String {
    use crate::ir::template::Part;
    t.parts
        .iter()
        .map(|p| match p {
            Part::Literal(s) => s.replace("${", "$${"),
            Part::Ref(r) => r.text.clone(),
        })
        .collect()
}

/// The `pflow.store.write` events of a node's outputs, when its params'
/// resolution found detail recorded (`detail`).
fn record_store_writes(
    span: &tracing::Span,
    detail: bool,
    node_id: &str,
    outputs: &Map<String, Value>,
    shown: Option<&Shown<'_>>,
) {
    if !detail {
        return;
    }
    for (k, v) in outputs {
        let mut key = String::with_capacity(node_id.len() + 1 + k.len());
        key.push_str(node_id);
        key.push('.');
        key.push_str(k);
        let param = compact::event_param(attr::EVENT_STORE_WRITE, None, Some(&key));
        let shown = shown.zip(param).and_then(|(s, p)| s.text(p));
        let shows = match crate::telemetry::preview::preview_unless_shown(k, v, shown.as_deref()) {
            Some(p) => Shows::Own(p),
            None => Shows::Param {
                len: shown.map_or(0, |t| t.len()),
            },
        };
        value_event(span, Some(key), None, shows);
    }
}

fn collect_outputs(wf: &CompiledWorkflow, store: &Map<String, Value>) -> Map<String, Value> {
    let scope = Scope { store, locals: &[] };
    let mut out = Map::new();
    for (name, src) in &wf.outputs {
        let v = match src {
            Some(cv) => cv.resolve(&scope, &mut |t, v| template_event(&format!("outputs.{name}"), t, v)).unwrap_or_else(|e| {
                tracing::warn!({ { attr::OUTPUT } = %name, { attr::REASON } = %e }, "{}", attr::EVENT_OUTPUT_UNRESOLVED);
                Value::Null
            }),
            // No source: the key of that name in the last node namespace that has it.
            None => wf.nodes.iter().rev().find_map(|n| store.get(&n.id)?.get(name).cloned()).unwrap_or(Value::Null),
        };
        // A declared type turns JSON text (e.g. a command's stdout) into the value it holds.
        let v = match wf.ir.outputs.get(name).and_then(|o| o.value_type) {
            Some(t) => coerce(&v, t).unwrap_or(v),
            None => v,
        };
        out.insert(name.clone(), v);
    }
    out
}

/// Accepts CLI strings for numbers and booleans ("3" for an integer input).
fn coerce(v: &Value, t: ir::ValueType) -> Option<Value> {
    if t.matches(v) {
        return Some(v.clone());
    }
    if t == ir::ValueType::String {
        // `name=123` on the command line parses as a number; a string input wants the text.
        return match v {
            Value::Number(_) | Value::Bool(_) => Some(Value::String(v.to_string())),
            _ => None,
        };
    }
    let parsed: Value = serde_json::from_str(v.as_str()?).ok()?;
    t.matches(&parsed).then_some(parsed)
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".into()
    }
}

/// Ends a span with a status. Dropped without a verdict (the future was
/// cancelled: Ctrl-C, fail-fast batch), it marks the span interrupted or cancelled.
struct SpanOutcome {
    span: tracing::Span,
    status_field: &'static str,
    /// Node spans leave a successful status out (`ok` is what its absence means).
    record_ok: bool,
    done: std::cell::Cell<bool>,
}

impl SpanOutcome {
    fn new(span: tracing::Span, status_field: &'static str) -> Self {
        SpanOutcome {
            span,
            status_field,
            record_ok: true,
            done: std::cell::Cell::new(false),
        }
    }
    fn node(span: tracing::Span) -> Self {
        SpanOutcome {
            span,
            status_field: attr::NODE_STATUS,
            record_ok: false,
            done: std::cell::Cell::new(false),
        }
    }
    fn ok(&self) {
        if self.record_ok {
            self.span.record(self.status_field, compact::STATUS_OK);
        }
        self.done.set(true);
    }
    /// The failure happened here: the one `exception` event.
    fn fail(&self, kind: &str, message: &str) {
        self.span.record(self.status_field, "error");
        crate::telemetry::record_exception(&self.span, kind, message);
        self.done.set(true);
    }
    /// The failure happened below and was recorded there.
    fn failed_below(&self, kind: &str, message: &str) {
        self.span.record(self.status_field, "error");
        crate::telemetry::mark_failed(&self.span, kind, message);
        self.done.set(true);
    }
    /// The span, once its outcome is recorded (the guard has nothing left to do).
    fn into_span(mut self) -> tracing::Span {
        self.done.set(true);
        std::mem::replace(&mut self.span, tracing::Span::none())
    }
}

impl Drop for SpanOutcome {
    fn drop(&mut self) {
        if !self.done.get() {
            let status = if INTERRUPTED.load(Ordering::Relaxed) {
                "interrupted"
            } else {
                "cancelled"
            };
            self.span.record(self.status_field, status);
            self.span.record(attr::ERROR_TYPE, status);
            self.span.record("otel.status_description", status);
        }
    }
}

/// The text a param will have when it is a literal, or exactly `${NAME}` of
/// an input given on the command line or defaulted; with where it comes from.
fn known_text(s: &str, ir: &WorkflowIr, cx: &CompileContext) -> Option<(String, String)> {
    let t = crate::ir::template::Template::parse(s).ok()?;
    if t.is_literal() {
        return Some((s.to_string(), String::new()));
    }
    let r = t.single_reference()?;
    if !r.segments.is_empty() {
        return None;
    }
    if let Some(v) = cx.values.get(&r.root) {
        return Some((
            v.as_str()?.to_string(),
            format!("`{}={}` on the command line", r.root, v.as_str()?),
        ));
    }
    let spec = ir.inputs.get(&r.root)?;
    Some((
        spec.default.as_ref()?.as_str()?.to_string(),
        format!("the default of input `{}`", r.root),
    ))
}

/// The output keys of a `workflow` node: its `output_mapping`'s targets, else
/// the child's declared outputs; `None` when the child cannot be read (that
/// error is reported when the child is compiled).
fn child_outputs(n: &ir::NodeIr, base_dir: &Path) -> Option<Vec<Typed>> {
    if let Some(Value::Object(m)) = n.params.get("output_mapping") {
        return Some(
            m.values()
                .filter_map(Value::as_str)
                .map(|k| Typed::new(k, "any"))
                .collect(),
        );
    }
    let child = match (n.params.get("workflow_ir"), n.params.get("workflow_ref")) {
        (Some(v @ Value::Object(_)), None) => ir::from_value(v, "workflow_ir").ok()?,
        (None, Some(Value::String(r))) => ir::load_file(&base_dir.join(r)).ok()?,
        _ => return None,
    };
    Some(
        child
            .outputs
            .iter()
            .map(|(k, o)| Typed::new(k.as_str(), o.value_type.map_or("any", |t| t.as_str())))
            .collect(),
    )
}

/// Directory of a workflow file, for resolving nested `workflow_ref` paths.
pub fn base_dir_of(path: &Path) -> PathBuf {
    path.parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."))
}

#[cfg(test)]
mod tests;
