//! The accounting model: what a run used and what it cost, in one place.
//!
//! One token type ([`Tokens`]), one per-call cost ([`Cost`] with its
//! [`CostSource`]), one scope total that never passes a partial sum off as a
//! whole one ([`CostTotal`]), one span classifier ([`span::SpanKind`]) and one
//! aggregation ([`summary::Aggregator`]). The live metrics processor, the
//! trace commands, progress, history, stats and the estimate all read these;
//! no other module sums tokens or cost.

pub mod reported;
pub mod span;
pub mod stored;
pub mod summary;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

/// Token counts of one call or of many, normalised: `input` is every
/// prompt-side token (cache reads and writes included), `cache_write_1h` the
/// 1-hour share of `cache_write`, `reasoning` the share of `output`, `total`
/// input plus output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    #[serde(default)]
    pub total: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    #[serde(default)]
    pub cache_write_1h: u64,
    pub reasoning: u64,
}

impl Tokens {
    /// One call's counts (`total` filled in).
    pub fn call(input: u64, output: u64) -> Tokens {
        Tokens {
            input,
            output,
            total: input.saturating_add(output),
            ..Default::default()
        }
    }

    /// Input tokens neither read from nor written to the cache.
    pub fn uncached_input(&self) -> u64 {
        self.input
            .saturating_sub(self.cache_read)
            .saturating_sub(self.cache_write)
    }

    /// Output tokens that are not reasoning.
    pub fn visible_output(&self) -> u64 {
        self.output.saturating_sub(self.reasoning)
    }

    /// Adds `o`; `total` is recomputed from input and output, so a literal
    /// that left it at 0 still sums right.
    pub fn add(&mut self, o: &Tokens) {
        self.input = self.input.saturating_add(o.input);
        self.output = self.output.saturating_add(o.output);
        self.total = self.total.saturating_add(o.input.saturating_add(o.output));
        self.cache_read = self.cache_read.saturating_add(o.cache_read);
        self.cache_write = self.cache_write.saturating_add(o.cache_write);
        self.cache_write_1h = self.cache_write_1h.saturating_add(o.cache_write_1h);
        self.reasoning = self.reasoning.saturating_add(o.reasoning);
    }

    /// The sum of many counts.
    pub fn sum_all<'a>(all: impl IntoIterator<Item = &'a Tokens>) -> Tokens {
        let mut t = Tokens::default();
        for o in all {
            t.add(o);
        }
        t
    }

    pub fn sum(a: &Tokens, b: &Tokens) -> Tokens {
        let mut t = *a;
        t.total = t.input.saturating_add(t.output);
        t.add(b);
        t
    }
}

/// Which part of a call's bill a charge belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    Input,
    CacheRead,
    CacheWrite,
    Output,
}

/// One count of tokens at one rate (USD per million tokens), as the
/// pricing policy picks them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Charge {
    pub share: Share,
    pub tokens: u64,
    pub usd_per_mtok: f64,
}

/// What one call cost, by share of the bill, in USD.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CostBreakdown {
    pub input_usd: f64,
    pub cache_read_usd: f64,
    pub cache_write_usd: f64,
    pub output_usd: f64,
    pub total_usd: f64,
    /// The tier threshold applied, if any.
    pub tier_above: Option<u64>,
    /// What the cache-read tokens would have cost at the input rate, minus what they cost.
    pub cache_savings_usd: f64,
}

impl CostBreakdown {
    /// Sums `charges` into their shares and the shares into the total
    /// (`tier_above` and `cache_savings_usd` are the caller's to set).
    pub fn of_charges(charges: &[Charge]) -> CostBreakdown {
        let share = |s: Share| {
            charges
                .iter()
                .filter(|c| c.share == s)
                .map(|c| c.tokens as f64 * c.usd_per_mtok)
                .sum::<f64>()
                * 1e-6
        };
        let (input_usd, cache_read_usd, cache_write_usd, output_usd) = (
            share(Share::Input),
            share(Share::CacheRead),
            share(Share::CacheWrite),
            share(Share::Output),
        );
        CostBreakdown {
            input_usd,
            cache_read_usd,
            cache_write_usd,
            output_usd,
            total_usd: input_usd + cache_read_usd + cache_write_usd + output_usd,
            tier_above: None,
            cache_savings_usd: 0.0,
        }
    }
}

/// Where a call's cost came from (`pflow.cost.source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CostSource {
    /// The built-in price table.
    Table,
    /// A user's `--pricing` override.
    Override,
    /// The provider reported the cost.
    Provider,
    /// A model that costs nothing (echo).
    Free,
    /// A local model with no listed price (Ollama).
    Local,
    /// No price known for the model: the cost is unknown.
    Unpriced,
    /// The provider sent no usage: the cost is unknown.
    UnknownUsage,
    /// The attempt was refused before any work: nothing was billed.
    NotBilled,
}

