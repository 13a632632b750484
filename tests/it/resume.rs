//! Checkpoints, `pflow resume`, `--only`/`--from` and the memo cache through
//! the binary, against a local OpenAI-compatible server whose request count
//! proves which LLM calls were (not) made again; restored and cached nodes
//! are linked spans (trace file and OTLP export) and their original cost is
//! counted apart.

use super::common::*;
use super::otlp::{http_receiver, received_http};
use serde_json::{json, Value};
use std::path::Path;

/// Six nodes: three priced LLM calls, then a shell step that fails until
/// `ok.flag` exists, then two more.
fn six(prompt_b: &str) -> Value {
    json!({"ir_version": "0.1.0", "metadata": {"name": "six"},
        "inputs": {"topic": {"type": "string", "required": true}},
        "nodes": [
            {"id": "a", "type": "llm", "params": {"model": "gpt-4o-mini", "prompt": "one ${topic}"}},
            {"id": "b", "type": "llm", "params": {"model": "gpt-4o-mini", "prompt": format!("{prompt_b} ${{a.response}}")}},
            {"id": "c", "type": "llm", "params": {"model": "gpt-4o-mini", "prompt": "three ${b.response}"}},
            {"id": "d", "type": "shell", "params": {"command": "test -f ok.flag && echo fine"}},
            {"id": "e", "type": "echo", "params": {"text": "${d.stdout}"}},
            {"id": "f", "type": "echo", "params": {"text": "${c.response} / ${e.text}"}}],
        "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}, {"from": "c", "to": "d"},
                  {"from": "d", "to": "e"}, {"from": "e", "to": "f"}],
        "outputs": {"out": {"source": "${f.text}"}}})
}

/// Spans of a trace file as raw OTLP/JSON objects (links included).
fn raw_spans(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap();
        for rs in v["resourceSpans"].as_array().unwrap() {
            for ss in rs["scopeSpans"].as_array().unwrap() {
                out.extend(ss["spans"].as_array().unwrap().iter().cloned());
            }
        }
    }
    out
}

fn attr<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|kv| kv["key"] == key)
        .map(|kv| &kv["value"])
}

fn attr_str(span: &Value, key: &str) -> String {
    attr(span, key)
        .and_then(|v| v["stringValue"].as_str())
        .unwrap_or("")
        .to_string()
}

