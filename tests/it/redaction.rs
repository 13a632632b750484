//! The redaction boundary, tried as an attacker would: fake credentials of
//! 60+ kinds (generated at test time, `tests/corpus/secrets.rs`) placed in
//! every carrier (params, shell stdout and stderr, file contents, LLM
//! prompts, HTTP bodies, CLI inputs, env) must reach no surface: trace file,
//! `trace show`, `trace show --node`, `trace report`, OTLP export with and
//! without `--capture-content` (live and `trace export`), stderr, the JSON
//! `error` and `warnings`, the history database.

use super::common::*;
use super::otlp::{http_receiver, received_http};
use serde_json::json;

#[path = "../corpus/secrets.rs"]
mod corpus;

use corpus::{Gen, Sample};

/// Fails with every leak found, naming the surface and the kind.
fn assert_clean(samples: &[Sample], surfaces: &[(&str, String)]) {
    let mut found = Vec::new();
    for (surface, text) in surfaces {
        for (kind, f) in corpus::leaks(samples, text) {
            found.push(format!("{surface}: {kind} (`{f}`)"));
        }
    }
    assert!(
        found.is_empty(),
        "{} leaks:\n{}",
        found.len(),
        found.join("\n")
    );
}

fn history_bytes(env: &Env) -> String {
    let mut all = String::new();
    for ext in ["db", "db-wal", "db-shm"] {
        if let Ok(b) = std::fs::read(env.home().join(format!("history.{ext}"))) {
            all.push_str(&String::from_utf8_lossy(&b));
        }
    }
    all
}

fn output_of(cmd: &mut assert_cmd::Command) -> String {
    let out = cmd.output().expect("run");
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

struct Corpus {
    samples: Vec<Sample>,
    /// Values with no telling shape: only the literal scrub can catch them.
    env_secret: String,
    node_env_secret: String,
    header_secret: String,
}

impl Corpus {
    fn new() -> Corpus {
        let mut g = Gen::new();
        let mut samples = corpus::kinds(&mut g);
        assert!(samples.len() >= 60, "only {} kinds", samples.len());
        let c = Corpus {
            env_secret: g.alnum(28),
            node_env_secret: g.alnum(28),
            header_secret: g.alnum(28),
            samples: Vec::new(),
        };
        for (kind, v) in [
            ("env-var-value", &c.env_secret),
            ("node-env-value", &c.node_env_secret),
            ("http-header-value", &c.header_secret),
        ] {
            samples.push(Sample {
                kind,
                text: String::new(),
                fragments: vec![v.clone()],
            });
        }
        Corpus { samples, ..c }
    }
}

/// The workflow: one node per carrier, the last failing with the corpus on stderr.
fn workflow(env: &Env, c: &Corpus, body_url: &str) -> std::path::PathBuf {
    let blob = corpus::blob(&c.samples);
    env.write("corpus.txt", &blob);
    env.workflow(
        "corpus.json",
        json!({"ir_version": "0.1.0",
        "inputs": {"cli_text": {"type": "string"}},
        "nodes": [
            {"id": "params", "type": "echo", "params": {"text": blob, "shapes": {
                "password": {"value": c.samples[0].fragments[0]},
                "env": [{"name": "DB_PASSWORD", "value": c.samples[1].fragments[0]}],
                "pairs": [["Authorization", c.samples[2].fragments[0]]],
                "nested": serde_json::to_string(&json!({"token": c.samples[3].fragments[0]})).unwrap(),
            }}},
            {"id": "cli", "type": "echo", "params": {"text": "${cli_text}"}},
            {"id": "shell_out", "type": "shell", "params": {"command": "cat corpus.txt"}},
            {"id": "shell_err", "type": "shell", "params": {"command": "cat corpus.txt >&2"}},
            {"id": "file", "type": "read-file", "params": {"file_path": "corpus.txt"}},
            {"id": "ask", "type": "llm", "params": {"model": "echo", "prompt": format!("Summarise:\n{blob}")}},
            {"id": "fetch", "type": "http", "params": {"url": body_url,
                "headers": {"X-Api-Key": c.header_secret}}},
            {"id": "env", "type": "shell", "params": {
                "command": "echo \"$CORPUS_DB_PASSWORD $NODE_TOKEN\"; echo \"$NODE_TOKEN\" >&2",
                "env": {"NODE_TOKEN": c.node_env_secret}}},
            {"id": "boom", "type": "shell", "params": {"command": "cat corpus.txt >&2; echo \"$NODE_TOKEN\"; exit 3",
                "env": {"NODE_TOKEN": c.node_env_secret}}}
        ],
        "edges": [
            {"from": "params", "to": "cli"}, {"from": "cli", "to": "shell_out"},
            {"from": "shell_out", "to": "shell_err"}, {"from": "shell_err", "to": "file"},
            {"from": "file", "to": "ask"}, {"from": "ask", "to": "fetch"},
            {"from": "fetch", "to": "env"}, {"from": "env", "to": "boom"}
        ]}),
    )
}

/// The HTTP carrier: a local server answering with the corpus (and echoing
/// the API key header back, as some services do in errors).
async fn body_server(c: &Corpus) -> wiremock::MockServer {
    use wiremock::matchers::{method, path};
    let server = wiremock::MockServer::start().await;
    wiremock::Mock::given(method("GET"))
        .and(path("/corpus"))
        .respond_with(
            wiremock::ResponseTemplate::new(200).set_body_string(format!(
                "{}\nyour key: {}",
                corpus::blob(&c.samples),
                c.header_secret
            )),
        )
        .mount(&server)
        .await;
    server
}

fn pflow_for(env: &Env, c: &Corpus, receiver: &str) -> assert_cmd::Command {
    let mut cmd = env.pflow();
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver)
        .env("CORPUS_DB_PASSWORD", &c.env_secret)
        // Whole values reach the previews, so nothing hides behind a cut.
        .env("PFLOW_TRACE_MAX_VALUE_BYTES", "1000000")
        .env("PFLOW_TRACE_MAX_MESSAGE_BYTES", "1000000");
    cmd
}

