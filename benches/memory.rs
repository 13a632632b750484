//! A 50 MB value through a run: `read-file` of a 50 MB file, then three
//! `write-file` nodes each writing it (`${read.content}`) to its own file.
//! Telemetry off, default (metrics + trace kept for a failure) and `--trace`,
//! interleaved run by run so machine load hits every mode alike; prints the
//! median wall time, CPU time (user + sys) and peak RSS of each (`wait4`),
//! their ratio to telemetry off, the spread of RSS across runs, and how much
//! of the value reaches the trace.
//!
//! `cargo bench --bench memory`; `PFLOW_MEMORY_RUNS` (default 7) repetitions;
//! `PFLOW_MEMORY_BIN` picks the binary (default target/release/pflow, else
//! the one cargo built for the bench), so two builds can be compared.

use std::path::Path;

mod support;
use support::{dir_bytes, load_average, measure, median, run_command, Measured as Run};

fn main() {
    // `cargo bench` passes `--bench`; any filter argument is ignored here.
    let bin = std::env::var_os("PFLOW_MEMORY_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/pflow"));
    let bin = if bin.exists() {
        bin
    } else {
        env!("CARGO_BIN_EXE_pflow").into()
    };
    let runs: usize = std::env::var("PFLOW_MEMORY_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let dir = tempfile::tempdir().expect("tempdir");
    let size = 50 * 1024 * 1024;
    let data = dir.path().join("big.txt");
    // Text, as a log or a document would be (not one repeated byte).
    let line = "2026-12-06T07:00:00Z INFO request handled in 12 ms, status 200, path /api/items\n";
    std::fs::write(&data, line.repeat(size / line.len())).expect("write data");
    let out = |i: usize| {
        dir.path()
            .join(format!("copy{i}.txt"))
            .display()
            .to_string()
    };
    let wf = dir.path().join("big.json");
    std::fs::write(
        &wf,
        serde_json::json!({"ir_version": "0.1.0", "nodes": [
            {"id": "read", "type": "read-file", "params": {"file_path": data.display().to_string()}},
            {"id": "w1", "type": "write-file", "params": {"file_path": out(1), "content": "${read.content}"}},
            {"id": "w2", "type": "write-file", "params": {"file_path": out(2), "content": "${read.content}"}},
            {"id": "w3", "type": "write-file", "params": {"file_path": out(3), "content": "${read.content}"}}],
            "edges": [{"from": "read", "to": "w1"}, {"from": "w1", "to": "w2"}, {"from": "w2", "to": "w3"}]})
        .to_string(),
    )
    .expect("write workflow");
    let modes = ["off", "default", "trace"];
    let run = |mode: &str| -> Run {
        let home = dir.path().join(format!("home-{mode}"));
        let _ = std::fs::remove_dir_all(&home);
        let mut c = run_command(&bin, &home, &wf, mode);
        let mut m = measure(&mut c);
        m.trace_bytes = dir_bytes(&home.join("traces"));
        m
    };
    let _warm = run("off");
    let mut results: Vec<Vec<Run>> = modes.iter().map(|_| Vec::new()).collect();
    for r in 0..runs {
        // Rotate the order each repetition: no mode always runs first.
        for k in 0..modes.len() {
            let m = (r + k) % modes.len();
            results[m].push(run(modes[m]));
        }
    }
    println!(
        "50 MB value: read-file + 3 write-files, {} ({runs} interleaved runs, medians; load average {})",
        bin.display(),
        load_average()
    );
    let med = |m: usize, f: &dyn Fn(&Run) -> f64| median(results[m].iter().map(f).collect());
    let (w0, c0, r0) = (
        med(0, &|r| r.wall_s),
        med(0, &|r| r.cpu_s),
        med(0, &|r| r.rss_kib as f64),
    );
    println!(
        "  {:<8} {:>8} {:>7} {:>8} {:>7} {:>11} {:>7} {:>19} {:>11}",
        "mode",
        "wall s",
        "ratio",
        "CPU s",
        "ratio",
        "RSS KiB",
        "ratio",
        "RSS min..max KiB",
        "trace bytes"
    );
    for (m, name) in modes.iter().enumerate() {
        let (w, c, rss) = (
            med(m, &|r| r.wall_s),
            med(m, &|r| r.cpu_s),
            med(m, &|r| r.rss_kib as f64),
        );
        let lo = results[m].iter().map(|r| r.rss_kib).min().unwrap_or(0);
        let hi = results[m].iter().map(|r| r.rss_kib).max().unwrap_or(0);
        println!(
            "  {:<8} {:>8.3} {:>6.2}x {:>8.3} {:>6.2}x {:>11.0} {:>6.3}x {:>19} {:>11}",
            name,
            w,
            w / w0,
            c,
            c / c0,
            rss,
            rss / r0,
            format!("{lo}..{hi}"),
            results[m].iter().map(|r| r.trace_bytes).max().unwrap_or(0)
        );
    }
}
