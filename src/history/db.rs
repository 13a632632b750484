//! Opening the history database: schema migrations keyed on
//! `PRAGMA user_version`, WAL mode and a busy timeout so concurrent runs
//! queue for the write lock instead of failing, and a bounded retry for the
//! moments SQLite reports `SQLITE_BUSY` without waiting.

use super::HistoryError;
use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior};
use std::path::Path;
use std::time::{Duration, Instant};

/// The schema version this pflow writes; `MIGRATIONS[i]` goes from version `i` to `i + 1`.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The usage columns every history table carries (what
/// [`crate::accounting::stored::USAGE_SUMS`] adds up).
macro_rules! usage_columns {
    () => {
        "
    llm_calls INTEGER NOT NULL,
    tokens_input INTEGER NOT NULL,
    tokens_output INTEGER NOT NULL,
    tokens_total INTEGER NOT NULL,
    tokens_cache_read INTEGER NOT NULL,
    tokens_cache_write INTEGER NOT NULL,
    tokens_reasoning INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    cost_complete INTEGER NOT NULL,
"
    };
}

const MIGRATIONS: &[&str] = &[
    concat!(
        r#"
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    time_unix_ms INTEGER NOT NULL,
    command TEXT NOT NULL,
    workflow_name TEXT,
    workflow_hash TEXT,
    status TEXT NOT NULL,
    exit_code INTEGER NOT NULL,
    duration_ms REAL NOT NULL,"#,
        usage_columns!(),
        r#"    trace_id TEXT,
    trace_file TEXT
);
CREATE INDEX runs_by_time ON runs (time_unix_ms);
CREATE TABLE run_models (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    model TEXT NOT NULL,"#,
        usage_columns!(),
        r#"    PRIMARY KEY (run_id, model)
);
CREATE TABLE run_nodes (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    section TEXT NOT NULL,
    node_path TEXT NOT NULL,
    duration_ms REAL NOT NULL,"#,
        usage_columns!(),
        r#"    PRIMARY KEY (run_id, section, node_path)
);
"#
    ),
    r#"
ALTER TABLE runs ADD COLUMN reused_nodes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN reused_llm_calls INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN reused_tokens_total INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN cost_reused_usd REAL NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN cost_reused_complete INTEGER NOT NULL DEFAULT 1;
"#,
    // One row per LLM call attempt: latency percentiles and per-node
    // suggestions need the calls, not only their sums. Runs recorded before
    // this version have none (their totals are unchanged).
    r#"
CREATE TABLE run_calls (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    section TEXT NOT NULL,
    node_path TEXT,
    model TEXT NOT NULL,
    duration_ms REAL NOT NULL,
    tokens_input INTEGER NOT NULL,
    tokens_output INTEGER NOT NULL,
    tokens_cache_read INTEGER NOT NULL,
    tokens_cache_write INTEGER NOT NULL,
    tokens_reasoning INTEGER NOT NULL,
    cost_usd REAL,
    usage_source TEXT,
    max_tokens INTEGER,
    time_to_first_chunk_ms REAL,
    failed INTEGER NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX run_calls_by_model ON run_calls (model);
"#,
    // Per-node rows as one JSON array per run and section: a row per node was
    // ~13k instructions of B-tree work per node at the end of every run (a
    // quarter of the default mode's overhead on a 10k-node chain). `run_nodes`
    // stays, as a view with the same columns, for every query and for users
    // reading the database. A node without LLM usage is `[path, duration_ms]`;
    // the view fills the usage columns with their zero values (cost known).
    r#"
CREATE TABLE run_node_sets (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    section TEXT NOT NULL,
    nodes TEXT NOT NULL,
    PRIMARY KEY (run_id, section)
);
INSERT INTO run_node_sets (run_id, section, nodes)
    SELECT run_id, section, json_group_array(json_array(node_path, duration_ms, llm_calls,
        tokens_input, tokens_output, tokens_total, tokens_cache_read, tokens_cache_write,
        tokens_reasoning, cost_usd, cost_complete))
    FROM run_nodes GROUP BY run_id, section;
DROP TABLE run_nodes;
CREATE VIEW run_nodes (run_id, section, node_path, duration_ms, llm_calls, tokens_input,
    tokens_output, tokens_total, tokens_cache_read, tokens_cache_write, tokens_reasoning,
    cost_usd, cost_complete) AS
SELECT s.run_id, s.section, n.value ->> 0, n.value ->> 1, COALESCE(n.value ->> 2, 0),
    COALESCE(n.value ->> 3, 0), COALESCE(n.value ->> 4, 0), COALESCE(n.value ->> 5, 0),
    COALESCE(n.value ->> 6, 0), COALESCE(n.value ->> 7, 0), COALESCE(n.value ->> 8, 0),
    COALESCE(n.value ->> 9, 0.0), COALESCE(n.value ->> 10, 1)
FROM run_node_sets s, json_each(s.nodes) n;
"#,
];

