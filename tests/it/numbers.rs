//! Numbers you can trust (issue 12): each repro of the issue end to end
//! against a local OpenAI-compatible server speaking the real wire format.

use super::common::*;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// An OpenAI Chat Completions answer from `model` billing `input` + `output` tokens.
fn chat_body(model: &str, input: u64, output: u64) -> Value {
    json!({
        "id": "chatcmpl-numbers", "object": "chat.completion", "created": 1764600000,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output,
            "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}
    })
}

async fn server_answering(model: &str, input: u64, output: u64) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(chat_body(model, input, output)))
        .mount(&server)
        .await;
    server
}

fn one_llm(model: &str) -> Value {
    json!({"ir_version": "0.1.0", "nodes": [
        {"id": "ask", "type": "llm", "params": {"prompt": "Say ok", "model": model, "max_tokens": 50}}]})
}

fn close(v: &Value, want: f64) -> bool {
    v.as_f64().is_some_and(|x| (x - want).abs() < 1e-12)
}

/// Repro 1: OpenAI answers with the dated model; the override of the family wins.
#[tokio::test(flavor = "multi_thread")]
async fn an_override_prices_a_call_answered_by_the_dated_model() {
    let server = server_answering("gpt-4o-mini-2024-07-18", 10, 20).await;
    let env = Env::new();
    let wf = env.workflow("wf.json", one_llm("gpt-4o-mini"));
    let prices = env.write(
        "prices.json",
        r#"{"gpt-4o-mini": {"input": 15, "output": 60}}"#,
    );
    let (v, code, err) = run_json(
        with_openai(&env, &server)
            .args(["--output-format", "json", "--trace", "--pricing"])
            .arg(&prices)
            .arg(&wf),
    );
    assert_eq!(code, 0, "{v}\n{err}");
    let m = &v["metrics"];
    // 10 × $15/M + 20 × $60/M.
    assert!(close(&m["total"]["cost_usd"], 0.00135), "{m}");
    assert_eq!(m["workflow"]["cost_sources"], json!({"override": 1}));
    assert!(close(&m["models"]["gpt-4o-mini"]["cost_usd"], 0.00135));
    let file = v["trace_file"].as_str().unwrap();
    let (spans, _) = read_trace(std::path::Path::new(file));
    let call = by_name(&spans, "chat gpt-4o-mini");
    assert_eq!(call.s("pflow.cost.source"), "override");
    assert_eq!(call.s("pflow.cost.price_key"), "gpt-4o-mini");

    // `trace reprice` with the same overrides agrees: nothing changes.
    let (r, code, err) = run_json(
        env.pflow()
            .args(["--output-format", "json", "--pricing"])
            .arg(&prices)
            .args(["trace", "reprice", "last"]),
    );
    assert_eq!(code, 0, "{r}\n{err}");
    let c = &r["calls"][0];
    assert_eq!(c["new_source"], json!("override"), "{r}");
    assert_eq!(c["new_price_key"], json!("gpt-4o-mini"));
    assert!(close(&c["new_usd"], 0.00135), "{r}");
    assert!(close(&r["total"]["delta_usd"], 0.0), "{r}");
}

/// Repro 2: a call to a model with no price never reads as free.
#[tokio::test(flavor = "multi_thread")]
async fn an_unpriced_run_has_a_null_cost_and_a_lower_bound() {
    let server = server_answering("my-private-model", 10, 20).await;
    let env = Env::new();
    let wf = env.workflow(
        "wf.json",
        json!({"ir_version": "0.1.0", "nodes": [
            {"id": "priced", "type": "llm", "params": {"prompt": "Say ok", "model": "gpt-4o-mini", "max_tokens": 50}},
            {"id": "unpriced", "type": "llm", "params": {"prompt": "Say ok", "model": "openai/my-private-model", "max_tokens": 50}}],
            "edges": [{"from": "priced", "to": "unpriced"}]}),
    );
    let (v, code, err) = run_json(
        with_openai(&env, &server)
            .args(["--output-format", "json", "--trace"])
            .arg(&wf),
    );
    assert_eq!(code, 0, "{v}\n{err}");
    let m = &v["metrics"];
    // gpt-4o-mini's table price: 10 × $0.15/M + 20 × $0.60/M (billed as my-private-model:
    // not in the table, so the requested model prices it).
    let priced = 10.0 * 0.15e-6 + 20.0 * 0.6e-6;
    for scope in [&m["workflow"], &m["total"]] {
        assert_eq!(scope["cost_usd"], Value::Null, "{scope}");
        assert!(close(&scope["cost_usd_lower_bound"], priced), "{scope}");
        assert_eq!(scope["cost_complete"], json!(false));
    }
    let nodes = &m["workflow"]["node_usage"];
    assert_eq!(nodes["unpriced"]["cost_usd"], Value::Null, "{nodes}");
    assert!(close(&nodes["priced"]["cost_usd"], priced), "{nodes}");
    assert_eq!(m["models"]["my-private-model"]["cost_usd"], Value::Null);
    assert_eq!(m["unpriced_models"], json!(["my-private-model"]));

    // The same in `trace summary`, the history and `stats`, and the text says so.
    let (s, code, _) =
        run_json(
            env.pflow()
                .args(["--output-format", "json", "trace", "summary", "last"]),
        );
    assert_eq!(code, 0, "{s}");
    let sm = s.get("metrics").unwrap_or(&s);
    assert_eq!(sm["total"]["cost_usd"], Value::Null, "{s}");
    assert!(close(&sm["total"]["cost_usd_lower_bound"], priced), "{s}");
    let (st, code, _) = run_json(env.pflow().args(["--output-format", "json", "stats"]));
    assert_eq!(code, 0, "{st}");
    assert_eq!(st["totals"]["cost_usd"], Value::Null, "{st}");
    assert!(close(&st["totals"]["cost_usd_lower_bound"], priced), "{st}");
    let out = with_openai(&env, &server).arg(&wf).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or("");
    assert!(
        last.ends_with(&format!("≥ ${priced:.6} (1 unpriced model)")),
        "{stderr}"
    );
    // Progress says so too, from the unpriced call on.
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("(2/2 nodes) · ") && l.contains("≥ $")),
        "{stderr}"
    );
}

