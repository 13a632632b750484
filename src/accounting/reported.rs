//! Token usage as a provider reported it, before pricing: each count may be
//! missing ("not reported", never 0). The providers' usage mappings
//! (`llm::usage`) fill it in; the sums a provider's wire format needs (cache
//! buckets beside the prompt, compaction iterations) are made here, checked,
//! because a sum past u64 is as invalid as a count past it.

use super::Tokens;
use serde::Serialize;

/// Where token counts come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageSource {
    /// A provider's non-streaming response.
    #[default]
    Provider,
    /// A provider's streaming events.
    ProviderStream,
    /// Counted locally with a tokenizer.
    Estimated,
    /// The provider sent no usage.
    Unknown,
}

impl UsageSource {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageSource::Provider => "provider",
            UsageSource::ProviderStream => "provider_stream",
            UsageSource::Estimated => "estimated",
            UsageSource::Unknown => "unknown",
        }
    }
}

/// Normalised usage of one call: `input` counts every prompt-side token
/// (cache reads and writes included), `output` every generated token
/// (reasoning included); `None` is "not reported", different from 0.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Usage {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cache_read_tokens: Option<u64>,
    pub cache_write_tokens: Option<u64>,
    pub cache_write_1h_tokens: Option<u64>,
    pub reasoning_tokens: Option<u64>,
    pub source: UsageSource,
}

impl Usage {
    pub fn unknown() -> Usage {
        Usage {
            source: UsageSource::Unknown,
            ..Default::default()
        }
    }

    pub fn is_known(&self) -> bool {
        self.source != UsageSource::Unknown
            && (self.input_tokens.is_some() || self.output_tokens.is_some())
    }

    /// Input plus output, `None` when neither was reported.
    pub fn total(&self) -> Option<u64> {
        (self.input_tokens.is_some() || self.output_tokens.is_some()).then(|| self.counts().total)
    }

    /// Counts for pricing (unknown fields as 0).
    pub fn counts(&self) -> Tokens {
        let mut t = Tokens::call(
            self.input_tokens.unwrap_or(0),
            self.output_tokens.unwrap_or(0),
        );
        t.cache_read = self.cache_read_tokens.unwrap_or(0);
        t.cache_write = self.cache_write_tokens.unwrap_or(0);
        t.cache_write_1h = self.cache_write_1h_tokens.unwrap_or(0);
        t.reasoning = self.reasoning_tokens.unwrap_or(0);
        t
    }

    /// One call's usage reported in parts (Anthropic's compaction
    /// `iterations`): each count is the parts' sum, 0 where none reported
    /// it, except reasoning, which stays unknown unless a part reports it.
    /// `None` when a sum passes u64.
    pub fn sum_of_parts(parts: &[Usage]) -> Option<Usage> {
        let field = |get: fn(&Usage) -> Option<u64>| add_counts(parts.iter().map(get));
        let known = |get| field(get).map(|n| Some(n.unwrap_or(0)));
        Some(Usage {
            input_tokens: known(|u| u.input_tokens)?,
            output_tokens: known(|u| u.output_tokens)?,
            cache_read_tokens: known(|u| u.cache_read_tokens)?,
            cache_write_tokens: known(|u| u.cache_write_tokens)?,
            cache_write_1h_tokens: known(|u| u.cache_write_1h_tokens)?,
            reasoning_tokens: field(|u| u.reasoning_tokens)?,
            source: UsageSource::Provider,
        })
    }
}

/// The sum of counts a provider reports apart (a prompt and its cache
/// buckets, candidates and thoughts): `Some(None)` when none was reported,
/// missing parts count as 0, and `None` when the sum passes u64.
pub fn add_counts(parts: impl IntoIterator<Item = Option<u64>>) -> Option<Option<u64>> {
    let mut sum = None::<u64>;
    for p in parts.into_iter().flatten() {
        sum = Some(sum.unwrap_or(0).checked_add(p)?);
    }
    Some(sum)
}

/// The tokens of a prompt made of parts (its text, each message's overhead,
/// a schema, images), as the budget and the estimate count it.
pub fn prompt_tokens(parts: impl IntoIterator<Item = u64>) -> u64 {
    parts.into_iter().fold(0, u64::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_are_checked_and_missing_is_not_zero() {
        assert_eq!(add_counts([None, None]), Some(None));
        assert_eq!(add_counts([Some(2), None, Some(3)]), Some(Some(5)));
        assert_eq!(add_counts([Some(u64::MAX), Some(1)]), None);
        assert_eq!(prompt_tokens([u64::MAX, 1]), u64::MAX);
        let part = |i, r| Usage {
            input_tokens: Some(i),
            reasoning_tokens: r,
            ..Usage::default()
        };
        let s = Usage::sum_of_parts(&[part(3, None), part(4, None)]).unwrap();
        assert_eq!(s.input_tokens, Some(7));
        assert_eq!(s.output_tokens, Some(0));
        assert_eq!(s.reasoning_tokens, None);
        let s = Usage::sum_of_parts(&[part(3, Some(1)), part(4, None)]).unwrap();
        assert_eq!(s.reasoning_tokens, Some(1));
        assert!(Usage::sum_of_parts(&[part(u64::MAX, None), part(1, None)]).is_none());
        assert_eq!(part(3, None).total(), Some(3));
        assert_eq!(Usage::unknown().total(), None);
    }
}
