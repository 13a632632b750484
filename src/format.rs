//! The one text formatter for money, tokens, durations and counts, so every
//! text output (run summary, progress, `trace show/diff/reprice/report`,
//! `stats`, budget and estimate messages) spells a number the same way; and
//! the one lowercase hex encoder (digests, trace and span ids).

use crate::accounting::CostTotal;

/// Lowercase hex of `bytes`. A table, not `write!("{b:02x}")` or the ids'
/// `{:032x}`: the formatter per byte was 3–4% of a checkpointed run (every
/// node output is hashed) and formatting each node's trace and span ids ~3%
/// of its telemetry.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(2 * bytes.len());
    hex_into(&mut out, bytes);
    String::from_utf8(out).unwrap_or_default()
}

/// [`hex`] appended to `out`: the trace encoder writes three ids a span.
pub fn hex_into(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    // Bytes first: pushing `char`s checked capacity and encoded each one.
    let start = out.len();
    out.resize(start + 2 * bytes.len(), 0);
    for (pair, b) in out[start..].chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
}

/// `$0.001234`: six decimals, enough for a single cheap call.
pub fn usd(v: f64) -> String {
    format!("${:.6}", v + 0.0)
}

/// `$0.0042`: four decimals, for a live status line.
pub fn usd_brief(v: f64) -> String {
    format!("${v:.4}")
}

/// `$0.0123` for cents and up, `$0.000405` below a cent.
pub fn usd_compact(v: f64) -> String {
    if v == 0.0 || v.abs() >= 0.01 {
        format!("${v:.4}")
    } else {
        format!("${v:.6}")
    }
}

/// `+$0.000370`, `-$0.000012`, `$0.000000`.
pub fn usd_delta(d: f64) -> String {
    let r = (d * 1e6).round() / 1e6;
    if r > 0.0 {
        format!("+{}", usd(r))
    } else if r < 0.0 {
        format!("-{}", usd(-r))
    } else {
        usd(0.0)
    }
}

/// `$0.001234`; `?` when unknown.
pub fn usd_or_unknown(v: Option<f64>) -> String {
    v.map_or_else(|| "?".into(), usd)
}

/// A scope's cost: `$0.001234`, or `≥ $0.001234` when some call was unpriced
/// (a lower bound never reads as the whole cost).
pub fn cost(c: &CostTotal) -> String {
    match c.usd {
        Some(v) if c.complete => usd(v),
        _ => format!("≥ {}", usd(c.lower_bound_usd)),
    }
}

/// A run's cost with the reason it is incomplete: `≥ $0.0123 (1 unpriced model)`.
pub fn cost_with_unpriced(c: &CostTotal, unpriced_models: usize) -> String {
    if c.complete || unpriced_models == 0 {
        cost(c)
    } else {
        format!(
            "{} ({})",
            cost(c),
            count(unpriced_models as u64, "unpriced model")
        )
    }
}

/// A share of a whole (0–1) as a whole percentage: `42%`.
pub fn percent(share: f64) -> String {
    format!("{:.0}%", share * 100.0)
}

/// `1 node`, `2 nodes`, `1 LLM call`: the noun's plural is `noun` + `s`.
pub fn count(n: u64, noun: &str) -> String {
    let mut s = String::new();
    write_count(&mut s, n, noun);
    s
}

/// [`count`] onto `out`, for text built once per node (no string of its own).
pub fn write_count(out: &mut String, n: u64, noun: &str) {
    use std::fmt::Write;
    let _ = write!(out, "{n} {noun}{}", plural_suffix(n, noun));
}

/// `noun` for 1, `noun` + `s` otherwise (`batch` → `batches`).
pub fn plural(n: u64, noun: &str) -> String {
    format!("{noun}{}", plural_suffix(n, noun))
}

fn plural_suffix(n: u64, noun: &str) -> &'static str {
    if n == 1 {
        ""
    } else if noun.ends_with("ch") || noun.ends_with('s') || noun.ends_with('x') {
        "es"
    } else {
        "s"
    }
}

