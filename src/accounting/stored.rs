//! Usage summed over stored history rows. History keeps its rows in SQLite
//! and `pflow stats` adds them up there (one pass, exact float sums); the SQL
//! that sums tokens and cost is spelled here, beside the type it fills, so
//! accounting stays the one place that sums them.

use super::{CostTotal, Tokens};
use rusqlite::Row;
use serde::Serialize;

/// LLM usage summed over history rows: `cost_usd` is null when some run had
/// an unpriced LLM call (`cost_usd_lower_bound` the priced part).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UsageSums {
    pub llm_calls: u64,
    pub tokens: Tokens,
    pub tokens_total: u64,
    #[serde(flatten)]
    pub cost: CostTotal,
}

/// The token columns of a history table, in the order [`tokens_at`] reads them.
pub const TOKEN_COLUMNS: &str = "tokens_input, tokens_output, tokens_total, tokens_cache_read,
        tokens_cache_write, tokens_reasoning";

/// The usage sums over a table aliased `t` (`runs`, `run_models`,
/// `run_nodes`): 9 columns, calls, the six token columns, cost, complete.
pub const USAGE_SUMS: &str = "COALESCE(SUM(t.llm_calls), 0),
    COALESCE(SUM(t.tokens_input), 0), COALESCE(SUM(t.tokens_output), 0),
    COALESCE(SUM(t.tokens_total), 0), COALESCE(SUM(t.tokens_cache_read), 0),
    COALESCE(SUM(t.tokens_cache_write), 0), COALESCE(SUM(t.tokens_reasoning), 0),
    COALESCE(SUM(t.cost_usd), 0.0), COALESCE(MIN(t.cost_complete), 1)";

/// The [`TOKEN_COLUMNS`] of a row, from column `first` on.
pub fn tokens_at(r: &Row, first: usize) -> rusqlite::Result<Tokens> {
    let g = |i: usize| -> rusqlite::Result<u64> { Ok(r.get::<_, i64>(first + i)?.max(0) as u64) };
    Ok(Tokens {
        input: g(0)?,
        output: g(1)?,
        total: g(2)?,
        cache_read: g(3)?,
        cache_write: g(4)?,
        cache_write_1h: 0,
        reasoning: g(5)?,
    })
}

/// The [`USAGE_SUMS`] of a row, from column `first` on.
pub fn usage_at(r: &Row, first: usize) -> rusqlite::Result<UsageSums> {
    let tokens = tokens_at(r, first + 1)?;
    Ok(UsageSums {
        llm_calls: r.get::<_, Option<i64>>(first)?.unwrap_or(0).max(0) as u64,
        tokens_total: tokens.total,
        tokens,
        cost: CostTotal::new(r.get(first + 7)?, r.get::<_, i64>(first + 8)? != 0),
    })
}
