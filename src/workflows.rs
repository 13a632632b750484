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

/// What `pflow workflow save` did.
#[derive(Debug, Clone, Serialize)]
pub struct Saved {
    pub path: PathBuf,
    /// `${workflow.dir}` was replaced by this directory (the source file's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow_dir: Option<PathBuf>,
    /// Literal relative paths that will resolve against the directory the
    /// saved workflow is run from, as `JSON path: value`.
    pub relative_paths: Vec<String>,
}

/// Params that name files or directories.
const PATH_PARAMS: &[&str] = &["file_path", "source_path", "dest_path", "cwd"];

/// Replaces `${workflow.dir}` in every string of `ir` (params, batch items,
/// input defaults, output sources) by `dir`; returns whether there was any.
fn resolve_workflow_dir(ir: &mut WorkflowIr, dir: &Path) -> bool {
    fn fix(v: &mut Value, dir: &str, found: &mut bool) {
        match v {
            Value::String(s) => {
                // `$${workflow.dir}` is a literal and stays.
                let escaped = s.matches("$${workflow.dir}").count();
                if s.matches(crate::runtime::WORKFLOW_DIR).count() > escaped {
                    let kept = s.replace("$${workflow.dir}", "\u{0}");
                    *s = kept
                        .replace(crate::runtime::WORKFLOW_DIR, dir)
                        .replace('\u{0}', "$${workflow.dir}");
                    *found = true;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| fix(i, dir, found)),
            Value::Object(m) => m.values_mut().for_each(|i| fix(i, dir, found)),
            _ => {}
        }
    }
    let dir = dir.display().to_string();
    let mut found = false;
    for n in &mut ir.nodes {
        n.params.values_mut().for_each(|v| fix(v, &dir, &mut found));
        if let Some(b) = &mut n.batch {
            fix(&mut b.items, &dir, &mut found);
        }
    }
    for i in ir.inputs.values_mut() {
        if let Some(d) = &mut i.default {
            fix(d, &dir, &mut found);
        }
    }
    for o in ir.outputs.values_mut() {
        if let Some(s) = &mut o.source {
            let mut v = Value::String(std::mem::take(s));
            fix(&mut v, &dir, &mut found);
            *s = v.as_str().unwrap_or_default().to_string();
        }
    }
    found
}

/// Literal relative paths in path params (`nodes[0].params.file_path: data/x.txt`).
fn relative_paths(ir: &WorkflowIr) -> Vec<String> {
    let mut out = Vec::new();
    for (i, n) in ir.nodes.iter().enumerate() {
        for key in PATH_PARAMS {
            if let Some(Value::String(p)) = n.params.get(*key) {
                if !p.contains("${") && Path::new(p).is_relative() {
                    out.push(format!("nodes[{i}].params.{key}: {p}"));
                }
            }
        }
    }
    out
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
            let child_dir = crate::runtime::base_dir_of(&p);
            // The child's `${workflow.dir}` is its own file's directory, not the parent's.
            resolve_workflow_dir(
                &mut child,
                &std::path::absolute(&child_dir).unwrap_or(child_dir.clone()),
            );
            inline_refs(&mut child, &child_dir, depth + 1)?;
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
) -> Result<Saved, LibraryError> {
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
    let abs_base = std::path::absolute(&base).unwrap_or(base.clone());
    let workflow_dir = resolve_workflow_dir(&mut ir, &abs_base).then_some(abs_base);
    let relative = relative_paths(&ir);
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
    Ok(Saved {
        path: target,
        workflow_dir,
        relative_paths: relative,
    })
}

/// Deletes a saved workflow; returns the file removed.
pub fn delete(dir: &Path, name: &str) -> Result<PathBuf, LibraryError> {
    load(dir, name)?;
    let p = path_of(dir, name);
    std::fs::remove_file(&p).map_err(|source| LibraryError::Io {
        path: p.clone(),
        source,
    })?;
    Ok(p)
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
    fn save_resolves_workflow_dir_and_names_relative_paths() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("lib")).unwrap();
        std::fs::write(src.join("lib/child.json"), r#"{"ir_version":"0.1.0","nodes":[{"id":"c","type":"read-file","params":{"file_path":"${workflow.dir}/c.txt"}}],"outputs":{"v":{"source":"${c.content}"}}}"#).unwrap();
        std::fs::write(src.join("main.json"), r#"{"ir_version":"0.1.0","inputs":{"p":{"type":"string","default":"${workflow.dir}/in.txt"}},"nodes":[
            {"id":"n","type":"workflow","params":{"workflow_ref":"lib/child.json"}},
            {"id":"w","type":"write-file","params":{"file_path":"out/x.txt","content":"$${workflow.dir} ${p}"}}],"edges":[{"from":"n","to":"w"}]}"#).unwrap();
        let lib = d.path().join("lib");
        let saved = save(&lib, &src.join("main.json"), "paths", None, false).unwrap();
        let abs = std::path::absolute(&src).unwrap();
        assert_eq!(saved.workflow_dir.as_deref(), Some(abs.as_path()));
        assert_eq!(
            saved.relative_paths,
            ["nodes[1].params.file_path: out/x.txt"]
        );
        let ir = load(&lib, "paths").unwrap();
        assert_eq!(
            ir.inputs["p"].default,
            Some(json!(format!("{}/in.txt", abs.display())))
        );
        assert_eq!(
            ir.nodes[1].params["content"],
            json!("$${workflow.dir} ${p}")
        );
        let child = &ir.nodes[0].params["workflow_ir"]["nodes"][0]["params"]["file_path"];
        assert_eq!(child, &json!(format!("{}/lib/c.txt", abs.display())));
        assert_eq!(delete(&lib, "paths").unwrap(), saved.path);
        assert!(matches!(
            delete(&lib, "paths"),
            Err(LibraryError::NotFound { .. })
        ));
    }

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
