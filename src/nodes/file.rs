//! File nodes: `read-file`, `write-file`, `copy-file`, `move-file`,
//! `delete-file`. Relative paths are relative to the working directory.
//! Errors name the path and say what to do about it.

use super::{opt, req, Node, NodeContext, NodeError, NodeOutput, NodeSpec, Params};
use base64::Engine;
use futures::future::BoxFuture;
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

async fn make_parent_dirs(path: &str) -> Result<(), NodeError> {
    if let Some(parent) = Path::new(path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
    {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| io_error("create directory for", path, &e))?;
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
static READ: NodeSpec = NodeSpec {
    name: "read-file",
    description: "Read a file into the store.",
    params: &[
        req("file_path", "string", "path of the file to read"),
        opt(
            "encoding",
            "string",
            "`utf-8` (default) or `base64` for binary files",
        ),
    ],
    outputs: &[
        req("content", "string", "the file's content"),
        req("file_path", "string", "the path read"),
    ],
    dynamic_outputs: false,
};

impl Node for ReadFile {
    fn spec(&self) -> &'static NodeSpec {
        &READ
    }
    fn run<'a>(
        &'a self,
        _ctx: &'a NodeContext,
        params: Params,
    ) -> BoxFuture<'a, Result<NodeOutput, NodeError>> {
        Box::pin(async move {
            let path = params.str("file_path")?;
            let enc = encoding(&params)?;
            let bytes = tokio::fs::read(path)
                .await
                .map_err(|e| io_error("read", path, &e))?;
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
static WRITE: NodeSpec = NodeSpec {
    name: "write-file",
    description:
        "Write (or append) content to a file. Non-string content is written as pretty JSON.",
    params: &[
        req("file_path", "string", "path of the file to write"),
        req(
            "content",
            "any",
            "what to write; objects and arrays become JSON",
        ),
        opt(
            "append",
            "boolean",
            "append instead of replacing (default false)",
        ),
        opt(
            "create_dirs",
            "boolean",
            "create missing parent directories (default true)",
        ),
        opt(
            "encoding",
            "string",
            "`utf-8` (default) or `base64` (content is decoded first)",
        ),
    ],
    outputs: &[
        req("written", "integer", "bytes written"),
        req("file_path", "string", "the path written"),
    ],
    dynamic_outputs: false,
};

impl Node for WriteFile {
    fn spec(&self) -> &'static NodeSpec {
        &WRITE
    }
    fn run<'a>(
        &'a self,
        _ctx: &'a NodeContext,
        params: Params,
    ) -> BoxFuture<'a, Result<NodeOutput, NodeError>> {
        Box::pin(async move {
            let path = params.str("file_path")?;
            let text = params
                .text_opt("content")
                .ok_or_else(|| NodeError::param("content", "is required"))?;
            let bytes = if encoding(&params)? == "base64" {
                base64::engine::general_purpose::STANDARD
                    .decode(text.trim())
                    .map_err(|e| NodeError::param("content", format!("not valid base64: {e}")))?
            } else {
                text.into_bytes()
            };
            if params.bool_or("create_dirs", true)? {
                make_parent_dirs(path).await?;
            }
            let append = params.bool_or("append", false)?;
            let mut opts = tokio::fs::OpenOptions::new();
            opts.write(true).create(true);
            if append {
                opts.append(true);
            } else {
                opts.truncate(true);
            }
            use tokio::io::AsyncWriteExt;
            let mut f = opts
                .open(path)
                .await
                .map_err(|e| io_error("open for writing", path, &e))?;
            f.write_all(&bytes)
                .await
                .map_err(|e| io_error("write", path, &e))?;
            f.flush().await.map_err(|e| io_error("write", path, &e))?;
            Ok(outputs(vec![
                ("written", json!(bytes.len())),
                ("file_path", json!(path)),
            ]))
        })
    }
}

