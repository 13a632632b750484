//! Budgets end to end: `--max-cost` / `--max-tokens-total` against a local
//! OpenAI server replaying `openai-chat.json` (gpt-4o, 14 + 37 tokens,
//! $0.000405 a call). Calls that could overspend are refused before they are
//! sent, actual spend past the limit stops the run, exit code 3.

use super::common::*;
use serde_json::{json, Value};

/// Actual cost and tokens of one fixture call.
const CALL_USD: f64 = 0.000405;
const CALL_TOKENS: u64 = 51;

/// `a` → `b` → `c`, each one gpt-4o call; `c` has an error edge to `recover`.
fn three_calls(model: &str, max_tokens: u64) -> Value {
    let node = |id: &str| json!({"id": id, "type": "llm", "params": {"prompt": format!("Weather in SF, step {id}?"), "model": model, "max_tokens": max_tokens}});
    json!({"ir_version": "0.1.0",
        "nodes": [node("a"), node("b"), node("c"), {"id": "recover", "type": "echo", "params": {"note": "recovered"}}],
        "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}, {"from": "c", "to": "recover", "action": "error"}],
        "outputs": {"answer": {"source": "${c.response}"}}})
}

fn trace_of(v: &Value) -> Vec<SpanView> {
    let file = v["trace_file"].as_str().expect("trace saved");
    read_trace(std::path::Path::new(file)).0
}

fn root(spans: &[SpanView]) -> &SpanView {
    spans
        .iter()
        .find(|s| s.name == "pflow run")
        .expect("root span")
}

#[tokio::test(flavor = "multi_thread")]
async fn refuses_the_call_that_would_overspend() {
    let server = openai_server().await;
    let env = Env::new();
    let wf = env.workflow("wf.json", three_calls("gpt-4o", 100));
    // Each call is estimated at ~$0.00103 (100 output tokens at $10/M plus the
    // prompt) and costs $0.000405: two fit in $0.0016, a third would not.
    let (v, code, stderr) = run_json(
        with_openai(&env, &server)
            .args(["--output-format", "json", "--max-cost", "0.0016"])
            .arg(&wf),
    );
    assert_eq!(code, 3, "{v}\n{stderr}");
    assert_eq!(requests(&server).await, 2);
    assert_eq!(v["success"], json!(false));
    let e = &v["error"];
    assert_eq!(e["type"], json!("budget_exceeded"));
    assert_eq!(e["node"], json!("c"));
    assert_eq!(e["stopped"], json!("before_call"));
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.starts_with("budget exceeded: spent $0.000810 of $0.001600 budget; next call to gpt-4o in node `c` would cost up to $0.00"),
        "{msg}"
    );

    let m = &v["metrics"];
    let b = &m["budget"];
    assert_eq!(b["max_cost_usd"], json!(0.0016));
    assert_eq!(b["max_tokens_total"], Value::Null);
    assert_eq!(b["spent_usd"], json!(2.0 * CALL_USD));
    assert_eq!(b["tokens_used"], json!(2 * CALL_TOKENS));
    assert_eq!(b["exceeded"], json!(true));
    assert_eq!(b["stopped"], json!("before_call"));
    assert_eq!(b["node"], json!("c"));
    assert_eq!(b["model"], json!("gpt-4o"));
    let est = b["next_call_estimate_usd"].as_f64().unwrap();
    assert!(est > 0.0010 && est < 0.00105, "{est}");
    let est_tokens = b["next_call_estimate_tokens"].as_u64().unwrap();
    assert!(est_tokens > 100 && est_tokens < 130, "{est_tokens}");
    // The guard's tally and the metrics computed from spans agree.
    assert_eq!(m["total"]["cost_usd"], b["spent_usd"]);
    assert_eq!(m["total"]["tokens_total"], b["tokens_used"]);
    assert_eq!(m["total"]["llm_calls"], json!(2));

    let spans = trace_of(&v);
    assert_eq!(spans.iter().filter(|s| s.name == "chat gpt-4o").count(), 2);
    let c = by_name(&spans, "node c");
    assert_eq!(c.s("error.type"), "budget_exceeded");
    assert_eq!(c.s("pflow.node.status"), "error");
    assert_eq!(by_name(&spans, "node b").s("pflow.node.status"), "ok");
    // A budget stop ends the run: the error edge is not taken.
    assert!(!spans.iter().any(|s| s.name == "node recover"));
    let r = root(&spans);
    assert_eq!(r.s("error.type"), "budget_exceeded");
    assert_eq!(r.s("pflow.run.status"), "budget_exceeded");
    assert_eq!(r.i("pflow.run.exit_code"), 3);
    assert_eq!(r.attr("pflow.budget.exceeded"), Some(&json!(true)));
    assert_eq!(r.s("pflow.budget.stopped"), "before_call");
    assert_eq!(r.attr("pflow.budget.max_cost_usd"), Some(&json!(0.0016)));
    assert_eq!(r.s("pflow.budget.node"), "c");
}

