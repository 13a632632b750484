//! Insight from one saved trace, through the binary, on runs of known
//! shape: a chain with one slow `sleep` node and a batch capped by
//! `max_concurrent` (critical path, self time, concurrency reached, the
//! cap suggestion), a node that waits on retries, and LLM calls with and
//! without cache reads against local servers replaying recorded provider
//! responses (hit rate, savings and write cost from the table's prices, a
//! repeated system prompt no call read from a cache). `trace show`,
//! `trace report --format md` and the HTML report all show the same figures.

use super::common::*;
use serde_json::{json, Value};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// a → slow (sleep 1) → fan (4 items, 2 at a time) → c. With two slots the
/// items run fan[0] 0.2 s then fan[2] 0.4 s then fan[3] 0.9 s in one slot
/// and fan[1] 1.0 s in the other, so the batch ends with fan[3].
fn chain(max_concurrent: u64) -> Value {
    json!({"ir_version": "0.1.0", "metadata": {"name": "chain"}, "nodes": [
        {"id": "a", "type": "shell", "params": {"command": "echo start"}},
        {"id": "slow", "type": "shell", "params": {"command": "sleep 1"}},
        {"id": "fan", "type": "shell", "batch": {"items": [0.2, 1.0, 0.4, 0.9], "parallel": true, "max_concurrent": max_concurrent},
         "params": {"command": "sleep ${item}"}},
        {"id": "c", "type": "shell", "params": {"command": "echo done"}}],
      "edges": [{"from": "a", "to": "slow"}, {"from": "slow", "to": "fan"}, {"from": "fan", "to": "c"}]})
}

/// Runs a workflow and returns its trace file.
fn run(env: &Env, cmd: &mut assert_cmd::Command, name: &str, wf: Value) -> String {
    let file = env.workflow(name, wf);
    let (v, code, err) = run_json(cmd.args(["--trace", "--output-format", "json"]).arg(&file));
    assert_eq!(code, 0, "{v}\n{err}");
    v["trace_file"].as_str().expect("trace file").to_string()
}

/// `trace show --output-format json`'s insight.
fn insight(env: &Env, trace: &str) -> Value {
    let (v, code, err) =
        run_json(
            env.pflow()
                .args(["trace", "show", trace, "--output-format", "json"]),
        );
    assert_eq!(code, 0, "{err}");
    v["insight"].clone()
}

fn path_nodes(ins: &Value) -> Vec<String> {
    ins["critical_path"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["node"].as_str().map(str::to_string))
        .collect()
}

fn text(cmd: &mut assert_cmd::Command) -> String {
    String::from_utf8(pflow_ok(cmd).stdout).unwrap()
}

/// A node's first span's duration, from the trace file itself.
fn ms(spans: &[SpanView], node: &str) -> f64 {
    let s = by_path(spans, node);
    (s.end - s.start) as f64 / 1e6
}

