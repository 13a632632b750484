//! Run history end to end: runs recorded with their totals, 8 concurrent
//! runs losing no row, `pflow stats` grouping and JSON, `prune`, trace
//! retention by count and by age, and history problems that only warn.

use super::common::*;
use chrono::{DateTime, Utc};
use pflow::history::{self, RunRecord};
use pflow::telemetry::metrics::{MetricsSummary, Tokens, Usage};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn echo_wf(name: &str) -> Value {
    json!({"ir_version": "0.1.0", "metadata": {"name": name},
        "nodes": [
            {"id": "prep", "type": "shell", "params": {"command": "echo notes"}},
            {"id": "ask", "type": "llm", "params": {"model": "echo", "prompt": "Summarise: ${prep.stdout}"}}],
        "edges": [{"from": "prep", "to": "ask"}],
        "outputs": {"answer": {"source": "${ask.response}"}}})
}

fn stats(env: &Env, args: &[&str]) -> Value {
    let (v, code, stderr) = run_json(
        env.pflow()
            .args(["stats", "--output-format", "json"])
            .args(args),
    );
    assert_eq!(code, 0, "{v}\n{stderr}");
    v
}

fn db(env: &Env) -> PathBuf {
    env.home().join("history.db")
}

#[test]
fn runs_are_recorded_with_their_metrics() {
    let env = Env::new();
    let wf = env.workflow("wf.json", echo_wf("notes"));
    let (run, code, _) = run_json(
        env.pflow()
            .args(["--trace", "--output-format", "json"])
            .arg(&wf),
    );
    assert_eq!(code, 0, "{run}");
    let m = &run["metrics"];
    let s = stats(&env, &[]);
    assert_eq!(s["runs"], 1);
    assert_eq!(s["by"], "day");
    assert_eq!(s["since"], Value::Null);
    let t = &s["totals"];
    assert_eq!((t["ok"].as_u64(), t["failed"].as_u64()), (Some(1), Some(0)));
    assert_eq!(t["llm_calls"], m["total"]["llm_calls"]);
    assert_eq!(t["tokens_total"], m["total"]["tokens_total"]);
    assert!(
        t["tokens_total"].as_u64().unwrap() > 0,
        "echo counts real tokens"
    );
    assert_eq!(t["tokens"], m["workflow"]["tokens"]);
    assert_eq!(t["cost_usd"], json!(0.0));
    assert_eq!(t["cost_complete"], json!(true));
    assert_eq!(t["duration_ms"], m["total"]["duration_ms"]);

    let conn = rusqlite::Connection::open(db(&env)).unwrap();
    let row: (String, String, String, i64, String, String, String) = conn
        .query_row(
            "SELECT time, workflow_name, workflow_hash, exit_code, status, trace_id, trace_file FROM runs",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)),
        )
        .unwrap();
    assert!(DateTime::parse_from_rfc3339(&row.0).is_ok(), "{}", row.0);
    assert_eq!(row.1, "notes");
    assert_eq!(row.2.len(), 64, "sha256 hex");
    assert_eq!((row.3, row.4.as_str()), (0, "ok"));
    assert_eq!(json!(row.5), run["trace_id"]);
    assert_eq!(json!(row.6), run["trace_file"]);
    let nodes: Vec<(String, i64)> = conn
        .prepare("SELECT node_path, llm_calls FROM run_nodes ORDER BY node_path")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(nodes, [("ask".to_string(), 1), ("prep".to_string(), 0)]);
    // Reformatting the file keeps the hash: it is taken over the IR, not the bytes.
    let compact = env.write("compact.json", &echo_wf("notes").to_string());
    env.pflow().arg(&compact).assert().success();
    let hashes: i64 = conn
        .query_row("SELECT count(DISTINCT workflow_hash) FROM runs", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(hashes, 1);
}

