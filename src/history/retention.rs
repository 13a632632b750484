//! Trace retention (`PFLOW_TRACE_RETENTION`): after each run, trace files in
//! `$PFLOW_HOME/traces` beyond a count (`50`) or an age (`30d`) are deleted.
//! Only `*.otlp.json` files go, never the one this run just wrote; temp files
//! of a trace still being written are left alone for an hour.

use super::duration::parse_age;
use super::HistoryError;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// What to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// The newest N trace files.
    Count(usize),
    /// Trace files younger than this.
    Age(Duration),
}

/// A temp file older than this is a leftover of a run that died mid-write.
const STALE_TEMP: Duration = Duration::from_secs(3600);

impl Retention {
    pub fn parse(s: &str) -> Result<Retention, HistoryError> {
        let t = s.trim();
        let bad = |reason: String| HistoryError::BadValue {
            what: "PFLOW_TRACE_RETENTION",
            value: s.to_string(),
            reason,
        };
        if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()) {
            return match t.parse::<usize>() {
                Ok(n) if n > 0 => Ok(Retention::Count(n)),
                _ => Err(bad("a count must be at least 1".into())),
            };
        }
        parse_age(t)
            .map(Retention::Age)
            .map_err(|e| bad(format!("{e}, or a count of files (50)")))
    }

    /// `PFLOW_TRACE_RETENTION`, when set and not empty.
    pub fn from_env() -> Option<Result<Retention, HistoryError>> {
        std::env::var("PFLOW_TRACE_RETENTION")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| Retention::parse(&v))
    }
}

/// What a sweep did.
#[derive(Debug, Default)]
pub struct Swept {
    pub removed: Vec<PathBuf>,
    /// Files that could not be deleted (the first few, with the reason).
    pub errors: Vec<String>,
}

/// A trace file's time: the UTC timestamp its name starts with, else its mtime.
fn trace_time(name: &str, path: &Path) -> Option<SystemTime> {
    let stamp = name.split('_').next().unwrap_or("");
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%S%.3fZ")
        .ok()
        .and_then(|t| {
            let ms = t.and_utc().timestamp_millis();
            u64::try_from(ms)
                .ok()
                .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
        })
        .or_else(|| std::fs::metadata(path).and_then(|m| m.modified()).ok())
}

/// A trace being written (or left by a killed run).
fn is_temp(name: &str) -> bool {
    name.starts_with(".pflow-trace-") && name.ends_with(".tmp")
}

/// Untouched for longer than [`STALE_TEMP`]: no live run is writing it.
fn is_stale(e: &std::fs::DirEntry, now: SystemTime) -> bool {
    e.metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|m| now.duration_since(m).ok())
        .is_some_and(|age| age > STALE_TEMP)
}

/// Removes the temp files killed runs left in `dir` (whatever the retention
/// setting: without one they would stay forever).
pub fn sweep_stale_temps(dir: &Path, now: SystemTime) -> Swept {
    let mut out = Swept::default();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().is_ok_and(|t| t.is_file()) && is_temp(&name) && is_stale(&e, now) {
            match std::fs::remove_file(e.path()) {
                Ok(()) => out.removed.push(e.path()),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => out.errors.push(format!("{}: {err}", e.path().display())),
            }
        }
    }
    out
}

/// Applies `policy` to the trace files in `dir`, never touching `keep`.
pub fn sweep(dir: &Path, policy: Retention, keep: Option<&Path>, now: SystemTime) -> Swept {
    let mut out = Swept::default();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let keep_name = keep.and_then(Path::file_name);
    let mut traces: Vec<(SystemTime, String, PathBuf)> = Vec::new();
    let mut kept_in_dir = false;
    let mut stale_temps = Vec::new();
    for e in entries.flatten() {
        // Symlinks and directories are not ours to delete.
        if !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        if is_temp(&name) {
            if is_stale(&e, now) {
                stale_temps.push(path);
            }
            continue;
        }
        if !name.ends_with(".otlp.json") {
            continue;
        }
        if Some(e.file_name().as_os_str()) == keep_name {
            kept_in_dir = true;
            continue;
        }
        if let Some(t) = trace_time(&name, &path) {
            traces.push((t, name, path));
        }
    }
    let doomed = doomed(traces, policy, kept_in_dir, now);
    for p in doomed.into_iter().chain(stale_temps) {
        match std::fs::remove_file(&p) {
            Ok(()) => out.removed.push(p),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => out.errors.push(format!("{}: {e}", p.display())),
        }
    }
    out
}