impl CostSource {
    pub const ALL: [CostSource; 8] = [
        CostSource::Table,
        CostSource::Override,
        CostSource::Provider,
        CostSource::Free,
        CostSource::Local,
        CostSource::Unpriced,
        CostSource::UnknownUsage,
        CostSource::NotBilled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CostSource::Table => "table",
            CostSource::Override => "override",
            CostSource::Provider => "provider",
            CostSource::Free => "free",
            CostSource::Local => "local",
            CostSource::Unpriced => "unpriced",
            CostSource::UnknownUsage => "unknown_usage",
            CostSource::NotBilled => "not_billed",
        }
    }

    pub fn parse(s: &str) -> Option<CostSource> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// A cost from this source is a known amount.
    pub fn is_known(self) -> bool {
        !matches!(self, CostSource::Unpriced | CostSource::UnknownUsage)
    }
}

impl std::fmt::Display for CostSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The cost of one call, as priced by [`crate::pricing`].
#[derive(Debug, Clone, PartialEq)]
pub struct Cost {
    /// `None` when unknown (see `source`).
    pub usd: Option<f64>,
    pub source: CostSource,
    /// The price-table key that priced it (`pflow.cost.price_key`).
    pub key: Option<String>,
    /// What cache reads saved versus the input price.
    pub cache_savings_usd: f64,
}

impl Cost {
    /// A cost with no table price behind it (free, local, provider, not billed, unknown).
    pub fn plain(usd: Option<f64>, source: CostSource) -> Cost {
        Cost {
            usd,
            source,
            key: None,
            cache_savings_usd: 0.0,
        }
    }

    /// The amount, when it is known.
    pub fn known_usd(&self) -> Option<f64> {
        self.usd.filter(|_| self.source.is_known())
    }
}

/// The cost of a scope (a node, a model, a section, a run, a group of runs).
/// When any call in it is unpriced, `cost_usd` is `null`: the priced sum is
/// only a lower bound, and a number that looks whole would read as the cost.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CostTotal {
    /// The cost, `null` when incomplete.
    #[serde(rename = "cost_usd")]
    pub usd: Option<f64>,
    /// The sum of the calls with a known cost (equal to `cost_usd` when complete).
    #[serde(rename = "cost_usd_lower_bound")]
    pub lower_bound_usd: f64,
    /// False when some call's cost is unknown.
    #[serde(rename = "cost_complete")]
    pub complete: bool,
}

impl Default for CostTotal {
    fn default() -> Self {
        CostTotal::new(0.0, true)
    }
}

impl CostTotal {
    /// A total from a priced sum and whether every call was priced (rounded).
    pub fn new(priced_usd: f64, complete: bool) -> CostTotal {
        let lower = round_usd(priced_usd);
        CostTotal {
            usd: complete.then_some(lower),
            lower_bound_usd: lower,
            complete,
        }
    }

    /// Adds one call's cost; `None` (or an unknown source) makes the total incomplete.
    pub fn add_call(&mut self, usd: Option<f64>, source: Option<CostSource>) {
        let known = source.is_none_or(CostSource::is_known);
        match usd {
            Some(c) if known => self.lower_bound_usd += c,
            _ => self.complete = false,
        }
        self.usd = self.complete.then_some(self.lower_bound_usd);
    }

    /// Adds another scope.
    pub fn add(&mut self, o: &CostTotal) {
        self.lower_bound_usd += o.lower_bound_usd;
        self.complete &= o.complete;
        self.usd = self.complete.then_some(self.lower_bound_usd);
    }

    pub fn rounded(&self) -> CostTotal {
        CostTotal::new(self.lower_bound_usd, self.complete)
    }
}

/// Money and tokens a budget has spent or holds for calls in flight. The
/// guard adds and releases through it, so its tally is summed here too.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spend {
    pub usd: f64,
    pub tokens: u64,
}

impl Spend {
    pub fn new(usd: f64, tokens: u64) -> Spend {
        Spend { usd, tokens }
    }

    pub fn add(&mut self, o: Spend) {
        self.usd += o.usd;
        self.tokens += o.tokens;
    }

    pub fn plus(self, o: Spend) -> Spend {
        let mut s = self;
        s.add(o);
        s
    }

    /// What one call has recorded so far: its cost and its input plus output
    /// tokens (negative recorded values count as 0).
    pub fn of_call(usd: f64, input_tokens: i64, output_tokens: i64) -> Spend {
        let n = |v: i64| v.max(0) as u64;
        Spend::new(usd, Tokens::call(n(input_tokens), n(output_tokens)).total)
    }

