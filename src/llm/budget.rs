//! The budget guard: `--max-cost` / `--max-tokens-total` for a whole run
//! (workflow and planner). Before every LLM attempt the guard estimates the
//! call's worst case (prompt tokens counted with the tokenizer, output = the
//! request's `max_tokens` or the model's output limit, priced with the price
//! table) and refuses it when spent + in-flight reservations + estimate would
//! pass a limit; after the attempt it settles what was actually billed, and
//! once actual spend passes a limit no further call or node starts.
//!
//! The guard keeps its own tally of what [`super::traced::call`] priced — the
//! same numbers the spans carry, so it equals the metrics totals — which keeps
//! it working with `OTEL_SDK_DISABLED=true`.
//!
//! Reservations learn from what was billed: the local tokenizer may count
//! far fewer prompt tokens than a provider bills (another tokenizer, system
//! or tool overhead, images). Once a node (or, failing that, the model) has
//! billed calls, later reservations scale the prompt by the observed ratio
//! of billed to estimated prompt tokens (never below 1). While a node's first
//! calls are still unbilled, each further concurrent call is held at twice
//! its estimate; a call that does not fit while others are in flight waits
//! for them to settle ([`Budget::admit`]) instead of guessing.
//!
//! ```
//! use pflow::llm::budget::{Budget, BudgetLimits, CallEstimate};
//! let b = Budget::new(BudgetLimits { max_cost_usd: Some(0.01), ..Default::default() });
//! let est = CallEstimate { prompt_tokens: 10, max_output_tokens: 100, usd: Some(0.006), prompt_usd: Some(0.0001), cost_source: "table" };
//! let r = b.reserve("gpt-4o", Some("a"), || est.clone()).unwrap();
//! // A second call in flight would pass the budget: refused before it is made.
//! assert!(b.reserve("gpt-4o", Some("b"), || est.clone()).is_err());
//! r.settle(Some(0.002), 40);
//! assert_eq!(b.spent().tokens, 40);
//! ```

use super::{LlmRequest, Provider};
use crate::accounting::{Spend, Tokens};
use crate::pricing::PriceTable;
use serde::Serialize;
use std::sync::Mutex;

/// Output limit assumed for a model no family below matches (and no
/// `max_output_tokens` override names): generous, so the estimate stays a
/// worst case for most models.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 32_768;

/// Known families' maximum output tokens, matched as name prefixes (the most
/// specific first). From the providers' model pages; a `max_output_tokens`
/// field in the pricing override file wins.
const OUTPUT_LIMITS: &[(&str, u64)] = &[
    ("gpt-4o", 16_384),
    ("chatgpt-4o", 16_384),
    ("gpt-4.1", 32_768),
    ("gpt-4-turbo", 4_096),
    ("gpt-4", 8_192),
    ("gpt-3.5", 4_096),
    ("gpt-5", 128_000),
    ("o1-mini", 65_536),
    ("o1", 100_000),
    ("o3", 100_000),
    ("o4", 100_000),
    ("claude-opus-4-5", 64_000),
    ("claude-opus-4", 32_000),
    ("claude-sonnet-4", 64_000),
    ("claude-haiku-4", 64_000),
    ("claude-3-7-sonnet", 64_000),
    ("claude-3-5", 8_192),
    ("claude-3", 4_096),
    ("gemini-3", 65_536),
    ("gemini-2.5", 65_536),
    ("gemini-2.0", 8_192),
    ("gemini-1.5", 8_192),
];

/// Tokens a chat request adds around its messages (role markers, reply
/// priming), per OpenAI's counting guide: keeps the estimate at or above
/// what providers bill for short prompts.
const MESSAGE_OVERHEAD_TOKENS: u64 = 4;
const REPLY_OVERHEAD_TOKENS: u64 = 3;

/// Float slack so a budget of exactly N estimated calls admits N.
const EPSILON_USD: f64 = 1e-12;

/// The limits of one run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BudgetLimits {
    pub max_cost_usd: Option<f64>,
    pub max_tokens_total: Option<u64>,
    /// Under a cost limit, call models with no known price anyway (counted as $0).
    pub allow_unpriced: bool,
}

/// A bad limit on the command line or in the environment.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BudgetError {
    #[error("invalid {origin} `{value}`: {why}")]
    Invalid {
        origin: String,
        value: String,
        why: &'static str,
    },
}

impl BudgetLimits {
    /// Limits from the flags, else `PFLOW_MAX_COST` / `PFLOW_MAX_TOKENS_TOTAL`
    /// (read through `env`); a flag wins over its variable.
    pub fn resolve(
        max_cost: Option<&str>,
        max_tokens_total: Option<&str>,
        allow_unpriced: bool,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<BudgetLimits, BudgetError> {
        let pick = |flag: Option<&str>, flag_name: &str, var: &str| -> Option<(String, String)> {
            match flag {
                Some(v) => Some((flag_name.to_string(), v.to_string())),
                None => env(var)
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| (var.to_string(), v)),
            }
        };
        let max_cost_usd = match pick(max_cost, "--max-cost", "PFLOW_MAX_COST") {
            None => None,
            Some((origin, value)) => {
                Some(parse_usd(&value).map_err(|why| BudgetError::Invalid {
                    origin,
                    value: value.clone(),
                    why,
                })?)
            }
        };
        let max_tokens_total = match pick(
            max_tokens_total,
            "--max-tokens-total",
            "PFLOW_MAX_TOKENS_TOTAL",
        ) {
            None => None,
            Some((origin, value)) => {
                Some(parse_tokens(&value).map_err(|why| BudgetError::Invalid {
                    origin,
                    value: value.clone(),
                    why,
                })?)
            }
        };
        Ok(BudgetLimits {
            max_cost_usd,
            max_tokens_total,
            allow_unpriced,
        })
    }