/// The width of a text column: its widest cell (in characters), kept
/// within `min..=max`.
pub fn column_width<'a>(cells: impl IntoIterator<Item = &'a str>, min: usize, max: usize) -> usize {
    cells
        .into_iter()
        .map(|c| c.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(min, max)
}

/// `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `12.3 ms`, `1.20 s`, `2m03s`.
pub fn duration_ms(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else if ms < 60_000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        let s = (ms / 1000.0).round() as u64;
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

/// `512 B`, `1.5 KiB`, `76.7 MiB`, `1.02 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    let digits = if v < 10.0 { 2 } else { 1 };
    format!("{v:.digits$} {}", UNITS[unit])
}

/// `12ms`, `1.5s`, `2m 05s`, `1h 02m`: totals over many runs, read at a glance.
pub fn duration_coarse(ms: f64) -> String {
    let secs = ms / 1000.0;
    if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else if secs < 60.0 {
        format!("{secs:.1}s")
    } else if secs < 3600.0 {
        format!("{}m {:02}s", (secs / 60.0) as u64, (secs % 60.0) as u64)
    } else {
        let (h, m) = ((secs / 3600.0) as u64, ((secs % 3600.0) / 60.0) as u64);
        format!("{h}h {m:02}m")
    }
}

/// `MM:SS`, or `H:MM:SS` past an hour.
pub fn clock(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{:02}:{:02}", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lower_case_two_digits_a_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let want: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex(&all), want);
        assert_eq!(hex(&[]), "");
        // Appended after what the buffer holds.
        let mut out = b"id=".to_vec();
        hex_into(&mut out, &[0xab, 0x01]);
        assert_eq!(out, b"id=ab01");
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.50 KiB");
        assert_eq!(bytes(76_660_736), "73.1 MiB");
        assert_eq!(bytes(u64::MAX), "16777216.0 TiB");
    }

    #[test]
    fn money() {
        assert_eq!(usd(0.0012346), "$0.001235");
        assert_eq!(usd_compact(0.0123), "$0.0123");
        assert_eq!(usd_compact(0.000405), "$0.000405");
        assert_eq!(usd_delta(0.00037), "+$0.000370");
        assert_eq!(usd_delta(-0.000012), "-$0.000012");
        assert_eq!(usd_delta(0.0), "$0.000000");
        assert_eq!(usd_or_unknown(None), "?");
        let incomplete = CostTotal::new(0.0123, false);
        assert_eq!(cost(&incomplete), "≥ $0.012300");
        assert_eq!(
            cost_with_unpriced(&incomplete, 1),
            "≥ $0.012300 (1 unpriced model)"
        );
        assert_eq!(cost(&CostTotal::new(0.5, true)), "$0.500000");
    }

    #[test]
    fn counts_and_plurals() {
        assert_eq!(count(1, "LLM call"), "1 LLM call");
        assert_eq!(count(2, "LLM call"), "2 LLM calls");
        assert_eq!(count(1, "node"), "1 node");
        assert_eq!(count(0, "node"), "0 nodes");
        assert_eq!(count(3, "batch"), "3 batches");
        for (n, text) in [(0, "0"), (12, "12"), (999, "999"), (1234, "1,234")] {
            assert_eq!(thousands(n), text);
        }
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn durations() {
        for (ms, text) in [
            (12.345, "12.3 ms"),
            (1234.0, "1.23 s"),
            (123_000.0, "2m03s"),
        ] {
            assert_eq!(duration_ms(ms), text);
        }
        let coarse = [
            (12.4, "12ms"),
            (1520.0, "1.5s"),
            (125_000.0, "2m 05s"),
            (3_720_000.0, "1h 02m"),
        ];
        for (ms, text) in coarse {
            assert_eq!(duration_coarse(ms), text);
        }
        for (secs, text) in [(3, "00:03"), (125, "02:05"), (3723, "1:02:03")] {
            assert_eq!(clock(std::time::Duration::from_secs(secs)), text);
        }
    }
}