async fn run_corpus(capture: bool) {
    let c = Corpus::new();
    let receiver = http_receiver(false).await;
    let bodies = body_server(&c).await;
    let env = Env::new();
    let wf = workflow(&env, &c, &format!("{}/corpus", bodies.uri()));
    let mut cmd = pflow_for(&env, &c, &receiver.uri());
    cmd.args(["--trace", "--output-format", "json"]);
    if capture {
        cmd.arg("--capture-content");
    }
    let (mut v, code, stderr) = run_json(
        cmd.arg(&wf)
            .arg(format!("cli_text={}", corpus::blob(&c.samples))),
    );
    assert_eq!(code, 1, "the last node fails on purpose: {v}");
    let trace_file = v["trace_file"].as_str().expect("trace saved").to_string();
    let file = std::fs::read_to_string(&trace_file).unwrap();
    // Make sure the carriers did carry: the trace holds the nodes' previews.
    for id in ["params", "shell_out", "file", "ask", "fetch", "env", "boom"] {
        assert!(file.contains(id), "no span for `{id}`");
    }
    assert!(
        file.contains("[REDACTED]"),
        "nothing was redacted: the carriers carried nothing"
    );
    let exported = serde_json::to_string(&received_http(&receiver, false).await).unwrap();
    assert!(exported.contains("boom"), "nothing exported");
    if let Some(o) = v.as_object_mut() {
        // The workflow's declared outputs are the user's data (none declared here).
        o.remove("result");
    }
    let mut surfaces = vec![
        ("trace file", file),
        ("OTLP export", exported),
        ("stderr", stderr),
        ("JSON output", v.to_string()),
        ("history.db", history_bytes(&env)),
        (
            "trace show",
            output_of(env.pflow().args(["trace", "show", &trace_file])),
        ),
    ];
    for id in [
        "params",
        "cli",
        "shell_out",
        "shell_err",
        "file",
        "ask",
        "fetch",
        "env",
        "boom",
    ] {
        let out = output_of(
            env.pflow()
                .args(["trace", "show", &trace_file, "--node", id]),
        );
        surfaces.push(("trace show --node", out));
    }
    let report = env.dir.path().join("report.html");
    let out = output_of(env.pflow().args([
        "trace",
        "report",
        &trace_file,
        "--output",
        report.to_str().unwrap(),
    ]));
    surfaces.push(("trace report output", out));
    surfaces.push((
        "trace report HTML",
        std::fs::read_to_string(&report).expect("report"),
    ));
    // Export later: to a second receiver.
    let later = http_receiver(false).await;
    let mut exp = env.pflow();
    exp.args([
        "trace",
        "export",
        &trace_file,
        "--otlp-endpoint",
        &later.uri(),
    ]);
    if capture {
        exp.arg("--capture-content");
    }
    surfaces.push(("trace export output", output_of(&mut exp)));
    let sent = serde_json::to_string(&received_http(&later, false).await).unwrap();
    assert!(sent.contains("boom"), "trace export sent nothing");
    surfaces.push(("trace export", sent));
    assert_clean(&c.samples, &surfaces);
}

