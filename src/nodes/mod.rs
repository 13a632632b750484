//! Built-in node types and the registry that names them.
//!
//! A node is a small async unit: it gets its params (templates already
//! resolved), does one thing, and returns outputs plus an action that picks
//! the next edge. Nodes know nothing of the shared store: the runtime
//! namespaces their outputs and traces every attempt. Only the `llm` node
//! emits spans of its own (one CLIENT span per provider attempt). Each node
//! documents its params and outputs in a [`NodeSpec`], which `pflow nodes`
//! prints and the validator uses.

mod echo;
mod error;
mod file;
mod http;
mod llm;
mod params;
mod shell;
mod specs;
mod transform;

pub use transform::check_filter as check_transform_filter;

pub use error::NodeErrorKind;
pub use params::type_name as params_type_name;
pub use params::Params;

use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

/// Documentation of one param or output.
#[derive(Debug, Clone, Serialize)]
pub struct Field {
    pub name: &'static str,
    #[serde(rename = "type")]
    pub ty: &'static str,
    pub required: bool,
    pub description: &'static str,
}

/// Shorthand constructors for specs.
pub const fn req(name: &'static str, ty: &'static str, description: &'static str) -> Field {
    Field {
        name,
        ty,
        required: true,
        description,
    }
}
pub const fn opt(name: &'static str, ty: &'static str, description: &'static str) -> Field {
    Field {
        name,
        ty,
        required: false,
        description,
    }
}

/// What a node type takes and gives.
#[derive(Debug, Clone, Serialize)]
pub struct NodeSpec {
    pub name: &'static str,
    pub description: &'static str,
    pub params: &'static [Field],
    pub outputs: &'static [Field],
    /// Outputs depend on params (e.g. `echo`): the validator cannot check keys.
    pub dynamic_outputs: bool,
}

/// Params every node accepts; the runtime consumes them.
pub const RUNTIME_PARAMS: &[Field] = &[
    opt(
        "max_retries",
        "integer",
        "retry a failing node this many times (default 0)",
    ),
    opt(
        "wait",
        "number",
        "seconds to wait between attempts (default 0)",
    ),
];

/// What running `node` would change outside pflow, if anything: a command,
/// a file written, moved, copied or deleted, an HTTP request other than GET,
/// or a nested workflow that does one of these. `None`: it only reads or computes.
pub fn side_effect(node: &crate::ir::NodeIr) -> Option<String> {
    let literal = |k: &str| node.params.get(k).and_then(Value::as_str);
    match node.node_type.as_str() {
        "shell" => Some(format!(
            "runs `{}`",
            literal("command").unwrap_or("a command")
        )),
        "write-file" => Some(format!(
            "writes {}",
            literal("file_path").unwrap_or("a file")
        )),
        "delete-file" => Some(format!(
            "deletes {}",
            literal("file_path").unwrap_or("a file")
        )),
        "copy-file" | "move-file" => Some(format!(
            "{} {} to {}",
            if node.node_type == "copy-file" {
                "copies"
            } else {
                "moves"
            },
            literal("source_path").unwrap_or("a file"),
            literal("dest_path").unwrap_or("another path")
        )),
        "http" => {
            let has_body = node.params.contains_key("body") || node.params.contains_key("json");
            let method = match literal("method") {
                Some(m) => m.to_ascii_uppercase(),
                None if node.params.contains_key("method") => "(templated method)".into(),
                None if has_body => "POST".into(),
                None => "GET".into(),
            };
            (method != "GET" && method != "HEAD")
                .then(|| format!("sends {method} {}", literal("url").unwrap_or("a request")))
        }
        "workflow" => match node.params.get("workflow_ir") {
            Some(v @ Value::Object(_)) => {
                let child = crate::ir::from_value(v, "workflow_ir").ok()?;
                child.nodes.iter().find_map(side_effect)
            }
            _ => Some("runs a nested workflow file".into()),
        },
        _ => None,
    }
}

/// What a node returns.
#[derive(Debug, Clone, Default)]
pub struct NodeOutput {
    pub outputs: Map<String, Value>,
    /// Action naming the edge to take; `default` when `None`.
    pub action: Option<String>,
}

impl NodeOutput {
    pub fn new(outputs: Map<String, Value>) -> Self {
        NodeOutput {
            outputs,
            action: None,
        }
    }
}

/// A node failure, with a stable `kind` for `error.type` and optional details
/// that later nodes can read through the error edge.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct NodeError {
    pub kind: NodeErrorKind,
    pub message: String,
    pub details: Option<Box<Value>>,
    /// Already recorded as an `exception` on a span below the node's (an
    /// LLM attempt, a child workflow's node): the node span only marks it.
    pub recorded: bool,
}

impl NodeError {
    pub fn new(kind: impl Into<NodeErrorKind>, message: impl Into<String>) -> Self {
        NodeError {
            kind: kind.into(),
            message: message.into(),
            details: None,
            recorded: false,
        }
    }
    /// See [`NodeError::recorded`].
    pub fn recorded(mut self) -> Self {
        self.recorded = true;
        self
    }
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(Box::new(details));
        self
    }
    /// A bad param value (wrong type, missing).
    pub fn param(name: &str, message: impl std::fmt::Display) -> Self {
        NodeError::new("invalid_param", format!("param `{name}`: {message}"))
    }
}

/// Shared, lazily built services nodes may use: one HTTP client and one LLM
/// client per run, the price table in force and the run's budget guard.
#[derive(Debug)]
pub struct Services {
    http: OnceLock<reqwest::Client>,
    llm: OnceLock<crate::llm::LlmClient>,
    llm_config: Option<crate::llm::ProviderConfig>,
    /// `None`: the built-in table, parsed only when an LLM call needs a price.
    prices: Option<Arc<crate::pricing::PriceTable>>,
    budget: crate::llm::budget::Budget,
}

