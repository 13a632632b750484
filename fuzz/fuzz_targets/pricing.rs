//! Pricing override parsing (`PFLOW_PRICING_FILE` / `--pricing-file`): any
//! text merged over the built-in table, then looked up and priced.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pflow::pricing::{cost, PriceTable, TokenCounts};

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let (table, warnings) = match PriceTable::with_overrides_str(src, "fuzz.json") {
        Ok(t) => t,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    for w in &warnings {
        let _ = w.to_string();
    }
    // Price every overridden model: rates were accepted, so costing them must not panic.
    let Ok(serde_json::Value::Object(m)) = serde_json::from_str::<serde_json::Value>(src) else {
        return;
    };
    let counts = TokenCounts {
        input: 1_000_000,
        output: 2_000_000,
        cache_read: 300_000,
        cache_write: 400_000,
        reasoning: 50_000,
        ..Default::default()
    };
    for model in m.keys() {
        for provider in [None, Some("openai"), Some("anthropic")] {
            if let Some(p) = table.lookup(model, provider) {
                let c = cost(&counts, &p.price);
                let _ = c;
            }
        }
    }
});
