//! The offline `echo` model: answers with the prompt and counts tokens with
//! a real BPE tokenizer (`o200k_base`, embedded in tiktoken-rs), so demos and
//! tests exercise the whole token path with no account and no network.

use super::usage::{Usage, UsageSource};
use super::{LlmError, LlmRequest, LlmResponse};
use std::sync::OnceLock;

static BPE: OnceLock<Option<tiktoken_rs::CoreBPE>> = OnceLock::new();

/// Token count of `text` with `o200k_base` (the GPT-4o family's encoding).
pub fn count_tokens(text: &str) -> Option<u64> {
    let bpe = BPE
        .get_or_init(|| tiktoken_rs::o200k_base().ok())
        .as_ref()?;
    Some(bpe.encode_with_special_tokens(text).len() as u64)
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
        if tokens > max {
            // Honour max_tokens like a real model would: cut the answer.
            if let Some(bpe) = BPE.get().and_then(Option::as_ref) {
                let ids = bpe.encode_with_special_tokens(&text);
                text = bpe.decode(ids[..max as usize].to_vec()).unwrap_or_default();
            }
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_with_a_real_tokenizer() {
        let direct = tiktoken_rs::o200k_base()
            .unwrap()
            .encode_with_special_tokens("Hello, world! Tokens are counted.")
            .len() as u64;
        assert_eq!(
            count_tokens("Hello, world! Tokens are counted."),
            Some(direct)
        );
        assert!(direct > 3 && direct < 15);
    }

    #[test]
    fn echoes_and_honours_max_tokens() {
        let req = LlmRequest {
            provider: super::super::Provider::Echo,
            model: "echo".into(),
            prompt: "one two three four five six seven".into(),
            system: Some("be brief".into()),
            temperature: None,
            max_tokens: Some(3),
            stream: false,
            api: super::super::Api::Chat,
            images: vec![],
            json_mode: false,
            json_schema: None,
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
