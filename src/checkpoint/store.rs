//! The on-disk layout of `$PFLOW_HOME/runs/`: one directory per run, named
//! by its run id (`<UTC time>_<8 hex>`, so names sort by time), holding
//!
//! - `manifest.json`: what ran (workflow file, IR hash, inputs by digest,
//!   trace and root span ids, status) and, once the run has ended, the LLM
//!   usage of the nodes it executed;
//! - `nodes.jsonl`: every completed node (its fingerprint, outputs by
//!   digest, action, origin span), appended as nodes complete, so a run
//!   killed before it could write its final manifest still leaves them;
//! - `objects/<sha256>`: each input, and each output value longer than
//!   [`INLINE_MAX`] bytes of JSON, once, by the SHA-256 of its JSON (a value
//!   two nodes share is stored once); shorter outputs are kept in their
//!   node's record, under the same digest;
//!
//! and `runs/memo/<key>`: the memo index, a node's memo key pointing at the
//! run that holds its outputs. Every file is created 0600, every directory
//! 0700: these are the user's own full values (never redacted, never exported).

use super::CheckpointError;
use crate::accounting::Reused;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The manifest's format version. 1: the final manifest repeated every node
/// record of `nodes.jsonl` (serializing each record a second time at the
/// end of the run was a tenth of a small node's cost); 2: the records stay
/// in `nodes.jsonl` and the manifest adds their usage. Both are read.
pub const SCHEMA: u32 = 2;

/// Where a node's outputs were first produced: the execution a restored or
/// cached node is linked to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub run_id: String,
    /// 32 hex, when telemetry was on.
    pub trace_id: Option<String>,
    /// 16 hex, when telemetry was on.
    pub span_id: Option<String>,
}

/// How a node came by its outputs in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum How {
    Executed,
    Restored,
    Cached,
}

impl How {
    /// The `pflow.node.status` of a node that was not run again.
    pub fn as_str(self) -> &'static str {
        match self {
            How::Executed => "ok",
            How::Restored => "restored",
            How::Cached => "cached",
        }
    }
}

/// One completed top-level node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: String,
    #[serde(rename = "type")]
    pub node_type: String,
    /// SHA-256 of the node's IR (and a nested workflow's IR): a changed node has another.
    pub fingerprint: String,
    pub action: String,
    /// Output key → object digest.
    pub outputs: IndexMap<String, String>,
    /// Values of at most [`INLINE_MAX`] bytes of JSON, by digest, kept in the
    /// record instead of an object file each (a file per short value was
    /// most of a small node's checkpoint cost).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub inline: IndexMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memo_key: Option<String>,
    pub how: How,
    pub origin: Origin,
    /// Its LLM calls and what they cost when first made; `None` while the
    /// run is unfinished or when telemetry was off (unknown).
    #[serde(default, with = "usage_field")]
    pub usage: Option<Reused>,
}

/// `usage` as the record holds it: `null` when unknown, `{}` for a node that
/// made no LLM call ($0, known), else the whole [`Reused`]. Writing the nine
/// zero counts of every tool node was a tenth of a traced run's per-node
/// cost.
mod usage_field {
    use crate::accounting::Reused;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(u: &Option<Reused>, s: S) -> Result<S::Ok, S::Error> {
        match u {
            Some(r) if *r == Reused::default() => {
                serde::ser::SerializeMap::end(serde::Serializer::serialize_map(s, Some(0))?)
            }
            other => other.serialize(s),
        }
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Nothing {}

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Whole(Reused),
        Nothing(Nothing),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Reused>, D::Error> {
        Ok(match Option::<Repr>::deserialize(d)? {
            None => None,
            Some(Repr::Whole(r)) => Some(r),
            Some(Repr::Nothing(_)) => Some(Reused::default()),
        })
    }
}

/// A run's checkpoint, as written at its end (or rebuilt from `nodes.jsonl`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: u32,
    pub run_id: String,
    pub started: String,
    /// `running` until the run ends, then its `pflow.run.status`.
    pub status: String,
    /// Absolute path of the workflow file.
    pub workflow_file: PathBuf,
    #[serde(default)]
    pub workflow_name: Option<String>,
    /// SHA-256 of the IR (the history's workflow hash).
    pub ir_hash: String,
    /// Node id → fingerprint, for every node of the workflow: written by
    /// format 1 and early format 2 only (each record has its node's).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub fingerprints: IndexMap<String, String>,
    /// Input name → object digest.
    pub inputs: IndexMap<String, String>,
    pub trace_id: Option<String>,
    pub root_span_id: Option<String>,
    #[serde(default)]
    pub resumed_from: Option<String>,
    /// The node the run stopped at, when it failed there.
    #[serde(default)]
    pub failed_node: Option<String>,
    /// Completed nodes: read from `nodes.jsonl` (format 2), or as a format
    /// 1 manifest held them. Never written into the manifest.
    #[serde(default, skip_serializing)]
    pub nodes: Vec<NodeRecord>,
    /// Once the run has ended with metrics: the LLM usage of each top-level
    /// node that used any (id → usage, nested calls included). An executed
    /// node not listed made no LLM call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<IndexMap<String, Reused>>,
}

