//! Static validation of a parsed workflow: everything that can be known to be
//! wrong before a node runs is reported here, all at once, each diagnostic
//! naming its JSON path, the node and the template involved.
//!
//! Node-type knowledge (which types exist, their required params and output
//! keys) comes from the caller through [`ValidationContext::describe`], so the
//! IR does not depend on the node registry.

use super::template::{walk_strings, Template};
use super::{BatchIr, NodeIr, WorkflowIr};
use std::collections::{HashMap, HashSet};
use std::fmt;

/// How bad a diagnostic is: errors stop the run, warnings are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One finding, with the JSON path it concerns.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub path: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        write!(f, "{}: {}", self.path, self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

/// What the validator may know about a node type.
#[derive(Debug, Clone)]
pub enum NodeShape {
    Unknown {
        known_types: Vec<String>,
    },
    Known {
        required_params: Vec<String>,
        /// Output keys, or `None` when they depend on params (e.g. `echo`).
        outputs: Option<Vec<String>>,
    },
}

/// What the validator knows beyond the file.
pub struct ValidationContext<'a> {
    /// Names given on the command line (`NAME=VALUE`): usable as `${NAME}`.
    pub params: HashSet<String>,
    /// `Some(false)`: no piped stdin, so `${stdin}` is an error. `None`: unknown.
    pub stdin: Option<bool>,
    pub describe: &'a dyn Fn(&NodeIr) -> NodeShape,
}

/// What a batch node writes in its namespace.
pub const BATCH_OUTPUTS: &[&str] = &["results", "count", "failed", "errors"];

/// Runtime-reserved store key, e.g. `__index__`.
pub fn is_reserved(key: &str) -> bool {
    key.len() > 4 && key.starts_with("__") && key.ends_with("__")
}

fn is_valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The closest candidate by edit distance, if reasonably close.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_string())
}

struct Collector {
    out: Vec<Diagnostic>,
}

impl Collector {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>, hint: Option<String>) {
        self.out.push(Diagnostic {
            severity: Severity::Error,
            path: path.into(),
            message: message.into(),
            hint,
        });
    }
    fn warning(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.out.push(Diagnostic {
            severity: Severity::Warning,
            path: path.into(),
            message: message.into(),
            hint: None,
        });
    }
}

