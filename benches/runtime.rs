//! Telemetry overhead on the runtime: a generated 10,000-node chain of `echo`
//! nodes (each reading its predecessor through a template) run with
//! telemetry off, metrics only, and the full trace written to a file.
//!
//! `cargo bench --bench runtime` prints criterion's numbers; divide the time
//! per iteration by 10,000 for the per-node time. `PFLOW_BENCH_NODES`
//! changes the chain length.

use criterion::{criterion_group, criterion_main, Criterion};
use pflow::runtime::{CompileContext, CompiledWorkflow, RunOptions, Runtime};
use pflow::telemetry::{Telemetry, TelemetryConfig, TraceMode};
use serde_json::{json, Map};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

// Same allocator as the `pflow` binary, so the numbers are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn chain(n: usize) -> serde_json::Value {
    let mut nodes =
        vec![json!({"id": "n0", "type": "echo", "params": {"value": 0, "text": "start"}})];
    let mut edges = vec![];
    for i in 1..n {
        nodes.push(json!({"id": format!("n{i}"), "type": "echo", "params": {"value": i, "text": format!("after n{}: ${{n{}.value}}", i - 1, i - 1)}}));
        edges.push(json!({"from": format!("n{}", i - 1), "to": format!("n{i}")}));
    }
    json!({"ir_version": "0.1.0", "metadata": {"name": "bench-chain"}, "nodes": nodes, "edges": edges})
}

fn compile(rt: &Runtime, n: usize) -> Arc<CompiledWorkflow> {
    // Each node reads its predecessor's value through a template, so every
    // node resolves one template and writes two keys: small, constant-size work.
    let ir = pflow::ir::parse_str(&chain(n).to_string(), "bench.json").expect("valid chain");
    rt.compile(ir, "bench.json", Path::new("."), &CompileContext::default())
        .expect("compiles")
}

fn run_once(
    rt: &Runtime,
    wf: &Arc<CompiledWorkflow>,
    mode: TraceMode,
    dir: &Path,
    tokio_rt: &tokio::runtime::Runtime,
) {
    let opts = RunOptions {
        max_steps: None,
        checkpoint: None,
    };
    let telemetry = Telemetry::init(TelemetryConfig {
        mode,
        trace_dir: dir.to_path_buf(),
        service_name: "pflow-bench".into(),
        otlp: None,
        resource_attributes: Vec::new(),
        progress: None,
    });
    tracing::dispatcher::with_default(&telemetry.dispatch(), || {
        let out = tokio_rt
            .block_on(rt.run(wf.clone(), Map::new(), &opts))
            .expect("run");
        assert_eq!(out.steps, wf.node_count());
    });
    let save = matches!(mode, TraceMode::Full { .. });
    let _ = telemetry.finish(save, "bench");
}

fn bench(c: &mut Criterion) {
    let n: usize = std::env::var("PFLOW_BENCH_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let rt = Runtime::default();
    let wf = compile(&rt, n);
    let tokio_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut g = c.benchmark_group(format!("chain_{n}_echo_nodes"));
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(1));
    for (name, mode) in [
        ("telemetry_off", TraceMode::Off),
        ("metrics_only", TraceMode::MetricsOnly),
        ("full_trace_to_file", TraceMode::Full { save_always: true }),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                run_once(&rt, &wf, mode, dir.path(), &tokio_rt);
                // Keep the temp dir from filling up over many iterations.
                for e in std::fs::read_dir(dir.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let _ = std::fs::remove_file(e.path());
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