#[tokio::test(flavor = "multi_thread")]
async fn stops_once_actual_spend_crosses_the_budget() {
    let server = openai_server().await;
    let env = Env::new();
    // max_tokens 5 makes the estimate ~$0.00008, but the server bills 37
    // output tokens ($0.000405): the first call passes $0.0002.
    let wf = env.workflow("wf.json", three_calls("gpt-4o", 5));
    let (v, code, stderr) = run_json(
        with_openai(&env, &server)
            .args(["--output-format", "json", "--max-cost", "0.0002"])
            .arg(&wf),
    );
    assert_eq!(code, 3, "{v}\n{stderr}");
    assert_eq!(requests(&server).await, 1);
    let b = &v["metrics"]["budget"];
    assert_eq!(b["stopped"], json!("after_call"));
    assert_eq!(b["exceeded"], json!(true));
    assert_eq!(b["node"], json!("a"));
    assert_eq!(b["spent_usd"], json!(CALL_USD));
    assert_eq!(b["next_call_estimate_usd"], Value::Null);
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("spent $0.000405 of $0.000200 budget after the call to gpt-4o in node `a`"),
        "{msg}"
    );
    let spans = trace_of(&v);
    assert_eq!(by_name(&spans, "node a").s("pflow.node.status"), "ok");
    assert!(!spans.iter().any(|s| s.name == "node b"), "no node starts");
    assert_eq!(root(&spans).s("pflow.budget.stopped"), "after_call");
}

