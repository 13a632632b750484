//! Saved workflows: a small library in `$PFLOW_HOME/workflows/`, one JSON
//! file per workflow, runnable by name (`pflow run NAME`) and reusable by
//! the planner.
//!
//! A saved workflow is self-contained: nested `workflow_ref` files are
//! inlined at save time, so it keeps working wherever it is run from. Its
//! metadata (name, description, created, inputs, outputs) lives in the IR's
//! own `metadata`, so the file is still a plain workflow anyone can read.

use crate::ir::{self, IrError, WorkflowIr};
use serde::Serialize;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error(
        "invalid workflow name `{0}`: use lowercase letters, digits, `-` and `_` (at most 64)"
    )]
    InvalidName(String),
    #[error("a saved workflow named `{0}` exists; pass --force to replace it")]
    Exists(String),
    #[error("no saved workflow named `{name}`{}", hint.as_ref().map(|h| format!("; did you mean `{h}`?")).unwrap_or_default())]
    NotFound { name: String, hint: Option<String> },
    #[error(transparent)]
    Ir(#[from] IrError),
    #[error("cannot write `{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl LibraryError {
    /// Stable short name for the JSON `error.type`.
    pub fn kind(&self) -> &'static str {
        match self {
            LibraryError::InvalidName(_) => "invalid_name",
            LibraryError::Exists(_) => "workflow_exists",
            LibraryError::NotFound { .. } => "workflow_not_found",
            LibraryError::Ir(_) => "validation_error",
            LibraryError::Io { .. } => "io_error",
        }
    }
}

/// What `pflow workflow list` shows of one workflow.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub name: String,
    pub description: Option<String>,
    pub created: Option<String>,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub nodes: usize,
    pub path: PathBuf,
}

pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// The library directory: `$PFLOW_HOME/workflows`.
pub fn dir() -> PathBuf {
    crate::telemetry::pflow_home().join("workflows")
}

fn path_of(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.json"))
}

/// Replaces every `workflow_ref` with the referenced workflow, inline.
fn inline_refs(ir: &mut WorkflowIr, base: &Path, depth: u32) -> Result<(), IrError> {
    for node in &mut ir.nodes {
        if node.node_type != "workflow" {
            continue;
        }
        if let Some(Value::String(r)) = node.params.get("workflow_ref").cloned() {
            let p = base.join(&r);
            if depth >= crate::runtime::MAX_DEPTH {
                // Let validation report the recursion with its usual message.
                continue;
            }
            let mut child = ir::load_file(&p)?;
            inline_refs(&mut child, p.parent().unwrap_or(Path::new(".")), depth + 1)?;
            node.params.remove("workflow_ref");
            node.params.insert(
                "workflow_ir".into(),
                serde_json::to_value(&child).unwrap_or(Value::Null),
            );
        }
    }
    Ok(())
}

/// Saves a workflow file under `name` (validated first, nested files inlined).
pub fn save(
    dir: &Path,
    file: &Path,
    name: &str,
    description: Option<&str>,
    force: bool,
) -> Result<PathBuf, LibraryError> {
    if !is_valid_name(name) {
        return Err(LibraryError::InvalidName(name.into()));
    }
    let mut ir = ir::load_file(file)?;
    let rt = crate::runtime::Runtime::default();
    let base = crate::runtime::base_dir_of(file);
    let origin = file.display().to_string();
    // Unknown run-time parameters are fine here: only structure and references to nodes matter.
    let cx = crate::runtime::CompileContext::default();
    let errors: Vec<_> = rt
        .check(&ir, &origin, &base, &cx)
        .into_iter()
        .filter(|d| d.severity == ir::validate::Severity::Error)
        .collect();
    if !errors.is_empty() {
        return Err(IrError::Invalid {
            file: origin,
            diagnostics: errors,
        }
        .into());
    }
    inline_refs(&mut ir, &base, 0)?;
    let target = path_of(dir, name);
    if target.exists() && !force {
        return Err(LibraryError::Exists(name.into()));
    }
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let previous = if target.exists() {
        load(dir, name).ok()
    } else {
        None
    };
    let kept = |k: &str| previous.as_ref().and_then(|w| w.metadata.get(k).cloned());
    ir.metadata.insert("name".into(), json!(name));
    // A description given now wins, then the file's own, then the one saved before.
    match (
        description,
        ir.metadata.get("description").is_some(),
        kept("description"),
    ) {
        (Some(d), _, _) => {
            ir.metadata.insert("description".into(), json!(d));
        }
        (None, false, Some(d)) => {
            ir.metadata.insert("description".into(), d);
        }
        _ => {}
    }
    ir.metadata.insert(
        "created".into(),
        kept("created").unwrap_or_else(|| json!(now)),
    );
    ir.metadata.insert("updated".into(), json!(now));
    ir.metadata
        .insert("source_file".into(), json!(file.display().to_string()));
    let io = |source| LibraryError::Io {
        path: target.clone(),
        source,
    };
    crate::telemetry::file::ensure_dir(dir).map_err(io)?;
    let text = serde_json::to_string_pretty(&ir).map_err(|e| io(std::io::Error::other(e)))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    std::io::Write::write_all(&mut tmp, text.as_bytes()).map_err(io)?;
    tmp.persist(&target).map_err(|e| io(e.error))?;
    Ok(target)
}

