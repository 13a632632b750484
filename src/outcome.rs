//! Typed outcomes every layer shares: how a run ended ([`RunStatus`], the
//! `pflow.run.status` attribute and the history's `status`) and the process
//! exit code ([`ExitCode`]). Both are documented contracts: the names and
//! numbers here never change.

use serde::Serialize;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Ok,
    /// The workflow or its inputs were invalid; nothing ran.
    Invalid,
    /// `--max-cost` / `--max-tokens-total` stopped it.
    BudgetExceeded,
    Failed,
    /// SIGINT or SIGTERM.
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Ok => "ok",
            RunStatus::Invalid => "invalid",
            RunStatus::BudgetExceeded => "budget_exceeded",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The exit code of every `pflow` command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "i32")]
pub enum ExitCode {
    Success = 0,
    /// The workflow (or the command) failed.
    Failed = 1,
    /// Invalid input: usage, workflow file, parameters, price file.
    Invalid = 2,
    /// Stopped by a budget (`--max-cost`, `--max-tokens-total`).
    Budget = 3,
    /// SIGINT (128 + 2).
    Interrupted = 130,
    /// SIGTERM (128 + 15).
    Terminated = 143,
}

impl ExitCode {
    /// The number the process exits with.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The run status this exit code reports.
    pub fn status(self) -> RunStatus {
        match self {
            ExitCode::Success => RunStatus::Ok,
            ExitCode::Failed => RunStatus::Failed,
            ExitCode::Invalid => RunStatus::Invalid,
            ExitCode::Budget => RunStatus::BudgetExceeded,
            ExitCode::Interrupted | ExitCode::Terminated => RunStatus::Interrupted,
        }
    }
}

impl From<ExitCode> for i32 {
    fn from(c: ExitCode) -> i32 {
        c.code()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_the_documented_numbers() {
        let all = [
            (ExitCode::Success, 0, "ok"),
            (ExitCode::Failed, 1, "failed"),
            (ExitCode::Invalid, 2, "invalid"),
            (ExitCode::Budget, 3, "budget_exceeded"),
            (ExitCode::Interrupted, 130, "interrupted"),
            (ExitCode::Terminated, 143, "interrupted"),
        ];
        for (c, n, status) in all {
            assert_eq!(c.code(), n);
            assert_eq!(serde_json::to_value(c).unwrap(), serde_json::json!(n));
            assert_eq!(c.status().as_str(), status);
            assert_eq!(
                serde_json::to_value(c.status()).unwrap(),
                serde_json::json!(status)
            );
        }
    }
}
