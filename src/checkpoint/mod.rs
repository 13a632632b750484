//! Checkpoints, resume and the memo cache: every run keeps each completed
//! top-level node's full outputs in a content-addressed store under
//! `$PFLOW_HOME/runs/<run id>/` ([`store`]), so a later run can pick up
//! where it stopped (`pflow resume`), re-run one node against its values
//! (`--only`), run from a node on (`--from`), or serve a node whose type,
//! params and inputs are unchanged from an earlier success (the memo cache).
//!
//! The run lifecycle ([`crate::run`]) opens a [`Session`] per run and hands
//! it to the runtime, which asks it, node by node, whether to restore, serve
//! from the memo, or run — and reports every completed node back. What was
//! reused is marked on the node's span (status `restored` or `cached`, its
//! origin, a span link to the execution that produced it, and what that
//! execution's LLM calls cost), so telemetry counts it apart; telemetry never
//! decides anything here.

pub mod store;
mod writer;

use crate::accounting::Reused;
use crate::ir::{self, WorkflowIr};
use crate::telemetry::attr;
use indexmap::IndexMap;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
pub use store::{new_run_id, How, Manifest, NodeRecord, Origin, RunDir};

/// Why a checkpoint could not be read, written or used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint `{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("checkpoint `{}` is damaged: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error("{0}")]
    Resume(String),
}

/// What the run continues, if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// `pflow resume RUN`: restore what completed, run the rest.
    Resume { run: String },
    /// `pflow run FILE --only NODE`: the last run's values, NODE run again, nothing after it.
    Only { node: String },
    /// `pflow run FILE --from NODE`: the last run's values up to NODE, NODE and everything after it run.
    From { node: String },
}

impl Mode {
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Resume { .. } => "resume",
            Mode::Only { .. } => "only",
            Mode::From { .. } => "from",
        }
    }
}

/// `--cache` / `--no-cache` (else each node's `cache`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CacheMode {
    /// Only nodes with `cache: true`.
    #[default]
    Default,
    /// Also every node whose result is a function of its params (see [`deterministic`]).
    On,
    /// No memo at all, whatever the nodes say.
    Off,
}

/// `PFLOW_CHECKPOINTS=off` turns the store off (no files; resume impossible).
pub fn enabled() -> bool {
    !std::env::var("PFLOW_CHECKPOINTS").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "off" | "0" | "false"
        )
    })
}

/// `$PFLOW_HOME/runs`.
pub fn runs_dir(home: &Path) -> PathBuf {
    home.join("runs")
}

