//! Model prices and cost maths: the built-in table (USD per million tokens,
//! embedded from LiteLLM's MIT-licensed price map, see `data/README.md`),
//! user overrides merged field by field, and the one function that picks
//! the rate of each share of a call's tokens (the accounting model sums the
//! charges into dollars).
//!
//! ```
//! use pflow::pricing::{cost, PriceTable, TokenCounts};
//! let price = PriceTable::builtin().lookup("gpt-4o-2024-08-06", Some("openai")).unwrap();
//! let c = cost(&TokenCounts { input: 14, output: 37, ..Default::default() }, &price.price);
//! assert!((c.total_usd - 0.000405).abs() < 1e-12);
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

mod policy;
pub use policy::{CallFacts, CostOverflow, ProviderPricing};

/// What one call cost, by share: summed by the accounting model.
pub use crate::accounting::CostBreakdown;
/// Token counts of one call: the accounting model's one token type.
pub use crate::accounting::Tokens as TokenCounts;
use crate::accounting::{Charge, Share};

/// Rates that a tier may override.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PriceTier {
    /// The tier applies when prompt tokens exceed this (or reach it, when `inclusive`).
    pub above: u64,
    #[serde(
        default,
        rename = "tier_inclusive",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub inclusive: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_1h: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<f64>,
}

/// A model's prices in USD per million tokens.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelPrice {
    pub input: f64,
    pub output: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_1h: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<PriceTier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The model's output limit in tokens, from an override file only (the
    /// built-in table has none); the budget guard's worst-case estimate uses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
}

/// Where a price came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PriceSource {
    Builtin,
    Override,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolvedPrice {
    /// The table key that matched.
    pub key: String,
    pub price: ModelPrice,
    pub source: PriceSource,
}

/// The one place a call's rates are picked: its tier, and the rate of each
/// share of its tokens (cache rates default to input, 1-hour writes to the
/// 5-minute rate, reasoning to output). The accounting model sums them.
pub fn cost(t: &TokenCounts, p: &ModelPrice) -> CostBreakdown {
    let tier = p
        .tiers
        .iter()
        .filter(|tier| {
            if tier.inclusive {
                t.input >= tier.above
            } else {
                t.input > tier.above
            }
        })
        .max_by_key(|tier| tier.above);
    let pick = |tier_rate: Option<Option<f64>>, base: Option<f64>| -> Option<f64> {
        tier_rate.flatten().or(base)
    };
    let input = pick(tier.map(|x| x.input), Some(p.input)).unwrap_or(p.input);
    let output = pick(tier.map(|x| x.output), Some(p.output)).unwrap_or(p.output);
    let cache_read = pick(tier.map(|x| x.cache_read), p.cache_read).unwrap_or(input);
    let cache_write = pick(tier.map(|x| x.cache_write), p.cache_write).unwrap_or(input);
    let cache_write_1h =
        pick(tier.map(|x| x.cache_write_1h), p.cache_write_1h).unwrap_or(cache_write);
    let reasoning = pick(tier.map(|x| x.reasoning), p.reasoning);

    let write_1h = t.cache_write_1h.min(t.cache_write);
    // Without a reasoning rate, reasoning is output like any other.
    let (visible, reasoning_tokens, reasoning_rate) = match reasoning {
        Some(r) => (t.visible_output(), t.reasoning.min(t.output), r),
        None => (t.output, 0, 0.0),
    };
    let charge = |share, tokens, usd_per_mtok| Charge {
        share,
        tokens,
        usd_per_mtok,
    };
    let mut c = CostBreakdown::of_charges(&[
        charge(Share::Input, t.uncached_input(), input),
        charge(Share::CacheRead, t.cache_read, cache_read),
        charge(Share::CacheWrite, t.cache_write - write_1h, cache_write),
        charge(Share::CacheWrite, write_1h, cache_write_1h),
        charge(Share::Output, visible, output),
        charge(Share::Output, reasoning_tokens, reasoning_rate),
    ]);
    c.tier_above = tier.map(|x| x.above);
    c.cache_savings_usd = t.cache_read as f64 * (input - cache_read) * 1e-6;
    c
}

