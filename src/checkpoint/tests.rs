use super::*;
use serde_json::json;

fn wf(b_prompt: &str) -> WorkflowIr {
    ir::from_value(
        &json!({"ir_version": "0.1.0",
            "inputs": {"topic": {"type": "string"}, "tone": {"type": "string"}},
            "nodes": [
                {"id": "a", "type": "echo", "params": {"text": "${topic}"}},
                {"id": "b", "type": "llm", "params": {"model": "echo", "prompt": b_prompt, "temperature": 0}},
                {"id": "c", "type": "echo", "params": {"text": "${b.response} ${tone}"}},
                {"id": "d", "type": "echo", "params": {"text": "end"}, "cache": false}],
            "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}, {"from": "c", "to": "d"}]}),
        "wf.json",
    )
    .unwrap()
}

fn views(ir: &WorkflowIr) -> Vec<NodeView<'_>> {
    ir.nodes
        .iter()
        .map(|n| NodeView { ir: n, child: None })
        .collect()
}

fn inputs(topic: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("topic".into(), json!(topic));
    m.insert("tone".into(), json!("calm"));
    m
}

/// Runs `ir` "by hand" through a session: every node completes with `{"v": id}`
/// until `fail_at`.
fn record_run(home: &Path, run_id: &str, ir: &WorkflowIr, topic: &str, fail_at: &str) {
    let (s, _) = Session::start(Start {
        home,
        run_id,
        trace_id: Some("0123456789abcdef0123456789abcdef".into()),
        root_span_id: Some("0123456789abcdef".into()),
        file: Path::new("/tmp/wf.json"),
        ir,
        ir_hash: &crate::history::WorkflowIdent::of(ir).hash,
        nodes: views(ir),
        inputs: &inputs(topic),
        mode: None,
        prior: None,
        cache: CacheMode::Default,
        write: true,
    })
    .unwrap();
    for n in &ir.nodes {
        if n.id == fail_at {
            break;
        }
        let mut out = Map::new();
        out.insert("v".into(), json!(n.id));
        s.completed(&n.id, None, &out, "default", None, None);
    }
    let status = if fail_at.is_empty() { "ok" } else { "failed" };
    assert!(s.finish(status, Some(fail_at), None).is_empty());
}

fn continue_run(
    home: &Path,
    prior: &str,
    ir: &WorkflowIr,
    topic: &str,
    mode: Mode,
) -> Result<(Session, Option<ResumeSummary>), CheckpointError> {
    let runs = runs_dir(home);
    Session::start(Start {
        home,
        run_id: "20260101T000010.000Z_bbbbbbbb",
        trace_id: None,
        root_span_id: None,
        file: Path::new("/tmp/wf.json"),
        ir,
        ir_hash: &crate::history::WorkflowIdent::of(ir).hash,
        nodes: views(ir),
        inputs: &inputs(topic),
        mode: Some(mode),
        prior: Some(Prior::load(&runs, prior).unwrap()),
        cache: CacheMode::Default,
        write: false,
    })
}

const FIRST: &str = "20260101T000000.000Z_aaaaaaaa";

#[test]
fn resume_restores_what_completed_and_invalidates_changes_downstream() {
    let home = tempfile::tempdir().unwrap();
    let ir = wf("p ${a.text}");
    record_run(home.path(), FIRST, &ir, "cats", "d");
    let resume = Mode::Resume { run: FIRST.into() };

    let (s, summary) = continue_run(home.path(), FIRST, &ir, "cats", resume.clone()).unwrap();
    let summary = summary.unwrap();
    assert_eq!(summary.restorable, ["a", "b", "c"]);
    assert!(summary.invalidated.is_empty());
    let r = s.restore("a").unwrap().unwrap();
    assert_eq!(r.outputs["v"], "a");
    assert_eq!(r.how, How::Restored);
    assert_eq!(r.origin.run_id, FIRST);
    assert_eq!(
        r.origin.trace_id.as_deref(),
        Some("0123456789abcdef0123456789abcdef")
    );
    assert!(s.restore("b").unwrap().is_some());
    assert!(s.restore("c").unwrap().is_some());
    // The failed node runs, and nothing after it is restored any more.
    assert!(s.restore("d").unwrap().is_none());

    // b changed: b and c run again, a is kept.
    let changed = wf("q ${a.text}");
    let (_, summary) = continue_run(home.path(), FIRST, &changed, "cats", resume.clone()).unwrap();
    let summary = summary.unwrap();
    assert_eq!(summary.restorable, ["a"]);
    let inv: Vec<(&str, &str)> = summary
        .invalidated
        .iter()
        .map(|i| (i.node.as_str(), i.reason.as_str()))
        .collect();
    assert_eq!(
        inv,
        [
            ("b", "changed since run 20260101T000000.000Z_aaaaaaaa"),
            ("c", "downstream of `b`")
        ]
    );

    // A changed input invalidates the node reading it and everything after.
    let (_, summary) = continue_run(home.path(), FIRST, &ir, "dogs", resume).unwrap();
    let summary = summary.unwrap();
    assert!(summary.restorable.is_empty());
    assert_eq!(summary.invalidated[0].reason, "input `topic` changed");
    assert_eq!(summary.invalidated.len(), 3);
}

#[test]
fn only_and_from_pick_the_nodes_and_refuse_what_cannot_hold() {
    let home = tempfile::tempdir().unwrap();
    let ir = wf("p ${a.text}");
    record_run(home.path(), FIRST, &ir, "cats", "");
    let only = Mode::Only { node: "b".into() };
    let (s, summary) = continue_run(home.path(), FIRST, &ir, "cats", only.clone()).unwrap();
    assert_eq!(summary.unwrap().restorable, ["a"], "nothing after b runs");
    assert!(s.restore("a").unwrap().is_some());
    assert!(!s.stop_before("b"));
    assert!(s.restore("b").unwrap().is_none());
    assert!(s.stop_before("c"), "--only stops after its node");

    // A node before it that changed cannot be reused.
    let mut changed = wf("p ${a.text}");
    changed.nodes[0]
        .params
        .insert("text".into(), json!("other"));
    let (s, _) = continue_run(home.path(), FIRST, &changed, "cats", only).unwrap();
    let e = s.restore("a").unwrap_err().to_string();
    assert!(
        e.contains("--only b: node `a`") && e.contains("--from a"),
        "{e}"
    );

    let (_, summary) = continue_run(
        home.path(),
        FIRST,
        &ir,
        "cats",
        Mode::From { node: "c".into() },
    )
    .unwrap();
    let summary = summary.unwrap();
    assert_eq!(summary.restorable, ["a", "b"]);
    assert_eq!(summary.invalidated[0].reason, "--from c");
    assert_eq!(summary.invalidated[1].reason, "downstream of `c`");

    let e = continue_run(
        home.path(),
        FIRST,
        &ir,
        "cats",
        Mode::From { node: "zz".into() },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("no node `zz`") && e.contains("a, b, c, d"),
        "{e}"
    );
    // A successful run with nothing changed has nothing to resume.
    let e = continue_run(
        home.path(),
        FIRST,
        &ir,
        "cats",
        Mode::Resume { run: FIRST.into() },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("nothing to resume"), "{e}");
}

#[test]
fn memo_policy_and_keys() {
    let ir = wf("p ${a.text}");
    let info = |cache| {
        let v = views(&ir);
        v.iter()
            .map(|n| (n.ir.id.clone(), node_info(n, cache, false).memo))
            .collect::<Vec<_>>()
    };
    let on = |pairs: Vec<(String, bool)>| {
        pairs
            .into_iter()
            .filter(|p| p.1)
            .map(|p| p.0)
            .collect::<Vec<_>>()
    };
    // --cache: temperature-0 LLM and echo, but not a node saying `cache: false`.
    assert_eq!(on(info(CacheMode::On)), ["a", "b", "c"]);
    assert!(on(info(CacheMode::Default)).is_empty());
    assert!(on(info(CacheMode::Off)).is_empty());
    let node = |params: Value| ir::NodeIr {
        id: "x".into(),
        node_type: "llm".into(),
        params: params.as_object().unwrap().clone(),
        batch: None,
        purpose: None,
        cache: None,
    };
    assert!(deterministic(&node(json!({"temperature": 0.0}))));
    assert!(deterministic(&node(json!({"temperature": "0"}))));
    assert!(!deterministic(&node(json!({"temperature": 0.2}))));
    assert!(
        !deterministic(&node(json!({}))),
        "provider default is not 0"
    );

    // The key follows the values the node reads, and nothing else.
    let home = tempfile::tempdir().unwrap();
    let (s, _) = Session::start(Start {
        home: home.path(),
        run_id: FIRST,
        trace_id: None,
        root_span_id: None,
        file: Path::new("/tmp/wf.json"),
        ir: &ir,
        ir_hash: &crate::history::WorkflowIdent::of(&ir).hash,
        nodes: views(&ir),
        inputs: &inputs("cats"),
        mode: None,
        prior: None,
        cache: CacheMode::On,
        write: false,
    })
    .unwrap();
    let mut store = inputs("cats");
    store.insert("a".into(), json!({"text": "cats"}));
    let k1 = s.memo_key("b", &store).unwrap();
    store.insert("tone".into(), json!("loud"));
    assert_eq!(s.memo_key("b", &store).unwrap(), k1, "b does not read tone");
    store.insert("a".into(), json!({"text": "dogs"}));
    assert_ne!(s.memo_key("b", &store).unwrap(), k1);
    assert!(s.memo_key("d", &store).is_none());
}

#[test]
fn run_arguments_resolve() {
    let home = tempfile::tempdir().unwrap();
    let runs = runs_dir(home.path());
    assert!(resolve(&runs, "last")
        .unwrap_err()
        .to_string()
        .contains("no checkpointed runs"));
    for id in [
        FIRST,
        "20260102T000000.000Z_abcdef12",
        "20260102T000000.000Z_abcdef34",
    ] {
        std::fs::create_dir_all(runs.join(id)).unwrap();
    }
    assert_eq!(
        resolve(&runs, "last").unwrap(),
        "20260102T000000.000Z_abcdef34"
    );
    assert_eq!(resolve(&runs, "aaaa").unwrap(), FIRST);
    assert_eq!(resolve(&runs, "20260101").unwrap(), FIRST);
    assert!(resolve(&runs, "abcdef")
        .unwrap_err()
        .to_string()
        .contains("ambiguous"));
    assert!(resolve(&runs, "zzz")
        .unwrap_err()
        .to_string()
        .contains("no run `zzz`"));
}

/// Fingerprints in earlier checkpoints were taken over a `json!` value; the
/// borrowed basis must hash the same bytes, or every node of a run started
/// before an upgrade would read as changed on resume.
#[test]
fn fingerprint_and_memo_basis_match_the_json_form() {
    let child = wf("${a.text}");
    let ir = ir::from_value(
        &json!({"ir_version": "0.1.0", "nodes": [
            {"id": "m", "type": "llm", "params": {"model": "echo", "prompt": "p ${x}", "temperature": 0, "n": 1.5, "z": [1, {"b": 2, "a": null}]},
             "batch": {"items": "${list}", "parallel": true, "max_concurrent": 3}},
            {"id": "w", "type": "workflow", "params": {"workflow_ref": "c.json"}}]}),
        "wf.json",
    )
    .unwrap();
    for (n, child) in [(&ir.nodes[0], None), (&ir.nodes[1], Some(&child))] {
        let info = node_info(&NodeView { ir: n, child }, CacheMode::On, false);
        let basis =
            json!({"type": n.node_type, "params": n.params, "batch": n.batch, "child": child});
        let old =
            store::sha256_hex(&serde_json::to_vec(&json!({"id": n.id, "node": basis})).unwrap());
        assert_eq!(info.head.fingerprint, old, "{}", n.id);
        if info.memo {
            assert_eq!(info.basis, basis);
        } else {
            assert_eq!(info.basis, Value::Null);
        }
    }
    assert!(
        node_info(
            &NodeView {
                ir: &ir.nodes[0],
                child: None
            },
            CacheMode::On,
            false
        )
        .memo
    );
    // What a node reads is worked out for its memo key or for a resume only.
    let m = NodeView {
        ir: &ir.nodes[0],
        child: None,
    };
    assert!(node_info(&m, CacheMode::Off, false).roots.is_empty());
    for (cache, resuming) in [(CacheMode::Off, true), (CacheMode::On, false)] {
        assert_eq!(
            node_info(&m, cache, resuming).roots,
            ["x", "list"],
            "{resuming}"
        );
    }
}