/// The run `arg` names: `last`, a run id, or a unique prefix of one (or of its hex tail).
pub fn resolve(runs: &Path, arg: &str) -> Result<String, CheckpointError> {
    let ids = store::list(runs);
    let none = || {
        CheckpointError::Resume(format!(
            "no checkpointed runs in `{}` (runs keep checkpoints unless PFLOW_CHECKPOINTS=off)",
            runs.display()
        ))
    };
    let arg = arg.trim();
    if arg == "last" {
        return ids.into_iter().next().ok_or_else(none);
    }
    if ids.iter().any(|i| i == arg) {
        return Ok(arg.to_string());
    }
    let hits: Vec<&String> = ids
        .iter()
        .filter(|i| {
            !arg.is_empty()
                && (i.starts_with(arg)
                    || i.split_once('_').is_some_and(|(_, t)| t.starts_with(arg)))
        })
        .collect();
    match hits.as_slice() {
        [one] => Ok((*one).clone()),
        [] if ids.is_empty() => Err(none()),
        [] => Err(CheckpointError::Resume(format!(
            "no run `{arg}` in `{}` (`pflow resume last` takes the newest; run ids are printed when a run fails)",
            runs.display()
        ))),
        many => Err(CheckpointError::Resume(format!(
            "run id prefix `{arg}` is ambiguous: {}",
            many.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// The run `--only`/`--from` take values from: the newest one of the same workflow file.
pub fn last_run_of(runs: &Path, file: &Path) -> Result<String, CheckpointError> {
    let file = absolute(file);
    store::list(runs)
        .into_iter()
        .find(|id| {
            RunDir::new(runs, id)
                .load()
                .is_ok_and(|m| m.workflow_file == file && !m.nodes.is_empty())
        })
        .ok_or_else(|| {
            CheckpointError::Resume(format!(
                "no earlier run of `{}` to take values from (run it once first)",
                file.display()
            ))
        })
}

/// The workflow file as the manifest names it.
pub fn absolute(file: &Path) -> PathBuf {
    std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf())
}

/// The run a session continues: its directory and manifest.
#[derive(Debug)]
pub struct Prior {
    pub dir: RunDir,
    pub manifest: Manifest,
}

impl Prior {
    pub fn load(runs: &Path, run_id: &str) -> Result<Prior, CheckpointError> {
        let dir = RunDir::new(runs, run_id);
        let manifest = dir.load()?;
        Ok(Prior { dir, manifest })
    }

    /// The prior run's inputs, with `given` (from the command line) taking precedence.
    pub fn inputs_with(
        &self,
        given: Map<String, Value>,
    ) -> Result<Map<String, Value>, CheckpointError> {
        let mut inputs = self.dir.get_map(&self.manifest.inputs)?;
        for (k, v) in given {
            inputs.insert(k, v);
        }
        Ok(inputs)
    }
}

/// A node as the store sees it: its IR and, for a nested workflow, the child's.
pub struct NodeView<'a> {
    pub ir: &'a ir::NodeIr,
    pub child: Option<&'a WorkflowIr>,
}

/// What the session knows of one top-level node.
#[derive(Debug)]
struct NodeInfo {
    head: Arc<writer::Head>,
    /// The node's IR (and child IR) as the memo key's basis; `Null` unless `memo`.
    basis: Value,
    /// The names its templates read (inputs and node ids).
    roots: Vec<String>,
    memo: bool,
}

/// What a node's fingerprint and memo key are taken over, keys in the order
/// they are written. Borrowed: building it as a `json!` value copied every
/// node's params at the start of each run (~1.5 µs a node) only to hash them.
#[derive(Serialize)]
struct Basis<'a> {
    #[serde(rename = "type")]
    node_type: &'a str,
    params: &'a Map<String, Value>,
    batch: &'a Option<ir::BatchIr>,
    child: Option<&'a WorkflowIr>,
}

/// The hashed form of a fingerprint: `{"id": …, "node": basis}`.
#[derive(Serialize)]
struct Fingerprinted<'a> {
    id: &'a str,
    node: &'a Basis<'a>,
}

/// `resuming`: the run continues another, whose nodes are checked against
/// the inputs they read (a fresh run needs a node's reads only for its memo key).
fn node_info(v: &NodeView<'_>, cache: CacheMode, resuming: bool) -> NodeInfo {
    let n = v.ir;
    let basis = Basis {
        node_type: &n.node_type,
        params: &n.params,
        batch: &n.batch,
        child: v.child,
    };
    let memo = match (cache, n.cache) {
        (CacheMode::Off, _) => false,
        // The user asked, on the node: any type, any temperature.
        (_, Some(c)) => c,
        (CacheMode::On, None) => deterministic(n),
        (CacheMode::Default, None) => false,
    };
    let mut roots = Vec::new();
    if memo || resuming {
        let mut add = |_: &str, s: &str| {
            if let Ok(t) = ir::template::Template::parse(s) {
                for r in t.references() {
                    if !roots.contains(&r.root) {
                        roots.push(r.root.clone());
                    }
                }
            }
        };
        ir::template::walk_node_strings(n, &mut add);
    }
    let fingerprint = store::sha256_hex(
        &serde_json::to_vec(&Fingerprinted {
            id: &n.id,
            node: &basis,
        })
        .unwrap_or_default(),
    );
    NodeInfo {
        head: Arc::new(writer::Head {
            id: n.id.clone(),
            node_type: n.node_type.clone(),
            fingerprint,
        }),
        // Only a memoized node's key needs it.
        basis: if memo {
            serde_json::to_value(&basis).unwrap_or_default()
        } else {
            Value::Null
        },
        roots,
        memo,
    }
}

/// Whether a node's outputs are a function of its params, so `--cache` may
/// reuse them: an LLM call at `temperature: 0` and `echo`. Nodes that touch
/// files, processes or the network (their results change with the world)
/// are cached only when they say `cache: true`.
pub fn deterministic(n: &ir::NodeIr) -> bool {
    match n.node_type.as_str() {
        "llm" => n
            .params
            .get("temperature")
            .and_then(|t| t.as_f64().or_else(|| t.as_str()?.trim().parse().ok()))
            .is_some_and(|t| t == 0.0),
        "echo" => true,
        _ => false,
    }
}

/// A node not run again: its outputs, and where they came from.
#[derive(Debug, Clone)]
pub struct Reuse {
    pub how: How,
    pub outputs: Map<String, Value>,
    pub action: String,
    pub origin: Origin,
    pub usage: Option<Reused>,
    digests: IndexMap<String, String>,
    /// The values the record holds itself (no object to take over).
    inline: IndexMap<String, Value>,
    source: RunDir,
}

/// One completed node that was not run again, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct Invalidated {
    pub node: String,
    pub reason: String,
}