    /// Moves the tally by how one call's figures changed from `before` to
    /// `after` (usage recorded again replaces, it does not add twice).
    pub fn shift(&mut self, before: Spend, after: Spend) {
        self.usd += after.usd - before.usd;
        self.tokens = (self.tokens + after.tokens).saturating_sub(before.tokens);
    }

    /// Takes `o` back out (a settled reservation), never below zero.
    pub fn release(&mut self, o: Spend) {
        self.usd = (self.usd - o.usd).max(0.0);
        self.tokens = self.tokens.saturating_sub(o.tokens);
    }
}

/// The worst-case tokens of one call: its prompt plus the most it may answer.
pub fn call_tokens(prompt: u64, max_output: u64) -> u64 {
    prompt + max_output
}

/// The low and high end of an estimate, in USD.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CostRange {
    pub low_usd: f64,
    pub high_usd: f64,
}

impl CostRange {
    /// Adds a part that counts in the low end (it runs on every successful run).
    pub fn add_low(&mut self, usd: f64) {
        self.low_usd += usd;
    }

    /// Adds a part that counts in the high end.
    pub fn add_high(&mut self, usd: f64) {
        self.high_usd += usd;
    }

    pub fn rounded(&self) -> CostRange {
        CostRange {
            low_usd: round_usd(self.low_usd),
            high_usd: round_usd(self.high_usd),
        }
    }
}

/// The sum of amounts that may be unknown: unknown when any of them is.
pub fn sum_known(amounts: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    amounts.into_iter().sum()
}

/// Costs are reported to 1e-10 USD, enough to keep per-token sums exact.
pub fn round_usd(v: f64) -> f64 {
    (v * 1e10).round() / 1e10
}

/// What one finished LLM call contributes to a scope.
#[derive(Debug, Clone, Default)]
pub struct CallUsage {
    pub tokens: Tokens,
    pub usd: Option<f64>,
    /// `pflow.cost.source`, parsed; `None` when no cost was recorded.
    pub cost_source: Option<CostSource>,
    /// `pflow.cost.source` as written (an unknown value is kept as is).
    pub cost_source_name: Option<String>,
    /// `pflow.usage.source`.
    pub usage_source: Option<String>,
    pub cache_savings_usd: f64,
    pub estimated: bool,
}

/// LLM usage of one scope: a node, a model, a section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Usage {
    pub llm_calls: u64,
    pub tokens: Tokens,
    #[serde(flatten)]
    pub cost: CostTotal,
    /// Calls whose tokens were counted locally because the provider reported none.
    pub estimated_calls: u64,
    /// Calls per `pflow.usage.source` (`provider`, `provider_stream`,
    /// `estimated`; `none` for an attempt that failed before any usage arrived).
    pub token_sources: IndexMap<String, u64>,
    /// Calls per `pflow.cost.source` (see [`CostSource`]; `none` when no cost was recorded).
    pub cost_sources: IndexMap<String, u64>,
    /// What the cache reads saved: their cost at the input price minus what they cost.
    pub cache_savings_usd: f64,
    /// Batch nodes only: how many items called an LLM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_items: Option<u64>,
    /// Batch nodes only: each item's usage (`fan[0]`, …); the fields above are their sum.
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub items: IndexMap<String, Usage>,
}

impl Default for Usage {
    fn default() -> Self {
        Usage {
            llm_calls: 0,
            tokens: Tokens::default(),
            cost: CostTotal::default(),
            estimated_calls: 0,
            token_sources: IndexMap::new(),
            cost_sources: IndexMap::new(),
            cache_savings_usd: 0.0,
            batch_items: None,
            items: IndexMap::new(),
        }
    }
}

impl Usage {
    /// Adds one call.
    pub fn add_call(&mut self, c: &CallUsage) {
        self.llm_calls += 1;
        self.estimated_calls += u64::from(c.estimated);
        let name = |s: &Option<String>| s.clone().unwrap_or_else(|| "none".into());
        *self.token_sources.entry(name(&c.usage_source)).or_insert(0) += 1;
        *self
            .cost_sources
            .entry(name(&c.cost_source_name))
            .or_insert(0) += 1;
        self.cache_savings_usd += c.cache_savings_usd;
        self.tokens.add(&c.tokens);
        self.cost.add_call(c.usd, c.cost_source);
    }

    /// Adds a whole scope (a batch item's usage under its batch).
    pub fn add(&mut self, o: &Usage) {
        self.llm_calls += o.llm_calls;
        self.estimated_calls += o.estimated_calls;
        for (k, v) in &o.token_sources {
            *self.token_sources.entry(k.clone()).or_insert(0) += v;
        }
        for (k, v) in &o.cost_sources {
            *self.cost_sources.entry(k.clone()).or_insert(0) += v;
        }
        self.cache_savings_usd += o.cache_savings_usd;
        self.tokens.add(&o.tokens);
        self.cost.add(&o.cost);
    }

