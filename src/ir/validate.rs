//! Static validation of a parsed workflow: everything that can be known to be
//! wrong before a node runs is reported here, all at once, each diagnostic
//! naming its JSON path, the node and the template involved.
//!
//! Node-type knowledge (which types exist, the params they take, their
//! output keys and types) comes from the caller through
//! [`ValidationContext::describe`], so the IR does not depend on the node
//! registry. Besides structure this checks what the author most likely got
//! wrong: unknown params ("did you mean"), param types, other tools'
//! template syntax (`{{x}}`, `$(x)`), inputs the command line does not give
//! or does not need, data flow (a template may only read a node that runs
//! before it on every path) and batches over values that cannot be arrays.

use super::template::{walk_strings, Reference, Segment, Template};
use super::{BatchIr, NodeIr, WorkflowIr};
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;

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

/// A param or output a node type declares, with its JSON type (`string`,
/// `number`, `integer`, `boolean`, `object`, `array` or `any`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Typed {
    pub name: String,
    pub ty: String,
}

impl Typed {
    pub fn new(name: impl Into<String>, ty: impl Into<String>) -> Typed {
        Typed {
            name: name.into(),
            ty: ty.into(),
        }
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
        /// Every param the type takes, or `None` when it takes any (e.g. `echo`).
        params: Option<Vec<Typed>>,
        /// Output keys, or `None` when they depend on params (e.g. `echo`).
        outputs: Option<Vec<Typed>>,
    },
}

/// What the validator knows beyond the file.
pub struct ValidationContext<'a> {
    /// Names given on the command line (`NAME=VALUE`): usable as `${NAME}`.
    pub params: HashSet<String>,
    /// `Some(false)`: no piped stdin, so `${stdin}` is an error. `None`: unknown.
    pub stdin: Option<bool>,
    /// Required inputs without a default must be among `params` ("needs input X").
    pub require_inputs: bool,
    /// Every name in `params` must be an input or a free `${NAME}` of the workflow.
    pub strict_params: bool,
    /// Where `params` came from, for diagnostics (`(command line)`).
    pub params_path: String,
    /// A node's shape; nodes of one type may share one (`Arc`), so a large
    /// workflow does not build and drop a shape per node.
    pub describe: &'a dyn Fn(&NodeIr) -> Arc<NodeShape>,
}

impl<'a> ValidationContext<'a> {
    /// A context that knows only the node types: no parameters, no input or stdin checks.
    pub fn lenient(describe: &'a dyn Fn(&NodeIr) -> Arc<NodeShape>) -> Self {
        ValidationContext {
            params: HashSet::new(),
            stdin: None,
            require_inputs: false,
            strict_params: false,
            params_path: "(command line)".into(),
            describe,
        }
    }
}

/// The root name of the built-in `${workflow.dir}` (the workflow file's directory).
pub const WORKFLOW_ROOT: &str = "workflow";

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
    let mut shapes: HashMap<&str, Arc<NodeShape>> = HashMap::new();
    for (i, node) in ir.nodes.iter().enumerate() {
        let path = || format!("nodes[{i}].id");
        if !is_valid_name(&node.id) {
            c.error(
                path(),
                format!("invalid node id `{}`", node.id),
                Some("use letters, digits, `_` and `-`".into()),
            );
        } else if is_reserved(&node.id) {
            c.error(
                path(),
                format!("node id `{}` is reserved for the runtime", node.id),
                None,
            );
        }
        if let Some(first) = ids.insert(&node.id, i) {
            c.error(
                path(),
                format!(
                    "duplicate node id `{}` (first used by nodes[{first}])",
                    node.id
                ),
                None,
            );
            ids.insert(&node.id, first);
        }
        let shape = (cx.describe)(node);
        match &*shape {
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
                required_params,
                params,
                ..
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
                if let Some(declared) = params {
                    check_params(&mut c, i, node, declared);
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
    let start = ir
        .start_node
        .as_deref()
        .and_then(|s| ids.get(s).copied())
        .unwrap_or(0);
    let roots = Roots {
        ir,
        cx,
        ids: &ids,
        shapes: &shapes,
        flow: Flow::new(ir, &ids, start),
        free: std::cell::RefCell::new(HashSet::new()),
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
                roots.check_string(&mut c, s, &json_path, &what, &locals, Some(i));
                roots.check_lookalikes(&mut c, s, &json_path, &what, &locals);
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
                None,
            );
        }
    }
    check_command_line(&mut c, ir, cx, &roots.free.borrow());
    c.out
}