/// What a continued run took over and what it runs again (`resume` in the JSON output).
#[derive(Debug, Clone, Serialize)]
pub struct ResumeSummary {
    pub mode: &'static str,
    pub from_run: String,
    /// Nodes whose outputs the prior run holds and this run restores.
    pub restorable: Vec<String>,
    /// Nodes completed in the prior run that run again, and why.
    pub invalidated: Vec<Invalidated>,
    /// The workflow's IR hash differs from the prior run's (nodes, edges or outputs).
    pub workflow_changed: bool,
}

impl ResumeSummary {
    /// One line per fact, for the text output.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![format!(
            "{} run {}: {} node(s) restorable{}",
            match self.mode {
                "resume" => "resuming",
                "only" => "re-running one node of",
                _ => "re-running from a node of",
            },
            self.from_run,
            self.restorable.len(),
            if self.restorable.is_empty() {
                String::new()
            } else {
                format!(" ({})", self.restorable.join(", "))
            }
        )];
        if self.workflow_changed {
            out.push(format!(
                "the workflow changed since run {}: unchanged nodes are restored until the first node that runs",
                self.from_run
            ));
        }
        for i in &self.invalidated {
            out.push(format!("node `{}` runs again: {}", i.node, i.reason));
        }
        out
    }
}

#[derive(Debug, Default)]
struct State {
    /// Still taking nodes from the prior run: ends at the first node that runs.
    restoring: bool,
    /// Nodes the writer stored (their records are in `nodes.jsonl`).
    stored: usize,
    warnings: Vec<String>,
    /// Writing failed once: the rest of the run is not checkpointed.
    broken: bool,
    /// Manifests of runs the memo served from.
    sources: HashMap<String, Option<Manifest>>,
    /// `--only`: the node has run.
    only_done: bool,
}

/// One run's checkpointing, shared with the runtime.
#[derive(Debug)]
pub struct Session {
    runs: PathBuf,
    run_id: String,
    /// `None` when checkpoints are off or the directory could not be made.
    run: Option<RunDir>,
    /// Stores completed nodes off the runtime's path (`Some` with `run`).
    writer: Option<writer::Writer>,
    nodes: HashMap<String, NodeInfo>,
    prior: Option<Prior>,
    /// Node → why it is not restored (completed in the prior run, but invalid).
    invalid: HashMap<String, String>,
    mode: Option<Mode>,
    manifest: Mutex<Manifest>,
    state: Mutex<State>,
}

/// What the lifecycle knows when a session starts.
pub struct Start<'a> {
    pub home: &'a Path,
    pub run_id: &'a str,
    pub trace_id: Option<String>,
    pub root_span_id: Option<String>,
    pub file: &'a Path,
    pub ir: &'a WorkflowIr,
    /// `history::WorkflowIdent::of(ir).hash`, which the caller has already
    /// taken: serializing and hashing a large IR twice per run showed up per node.
    pub ir_hash: &'a str,
    pub nodes: Vec<NodeView<'a>>,
    pub inputs: &'a Map<String, Value>,
    pub mode: Option<Mode>,
    pub prior: Option<Prior>,
    pub cache: CacheMode,
    /// Write checkpoints (false: `PFLOW_CHECKPOINTS=off`; restoring still works).
    pub write: bool,
}

