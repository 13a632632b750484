//! Write-behind for a run's checkpoint: the runtime hands each completed
//! node over (its outputs, its record) and goes on with the next node while
//! a dedicated thread stores the values, appends the log line and updates
//! the memo index. Writing a node costs ~0.1–0.2 ms of file system work
//! (an object file per new value, a rename, the log append); done on the
//! node's path it was most of a small node's time.
//!
//! The thread drains the queue in batches (on a short tick, or at once when
//! the queue holds a lot), so the runtime pays a lock and a push per node,
//! not a wake-up. The tick is short (1 ms) because the run's end waits for
//! whatever the last tick gathered: with 10 ms, a run of a few hundred fast
//! nodes waited at its end for the writer to store most of them, ~4 µs a
//! node of the run's wall time. A writer that finds nothing in a whole tick
//! sleeps until the next node is pushed (one wake-up per quiet spell), so a
//! run waiting on an LLM call does not tick a thousand times a second. The run's end — success, failure or interrupt alike —
//! closes the writer and waits for it ([`Writer::close`], also on drop), so
//! every completed node is on disk before the final manifest is written;
//! only a hard kill can lose the last tick's nodes, which `resume` then runs
//! again. Memory is bounded: past [`MAX_PENDING`] bytes queued, the runtime
//! waits for the writer.

use super::store::{self, How, MemoEntry, NodeRecord, Origin, RunDir};
use super::CheckpointError;
use indexmap::IndexMap;
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a completed node may wait before the writer looks at the queue,
/// while nodes keep completing.
const TICK: Duration = Duration::from_millis(1);
/// Queued bytes past which the writer is woken at once.
const WAKE_AT: usize = 1 << 20;
/// Queued bytes past which the runtime waits for the writer.
pub const MAX_PENDING: usize = 64 << 20;
/// What a queued job is counted as besides its values (the record, the queue slot).
const JOB_OVERHEAD: usize = 512;
/// Values larger than this (estimated) are streamed to their object file
/// by the runtime's thread, from where they are, never copied.
pub(super) const STREAM_FROM: usize = 1 << 20;

/// What every record of a node repeats: one per node for the run, shared
/// with the writer (copying three strings per completion on the run's
/// thread was a third of what handing a node over cost).
#[derive(Debug)]
pub(super) struct Head {
    pub id: String,
    pub node_type: String,
    /// SHA-256 of the node's IR (and a nested workflow's IR).
    pub fingerprint: String,
}

/// An executed node as the runtime hands it over; the writer makes its record.
#[derive(Debug)]
pub(super) struct Executed {
    pub head: Arc<Head>,
    pub action: String,
    /// The node span's id (its trace is the run's).
    pub span_id: Option<[u8; 8]>,
    pub memo_key: Option<String>,
    /// Output key → digest, in output order; the digests of the values the
    /// writer stores are filled by it.
    pub outputs: IndexMap<String, String>,
}

/// One completed node to store.
pub(super) enum Job {
    /// Executed: `outputs` are stored and `node.outputs` filled with their digests.
    Executed {
        node: Executed,
        outputs: Map<String, Value>,
    },
    /// Restored or cached: its objects (already in `rec.outputs`) taken over from `source`.
    Reused {
        rec: Box<NodeRecord>,
        source: RunDir,
    },
    /// Storing node `id` failed before it was queued: the checkpoint stops there.
    Failed { id: String, error: CheckpointError },
}

impl Job {
    fn weight(&self) -> usize {
        JOB_OVERHEAD
            + match self {
                Job::Executed { outputs, .. } => outputs.values().map(approx_size).sum(),
                Job::Reused { .. } | Job::Failed { .. } => 0,
            }
    }
}

/// Roughly the bytes a value holds (strings dominate anything large).
pub(super) fn approx_size(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len() + 24,
        Value::Array(a) => 24 + a.iter().map(approx_size).sum::<usize>(),
        Value::Object(m) => {
            24 + m
                .iter()
                .map(|(k, v)| k.len() + 24 + approx_size(v))
                .sum::<usize>()
        }
        _ => 16,
    }
}

#[derive(Default)]
struct Queue {
    /// Each job with its weight.
    jobs: Vec<(usize, Job)>,
    /// Weight of the jobs queued and of the batch being written.
    pending: usize,
    closing: bool,
    /// The writer found nothing in a whole tick and sleeps until a push wakes it.
    asleep: bool,
}

