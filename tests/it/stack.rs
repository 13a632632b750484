//! The observability stack files agree with each other and with pflow:
//! pipelines reference defined components, the Collector manifest holds exactly
//! the components the config uses, compose / manifest / script pin the
//! releases of scripts/stack.env, and the replay pipeline drops pflow's own
//! content attributes. (`stack_live.rs` runs the same files for real.)

use super::common::repo;
use serde_norway::Value;
use std::collections::BTreeSet;

fn text(name: &str) -> String {
    std::fs::read_to_string(repo(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn load(name: &str) -> Value {
    serde_norway::from_str(&text(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn keys(v: &Value) -> Vec<String> {
    v.as_mapping()
        .map(|m| {
            m.keys()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// `KEY=value` lines of scripts/stack.env.
pub fn stack_env(key: &str) -> String {
    text("scripts/stack.env")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("scripts/stack.env has no {key}"))
        .trim()
        .to_string()
}

/// Every pipeline of a Collector-style config references defined components.
fn check_pipelines(file: &str) -> Value {
    let c = load(file);
    let defined = |section: &str| keys(&c[section]);
    let pipelines = c["service"]["pipelines"]
        .as_mapping()
        .unwrap_or_else(|| panic!("{file}: service.pipelines"));
    for (name, p) in pipelines {
        for section in ["receivers", "processors", "exporters"] {
            let list = strings(&p[section]);
            assert!(!list.is_empty() || section == "processors", "{file}");
            for comp in list {
                assert!(
                    defined(section).contains(&comp),
                    "{file}: pipeline {name:?} uses undefined {section} `{comp}`"
                );
            }
        }
    }
    for ext in strings(&c["service"]["extensions"]) {
        assert!(defined("extensions").contains(&ext), "{file}: {ext}");
    }
    c
}

#[test]
fn collector_pipelines_reference_defined_components() {
    let c = check_pipelines("otel-collector.yaml");
    // Ports are injected (tests, stack.sh) with the compose defaults.
    assert_eq!(
        c["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].as_str(),
        Some("${env:PFLOW_STACK_OTLP_GRPC:-0.0.0.0:4317}")
    );
    assert_eq!(
        c["receivers"]["otlp"]["protocols"]["http"]["endpoint"].as_str(),
        Some("${env:PFLOW_STACK_OTLP_HTTP:-0.0.0.0:4318}")
    );
    let pipelines = &c["service"]["pipelines"];
    let live = &pipelines["traces"];
    assert_eq!(strings(&live["receivers"]), ["otlp"]);
    assert_eq!(
        strings(&live["exporters"]),
        ["otlp_grpc/jaeger", "file", "debug"]
    );
    let replay = &pipelines["traces/replay"];
    assert_eq!(strings(&replay["receivers"]), ["otlp_json_file"]);
    assert!(strings(&replay["processors"]).contains(&"transform/drop_content".to_string()));
    for p in ["traces", "traces/replay", "metrics"] {
        assert_eq!(
            strings(&pipelines[p]["processors"])
                .first()
                .map(String::as_str),
            Some("memory_limiter"),
            "{p}: memory_limiter must come first"
        );
    }
    assert_eq!(c["exporters"]["file"]["append"].as_bool(), Some(true));
}

/// "16MiB" → bytes.
fn size(s: &str) -> usize {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: usize = n.parse().unwrap_or_else(|_| panic!("size `{s}`"));
    n * match unit {
        "MiB" => 1024 * 1024,
        "KiB" => 1024,
        "" | "B" => 1,
        other => panic!("unit `{other}`"),
    }
}

#[test]
fn the_replay_receiver_reads_whole_lines_once() {
    let c = load("otel-collector.yaml");
    let r = &c["receivers"]["otlp_json_file"];
    assert_eq!(r["storage"].as_str(), Some("file_storage"));
    assert!(keys(&c["extensions"]).contains(&"file_storage".to_string()));
    let max = size(r["max_log_size"].as_str().expect("max_log_size"));
    // Room to spare above pflow's longest line.
    assert!(
        max >= 8 * pflow::telemetry::file::LINE_MAX_BYTES,
        "max_log_size {max}"
    );
    assert!(strings(&r["include"])[0].ends_with("/*.otlp.json"));
}

/// The names one transform context deletes: its
/// `delete_matching_keys(attributes, "^(A|B)$")` alternatives, unescaped.
fn deleted(c: &Value, context: &str) -> BTreeSet<String> {
    let groups = c["processors"]["transform/drop_content"]["trace_statements"]
        .as_sequence()
        .expect("trace_statements");
    groups
        .iter()
        .filter(|g| g["context"].as_str() == Some(context))
        .flat_map(|g| strings(&g["statements"]))
        .filter_map(|st| {
            st.strip_prefix(&format!("delete_matching_keys({context}.attributes, \"^("))
                .and_then(|r| r.strip_suffix(")$\")"))
                .map(|alts| {
                    alts.split('|')
                        .map(|a| a.replace("\\\\.", "."))
                        .collect::<Vec<_>>()
                })
        })
        .flatten()
        .collect()
}

#[test]
fn the_replay_pipeline_drops_exactly_pflows_content_attributes_unless_opted_in() {
    use pflow::telemetry::attr::{content_attrs, Kind};
    let c = load("otel-collector.yaml");
    let want = |k: Kind| {
        content_attrs(k)
            .map(str::to_string)
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(deleted(&c, "span"), want(Kind::Attr));
    assert_eq!(deleted(&c, "spanevent"), want(Kind::EventAttr));
    // The opt-in is pflow's own switch, read by the Collector.
    for g in c["processors"]["transform/drop_content"]["trace_statements"]
        .as_sequence()
        .unwrap()
    {
        assert_eq!(
            strings(&g["conditions"]),
            ["\"${env:OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT:-false}\" != \"true\""]
        );
    }
}

/// Component type (as otel-collector.yaml names it) of each manifest module.
fn component_type(module: &str) -> &'static str {
    let last = module.rsplit('/').next().unwrap_or("");
    match last {
        "otlpreceiver" => "otlp",
        "otlpjsonfilereceiver" => "otlp_json_file",
        "memorylimiterprocessor" => "memory_limiter",
        "batchprocessor" => "batch",
        "transformprocessor" => "transform",
        "otlpexporter" => "otlp_grpc",
        "debugexporter" => "debug",
        "fileexporter" => "file",
        "prometheusexporter" => "prometheus",
        "healthcheckextension" => "health_check",
        "filestorage" => "file_storage",
        other => panic!("manifest module `{other}` has no known component type"),
    }
}

#[test]
fn the_collector_manifest_holds_exactly_the_configs_components_at_one_release() {
    let m = load("stack/otelcol-builder.yaml");
    let c = load("otel-collector.yaml");
    let release = stack_env("OTELCOL_VERSION");
    let stable = stack_env("OTELCOL_STABLE_VERSION");
    assert_eq!(m["dist"]["version"].as_str(), Some(release.as_str()));
    for section in ["receivers", "processors", "exporters", "extensions"] {
        let mut built = BTreeSet::new();
        for entry in m[section].as_sequence().expect(section) {
            let gomod = entry["gomod"].as_str().expect("gomod");
            let (module, version) = gomod.split_once(' ').expect("`module version`");
            assert_eq!(version, format!("v{release}"), "{module}");
            built.insert(component_type(module).to_string());
        }
        // `otlp_grpc/jaeger` is the `otlp_grpc` type named `jaeger`.
        let used: BTreeSet<String> = keys(&c[section])
            .iter()
            .map(|k| k.split('/').next().unwrap_or(k).to_string())
            .collect();
        assert_eq!(built, used, "{section}: manifest vs otel-collector.yaml");
    }
    for entry in m["providers"].as_sequence().expect("providers") {
        let gomod = entry["gomod"].as_str().unwrap();
        assert!(gomod.ends_with(&format!(" v{stable}")), "{gomod}");
    }
}

#[test]
fn jaeger_config_pipelines_reference_defined_components() {
    let j = check_pipelines("jaeger.yaml");
    assert!(keys(&j["extensions"]).contains(&"jaeger_query".to_string()));
    assert_eq!(
        j["extensions"]["jaeger_query"]["http"]["endpoint"].as_str(),
        Some("${env:PFLOW_STACK_JAEGER_HTTP:-0.0.0.0:16686}")
    );
}

#[test]
fn compose_runs_the_pinned_releases_as_the_invoking_user() {
    let d = load("docker-compose.yml");
    let services = &d["services"];
    for s in ["otel-collector", "jaeger", "prometheus"] {
        assert!(keys(services).contains(&s.to_string()), "{s}");
        assert_eq!(
            services[s]["restart"].as_str(),
            Some("unless-stopped"),
            "{s}"
        );
    }
    let col = &services["otel-collector"];
    assert_eq!(
        col["image"].as_str(),
        Some(
            format!(
                "otel/opentelemetry-collector-contrib:{}",
                stack_env("OTELCOL_VERSION")
            )
            .as_str()
        )
    );
    assert_eq!(
        services["jaeger"]["image"].as_str(),
        Some(format!("jaegertracing/jaeger:{}", stack_env("JAEGER_IMAGE_VERSION")).as_str())
    );
    let user = col["user"].as_str().expect("user:");
    assert!(
        user.starts_with("${PFLOW_UID:?") && user.contains(":${PFLOW_GID:?"),
        "{user}"
    );
    let ports = strings(&col["ports"]);
    assert!(ports.iter().any(|p| p.starts_with("4317:")));
    assert!(ports.iter().any(|p| p.starts_with("4318:")));
    assert!(strings(&services["jaeger"]["ports"])
        .iter()
        .any(|p| p.starts_with("16686:")));
    // Every mount is a bind Docker must not create; repo files exist.
    let mut sources = Vec::new();
    for (name, svc) in services.as_mapping().unwrap() {
        for vol in svc["volumes"].as_sequence().into_iter().flatten() {
            assert_eq!(vol["type"].as_str(), Some("bind"), "{name:?}: {vol:?}");
            assert_eq!(
                vol["bind"]["create_host_path"].as_bool(),
                Some(false),
                "{name:?}: {vol:?}"
            );
            let src = vol["source"].as_str().unwrap().to_string();
            if let Some(rel) = src.strip_prefix("./") {
                if rel.ends_with(".yaml") || rel.ends_with(".yml") {
                    assert!(repo(rel).is_file(), "{rel} is mounted but missing");
                }
            }
            sources.push(src);
        }
    }
    assert!(sources.contains(&"${PFLOW_HOME:-${HOME}/.pflow}/traces".to_string()));
    // The documented mkdir creates every directory the Collector mounts.
    let compose = text("docker-compose.yml");
    let mkdir = compose
        .lines()
        .find(|l| l.contains("mkdir -p"))
        .expect("a documented mkdir -p");
    for dir in [
        "~/.pflow/traces",
        "target/collector-out",
        "target/collector-state",
    ] {
        assert!(mkdir.contains(dir), "{mkdir}");
    }
    assert!(!compose.contains("PFLOW_TRACES_DIR"));
    // The README walks through the same steps.
    let readme = text("README.md");
    let step = mkdir.trim_start_matches('#').trim();
    assert!(readme.contains(step), "README lacks `{step}`");
    let up = compose
        .lines()
        .find(|l| l.contains("docker compose up"))
        .expect("the documented compose command");
    assert!(readme.contains(up.trim_start_matches('#').trim()));
    let prom = load("prometheus.yml");
    let target = prom["scrape_configs"][0]["static_configs"][0]["targets"][0]
        .as_str()
        .unwrap();
    assert_eq!(target, "otel-collector:8889");
}

#[test]
fn the_stack_script_takes_its_versions_from_stack_env_only() {
    let script = text("scripts/stack.sh");
    assert!(script.starts_with("#!/usr/bin/env bash"));
    assert!(script.contains("set -euo pipefail"));
    assert!(script.contains("source \"$repo/scripts/stack.env\""));
    for key in ["JAEGER_MODULE_VERSION", "OTELCOL_VERSION"] {
        let v = stack_env(key);
        assert!(
            !script.contains(v.trim_start_matches('v')),
            "scripts/stack.sh repeats {key} ({v}) instead of using stack.env"
        );
        assert!(script.contains(&format!("${key}")), "{key} unused");
    }
    assert!(script.contains("stack/otelcol-builder.yaml"));
}
