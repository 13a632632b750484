//! Provider response parsing, each provider, streaming and not: the code the
//! HTTP path runs, fed arbitrary bodies through `pflow::llm::wire`.
//!
//! Input: byte 0 picks the provider API (low bits) and streaming (bit 3),
//! byte 1 the network chunk size for streams (0: one chunk), the rest is the body.
//! A stream must parse the same however the network splits it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pflow::llm::wire::{parse_body, parse_stream, ALL};

fuzz_target!(|data: &[u8]| {
    let [sel, split, body @ ..] = data else {
        return;
    };
    let wire = ALL[(*sel & 0x07) as usize % ALL.len()];
    if sel & 0x08 == 0 {
        if let Ok(r) = parse_body(wire, body) {
            let _ = (r.usage.total(), r.usage.counts());
        }
        return;
    }
    let whole = parse_stream(wire, &[body]);
    if let Ok(r) = &whole {
        let _ = (r.usage.total(), r.usage.counts());
    }
    if *split > 0 && body.len() > 1 {
        let chunks: Vec<&[u8]> = body.chunks(*split as usize).collect();
        let pieces = parse_stream(wire, &chunks);
        assert_eq!(
            format!("{whole:?}"),
            format!("{pieces:?}"),
            "{wire:?}: the result depends on how the stream was split ({split}-byte chunks)"
        );
    }
});
