//! Runtime semantics: edges and actions, namespacing, retries, batches,
//! nested workflows, error edges, panics and the step limit.

use super::*;
use crate::nodes::{opt, Node, NodeFuture, NodeSpec};
use serde_json::json;
use std::sync::atomic::AtomicUsize;

fn rt() -> Runtime {
    let mut reg = Registry::builtin();
    reg.register(Arc::new(Flaky::default()));
    reg.register(Arc::new(Panicky));
    reg.register(Arc::new(Sleepy));
    Runtime::new(reg)
}

/// Fails until its `succeed_on` attempt (counted per process).
#[derive(Default)]
struct Flaky {
    calls: AtomicUsize,
}
static FLAKY: NodeSpec = NodeSpec {
    name: "flaky",
    description: "test",
    params: &[opt("succeed_on", "integer", "n")],
    outputs: &[],
    dynamic_outputs: true,
};
impl Node for Flaky {
    fn spec(&self) -> &'static NodeSpec {
        &FLAKY
    }
    fn run<'a>(&'a self, _c: &'a NodeContext, p: Params) -> NodeFuture<'a> {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            let want = p.f64_opt("succeed_on")?.unwrap_or(1.0) as usize;
            if n < want {
                Err(NodeError::new("flaky", format!("attempt {n} failed")))
            } else {
                Ok(NodeOutput::new(
                    json!({"calls": n}).as_object().unwrap().clone(),
                ))
            }
        })
    }
}

struct Panicky;
static PANICKY: NodeSpec = NodeSpec {
    name: "panicky",
    description: "test",
    params: &[],
    outputs: &[],
    dynamic_outputs: true,
};
impl Node for Panicky {
    fn spec(&self) -> &'static NodeSpec {
        &PANICKY
    }
    fn run<'a>(&'a self, _c: &'a NodeContext, _p: Params) -> NodeFuture<'a> {
        Box::pin(async move { panic!("boom in node") })
    }
}

/// Sleeps `ms`, records how many run at once.
struct Sleepy;
static SLEEPY: NodeSpec = NodeSpec {
    name: "sleepy",
    description: "test",
    params: &[opt("ms", "integer", "how long")],
    outputs: &[],
    dynamic_outputs: true,
};
static RUNNING: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
impl Node for Sleepy {
    fn spec(&self) -> &'static NodeSpec {
        &SLEEPY
    }
    fn run<'a>(&'a self, _c: &'a NodeContext, p: Params) -> NodeFuture<'a> {
        Box::pin(async move {
            let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
            PEAK.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(
                p.f64_opt("ms")?.unwrap_or(20.0) as u64
            ))
            .await;
            RUNNING.fetch_sub(1, Ordering::SeqCst);
            Ok(NodeOutput::new(p.0))
        })
    }
}

/// Runs `src` without inputs, which must fail with an error saying each of `want`.
async fn fails_with(src: serde_json::Value, want: &[&str]) {
    let err = run_json(src, json!({})).await.unwrap_err().to_string();
    for w in want {
        assert!(err.contains(w), "no `{w}` in: {err}");
    }
}

async fn run_json(
    src: serde_json::Value,
    inputs: serde_json::Value,
) -> Result<RunOutput, RunError> {
    let rt = rt();
    let ir = crate::ir::parse_str(&src.to_string(), "test.json")?;
    let inputs = inputs.as_object().cloned().unwrap_or_default();
    let cx = CompileContext {
        params: inputs.keys().cloned().collect(),
        stdin: Some(false),
        ..Default::default()
    };
    let wf = rt.compile(ir, "test.json", Path::new("."), &cx)?;
    let inputs = rt.prepare_inputs(&wf, inputs)?;
    rt.run(
        wf,
        inputs,
        &RunOptions {
            max_steps: None,
            checkpoint: None,
        },
    )
    .await
}

