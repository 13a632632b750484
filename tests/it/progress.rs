//! The progress display: plain lines on stderr when not a terminal (or with
//! `--no-progress`), the live bar on a real terminal (driven through
//! util-linux `script`), and stdout left exactly as it was.

use super::common::*;
use serde_json::{json, Value};

/// Two shell nodes, a three-item batch and an LLM call (offline echo model).
fn pipeline() -> Value {
    json!({"ir_version": "0.1.0", "metadata": {"name": "progress"},
        "nodes": [
            {"id": "first", "type": "shell", "params": {"command": "echo one"}},
            {"id": "count", "type": "shell",
             "batch": {"items": ["a", "b", "c"], "as": "x", "parallel": true, "max_concurrent": 2},
             "params": {"command": "echo ${x}"}},
            {"id": "ask", "type": "llm", "params": {"model": "echo", "prompt": "say ${first.stdout}"}},
            {"id": "last", "type": "shell", "params": {"command": "printf done"}}
        ],
        "edges": [{"from": "first", "to": "count"}, {"from": "count", "to": "ask"}, {"from": "ask", "to": "last"}],
        "outputs": {"out": {"source": "${last.stdout}"}}})
}

/// `[0.12s] ✓ first (1/4 nodes) · ...` → `✓ first (1/4 nodes) · ...`: the progress lines, times dropped.
fn progress_lines(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.starts_with('[') && l.contains("s] "))
        .filter_map(|l| l.split_once("s] ").map(|(_, r)| r.to_string()))
        .collect()
}

fn assert_pipeline_lines(stderr: &str) {
    let lines = progress_lines(stderr);
    assert_eq!(lines.len(), 4, "one line per top-level node:\n{stderr}");
    assert_eq!(
        lines[0], "✓ first (1/4 nodes) · 0 tok · $0.000000",
        "{stderr}"
    );
    assert_eq!(
        lines[1], "✓ count 3 items (2/4 nodes, 3/3 items) · 0 tok · $0.000000",
        "{stderr}"
    );
    // The LLM call's tokens are counted as soon as it is recorded.
    assert!(
        lines[2].starts_with("✓ ask (3/4 nodes, 3/3 items) · "),
        "{stderr}"
    );
    assert!(!lines[2].contains(" · 0 tok"), "{stderr}");
    assert!(
        lines[3].starts_with("✓ last (4/4 nodes, 3/3 items) · "),
        "{stderr}"
    );
    assert_eq!(
        lines[2].split_once(") · ").unwrap().1,
        lines[3].split_once(") · ").unwrap().1,
        "running totals"
    );
}

#[test]
fn plain_lines_on_stderr_when_not_a_terminal_and_stdout_unchanged() {
    let env = Env::new();
    let wf = env.workflow("wf.json", pipeline());
    let out = env.pflow().arg("run").arg(&wf).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "done\n");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_pipeline_lines(&stderr);
    // The summary still comes last, after every progress line.
    let last = stderr.lines().last().unwrap();
    // Progress counts nodes as the summary does: 4 of 4, the batch items apart.
    assert!(
        last.starts_with("✓ 4 nodes (+3 batch items) in"),
        "{stderr}"
    );
    assert!(
        progress_lines(&stderr)[3].contains("(4/4 nodes, 3/3 items)"),
        "{stderr}"
    );
    // Tokens shown in progress are the summary's tokens.
    let tok = progress_lines(&stderr)[3].clone();
    let n: String = tok
        .split(" · ")
        .nth(1)
        .unwrap()
        .trim_end_matches(" tok")
        .replace(',', "");
    assert!(last.contains(&format!("· {n} tokens ·")), "{tok} vs {last}");

    // JSON: stdout is still exactly one JSON object; progress stays on stderr.
    let (v, code, stderr) = run_json(
        env.pflow()
            .args(["--output-format", "json", "run"])
            .arg(&wf),
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["result"], json!({"out": "done"}));
    assert_pipeline_lines(&stderr);
}

#[test]
fn no_progress_flag_gives_plain_lines_and_pflow_progress_off_none() {
    let env = Env::new();
    let wf = env.workflow("wf.json", pipeline());
    let out = env.pflow().arg("--no-progress").arg(&wf).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_pipeline_lines(&String::from_utf8(out.stderr).unwrap());

    let out = env
        .pflow()
        .env("PFLOW_PROGRESS", "off")
        .arg(&wf)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "only the summary:\n{stderr}");
    assert!(
        stderr.starts_with("✓ 4 nodes (+3 batch items) in"),
        "{stderr}"
    );

    let out = env
        .pflow()
        .env("PFLOW_PROGRESS", "sometimes")
        .arg(&wf)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("warning: PFLOW_PROGRESS=`sometimes` is not one of off, plain, auto"),
        "{stderr}"
    );
    assert_pipeline_lines(&stderr);
}

