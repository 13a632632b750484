//! Token usage extraction: each provider's usage object normalised into
//! [`Usage`], where input counts every prompt-side token (cache reads and
//! writes included) and output every generated token (reasoning included).
//!
//! The traps (see `tests/fixtures/llm/INDEX.md`): OpenAI's input already
//! includes cached tokens, Anthropic's excludes both cache buckets, Gemini
//! reports thoughts beside the candidates; streaming usage arrives in the
//! last chunk (OpenAI), is split across events and must be overwritten, not
//! summed (Anthropic), or repeats cumulatively (Gemini); a missing usage is
//! unknown, never 0. The type and the sums a wire format needs live in the
//! accounting model ([`crate::accounting::reported`]).

use serde_json::Value;

use super::LlmError;
use crate::accounting::reported::add_counts;
pub use crate::accounting::reported::{Usage, UsageSource};

/// A parsed usage object, or the `invalid_response` a malformed count makes.
pub type Parsed = Result<Usage, LlmError>;

/// One count at `path`: absent or null is "not reported"; anything that is
/// not a whole number in u64 (beyond u64, negative, fractional, a string) is
/// an invalid response, never a silent 0.
fn n(v: &Value, path: &[&str]) -> Result<Option<u64>, LlmError> {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(next) => cur = next,
            None => return Ok(None),
        }
    }
    if cur.is_null() {
        return Ok(None);
    }
    cur.as_u64().map(Some).ok_or_else(|| {
        let shown: String = cur.to_string().chars().take(40).collect();
        LlmError::InvalidResponse(format!(
            "usage count `{}` is not a token count (a whole number from 0 to {}): {shown}",
            path.join("."),
            u64::MAX
        ))
    })
}

/// Sums counts that one provider splits in parts; a sum past u64 is as
/// invalid as a count past it.
fn sum(parts: &[Option<u64>]) -> Result<Option<u64>, LlmError> {
    add_counts(parts.iter().copied()).ok_or_else(past_u64)
}

fn past_u64() -> LlmError {
    LlmError::InvalidResponse("usage counts add up past u64".into())
}

/// OpenAI Chat Completions `usage` (also OpenAI-compatible servers).
pub fn from_openai_chat(u: &Value) -> Parsed {
    from_openai(u, ["prompt_tokens", "completion_tokens"])
}

/// OpenAI Responses API `usage`.
pub fn from_openai_responses(u: &Value) -> Parsed {
    from_openai(u, ["input_tokens", "output_tokens"])
}

/// OpenAI's two usage shapes: the same counts under other names (`{input}`,
/// `{output}`, details under `{input}_details` and `{output}_details`).
fn from_openai(u: &Value, [input, output]: [&str; 2]) -> Parsed {
    if !u.is_object() {
        return Ok(Usage::unknown());
    }
    let (input_details, output_details) = (format!("{input}_details"), format!("{output}_details"));
    Ok(Usage {
        input_tokens: n(u, &[input])?,
        output_tokens: n(u, &[output])?,
        cache_read_tokens: Some(n(u, &[&input_details, "cached_tokens"])?.unwrap_or(0)),
        // OpenAI reports no cache writes: absent unless a compatible server sends them.
        cache_write_tokens: n(u, &[&input_details, "cache_write_tokens"])?,
        cache_write_1h_tokens: None,
        reasoning_tokens: n(u, &[&output_details, "reasoning_tokens"])?,
        source: UsageSource::Provider,
    })
}

/// Anthropic Messages `usage`; with compaction, billing is the sum of `iterations`.
pub fn from_anthropic(u: &Value) -> Parsed {
    if !u.is_object() {
        return Ok(Usage::unknown());
    }
    if let Some(iters) = u
        .get("iterations")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
    {
        let parts = iters
            .iter()
            .map(anthropic_one)
            .collect::<Result<Vec<_>, _>>()?;
        return Usage::sum_of_parts(&parts).ok_or_else(past_u64);
    }
    anthropic_one(u)
}

fn anthropic_one(u: &Value) -> Parsed {
    let uncached = n(u, &["input_tokens"])?;
    let read = n(u, &["cache_read_input_tokens"])?.unwrap_or(0);
    let write = n(u, &["cache_creation_input_tokens"])?.unwrap_or(0);
    Ok(Usage {
        input_tokens: match uncached {
            Some(i) => sum(&[Some(i), Some(read), Some(write)])?,
            None => None,
        },
        output_tokens: n(u, &["output_tokens"])?,
        cache_read_tokens: Some(read),
        cache_write_tokens: Some(write),
        cache_write_1h_tokens: Some(
            n(u, &["cache_creation", "ephemeral_1h_input_tokens"])?.unwrap_or(0),
        ),
        reasoning_tokens: n(u, &["output_tokens_details", "thinking_tokens"])?,
        source: UsageSource::Provider,
    })
}

