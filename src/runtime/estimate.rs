//! The pre-run cost estimate: walks a compiled workflow's LLM nodes (nested
//! workflows and batches included) without calling any model, resolves their
//! prompts against what is known before the run (inputs and defaults), and
//! prices each call with the budget guard's estimator: the low end is the
//! known prompt with one output token, the high end adds the most output the
//! call may produce. Earlier runs of the same workflow (same IR hash) that
//! called the same models, when the history has them, give the expected
//! value: their stored tokens priced at today's prices, the median.

use super::template::{lookup, render_into, CompiledValue, Scope};
use super::{CompiledKind, CompiledNode, CompiledWorkflow};
use crate::accounting::{round_usd as round, sum_known, CostRange, Tokens};
use crate::format::usd_compact as fmt_usd;
use crate::history::query::PastRuns;
use crate::ir::template::Part;
use crate::llm::budget;
use crate::llm::{self, LlmRequest, Provider};
use crate::pricing::PriceTable;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};

/// A param the estimate needs that is known before the run and wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EstimateError {
    #[error("node `{node}`: param `{param}` {message}")]
    Param {
        node: String,
        param: &'static str,
        message: String,
    },
    #[error("node `{node}`: {message}")]
    Model { node: String, message: String },
    #[error("node `{node}`: batch items {message}")]
    BatchItems { node: String, message: String },
}

/// The estimate of one LLM node (all of its batch items' calls together).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeEstimate {
    /// The node's path, nested workflows as `outer/inner`, without batch indexes.
    pub node: String,
    pub model: String,
    pub provider: &'static str,
    /// Counted with the tokenizer, chat overhead included, over all calls.
    pub prompt_tokens: u64,
    /// False when part of the prompt (another node's output, an unknown
    /// batch item) is only known at run time: then only the known text is counted.
    pub prompt_complete: bool,
    /// The most output all calls may produce.
    pub max_output_tokens: u64,
    /// `max_tokens` (the node's param), `override` (pricing file),
    /// `model_family`, `default` or `echo` (echo answers with the prompt).
    pub output_limit_source: &'static str,
    /// Calls counted: 1, or the batch's item count; null when the item count
    /// is only known at run time (one item is counted).
    pub items: Option<u64>,
    pub batch: bool,
    /// False for nodes that run only on a non-default action (e.g. an
    /// `error` edge): they count in the high end, not the low end.
    pub on_default_path: bool,
    pub low_usd: Option<f64>,
    pub high_usd: Option<f64>,
    /// Median cost of this node in earlier successful runs of the workflow.
    pub expected_usd: Option<f64>,
    pub expected_tokens: Option<u64>,
    pub history_runs: u64,
    /// The price-table key that matched (null for free, local and unpriced models).
    pub price_key: Option<String>,
    pub priced: bool,
    /// As `pflow.cost.source`: `table`, `override`, `free`, `local`, `unpriced`.
    pub cost_source: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Total {
    pub low_usd: f64,
    pub high_usd: f64,
    /// Median cost of earlier successful runs (null without history).
    pub expected_usd: Option<f64>,
    pub expected_tokens: Option<u64>,
    pub history_runs: u64,
    pub prompt_tokens: u64,
    pub max_output_tokens: u64,
    /// Every prompt known, every batch size known, every model priced: the
    /// range then bounds the run (loops aside).
    pub complete: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unpriced {
    pub node: String,
    pub model: String,
}

/// The whole estimate, as printed by `pflow run FILE --estimate`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    pub workflow: String,
    pub workflow_hash: String,
    pub nodes: Vec<NodeEstimate>,
    pub total: Total,
    /// Models with no known price: listed, not counted as $0.
    pub unpriced: Vec<Unpriced>,
    pub notes: Vec<String>,
}

/// A value known before the run, or the part of its text that is.
enum Known {
    Full(Value),
    Partial(String),
}

impl Known {
    fn text(&self) -> (String, bool) {
        match self {
            Known::Full(Value::String(s)) => (s.clone(), true),
            Known::Full(v @ (Value::Object(_) | Value::Array(_))) => {
                (serde_json::to_string_pretty(v).unwrap_or_default(), true)
            }
            Known::Full(v) => (v.to_string(), true),
            Known::Partial(s) => (s.clone(), false),
        }
    }
}

