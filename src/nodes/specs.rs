//! The catalogue of built-in node types: what each takes and gives. The
//! validator, the planner's prompt and `pflow nodes` read these; the node
//! modules only run them. Kept in one place so the params read as one table.

use super::{opt, req, Field, NodeSpec};

pub static ECHO: NodeSpec = NodeSpec {
    name: "echo",
    description: "Return every param as an output of the same name. A string param `action` also picks the outgoing edge; a string param `fail` makes the node fail with that message (for testing error edges).",
    params: &[
        opt("*", "any", "any params; each becomes an output"),
        opt("action", "string", "action to return (default `default`)"),
        opt("fail", "string", "fail with this message instead of succeeding"),
    ],
    outputs: &[opt("*", "any", "the params, unchanged")],
    dynamic_outputs: true,
};

pub static HTTP: NodeSpec = NodeSpec {
    name: "http",
    description: "Make an HTTP request. The response body is parsed as JSON when it is JSON, else kept as text.",
    params: &[
        req("url", "string", "request URL"),
        opt("method", "string", "GET (default; POST when a body is given), POST, PUT, PATCH, DELETE, HEAD"),
        opt("headers", "object", "request headers"),
        opt("query", "object", "query-string parameters"),
        opt("body", "string", "raw request body"),
        opt("json", "any", "JSON request body (sets content-type)"),
        opt("timeout", "number", "seconds before giving up (default 30)"),
        opt("ignore_errors", "boolean", "succeed on 4xx/5xx statuses (default false)"),
    ],
    outputs: &[
        req("response", "any", "the body: parsed JSON or text"),
        req("status_code", "integer", "HTTP status"),
        req("headers", "object", "response headers (lower-case names)"),
    ],
    dynamic_outputs: false,
};

pub static LLM: NodeSpec = NodeSpec {
    name: "llm",
    description: "Call an LLM. The model is `provider/model` or a well-known name (gpt-*, o1/o3/o4*, claude-*, gemini-*); `echo` answers offline with the prompt. Default model: $PFLOW_DEFAULT_MODEL, else `echo`.",
    params: &[
        req("prompt", "string", "the user message"),
        opt("system", "string", "system instructions"),
        opt("model", "string", "e.g. gpt-4o, claude-sonnet-4-5, gemini-2.5-flash, ollama/llama3.2, echo"),
        opt("temperature", "number", "sampling temperature"),
        opt("max_tokens", "integer", "output token limit"),
        opt("stream", "boolean", "stream the response (default false); usage comes from the stream"),
        opt("api", "string", "`chat` (default) or `responses` (OpenAI Responses API)"),
        opt("images", "array", "image file paths or URLs"),
        opt("retries", "integer", "provider retries on 429, 5xx and timeouts (default 2)"),
    ],
    outputs: &[
        req("response", "any", "the text; parsed JSON when the text is JSON"),
        req("llm_usage", "object", "{model, provider, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, total_tokens, estimated, cost_usd}"),
    ],
    dynamic_outputs: false,
};

pub static SHELL: NodeSpec = NodeSpec {
    name: "shell",
    description: "Run a shell command (`sh -c`). A non-zero exit fails the node unless `ignore_errors` is true; the outputs are then still readable through the error edge.",
    params: &[
        req("command", "string", "the command line"),
        opt("stdin", "any", "text fed to the command's stdin (objects as JSON)"),
        opt("cwd", "string", "working directory"),
        opt("env", "object", "extra environment variables"),
        opt("timeout", "number", "seconds before the command is killed (default 600)"),
        opt("ignore_errors", "boolean", "succeed even on a non-zero exit (default false)"),
    ],
    outputs: &[
        req("stdout", "string", "standard output"),
        req("stderr", "string", "standard error"),
        req("exit_code", "integer", "exit status (-1 when killed by a signal)"),
    ],
    dynamic_outputs: false,
};

pub static READ_FILE: NodeSpec = NodeSpec {
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

/// `copy-file` and `move-file` take the same params.
const COPY_MOVE_PARAMS: &[Field] = &[
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

pub static WRITE_FILE: NodeSpec = NodeSpec {
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

pub static COPY_FILE: NodeSpec = NodeSpec {
    name: "copy-file",
    description: "Copy a file.",
    params: COPY_MOVE_PARAMS,
    outputs: &[
        req("copied", "integer", "bytes copied"),
        req("dest_path", "string", "the destination"),
    ],
    dynamic_outputs: false,
};

pub static MOVE_FILE: NodeSpec = NodeSpec {
    name: "move-file",
    description: "Move (rename) a file; falls back to copy + delete across file systems.",
    params: COPY_MOVE_PARAMS,
    outputs: &[
        req("moved", "boolean", "true when moved"),
        req("dest_path", "string", "the destination"),
    ],
    dynamic_outputs: false,
};

pub static DELETE_FILE: NodeSpec = NodeSpec {
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

pub static TRANSFORM: NodeSpec = NodeSpec {
    name: "transform",
    description: "Reshape JSON with a jq filter (run by jaq): `input` goes in, the filter's value comes out as `result`, typed JSON (numbers stay numbers). No value gives null; several values are an error (collect them with `[ … ]`).",
    params: &[
        req("input", "any", "the value to reshape, usually one template, e.g. `${read.content}`"),
        req("filter", "string", "a jq filter, e.g. `split(\"\\n\") | map(select(length > 0))`, `fromjson`, `map(.name)`"),
        opt("timeout", "number", "seconds before the filter is stopped (default 30)"),
    ],
    outputs: &[req("result", "any", "the filter's output, as JSON")],
    dynamic_outputs: false,
};

pub static WORKFLOW: NodeSpec = NodeSpec {
    name: "workflow",
    description: "Run another workflow as one node, in its own store. Outputs are the child's outputs renamed by output_mapping (or all child outputs when no mapping is given).",
    params: &[
        opt("workflow_ref", "string", "path to the child workflow file, relative to this workflow's file"),
        opt("workflow_ir", "object", "the child workflow inline (instead of workflow_ref)"),
        opt("param_mapping", "object", "child input name -> value or template in the parent"),
        opt("output_mapping", "object", "child output name -> key in this node's namespace"),
    ],
    outputs: &[],
    dynamic_outputs: true,
};