/// Unknown params (with "did you mean") and literal values of the wrong type.
fn check_params(c: &mut Collector, i: usize, node: &NodeIr, declared: &[Typed]) {
    for (key, value) in &node.params {
        let path = format!("nodes[{i}].params.{key}");
        match declared.iter().find(|p| p.name == *key) {
            None => {
                let names: Vec<&str> = declared.iter().map(|p| p.name.as_str()).collect();
                let takes = format!("`{}` takes: {}", node.node_type, names.join(", "));
                c.error(
                    path,
                    format!(
                        "node `{}` ({}) has no param `{key}`",
                        node.id, node.node_type
                    ),
                    Some(match did_you_mean(key, names.iter().copied()) {
                        Some(s) => format!("did you mean `{s}`? {takes}"),
                        None => takes,
                    }),
                );
            }
            Some(p) => {
                if let Some(got) = type_mismatch(&p.ty, value) {
                    c.error(
                        path,
                        format!(
                            "param `{key}` of node `{}` must be {}, got {got}",
                            node.id,
                            with_article(&p.ty)
                        ),
                        Some(match p.ty.as_str() {
                            "boolean" => "write `true` or `false`, without quotes".into(),
                            "number" | "integer" => "write a number, e.g. `30`".into(),
                            "string" => "quote the value".into(),
                            other => format!("give {}", with_article(other)),
                        }),
                    );
                }
            }
        }
    }
}

fn with_article(ty: &str) -> String {
    match ty {
        "integer" | "object" | "array" => format!("an {ty}"),
        "any" => "any value".into(),
        _ => format!("a {ty}"),
    }
}

/// The JSON type `v` has when it is not acceptable as `ty` (as nodes read
/// params: `"true"` is a boolean, `"30"` a number); templates are checked when resolved.
fn type_mismatch(ty: &str, v: &serde_json::Value) -> Option<&'static str> {
    use serde_json::Value;
    if let Value::String(s) = v {
        if Template::has_template(s) {
            return None;
        }
    }
    let ok = match (ty, v) {
        (_, Value::Null) | ("any", _) => true,
        ("string", Value::String(_)) => true,
        ("boolean", Value::Bool(_)) => true,
        ("boolean", Value::String(s)) => s == "true" || s == "false",
        ("number", Value::Number(_)) => true,
        ("number", Value::String(s)) => s.trim().parse::<f64>().is_ok(),
        ("integer", Value::Number(n)) => n.is_i64() || n.is_u64(),
        ("integer", Value::String(s)) => s.trim().parse::<i64>().is_ok(),
        ("object", Value::Object(_)) => true,
        ("array", Value::Array(_)) => true,
        ("string" | "boolean" | "number" | "integer" | "object" | "array", _) => false,
        _ => true,
    };
    if ok {
        return None;
    }
    Some(match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() && ty == "integer" => "a fractional number",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    })
}

