//! The end of a run's lifecycle: the run recorded in the history (unless
//! `PFLOW_HISTORY` is off) and `PFLOW_TRACE_RETENTION` applied (to traces
//! and checkpoints alike). History
//! problems become one warning line; they never change an exit code.

use crate::history::{self, RunRecord};
use crate::outcome::{ExitCode, RunStatus};
use chrono::{DateTime, Utc};
use std::path::Path;

/// What a finished run hands to history.
pub struct FinishedRun<'a> {
    /// `$PFLOW_HOME`.
    pub home: &'a Path,
    pub started: DateTime<Utc>,
    pub command: &'a str,
    pub ident: Option<history::WorkflowIdent>,
    /// The name to use when the workflow has none (the file's stem).
    pub fallback_name: Option<String>,
    pub status: RunStatus,
    pub exit_code: ExitCode,
    pub trace_id: Option<&'a str>,
    pub trace_file: Option<&'a Path>,
    pub metrics: Option<&'a crate::telemetry::metrics::MetricsSummary>,
    /// This run's checkpoint directory (kept by the retention sweep).
    pub checkpoint: Option<&'a Path>,
}

/// Records the run (unless `PFLOW_HISTORY` is off) and applies
/// `PFLOW_TRACE_RETENTION`; returns warnings for the run's report.
pub fn after_run(run: FinishedRun) -> Vec<String> {
    let mut warnings = Vec::new();
    if let (Some(metrics), true) = (run.metrics, history::enabled()) {
        let (name, hash) = match run.ident {
            Some(i) => (i.name.or(run.fallback_name), Some(i.hash)),
            None => (run.fallback_name, None),
        };
        let rec = RunRecord {
            time: run.started,
            command: run.command.to_string(),
            workflow_name: name,
            workflow_hash: hash,
            status: run.status.as_str().to_string(),
            exit_code: run.exit_code.code(),
            trace_id: run.trace_id.map(str::to_string),
            trace_file: run.trace_file.map(Path::to_path_buf),
            metrics: metrics.clone(),
        };
        if let Err(e) = history::record(&history::db_in(run.home), &rec) {
            warnings.push(format!(
                "run not recorded in history (set PFLOW_HISTORY=off to stop recording): {e}"
            ));
        }
    }
    let traces = run.home.join("traces");
    warnings.extend(history::retention::apply_from_env(&traces, run.trace_file));
    let runs = crate::checkpoint::runs_dir(run.home);
    warnings.extend(history::retention::apply_runs_from_env(
        &runs,
        run.checkpoint,
    ));
    warnings
}