impl Manifest {
    pub fn node(&self, id: &str) -> Option<&NodeRecord> {
        self.nodes.iter().rev().find(|n| n.id == id)
    }

    /// Whether the run ended (its final manifest was written).
    pub fn finished(&self) -> bool {
        self.status != "running"
    }
}

/// Output values up to this many bytes of JSON are kept in the node's record
/// ([`NodeRecord::inline`]); longer ones are stored once as `objects/<digest>`.
pub const INLINE_MAX: usize = 256;

impl NodeRecord {
    /// Whether `digest` is kept in the record rather than as an object file.
    pub fn is_inline(&self, digest: &str) -> bool {
        self.inline.contains_key(digest)
    }
}

/// The SHA-256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    crate::format::hex(&Sha256::digest(bytes))
}

/// Whether `s` is a run id: `<%Y%m%dT%H%M%S%.3fZ>_<hex>`.
pub fn is_run_id(s: &str) -> bool {
    let Some((time, tail)) = s.split_once('_') else {
        return false;
    };
    chrono::NaiveDateTime::parse_from_str(time, "%Y%m%dT%H%M%S%.3fZ").is_ok()
        && !tail.is_empty()
        && tail.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A new run id: the start time, then 8 hex (the trace id's first 8 when there is one).
pub fn new_run_id(trace_id: Option<&str>) -> String {
    let tail = trace_id
        .filter(|t| t.len() >= 8)
        .map(|t| t[..8].to_string())
        .unwrap_or_else(|| format!("{:08x}", rand::random::<u32>()));
    format!("{}_{tail}", chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"))
}

#[cfg(unix)]
fn private(opts: &mut std::fs::OpenOptions) {
    use std::os::unix::fs::OpenOptionsExt;
    opts.mode(0o600);
}

#[cfg(not(unix))]
fn private(_: &mut std::fs::OpenOptions) {}

/// Creates `dir` (and parents) readable by the user only.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

/// One run's directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub dir: PathBuf,
}

impl RunDir {
    pub fn new(runs: &Path, run_id: &str) -> RunDir {
        RunDir {
            dir: runs.join(run_id),
        }
    }

    fn io(&self, path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError {
        let path = path.to_path_buf();
        move |source| CheckpointError::Io { path, source }
    }

    pub fn create(&self) -> Result<(), CheckpointError> {
        private_dir(&self.dir.join("objects")).map_err(self.io(&self.dir))
    }

    fn object_path(&self, digest: &str) -> PathBuf {
        self.dir.join("objects").join(digest)
    }

    /// Stores `value` once under its digest; returns the digest.
    pub fn put(&self, value: &Value) -> Result<String, CheckpointError> {
        let bytes = serde_json::to_vec(value).map_err(|e| CheckpointError::Io {
            path: self.dir.clone(),
            source: std::io::Error::other(e),
        })?;
        let digest = sha256_hex(&bytes);
        self.put_bytes(&digest, &bytes)?;
        Ok(digest)
    }

    /// Stores `bytes` (a value's JSON) under `digest`, its SHA-256, unless already there.
    pub fn put_bytes(&self, digest: &str, bytes: &[u8]) -> Result<(), CheckpointError> {
        let path = self.object_path(digest);
        if path.exists() {
            return Ok(());
        }
        self.write_atomic(&path, bytes)
    }

    /// Stores a large `value` by streaming its JSON through SHA-256 into a
    /// temp file, renamed to its digest: no serialized copy of the value is
    /// held in memory. Returns the digest and the JSON's length.
    pub fn put_streamed(&self, value: &Value) -> Result<(String, u64), CheckpointError> {
        struct Hashing<W> {
            out: W,
            sha: Sha256,
            len: u64,
        }
        impl<W: Write> Write for Hashing<W> {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let n = self.out.write(buf)?;
                self.sha.update(&buf[..n]);
                self.len += n as u64;
                Ok(n)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                self.out.flush()
            }
        }
        let dir = self.dir.join("objects");
        let tmp = tempfile::NamedTempFile::new_in(&dir).map_err(self.io(&dir))?;
        let mut w = Hashing {
            out: std::io::BufWriter::with_capacity(1 << 16, tmp),
            sha: Sha256::new(),
            len: 0,
        };
        serde_json::to_writer(&mut w, value)
            .map_err(std::io::Error::other)
            .and_then(|()| w.flush())
            .map_err(self.io(&dir))?;
        let digest = crate::format::hex(&w.sha.finalize());
        let tmp = w.out.into_inner().map_err(|e| CheckpointError::Io {
            path: dir.clone(),
            source: e.into_error(),
        })?;
        let path = self.object_path(&digest);
        if !path.exists() {
            tmp.persist(&path).map_err(|e| CheckpointError::Io {
                path: path.clone(),
                source: e.error,
            })?;
        }
        Ok((digest, w.len))
    }

    /// Takes object `digest` over from another run's directory (a hard link
    /// when the file system allows, else a copy).
    pub fn adopt(&self, from: &RunDir, digest: &str) -> Result<(), CheckpointError> {
        let dst = self.object_path(digest);
        if dst.exists() {
            return Ok(());
        }
        let src = from.object_path(digest);
        if std::fs::hard_link(&src, &dst).is_ok() {
            return Ok(());
        }
        let bytes = std::fs::read(&src).map_err(self.io(&src))?;
        self.write_atomic(&dst, &bytes)
    }

    pub fn get(&self, digest: &str) -> Result<Value, CheckpointError> {
        let path = self.object_path(digest);
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CheckpointError::Corrupt {
                path,
                message: format!("`{digest}` is not a SHA-256 digest"),
            });
        }
        let bytes = std::fs::read(&path).map_err(self.io(&path))?;
        // A digest that no longer matches is a damaged file, not a value to trust.
        if sha256_hex(&bytes) != digest {
            return Err(CheckpointError::Corrupt {
                path,
                message: "content does not match its digest".into(),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Corrupt {
            path,
            message: e.to_string(),
        })
    }

    /// Reads back a map of name → digest.
    pub fn get_map(
        &self,
        digests: &IndexMap<String, String>,
    ) -> Result<Map<String, Value>, CheckpointError> {
        digests
            .iter()
            .map(|(k, d)| Ok((k.clone(), self.get(d)?)))
            .collect()
    }

    /// A node's outputs: inline values from its record (checked against
    /// their digests like objects are), the rest from `objects/`.
    pub fn get_outputs(&self, rec: &NodeRecord) -> Result<Map<String, Value>, CheckpointError> {
        rec.outputs
            .iter()
            .map(|(k, d)| {
                let v = match rec.inline.get(d) {
                    Some(v) => {
                        let bytes = serde_json::to_vec(v).unwrap_or_default();
                        if sha256_hex(&bytes) != *d {
                            return Err(CheckpointError::Corrupt {
                                path: self.dir.join("manifest.json"),
                                message: format!(
                                    "node `{}`: output `{k}` does not match its digest",
                                    rec.id
                                ),
                            });
                        }
                        v.clone()
                    }
                    None => self.get(d)?,
                };
                Ok((k.clone(), v))
            })
            .collect()
    }

    /// Stores every value of `map`; returns name → digest.
    pub fn put_map(
        &self,
        map: &Map<String, Value>,
    ) -> Result<IndexMap<String, String>, CheckpointError> {
        map.iter()
            .map(|(k, v)| Ok((k.clone(), self.put(v)?)))
            .collect()
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
        let dir = path.parent().unwrap_or(&self.dir);
        // NamedTempFile is created 0600; the rename makes a half-written file impossible to read.
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(self.io(dir))?;
        tmp.write_all(bytes).map_err(self.io(path))?;
        tmp.persist(path).map_err(|e| CheckpointError::Io {
            path: path.to_path_buf(),
            source: e.error,
        })?;
        Ok(())
    }

    pub fn write_manifest(&self, m: &Manifest) -> Result<(), CheckpointError> {
        let bytes = serde_json::to_vec(m).map_err(|e| CheckpointError::Io {
            path: self.dir.clone(),
            source: std::io::Error::other(e),
        })?;
        self.write_atomic(&self.dir.join("manifest.json"), &bytes)
    }

    /// `nodes.jsonl`: one line per completed node, appended as nodes complete.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("nodes.jsonl")
    }

    /// Opens `nodes.jsonl` for appending (created 0600).
    pub fn open_log(&self) -> std::io::Result<std::fs::File> {
        let mut opts = std::fs::OpenOptions::new();
        opts.create(true).append(true);
        private(&mut opts);
        opts.open(self.log_path())
    }

    /// Appends one completed node to `nodes.jsonl`.
    pub fn append_node(&self, rec: &NodeRecord) -> Result<(), CheckpointError> {
        let path = self.log_path();
        let mut line = serde_json::to_vec(rec).map_err(|e| CheckpointError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        line.push(b'\n');
        let mut f = self.open_log().map_err(self.io(&path))?;
        f.write_all(&line).map_err(self.io(&path))
    }

    /// The run's manifest with its node records (from `nodes.jsonl`, where a
    /// killed run leaves them too) and, once it has ended, their usage.
    pub fn load(&self) -> Result<Manifest, CheckpointError> {
        let path = self.dir.join("manifest.json");
        let text = std::fs::read_to_string(&path).map_err(self.io(&path))?;
        let mut m: Manifest =
            serde_json::from_str(&text).map_err(|e| CheckpointError::Corrupt {
                path: path.clone(),
                message: e.to_string(),
            })?;
        if !(1..=SCHEMA).contains(&m.schema) {
            return Err(CheckpointError::Corrupt {
                path,
                message: format!(
                    "checkpoint format {} (this pflow reads 1 to {SCHEMA})",
                    m.schema
                ),
            });
        }
        // Format 1 held a finished run's records itself.
        if m.schema >= 2 || !m.finished() {
            let log = self.log_path();
            if let Ok(text) = std::fs::read_to_string(&log) {
                // A line cut by a kill is the last one: the complete ones before it count.
                m.nodes = text
                    .lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect();
            }
        }
        if let Some(usage) = &m.usage {
            for rec in m.nodes.iter_mut().filter(|r| r.how == How::Executed) {
                rec.usage = Some(usage.get(&rec.id).copied().unwrap_or_default());
            }
        }
        Ok(m)
    }
}

/// The memo index entry: which run holds the outputs for a key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemoEntry {
    pub run_id: String,
    pub node: String,
}

/// `runs/memo/`.
pub fn memo_dir(runs: &Path) -> PathBuf {
    runs.join("memo")
}

pub fn memo_put(runs: &Path, key: &str, entry: &MemoEntry) -> Result<(), CheckpointError> {
    let dir = memo_dir(runs);
    private_dir(&dir).map_err(|source| CheckpointError::Io {
        path: dir.clone(),
        source,
    })?;
    let bytes = serde_json::to_vec(entry).unwrap_or_default();
    RunDir { dir: dir.clone() }.write_atomic(&dir.join(key), &bytes)
}

pub fn memo_get(runs: &Path, key: &str) -> Option<MemoEntry> {
    let text = std::fs::read(memo_dir(runs).join(key)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Drops an index entry whose run is gone (retention) or no longer holds the key.
pub fn memo_forget(runs: &Path, key: &str) {
    let _ = std::fs::remove_file(memo_dir(runs).join(key));
}

/// Run ids in `runs`, newest first.
pub fn list(runs: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(runs)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| is_run_id(n))
                .collect()
        })
        .unwrap_or_default();
    ids.sort_by(|a, b| b.cmp(a));
    ids
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A created run directory under `tmp` (the writer's tests use it too).
    pub(in crate::checkpoint) fn run_dir(tmp: &Path) -> RunDir {
        let run = RunDir::new(tmp, "20260101T000000.000Z_abcdef01");
        run.create().unwrap();
        run
    }

    /// Node `a`, executed, with `usage`.
    fn rec(usage: Option<Reused>) -> NodeRecord {
        NodeRecord {
            id: "a".into(),
            node_type: "echo".into(),
            fingerprint: "f".into(),
            action: "default".into(),
            outputs: IndexMap::new(),
            inline: IndexMap::new(),
            memo_key: None,
            how: How::Executed,
            origin: Origin::default(),
            usage,
        }
    }

    #[test]
    fn usage_round_trips_unknown_zero_and_spent_and_reads_the_old_zero_form() {
        let spent = Reused {
            llm_calls: 2,
            tokens: crate::accounting::Tokens::call(10, 3),
            cost_usd: None,
        };
        for (usage, text) in [
            (None, r#""usage":null"#),
            (Some(Reused::default()), r#""usage":{}"#),
            (Some(spent), r#""usage":{"llm_calls":2,"#),
        ] {
            let json = serde_json::to_string(&rec(usage)).unwrap();
            assert!(json.contains(text), "{json}");
            let back: NodeRecord = serde_json::from_str(&json).unwrap();
            assert_eq!(back.usage, usage, "{json}");
        }
        // Records written before the short form spelled zero usage out.
        let old = serde_json::to_value(rec(None)).unwrap();
        let mut old = old.as_object().unwrap().clone();
        old.insert(
            "usage".into(),
            serde_json::to_value(Reused::default()).unwrap(),
        );
        let back: NodeRecord = serde_json::from_value(Value::Object(old)).unwrap();
        assert_eq!(back.usage, Some(Reused::default()));
        // Anything else under `usage` is an error, not a silent $0.
        let bad = r#"{"id":"a","type":"echo","fingerprint":"f","action":"default","outputs":{},"how":"executed","origin":{"run_id":""},"usage":{"calls":1}}"#;
        assert!(serde_json::from_str::<NodeRecord>(bad).is_err());
    }

    #[test]
    fn digests_are_lowercase_hex_sha256() {
        // FIPS 180-2's test vectors.
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
    use serde_json::json;

    #[test]
    fn values_are_stored_once_by_digest_and_private() {
        let tmp = tempfile::tempdir().unwrap();
        let run = run_dir(tmp.path());
        let a = run.put(&json!({"text": "same"})).unwrap();
        let b = run.put(&json!({"text": "same"})).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            std::fs::read_dir(run.dir.join("objects")).unwrap().count(),
            1
        );
        assert_eq!(run.get(&a).unwrap(), json!({"text": "same"}));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&run.dir.join("objects").join(&a)), 0o600);
            assert_eq!(mode(&run.dir), 0o700);
        }
        // A damaged object is an error, not a wrong value.
        std::fs::write(run.dir.join("objects").join(&a), "{\"text\":\"other\"}").unwrap();
        assert!(matches!(run.get(&a), Err(CheckpointError::Corrupt { .. })));
        assert!(run.get("../../etc/passwd").is_err());
    }

    #[test]
    fn run_ids_sort_by_time_and_are_recognised() {
        let id = new_run_id(Some("0123456789abcdef0123456789abcdef"));
        assert!(is_run_id(&id), "{id}");
        assert!(id.ends_with("_01234567"));
        assert!(!is_run_id("memo"));
        assert!(!is_run_id("20260101T000000.000Z_xyz"));
        let tmp = tempfile::tempdir().unwrap();
        for n in ["20260101T000000.000Z_aa", "20260102T000000.000Z_bb", "memo"] {
            std::fs::create_dir_all(tmp.path().join(n)).unwrap();
        }
        assert_eq!(
            list(tmp.path()),
            ["20260102T000000.000Z_bb", "20260101T000000.000Z_aa"]
        );
    }

    #[test]
    fn an_unfinished_run_keeps_its_logged_nodes() {
        let tmp = tempfile::tempdir().unwrap();
        let run = run_dir(tmp.path());
        let m = Manifest {
            schema: SCHEMA,
            run_id: "20260101T000000.000Z_abcdef01".into(),
            started: String::new(),
            status: "running".into(),
            workflow_file: "/wf.json".into(),
            workflow_name: None,
            ir_hash: String::new(),
            fingerprints: IndexMap::new(),
            inputs: IndexMap::new(),
            trace_id: None,
            root_span_id: None,
            resumed_from: None,
            failed_node: None,
            nodes: vec![],
            usage: None,
        };
        run.write_manifest(&m).unwrap();
        run.append_node(&rec(None)).unwrap();
        // A line cut short by a kill.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(run.dir.join("nodes.jsonl"))
            .unwrap();
        f.write_all(b"{\"id\":\"b\",").unwrap();
        let back = run.load().unwrap();
        assert_eq!(back.nodes.len(), 1);
        assert_eq!(back.node("a").unwrap().action, "default");
    }

    /// Format 2: a finished run's records are read from `nodes.jsonl`, and
    /// the manifest's usage fills in its executed nodes' (none listed: $0).
    #[test]
    fn a_finished_run_reads_its_records_from_the_log_with_the_manifests_usage() {
        let tmp = tempfile::tempdir().unwrap();
        let run = run_dir(tmp.path());
        let spent = Reused {
            llm_calls: 1,
            tokens: crate::accounting::Tokens::call(7, 2),
            cost_usd: Some(0.5),
        };
        let kept = Reused {
            llm_calls: 3,
            ..Reused::default()
        };
        let named = |id: &str, how: How, usage: Option<Reused>| NodeRecord {
            id: id.into(),
            how,
            ..rec(usage)
        };
        run.append_node(&named("a", How::Executed, None)).unwrap();
        run.append_node(&named("b", How::Executed, None)).unwrap();
        run.append_node(&named("c", How::Restored, Some(kept)))
            .unwrap();
        // A finished manifest of `schema`, ending with `more` fields.
        let manifest = |schema: u32, more: &str| {
            let text = format!(
                r#"{{"schema":{schema},"run_id":"r","started":"","status":"ok","workflow_file":"/wf.json","ir_hash":"","fingerprints":{{}},"inputs":{{}},"trace_id":null,"root_span_id":null{more}}}"#
            );
            std::fs::write(run.dir.join("manifest.json"), text).unwrap();
        };
        manifest(
            2,
            &format!(
                r#","usage":{{"a":{}}}"#,
                serde_json::to_string(&spent).unwrap()
            ),
        );
        let back = run.load().unwrap();
        let usage = |id: &str| back.node(id).unwrap().usage;
        assert_eq!(usage("a"), Some(spent));
        assert_eq!(usage("b"), Some(Reused::default()));
        assert_eq!(usage("c"), Some(kept), "a restored node keeps its own");

        // Written by this build: the records are not repeated in the manifest.
        let mut m = back.clone();
        m.status = "failed".into();
        run.write_manifest(&m).unwrap();
        let written = std::fs::read_to_string(run.dir.join("manifest.json")).unwrap();
        assert!(!written.contains("\"nodes\""), "{written}");
        let again = run.load().unwrap();
        let ids = |m: &Manifest| -> Vec<(String, Option<Reused>)> {
            m.nodes.iter().map(|n| (n.id.clone(), n.usage)).collect()
        };
        assert_eq!(ids(&again), ids(&back));

        // Format 1 (earlier builds): the finished manifest holds the records.
        manifest(
            1,
            &format!(
                r#","nodes":[{}]"#,
                serde_json::to_string(&named("z", How::Executed, Some(spent))).unwrap()
            ),
        );
        let back = run.load().unwrap();
        assert_eq!(back.nodes.len(), 1);
        assert_eq!(back.node("z").unwrap().usage, Some(spent));

        manifest(3, "");
        assert!(matches!(run.load(), Err(CheckpointError::Corrupt { .. })));
    }
}