/// Required inputs the command line does not give, and names it gives that
/// the workflow neither declares nor reads.
fn check_command_line(
    c: &mut Collector,
    ir: &WorkflowIr,
    cx: &ValidationContext<'_>,
    free: &HashSet<String>,
) {
    if cx.require_inputs {
        for (name, spec) in &ir.inputs {
            if spec.required && spec.default.is_none() && !cx.params.contains(name) {
                let ty = spec.value_type.map(|t| t.as_str()).unwrap_or("any");
                let desc = spec
                    .description
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default();
                c.error(
                    format!("inputs.{name}"),
                    format!("needs input `{name}` ({ty}){desc}"),
                    Some(format!(
                        "pass it as `{name}=VALUE`; `pflow validate FILE --no-inputs` checks the workflow without its inputs"
                    )),
                );
            }
        }
    }
    if cx.strict_params {
        let mut given: Vec<&String> = cx.params.iter().collect();
        given.sort();
        for name in given {
            if name == "stdin" || ir.inputs.contains_key(name) || free.contains(name) {
                continue;
            }
            let inputs: Vec<&str> = ir.inputs.keys().map(String::as_str).collect();
            let known = if inputs.is_empty() {
                "the workflow declares no inputs".to_string()
            } else {
                format!("its inputs: {}", inputs.join(", "))
            };
            c.error(
                cx.params_path.clone(),
                format!("unknown input `{name}`: the workflow has no input `{name}` and no `${{{name}}}` reads it"),
                Some(match did_you_mean(name, inputs.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`? {known}"),
                    None => known,
                }),
            );
        }
    }
}

/// Which nodes run before which: dominators of the flow graph (Cooper,
/// Harvey and Kennedy's iterative algorithm), with pre/post numbers on the
/// dominator tree so each "does `a` run before `b` on every path" is O(1).
struct Flow {
    succ: Vec<Vec<usize>>,
    start: usize,
    /// Entry and exit numbers in the dominator tree; `None` for unreachable nodes.
    span: Vec<Option<(usize, usize)>>,
}

impl Flow {
    fn new(ir: &WorkflowIr, ids: &HashMap<&str, usize>, start: usize) -> Flow {
        let n = ir.nodes.len();
        let mut succ = vec![Vec::new(); n];
        let mut pred = vec![Vec::new(); n];
        for e in &ir.edges {
            if let (Some(&a), Some(&b)) = (ids.get(e.from.as_str()), ids.get(e.to.as_str())) {
                succ[a].push(b);
                pred[b].push(a);
            }
        }
        let mut flow = Flow {
            succ,
            start,
            span: vec![None; n],
        };
        if start >= n {
            return flow;
        }
        // Postorder by an iterative depth-first search.
        let mut post = vec![usize::MAX; n];
        let mut order = Vec::with_capacity(n);
        let mut seen = vec![false; n];
        let mut stack = vec![(start, 0usize)];
        seen[start] = true;
        while let Some((v, k)) = stack.pop() {
            if let Some(&w) = flow.succ[v].get(k) {
                stack.push((v, k + 1));
                if !seen[w] {
                    seen[w] = true;
                    stack.push((w, 0));
                }
            } else {
                post[v] = order.len();
                order.push(v);
            }
        }
        let mut idom = vec![usize::MAX; n];
        idom[start] = start;
        let mut changed = true;
        while changed {
            changed = false;
            for &b in order.iter().rev().filter(|&&b| b != start) {
                let mut new = usize::MAX;
                for &p in pred[b].iter().filter(|&&p| idom[p] != usize::MAX) {
                    new = if new == usize::MAX {
                        p
                    } else {
                        let (mut x, mut y) = (p, new);
                        while x != y {
                            while post[x] < post[y] {
                                x = idom[x];
                            }
                            while post[y] < post[x] {
                                y = idom[y];
                            }
                        }
                        x
                    };
                }
                if new != usize::MAX && idom[b] != new {
                    idom[b] = new;
                    changed = true;
                }
            }
        }
        let mut children = vec![Vec::new(); n];
        for &v in &order {
            if v != start && idom[v] != usize::MAX {
                children[idom[v]].push(v);
            }
        }
        let mut clock = 0;
        let mut entry = vec![0; n];
        let mut stack = vec![(start, 0usize)];
        entry[start] = clock;
        while let Some((v, k)) = stack.pop() {
            if let Some(&w) = children[v].get(k) {
                stack.push((v, k + 1));
                clock += 1;
                entry[w] = clock;
                stack.push((w, 0));
            } else {
                flow.span[v] = Some((entry[v], clock));
            }
        }
        flow
    }

    fn reachable(&self, v: usize) -> bool {
        self.span.get(v).is_some_and(Option::is_some)
    }

    /// Whether every path from the start to `b` goes through `a`.
    fn dominates(&self, a: usize, b: usize) -> bool {
        match (self.span[a], self.span[b]) {
            (Some((ia, oa)), Some((ib, ob))) => ia <= ib && ob <= oa,
            _ => false,
        }
    }

    /// A path from the start to `to` that avoids `avoid` (breadth-first: the shortest).
    fn path_avoiding(&self, to: usize, avoid: usize) -> Option<Vec<usize>> {
        if self.start == avoid {
            return None;
        }
        let mut prev = vec![usize::MAX; self.succ.len()];
        let mut queue = VecDeque::from([self.start]);
        prev[self.start] = self.start;
        while let Some(v) = queue.pop_front() {
            if v == to {
                let mut path = vec![v];
                let mut cur = v;
                while cur != self.start {
                    cur = prev[cur];
                    path.push(cur);
                }
                path.reverse();
                return Some(path);
            }
            for &w in &self.succ[v] {
                if w != avoid && prev[w] == usize::MAX {
                    prev[w] = v;
                    queue.push_back(w);
                }
            }
        }
        None
    }
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
                Some(i),
            );
            let single = Template::parse(s)
                .ok()
                .and_then(|t| t.single_reference().cloned());
            if let Some((ty, source)) = single.as_ref().and_then(|r| roots.static_type(r)) {
                if ty != "array" && ty != "any" {
                    c.error(
                        format!("{base}.items"),
                        format!(
                            "batch items of node `{}` must be an array, but `{s}` is {} ({source})",
                            node.id,
                            with_article(ty)
                        ),
                        Some(format!(
                            "make an array first with a `transform` node ({}) and batch over its `${{ID.result}}`",
                            if ty == "string" {
                                "filter `split(\"\\n\")` for lines, `fromjson` for JSON text"
                            } else {
                                "e.g. filter `[.]`"
                            }
                        )),
                    );
                }
            }
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
    shapes: &'a HashMap<&'a str, Arc<NodeShape>>,
    flow: Flow,
    /// Roots read as free `${NAME}` parameters (neither input nor node).
    free: std::cell::RefCell<HashSet<String>>,
}