async fn check_dest(params: &Params, dest: &str) -> Result<(), NodeError> {
    if !params.bool_or("overwrite", false)? && tokio::fs::try_exists(dest).await.unwrap_or(false) {
        return Err(NodeError::new(
            "exists",
            format!("`{dest}` already exists; set `overwrite: true` to replace it"),
        ));
    }
    if params.bool_or("create_dirs", true)? {
        make_parent_dirs(dest).await?;
    }
    Ok(())
}

const COPY_MOVE_PARAMS: &[super::Field] = &[
    req("source_path", "string", "file to take"),
    req("dest_path", "string", "where to put it"),
    opt(
        "overwrite",
        "boolean",
        "replace an existing destination (default false)",
    ),
    opt(
        "create_dirs",
        "boolean",
        "create missing parent directories (default true)",
    ),
];

pub struct CopyFile;
static COPY: NodeSpec = NodeSpec {
    name: "copy-file",
    description: "Copy a file.",
    params: COPY_MOVE_PARAMS,
    outputs: &[
        req("copied", "integer", "bytes copied"),
        req("dest_path", "string", "the destination"),
    ],
    dynamic_outputs: false,
};

impl Node for CopyFile {
    fn spec(&self) -> &'static NodeSpec {
        &COPY
    }
    fn run<'a>(
        &'a self,
        _ctx: &'a NodeContext,
        params: Params,
    ) -> BoxFuture<'a, Result<NodeOutput, NodeError>> {
        Box::pin(async move {
            let src = params.str("source_path")?;
            let dest = params.str("dest_path")?;
            check_dest(&params, dest).await?;
            let n = tokio::fs::copy(src, dest)
                .await
                .map_err(|e| io_error("copy", src, &e))?;
            Ok(outputs(vec![
                ("copied", json!(n)),
                ("dest_path", json!(dest)),
            ]))
        })
    }
}

pub struct MoveFile;
static MOVE: NodeSpec = NodeSpec {
    name: "move-file",
    description: "Move (rename) a file; falls back to copy + delete across file systems.",
    params: COPY_MOVE_PARAMS,
    outputs: &[
        req("moved", "boolean", "true when moved"),
        req("dest_path", "string", "the destination"),
    ],
    dynamic_outputs: false,
};

impl Node for MoveFile {
    fn spec(&self) -> &'static NodeSpec {
        &MOVE
    }
    fn run<'a>(
        &'a self,
        _ctx: &'a NodeContext,
        params: Params,
    ) -> BoxFuture<'a, Result<NodeOutput, NodeError>> {
        Box::pin(async move {
            let src = params.str("source_path")?;
            let dest = params.str("dest_path")?;
            check_dest(&params, dest).await?;
            if tokio::fs::rename(src, dest).await.is_err() {
                tokio::fs::copy(src, dest)
                    .await
                    .map_err(|e| io_error("move", src, &e))?;
                tokio::fs::remove_file(src)
                    .await
                    .map_err(|e| io_error("remove after copying", src, &e))?;
            }
            Ok(outputs(vec![
                ("moved", json!(true)),
                ("dest_path", json!(dest)),
            ]))
        })
    }
}

pub struct DeleteFile;
static DELETE: NodeSpec = NodeSpec {
    name: "delete-file",
    description: "Delete a file.",
    params: &[
        req("file_path", "string", "file to delete"),
        opt(
            "missing_ok",
            "boolean",
            "succeed when the file does not exist (default false)",
        ),
    ],
    outputs: &[
        req("deleted", "boolean", "true when a file was deleted"),
        req("file_path", "string", "the path"),
    ],
    dynamic_outputs: false,
};

impl Node for DeleteFile {
    fn spec(&self) -> &'static NodeSpec {
        &DELETE
    }
    fn run<'a>(
        &'a self,
        _ctx: &'a NodeContext,
        params: Params,
    ) -> BoxFuture<'a, Result<NodeOutput, NodeError>> {
        Box::pin(async move {
            let path = params.str("file_path")?;
            let deleted = match tokio::fs::remove_file(path).await {
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