#[test]
fn a_slow_node_and_a_capped_batch_set_the_critical_path() {
    let env = Env::new();
    let trace = run(&env, &mut env.pflow(), "chain.json", chain(2));
    let ins = insight(&env, &trace);
    assert_eq!(
        path_nodes(&ins),
        ["a", "slow", "fan", "fan[0]", "fan[2]", "fan[3]", "c"],
        "{ins:#}"
    );
    // The path's figures are the spans' own.
    let (spans, _) = read_trace(std::path::Path::new(&trace));
    let slow = ins["critical_path"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["node"] == "slow")
        .unwrap();
    assert!((slow["duration_ms"].as_f64().unwrap() - ms(&spans, "slow")).abs() < 1e-3);
    assert!(slow["duration_ms"].as_f64().unwrap() >= 1000.0);
    // Self time: the batch (its wall time) first, then the slow node, shares of the run.
    let top: Vec<&str> = ins["top_self_time"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert_eq!(&top[..2], ["fan", "slow"], "{ins:#}");
    let wall = ins["wall_ms"].as_f64().unwrap();
    let slow_share = ins["top_self_time"][1]["share"].as_f64().unwrap();
    assert!((slow_share - ms(&spans, "slow") / wall).abs() < 1e-6);
    // The batch reached its cap; two items waited; fan[1] was the slowest.
    let b = &ins["batches"][0];
    assert_eq!(b["node"], "fan");
    assert_eq!(b["items"], 4);
    assert_eq!(b["max_concurrent"], 2);
    assert_eq!(b["concurrency_reached"], 2);
    assert_eq!(b["items_queued"], 2);
    assert_eq!(b["slowest_item"], "fan[1]");
    assert!((b["wall_ms"].as_f64().unwrap() - ms(&spans, "fan")).abs() < 1e-3);
    let cap: Vec<&Value> = ins["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "batch_concurrency_cap")
        .collect();
    assert_eq!(cap.len(), 1, "{ins:#}");
    assert_eq!(cap[0]["node"], "fan");
    assert_eq!(cap[0]["evidence"]["max_concurrent"], 2.0);
    assert_eq!(cap[0]["evidence"]["items_queued"], 2.0);

    // The tree marks the path: fan[1] ran beside it and is off it.
    let out = text(
        env.pflow()
            .args(["trace", "show", &trace, "--critical-path"]),
    );
    for on in ["● node slow", "● node fan[0]", "● node fan[3]", "● node c"] {
        assert!(out.contains(on), "{on} unmarked:\n{out}");
    }
    assert!(
        out.contains("├─ node fan[1]") && !out.contains("● node fan[1]"),
        "{out}"
    );
    let line = out
        .lines()
        .find(|l| l.starts_with("critical path ("))
        .unwrap();
    let order: Vec<usize> = [
        "a ", "slow ", "fan ", "[fan[0] ", "fan[2] ", "fan[3] ", "] → c ",
    ]
    .iter()
    .map(|n| line.find(n).unwrap_or_else(|| panic!("{n} not in {line}")))
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{line}");
    assert!(out.contains("top self time: fan "), "{out}");
    assert!(out.contains("batch `fan` ran 4 items at its max_concurrent of 2"));
    // Without the flag the tree is unmarked; the footer is there.
    let plain = text(env.pflow().args(["trace", "show", &trace]));
    assert!(!plain.contains('●') && plain.contains("critical path ("));

    // Four slots: all items at once, none queued, no suggestion; fan[1] alone sets the batch's end.
    let trace = run(&env, &mut env.pflow(), "wide.json", chain(4));
    let ins = insight(&env, &trace);
    assert_eq!(path_nodes(&ins), ["a", "slow", "fan", "fan[1]", "c"]);
    assert_eq!(ins["batches"][0]["concurrency_reached"], 4);
    assert_eq!(ins["batches"][0]["items_queued"], 0);
    assert_eq!(ins["suggestions"], json!([]));
}

#[test]
fn a_node_waiting_on_retries_is_named_with_its_numbers() {
    let env = Env::new();
    let marker = env.dir.path().join("tried");
    let wf = json!({"ir_version": "0.1.0", "nodes": [
        {"id": "flaky", "type": "shell", "params": {
            "command": format!("test -f '{0}' || {{ touch '{0}'; exit 3; }}", marker.display()),
            "max_retries": 2, "wait": 0.6}}]});
    let trace = run(&env, &mut env.pflow(), "flaky.json", wf);
    let ins = insight(&env, &trace);
    // Both attempts are on the path: the second started when the first and its wait were over.
    assert_eq!(path_nodes(&ins), ["flaky", "flaky"], "{ins:#}");
    let s = &ins["suggestions"][0];
    assert_eq!(s["kind"], "retry_wait", "{ins:#}");
    assert_eq!(s["node"], "flaky");
    assert_eq!(s["evidence"]["attempts"], 2.0);
    assert_eq!(s["evidence"]["node_retries"], 1.0);
    let retry = s["evidence"]["retry_ms"].as_f64().unwrap();
    let wall = s["evidence"]["wall_ms"].as_f64().unwrap();
    assert!(retry >= 600.0 && retry < wall, "{s}");
    assert!((s["evidence"]["retry_share"].as_f64().unwrap() - retry / wall).abs() < 1e-9);
    assert!(s["message"]
        .as_str()
        .unwrap()
        .contains("node `flaky` spent"));
}

/// A system prompt of well over 1024 tokens.
fn long_system() -> String {
    "You are a careful assistant who answers in one short sentence. ".repeat(150)
}

/// A local server for OpenAI and Anthropic replaying recorded responses:
/// gpt-5.6-sol reads 4012 of 4020 prompt tokens from the cache; Anthropic
/// reads 1111 and writes 418; gpt-4o (the calls carrying the long system
/// prompt) reports 2000 prompt tokens and no cache use.
async fn llm_server() -> MockServer {
    let server = MockServer::start().await;
    let json =
        |name: &str| ResponseTemplate::new(200).set_body_raw(llm_fixture(name), "application/json");
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_string_contains("gpt-5.6-sol"))
        .respond_with(json("openai-chat-cache-read.json"))
        .mount(&server)
        .await;
    let mut plain: Value = serde_json::from_slice(&llm_fixture("openai-chat.json")).unwrap();
    plain["usage"]["prompt_tokens"] = json!(2000);
    plain["usage"]["total_tokens"] = json!(2037);
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_string_contains("careful assistant"))
        .respond_with(ResponseTemplate::new(200).set_body_json(plain))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(json("anthropic-messages-cache.json"))
        .mount(&server)
        .await;
    server
}

