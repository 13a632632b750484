//! The observability stack files at the repo root parse, and every pipeline
//! references components that are defined (what `otelcol validate` checks
//! first, without needing Docker here).

use serde_norway::Value;
use std::path::PathBuf;

fn load(name: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(name);
    serde_norway::from_str(&std::fs::read_to_string(&p).unwrap())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
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

#[test]
fn collector_pipelines_reference_defined_components() {
    let c = load("otel-collector.yaml");
    let defined = |section: &str| keys(&c[section]);
    let pipelines = c["service"]["pipelines"]
        .as_mapping()
        .expect("service.pipelines");
    assert!(pipelines.contains_key("traces") && pipelines.contains_key("metrics"));
    for (name, p) in pipelines {
        for section in ["receivers", "processors", "exporters"] {
            let list = p[section]
                .as_sequence()
                .unwrap_or_else(|| panic!("{name:?}.{section}"));
            assert!(!list.is_empty() || section == "processors");
            for comp in list {
                let comp = comp.as_str().unwrap();
                assert!(
                    defined(section).contains(&comp.to_string()),
                    "pipeline {name:?} uses undefined {section} `{comp}`"
                );
            }
        }
    }
    for ext in c["service"]["extensions"].as_sequence().unwrap() {
        assert!(defined("extensions").contains(&ext.as_str().unwrap().to_string()));
    }
    assert_eq!(
        c["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].as_str(),
        Some("0.0.0.0:4317")
    );
    assert_eq!(
        c["receivers"]["otlp"]["protocols"]["http"]["endpoint"].as_str(),
        Some("0.0.0.0:4318")
    );
    let traces = &c["service"]["pipelines"]["traces"];
    let exporters: Vec<&str> = traces["exporters"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        exporters.contains(&"otlp/jaeger")
            && exporters.contains(&"file")
            && exporters.contains(&"debug")
    );
    let processors: Vec<&str> = traces["processors"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        processors.first(),
        Some(&"memory_limiter"),
        "memory_limiter must come first"
    );
}

#[test]
fn compose_starts_collector_jaeger_and_prometheus() {
    let d = load("docker-compose.yml");
    let services = keys(&d["services"]);
    for s in ["otel-collector", "jaeger", "prometheus"] {
        assert!(services.contains(&s.to_string()), "{s}");
    }
    let image = d["services"]["otel-collector"]["image"].as_str().unwrap();
    assert!(image.contains("opentelemetry-collector-contrib"), "{image}");
    let ports: Vec<String> = d["services"]["otel-collector"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    assert!(
        ports.iter().any(|p| p.starts_with("4317:"))
            && ports.iter().any(|p| p.starts_with("4318:"))
    );
    let jaeger: Vec<String> = d["services"]["jaeger"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    assert!(jaeger.iter().any(|p| p.starts_with("16686:")));
    // Every file mounted from the repo exists.
    for svc in d["services"].as_mapping().unwrap().values() {
        for vol in svc["volumes"].as_sequence().into_iter().flatten() {
            let src = vol.as_str().unwrap().split(':').next().unwrap();
            if let Some(rel) = src.strip_prefix("./") {
                if rel.ends_with(".yaml") || rel.ends_with(".yml") {
                    assert!(
                        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                            .join(rel)
                            .is_file(),
                        "{rel} is mounted but missing"
                    );
                }
            }
        }
    }
    let prom = load("prometheus.yml");
    let target = prom["scrape_configs"][0]["static_configs"][0]["targets"][0]
        .as_str()
        .unwrap();
    assert_eq!(target, "otel-collector:8889");
}
