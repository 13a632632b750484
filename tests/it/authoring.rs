//! Workflows that do what their author meant: typos, other tools' template
//! syntax, missing or unknown inputs, data flow, batch sources and models are
//! rejected before anything runs (exit 2, naming the file, the JSON path and
//! the fix); `transform` and `[*]` reshape data with JSON types kept.

use super::common::*;
use serde_json::{json, Value};

/// `pflow ARGS…` expected to fail with exit 2; returns stderr.
fn invalid(env: &Env, args: &[&str]) -> String {
    let out = env.pflow().args(args).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{args:?}\n{stderr}");
    stderr
}

fn wf(nodes: Value, edges: Value) -> Value {
    json!({"ir_version": "0.1.0", "nodes": nodes, "edges": edges})
}

fn assert_all(text: &str, parts: &[&str]) {
    for p in parts {
        assert!(text.contains(p), "missing {p:?} in:\n{text}");
    }
}

#[test]
fn misspelled_params_are_errors_with_did_you_mean() {
    let env = Env::new();
    let marker = env.dir.path().join("ran");
    env.workflow(
        "typo.json",
        wf(
            json!([
                {"id": "mark", "type": "shell", "params": {"command": format!("touch {}", marker.display())}},
                {"id": "sh", "type": "shell", "params": {"command": "true", "timout": 5, "max_retry": 2}}
            ]),
            json!([{"from": "mark", "to": "sh"}]),
        ),
    );
    for cmd in ["validate", "run"] {
        let err = invalid(&env, &[cmd, "typo.json"]);
        assert_all(
            &err,
            &[
                "typo.json",
                "nodes[1].params.timout: node `sh` (shell) has no param `timout`",
                "did you mean `timeout`?",
                "nodes[1].params.max_retry",
                "did you mean `max_retries`?",
            ],
        );
    }
    assert!(!marker.exists(), "a node ran although validation failed");
    // echo stays free-form.
    env.workflow(
        "echo.json",
        wf(
            json!([{"id": "e", "type": "echo", "params": {"whatever": 1}}]),
            json!([]),
        ),
    );
    pflow_ok(env.pflow().args(["validate", "echo.json"]));
}

#[test]
fn param_types_are_checked() {
    let env = Env::new();
    env.workflow(
        "types.json",
        wf(
            json!([{"id": "sh", "type": "shell", "params": {"command": "true", "ignore_errors": 1, "timeout": "soon"}}]),
            json!([]),
        ),
    );
    let err = invalid(&env, &["validate", "types.json"]);
    assert_all(
        &err,
        &[
            "nodes[0].params.ignore_errors: param `ignore_errors` of node `sh` must be a boolean, got a number",
            "write `true` or `false`",
            "nodes[0].params.timeout: param `timeout` of node `sh` must be a number, got a string",
        ],
    );
}

#[test]
fn unknown_command_line_inputs_are_errors() {
    let env = Env::new();
    env.workflow(
        "in.json",
        json!({"ir_version": "0.1.0", "inputs": {"n": {"type": "integer", "default": 1}},
               "nodes": [{"id": "e", "type": "echo", "params": {"v": "${n} ${free}"}}]}),
    );
    for cmd in ["validate", "run"] {
        let err = invalid(&env, &[cmd, "in.json", "nn=3", "free=x"]);
        assert_all(
            &err,
            &[
                "in.json",
                "(command line): unknown input `nn`",
                "did you mean `n`?",
            ],
        );
        assert!(!err.contains("`free`"), "{err}");
    }
    // A free `${NAME}` is a parameter.
    let out = pflow_ok(env.pflow().args(["run", "in.json", "free=x", "n=2"]));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2 x");
}

#[test]
fn other_template_syntaxes_get_a_hint() {
    let env = Env::new();
    env.workflow(
        "mustache.json",
        wf(
            json!([
                {"id": "read", "type": "read-file", "params": {"file_path": "in.txt"}},
                {"id": "out", "type": "write-file", "params": {"file_path": "out.txt", "content": "{{read.content}} and $(read.file_path)"}}
            ]),
            json!([{"from": "read", "to": "out"}]),
        ),
    );
    let err = invalid(&env, &["validate", "mustache.json"]);
    assert_all(
        &err,
        &[
            "nodes[1].params.content: param `content` of node `out`: `{{read.content}}` is not a pflow template",
            "hint: write `${read.content}`",
            "`$(read.file_path)`",
            "write `${read.file_path}`",
        ],
    );
}