/// Repro 3: progress and the summary count the same nodes; plurals are right.
#[tokio::test(flavor = "multi_thread")]
async fn progress_and_summary_count_alike_with_plurals() {
    let server = server_answering("gpt-4o-mini-2024-07-18", 10, 20).await;
    let env = Env::new();
    let wf = env.workflow(
        "wf.json",
        json!({"ir_version": "0.1.0", "nodes": [
            {"id": "list", "type": "echo", "params": {"items": [1, 2, 3, 4]}},
            {"id": "fan", "type": "echo", "batch": {"items": "${list.items}"}, "params": {"v": "${item}"}},
            {"id": "ask", "type": "llm", "params": {"prompt": "Say ok", "model": "gpt-4o-mini", "max_tokens": 5}}],
            "edges": [{"from": "list", "to": "fan"}, {"from": "fan", "to": "ask"}]}),
    );
    let out = with_openai(&env, &server)
        .arg("--no-progress")
        .arg(&wf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let last_progress = lines
        .iter()
        .rev()
        .find(|l| l.contains(" (3/3 nodes, 4/4 items)"));
    assert!(last_progress.is_some(), "{stderr}");
    let summary = lines.last().unwrap();
    assert!(
        summary.starts_with("✓ 3 nodes (+4 batch items) in ")
            && summary.contains(" · 1 LLM call · "),
        "{stderr}"
    );
    let (v, _, _) = run_json(
        with_openai(&env, &server)
            .args(["--output-format", "json"])
            .arg(&wf),
    );
    assert_eq!(v["metrics"]["workflow"]["nodes_executed"], json!(3), "{v}");
    assert_eq!(v["metrics"]["workflow"]["batch_items"], json!(4));
}

/// Repro 5: `trace diff` judges params by the full value's digest, not the
/// cut preview, and a batch node carries its items' usage.
#[tokio::test(flavor = "multi_thread")]
async fn diff_compares_full_params_and_rolls_batch_items_up() {
    let server = server_answering("gpt-4o-mini-2024-07-18", 10, 20).await;
    let env = Env::new();
    let long = "x".repeat(200);
    env.workflow(
        "wf.json",
        json!({"ir_version": "0.1.0", "inputs": {"tail": {"type": "string"}},
            "nodes": [
                {"id": "note", "type": "echo", "params": {"text": format!("{long}${{tail}}"), "same": long}},
                {"id": "list", "type": "echo", "params": {"items": ["a", "b", "c"]}},
                {"id": "fan", "type": "llm", "batch": {"items": "${list.items}"},
                    "params": {"prompt": "Say ${item}", "model": "gpt-4o-mini", "max_tokens": 5}}],
            "edges": [{"from": "note", "to": "list"}, {"from": "list", "to": "fan"}]}),
    );
    for tail in ["tail=A", "tail=B"] {
        pflow_ok(
            with_openai(&env, &server)
                .env("PFLOW_TRACE_MAX_VALUE_BYTES", "64")
                .args(["run", "wf.json", "--trace", tail]),
        );
    }
    let (v, code, err) =
        run_json(
            env.pflow()
                .args(["--output-format", "json", "trace", "diff", "last~1", "last"]),
        );
    assert_eq!(code, 0, "{v}\n{err}");
    let node = |p: &str| {
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node"] == json!(p))
            .unwrap_or_else(|| panic!("{p} in {v}"))
            .clone()
    };
    let note = node("note");
    let keys: Vec<&str> = note["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["key"].as_str().unwrap())
        .collect();
    // The previews of both are cut at 64 bytes: only the digest sees `text` differ.
    assert_eq!(keys, ["text"], "{note}");
    assert_eq!(node("list")["changed"], json!(false), "{v}");
    let fan = node("fan");
    assert_eq!(fan["a"]["llm_calls"], json!(3), "{fan}");
    assert_eq!(fan["a"]["batch_items"], json!(3), "{fan}");
    assert_eq!(fan["a"]["tokens"]["input"], json!(30), "{fan}");
    assert_eq!(node("fan[0]")["a"]["llm_calls"], json!(1));
}

/// Repro 6: the provider bills far more prompt tokens than the tokenizer
/// counted; a parallel batch under `--max-cost` still stays within it.
#[tokio::test(flavor = "multi_thread")]
async fn budget_learns_billed_prompt_tokens_in_a_parallel_batch() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(chat_body("gpt-4o-mini-2024-07-18", 1000, 500))
                // Slow enough that the batch's calls are in flight together.
                .set_delay(std::time::Duration::from_millis(150)),
        )
        .mount(&server)
        .await;
    let env = Env::new();
    let items: Vec<u64> = (0..20).collect();
    let wf = env.workflow(
        "wf.json",
        json!({"ir_version": "0.1.0", "nodes": [{"id": "fan", "type": "llm",
            "batch": {"items": items, "parallel": true, "max_concurrent": 20},
            "params": {"prompt": "Say ${item}", "model": "gpt-4o-mini", "max_tokens": 500}}]}),
    );
    let budget = 0.002;
    let (v, code, err) = run_json(
        with_openai(&env, &server)
            .args(["--output-format", "json", "--max-cost", "0.002"])
            .arg(&wf),
    );
    // 20 calls bill $0.00045 each ($0.009): the budget stops the batch.
    assert_eq!(code, 3, "{v}\n{err}");
    let m = &v["metrics"];
    let spent = m["budget"]["spent_usd"].as_f64().unwrap();
    assert!(spent <= budget + 1e-12, "spent {spent} of {budget}: {m}");
    let sent = requests(&server).await as f64;
    assert!(
        (spent - sent * 0.00045).abs() < 1e-9,
        "{sent} calls, {spent}"
    );
    // The budget bought four calls; learning the ratio lets it use them.
    assert!(sent >= 3.0, "{sent} calls");
}