impl Session {
    /// Opens the run's checkpoint and, when it continues another run, works
    /// out which of that run's nodes still hold. An error is the user's
    /// (a node `--only` names does not exist, nothing to resume); a store
    /// that cannot be written is a warning ([`Session::take_warnings`]).
    pub fn start(s: Start<'_>) -> Result<(Session, Option<ResumeSummary>), CheckpointError> {
        let runs = runs_dir(s.home);
        let resuming = s.prior.is_some();
        let nodes: HashMap<String, NodeInfo> = s
            .nodes
            .iter()
            .map(|v| (v.ir.id.clone(), node_info(v, s.cache, resuming)))
            .collect();
        let mut warnings = Vec::new();
        let run = RunDir::new(&runs, s.run_id);
        let input_digests: IndexMap<String, String> = s
            .inputs
            .iter()
            .map(|(k, v)| (k.clone(), digest_of(v)))
            .collect();
        // Planned first: a run that cannot continue leaves no directory behind.
        let (invalid, summary) = match (&s.prior, &s.mode) {
            (Some(p), Some(mode)) => {
                let (invalid, summary) = plan(p, mode, s.ir, s.ir_hash, &nodes, &input_digests)?;
                (invalid, Some(summary))
            }
            _ => (HashMap::new(), None),
        };
        let manifest = Manifest {
            schema: store::SCHEMA,
            run_id: s.run_id.to_string(),
            started: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            status: "running".into(),
            workflow_file: absolute(s.file),
            workflow_name: s.ir.name().map(str::to_string),
            ir_hash: s.ir_hash.to_string(),
            // Each record has its node's: listing every node's here too was
            // two serializations of them per run on the run's thread.
            fingerprints: IndexMap::new(),
            inputs: input_digests.clone(),
            trace_id: s.trace_id.clone(),
            root_span_id: s.root_span_id,
            resumed_from: s.prior.as_ref().map(|p| p.manifest.run_id.clone()),
            failed_node: None,
            nodes: Vec::new(),
            usage: None,
        };
        let (run, writer) = if s.write {
            let opened = run
                .create()
                .and_then(|()| run.put_map(s.inputs).map(|_| ()))
                .and_then(|()| run.write_manifest(&manifest))
                .and_then(|()| {
                    writer::Writer::start(
                        run.clone(),
                        runs.clone(),
                        s.run_id.to_string(),
                        s.trace_id.clone(),
                    )
                    .map_err(|source| CheckpointError::Io {
                        path: run.dir.clone(),
                        source,
                    })
                });
            match opened {
                Ok(w) => (Some(run), Some(w)),
                Err(e) => {
                    warnings.push(format!(
                        "no checkpoint for this run (it cannot be resumed): {e}"
                    ));
                    (None, None)
                }
            }
        } else {
            (None, None)
        };
        let session = Session {
            runs,
            run_id: s.run_id.to_string(),
            run,
            writer,
            nodes,
            invalid,
            mode: s.mode,
            manifest: Mutex::new(manifest),
            state: Mutex::new(State {
                restoring: s.prior.is_some(),
                warnings,
                ..Default::default()
            }),
            prior: s.prior,
        };
        Ok((session, summary))
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Whether this run's checkpoint is being written.
    pub fn saving(&self) -> bool {
        self.run.is_some() && !self.lock().broken
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut self.lock().warnings)
    }

    /// Whether the walk stops before `id` (`--only`: after the node has run).
    pub fn stop_before(&self, _id: &str) -> bool {
        matches!(self.mode, Some(Mode::Only { .. })) && self.lock().only_done
    }

    /// The prior run's outputs for `id`, when it is to be restored. Restoring
    /// ends at the first node that runs; under `--only`, every node before
    /// the one named must be restorable.
    pub fn restore(&self, id: &str) -> Result<Option<Reuse>, CheckpointError> {
        let Some(prior) = &self.prior else {
            return Ok(None);
        };
        let mut st = self.lock();
        if !st.restoring {
            return Ok(None);
        }
        let only = match &self.mode {
            Some(Mode::Only { node }) => Some(node.as_str()),
            _ => None,
        };
        let rec = prior
            .manifest
            .node(id)
            .filter(|_| !self.invalid.contains_key(id) && only != Some(id));
        let Some(rec) = rec else {
            if let Some(target) = only.filter(|t| *t != id) {
                let why = self.invalid.get(id).cloned().unwrap_or_else(|| {
                    format!("it did not complete in run {}", prior.manifest.run_id)
                });
                return Err(CheckpointError::Resume(format!(
                    "--only {target}: node `{id}` before it has no value to reuse ({why}); use --from {id}"
                )));
            }
            st.restoring = false;
            if only == Some(id) {
                st.only_done = true;
            }
            return Ok(None);
        };
        drop(st);
        let outputs = prior.dir.get_outputs(rec)?;
        Ok(Some(Reuse {
            how: How::Restored,
            outputs,
            action: rec.action.clone(),
            origin: rec.origin.clone(),
            usage: rec.usage,
            digests: rec.outputs.clone(),
            inline: rec.inline.clone(),
            source: prior.dir.clone(),
        }))
    }