#[test]
fn progress_works_with_telemetry_off() {
    let env = Env::new();
    let wf = env.workflow("wf.json", pipeline());
    let (v, code, stderr) = run_json(
        env.pflow()
            .env("OTEL_SDK_DISABLED", "true")
            .args(["--output-format", "json"])
            .arg(&wf),
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["metrics"], Value::Null, "telemetry is really off");
    assert_pipeline_lines(&stderr);
    assert!(env.trace_files().is_empty());
}

#[test]
fn failures_and_retries_are_named() {
    let env = Env::new();
    let wf = env.workflow(
        "wf.json",
        json!({"ir_version": "0.1.0",
            "nodes": [
                {"id": "ok", "type": "shell", "params": {"command": "true"}},
                {"id": "bad", "type": "shell", "params": {"command": "exit 3", "max_retries": 1}}
            ],
            "edges": [{"from": "ok", "to": "bad"}]}),
    );
    let out = env.pflow().arg(&wf).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        progress_lines(&stderr),
        [
            "✓ ok (1/2 nodes) · 0 tok · $0.000000",
            "↻ bad attempt 1/2 failed: exit_status, retrying",
            "✗ bad failed: exit_status (2/2 nodes) · 0 tok · $0.000000",
        ],
        "{stderr}"
    );
    assert!(stderr.contains("error: node `bad` failed"), "{stderr}");
}

/// Three nodes of 0.3 s each: long enough for the 100 ms tick to draw.
fn slow() -> Value {
    json!({"ir_version": "0.1.0", "metadata": {"name": "slow"},
        "nodes": [
            {"id": "a", "type": "shell", "params": {"command": "sleep 0.3; echo a"}},
            {"id": "b", "type": "shell", "params": {"command": "sleep 0.3; echo b"}},
            {"id": "c", "type": "shell", "params": {"command": "sleep 0.3; printf c"}}
        ],
        "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}],
        "outputs": {"out": {"source": "${c.stdout}"}}})
}