#[test]
fn failed_and_invalid_runs_are_recorded_with_their_exit_codes() {
    let env = Env::new();
    let bad = env.workflow(
        "fails.json",
        json!({"ir_version": "0.1.0", "nodes": [{"id": "x", "type": "shell", "params": {"command": "exit 3"}}]}),
    );
    env.pflow().arg(&bad).assert().code(1);
    let invalid = env.workflow(
        "invalid.json",
        json!({"ir_version": "0.1.0", "nodes": [{"id": "x", "type": "no-such-type", "params": {}}]}),
    );
    env.pflow().arg(&invalid).assert().code(2);
    let s = stats(&env, &["--by", "workflow"]);
    assert_eq!(s["runs"], 2);
    assert_eq!(s["totals"]["ok"], 0);
    assert_eq!(s["totals"]["failed"], 2);
    assert_eq!(s["totals"]["invalid"], 1);
    // The text counts failures as the JSON does (issue 12, repro 3).
    let out = env.pflow().arg("stats").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("runs       2 (0 ok, 2 failed: 1 invalid)"),
        "{text}"
    );
    // Unnamed workflows are grouped by their file's name.
    let mut keys: Vec<&str> = s["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["key"].as_str().unwrap())
        .collect();
    keys.sort();
    assert_eq!(keys, ["fails", "invalid"]);
    let conn = rusqlite::Connection::open(db(&env)).unwrap();
    let codes: Vec<(String, i64)> = conn
        .prepare("SELECT status, exit_code FROM runs ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        codes,
        [("failed".to_string(), 1), ("invalid".to_string(), 2)]
    );
}

fn llm_wf() -> Value {
    json!({"ir_version": "0.1.0", "metadata": {"name": "weather"},
        "nodes": [{"id": "ask", "type": "llm", "params": {"prompt": "Weather in SF?", "model": "gpt-4o"}}],
        "outputs": {"answer": {"source": "${ask.response}"}}})
}