/// The (trace id, span id, `pflow.link.type`) of each link of `span`.
fn links(span: &Value) -> Vec<(String, String, String)> {
    span["links"]
        .as_array()
        .map(|ls| {
            ls.iter()
                .map(|l| {
                    let kind = attr_str(l, "pflow.link.type");
                    (
                        l["traceId"].as_str().unwrap_or("").to_string(),
                        l["spanId"].as_str().unwrap_or("").to_string(),
                        kind,
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn trace_file(v: &Value) -> std::path::PathBuf {
    std::path::PathBuf::from(v["trace_file"].as_str().expect("trace_file"))
}

fn node_span<'a>(spans: &'a [Value], id: &str) -> &'a Value {
    spans
        .iter()
        .find(|s| attr_str(s, "pflow.node.id") == id)
        .unwrap_or_else(|| panic!("no span for node {id}"))
}

fn root(spans: &[Value]) -> &Value {
    spans
        .iter()
        .find(|s| attr(s, "pflow.run.command").is_some())
        .expect("root span")
}

/// The six-node workflow run once: it fails at `d` after three LLM calls.
async fn failed_first_run(env: &Env, server: &wiremock::MockServer) -> (std::path::PathBuf, Value) {
    let wf = env.workflow("wf.json", six("two"));
    let (first, code, stderr) = run_json(
        with_openai(env, server)
            .args(["--output-format", "json", "run"])
            .arg(&wf)
            .arg("topic=cats"),
    );
    assert_eq!(code, 1, "{first}\n{stderr}");
    assert_eq!(
        requests(server).await,
        3,
        "three LLM calls before node 4 failed"
    );
    (wf, first)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_run_resumes_without_repeating_any_llm_call() {
    let server = openai_server().await;
    let env = Env::new();
    let (wf, first) = failed_first_run(&env, &server).await;
    assert_eq!(first["error"]["node"], "d");
    let run_id = first["run_id"].as_str().expect("run_id").to_string();
    assert_eq!(
        first["resume_command"],
        json!(format!("pflow resume {run_id}"))
    );
    let first_cost = first["metrics"]["total"]["cost_usd"].as_f64().unwrap();
    assert!(first_cost > 0.0, "priced calls: {first}");
    let first_tokens = first["metrics"]["total"]["tokens_total"].as_u64().unwrap();

    // The checkpoint: private files, each value once.
    let dir = env.home().join("runs").join(&run_id);
    assert!(dir.join("manifest.json").is_file());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for e in std::fs::read_dir(dir.join("objects")).unwrap() {
            let mode = e.unwrap().metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }

    // Text output names the run and the command too.
    let out = with_openai(&env, &server)
        .args(["run"])
        .arg(&wf)
        .arg("topic=cats")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("Resume with: pflow resume "), "{text}");
    assert_eq!(requests(&server).await, 6);

    std::fs::write(env.dir.path().join("ok.flag"), "").unwrap();
    let (v, code, stderr) = run_json(with_openai(&env, &server).args([
        "--output-format",
        "json",
        "--trace",
        "resume",
        &run_id,
    ]));
    assert_eq!(code, 0, "{v}\n{stderr}");
    assert_eq!(requests(&server).await, 6, "no LLM call repeated");
    assert!(
        v["result"]["out"].as_str().unwrap().ends_with("/ fine\n"),
        "{v}"
    );
    let m = &v["metrics"];
    assert_eq!(m["total"]["llm_calls"], 0);
    assert_eq!(m["total"]["cost_usd"], 0.0);
    assert_eq!(m["workflow"]["nodes_executed"], 3, "d, e, f ran");
    assert_eq!(m["reused"]["nodes_restored"], 3);
    assert_eq!(m["reused"]["llm_calls"], 3);
    assert_eq!(m["reused"]["tokens"]["total"], first_tokens);
    assert_eq!(m["reused"]["cost_reused_usd"].as_f64(), Some(first_cost));
    assert_eq!(m["total"]["reused_llm_calls"], 3);
    assert_eq!(m["total"]["cost_reused_usd"].as_f64(), Some(first_cost));
    assert_eq!(m["reused"]["nodes"]["a"]["origin_run_id"], json!(run_id));
    assert_eq!(v["resume"]["from_run"], json!(run_id));
    assert_eq!(v["resume"]["restorable"], json!(["a", "b", "c"]));
    assert_eq!(v["resume"]["workflow_changed"], false);
    assert!(v.get("resume_command").is_none(), "succeeded: {v}");

    // The resumed run is a new trace linked to the first; restored nodes link to their spans.
    let before = raw_spans(&trace_file(&first));
    let after = raw_spans(&trace_file(&v));
    let (r0, r1) = (root(&before), root(&after));
    assert_ne!(r0["traceId"], r1["traceId"]);
    assert_eq!(
        links(r1),
        vec![(
            r0["traceId"].as_str().unwrap().to_string(),
            r0["spanId"].as_str().unwrap().to_string(),
            "resumed_from".to_string()
        )]
    );
    assert_eq!(attr_str(r1, "pflow.run.resumed_from"), run_id);
    for id in ["a", "b", "c"] {
        let restored = node_span(&after, id);
        let original = node_span(&before, id);
        assert_eq!(attr_str(restored, "pflow.node.status"), "restored");
        assert_eq!(attr_str(restored, "pflow.node.origin.run_id"), run_id);
        assert_eq!(
            links(restored),
            vec![(
                original["traceId"].as_str().unwrap().to_string(),
                original["spanId"].as_str().unwrap().to_string(),
                "restored_from".to_string()
            )]
        );
    }
    // A node that succeeded leaves its status out: absent means `ok`.
    assert_eq!(attr_str(node_span(&after, "d"), "pflow.node.status"), "");
    assert_registered(&trace_file(&v));

    // Nothing left to resume: a clear refusal, no call, no new run to resume.
    let (again, code, _) =
        run_json(with_openai(&env, &server).args(["--output-format", "json", "resume"]));
    assert_eq!(code, 2, "{again}");
    assert!(
        again["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nothing to resume"),
        "{again}"
    );
    assert_eq!(requests(&server).await, 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_upstream_param_invalidates_it_and_what_follows() {
    let server = openai_server().await;
    let env = Env::new();
    let (wf, _) = failed_first_run(&env, &server).await;
    env.workflow("wf.json", six("TWO"));
    std::fs::write(env.dir.path().join("ok.flag"), "").unwrap();
    let (v, code, stderr) =
        run_json(with_openai(&env, &server).args(["--output-format", "json", "resume"]));
    assert_eq!(code, 0, "{v}\n{stderr}");
    assert_eq!(requests(&server).await, 5, "b and c called again, a not");
    assert_eq!(v["resume"]["restorable"], json!(["a"]));
    assert_eq!(v["resume"]["workflow_changed"], true);
    let inv = &v["resume"]["invalidated"];
    assert_eq!(inv[0]["node"], "b");
    assert!(
        inv[0]["reason"].as_str().unwrap().contains("changed"),
        "{inv}"
    );
    assert_eq!(inv[1]["node"], "c");
    assert_eq!(inv[1]["reason"], "downstream of `b`");
    assert_eq!(inv.as_array().unwrap().len(), 2);
    assert_eq!(v["metrics"]["reused"]["nodes_restored"], 1);
    assert_eq!(v["metrics"]["total"]["llm_calls"], 2);

    // A changed input invalidates the nodes reading it (and what follows), said in text.
    let out = with_openai(&env, &server)
        .args(["run"])
        .arg(&wf)
        .args(["--from", "e", "topic=dogs"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("node `a` runs again: input `topic` changed"),
        "{text}"
    );
    assert_eq!(requests(&server).await, 8);
}

#[tokio::test(flavor = "multi_thread")]
async fn only_reruns_exactly_one_node() {
    let server = openai_server().await;
    let env = Env::new();
    std::fs::write(env.dir.path().join("ok.flag"), "").unwrap();
    let wf = env.workflow("wf.json", six("two"));
    pflow_ok(
        with_openai(&env, &server)
            .args(["run"])
            .arg(&wf)
            .arg("topic=cats"),
    );
    assert_eq!(requests(&server).await, 3);
    let (v, code, stderr) = run_json(
        with_openai(&env, &server)
            .args(["--output-format", "json", "run"])
            .arg(&wf)
            .args(["--only", "b"]),
    );
    assert_eq!(code, 0, "{v}\n{stderr}");
    assert_eq!(requests(&server).await, 4, "exactly one LLM call: b's");
    let m = &v["metrics"];
    assert_eq!(m["workflow"]["nodes_executed"], 1);
    assert_eq!(m["total"]["llm_calls"], 1);
    assert_eq!(
        m["reused"]["nodes_restored"], 1,
        "a restored, nothing after b"
    );
    assert!(v["result"]["response"].is_string(), "b's outputs: {v}");
    assert_eq!(v["resume"]["mode"], "only");

    // A node that does not exist is named, with the ones that do.
    let (bad, code, _) = run_json(
        with_openai(&env, &server)
            .args(["--output-format", "json", "run"])
            .arg(&wf)
            .args(["--only", "zz"]),
    );
    assert_eq!(code, 2, "{bad}");
    let msg = bad["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("no node `zz`") && msg.contains("a, b, c"),
        "{msg}"
    );
    assert_eq!(requests(&server).await, 4);
}

/// An LLM node at temperature 0 with `--cache`: the second run is served from
/// the first, and its exported span is `cached` with a link to the source.
#[tokio::test(flavor = "multi_thread")]
async fn memo_hits_are_linked_spans_in_the_otlp_export() {
    let server = openai_server().await;
    let receiver = http_receiver(true).await;
    let env = Env::new();
    let wf = env.workflow(
        "wf.json",
        json!({"ir_version": "0.1.0",
            "nodes": [
                {"id": "ask", "type": "llm", "params": {"model": "gpt-4o-mini", "prompt": "hi ${who}", "temperature": 0}},
                {"id": "hot", "type": "llm", "params": {"model": "gpt-4o-mini", "prompt": "hi ${who}", "temperature": 0.7}}],
            "edges": [{"from": "ask", "to": "hot"}],
            "inputs": {"who": {"type": "string"}}}),
    );
    let run = |extra: &[&str]| {
        let mut c = with_openai(&env, &server);
        c.args(["--output-format", "json", "--trace"])
            .args(extra)
            .arg("run")
            .arg(&wf)
            .arg("who=you");
        c
    };
    let (first, code, _) = run_json(&mut run(&["--cache"]));
    assert_eq!(code, 0, "{first}");
    assert_eq!(requests(&server).await, 2);
    let endpoint = receiver.uri();
    let (second, code, stderr) = run_json(
        run(&["--cache"])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
    );
    assert_eq!(code, 0, "{second}\n{stderr}");
    assert_eq!(
        requests(&server).await,
        3,
        "temperature 0 served from the memo; temperature 0.7 called again"
    );
    let m = &second["metrics"];
    assert_eq!(m["reused"]["nodes_cached"], 1);
    assert_eq!(m["reused"]["llm_calls"], 1);
    assert_eq!(m["total"]["llm_calls"], 1);
    let first_ask = first["metrics"]["workflow"]["node_usage"]["ask"]["cost_usd"]
        .as_f64()
        .unwrap();
    assert_eq!(m["reused"]["cost_reused_usd"].as_f64(), Some(first_ask));

    let source = node_span(&raw_spans(&trace_file(&first)), "ask").clone();
    let reqs = received_http(&receiver, true).await;
    let exported: Vec<Value> = reqs
        .iter()
        .flat_map(|r| {
            let v = serde_json::to_value(r).unwrap();
            let mut spans = Vec::new();
            for rs in v["resourceSpans"].as_array().unwrap() {
                for ss in rs["scopeSpans"].as_array().unwrap() {
                    spans.extend(ss["spans"].as_array().unwrap().iter().cloned());
                }
            }
            spans
        })
        .collect();
    let hit = node_span(&exported, "ask");
    assert_eq!(attr_str(hit, "pflow.node.status"), "cached");
    assert_eq!(
        links(hit),
        vec![(
            source["traceId"].as_str().unwrap().to_string(),
            source["spanId"].as_str().unwrap().to_string(),
            "cached_from".to_string()
        )]
    );
    // Ran again and succeeded: no status recorded (absent means `ok`).
    assert_eq!(
        attr_str(node_span(&exported, "hot"), "pflow.node.status"),
        ""
    );

    // --no-cache: everything runs again.
    let (_, code, _) = run_json(&mut run(&["--no-cache"]));
    assert_eq!(code, 0);
    assert_eq!(requests(&server).await, 5);
}