/// Why an override file was rejected.
#[derive(Debug, thiserror::Error)]
pub enum PricingError {
    #[error("cannot read pricing file `{file}`: {source}")]
    Io {
        file: String,
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
    #[error("`{file}`: model `{model}`: {message}")]
    Field {
        file: String,
        model: String,
        message: String,
    },
    #[error("`{file}`: {message}")]
    Shape { file: String, message: String },
}

/// A non-fatal finding in an override file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricingWarning(pub String);

impl std::fmt::Display for PricingWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone)]
struct Entry {
    price: ModelPrice,
    alias_of: Option<String>,
    source: PriceSource,
}

/// Model name → price, built-in plus overrides.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    entries: HashMap<String, Entry>,
    lower: HashMap<String, String>,
}

const RATE_FIELDS: &[&str] = &[
    "input",
    "output",
    "cache_read",
    "cache_write",
    "cache_write_1h",
    "reasoning",
];

static BUILTIN: OnceLock<PriceTable> = OnceLock::new();

impl PriceTable {
    /// The embedded table, parsed once.
    pub fn builtin() -> &'static PriceTable {
        BUILTIN.get_or_init(|| {
            let src = include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/data/model-prices.json"
            ));
            // The embedded file is part of the build; a unit test parses it.
            Self::parse_builtin(src).expect("embedded data/model-prices.json is valid")
        })
    }

    fn parse_builtin(src: &str) -> Result<PriceTable, String> {
        let v: Value = serde_json::from_str(src).map_err(|e| e.to_string())?;
        let models = v
            .get("models")
            .and_then(Value::as_object)
            .ok_or("no `models` object")?;
        let mut t = PriceTable::default();
        for (k, e) in models {
            let alias_of = e
                .get("alias_of")
                .and_then(Value::as_str)
                .map(str::to_string);
            // A few entries price only output (their input is video or audio):
            // they have no text price, so they stay unpriced rather than guessed.
            if alias_of.is_none() && (e.get("input").is_none() || e.get("output").is_none()) {
                continue;
            }
            let price = if alias_of.is_some() {
                ModelPrice::default()
            } else {
                serde_json::from_value::<ModelPrice>(strip_extra(e))
                    .map_err(|err| format!("{k}: {err}"))?
            };
            t.insert(
                k.clone(),
                Entry {
                    price,
                    alias_of,
                    source: PriceSource::Builtin,
                },
            );
        }
        Ok(t)
    }

    fn insert(&mut self, key: String, e: Entry) {
        self.lower.insert(key.to_ascii_lowercase(), key.clone());
        self.entries.insert(key, e);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Built-in merged with an override file.
    pub fn with_overrides_file(
        path: &Path,
    ) -> Result<(PriceTable, Vec<PricingWarning>), PricingError> {
        let src =
            crate::limits::read_text(path, crate::limits::MAX_PRICING_BYTES).map_err(|source| {
                PricingError::Io {
                    file: path.display().to_string(),
                    source,
                }
            })?;
        Self::with_overrides_str(&src, &path.display().to_string())
    }

    /// Built-in merged with override JSON: model → any subset of the rate
    /// fields and `tiers`, merged over the built-in entry.
    pub fn with_overrides_str(
        src: &str,
        origin: &str,
    ) -> Result<(PriceTable, Vec<PricingWarning>), PricingError> {
        let mut t = Self::builtin().clone();
        let warnings = t.apply_overrides(src, origin)?;
        Ok((t, warnings))
    }

    fn apply_overrides(
        &mut self,
        src: &str,
        origin: &str,
    ) -> Result<Vec<PricingWarning>, PricingError> {
        let v: Value = serde_json::from_str(src).map_err(|e| PricingError::Syntax {
            file: origin.into(),
            line: e.line(),
            column: e.column(),
            message: e
                .to_string()
                .rsplit_once(" at line ")
                .map(|(m, _)| m.to_string())
                .unwrap_or_else(|| e.to_string()),
        })?;
        let obj = v.as_object().ok_or_else(|| PricingError::Shape {
            file: origin.into(),
            message:
                "expected a JSON object of model name → prices, e.g. {\"gpt-5\": {\"input\": 1.0}}"
                    .into(),
        })?;
        let mut warnings = Vec::new();
        for (model, fields) in obj {
            let ferr = |message: String| PricingError::Field {
                file: origin.into(),
                model: model.clone(),
                message,
            };
            let fields = fields.as_object().ok_or_else(|| {
                ferr("expected an object of prices (USD per million tokens)".into())
            })?;
            let base = self.resolve_entry(model).map(|(_, e)| e.price.clone());
            let mut price = base.clone().unwrap_or_default();
            for (k, val) in fields {
                if k == "tiers" {
                    let tiers: Vec<PriceTier> = serde_json::from_value(val.clone())
                        .map_err(|e| ferr(format!("field `tiers`: {e}")))?;
                    for tier in &tiers {
                        for r in [
                            tier.input,
                            tier.output,
                            tier.cache_read,
                            tier.cache_write,
                            tier.cache_write_1h,
                            tier.reasoning,
                        ]
                        .into_iter()
                        .flatten()
                        {
                            check_rate("tiers", r).map_err(&ferr)?;
                        }
                    }
                    price.tiers = tiers;
                    continue;
                }
                if k == "max_output_tokens" {
                    let n = val.as_u64().filter(|n| *n > 0).ok_or_else(|| {
                        ferr("field `max_output_tokens` must be a positive integer (tokens)".into())
                    })?;
                    price.max_output_tokens = Some(n);
                    continue;
                }
                if !RATE_FIELDS.contains(&k.as_str()) {
                    return Err(ferr(format!(
                        "unknown field `{k}`; allowed: {}, tiers, max_output_tokens",
                        RATE_FIELDS.join(", ")
                    )));
                }
                let r = val.as_f64().ok_or_else(|| {
                    ferr(format!(
                        "field `{k}` must be a non-negative number (USD per million tokens)"
                    ))
                })?;
                check_rate(k, r).map_err(&ferr)?;
                let builtin_rate = base.as_ref().and_then(|b| rate(b, k));
                if let Some(b) = builtin_rate {
                    if r > 0.0 && b / r >= 200.0 {
                        warnings.push(PricingWarning(format!(
                            "{origin}: model `{model}` field `{k}` = {r} looks like a per-1K-token price (built-in: {b}); pflow expects USD per 1M tokens"
                        )));
                    }
                }
                set_rate(&mut price, k, r);
            }
            if base.is_none() && !(fields.contains_key("input") && fields.contains_key("output")) {
                return Err(ferr(
                    "not in the built-in table, so it needs at least `input` and `output`".into(),
                ));
            }
            let key = match self.resolve_entry(model) {
                Some((k, _)) if k.eq_ignore_ascii_case(model) => k,
                _ => model.clone(),
            };
            self.insert(
                key,
                Entry {
                    price,
                    alias_of: None,
                    source: PriceSource::Override,
                },
            );
        }
        Ok(warnings)
    }

    fn resolve_entry(&self, key: &str) -> Option<(String, &Entry)> {
        let mut k = key.to_string();
        for _ in 0..8 {
            let e = self.entries.get(&k)?;
            match &e.alias_of {
                Some(target) => k = target.clone(),
                None => return Some((k, e)),
            }
        }
        None
    }

    /// Finds the price of `model` as called through `provider`, by these rules
    /// in order (no guessing beyond them): `{provider}/{model}` (e.g.
    /// `gemini/gemini-2.5-flash`), the exact name (aliases followed), the name
    /// without a `provider/` prefix, the name without a date suffix
    /// (`-2024-08-06`, `-20250929`), then the same case-insensitively.
    pub fn lookup(&self, model: &str, provider: Option<&str>) -> Option<ResolvedPrice> {
        self.lookup_where(model, provider, |_| true)
    }

    /// [`PriceTable::lookup`] among the entries `keep` accepts.
    fn lookup_where(
        &self,
        model: &str,
        provider: Option<&str>,
        keep: impl Fn(&ResolvedPrice) -> bool,
    ) -> Option<ResolvedPrice> {
        let mut candidates: Vec<String> = Vec::new();
        if let Some(p) = provider {
            candidates.push(format!("{p}/{model}"));
        }
        candidates.push(model.to_string());
        if let Some((_, rest)) = model.split_once('/') {
            candidates.push(rest.to_string());
        }
        let undated: Vec<String> = candidates.iter().filter_map(|c| strip_date(c)).collect();
        candidates.extend(undated);
        let exact = candidates.iter().filter_map(|c| self.found(c));
        let folded = candidates.iter().filter_map(|c| {
            self.lower
                .get(&c.to_ascii_lowercase())
                .and_then(|real| self.found(real))
        });
        exact.chain(folded).find(|p| keep(p))
    }

    fn found(&self, key: &str) -> Option<ResolvedPrice> {
        let (k, e) = self.resolve_entry(key)?;
        Some(ResolvedPrice {
            key: k,
            price: e.price.clone(),
            source: e.source,
        })
    }
}