/// Resolves what can be: references to inputs and item locals; a reference
/// to anything else (another node's output) leaves the text partial.
fn resolve_known(cv: &CompiledValue, scope: &Scope<'_>) -> Known {
    match cv {
        CompiledValue::Literal(v) => Known::Full(v.clone()),
        CompiledValue::Template(t) => {
            if let Some(r) = t.single_reference() {
                return match lookup(r, scope) {
                    Ok(v) => Known::Full(v.into_owned()),
                    Err(_) => Known::Partial(String::new()),
                };
            }
            let mut out = String::new();
            let mut complete = true;
            for p in &t.parts {
                match p {
                    Part::Literal(s) => out.push_str(s),
                    Part::Ref(r) => match lookup(r, scope) {
                        Ok(v) => render_into(v.as_ref(), &mut out),
                        Err(_) => complete = false,
                    },
                }
            }
            if complete {
                Known::Full(Value::String(out))
            } else {
                Known::Partial(out)
            }
        }
        other => match other.resolve(scope, &mut |_, _| {}) {
            Ok(v) => Known::Full(v),
            Err(_) => Known::Partial(String::new()),
        },
    }
}

/// One call (one batch item) of one LLM node.
struct Call {
    path: String,
    model: String,
    provider: Provider,
    prompt_tokens: u64,
    prompt_complete: bool,
    max_output_tokens: u64,
    output_limit_source: &'static str,
    low: Option<f64>,
    high: Option<f64>,
    price_key: Option<String>,
    cost_source: &'static str,
    count_known: bool,
    on_default_path: bool,
    batch: bool,
}

struct Walk<'a> {
    prices: &'a PriceTable,
    calls: Vec<Call>,
    notes: Vec<String>,
    noted: HashSet<String>,
}

impl Walk<'_> {
    fn note(&mut self, n: String) {
        if self.noted.insert(n.clone()) {
            self.notes.push(n);
        }
    }
}

/// Where the walk is: inherited by nested workflows and batch items.
#[derive(Clone, Copy)]
struct At<'a> {
    prefix: &'a str,
    count_known: bool,
    on_default_path: bool,
}

/// One node as the walk meets it: at `path`, its templates resolved in
/// `scope`, `batch` when it runs once per batch item.
#[derive(Clone, Copy)]
struct Visit<'a> {
    node: &'a CompiledNode,
    path: &'a str,
    scope: &'a Scope<'a>,
    at: At<'a>,
    batch: bool,
}

impl<'a> Visit<'a> {
    fn new(
        node: &'a CompiledNode,
        path: &'a str,
        scope: &'a Scope<'a>,
        at: At<'a>,
        batch: bool,
    ) -> Self {
        Visit {
            node,
            path,
            scope,
            at,
            batch,
        }
    }
}

/// Estimates `wf` run with `inputs` (already completed with defaults).
/// `past`: earlier runs of the same workflow, for the expected value.
pub fn estimate(
    wf: &CompiledWorkflow,
    inputs: &Map<String, Value>,
    prices: &PriceTable,
    past: Option<&PastRuns>,
) -> Result<Estimate, EstimateError> {
    let mut walk = Walk {
        prices,
        calls: Vec::new(),
        notes: Vec::new(),
        noted: HashSet::new(),
    };
    let at = At {
        prefix: "",
        count_known: true,
        on_default_path: true,
    };
    walk_workflow(&mut walk, wf, inputs, at)?;
    let expected = past.map(|p| Expected::of(p, &walk.calls, prices));
    Ok(assemble(wf, walk, expected.as_ref()))
}

/// The expected value from earlier runs: medians over the runs that called
/// exactly the models this run will call, re-priced at today's prices.
#[derive(Debug, Default)]
struct Expected {
    runs: u64,
    /// `None` when a model of theirs has no price today.
    median_cost_usd: Option<f64>,
    median_tokens: Option<u64>,
    /// Per node (batch indexes removed); a run where a node did not run counts 0.
    nodes: HashMap<String, (Option<f64>, u64)>,
}

