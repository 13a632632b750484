//! Precomputes the `o200k_base` tokenizer (src/llm/o200k.rs) at build time,
//! so a run uses it straight from the binary with nothing to parse or build:
//!
//! - the vocabulary, taken from the `tiktoken` crate (a build dependency):
//!   every token's bytes in rank order, their offsets, and an open-addressing
//!   hash table of ranks (hash in src/llm/o200k_hash.rs, shared with the
//!   reader);
//! - the pre-tokenizer: `o200k_base`'s split pattern compiled by
//!   `regex-automata` into a DFA, serialized sparse in its own zero-copy form.
//!
//! All little-endian; the reader checks the sizes it is given.

use std::path::Path;

include!("src/llm/o200k_hash.rs");

/// The split pattern of OpenAI's `o200k_base`, with `\s+(?!\S)|\s+` written
/// as `\s+`: a DFA has no look-ahead, so the reader trims a whitespace run
/// the way the look-ahead would (see `whitespace_end` in src/llm/o200k.rs).
const O200K_SPLIT: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|\p{N}{1,3}",
    r"| ?[^\s\p{L}\p{N}]+[\r\n/]*",
    r"|\s*[\r\n]+",
    r"|\s+",
);

/// Regular tokens of `o200k_base` (ranks 0..N); the two special tokens are
/// never produced for ordinary text.
const O200K_TOKENS: u32 = 199_998;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/llm/o200k_hash.rs");
    let out = std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR");
    let out = Path::new(&out);
    vocabulary(out);
    split_dfa(out);
}

fn vocabulary(out: &Path) {
    let bpe = tiktoken::get_encoding("o200k_base").expect("tiktoken has o200k_base");
    assert_eq!(bpe.vocab_size(), O200K_TOKENS as usize, "o200k_base size");
    let mut bytes = Vec::new();
    let mut offsets = Vec::with_capacity((O200K_TOKENS as usize + 1) * 4);
    let slots = TABLE_SLOTS;
    let mut table = vec![EMPTY_SLOT; slots];
    for rank in 0..O200K_TOKENS {
        let token = bpe.decode(&[rank]);
        assert!(!token.is_empty(), "rank {rank} has no bytes");
        offsets.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        let mut slot = slot_of(&token);
        while table[slot] != EMPTY_SLOT {
            slot = (slot + 1) & (slots - 1);
        }
        table[slot] = rank;
        bytes.extend_from_slice(&token);
    }
    offsets.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    let table: Vec<u8> = table.iter().flat_map(|r| r.to_le_bytes()).collect();
    write(out, "o200k_bytes.bin", &bytes);
    write(out, "o200k_offsets.bin", &offsets);
    write(out, "o200k_table.bin", &table);
}

fn split_dfa(out: &Path) {
    use regex_automata::dfa::{dense, StartKind};
    // Anchored only: the pattern matches every character, so pieces tile
    // the text and each search starts where the last one ended.
    let dfa = dense::Builder::new()
        .configure(dense::Config::new().start_kind(StartKind::Anchored))
        .build(O200K_SPLIT)
        .expect("the o200k split pattern compiles");
    // Sparse: 0.14 MB in the binary instead of the dense form's 2.8 MB
    // (the release binary stays under 30 MB); checked in ~5 ms when loaded.
    let sparse = dfa.to_sparse().expect("the split DFA has a sparse form");
    write(out, "o200k_split.dfa", &sparse.to_bytes_little_endian());
}

fn write(out: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(out.join(name), bytes).unwrap_or_else(|e| panic!("writing {name}: {e}"));
}
