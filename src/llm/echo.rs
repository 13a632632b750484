//! The offline `echo` model: answers with the prompt and counts tokens with
//! a real BPE tokenizer (`o200k_base`, the GPT-4o family's encoding), so demos
//! and tests exercise the whole token path with no account and no network.
//! The same count serves budgets and estimates ([`count_tokens`]).
//!
//! The tokenizer ([`super::o200k`]) runs from tables computed at build time,
//! so the first call of a run pays nothing to load it.

use super::o200k;
use super::usage::{Usage, UsageSource};
use super::{LlmError, LlmRequest, LlmResponse};

/// Token count of `text` with `o200k_base` (the GPT-4o family's encoding).
/// Special-token markers such as `<|endoftext|>` count as the text they are.
pub fn count_tokens(text: &str) -> Option<u64> {
    Some(o200k::count(text)? as u64)
}

pub(super) fn complete(req: &LlmRequest) -> Result<LlmResponse, LlmError> {
    let mut prompt_side = String::new();
    if let Some(s) = &req.system {
        prompt_side.push_str(s);
        prompt_side.push('\n');
    }
    prompt_side.push_str(&req.prompt);
    let mut text = req.prompt.clone();
    let mut finish = "stop";
    if let Some(max) = req.max_tokens {
        let tokens = count_tokens(&text).unwrap_or(0);
        if let (true, Some(ids)) = (tokens > max, o200k::encode(&text)) {
            // Honour max_tokens like a real model would: cut the answer.
            let keep = usize::try_from(max).map_or(ids.len(), |m| m.min(ids.len()));
            // A cut inside a multi-byte character does not decode: keep
            // dropping tokens until the rest is valid text.
            text = (0..=keep)
                .rev()
                .find_map(|k| String::from_utf8(o200k::decode(&ids[..k])?).ok())
                .unwrap_or_default();
            finish = "length";
        }
    }
    let input = count_tokens(&prompt_side)
        .ok_or_else(|| LlmError::InvalidResponse("tokenizer unavailable".into()))?;
    let output = count_tokens(&text).unwrap_or(0);
    Ok(LlmResponse {
        text,
        usage: Usage {
            input_tokens: Some(input),
            output_tokens: Some(output),
            cache_read_tokens: Some(0),
            cache_write_tokens: Some(0),
            cache_write_1h_tokens: Some(0),
            reasoning_tokens: Some(0),
            source: UsageSource::Estimated,
        },
        response_model: Some("echo".into()),
        response_id: None,
        finish_reasons: vec![finish.into()],
        provider_cost_usd: None,
        service_tier: None,
        first_chunk_at: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_match_tiktoken_o200k() {
        // tiktoken-rs (a dev-dependency) is the reference implementation of
        // OpenAI's encodings: the counts must be identical on varied text.
        let reference = tiktoken_rs::o200k_base().unwrap();
        let samples = [
            "Hello, world! Tokens are counted.",
            "",
            " leading and trailing spaces   ",
            "line one\nline two\r\n\ttabbed\n\n\n",
            "Ünïcödé — 日本語のテキスト 🚀🚀 emoji, العربية, русский текст",
            "def f(x):\n    return {\"a\": [1, 2, 3]}  # code\n",
            "numbers 1234567890 3.14159 1e-9 0xdeadbeef",
            "CamelCaseWords and snake_case_words and kebab-case-words",
            "'s 't 're 've 'm 'll 'd I'M YOU'RE",
            "https://example.com/path?query=1&x=y#frag",
            "special markers <|endoftext|> and <|fim_prefix|> count as text",
        ];
        for s in samples {
            let want = reference.encode_ordinary(s).len() as u64;
            assert_eq!(count_tokens(s), Some(want), "{s:?}");
        }
        let long = samples.concat().repeat(50);
        assert_eq!(
            count_tokens(&long),
            Some(reference.encode_ordinary(&long).len() as u64)
        );
    }

    #[test]
    fn echoes_and_honours_max_tokens() {
        let req = LlmRequest {
            system: Some("be brief".into()),
            max_tokens: Some(3),
            ..LlmRequest::new(
                super::super::Provider::Echo,
                "echo",
                "one two three four five six seven",
            )
        };
        let r = complete(&req).unwrap();
        assert_eq!(r.usage.output_tokens, Some(3));
        assert_eq!(r.finish_reasons, ["length"]);
        assert_eq!(
            r.usage.input_tokens,
            count_tokens("be brief\none two three four five six seven")
        );
        assert_eq!(r.usage.source, UsageSource::Estimated);
    }
}