    /// Whether any limit is set.
    pub fn is_set(&self) -> bool {
        self.max_cost_usd.is_some() || self.max_tokens_total.is_some()
    }
}

fn parse_usd(s: &str) -> Result<f64, &'static str> {
    let t = s.trim();
    let t = t.strip_prefix('$').unwrap_or(t);
    match t.parse::<f64>() {
        Ok(v) if !v.is_finite() => Err("expected a finite number of US dollars, e.g. 0.50"),
        Ok(v) if v < 0.0 => Err("a budget cannot be negative; expected US dollars, e.g. 0.50"),
        Ok(v) => Ok(v),
        Err(_) => Err("expected a number of US dollars, e.g. 0.50"),
    }
}

fn parse_tokens(s: &str) -> Result<u64, &'static str> {
    match s.trim().parse::<i128>() {
        Ok(v) if v < 1 => Err("expected a positive whole number of tokens, e.g. 10000"),
        Ok(v) => u64::try_from(v).map_err(|_| "too large"),
        Err(_) => Err("expected a positive whole number of tokens, e.g. 10000"),
    }
}

/// The worst case of one call.
#[derive(Debug, Clone, PartialEq)]
pub struct CallEstimate {
    pub prompt_tokens: u64,
    pub max_output_tokens: u64,
    /// `None`: the model has no known price.
    pub usd: Option<f64>,
    /// The prompt's share of `usd` (what scales when the provider bills more prompt tokens).
    pub prompt_usd: Option<f64>,
    /// As `pflow.cost.source`: `table`, `override`, `free`, `local`, `unpriced`.
    pub cost_source: &'static str,
}

impl CallEstimate {
    pub fn tokens(&self) -> u64 {
        crate::accounting::call_tokens(self.prompt_tokens, self.max_output_tokens)
    }

    /// The estimate with the prompt scaled by `ratio` (billed / counted, at least 1).
    fn scaled(&self, ratio: f64) -> CallEstimate {
        let ratio = ratio.max(1.0);
        let extra_usd = self.prompt_usd.unwrap_or(0.0) * (ratio - 1.0);
        CallEstimate {
            prompt_tokens: (self.prompt_tokens as f64 * ratio).ceil() as u64,
            usd: self.usd.map(|u| u + extra_usd),
            prompt_usd: self.prompt_usd.map(|p| p * ratio),
            ..self.clone()
        }
    }
}

/// The output limit assumed for `model`: a `max_output_tokens` override, a
/// known family's limit, else [`DEFAULT_MAX_OUTPUT_TOKENS`].
pub fn max_output_tokens(provider: Provider, model: &str, prices: &PriceTable) -> u64 {
    output_limit(provider, model, prices).0
}

/// [`max_output_tokens`] with where it came from: `override` (the pricing
/// file's `max_output_tokens`), `model_family` (a known family's limit) or
/// `default` ([`DEFAULT_MAX_OUTPUT_TOKENS`]).
pub fn output_limit(provider: Provider, model: &str, prices: &PriceTable) -> (u64, &'static str) {
    if let Some(n) = prices
        .lookup(model, provider.pricing().prefix)
        .and_then(|p| p.price.max_output_tokens)
    {
        return (n, "override");
    }
    let name = model
        .rsplit('/')
        .next()
        .unwrap_or(model)
        .to_ascii_lowercase();
    OUTPUT_LIMITS
        .iter()
        .find(|(prefix, _)| name.starts_with(prefix))
        .map_or((DEFAULT_MAX_OUTPUT_TOKENS, "default"), |(_, n)| {
            (*n, "model_family")
        })
}

/// The pixel size of a local image, read from its header; `None` for a URL
/// or a file whose size cannot be read (then the worst case is counted).
fn image_size(path: &str) -> Option<(u64, u64)> {
    if path.starts_with("http://") || path.starts_with("https://") {
        return None;
    }
    let s = imagesize::size(path).ok()?;
    Some((s.width as u64, s.height as u64))
}

/// How a provider counts an image in the prompt, by its documented rule
/// (each provider's entry in [`Provider::image_rule`] names its rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageRule {
    /// Images cost nothing (echo).
    Free,
    /// A fixed count per image (Gemini: 258).
    PerImage(u64),
    /// width × height / `pixels_per_token`, capped at `max` where the
    /// provider resizes (Anthropic: 750, ~1,600 for ~1.15 megapixels).
    Pixels { pixels_per_token: u64, max: u64 },
    /// OpenAI high detail: scaled to fit 2048×2048, then its shortest side
    /// to 768; 85 + 170 per 512-px tile.
    Tiles,
}

/// The prompt tokens one image costs under `provider`'s rule; `size`
/// unknown counts the most the rule can give.
pub fn image_tokens(provider: Provider, size: Option<(u64, u64)>) -> u64 {
    match provider.image_rule() {
        ImageRule::Free => 0,
        ImageRule::PerImage(n) => n,
        ImageRule::Pixels {
            pixels_per_token,
            max,
        } => size.map_or(max, |(w, h)| {
            w.saturating_mul(h).div_ceil(pixels_per_token).min(max)
        }),
        ImageRule::Tiles => {
            // The largest high-detail image: 768 × 2048 after scaling, 2 × 4 tiles.
            let (mut w, mut h) = size.map_or((768.0, 2048.0), |(w, h)| (w as f64, h as f64));
            let fit = (2048.0 / w.max(h)).min(1.0);
            (w, h) = (w * fit, h * fit);
            let shortest = (768.0 / w.min(h)).min(1.0);
            (w, h) = (w * shortest, h * shortest);
            let tiles = (w / 512.0).ceil() as u64 * (h / 512.0).ceil() as u64;
            85 + 170 * tiles
        }
    }
}