/// Spawns `n` runs of the binary at once against one PFLOW_HOME.
fn spawn_runs(
    env: &Env,
    n: usize,
    args: &[&std::ffi::OsStr],
    vars: &[(&str, String)],
) -> Vec<std::process::Output> {
    let bin = assert_cmd::cargo::cargo_bin("pflow");
    let children: Vec<_> = (0..n)
        .map(|_| {
            let mut c = std::process::Command::new(&bin);
            for (k, _) in std::env::vars() {
                if k.starts_with("OTEL_") || k.starts_with("PFLOW_") {
                    c.env_remove(k);
                }
            }
            c.env("PFLOW_HOME", env.home())
                .current_dir(env.dir.path())
                .args(args);
            for (k, v) in vars {
                c.env(k, v);
            }
            c.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn eight_concurrent_runs_lose_no_row_and_sum_exactly() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(llm_fixture("openai-chat.json"), "application/json"),
        )
        .mount(&server)
        .await;
    let env = Env::new();
    let wf = env.workflow("wf.json", llm_wf());
    // Prices of our own, so the cost is non-zero and known: 14 × 2 + 37 × 10 per million.
    let prices = env.write(
        "prices.json",
        r#"{"gpt-4o-2024-08-06": {"input": 2.0, "output": 10.0}}"#,
    );
    let args: Vec<&std::ffi::OsStr> = vec![
        "--output-format".as_ref(),
        "json".as_ref(),
        "--pricing".as_ref(),
        prices.as_os_str(),
        wf.as_os_str(),
    ];
    let vars = [
        ("OPENAI_BASE_URL", format!("{}/v1", server.uri())),
        ("OPENAI_API_KEY", "sk-test-key-abcdefghijklmnop".to_string()),
    ];
    // Blocking here is fine: the mock server answers from other threads.
    let outs = spawn_runs(&env, 8, &args, &vars);
    let mut one_cost = None;
    for o in &outs {
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{v}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(
            v["warnings"],
            json!([]),
            "no history warning under contention: {v}"
        );
        assert_eq!(v["metrics"]["total"]["tokens_total"], 51);
        one_cost = v["metrics"]["total"]["cost_usd"].as_f64();
    }
    let one_cost = one_cost.unwrap();
    assert_eq!(one_cost, 0.000398);
    let s = stats(&env, &["--by", "model"]);
    assert_eq!(s["runs"], 8);
    assert_eq!(s["totals"]["runs"], 8);
    assert_eq!(s["totals"]["llm_calls"], 8);
    assert_eq!(s["totals"]["tokens_total"], 8 * 51);
    assert_eq!(s["totals"]["tokens"]["input"], 8 * 14);
    assert_eq!(s["totals"]["tokens"]["output"], 8 * 37);
    assert!(
        (s["totals"]["cost_usd"].as_f64().unwrap() - 8.0 * one_cost).abs() < 1e-12,
        "{s}"
    );
    assert_eq!(s["totals"]["cost_complete"], true);
    let g = &s["groups"][0];
    assert_eq!(g["key"], "gpt-4o");
    assert_eq!(
        (
            g["runs"].as_u64(),
            g["llm_calls"].as_u64(),
            g["tokens_total"].as_u64()
        ),
        (Some(8), Some(8), Some(408))
    );
    assert!(
        (g["cost_usd"].as_f64().unwrap() - 8.0 * one_cost).abs() < 1e-12,
        "{s}"
    );
    let w = stats(&env, &["--by", "workflow"]);
    assert_eq!(
        w["groups"],
        json!([{"key": "weather", "runs": 8, "ok": 8, "failed": 0,
        "duration_ms": w["groups"][0]["duration_ms"], "llm_calls": 8,
        "tokens": {"input": 112, "output": 296, "total": 408, "cache_read": 0, "cache_write": 0, "cache_write_1h": 0, "reasoning": 0},
        "tokens_total": 408, "cost_usd": s["totals"]["cost_usd"],
        "cost_usd_lower_bound": s["totals"]["cost_usd"], "cost_complete": true}])
    );
}

#[test]
fn groups_by_workflow_node_and_day() {
    let env = Env::new();
    let a = env.workflow("a.json", echo_wf("alpha"));
    let b = env.workflow("b.json", echo_wf("beta"));
    let day_before = Utc::now().format("%Y-%m-%d").to_string();
    for wf in [&a, &a, &b] {
        env.pflow().arg(wf).assert().success();
    }
    let day_after = Utc::now().format("%Y-%m-%d").to_string();
    let w = stats(&env, &["--by", "workflow"]);
    let rows: Vec<(&str, u64)> = w["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["key"].as_str().unwrap(), g["runs"].as_u64().unwrap()))
        .collect();
    // Equal cost (echo is free): more tokens first.
    assert_eq!(rows, [("alpha", 2), ("beta", 1)]);
    let n = stats(&env, &["--by", "node"]);
    let nodes: Vec<(&str, u64, u64)> = n["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["key"].as_str().unwrap(),
                g["runs"].as_u64().unwrap(),
                g["llm_calls"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(nodes, [("ask", 3, 3), ("prep", 3, 0)]);
    assert!(n["groups"][1]["duration_ms"].as_f64().unwrap() > 0.0);
    let m = stats(&env, &["--by", "model"]);
    assert_eq!(m["groups"][0]["key"], "echo");
    assert_eq!(m["groups"][0]["tokens_total"], m["totals"]["tokens_total"]);
    assert_eq!(m["groups"][0]["duration_ms"], Value::Null);
    let d = stats(&env, &["--by", "day", "--since", "1h"]);
    assert_eq!(d["runs"], 3);
    let day = d["groups"][0]["key"].as_str().unwrap();
    assert!(day == day_before || day == day_after, "{day}");
    assert_eq!(d["groups"][0]["ok"], 3);
    // --since in the future: nothing.
    let tomorrow = (Utc::now() + chrono::Duration::days(2))
        .format("%Y-%m-%d")
        .to_string();
    let none = stats(&env, &["--since", &tomorrow]);
    assert_eq!(none["runs"], 0);
    assert_eq!(none["groups"], json!([]));
    // Text: the totals and an aligned table.
    let out = env
        .pflow()
        .args(["stats", "--by", "workflow"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("runs       3 (3 ok)"), "{text}");
    let table: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("WORKFLOW"))
        .collect();
    assert_eq!(table.len(), 3, "{text}");
    assert_eq!(table[0].len(), table[1].len(), "aligned:\n{text}");
}

#[test]
fn empty_history_and_bad_arguments() {
    let env = Env::new();
    let out = env.pflow().arg("stats").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no runs recorded"));
    let v = stats(&env, &["--by", "model", "--since", "7d"]);
    assert_eq!(v["runs"], 0);
    assert_eq!(v["totals"]["cost_usd"], json!(0.0));
    assert!(v["since"].as_str().unwrap().ends_with('Z'));
    assert!(!db(&env).exists(), "reading creates nothing");
    for bad in ["7y", "tomorrow", "2025-02-30"] {
        let out = env
            .pflow()
            .args(["stats", "--since", bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--since") && err.contains(bad), "{err}");
    }
    let (v, code, _) =
        run_json(
            env.pflow()
                .args(["stats", "--output-format", "json", "--since", "soon"]),
        );
    assert_eq!(code, 2);
    assert_eq!(v["error"]["type"], "usage_error");
    env.pflow().args(["stats", "--by", "hour"]).assert().code(2);
    env.pflow()
        .args(["stats", "prune", "--older-than", "90"])
        .assert()
        .code(2);
    env.pflow().args(["stats", "prune"]).assert().code(2);
}

fn usage(calls: u64, input: u64, output: u64, cost: f64) -> Usage {
    Usage {
        llm_calls: calls,
        tokens: Tokens {
            input,
            output,
            total: input + output,
            ..Tokens::default()
        },
        cost: pflow::accounting::CostTotal::new(cost, true),
        estimated_calls: 0,
        ..Usage::default()
    }
}

/// A run at a fixed time calling the given models from one node `ask`.
fn fixed_run(time: &str, name: &str, status: &str, models: &[(&str, Usage)]) -> RunRecord {
    let mut m = MetricsSummary {
        schema_version: 1,
        ..Default::default()
    };
    let mut node = usage(0, 0, 0, 0.0);
    for (model, u) in models {
        m.models.insert(model.to_string(), u.clone());
        m.workflow.usage.llm_calls += u.llm_calls;
        m.workflow.usage.tokens.input += u.tokens.input;
        m.workflow.usage.tokens.output += u.tokens.output;
        m.workflow.usage.tokens.total += u.tokens.total;
        m.workflow.usage.cost.add(&u.cost);
        node.llm_calls += u.llm_calls;
        node.tokens.total += u.tokens.total;
        node.cost.add(&u.cost);
    }
    m.workflow.node_timings.insert("ask".into(), 1200.0);
    m.workflow.node_usage.insert("ask".into(), node);
    m.total.duration_ms = 1250.0;
    m.total.llm_calls = m.workflow.usage.llm_calls;
    m.total.tokens_total = m.workflow.usage.tokens.total;
    m.total.cost = m.workflow.usage.cost;
    RunRecord {
        time: DateTime::parse_from_rfc3339(time)
            .unwrap()
            .with_timezone(&Utc),
        command: "run".into(),
        workflow_name: Some(name.into()),
        workflow_hash: Some("0".repeat(64)),
        status: status.into(),
        exit_code: if status == "ok" { 0 } else { 1 },
        trace_id: None,
        trace_file: None,
        metrics: m,
    }
}

fn seed(env: &Env) {
    for r in [
        fixed_run(
            "2024-03-01T09:00:00Z",
            "digest",
            "ok",
            &[
                ("gpt-4o", usage(2, 1200, 300, 0.006)),
                ("echo", usage(1, 40, 40, 0.0)),
            ],
        ),
        fixed_run(
            "2024-03-01T18:30:00Z",
            "digest",
            "failed",
            &[("gpt-4o", usage(1, 500, 0, 0.00125))],
        ),
        fixed_run(
            "2024-03-02T07:15:00Z",
            "triage",
            "ok",
            &[("claude-haiku-4-5", usage(3, 900, 450, 0.003150))],
        ),
    ] {
        history::record(&db(env), &r).unwrap();
    }
}

#[test]
fn stats_text_snapshot() {
    let env = Env::new();
    seed(&env);
    let mut settings = insta::Settings::clone_current();
    // Nothing here depends on the clock, but a home path must never leak into the snapshot.
    settings.add_filter(&regex_escape(&env.home().display().to_string()), "[HOME]");
    settings.bind(|| {
        for by in ["model", "day", "workflow"] {
            let out = env
                .pflow()
                .args(["stats", "--since", "2000-01-01", "--by", by])
                .output()
                .unwrap();
            assert!(out.status.success());
            insta::assert_snapshot!(
                format!("stats_by_{by}"),
                String::from_utf8(out.stdout).unwrap()
            );
        }
        let v = stats(&env, &["--since", "2000-01-01", "--by", "model"]);
        insta::assert_json_snapshot!("stats_by_model_json", v);
    });
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '/' || c == '_' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

#[test]
fn prune_removes_old_runs_and_their_rows() {
    let env = Env::new();
    seed(&env);
    env.pflow()
        .arg(env.workflow("wf.json", echo_wf("now")))
        .assert()
        .success();
    let (v, code, _) = run_json(env.pflow().args([
        "stats",
        "prune",
        "--older-than",
        "90d",
        "--output-format",
        "json",
    ]));
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["removed"], 3);
    assert_eq!(v["older_than"], "90d");
    let s = stats(&env, &["--by", "model"]);
    assert_eq!(s["runs"], 1);
    assert_eq!(s["groups"].as_array().unwrap().len(), 1, "{s}");
    let conn = rusqlite::Connection::open(db(&env)).unwrap();
    let orphans: i64 = conn
        .query_row(
            "SELECT (SELECT count(*) FROM run_models WHERE run_id NOT IN (SELECT id FROM runs))
                  + (SELECT count(*) FROM run_nodes WHERE run_id NOT IN (SELECT id FROM runs))",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(orphans, 0);
    let out = env
        .pflow()
        .args(["stats", "prune", "--older-than", "90d"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("removed 0 runs"));
}

fn trace_name(t: DateTime<Utc>, n: u32) -> String {
    format!("{}_{:032x}.otlp.json", t.format("%Y%m%dT%H%M%S%.3fZ"), n)
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn retention_by_count_keeps_the_newest_and_this_run() {
    let env = Env::new();
    std::fs::create_dir_all(env.traces_dir()).unwrap();
    let base = Utc::now() - chrono::Duration::days(3);
    let old: Vec<String> = (0..5)
        .map(|i| trace_name(base + chrono::Duration::minutes(i), i as u32))
        .collect();
    for n in &old {
        std::fs::write(env.traces_dir().join(n), "{}").unwrap();
    }
    std::fs::write(env.traces_dir().join("README.txt"), "not a trace").unwrap();
    let wf = env.workflow("wf.json", echo_wf("kept"));
    let (v, code, _) = run_json(
        env.pflow()
            .env("PFLOW_TRACE_RETENTION", "3")
            .args(["--trace", "--output-format", "json"])
            .arg(&wf),
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["warnings"], json!([]));
    let this = Path::new(v["trace_file"].as_str().unwrap())
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let mut want = vec![old[3].clone(), old[4].clone(), this, "README.txt".into()];
    want.sort();
    assert_eq!(names_in(&env.traces_dir()), want);
}

#[test]
fn retention_by_age_and_stale_temp_files() {
    let env = Env::new();
    let dir = env.traces_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let old = trace_name(Utc::now() - chrono::Duration::days(40), 1);
    let recent = trace_name(Utc::now() - chrono::Duration::days(2), 2);
    for n in [&old, &recent] {
        std::fs::write(dir.join(n), "{}").unwrap();
    }
    // No time in its name: its mtime decides.
    let copied = dir.join("copied.otlp.json");
    std::fs::write(&copied, "{}").unwrap();
    let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(60 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(&copied)
        .unwrap()
        .set_modified(long_ago)
        .unwrap();
    let stale = dir.join(".pflow-trace-dead.tmp");
    let fresh = dir.join(".pflow-trace-live.tmp");
    std::fs::write(&stale, "").unwrap();
    std::fs::write(&fresh, "").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(long_ago)
        .unwrap();
    let wf = env.workflow("wf.json", echo_wf("aged"));
    // Not saved this time (no --trace, success): retention still runs.
    let (v, code, _) = run_json(
        env.pflow()
            .env("PFLOW_TRACE_RETENTION", "30d")
            .args(["--output-format", "json"])
            .arg(&wf),
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["warnings"], json!([]));
    let mut want = vec![recent, ".pflow-trace-live.tmp".to_string()];
    want.sort();
    assert_eq!(names_in(&dir), want);
}

#[test]
fn a_bad_retention_value_is_a_warning_and_deletes_nothing() {
    let env = Env::new();
    std::fs::create_dir_all(env.traces_dir()).unwrap();
    let old = trace_name(Utc::now() - chrono::Duration::days(400), 1);
    std::fs::write(env.traces_dir().join(&old), "{}").unwrap();
    let wf = env.workflow("wf.json", echo_wf("w"));
    let (v, code, _) = run_json(
        env.pflow()
            .env("PFLOW_TRACE_RETENTION", "forever")
            .args(["--output-format", "json"])
            .arg(&wf),
    );
    assert_eq!(code, 0, "{v}");
    let w = v["warnings"].as_array().unwrap();
    assert_eq!(w.len(), 1, "{v}");
    assert!(
        w[0].as_str().unwrap().contains("PFLOW_TRACE_RETENTION"),
        "{v}"
    );
    assert_eq!(names_in(&env.traces_dir()), [old]);
}

#[test]
fn an_unusable_history_only_warns() {
    let env = Env::new();
    let wf = env.workflow("wf.json", echo_wf("w"));
    // A directory where the database should be: SQLite cannot open it.
    std::fs::create_dir_all(db(&env)).unwrap();
    let (v, code, _) = run_json(env.pflow().args(["--output-format", "json"]).arg(&wf));
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["success"], true);
    let w = v["warnings"].as_array().unwrap();
    assert_eq!(w.len(), 1, "{v}");
    assert!(w[0].as_str().unwrap().contains("history"), "{v}");
    // A failing run keeps its own exit code.
    let bad = env.workflow("bad.json", json!({"ir_version": "0.1.0", "nodes": [{"id": "x", "type": "shell", "params": {"command": "exit 1"}}]}));
    env.pflow().arg(&bad).assert().code(1);
    // Corrupt bytes instead of a database: same.
    let env = Env::new();
    std::fs::create_dir_all(env.home()).unwrap();
    std::fs::write(db(&env), vec![7u8; 8192]).unwrap();
    let (v, code, _) = run_json(env.pflow().args(["--output-format", "json"]).arg(&wf));
    assert_eq!(code, 0, "{v}");
    assert!(
        v["warnings"][0].as_str().unwrap().contains("history"),
        "{v}"
    );
    // stats on it: an error, not a crash.
    let out = env.pflow().arg("stats").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("history.db"));
}

#[test]
fn history_off_records_nothing() {
    let env = Env::new();
    let wf = env.workflow("wf.json", echo_wf("w"));
    for off in ["off", "0", "false"] {
        env.pflow()
            .env("PFLOW_HISTORY", off)
            .arg(&wf)
            .assert()
            .success();
    }
    assert!(!db(&env).exists());
    env.pflow()
        .env("PFLOW_HISTORY", "on")
        .arg(&wf)
        .assert()
        .success();
    assert_eq!(stats(&env, &[])["runs"], 1);
}
