//! The pflow IR: the JSON workflow format (`ir_version` 0.1.x), parsed with
//! positions and validated before anything runs.
//!
//! Parsing reports syntax errors with line and column and shape errors with
//! the JSON path (`nodes[2].batch.parallel`); [`validate`] then checks what
//! serde cannot: unique ids, edges, start node, batch settings and every
//! template reference.
//!
//! ```
//! let ir = pflow::ir::parse_str(r#"{"ir_version":"0.1.0","nodes":[{"id":"a","type":"echo"}]}"#, "wf.json").unwrap();
//! assert_eq!(ir.nodes[0].id, "a");
//! ```

pub mod template;
pub mod validate;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

pub use validate::{validate, Diagnostic, ValidationContext};

/// A whole workflow.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowIr {
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    pub ir_version: String,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub inputs: IndexMap<String, InputSpec>,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub outputs: IndexMap<String, OutputSpec>,
    pub nodes: Vec<NodeIr>,
    #[serde(default)]
    pub edges: Vec<EdgeIr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_node: Option<String>,
}

impl WorkflowIr {
    /// `metadata.name`, if the workflow has one.
    pub fn name(&self) -> Option<&str> {
        self.metadata.get("name").and_then(Value::as_str)
    }
}

/// JSON value types a workflow input or output may declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    String,
    Number,
    Integer,
    Boolean,
    Object,
    Array,
}

impl ValueType {
    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::String => "string",
            ValueType::Number => "number",
            ValueType::Integer => "integer",
            ValueType::Boolean => "boolean",
            ValueType::Object => "object",
            ValueType::Array => "array",
        }
    }

    /// Whether `v` has this type (an integer is also a number).
    pub fn matches(self, v: &Value) -> bool {
        match self {
            ValueType::String => v.is_string(),
            ValueType::Number => v.is_number(),
            ValueType::Integer => v.is_i64() || v.is_u64(),
            ValueType::Boolean => v.is_boolean(),
            ValueType::Object => v.is_object(),
            ValueType::Array => v.is_array(),
        }
    }
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub value_type: Option<ValueType>,
    #[serde(default = "default_true")]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub value_type: Option<ValueType>,
    /// Template naming where the value comes from, e.g. `${summarize.response}`.
    /// Absent: the output named like a key of the last node that wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeIr {
    pub id: String,
    #[serde(rename = "type")]
    pub node_type: String,
    #[serde(default)]
    pub params: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchIr>,
    /// Free text for humans (and the planner); ignored by the runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// The memo cache for this node: `true` serves it from an earlier
    /// successful execution with the same type, params and inputs (whatever
    /// the node type or temperature), `false` never does (even under `--cache`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<bool>,
}