/// Runs `pflow ARGS` on a pseudo-terminal with util-linux `script`; `None`
/// when `script` is not installed.
fn on_a_tty(env: &Env, args: &str, extra_env: &[(&str, &str)]) -> Option<String> {
    let has_script = std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !tool_present(has_script, "util-linux `script`") {
        return None;
    }
    let bin = assert_cmd::cargo::cargo_bin("pflow");
    let mut c = std::process::Command::new("script");
    c.arg("-qfec")
        .arg(format!("'{}' {args}", bin.display()))
        .arg("/dev/null")
        .current_dir(env.dir.path())
        .env("PFLOW_HOME", env.home())
        .env("TERM", "xterm-256color")
        .env_remove("NO_COLOR")
        .env_remove("PFLOW_PROGRESS")
        .env_remove("CLICOLOR")
        .env_remove("CLICOLOR_FORCE");
    for (k, v) in extra_env {
        c.env(k, v);
    }
    let out = c.output().expect("script runs");
    assert!(out.status.success(), "{out:?}");
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// SGR colour codes (foreground 30-37 / 90-97); cursor movement and line clears are fine.
fn has_colour(s: &str) -> bool {
    s.contains("\x1b[3") || s.contains("\x1b[9")
}

#[test]
fn live_bar_on_a_terminal_is_cleared_before_the_summary() {
    let env = Env::new();
    let wf = env.workflow("slow.json", slow());
    let Some(tty) = on_a_tty(&env, &format!("run '{}'", wf.display()), &[]) else {
        return;
    };
    assert!(tty.contains("/3 nodes · "), "the bar was drawn:\n{tty:?}");
    assert!(tty.contains(" tok · $0.0000"), "{tty:?}");
    assert!(tty.contains("\x1b[2K"), "the bar line is cleared:\n{tty:?}");
    assert!(has_colour(&tty), "colour on a terminal:\n{tty:?}");
    // After the bar is gone: the output, then the summary, as without a terminal.
    let after = tty.rsplit("\x1b[2K").next().unwrap();
    assert!(after.starts_with("c\r\n"), "{after:?}");
    assert!(after.contains("✓ 3 nodes in"), "{after:?}");
    assert!(!after.contains("nodes · "), "{after:?}");
    // No plain lines on a terminal.
    assert!(!tty.contains("✓ a (1/3 nodes)"), "{tty:?}");

    let Some(plain) = on_a_tty(
        &env,
        &format!("run '{}'", wf.display()),
        &[("NO_COLOR", "1")],
    ) else {
        return;
    };
    assert!(plain.contains("/3 nodes · "), "{plain:?}");
    assert!(
        !has_colour(&plain),
        "NO_COLOR output has colour:\n{plain:?}"
    );
    assert!(plain.contains("✓ 3 nodes in"), "{plain:?}");
}

#[test]
fn no_progress_on_a_terminal_prints_plain_lines() {
    let env = Env::new();
    let wf = env.workflow("slow.json", slow());
    let Some(tty) = on_a_tty(&env, &format!("--no-progress run '{}'", wf.display()), &[]) else {
        return;
    };
    assert!(!tty.contains("nodes · "), "no bar:\n{tty:?}");
    let lines = progress_lines(&tty.replace('\r', ""));
    assert_eq!(
        lines,
        [
            "✓ a (1/3 nodes) · 0 tok · $0.000000",
            "✓ b (2/3 nodes) · 0 tok · $0.000000",
            "✓ c (3/3 nodes) · 0 tok · $0.000000",
        ],
        "{tty:?}"
    );
}

/// Progress counts node executions as the summary does: a nested workflow's
/// nodes join the count (and its total once it starts), batch items apart.
#[test]
fn nested_nodes_and_batch_items_count_as_in_the_summary() {
    let env = Env::new();
    let child = json!({"ir_version": "0.1.0",
        "nodes": [
            {"id": "a", "type": "shell", "params": {"command": "true"}},
            {"id": "fan", "type": "shell", "batch": {"items": [1, 2], "as": "x"},
             "params": {"command": "echo ${x}"}}
        ],
        "edges": [{"from": "a", "to": "fan"}]});
    let wf = env.workflow(
        "wf.json",
        json!({"ir_version": "0.1.0",
            "nodes": [
                {"id": "prep", "type": "shell", "params": {"command": "true"}},
                {"id": "sub", "type": "workflow", "params": {"workflow_ir": child}},
                {"id": "last", "type": "shell", "params": {"command": "true"}}
            ],
            "edges": [{"from": "prep", "to": "sub"}, {"from": "sub", "to": "last"}]}),
    );
    let (v, code, stderr) = run_json(
        env.pflow()
            .args(["--output-format", "json", "run"])
            .arg(&wf),
    );
    assert_eq!(code, 0, "{v}\n{stderr}");
    assert_eq!(
        progress_lines(&stderr),
        [
            "✓ prep (1/3 nodes) · 0 tok · $0.000000",
            "✓ sub (4/5 nodes, 2/2 items) · 0 tok · $0.000000",
            "✓ last (5/5 nodes, 2/2 items) · 0 tok · $0.000000",
        ],
        "{stderr}"
    );
    assert_eq!(v["metrics"]["workflow"]["nodes_executed"], json!(5), "{v}");
    assert_eq!(v["metrics"]["workflow"]["batch_items"], json!(2), "{v}");

    let out = env.pflow().arg(&wf).output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr
            .lines()
            .last()
            .unwrap()
            .starts_with("✓ 5 nodes (+2 batch items) in"),
        "{stderr}"
    );
}

/// `--live` on a terminal: its lines print above the bar, whole (the bar is
/// suspended for each), and the bar is still cleared before the summary.
#[test]
fn live_lines_print_above_the_bar_on_a_terminal() {
    let env = Env::new();
    let wf = env.workflow("slow.json", slow());
    let Some(tty) = on_a_tty(&env, &format!("run '{}' --live", wf.display()), &[]) else {
        return;
    };
    assert!(tty.contains("live view: http://127.0.0.1:"), "{tty:?}");
    assert!(tty.contains("/3 nodes · "), "the bar was drawn:\n{tty:?}");
    let ansi = regex::Regex::new(r"\x1b\[[0-9;?]*[A-Za-z]").unwrap();
    let clean = ansi.replace_all(&tty, "");
    let line =
        regex::Regex::new(r"^\[\+\d+\.\d\ds\] ✓ node [abc] \(shell\) \d+(\.\d+)? (ms|s)$").unwrap();
    let live: Vec<&str> = clean
        .split(['\r', '\n'])
        .filter(|l| l.contains("✓ node "))
        .collect();
    assert_eq!(live.len(), 3, "{clean:?}");
    for l in &live {
        assert!(line.is_match(l), "a live line torn by the bar: {l:?}");
    }
    assert!(clean.contains("■ run ok in "), "{clean:?}");
    let after = tty.rsplit("\x1b[2K").next().unwrap();
    assert!(after.contains("✓ 3 nodes in"), "{after:?}");
    assert!(!after.contains("nodes · "), "{after:?}");
}