#[tokio::test]
async fn namespacing_keeps_same_keys_apart_and_types_survive() {
    let out = run_json(
        json!({"ir_version": "0.1.0", "inputs": {"n": {"type": "integer"}},
            "nodes": [
                {"id": "a", "type": "echo", "params": {"value": "${n}", "obj": {"k": [1, 2]}}},
                {"id": "b", "type": "echo", "params": {"value": "from b", "copy": "${a.obj}", "text": "n=${n} obj=${a.obj}"}}
            ],
            "edges": [{"from": "a", "to": "b"}],
            "outputs": {"a": {"source": "${a.value}"}, "b": {"source": "${b.value}"}, "copy": {"source": "${b.copy.k[1]}"}, "text": {"source": "${b.text}"}}}),
        json!({"n": "7"}),
    )
    .await
    .unwrap();
    assert_eq!(out.outputs["a"], json!(7));
    assert_eq!(out.outputs["b"], json!("from b"));
    assert_eq!(out.outputs["copy"], json!(2));
    assert_eq!(out.outputs["text"], json!("n=7 obj={\"k\":[1,2]}"));
    assert_eq!(out.store["a"]["value"], json!(7));
}

#[tokio::test]
async fn actions_pick_edges_and_missing_edge_ends_the_flow() {
    let out = run_json(
        json!({"ir_version": "0.1.0", "start_node": "route",
            "nodes": [
                {"id": "never", "type": "echo"},
                {"id": "route", "type": "echo", "params": {"action": "right"}},
                {"id": "left", "type": "echo", "params": {"x": 1}},
                {"id": "right", "type": "echo", "params": {"x": 2, "action": "nowhere"}}
            ],
            "edges": [{"from": "route", "to": "left", "action": "left"}, {"from": "route", "to": "right", "action": "right"}, {"from": "never", "to": "route"}]}),
        json!({}),
    )
    .await
    .unwrap();
    assert!(out.store.get("left").is_none());
    assert!(out.store.get("never").is_none());
    assert_eq!(out.store["right"]["x"], json!(2));
    assert_eq!(out.steps, 2);
}

#[tokio::test]
async fn error_edge_makes_the_error_readable() {
    let out = run_json(
        json!({"ir_version": "0.1.0",
            "nodes": [
                {"id": "bad", "type": "shell", "params": {"command": "echo partial; echo oops >&2; exit 3"}},
                {"id": "handle", "type": "echo", "params": {"msg": "${bad.error.message}", "code": "${bad.exit_code}", "out": "${bad.stdout}"}}
            ],
            "edges": [{"from": "bad", "to": "handle", "action": "error"}]}),
        json!({}),
    )
    .await
    .unwrap();
    let h = &out.store["handle"];
    assert!(h["msg"].as_str().unwrap().contains("status 3"), "{h}");
    assert_eq!(h["code"], json!(3));
    assert_eq!(h["out"], json!("partial\n"));
    assert_eq!(out.store["bad"]["error"]["type"], json!("exit_status"));
}

