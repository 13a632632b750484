//! Bad input: each error class exits 2 with a message naming the file and
//! where in it, in text and in JSON.

use super::common::*;
use serde_json::{json, Value};

fn fails_with(
    env: &Env,
    args: &[&str],
    wf: Option<&std::path::Path>,
    code: i32,
) -> (Value, String) {
    let mut c = env.pflow();
    c.args(["--output-format", "json"]).args(args);
    if let Some(w) = wf {
        c.arg(w);
    }
    let (v, got, stderr) = run_json(&mut c);
    assert_eq!(got, code, "{v}");
    assert_eq!(v["success"], json!(false));
    (v["error"].clone(), stderr)
}

#[test]
fn missing_file() {
    let env = Env::new();
    let (e, _) = fails_with(&env, &["run", "nope.json"], None, 2);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("cannot read `nope.json`"),
        "{e}"
    );
}

#[test]
fn syntax_error_names_line_and_column() {
    let env = Env::new();
    let p = env.write("bad.json", "{\n  \"ir_version\": \"0.1.0\",\n  \"nodes\": [\n    {\"id\": \"a\" \"type\": \"echo\"}\n  ]\n}\n");
    let (e, _) = fails_with(&env, &["run"], Some(&p), 2);
    assert_eq!(e["type"], json!("syntax_error"));
    assert_eq!(e["line"], json!(4));
    assert!(e["column"].as_u64().unwrap() > 10);
    assert!(e["message"].as_str().unwrap().contains("bad.json"));
    // Text mode says the same on stderr.
    let out = env.pflow().arg("run").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 4, column"), "{stderr}");
}

#[test]
fn shape_error_names_the_json_path() {
    let env = Env::new();
    let p = env.workflow("shape.json", json!({"ir_version": "0.1.0", "nodes": [{"id": "a", "type": "echo", "batch": {"items": [], "max_concurrent": "lots"}}]}));
    let (e, _) = fails_with(&env, &["run"], Some(&p), 2);
    assert_eq!(e["type"], json!("schema_error"));
    assert_eq!(e["path"], json!("nodes[0].batch.max_concurrent"));
}

#[test]
fn validation_errors_name_node_param_and_template() {
    let env = Env::new();
    let p = env.workflow(
        "v.json",
        json!({"ir_version": "0.1.0", "nodes": [
        {"id": "read", "type": "read-file", "params": {"file_path": "x"}},
        {"id": "use", "type": "echo", "params": {"text": "${raed.content}"}},
        {"id": "typo", "type": "shel", "params": {}}],
        "edges": [{"from": "read", "to": "use"}, {"from": "use", "to": "typo"}]}),
    );
    let (e, _) = fails_with(&env, &["run"], Some(&p), 2);
    assert_eq!(e["type"], json!("validation_error"));
    let diags = e["diagnostics"].as_array().unwrap();
    let text: Vec<String> = diags
        .iter()
        .map(|d| format!("{} {} {}", d["path"], d["message"], d["hint"]))
        .collect();
    let all = text.join("\n");
    assert!(
        all.contains("nodes[1].params.text")
            && all.contains("`${raed.content}`")
            && all.contains("node `use`")
            && all.contains("did you mean `read`"),
        "{all}"
    );
    assert!(
        all.contains("unknown node type `shel`") && all.contains("did you mean `shell`"),
        "{all}"
    );
    // Nothing ran: no node spans, but the failed run's trace is kept.
    assert_eq!(env.trace_files().len(), 1);
}

#[test]
fn missing_required_input_and_bad_parameters() {
    let env = Env::new();
    let p = env.workflow("in.json", json!({"ir_version": "0.1.0", "inputs": {"topic": {"type": "string", "description": "what to write about"}, "n": {"type": "integer", "required": false}},
        "nodes": [{"id": "e", "type": "echo", "params": {"t": "${topic}"}}]}));
    let (e, _) = fails_with(&env, &["run"], Some(&p), 2);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("missing required input `topic` (what to write about)"),
        "{e}"
    );
    let (e, _) = fails_with(
        &env,
        &["run", p.to_str().unwrap(), "topic=x", "n=abc"],
        None,
        2,
    );
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("input `n` must be of type integer"),
        "{e}"
    );
    let (e, _) = fails_with(&env, &["run", p.to_str().unwrap(), "topic"], None, 2);
    assert!(
        e["message"].as_str().unwrap().contains("not NAME=VALUE"),
        "{e}"
    );
}

