//! The pricing policy: which price a call gets, and so which cost. Live
//! calls, `pflow trace reprice`, the estimate and the budget guard all ask
//! this one function, so they cannot disagree.
//!
//! In order: a free provider's call costs nothing; a user override for the
//! billed (response) model, the requested model, or the undated family of
//! either (`gpt-4o-mini-2024-07-18` → `gpt-4o-mini`) wins over everything
//! else; then a cost the provider reported; then the built-in table (the
//! billed version first, then what was asked for); a local provider's
//! unlisted model is free; anything else is unpriced. A call without usage
//! cannot be priced from tokens at all.

use super::{PriceSource, PriceTable, ResolvedPrice};
use crate::accounting::{Cost, CostSource, Tokens};

/// A call whose cost is not a finite number of USD (a huge override price
/// times a huge count): an error on that call, never `$inf` nor a silent 0.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "the cost of the call to `{model}` is not a finite number of USD: price `{key}` field `{field}` × the call's tokens overflows"
)]
pub struct CostOverflow {
    /// The model as requested.
    pub model: String,
    /// The price-table key that priced it.
    pub key: String,
    /// The rate field whose product overflowed (`input`, `output`, …; `total`
    /// when only the sum did).
    pub field: &'static str,
}

/// How a provider's calls are priced (each provider declares its own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProviderPricing {
    /// The price-table prefix its models are listed under (`gemini/…`), if any.
    pub prefix: Option<&'static str>,
    /// Its calls cost nothing (the echo model).
    pub free: bool,
    /// It runs models locally: one with no listed price costs nothing.
    pub local: bool,
}

/// The facts of one call that decide its price.
#[derive(Debug, Clone, Copy)]
pub struct CallFacts<'a> {
    pub provider: ProviderPricing,
    /// The model as requested.
    pub model: &'a str,
    /// The model the provider says answered (the billed version).
    pub response_model: Option<&'a str>,
    /// A cost the provider reported, if any.
    pub provider_cost_usd: Option<f64>,
    /// The billed tokens; `None` when the provider reported no usage.
    pub tokens: Option<Tokens>,
}

impl PriceTable {
    /// The price of a call to `model` answered as `response_model`: a user
    /// override for either wins, then the table entry of the billed version,
    /// then of the requested one.
    pub fn resolve(
        &self,
        model: &str,
        response_model: Option<&str>,
        prefix: Option<&str>,
    ) -> Option<ResolvedPrice> {
        let names: Vec<&str> = response_model.into_iter().chain([model]).collect();
        names
            .iter()
            .find_map(|m| self.lookup_where(m, prefix, |e| e.source == PriceSource::Override))
            .or_else(|| names.iter().find_map(|m| self.lookup(m, prefix)))
    }

    /// Prices one call by the policy above; a cost that overflows (it can
    /// only come from the table: JSON holds no infinite provider cost) is
    /// unknown here. Live calls use [`PriceTable::try_price`].
    pub fn price(&self, call: &CallFacts) -> Cost {
        self.try_price(call)
            .unwrap_or_else(|_| Cost::plain(None, CostSource::Unpriced))
    }

