//! The `o200k_base` tokenizer (the GPT-4o family's encoding), used straight
//! from tables that build.rs computed at compile time: nothing is parsed,
//! decompressed or hashed when a run starts, so the first count costs what
//! any count costs (plus checking the split DFA once, ~5 ms).
//!
//! - The vocabulary comes from the `tiktoken` crate (a build dependency):
//!   every token's bytes in rank order and an open-addressing table of ranks
//!   ([`rank`]).
//! - Text is split into pieces by `o200k_base`'s pattern, compiled into a
//!   `regex-automata` DFA; the pattern's `\s+(?!\S)` look-ahead, which a DFA
//!   cannot express, is applied to each whitespace run ([`whitespace_end`]).
//! - Each piece is one token or merged with OpenAI's byte-pair rule: the
//!   adjacent pair of lowest rank first, leftmost on ties ([`merge`]).
//!
//! Counts are checked against tiktoken-rs, the reference implementation
//! (tests below). Crates compared in benches/README.md ("Tokenizers").

use regex_automata::dfa::{sparse, Automaton};
use regex_automata::{Anchored, Input};
use std::sync::OnceLock;

include!("o200k_hash.rs");

/// The DFA's serialized form is read as `u32`s: the bytes must be aligned.
#[repr(C)]
struct Aligned<B: ?Sized> {
    _align: [u32; 0],
    bytes: B,
}

static SPLIT_DFA: &Aligned<[u8]> = &Aligned {
    _align: [],
    bytes: *include_bytes!(concat!(env!("OUT_DIR"), "/o200k_split.dfa")),
};
static TOKEN_BYTES: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/o200k_bytes.bin"));
static OFFSETS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/o200k_offsets.bin"));
static TABLE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/o200k_table.bin"));

