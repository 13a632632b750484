//! The planner against a local server that scripts an OpenAI-compatible
//! model per planning step: path A, path B, a generation that fails
//! validation twice, malformed answers, a timeout and missing inputs. Span
//! tree, planner metrics and exact cost sums are checked.

use super::common::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// What the scripted model answers per step; `generate` answers in turn.
#[derive(Clone, Default)]
pub(super) struct Script {
    pub(super) discovery: Option<Value>,
    pub(super) select: Option<String>,
    pub(super) extract: Value,
    pub(super) generate: Vec<Value>,
    pub(super) map: Value,
    pub(super) delay_ms: u64,
}

fn good_ir() -> Value {
    json!({"ir_version": "0.1.0", "metadata": {"name": "summarize-file", "description": "Summarize a file into another"},
        "inputs": {"input_file": {"type": "string", "description": "file to read"}, "output_file": {"type": "string", "description": "where the summary goes"}},
        "nodes": [
            {"id": "read", "type": "read-file", "params": {"file_path": "${input_file}"}},
            {"id": "summarize", "type": "llm", "params": {"model": "echo", "prompt": "Summary: ${read.content}"}},
            {"id": "write", "type": "write-file", "params": {"file_path": "${output_file}", "content": "${summarize.response}"}}],
        "edges": [{"from": "read", "to": "summarize"}, {"from": "summarize", "to": "write"}],
        "outputs": {"written": {"source": "${write.file_path}"}}})
}

pub(super) struct Mocked {
    pub(super) server: MockServer,
    calls: Arc<Mutex<Vec<(String, String)>>>,
}