    /// [`PriceTable::price`], with an overflowing cost an error naming the
    /// model, the price key and the field.
    pub fn try_price(&self, call: &CallFacts) -> Result<Cost, CostOverflow> {
        if call.provider.free {
            return Ok(Cost::plain(Some(0.0), CostSource::Free));
        }
        let by_table = |p: ResolvedPrice, t: &Tokens| {
            let c = super::cost(t, &p.price);
            let parts = [
                ("input", c.input_usd),
                ("cache_read", c.cache_read_usd),
                ("cache_write", c.cache_write_usd),
                ("output", c.output_usd),
                ("total", c.total_usd),
            ];
            if let Some((field, _)) = parts.iter().find(|(_, v)| !v.is_finite()) {
                return Err(CostOverflow {
                    model: call.model.to_string(),
                    key: p.key,
                    field,
                });
            }
            Ok(Cost {
                usd: Some(c.total_usd),
                source: match p.source {
                    PriceSource::Builtin => CostSource::Table,
                    PriceSource::Override => CostSource::Override,
                },
                key: Some(p.key),
                cache_savings_usd: c.cache_savings_usd,
            })
        };
        let found = self.resolve(call.model, call.response_model, call.provider.prefix);
        let Some(tokens) = call.tokens else {
            return Ok(match call.provider_cost_usd {
                Some(c) => Cost::plain(Some(c), CostSource::Provider),
                None => Cost::plain(None, CostSource::UnknownUsage),
            });
        };
        match found {
            Some(p) if p.source == PriceSource::Override => by_table(p, &tokens),
            _ if call.provider_cost_usd.is_some() => {
                Ok(Cost::plain(call.provider_cost_usd, CostSource::Provider))
            }
            Some(p) => by_table(p, &tokens),
            None if call.provider.local => Ok(Cost::plain(Some(0.0), CostSource::Local)),
            None => Ok(Cost::plain(None, CostSource::Unpriced)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openai() -> ProviderPricing {
        ProviderPricing::default()
    }

    /// The built-in table with the overrides in `json`.
    fn overridden(json: &str) -> PriceTable {
        PriceTable::with_overrides_str(json, "p.json").unwrap().0
    }

    fn call<'a>(model: &'a str, response: Option<&'a str>) -> CallFacts<'a> {
        CallFacts {
            provider: openai(),
            model,
            response_model: response,
            provider_cost_usd: None,
            tokens: Some(Tokens::call(10, 20)),
        }
    }

    #[test]
    fn an_override_of_the_family_beats_the_dated_table_entry() {
        let t = overridden(r#"{"gpt-4o-mini": {"input": 15, "output": 60}}"#);
        let c = t.price(&call("gpt-4o-mini", Some("gpt-4o-mini-2024-07-18")));
        assert_eq!(c.source, CostSource::Override);
        assert_eq!(c.key.as_deref(), Some("gpt-4o-mini"));
        assert!((c.usd.unwrap() - 0.00135).abs() < 1e-12, "{c:?}");
        // Without the override the billed version's table entry prices it.
        let b = PriceTable::builtin().price(&call("gpt-4o-mini", Some("gpt-4o-mini-2024-07-18")));
        assert_eq!(b.source, CostSource::Table);
        assert_eq!(b.key.as_deref(), Some("gpt-4o-mini-2024-07-18"));
    }

    #[test]
    fn an_override_of_the_dated_response_model_wins_too() {
        let t = overridden(r#"{"gpt-4o-mini-2024-07-18": {"input": 1, "output": 1}}"#);
        let c = t.price(&call("gpt-4o-mini", Some("gpt-4o-mini-2024-07-18")));
        assert_eq!(c.source, CostSource::Override);
        assert_eq!(c.key.as_deref(), Some("gpt-4o-mini-2024-07-18"));
    }

    #[test]
    fn free_local_provider_unknown_and_unpriced() {
        let t = PriceTable::builtin();
        let free = ProviderPricing {
            free: true,
            ..Default::default()
        };
        let local = ProviderPricing {
            prefix: Some("ollama"),
            local: true,
            ..Default::default()
        };
        let mut c = call("anything", None);
        c.provider = free;
        assert_eq!(t.price(&c).source, CostSource::Free);
        c.provider = local;
        assert_eq!(t.price(&c).source, CostSource::Local);
        c.provider = openai();
        assert_eq!(t.price(&c).source, CostSource::Unpriced);
        assert_eq!(t.price(&c).usd, None);
        c.provider_cost_usd = Some(0.5);
        assert_eq!(t.price(&c).source, CostSource::Provider);
        c.tokens = None;
        c.provider_cost_usd = None;
        assert_eq!(t.price(&c).source, CostSource::UnknownUsage);
    }

    #[test]
    fn a_cost_that_overflows_is_an_error_naming_model_key_and_field() {
        let t = overridden(r#"{"gpt-4o-mini": {"input": 1e308, "output": 1}}"#);
        let mut c = call("gpt-4o-mini", None);
        c.tokens = Some(Tokens::call(1_000_000_000, 1));
        let e = t.try_price(&c).unwrap_err();
        assert_eq!(e.field, "input");
        assert_eq!(e.key, "gpt-4o-mini");
        let msg = e.to_string();
        assert!(
            msg.contains("`gpt-4o-mini`") && msg.contains("`input`"),
            "{msg}"
        );
        assert_eq!(t.price(&c).usd, None);
        // A price file cannot smuggle in an infinite or negative price.
        for bad in [
            r#"{"m": {"input": 1e400, "output": 1}}"#,
            r#"{"m": {"input": -1, "output": 1}}"#,
        ] {
            let err = PriceTable::with_overrides_str(bad, "p.json")
                .unwrap_err()
                .to_string();
            assert!(err.contains("p.json"), "{err}");
        }
    }
}