    /// The memo key of `id` given the store it would run against, when the
    /// memo applies to it: its type, params and batch (the IR, with a nested
    /// workflow's), and every value its templates read.
    pub fn memo_key(&self, id: &str, store: &Map<String, Value>) -> Option<String> {
        let info = self.nodes.get(id).filter(|n| n.memo)?;
        // `--only` / `--from` ask for the node to run.
        if matches!(&self.mode, Some(Mode::Only { node } | Mode::From { node }) if node == id) {
            return None;
        }
        let refs: Map<String, Value> = info
            .roots
            .iter()
            .filter_map(|r| Some((r.clone(), store.get(r)?.clone())))
            .collect();
        let key = json!({"memo": 1, "node": info.basis, "reads": refs});
        Some(digest_of(&key))
    }

    /// A previous successful execution with this key, from a finished run.
    pub fn memo_hit(&self, key: &str) -> Option<Reuse> {
        let entry = store::memo_get(&self.runs, key)?;
        // An entry naming anything but a run directory is not followed.
        if entry.run_id == self.run_id || !store::is_run_id(&entry.run_id) {
            return None;
        }
        let source = RunDir::new(&self.runs, &entry.run_id);
        let rec = {
            let mut st = self.lock();
            let m = st
                .sources
                .entry(entry.run_id.clone())
                .or_insert_with(|| source.load().ok().filter(Manifest::finished));
            m.as_ref()
                .and_then(|m| m.node(&entry.node))
                .filter(|r| r.memo_key.as_deref() == Some(key))
                .cloned()
        };
        let Some(rec) = rec else {
            if !source.dir.exists() {
                store::memo_forget(&self.runs, key);
            }
            return None;
        };
        let outputs = source.get_outputs(&rec).ok()?;
        Some(Reuse {
            how: How::Cached,
            outputs,
            action: rec.action,
            origin: rec.origin,
            usage: rec.usage,
            digests: rec.outputs,
            inline: rec.inline,
            source,
        })
    }

    /// Records a completed node: executed (its span is the origin of later
    /// reuse) or reused (its origin carried over, its objects taken over).
    /// The files are written behind the run ([`writer`]); the node's outputs
    /// are handed over as a copy, its record with what is known now.
    pub fn completed(
        &self,
        id: &str,
        span: Option<&tracing::Span>,
        outputs: &Map<String, Value>,
        action: &str,
        memo_key: Option<String>,
        reuse: Option<&Reuse>,
    ) {
        let Some(writer) = &self.writer else { return };
        let Some(info) = self.nodes.get(id) else {
            return;
        };
        let job = match reuse {
            Some(r) => writer::Job::Reused {
                rec: Box::new(NodeRecord {
                    id: id.to_string(),
                    node_type: info.head.node_type.clone(),
                    fingerprint: info.head.fingerprint.clone(),
                    action: action.to_string(),
                    outputs: r.digests.clone(),
                    inline: r.inline.clone(),
                    memo_key,
                    how: r.how,
                    origin: r.origin.clone(),
                    usage: r.usage,
                }),
                source: r.source.clone(),
            },
            // What only this completion knows; the writer makes the record.
            None => executed_job(
                writer,
                writer::Executed {
                    head: info.head.clone(),
                    action: action.to_string(),
                    span_id: span.and_then(crate::telemetry::span_id_bytes),
                    memo_key,
                    outputs: IndexMap::with_capacity(outputs.len()),
                },
                outputs,
            ),
        };
        writer.push(job);
    }

    /// Writes the final manifest: the run's status, where it failed, and
    /// each executed node's usage from the run's metrics (the reuse of a later
    /// run is priced by it).
    pub fn finish(
        &self,
        status: &str,
        failed_node: Option<&str>,
        metrics: Option<&crate::accounting::summary::MetricsSummary>,
    ) -> Vec<String> {
        if let Some(w) = &self.writer {
            let written = w.close();
            let mut st = self.lock();
            st.stored += written.stored;
            st.warnings.extend(written.warnings);
            st.broken |= written.broken;
        }
        let mut warnings = self.take_warnings();
        let Some(run) = &self.run else {
            return warnings;
        };
        let mut m = self.manifest.lock().unwrap_or_else(|p| p.into_inner());
        // A run refused before any node completed (e.g. `--only` on a node
        // whose inputs changed) holds nothing: it must not become `last`.
        if status == crate::outcome::RunStatus::Invalid.as_str() && self.lock().stored == 0 {
            let _ = std::fs::remove_dir_all(&run.dir);
            return warnings;
        }
        m.status = status.to_string();
        m.failed_node = failed_node.map(str::to_string);
        // The records are in `nodes.jsonl` already; the manifest adds usage.
        m.usage = metrics.map(|mt| node_usage(&mt.workflow.node_usage));
        if let Err(e) = run.write_manifest(&m) {
            warnings.push(format!("checkpoint manifest not written: {e}"));
        }
        warnings
    }