#[tokio::test(flavor = "multi_thread")]
async fn parallel_batch_never_exceeds_the_budget() {
    let server = openai_server().await;
    let env = Env::new();
    let items: Vec<u64> = (0..20).collect();
    let wf = env.workflow(
        "wf.json",
        json!({"ir_version": "0.1.0", "nodes": [{"id": "fan", "type": "llm",
            "batch": {"items": items, "parallel": true, "max_concurrent": 10},
            "params": {"prompt": "item ${item}", "model": "gpt-4o", "max_tokens": 100}}]}),
    );
    let budget = 0.005;
    let (v, code, stderr) = run_json(
        with_openai(&env, &server)
            .args(["--output-format", "json", "--max-cost", "0.005"])
            .arg(&wf),
    );
    // 20 calls would cost $0.0081: the budget stops the batch.
    assert_eq!(code, 3, "{v}\n{stderr}");
    let sent = requests(&server).await;
    let m = &v["metrics"];
    assert_eq!(
        m["total"]["llm_calls"],
        json!(sent),
        "every call sent is counted"
    );
    // Reservations cap what is in flight: ~4 at once, never more than the budget buys.
    assert!((4..=12).contains(&sent), "{sent} requests");
    let spent = m["budget"]["spent_usd"].as_f64().unwrap();
    assert!(spent <= budget, "{spent}");
    assert_eq!(m["total"]["cost_usd"].as_f64().unwrap(), spent);
    assert!((spent - sent as f64 * CALL_USD).abs() < 1e-9);
    let node = m["budget"]["node"].as_str().unwrap();
    assert!(node.starts_with("fan["), "{node}");
    let spans = trace_of(&v);
    assert_eq!(by_path(&spans, "fan").s("error.type"), "budget_exceeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn unpriced_models_need_allow_unpriced() {
    let server = openai_server().await;
    let env = Env::new();
    let wf = env.workflow(
        "wf.json",
        json!({"ir_version": "0.1.0", "nodes": [{"id": "ask", "type": "llm",
            "params": {"prompt": "hi", "model": "openai/pflow-unpriced-test-model", "max_tokens": 50}}]}),
    );
    let (v, code, stderr) = run_json(
        with_openai(&env, &server)
            .args(["--output-format", "json", "--max-cost", "1"])
            .arg(&wf),
    );
    assert_eq!(code, 3, "{v}\n{stderr}");
    assert_eq!(requests(&server).await, 0, "refused before any call");
    assert_eq!(v["error"]["type"], json!("budget_unpriced"));
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("`pflow-unpriced-test-model`") && msg.contains("--allow-unpriced"),
        "{msg}"
    );
    let b = &v["metrics"]["budget"];
    assert_eq!(b["reason"], json!("unpriced_model"));
    assert_eq!(b["exceeded"], json!(false));
    assert_eq!(b["stopped"], json!("before_call"));
    let spans = trace_of(&v);
    assert_eq!(
        by_name(&spans, "node ask").s("error.type"),
        "budget_unpriced"
    );

    let (v, code, stderr) = run_json(
        with_openai(&env, &server)
            .args([
                "--output-format",
                "json",
                "--max-cost",
                "1",
                "--allow-unpriced",
            ])
            .arg(&wf),
    );
    assert_eq!(code, 0, "{v}\n{stderr}");
    assert_eq!(requests(&server).await, 1);
    let b = &v["metrics"]["budget"];
    // Estimated at $0; the answer names a billed model that has a price
    // (gpt-4o-2024-08-06), so the actual spend is still counted.
    assert_eq!(b["spent_usd"], v["metrics"]["total"]["cost_usd"]);
    assert_eq!(b["exceeded"], json!(false));
    assert_eq!(b["stopped"], Value::Null);
    assert_eq!(b["allow_unpriced"], json!(true));
    let warnings = v["warnings"].to_string();
    assert!(
        warnings.contains("estimated at $0 under --max-cost"),
        "{warnings}"
    );

    // Free models need no price: echo runs under a $0 budget.
    let echo = env.workflow(
        "echo.json",
        json!({"ir_version": "0.1.0", "nodes": [{"id": "e", "type": "llm", "params": {"prompt": "hello there", "model": "echo"}}]}),
    );
    let (v, code, stderr) = run_json(
        env.pflow()
            .args(["--output-format", "json", "--max-cost", "0"])
            .arg(&echo),
    );
    assert_eq!(code, 0, "{v}\n{stderr}");
    assert_eq!(v["metrics"]["budget"]["spent_usd"], json!(0.0));
    assert!(v["metrics"]["budget"]["tokens_used"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn token_budget_from_flag_and_env() {
    let server = openai_server().await;
    let env = Env::new();
    let wf = env.workflow("wf.json", three_calls("gpt-4o", 100));
    // Each call is estimated at 100 + ~15 tokens and uses 51: two fit in 200.
    let (v, code, stderr) = run_json(
        with_openai(&env, &server)
            .args(["--output-format", "json", "--max-tokens-total", "200"])
            .arg(&wf),
    );
    assert_eq!(code, 3, "{v}\n{stderr}");
    assert_eq!(requests(&server).await, 2);
    let b = &v["metrics"]["budget"];
    assert_eq!(b["max_tokens_total"], json!(200));
    assert_eq!(b["max_cost_usd"], Value::Null);
    assert_eq!(b["tokens_used"], json!(2 * CALL_TOKENS));
    assert_eq!(b["node"], json!("c"));
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("token budget exceeded: used 102 of 200 tokens; next call to gpt-4o in node `c` would use up to 1"),
        "{msg}"
    );

    // The same from the environment, in text mode: the message is on stderr.
    let out = with_openai(&env, &server)
        .env("PFLOW_MAX_TOKENS_TOTAL", "200")
        .arg(&wf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: token budget exceeded: used 102 of 200 tokens"),
        "{stderr}"
    );
    assert!(stderr.contains("Trace saved:"), "{stderr}");
    assert_eq!(requests(&server).await, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn cost_budget_from_env_and_the_flag_wins() {
    let server = openai_server().await;
    let env = Env::new();
    let wf = env.workflow("wf.json", three_calls("gpt-4o", 100));
    let out = with_openai(&env, &server)
        .env("PFLOW_MAX_COST", "0.0016")
        .arg(&wf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: budget exceeded: spent $0.000810 of $0.001600 budget"),
        "{stderr}"
    );
    assert_eq!(requests(&server).await, 2);

    let (v, code, stderr) = run_json(
        with_openai(&env, &server)
            .env("PFLOW_MAX_COST", "0.0016")
            .args(["--output-format", "json", "--max-cost", "1"])
            .arg(&wf),
    );
    assert_eq!(code, 0, "{v}\n{stderr}");
    assert_eq!(requests(&server).await, 5);
    let b = &v["metrics"]["budget"];
    assert_eq!(b["max_cost_usd"], json!(1.0));
    assert_eq!(b["spent_usd"], json!(3.0 * CALL_USD));
    assert_eq!(b["exceeded"], json!(false));
    assert_eq!(b["stopped"], Value::Null);
}

#[test]
fn invalid_limits_are_usage_errors() {
    let env = Env::new();
    let wf = env.workflow(
        "wf.json",
        json!({"ir_version": "0.1.0", "nodes": [{"id": "e", "type": "echo", "params": {}}]}),
    );
    /// Flags, an environment variable, and what the message must say.
    type Case<'a> = (&'a [&'a str], Option<(&'a str, &'a str)>, &'a str);
    let cases: [Case; 6] = [
        (&["--max-cost", "abc"], None, "invalid --max-cost `abc`"),
        (&["--max-cost", "-1"], None, "cannot be negative"),
        (&["--max-cost=-0.5"], None, "invalid --max-cost `-0.5`"),
        (
            &["--max-tokens-total", "1.5"],
            None,
            "invalid --max-tokens-total `1.5`",
        ),
        (
            &[],
            Some(("PFLOW_MAX_COST", "lots")),
            "invalid PFLOW_MAX_COST `lots`",
        ),
        (
            &[],
            Some(("PFLOW_MAX_TOKENS_TOTAL", "0")),
            "invalid PFLOW_MAX_TOKENS_TOTAL `0`",
        ),
    ];
    for (args, var, want) in cases {
        let mut c = env.pflow();
        if let Some((k, val)) = var {
            c.env(k, val);
        }
        let (v, code, _) = run_json(c.args(["--output-format", "json"]).args(args).arg(&wf));
        assert_eq!(code, 2, "{args:?}: {v}");
        assert_eq!(v["error"]["type"], json!("usage_error"));
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(want), "{args:?}: {msg}");
    }
    // Text mode, shortcut form (`pflow FILE` with the flag before it).
    let out = env
        .pflow()
        .args(["--max-cost", "abc"])
        .arg(&wf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("error: invalid --max-cost `abc`"));
}

#[tokio::test(flavor = "multi_thread")]
async fn planner_calls_count_against_the_budget() {
    let server = openai_server().await;
    let env = Env::new();
    // A planner step asks for up to 4096 output tokens: ~$0.04 with gpt-4o.
    let (v, code, stderr) = run_json(with_openai(&env, &server).args([
        "--output-format",
        "json",
        "--planner-model",
        "gpt-4o",
        "--max-cost",
        "0.001",
        "summarize notes.txt into summary.md",
    ]));
    assert_eq!(code, 3, "{v}\n{stderr}");
    assert_eq!(requests(&server).await, 0);
    assert_eq!(v["error"]["type"], json!("budget_exceeded"));
    assert_eq!(v["error"]["node"], Value::Null);
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("next call to gpt-4o in the planner would cost up to $0.04"),
        "{msg}"
    );
    let b = &v["metrics"]["budget"];
    assert_eq!(b["stopped"], json!("before_call"));
    assert_eq!(b["node"], Value::Null);
    assert_eq!(b["spent_usd"], json!(0.0));
    let spans = trace_of(&v);
    assert_eq!(root(&spans).s("error.type"), "budget_exceeded");
    assert!(root(&spans).name == "pflow run");
}