impl Default for Services {
    fn default() -> Self {
        Services::new(None)
    }
}

impl Services {
    /// `prices`: a table with overrides, or `None` for the built-in one.
    pub fn new(prices: Option<Arc<crate::pricing::PriceTable>>) -> Self {
        Services {
            http: OnceLock::new(),
            llm: OnceLock::new(),
            llm_config: None,
            prices,
            budget: crate::llm::budget::Budget::unlimited(),
        }
    }

    /// Every LLM call of the run (nodes and planner) goes through this guard.
    pub fn with_budget(mut self, budget: crate::llm::budget::Budget) -> Self {
        self.budget = budget;
        self
    }

    /// The run's budget guard (unlimited unless set).
    pub fn budget(&self) -> &crate::llm::budget::Budget {
        &self.budget
    }

    /// Uses this provider configuration instead of the environment's.
    pub fn with_llm_config(mut self, config: crate::llm::ProviderConfig) -> Self {
        self.llm_config = Some(config);
        self
    }

    pub fn prices(&self) -> &crate::pricing::PriceTable {
        match &self.prices {
            Some(p) => p,
            None => crate::pricing::PriceTable::builtin(),
        }
    }

    /// One traced, priced and budgeted LLM call with this run's client,
    /// prices and budget.
    pub async fn call_llm(
        &self,
        request: &crate::llm::LlmRequest,
        opts: &crate::llm::traced::CallOptions,
    ) -> Result<crate::llm::traced::Done, crate::llm::traced::Failed> {
        crate::llm::traced::call(self.llm(), self.prices(), self.budget(), request, opts).await
    }

    pub fn llm(&self) -> &crate::llm::LlmClient {
        self.llm.get_or_init(|| {
            crate::llm::LlmClient::new(
                self.llm_config
                    .clone()
                    .unwrap_or_else(crate::llm::ProviderConfig::from_env),
            )
        })
    }

    pub fn http(&self) -> &reqwest::Client {
        self.http.get_or_init(|| {
            reqwest::Client::builder()
                .user_agent(concat!("pflow/", env!("CARGO_PKG_VERSION")))
                .build()
                .unwrap_or_default()
        })
    }
}

/// What a node sees of the run besides its params.
#[derive(Debug, Clone)]
pub struct NodeContext {
    pub node_id: String,
    /// The node's unambiguous path in the run (`id`, `parent/child`, `id[3]`).
    pub path: String,
    pub services: Arc<Services>,
}

/// What a node's run returns.
pub type NodeFuture<'a> = BoxFuture<'a, Result<NodeOutput, NodeError>>;

/// A node implementation.
pub trait Node: Send + Sync {
    fn spec(&self) -> &'static NodeSpec;
    fn run<'a>(&'a self, ctx: &'a NodeContext, params: Params) -> NodeFuture<'a>;
}

/// A registry entry: a node implementation, or the runtime-handled `workflow`.
#[derive(Clone)]
pub enum NodeKind {
    Builtin(Arc<dyn Node>),
    /// Nested workflows run inside the runtime (they need the executor).
    Workflow,
}

/// The node types this build knows.
#[derive(Clone)]
pub struct Registry {
    kinds: BTreeMap<&'static str, NodeKind>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::builtin()
    }
}

impl Registry {
    pub fn builtin() -> Self {
        let mut kinds: BTreeMap<&'static str, NodeKind> = BTreeMap::new();
        let nodes: Vec<Arc<dyn Node>> = vec![
            Arc::new(echo::Echo),
            Arc::new(file::ReadFile),
            Arc::new(file::WriteFile),
            Arc::new(file::CopyFile),
            Arc::new(file::MoveFile),
            Arc::new(file::DeleteFile),
            Arc::new(shell::Shell),
            Arc::new(http::Http),
            Arc::new(llm::Llm),
            Arc::new(transform::Transform),
        ];
        for n in nodes {
            kinds.insert(n.spec().name, NodeKind::Builtin(n));
        }
        kinds.insert("workflow", NodeKind::Workflow);
        Registry { kinds }
    }

    /// Adds or replaces a node type (for embedding pflow with custom nodes).
    pub fn register(&mut self, node: Arc<dyn Node>) {
        self.kinds.insert(node.spec().name, NodeKind::Builtin(node));
    }

    pub fn get(&self, name: &str) -> Option<&NodeKind> {
        self.kinds.get(name)
    }

    pub fn spec(&self, name: &str) -> Option<&'static NodeSpec> {
        match self.kinds.get(name)? {
            NodeKind::Builtin(n) => Some(n.spec()),
            NodeKind::Workflow => Some(&specs::WORKFLOW),
        }
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.kinds.keys().copied()
    }

    pub fn specs(&self) -> Vec<&'static NodeSpec> {
        self.names().filter_map(|n| self.spec(n)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_lists_every_builtin_with_docs() {
        let r = Registry::builtin();
        let names: Vec<_> = r.names().collect();
        for n in [
            "copy-file",
            "delete-file",
            "echo",
            "http",
            "move-file",
            "read-file",
            "shell",
            "transform",
            "workflow",
            "write-file",
        ] {
            assert!(names.contains(&n), "{n} missing");
            let spec = r.spec(n).unwrap();
            assert!(!spec.description.is_empty());
            for p in spec.params {
                assert!(!p.description.is_empty(), "{n}.{}", p.name);
            }
        }
    }
}