/// Output declarations of a known node shape.
fn outputs_of(shape: Option<&NodeShape>) -> Option<&[Typed]> {
    match shape {
        Some(NodeShape::Known {
            outputs: Some(o), ..
        }) => Some(o),
        _ => None,
    }
}

/// A batch node's own keys and their types.
const BATCH_TYPES: &[(&str, &str)] = &[
    ("results", "array"),
    ("count", "integer"),
    ("failed", "integer"),
    ("errors", "array"),
];

impl Roots<'_> {
    fn is_builtin_workflow(&self, root: &str) -> bool {
        root == WORKFLOW_ROOT
            && !self.ir.inputs.contains_key(root)
            && !self.ids.contains_key(root)
            && !self.cx.params.contains(root)
    }

    /// The JSON type a reference statically has, and where that is declared.
    fn static_type(&self, r: &Reference) -> Option<(&str, String)> {
        if r.segments.contains(&Segment::All) {
            return Some(("array", "a `[*]` projection".into()));
        }
        if self.is_builtin_workflow(&r.root) {
            return Some(("string", "the workflow's directory".into()));
        }
        if let Some(spec) = self.ir.inputs.get(&r.root) {
            return match (spec.value_type, r.segments.is_empty()) {
                (Some(t), true) => Some((
                    t.as_str(),
                    format!("input `{}` is declared {}", r.root, t.as_str()),
                )),
                _ => None,
            };
        }
        let &idx = self.ids.get(r.root.as_str())?;
        let [Segment::Key(key)] = r.segments.as_slice() else {
            return None;
        };
        let node = &self.ir.nodes[idx];
        if node.batch.is_some() {
            let (_, ty) = BATCH_TYPES.iter().find(|(k, _)| k == key)?;
            return Some((
                ty,
                format!(
                    "batch node `{}` writes `{key}` as {}",
                    node.id,
                    with_article(ty)
                ),
            ));
        }
        let out = outputs_of(self.shapes.get(r.root.as_str()).map(Arc::as_ref))?
            .iter()
            .find(|o| o.name == *key)?;
        Some((
            out.ty.as_str(),
            format!(
                "`{}` writes `{key}` as {}",
                node.node_type,
                with_article(&out.ty)
            ),
        ))
    }

    /// `{{x}}`, `$(x)` and `{x}` naming something the workflow knows: another
    /// tool's template syntax, passed through as text.
    fn check_lookalikes(
        &self,
        c: &mut Collector,
        s: &str,
        json_path: &str,
        what: &str,
        locals: &[&str],
    ) {
        for (open, inner) in lookalikes(s) {
            let root_end = inner.find(['.', '[']).unwrap_or(inner.len());
            let root = &inner[..root_end];
            let known = locals.contains(&root)
                || self.ir.inputs.contains_key(root)
                || self.ids.contains_key(root)
                || self.cx.params.contains(root)
                || self.is_builtin_workflow(root);
            if !known {
                continue;
            }
            let written = match open {
                "{{" => format!("{{{{{inner}}}}}"),
                "$(" => format!("$({inner})"),
                _ => format!("{{{inner}}}"),
            };
            let message =
                format!("{what}: `{written}` is not a pflow template and stays literal text");
            let hint = format!("write `${{{inner}}}`");
            if open == "{" {
                c.warning(
                    json_path,
                    format!("{message} (did you mean `${{{inner}}}`?)"),
                );
            } else {
                c.error(json_path, message, Some(hint));
            }
        }
    }

    fn check_string(
        &self,
        c: &mut Collector,
        s: &str,
        json_path: &str,
        what: &str,
        locals: &[&str],
        reader: Option<usize>,
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
            if locals.contains(&root) || self.ir.inputs.contains_key(root) {
                continue;
            }
            if self.cx.params.contains(root) && !self.ids.contains_key(root) {
                self.free.borrow_mut().insert(root.to_string());
                continue;
            }
            if self.is_builtin_workflow(root) {
                if !matches!(r.segments.as_slice(), [Segment::Key(k)] if k == "dir") {
                    c.error(
                        json_path,
                        format!("{what}: `{r}`: the built-in `workflow` has only `dir` (the workflow file's directory)"),
                        Some("write `${workflow.dir}`".into()),
                    );
                }
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
                self.check_output_key(c, r, idx, json_path, what);
                if let Some(me) = reader {
                    self.check_runs_before(c, r, idx, me, json_path, what);
                }
                continue;
            }
            if self.cx.params.contains(root) {
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

impl Roots<'_> {
    /// `${node.key}` names a key the node writes (for a batch node: its own
    /// keys, and the item node's keys under `results[i]` / `results[*]`).
    fn check_output_key(
        &self,
        c: &mut Collector,
        r: &Reference,
        idx: usize,
        json_path: &str,
        what: &str,
    ) {
        let root = r.root.as_str();
        let node_outs = outputs_of(self.shapes.get(root).map(Arc::as_ref));
        let names = |o: &[Typed]| {
            o.iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let Some(key) = r.first_key() else { return };
        if key == "error" {
            return;
        }
        if self.ir.nodes[idx].batch.is_some() {
            if !BATCH_OUTPUTS.contains(&key) {
                c.error(
                    json_path,
                    format!("{what}: `{r}` names output `{key}`, which batch node `{root}` does not write"),
                    Some(format!("a batch node writes: {}; each item's outputs are in `${{{root}.results[*].KEY}}`", BATCH_OUTPUTS.join(", "))),
                );
                return;
            }
            if let (
                "results",
                [_, Segment::Index(_) | Segment::All, Segment::Key(item_key), ..],
                Some(outs),
            ) = (key, r.segments.as_slice(), node_outs)
            {
                if item_key != "error" && !outs.iter().any(|o| o.name == *item_key) {
                    c.error(
                        json_path,
                        format!("{what}: `{r}` names output `{item_key}`, which the items of node `{root}` do not write"),
                        Some(format!("each item of `{root}` writes: {}", names(outs))),
                    );
                }
            }
            return;
        }
        if let Some(outs) = node_outs {
            if !outs.iter().any(|o| o.name == key) {
                let hint = if outs.is_empty() {
                    format!("node `{root}` writes nothing readable (a nested workflow without outputs or output_mapping)")
                } else {
                    match did_you_mean(key, outs.iter().map(|o| o.name.as_str())) {
                        Some(s) => {
                            format!("did you mean `{s}`? node `{root}` writes: {}", names(outs))
                        }
                        None => format!("node `{root}` writes: {}", names(outs)),
                    }
                };
                c.error(
                    json_path,
                    format!(
                        "{what}: `{r}` names output `{key}`, which node `{root}` does not write"
                    ),
                    Some(hint),
                );
            }
        }
    }

    /// A node's template may only read a node that has run on every path to it.
    fn check_runs_before(
        &self,
        c: &mut Collector,
        r: &Reference,
        idx: usize,
        me: usize,
        json_path: &str,
        what: &str,
    ) {
        if !self.flow.reachable(me) {
            return; // warned about as unreachable
        }
        let root = &r.root;
        let me_id = &self.ir.nodes[me].id;
        if idx == me {
            c.error(
                json_path,
                format!("{what} reads `{r}`, the node's own output, which does not exist before it runs"),
                Some("read the value from the node that produces it".into()),
            );
            return;
        }
        if self.flow.dominates(idx, me) {
            return;
        }
        let path = self.flow.path_avoiding(me, idx).map(|p| {
            p.iter()
                .map(|&v| self.ir.nodes[v].id.as_str())
                .collect::<Vec<_>>()
                .join(" → ")
        });
        let via = match path {
            Some(p) => format!(" (the path {p} never runs `{root}`)"),
            None => String::new(),
        };
        c.error(
            json_path,
            format!("{what} reads `{r}`, but node `{root}` does not run before node `{me_id}` on every path to it{via}"),
            Some(if self.flow.reachable(idx) {
                format!("add an edge so `{root}` runs before `{me_id}`, or move the read to a node after `{root}`")
            } else {
                format!("node `{root}` is never reached from the start node: connect it with an edge")
            }),
        );
    }
}

/// `{{x.y}}`, `$(x.y)` and `{x.y}` in a string: the opening and the name path inside.
fn lookalikes(s: &str) -> Vec<(&'static str, String)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        // Only ASCII openers matter: skip the inside of multi-byte characters.
        let Some(here) = s.get(i..) else {
            i += 1;
            continue;
        };
        let (open, close, body) = if here.starts_with("{{") {
            ("{{", "}}", i + 2)
        } else if here.starts_with("$(") {
            ("$(", ")", i + 2)
        } else if b[i] == b'{' && (i == 0 || b[i - 1] != b'$') {
            ("{", "}", i + 1)
        } else {
            i += 1;
            continue;
        };
        let rest = &s[body..];
        let inner_len = rest
            .find(|ch: char| !(ch.is_ascii_alphanumeric() || "_-.[]* ".contains(ch)))
            .unwrap_or(rest.len());
        let inner = rest[..inner_len].trim();
        let closes = rest[inner_len..].starts_with(close)
            && !(open == "{" && rest[inner_len + 1..].starts_with('}'));
        let name_like = inner
            .chars()
            .next()
            .is_some_and(|ch| ch.is_ascii_alphabetic() || ch == '_')
            && !inner.contains(' ')
            && Template::parse(&format!("${{{inner}}}")).is_ok();
        if closes && name_like {
            out.push((open, inner.to_string()));
            i = body + inner_len + close.len();
        } else {
            i += open.len();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::parse_str;

    fn shape(n: &NodeIr) -> Arc<NodeShape> {
        Arc::new(match n.node_type.as_str() {
            "echo" => NodeShape::Known {
                required_params: vec![],
                params: None,
                outputs: None,
            },
            "read-file" => NodeShape::Known {
                required_params: vec!["file_path".into()],
                params: Some(vec![
                    Typed::new("file_path", "string"),
                    Typed::new("create", "boolean"),
                ]),
                outputs: Some(vec![Typed::new("content", "string")]),
            },
            _ => NodeShape::Unknown {
                known_types: vec!["echo".into(), "read-file".into()],
            },
        })
    }

    fn check(src: &str) -> Vec<Diagnostic> {
        let ir = parse_str(src, "t.json").unwrap();
        let cx = ValidationContext {
            stdin: Some(false),
            ..ValidationContext::lenient(&shape)
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

    fn check_cli(src: &str, given: &[&str], require_inputs: bool) -> Vec<String> {
        let ir = parse_str(src, "t.json").unwrap();
        let cx = ValidationContext {
            params: given.iter().map(|s| s.to_string()).collect(),
            stdin: Some(false),
            require_inputs,
            strict_params: true,
            ..ValidationContext::lenient(&shape)
        };
        validate(&ir, &cx)
            .into_iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| d.to_string())
            .collect()
    }

    #[test]
    fn unknown_params_and_types() {
        let all = check(
            r#"{"ir_version":"0.1.0","nodes":[{"id":"r","type":"read-file","params":{"file_path":"x","fiel_path":"y","create":3,"wait":1}},
            {"id":"e","type":"echo","params":{"anything":1}}],"edges":[{"from":"r","to":"e"}]}"#,
        );
        let all: Vec<String> = all.iter().map(|d| d.to_string()).collect();
        assert_eq!(all.len(), 3, "{all:?}");
        assert!(
            all[0].contains(
                "nodes[0].params.fiel_path: node `r` (read-file) has no param `fiel_path`"
            ),
            "{all:?}"
        );
        assert!(all[0].contains("did you mean `file_path`?"), "{all:?}");
        assert!(all[1].contains("nodes[0].params.create: param `create` of node `r` must be a boolean, got a number"), "{all:?}");
        // `wait` is not declared by this test's read-file: runtime params come from the caller.
        assert!(all[2].contains("no param `wait`"), "{all:?}");
    }

    #[test]
    fn lookalike_templates() {
        let d = check(
            r#"{"ir_version":"0.1.0","inputs":{"name":{"default":"x"}},"nodes":[{"id":"e","type":"echo","params":{"a":"hi {{ name }}","b":"$(name)","c":"{name}","d":"{{other}} ${name} awk '{print $1}' {}"}}]}"#,
        );
        let all: Vec<String> = d.iter().map(|d| d.to_string()).collect();
        assert_eq!(all.len(), 2, "{all:?}");
        assert!(
            all[0].contains("`{{name}}` is not a pflow template"),
            "{all:?}"
        );
        assert!(all[0].contains("hint: write `${name}`"), "{all:?}");
        assert!(all[1].contains("`$(name)`"), "{all:?}");
        assert_eq!(
            lookalikes("{name.x[0]}"),
            vec![("{", "name.x[0]".to_string())]
        );
        assert!(lookalikes("${name}").is_empty());
        // Multi-byte characters anywhere never split.
        for t in [
            "é{{a}}",
            "\u{9b}2J{x}",
            "{é}",
            "$(é)",
            "{{",
            "{",
            "$(",
            "日本{語}",
        ] {
            let _ = lookalikes(t);
        }
        assert_eq!(lookalikes("é{{a}}"), vec![("{{", "a".to_string())]);
        assert!(lookalikes("{{a}").is_empty() || lookalikes("{{a}")[0].0 == "{");
    }

    #[test]
    fn data_flow_needs_the_node_on_every_path() {
        // a -> b (default) or a -> c (error); d after both reads b: not on the error path.
        let d = check(
            r#"{"ir_version":"0.1.0","nodes":[{"id":"a","type":"echo"},{"id":"b","type":"echo"},{"id":"c","type":"echo"},
            {"id":"d","type":"echo","params":{"v":"${b.x}","w":"${a.y}","s":"${d.z}"}}],
            "edges":[{"from":"a","to":"b"},{"from":"a","to":"c","action":"error"},{"from":"b","to":"d"},{"from":"c","to":"d"}]}"#,
        );
        let all: Vec<String> = d.iter().map(|d| d.to_string()).collect();
        assert_eq!(all.len(), 2, "{all:?}");
        assert!(all[0].contains("node `b` does not run before node `d` on every path to it (the path a → c → d never runs `b`)"), "{all:?}");
        assert!(all[1].contains("the node's own output"), "{all:?}");
        // Reading a node that only runs later.
        let d = check(
            r#"{"ir_version":"0.1.0","nodes":[{"id":"a","type":"echo","params":{"v":"${b.x}"}},{"id":"b","type":"echo"}],"edges":[{"from":"a","to":"b"}]}"#,
        );
        assert!(
            d[0].message.contains("does not run before node `a`"),
            "{d:?}"
        );
        // A loop back to the start still has the start before everything.
        let d = check(
            r#"{"ir_version":"0.1.0","nodes":[{"id":"a","type":"echo"},{"id":"b","type":"echo","params":{"v":"${a.x}"}}],"edges":[{"from":"a","to":"b"},{"from":"b","to":"a","action":"again"}]}"#,
        );
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn batch_sources_and_projections() {
        let d = check(
            r#"{"ir_version":"0.1.0","inputs":{"s":{"type":"string"},"l":{"type":"array"}},"nodes":[
            {"id":"r","type":"read-file","params":{"file_path":"x"}},
            {"id":"b1","type":"echo","batch":{"items":"${r.content}"}},
            {"id":"b2","type":"echo","batch":{"items":"${s}"}},
            {"id":"b3","type":"read-file","batch":{"items":"${l}"},"params":{"file_path":"${item}"}},
            {"id":"e","type":"echo","params":{"ok":"${b3.results[*].content}","bad":"${b3.results[*].contnt}","bad2":"${b3.result}"}}],
            "edges":[{"from":"r","to":"b1"},{"from":"b1","to":"b2"},{"from":"b2","to":"b3"},{"from":"b3","to":"e"}]}"#,
        );
        let all: Vec<String> = d.iter().map(|d| d.to_string()).collect();
        assert_eq!(all.len(), 4, "{all:?}");
        assert!(all[0].contains("batch items of node `b1` must be an array, but `${r.content}` is a string (`read-file` writes `content` as a string)"), "{all:?}");
        assert!(all[1].contains("input `s` is declared string"), "{all:?}");
        assert!(
            all[2].contains("`contnt`, which the items of node `b3` do not write"),
            "{all:?}"
        );
        assert!(
            all[3].contains("which batch node `b3` does not write"),
            "{all:?}"
        );
    }

    #[test]
    fn command_line_inputs() {
        let wf = r#"{"ir_version":"0.1.0","inputs":{"path":{"type":"string","description":"file to read"},"n":{"type":"integer","default":1}},
            "nodes":[{"id":"e","type":"echo","params":{"v":"${path} ${free}"}}]}"#;
        let d = check_cli(wf, &["free"], true);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(
            d[0].starts_with("inputs.path: needs input `path` (string): file to read"),
            "{d:?}"
        );
        assert!(check_cli(wf, &["free"], false).is_empty());
        let d = check_cli(wf, &["path", "free", "nn"], true);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].contains("(command line): unknown input `nn`"), "{d:?}");
        assert!(d[0].contains("did you mean `n`?"), "{d:?}");
    }

    #[test]
    fn workflow_dir_is_built_in() {
        assert!(check(r#"{"ir_version":"0.1.0","nodes":[{"id":"r","type":"read-file","params":{"file_path":"${workflow.dir}/x"}}]}"#).is_empty());
        let d = check(
            r#"{"ir_version":"0.1.0","nodes":[{"id":"r","type":"read-file","params":{"file_path":"${workflow.path}"}}]}"#,
        );
        assert!(d[0].message.contains("has only `dir`"), "{d:?}");
    }

    #[test]
    fn reserved_names() {
        assert!(is_reserved("__index__"));
        assert!(!is_reserved("__"));
        assert!(!is_reserved("_a_"));
    }
}