struct Shared {
    /// Queued bytes past which the runtime waits ([`MAX_PENDING`] outside tests).
    max_pending: usize,
    queue: Mutex<Queue>,
    /// The writer waits here for work (or its tick).
    work: Condvar,
    /// The runtime waits here while too much is pending.
    room: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the writer leaves when it is done.
#[derive(Debug, Default)]
pub(super) struct Written {
    /// Nodes stored (their records are in `nodes.jsonl`; handing them back
    /// only to drop them cost the run's thread ~1.6k instructions a node).
    pub stored: usize,
    pub warnings: Vec<String>,
    /// A write failed: the nodes from there on are not in the checkpoint.
    pub broken: bool,
}

/// The write-behind thread of one run's checkpoint.
pub(super) struct Writer {
    run: RunDir,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<Written>>>,
    done: Mutex<Option<Written>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

impl Writer {
    /// Starts the thread writing into `run` (memo entries under `runs`) the
    /// records of run `run_id`, whose spans are in trace `trace_id`.
    pub fn start(
        run: RunDir,
        runs: PathBuf,
        run_id: String,
        trace_id: Option<String>,
    ) -> std::io::Result<Writer> {
        Writer::bounded(run, runs, run_id, trace_id, MAX_PENDING)
    }

    fn bounded(
        run: RunDir,
        runs: PathBuf,
        run_id: String,
        trace_id: Option<String>,
        max_pending: usize,
    ) -> std::io::Result<Writer> {
        let shared = Arc::new(Shared {
            max_pending,
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
            room: Condvar::new(),
        });
        let state = Sink {
            run: run.clone(),
            runs,
            run_id,
            trace_id,
            known: HashSet::new(),
            log: None,
            out: Written::default(),
        };
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("pflow-checkpoint".into())
            .spawn(move || state.serve(&s))?;
        Ok(Writer {
            run,
            shared,
            thread: Mutex::new(Some(thread)),
            done: Mutex::new(None),
        })
    }

    /// The run directory written to.
    pub fn run(&self) -> &RunDir {
        &self.run
    }

    /// Queues a completed node; waits only while [`MAX_PENDING`] bytes are queued.
    pub fn push(&self, job: Job) {
        let w = job.weight();
        let mut q = self.shared.lock();
        if q.closing {
            return;
        }
        // A value larger than the bound on its own still goes, once the queue is empty.
        while q.pending > 0 && q.pending + w > self.shared.max_pending && !q.closing {
            self.shared.work.notify_one();
            q = self.shared.room.wait(q).unwrap_or_else(|p| p.into_inner());
        }
        q.pending += w;
        q.jobs.push((w, job));
        if q.asleep || q.pending >= WAKE_AT {
            q.asleep = false;
            self.shared.work.notify_one();
        }
    }