#[tokio::test(flavor = "multi_thread")]
async fn corpus_reaches_no_surface_with_content_capture() {
    run_corpus(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn corpus_reaches_no_surface_without_content_capture() {
    run_corpus(false).await;
}

/// Text mode: the failing node's error and the summary on stderr.
#[tokio::test(flavor = "multi_thread")]
async fn text_mode_errors_are_redacted() {
    let c = Corpus::new();
    let env = Env::new();
    let blob = corpus::blob(&c.samples);
    env.write("corpus.txt", &blob);
    let user = c.samples[0].fragments[0].clone();
    let wf = env.workflow("fail.json", json!({"ir_version": "0.1.0", "nodes": [
        {"id": "sh", "type": "shell", "params": {"command": "cat corpus.txt >&2; exit 4"}},
        {"id": "web", "type": "http", "params": {"url": format!("http://deploy:{user}@127.0.0.1:9/x?api_key={user}")}}],
        "edges": [{"from": "sh", "to": "web"}]}));
    let out = env.pflow().arg(&wf).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("error"), "{stderr}");
    assert_clean(&c.samples, &[("stderr", stderr)]);
}

/// A failing http node prints its URL: the userinfo password and secret
/// query parameters are redacted in stderr and the JSON error.
#[test]
fn http_error_urls_are_redacted() {
    let mut g = Gen::new();
    let (pw, key) = (g.alnum(20), g.alnum(24));
    let env = Env::new();
    let wf = env.workflow("web.json", json!({"ir_version": "0.1.0", "nodes": [
        {"id": "web", "type": "http", "params": {"url": format!("http://deploy:{pw}@127.0.0.1:9/x?api_key={key}&code={key}"), "timeout": 2}}],
        "edges": []}));
    let (v, code, stderr) = run_json(env.pflow().args(["--output-format", "json"]).arg(&wf));
    assert_eq!(code, 1, "{v}");
    let text = format!("{v}{stderr}");
    assert!(!text.contains(&pw) && !text.contains(&key), "{text}");
    let out = env.pflow().arg(&wf).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!text.contains(&pw) && !text.contains(&key), "{text}");
}

