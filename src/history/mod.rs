//! Run history: every run's metrics summary appended to a local SQLite
//! database (`$PFLOW_HOME/history.db`), the queries behind `pflow stats`, and
//! trace-file retention. History observes like telemetry does: the CLI turns
//! any error here into one warning line, never a failed run.

pub mod db;
pub mod duration;
pub mod query;
pub mod record;
pub mod report;
pub mod retention;
pub mod suggest;
pub mod trends;

pub use query::{prune, stats, GroupBy, Stats};
pub use record::{record, RunRecord, WorkflowIdent};

use std::path::{Path, PathBuf};

/// Everything that can go wrong reading or writing the history.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cannot use the run history `{}`: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot create `{}`: {source}", path.display())]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the run history `{}` has schema version {found}, newer than this pflow knows ({known}): upgrade pflow", path.display())]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("the run history `{}` stayed locked by other runs for {secs}s", path.display())]
    Busy { path: PathBuf, secs: u64 },
    #[error("invalid {what} `{value}`: {reason}")]
    BadValue {
        what: &'static str,
        value: String,
        reason: String,
    },
}

impl HistoryError {
    pub(crate) fn sql(path: &Path) -> impl FnOnce(rusqlite::Error) -> HistoryError + '_ {
        move |source| HistoryError::Sqlite {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The history database: `$PFLOW_HOME/history.db`.
pub fn db_path() -> PathBuf {
    db_in(&crate::telemetry::pflow_home())
}

/// The history database of the data directory `home`.
pub fn db_in(home: &std::path::Path) -> PathBuf {
    home.join("history.db")
}

/// Whether runs are recorded: on unless `PFLOW_HISTORY` is `off`, `0` or `false`.
pub fn enabled() -> bool {
    !std::env::var("PFLOW_HISTORY").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "off" | "0" | "false" | "no"
        )
    })
}
