//! `pflow trace list|show|summary` on saved traces: snapshots of the
//! terminal views on fixed trace files, the metrics round trip (a run's
//! printed `metrics` equals `trace summary` of its file), and how traces are
//! named (file, id prefix, `last`, `last~N`).

use super::common::*;
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const REVIEW: &str = "20261201T190339.377Z_e4dc5f3657d643f701f02e0e78d8b794.otlp.json";
const FAILED: &str = "20261201T190340.170Z_5669f73d606dd4bca4919a226c9aacc3.otlp.json";

fn fixture_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/traces")
}

/// A home whose traces are the two fixed fixture runs.
fn env_with_fixtures() -> Env {
    let env = Env::new();
    std::fs::create_dir_all(env.traces_dir()).unwrap();
    for f in [REVIEW, FAILED] {
        std::fs::copy(fixture_dir().join(f), env.traces_dir().join(f)).unwrap();
    }
    env
}

fn stdout_of(cmd: &mut assert_cmd::Command) -> (String, String, i32) {
    let out = cmd.output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

#[test]
fn show_tree_of_a_successful_run() {
    let env = env_with_fixtures();
    let (out, err, code) = stdout_of(env.pflow().args(["trace", "show", "e4dc5f36"]));
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains('\x1b'), "no colour off a TTY");
    insta::assert_snapshot!("show_review", out);
}

