//! The pre-run cost estimate end to end: `--estimate` sends nothing to the
//! provider, its bounds hold against what a local OpenAI server replaying
//! `openai-chat.json` (gpt-4o, 14 + 37 tokens) bills, earlier runs give the
//! expected value, `--max-cost` refuses a workflow whose low end is over the
//! budget before it starts, and planned runs print the estimate first.

use super::common::*;
use serde_json::{json, Value};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// What one fixture call costs at the built-in gpt-4o price.
const CALL_USD: f64 = 0.000405;
/// The fixture's billed prompt: the estimate's count must not exceed it for the low end to hold.
const BILLED_PROMPT_TOKENS: u64 = 14;

/// `ask` (a prompt from an input), then `each`: a batch over the `cities` input.
fn workflow() -> Value {
    json!({"ir_version": "0.1.0", "metadata": {"name": "weather"},
        "inputs": {
            "city": {"type": "string", "required": true},
            "cities": {"type": "array", "required": false, "default": ["Oslo", "Rome"]}
        },
        "nodes": [
            {"id": "ask", "type": "llm", "params": {"prompt": "Weather in ${city}?", "model": "gpt-4o", "max_tokens": 100}},
            {"id": "each", "type": "llm", "batch": {"items": "${cities}"},
             "params": {"prompt": "Rain in ${item}?", "model": "gpt-4o", "max_tokens": 60}}
        ],
        "edges": [{"from": "ask", "to": "each"}],
        "outputs": {"answer": {"source": "${ask.response}"}}})
}

