//! Insight from one saved trace: what set the run's wall time and which
//! nodes cost the most ([`critical`]), how well the prompt cache worked
//! ([`cache`]), and what to change ([`suggest`]). It reads the spans a
//! viewer loaded and the run's metrics from the accounting model; it sums
//! no tokens or cost of its own. `trace show`, `trace report` (HTML and
//! Markdown) render it.

pub mod cache;
pub mod critical;
pub mod suggest;

pub use cache::{CacheFigures, CacheReport, MissedPrefix};
pub use critical::{BatchReport, PathStep};
pub use suggest::{Suggestion, SuggestionKind};

use crate::pricing::PriceTable;
use crate::traces::Trace;
use serde::Serialize;

/// The top lists hold this many nodes.
pub const TOP: usize = 5;

/// A node's figure and its share of the run's.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeShare {
    pub node: String,
    /// Milliseconds, USD or tokens, by list.
    pub value: f64,
    /// Of the run's wall time, cost or tokens (0–1).
    pub share: f64,
    /// Cost lists: false when some call of the node had no known price
    /// (`value` is then a lower bound).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub lower_bound: bool,
}

/// Everything one trace says about where time and money went.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Insight {
    /// The run's wall time (first span start to last span end).
    pub wall_ms: f64,
    /// Spans on the critical path, root first, each followed by its own path.
    pub critical_path: Vec<PathStep>,
    pub top_self_time: Vec<NodeShare>,
    pub top_cost: Vec<NodeShare>,
    pub top_tokens: Vec<NodeShare>,
    pub batches: Vec<BatchReport>,
    pub cache: CacheReport,
    pub suggestions: Vec<Suggestion>,
}

fn top(mut v: Vec<NodeShare>) -> Vec<NodeShare> {
    v.retain(|n| n.value > 0.0);
    v.sort_by(|a, b| b.value.total_cmp(&a.value).then(a.node.cmp(&b.node)));
    v.truncate(TOP);
    v
}

fn share(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        part / whole
    } else {
        0.0
    }
}

/// The insight of a loaded trace, its cache write and savings figures priced
/// from `table` (the built-in table with the user's overrides).
pub fn analyze(trace: &Trace, table: &PriceTable) -> Insight {
    let m = trace.metrics();
    let tree = critical::Tree::new(trace);
    let wall_ms = trace.end_ns().saturating_sub(trace.start_ns()) as f64 / 1e6;
    let critical_path = critical::critical_path(&tree);
    let top_self_time = top(critical::node_self_times(&tree)
        .into_iter()
        .map(|(node, ms)| NodeShare {
            share: share(ms, wall_ms),
            node,
            value: ms,
            lower_bound: false,
        })
        .collect());
    let sections = || {
        m.workflow
            .node_usage
            .iter()
            .chain(m.planner.iter().flat_map(|p| p.node_usage.iter()))
    };
    let total_cost = m.total.cost.lower_bound_usd;
    let top_cost = top(sections()
        .map(|(node, u)| NodeShare {
            node: node.clone(),
            value: u.cost.lower_bound_usd,
            share: share(u.cost.lower_bound_usd, total_cost),
            lower_bound: !u.cost.complete,
        })
        .collect());
    let top_tokens = top(sections()
        .map(|(node, u)| NodeShare {
            node: node.clone(),
            value: u.tokens.total as f64,
            share: share(u.tokens.total as f64, m.total.tokens_total as f64),
            lower_bound: false,
        })
        .collect());
    let batches = critical::batches(&tree);
    let cache = cache::analyze(&tree, &m, table);
    let suggestions = suggest::suggest(&tree, wall_ms, &batches, &cache.missed_prefixes);
    Insight {
        wall_ms,
        critical_path,
        top_self_time,
        top_cost,
        top_tokens,
        batches,
        cache,
        suggestions,
    }
}

impl Insight {
    /// The span ids on the critical path.
    pub fn critical_ids(&self) -> std::collections::HashSet<&str> {
        self.critical_path
            .iter()
            .map(|s| s.span_id.as_str())
            .collect()
    }

    /// The node spans on the critical path, in order (what a reader follows).
    pub fn critical_nodes(&self) -> impl Iterator<Item = &PathStep> {
        self.critical_path.iter().filter(|s| s.node.is_some())
    }
}

impl Insight {
    /// The critical path's nodes as one line: `a 12.0 ms → slow 2.01 s →
    /// fan 1.50 s [fan[0] 201.0 ms → fan[3] 905.1 ms] → c 9.8 ms` (the
    /// nodes on the path inside a node, in brackets after it). A long run
    /// of siblings (a batch's items one after another) keeps its first and
    /// last [`CHAIN_KEEP`] and says how many it left out.
    pub fn chain_text(&self) -> String {
        // (level, text) per node on the path, in path order.
        let mut steps: Vec<(usize, String)> = Vec::new();
        let mut open: Vec<usize> = Vec::new();
        for s in self.critical_nodes() {
            while open.last().is_some_and(|d| *d >= s.depth) {
                open.pop();
            }
            steps.push((
                open.len(),
                format!(
                    "{} {}",
                    s.node.as_deref().unwrap_or(&s.name),
                    crate::format::duration_ms(s.duration_ms)
                ),
            ));
            open.push(s.depth);
        }
        let steps = elide_runs(steps);
        let mut out = String::new();
        let mut prev: Option<usize> = None;
        for (level, text) in steps {
            match prev {
                None => {}
                Some(p) if level > p => out.push_str(" ["),
                Some(p) => {
                    out.push_str(&"]".repeat(p - level));
                    out.push_str(" → ");
                }
            }
            out.push_str(&text);
            prev = Some(level);
        }
        out.push_str(&"]".repeat(prev.unwrap_or(0)));
        out
    }
}

/// How many steps at each end of a long run of sibling steps the chain keeps.
pub const CHAIN_KEEP: usize = 3;

/// Runs of more than `2 * CHAIN_KEEP + 1` consecutive steps at one level
/// (none with steps below it) shortened to their ends and a count.
fn elide_runs(steps: Vec<(usize, String)>) -> Vec<(usize, String)> {
    let mut out = Vec::with_capacity(steps.len().min(64));
    let mut i = 0;
    while i < steps.len() {
        let level = steps[i].0;
        let mut j = i + 1;
        while j < steps.len() && steps[j].0 == level {
            j += 1;
        }
        // steps[i..j] share a level; the last may have steps below it.
        let run = j - i;
        if run > 2 * CHAIN_KEEP + 1 {
            out.extend(steps[i..i + CHAIN_KEEP].iter().cloned());
            out.push((level, format!("… {} more …", run - 2 * CHAIN_KEEP)));
            out.extend(steps[j - CHAIN_KEEP..j].iter().cloned());
        } else {
            out.extend(steps[i..j].iter().cloned());
        }
        i = j;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_runs_of_siblings_keep_their_ends() {
        let steps: Vec<(usize, String)> = std::iter::once((0, "fan".to_string()))
            .chain((0..10).map(|i| (1, format!("fan[{i}]"))))
            .chain(std::iter::once((0, "c".to_string())))
            .collect();
        let texts: Vec<String> = elide_runs(steps).into_iter().map(|s| s.1).collect();
        assert_eq!(
            texts,
            [
                "fan",
                "fan[0]",
                "fan[1]",
                "fan[2]",
                "… 4 more …",
                "fan[7]",
                "fan[8]",
                "fan[9]",
                "c"
            ]
        );
        let short = vec![(0, "a".to_string()), (0, "b".to_string())];
        assert_eq!(elide_runs(short.clone()), short);
    }
}