    pub fn rounded(&self) -> Usage {
        Usage {
            cost: self.cost.rounded(),
            cache_savings_usd: round_usd(self.cache_savings_usd),
            ..self.clone()
        }
    }
}

/// Work a run did not redo: a node restored from a checkpoint or served from
/// the memo cache, with what its LLM calls cost when they were first made.
/// It is counted beside what the run spent, never in it, so reused work
/// neither reads as free nor as spent twice.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Reused {
    pub llm_calls: u64,
    pub tokens: Tokens,
    /// What those calls cost originally; `None` when any of them had no known price.
    pub cost_usd: Option<f64>,
}

impl Default for Reused {
    /// Nothing reused: no calls, $0 (a known amount).
    fn default() -> Self {
        Reused {
            llm_calls: 0,
            tokens: Tokens::default(),
            cost_usd: Some(0.0),
        }
    }
}

impl Reused {
    /// What a node's usage (as the aggregation summed it) reuses.
    pub fn of_usage(u: &Usage) -> Reused {
        Reused {
            llm_calls: u.llm_calls,
            tokens: u.tokens,
            cost_usd: u.cost.usd,
        }
    }

    pub fn add(&mut self, o: &Reused) {
        self.llm_calls += o.llm_calls;
        self.tokens.add(&o.tokens);
        self.cost_usd = sum_known([self.cost_usd, o.cost_usd]);
    }
}

/// The batch node a batch item path belongs to: `fan[3]` → `fan`,
/// `outer/fan[3]` → `outer/fan`; `None` for a path that is no batch item.
pub fn batch_of(path: &str) -> Option<&str> {
    let open = path.strip_suffix(']')?.rfind('[')?;
    let index = &path[open + 1..path.len() - 1];
    (!index.is_empty() && index.bytes().all(|b| b.is_ascii_digit())).then(|| &path[..open])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_cost_is_null_with_a_lower_bound() {
        let mut c = CostTotal::default();
        c.add_call(Some(0.001), Some(CostSource::Table));
        assert_eq!(c.usd, Some(0.001));
        c.add_call(None, Some(CostSource::Unpriced));
        c.add_call(Some(0.002), Some(CostSource::Override));
        assert_eq!(c.usd, None);
        assert!(!c.complete);
        assert!((c.lower_bound_usd - 0.003).abs() < 1e-15);
        let v = serde_json::to_value(c.rounded()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cost_usd": null, "cost_usd_lower_bound": 0.003, "cost_complete": false})
        );
        let mut ok = CostTotal::default();
        ok.add_call(Some(0.0), Some(CostSource::NotBilled));
        assert_eq!(ok.usd, Some(0.0));
    }

    #[test]
    fn tokens_sum_recomputes_total() {
        let mut t = Tokens::default();
        t.add(&Tokens {
            input: 3,
            output: 4,
            ..Default::default()
        });
        t.add(&Tokens::call(1, 1));
        assert_eq!(t.total, 9);
    }

    #[test]
    fn spend_adds_releases_and_shifts() {
        let mut s = Spend::default();
        s.add(Spend::new(0.002, 30));
        s.release(Spend::new(0.003, 40));
        assert_eq!(s, Spend::default());
        let before = Spend::of_call(0.001, 10, 5);
        s.add(before);
        // The same call recorded again with more usage replaces its figures.
        s.shift(before, Spend::of_call(0.0015, 10, 20));
        assert_eq!(s.tokens, 30);
        assert!((s.usd - 0.0015).abs() < 1e-15);
        assert_eq!(Spend::of_call(0.0, -3, 2).tokens, 2);
    }

    #[test]
    fn cost_range_and_known_sums() {
        let mut r = CostRange::default();
        r.add_low(0.1);
        r.add_high(0.1);
        r.add_high(0.2);
        let r = r.rounded();
        assert_eq!((r.low_usd, r.high_usd), (0.1, 0.3));
        assert_eq!(sum_known([Some(1.0), Some(2.0)]), Some(3.0));
        assert_eq!(sum_known([Some(1.0), None]), None);
        let all = [Tokens::call(1, 2), Tokens::call(3, 4)];
        assert_eq!(Tokens::sum_all(&all).total, 10);
    }

    #[test]
    fn cost_sources_round_trip() {
        for c in CostSource::ALL {
            assert_eq!(CostSource::parse(c.as_str()), Some(c));
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
    }

    #[test]
    fn batch_item_paths() {
        assert_eq!(batch_of("fan[3]"), Some("fan"));
        assert_eq!(batch_of("outer/fan[12]"), Some("outer/fan"));
        assert_eq!(batch_of("fan"), None);
        assert_eq!(batch_of("fan[x]"), None);
    }
}
