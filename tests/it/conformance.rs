//! Semantic-conventions conformance: every example, LLM calls (plain,
//! streamed, and the planner's JSON-mode calls) and a planned run are
//! exported to an in-process OTLP receiver, once by default and once under
//! `OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental`, and every span
//! name, kind, attribute type, required attribute, the resource, the
//! instrumentation scope and the metrics are checked against the table in
//! `tests/fixtures/semconv/conformance.json` (convention version noted there).
//! GenAI message attributes are checked against the conventions' message
//! schemas (the documented shape, written out below).

use super::common::*;
use super::otlp::{http_receiver, received_http};
use super::planner::{planner_cmd, scripted, Script};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn table() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(repo("tests/fixtures/semconv/conformance.json")).unwrap(),
    )
    .unwrap()
}

/// An exported span, flattened: attributes keep their OTLP JSON form.
#[derive(Debug, Clone)]
struct Exported {
    name: String,
    kind: i64,
    span_id: String,
    parent: String,
    attrs: Map<String, Value>,
    events: Vec<(String, Map<String, Value>)>,
}

struct Export {
    spans: Vec<Exported>,
    resources: Vec<Map<String, Value>>,
    scopes: Vec<Value>,
    metrics: Vec<Value>,
}

fn kv_map(list: &Value) -> Map<String, Value> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|kv| (kv["key"].as_str().unwrap().to_string(), kv["value"].clone()))
        .collect()
}

async fn collect(server: &MockServer) -> Export {
    let mut e = Export {
        spans: Vec::new(),
        resources: Vec::new(),
        scopes: Vec::new(),
        metrics: Vec::new(),
    };
    for r in received_http(server, false).await {
        let v = serde_json::to_value(&r).unwrap();
        for rs in v["resourceSpans"].as_array().unwrap() {
            e.resources.push(kv_map(&rs["resource"]["attributes"]));
            for ss in rs["scopeSpans"].as_array().unwrap() {
                e.scopes.push(ss["scope"].clone());
                e.scopes.push(json!({"schemaUrl": ss["schemaUrl"]}));
                for s in ss["spans"].as_array().unwrap() {
                    e.spans.push(Exported {
                        name: s["name"].as_str().unwrap().to_string(),
                        kind: s["kind"].as_i64().unwrap(),
                        span_id: s["spanId"].as_str().unwrap().to_string(),
                        parent: s["parentSpanId"].as_str().unwrap_or("").to_string(),
                        attrs: kv_map(&s["attributes"]),
                        events: s["events"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|ev| {
                                (
                                    ev["name"].as_str().unwrap().to_string(),
                                    kv_map(&ev["attributes"]),
                                )
                            })
                            .collect(),
                    });
                }
            }
        }
    }
    for req in server.received_requests().await.unwrap_or_default() {
        if req.url.path() == "/v1/metrics" {
            let m = ExportMetricsServiceRequest::decode(&req.body[..]).unwrap();
            let v = serde_json::to_value(&m).unwrap();
            for rm in v["resourceMetrics"].as_array().unwrap() {
                for sm in rm["scopeMetrics"].as_array().unwrap() {
                    e.scopes.push(sm["scope"].clone());
                    e.scopes.push(json!({"schemaUrl": sm["schemaUrl"]}));
                    e.metrics
                        .extend(sm["metrics"].as_array().unwrap().iter().cloned());
                }
            }
        }
    }
    e
}

/// The OTLP JSON value's type, as the table spells it.
fn type_of(v: &Value) -> &'static str {
    let o = v.as_object().unwrap();
    if o.contains_key("stringValue") {
        "string"
    } else if o.contains_key("intValue") {
        "int"
    } else if o.contains_key("doubleValue") {
        "double"
    } else if o.contains_key("boolValue") {
        "bool"
    } else if let Some(a) = o.get("arrayValue") {
        let all_str = a["values"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|x| x.get("stringValue").is_some());
        if all_str {
            "string[]"
        } else {
            "array"
        }
    } else {
        "other"
    }
}

/// The plain value of an OTLP JSON attribute value.
fn plain(v: &Value) -> Value {
    let o = v.as_object().unwrap();
    if let Some(s) = o.get("stringValue") {
        return s.clone();
    }
    if let Some(b) = o.get("boolValue") {
        return b.clone();
    }
    if let Some(i) = o.get("intValue") {
        return json!(i.as_str().map(|s| s.parse::<i64>().unwrap()).or(i.as_i64()));
    }
    o.get("doubleValue").cloned().unwrap_or(Value::Null)
}

