//! One vocabulary: every span, attribute and event name a run writes to its
//! trace is listed in `src/telemetry/attr.rs` (the registry), whichever
//! example, node type, LLM path or budget outcome produced it. The planner's
//! names are checked by `planner::path_b_…`, LLM retries by
//! `llm_node::retries_on_429_…`.

use super::common::*;
use serde_json::json;
use std::path::{Path, PathBuf};

fn trace_of(v: &serde_json::Value) -> PathBuf {
    PathBuf::from(
        v["trace_file"]
            .as_str()
            .unwrap_or_else(|| panic!("no trace file: {v}")),
    )
}

#[test]
fn every_example_writes_only_registered_names() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let scratch = tempfile::tempdir().unwrap();
    let python = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok();
    let mut examples: Vec<PathBuf> = std::fs::read_dir(repo.join("examples"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    examples.sort();
    assert!(examples.len() >= 5, "{examples:?}");
    let mut checked = 0;
    for wf in examples {
        let name = wf.file_name().unwrap().to_string_lossy().into_owned();
        let d = scratch.path().join(&name);
        let params: Vec<String> = match name.as_str() {
            "hello.json" => vec![format!("out_dir={}", d.display())],
            "error-and-retry.json" => vec![format!("state_file={}", d.join("count").display())],
            "shell-http.json" if !tool_present(python, "python3 (shell-http example)") => continue,
            "shell-http.json" => {
                let port = std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port();
                vec![
                    format!("port={port}"),
                    format!("pid_file={}", d.join("pid").display()),
                ]
            }
            _ => vec![],
        };
        std::fs::create_dir_all(&d).unwrap();
        let env = Env::new();
        let (v, code, stderr) = run_json(
            env.pflow()
                .current_dir(repo)
                .args(["run", "--trace", "--output-format", "json"])
                .arg(&wf)
                .args(&params),
        );
        assert_eq!(code, 0, "{name}: {v}\n{stderr}");
        checked += assert_registered(&trace_of(&v));
    }
    assert!(checked > 30, "only {checked} names seen");
}

/// An LLM call with every optional field, a budget, a failing node with an
/// error edge and an unresolvable output: the rarer attributes and events.
#[tokio::test(flavor = "multi_thread")]
async fn llm_budget_and_failure_paths_write_only_registered_names() {
    let server = openai_server().await;
    let env = Env::new();
    let wf = env.workflow(
        "wf.json",
        json!({"ir_version": "0.1.0",
            "nodes": [
                {"id": "ask", "type": "llm", "params": {"model": "gpt-4o-mini", "system": "Be brief.",
                    "prompt": "Weather?", "temperature": 0.2, "max_tokens": 50}},
                {"id": "boom", "type": "shell", "params": {"command": "exit 4"}},
                {"id": "handled", "type": "echo", "params": {"message": "${boom.error.type}"}},
                {"id": "skipped", "type": "echo", "params": {"message": "not reached"}}],
            "edges": [{"from": "ask", "to": "boom"}, {"from": "boom", "to": "handled", "action": "error"},
                {"from": "boom", "to": "skipped"}],
            "outputs": {"answer": {"source": "${ask.response}"}, "missing": {"source": "${skipped.message}"}}}),
    );
    let (v, code, stderr) = run_json(
        with_openai(&env, &server)
            .args(["--trace", "--output-format", "json", "--max-cost", "1"])
            .arg(&wf),
    );
    assert_eq!(code, 0, "{v}\n{stderr}");
    let path = trace_of(&v);
    let (spans, _) = read_trace(&path);
    let root = spans.iter().find(|s| s.parent.is_empty()).unwrap();
    assert!(root
        .attr(pflow::telemetry::attr::BUDGET_SPENT_USD)
        .is_some());
    assert!(spans.iter().any(|s| s.name == "chat gpt-4o-mini"));
    let unresolved = pflow::telemetry::attr::EVENT_OUTPUT_UNRESOLVED;
    assert!(
        spans
            .iter()
            .any(|s| s.events.iter().any(|(n, _)| n == unresolved)),
        "the unreachable output's event"
    );
    assert_registered(&path);

    // A budget that refuses the call: the stop's attributes.
    let (v, code, _) = run_json(
        with_openai(&env, &server)
            .args(["--output-format", "json", "--max-cost", "0.0000001"])
            .arg(&wf),
    );
    assert_eq!(code, 3, "{v}");
    assert_registered(&trace_of(&v));
}