/// Repro 4: the expected value comes only from earlier runs with the same
/// models, priced at today's prices from their stored tokens.
#[tokio::test(flavor = "multi_thread")]
async fn expected_value_needs_the_same_models_and_todays_prices() {
    let server = server_answering("gpt-4o-mini-2024-07-18", 10, 20).await;
    let env = Env::new();
    let wf = env.workflow(
        "wf.json",
        json!({"ir_version": "0.1.0", "inputs": {"model": {"type": "string", "default": "echo"}},
            "nodes": [{"id": "ask", "type": "llm", "params": {"prompt": "Say ok", "model": "${model}", "max_tokens": 50}}]}),
    );
    for _ in 0..2 {
        pflow_ok(with_openai(&env, &server).arg(&wf));
    }
    let estimate = |extra: &[&str]| {
        let (v, code, err) = run_json(
            with_openai(&env, &server)
                .args(["--output-format", "json"])
                .args(extra)
                .arg("run")
                .arg(&wf)
                .args(["model=gpt-4o-mini", "--estimate"]),
        );
        assert_eq!(code, 0, "{v}\n{err}");
        v["estimate"]["total"].clone()
    };
    // Only echo runs so far: nothing to expect of gpt-4o-mini (not $0).
    let t = estimate(&[]);
    assert_eq!(t["history_runs"], json!(0), "{t}");
    assert_eq!(t["expected_usd"], Value::Null, "{t}");

    pflow_ok(with_openai(&env, &server).arg(&wf).arg("model=gpt-4o-mini"));
    // Today's price for gpt-4o-mini is the override: 30 tokens at $100/M.
    let prices = env.write(
        "prices.json",
        r#"{"gpt-4o-mini": {"input": 100, "output": 100}}"#,
    );
    let p = prices.display().to_string();
    let t = estimate(&["--pricing", &p]);
    assert_eq!(t["history_runs"], json!(1), "{t}");
    assert!(close(&t["expected_usd"], 30.0 * 100e-6), "{t}");
    assert_eq!(t["expected_tokens"], json!(30));
}