fn median_f64(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// What `tokens` of `model` cost at today's prices (`None`: unpriced).
fn price_now(model: &str, tokens: &crate::accounting::Tokens, prices: &PriceTable) -> Option<f64> {
    let (provider, bare) = llm::resolve_model(model).ok()?;
    prices
        .price(&crate::pricing::CallFacts {
            provider: provider.pricing(),
            model: &bare,
            response_model: None,
            provider_cost_usd: None,
            tokens: Some(*tokens),
        })
        .known_usd()
}

impl Expected {
    fn of(past: &PastRuns, calls: &[Call], prices: &PriceTable) -> Expected {
        let bare = |m: &str| llm::resolve_model(m).map_or(m.to_string(), |(_, b)| b);
        let now: std::collections::BTreeSet<String> =
            calls.iter().map(|c| bare(&c.model)).collect();
        let node_model: HashMap<String, &str> = calls
            .iter()
            .map(|c| {
                (
                    crate::history::query::strip_indexes(&c.path),
                    c.model.as_str(),
                )
            })
            .collect();
        let same: Vec<_> = past
            .runs
            .iter()
            .filter(|r| {
                let theirs: std::collections::BTreeSet<String> =
                    r.models.keys().map(|m| bare(m)).collect();
                theirs == now
            })
            .collect();
        let mut e = Expected {
            runs: same.len() as u64,
            ..Default::default()
        };
        if same.is_empty() {
            return e;
        }
        let costs: Option<Vec<f64>> = same
            .iter()
            .map(|r| {
                let costs = r.models.iter().map(|(m, t)| price_now(m, t, prices));
                sum_known(costs)
            })
            .collect();
        e.median_cost_usd = costs.and_then(median_f64).map(round);
        e.median_tokens = median_f64(
            same.iter()
                .map(|r| Tokens::sum_all(r.models.values()).total as f64)
                .collect(),
        )
        .map(|t| t.round() as u64);
        for (path, model) in &node_model {
            let zero = crate::accounting::Tokens::default();
            let of = |r: &&crate::history::query::PastRun| *r.nodes.get(path).unwrap_or(&zero);
            let cost: Option<Vec<f64>> = same
                .iter()
                .map(|r| price_now(model, &of(r), prices))
                .collect();
            let tokens = median_f64(same.iter().map(|r| of(r).total as f64).collect())
                .map_or(0, |t| t.round() as u64);
            e.nodes
                .insert(path.clone(), (cost.and_then(median_f64).map(round), tokens));
        }
        e
    }
}

/// Nodes reached from the start by `default` actions: the ones every successful run runs.
fn default_path(wf: &CompiledWorkflow) -> HashSet<usize> {
    let mut seen = HashSet::new();
    let mut cur = wf.start;
    while seen.insert(cur) {
        match wf.edges.get(&(cur, "default".to_string())) {
            Some(next) => cur = *next,
            None => break,
        }
    }
    seen
}

fn has_loop(wf: &CompiledWorkflow) -> bool {
    let mut next: HashMap<usize, Vec<usize>> = HashMap::new();
    for ((from, _), to) in &wf.edges {
        next.entry(*from).or_default().push(*to);
    }
    // 0 unvisited, 1 on the stack, 2 done.
    fn visit(n: usize, next: &HashMap<usize, Vec<usize>>, state: &mut Vec<u8>) -> bool {
        state[n] = 1;
        for &m in next.get(&n).into_iter().flatten() {
            if m >= state.len() {
                continue;
            }
            if state[m] == 1 || (state[m] == 0 && visit(m, next, state)) {
                return true;
            }
        }
        state[n] = 2;
        false
    }
    let mut state = vec![0u8; wf.nodes.len()];
    (0..wf.nodes.len()).any(|n| state[n] == 0 && visit(n, &next, &mut state))
}

fn walk_workflow(
    walk: &mut Walk<'_>,
    wf: &CompiledWorkflow,
    inputs: &Map<String, Value>,
    at: At<'_>,
) -> Result<(), EstimateError> {
    if has_loop(wf) {
        walk.note(format!(
            "workflow `{}` has a loop: each node is counted once, not once per iteration",
            wf.name
        ));
    }
    let on_path = default_path(wf);
    for (i, node) in wf.nodes.iter().enumerate() {
        let path = format!("{}{}", at.prefix, node.id);
        let at = At {
            on_default_path: at.on_default_path && on_path.contains(&i),
            ..at
        };
        let scope = Scope {
            store: inputs,
            locals: &[],
        };
        match &node.batch {
            None => walk_node(walk, Visit::new(node, &path, &scope, at, false))?,
            Some(b) => {
                let items = match resolve_known(&b.items, &scope) {
                    Known::Full(Value::Array(a)) => Some(a),
                    Known::Full(Value::String(s)) => match serde_json::from_str::<Value>(&s) {
                        Ok(Value::Array(a)) => Some(a),
                        _ => return Err(EstimateError::BatchItems {
                            node: path,
                            message:
                                "must resolve to an array (got a string that is not a JSON array)"
                                    .into(),
                        }),
                    },
                    Known::Full(other) => {
                        return Err(EstimateError::BatchItems {
                            node: path,
                            message: format!(
                                "must resolve to an array, got {}",
                                crate::nodes::params_type_name(&other)
                            ),
                        })
                    }
                    Known::Partial(_) => None,
                };
                match items {
                    Some(items) => {
                        for (idx, item) in items.iter().enumerate() {
                            let idx = json!(idx);
                            let locals = [(b.as_name.as_str(), item), ("__index__", &idx)];
                            let scope = Scope {
                                store: inputs,
                                locals: &locals,
                            };
                            walk_node(walk, Visit::new(node, &path, &scope, at, true))?;
                        }
                    }
                    None => {
                        if is_llm_work(node) {
                            walk.note(format!("batch `{path}`: its items are only known at run time; one item is counted"));
                        }
                        let at = At {
                            count_known: false,
                            ..at
                        };
                        walk_node(walk, Visit::new(node, &path, &scope, at, true))?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Whether the node is, or contains, an LLM node (worth a note about its batch).
fn is_llm_work(node: &CompiledNode) -> bool {
    match &node.kind {
        CompiledKind::Builtin(_) => node.node_type == "llm",
        CompiledKind::Workflow { child, .. } => child.nodes.iter().any(is_llm_work),
    }
}

fn walk_node(walk: &mut Walk<'_>, v: Visit<'_>) -> Result<(), EstimateError> {
    let Visit {
        node,
        path,
        scope,
        at,
        ..
    } = v;
    match &node.kind {
        CompiledKind::Builtin(_) if node.node_type == "llm" => {
            let call = llm_call(walk, v)?;
            walk.calls.push(call);
            Ok(())
        }
        CompiledKind::Builtin(_) => Ok(()),
        CompiledKind::Workflow {
            child,
            param_mapping,
            ..
        } => {
            let mut inputs = Map::new();
            for (k, cv) in param_mapping {
                if let Known::Full(v) = resolve_known(cv, scope) {
                    inputs.insert(k.clone(), v);
                }
            }
            for (name, spec) in &child.ir.inputs {
                if !inputs.contains_key(name) && !param_mapping.iter().any(|(k, _)| k == name) {
                    inputs.insert(name.clone(), spec.default.clone().unwrap_or(Value::Null));
                }
            }
            let prefix = format!("{path}/");
            walk_workflow(
                walk,
                child,
                &inputs,
                At {
                    prefix: &prefix,
                    ..at
                },
            )
        }
    }
}

fn param<'a>(node: &'a CompiledNode, name: &str) -> Option<&'a CompiledValue> {
    node.params.iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

fn llm_call(walk: &mut Walk<'_>, v: Visit<'_>) -> Result<Call, EstimateError> {
    let Visit {
        node,
        path,
        scope,
        at,
        batch,
    } = v;
    let text = |name: &str| param(node, name).map(|cv| resolve_known(cv, scope).text());
    let (prompt, mut complete) = text("prompt").unwrap_or_default();
    let system = text("system");
    if let Some((_, c)) = &system {
        complete &= c;
    }
    let model_name = match param(node, "model").map(|cv| resolve_known(cv, scope)) {
        None => llm::default_model(),
        Some(Known::Full(Value::String(s))) => s,
        Some(Known::Full(other)) => {
            return Err(EstimateError::Param {
                node: path.into(),
                param: "model",
                message: format!(
                    "must be a string, got {}",
                    crate::nodes::params_type_name(&other)
                ),
            })
        }
        Some(Known::Partial(_)) => {
            walk.note(format!(
                "node `{path}`: its model is only known at run time; not counted"
            ));
            return Ok(Call {
                path: path.into(),
                model: "(known at run time)".into(),
                provider: Provider::OpenAi,
                prompt_tokens: 0,
                prompt_complete: false,
                max_output_tokens: 0,
                output_limit_source: "default",
                low: None,
                high: None,
                price_key: None,
                cost_source: "unpriced",
                count_known: at.count_known,
                on_default_path: at.on_default_path,
                batch,
            });
        }
    };
    let (provider, model) = llm::resolve_model(&model_name).map_err(|e| EstimateError::Model {
        node: path.into(),
        message: e.to_string(),
    })?;
    let max_tokens = match param(node, "max_tokens").map(|cv| resolve_known(cv, scope)) {
        None => None,
        Some(Known::Full(v)) => match v.as_f64() {
            Some(m) if m >= 1.0 && m.fract() == 0.0 => Some(m as u64),
            _ => {
                return Err(EstimateError::Param {
                    node: path.into(),
                    param: "max_tokens",
                    message: "must be a positive integer".into(),
                })
            }
        },
        Some(Known::Partial(_)) => {
            walk.note(format!("node `{path}`: max_tokens is only known at run time; the model's output limit is assumed"));
            None
        }
    };
    // Images count by the provider's rule (budget::image_tokens); a list only
    // known at run time counts none.
    let images = match param(node, "images").map(|cv| resolve_known(cv, scope)) {
        Some(Known::Full(Value::Array(a))) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(_) => {
            walk.note(format!(
                "node `{path}`: its images are only known at run time: not counted in its prompt tokens"
            ));
            vec![]
        }
        None => vec![],
    };
    let req = LlmRequest {
        system: system.map(|(s, _)| s),
        max_tokens,
        images,
        ..LlmRequest::new(provider, model.clone(), prompt)
    };
    let high = budget::estimate(&req, walk.prices);
    let output_limit_source = match (provider, max_tokens) {
        (Provider::Echo, _) => "echo",
        (_, Some(_)) => "max_tokens",
        (p, None) => budget::output_limit(p, &model, walk.prices).1,
    };
    // The least the call can bill: the known prompt and one token of answer.
    let usage = llm::Usage {
        input_tokens: Some(high.prompt_tokens),
        output_tokens: Some(1),
        cache_read_tokens: Some(0),
        cache_write_tokens: Some(0),
        cache_write_1h_tokens: Some(0),
        reasoning_tokens: Some(0),
        source: llm::UsageSource::Estimated,
    };
    let low = llm::traced::price_call(provider, &model, None, &usage, walk.prices);
    Ok(Call {
        path: path.into(),
        model: model_name,
        provider,
        prompt_tokens: high.prompt_tokens,
        prompt_complete: complete,
        max_output_tokens: high.max_output_tokens,
        output_limit_source,
        low: low.usd,
        high: high.usd,
        price_key: low.key,
        cost_source: high.cost_source,
        count_known: at.count_known,
        on_default_path: at.on_default_path,
        batch,
    })
}

fn assemble(wf: &CompiledWorkflow, walk: Walk<'_>, past: Option<&Expected>) -> Estimate {
    let mut nodes: Vec<NodeEstimate> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let history_runs = past.map_or(0, |p| p.runs);
    for c in walk.calls {
        let priced = c.high.is_some();
        match index.get(&c.path) {
            Some(&i) => {
                let n = &mut nodes[i];
                let t = Tokens::sum(
                    &Tokens::call(n.prompt_tokens, n.max_output_tokens),
                    &Tokens::call(c.prompt_tokens, c.max_output_tokens),
                );
                (n.prompt_tokens, n.max_output_tokens) = (t.input, t.output);
                n.prompt_complete &= c.prompt_complete;
                n.items = n.items.zip(c.count_known.then_some(1)).map(|(a, b)| a + b);
                n.low_usd = sum_known([n.low_usd, c.low]);
                n.high_usd = sum_known([n.high_usd, c.high]);
                n.priced &= priced;
            }
            None => {
                let hist = past.filter(|p| p.runs > 0).map(|p| {
                    p.nodes
                        .get(&crate::history::query::strip_indexes(&c.path))
                        .copied()
                        .unwrap_or_default()
                });
                index.insert(c.path.clone(), nodes.len());
                nodes.push(NodeEstimate {
                    node: c.path,
                    model: c.model,
                    provider: c.provider.as_str(),
                    prompt_tokens: c.prompt_tokens,
                    prompt_complete: c.prompt_complete,
                    max_output_tokens: c.max_output_tokens,
                    output_limit_source: c.output_limit_source,
                    items: c.count_known.then_some(1),
                    batch: c.batch,
                    on_default_path: c.on_default_path,
                    low_usd: c.low,
                    high_usd: c.high,
                    expected_usd: hist.filter(|_| priced).and_then(|h| h.0),
                    expected_tokens: hist.map(|h| h.1),
                    history_runs,
                    price_key: c.price_key,
                    priced,
                    cost_source: c.cost_source,
                });
            }
        }
    }
    for n in &mut nodes {
        n.low_usd = n.low_usd.map(round);
        n.high_usd = n.high_usd.map(round);
    }
    let mut notes = walk.notes;
    let mut unpriced = Vec::new();
    let mut total = Total {
        low_usd: 0.0,
        high_usd: 0.0,
        expected_usd: past.filter(|p| p.runs > 0).and_then(|p| p.median_cost_usd),
        expected_tokens: past.filter(|p| p.runs > 0).and_then(|p| p.median_tokens),
        history_runs,
        prompt_tokens: 0,
        max_output_tokens: 0,
        complete: true,
    };
    let mut tokens = Tokens::default();
    let mut range = CostRange::default();
    for n in &nodes {
        tokens.add(&Tokens::call(n.prompt_tokens, n.max_output_tokens));
        total.complete &= n.prompt_complete && n.items.is_some() && n.priced;
        if !n.priced {
            unpriced.push(Unpriced {
                node: n.node.clone(),
                model: n.model.clone(),
            });
            continue;
        }
        if n.on_default_path {
            range.add_low(n.low_usd.unwrap_or(0.0));
        } else {
            notes.push(format!("node `{}` runs only on a non-default action (e.g. an error edge): counted in the high end only", n.node));
        }
        range.add_high(n.high_usd.unwrap_or(0.0));
    }
    if nodes.iter().any(|n| !n.prompt_complete) {
        notes.push("partial prompts: text from other nodes' outputs is only known at run time; low and high count the known text only".into());
    }
    let range = range.rounded();
    (total.low_usd, total.high_usd) = (range.low_usd, range.high_usd);
    (total.prompt_tokens, total.max_output_tokens) = (tokens.input, tokens.output);
    Estimate {
        workflow: wf.name.clone(),
        workflow_hash: crate::history::WorkflowIdent::of(&wf.ir).hash,
        nodes,
        total,
        unpriced,
        notes,
    }
}

impl Estimate {
    /// The low end the `--max-cost` pre-check compares with the budget.
    pub fn low_usd(&self) -> f64 {
        self.total.low_usd
    }

    /// The total line: `estimate: $0.0004 – $0.0120 (expected $0.0031 from 5 earlier runs)`.
    pub fn total_line(&self) -> String {
        let t = &self.total;
        let mut s = format!("estimate: {} – {}", fmt_usd(t.low_usd), fmt_usd(t.high_usd));
        if let Some(e) = t.expected_usd {
            let runs = if t.history_runs == 1 { "run" } else { "runs" };
            s.push_str(&format!(
                " (expected {} from {} earlier {runs})",
                fmt_usd(e),
                t.history_runs
            ));
        }
        if !self.unpriced.is_empty() {
            s.push_str(" + unpriced");
        }
        s
    }

    /// The text table: one row per LLM node, the total line, unpriced models and notes.
    pub fn to_text(&self) -> String {
        let usd = |v: Option<f64>| v.map_or("-".to_string(), fmt_usd);
        let mut rows = vec![[
            "node".to_string(),
            "model".into(),
            "prompt tokens".into(),
            "max output".into(),
            "low".into(),
            "high".into(),
            "expected".into(),
        ]];
        for n in &self.nodes {
            let mut node = n.node.clone();
            match n.items {
                Some(k) if n.batch => node.push_str(&format!(" ×{k}")),
                None => node.push_str(" ×?"),
                _ => {}
            }
            rows.push([
                node,
                n.model.clone(),
                format!(
                    "{}{}",
                    n.prompt_tokens,
                    if n.prompt_complete { "" } else { " (partial)" }
                ),
                n.max_output_tokens.to_string(),
                usd(n.low_usd),
                usd(n.high_usd),
                usd(n.expected_usd),
            ]);
        }
        let mut widths = [0usize; 7];
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        if self.nodes.is_empty() {
            out.push_str("no LLM nodes: the workflow calls no model\n");
        } else {
            for r in &rows {
                let line: Vec<String> = r
                    .iter()
                    .zip(widths)
                    .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
                    .collect();
                out.push_str(line.join("  ").trim_end());
                out.push('\n');
            }
        }
        out.push_str(&self.total_line());
        out.push('\n');
        for u in &self.unpriced {
            out.push_str(&format!(
                "unpriced: {} (node {}) — not counted\n",
                u.model, u.node
            ));
        }
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{CompileContext, Runtime};
    use std::path::Path;

    fn compile(wf: Value) -> std::sync::Arc<CompiledWorkflow> {
        let rt = Runtime::default();
        let ir = crate::ir::from_value(&wf, "test.json").unwrap();
        let cx = CompileContext {
            params: ["topic".to_string(), "topics".to_string()].into(),
            stdin: Some(false),
            ..Default::default()
        };
        rt.compile(ir, "test.json", Path::new("."), &cx).unwrap()
    }

    fn est(wf: Value, inputs: Value) -> Estimate {
        let wf = compile(wf);
        estimate(
            &wf,
            inputs.as_object().unwrap(),
            PriceTable::builtin(),
            None,
        )
        .unwrap()
    }

    fn tokens(s: &str) -> u64 {
        crate::llm::count_tokens(s).unwrap() + 7
    }

    #[test]
    fn known_inputs_resolve_and_other_nodes_outputs_are_partial() {
        let e = est(
            json!({"ir_version": "0.1.0",
                "inputs": {"topic": {"type": "string", "required": true}},
                "nodes": [
                    {"id": "a", "type": "llm", "params": {"prompt": "Write about ${topic}.", "model": "gpt-4o", "max_tokens": 100}},
                    {"id": "b", "type": "llm", "params": {"prompt": "Shorten: ${a.response}", "model": "gpt-4o", "max_tokens": 50}}
                ],
                "edges": [{"from": "a", "to": "b"}]}),
            json!({"topic": "tides"}),
        );
        let a = &e.nodes[0];
        assert_eq!(a.prompt_tokens, tokens("Write about tides."));
        assert!(a.prompt_complete);
        assert_eq!(
            (a.max_output_tokens, a.output_limit_source),
            (100, "max_tokens")
        );
        // gpt-4o: $2.50 in, $10 out per million.
        let low = a.prompt_tokens as f64 * 2.5e-6 + 10e-6;
        let high = a.prompt_tokens as f64 * 2.5e-6 + 100.0 * 10e-6;
        assert!((a.low_usd.unwrap() - low).abs() < 1e-12, "{a:?}");
        assert!((a.high_usd.unwrap() - high).abs() < 1e-12, "{a:?}");
        assert_eq!(a.price_key.as_deref(), Some("gpt-4o"));
        let b = &e.nodes[1];
        assert_eq!(b.prompt_tokens, tokens("Shorten: "));
        assert!(!b.prompt_complete);
        assert!(!e.total.complete);
        assert!(
            e.notes.iter().any(|n| n.contains("partial")),
            "{:?}",
            e.notes
        );
        let sum = a.low_usd.unwrap() + b.low_usd.unwrap();
        assert!((e.total.low_usd - sum).abs() < 1e-9);
        let text = e.to_text();
        assert!(text.contains("(partial)"), "{text}");
        assert!(text.contains("estimate: $"), "{text}");
        assert_eq!(e.total.expected_usd, None);
    }

    #[test]
    fn batches_multiply_by_known_items_and_count_one_unknown() {
        let node = |items: Value| {
            json!({"ir_version": "0.1.0",
                "inputs": {"topics": {"type": "array", "required": false, "default": ["x", "y", "z"]}},
                "nodes": [
                    {"id": "src", "type": "echo", "params": {"list": [1, 2]}},
                    {"id": "each", "type": "llm", "batch": {"items": items},
                     "params": {"prompt": "About ${item}", "model": "gpt-4o-mini", "max_tokens": 10}}
                ],
                "edges": [{"from": "src", "to": "each"}]})
        };
        let e = est(node(json!("${topics}")), json!({"topics": ["x", "y", "z"]}));
        let n = &e.nodes[0];
        assert_eq!((n.items, n.batch), (Some(3), true));
        assert_eq!(n.prompt_tokens, 3 * tokens("About x"));
        assert_eq!(n.max_output_tokens, 30);
        assert!(n.prompt_complete);
        assert!(e.total.complete);
        assert!(e.to_text().contains("each ×3"));
        let e = est(node(json!("${src.list}")), json!({}));
        let n = &e.nodes[0];
        assert_eq!(n.items, None);
        assert_eq!(n.max_output_tokens, 10);
        assert!(!n.prompt_complete);
        assert!(e.notes.iter().any(|n| n.contains("one item is counted")));
        assert!(e.to_text().contains("each ×?"));
    }

    #[test]
    fn nested_workflows_get_mapped_inputs_and_paths() {
        let e = est(
            json!({"ir_version": "0.1.0",
                "inputs": {"topic": {"type": "string", "required": true}},
                "nodes": [{"id": "outer", "type": "workflow", "params": {
                    "param_mapping": {"t": "${topic}"},
                    "workflow_ir": {"ir_version": "0.1.0",
                        "inputs": {"t": {"type": "string", "required": true}, "style": {"type": "string", "required": false, "default": "terse"}},
                        "nodes": [{"id": "inner", "type": "llm", "params": {"prompt": "${style}: ${t}", "model": "gpt-4o", "max_tokens": 5}}]}}}]}),
            json!({"topic": "moons"}),
        );
        assert_eq!(e.nodes.len(), 1);
        assert_eq!(e.nodes[0].node, "outer/inner");
        assert_eq!(e.nodes[0].prompt_tokens, tokens("terse: moons"));
        assert!(e.nodes[0].prompt_complete);
    }

    #[test]
    fn unpriced_models_are_listed_not_counted() {
        let e = est(
            json!({"ir_version": "0.1.0", "nodes": [
                {"id": "a", "type": "llm", "params": {"prompt": "hi", "model": "gpt-4o", "max_tokens": 10}},
                {"id": "b", "type": "llm", "params": {"prompt": "hi", "model": "openai/model-x"}}
            ], "edges": [{"from": "a", "to": "b"}]}),
            json!({}),
        );
        let b = &e.nodes[1];
        assert!(!b.priced);
        assert_eq!(
            (b.low_usd, b.high_usd, b.cost_source),
            (None, None, "unpriced")
        );
        assert_eq!(
            (b.max_output_tokens, b.output_limit_source),
            (budget::DEFAULT_MAX_OUTPUT_TOKENS, "default")
        );
        assert_eq!(
            e.unpriced,
            [Unpriced {
                node: "b".into(),
                model: "openai/model-x".into()
            }]
        );
        assert_eq!(e.total.high_usd, round(e.nodes[0].high_usd.unwrap()));
        assert!(!e.total.complete);
        let text = e.to_text();
        assert!(
            text.contains("unpriced: openai/model-x (node b) — not counted"),
            "{text}"
        );
    }

    #[test]
    fn error_branches_count_in_high_only_and_loops_are_noted() {
        let e = est(
            json!({"ir_version": "0.1.0", "nodes": [
                {"id": "a", "type": "llm", "params": {"prompt": "hi", "model": "gpt-4o", "max_tokens": 10}},
                {"id": "fix", "type": "llm", "params": {"prompt": "fix it", "model": "gpt-4o", "max_tokens": 10}}
            ], "edges": [{"from": "a", "to": "fix", "action": "error"}, {"from": "fix", "to": "a"}]}),
            json!({}),
        );
        assert!(e.nodes[0].on_default_path);
        assert!(!e.nodes[1].on_default_path);
        assert_eq!(e.total.low_usd, round(e.nodes[0].low_usd.unwrap()));
        let high = e.nodes[0].high_usd.unwrap() + e.nodes[1].high_usd.unwrap();
        assert_eq!(e.total.high_usd, round(high));
        assert!(e.notes.iter().any(|n| n.contains("loop")), "{:?}", e.notes);
    }

    #[test]
    fn history_medians_become_the_expected_value() {
        let wf = compile(json!({"ir_version": "0.1.0", "nodes": [
            {"id": "a", "type": "llm", "params": {"prompt": "hi", "model": "gpt-4o", "max_tokens": 10}}]}));
        // Three earlier runs on gpt-4o (14 in, 37 out: $0.000405 today), one on echo.
        let run = |model: &str, input: u64, output: u64| {
            let t = crate::accounting::Tokens::call(input, output);
            crate::history::query::PastRun {
                models: [(model.to_string(), t)].into(),
                nodes: [("a".to_string(), t)].into(),
            }
        };
        let past = PastRuns {
            runs: vec![
                run("gpt-4o", 14, 37),
                run("echo", 2, 2),
                run("gpt-4o", 14, 37),
                run("gpt-4o", 20, 100),
            ],
        };
        let e = estimate(&wf, &Map::new(), PriceTable::builtin(), Some(&past)).unwrap();
        assert_eq!(e.nodes[0].expected_usd, Some(0.000405));
        assert_eq!(e.nodes[0].expected_tokens, Some(51));
        assert_eq!(e.nodes[0].history_runs, 3);
        assert_eq!(
            (e.total.expected_usd, e.total.history_runs),
            (Some(0.000405), 3)
        );
        assert!(
            e.total_line()
                .ends_with("(expected $0.000405 from 3 earlier runs)"),
            "{}",
            e.total_line()
        );
    }

    #[test]
    fn bad_known_params_are_errors() {
        let wf = compile(json!({"ir_version": "0.1.0", "nodes": [
            {"id": "a", "type": "llm", "params": {"prompt": "hi", "model": "gpt-4o", "max_tokens": 0}}]}));
        let e = estimate(&wf, &Map::new(), PriceTable::builtin(), None).unwrap_err();
        assert!(
            e.to_string().contains("node `a`: param `max_tokens`"),
            "{e}"
        );
        // A literal unknown model is a validation error; one from an input is found here.
        let wf = compile(json!({"ir_version": "0.1.0", "nodes": [
            {"id": "a", "type": "llm", "params": {"prompt": "hi", "model": "${topic}"}}]}));
        let inputs: Map<String, Value> = [("topic".to_string(), json!("mystery-model"))]
            .into_iter()
            .collect();
        let e = estimate(&wf, &inputs, PriceTable::builtin(), None).unwrap_err();
        assert!(matches!(e, EstimateError::Model { .. }), "{e}");
    }
}