#[test]
fn validate_needs_required_inputs_unless_no_inputs() {
    let env = Env::new();
    env.workflow(
        "req.json",
        json!({"ir_version": "0.1.0",
               "inputs": {"path": {"type": "string", "description": "file to read"}},
               "nodes": [{"id": "r", "type": "read-file", "params": {"file_path": "${path}"}}]}),
    );
    let err = invalid(&env, &["validate", "req.json"]);
    assert_all(
        &err,
        &[
            "req.json",
            "inputs.path: needs input `path` (string): file to read",
            "--no-inputs",
        ],
    );
    pflow_ok(env.pflow().args(["validate", "req.json", "--no-inputs"]));
    pflow_ok(env.pflow().args(["validate", "req.json", "path=x.txt"]));
    let (v, code, _) = run_json(
        env.pflow()
            .args(["run", "req.json", "--output-format", "json"]),
    );
    // A run reports it as an input error, before anything runs.
    assert_eq!(code, 2);
    assert_eq!(v["error"]["type"], json!("input_error"));
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing required input `path` (file to read)"),
        "{v}"
    );
}

#[test]
fn data_flow_is_checked_before_anything_is_spent() {
    let env = Env::new();
    let marker = env.dir.path().join("ran");
    // `fix` runs only on the error path; `report` reads it on both paths.
    env.workflow(
        "flow.json",
        wf(
            json!([
                {"id": "ask", "type": "llm", "params": {"prompt": "hi", "model": "echo"}},
                {"id": "mark", "type": "shell", "params": {"command": format!("touch {}", marker.display())}},
                {"id": "fix", "type": "echo", "params": {"v": "fixed"}},
                {"id": "report", "type": "echo", "params": {"v": "${fix.v}", "a": "${ask.response}"}}
            ]),
            json!([
                {"from": "ask", "to": "mark"},
                {"from": "mark", "to": "fix", "action": "error"},
                {"from": "mark", "to": "report"},
                {"from": "fix", "to": "report"}
            ]),
        ),
    );
    let (v, code, _) = run_json(
        env.pflow()
            .args(["run", "flow.json", "--output-format", "json"]),
    );
    assert_eq!(code, 2, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert_all(
        msg,
        &[
            "flow.json",
            "nodes[3].params.v",
            "node `fix` does not run before node `report` on every path to it (the path ask → mark → report never runs `fix`)",
            "add an edge",
        ],
    );
    assert!(!marker.exists());
    assert_eq!(v["metrics"]["workflow"]["llm_calls"], json!(0), "{v}");
}

#[test]
fn batch_over_a_string_is_rejected() {
    let env = Env::new();
    env.workflow(
        "batch.json",
        wf(
            json!([
                {"id": "ls", "type": "shell", "params": {"command": "ls"}},
                {"id": "each", "type": "echo", "batch": {"items": "${ls.stdout}"}, "params": {"f": "${item}"}}
            ]),
            json!([{"from": "ls", "to": "each"}]),
        ),
    );
    let err = invalid(&env, &["validate", "batch.json"]);
    assert_all(
        &err,
        &[
            "nodes[1].batch.items: batch items of node `each` must be an array, but `${ls.stdout}` is a string (`shell` writes `stdout` as a string)",
            "`transform`",
        ],
    );
}

#[test]
fn unresolvable_models_are_rejected() {
    let env = Env::new();
    env.workflow(
        "model.json",
        json!({"ir_version": "0.1.0", "inputs": {"m": {"type": "string", "default": "echo"}},
               "nodes": [{"id": "a", "type": "llm", "params": {"prompt": "hi", "model": "my-local-model"}},
                         {"id": "b", "type": "llm", "params": {"prompt": "hi", "model": "${m}"}}],
               "edges": [{"from": "a", "to": "b"}]}),
    );
    let err = invalid(&env, &["validate", "model.json"]);
    assert_all(
        &err,
        &[
            "nodes[0].params.model",
            "cannot tell which provider serves `my-local-model`",
            "ollama/my-local-model",
        ],
    );
    assert!(!err.contains("nodes[1]"), "{err}");
    let err = invalid(&env, &["validate", "model.json", "m=mystery"]);
    assert_all(
        &err,
        &["nodes[1].params.model", "`m=mystery` on the command line"],
    );
}

#[test]
fn transform_and_projection_keep_json_types() {
    let env = Env::new();
    env.write("names.txt", "ada lovelace\n\ngrace hopper\nalan turing\n");
    env.workflow(
        "shape.json",
        json!({"ir_version": "0.1.0",
               "nodes": [
                 {"id": "read", "type": "read-file", "params": {"file_path": "${workflow.dir}/names.txt"}},
                 {"id": "people", "type": "transform", "params": {"input": "${read.content}",
                   "filter": "split(\"\\n\") | map(select(length > 0) | split(\" \") | {first: .[0], last: .[1]})"}},
                 {"id": "each", "type": "transform", "batch": {"items": "${people.result}", "as": "p", "parallel": true},
                  "params": {"input": "${p}", "filter": ".last | length"}}
               ],
               "edges": [{"from": "read", "to": "people"}, {"from": "people", "to": "each"}],
               "outputs": {"firsts": {"source": "${people.result[*].first}"}, "lengths": {"source": "${each.results[*].result}"}}}),
    );
    let sub = env.dir.path().join("elsewhere");
    std::fs::create_dir_all(&sub).unwrap();
    let (v, code, stderr) = run_json(env.pflow().current_dir(&sub).args([
        "run",
        "../shape.json",
        "--output-format",
        "json",
    ]));
    assert_eq!(code, 0, "{v}\n{stderr}");
    assert_eq!(v["result"]["firsts"], json!(["ada", "grace", "alan"]));
    assert_eq!(v["result"]["lengths"], json!([8, 6, 6]));
}

#[test]
fn transform_filters_are_checked_and_fail_clearly() {
    let env = Env::new();
    env.workflow(
        "bad.json",
        wf(
            json!([{"id": "t", "type": "transform", "params": {"input": [1], "filter": "map(.x"}}]),
            json!([]),
        ),
    );
    let err = invalid(&env, &["validate", "bad.json"]);
    assert_all(
        &err,
        &["nodes[0].params.filter", "node `t`: invalid jq filter"],
    );
    env.workflow(
        "many.json",
        wf(
            json!([{"id": "t", "type": "transform", "params": {"input": [1, 2], "filter": ".[]"}}]),
            json!([]),
        ),
    );
    let (v, code, _) = run_json(
        env.pflow()
            .args(["run", "many.json", "--output-format", "json"]),
    );
    assert_eq!(code, 1);
    assert_eq!(v["error"]["type"], json!("transform_error"));
    assert!(
        v["error"]["message"].as_str().unwrap().contains("`[ … ]`"),
        "{v}"
    );
}

#[test]
fn nodes_lists_transform() {
    let env = Env::new();
    let out = pflow_ok(env.pflow().args(["nodes"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("transform"), "{text}");
}

#[test]
fn saved_workflows_resolve_their_directory_and_are_readable() {
    let env = Env::new();
    env.write("proj/data/in.txt", "hello");
    let src = env.workflow(
        "proj/wf.json",
        json!({"ir_version": "0.1.0", "metadata": {"description": "Copy a note"},
               "inputs": {"src": {"type": "string", "default": "${workflow.dir}/data/in.txt", "description": "what to copy"},
                          "dest": {"type": "string", "description": "where to"}},
               "nodes": [{"id": "read", "type": "read-file", "params": {"file_path": "${src}"}},
                         {"id": "log", "type": "write-file", "params": {"file_path": "copy.log", "content": "${read.content}", "append": true}},
                         {"id": "out", "type": "write-file", "params": {"file_path": "${dest}", "content": "${read.content}"}}],
               "edges": [{"from": "read", "to": "log"}, {"from": "log", "to": "out"}],
               "outputs": {"written": {"source": "${out.file_path}"}}}),
    );
    let out = pflow_ok(
        env.pflow()
            .args(["workflow", "save"])
            .arg(&src)
            .args(["--name", "copy-note"]),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_all(
        &text,
        &[
            "${workflow.dir} is now",
            "stay relative",
            "nodes[1].params.file_path: copy.log",
        ],
    );
    // Runs from another directory: the saved default points at the source's data.
    let elsewhere = env.dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let out =
        pflow_ok(
            env.pflow()
                .current_dir(&elsewhere)
                .args(["run", "copy-note", "dest=o.txt"]),
        );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "o.txt");
    assert_eq!(
        std::fs::read_to_string(elsewhere.join("o.txt")).unwrap(),
        "hello"
    );

    let out = pflow_ok(env.pflow().args(["workflow", "list"]));
    let list = String::from_utf8_lossy(&out.stdout);
    assert_all(
        &list,
        &[
            "copy-note  Copy a note",
            "3 nodes · inputs: src, dest · outputs: written",
        ],
    );
    assert!(!list.contains("3n"), "{list}");
    let out = pflow_ok(env.pflow().args(["workflow", "show", "copy-note"]));
    let show = String::from_utf8_lossy(&out.stdout);
    assert_all(
        &show,
        &[
            "src",
            "default \"",
            "data/in.txt\" — what to copy",
            "dest             string   required — where to",
        ],
    );

    let out = pflow_ok(env.pflow().args(["workflow", "delete", "copy-note"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("✓ deleted `copy-note`"));
    let err = invalid(&env, &["workflow", "delete", "copy-note"]);
    assert!(err.contains("no saved workflow named `copy-note`"), "{err}");
}

#[test]
fn flags_for_other_commands_are_rejected() {
    let env = Env::new();
    for args in [
        vec!["nodes", "--trace"],
        vec!["stats", "--max-cost", "1"],
        vec!["--yes", "pricing", "show"],
        vec!["validate", "x.json", "--estimate"],
    ] {
        let err = invalid(&env, &args);
        assert!(err.contains("does nothing for `pflow"), "{args:?}: {err}");
    }
    let (v, code, _) = run_json(
        env.pflow()
            .args(["--output-format", "json", "nodes", "--trace"]),
    );
    assert_eq!(code, 2);
    assert_eq!(v["error"]["type"], json!("usage_error"));
    // Each argument has a description in --help.
    let out = pflow_ok(env.pflow().args(["workflow", "save", "--help"]));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("The workflow JSON file to save"), "{help}");
}