    /// The directory this run's checkpoint is in.
    pub fn dir(&self) -> Option<&Path> {
        self.run.as_ref().map(|r| r.dir.as_path())
    }
}

/// An executed node's job. A large value is streamed into its object here,
/// from where it lives, instead of being copied for the writer: a second
/// copy of a 50 MB value overlapping the next node's own made the peak RSS
/// vary from run to run. Small values go to the writer as copies.
fn executed_job(
    writer: &writer::Writer,
    mut node: writer::Executed,
    outputs: &Map<String, Value>,
) -> writer::Job {
    let mut small = Map::new();
    for (k, v) in outputs {
        if writer::approx_size(v) > writer::STREAM_FROM {
            match writer.run().put_streamed(v) {
                Ok((d, _)) => {
                    node.outputs.insert(k.clone(), d);
                }
                Err(e) => {
                    return writer::Job::Failed {
                        id: node.head.id.clone(),
                        error: e,
                    }
                }
            }
        } else {
            // Its place in the output order, filled by the writer.
            node.outputs.insert(k.clone(), String::new());
            small.insert(k.clone(), v.clone());
        }
    }
    writer::Job::Executed {
        node,
        outputs: small,
    }
}

/// Each top-level node's usage with its nested calls' (`id/…`) added, for
/// the nodes that used an LLM, in one pass (looking every node up in the
/// whole map was quadratic in a run of many LLM nodes).
fn node_usage(usage: &IndexMap<String, crate::accounting::Usage>) -> IndexMap<String, Reused> {
    let mut total: IndexMap<String, Reused> = IndexMap::new();
    for (path, u) in usage {
        let top = path.split_once('/').map_or(path.as_str(), |(id, _)| id);
        match total.get_mut(top) {
            Some(t) => t.add(&Reused::of_usage(u)),
            None => {
                total.insert(top.to_string(), Reused::of_usage(u));
            }
        }
    }
    total
}

fn digest_of(v: &Value) -> String {
    store::sha256_hex(&serde_json::to_vec(v).unwrap_or_default())
}