fn check_span(rule: &Value, s: &Exported, problems: &mut Vec<String>) {
    let who = format!("span `{}` ({})", s.name, rule["what"].as_str().unwrap());
    if s.kind != rule["kind"].as_i64().unwrap() {
        problems.push(format!("{who}: kind {} (want {})", s.kind, rule["kind"]));
    }
    let required = rule["required"].as_object().unwrap();
    let empty = Map::new();
    let optional = rule["optional"].as_object().unwrap_or(&empty);
    for (k, ty) in required {
        match s.attrs.get(k) {
            None => problems.push(format!("{who}: required `{k}` missing")),
            Some(v) if type_of(v) != ty.as_str().unwrap() => {
                problems.push(format!("{who}: `{k}` is {} (want {ty})", type_of(v)))
            }
            _ => {}
        }
    }
    for (k, v) in &s.attrs {
        match optional.get(k).or(required.get(k)) {
            None => problems.push(format!("{who}: `{k}` is not in the table")),
            Some(ty) if type_of(v) != ty.as_str().unwrap() => {
                problems.push(format!("{who}: `{k}` is {} (want {ty})", type_of(v)))
            }
            _ => {}
        }
    }
    for (k, want) in rule["values"].as_object().unwrap_or(&empty) {
        let got = s.attrs.get(k).map(plain).unwrap_or(Value::Null);
        let ok = match want {
            Value::Array(options) => options.contains(&got),
            w => *w == got,
        };
        if !ok {
            problems.push(format!("{who}: `{k}` = {got} (want {want})"));
        }
    }
    // The compact form: an attribute at its default is left out, never sent.
    for (k, default) in rule["absent_means"].as_object().unwrap_or(&empty) {
        let default = match default.as_str().and_then(|d| d.strip_prefix('@')) {
            Some(other) => s.attrs.get(other).map(plain).unwrap_or(Value::Null),
            None => default.clone(),
        };
        // `default` is the action only of a node that succeeded (no status).
        let applies = k != "pflow.node.action" || !s.attrs.contains_key("pflow.node.status");
        if applies && s.attrs.get(k).map(plain) == Some(default.clone()) {
            problems.push(format!("{who}: `{k}` = {default} sent (absent means that)"));
        }
    }
    for cond in rule["required_if"].as_array().into_iter().flatten() {
        let holds = cond["if"].as_object().unwrap().iter().all(|(k, want)| {
            let got = s.attrs.get(k).map(plain).unwrap_or(Value::Null);
            got == *want
        });
        if holds {
            for k in cond["then"].as_array().unwrap() {
                let k = k.as_str().unwrap();
                if !s.attrs.contains_key(k) {
                    problems.push(format!(
                        "{who}: `{k}` missing (required when {})",
                        cond["if"]
                    ));
                }
            }
        }
    }
}

/// The GenAI message schemas (gen-ai-input-messages.json,
/// gen-ai-output-messages.json, gen-ai-system-instructions.json of the GenAI
/// conventions), as far as pflow's messages use them: a message is an
/// object with a `role` string and a `parts` array (output messages also a
/// `finish_reason` string, never null); a part has a `type` string, and a
/// `text` part a `content` string.
fn check_part(p: &Value, who: &str, problems: &mut Vec<String>) {
    match p["type"].as_str() {
        None => problems.push(format!("{who}: a part without a type: {p}")),
        Some("text") if !p["content"].is_string() => {
            problems.push(format!("{who}: a text part's content is not a string: {p}"))
        }
        _ => {}
    }
}

fn check_messages(key: &str, text: &str, problems: &mut Vec<String>) {
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return problems.push(format!("`{key}` is not JSON: {e}")),
    };
    let Some(list) = v.as_array() else {
        return problems.push(format!("`{key}` is not an array: {v}"));
    };
    for m in list {
        if key == "gen_ai.system_instructions" {
            check_part(m, key, problems);
            continue;
        }
        if !m["role"].is_string() {
            problems.push(format!("`{key}`: a message without a role string: {m}"));
        }
        match m["parts"].as_array() {
            Some(parts) => parts.iter().for_each(|p| check_part(p, key, problems)),
            None => problems.push(format!("`{key}`: a message without parts: {m}")),
        }
        if key == "gen_ai.output.messages" && !m["finish_reason"].is_string() {
            problems.push(format!("`{key}`: finish_reason must be a string: {m}"));
        }
    }
}