#[test]
fn show_tree_of_a_failed_run_marks_failures() {
    let env = env_with_fixtures();
    let (out, err, code) = stdout_of(env.pflow().args(["trace", "show", "last"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("✗ node check (attempt 2)"), "{out}");
    insta::assert_snapshot!("show_failed", out);
}

#[test]
fn show_one_node_with_prompt_and_response() {
    let env = env_with_fixtures();
    let (out, err, code) = stdout_of(
        env.pflow()
            .args(["trace", "show", "last~1", "--node", "ask"]),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("prompt:\n      What is the weather in SF?"),
        "{out}"
    );
    assert!(
        out.contains("response:\n      I'm unable to provide"),
        "{out}"
    );
    // The API key given as a param was redacted when the trace was written.
    assert!(!out.contains("sk-test-abcdef"), "{out}");
    insta::assert_snapshot!("node_ask", out);
    let (out, _, _) = stdout_of(
        env.pflow()
            .args(["trace", "show", "last~1", "--node", "each[1]"]),
    );
    assert!(out.contains("item b"), "{out}");
}

#[test]
fn unknown_node_is_a_clear_error() {
    let env = env_with_fixtures();
    let (_, err, code) = stdout_of(
        env.pflow()
            .args(["trace", "show", "last~1", "--node", "critc"]),
    );
    assert_eq!(code, 2);
    assert!(err.contains("no node `critc`"), "{err}");
    assert!(err.contains("Did you mean `critic`?"), "{err}");
}

#[test]
fn list_newest_first() {
    let env = env_with_fixtures();
    let (out, err, code) = stdout_of(env.pflow().args(["trace", "list"]));
    assert_eq!(code, 0, "{err}");
    insta::assert_snapshot!("list", out);
    let (v, code, _) = run_json(
        env.pflow()
            .args(["--output-format", "json", "trace", "list"]),
    );
    assert_eq!(code, 0);
    assert_eq!(v["total"], 2);
    assert_eq!(v["traces"][0]["workflow"], "deploy-check");
    assert_eq!(v["traces"][0]["status"], "failed");
    assert_eq!(v["traces"][1]["tokens_total"], 102);
    assert_eq!(v["traces"][1]["cost_usd"], 0.00081);
}

#[test]
fn traces_are_named_by_file_id_prefix_or_last() {
    let env = env_with_fixtures();
    let summary = |arg: &str| run_json(env.pflow().args(["trace", "summary", arg]));
    let by_file = summary(env.traces_dir().join(REVIEW).to_str().unwrap());
    let by_prefix = summary("E4DC5F");
    let by_full = summary("e4dc5f3657d643f701f02e0e78d8b794");
    let by_last = summary("last~1");
    assert_eq!(by_file.1, 0);
    for other in [&by_prefix, &by_full, &by_last] {
        assert_eq!(other.0, by_file.0);
    }
    assert_eq!(by_file.0["total"]["llm_calls"], 2);
    assert_eq!(by_file.0["total"]["tokens_total"], 102);
    // Errors: unknown id (2), too far back (2), a broken file (1).
    let failing = |arg: &str| stdout_of(env.pflow().args(["trace", "summary", arg]));
    let (_, err, code) = failing("ffff");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`ffff` is neither a file nor the id"), "{err}");
    let (_, err, code) = failing("last~5");
    assert_eq!(code, 2);
    assert!(err.contains("only 2 saved trace(s)"), "{err}");
    let bad = env.write("bad.otlp.json", "{\"resourceSpans\": []}\n{oops\n");
    let (_, err, code) = failing(bad.to_str().unwrap());
    assert_eq!(code, 1);
    assert!(err.contains("line 2"), "{err}");
    let (v, code, _) =
        run_json(
            env.pflow()
                .args(["--output-format", "json", "trace", "summary", "ffff"]),
        );
    assert_eq!(code, 2);
    assert_eq!(v["success"], false);
}

#[test]
fn no_traces_yet() {
    let env = Env::new();
    let (out, err, code) = stdout_of(env.pflow().args(["trace", "list"]));
    assert_eq!(code, 0);
    assert!(out.is_empty());
    assert!(err.contains("no saved traces"), "{err}");
    let (_, err, code) = stdout_of(env.pflow().args(["trace", "show"]));
    assert_eq!(code, 2);
    assert!(err.contains("no saved traces"), "{err}");
}

/// The metrics a run prints and `trace summary` of its file are one object:
/// the same aggregation over the same spans.
#[tokio::test(flavor = "multi_thread")]
async fn summary_recomputes_the_printed_metrics() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            llm_fixture("openai-chat-cache-read.json"),
            "application/json",
        ))
        .mount(&server)
        .await;
    let env = Env::new();
    let wf = env.workflow(
        "wf.json",
        json!({"ir_version": "0.1.0", "metadata": {"name": "roundtrip"},
            "nodes": [
                {"id": "a", "type": "llm", "params": {"model": "gpt-4o", "prompt": "one"}},
                {"id": "b", "type": "shell", "batch": {"items": [1, 2, 3], "parallel": true}, "params": {"command": "echo ${item}"}},
                {"id": "c", "type": "llm", "params": {"model": "gpt-4o-mini", "prompt": "two ${a.response}"}},
                {"id": "d", "type": "shell", "params": {"command": "exit 1", "max_retries": 1}}
            ],
            "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}, {"from": "c", "to": "d"}]}),
    );
    let mut cmd = env.pflow();
    cmd.env("OPENAI_BASE_URL", format!("{}/v1", server.uri()))
        .env("OPENAI_API_KEY", "sk-test-key-abcdefghijklmnop")
        .args(["--output-format", "json"])
        .arg(&wf);
    let (run, code, _) = run_json(&mut cmd);
    assert_eq!(code, 1, "the last node fails, so the trace is kept");
    assert!(run["metrics"]["total"]["cost_usd"].as_f64().unwrap() > 0.0);
    let id = run["trace_id"].as_str().unwrap();
    let (summary, code, err) = run_json(env.pflow().args(["trace", "summary", id]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(summary, run["metrics"]);
    // Text mode prints the same JSON object.
    let (text, _, _) = run_json(env.pflow().args(["trace", "summary", &id[..8]]));
    assert_eq!(text, summary);
    // `trace show --output-format json` carries it too, with every span.
    let (shown, _, _) =
        run_json(
            env.pflow()
                .args(["--output-format", "json", "trace", "show", id]),
        );
    assert_eq!(shown["metrics"], summary);
    assert_eq!(shown["status"], "failed");
    let spans = shown["spans"].as_array().unwrap();
    assert!(spans.iter().any(|s| s["name"] == "chat gpt-4o-mini"));
    assert_eq!(
        spans
            .iter()
            .filter(|s| s["attributes"]["pflow.node.path"] == "d")
            .count(),
        2,
        "both attempts of d"
    );
    let _: Value = summary;
}

/// On a terminal the tree is coloured (failures red), and `NO_COLOR` turns it off.
#[test]
fn colour_only_on_a_tty_and_never_with_no_color() {
    let has_script = std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !tool_present(has_script, "util-linux `script`") {
        return;
    }
    let env = env_with_fixtures();
    let bin = assert_cmd::cargo::cargo_bin("pflow");
    let run = |no_color: bool| {
        let mut c = std::process::Command::new("script");
        c.args([
            "-qec",
            &format!("{} trace show last", bin.display()),
            "/dev/null",
        ])
        .env("PFLOW_HOME", env.home())
        .env("TERM", "xterm");
        if no_color {
            c.env("NO_COLOR", "1");
        } else {
            c.env_remove("NO_COLOR");
        }
        String::from_utf8_lossy(&c.output().unwrap().stdout).into_owned()
    };
    let coloured = run(false);
    assert!(coloured.contains("\x1b[31m✗ node check"), "{coloured:?}");
    let plain = run(true);
    assert!(plain.contains("✗ node check"), "{plain:?}");
    assert!(!plain.contains("\x1b["), "{plain:?}");
}