/// The worst case of `req`: prompt tokens (o200k_base, plus the chat
/// overhead), the most output it may produce, priced like an actual call.
pub fn estimate(req: &LlmRequest, prices: &PriceTable) -> CallEstimate {
    let count = |s: &str| super::count_tokens(s).unwrap_or(s.len() as u64);
    let prompt_tokens = crate::accounting::reported::prompt_tokens(
        [
            count(&req.prompt),
            MESSAGE_OVERHEAD_TOKENS,
            REPLY_OVERHEAD_TOKENS,
        ]
        .into_iter()
        .chain(
            req.system
                .iter()
                .flat_map(|s| [count(s), MESSAGE_OVERHEAD_TOKENS]),
        )
        .chain(req.json_schema.iter().map(|s| count(&s.to_string())))
        .chain(
            req.images
                .iter()
                .map(|i| image_tokens(req.provider, image_size(i))),
        ),
    );
    let max_output_tokens = match (req.provider, req.max_tokens) {
        // The echo model answers with the prompt: it never says more.
        (Provider::Echo, m) => {
            let echoed = count(&req.prompt);
            m.map_or(echoed, |m| m.min(echoed))
        }
        (_, Some(m)) => m,
        (p, None) => max_output_tokens(p, &req.model, prices),
    };
    let usage = |reasoning| super::Usage {
        input_tokens: Some(prompt_tokens),
        output_tokens: Some(max_output_tokens),
        cache_read_tokens: Some(0),
        cache_write_tokens: Some(0),
        cache_write_1h_tokens: Some(0),
        reasoning_tokens: Some(reasoning),
        source: super::UsageSource::Estimated,
    };
    // Output priced at the dearer of the output and reasoning rates.
    let plain = super::traced::price_call(req.provider, &req.model, None, &usage(0), prices);
    let prompt_only = super::traced::price_call(
        req.provider,
        &req.model,
        None,
        &super::Usage {
            output_tokens: Some(0),
            ..usage(0)
        },
        prices,
    );
    let reasoning = super::traced::price_call(
        req.provider,
        &req.model,
        None,
        &usage(max_output_tokens),
        prices,
    );
    let usd = match (plain.usd, reasoning.usd) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    CallEstimate {
        prompt_tokens,
        max_output_tokens,
        usd,
        prompt_usd: prompt_only.usd,
        cost_source: plain.source.as_str(),
    }
}

/// When the guard stopped the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stopped {
    /// A call was refused: it could have passed a limit.
    BeforeCall,
    /// A finished call's actual spend passed a limit.
    AfterCall,
    /// Before the workflow started: the low end of its pre-run cost estimate
    /// already passed `--max-cost` (see [`crate::runtime::estimate`]).
    Estimate,
}

impl Stopped {
    pub fn as_str(self) -> &'static str {
        match self {
            Stopped::BeforeCall => "before_call",
            Stopped::AfterCall => "after_call",
            Stopped::Estimate => "estimate",
        }
    }
}

/// Which limit stopped the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    MaxCost,
    MaxTokensTotal,
    /// A model with no known price under `--max-cost` (without `--allow-unpriced`).
    UnpricedModel,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MaxCost => "max_cost",
            Reason::MaxTokensTotal => "max_tokens_total",
            Reason::UnpricedModel => "unpriced_model",
        }
    }
}

/// The `error.type` of budget stops.
pub const KIND_EXCEEDED: &str = "budget_exceeded";
/// The `error.type` of an unpriced model refused under a cost budget.
pub const KIND_UNPRICED: &str = "budget_unpriced";

/// Why the guard stopped the run, with the numbers for the message, the JSON
/// output and the root span.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", self.message())]
pub struct BudgetExceeded {
    pub reason: Reason,
    pub stopped: Stopped,
    pub spent_usd: f64,
    pub tokens_used: u64,
    /// Held by other calls in flight when this one was refused.
    pub reserved_usd: f64,
    pub reserved_tokens: u64,
    pub max_cost_usd: Option<f64>,
    pub max_tokens_total: Option<u64>,
    /// The node whose call was refused or crossed the limit (`None`: the planner).
    pub node: Option<String>,
    pub model: String,
    pub next_call_estimate_usd: Option<f64>,
    pub next_call_estimate_tokens: Option<u64>,
    /// [`Stopped::Estimate`]: the low end of the workflow's cost estimate.
    pub estimate_low_usd: Option<f64>,
}

