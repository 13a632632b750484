//! Running workflows: outputs, JSON shape, metrics, parameters, stdin and
//! when trace files are (and are not) written.

use super::common::*;
use serde_json::{json, Value};

fn simple() -> Value {
    json!({"ir_version": "0.1.0", "metadata": {"name": "simple"},
        "inputs": {"who": {"type": "string", "default": "world"}, "n": {"type": "integer", "required": false}},
        "nodes": [
            {"id": "a", "type": "echo", "params": {"greeting": "hello ${who}"}},
            {"id": "b", "type": "shell", "params": {"command": "printf '%s' \"${a.greeting}\" | tr a-z A-Z"}}
        ],
        "edges": [{"from": "a", "to": "b"}],
        "outputs": {"shout": {"source": "${b.stdout}"}, "n": {"source": "${n}"}}})
}

#[test]
fn json_output_has_the_documented_shape() {
    let env = Env::new();
    let wf = env.workflow("wf.json", simple());
    let (v, code, _) = run_json(
        env.pflow()
            .args(["run", "--output-format", "json"])
            .arg(&wf)
            .arg("n=5"),
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["success"], json!(true));
    assert_eq!(v["result"], json!({"shout": "HELLO WORLD", "n": 5}));
    assert_eq!(v["error"], Value::Null);
    let m = &v["metrics"];
    let w = &m["workflow"];
    for k in [
        "duration_ms",
        "nodes_executed",
        "llm_calls",
        "tokens",
        "cost_usd",
        "node_timings",
    ] {
        assert!(w.get(k).is_some(), "metrics.workflow.{k} missing: {m}");
    }
    for k in [
        "input",
        "output",
        "total",
        "cache_read",
        "cache_write",
        "reasoning",
    ] {
        assert_eq!(w["tokens"][k], json!(0), "tokens.{k}");
    }
    for k in ["duration_ms", "llm_calls", "tokens_total", "cost_usd"] {
        assert!(m["total"].get(k).is_some(), "metrics.total.{k} missing");
    }
    assert!(
        m.get("planner").is_none(),
        "no planner section without the planner"
    );
    assert_eq!(w["nodes_executed"], json!(2));
    let timings = w["node_timings"].as_object().unwrap();
    assert_eq!(timings.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert!(timings["b"].as_f64().unwrap() > 0.0);
    assert!(m["total"]["duration_ms"].as_f64().unwrap() >= w["duration_ms"].as_f64().unwrap());
    let tid = v["trace_id"].as_str().unwrap();
    assert_eq!(tid.len(), 32);
    assert!(tid
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    // Success without --trace: nothing on disk.
    assert_eq!(v["trace_file"], Value::Null);
    // Only the run history (history.db and its WAL files) and the run's
    // checkpoint (runs/<run id>) are written.
    let written: Vec<String> = std::fs::read_dir(env.home())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        written
            .iter()
            .all(|n| n.starts_with("history.db") || n == "runs"),
        "no trace may be written without --trace or a failure: {written:?}"
    );
    let run_id = v["run_id"].as_str().unwrap();
    assert!(env
        .home()
        .join("runs")
        .join(run_id)
        .join("manifest.json")
        .is_file());
    assert!(
        v.get("resume_command").is_none(),
        "a run that succeeded: {v}"
    );
}

#[test]
fn text_output_puts_outputs_on_stdout_and_summary_on_stderr() {
    let env = Env::new();
    let wf = env.workflow("wf.json", simple());
    let out = env.pflow().arg(&wf).arg("who=pflow").output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout, "shout: HELLO PFLOW\nn: null\n");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("✓ 2 nodes in"), "{stderr}");
    assert!(
        stderr.contains("0 LLM calls · 0 tokens · $0.000000"),
        "{stderr}"
    );
}

