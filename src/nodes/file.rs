//! File nodes: `read-file`, `write-file`, `copy-file`, `move-file`,
//! `delete-file`. Relative paths are relative to the working directory.
//! Errors name the path and say what to do about it.
//!
//! Each node does its file work as one synchronous step ([`run_io`]): inline
//! on the executing thread when the data is small, in a single hop to the
//! blocking pool when it is large. A hop per syscall (tokio::fs) cost ~20
//! futex round trips per node, far more than the open/write/close itself.

use super::{specs, Node, NodeContext, NodeError, NodeFuture, NodeOutput, NodeSpec, Params};
use base64::Engine;
use serde_json::{json, Map, Value};
use std::path::Path;

fn io_error(op: &str, path: &str, e: &std::io::Error) -> NodeError {
    let hint = match e.kind() {
        std::io::ErrorKind::NotFound => " (no such file or directory)",
        std::io::ErrorKind::PermissionDenied => " (permission denied)",
        std::io::ErrorKind::AlreadyExists => {
            " (already exists; set `overwrite: true` to replace it)"
        }
        _ => "",
    };
    NodeError::new("io_error", format!("cannot {op} `{path}`: {e}{hint}"))
        .with_details(json!({"path": path, "io_kind": format!("{:?}", e.kind())}))
}

fn outputs(pairs: Vec<(&str, Value)>) -> NodeOutput {
    let mut m = Map::new();
    for (k, v) in pairs {
        m.insert(k.to_string(), v);
    }
    NodeOutput::new(m)
}

/// Data up to this size is read or written inline: below it a trip to the
/// blocking pool costs more than the I/O; above it, one trip keeps a large
/// read or write from holding a runtime worker that other batch items share.
const INLINE_BYTES: u64 = 256 * 1024;

/// Runs a node's whole file work as one synchronous step, inline when `large`
/// is false, else in one `spawn_blocking` hop.
async fn run_io<T: Send + 'static>(
    large: bool,
    work: impl FnOnce() -> Result<T, NodeError> + Send + 'static,
) -> Result<T, NodeError> {
    if !large {
        return work();
    }
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| NodeError::new("panic", format!("file work did not finish: {e}")))?
}

/// Whether the file at `path` is larger than the inline limit (a missing or
/// unreadable file is small: the work itself reports the error).
fn is_large_file(path: &str) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.len() > INLINE_BYTES)
}

fn make_parent_dirs(path: &str) -> Result<(), NodeError> {
    if let Some(parent) = Path::new(path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).map_err(|e| io_error("create directory for", path, &e))?;
    }
    Ok(())
}

/// Opens `path` with `opts`; when its directory is missing and `create_dirs`
/// is set, creates it and tries once more. Trying the open first saves a stat
/// per write when the directory exists, the common case.
fn open_creating_dirs(
    opts: &std::fs::OpenOptions,
    path: &str,
    create_dirs: bool,
) -> Result<std::fs::File, NodeError> {
    match opts.open(path) {
        Err(e) if create_dirs && e.kind() == std::io::ErrorKind::NotFound => {
            make_parent_dirs(path)?;
            opts.open(path)
        }
        r => r,
    }
    .map_err(|e| io_error("open for writing", path, &e))
}

/// Ends a regular file just written from its start at `len`, dropping what is
/// left of its old content.
///
/// The file is opened without `O_TRUNC` and cut afterwards, only when it was
/// longer: on ext4 truncating a file to zero waits for writeback of its old
/// pages and makes `close` flush the new ones (the "replace via truncate"
/// heuristic), about 140 µs per write against under 10 µs for an overwrite
/// (benches/README.md). The result is the same file: same content, inode,
/// owner and mode. Not a regular file (`/dev/stdout`, a FIFO): nothing to cut.
fn cut_to(f: &std::fs::File, len: u64) -> std::io::Result<()> {
    let meta = f.metadata()?;
    if meta.is_file() && meta.len() > len {
        f.set_len(len)?;
    }
    Ok(())
}

fn encoding(params: &Params) -> Result<&str, NodeError> {
    let enc = params.str_opt("encoding")?.unwrap_or("utf-8");
    match enc {
        "utf-8" | "utf8" | "base64" => Ok(enc),
        other => Err(NodeError::param(
            "encoding",
            format!("unsupported encoding `{other}`; use `utf-8` or `base64`"),
        )),
    }
}

pub struct ReadFile;
impl Node for ReadFile {
    fn spec(&self) -> &'static NodeSpec {
        &specs::READ_FILE
    }
    fn run<'a>(&'a self, _ctx: &'a NodeContext, params: Params) -> NodeFuture<'a> {
        Box::pin(async move {
            let path = params.str("file_path")?.to_string();
            let enc = encoding(&params)?;
            let bytes = {
                let path = path.clone();
                run_io(is_large_file(&path), move || {
                    std::fs::read(&path).map_err(|e| io_error("read", &path, &e))
                })
                .await?
            };
            let path = path.as_str();
            let content = if enc == "base64" {
                base64::engine::general_purpose::STANDARD.encode(&bytes)
            } else {
                String::from_utf8(bytes).map_err(|e| {
                    NodeError::new(
                        "encoding_error",
                        format!("`{path}` is not valid UTF-8 (byte {}); set `encoding: \"base64\"` to read binary files", e.utf8_error().valid_up_to()),
                    )
                })?
            };
            Ok(outputs(vec![
                ("content", Value::String(content)),
                ("file_path", json!(path)),
            ]))
        })
    }
}