/// Warnings: the OTLP endpoint's `user:password@` and a malformed
/// `OTEL_EXPORTER_OTLP_HEADERS` (`Authorization: Bearer …`) are not echoed.
#[test]
fn warnings_never_echo_otlp_credentials() {
    let mut g = Gen::new();
    let (pw, tok) = (g.alnum(20), g.alnum(32));
    let env = Env::new();
    let wf = env.workflow(
        "ok.json",
        json!({"ir_version": "0.1.0", "nodes": [
        {"id": "a", "type": "echo", "params": {"x": 1}}], "edges": []}),
    );
    for headers in [
        format!("Authorization: Bearer {tok}"),
        format!("authorization=Bearer%20{tok}"),
    ] {
        let mut cmd = env.pflow();
        cmd.env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://collector:{pw}@127.0.0.1:9"),
        )
        .env("OTEL_EXPORTER_OTLP_HEADERS", &headers)
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "500");
        let (v, _, stderr) = run_json(cmd.args(["--output-format", "json"]).arg(&wf));
        let text = format!("{v}{stderr}");
        assert!(
            v["warnings"].as_array().is_some_and(|w| !w.is_empty()),
            "a dead or misconfigured exporter warns: {v}"
        );
        assert!(!text.contains(&pw), "endpoint password echoed: {text}");
        assert!(!text.contains(&tok), "header value echoed: {text}");
        let out = env
            .pflow()
            .env(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://collector:{pw}@127.0.0.1:9"),
            )
            .env("OTEL_EXPORTER_OTLP_HEADERS", &headers)
            .env("OTEL_EXPORTER_OTLP_TIMEOUT", "500")
            .arg(&wf)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(!text.contains(&pw) && !text.contains(&tok), "{text}");
    }
}

/// `OTEL_RESOURCE_ATTRIBUTES` values and span names are redacted in the file
/// and in the export, even without `--capture-content`.
#[tokio::test(flavor = "multi_thread")]
async fn resource_attributes_and_span_names_are_redacted() {
    let mut g = Gen::new();
    let gh = format!("ghp_{}", g.alnum(36));
    let plain = g.alnum(24);
    let receiver = http_receiver(false).await;
    let env = Env::new();
    // The root span is named after the file (`pflow run deploy-ghp_….json`).
    let wf = env.workflow(
        &format!("deploy-{gh}.json"),
        json!({"ir_version": "0.1.0",
        "metadata": {"name": format!("deploy-with-{gh}")},
        "nodes": [{"id": "a", "type": "echo", "params": {"x": 1}}], "edges": []}),
    );
    let (v, code, _) = run_json(
        env.pflow()
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.uri())
            .env(
                "OTEL_RESOURCE_ATTRIBUTES",
                format!("deployment.environment=prod,team.token={plain},note=key%20{gh}"),
            )
            .args(["--trace", "--output-format", "json"])
            .arg(&wf),
    );
    assert_eq!(code, 0, "{v}");
    let file = std::fs::read_to_string(v["trace_file"].as_str().unwrap()).unwrap();
    let exported = serde_json::to_string(&received_http(&receiver, false).await).unwrap();
    assert!(
        file.contains("deployment.environment"),
        "resource attributes missing"
    );
    for (what, text) in [("file", &file), ("export", &exported)] {
        assert!(!text.contains(&gh), "token in the {what}");
        assert!(
            !text.contains(&plain),
            "secret-named resource attribute in the {what}"
        );
    }
}