fn llm_workflow() -> Value {
    json!({"ir_version": "0.1.0", "metadata": {"name": "cache"}, "nodes": [
        {"id": "cached", "type": "llm", "params": {"model": "gpt-5.6-sol", "prompt": "Summarise the report."}},
        {"id": "claude", "type": "llm", "params": {"model": "claude-sonnet-4-5", "prompt": "Describe Python."}},
        {"id": "fan", "type": "llm", "batch": {"items": ["apple", "banana", "cherry"]},
         "params": {"model": "gpt-4o", "system": long_system(), "prompt": "${item}"}}],
      "edges": [{"from": "cached", "to": "claude"}, {"from": "claude", "to": "fan"}]})
}

/// A model's rates (USD per million tokens) from `pflow pricing show`.
fn rates(env: &Env, model: &str) -> Value {
    let (v, code, err) =
        run_json(
            env.pflow()
                .args(["pricing", "show", model, "--output-format", "json"]),
        );
    assert_eq!(code, 0, "{err}");
    v["price_per_million_tokens"].clone()
}

fn close(a: &Value, b: f64) {
    let a = a.as_f64().unwrap_or_else(|| panic!("not a number: {a}"));
    assert!((a - b).abs() < 1e-9, "{a} != {b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_hit_rate_savings_writes_and_a_missed_prefix() {
    let server = llm_server().await;
    let env = Env::new();
    let mut cmd = env.pflow();
    cmd.env("OPENAI_BASE_URL", format!("{}/v1", server.uri()))
        .env("OPENAI_API_KEY", "sk-test-key-abcdefghijklmnop")
        .env("ANTHROPIC_BASE_URL", server.uri())
        .env("ANTHROPIC_API_KEY", "sk-ant-xyz-1234567890");
    let trace = run(&env, &mut cmd, "cache.json", llm_workflow());
    let ins = insight(&env, &trace);
    let c = &ins["cache"];

    // gpt-5.6-sol: 4012 of 4020 input tokens read, each at the cache rate instead of the input rate.
    let sol = rates(&env, "gpt-5.6-sol");
    let m = &c["by_model"]["gpt-5.6-sol"];
    assert_eq!(m["cache_read_tokens"], 4012);
    assert_eq!(m["cache_write_tokens"], 0);
    close(&m["hit_rate"], 4012.0 / 4020.0);
    let d = sol["input"].as_f64().unwrap() - sol["cache_read"].as_f64().unwrap();
    close(&m["saved_usd"], 4012.0 * d / 1e6);
    close(&m["write_cost_usd"], 0.0);

    // Claude: reads 1111, writes 418 (5-minute) of 3 + 418 + 1111 input tokens.
    let claude = rates(&env, "claude-sonnet-4-5-20250929");
    let a = &c["by_model"]["claude-sonnet-4-5"];
    assert_eq!(a["input_tokens"], 1532);
    close(&a["hit_rate"], 1111.0 / 1532.0);
    let (input, read, write) = (
        claude["input"].as_f64().unwrap(),
        claude["cache_read"].as_f64().unwrap(),
        claude["cache_write"].as_f64().unwrap(),
    );
    close(&a["saved_usd"], 1111.0 * (input - read) / 1e6);
    close(&a["write_cost_usd"], 418.0 * write / 1e6);
    close(&a["write_premium_usd"], 418.0 * (write - input) / 1e6);
    // Per node, the same figures.
    assert_eq!(c["by_node"]["claude"]["cache_write_tokens"], 418);
    close(&c["by_node"]["cached"]["hit_rate"], 4012.0 / 4020.0);
    // gpt-4o: no cache use at all.
    let g = &c["by_model"]["gpt-4o"];
    assert_eq!(
        (g["llm_calls"].as_u64(), g["cache_read_tokens"].as_u64()),
        (Some(3), Some(0))
    );
    close(&g["hit_rate"], 0.0);
    // The run: every input token, every read.
    close(
        &c["total"]["hit_rate"],
        (4012.0 + 1111.0) / (4020.0 + 1532.0 + 3.0 * 2000.0),
    );

    // The three gpt-4o calls sent the same system prompt and none read it:
    // from the second call on it would have been read at the cache rate.
    let prefix = tiktoken_rs::o200k_base()
        .unwrap()
        .encode_ordinary(&long_system())
        .len() as f64;
    let gpt4o = rates(&env, "gpt-4o-2024-08-06");
    let cut = gpt4o["input"].as_f64().unwrap() - gpt4o["cache_read"].as_f64().unwrap();
    let missed = &c["missed_prefixes"];
    assert_eq!(missed.as_array().unwrap().len(), 1, "{c:#}");
    assert_eq!(missed[0]["model"], "gpt-4o");
    assert_eq!(missed[0]["calls"], 3);
    assert_eq!(missed[0]["nodes"], json!(["fan"]));
    assert_eq!(missed[0]["prefix_tokens"].as_f64(), Some(prefix));
    close(&missed[0]["would_save_usd"], 2.0 * prefix * cut / 1e6);
    let s: Vec<&Value> = ins["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "uncached_prefix")
        .collect();
    assert_eq!(s.len(), 1);
    close(
        &s[0]["evidence"]["would_save_usd"],
        2.0 * prefix * cut / 1e6,
    );

    // The terminal footer and the Markdown summary carry the same figures.
    let out = text(env.pflow().args(["trace", "show", &trace]));
    assert!(
        // 1111 × 2.70 and 418 × 3.75 per million (the last digit of the
        // second is a rounding tie, so it is left out).
        out.contains(
            "  model claude-sonnet-4-5: 72.5% hit · 1,111 read · 418 written · saved $0.003000 · writes cost $0.00156"
        ),
        "{out}"
    );
    let md = text(
        env.pflow()
            .args(["trace", "report", &trace, "--format", "md"]),
    );
    assert!(md.starts_with("## ✅ pflow run: cache (ok)"), "{md}");
    assert!(md.contains("| LLM calls | 5 |"), "{md}");
    assert!(
        md.contains(&format!(
            "| gpt-5.6-sol | 1 | 99.8% | 4,012 | 0 | ${:.6} | $0.000000 |",
            4012.0 * d / 1e6
        )),
        "{md}"
    );
    assert!(md.contains("### Most expensive nodes"), "{md}");
    assert!(md.contains("### Suggestions"), "{md}");
    assert!(md.contains("3 calls to gpt-4o sent the same"), "{md}");
    // The HTML report's cache section.
    let html = env.dir.path().join("cache.html");
    pflow_ok(
        env.pflow()
            .args(["trace", "report", &trace, "-o"])
            .arg(&html),
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("id=\"cache-savings\""));
    assert!(
        page.contains(
            "<td class=\"num\">418</td><td class=\"num\">$0.003000</td><td class=\"num\">$0.00156"
        ),
        "the cache section names Claude's writes and their cost"
    );
}

#[test]
fn the_markdown_report_goes_to_stdout_or_a_file() {
    let env = Env::new();
    let trace = run(&env, &mut env.pflow(), "chain.json", chain(2));
    let md = text(
        env.pflow()
            .args(["trace", "report", &trace, "--format", "md"]),
    );
    assert!(md.starts_with("## ✅ pflow run: chain (ok)\n"), "{md}");
    for want in [
        "| Status | ok |",
        "| Nodes | 4 (+4 batch items) |",
        "**Critical path**",
        "### Slowest nodes",
        "| fan | ",
        "### Batches",
        "### Suggestions",
        "max\\_concurrent",
    ] {
        assert!(md.contains(want), "{want} missing:\n{md}");
    }
    assert!(!md.contains("### Errors"));
    // JSON without -o carries the Markdown itself.
    let (v, code, _) = run_json(env.pflow().args([
        "trace",
        "report",
        &trace,
        "--format",
        "md",
        "--output-format",
        "json",
    ]));
    assert_eq!(code, 0);
    assert_eq!(
        (v["format"].as_str(), v["markdown"].as_str()),
        (Some("md"), Some(md.as_str()))
    );
    // `trace summary` keeps stdout the metrics JSON and names the top nodes on stderr.
    let out = pflow_ok(env.pflow().args(["trace", "summary", &trace]));
    let metrics: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(metrics["workflow"]["batch_items"], 4);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("critical path (") && err.contains("top self time: fan "),
        "{err}"
    );
    let file = env.dir.path().join("summary.md");
    let out = pflow_ok(
        env.pflow()
            .args(["trace", "report", &trace, "--format", "md", "-o"])
            .arg(&file),
    );
    assert!(out.stdout.is_empty());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), md);

    // A failed run lists its errors.
    let wf = json!({"ir_version": "0.1.0", "nodes": [
        {"id": "boom", "type": "shell", "params": {"command": "echo 'bad | <b>' >&2; exit 4"}}]});
    let file = env.workflow("boom.json", wf);
    let o = env.pflow().arg("--trace").arg(&file).output().unwrap();
    assert!(!o.status.success());
    let md = text(
        env.pflow()
            .args(["trace", "report", "last", "--format", "md"]),
    );
    assert!(md.starts_with("## ❌ pflow run"), "{md}");
    assert!(md.contains("### Errors\n"), "{md}");
    assert!(md.contains("node boom: "), "{md}");
    assert!(!md.contains("<b>"), "trace text is escaped: {md}");
}