#[test]
fn stdin_reference_without_piped_input() {
    let env = Env::new();
    let p = env.workflow("s.json", json!({"ir_version": "0.1.0", "nodes": [{"id": "e", "type": "echo", "params": {"t": "${stdin}"}}]}));
    // assert_cmd gives an empty, non-terminal stdin: nothing was piped in.
    let (e, _) = fails_with(&env, &["run"], Some(&p), 2);
    let msg = serde_json::to_string(&e).unwrap();
    assert!(msg.contains("nothing is piped on stdin"), "{msg}");
}

#[test]
fn validate_command() {
    let env = Env::new();
    let good = env.workflow(
        "good.json",
        json!({"ir_version": "0.1.0", "nodes": [{"id": "a", "type": "echo"}]}),
    );
    let out = env.pflow().arg("validate").arg(&good).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("is valid (1 nodes)"));
    let bad = env.workflow("bad.json", json!({"ir_version": "9.0", "nodes": [{"id": "a", "type": "echo", "params": {"x": "${nope}"}}]}));
    let out = env.pflow().arg("validate").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ir_version: unsupported ir_version `9.0`"),
        "{stderr}"
    );
    assert!(stderr.contains("nodes[0].params.x"), "{stderr}");
    // A parameter given to validate makes the reference known.
    let out = env
        .pflow()
        .args(["validate", "--output-format", "json"])
        .arg(&bad)
        .arg("nope=1")
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["diagnostics"].as_array().unwrap().len(), 1, "{v}");
    assert!(!env.home().exists(), "validate writes nothing");
}

#[test]
fn unknown_subcommand_flag_is_a_usage_error() {
    let env = Env::new();
    let out = env
        .pflow()
        .args(["run", "--no-such-flag", "x.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Every command answers a failure under `--output-format json` with the
/// same envelope: `{"success": false, "error": {"type", "message"}}` on
/// stdout and the documented exit code.
#[test]
fn every_command_fails_with_one_json_envelope() {
    let env = Env::new();
    let bad = env.write("bad.json", "{\"nodes\": [\n");
    let invalid = env.workflow(
        "invalid.json",
        json!({"ir_version": "0.1.0", "nodes": [{"id": "a", "type": "nope"}]}),
    );
    let wf = env.workflow(
        "ok.json",
        json!({"ir_version": "0.1.0", "nodes": [{"id": "a", "type": "echo", "params": {"message": "hi"}}]}),
    );
    let bad_prices = env.write("prices.json", "{\"m\": {\"input\": \"x\"}}");
    let [bad, invalid, wf, bad_prices] =
        [&bad, &invalid, &wf, &bad_prices].map(|p| p.to_str().unwrap().to_string());
    // Trace commands first: the failed runs below save traces.
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["trace", "show"], 2, "no_traces"),
        (vec!["trace", "summary", "ffff"], 2, "trace_not_found"),
        (vec!["trace", "report"], 2, "no_traces"),
        (vec!["trace", "reprice"], 2, "no_traces"),
        (vec!["trace", "diff", "a", "b"], 2, "trace_not_found"),
        (vec!["run", "nope.json"], 2, "validation_error"),
        (vec!["run", &bad], 2, "syntax_error"),
        (vec!["--max-cost", "abc", "run", &wf], 2, "usage_error"),
        (vec!["run", &wf, "novalue"], 2, "usage_error"),
        (vec!["run", &wf, "--no-such-flag"], 2, "usage_error"),
        (
            vec!["--estimate", "run", "a plain request"],
            2,
            "usage_error",
        ),
        (vec!["validate", &bad], 2, "syntax_error"),
        (vec!["validate", &invalid], 2, "validation_error"),
        (vec!["trace", "export", &wf], 2, "usage_error"),
        (vec!["stats", "--since", "soon"], 2, "usage_error"),
        (
            vec!["pricing", "show", "no-such-model-xyz"],
            1,
            "unknown_price",
        ),
        (
            vec!["pricing", "check", &bad_prices],
            2,
            "invalid_price_file",
        ),
        (vec!["workflow", "show", "nope"], 2, "workflow_not_found"),
        (
            vec!["workflow", "save", &wf, "--name", "Bad Name"],
            2,
            "invalid_name",
        ),
        (vec!["trace", "show", "--node", "zz"], 2, "node_not_found"),
    ];
    for (args, code, kind) in cases {
        let (v, got, stderr) = run_json(env.pflow().args(["--output-format", "json"]).args(&args));
        assert_eq!(got, code, "{args:?}: {v} {stderr}");
        assert_eq!(v["success"], json!(false), "{args:?}: {v}");
        assert_eq!(v["error"]["type"], json!(kind), "{args:?}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{args:?}: {v}"
        );
    }
}