/// How long one statement waits for another run's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a whole operation keeps retrying: bounded, so history never hangs a run.
const RETRY_FOR: Duration = Duration::from_secs(10);

/// Opens (creating when missing) and migrates the database at `path`.
pub fn open(path: &Path) -> Result<Connection, HistoryError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::telemetry::file::ensure_dir(dir).map_err(|source| HistoryError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    private_file(path);
    let sql = HistoryError::sql;
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql(path))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sql(path))?;
    // WAL: readers (`pflow stats`) never block a run's write, and writers queue on the busy timeout.
    let _mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(sql(path))?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sql(path))?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(sql(path))?;
    migrate(&mut conn, path)?;
    Ok(conn)
}

/// The history holds workflow names and paths: 0600 like the traces, even
/// under a pre-existing 0755 `PFLOW_HOME` or a lax umask. SQLite gives the
/// `-wal` and `-shm` files the database's mode.
fn private_file(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path);
        for p in [
            path.to_path_buf(),
            path.with_extension("db-wal"),
            path.with_extension("db-shm"),
        ] {
            if p.exists() {
                let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Brings the schema to [`SCHEMA_VERSION`], under the write lock so that
/// concurrent first runs create it exactly once.
pub fn migrate(conn: &mut Connection, path: &Path) -> Result<(), HistoryError> {
    let sql = HistoryError::sql;
    let version = user_version(conn).map_err(sql(path))?;
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql(path))?;
    // Read again under the lock: another run may have migrated meanwhile.
    let version = user_version(&tx).map_err(sql(path))?;
    if version > SCHEMA_VERSION {
        return Err(HistoryError::TooNew {
            path: path.to_path_buf(),
            found: version,
            known: SCHEMA_VERSION,
        });
    }
    for step in MIGRATIONS.iter().skip(version.max(0) as usize) {
        tx.execute_batch(step).map_err(sql(path))?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(sql(path))?;
    tx.commit().map_err(sql(path))
}

pub fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

fn is_busy(e: &HistoryError) -> bool {
    matches!(
        e,
        HistoryError::Sqlite { source: rusqlite::Error::SqliteFailure(f, _), .. }
            if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// Opens the database and runs `op`, retrying the whole of it while SQLite
/// says busy (a lock upgrade it cannot wait for), for at most [`RETRY_FOR`].
pub fn with_retry<T>(
    path: &Path,
    mut op: impl FnMut(&mut Connection) -> Result<T, HistoryError>,
) -> Result<T, HistoryError> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        match open(path).and_then(|mut c| op(&mut c)) {
            Err(e) if is_busy(&e) && start.elapsed() < RETRY_FOR => {
                // Jitter, so runs that collided do not collide again in step.
                let jitter = Duration::from_millis(rand::random::<u64>() % 20);
                std::thread::sleep(pause + jitter);
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            Err(e) if is_busy(&e) => {
                return Err(HistoryError::Busy {
                    path: path.to_path_buf(),
                    secs: RETRY_FOR.as_secs(),
                })
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_the_schema_once_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/history.db");
        let conn = open(&path).unwrap();
        assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let objects: Vec<(String, String)> = conn
            .prepare("SELECT type, name FROM sqlite_master WHERE name LIKE 'run%' AND type IN ('table', 'view') ORDER BY name")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let objects: Vec<(&str, &str)> = objects
            .iter()
            .map(|(t, n)| (t.as_str(), n.as_str()))
            .collect();
        assert_eq!(
            objects,
            [
                ("table", "run_calls"),
                ("table", "run_models"),
                ("table", "run_node_sets"),
                ("view", "run_nodes"),
                ("table", "runs"),
            ]
        );
        drop(conn);
        // A second open finds the version current and changes nothing.
        let conn = open(&path).unwrap();
        assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn a_version_2_database_gains_the_calls_table_and_keeps_its_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        {
            // The database as pflow wrote it before per-call rows existed.
            let c = at_version(&path, 2);
            c.execute(
                "INSERT INTO runs (time, time_unix_ms, command, status, exit_code, duration_ms,
                    llm_calls, tokens_input, tokens_output, tokens_total, tokens_cache_read,
                    tokens_cache_write, tokens_reasoning, cost_usd, cost_complete)
                 VALUES ('2025-01-01T00:00:00Z', 0, 'run', 'ok', 0, 5.0, 1, 10, 5, 15, 0, 0, 0, 0.25, 1)",
                [],
            )
            .unwrap();
        }
        let conn = open(&path).unwrap();
        assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
        let (runs, calls): (i64, i64) = conn
            .query_row(
                "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM run_calls)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((runs, calls), (1, 0));
        // The old run takes call rows like a new one would.
        conn.execute(
            "INSERT INTO run_calls (run_id, seq, section, model, duration_ms, tokens_input,
                tokens_output, tokens_cache_read, tokens_cache_write, tokens_reasoning,
                usage_source, failed) VALUES (1, 0, 'workflow', 'm', 1.0, 1, 1, 0, 0, 0, 'provider', 0)",
            [],
        )
        .unwrap();
    }

    /// A database at `path` as pflow wrote it at schema `version`.
    fn at_version(path: &Path, version: usize) -> Connection {
        let c = Connection::open(path).unwrap();
        for step in &MIGRATIONS[..version] {
            c.execute_batch(step).unwrap();
        }
        c.pragma_update(None, "user_version", version as i64)
            .unwrap();
        c
    }

    /// Every column of every `run_nodes` row, as SQLite returns it.
    fn node_rows(c: &Connection) -> Vec<Vec<rusqlite::types::Value>> {
        let mut stmt = c
            .prepare("SELECT * FROM run_nodes ORDER BY run_id, section, node_path")
            .unwrap();
        let n = stmt.column_count();
        stmt.query_map([], |r| (0..n).map(|i| r.get(i)).collect())
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn version_3_node_rows_read_back_unchanged_through_the_view() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        let before = {
            let c = at_version(&path, 3);
            c.execute_batch(
                "INSERT INTO runs (time, time_unix_ms, command, status, exit_code, duration_ms,
                    llm_calls, tokens_input, tokens_output, tokens_total, tokens_cache_read,
                    tokens_cache_write, tokens_reasoning, cost_usd, cost_complete)
                 VALUES ('2025-01-01T00:00:00Z', 0, 'run', 'ok', 0, 5.0, 1, 10, 5, 15, 0, 0, 0, 0.25, 1),
                        ('2025-01-02T00:00:00Z', 1, 'run', 'failed', 1, 7.0, 0, 0, 0, 0, 0, 0, 0, 0, 1);
                 INSERT INTO run_nodes VALUES
                    (1, 'workflow', 'ask', 4.5, 2, 10, 5, 15, 3, 1, 2, 0.25, 0),
                    (1, 'workflow', 'prep', 0.125, 0, 0, 0, 0, 0, 0, 0, 0.0, 1),
                    (1, 'planner', 'plan \"q\" [x]', 3.0, 1, 7, 1, 8, 0, 0, 0, 0.5, 1),
                    (2, 'workflow', 'w', 7.0, 0, 0, 0, 0, 0, 0, 0, 0.0, 1);",
            )
            .unwrap();
            node_rows(&c)
        };
        assert_eq!(before.len(), 4);
        let conn = open(&path).unwrap();
        assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
        assert_eq!(node_rows(&conn), before, "same values, same SQLite types");
        let sets: i64 = conn
            .query_row("SELECT count(*) FROM run_node_sets", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sets, 3, "one per run and section");
        // Deleting a run takes its node rows with it.
        conn.execute("DELETE FROM runs WHERE id = 1", []).unwrap();
        assert_eq!(node_rows(&conn), before[3..]);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        {
            let c = Connection::open(&path).unwrap();
            c.pragma_update(None, "user_version", SCHEMA_VERSION + 5)
                .unwrap();
        }
        let e = open(&path).unwrap_err();
        assert!(matches!(e, HistoryError::TooNew { found, .. } if found == SCHEMA_VERSION + 5));
        assert!(e.to_string().contains("upgrade pflow"), "{e}");
    }

    #[test]
    fn a_file_that_is_not_sqlite_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        std::fs::write(&path, vec![b'x'; 4096]).unwrap();
        let e = open(&path).unwrap_err();
        assert!(e.to_string().contains("history.db"), "{e}");
    }
}