impl BudgetExceeded {
    /// `budget_exceeded` or `budget_unpriced`.
    pub fn kind(&self) -> &'static str {
        match self.reason {
            Reason::UnpricedModel => KIND_UNPRICED,
            _ => KIND_EXCEEDED,
        }
    }

    fn place(&self) -> String {
        match &self.node {
            Some(n) => format!("node `{n}`"),
            None => "the planner".into(),
        }
    }

    pub fn message(&self) -> String {
        let place = self.place();
        let model = &self.model;
        let max_usd = crate::format::usd_compact(self.max_cost_usd.unwrap_or(0.0));
        let max_tokens = self.max_tokens_total.unwrap_or(0);
        let spent = crate::format::usd_compact(self.spent_usd);
        match (self.reason, self.stopped) {
            (_, Stopped::Estimate) => {
                let planned = if self.spent_usd > 0.0 {
                    format!(" ({spent} of it already spent)")
                } else {
                    String::new()
                };
                format!(
                    "estimated cost at least {} exceeds the budget {max_usd}{planned}; the workflow was not started (see `pflow run FILE --estimate`)",
                    crate::format::usd_compact(
                        Spend::new(self.spent_usd, 0)
                            .plus(Spend::new(self.estimate_low_usd.unwrap_or(0.0), 0))
                            .usd
                    )
                )
            }
            (Reason::UnpricedModel, _) => format!(
                "budget: model `{model}` in {place} has no known price, so --max-cost cannot bound it (spent {spent} of {max_usd} budget); add its price to $PFLOW_HOME/pricing.json (or --pricing FILE), or pass --allow-unpriced to count it as $0"
            ),
            (Reason::MaxCost, Stopped::BeforeCall) => {
                let held = if self.reserved_usd > 0.0 {
                    format!(" ({} more held by calls in flight)", crate::format::usd_compact(self.reserved_usd))
                } else {
                    String::new()
                };
                format!(
                    "budget exceeded: spent {spent} of {max_usd} budget{held}; next call to {model} in {place} would cost up to {}",
                    crate::format::usd_compact(self.next_call_estimate_usd.unwrap_or(0.0))
                )
            }
            (Reason::MaxCost, Stopped::AfterCall) => format!(
                "budget exceeded: spent {spent} of {max_usd} budget after the call to {model} in {place}; no further LLM call or node runs"
            ),
            (Reason::MaxTokensTotal, Stopped::BeforeCall) => {
                let held = if self.reserved_tokens > 0 {
                    format!(" ({} more held by calls in flight)", self.reserved_tokens)
                } else {
                    String::new()
                };
                format!(
                    "token budget exceeded: used {} of {max_tokens} tokens{held}; next call to {model} in {place} would use up to {} tokens",
                    self.tokens_used,
                    self.next_call_estimate_tokens.unwrap_or(0)
                )
            }
            (Reason::MaxTokensTotal, Stopped::AfterCall) => format!(
                "token budget exceeded: used {} of {max_tokens} tokens after the call to {model} in {place}; no further LLM call or node runs",
                self.tokens_used
            ),
        }
    }
}

/// Actual spend so far.
pub type Spent = Spend;

/// Billed against counted prompt tokens of the settled calls of one node or model.
#[derive(Debug, Default, Clone, Copy)]
struct Observed {
    /// Calls settled (billed, whatever their usage said).
    settled: u64,
    /// Prompt tokens billed (`input`).
    prompt: Tokens,
    /// Prompt tokens the tokenizer counted for the same calls (`input`).
    counted: Tokens,
}

impl Observed {
    fn ratio(&self) -> Option<f64> {
        (self.counted.input > 0).then(|| self.prompt.input as f64 / self.counted.input as f64)
    }
}

#[derive(Debug, Default)]
struct State {
    spent: Spend,
    /// What calls in flight hold.
    reserved: Spend,
    stop: Option<BudgetExceeded>,
    unpriced_allowed: Vec<String>,
    /// Per node key (`node:{path}`, a batch item under its batch) and per model (`model:{name}`).
    observed: std::collections::HashMap<String, Observed>,
    /// Calls in flight per node key.
    in_flight: std::collections::HashMap<String, u64>,
}

/// Whether a call may start now.
#[derive(Debug)]
pub enum Admission<'a> {
    /// It fits: go, and settle the reservation after.
    Go(Reservation<'a>),
    /// It does not fit while other calls are in flight: ask again once they settle.
    Wait,
    /// Refused; the run stops.
    Refused(Box<BudgetExceeded>),
}

fn node_key(node: Option<&str>, model: &str) -> String {
    match node {
        Some(n) => format!(
            "node:{}\u{0}{model}",
            crate::accounting::batch_of(n).unwrap_or(n)
        ),
        None => format!("node:\u{0}{model}"),
    }
}

fn model_key(model: &str) -> String {
    format!("model:{model}")
}

/// The guard of one run, shared by every node and the planner.
#[derive(Debug, Default)]
pub struct Budget {
    limits: BudgetLimits,
    state: Mutex<State>,
}

impl Budget {
    pub fn new(limits: BudgetLimits) -> Self {
        Budget {
            limits,
            state: Mutex::new(State::default()),
        }
    }

    /// No limits: every call goes ahead (spend is still tallied).
    pub fn unlimited() -> Self {
        Self::default()
    }

    pub fn limits(&self) -> &BudgetLimits {
        &self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent between statements: a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks a call against the limits and holds its estimate until settled.
    /// `estimate` runs only when a limit is set. Once refused (or once actual
    /// spend has passed a limit) every later call is refused with the same stop.
    pub fn reserve(
        &self,
        model: &str,
        node: Option<&str>,
        estimate: impl FnOnce() -> CallEstimate,
    ) -> Result<Reservation<'_>, Box<BudgetExceeded>> {
        match self.admission(model, node, estimate, false) {
            Admission::Go(r) => Ok(r),
            Admission::Refused(e) => Err(e),
            // Not asked to wait: `admission` refuses instead.
            Admission::Wait => unreachable!("admission without waiting never waits"),
        }
    }