/// A local OpenAI: streamed requests get the recorded SSE stream, others
/// the recorded JSON answer; requests (with their headers) are kept.
async fn openai() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(body_partial_json(json!({"stream": true})))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            llm_fixture("openai-chat-stream-include-usage.sse"),
            "text/event-stream",
        ))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(llm_fixture("openai-chat.json"), "application/json"),
        )
        .with_priority(2)
        .mount(&server)
        .await;
    server
}

/// Runs every example, an LLM workflow (plain and streamed calls) and a
/// planned run against `otlp`; returns the LLM server's requests.
async fn run_everything(otlp: &MockServer, opt_in: bool) -> Vec<wiremock::Request> {
    let env = Env::new();
    let setup = |c: &mut assert_cmd::Command| {
        c.env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.uri())
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf");
        if opt_in {
            c.env(
                "OTEL_SEMCONV_STABILITY_OPT_IN",
                "gen_ai_latest_experimental",
            )
            .env("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true");
        }
    };
    // Every example.
    let out = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let python = tool_present(
        std::process::Command::new("python3")
            .arg("--version")
            .output()
            .is_ok(),
        "python3 (the shell-http example's server)",
    );
    for entry in std::fs::read_dir(repo("examples")).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".json") || (name == "shell-http.json" && !python) {
            continue;
        }
        let mut c = env.pflow();
        c.current_dir(repo(""));
        setup(&mut c);
        c.args(["run", "--output-format", "json"])
            .arg(format!("examples/{name}"));
        match name.as_str() {
            "hello.json" => {
                c.arg(format!("out_dir={}", out.path().display()));
            }
            "shell-http.json" => {
                c.arg(format!("port={port}"))
                    .arg(format!("pid_file={}", out.path().join("pid").display()));
            }
            _ => {}
        }
        let (v, code, stderr) = run_json(&mut c);
        assert_eq!(code, 0, "{name}: {v}\n{stderr}");
    }
    // LLM calls: plain and streamed (with retries off, one attempt each).
    let llm = openai().await;
    let wf = env.workflow(
        "llm.json",
        json!({"ir_version": "0.1.0", "metadata": {"name": "llm-calls"},
            "nodes": [
                {"id": "plain", "type": "llm", "params": {"model": "gpt-4o", "prompt": "What is the weather in SF?", "max_tokens": 50}},
                {"id": "streamed", "type": "llm", "params": {"model": "gpt-4o", "prompt": "Stream it", "stream": true}}],
            "edges": [{"from": "plain", "to": "streamed"}]}),
    );
    let mut c = with_openai(&env, &llm);
    setup(&mut c);
    let (v, code, stderr) = run_json(c.args(["--output-format", "json"]).arg(&wf));
    assert_eq!(code, 0, "{v}\n{stderr}");
    let mut requests = llm.received_requests().await.unwrap_or_default();
    // The planner: JSON-mode calls, one plan operation.
    let m = scripted(Script {
        extract: json!({"parameters": {"input_file": "report.txt", "output_file": "summary.md"}}),
        ..Default::default()
    })
    .await;
    env.write("report.txt", "Quarterly numbers went up.");
    let mut c = planner_cmd(&env, &m);
    setup(&mut c);
    let (v, code, stderr) = run_json(c.args([
        "--yes",
        "--output-format",
        "json",
        "summarize report.txt into summary.md",
    ]));
    assert_eq!(code, 0, "{v}\n{stderr}");
    requests.extend(m.server.received_requests().await.unwrap_or_default());
    requests
}