/// Checks a workflow; returns every diagnostic (errors and warnings).
pub fn validate(ir: &WorkflowIr, cx: &ValidationContext<'_>) -> Vec<Diagnostic> {
    let mut c = Collector { out: Vec::new() };

    let version_ok = ir
        .ir_version
        .strip_prefix("0.1.")
        .is_some_and(|rest| !rest.is_empty() && rest.chars().all(|ch| ch.is_ascii_digit()))
        || ir.ir_version == "0.1";
    if !version_ok {
        c.error(
            "ir_version",
            format!("unsupported ir_version `{}`", ir.ir_version),
            Some("this pflow reads ir_version 0.1.x, e.g. \"0.1.0\"".into()),
        );
    }
    if ir.nodes.is_empty() {
        c.error("nodes", "a workflow needs at least one node", None);
    }

    // Node ids: valid, unique, not reserved.
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let mut shapes: HashMap<&str, NodeShape> = HashMap::new();
    for (i, node) in ir.nodes.iter().enumerate() {
        let path = format!("nodes[{i}].id");
        if !is_valid_name(&node.id) {
            c.error(
                &path,
                format!("invalid node id `{}`", node.id),
                Some("use letters, digits, `_` and `-`".into()),
            );
        } else if is_reserved(&node.id) {
            c.error(
                &path,
                format!("node id `{}` is reserved for the runtime", node.id),
                None,
            );
        }
        if let Some(first) = ids.insert(&node.id, i) {
            c.error(
                &path,
                format!(
                    "duplicate node id `{}` (first used by nodes[{first}])",
                    node.id
                ),
                None,
            );
            ids.insert(&node.id, first);
        }
        let shape = (cx.describe)(node);
        match &shape {
            NodeShape::Unknown { known_types } => c.error(
                format!("nodes[{i}].type"),
                format!(
                    "unknown node type `{}` in node `{}`",
                    node.node_type, node.id
                ),
                Some(
                    match did_you_mean(&node.node_type, known_types.iter().map(String::as_str)) {
                        Some(s) => {
                            format!("did you mean `{s}`? run `pflow nodes` to list node types")
                        }
                        None => "run `pflow nodes` to list node types".into(),
                    },
                ),
            ),
            NodeShape::Known {
                required_params, ..
            } => {
                for p in required_params {
                    if !node.params.contains_key(p) {
                        c.error(
                            format!("nodes[{i}].params"),
                            format!(
                                "node `{}` ({}) is missing required param `{p}`",
                                node.id, node.node_type
                            ),
                            None,
                        );
                    }
                }
            }
        }
        shapes.insert(&node.id, shape);
    }

    // Inputs share the root namespace with node ids.
    for (name, spec) in &ir.inputs {
        let path = format!("inputs.{name}");
        if !is_valid_name(name) {
            c.error(
                &path,
                format!("invalid input name `{name}`"),
                Some("use letters, digits, `_` and `-`".into()),
            );
        }
        if is_reserved(name) {
            c.error(
                &path,
                format!("input name `{name}` is reserved for the runtime"),
                None,
            );
        }
        if ids.contains_key(name.as_str()) {
            c.error(
                &path,
                format!("input `{name}` has the same name as a node"),
                Some("rename one: inputs and node ids share `${name}` references".into()),
            );
        }
        if let (Some(t), Some(d)) = (spec.value_type, &spec.default) {
            if !t.matches(d) {
                c.error(
                    format!("{path}.default"),
                    format!("default of input `{name}` is not of type {}", t.as_str()),
                    None,
                );
            }
        }
    }

    // Edges and the start node.
    let node_names = || ir.nodes.iter().map(|n| n.id.as_str());
    let mut leaving: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, e) in ir.edges.iter().enumerate() {
        for (field, id) in [("from", &e.from), ("to", &e.to)] {
            if !ids.contains_key(id.as_str()) {
                c.error(
                    format!("edges[{i}].{field}"),
                    format!("edge {field} unknown node `{id}`"),
                    did_you_mean(id, node_names()).map(|s| format!("did you mean `{s}`?")),
                );
            }
        }
        if let Some(first) = leaving.insert((&e.from, &e.action), i) {
            c.error(
                format!("edges[{i}]"),
                format!(
                    "two edges leave `{}` on action `{}` (see edges[{first}])",
                    e.from, e.action
                ),
                None,
            );
        }
    }
    if let Some(start) = &ir.start_node {
        if !ids.contains_key(start.as_str()) {
            c.error(
                "start_node",
                format!("start_node `{start}` is not a node"),
                did_you_mean(start, node_names()).map(|s| format!("did you mean `{s}`?")),
            );
        }
    }

    // Reachability (warnings only: unreachable nodes are legal but likely a mistake).
    if let Some(start) = ir
        .start_node
        .as_deref()
        .or(ir.nodes.first().map(|n| n.id.as_str()))
    {
        let mut seen: HashSet<&str> = HashSet::new();
        let mut stack = vec![start];
        let mut adj: HashMap<&str, Vec<&str>> = HashMap::new();
        for e in &ir.edges {
            adj.entry(&e.from).or_default().push(&e.to);
        }
        while let Some(n) = stack.pop() {
            if seen.insert(n) {
                stack.extend(adj.get(n).into_iter().flatten().copied());
            }
        }
        for (i, node) in ir.nodes.iter().enumerate() {
            if !seen.contains(node.id.as_str()) && ids.get(node.id.as_str()) == Some(&i) {
                c.warning(
                    format!("nodes[{i}]"),
                    format!("node `{}` is never reached from the start node", node.id),
                );
            }
        }
    }

    // Templates.
    let roots = Roots {
        ir,
        cx,
        ids: &ids,
        shapes: &shapes,
    };
    for (i, node) in ir.nodes.iter().enumerate() {
        let locals: Vec<&str> = match &node.batch {
            Some(b) => vec![b.as_name.as_str(), "__index__"],
            None => vec![],
        };
        let mut path = String::new();
        for (key, value) in &node.params {
            // An inline child workflow has its own namespace; it is validated on its own.
            if node.node_type == "workflow" && key == "workflow_ir" {
                continue;
            }
            path.clear();
            walk_strings(value, &mut path, &mut |sub, s| {
                let json_path = format!("nodes[{i}].params.{key}{sub}");
                let what = format!("param `{key}{sub}` of node `{}`", node.id);
                roots.check_string(&mut c, s, &json_path, &what, &locals);
            });
        }
        if let Some(b) = &node.batch {
            check_batch(&mut c, &roots, i, node, b);
        }
    }
    for (name, out) in &ir.outputs {
        if let Some(src) = &out.source {
            roots.check_string(
                &mut c,
                src,
                &format!("outputs.{name}.source"),
                &format!("output `{name}`"),
                &[],
            );
        }
    }
    c.out
}