fn u32_at(bytes: &[u8], i: usize) -> Option<u32> {
    let b = bytes.get(i * 4..i * 4 + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The split DFA (sparse), checked once (every transition: ~5 ms).
fn split() -> Option<&'static sparse::DFA<&'static [u8]>> {
    static DFA: OnceLock<Option<sparse::DFA<&'static [u8]>>> = OnceLock::new();
    DFA.get_or_init(|| {
        sparse::DFA::from_bytes(&SPLIT_DFA.bytes)
            .ok()
            .map(|(dfa, _)| dfa)
    })
    .as_ref()
}

/// The bytes of the token of rank `r`.
fn token(r: u32) -> Option<&'static [u8]> {
    let r = r as usize;
    let start = u32_at(OFFSETS, r)? as usize;
    let end = u32_at(OFFSETS, r + 1)? as usize;
    TOKEN_BYTES.get(start..end)
}

/// The rank of the token spelled `bytes`, if it is one.
fn rank(bytes: &[u8]) -> Option<u32> {
    let mut slot = slot_of(bytes);
    loop {
        let r = u32_at(TABLE, slot)?;
        if r == EMPTY_SLOT {
            return None;
        }
        if token(r)? == bytes {
            return Some(r);
        }
        slot = (slot + 1) & (TABLE_SLOTS - 1);
    }
}

/// Where the piece found at `start..end` really ends: a run of whitespace
/// (without a line break at its end) that is followed by more text leaves
/// its last character to the next piece, as `\s+(?!\S)` does; a single
/// character stays (the pattern's plain `\s+` then takes it). A run ending
/// in `\r` or `\n` was matched by `\s*[\r\n]+`, which has no look-ahead.
fn whitespace_end(text: &str, start: usize, end: usize) -> usize {
    let run = &text[start..end];
    if end == text.len() || run.ends_with(['\r', '\n']) || !run.chars().all(char::is_whitespace) {
        return end;
    }
    match run.char_indices().last() {
        Some((last, _)) if last > 0 => start + last,
        _ => end,
    }
}

/// The pieces of `text`, in order; `None` only if the tables are unusable.
fn pieces(text: &str) -> Option<Vec<&str>> {
    let dfa = split()?;
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < text.len() {
        let input = Input::new(text).range(pos..).anchored(Anchored::Yes);
        // Every character matches some branch of the pattern, so an
        // anchored search always finds a non-empty piece.
        let end = match dfa.try_search_fwd(&input).ok()? {
            Some(m) if m.offset() > pos => whitespace_end(text, pos, m.offset()),
            _ => return None,
        };
        out.push(&text[pos..end]);
        pos = end;
    }
    Some(out)
}

/// OpenAI's byte-pair merge of one piece: the boundaries of its tokens.
/// Repeatedly joins the adjacent pair whose concatenation has the lowest
/// rank (the leftmost on ties) until no adjacent pair is a token. A heap of
/// candidate pairs and a linked list of parts keep it O(n log n), so a long
/// piece (a run of letters without a space) costs no more than its length.
fn merge(piece: &[u8]) -> Vec<usize> {
    use std::cmp::Reverse;
    let n = piece.len();
    if n < 2 {
        return vec![0, n];
    }
    // Part starting at byte i: next[i] is where the next part starts (n: none),
    // prev[i] the previous part's start (usize::MAX: none).
    let mut next: Vec<usize> = (1..=n).collect();
    let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
    let mut alive = vec![true; n];
    // pair[i]: the rank of part i joined with the next part (u32::MAX: not a token).
    let mut pair = vec![u32::MAX; n];
    let joined = |i: usize, next: &[usize]| -> u32 {
        match next.get(i).and_then(|&j| next.get(j)) {
            Some(&end) => rank(&piece[i..end]).unwrap_or(u32::MAX),
            None => u32::MAX,
        }
    };
    let mut heap = std::collections::BinaryHeap::new();
    for (i, r) in pair.iter_mut().enumerate().take(n - 1) {
        *r = joined(i, &next);
        if *r != u32::MAX {
            heap.push(Reverse((*r, i)));
        }
    }
    while let Some(Reverse((r, i))) = heap.pop() {
        // A pair that changed since it was pushed is stale (each part only
        // grows, so its pair's rank never comes back).
        if !alive[i] || pair[i] != r {
            continue;
        }
        let j = next[i];
        alive[j] = false;
        next[i] = next[j];
        if next[i] < n {
            prev[next[i]] = i;
        }
        pair[i] = joined(i, &next);
        if pair[i] != u32::MAX {
            heap.push(Reverse((pair[i], i)));
        }
        if let Some(p) = Some(prev[i]).filter(|&p| p != usize::MAX) {
            pair[p] = joined(p, &next);
            if pair[p] != u32::MAX {
                heap.push(Reverse((pair[p], p)));
            }
        }
    }
    let mut bounds = Vec::new();
    let mut i = 0;
    while i < n {
        bounds.push(i);
        i = next[i];
    }
    bounds.push(n);
    bounds
}

/// The token ranks of `text` (special-token markers are plain text).
pub fn encode(text: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for piece in pieces(text)? {
        let piece = piece.as_bytes();
        if let Some(r) = rank(piece) {
            out.push(r);
            continue;
        }
        let bounds = merge(piece);
        for w in bounds.windows(2) {
            out.push(rank(&piece[w[0]..w[1]])?);
        }
    }
    Some(out)
}

/// The number of tokens of `text`.
pub fn count(text: &str) -> Option<usize> {
    let mut n = 0;
    for piece in pieces(text)? {
        let piece = piece.as_bytes();
        n += if rank(piece).is_some() {
            1
        } else {
            merge(piece).len() - 1
        };
    }
    Some(n)
}

/// The bytes of a token sequence (a cut may end inside a character).
pub fn decode(ranks: &[u32]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for &r in ranks {
        out.extend_from_slice(token(r)?);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> &'static tiktoken_rs::CoreBPE {
        static R: OnceLock<tiktoken_rs::CoreBPE> = OnceLock::new();
        R.get_or_init(|| tiktoken_rs::o200k_base().unwrap())
    }

    fn check(s: &str) {
        let want = reference().encode_ordinary(s);
        assert_eq!(encode(s).as_deref(), Some(&want[..]), "{s:?}");
        assert_eq!(count(s), Some(want.len()), "{s:?}");
    }

    #[test]
    fn tables_are_whole() {
        assert_eq!(OFFSETS.len() % 4, 0);
        let n = OFFSETS.len() / 4 - 1;
        assert_eq!(n, 199_998);
        for r in [0u32, 1, 255, 1000, 100_000, 199_997] {
            assert_eq!(rank(token(r).unwrap()), Some(r));
        }
        assert_eq!(token(199_998), None);
        assert!(split().is_some());
    }

    #[test]
    fn ranks_match_tiktoken_on_every_token() {
        // Each token's bytes encode to itself (a byte-level token whose bytes
        // are not UTF-8 can only be checked by lookup).
        for r in 0..199_998u32 {
            let t = token(r).unwrap();
            assert_eq!(rank(t), Some(r), "rank {r}");
        }
    }

    #[test]
    fn splits_and_merges_like_the_reference() {
        let samples = [
            "",
            " ",
            "  ",
            "a",
            "\n",
            "\r\n",
            " \n ",
            "a  b",
            "a   \n  b",
            "x \t\u{a0} y",
            "end with spaces   ",
            "\n\n\n  \n\tx",
            "I'M YOU'RE he'll she'D it'S they'Ve",
            "don’t — “quoted” «guillemets»",
            "ǅungla ǈ title-case Ǳ",
            "e\u{301}te\u{301} combining",
            "123456789 12 1 1234",
            "١٢٣٤ ٥ Ⅻ ½",
            "/usr/local/bin //\n//",
            "!!!\n\n???\r\n",
            "日本語のテキスト、中文文本。한국어 텍스트",
            "🚀🚀🚀 👩‍👩‍👧 emoji",
            "tab\tseparated\tvalues\n",
            "\u{2028}line sep\u{2029}para",
            "ſs Kelvin K 'ſ",
            "<|endoftext|> <|fim_prefix|>",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ];
        for s in samples {
            check(s);
        }
    }

    #[test]
    fn random_text_matches_the_reference() {
        // Characters from every class the split pattern distinguishes,
        // strung together at random (a fixed seed: the same cases each run).
        let pool: Vec<char> = " \t\n\r\u{a0}\u{3000}aZkéÉßǅ\u{301}\u{2d0}中日ひ한1٣Ⅻ½'’.,!?/-_()[]{}\"#@$%^&*+=<>|~`;:🚀\u{200d}\u{feff}s"
            .chars()
            .collect();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..3000 {
            let len = (next() % 24) as usize;
            let s: String = (0..len)
                .map(|_| pool[(next() % pool.len() as u64) as usize])
                .collect();
            check(&s);
        }
    }

    #[test]
    fn long_pieces_merge_like_the_reference() {
        // One piece each: letters without a space, digits-free punctuation.
        let mut x: u64 = 42;
        let letters: String = (0..3000)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (b'a' + ((x >> 33) % 26) as u8) as char
            })
            .collect();
        check(&letters);
        check(&"ab".repeat(2000));
        check(&"#$%&".repeat(500));
        check(&"日本語".repeat(400));
    }

    #[test]
    fn decode_gives_the_text_back() {
        let s = "Ünïcödé — 日本語 🚀 text";
        assert_eq!(decode(&encode(s).unwrap()).unwrap(), s.as_bytes());
    }
}