/// Each answer reports usage growing with the call number, so sums are checked exactly.
pub(super) async fn scripted(script: Script) -> Mocked {
    let server = MockServer::start().await;
    let calls: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let gen_i = Arc::new(AtomicUsize::new(0));
    let log = calls.clone();
    Mock::given(wiremock::matchers::method("POST"))
        .respond_with(move |req: &Request| {
            let b: Value = serde_json::from_slice(&req.body).unwrap();
            assert_eq!(b["response_format"]["type"], "json_schema", "planner asks for schema-shaped JSON");
            assert_eq!(b["response_format"]["json_schema"]["schema"]["type"], "object");
            let system = b["messages"][0]["content"].as_str().unwrap_or("");
            let user = b["messages"][1]["content"].as_str().unwrap_or("").to_string();
            let step = system.lines().next().unwrap_or("").trim_start_matches("STEP: ").to_string();
            let n = {
                let mut l = log.lock().unwrap();
                l.push((step.clone(), user));
                l.len() as u64
            };
            let content = match step.as_str() {
                "discovery" => script.discovery.clone().unwrap_or(json!({"found": false, "workflow_name": null})).to_string(),
                "select_nodes" => script.select.clone().unwrap_or_else(|| json!({"node_types": ["read-file", "llm", "write-file"]}).to_string()),
                "extract_params" => script.extract.to_string(),
                "generate" => {
                    let i = gen_i.fetch_add(1, Ordering::SeqCst);
                    script.generate.get(i).or(script.generate.last()).cloned().unwrap_or_else(good_ir).to_string()
                }
                "map_inputs" => script.map.to_string(),
                other => panic!("unexpected step {other}"),
            };
            let body = json!({"id": format!("c{n}"), "model": "gpt-4o-mini-2024-07-18", "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 100 * n, "completion_tokens": 10 * n, "total_tokens": 110 * n}});
            ResponseTemplate::new(200).set_delay(std::time::Duration::from_millis(script.delay_ms)).set_body_json(body)
        })
        .mount(&server)
        .await;
    Mocked { server, calls }
}

pub(super) fn planner_cmd(env: &Env, m: &Mocked) -> assert_cmd::Command {
    let mut c = env.pflow();
    c.env("OPENAI_BASE_URL", format!("{}/v1", m.server.uri()))
        .env("OPENAI_API_KEY", "sk-test-planner-key-000000")
        .args(["--planner-model", "gpt-4o-mini"]);
    c
}

/// Sum of what the n calls cost at the built-in gpt-4o-mini price.
fn cost_of_calls(n: u64) -> f64 {
    let p = pflow::pricing::PriceTable::builtin()
        .lookup("gpt-4o-mini-2024-07-18", None)
        .unwrap()
        .price;
    (1..=n)
        .map(|i| {
            pflow::pricing::cost(
                &pflow::pricing::TokenCounts {
                    input: 100 * i,
                    output: 10 * i,
                    ..Default::default()
                },
                &p,
            )
            .total_usd
        })
        .sum()
}

/// Path B on "summarize report.txt into summary.md" with `flag`; the run succeeds.
async fn summarize_report(flag: &str) -> (Env, Mocked, Value) {
    let m = scripted(Script {
        extract: json!({"parameters": {"input_file": "report.txt", "output_file": "summary.md"}}),
        ..Default::default()
    })
    .await;
    let env = Env::new();
    env.write("report.txt", "Quarterly numbers went up.");
    let (v, code, stderr) = run_json(planner_cmd(&env, &m).arg("--yes").args([
        flag,
        "--output-format",
        "json",
        "summarize report.txt into summary.md",
    ]));
    assert_eq!(code, 0, "{v}\n{stderr}");
    (env, m, v)
}

#[tokio::test(flavor = "multi_thread")]
async fn path_b_plans_generates_and_runs_in_one_trace() {
    let (env, m, v) = summarize_report("--trace").await;
    assert_eq!(
        std::fs::read_to_string(env.dir.path().join("summary.md")).unwrap(),
        "Summary: Quarterly numbers went up."
    );
    let steps: Vec<String> = m
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.0.clone())
        .collect();
    assert_eq!(
        steps,
        ["select_nodes", "extract_params", "generate"],
        "no saved workflows: no discovery call; inputs found already: no mapping call"
    );
    let p = &v["metrics"]["planner"];
    assert_eq!(p["path_taken"], json!("B"));
    assert_eq!(p["attempts"], json!(1));
    assert_eq!(p["llm_calls"], json!(3));
    assert_eq!(p["tokens"]["input"], json!(600));
    let want = cost_of_calls(3);
    assert!(
        (p["cost_usd"].as_f64().unwrap() - want).abs() < 1e-12,
        "{} vs {want}",
        p["cost_usd"]
    );
    for s in [
        "discovery",
        "select_nodes",
        "extract_params",
        "generate",
        "validate",
        "metadata",
        "map_inputs",
    ] {
        assert!(p["step_timings"].get(s).is_some(), "step {s} timed: {p}");
    }
    // Totals add planner and workflow.
    let w = &v["metrics"]["workflow"];
    assert_eq!(
        v["metrics"]["total"]["llm_calls"],
        json!(3 + w["llm_calls"].as_u64().unwrap())
    );
    assert_eq!(
        v["metrics"]["total"]["tokens_total"].as_u64().unwrap(),
        p["tokens"]["total"].as_u64().unwrap() + w["tokens"]["total"].as_u64().unwrap()
    );
    // The run history counts planner and workflow together, per model too.
    let (h, _, _) =
        run_json(
            env.pflow()
                .args(["stats", "--by", "model", "--output-format", "json"]),
        );
    assert_eq!(h["runs"], 1);
    assert_eq!(
        h["totals"]["tokens_total"],
        v["metrics"]["total"]["tokens_total"]
    );
    assert_eq!(h["totals"]["cost_usd"], v["metrics"]["total"]["cost_usd"]);
    assert_eq!(h["groups"][0]["key"], "gpt-4o-mini");
    assert_eq!(h["groups"][0]["llm_calls"], 3);
    // Span tree: root → planner (→ steps → LLM calls) and root → workflow.
    assert_registered(std::path::Path::new(v["trace_file"].as_str().unwrap()));
    let (spans, _) = read_trace(std::path::Path::new(v["trace_file"].as_str().unwrap()));
    let root = spans.iter().find(|s| s.parent.is_empty()).unwrap();
    let planner = by_name(&spans, "plan pflow");
    assert_eq!(planner.parent, root.span_id);
    assert_eq!(planner.s("pflow.planner.path"), "B");
    let wf = spans
        .iter()
        .find(|s| s.name.starts_with("invoke_workflow"))
        .unwrap();
    assert_eq!(wf.parent, root.span_id);
    let gen = by_name(&spans, "planner generate");
    assert_eq!(gen.parent, planner.span_id);
    let call = spans
        .iter()
        .find(|s| s.name == "chat gpt-4o-mini" && s.parent == gen.span_id)
        .expect("LLM span under the generate step");
    assert_eq!(call.s("pflow.section"), "planner");
}

/// `--trace-planner` (without `--trace`) keeps a successful planned run's
/// trace, with the planner and the workflow in one tree.
#[tokio::test(flavor = "multi_thread")]
async fn trace_planner_keeps_a_successful_planned_runs_trace() {
    let (env, m, v) = summarize_report("--trace-planner").await;
    let file = v["trace_file"]
        .as_str()
        .unwrap_or_else(|| panic!("no trace kept: {v}"));
    assert_eq!(env.trace_files(), [std::path::PathBuf::from(file)]);
    let (spans, _) = read_trace(std::path::Path::new(file));
    assert!(spans.iter().any(|s| s.name == "plan pflow"));
    assert!(spans
        .iter()
        .any(|s| s.name == "invoke_workflow summarize-file"));

    // A file run ignores the flag: a successful run keeps no trace.
    let wf = env.workflow(
        "wf.json",
        json!({"ir_version": "0.1.0", "nodes": [{"id": "a", "type": "echo", "params": {"m": "x"}}]}),
    );
    let (v, code, _) = run_json(
        planner_cmd(&env, &m)
            .args(["--trace-planner", "--output-format", "json"])
            .arg(&wf),
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["trace_file"], Value::Null);
}

#[tokio::test(flavor = "multi_thread")]
async fn path_a_reuses_a_saved_workflow() {
    let m = scripted(Script {
        discovery: Some(
            json!({"found": true, "workflow_name": "summarize-file", "reasoning": "same job"}),
        ),
        map: json!({"inputs": {"input_file": "notes.txt", "output_file": "out.md"}}),
        ..Default::default()
    })
    .await;
    let env = Env::new();
    let wf = env.workflow("s.json", good_ir());
    assert!(env
        .pflow()
        .args(["workflow", "save"])
        .arg(&wf)
        .args(["--name", "summarize-file"])
        .output()
        .unwrap()
        .status
        .success());
    env.write("notes.txt", "hello");
    let (v, code, _) = run_json(planner_cmd(&env, &m).arg("--yes").args([
        "--output-format",
        "json",
        "please summarize notes.txt to out.md",
    ]));
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        std::fs::read_to_string(env.dir.path().join("out.md")).unwrap(),
        "Summary: hello"
    );
    let steps: Vec<String> = m
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.0.clone())
        .collect();
    assert_eq!(steps, ["discovery", "map_inputs"]);
    assert_eq!(v["metrics"]["planner"]["path_taken"], json!("A"));
    assert_eq!(v["metrics"]["planner"]["attempts"], json!(0));
    let want = cost_of_calls(2);
    assert!((v["metrics"]["planner"]["cost_usd"].as_f64().unwrap() - want).abs() < 1e-12);
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_generations_are_fed_back_until_valid() {
    let mut bad_type = good_ir();
    bad_type["nodes"][1]["type"] = json!("summarizer");
    let mut bad_ref = good_ir();
    bad_ref["nodes"][2]["params"]["content"] = json!("${summary.response}");
    let m = scripted(Script {
        extract: json!({"parameters": {"input_file": "r.txt", "output_file": "o.md"}}),
        generate: vec![bad_type, bad_ref, good_ir()],
        ..Default::default()
    })
    .await;
    let env = Env::new();
    env.write("r.txt", "x");
    let (v, code, _) = run_json(planner_cmd(&env, &m).arg("--yes").args([
        "--trace",
        "--output-format",
        "json",
        "summarize r.txt into o.md",
    ]));
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["metrics"]["planner"]["attempts"], json!(3));
    let calls = m.calls.lock().unwrap().clone();
    let gens: Vec<&(String, String)> = calls.iter().filter(|c| c.0 == "generate").collect();
    assert_eq!(gens.len(), 3);
    assert!(
        gens[1].1.contains("rejected by the validator") && gens[1].1.contains("summarizer"),
        "errors fed back: {}",
        gens[1].1
    );
    assert!(gens[2].1.contains("summary"), "{}", gens[2].1);
    let (spans, _) = read_trace(std::path::Path::new(v["trace_file"].as_str().unwrap()));
    let attempts: Vec<&SpanView> = spans
        .iter()
        .filter(|s| s.name == "planner generate")
        .collect();
    assert_eq!(attempts.len(), 3);
    assert_eq!(
        attempts.iter().filter(|s| s.status_code == 2).count(),
        2,
        "two failed attempts visible"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn three_invalid_generations_fail_with_the_errors() {
    let mut bad = good_ir();
    bad["nodes"][1]["type"] = json!("summarizer");
    let m = scripted(Script {
        extract: json!({"parameters": {}}),
        generate: vec![bad],
        ..Default::default()
    })
    .await;
    let env = Env::new();
    let (v, code, _) =
        run_json(planner_cmd(&env, &m).args(["--output-format", "json", "summarize a file"]));
    assert_eq!(code, 1);
    assert_eq!(v["error"]["type"], json!("planner_invalid_workflow"));
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("after 3 attempts")
            && v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("summarizer")
    );
    assert!(v["trace_file"].is_string(), "a failed plan keeps its trace");
    assert_eq!(v["metrics"]["planner"]["llm_calls"], json!(5));
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_answers_are_failed_attempts_with_a_reason() {
    let m = scripted(Script {
        select: Some("Sure! I would use read-file and llm.".into()),
        ..Default::default()
    })
    .await;
    let env = Env::new();
    let (v, code, _) =
        run_json(planner_cmd(&env, &m).args(["--output-format", "json", "summarize a file"]));
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["error"]["type"], json!("planner_malformed_output"));
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("select_nodes") && msg.contains("not JSON") && msg.contains("3 attempts"),
        "{msg}"
    );
    assert_eq!(m.calls.lock().unwrap().len(), 3);
    assert!(v["trace_file"].is_string());
    // The malformed answers' events carry registered names, on the step's span.
    let file = std::path::Path::new(v["trace_file"].as_str().unwrap());
    assert_registered(file);
    let (spans, _) = read_trace(file);
    let step = by_name(&spans, "planner select_nodes");
    let malformed: Vec<_> = step
        .events
        .iter()
        .filter(|(n, _)| n == "pflow.planner.malformed")
        .collect();
    assert_eq!(malformed.len(), 3, "{:?}", step.events);
    assert_eq!(malformed[2].1["pflow.planner.attempt"], json!(3));
    // Recorded once: the step's exception, not again on the planner or root.
    let exceptions = spans
        .iter()
        .filter(|s| s.events.iter().any(|(n, _)| n == "exception"))
        .count();
    assert_eq!(exceptions, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn planner_timeout_is_a_clear_failure() {
    let m = scripted(Script {
        delay_ms: 3000,
        ..Default::default()
    })
    .await;
    let env = Env::new();
    let (v, code, _) = run_json(planner_cmd(&env, &m).args([
        "--planner-timeout",
        "0.5",
        "--output-format",
        "json",
        "summarize a file",
    ]));
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["error"]["type"], json!("planner_timeout"));
    assert!(v["trace_file"].is_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_inputs_are_reported() {
    let m = scripted(Script {
        extract: json!({"parameters": {}}),
        map: json!({"inputs": {}}),
        ..Default::default()
    })
    .await;
    let env = Env::new();
    let (v, code, _) =
        run_json(planner_cmd(&env, &m).args(["--output-format", "json", "summarize a file"]));
    assert_eq!(code, 2, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("missing required input `input_file`"), "{msg}");
    // Given on the command line, they fill the gap.
    env.write("a.txt", "A");
    let (v, code, _) = run_json(planner_cmd(&env, &m).arg("--yes").args([
        "--output-format",
        "json",
        "summarize a file",
        "input_file=a.txt",
        "output_file=b.md",
    ]));
    assert_eq!(code, 0, "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_command_writes_a_valid_workflow_without_running_it() {
    let m = scripted(Script {
        extract: json!({"parameters": {"input_file": "report.txt", "output_file": "summary.md"}}),
        ..Default::default()
    })
    .await;
    let env = Env::new();
    let out = env.dir.path().join("planned.json");
    let (v, code, _) = run_json(
        planner_cmd(&env, &m)
            .args(["plan", "summarize report.txt into summary.md", "-o"])
            .arg(&out)
            .args(["--output-format", "json"]),
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        v["result"]["inputs"],
        json!({"input_file": "report.txt", "output_file": "summary.md"})
    );
    assert!(v["metrics"]["planner"]["llm_calls"].as_u64().unwrap() >= 3);
    assert_eq!(
        v["metrics"]["workflow"]["nodes_executed"],
        json!(0),
        "nothing ran"
    );
    assert!(!env.dir.path().join("summary.md").exists());
    let check = env
        .pflow()
        .arg("validate")
        .arg(&out)
        .arg("--no-inputs")
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn planning_without_a_model_says_how_to_get_one() {
    let env = Env::new();
    let out = env
        .pflow()
        .args(["summarize report.txt into summary.md"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--planner-model"));
}

/// A token typed in a planned run's request (kept as `pflow.planner.request`,
/// never a span name) reaches neither the trace file nor the export (without
/// `--capture-content`) nor the output.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_in_the_request_is_redacted_from_span_names() {
    let token = format!("ghp_{}", "Zq7".repeat(12));
    let m = scripted(Script {
        extract: json!({"parameters": {"input_file": "report.txt", "output_file": "summary.md"}}),
        ..Default::default()
    })
    .await;
    let receiver = super::otlp::http_receiver(false).await;
    let env = Env::new();
    env.write("report.txt", "Quarterly numbers went up.");
    let (v, code, stderr) = run_json(
        planner_cmd(&env, &m)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.uri())
            .args(["--yes", "--trace", "--output-format", "json"])
            .arg(format!(
                "summarize report.txt into summary.md, deploy with token {token}"
            )),
    );
    assert_eq!(code, 0, "{v}\n{stderr}");
    let file = std::fs::read_to_string(v["trace_file"].as_str().unwrap()).unwrap();
    let (spans, _) = read_trace(std::path::Path::new(v["trace_file"].as_str().unwrap()));
    assert!(
        spans.iter().all(|s| !s.name.contains("deploy with token")),
        "no span is named after the request"
    );
    assert!(
        file.contains("deploy with token"),
        "the request is kept in the local trace"
    );
    let exported =
        serde_json::to_string(&super::otlp::received_http(&receiver, false).await).unwrap();
    assert!(exported.contains("plan pflow"), "nothing exported");
    for (what, text) in [
        ("trace file", file),
        ("export", exported),
        ("output", v.to_string()),
        ("stderr", stderr),
    ] {
        assert!(!text.contains(&token), "the token is in the {what}");
    }
}

fn shell_ir() -> Value {
    json!({"ir_version": "0.1.0", "metadata": {"name": "list-files", "description": "List the files here"},
        "nodes": [
            {"id": "ls", "type": "shell", "params": {"command": "ls > listed.txt; echo listed"}},
            {"id": "say", "type": "llm", "params": {"model": "echo", "prompt": "Files: ${ls.stdout}"}}],
        "edges": [{"from": "ls", "to": "say"}]})
}

/// A plan with a shell node and no terminal: printed, not run (exit 2), in the
/// JSON output and the trace; `--yes` runs it.
#[tokio::test(flavor = "multi_thread")]
async fn a_plan_with_side_effects_needs_approval() {
    let m = scripted(Script {
        select: Some(json!({"node_types": ["shell", "llm"]}).to_string()),
        extract: json!({"parameters": {}}),
        generate: vec![shell_ir()],
        ..Default::default()
    })
    .await;
    let env = Env::new();
    let out = planner_cmd(&env, &m)
        .args(["--output-format", "json", "list the files here"])
        .env("PFLOW_PROGRESS", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!env.dir.path().join("listed.txt").exists(), "nothing ran");
    assert_eq!(v["error"]["type"], json!("plan_not_approved"));
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("--yes") && msg.contains("`ls` (shell) runs `ls > listed.txt"),
        "{msg}"
    );
    assert_eq!(v["plan"]["nodes"][0]["type"], json!("shell"));
    assert_eq!(v["metrics"]["workflow"]["nodes_executed"], json!(0));
    for line in [
        "plan: list-files — List the files here",
        "1. ls   shell  command=ls > listed.txt; echo listed",
        "2. say  llm    model=echo  prompt=Files: ${ls.stdout}",
        "edges: ls → say",
        "⚠ `ls` (shell) runs `ls > listed.txt; echo listed`",
    ] {
        assert!(stderr.contains(line), "{line:?} not in:\n{stderr}");
    }
    // The refused plan is in the saved trace.
    let file = v["trace_file"]
        .as_str()
        .expect("a refused run keeps its trace");
    let (spans, _) = read_trace(std::path::Path::new(file));
    let planner = by_name(&spans, "plan pflow");
    let ir: Value = serde_json::from_str(planner.s("pflow.planner.ir")).unwrap();
    assert_eq!(ir["nodes"][0]["id"], json!("ls"));

    let (v, code, stderr) = run_json(planner_cmd(&env, &m).args([
        "--yes",
        "--output-format",
        "json",
        "list the files here",
    ]));
    assert_eq!(code, 0, "{v}\n{stderr}");
    assert!(env.dir.path().join("listed.txt").exists());
    assert_eq!(v["plan"]["nodes"][1]["id"], json!("say"));
    // No declared outputs: the last node's are the result, and the output says so.
    assert_eq!(v["result_node"], json!("say"));
    assert!(
        v["result"]["response"]
            .as_str()
            .unwrap()
            .starts_with("Files: "),
        "{v}"
    );
}

/// A plan that only reads and computes runs without a question.
#[tokio::test(flavor = "multi_thread")]
async fn a_plan_without_side_effects_just_runs() {
    let mut ir = good_ir();
    ir["nodes"].as_array_mut().unwrap().pop();
    ir["edges"].as_array_mut().unwrap().pop();
    ir["inputs"].as_object_mut().unwrap().remove("output_file");
    ir["outputs"] = json!({"summary": {"source": "${summarize.response}"}});
    let m = scripted(Script {
        extract: json!({"parameters": {"input_file": "r.txt"}}),
        generate: vec![ir],
        ..Default::default()
    })
    .await;
    let env = Env::new();
    env.write("r.txt", "hello");
    let (v, code, stderr) =
        run_json(planner_cmd(&env, &m).args(["--output-format", "json", "summarize r.txt"]));
    assert_eq!(code, 0, "{v}\n{stderr}");
    assert_eq!(v["result"]["summary"], json!("Summary: hello"));
    assert!(stderr.contains("plan: summarize-file"), "{stderr}");
}

/// On a terminal the question is asked: "n" runs nothing, "y" runs the plan.
#[tokio::test(flavor = "multi_thread")]
async fn on_a_terminal_the_plan_is_confirmed_or_declined() {
    let has_script = std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !tool_present(has_script, "util-linux `script`") {
        return;
    }
    let m = scripted(Script {
        select: Some(json!({"node_types": ["shell", "llm"]}).to_string()),
        extract: json!({"parameters": {}}),
        generate: vec![shell_ir()],
        ..Default::default()
    })
    .await;
    let env = Env::new();
    let bin = assert_cmd::cargo::cargo_bin("pflow");
    let ask = |answer: &str| {
        use std::io::Write;
        let mut c = std::process::Command::new("script");
        c.arg("-qfec")
            .arg(format!(
                "'{}' --planner-model gpt-4o-mini 'list the files here'",
                bin.display()
            ))
            .arg("/dev/null")
            .current_dir(env.dir.path())
            .env("PFLOW_HOME", env.home())
            .env("PFLOW_PROGRESS", "off")
            .env("OPENAI_BASE_URL", format!("{}/v1", m.server.uri()))
            .env("OPENAI_API_KEY", "sk-test-planner-key-000000")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        let mut child = c.spawn().expect("script runs");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(answer.as_bytes()).unwrap();
        // stdin stays open until pflow is done: an early EOF could end `script` first.
        let out = child.wait_with_output().unwrap();
        drop(stdin);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, tty) = ask("n\n");
    assert!(
        tty.contains("Run this plan? It has 1 side effect"),
        "{tty:?}"
    );
    assert_eq!(code, Some(2), "{tty:?}");
    assert!(tty.contains("not confirmed"), "{tty:?}");
    assert!(!env.dir.path().join("listed.txt").exists());
    let (code, tty) = ask("y\n");
    assert_eq!(code, Some(0), "{tty:?}");
    assert!(env.dir.path().join("listed.txt").exists());
}