/// What `policy` deletes of `items` (time, name, path); one more is kept
/// when the current item is among them.
fn doomed(
    mut items: Vec<(SystemTime, String, PathBuf)>,
    policy: Retention,
    kept_in_dir: bool,
    now: SystemTime,
) -> Vec<PathBuf> {
    // Newest first; names break ties (they start with the time, then an id).
    items.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
    match policy {
        Retention::Count(n) => items
            .into_iter()
            .skip(n.saturating_sub(usize::from(kept_in_dir)))
            .map(|(_, _, p)| p)
            .collect(),
        Retention::Age(max) => items
            .into_iter()
            .filter(|(t, _, _)| now.duration_since(*t).is_ok_and(|age| age > max))
            .map(|(_, _, p)| p)
            .collect(),
    }
}

/// Applies `policy` to the run checkpoint directories in `dir` (names that
/// are run ids only), never touching `keep`.
pub fn sweep_runs(dir: &Path, policy: Retention, keep: Option<&Path>, now: SystemTime) -> Swept {
    let mut out = Swept::default();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let keep_name = keep.and_then(Path::file_name);
    let mut runs = Vec::new();
    let mut kept_in_dir = false;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !e.file_type().is_ok_and(|t| t.is_dir()) || !crate::checkpoint::store::is_run_id(&name) {
            continue;
        }
        if Some(e.file_name().as_os_str()) == keep_name {
            kept_in_dir = true;
            continue;
        }
        if let Some(t) = trace_time(&name, &e.path()) {
            runs.push((t, name, e.path()));
        }
    }
    for p in doomed(runs, policy, kept_in_dir, now) {
        match std::fs::remove_dir_all(&p) {
            Ok(()) => out.removed.push(p),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => out.errors.push(format!("{}: {e}", p.display())),
        }
    }
    out
}

/// The run's end: `PFLOW_TRACE_RETENTION` applied to the checkpoints in
/// `dir` as to the traces (nothing is deleted without it).
pub fn apply_runs_from_env(dir: &Path, keep: Option<&Path>) -> Option<String> {
    let Ok(policy) = Retention::from_env()? else {
        // The trace sweep already warned about the bad value.
        return None;
    };
    let swept = sweep_runs(dir, policy, keep, SystemTime::now());
    let n = swept.errors.len();
    swept
        .errors
        .first()
        .map(|first| format!("checkpoint retention could not delete {n} run(s), e.g. {first}"))
}