/// The special shapes of the name rule, each on its own through the trace file.
#[test]
fn json_shapes_in_params_are_redacted() {
    let mut g = Gen::new();
    let s: Vec<String> = (0..7).map(|_| g.alnum(20)).collect();
    let env = Env::new();
    let nested = serde_json::to_string(&json!({"client": {"conn_str": s[3]}})).unwrap();
    let wf = env.workflow("shapes.json", json!({"ir_version": "0.1.0", "nodes": [
        {"id": "object_under_secret_name", "type": "echo", "params": {"password": {"value": s[0]}}},
        {"id": "name_value_pairs", "type": "echo", "params": {"env": [{"name": "DB_PASSWORD", "value": s[1]}]}},
        {"id": "array_pairs", "type": "echo", "params": {"headers": [["Authorization", s[2]]]}},
        {"id": "json_text", "type": "echo", "params": {"body": nested}},
        {"id": "header_names", "type": "echo", "params": {"headers": {"X-Auth": s[4], "X-Signature": s[5]}}},
        {"id": "extended_names", "type": "echo", "params": {"pwd": s[6]}}],
        "edges": [
            {"from": "object_under_secret_name", "to": "name_value_pairs"},
            {"from": "name_value_pairs", "to": "array_pairs"},
            {"from": "array_pairs", "to": "json_text"},
            {"from": "json_text", "to": "header_names"},
            {"from": "header_names", "to": "extended_names"}]}));
    let (v, code, _) = run_json(
        env.pflow()
            .args(["--trace", "--output-format", "json"])
            .arg(&wf),
    );
    assert_eq!(code, 0, "{v}");
    let file = std::fs::read_to_string(v["trace_file"].as_str().unwrap()).unwrap();
    for (i, secret) in s.iter().enumerate() {
        assert!(!file.contains(secret.as_str()), "shape {i} leaked");
    }
}

/// Without `--capture-content`, an exception goes as its type and the size
/// of its message; the span status carries the error type, not the message.
#[tokio::test(flavor = "multi_thread")]
async fn export_without_content_sends_exception_type_and_size() {
    let receiver = http_receiver(false).await;
    let env = Env::new();
    let wf = env.workflow("fail.json", json!({"ir_version": "0.1.0", "nodes": [
        {"id": "sh", "type": "shell", "params": {"command": "echo resolved-command-detail >&2; exit 3"}}],
        "edges": []}));
    let (v, code, _) = run_json(
        env.pflow()
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.uri())
            .args(["--output-format", "json"])
            .arg(&wf),
    );
    assert_eq!(code, 1, "{v}");
    let reqs = received_http(&receiver, false).await;
    let text = serde_json::to_string(&reqs).unwrap();
    assert!(
        !text.contains("resolved-command-detail"),
        "message exported: {text}"
    );
    let mut seen = false;
    for sp in reqs
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
    {
        for ev in sp.events.iter().filter(|e| e.name == "exception") {
            let keys: Vec<&str> = ev.attributes.iter().map(|kv| kv.key.as_str()).collect();
            assert!(keys.contains(&"exception.type"), "{keys:?}");
            assert!(keys.contains(&"pflow.exception.message.size"), "{keys:?}");
            assert!(!keys.contains(&"exception.message"), "{keys:?}");
            seen = true;
        }
        if let Some(st) = sp.status.as_ref().filter(|st| st.code == 2) {
            let kind = sp
                .attributes
                .iter()
                .find(|kv| kv.key == "error.type")
                .and_then(|kv| kv.value.as_ref())
                .map(|v| format!("{v:?}"))
                .unwrap_or_default();
            assert!(
                kind.contains(&format!("{:?}", st.message)),
                "status `{}` is not the error type {kind}",
                st.message
            );
        }
    }
    assert!(seen, "no exception event exported");
    // The local trace keeps the message.
    let local = std::fs::read_to_string(&env.trace_files()[0]).unwrap();
    assert!(local.contains("resolved-command-detail"));
}

/// The report embeds what the 0600 trace holds: 0600 too, as is the history
/// under a pre-existing 0755 `PFLOW_HOME`.
#[cfg(unix)]
#[test]
fn report_and_history_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    std::fs::create_dir_all(env.home()).unwrap();
    std::fs::set_permissions(env.home(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let wf = env.workflow(
        "ok.json",
        json!({"ir_version": "0.1.0", "nodes": [
        {"id": "a", "type": "echo", "params": {"x": 1}}], "edges": []}),
    );
    env.pflow().arg("--trace").arg(&wf).assert().success();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&env.home().join("history.db")), 0o600);
    let report = env.dir.path().join("r.html");
    env.pflow()
        .args([
            "trace",
            "report",
            "last",
            "--output",
            report.to_str().unwrap(),
        ])
        .assert()
        .success();
    assert_eq!(mode(&report), 0o600);
}