fn check_rate(field: &str, r: f64) -> Result<(), String> {
    if r.is_finite() && r >= 0.0 {
        Ok(())
    } else {
        Err(format!(
            "field `{field}` must be a non-negative number (USD per million tokens)"
        ))
    }
}

fn rate(p: &ModelPrice, k: &str) -> Option<f64> {
    match k {
        "input" => Some(p.input),
        "output" => Some(p.output),
        "cache_read" => p.cache_read,
        "cache_write" => p.cache_write,
        "cache_write_1h" => p.cache_write_1h,
        "reasoning" => p.reasoning,
        _ => None,
    }
}

fn set_rate(p: &mut ModelPrice, k: &str, r: f64) {
    match k {
        "input" => p.input = r,
        "output" => p.output = r,
        "cache_read" => p.cache_read = Some(r),
        "cache_write" => p.cache_write = Some(r),
        "cache_write_1h" => p.cache_write_1h = Some(r),
        "reasoning" => p.reasoning = Some(r),
        _ => {}
    }
}

/// `gpt-4o-2024-08-06` → `gpt-4o`, `claude-sonnet-4-5-20250929` → `claude-sonnet-4-5`.
fn strip_date(name: &str) -> Option<String> {
    let b = name.as_bytes();
    let n = b.len();
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    if n > 11
        && b[n - 11] == b'-'
        && b[n - 6] == b'-'
        && b[n - 3] == b'-'
        && digits(&b[n - 10..n - 6])
        && digits(&b[n - 5..n - 3])
        && digits(&b[n - 2..])
    {
        return Some(name[..n - 11].to_string());
    }
    if n > 9 && b[n - 9] == b'-' && digits(&b[n - 8..]) {
        return Some(name[..n - 9].to_string());
    }
    None
}

