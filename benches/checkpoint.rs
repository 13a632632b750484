//! Checkpoints: what the store costs a run and what a resume saves.
//!
//! In process, through `pflow::run::run` (the lifecycle the binary uses,
//! default telemetry: metrics, no trace kept on success), for chains of
//! `echo` nodes each writing ~1 KiB of text:
//!
//! - store size per run (`$PFLOW_HOME/runs/<id>/`: bytes, files, bytes per
//!   node), with distinct values and with every node writing the same value
//!   (content addressing stores it once);
//! - wall time of a run with checkpoints on and off (`PFLOW_CHECKPOINTS=off`):
//!   the per-node cost of writing them;
//! - resume overhead: `--from` the last node (every other node restored from
//!   the checkpoint) against running the whole chain, per node.
//!
//! `cargo bench --bench checkpoint`; `PFLOW_CKPT_NODES=100,1000` picks the
//! sizes, `PFLOW_CKPT_RUNS=5` the runs per median.

use pflow::checkpoint::Mode;
use pflow::run::{self, RunConfig, Source};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn chain(path: &Path, n: usize, same: bool) {
    let text = |i: usize| {
        let seed = if same { 0 } else { i };
        format!("{seed:04} ").repeat(205)
    };
    let nodes: Vec<_> = (0..n)
        .map(|i| json!({"id": format!("n{i}"), "type": "echo", "params": {"text": text(i)}}))
        .collect();
    let edges: Vec<_> = (1..n)
        .map(|i| json!({"from": format!("n{}", i - 1), "to": format!("n{i}")}))
        .collect();
    let wf = json!({"ir_version": "0.1.0", "metadata": {"name": format!("ckpt-{n}")},
        "nodes": nodes, "edges": edges});
    std::fs::write(path, serde_json::to_vec(&wf).unwrap()).unwrap();
}

fn dir_size(dir: &Path) -> (u64, u64) {
    let mut bytes = 0;
    let mut files = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                bytes += m.len();
                files += 1;
            }
        }
    }
    (bytes, files)
}

fn run_once(
    rt: &tokio::runtime::Runtime,
    home: &Path,
    file: &Path,
    mode: Option<Mode>,
) -> (f64, Option<String>) {
    let mut config = RunConfig::new(Source::File(file.to_path_buf()));
    config.home = home.to_path_buf();
    config.read_stdin = false;
    config.resume = mode;
    let t = Instant::now();
    let report = rt.block_on(run::run(config, &mut run::Quiet));
    let wall = t.elapsed().as_secs_f64();
    assert!(report.result.is_ok(), "{:?}", report.result.err());
    (wall, report.run_id)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let sizes: Vec<usize> = std::env::var("PFLOW_CKPT_NODES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100, 1000]);
    let runs: usize = std::env::var("PFLOW_CKPT_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    println!("nodes  values    store bytes  files  bytes/node  run on (ms)  run off (ms)  write/node (µs)  full (ms)  --from last (ms)  restore/node (µs)");
    for &n in &sizes {
        for same in [false, true] {
            let file: PathBuf = tmp.path().join(format!("chain-{n}-{same}.json"));
            chain(&file, n, same);
            let home = tmp.path().join(format!("home-{n}-{same}"));
            // Warm-up (tokenizer, page cache), then the medians.
            let (_, id) = run_once(&rt, &home, &file, None);
            let (bytes, files) = dir_size(&home.join("runs").join(id.unwrap()));
            let on = median(
                (0..runs)
                    .map(|_| run_once(&rt, &home, &file, None).0)
                    .collect(),
            );
            std::env::set_var("PFLOW_CHECKPOINTS", "off");
            let off = median(
                (0..runs)
                    .map(|_| run_once(&rt, &home, &file, None).0)
                    .collect(),
            );
            std::env::remove_var("PFLOW_CHECKPOINTS");
            let last = format!("n{}", n - 1);
            let from = median(
                (0..runs)
                    .map(|_| run_once(&rt, &home, &file, Some(Mode::From { node: last.clone() })).0)
                    .collect(),
            );
            println!(
                "{n:>5}  {:<8}  {bytes:>11}  {files:>5}  {:>10}  {:>11.1}  {:>12.1}  {:>15.1}  {:>9.1}  {:>16.1}  {:>17.1}",
                if same { "same" } else { "distinct" },
                bytes / n as u64,
                on * 1e3,
                off * 1e3,
                (on - off) / n as f64 * 1e6,
                on * 1e3,
                from * 1e3,
                from / n as f64 * 1e6,
            );
        }
    }
}