/// An LLM call refused once with `429` and `retry-after: 4`, then answered:
/// the node's time is mostly the refused attempt and the wait before the next
/// (long enough to outweigh the tokenizer's first load in a debug build).
#[tokio::test(flavor = "multi_thread")]
async fn an_llm_node_waiting_on_a_rate_limit_is_named() {
    let server = rate_limited_once("4", "slow down").await;
    let env = Env::new();
    let wf = json!({"ir_version": "0.1.0", "nodes": [
        {"id": "ask", "type": "llm", "params": {"model": "gpt-4o", "prompt": "Hi"}}]});
    let trace = run(&env, &mut with_openai(&env, &server), "ask.json", wf);
    assert_eq!(requests(&server).await, 2);
    let ins = insight(&env, &trace);
    let s = &ins["suggestions"][0];
    assert_eq!(s["kind"], "retry_wait", "{ins:#}");
    assert_eq!(s["node"], "ask");
    assert_eq!(s["evidence"]["llm_retries"], 1.0);
    assert_eq!(s["evidence"]["node_retries"], 0.0);
    // The declared four-second wait plus the refused attempt.
    let retry = s["evidence"]["retry_ms"].as_f64().unwrap();
    assert!(
        retry > 4000.0 && retry <= s["evidence"]["wall_ms"].as_f64().unwrap(),
        "{s}"
    );
    assert!(
        s["message"].as_str().unwrap().contains("(1 LLM retry)"),
        "{s}"
    );
}