async fn conformance(opt_in: bool) {
    let t = table();
    let otlp = http_receiver(false).await;
    let llm_requests = run_everything(&otlp, opt_in).await;
    let e = collect(&otlp).await;
    let mut problems = Vec::new();

    // Spans: each matches one table entry and follows it.
    let rules: Vec<(regex::Regex, &Value)> = t["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (regex::Regex::new(r["name"].as_str().unwrap()).unwrap(), r))
        .collect();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for s in &e.spans {
        match rules.iter().find(|(re, _)| re.is_match(&s.name)) {
            Some((_, rule)) => {
                *seen.entry(rule["what"].as_str().unwrap()).or_default() += 1;
                check_span(rule, s, &mut problems);
            }
            None => problems.push(format!("span `{}` matches no table entry", s.name)),
        }
        // Only pflow's own names: no dependency's debug output.
        use pflow::telemetry::attr::{lookup, Kind};
        if lookup(Kind::Span, &s.name).is_none() {
            problems.push(format!("span `{}` is not a registered name", s.name));
        }
        for (ev, attrs) in &s.events {
            if lookup(Kind::Event, ev).is_none() {
                problems.push(format!("event `{ev}` on `{}` is not registered", s.name));
            }
            for k in attrs.keys() {
                if lookup(Kind::EventAttr, k).is_none() {
                    problems.push(format!("event attribute `{k}` of `{ev}` is not registered"));
                }
            }
        }
        if opt_in {
            for k in t["opt_in_absent_span_attributes"].as_array().unwrap() {
                if s.attrs.contains_key(k.as_str().unwrap()) {
                    problems.push(format!("`{}` carries `{k}` under the opt-in", s.name));
                }
            }
            for k in [
                "gen_ai.input.messages",
                "gen_ai.output.messages",
                "gen_ai.system_instructions",
            ] {
                if let Some(v) = s.attrs.get(k) {
                    check_messages(k, v["stringValue"].as_str().unwrap_or(""), &mut problems);
                }
            }
        }
    }
    for r in t["spans"].as_array().unwrap() {
        let what = r["what"].as_str().unwrap();
        if !seen.contains_key(what) {
            problems.push(format!("no exported span was a {what}"));
        }
    }
    // Root names are the same for every run: `pflow run`.
    let roots: Vec<&Exported> = e.spans.iter().filter(|s| s.parent.is_empty()).collect();
    assert!(roots.len() >= 7, "{} runs", roots.len());
    assert!(roots.iter().all(|r| r.name == "pflow run"), "{roots:?}");
    // One plan operation per planning phase.
    let plans = e
        .spans
        .iter()
        .filter(|s| s.attrs.get("gen_ai.operation.name").map(plain) == Some(json!("plan")))
        .count();
    assert_eq!(
        plans, 1,
        "one `plan` operation span for the one planned run"
    );
    // Exceptions once: no span's exception repeats below it.
    let by_id: HashMap<&str, &Exported> = e.spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    for s in &e.spans {
        for (ev, attrs) in &s.events {
            if ev != "exception" {
                continue;
            }
            let mut p = s.parent.as_str();
            while let Some(up) = by_id.get(p) {
                if up.events.iter().any(|(n, a)| {
                    n == "exception" && a.get("exception.type") == attrs.get("exception.type")
                }) {
                    problems.push(format!(
                        "exception {:?} recorded on `{}` and again on its ancestor `{}`",
                        attrs.get("exception.type"),
                        s.name,
                        up.name
                    ));
                }
                p = up.parent.as_str();
            }
        }
    }
    // Each LLM attempt has its HTTP CLIENT child, whose context the server got.
    let llm_spans: Vec<&Exported> = e
        .spans
        .iter()
        .filter(|s| s.name.starts_with("chat gpt-4o"))
        .collect();
    assert!(llm_spans.len() >= 5, "plain, streamed, 3 planner calls");
    for l in &llm_spans {
        let http: Vec<&Exported> = e
            .spans
            .iter()
            .filter(|s| s.parent == l.span_id && s.kind == 3)
            .collect();
        assert_eq!(http.len(), 1, "`{}`: one HTTP CLIENT span", l.name);
        assert_eq!(
            http[0].attrs["server.address"],
            json!({"stringValue": "127.0.0.1"})
        );
        let tp = format!("-{}-", http[0].span_id);
        assert!(
            llm_requests.iter().any(|r| r
                .headers
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains(&tp))),
            "the provider got the HTTP span's traceparent"
        );
    }
    let streamed = llm_spans
        .iter()
        .find(|s| s.attrs.get("gen_ai.request.stream").map(plain) == Some(json!(true)))
        .expect("a streamed call");
    assert!(
        plain(&streamed.attrs["gen_ai.response.time_to_first_chunk"])
            .as_f64()
            .unwrap()
            >= 0.0
    );
    let plain_call = llm_spans
        .iter()
        .find(|s| s.attrs.get("pflow.llm.node_path").map(plain) == Some(json!("plain")))
        .unwrap();
    assert_eq!(
        plain_call.attrs["gen_ai.response.finish_reasons"],
        json!({"arrayValue": {"values": [{"stringValue": "stop"}]}})
    );

    // Resource and scope.
    let res = &t["resource"];
    for r in &e.resources {
        for (k, ty) in res["required"].as_object().unwrap() {
            match r.get(k) {
                Some(v) if type_of(v) == ty.as_str().unwrap() => {}
                other => problems.push(format!("resource `{k}`: {other:?} (want {ty})")),
            }
        }
        for (k, want) in res["values"].as_object().unwrap() {
            if r.get(k).map(plain).as_ref() != Some(want) {
                problems.push(format!("resource `{k}` is not {want}"));
            }
        }
        for k in res["forbidden"].as_array().unwrap() {
            if r.contains_key(k.as_str().unwrap()) {
                problems.push(format!("resource carries `{k}`"));
            }
        }
        if let Some(want) = res["host_arch"].get(std::env::consts::ARCH) {
            if r.get("host.arch").map(plain).as_ref() != Some(want) {
                problems.push(format!("host.arch is {:?}, not {want}", r.get("host.arch")));
            }
        }
    }
    for s in e.scopes.iter().filter(|s| s.get("name").is_some()) {
        if s["name"] != json!("pflow") || s["version"] != json!(env!("CARGO_PKG_VERSION")) {
            problems.push(format!("scope {s}"));
        }
    }
    for s in e.scopes.iter().filter(|s| s.get("schemaUrl").is_some()) {
        if s["schemaUrl"] != t["schema_url"] {
            problems.push(format!("schema URL {s} (want {})", t["schema_url"]));
        }
    }

    // Metrics: the mode's GenAI set (and not the other), plus pflow's own.
    let (want, not) = if opt_in {
        ("opt_in", "default")
    } else {
        ("default", "opt_in")
    };
    let names: Vec<&str> = e
        .metrics
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    for set in [want, "both"] {
        for (name, spec) in t["metrics"][set].as_object().unwrap() {
            let Some(m) = e.metrics.iter().find(|m| m["name"] == json!(name)) else {
                problems.push(format!("metric `{name}` missing ({set}): {names:?}"));
                continue;
            };
            if m["unit"] != spec["unit"] {
                problems.push(format!(
                    "metric `{name}` unit {} (want {})",
                    m["unit"], spec["unit"]
                ));
            }
            let points = m[spec["type"].as_str().unwrap()]["dataPoints"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if points.is_empty() {
                problems.push(format!(
                    "metric `{name}` is not a {} with points",
                    spec["type"]
                ));
            }
            for p in &points {
                let attrs = kv_map(&p["attributes"]);
                for k in spec["required"].as_array().unwrap() {
                    let k = k.as_str().unwrap();
                    // The planner's echo-model node has no server; the OpenAI calls do.
                    let echo = attrs.get("gen_ai.provider.name").map(plain) == Some(json!("echo"));
                    let exempt = echo && k.starts_with("server.");
                    if !exempt && !attrs.contains_key(k) {
                        problems.push(format!("metric `{name}`: a point without `{k}`"));
                    }
                }
            }
        }
    }
    for name in t["metrics"][not].as_object().unwrap().keys() {
        if names.contains(&name.as_str()) {
            problems.push(format!("metric `{name}` sent in {want} mode"));
        }
    }
    assert!(
        problems.is_empty(),
        "{} conformance problems (opt-in: {opt_in}):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn default_mode_follows_the_conventions_table() {
    conformance(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn opt_in_mode_follows_the_conventions_table() {
    conformance(true).await;
}

#[test]
fn the_message_checks_reject_what_the_schemas_reject() {
    let mut p = Vec::new();
    check_messages(
        "gen_ai.output.messages",
        r#"[{"role":"assistant","parts":[{"type":"text","content":"x"}],"finish_reason":null}]"#,
        &mut p,
    );
    check_messages(
        "gen_ai.input.messages",
        r#"[{"parts":[{"type":"text"}]}]"#,
        &mut p,
    );
    check_messages("gen_ai.system_instructions", r#"[{"content":"x"}]"#, &mut p);
    assert_eq!(p.len(), 4, "{p:?}");
    let mut ok = Vec::new();
    check_messages(
        "gen_ai.output.messages",
        r#"[{"role":"assistant","parts":[{"type":"text","content":"x"}],"finish_reason":"stop"}]"#,
        &mut ok,
    );
    assert!(ok.is_empty());
}