#[test]
fn trace_flag_writes_a_private_file_named_by_time_and_trace_id() {
    let env = Env::new();
    let wf = env.workflow("wf.json", simple());
    let (v, code, stderr) = run_json(
        env.pflow()
            .args(["--trace", "--output-format", "json"])
            .arg(&wf),
    );
    assert_eq!(code, 0);
    let path = v["trace_file"].as_str().expect("trace_file");
    let tid = v["trace_id"].as_str().unwrap();
    assert!(stderr.contains(&format!("Trace saved: {path}")), "{stderr}");
    let p = std::path::Path::new(path);
    assert_eq!(p.parent().unwrap(), env.traces_dir());
    let name = p.file_name().unwrap().to_str().unwrap();
    assert!(name.contains(tid), "{name}");
    assert!(name.starts_with("20"), "time-sortable name: {name}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(env.traces_dir())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    // No temp files left beside it.
    assert_eq!(env.trace_files().len(), 1);
    // A second run sorts after the first.
    let (v2, _, _) = run_json(
        env.pflow()
            .args(["--trace", "--output-format", "json"])
            .arg(&wf),
    );
    let files = env.trace_files();
    assert_eq!(files.len(), 2);
    assert_eq!(
        files[1].to_str().unwrap(),
        v2["trace_file"].as_str().unwrap()
    );
}

#[test]
fn a_failed_run_always_saves_its_trace() {
    let env = Env::new();
    let wf = env.workflow(
        "fail.json",
        json!({"ir_version": "0.1.0", "nodes": [
        {"id": "ok", "type": "echo", "params": {"x": 1}},
        {"id": "boom", "type": "shell", "params": {"command": "echo bad >&2; exit 4"}}],
        "edges": [{"from": "ok", "to": "boom"}]}),
    );
    let (v, code, stderr) = run_json(env.pflow().args(["--output-format", "json"]).arg(&wf));
    assert_eq!(code, 1);
    assert_eq!(v["success"], json!(false));
    assert_eq!(v["error"]["node"], json!("boom"));
    assert_eq!(v["error"]["type"], json!("exit_status"));
    assert!(v["error"]["message"].as_str().unwrap().contains("status 4"));
    assert_eq!(v["error"]["details"]["exit_code"], json!(4));
    assert_eq!(v["metrics"]["workflow"]["nodes_executed"], json!(2));
    let path = v["trace_file"].as_str().expect("trace saved on failure");
    assert!(stderr.contains("Trace saved:"));
    let (spans, _) = read_trace(std::path::Path::new(path));
    let boom = by_name(&spans, "node boom");
    assert_eq!(boom.status_code, 2);
    assert_eq!(boom.s("error.type"), "exit_status");
}

#[test]
fn otel_sdk_disabled_switches_telemetry_off() {
    let env = Env::new();
    let wf = env.workflow("fail.json", json!({"ir_version": "0.1.0", "nodes": [{"id": "x", "type": "echo", "params": {"fail": "no"}}]}));
    let (v, code, _) = run_json(
        env.pflow()
            .env("OTEL_SDK_DISABLED", "true")
            .args(["--trace", "--output-format", "json"])
            .arg(&wf),
    );
    assert_eq!(code, 1);
    assert_eq!(v["metrics"], Value::Null);
    assert_eq!(v["trace_file"], Value::Null);
    assert_eq!(v["trace_id"], Value::Null);
    assert!(!env.traces_dir().exists());
    // Same result as with telemetry on.
    let wf = env.workflow("wf.json", simple());
    let (off, _, _) = run_json(
        env.pflow()
            .env("OTEL_SDK_DISABLED", "true")
            .args(["--output-format", "json"])
            .arg(&wf),
    );
    let (on, _, _) = run_json(
        env.pflow()
            .args(["--trace", "--output-format", "json"])
            .arg(&wf),
    );
    assert_eq!(off["result"], on["result"]);
}

#[test]
fn unwritable_trace_directory_is_a_warning_not_a_failure() {
    let env = Env::new();
    let wf = env.workflow("wf.json", simple());
    // A regular file where the home directory should be: no directory can be made (even as root).
    let blocker = env.write("blocker", "x");
    let out = env
        .pflow()
        .env("PFLOW_HOME", &blocker)
        .args(["--trace", "--output-format", "json"])
        .arg(&wf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["success"], json!(true));
    assert_eq!(v["result"]["shout"], json!("HELLO WORLD"));
    assert_eq!(v["trace_file"], Value::Null);
    // One line each for the trace, the checkpoint and the run history: all name the culprit.
    let warnings = v["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(
        warnings
            .iter()
            .all(|w| w.as_str().unwrap().contains("blocker")),
        "{warnings:?}"
    );
}

#[test]
fn params_parse_as_json_and_stdin_is_readable() {
    let env = Env::new();
    let wf = env.workflow("wf.json", json!({"ir_version": "0.1.0",
        "nodes": [{"id": "e", "type": "echo", "params": {"obj": "${cfg}", "first": "${cfg.list[0]}", "text": "${stdin}", "field": "${stdin.k}"}}],
        "outputs": {"obj": {"source": "${e.obj}"}, "first": {"source": "${e.first}"}, "text": {"source": "${e.text}"}, "field": {"source": "${e.field}"}}}));
    let (v, code, _) = run_json(
        env.pflow()
            .args(["--output-format", "json"])
            .arg(&wf)
            .arg(r#"cfg={"list":[7,8]}"#)
            .write_stdin(r#"{"k": "from stdin"}"#),
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["result"]["obj"], json!({"list": [7, 8]}));
    assert_eq!(v["result"]["first"], json!(7));
    assert_eq!(v["result"]["field"], json!("from stdin"));
}

#[test]
fn nodes_command_lists_params_and_outputs() {
    let env = Env::new();
    let out = env.pflow().arg("nodes").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for n in [
        "read-file",
        "write-file",
        "copy-file",
        "move-file",
        "delete-file",
        "shell",
        "http",
        "echo",
        "workflow",
        "max_retries",
    ] {
        assert!(text.contains(n), "{n} missing from `pflow nodes`");
    }
    let (v, code, _) = run_json(env.pflow().args(["nodes", "--output-format", "json"]));
    assert_eq!(code, 0);
    let shell = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "shell")
        .unwrap();
    let outs: Vec<&str> = shell["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(outs, ["stdout", "stderr", "exit_code"]);
}

#[test]
fn write_file_replaces_longer_and_shorter_content_whole() {
    // write-file overwrites in place and cuts the old tail (no O_TRUNC): the
    // file must hold exactly the new content, keep its inode and mode, and
    // writing to a non-regular file (/dev/null) must still work.
    let env = Env::new();
    let target = env.dir.path().join("out.txt");
    std::fs::write(&target, "a much longer old content\nsecond line\n").unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).unwrap();
    let ino = std::fs::metadata(&target).unwrap().ino();
    let wf = env.workflow("over.json", json!({"ir_version": "0.1.0", "nodes": [
        {"id": "short", "type": "write-file", "params": {"file_path": "out.txt", "content": "new"}},
        {"id": "r1", "type": "read-file", "params": {"file_path": "out.txt"}},
        {"id": "long", "type": "write-file", "params": {"file_path": "out.txt", "content": "longer than before"}},
        {"id": "r2", "type": "read-file", "params": {"file_path": "out.txt"}},
        {"id": "empty", "type": "write-file", "params": {"file_path": "out.txt", "content": ""}},
        {"id": "null", "type": "write-file", "params": {"file_path": "/dev/null", "content": "discarded"}}],
        "edges": [{"from": "short", "to": "r1"}, {"from": "r1", "to": "long"}, {"from": "long", "to": "r2"},
                  {"from": "r2", "to": "empty"}, {"from": "empty", "to": "null"}],
        "outputs": {"first": {"source": "${r1.content}"}, "second": {"source": "${r2.content}"}}}));
    let (v, code, _) = run_json(env.pflow().args(["--output-format", "json"]).arg(&wf));
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        v["result"],
        json!({"first": "new", "second": "longer than before"})
    );
    let meta = std::fs::metadata(&target).unwrap();
    assert_eq!(meta.len(), 0, "the empty write leaves an empty file");
    assert_eq!(meta.ino(), ino, "same file, not a replacement");
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
}

#[test]
fn file_nodes_round_trip() {
    let env = Env::new();
    let wf = env.workflow("files.json", json!({"ir_version": "0.1.0", "nodes": [
        {"id": "w", "type": "write-file", "params": {"file_path": "out/a/b.txt", "content": "line1\n"}},
        {"id": "w2", "type": "write-file", "params": {"file_path": "out/a/b.txt", "content": "line2\n", "append": true}},
        {"id": "c", "type": "copy-file", "params": {"source_path": "out/a/b.txt", "dest_path": "out/c.txt"}},
        {"id": "m", "type": "move-file", "params": {"source_path": "out/c.txt", "dest_path": "out/d.txt"}},
        {"id": "r", "type": "read-file", "params": {"file_path": "out/d.txt"}},
        {"id": "d", "type": "delete-file", "params": {"file_path": "out/a/b.txt"}}],
        "edges": [{"from": "w", "to": "w2"}, {"from": "w2", "to": "c"}, {"from": "c", "to": "m"}, {"from": "m", "to": "r"}, {"from": "r", "to": "d"}],
        "outputs": {"content": {"source": "${r.content}"}, "written": {"source": "${w.written}"}}}));
    let (v, code, _) = run_json(env.pflow().args(["--output-format", "json"]).arg(&wf));
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        v["result"],
        json!({"content": "line1\nline2\n", "written": 6})
    );
    assert!(!env.dir.path().join("out/a/b.txt").exists());
    assert!(!env.dir.path().join("out/c.txt").exists());
    // Copying onto an existing file needs overwrite.
    let wf = env.workflow("copy.json", json!({"ir_version": "0.1.0", "nodes": [{"id": "c", "type": "copy-file", "params": {"source_path": "out/d.txt", "dest_path": "out/d.txt"}}]}));
    let (v, code, _) = run_json(env.pflow().args(["--output-format", "json"]).arg(&wf));
    assert_eq!(code, 1);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("overwrite"),
        "{v}"
    );
}