/// Which of the prior run's completed nodes hold: a node whose IR changed,
/// that reads a changed input, or that `--from` names is invalid, and so is
/// everything downstream of it (reachable by edges).
fn plan(
    prior: &Prior,
    mode: &Mode,
    ir: &WorkflowIr,
    ir_hash: &str,
    nodes: &HashMap<String, NodeInfo>,
    inputs: &IndexMap<String, String>,
) -> Result<(HashMap<String, String>, ResumeSummary), CheckpointError> {
    let from_run = prior.manifest.run_id.clone();
    if let Mode::Only { node } | Mode::From { node } = mode {
        if !nodes.contains_key(node) {
            let known: Vec<&str> = ir.nodes.iter().map(|n| n.id.as_str()).collect();
            return Err(CheckpointError::Resume(format!(
                "--{} {node}: the workflow has no node `{node}` (nodes: {})",
                mode.as_str(),
                known.join(", ")
            )));
        }
    }
    let changed_inputs: Vec<&String> = inputs
        .keys()
        .chain(prior.manifest.inputs.keys())
        .filter(|k| inputs.get(*k) != prior.manifest.inputs.get(*k))
        .collect();
    let mut direct: Vec<(String, String)> = Vec::new();
    for n in &ir.nodes {
        let Some(info) = nodes.get(&n.id) else {
            continue;
        };
        let Some(rec) = prior.manifest.node(&n.id) else {
            continue;
        };
        if rec.fingerprint != info.head.fingerprint {
            direct.push((n.id.clone(), format!("changed since run {from_run}")));
        } else if let Some(i) = changed_inputs.iter().find(|i| info.roots.contains(i)) {
            direct.push((n.id.clone(), format!("input `{i}` changed")));
        }
    }
    if let Mode::From { node } = mode {
        direct.push((node.clone(), format!("--from {node}")));
    }
    let mut invalid: HashMap<String, String> = HashMap::new();
    for (id, why) in &direct {
        invalid.entry(id.clone()).or_insert_with(|| why.clone());
    }
    // Everything reachable from an invalid node runs again too.
    let mut queue: Vec<String> = direct.into_iter().map(|(id, _)| id).collect();
    let mut seen: HashSet<String> = queue.iter().cloned().collect();
    while let Some(id) = queue.pop() {
        for e in ir.edges.iter().filter(|e| e.from == id) {
            if seen.insert(e.to.clone()) {
                invalid
                    .entry(e.to.clone())
                    .or_insert_with(|| format!("downstream of `{id}`"));
                queue.push(e.to.clone());
            }
        }
    }
    let only = match mode {
        Mode::Only { node } => Some(node.as_str()),
        _ => None,
    };
    // `--only`: the nodes after it do not run, so they are not restored either.
    let after_only = only.map(|n| downstream(ir, n)).unwrap_or_default();
    let completed: Vec<&str> = ir
        .nodes
        .iter()
        .map(|n| n.id.as_str())
        .filter(|id| prior.manifest.node(id).is_some())
        .collect();
    let restorable: Vec<String> = completed
        .iter()
        .filter(|id| {
            !invalid.contains_key(**id) && only != Some(**id) && !after_only.contains(**id)
        })
        .map(|s| s.to_string())
        .collect();
    let invalidated: Vec<Invalidated> = completed
        .iter()
        .filter_map(|id| {
            Some(Invalidated {
                node: id.to_string(),
                reason: invalid.get(*id)?.clone(),
            })
        })
        .collect();
    if matches!(mode, Mode::Resume { .. })
        && prior.manifest.status == crate::outcome::RunStatus::Ok.as_str()
        && invalidated.is_empty()
    {
        return Err(CheckpointError::Resume(format!(
            "run {from_run} finished successfully and nothing it used has changed: nothing to resume (`pflow run FILE --from NODE` runs part of it again)"
        )));
    }
    Ok((
        invalid,
        ResumeSummary {
            mode: mode.as_str(),
            from_run,
            restorable,
            invalidated,
            workflow_changed: ir_hash != prior.manifest.ir_hash,
        },
    ))
}

/// The nodes reachable by edges from `id` (not `id` itself, unless in a loop).
fn downstream(ir: &WorkflowIr, id: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    let mut queue = vec![id.to_string()];
    while let Some(n) = queue.pop() {
        for e in ir.edges.iter().filter(|e| e.from == n) {
            if seen.insert(e.to.clone()) {
                queue.push(e.to.clone());
            }
        }
    }
    seen
}

/// Marks the span of a node that was not run again: its status (`restored`
/// or `cached`), its origin, what its LLM calls cost originally, and a span
/// link to the execution that produced its outputs.
pub fn mark_span(span: &tracing::Span, r: &Reuse) {
    span.record(attr::NODE_STATUS, r.how.as_str());
    let set = |key, value: opentelemetry::Value| crate::telemetry::set_attribute(span, key, value);
    set(attr::NODE_ACTION, r.action.clone().into());
    set(attr::NODE_ORIGIN_RUN_ID, r.origin.run_id.clone().into());
    if let Some(t) = &r.origin.trace_id {
        set(attr::NODE_ORIGIN_TRACE_ID, t.clone().into());
    }
    if let Some(s) = &r.origin.span_id {
        set(attr::NODE_ORIGIN_SPAN_ID, s.clone().into());
    }
    if let Some(u) = &r.usage {
        set(attr::REUSED_LLM_CALLS, (u.llm_calls as i64).into());
        set(attr::REUSED_INPUT_TOKENS, (u.tokens.input as i64).into());
        set(attr::REUSED_OUTPUT_TOKENS, (u.tokens.output as i64).into());
        if let Some(c) = u.cost_usd {
            set(attr::REUSED_COST_USD, c.into());
        }
    }
    if let (Some(t), Some(s)) = (&r.origin.trace_id, &r.origin.span_id) {
        let kind = match r.how {
            How::Cached => "cached_from",
            _ => "restored_from",
        };
        crate::telemetry::link(span, t, s, kind);
    }
}

#[cfg(test)]
mod tests;
