//! Scale: generated 1k / 10k / 100k-node chains (`echo` nodes, and a
//! `write-file` chain) run by the release `pflow` binary untraced
//! (`OTEL_SDK_DISABLED=true`), by default (metrics, trace kept in memory or
//! spilled, dropped on success) and with `--trace`. Reports wall and CPU time,
//! peak RSS (`wait4`), trace bytes and bytes per node.
//!
//! `cargo bench --bench scale`; `PFLOW_SCALE_NODES=1000,10000` picks the sizes.
//!
//! `PFLOW_SCALE_SLOPE=RUNS` measures per-node cost instead: the slope between
//! a 10- and a 500-node chain (start-up cancels out), median wall and CPU of
//! RUNS paired runs. `PFLOW_SCALE_BIN` names the binary, or several joined
//! by `:` (`old:new`), run interleaved so both see the same machine state.
//! `PFLOW_SCALE_RATIO=RUNS`: a 10,000-node `echo` chain's default / off and
//! `--trace` / off ratios of whole runs, per binary.
//! Nothing is committed: the workflows are generated into a temp dir.

use serde_json::json;
use std::io::Write;
use std::path::Path;

/// Writes a chain of `n` nodes to `path`, streamed line by line so this
/// process stays small: a forked child starts with the parent's peak RSS.
/// `write-file` nodes cycle over 100 files in `out`.
pub fn write_chain(path: &Path, n: usize, kind: &str, out: &Path) -> std::io::Result<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    write!(
        w,
        r#"{{"ir_version":"0.1.0","metadata":{{"name":"{kind}-chain-{n}"}},"nodes":["#
    )?;
    for i in 0..n {
        let sep = if i == 0 { "" } else { "," };
        let node = match kind {
            "echo" if i == 0 => json!({"id": "n0", "type": "echo", "params": {"value": 0}}),
            "echo" => json!({"id": format!("n{i}"), "type": "echo",
                "params": {"value": i, "text": format!("after ${{n{}.value}}", i - 1)}}),
            _ => json!({"id": format!("n{i}"), "type": "write-file", "params": {
                "file_path": out.join(format!("f{}.txt", i % 100)).display().to_string(),
                "content": format!("line {i}")}}),
        };
        write!(w, "{sep}{node}")?;
    }
    write!(w, r#"],"edges":["#)?;
    for i in 1..n {
        let sep = if i == 1 { "" } else { "," };
        write!(w, r#"{sep}{{"from":"n{}","to":"n{i}"}}"#, i - 1)?;
    }
    write!(w, "]}}")?;
    w.flush()
}

mod support;
use support::{dir_bytes, load_average, measure, median, run_command};

/// Per-node wall and CPU time: the slope between a 10- and a 500-node chain.
/// Paired and interleaved: each repetition runs both sizes with every binary
/// in turn (rotating which goes first), and the slope is the median of the
/// repetitions' own slopes, so load shared by a pair cancels out.
fn slope(bins: &[std::path::PathBuf], dir: &Path, out: &Path, runs: usize) {
    println!(
        "per node, slope 10 → 500 nodes, median of {runs} paired runs (load average {})",
        load_average()
    );
    for kind in ["write-file", "echo"] {
        let wf = |n: usize| {
            let wf = dir.join(format!("{kind}-{n}.json"));
            write_chain(&wf, n, kind, out).expect("write workflow");
            wf
        };
        let (wf10, wf500) = (wf(10), wf(500));
        for mode in ["off", "default", "trace"] {
            // [binary][repetition] = (wall, cpu) slope in µs per node.
            let mut slopes: Vec<Vec<(f64, f64)>> = bins.iter().map(|_| Vec::new()).collect();
            for r in 0..runs {
                for k in 0..bins.len() {
                    let b = (r + k) % bins.len();
                    let home = dir.join(format!("home-slope-{b}"));
                    let at = |wf: &Path| {
                        let m = measure(&mut run_command(&bins[b], &home, wf, mode));
                        let _ = std::fs::remove_dir_all(&home);
                        m
                    };
                    let (small, large) = (at(&wf10), at(&wf500));
                    let us = |a: f64, z: f64| (z - a) * 1e6 / 490.0;
                    slopes[b].push((us(small.wall_s, large.wall_s), us(small.cpu_s, large.cpu_s)));
                }
            }
            for (b, s) in slopes.into_iter().enumerate() {
                let wall = median(s.iter().map(|x| x.0).collect());
                let cpu = median(s.iter().map(|x| x.1).collect());
                println!(
                    "{kind:<11} {mode:<8} wall {wall:>7.1} µs/node  cpu {cpu:>7.1} µs/node  {}",
                    bins[b].display()
                );
            }
        }
    }
    println!("load average after: {}", load_average());
}

/// Whole-run ratios on a 10,000-node `echo` chain (start-up included, as a
/// user sees it): default / off and `--trace` / off, per binary, medians of
/// `runs` interleaved repetitions.
fn ratios(bins: &[std::path::PathBuf], dir: &Path, out: &Path, runs: usize) {
    let wf = dir.join("echo-10000.json");
    write_chain(&wf, 10_000, "echo", out).expect("write workflow");
    println!(
        "echo chain, 10,000 nodes, median of {runs} interleaved runs (load average {})",
        load_average()
    );
    for (b, bin) in bins.iter().enumerate() {
        let mut t: Vec<Vec<(f64, f64)>> = vec![Vec::new(); 3];
        for r in 0..runs {
            for k in 0..3 {
                let m = (r + k) % 3;
                let home = dir.join(format!("home-ratio-{b}"));
                let x = measure(&mut run_command(
                    bin,
                    &home,
                    &wf,
                    ["off", "default", "trace"][m],
                ));
                let _ = std::fs::remove_dir_all(&home);
                t[m].push((x.wall_s, x.cpu_s));
            }
        }
        let med = |m: usize, f: fn(&(f64, f64)) -> f64| median(t[m].iter().map(f).collect());
        let (w, c) = (|x: &(f64, f64)| x.0, |x: &(f64, f64)| x.1);
        println!(
            "  {}: wall off {:.3} s, default {:.3} s ({:.2}x), --trace {:.3} s ({:.2}x); CPU off {:.3} s, default {:.2}x, --trace {:.2}x",
            bin.display(),
            med(0, w),
            med(1, w),
            med(1, w) / med(0, w),
            med(2, w),
            med(2, w) / med(0, w),
            med(0, c),
            med(1, c) / med(0, c),
            med(2, c) / med(0, c)
        );
    }
    println!("load average after: {}", load_average());
}

fn main() {
    // One binary, or several separated by `:` to compare (slope and ratio modes).
    let bins: Vec<std::path::PathBuf> = match std::env::var_os("PFLOW_SCALE_BIN") {
        Some(b) => std::env::split_paths(&b).collect(),
        None => vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/pflow")],
    };
    let bins: Vec<std::path::PathBuf> = bins
        .into_iter()
        .map(|b| {
            if b.exists() {
                b
            } else {
                env!("CARGO_BIN_EXE_pflow").into()
            }
        })
        .collect();
    let bin = bins[0].clone();
    let sizes: Vec<usize> = std::env::var("PFLOW_SCALE_NODES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 10_000, 100_000]);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).expect("out dir");
    println!("binary: {}", bin.display());
    let runs_of = |var: &str| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&r| r > 0)
    };
    if let Some(runs) = runs_of("PFLOW_SCALE_SLOPE") {
        slope(&bins, dir.path(), &out, runs);
        return;
    }
    if let Some(runs) = runs_of("PFLOW_SCALE_RATIO") {
        ratios(&bins, dir.path(), &out, runs);
        return;
    }
    println!(
        "{:<11} {:>7} {:<8} {:>8} {:>8} {:>11} {:>10} {:>13} {:>10}",
        "workflow",
        "nodes",
        "mode",
        "wall s",
        "cpu s",
        "cpu µs/node",
        "RSS MiB",
        "trace bytes",
        "bytes/node"
    );
    for kind in ["echo", "write-file"] {
        for &n in &sizes {
            let wf = dir.path().join(format!("{kind}-{n}.json"));
            write_chain(&wf, n, kind, &out).expect("write workflow");
            for mode in ["off", "default", "trace"] {
                let home = dir.path().join(format!("home-{kind}-{n}-{mode}"));
                let mut m = measure(&mut run_command(&bin, &home, &wf, mode));
                m.trace_bytes = dir_bytes(&home.join("traces"));
                let per_node = if m.trace_bytes > 0 {
                    format!("{:.0}", m.trace_bytes as f64 / n as f64)
                } else {
                    "-".into()
                };
                println!(
                    "{:<11} {:>7} {:<8} {:>8.2} {:>8.2} {:>11.1} {:>10.1} {:>13} {:>10}",
                    kind,
                    n,
                    mode,
                    m.wall_s,
                    m.cpu_s,
                    m.cpu_s * 1e6 / n as f64,
                    m.rss_kib as f64 / 1024.0,
                    m.trace_bytes,
                    per_node
                );
                let _ = std::fs::remove_dir_all(&home);
            }
        }
    }
}