fn check_batch(c: &mut Collector, roots: &Roots<'_>, i: usize, node: &NodeIr, b: &BatchIr) {
    let base = format!("nodes[{i}].batch");
    if !is_valid_name(&b.as_name) || is_reserved(&b.as_name) {
        c.error(
            format!("{base}.as"),
            format!("invalid batch item name `{}`", b.as_name),
            None,
        );
    } else if roots.ids.contains_key(b.as_name.as_str()) || roots.ir.inputs.contains_key(&b.as_name)
    {
        c.error(
            format!("{base}.as"),
            format!(
                "batch item name `{}` hides a node or input of the same name",
                b.as_name
            ),
            None,
        );
    }
    if b.max_concurrent == Some(0) {
        c.error(
            format!("{base}.max_concurrent"),
            "max_concurrent must be at least 1",
            None,
        );
    }
    match &b.items {
        serde_json::Value::String(s) => {
            roots.check_string(
                c,
                s,
                &format!("{base}.items"),
                &format!("batch items of node `{}`", node.id),
                &[],
            );
            if !Template::has_template(s) {
                c.error(
                    format!("{base}.items"),
                    "batch items must be an array or a template resolving to one",
                    None,
                );
            }
        }
        serde_json::Value::Array(_) => {}
        _ => c.error(
            format!("{base}.items"),
            "batch items must be an array or a template resolving to one",
            None,
        ),
    }
}

struct Roots<'a> {
    ir: &'a WorkflowIr,
    cx: &'a ValidationContext<'a>,
    ids: &'a HashMap<&'a str, usize>,
    shapes: &'a HashMap<&'a str, NodeShape>,
}

