//! Trends, comparison and history-based suggestions end to end: real
//! workflows run against a local OpenAI-compatible server with known token
//! counts, prices (a `pricing.json` in PFLOW_HOME) and delays; then
//! `pflow stats --by model` (cost per call, p50/p95 latency, output tokens
//! per second, checked against the saved traces' LLM spans), `pflow stats
//! suggest` (a cheaper model seen on the same node, a `max_tokens` far above
//! use — and neither where the history does not support it), the schema
//! migration of an older history, and `pflow stats report` checked in
//! headless Chromium (numbers match the history, no request leaves the
//! file, CSP present).

use super::browser::{browser_ready, node_script};
use super::common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// Prompt and output tokens each model answers with, and its delay.
const BIG: (&str, u64, u64, u64) = ("gpt-4o", 100, 40, 150);
const MINI: (&str, u64, u64, u64) = ("gpt-4o-mini", 100, 42, 20);
/// USD per million tokens (input, output), written to PFLOW_HOME/pricing.json.
const PRICES: &str =
    r#"{"gpt-4o": {"input": 2.5, "output": 10.0}, "gpt-4o-mini": {"input": 0.15, "output": 0.6}}"#;
/// 100 × 2.5 + 40 × 10 per million; 100 × 0.15 + 42 × 0.6 per million.
const BIG_COST_PER_CALL: f64 = 0.00065;
const MINI_COST_PER_CALL: f64 = 0.0000402;

/// Answers each chat call as the model it names, after that model's delay.
async fn server() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(|req: &Request| {
            let b: Value = serde_json::from_slice(&req.body).unwrap_or_default();
            let (model, input, output, delay) = if b["model"] == MINI.0 { MINI } else { BIG };
            let words = vec!["word"; output as usize].join(" ");
            ResponseTemplate::new(200)
                .set_delay(Duration::from_millis(delay))
                .set_body_json(json!({"id": "c1", "object": "chat.completion", "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": words}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output}}))
        })
        .mount(&server)
        .await;
    server
}

/// The workflow `name` with one LLM node `ask` on `model`.
fn wf(name: &str, model: &str, max_tokens: Option<u64>) -> Value {
    let mut params = json!({"model": model, "prompt": "Summarise the notes"});
    if let Some(m) = max_tokens {
        params["max_tokens"] = json!(m);
    }
    json!({"ir_version": "0.1.0", "metadata": {"name": name},
        "nodes": [{"id": "ask", "type": "llm", "params": params}]})
}

fn setup() -> Env {
    let env = Env::new();
    std::fs::create_dir_all(env.home()).unwrap();
    std::fs::write(env.home().join("pricing.json"), PRICES).unwrap();
    env
}

fn run(env: &Env, server: &MockServer, file: &Path, times: usize) {
    for _ in 0..times {
        pflow_ok(with_openai(env, server).arg("--trace").arg(file));
    }
}

fn json_of(cmd: &mut assert_cmd::Command) -> Value {
    let (v, code, stderr) = run_json(cmd.args(["--output-format", "json"]));
    assert_eq!(code, 0, "{v}\n{stderr}");
    v
}

/// The LLM call spans' durations (ms, as the history rounds them) and output
/// tokens, per model, from every saved trace: the independent record the
/// stats must agree with.
fn calls_in_traces(env: &Env) -> std::collections::BTreeMap<String, Vec<(f64, u64)>> {
    let mut by = std::collections::BTreeMap::<String, Vec<(f64, u64)>>::new();
    for f in env.trace_files() {
        let (spans, _) = read_trace(&f);
        for s in spans
            .iter()
            .filter(|s| s.attr("pflow.llm.node_path").is_some())
        {
            let d = Duration::from_nanos(s.end - s.start);
            let ms = (d.as_secs_f64() * 1_000_000.0).round() / 1000.0;
            by.entry(s.s("gen_ai.request.model").to_string())
                .or_default()
                .push((ms, s.i("gen_ai.usage.output_tokens") as u64));
        }
    }
    by
}

/// Nearest rank, as the stats define it.
fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.max(1) - 1]
}