#[tokio::test]
async fn failure_without_error_edge_fails_the_run_naming_the_node() {
    let err = run_json(json!({"ir_version": "0.1.0", "nodes": [{"id": "x", "type": "echo", "params": {"fail": "nope"}}]}), json!({})).await.unwrap_err();
    match &err {
        RunError::Node {
            node,
            message,
            kind,
            ..
        } => {
            assert_eq!(node, "x");
            assert_eq!(message, "nope");
            assert_eq!(*kind, NodeErrorKind::EchoFail);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.exit_code(), crate::outcome::ExitCode::Failed);
}

#[tokio::test]
async fn retries_until_success() {
    let out = run_json(json!({"ir_version": "0.1.0", "nodes": [{"id": "f", "type": "flaky", "params": {"succeed_on": 3, "max_retries": 2, "wait": 0.01}}]}), json!({})).await.unwrap();
    assert_eq!(out.store["f"]["calls"], json!(3));
    let err = run_json(json!({"ir_version": "0.1.0", "nodes": [{"id": "f", "type": "flaky", "params": {"succeed_on": 3, "max_retries": 1}}]}), json!({})).await.unwrap_err();
    assert!(err.to_string().contains("attempt 2 failed"), "{err}");
}

#[tokio::test]
async fn retry_loop_through_edges_and_step_limit() {
    // A loop that never ends is stopped with a clear error.
    let err = rt();
    let ir = crate::ir::parse_str(
        &json!({"ir_version": "0.1.0", "nodes": [{"id": "a", "type": "echo"}, {"id": "b", "type": "echo"}], "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "a"}]}).to_string(),
        "loop.json",
    )
    .unwrap();
    let wf = err
        .compile(ir, "loop.json", Path::new("."), &CompileContext::default())
        .unwrap();
    let e = err
        .run(
            wf,
            Map::new(),
            &RunOptions {
                max_steps: Some(50),
                checkpoint: None,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, RunError::StepLimit { steps: 50, .. }), "{e}");
    assert!(e.to_string().contains("PFLOW_MAX_STEPS"));
}

#[tokio::test]
async fn batch_sequential_and_parallel_keep_order() {
    for parallel in [false, true] {
        let out = run_json(
            json!({"ir_version": "0.1.0",
                "nodes": [
                    {"id": "list", "type": "echo", "params": {"items": ["a", "b", "c", "d"]}},
                    {"id": "each", "type": "echo", "batch": {"items": "${list.items}", "as": "letter", "parallel": parallel, "max_concurrent": 2}, "params": {"v": "${letter}-${__index__}"}}
                ],
                "edges": [{"from": "list", "to": "each"}],
                "outputs": {"r": {"source": "${each.results}"}}}),
            json!({}),
        )
        .await
        .unwrap();
        let vs: Vec<&str> = out.outputs["r"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["v"].as_str().unwrap())
            .collect();
        assert_eq!(vs, ["a-0", "b-1", "c-2", "d-3"]);
        assert_eq!(out.store["each"]["count"], json!(4));
    }
}

#[tokio::test]
async fn parallel_batch_runs_concurrently_within_the_bound() {
    PEAK.store(0, Ordering::SeqCst);
    let t = std::time::Instant::now();
    let out = run_json(
        json!({"ir_version": "0.1.0", "nodes": [{"id": "s", "type": "sleepy", "batch": {"items": [1,2,3,4,5,6,7,8], "parallel": true, "max_concurrent": 4}, "params": {"ms": 50}}]}),
        json!({}),
    )
    .await
    .unwrap();
    assert_eq!(out.store["s"]["count"], json!(8));
    let peak = PEAK.load(Ordering::SeqCst);
    assert!(peak > 1 && peak <= 4, "peak concurrency {peak}");
    // 8 items × 50 ms with 4 at a time cannot take less than 100 ms.
    assert!(t.elapsed() >= Duration::from_millis(100));
}

#[tokio::test]
async fn batch_error_handling() {
    let wf = |mode: &str| json!({"ir_version": "0.1.0", "nodes": [{"id": "b", "type": "shell", "batch": {"items": [0, 1, 0], "error_handling": mode}, "params": {"command": "exit ${item}"}}]});
    let err = run_json(wf("fail_fast"), json!({})).await.unwrap_err();
    assert!(err.to_string().contains("item 1"), "{err}");
    let out = run_json(wf("continue"), json!({})).await.unwrap();
    let b = &out.store["b"];
    assert_eq!(b["failed"], json!(1));
    assert_eq!(b["results"][0]["exit_code"], json!(0));
    assert_eq!(b["results"][1]["error"]["index"], json!(1));
    assert_eq!(b["errors"][0]["type"], json!("exit_status"));
}

#[tokio::test]
async fn batch_items_must_be_an_array() {
    fails_with(
        json!({"ir_version": "0.1.0", "nodes": [{"id": "a", "type": "echo", "params": {"x": 5}}, {"id": "b", "type": "echo", "batch": {"items": "${a.x}"}}], "edges": [{"from": "a", "to": "b"}]}),
        &["must resolve to an array"],
    )
    .await;
}

#[tokio::test]
async fn nested_inline_workflow_with_mappings() {
    let out = run_json(
        json!({"ir_version": "0.1.0", "inputs": {"name": {"type": "string"}},
            "nodes": [{"id": "child", "type": "workflow", "params": {
                "workflow_ir": {"ir_version": "0.1.0", "inputs": {"who": {"type": "string"}},
                    "nodes": [{"id": "greet", "type": "echo", "params": {"text": "hi ${who}"}}],
                    "outputs": {"greeting": {"source": "${greet.text}"}}},
                "param_mapping": {"who": "${name}"},
                "output_mapping": {"greeting": "message"}}},
                {"id": "after", "type": "echo", "params": {"got": "${child.message}"}}],
            "edges": [{"from": "child", "to": "after"}]}),
        json!({"name": "Ada"}),
    )
    .await
    .unwrap();
    assert_eq!(out.store["after"]["got"], json!("hi Ada"));
    // The child's own store does not leak into the parent.
    assert!(out.store.get("greet").is_none());
}

#[tokio::test]
async fn nested_failure_names_the_child_node() {
    fails_with(
        json!({"ir_version": "0.1.0", "nodes": [{"id": "outer", "type": "workflow", "params": {
            "workflow_ir": {"ir_version": "0.1.0", "nodes": [{"id": "inner", "type": "echo", "params": {"fail": "deep failure"}}]}}}]}),
        &["outer/inner", "deep failure"],
    )
    .await;
}

#[test]
fn self_including_workflow_hits_the_depth_limit() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("self.json");
    std::fs::write(&p, json!({"ir_version": "0.1.0", "nodes": [{"id": "me", "type": "workflow", "params": {"workflow_ref": "self.json"}}]}).to_string()).unwrap();
    let ir = crate::ir::load_file(&p).unwrap();
    let e = rt()
        .compile(ir, "self.json", dir.path(), &CompileContext::default())
        .unwrap_err();
    assert!(e.to_string().contains("deeper than 10"), "{e}");
}

#[tokio::test]
async fn a_panicking_node_is_an_error_not_a_crash() {
    let err = run_json(
        json!({"ir_version": "0.1.0", "nodes": [{"id": "p", "type": "panicky"}]}),
        json!({}),
    )
    .await
    .unwrap_err();
    match err {
        RunError::Node { kind, message, .. } => {
            assert_eq!(kind, "panic");
            assert!(message.contains("boom in node"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn inputs_are_checked_and_defaulted() {
    let wf = json!({"ir_version": "0.1.0", "inputs": {"req": {"type": "integer", "description": "how many"}, "opt": {"type": "string", "default": "d", "required": false}},
        "nodes": [{"id": "e", "type": "echo", "params": {"a": "${req}", "b": "${opt}"}}]});
    let err = run_json(wf.clone(), json!({})).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("missing required input `req` (how many)"),
        "{err}"
    );
    assert_eq!(err.exit_code(), crate::outcome::ExitCode::Invalid);
    let err = run_json(wf.clone(), json!({"req": "many"}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("must be of type integer"), "{err}");
    let out = run_json(wf, json!({"req": 2})).await.unwrap();
    assert_eq!(out.store["e"]["b"], json!("d"));
}

#[tokio::test]
async fn runtime_template_errors_name_the_param() {
    fails_with(
        json!({"ir_version": "0.1.0", "nodes": [{"id": "a", "type": "echo", "params": {"x": {"y": 1}}}, {"id": "b", "type": "echo", "params": {"z": "${a.x.nope}"}}], "edges": [{"from": "a", "to": "b"}]}),
        &["param `z`", "`a.x` has no key `nope`"],
    )
    .await;
}