    /// Writes everything queued, stops the thread and returns what it wrote.
    /// Later calls return nothing more (the first one took the result).
    pub fn close(&self) -> Written {
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            self.shared.lock().closing = true;
            self.shared.work.notify_one();
            self.shared.room.notify_all();
            let written = t.join().unwrap_or_else(|_| Written {
                broken: true,
                warnings: vec![
                    "checkpoint writer stopped unexpectedly: the checkpoint may be incomplete"
                        .into(),
                ],
                ..Written::default()
            });
            *self.done.lock().unwrap_or_else(|p| p.into_inner()) = Some(written);
        }
        self.done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// The writer thread's side: the run directory and what it has written.
struct Sink {
    run: RunDir,
    runs: PathBuf,
    run_id: String,
    trace_id: Option<String>,
    /// Digests already stored in this run (no `stat` per value).
    known: HashSet<String>,
    /// `nodes.jsonl`, opened once.
    log: Option<std::fs::File>,
    out: Written,
}

impl Sink {
    fn serve(mut self, shared: &Shared) -> Written {
        // Whether the last look found nothing: then the writer sleeps until woken.
        let mut quiet = false;
        loop {
            let (jobs, weight, closing) = {
                let mut q = shared.lock();
                if q.jobs.is_empty() && !q.closing {
                    if quiet {
                        q.asleep = true;
                        while q.asleep && q.jobs.is_empty() && !q.closing {
                            q = shared.work.wait(q).unwrap_or_else(|p| p.into_inner());
                        }
                        q.asleep = false;
                    } else {
                        q = shared
                            .work
                            .wait_timeout(q, TICK)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                }
                let jobs = std::mem::take(&mut q.jobs);
                let weight = jobs.iter().map(|j| j.0).sum::<usize>();
                (jobs, weight, q.closing)
            };
            quiet = jobs.is_empty();
            if !jobs.is_empty() {
                self.write_batch(jobs);
                let mut q = shared.lock();
                q.pending = q.pending.saturating_sub(weight);
                shared.room.notify_all();
            }
            if closing && shared.lock().jobs.is_empty() {
                return self.out;
            }
        }
    }

    fn write_batch(&mut self, jobs: Vec<(usize, Job)>) {
        let mut lines = Vec::new();
        let mut first: Option<String> = None;
        let mut added = 0;
        for (_, job) in jobs {
            if self.out.broken {
                break;
            }
            let id = match &job {
                Job::Executed { node, .. } => node.head.id.clone(),
                Job::Reused { rec, .. } => rec.id.clone(),
                Job::Failed { id, .. } => id.clone(),
            };
            match self.store(job, &mut lines) {
                Ok(()) => {
                    added += 1;
                    first.get_or_insert(id);
                }
                Err(e) => self.fail(&id, e),
            }
        }
        if !lines.is_empty() {
            if let Err(e) = self.append(&lines) {
                // The log is what a killed run is resumed from: these nodes are not in it.
                self.fail(first.as_deref().unwrap_or_default(), e);
                return;
            }
        }
        self.out.stored += added;
    }

    fn fail(&mut self, id: &str, e: CheckpointError) {
        self.out.broken = true;
        self.out.warnings.push(format!(
            "checkpoint incomplete from node `{id}` on (a resume will run it again): {e}"
        ));
    }

    /// Stores one node's objects and memo entry; its log line goes into `lines`.
    fn store(&mut self, job: Job, lines: &mut Vec<u8>) -> Result<(), CheckpointError> {
        let rec = match job {
            Job::Failed { error, .. } => return Err(error),
            Job::Executed { node, outputs } => {
                let mut rec = NodeRecord {
                    id: node.head.id.clone(),
                    node_type: node.head.node_type.clone(),
                    fingerprint: node.head.fingerprint.clone(),
                    action: node.action,
                    outputs: node.outputs,
                    inline: IndexMap::new(),
                    memo_key: node.memo_key,
                    how: How::Executed,
                    origin: Origin {
                        run_id: self.run_id.clone(),
                        trace_id: self.trace_id.clone(),
                        span_id: node.span_id.map(|b| crate::format::hex(&b)),
                    },
                    usage: None,
                };
                // One buffer for every value's bytes: most are a few bytes long.
                let mut bytes = Vec::new();
                for (k, v) in outputs {
                    bytes.clear();
                    serde_json::to_writer(&mut bytes, &v).map_err(|e| self.io_err(e))?;
                    let d = store::sha256_hex(&bytes);
                    if bytes.len() <= store::INLINE_MAX {
                        rec.inline.insert(d.clone(), v);
                    } else if self.known.insert(d.clone()) {
                        self.run.put_bytes(&d, &bytes)?;
                    }
                    rec.outputs.insert(k, d);
                }
                if let Some(key) = &rec.memo_key {
                    self.memo(key, &rec.id)?;
                }
                rec
            }
            Job::Reused { rec, source } => {
                for d in rec.outputs.values().filter(|d| !rec.is_inline(d)) {
                    if self.known.insert(d.clone()) {
                        self.run.adopt(&source, d)?;
                    }
                }
                *rec
            }
        };
        let start = lines.len();
        if let Err(e) = serde_json::to_writer(&mut *lines, &rec) {
            lines.truncate(start);
            return Err(self.io_err(e));
        }
        lines.push(b'\n');
        Ok(())
    }

    fn memo(&self, key: &str, node: &str) -> Result<(), CheckpointError> {
        store::memo_put(
            &self.runs,
            key,
            &MemoEntry {
                run_id: self.run_id.clone(),
                node: node.to_string(),
            },
        )
    }

    fn append(&mut self, lines: &[u8]) -> Result<(), CheckpointError> {
        let path = self.run.log_path();
        if self.log.is_none() {
            self.log = Some(self.run.open_log().map_err(|source| CheckpointError::Io {
                path: path.clone(),
                source,
            })?);
        }
        match &mut self.log {
            Some(f) => f
                .write_all(lines)
                .map_err(|source| CheckpointError::Io { path, source }),
            None => Ok(()),
        }
    }

    fn io_err(&self, e: serde_json::Error) -> CheckpointError {
        CheckpointError::Io {
            path: self.run.dir.clone(),
            source: std::io::Error::other(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::store::tests::run_dir;
    use serde_json::json;

    fn node(id: &str) -> Executed {
        Executed {
            head: Arc::new(Head {
                id: id.into(),
                node_type: "echo".into(),
                fingerprint: "f".into(),
            }),
            action: "default".into(),
            span_id: Some([1, 2, 3, 4, 5, 6, 7, 0xab]),
            memo_key: None,
            outputs: IndexMap::new(),
        }
    }

    /// The records in the run's log.
    fn log(run: &RunDir) -> Vec<NodeRecord> {
        std::fs::read_to_string(run.log_path())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn outputs(v: Value) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("value".into(), v);
        m
    }

    /// A writer of run `r` (trace `t`) into `run`, memo entries under `tmp`.
    fn start(tmp: &tempfile::TempDir, run: &RunDir) -> Writer {
        Writer::start(run.clone(), tmp.path().into(), "r".into(), Some("t".into())).unwrap()
    }

    #[test]
    fn close_writes_every_queued_node_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let run = run_dir(tmp.path());
        let w = start(&tmp, &run);
        let long = "y".repeat(store::INLINE_MAX);
        for i in 0..300 {
            let mut out = outputs(json!(format!("{}{long}", i % 100)));
            out.insert("short".into(), json!(i));
            w.push(Job::Executed {
                node: node(&format!("n{i}")),
                // Every third long value repeats: stored once.
                outputs: out,
            });
        }
        let out = w.close();
        assert!(!out.broken && out.warnings.is_empty(), "{:?}", out.warnings);
        assert_eq!(out.stored, 300);
        // The log a killed run is resumed from has every node, in order.
        let logged = log(&run);
        let ids: Vec<&str> = logged.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids.len(), 300);
        assert_eq!((ids[0], ids[150], ids[299]), ("n0", "n150", "n299"));
        // The writer makes the record: the node's head, the run's origin.
        let r = &logged[150];
        assert_eq!(
            (r.node_type.as_str(), r.fingerprint.as_str(), r.how),
            ("echo", "f", How::Executed)
        );
        assert_eq!(
            r.origin,
            Origin {
                run_id: "r".into(),
                trace_id: Some("t".into()),
                span_id: Some("01020304050607ab".into()),
            }
        );
        // Digests point at objects holding the values.
        assert_eq!(
            run.get(&r.outputs["value"]).unwrap(),
            json!(format!("50{long}"))
        );
        // A short value lives in the record, checked against its digest like an object.
        assert!(r.is_inline(&r.outputs["short"]) && !r.is_inline(&r.outputs["value"]));
        let back = run.get_outputs(&logged[150]).unwrap();
        assert_eq!(back["short"], json!(150));
        assert_eq!(back["value"], json!(format!("50{long}")));
        let mut forged = logged[150].clone();
        let d = forged.outputs["short"].clone();
        forged.inline.insert(d, json!(151));
        assert!(matches!(
            run.get_outputs(&forged),
            Err(CheckpointError::Corrupt { .. })
        ));
        assert_eq!(
            std::fs::read_dir(run.dir.join("objects")).unwrap().count(),
            100
        );
        // A second close has nothing more; a push after it is ignored.
        w.push(Job::Executed {
            node: node("late"),
            outputs: outputs(json!(1)),
        });
        assert_eq!(w.close().stored, 0);
    }

    #[test]
    fn the_runtime_waits_while_too_much_is_queued_and_never_deadlocks() {
        let tmp = tempfile::tempdir().unwrap();
        let run = run_dir(tmp.path());
        // A bound smaller than one value: each push waits for the queue to empty.
        let w = Writer::bounded(run.clone(), tmp.path().into(), "r".into(), None, 1024).unwrap();
        let big = "x".repeat(4096);
        for i in 0..20 {
            w.push(Job::Executed {
                node: node(&format!("n{i}")),
                outputs: outputs(json!(format!("{i}{big}"))),
            });
            assert!(w.shared.lock().pending <= 4096 + 2 * JOB_OVERHEAD + 64);
        }
        assert_eq!(w.close().stored, 20);
    }

    /// Lines in the run's log, waiting up to 30 s for `n` of them.
    fn logged(run: &RunDir, n: usize) -> usize {
        let t0 = std::time::Instant::now();
        loop {
            let lines = std::fs::read_to_string(run.log_path())
                .map(|s| s.lines().count())
                .unwrap_or(0);
            if lines >= n || t0.elapsed() > Duration::from_secs(30) {
                return lines;
            }
            std::thread::sleep(TICK);
        }
    }

    #[test]
    fn a_writer_asleep_after_a_quiet_spell_is_woken_by_the_next_node() {
        let tmp = tempfile::tempdir().unwrap();
        let run = run_dir(tmp.path());
        let w = start(&tmp, &run);
        for round in 0..3 {
            w.push(Job::Executed {
                node: node(&format!("n{round}")),
                outputs: outputs(json!(round)),
            });
            // Written while the run goes on (what a killed run is resumed from).
            assert_eq!(logged(&run, round + 1), round + 1, "round {round}");
            // Many ticks with nothing queued: the writer sleeps without a timeout.
            let t0 = std::time::Instant::now();
            while !w.shared.lock().asleep && t0.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(TICK);
            }
            assert!(
                w.shared.lock().asleep,
                "round {round}: the writer never slept"
            );
        }
        assert_eq!(w.close().stored, 3);
    }

    #[test]
    fn a_failed_write_stops_the_checkpoint_with_a_warning() {
        let tmp = tempfile::tempdir().unwrap();
        let run = run_dir(tmp.path());
        let w = start(&tmp, &run);
        let long = "z".repeat(store::INLINE_MAX);
        w.push(Job::Executed {
            node: node("a"),
            outputs: outputs(json!(format!("first{long}"))),
        });
        // Once the first node is written, the directory goes away.
        let t0 = std::time::Instant::now();
        while !run.log_path().exists() && t0.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(TICK);
        }
        std::fs::remove_dir_all(&run.dir).unwrap();
        w.push(Job::Executed {
            node: node("b"),
            outputs: outputs(json!(format!("second{long}"))),
        });
        w.push(Job::Executed {
            node: node("c"),
            outputs: outputs(json!(format!("third{long}"))),
        });
        let out = w.close();
        assert!(out.broken);
        assert_eq!(out.stored, 1);
        assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
        assert!(
            out.warnings[0].contains("from node `b` on"),
            "{:?}",
            out.warnings
        );
    }