impl Roots<'_> {
    fn check_string(
        &self,
        c: &mut Collector,
        s: &str,
        json_path: &str,
        what: &str,
        locals: &[&str],
    ) {
        if !Template::has_template(s) {
            return;
        }
        let t = match Template::parse(s) {
            Ok(t) => t,
            Err(e) => {
                c.error(
                    json_path,
                    format!("{what}: {e}"),
                    Some("write `$${` for a literal `${`".into()),
                );
                return;
            }
        };
        for r in t.references() {
            let root = r.root.as_str();
            if locals.contains(&root)
                || self.ir.inputs.contains_key(root)
                || self.cx.params.contains(root)
            {
                continue;
            }
            if root == "stdin" {
                if self.cx.stdin == Some(false) {
                    c.error(
                        json_path,
                        format!("{what} uses `{r}` but nothing is piped on stdin"),
                        Some("pipe data in: `cat file | pflow run workflow.json`".into()),
                    );
                }
                continue;
            }
            if let Some(&idx) = self.ids.get(root) {
                let batch_outs;
                let shape = if self.ir.nodes[idx].batch.is_some() {
                    batch_outs = NodeShape::Known {
                        required_params: vec![],
                        outputs: Some(BATCH_OUTPUTS.iter().map(|s| s.to_string()).collect()),
                    };
                    Some(&batch_outs)
                } else {
                    self.shapes.get(root)
                };
                if let (
                    Some(key),
                    Some(NodeShape::Known {
                        outputs: Some(outs),
                        ..
                    }),
                ) = (r.first_key(), shape)
                {
                    if key != "error" && !outs.iter().any(|o| o == key) {
                        c.error(
                            json_path,
                            format!("{what}: `{r}` names output `{key}`, which node `{root}` does not write"),
                            Some(format!("node `{root}` writes: {}", outs.join(", "))),
                        );
                    }
                }
                continue;
            }
            let candidates: Vec<&str> = self
                .ir
                .inputs
                .keys()
                .map(String::as_str)
                .chain(self.ids.keys().copied())
                .chain(locals.iter().copied())
                .collect();
            c.error(
                json_path,
                format!(
                    "{what}: unknown reference `{r}`: no input, parameter or node named `{root}`"
                ),
                Some(match did_you_mean(root, candidates) {
                    Some(s) => {
                        format!("did you mean `{s}`? or pass it: `pflow run FILE {root}=VALUE`")
                    }
                    None => format!(
                        "declare it under `inputs` or pass it: `pflow run FILE {root}=VALUE`"
                    ),
                }),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::parse_str;

    fn shape(n: &NodeIr) -> NodeShape {
        match n.node_type.as_str() {
            "echo" => NodeShape::Known {
                required_params: vec![],
                outputs: None,
            },
            "read-file" => NodeShape::Known {
                required_params: vec!["file_path".into()],
                outputs: Some(vec!["content".into()]),
            },
            _ => NodeShape::Unknown {
                known_types: vec!["echo".into(), "read-file".into()],
            },
        }
    }

    fn check(src: &str) -> Vec<Diagnostic> {
        let ir = parse_str(src, "t.json").unwrap();
        let cx = ValidationContext {
            params: HashSet::new(),
            stdin: Some(false),
            describe: &shape,
        };
        validate(&ir, &cx)
            .into_iter()
            .filter(|d| d.severity == Severity::Error)
            .collect()
    }

    #[test]
    fn valid_workflow_has_no_errors() {
        let d = check(
            r#"{"ir_version":"0.1.0","inputs":{"p":{"type":"string"}},
            "nodes":[{"id":"r","type":"read-file","params":{"file_path":"${p}"}},
                     {"id":"e","type":"echo","params":{"v":"${r.content}","w":"$${lit}"}}],
            "edges":[{"from":"r","to":"e"}],
            "outputs":{"o":{"source":"${e.v}"}}}"#,
        );
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn unknown_reference_names_node_param_and_template() {
        let d = check(
            r#"{"ir_version":"0.1.0","nodes":[{"id":"e","type":"echo","params":{"msg":"hi ${usr}"}}],"inputs":{"user":{}}}"#,
        );
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].path, "nodes[0].params.msg");
        assert!(d[0].message.contains("`${usr}`"), "{}", d[0].message);
        assert!(d[0].message.contains("node `e`"));
        assert!(d[0].hint.as_deref().unwrap().contains("`user`"));
    }

    #[test]
    fn unknown_output_key_of_known_node() {
        let d = check(
            r#"{"ir_version":"0.1.0","nodes":[{"id":"r","type":"read-file","params":{"file_path":"x"}},{"id":"e","type":"echo","params":{"v":"${r.contents}","err":"${r.error}"}}]}"#,
        );
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].message.contains("contents"));
    }

    #[test]
    fn structural_errors() {
        let d = check(
            r#"{"ir_version":"0.2.0","nodes":[{"id":"a","type":"echo"},{"id":"a","type":"ecoh"},{"id":"b c","type":"read-file"}],
            "edges":[{"from":"a","to":"zz"},{"from":"a","to":"a"}],"start_node":"q"}"#,
        );
        let msgs: Vec<String> = d.iter().map(|d| d.to_string()).collect();
        let all = msgs.join("\n");
        assert!(all.contains("unsupported ir_version"), "{all}");
        assert!(all.contains("duplicate node id `a`"), "{all}");
        assert!(all.contains("did you mean `echo`"), "{all}");
        assert!(all.contains("invalid node id `b c`"), "{all}");
        assert!(all.contains("missing required param `file_path`"), "{all}");
        assert!(all.contains("unknown node `zz`"), "{all}");
        assert!(all.contains("two edges leave `a`"), "{all}");
        assert!(all.contains("start_node `q`"), "{all}");
    }

    #[test]
    fn batch_locals_and_stdin() {
        let d = check(
            r#"{"ir_version":"0.1.0","nodes":[{"id":"b","type":"echo","batch":{"items":["x"],"as":"f"},"params":{"v":"${f} ${__index__}"}},
            {"id":"c","type":"echo","params":{"v":"${f}"}}],"edges":[{"from":"b","to":"c"}]}"#,
        );
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].path, "nodes[1].params.v");
        let d = check(
            r#"{"ir_version":"0.1.0","nodes":[{"id":"e","type":"echo","params":{"v":"${stdin}"}}]}"#,
        );
        assert!(d[0].message.contains("stdin"));
    }

    #[test]
    fn bad_template_syntax() {
        let d = check(
            r#"{"ir_version":"0.1.0","nodes":[{"id":"e","type":"echo","params":{"v":["ok","${oops"]}}]}"#,
        );
        assert_eq!(d[0].path, "nodes[0].params.v[1]");
        assert!(d[0].message.contains("unterminated"));
    }

    #[test]
    fn input_default_type_and_collision() {
        let d = check(
            r#"{"ir_version":"0.1.0","inputs":{"e":{"type":"integer","default":"x"}},"nodes":[{"id":"e","type":"echo"}]}"#,
        );
        assert_eq!(d.len(), 2, "{d:?}");
    }

    #[test]
    fn reserved_names() {
        assert!(is_reserved("__index__"));
        assert!(!is_reserved("__"));
        assert!(!is_reserved("_a_"));
    }
}