/// Loads a saved workflow.
pub fn load(dir: &Path, name: &str) -> Result<WorkflowIr, LibraryError> {
    let p = path_of(dir, name);
    if !is_valid_name(name) || !p.is_file() {
        let names: Vec<String> = list(dir).into_iter().map(|s| s.name).collect();
        return Err(LibraryError::NotFound {
            name: name.into(),
            hint: ir::validate::did_you_mean(name, names.iter().map(String::as_str)),
        });
    }
    Ok(ir::load_file(&p)?)
}

/// The saved file of `name`, if there is one.
pub fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    let p = path_of(dir, name);
    (is_valid_name(name) && p.is_file()).then_some(p)
}

/// Every saved workflow, by name. Unreadable files are skipped.
pub fn list(dir: &Path) -> Vec<Summary> {
    let mut out: Vec<Summary> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            let name = path.file_stem()?.to_str()?.to_string();
            if path.extension()? != "json" || !is_valid_name(&name) {
                return None;
            }
            let ir = ir::load_file(&path).ok()?;
            Some(Summary {
                description: ir
                    .metadata
                    .get("description")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                created: ir
                    .metadata
                    .get("created")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                inputs: ir.inputs.keys().cloned().collect(),
                outputs: ir.outputs.keys().cloned().collect(),
                nodes: ir.nodes.len(),
                name,
                path,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_inlines_refs_and_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("lib")).unwrap();
        std::fs::write(src.join("lib/child.json"), r#"{"ir_version":"0.1.0","inputs":{"t":{}},"nodes":[{"id":"c","type":"echo","params":{"v":"${t}"}}],"outputs":{"v":{"source":"${c.v}"}}}"#).unwrap();
        std::fs::write(src.join("main.json"), r#"{"ir_version":"0.1.0","inputs":{"x":{"type":"string"}},"nodes":[{"id":"n","type":"workflow","params":{"workflow_ref":"lib/child.json","param_mapping":{"t":"${x}"}}}],"outputs":{"out":{"source":"${n.v}"}}}"#).unwrap();
        let lib = d.path().join("lib");
        save(
            &lib,
            &src.join("main.json"),
            "greeter",
            Some("says things"),
            false,
        )
        .unwrap();
        assert!(matches!(
            save(&lib, &src.join("main.json"), "greeter", None, false),
            Err(LibraryError::Exists(_))
        ));
        save(&lib, &src.join("main.json"), "greeter", None, true).unwrap();
        let ir = load(&lib, "greeter").unwrap();
        assert!(ir.nodes[0].params.contains_key("workflow_ir"));
        assert!(!ir.nodes[0].params.contains_key("workflow_ref"));
        assert_eq!(
            ir.metadata["description"], "says things",
            "kept when re-saved without one"
        );
        let l = list(&lib);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].inputs, ["x"]);
        assert_eq!(l[0].outputs, ["out"]);
        let e = load(&lib, "greter").unwrap_err().to_string();
        assert!(e.contains("did you mean `greeter`"), "{e}");
        assert!(matches!(
            save(&lib, &src.join("main.json"), "../evil", None, false),
            Err(LibraryError::InvalidName(_))
        ));
    }

    #[test]
    fn invalid_workflows_are_not_saved() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("bad.json");
        std::fs::write(
            &f,
            r#"{"ir_version":"0.1.0","nodes":[{"id":"a","type":"nope"}]}"#,
        )
        .unwrap();
        let e = save(&d.path().join("lib"), &f, "bad", None, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown node type `nope`"), "{e}");
        assert!(list(&d.path().join("lib")).is_empty());
    }
}