/// Gemini `usageMetadata`: thoughts sit beside the candidates; cached content is inside the prompt.
pub fn from_gemini(u: &Value) -> Parsed {
    if !u.is_object() {
        return Ok(Usage::unknown());
    }
    let prompt = n(u, &["promptTokenCount"])?;
    let tool = n(u, &["toolUsePromptTokenCount"])?.unwrap_or(0);
    let cand = n(u, &["candidatesTokenCount"])?;
    let thoughts = n(u, &["thoughtsTokenCount"])?;
    Ok(Usage {
        input_tokens: match prompt {
            Some(p) => sum(&[Some(p), Some(tool)])?,
            None => None,
        },
        output_tokens: sum(&[cand, thoughts])?,
        cache_read_tokens: Some(n(u, &["cachedContentTokenCount"])?.unwrap_or(0)),
        cache_write_tokens: Some(0),
        cache_write_1h_tokens: Some(0),
        reasoning_tokens: thoughts,
        source: UsageSource::Provider,
    })
}

/// Ollama native `/api/chat` (the `done: true` object). Missing counts stay unknown.
pub fn from_ollama(v: &Value) -> Parsed {
    let input = n(v, &["prompt_eval_count"])?;
    let output = n(v, &["eval_count"])?;
    if input.is_none() && output.is_none() {
        return Ok(Usage::unknown());
    }
    Ok(Usage {
        input_tokens: input,
        output_tokens: output,
        cache_read_tokens: Some(0),
        cache_write_tokens: Some(0),
        cache_write_1h_tokens: Some(0),
        reasoning_tokens: None,
        source: UsageSource::Provider,
    })
}

/// Anthropic streaming: `message_start` gives input and cache figures,
/// `message_delta` the cumulative output (and, in newer versions, repeats the
/// rest). Non-null fields overwrite; nothing is added up across events.
#[derive(Debug, Default)]
pub struct AnthropicStreamUsage {
    raw: serde_json::Map<String, Value>,
}

impl AnthropicStreamUsage {
    pub fn event(&mut self, ev: &Value) {
        let usage = match ev.get("type").and_then(Value::as_str) {
            Some("message_start") => ev.get("message").and_then(|m| m.get("usage")),
            Some("message_delta") => ev.get("usage"),
            _ => None,
        };
        if let Some(Value::Object(u)) = usage {
            for (k, v) in u {
                if !v.is_null() {
                    self.raw.insert(k.clone(), v.clone());
                }
            }
        }
    }

    pub fn usage(&self) -> Parsed {
        if self.raw.is_empty() {
            return Ok(Usage::unknown());
        }
        let mut u = from_anthropic(&Value::Object(self.raw.clone()))?;
        u.source = UsageSource::ProviderStream;
        Ok(u)
    }

    /// What a broken stream had counted so far (unknown if that was malformed:
    /// the break is the error to report).
    pub fn partial(&self) -> Usage {
        self.usage().unwrap_or_else(|_| Usage::unknown())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn missing_usage_is_unknown_not_zero() {
        let u = from_openai_chat(&Value::Null).unwrap();
        assert!(!u.is_known());
        assert_eq!(u.input_tokens, None);
        assert!(!from_ollama(&json!({"done": true})).unwrap().is_known());
    }

    #[test]
    fn anthropic_stream_overwrites_instead_of_summing() {
        let mut s = AnthropicStreamUsage::default();
        s.event(&json!({"type": "message_start", "message": {"usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 1}}}));
        s.event(&json!({"type": "message_delta", "usage": {"output_tokens": 7}}));
        s.event(
            &json!({"type": "message_delta", "usage": {"output_tokens": 9, "input_tokens": null}}),
        );
        let u = s.usage().unwrap();
        assert_eq!(u.input_tokens, Some(15));
        assert_eq!(u.output_tokens, Some(9));
        assert_eq!(u.source, UsageSource::ProviderStream);
    }

    #[test]
    fn a_count_that_is_not_a_u64_is_invalid_not_zero() {
        let too_big: Value = serde_json::from_str(
            r#"{"prompt_tokens": 18446744073709551616, "completion_tokens": 1}"#,
        )
        .unwrap();
        for bad in [
            too_big,
            json!({"prompt_tokens": -1}),
            json!({"prompt_tokens": 2.5}),
            json!({"prompt_tokens": "12"}),
        ] {
            let e = from_openai_chat(&bad).unwrap_err();
            assert_eq!(e.kind(), "invalid_response", "{bad}");
            assert!(e.to_string().contains("prompt_tokens"), "{e}");
        }
        let max = u64::MAX;
        let e = from_anthropic(&json!({"input_tokens": max, "cache_read_input_tokens": 1}))
            .unwrap_err();
        assert_eq!(e.kind(), "invalid_response");
        assert_eq!(
            from_openai_chat(&json!({"prompt_tokens": max, "completion_tokens": null}))
                .unwrap()
                .input_tokens,
            Some(max)
        );
    }
}
