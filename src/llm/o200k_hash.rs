// The hash of the o200k rank table, shared by build.rs (which fills the
// table) and src/llm/o200k.rs (which probes it): `include!`d by both, so
// the two can never disagree.

/// Slots in the open-addressing table: a power of two, about 2.6 × the
/// 199,998 tokens, so a miss (most probes of the BPE merge) ends after one
/// or two slots.
const TABLE_SLOTS: usize = 1 << 19;

/// An empty slot (no token has this rank).
const EMPTY_SLOT: u32 = u32::MAX;

/// FNV-1a over the token's bytes (tokens are short: a few bytes each), with
/// the high bits folded in, reduced to a slot.
fn slot_of(bytes: &[u8]) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 29;
    (h as usize) & (TABLE_SLOTS - 1)
}
