//! Telemetry overhead on the runtime: a generated 10,000-node chain of `echo`
//! nodes (each reading its predecessor through a template) run with
//! telemetry off, metrics only, and the full trace written to a file.
//!
//! `cargo bench --bench runtime` prints criterion's numbers; divide the time
//! per iteration by 10,000 for the per-node time. `PFLOW_BENCH_NODES`
//! changes the chain length.
//!
//! `cargo bench --bench runtime -- redaction_paired` instead measures what
//! redaction costs the full trace: `PFLOW_BENCH_PAIRS` (default 21) pairs of
//! runs, redaction on and off, interleaved (the order alternating) so load
//! on the machine hits both alike; prints the medians and the median of the
//! per-pair ratios.
//!
//! `cargo bench --bench runtime -- resources_paired` pairs the same runs with
//! resource recording (the per-attempt meter) on and off, and then times the
//! meter alone per one-poll node.

use criterion::{criterion_group, Criterion};
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
        live: None,
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

/// The chain (`PFLOW_BENCH_NODES` long), compiled, and what runs it.
struct Setup {
    n: usize,
    rt: Runtime,
    wf: Arc<CompiledWorkflow>,
    tokio_rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let n = std::env::var("PFLOW_BENCH_NODES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000);
        let rt = Runtime::default();
        let wf = compile(&rt, n);
        Setup {
            n,
            rt,
            wf,
            tokio_rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio"),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
}

fn bench(c: &mut Criterion) {
    let Setup {
        n,
        rt,
        wf,
        tokio_rt,
        dir,
    } = Setup::new();
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
                empty(dir.path());
            })
        });
    }
    g.finish();
}

/// Removes the trace files a run left, so the temp dir does not fill up over
/// many iterations.
fn empty(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let _ = std::fs::remove_file(e.path());
    }
}

/// Paired full-trace runs of the chain with `set(true)` and `set(false)`
/// (`PFLOW_BENCH_PAIRS` pairs, default 21), interleaved with the order
/// alternating so load on the machine hits both alike: prints the medians,
/// the median of the per-pair ratios and of the per-node differences.
fn paired(what: &str, set: fn(bool)) {
    let pairs: usize = std::env::var("PFLOW_BENCH_PAIRS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(21);
    let Setup {
        n,
        rt,
        wf,
        tokio_rt,
        dir,
    } = Setup::new();
    let mode = TraceMode::Full { save_always: true };
    let time = |on: bool| {
        set(on);
        let t = std::time::Instant::now();
        run_once(&rt, &wf, mode, dir.path(), &tokio_rt);
        let d = t.elapsed().as_secs_f64() * 1e3;
        empty(dir.path());
        d
    };
    // Warm-up: one of each.
    time(true);
    time(false);
    let (mut on, mut off, mut ratio, mut diff) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..pairs {
        let (a, b) = if i % 2 == 0 {
            let a = time(true);
            (a, time(false))
        } else {
            let b = time(false);
            (time(true), b)
        };
        on.push(a);
        off.push(b);
        ratio.push(a / b);
        diff.push((a - b) * 1e3 / n as f64);
    }
    set(false);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "chain of {n} echo nodes, full trace to file, {pairs} interleaved pairs (load average {}):",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("  {what} on : median {:>7.1} ms", median(&mut on));
    println!("  {what} off: median {:>7.1} ms", median(&mut off));
    println!(
        "  on/off ratio : median {:.3} (min {:.3}, max {:.3})",
        median(&mut ratio),
        ratio[0],
        ratio[ratio.len() - 1]
    );
    println!(
        "  on − off per node: median {:.2} µs (min {:.2}, max {:.2})",
        median(&mut diff),
        diff[0],
        diff[diff.len() - 1]
    );
}

/// Redaction on and off (`redaction_paired`).
fn redaction_paired() {
    paired("redaction", |on| {
        pflow::telemetry::redact::bypass_text_scan_for_benchmark(!on)
    });
}

/// Resource recording on and off (`resources_paired`): the chain paired as
/// above, then the meter alone around a node future that is ready at its
/// first poll (as an `echo` node's is), against the bare future.
fn resources_paired() {
    use pflow::telemetry::resources;
    paired("resource recording", |on| {
        resources::bypass_meter_for_benchmark(!on)
    });
    let iters: u32 = 200_000;
    let subscriber = tracing_subscriber::registry();
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("node");
        assert!(!span.is_disabled());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("tokio");
        let per = |metered: bool| {
            resources::bypass_meter_for_benchmark(!metered);
            let t = std::time::Instant::now();
            rt.block_on(async {
                for i in 0..iters {
                    let fut = std::future::ready(std::hint::black_box(i));
                    std::hint::black_box(resources::metered(&span, fut).await);
                }
            });
            t.elapsed().as_secs_f64() * 1e9 / f64::from(iters)
        };
        per(true);
        let (mut with, mut without) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            with.push(per(true));
            without.push(per(false));
        }
        resources::bypass_meter_for_benchmark(false);
        with.sort_by(f64::total_cmp);
        without.sort_by(f64::total_cmp);
        println!(
            "meter alone, {iters} one-poll futures ×5: median {:.0} ns with, {:.0} ns without: {:.2} µs per node",
            with[2],
            without[2],
            (with[2] - without[2]) / 1e3
        );
    });
}

criterion_group!(benches, bench);

fn main() {
    if std::env::args().any(|a| a == "redaction_paired") {
        redaction_paired();
        return;
    }
    if std::env::args().any(|a| a == "resources_paired") {
        resources_paired();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