fn node<'a>(est: &'a Value, path: &str) -> &'a Value {
    est["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == path)
        .unwrap_or_else(|| panic!("no node {path} in {est}"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Actual cost of a node in a run's metrics, batch items summed.
fn actual(run: &Value, path: &str) -> f64 {
    run["metrics"]["workflow"]["node_usage"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k == path || k.starts_with(&format!("{path}[")))
        .map(|(_, u)| f(&u["cost_usd"]))
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn estimate_calls_nothing_and_its_bounds_hold_for_the_real_run() {
    let server = openai_server().await;
    let env = Env::new();
    let wf = env.workflow("wf.json", workflow());
    let (v, code, stderr) = run_json(
        with_openai(&env, &server)
            .args(["--output-format", "json", "run"])
            .arg(&wf)
            .args(["city=Paris", "--estimate"]),
    );
    assert_eq!(code, 0, "{v}\n{stderr}");
    assert_eq!(requests(&server).await, 0, "--estimate sends nothing");
    assert!(env.trace_files().is_empty(), "--estimate writes no trace");
    assert!(!env.home().join("history.db").exists(), "nor history");
    let est = &v["estimate"];
    let ask = node(est, "ask");
    assert_eq!(ask["model"], json!("gpt-4o"));
    assert_eq!(ask["prompt_complete"], json!(true));
    assert_eq!(ask["max_output_tokens"], json!(100));
    assert_eq!(ask["output_limit_source"], json!("max_tokens"));
    assert_eq!(ask["items"], json!(1));
    assert_eq!(ask["price_key"], json!("gpt-4o"));
    assert_eq!(ask["priced"], json!(true));
    assert_eq!(ask["expected_usd"], Value::Null);
    assert!(ask["prompt_tokens"].as_u64().unwrap() <= BILLED_PROMPT_TOKENS);
    let each = node(est, "each");
    assert_eq!(each["items"], json!(2));
    assert_eq!(each["max_output_tokens"], json!(120));
    assert!(each["prompt_tokens"].as_u64().unwrap() <= 2 * BILLED_PROMPT_TOKENS);
    assert_eq!(est["total"]["history_runs"], json!(0));
    assert_eq!(est["total"]["expected_usd"], Value::Null);
    assert_eq!(est["total"]["complete"], json!(true));
    assert_eq!(est["unpriced"], json!([]));

    let (run, code, stderr) = run_json(
        with_openai(&env, &server)
            .args(["--output-format", "json"])
            .arg(&wf)
            .arg("city=Paris"),
    );
    assert_eq!(code, 0, "{run}\n{stderr}");
    assert_eq!(requests(&server).await, 3);
    for (path, calls) in [("ask", 1.0), ("each", 2.0)] {
        let n = node(est, path);
        let got = actual(&run, path);
        assert!((got - calls * CALL_USD).abs() < 1e-12, "{path}: {got}");
        assert!(
            f(&n["low_usd"]) <= got && got <= f(&n["high_usd"]),
            "{path}: {} <= {got} <= {}",
            n["low_usd"],
            n["high_usd"]
        );
    }
    let total = f(&run["metrics"]["total"]["cost_usd"]);
    assert!(f(&est["total"]["low_usd"]) <= total && total <= f(&est["total"]["high_usd"]));
    // A normal run without --max-cost carries no estimate.
    assert!(run.get("estimate").is_none(), "{run}");
}

#[tokio::test(flavor = "multi_thread")]
async fn earlier_runs_give_the_expected_value() {
    let server = openai_server().await;
    let env = Env::new();
    let wf = env.workflow("wf.json", workflow());
    for _ in 0..3 {
        let (v, code, stderr) = run_json(
            with_openai(&env, &server)
                .args(["--output-format", "json"])
                .arg(&wf)
                .arg("city=Paris"),
        );
        assert_eq!(code, 0, "{v}\n{stderr}");
    }
    // Another workflow's runs do not count towards this one.
    let other = env.workflow(
        "other.json",
        json!({"ir_version": "0.1.0", "nodes": [{"id": "ask", "type": "llm", "params": {"prompt": "Hi", "model": "gpt-4o"}}]}),
    );
    let (_, code, _) = run_json(
        with_openai(&env, &server)
            .args(["--output-format", "json"])
            .arg(&other),
    );
    assert_eq!(code, 0);
    let before = requests(&server).await;
    let (v, code, stderr) = run_json(
        with_openai(&env, &server)
            .args(["--output-format", "json", "--estimate"])
            .arg(&wf)
            .arg("city=Paris"),
    );
    assert_eq!(code, 0, "{v}\n{stderr}");
    assert_eq!(requests(&server).await, before);
    let est = &v["estimate"];
    assert_eq!(est["total"]["history_runs"], json!(3));
    assert!(
        (f(&est["total"]["expected_usd"]) - 3.0 * CALL_USD).abs() < 1e-9,
        "{est}"
    );
    assert_eq!(est["total"]["expected_tokens"], json!(3 * 51));
    let ask = node(est, "ask");
    assert_eq!(ask["history_runs"], json!(3));
    assert!((f(&ask["expected_usd"]) - CALL_USD).abs() < 1e-9, "{ask}");
    assert!((f(&node(est, "each")["expected_usd"]) - 2.0 * CALL_USD).abs() < 1e-9);

    let out = with_openai(&env, &server)
        .arg(&wf)
        .args(["city=Paris", "--estimate"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("(expected $0.001215 from 3 earlier runs)"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unpriced_models_are_listed_and_text_has_a_table() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&server)
        .await;
    let env = Env::new();
    let wf = env.workflow(
        "wf.json",
        json!({"ir_version": "0.1.0", "nodes": [
            {"id": "a", "type": "llm", "params": {"prompt": "Hello there", "model": "gpt-4o-mini", "max_tokens": 20}},
            {"id": "b", "type": "llm", "params": {"prompt": "Improve: ${a.response}", "model": "openai/model-x"}},
            {"id": "c", "type": "llm", "params": {"prompt": "Rate: ${a.response}", "model": "claude-sonnet-4-5"}}
        ], "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}]}),
    );
    let (v, code, stderr) = run_json(
        with_openai(&env, &server)
            .args(["--output-format", "json", "--estimate"])
            .arg(&wf),
    );
    assert_eq!(code, 0, "{v}\n{stderr}");
    let est = &v["estimate"];
    assert_eq!(
        est["unpriced"],
        json!([{"node": "b", "model": "openai/model-x"}])
    );
    let b = node(est, "b");
    assert_eq!(b["priced"], json!(false));
    assert_eq!(b["low_usd"], Value::Null);
    assert_eq!(b["high_usd"], Value::Null);
    assert_eq!(b["price_key"], Value::Null);
    assert_eq!(b["prompt_complete"], json!(false));
    let c = node(est, "c");
    assert_eq!(c["output_limit_source"], json!("model_family"));
    assert_eq!(c["max_output_tokens"], json!(64000));
    let sum = |k: &str| f(&node(est, "a")[k]) + f(&c[k]);
    assert!((f(&est["total"]["low_usd"]) - sum("low_usd")).abs() < 1e-9);
    assert!((f(&est["total"]["high_usd"]) - sum("high_usd")).abs() < 1e-9);
    assert_eq!(est["total"]["complete"], json!(false));
    for k in ["workflow_hash", "notes"] {
        assert!(est.get(k).is_some(), "{k} in {est}");
    }

    let out = with_openai(&env, &server)
        .arg(&wf)
        .arg("--estimate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let header = text.lines().next().unwrap();
    for col in [
        "node",
        "model",
        "prompt tokens",
        "max output",
        "low",
        "high",
        "expected",
    ] {
        assert!(header.contains(col), "{header}");
    }
    assert!(text.contains("(partial)"), "{text}");
    assert!(
        text.contains("unpriced: openai/model-x (node b) — not counted"),
        "{text}"
    );
    assert!(text.lines().any(|l| l.starts_with("estimate: $")), "{text}");
    drop(server); // verifies .expect(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn max_cost_refuses_a_workflow_whose_low_end_is_over_budget() {
    let server = openai_server().await;
    let env = Env::new();
    let wf = env.workflow("wf.json", workflow());
    // Six batch items and a long city: the low end is well above $0.0001.
    let cities = json!(["a", "b", "c", "d", "e", "f"]).to_string();
    let long_city = "Paris ".repeat(30);
    let (v, code, stderr) = run_json(
        with_openai(&env, &server)
            .args(["--output-format", "json", "--max-cost", "0.0001"])
            .arg(&wf)
            .arg(format!("city={long_city}"))
            .arg(format!("cities={cities}")),
    );
    assert_eq!(code, 3, "{v}\n{stderr}");
    assert_eq!(requests(&server).await, 0, "refused before any call");
    let e = &v["error"];
    assert_eq!(e["type"], json!("budget_exceeded"));
    assert_eq!(e["stopped"], json!("estimate"));
    assert_eq!(e["reason"], json!("max_cost"));
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("estimated cost at least $"), "{msg}");
    assert!(msg.contains("exceeds the budget $0.000100"), "{msg}");
    let low = f(&v["estimate"]["total"]["low_usd"]);
    assert!(low > 0.0001, "{low}");
    let b = &v["metrics"]["budget"];
    assert_eq!(b["stopped"], json!("estimate"));
    assert_eq!(b["exceeded"], json!(true));
    assert_eq!(v["metrics"]["workflow"]["llm_calls"], json!(0));
    let file = v["trace_file"]
        .as_str()
        .expect("the refused run keeps its trace");
    let (spans, _) = read_trace(std::path::Path::new(file));
    let root = spans
        .iter()
        .find(|s| s.name == "pflow run")
        .expect("root span");
    assert_eq!(root.s("pflow.budget.stopped"), "estimate");
    assert_eq!(root.s("pflow.run.status"), "budget_exceeded");
    assert!(
        !spans.iter().any(|s| s.name.starts_with("node ")),
        "no node ran"
    );

    // --estimate says so, and exits 0.
    let out = with_openai(&env, &server)
        .args(["--max-cost", "0.0001", "--estimate"])
        .arg(&wf)
        .arg(format!("city={long_city}"))
        .arg(format!("cities={cities}"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("would refuse"));

    // Within budget it runs, and the JSON carries the estimate it was checked against.
    let (v, code, stderr) = run_json(
        with_openai(&env, &server)
            .args(["--output-format", "json", "--max-cost", "0.01"])
            .arg(&wf)
            .arg("city=Paris"),
    );
    assert_eq!(code, 0, "{v}\n{stderr}");
    assert_eq!(requests(&server).await, 3);
    assert_eq!(v["estimate"]["total"]["history_runs"], json!(0));
}

#[test]
fn invalid_workflows_and_inputs_still_exit_2() {
    let env = Env::new();
    let wf = env.workflow("wf.json", workflow());
    let (v, code, _) = run_json(
        env.pflow()
            .args(["--output-format", "json", "--estimate"])
            .arg(&wf),
    );
    assert_eq!(code, 2, "missing required input `city`: {v}");
    assert_eq!(v["error"]["type"], json!("input_error"));
    let bad = env.workflow(
        "bad.json",
        json!({"ir_version": "0.1.0", "nodes": [{"id": "a", "type": "no-such-node", "params": {}}]}),
    );
    let (v, code, _) = run_json(
        env.pflow()
            .args(["--output-format", "json", "--estimate"])
            .arg(&bad),
    );
    assert_eq!(code, 2, "{v}");
    assert_eq!(v["error"]["type"], json!("validation_error"));
    let out = env
        .pflow()
        .args(["--estimate", "summarize the file please"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--estimate needs a workflow file"));
}

/// The planner (steps told apart by their `STEP:` system line) answers with
/// a one-node workflow; the workflow's own call gets the fixture.
async fn planner_server() -> MockServer {
    let server = MockServer::start().await;
    let planned = json!({"ir_version": "0.1.0", "metadata": {"name": "ask-weather", "description": "Ask about the weather in a city"},
        "inputs": {"city": {"type": "string", "description": "the city"}},
        "nodes": [{"id": "ask", "type": "llm", "params": {"model": "gpt-4o", "prompt": "Weather in ${city}?", "max_tokens": 100}}],
        "outputs": {"answer": {"source": "${ask.response}"}}});
    let fixture: Value = serde_json::from_slice(&llm_fixture("openai-chat.json")).unwrap();
    Mock::given(method("POST"))
        .respond_with(move |req: &Request| {
            let b: Value = serde_json::from_slice(&req.body).unwrap();
            let first = b["messages"][0]["content"].as_str().unwrap_or("");
            let Some(step) = first.lines().next().and_then(|l| l.strip_prefix("STEP: ")) else {
                return ResponseTemplate::new(200).set_body_json(fixture.clone());
            };
            let content = match step.trim() {
                "discovery" => json!({"found": false, "workflow_name": null}),
                "select_nodes" => json!({"node_types": ["llm"]}),
                "extract_params" => json!({"parameters": {"city": "Paris"}}),
                "generate" => planned.clone(),
                _ => json!({}),
            }
            .to_string();
            ResponseTemplate::new(200).set_body_json(json!({"id": "p", "model": "gpt-4o-mini-2024-07-18",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}}))
        })
        .mount(&server)
        .await;
    server
}

#[tokio::test(flavor = "multi_thread")]
async fn planned_runs_print_the_estimate_before_running() {
    let server = planner_server().await;
    let env = Env::new();
    let planner = |env: &Env| {
        let mut c = with_openai(env, &server);
        c.args(["--planner-model", "gpt-4o-mini"]);
        c
    };
    let (v, code, stderr) =
        run_json(planner(&env).args(["--output-format", "json", "ask about the weather in Paris"]));
    assert_eq!(code, 0, "{v}\n{stderr}");
    let est = &v["estimate"];
    let ask = node(est, "ask");
    assert_eq!(
        ask["prompt_complete"],
        json!(true),
        "the planner's inputs are known"
    );
    let got = f(&v["metrics"]["workflow"]["cost_usd"]);
    assert!((got - CALL_USD).abs() < 1e-12, "{got}");
    assert!(
        f(&ask["low_usd"]) <= got && got <= f(&ask["high_usd"]),
        "{est}"
    );
    assert!(v["metrics"].is_object() && v["metrics"]["planner"].is_object());

    let out = planner(&env)
        .env("PFLOW_PROGRESS", "off")
        .arg("ask about the weather in Paris")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let table = stderr.find("estimate: $").expect("estimate on stderr");
    let summary = stderr.find("✓").expect("summary line");
    assert!(
        table < summary,
        "the estimate comes before the run: {stderr}"
    );
    assert!(stderr.lines().any(|l| l.starts_with("ask ")), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("estimate"));
}

/// A PNG header (all the estimate reads) for an image of `w`×`h` pixels.
fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut b = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13];
    b.extend_from_slice(b"IHDR");
    b.extend_from_slice(&w.to_be_bytes());
    b.extend_from_slice(&h.to_be_bytes());
    b.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
    b
}

#[test]
fn images_count_in_the_prompt_by_the_providers_rule() {
    let env = Env::new();
    let img = env.dir.path().join("photo.png");
    std::fs::write(&img, png_header(1024, 1024)).unwrap();
    let img = img.to_string_lossy().into_owned();
    let llm = |id: &str, model: &str, images: Value| json!({"id": id, "type": "llm", "params": {"prompt": "What is this?", "model": model, "max_tokens": 10, "images": images}});
    let wf = env.workflow(
        "wf.json",
        json!({"ir_version": "0.1.0", "nodes": [
            llm("o0", "gpt-4o-mini", json!([])),
            llm("o1", "gpt-4o-mini", json!([img])),
            llm("a0", "claude-sonnet-4-5", json!([])),
            llm("a1", "claude-sonnet-4-5", json!([img, img])),
            llm("g0", "gemini-2.5-flash", json!([])),
            llm("g1", "gemini-2.5-flash", json!([img]))
        ], "edges": [{"from": "o0", "to": "o1"}, {"from": "o1", "to": "a0"},
            {"from": "a0", "to": "a1"}, {"from": "a1", "to": "g0"}, {"from": "g0", "to": "g1"}]}),
    );
    let (v, code, stderr) = run_json(
        env.pflow()
            .args(["--output-format", "json", "--estimate"])
            .arg(&wf),
    );
    assert_eq!(code, 0, "{v}\n{stderr}");
    let est = &v["estimate"];
    let extra = |with: &str, without: &str| {
        node(est, with)["prompt_tokens"].as_u64().unwrap()
            - node(est, without)["prompt_tokens"].as_u64().unwrap()
    };
    // OpenAI: 1024² → 768², 4 tiles: 85 + 4 × 170; Anthropic: 1024² / 750 each; Gemini: 258.
    assert_eq!(extra("o1", "o0"), 765);
    assert_eq!(extra("a1", "a0"), 2 * 1399);
    assert_eq!(extra("g1", "g0"), 258);
}