fn group<'a>(stats: &'a Value, key: &str) -> &'a Value {
    stats["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["key"] == key)
        .unwrap_or_else(|| panic!("no group {key}: {stats}"))
}

/// Six runs of `summarise`, three on gpt-4o-mini then three on gpt-4o with
/// max_tokens 4096; three runs of `steady` on gpt-4o with max_tokens 150.
async fn history(env: &Env) -> MockServer {
    let server = server().await;
    let mini = env.workflow("summarise-mini.json", wf("summarise", MINI.0, None));
    let big = env.workflow("summarise.json", wf("summarise", BIG.0, Some(4096)));
    let steady = env.workflow("steady.json", wf("steady", BIG.0, Some(150)));
    run(env, &server, &mini, 3);
    run(env, &server, &big, 3);
    run(env, &server, &steady, 3);
    server
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_by_model_gives_exact_cost_per_call_percentiles_and_speed() {
    let env = setup();
    let _server = history(&env).await;
    let s = json_of(env.pflow().args(["stats", "--by", "model"]));
    let traces = calls_in_traces(&env);
    for (model, calls, cost_per_call, delay, output) in [
        (BIG.0, 6, BIG_COST_PER_CALL, BIG.3, BIG.2),
        (MINI.0, 3, MINI_COST_PER_CALL, MINI.3, MINI.2),
    ] {
        let g = group(&s, model);
        // The existing columns stay.
        assert_eq!(g["llm_calls"], calls, "{g}");
        assert_eq!(g["runs"], calls, "{g}");
        assert_eq!(
            g["cost_usd"],
            json!((cost_per_call * calls as f64 * 1e10).round() / 1e10)
        );
        assert_eq!(g["cost_per_call_usd"], json!(cost_per_call), "{g}");
        assert_eq!(g["calls_timed"], calls, "{g}");
        let mut ms: Vec<f64> = traces[model].iter().map(|c| c.0).collect();
        ms.sort_by(f64::total_cmp);
        assert_eq!(ms.len() as u64, calls);
        assert_eq!(g["latency_p50_ms"], json!(nearest_rank(&ms, 50.0)), "{g}");
        assert_eq!(g["latency_p95_ms"], json!(nearest_rank(&ms, 95.0)), "{g}");
        assert!(g["latency_p50_ms"].as_f64().unwrap() >= delay as f64, "{g}");
        assert!(g["latency_p95_ms"].as_f64() >= g["latency_p50_ms"].as_f64());
        let secs: f64 = ms.iter().sum::<f64>() / 1000.0;
        let speed = (output as f64 * calls as f64 / secs * 10.0).round() / 10.0;
        assert_eq!(g["output_tokens_per_s"], json!(speed), "{g}");
    }
    // Other groupings do not grow the per-call keys.
    let d = json_of(env.pflow().args(["stats", "--by", "workflow"]));
    assert!(d["groups"][0].get("latency_p50_ms").is_none(), "{d}");
    // The text table shows the same figures.
    let out = pflow_ok(env.pflow().args(["stats", "--by", "model"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("COST/CALL") && text.contains("P50") && text.contains("TOK/S"),
        "{text}"
    );
    let line = text.lines().find(|l| l.starts_with("gpt-4o ")).unwrap();
    assert!(line.contains("$0.000650"), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn suggestions_name_the_cheaper_model_and_the_oversized_max_tokens_with_their_numbers() {
    let env = setup();
    let _server = history(&env).await;
    let v = json_of(env.pflow().args(["stats", "suggest"]));
    let all = v["suggestions"].as_array().unwrap();
    // `steady` has one model and uses 40 of 150 tokens: nothing to suggest.
    assert!(all.iter().all(|s| s["workflow"] == "summarise"), "{v}");
    assert_eq!(all.len(), 2, "{v}");
    let cheaper = all.iter().find(|s| s["kind"] == "cheaper_model").unwrap();
    assert_eq!(cheaper["node"], "ask");
    assert_eq!(
        cheaper["current"],
        json!({"model": "gpt-4o", "calls": 3, "cost_per_call_usd": BIG_COST_PER_CALL,
            "output_tokens_mean": 40.0, "output_tokens_max": 40})
    );
    assert_eq!(
        cheaper["alternative"],
        json!({"model": "gpt-4o-mini", "calls": 3, "cost_per_call_usd": MINI_COST_PER_CALL,
            "output_tokens_mean": 42.0, "output_tokens_max": 42})
    );
    assert_eq!(cheaper["saving_per_call_usd"], json!(0.0006098));
    assert_eq!(cheaper["saving_share"], json!(0.938));
    let msg = cheaper["message"].as_str().unwrap();
    assert!(
        msg.contains("$0.000040 per call over 3 calls (42.0 output tokens on average) against $0.000650 per call over 3 calls (40.0 output tokens) on `gpt-4o`"),
        "{msg}"
    );
    let max = all.iter().find(|s| s["kind"] == "max_tokens").unwrap();
    for (k, want) in [
        ("node", json!("ask")),
        ("model", json!("gpt-4o")),
        ("max_tokens", json!(4096)),
        ("calls", json!(3)),
        ("output_tokens_max", json!(40)),
        ("output_tokens_p95", json!(40)),
        ("suggested_max_tokens", json!(128)),
        ("output_price_per_million", json!(10.0)),
        ("reserved_output_usd_per_call", json!(0.04096)),
        ("reserved_output_usd_at_suggested", json!(0.00128)),
    ] {
        assert_eq!(max[k], want, "{k}: {max}");
    }
    let msg = max["message"].as_str().unwrap();
    assert!(
        msg.contains(
            "max_tokens is 4096 but 3 calls on `gpt-4o` used at most 40 output tokens (p95 40)"
        ) && msg.contains("budget guard reserves 4096 output tokens"),
        "{msg}"
    );
    // Scoped to a workflow; text names the same numbers.
    let steady = json_of(
        env.pflow()
            .args(["stats", "suggest", "--workflow", "steady"]),
    );
    assert_eq!(steady["suggestions"], json!([]));
    let out = pflow_ok(
        env.pflow()
            .args(["stats", "suggest", "--workflow", "summarise"]),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("2 suggestions for workflow `summarise`"),
        "{text}"
    );
    assert!(text.contains("summarise · ask · cheaper model"), "{text}");
    let out = pflow_ok(
        env.pflow()
            .args(["stats", "suggest", "--workflow", "steady"]),
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("no suggestions for workflow `steady`")
    );
    // A trace of `summarise` shows the history's suggestions beside its own,
    // with the very sentences `stats suggest` prints; `steady`'s shows none.
    let steady_show = json_of(env.pflow().args(["trace", "show", "last"]));
    let kinds = |v: &Value| -> Vec<String> {
        v["insight"]["suggestions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["kind"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(kinds(&steady_show).is_empty(), "{steady_show}");
    let big = env.dir.path().join("summarise.json");
    run(&env, &_server, &big, 1);
    let now = json_of(
        env.pflow()
            .args(["stats", "suggest", "--workflow", "summarise"]),
    );
    let show = json_of(env.pflow().args(["trace", "show", "last"]));
    assert_eq!(kinds(&show), ["cheaper_model", "max_tokens"], "{show}");
    for (seen, said) in show["insight"]["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .zip(now["suggestions"].as_array().unwrap())
    {
        assert_eq!(seen["node"], "ask");
        assert_eq!(seen["message"], said["message"], "{seen}");
    }
    let max = &show["insight"]["suggestions"][1]["evidence"];
    assert_eq!(max["max_tokens"], json!(4096.0), "{max}");
    assert_eq!(max["calls"], json!(4.0), "{max}");
    let md = pflow_ok(
        env.pflow()
            .args(["trace", "report", "last", "--format", "md"]),
    );
    let md = String::from_utf8_lossy(&md.stdout);
    assert!(md.contains("max\\_tokens is 4096 but 4 calls"), "{md}");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_cheaper_model_once_the_node_runs_on_it_and_too_little_history_suggests_nothing() {
    let env = setup();
    let server = server().await;
    let big = env.workflow("summarise.json", wf("summarise", BIG.0, Some(4096)));
    let mini = env.workflow("summarise-mini.json", wf("summarise", MINI.0, Some(4096)));
    // Two calls are not enough history for either suggestion.
    run(&env, &server, &big, 2);
    let v = json_of(env.pflow().args(["stats", "suggest"]));
    assert_eq!(v["suggestions"], json!([]), "{v}");
    // The node moved to the cheaper model: no model suggestion, but its
    // max_tokens is still far above use.
    run(&env, &server, &big, 1);
    run(&env, &server, &mini, 3);
    let v = json_of(env.pflow().args(["stats", "suggest"]));
    let kinds: Vec<&str> = v["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["max_tokens"], "{v}");
    assert_eq!(v["suggestions"][0]["model"], "gpt-4o-mini");
    assert_eq!(v["suggestions"][0]["output_tokens_max"], 42);
    assert_eq!(
        v["suggestions"][0]["reserved_output_usd_per_call"],
        json!(0.0024576)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_older_history_is_migrated_and_keeps_its_runs() {
    let env = setup();
    {
        // A history as pflow wrote it before per-call rows (schema version 2).
        let c = rusqlite::Connection::open(env.home().join("history.db")).unwrap();
        c.execute_batch(include_str!("../fixtures/history/schema-v2.sql"))
            .unwrap();
    }
    let server = server().await;
    let big = env.workflow("summarise.json", wf("summarise", BIG.0, None));
    run(&env, &server, &big, 1);
    let s = json_of(env.pflow().args(["stats", "--by", "model"]));
    assert_eq!(s["runs"], 2, "{s}");
    let g = group(&s, "gpt-4o");
    // The old run's call counts in the sums; only the new one has a latency.
    assert_eq!(g["llm_calls"], 2, "{g}");
    assert_eq!(g["calls_timed"], 1, "{g}");
    assert!(g["latency_p50_ms"].as_f64().unwrap() >= BIG.3 as f64);
    let conn = rusqlite::Connection::open(env.home().join("history.db")).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 4);
    // The old run's node row survives the move to one array per run (schema 4).
    let old_node: (String, f64, i64, i64, f64) = conn
        .query_row(
            "SELECT node_path, duration_ms, llm_calls, tokens_total, cost_usd FROM run_nodes WHERE run_id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    assert_eq!(old_node, ("ask".into(), 175.0, 1, 140, 0.00065));
    let nodes = json_of(env.pflow().args(["stats", "--by", "node"]));
    assert_eq!(group(&nodes, "ask")["runs"], 2, "{nodes}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stats_page_shows_the_history_in_chromium_offline_under_its_csp() {
    if !browser_ready() {
        return;
    }
    let env = setup();
    let _server = history(&env).await;
    let html = env.dir.path().join("stats.html");
    let v = json_of(env.pflow().args(["stats", "report", "-o"]).arg(&html));
    assert_eq!(
        (v["runs"].as_u64(), v["suggestions"].as_u64()),
        (Some(9), Some(2)),
        "{v}"
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no external reference"
    );
    let seen = node_script("stats.mjs", &[html.as_os_str()]);
    assert!(
        seen["csp"]
            .as_str()
            .unwrap()
            .starts_with("default-src 'none'"),
        "{seen}"
    );
    assert_eq!(
        seen["requests"],
        json!([]),
        "nothing leaves the file: {seen}"
    );
    assert_eq!(seen["violations"], json!([]), "{seen}");

    // Every model row's numbers are the history's (as `pflow stats --by model` reads it).
    let by_model = json_of(env.pflow().args(["stats", "--by", "model"]));
    let f = |cell: &Value| cell["v"].as_str().unwrap().parse::<f64>().unwrap();
    for model in [BIG.0, MINI.0] {
        let g = group(&by_model, model);
        let row = |table: &str| {
            seen["tables"][table]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["key"] == model)
                .unwrap_or_else(|| panic!("{table} has no {model}: {seen}"))["cells"]
                .clone()
        };
        let m = row("models");
        assert_eq!(f(&m["llm_calls"]), g["llm_calls"].as_f64().unwrap());
        assert_eq!(f(&m["tokens_total"]), g["tokens_total"].as_f64().unwrap());
        assert_eq!(f(&m["cost_usd"]), g["cost_usd"].as_f64().unwrap());
        assert_eq!(
            f(&m["cost_per_call_usd"]),
            g["cost_per_call_usd"].as_f64().unwrap()
        );
        let l = row("latency");
        for k in ["latency_p50_ms", "latency_p95_ms"] {
            assert_eq!(f(&l[k]), g[k].as_f64().unwrap(), "{k}");
            assert_eq!(
                l[k]["text"],
                json!(format!("{:.1} ms", g[k].as_f64().unwrap()))
            );
        }
        assert_eq!(
            f(&l["output_tokens_per_s"]),
            g["output_tokens_per_s"].as_f64().unwrap()
        );
    }
    assert_eq!(
        seen["tables"]["models"][0]["cells"]["cost_per_call_usd"]["text"],
        "$0.000650"
    );
    // By workflow and by day, and the most expensive node first.
    let by_wf = json_of(env.pflow().args(["stats", "--by", "workflow"]));
    let wf_rows = seen["tables"]["workflows"].as_array().unwrap();
    assert_eq!(wf_rows.len(), 2);
    for r in wf_rows {
        let g = group(&by_wf, r["key"].as_str().unwrap());
        assert_eq!(f(&r["cells"]["cost_usd"]), g["cost_usd"].as_f64().unwrap());
        assert_eq!(f(&r["cells"]["runs"]), g["runs"].as_f64().unwrap());
    }
    let days = seen["tables"]["days"].as_array().unwrap();
    assert_eq!(days.len(), 1);
    assert_eq!(f(&days[0]["cells"]["runs"]), 9.0);
    let nodes = seen["tables"]["nodes"].as_array().unwrap();
    assert_eq!(nodes[0]["key"], "summarise/ask", "{seen}");
    assert_eq!(nodes[1]["key"], "steady/ask");
    // 3 calls on gpt-4o and 3 on gpt-4o-mini.
    assert_eq!(
        f(&nodes[0]["cells"]["cost_usd"]),
        ((3.0 * BIG_COST_PER_CALL + 3.0 * MINI_COST_PER_CALL) * 1e10_f64).round() / 1e10
    );
    // The suggestions section lists what `pflow stats suggest` says.
    let kinds: Vec<&str> = seen["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["cheaper_model", "max_tokens"], "{seen}");
    assert!(seen["suggestions"][1]["text"]
        .as_str()
        .unwrap()
        .contains("used at most 40 output tokens"));
    // The chart switches from cost to tokens.
    assert_eq!(seen["day_bars"], 1);
    assert_eq!(seen["metric_before"], "cost");
    assert_eq!(seen["metric_after_click"], "tokens");
    assert_eq!(seen["token_bar_visible"], true);
    assert_eq!(seen["cost_bar_visible"], false);
}

#[test]
fn empty_history_and_bad_input_give_clear_answers() {
    let env = setup();
    // No history yet: an empty page and no suggestions, and no database created.
    let html = env.dir.path().join("empty.html");
    let v = json_of(env.pflow().args(["stats", "report", "-o"]).arg(&html));
    assert_eq!(v["runs"], 0, "{v}");
    assert!(std::fs::read_to_string(&html)
        .unwrap()
        .contains("No runs recorded in this range."));
    let out = pflow_ok(env.pflow().args(["stats", "suggest"]));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("no suggestions for the history"));
    assert!(!env.home().join("history.db").exists());
    // A bad --since is a usage error naming the value; an unwritable page names the file.
    for sub in ["report", "suggest"] {
        let (v, code, _) = run_json(env.pflow().args([
            "stats",
            sub,
            "--since",
            "yesterday",
            "--output-format",
            "json",
        ]));
        assert_eq!(code, 2, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("`yesterday`"),
            "{v}"
        );
    }
    let (v, code, _) = run_json(env.pflow().args([
        "stats",
        "report",
        "-o",
        "/nonexistent-dir/stats.html",
        "--output-format",
        "json",
    ]));
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["error"]["type"], "io_error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/nonexistent-dir/stats.html"));
}