pub struct WriteFile;
impl Node for WriteFile {
    fn spec(&self) -> &'static NodeSpec {
        &specs::WRITE_FILE
    }
    fn run<'a>(&'a self, _ctx: &'a NodeContext, mut params: Params) -> NodeFuture<'a> {
        Box::pin(async move {
            let path = params.str("file_path")?.to_string();
            let text = params
                .take_text("content")
                .ok_or_else(|| NodeError::param("content", "is required"))?;
            let bytes = if encoding(&params)? == "base64" {
                base64::engine::general_purpose::STANDARD
                    .decode(text.trim())
                    .map_err(|e| NodeError::param("content", format!("not valid base64: {e}")))?
            } else {
                text.into_bytes()
            };
            let create_dirs = params.bool_or("create_dirs", true)?;
            let append = params.bool_or("append", false)?;
            let large = bytes.len() as u64 > INLINE_BYTES;
            let owned = path.clone();
            let bytes = run_io(large, move || {
                let path = owned.as_str();
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create(true);
                if append {
                    opts.append(true);
                }
                use std::io::Write;
                let mut f = open_creating_dirs(&opts, path, create_dirs)?;
                f.write_all(&bytes)
                    .map_err(|e| io_error("write", path, &e))?;
                if !append {
                    cut_to(&f, bytes.len() as u64).map_err(|e| io_error("write", path, &e))?;
                }
                Ok(bytes)
            })
            .await?;
            Ok(outputs(vec![
                ("written", json!(bytes.len())),
                ("file_path", json!(path)),
            ]))
        })
    }
}

/// The source and destination of `copy-file` / `move-file`, with their flags.
struct Transfer {
    src: String,
    dest: String,
    overwrite: bool,
    create_dirs: bool,
}

impl Transfer {
    fn from_params(params: &Params) -> Result<Self, NodeError> {
        Ok(Transfer {
            src: params.str("source_path")?.to_string(),
            dest: params.str("dest_path")?.to_string(),
            overwrite: params.bool_or("overwrite", false)?,
            create_dirs: params.bool_or("create_dirs", true)?,
        })
    }

    fn check_dest(&self) -> Result<(), NodeError> {
        let dest = self.dest.as_str();
        if !self.overwrite && Path::new(dest).try_exists().unwrap_or(false) {
            return Err(NodeError::new(
                "exists",
                format!("`{dest}` already exists; set `overwrite: true` to replace it"),
            ));
        }
        if self.create_dirs {
            make_parent_dirs(dest)?;
        }
        Ok(())
    }
}

pub struct CopyFile;
impl Node for CopyFile {
    fn spec(&self) -> &'static NodeSpec {
        &specs::COPY_FILE
    }
    fn run<'a>(&'a self, _ctx: &'a NodeContext, params: Params) -> NodeFuture<'a> {
        Box::pin(async move {
            let t = Transfer::from_params(&params)?;
            let large = is_large_file(&t.src);
            let (n, dest) = run_io(large, move || {
                t.check_dest()?;
                let n = std::fs::copy(&t.src, &t.dest).map_err(|e| io_error("copy", &t.src, &e))?;
                Ok((n, t.dest))
            })
            .await?;
            Ok(outputs(vec![
                ("copied", json!(n)),
                ("dest_path", json!(dest)),
            ]))
        })
    }
}

pub struct MoveFile;
impl Node for MoveFile {
    fn spec(&self) -> &'static NodeSpec {
        &specs::MOVE_FILE
    }
    fn run<'a>(&'a self, _ctx: &'a NodeContext, params: Params) -> NodeFuture<'a> {
        Box::pin(async move {
            let t = Transfer::from_params(&params)?;
            // A rename is one syscall whatever the size; only the cross-device
            // fallback copies data, so size decides the hop.
            let large = is_large_file(&t.src);
            let dest = run_io(large, move || {
                t.check_dest()?;
                if std::fs::rename(&t.src, &t.dest).is_err() {
                    std::fs::copy(&t.src, &t.dest).map_err(|e| io_error("move", &t.src, &e))?;
                    std::fs::remove_file(&t.src)
                        .map_err(|e| io_error("remove after copying", &t.src, &e))?;
                }
                Ok(t.dest)
            })
            .await?;
            Ok(outputs(vec![
                ("moved", json!(true)),
                ("dest_path", json!(dest)),
            ]))
        })
    }
}

pub struct DeleteFile;
impl Node for DeleteFile {
    fn spec(&self) -> &'static NodeSpec {
        &specs::DELETE_FILE
    }
    fn run<'a>(&'a self, _ctx: &'a NodeContext, params: Params) -> NodeFuture<'a> {
        Box::pin(async move {
            let path = params.str("file_path")?;
            // One unlink: always inline.
            let deleted = match std::fs::remove_file(path) {
                Ok(()) => true,
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound
                        && params.bool_or("missing_ok", false)? =>
                {
                    false
                }
                Err(e) => return Err(io_error("delete", path, &e)),
            };
            Ok(outputs(vec![
                ("deleted", json!(deleted)),
                ("file_path", json!(path)),
            ]))
        })
    }
}