fn default_item_name() -> String {
    "item".to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchErrorHandling {
    #[default]
    FailFast,
    Continue,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchIr {
    /// A template resolving to an array, or a literal array.
    pub items: Value,
    #[serde(rename = "as", default = "default_item_name")]
    pub as_name: String,
    #[serde(default)]
    pub parallel: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<usize>,
    #[serde(default)]
    pub error_handling: BatchErrorHandling,
}

fn default_action() -> String {
    "default".to_string()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeIr {
    pub from: String,
    pub to: String,
    #[serde(default = "default_action")]
    pub action: String,
}

/// Why a workflow file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum IrError {
    #[error("cannot read `{}`: {source}", file.display())]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{file}`: invalid JSON at line {line}, column {column}: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("`{file}`: at `{path}` (line {line}, column {column}): {message}")]
    Shape {
        file: String,
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("`{file}`: {} validation error(s):\n{}", diagnostics.len(), format_diagnostics(diagnostics))]
    Invalid {
        file: String,
        diagnostics: Vec<Diagnostic>,
    },
}

fn format_diagnostics(ds: &[Diagnostic]) -> String {
    ds.iter()
        .map(|d| format!("  - {d}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads and parses a workflow file (no validation).
pub fn load_file(path: &Path) -> Result<WorkflowIr, IrError> {
    let src =
        crate::limits::read_text(path, crate::limits::MAX_WORKFLOW_BYTES).map_err(|source| {
            IrError::Io {
                file: path.to_path_buf(),
                source,
            }
        })?;
    parse_str(&src, &path.display().to_string())
}

/// Parses IR text; `origin` names the source in errors.
pub fn parse_str(src: &str, origin: &str) -> Result<WorkflowIr, IrError> {
    // Most files parse: tracking the JSON path of every value (a third of
    // the parse of a large workflow) is only paid again for one that does not.
    if let Ok(ir) = serde_json::from_str::<WorkflowIr>(src) {
        return Ok(ir);
    }
    let mut de = serde_json::Deserializer::from_str(src);
    let parsed: Result<WorkflowIr, _> = serde_path_to_error::deserialize(&mut de);
    match parsed {
        Ok(ir) => {
            de.end().map_err(|e| syntax(origin, &e))?;
            Ok(ir)
        }
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            match inner.classify() {
                serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                    Err(syntax(origin, &inner))
                }
                _ => Err(IrError::Shape {
                    file: origin.to_string(),
                    path: if path == "." {
                        "(top level)".into()
                    } else {
                        path
                    },
                    line: inner.line(),
                    column: inner.column(),
                    message: strip_position(&inner.to_string()),
                }),
            }
        }
    }
}

/// Parses an inline IR value (nested `workflow_ir`); paths are relative to `origin`.
pub fn from_value(value: &Value, origin: &str) -> Result<WorkflowIr, IrError> {
    serde_path_to_error::deserialize(value).map_err(|err| IrError::Shape {
        file: origin.to_string(),
        path: err.path().to_string(),
        line: 0,
        column: 0,
        message: strip_position(&err.into_inner().to_string()),
    })
}

fn syntax(origin: &str, e: &serde_json::Error) -> IrError {
    IrError::Syntax {
        file: origin.to_string(),
        line: e.line(),
        column: e.column(),
        message: strip_position(&e.to_string()),
    }
}

/// serde_json appends " at line X column Y"; we report positions ourselves.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_minimal_and_defaults() {
        let ir = parse_str(
            r#"{"ir_version":"0.1.0","nodes":[{"id":"a","type":"echo"}],"edges":[{"from":"a","to":"b"}],
               "inputs":{"x":{"type":"string"}}}"#,
            "t.json",
        )
        .unwrap();
        assert_eq!(ir.edges[0].action, "default");
        assert!(ir.inputs["x"].required);
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let err = parse_str(
            "{\n  \"ir_version\": \"0.1.0\",\n  \"nodes\": [,]\n}",
            "bad.json",
        )
        .unwrap_err();
        match err {
            IrError::Syntax { line, column, .. } => {
                assert_eq!(line, 3);
                assert!(column > 0);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn shape_error_has_json_path() {
        let err = parse_str(
            r#"{"ir_version":"0.1.0","nodes":[{"id":"a","type":"echo"},{"id":"b","type":"echo","batch":{"items":[],"parallel":"yes"}}]}"#,
            "w.json",
        )
        .unwrap_err();
        match &err {
            IrError::Shape { path, message, .. } => {
                assert_eq!(path, "nodes[1].batch.parallel");
                assert!(message.contains("boolean"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("w.json"));
    }

    #[test]
    fn unknown_field_is_named() {
        let err = parse_str(
            r#"{"ir_version":"0.1.0","nodes":[{"id":"a","type":"echo","parmas":{}}]}"#,
            "w.json",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("parmas"), "{msg}");
        assert!(msg.contains("nodes[0]"), "{msg}");
    }

    #[test]
    fn trailing_garbage_is_a_syntax_error() {
        let err = parse_str(r#"{"ir_version":"0.1.0","nodes":[]} x"#, "w.json").unwrap_err();
        assert!(matches!(err, IrError::Syntax { .. }));
    }

    #[test]
    fn value_types() {
        assert!(ValueType::Number.matches(&serde_json::json!(1)));
        assert!(ValueType::Integer.matches(&serde_json::json!(1)));
        assert!(!ValueType::Integer.matches(&serde_json::json!(1.5)));
        assert!(!ValueType::String.matches(&serde_json::json!(1)));
    }
}