#[test]
fn http_node_against_a_local_server() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..2 {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let (status, body) = if req.starts_with("POST") {
                ("201 Created", r#"{"id": 9, "items": [{"name": "x"}]}"#)
            } else {
                ("404 Not Found", "missing")
            };
            let ct = if req.starts_with("POST") {
                "application/json"
            } else {
                "text/plain"
            };
            write!(s, "HTTP/1.1 {status}\r\ncontent-type: {ct}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()).unwrap();
            seen.push(req);
        }
        seen
    });
    let env = Env::new();
    let wf = env.workflow("http.json", json!({"ir_version": "0.1.0", "inputs": {"port": {"type": "integer"}}, "nodes": [
        {"id": "post", "type": "http", "params": {"url": "http://127.0.0.1:${port}/things", "json": {"a": 1}, "headers": {"x-test": "yes"}}},
        {"id": "get", "type": "http", "params": {"url": "http://127.0.0.1:${port}/missing"}},
        {"id": "handled", "type": "echo", "params": {"status": "${get.status_code}", "body": "${get.response}"}}],
        "edges": [{"from": "post", "to": "get"}, {"from": "get", "to": "handled", "action": "error"}],
        "outputs": {"name": {"source": "${post.response.items[0].name}"}, "status": {"source": "${post.status_code}"}, "missing": {"source": "${handled.status}"}}}));
    let (v, code, _) = run_json(
        env.pflow()
            .args(["--output-format", "json"])
            .arg(&wf)
            .arg(format!("port={port}")),
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        v["result"],
        json!({"name": "x", "status": 201, "missing": 404})
    );
    let reqs = server.join().unwrap();
    assert!(reqs[0].starts_with("POST /things"), "{}", reqs[0]);
    assert!(reqs[0].to_ascii_lowercase().contains("x-test: yes"));
    assert!(reqs[0].ends_with(r#"{"a":1}"#), "{}", reqs[0]);
}

#[test]
fn saved_workflows_run_by_name() {
    let env = Env::new();
    let wf = env.workflow("greet.json", simple());
    let out = env
        .pflow()
        .args(["workflow", "save"])
        .arg(&wf)
        .args(["--name", "greet", "--description", "Shout a greeting"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(env.home().join("workflows/greet.json").is_file());
    let (v, _, _) = run_json(
        env.pflow()
            .args(["workflow", "list", "--output-format", "json"]),
    );
    assert_eq!(v["workflows"][0]["name"], json!("greet"));
    assert_eq!(v["workflows"][0]["description"], json!("Shout a greeting"));
    assert_eq!(v["workflows"][0]["inputs"], json!(["who", "n"]));
    let out = env
        .pflow()
        .args(["workflow", "show", "greet"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Shout a greeting") && text.contains("who") && text.contains("shell"),
        "{text}"
    );
    // By name, from anywhere, with parameters; and through the shortcut.
    let (v, code, _) = run_json(env.pflow().current_dir(env.home()).args([
        "run",
        "greet",
        "who=you",
        "--output-format",
        "json",
    ]));
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["result"]["shout"], json!("HELLO YOU"));
    let (v, _, _) = run_json(env.pflow().args(["greet", "--output-format", "json"]));
    assert_eq!(v["result"]["shout"], json!("HELLO WORLD"));
    // Clear errors.
    let out = env
        .pflow()
        .args(["workflow", "save"])
        .arg(&wf)
        .args(["--name", "greet"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    let out = env
        .pflow()
        .args(["workflow", "show", "gret"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean `greet`"));
    let out = env.pflow().args(["run", "nosuch"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// The library runs a workflow the way `pflow run` does (`pflow::run`), and
/// one process can run one workflow after another: each run has its own
/// metrics, trace file and history row.
#[tokio::test(flavor = "multi_thread")]
async fn the_library_runs_workflows_like_the_cli() {
    use pflow::outcome::{ExitCode, RunStatus};
    use pflow::run::{self, Quiet, RunConfig, Source};
    let env = Env::new();
    let wf = env.workflow(
        "wf.json",
        json!({"ir_version": "0.1.0", "inputs": {"who": {"type": "string"}},
            "nodes": [{"id": "greet", "type": "echo", "params": {"text": "hello ${who}"}},
                {"id": "shout", "type": "shell", "params": {"command": "tr a-z A-Z", "stdin": "${greet.text}"}}],
            "edges": [{"from": "greet", "to": "shout"}],
            "outputs": {"loud": {"source": "${shout.stdout}"}}}),
    );
    let mut trace_ids = Vec::new();
    for who in ["ada", "bob"] {
        let mut config = RunConfig::new(Source::File(wf.clone()));
        config.home = env.home();
        config.save_trace = true;
        config.read_stdin = false;
        config.params.insert("who".into(), json!(who));
        let report = run::run(config, &mut Quiet).await;
        assert_eq!(
            report.exit_code,
            ExitCode::Success,
            "{:?}",
            report.result.err()
        );
        assert_eq!(report.status, RunStatus::Ok);
        let out = report.result.as_ref().unwrap();
        assert_eq!(
            out.outputs["loud"],
            json!(format!("HELLO {}", who.to_uppercase()))
        );
        let m = report
            .metrics
            .as_ref()
            .expect("metrics for every run, not only the first");
        assert!(m.workflow.nodes_executed >= 2, "{who}");
        let file = report.trace_file.clone().expect("trace kept");
        assert!(file.starts_with(env.traces_dir()), "{}", file.display());
        let (spans, _) = read_trace(&file);
        assert!(spans.iter().any(|s| s.name == "node shout"), "{who}");
        assert!(spans
            .iter()
            .all(|s| Some(&s.trace_id) == report.trace_id.as_ref()));
        trace_ids.push(report.trace_id.clone());
    }
    assert_ne!(trace_ids[0], trace_ids[1]);
    assert!(env.home().join("history.db").is_file());

    // Invalid input: exit code 2, status `invalid`, and the trace is still kept.
    let bad = env.write("bad.json", "{\"nodes\": [");
    let mut config = RunConfig::new(Source::File(bad));
    config.home = env.home();
    let report = run::run(config, &mut Quiet).await;
    assert_eq!(report.exit_code, ExitCode::Invalid);
    assert_eq!(report.status, RunStatus::Invalid);
    assert!(report.trace_file.is_some_and(|f| f.is_file()));
}