    #[test]
    fn a_large_value_is_streamed_to_the_same_object_a_small_one_would_be() {
        let tmp = tempfile::tempdir().unwrap();
        let run = run_dir(tmp.path());
        let big = json!({"text": "line \"quoted\"\n".repeat(STREAM_FROM / 8)});
        let (d, len) = run.put_streamed(&big).unwrap();
        let bytes = serde_json::to_vec(&big).unwrap();
        assert_eq!(d, store::sha256_hex(&bytes));
        assert_eq!(len, bytes.len() as u64);
        assert_eq!(run.get(&d).unwrap(), big);
        // Once per digest; the temp files are gone.
        assert_eq!(run.put_streamed(&big).unwrap().0, d);
        assert_eq!(
            std::fs::read_dir(run.dir.join("objects")).unwrap().count(),
            1
        );
        // Through the session's path: streamed on the caller's thread, the
        // small value beside it queued, the output order kept.
        let w = start(&tmp, &run);
        let mut out = Map::new();
        out.insert("a".into(), json!(1));
        out.insert("value".into(), big.clone());
        out.insert("z".into(), json!("last"));
        let job = crate::checkpoint::executed_job(&w, node("big"), &out);
        assert!(matches!(&job, Job::Executed { outputs, .. } if outputs.len() == 2));
        w.push(job);
        assert_eq!(w.close().stored, 1);
        let r = &log(&run)[0];
        assert_eq!(r.outputs["value"], d);
        let keys: Vec<&str> = r.outputs.keys().map(|k| k.as_str()).collect();
        assert_eq!(keys, ["a", "value", "z"]);
        let back = run.get_outputs(r).unwrap();
        assert_eq!(back["value"], big);
        assert_eq!(back.keys().collect::<Vec<_>>(), ["a", "value", "z"]);
    }

    #[test]
    fn dropping_the_writer_still_writes_what_was_queued() {
        let tmp = tempfile::tempdir().unwrap();
        let run = run_dir(tmp.path());
        let w = start(&tmp, &run);
        w.push(Job::Executed {
            node: node("a"),
            outputs: outputs(json!("kept")),
        });
        drop(w);
        let log = std::fs::read_to_string(run.log_path()).unwrap();
        assert_eq!(log.lines().count(), 1);
    }
}