/// Keeps the fields `ModelPrice` knows; drops `mode`, `legacy`, `corrected`, ….
fn strip_extra(e: &Value) -> Value {
    let mut m = Map::new();
    if let Some(o) = e.as_object() {
        for k in RATE_FIELDS.iter().copied().chain(["tiers", "provider"]) {
            if let Some(v) = o.get(k) {
                m.insert(k.to_string(), v.clone());
            }
        }
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(model: &str, provider: Option<&str>) -> Option<ResolvedPrice> {
        PriceTable::builtin().lookup(model, provider)
    }

    #[test]
    fn embedded_table_parses() {
        let t = PriceTable::builtin();
        assert!(t.len() > 4000, "{}", t.len());
    }

    #[test]
    fn lookup_rules() {
        assert_eq!(
            p("gpt-4o-2024-08-06", Some("openai")).unwrap().key,
            "gpt-4o-2024-08-06"
        );
        assert_eq!(
            p("gemini-2.5-flash", Some("gemini")).unwrap().key,
            "gemini/gemini-2.5-flash"
        );
        assert_eq!(p("openai/gpt-4o-mini", None).unwrap().key, "gpt-4o-mini");
        assert_eq!(p("GPT-4O-MINI", None).unwrap().key, "gpt-4o-mini");
        // An alias resolves to its target's price.
        let a = p("azure/gpt-astra-latest", None).unwrap();
        assert_eq!(a.key, "azure/gpt-6-astra");
        // A dated name not in the table falls back to the undated one.
        assert_eq!(
            p("gpt-4o-mini-2099-01-01", None).unwrap().key,
            "gpt-4o-mini"
        );
        assert!(p("llama3.2", Some("ollama")).is_none());
        assert!(p("totally-unknown-model", None).is_none());
    }

    #[test]
    fn strip_date_forms() {
        assert_eq!(strip_date("gpt-4o-2024-08-06").as_deref(), Some("gpt-4o"));
        assert_eq!(
            strip_date("claude-sonnet-4-5-20250929").as_deref(),
            Some("claude-sonnet-4-5")
        );
        assert_eq!(strip_date("gpt-4o"), None);
    }

    #[test]
    fn cost_maths_cache_tiers_and_reasoning() {
        let price = ModelPrice {
            input: 2.0,
            output: 10.0,
            cache_read: Some(0.5),
            cache_write: Some(2.5),
            cache_write_1h: Some(4.0),
            reasoning: Some(20.0),
            tiers: vec![PriceTier {
                above: 1000,
                input: Some(4.0),
                output: Some(20.0),
                ..Default::default()
            }],
            provider: None,
            max_output_tokens: None,
        };
        let t = TokenCounts {
            input: 1000,
            output: 100,
            cache_read: 200,
            cache_write: 300,
            cache_write_1h: 100,
            reasoning: 40,
            ..Default::default()
        };
        let c = cost(&t, &price);
        assert_eq!(c.tier_above, None, "1000 is not above 1000");
        let expect =
            (500.0 * 2.0 + 200.0 * 0.5 + 200.0 * 2.5 + 100.0 * 4.0 + 60.0 * 10.0 + 40.0 * 20.0)
                * 1e-6;
        assert!(
            (c.total_usd - expect).abs() < 1e-15,
            "{} vs {expect}",
            c.total_usd
        );
        assert!((c.cache_savings_usd - 200.0 * 1.5e-6).abs() < 1e-15);
        let c = cost(
            &TokenCounts {
                input: 1001,
                ..Default::default()
            },
            &price,
        );
        assert_eq!(c.tier_above, Some(1000));
        assert!((c.total_usd - 1001.0 * 4.0e-6).abs() < 1e-15);
        let mut inclusive = price.clone();
        inclusive.tiers[0].inclusive = true;
        assert_eq!(
            cost(
                &TokenCounts {
                    input: 1000,
                    ..Default::default()
                },
                &inclusive
            )
            .tier_above,
            Some(1000)
        );
    }

    #[test]
    fn missing_cache_rates_bill_at_input() {
        let price = ModelPrice {
            input: 1.0,
            output: 2.0,
            ..Default::default()
        };
        let c = cost(
            &TokenCounts {
                input: 100,
                cache_read: 50,
                cache_write: 10,
                ..Default::default()
            },
            &price,
        );
        assert!((c.total_usd - 100.0e-6).abs() < 1e-15);
    }

    #[test]
    fn overrides_merge_subset_of_fields() {
        let (t, w) = PriceTable::with_overrides_str(
            r#"{"gpt-4o-mini": {"input": 1.0}, "my-model": {"input": 3, "output": 4}}"#,
            "pricing.json",
        )
        .unwrap();
        assert!(w.is_empty(), "{w:?}");
        let r = t.lookup("gpt-4o-mini", None).unwrap();
        assert_eq!(r.source, PriceSource::Override);
        assert_eq!(r.price.input, 1.0);
        assert_eq!(
            r.price.output, 0.6,
            "untouched fields keep the built-in value"
        );
        assert_eq!(r.price.cache_read, Some(0.075));
        assert_eq!(t.lookup("my-model", None).unwrap().price.output, 4.0);
        assert_eq!(
            t.lookup("gpt-4o", None).unwrap().source,
            PriceSource::Builtin
        );
    }

    #[test]
    fn malformed_overrides_are_precise() {
        let e = PriceTable::with_overrides_str("{\n  \"gpt-5\": {\"input\": 1.0,}\n}", "p.json")
            .unwrap_err();
        let s = e.to_string();
        assert!(s.contains("p.json") && s.contains("line 2"), "{s}");
        let e = PriceTable::with_overrides_str(r#"{"gpt-5": {"inptu": 1.0}}"#, "p.json")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown field `inptu`") && e.contains("model `gpt-5`"),
            "{e}"
        );
        let e = PriceTable::with_overrides_str(r#"{"gpt-5": {"input": -1}}"#, "p.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("non-negative"), "{e}");
        let e = PriceTable::with_overrides_str(r#"{"brand-new": {"input": 1}}"#, "p.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs at least `input` and `output`"), "{e}");
        let e = PriceTable::with_overrides_str(r#"[1]"#, "p.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected a JSON object"), "{e}");
    }

    #[test]
    fn per_1k_prices_warn() {
        let (_, w) =
            PriceTable::with_overrides_str(r#"{"gpt-4o": {"input": 0.0025}}"#, "p.json").unwrap();
        assert_eq!(w.len(), 1);
        assert!(w[0].0.contains("per-1K"), "{}", w[0]);
    }
}