/// The run's end: applies `PFLOW_TRACE_RETENTION` to `dir`, returning warnings (at most one line).
pub fn apply_from_env(dir: &Path, keep: Option<&Path>) -> Option<String> {
    let Some(policy) = Retention::from_env() else {
        let swept = sweep_stale_temps(dir, SystemTime::now());
        return swept
            .errors
            .first()
            .map(|first| format!("could not delete a stale temp trace file: {first}"));
    };
    match policy {
        Err(e) => Some(format!("trace retention off: {e}")),
        Ok(policy) => {
            let swept = sweep(dir, policy, keep, SystemTime::now());
            let n = swept.errors.len();
            swept
                .errors
                .first()
                .map(|first| format!("trace retention could not delete {n} file(s), e.g. {first}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_counts_and_ages() {
        assert_eq!(Retention::parse("50").unwrap(), Retention::Count(50));
        assert_eq!(
            Retention::parse("30d").unwrap(),
            Retention::Age(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(
            Retention::parse("12h").unwrap(),
            Retention::Age(Duration::from_secs(12 * 3600))
        );
        let e = Retention::parse("0").unwrap_err().to_string();
        assert!(
            e.contains("PFLOW_TRACE_RETENTION") && e.contains("at least 1"),
            "{e}"
        );
        let e = Retention::parse("forever").unwrap_err().to_string();
        assert!(e.contains("`forever`") && e.contains("count"), "{e}");
    }

    fn name(secs: i64) -> String {
        let t = chrono::DateTime::from_timestamp(secs, 0).unwrap();
        format!("{}_{:032x}.otlp.json", t.format("%Y%m%dT%H%M%S%.3fZ"), secs)
    }

    #[test]
    fn count_keeps_the_newest_and_the_current_file() {
        let dir = tempfile::tempdir().unwrap();
        let base = 1_700_000_000;
        for i in 0..5 {
            std::fs::write(dir.path().join(name(base + i)), "{}").unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        // The current run's file is the oldest by name: it still stays, and counts.
        let current = dir.path().join(name(base - 100));
        std::fs::write(&current, "{}").unwrap();
        let swept = sweep(
            dir.path(),
            Retention::Count(3),
            Some(&current),
            SystemTime::now(),
        );
        assert_eq!(swept.removed.len(), 3, "{:?}", swept.removed);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut want = vec![
            name(base - 100),
            name(base + 3),
            name(base + 4),
            "notes.txt".into(),
        ];
        want.sort();
        assert_eq!(left, want);
    }

    #[test]
    fn age_uses_the_name_time_else_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_100_000);
        let old = dir.path().join(name(1_700_000_000));
        let young = dir.path().join(name(1_700_099_000));
        let unnamed_old = dir.path().join("copied.otlp.json");
        for p in [&old, &young, &unnamed_old] {
            std::fs::write(p, "{}").unwrap();
        }
        let f = std::fs::File::options()
            .write(true)
            .open(&unnamed_old)
            .unwrap();
        f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000))
            .unwrap();
        let swept = sweep(
            dir.path(),
            Retention::Age(Duration::from_secs(3600)),
            None,
            now,
        );
        let mut removed = swept.removed.clone();
        removed.sort();
        let mut want = vec![old, unnamed_old];
        want.sort();
        assert_eq!(removed, want);
        assert!(young.exists());
    }

    #[test]
    fn run_checkpoints_follow_the_same_policy() {
        let dir = tempfile::tempdir().unwrap();
        let run = |secs: i64| {
            let t = chrono::DateTime::from_timestamp(secs, 0).unwrap();
            let p = dir
                .path()
                .join(format!("{}_abcd{secs:x}", t.format("%Y%m%dT%H%M%S%.3fZ")));
            std::fs::create_dir_all(p.join("objects")).unwrap();
            p
        };
        let base = 1_700_000_000;
        let all: Vec<PathBuf> = (0..4).map(|i| run(base + i)).collect();
        std::fs::create_dir_all(dir.path().join("memo")).unwrap();
        // The current run is the oldest here: it stays and counts.
        let swept = sweep_runs(
            dir.path(),
            Retention::Count(2),
            Some(&all[0]),
            SystemTime::now(),
        );
        let mut removed = swept.removed.clone();
        removed.sort();
        assert_eq!(removed, vec![all[1].clone(), all[2].clone()]);
        assert!(all[0].exists() && all[3].exists());
        assert!(dir.path().join("memo").exists(), "the memo index is no run");
    }

    #[test]
    fn temp_files_go_only_when_stale() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join(".pflow-trace-fresh.tmp");
        let stale = dir.path().join(".pflow-trace-stale.tmp");
        std::fs::write(&fresh, "").unwrap();
        std::fs::write(&stale, "").unwrap();
        let f = std::fs::File::options().write(true).open(&stale).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(2 * 3600))
            .unwrap();
        let swept = sweep(dir.path(), Retention::Count(10), None, SystemTime::now());
        assert_eq!(swept.removed, vec![stale]);
        assert!(fresh.exists());
    }
}
