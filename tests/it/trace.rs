//! The trace file: span tree, attributes, events, retries, nesting, batch
//! parenting, redaction and truncation — read back from OTLP/JSON.

use super::common::*;
use serde_json::{json, Value};
use std::collections::HashMap;

fn traced(env: &Env, wf: Value, extra: &[&str]) -> (Value, Vec<SpanView>, Vec<Value>, String) {
    let p = env.workflow("wf.json", wf);
    let (v, _, _) = run_json(
        env.pflow()
            .args(["--trace", "--output-format", "json"])
            .arg(&p)
            .args(extra),
    );
    let path = v["trace_file"].as_str().expect("trace file").to_string();
    let (spans, resources) = read_trace(std::path::Path::new(&path));
    let raw = std::fs::read_to_string(&path).unwrap();
    (v, spans, resources, raw)
}

#[test]
fn span_tree_run_workflow_nodes_with_attributes_and_events() {
    let env = Env::new();
    let (v, spans, resources, _) = traced(
        &env,
        json!({"ir_version": "0.1.0", "metadata": {"name": "tree"}, "inputs": {"x": {"type": "string", "default": "hi"}},
            "nodes": [{"id": "a", "type": "echo", "params": {"msg": "${x} there"}}, {"id": "b", "type": "echo", "params": {"copy": "${a.msg}", "action": "done"}}],
            "edges": [{"from": "a", "to": "b"}]}),
        &[],
    );
    assert_eq!(
        spans.len(),
        4,
        "{:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    let tid = v["trace_id"].as_str().unwrap();
    assert!(spans.iter().all(|s| s.trace_id == tid), "one trace per run");
    let root = spans.iter().find(|s| s.parent.is_empty()).unwrap();
    assert_eq!(root.s("pflow.run.status"), "ok");
    assert_eq!(root.i("pflow.run.exit_code"), 0);
    let wf = by_name(&spans, "invoke_workflow tree");
    assert_eq!(wf.parent, root.span_id);
    assert_eq!(wf.s("gen_ai.operation.name"), "invoke_workflow");
    assert_eq!(wf.i("pflow.workflow.depth"), 0);
    let a = by_name(&spans, "node a");
    let b = by_name(&spans, "node b");
    for n in [a, b] {
        assert_eq!(n.parent, wf.span_id);
        assert_eq!(n.kind, 1, "INTERNAL");
        assert_eq!(n.s("pflow.node.type"), "echo");
        assert_eq!(n.i("pflow.node.attempt"), 1);
        assert_eq!(n.s("pflow.node.status"), "ok");
        assert!(n.end >= n.start && n.start >= wf.start && n.end <= wf.end);
    }
    assert_eq!(a.s("pflow.node.action"), "default");
    assert_eq!(b.s("pflow.node.action"), "done");
    assert_eq!(a.s("pflow.node.params"), r#"{"msg":"hi there"}"#);
    let tr = a
        .events
        .iter()
        .find(|(n, _)| n == "pflow.template.resolved")
        .expect("template event");
    assert_eq!(tr.1["pflow.template"], json!("${x} there"));
    assert_eq!(tr.1["pflow.value.preview"], json!("hi there"));
    assert_eq!(tr.1["pflow.param"], json!("msg"));
    let sw = a
        .events
        .iter()
        .find(|(n, _)| n == "pflow.store.write")
        .expect("store event");
    assert_eq!(sw.1["pflow.store.key"], json!("a.msg"));
    assert_eq!(sw.1["pflow.value.size"], json!(8));
    assert_eq!(resources[0]["service.name"], json!("pflow"));
    assert!(resources[0]["service.version"].is_string());
}

#[test]
fn retries_are_separate_spans_and_failures_carry_exception_events() {
    let env = Env::new();
    let state = env.dir.path().join("count");
    let (v, spans, _, _) = traced(
        &env,
        json!({"ir_version": "0.1.0", "nodes": [{"id": "flaky", "type": "shell", "params": {
            "command": format!("n=$(cat {0} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {0}; [ $n -ge 3 ] || exit 1; echo ok", state.display()),
            "max_retries": 2}}]}),
        &[],
    );
    assert_eq!(v["success"], json!(true));
    let attempts: Vec<&SpanView> = spans.iter().filter(|s| s.name == "node flaky").collect();
    assert_eq!(attempts.len(), 3);
    let mut by_attempt: HashMap<i64, &SpanView> = HashMap::new();
    for a in &attempts {
        assert_eq!(a.i("pflow.node.max_attempts"), 3);
        by_attempt.insert(a.i("pflow.node.attempt"), a);
    }
    for n in [1, 2] {
        let s = by_attempt[&n];
        assert_eq!(s.status_code, 2, "attempt {n} is an error");
        assert!(
            s.status_message.contains("exited with status 1"),
            "{}",
            s.status_message
        );
        let ex = s
            .events
            .iter()
            .find(|(n, _)| n == "exception")
            .expect("exception event");
        assert_eq!(ex.1["exception.type"], json!("exit_status"));
        assert!(ex.1["exception.message"]
            .as_str()
            .unwrap()
            .contains("status 1"));
        assert!(s.events.iter().any(|(n, _)| n == "pflow.node.retry"));
    }
    assert_eq!(by_attempt[&3].status_code, 0);
    assert_eq!(by_attempt[&3].s("pflow.node.status"), "ok");
    // Timing sums every attempt; the node counts once.
    assert_eq!(v["metrics"]["workflow"]["nodes_executed"], json!(1));
}

#[test]
fn parallel_batch_items_are_children_of_the_batch_span() {
    let env = Env::new();
    let (v, spans, _, _) = traced(
        &env,
        json!({"ir_version": "0.1.0", "nodes": [{"id": "fan", "type": "shell", "batch": {"items": ["a", "b", "c", "d", "e"], "parallel": true, "max_concurrent": 5}, "params": {"command": "sleep 0.2; echo ${item}"}}]}),
        &[],
    );
    let batch = spans
        .iter()
        .find(|s| s.s("pflow.node.role") == "batch")
        .unwrap();
    assert_eq!(batch.i("pflow.batch.size"), 5);
    assert_eq!(batch.attr("pflow.batch.parallel"), Some(&json!(true)));
    let items: Vec<&SpanView> = spans
        .iter()
        .filter(|s| s.s("pflow.node.role") == "batch_item")
        .collect();
    assert_eq!(items.len(), 5);
    let mut idx: Vec<i64> = items.iter().map(|s| s.i("pflow.batch.index")).collect();
    idx.sort();
    assert_eq!(idx, [0, 1, 2, 3, 4]);
    for it in &items {
        assert_eq!(it.parent, batch.span_id, "item parented to the batch span");
        assert_eq!(
            it.s("pflow.node.path"),
            format!("fan[{}]", it.i("pflow.batch.index"))
        );
    }
    // They overlapped in time: really concurrent.
    let latest_start = items.iter().map(|s| s.start).max().unwrap();
    let earliest_end = items.iter().map(|s| s.end).min().unwrap();
    assert!(latest_start < earliest_end, "items did not overlap");
    let timings = v["metrics"]["workflow"]["node_timings"]
        .as_object()
        .unwrap();
    for k in ["fan", "fan[0]", "fan[4]"] {
        assert!(timings.contains_key(k), "{k} in {timings:?}");
    }
    // The batch node is one node execution; its items are counted apart.
    assert_eq!(v["metrics"]["workflow"]["nodes_executed"], json!(1));
    assert_eq!(v["metrics"]["workflow"]["batch_items"], json!(5));
}

#[test]
fn nested_workflow_is_a_child_span_tree() {
    let env = Env::new();
    env.workflow("child.json", json!({"ir_version": "0.1.0", "metadata": {"name": "kid"}, "inputs": {"t": {"type": "string"}},
        "nodes": [{"id": "inner", "type": "echo", "params": {"up": "${t}!"}}], "outputs": {"r": {"source": "${inner.up}"}}}));
    let (v, spans, _, _) = traced(
        &env,
        json!({"ir_version": "0.1.0", "nodes": [{"id": "outer", "type": "workflow", "params": {"workflow_ref": "child.json", "param_mapping": {"t": "go"}}}],
            "outputs": {"r": {"source": "${outer.r}"}}}),
        &[],
    );
    assert_eq!(v["result"]["r"], json!("go!"));
    let outer = by_name(&spans, "node outer");
    let child_wf = by_name(&spans, "invoke_workflow kid");
    assert_eq!(child_wf.parent, outer.span_id);
    assert_eq!(child_wf.i("pflow.workflow.depth"), 1);
    let inner = by_name(&spans, "node inner");
    assert_eq!(inner.parent, child_wf.span_id);
    assert_eq!(inner.s("pflow.node.path"), "outer/inner");
    assert!(v["metrics"]["workflow"]["node_timings"]
        .get("outer/inner")
        .is_some());
}

#[test]
fn secrets_never_reach_the_trace_file() {
    let env = Env::new();
    let secrets = [
        "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx123456",
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        "AKIAIOSFODNN7EXAMPLE",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "plain-but-named-secret-42",
        "env-var-secret-value-xyz",
    ];
    let (_, _, _, raw) = traced(
        &env,
        json!({"ir_version": "0.1.0", "nodes": [
            {"id": "a", "type": "echo", "params": {"api_key": secrets[4], "note": format!("key={} and {}", secrets[0], secrets[1]), "headers": {"Authorization": "Bearer abcdefghijklmnop"}}},
            {"id": "b", "type": "shell", "params": {"command": format!("echo {} {} $MY_SERVICE_TOKEN", secrets[2], secrets[3]), "ignore_errors": true}}],
            "edges": [{"from": "a", "to": "b"}]}),
        &[],
    );
    // Run again with a secret in a secret-named env var, echoed by the command.
    let _ = raw;
    let p = env.workflow("wf2.json", json!({"ir_version": "0.1.0", "nodes": [{"id": "b", "type": "shell", "params": {"command": "echo $MY_SERVICE_TOKEN"}}]}));
    let (v, _, _) = run_json(
        env.pflow()
            .env("MY_SERVICE_TOKEN", secrets[5])
            .args(["--trace", "--output-format", "json"])
            .arg(&p),
    );
    assert_eq!(v["success"], json!(true));
    let mut all = String::new();
    for f in env.trace_files() {
        all.push_str(&std::fs::read_to_string(f).unwrap());
    }
    for s in secrets {
        assert!(!all.contains(s), "secret `{s}` leaked into a trace file");
    }
    assert!(!all.contains("abcdefghijklmnop"), "bearer token leaked");
    assert!(all.contains("[REDACTED]"));
}

#[test]
fn big_values_are_truncated_with_their_size() {
    let env = Env::new();
    let big = "y".repeat(1_000_000);
    env.write("big.txt", &big);
    let p = env.workflow("wf.json", json!({"ir_version": "0.1.0", "nodes": [{"id": "r", "type": "read-file", "params": {"file_path": "big.txt"}}, {"id": "e", "type": "echo", "params": {"copy": "${r.content}"}}], "edges": [{"from": "r", "to": "e"}]}));
    let (v, _, _) = run_json(
        env.pflow()
            .env("PFLOW_TRACE_MAX_VALUE_BYTES", "100")
            .args(["--trace", "--output-format", "json"])
            .arg(&p),
    );
    let path = v["trace_file"].as_str().unwrap();
    let size = std::fs::metadata(path).unwrap().len();
    assert!(size < 50_000, "trace is {size} bytes for a 1 MB value");
    let (spans, _) = read_trace(std::path::Path::new(path));
    let r = by_name(&spans, "node r");
    let w = r
        .events
        .iter()
        .find(|(n, a)| n == "pflow.store.write" && a["pflow.store.key"] == json!("r.content"))
        .unwrap();
    assert_eq!(w.1["pflow.value.preview"].as_str().unwrap().len(), 100);
    assert_eq!(w.1["pflow.value.size"], json!(1_000_000));
    assert_eq!(w.1["pflow.value.truncated"], json!(true));
}

#[test]
fn metrics_can_be_recomputed_from_the_trace_file() {
    let env = Env::new();
    let (v, spans, _, _) = traced(
        &env,
        json!({"ir_version": "0.1.0", "nodes": [{"id": "a", "type": "echo"}, {"id": "b", "type": "shell", "batch": {"items": [1, 2]}, "params": {"command": "true"}}], "edges": [{"from": "a", "to": "b"}]}),
        &[],
    );
    let m = &v["metrics"]["workflow"];
    let mut timings: HashMap<String, f64> = HashMap::new();
    let mut executed = 0;
    for s in spans.iter().filter(|s| s.attr("pflow.node.path").is_some()) {
        *timings
            .entry(s.s("pflow.node.path").to_string())
            .or_default() += (s.end - s.start) as f64 / 1e6;
        if s.s("pflow.node.role") != "batch_item" && s.i("pflow.node.attempt") == 1 {
            executed += 1;
        }
    }
    assert_eq!(m["nodes_executed"], json!(executed));
    let reported = m["node_timings"].as_object().unwrap();
    assert_eq!(reported.len(), timings.len());
    for (k, ms) in &timings {
        let r = reported[k].as_f64().unwrap();
        assert!((r - ms).abs() < 0.01, "{k}: reported {r} vs spans {ms}");
    }
    let wf = spans
        .iter()
        .find(|s| s.name.starts_with("invoke_workflow"))
        .unwrap();
    let wf_ms = (wf.end - wf.start) as f64 / 1e6;
    assert!((m["duration_ms"].as_f64().unwrap() - wf_ms).abs() < 0.01);
}

#[test]
fn a_large_value_read_again_after_its_node_reruns_gets_its_own_digest() {
    // `gen` makes a 1.1 MB value that differs on each pass and `w` takes it
    // whole (a digest the runtime remembers per store); `again` fails once, so
    // the error edge runs `gen` and `w` a second time in the same store.
    let env = Env::new();
    let n = env.dir.path().join("n");
    let n = n.display();
    let gen = format!(
        "n=$(cat '{n}' 2>/dev/null || echo 0); n=$((n+1)); echo $n > '{n}'; head -c 1100000 /dev/zero | tr '\\0' \"$n\""
    );
    let out = env.dir.path().join("out.txt");
    let wf = json!({"ir_version": "0.1.0", "nodes": [
        {"id": "gen", "type": "shell", "params": {"command": gen}},
        {"id": "w", "type": "write-file", "params": {"file_path": out.display().to_string(), "content": "${gen.stdout}"}},
        {"id": "again", "type": "shell", "params": {"command": format!("test $(cat '{n}') -ge 2")}}],
        "edges": [{"from": "gen", "to": "w"}, {"from": "w", "to": "again"},
                  {"from": "again", "to": "gen", "action": "error"}]});
    let (v, spans, _, _) = traced(&env, wf, &[]);
    assert_eq!(v["success"], json!(true), "{v}");
    let digests: Vec<Value> = spans
        .iter()
        .filter(|s| s.name == "node w")
        .map(|s| serde_json::from_str::<Value>(s.s("pflow.node.params_digest")).unwrap())
        .map(|d| d["content"].clone())
        .collect();
    let expected: Vec<Value> = ['1', '2']
        .iter()
        .map(|c| {
            let text = Value::String(c.to_string().repeat(1_100_000));
            json!(format!(
                "{:016x}",
                pflow::telemetry::preview::value_digest(&text)
            ))
        })
        .collect();
    assert_eq!(digests, expected);
}

/// The raw attributes (as written, before any reader restores what the
/// compact form left out) of the `pflow.store.write` event for `key`.
fn raw_store_write(raw: &str, key: &str) -> serde_json::Map<String, Value> {
    for line in raw.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        for rs in v["resourceSpans"].as_array().unwrap() {
            for ss in rs["scopeSpans"].as_array().unwrap() {
                for s in ss["spans"].as_array().unwrap() {
                    for e in s["events"].as_array().into_iter().flatten() {
                        let attrs: serde_json::Map<String, Value> = e["attributes"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|a| {
                                let val = a["value"].as_object().unwrap().values().next();
                                (a["key"].as_str().unwrap().to_string(), val.unwrap().clone())
                            })
                            .collect();
                        if e["name"] == "pflow.store.write" && attrs["pflow.store.key"] == key {
                            return attrs;
                        }
                    }
                }
            }
        }
    }
    panic!("no store write for {key}");
}

#[test]
fn store_writes_that_repeat_a_param_leave_their_preview_to_the_reader() {
    let env = Env::new();
    let secret = "sk-test-0123456789abcdefghij";
    let (v, spans, _, raw) = traced(
        &env,
        json!({"ir_version": "0.1.0", "nodes": [
            {"id": "lit", "type": "echo", "params": {"message": "hello", "n": 3}},
            {"id": "tpl", "type": "echo", "params": {"message": "${lit.message}!"}},
            {"id": "sh", "type": "shell", "params": {"command": "printf abc"}},
            {"id": "key", "type": "echo", "params": {"api_key": secret}}],
            "edges": [{"from": "lit", "to": "tpl"}, {"from": "tpl", "to": "sh"}, {"from": "sh", "to": "key"}]}),
        &[],
    );
    assert_eq!(v["success"], json!(true), "{v}");
    // A literal param and a resolved one, repeated whole by the output: the
    // event holds only its key (the preview is the param's text, and the
    // size its length).
    for (key, text) in [
        ("lit.message", "hello"),
        ("lit.n", "3"),
        ("tpl.message", "hello!"),
    ] {
        let ev = raw_store_write(&raw, key);
        assert_eq!(ev.len(), 1, "{key}: {ev:?}");
        // Every reader puts them back.
        let node = key.split('.').next().unwrap();
        let span = spans
            .iter()
            .find(|s| s.name == format!("node {node}"))
            .unwrap();
        let (_, restored) = span
            .events
            .iter()
            .find(|(n, a)| n == "pflow.store.write" && a["pflow.store.key"] == json!(key))
            .unwrap();
        assert_eq!(restored["pflow.value.preview"], json!(text), "{key}");
        assert_eq!(restored["pflow.value.size"], json!(text.len()), "{key}");
    }
    // An output no param shows keeps its own preview.
    let ev = raw_store_write(&raw, "sh.stdout");
    assert_eq!(ev["pflow.value.preview"], json!("abc"), "{ev:?}");
    // A hidden param hides the output that repeats it: the event says so itself.
    let ev = raw_store_write(&raw, "key.api_key");
    assert_eq!(ev["pflow.value.preview"], json!("[REDACTED]"), "{ev:?}");
    assert!(!raw.contains(secret));
}