    /// [`Budget::reserve`], but a call that does not fit while other calls
    /// are in flight waits for them ([`Admission::Wait`]) rather than being
    /// refused: what they bill decides whether it fits.
    pub fn admit(
        &self,
        model: &str,
        node: Option<&str>,
        estimate: impl FnOnce() -> CallEstimate,
    ) -> Admission<'_> {
        self.admission(model, node, estimate, true)
    }

    fn admission(
        &self,
        model: &str,
        node: Option<&str>,
        estimate: impl FnOnce() -> CallEstimate,
        may_wait: bool,
    ) -> Admission<'_> {
        let key = node_key(node, model);
        let reservation = |usd: f64, tokens: u64, counted: u64| Reservation {
            budget: self,
            usd,
            tokens,
            counted_prompt_tokens: counted,
            key: key.clone(),
            model: model.to_string(),
            node: node.map(str::to_string),
            settled: false,
        };
        if !self.limits.is_set() {
            return Admission::Go(reservation(0.0, 0, 0));
        }
        let counted = estimate();
        let mut s = self.lock();
        if let Some(stop) = &s.stop {
            return Admission::Refused(Box::new(stop.clone()));
        }
        let node_seen = s.observed.get(&key).copied().unwrap_or_default();
        let observed = node_seen
            .ratio()
            .or_else(|| s.observed.get(&model_key(model)).and_then(Observed::ratio));
        let mut est = counted.scaled(observed.unwrap_or(1.0));
        // Nothing billed yet for this node while its first calls are out:
        // hold each further one at twice its estimate.
        let unbilled_siblings =
            node_seen.settled == 0 && s.in_flight.get(&key).is_some_and(|n| *n > 0);
        if unbilled_siblings {
            est.usd = est.usd.map(|u| u * 2.0);
            est.prompt_tokens *= 2;
            est.max_output_tokens *= 2;
        }
        // Counted, not read off the float sum: a residue of rounding is no call in flight.
        let busy = s.in_flight.values().any(|n| *n > 0);
        let refuse_or_wait = |s: &mut State, e: Box<BudgetExceeded>| {
            if may_wait && busy {
                Admission::Wait
            } else {
                s.stop = Some((*e).clone());
                Admission::Refused(e)
            }
        };
        let refuse = |s: &State, reason| -> Box<BudgetExceeded> {
            Box::new(BudgetExceeded {
                reason,
                stopped: Stopped::BeforeCall,
                spent_usd: s.spent.usd,
                tokens_used: s.spent.tokens,
                reserved_usd: s.reserved.usd,
                reserved_tokens: s.reserved.tokens,
                max_cost_usd: self.limits.max_cost_usd,
                max_tokens_total: self.limits.max_tokens_total,
                node: node.map(str::to_string),
                model: model.to_string(),
                next_call_estimate_usd: est.usd,
                next_call_estimate_tokens: Some(est.tokens()),
                estimate_low_usd: None,
            })
        };
        let mut usd = est.usd.unwrap_or(0.0);
        if let Some(max) = self.limits.max_cost_usd {
            if est.usd.is_none() {
                if !self.limits.allow_unpriced {
                    let e = refuse(&s, Reason::UnpricedModel);
                    s.stop = Some((*e).clone());
                    return Admission::Refused(e);
                }
                usd = 0.0;
                if !s.unpriced_allowed.iter().any(|m| m == model) {
                    s.unpriced_allowed.push(model.to_string());
                }
            }
            if s.spent.plus(s.reserved).plus(Spend::new(usd, 0)).usd > max + EPSILON_USD {
                let e = refuse(&s, Reason::MaxCost);
                return refuse_or_wait(&mut s, e);
            }
        }
        let tokens = est.tokens();
        if let Some(max) = self.limits.max_tokens_total {
            if s.spent
                .plus(s.reserved)
                .plus(Spend::new(0.0, tokens))
                .tokens
                > max
            {
                let e = refuse(&s, Reason::MaxTokensTotal);
                return refuse_or_wait(&mut s, e);
            }
        }
        s.reserved.add(Spend::new(usd, tokens));
        *s.in_flight.entry(key.clone()).or_insert(0) += 1;
        Admission::Go(reservation(usd, tokens, counted.prompt_tokens))
    }

    fn release(s: &mut State, r: &Reservation<'_>) {
        s.reserved.release(Spend::new(r.usd, r.tokens));
        if r.budget.limits.is_set() {
            if let Some(n) = s.in_flight.get_mut(&r.key) {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// The pre-run check: refuses the workflow (and stops the run for good)
    /// when what is already spent plus the low end of its estimate passes
    /// `--max-cost`. `None`: the run may start.
    pub fn refuse_estimate(&self, low_usd: f64) -> Option<Box<BudgetExceeded>> {
        let max = self.limits.max_cost_usd?;
        let mut s = self.lock();
        if s.spent.plus(Spend::new(low_usd, 0)).usd <= max + EPSILON_USD {
            return None;
        }
        let stop = BudgetExceeded {
            reason: Reason::MaxCost,
            stopped: Stopped::Estimate,
            spent_usd: s.spent.usd,
            tokens_used: s.spent.tokens,
            reserved_usd: s.reserved.usd,
            reserved_tokens: s.reserved.tokens,
            max_cost_usd: Some(max),
            max_tokens_total: self.limits.max_tokens_total,
            node: None,
            model: String::new(),
            next_call_estimate_usd: None,
            next_call_estimate_tokens: None,
            estimate_low_usd: Some(low_usd),
        };
        s.stop = Some(stop.clone());
        Some(Box::new(stop))
    }

    /// Why the run was stopped, if it was.
    pub fn stopped(&self) -> Option<BudgetExceeded> {
        self.lock().stop.clone()
    }

    /// Actual spend so far (settled calls).
    pub fn spent(&self) -> Spent {
        self.lock().spent
    }

    /// One line per unpriced model called under `--allow-unpriced`.
    pub fn warnings(&self) -> Vec<String> {
        self.lock()
            .unpriced_allowed
            .iter()
            .map(|m| format!("model `{m}` has no known price: its calls were estimated at $0 under --max-cost (--allow-unpriced), so the budget could not bound them"))
            .collect()
    }
}

/// A call's estimate, held against the limits while the call is in flight.
/// Dropped unsettled (the call was cancelled), it is released.
#[must_use = "settle the reservation with what the call cost"]
#[derive(Debug)]
pub struct Reservation<'a> {
    budget: &'a Budget,
    usd: f64,
    tokens: u64,
    /// The tokenizer's prompt count, before any learned ratio.
    counted_prompt_tokens: u64,
    key: String,
    model: String,
    node: Option<String>,
    settled: bool,
}

impl Reservation<'_> {
    /// Replaces the estimate with what the attempt actually cost (`None`:
    /// unpriced, counted as $0). Passing a limit stops the run from here on.
    pub fn settle(self, usd: Option<f64>, tokens: u64) {
        self.settle_billed(usd, tokens, None)
    }

    /// [`Reservation::settle`] with the prompt tokens the provider billed, so
    /// later reservations of the node and model learn the billed/counted ratio.
    pub fn settle_billed(
        mut self,
        usd: Option<f64>,
        tokens: u64,
        billed_prompt_tokens: Option<u64>,
    ) {
        self.settled = true;
        let b = self.budget;
        let mut s = b.lock();
        Budget::release(&mut s, &self);
        if b.limits.is_set() {
            let billed = billed_prompt_tokens.filter(|_| self.counted_prompt_tokens > 0);
            for k in [self.key.clone(), model_key(&self.model)] {
                let o = s.observed.entry(k).or_default();
                o.settled += 1;
                if let Some(billed) = billed {
                    o.prompt.add(&Tokens::call(billed, 0));
                    o.counted.add(&Tokens::call(self.counted_prompt_tokens, 0));
                }
            }
        }
        s.spent.add(Spend::new(usd.unwrap_or(0.0), tokens));
        if s.stop.is_some() {
            return;
        }
        let over_cost = b
            .limits
            .max_cost_usd
            .is_some_and(|max| s.spent.usd > max + EPSILON_USD);
        let over_tokens = b
            .limits
            .max_tokens_total
            .is_some_and(|max| s.spent.tokens > max);
        let reason = match (over_cost, over_tokens) {
            (true, _) => Reason::MaxCost,
            (_, true) => Reason::MaxTokensTotal,
            _ => return,
        };
        s.stop = Some(BudgetExceeded {
            reason,
            stopped: Stopped::AfterCall,
            spent_usd: s.spent.usd,
            tokens_used: s.spent.tokens,
            reserved_usd: s.reserved.usd,
            reserved_tokens: s.reserved.tokens,
            max_cost_usd: b.limits.max_cost_usd,
            max_tokens_total: b.limits.max_tokens_total,
            node: self.node.clone(),
            model: self.model.clone(),
            next_call_estimate_usd: None,
            next_call_estimate_tokens: None,
            estimate_low_usd: None,
        });
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.settled {
            let mut s = self.budget.lock();
            Budget::release(&mut s, self);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A budget with only a cost limit.
    fn capped(usd: f64) -> Budget {
        Budget::new(BudgetLimits {
            max_cost_usd: Some(usd),
            ..Default::default()
        })
    }

    fn req(provider: Provider, model: &str, prompt: &str, max_tokens: Option<u64>) -> LlmRequest {
        LlmRequest {
            max_tokens,
            ..LlmRequest::new(provider, model, prompt)
        }
    }

    fn est(usd: Option<f64>, tokens: u64) -> CallEstimate {
        CallEstimate {
            prompt_tokens: tokens / 2,
            max_output_tokens: tokens - tokens / 2,
            usd,
            prompt_usd: usd.map(|u| u / 10.0),
            cost_source: "table",
        }
    }

    #[test]
    fn images_count_by_each_providers_rule() {
        // OpenAI's documented examples: 1024×1024 → 768×768, 4 tiles, 765 tokens;
        // 2048×4096 → 1024×2048 → 768×1536, 6 tiles, 1105 tokens.
        assert_eq!(image_tokens(Provider::OpenAi, Some((1024, 1024))), 765);
        assert_eq!(image_tokens(Provider::OpenAi, Some((2048, 4096))), 1105);
        assert_eq!(image_tokens(Provider::OpenAi, Some((512, 512))), 255);
        assert_eq!(image_tokens(Provider::OpenAi, None), 85 + 170 * 8);
        assert_eq!(image_tokens(Provider::Anthropic, Some((1000, 1000))), 1334);
        assert_eq!(image_tokens(Provider::Anthropic, Some((200, 200))), 54);
        assert_eq!(image_tokens(Provider::Anthropic, Some((8000, 8000))), 1600);
        assert_eq!(image_tokens(Provider::Gemini, Some((4000, 3000))), 258);
        assert_eq!(image_tokens(Provider::Echo, None), 0);
    }

    #[test]
    fn an_image_adds_to_the_prompt_estimate() {
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("a.png");
        // A PNG header for a 1024×1024 image: signature, IHDR length, type, width, height.
        let mut bytes = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13];
        bytes.extend_from_slice(b"IHDR");
        bytes.extend_from_slice(&1024u32.to_be_bytes());
        bytes.extend_from_slice(&1024u32.to_be_bytes());
        bytes.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
        std::fs::write(&png, bytes).unwrap();
        let prices = PriceTable::builtin();
        let plain = req(Provider::OpenAi, "gpt-4o-mini", "hi", Some(10));
        let with_image = LlmRequest {
            images: vec![png.to_string_lossy().into_owned()],
            ..plain.clone()
        };
        let a = estimate(&plain, prices);
        let b = estimate(&with_image, prices);
        assert_eq!(b.prompt_tokens - a.prompt_tokens, 765);
    }

    #[test]
    fn estimate_counts_prompt_and_worst_case_output() {
        let t = PriceTable::builtin();
        let prompt = "Summarise the quarterly report in three bullet points.";
        let p = crate::llm::count_tokens(prompt).unwrap() + 7;
        let e = estimate(&req(Provider::OpenAi, "gpt-4o", prompt, Some(100)), t);
        assert_eq!(e.prompt_tokens, p);
        assert_eq!(e.max_output_tokens, 100);
        assert_eq!(e.cost_source, "table");
        // gpt-4o: $2.50 in, $10 out per million.
        let want = p as f64 * 2.5e-6 + 100.0 * 10e-6;
        assert!((e.usd.unwrap() - want).abs() < 1e-12, "{e:?}");
        // No max_tokens: the family's output limit.
        let e = estimate(&req(Provider::OpenAi, "gpt-4o", prompt, None), t);
        assert_eq!(e.max_output_tokens, 16_384);
        let e = estimate(
            &req(Provider::Anthropic, "claude-sonnet-4-5", prompt, None),
            t,
        );
        assert_eq!(e.max_output_tokens, 64_000);
        let e = estimate(&req(Provider::OpenAi, "some-new-model", prompt, None), t);
        assert_eq!(e.max_output_tokens, DEFAULT_MAX_OUTPUT_TOKENS);
        assert_eq!((e.usd, e.cost_source), (None, "unpriced"));
    }

    #[test]
    fn estimate_free_local_and_override_limit() {
        let t = PriceTable::builtin();
        let e = estimate(&req(Provider::Echo, "echo", "one two three", None), t);
        assert_eq!((e.usd, e.cost_source), (Some(0.0), "free"));
        assert_eq!(
            e.max_output_tokens,
            crate::llm::count_tokens("one two three").unwrap()
        );
        let e = estimate(&req(Provider::Ollama, "no-such-local-model", "hi", None), t);
        assert_eq!((e.usd, e.cost_source), (Some(0.0), "local"));
        let (t, _) =
            PriceTable::with_overrides_str(r#"{"gpt-4o": {"max_output_tokens": 2000}}"#, "x")
                .unwrap();
        let e = estimate(&req(Provider::OpenAi, "gpt-4o", "hi", None), &t);
        assert_eq!(e.max_output_tokens, 2000);
        assert!(
            PriceTable::with_overrides_str(r#"{"gpt-4o": {"max_output_tokens": -1}}"#, "x")
                .is_err()
        );
    }

    #[test]
    fn limits_from_flags_and_env() {
        let env = |k: &str| match k {
            "PFLOW_MAX_COST" => Some("0.25".to_string()),
            "PFLOW_MAX_TOKENS_TOTAL" => Some("5000".to_string()),
            _ => None,
        };
        let l = BudgetLimits::resolve(None, None, false, env).unwrap();
        assert_eq!(l.max_cost_usd, Some(0.25));
        assert_eq!(l.max_tokens_total, Some(5000));
        let l = BudgetLimits::resolve(Some("$1.5"), Some("10"), true, env).unwrap();
        assert_eq!((l.max_cost_usd, l.max_tokens_total), (Some(1.5), Some(10)));
        assert!(!BudgetLimits::resolve(None, None, false, |_| None)
            .unwrap()
            .is_set());
        let e = BudgetLimits::resolve(Some("abc"), None, false, env).unwrap_err();
        assert!(e.to_string().contains("--max-cost `abc`"), "{e}");
        let e = BudgetLimits::resolve(Some("-1"), None, false, env).unwrap_err();
        assert!(e.to_string().contains("negative"), "{e}");
        let e = BudgetLimits::resolve(None, None, false, |_| Some("lots".into())).unwrap_err();
        assert!(e.to_string().contains("PFLOW_MAX_COST `lots`"), "{e}");
        assert!(BudgetLimits::resolve(None, Some("0"), false, env).is_err());
        assert!(BudgetLimits::resolve(None, Some("1.5"), false, env).is_err());
    }

    #[test]
    fn refuses_before_and_stops_after() {
        let b = capped(0.010);
        b.reserve("m", Some("a"), || est(Some(0.004), 10))
            .unwrap()
            .settle(Some(0.003), 8);
        b.reserve("m", Some("b"), || est(Some(0.004), 10))
            .unwrap()
            .settle(Some(0.003), 8);
        // 0.006 spent: a 0.004 call fits exactly, a 0.0041 one does not.
        let e = b
            .reserve("m", Some("c"), || est(Some(0.0041), 10))
            .unwrap_err();
        assert_eq!(
            (e.reason, e.stopped),
            (Reason::MaxCost, Stopped::BeforeCall)
        );
        assert_eq!(e.node.as_deref(), Some("c"));
        assert!((e.spent_usd - 0.006).abs() < 1e-12);
        assert_eq!(e.next_call_estimate_usd, Some(0.0041));
        let m = e.to_string();
        assert!(m.contains("spent $0.006000 of $0.0100 budget"), "{m}");
        assert!(
            m.contains("next call to m in node `c` would cost up to $0.004100"),
            "{m}"
        );
        // Stopped for good: even a free call is refused now, with the same stop.
        assert_eq!(b.reserve("m", None, || est(Some(0.0), 1)).unwrap_err(), e);

        let b = Budget::new(BudgetLimits {
            max_cost_usd: Some(0.010),
            max_tokens_total: Some(100),
            ..Default::default()
        });
        b.reserve("m", Some("a"), || est(Some(0.001), 10))
            .unwrap()
            .settle(Some(0.02), 10);
        let e = b.stopped().unwrap();
        assert_eq!((e.reason, e.stopped), (Reason::MaxCost, Stopped::AfterCall));
        assert!(
            e.to_string().contains("after the call to m in node `a`"),
            "{e}"
        );
        assert!(b.reserve("m", Some("b"), || est(Some(0.0), 1)).is_err());
    }

    #[test]
    fn tokens_and_unpriced() {
        let b = Budget::new(BudgetLimits {
            max_tokens_total: Some(100),
            ..Default::default()
        });
        b.reserve("m", Some("a"), || est(None, 60))
            .unwrap()
            .settle(None, 30);
        let e = b.reserve("m", Some("b"), || est(None, 80)).unwrap_err();
        assert_eq!(e.reason, Reason::MaxTokensTotal);
        assert!(e.to_string().contains("used 30 of 100 tokens"), "{e}");

        let strict = capped(1.0);
        let e = strict
            .reserve("mystery", Some("a"), || est(None, 5))
            .unwrap_err();
        assert_eq!((e.reason, e.kind()), (Reason::UnpricedModel, KIND_UNPRICED));
        assert!(e.to_string().contains("--allow-unpriced"), "{e}");
        let lax = Budget::new(BudgetLimits {
            max_cost_usd: Some(1.0),
            allow_unpriced: true,
            ..Default::default()
        });
        lax.reserve("mystery", Some("a"), || est(None, 5))
            .unwrap()
            .settle(None, 5);
        assert_eq!(
            lax.spent(),
            Spent {
                usd: 0.0,
                tokens: 5
            }
        );
        assert_eq!(lax.warnings().len(), 1);
        assert!(lax.stopped().is_none());
    }

    #[test]
    fn estimate_refusal_counts_what_is_spent() {
        let b = capped(0.01);
        assert!(b.refuse_estimate(0.01).is_none());
        assert!(b.stopped().is_none());
        // The planner spent $0.004: a workflow of at least $0.007 no longer fits.
        b.reserve("m", None, || est(Some(0.004), 1))
            .unwrap()
            .settle(Some(0.004), 1);
        let e = b.refuse_estimate(0.007).unwrap();
        assert_eq!((e.reason, e.stopped), (Reason::MaxCost, Stopped::Estimate));
        assert_eq!(e.kind(), KIND_EXCEEDED);
        assert_eq!(e.estimate_low_usd, Some(0.007));
        let m = e.to_string();
        assert!(
            m.contains("estimated cost at least $0.0110 exceeds the budget $0.0100"),
            "{m}"
        );
        assert_eq!(b.stopped().as_ref(), Some(&*e));
        assert_eq!(Stopped::Estimate.as_str(), "estimate");
        // No cost limit, no refusal.
        assert!(Budget::unlimited().refuse_estimate(1e9).is_none());
        assert_eq!(
            output_limit(Provider::OpenAi, "gpt-4o", PriceTable::builtin()),
            (16_384, "model_family")
        );
    }

    #[test]
    fn dropped_reservation_is_released() {
        let b = capped(0.01);
        let r = b.reserve("m", None, || est(Some(0.008), 1)).unwrap();
        drop(r);
        b.reserve("m", None, || est(Some(0.008), 1))
            .unwrap()
            .settle(Some(0.001), 1);
        assert_eq!(b.spent().usd, 0.001);
    }

    #[test]
    fn concurrent_reservations_never_oversubscribe() {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::Arc;
        // 16 threads race for $0.01 in $0.001 calls that each cost exactly their estimate.
        let b = Arc::new(capped(0.01));
        let granted = Arc::new(AtomicU64::new(0));
        let in_flight_max = Arc::new(AtomicU64::new(0));
        let in_flight = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let (b, granted, in_flight, in_flight_max) = (
                    b.clone(),
                    granted.clone(),
                    in_flight.clone(),
                    in_flight_max.clone(),
                );
                std::thread::spawn(move || {
                    for _ in 0..10 {
                        let node = format!("n{i}");
                        match b.reserve("m", Some(&node), || est(Some(0.001), 2)) {
                            Ok(r) => {
                                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                                in_flight_max.fetch_max(now, Ordering::SeqCst);
                                granted.fetch_add(1, Ordering::SeqCst);
                                std::thread::yield_now();
                                in_flight.fetch_sub(1, Ordering::SeqCst);
                                r.settle(Some(0.001), 2);
                            }
                            Err(_) => return,
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(granted.load(Ordering::SeqCst), 10);
        assert!(in_flight_max.load(Ordering::SeqCst) <= 10);
        let s = b.spent();
        assert!((s.usd - 0.01).abs() < 1e-12, "{s:?}");
        assert_eq!(s.tokens, 20);
        assert!(b.stopped().is_some());
    }

    #[test]
    fn reservations_learn_the_billed_prompt_ratio_and_hold_unbilled_siblings() {
        let b = capped(0.0025);
        let e = || CallEstimate {
            prompt_tokens: 10,
            max_output_tokens: 100,
            usd: Some(0.001),
            prompt_usd: Some(0.0001),
            cost_source: "table",
        };
        let Admission::Go(first) = b.admit("m", Some("fan[0]"), e) else {
            panic!("the first call fits")
        };
        // Unbilled sibling: held at 2 × $0.001, which does not fit beside the first.
        assert!(matches!(b.admit("m", Some("fan[1]"), e), Admission::Wait));
        // Billed 100 prompt tokens for 10 counted: the next estimate is
        // $0.001 + 9 × $0.0001 = $0.0019, which does not fit in what is left.
        first.settle_billed(Some(0.001), 200, Some(100));
        match b.admit("m", Some("fan[1]"), e) {
            Admission::Refused(stop) => {
                let next = stop.next_call_estimate_usd.unwrap();
                assert!((next - 0.0019).abs() < 1e-12, "{next}");
            }
            other => panic!("{other:?}"),
        };
    }
}
