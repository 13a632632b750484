//! Peak memory and time of the `pflow` binary, two parts (`cargo bench
//! --bench memory` runs both; `-- value` or `-- viewers` picks one):
//!
//! - value: a 50 MB value through a run: `read-file` of a 50 MB file, then
//!   three `write-file` nodes each writing it (`${read.content}`) to its own
//!   file. Telemetry off, default (metrics + trace kept for a failure) and
//!   `--trace`, interleaved run by run so machine load hits every mode alike;
//!   prints the median wall time, CPU time (user + sys) and peak RSS of each
//!   (`wait4`), their ratio to telemetry off, the spread of RSS across runs,
//!   and how much of the value reaches the trace. `PFLOW_MEMORY_RUNS`
//!   (default 7) repetitions; `PFLOW_MEMORY_BIN` picks the binary (default
//!   target/release/pflow, else the one cargo built for the bench), so two
//!   builds can be compared.
//! - viewers: `trace summary|show|report` on a huge trace file
//!   (`PFLOW_BENCH_TRACE_MB`, default 1024) grown from a real batch run's
//!   item spans.

use std::path::Path;

mod support;
use support::{dir_bytes, load_average, measure, median, run_command, Measured as Run};

fn main() {
    // `cargo bench` passes `--bench`; a filter picks one part.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants = |part: &str| filter.is_empty() || filter.iter().any(|f| part.contains(f.as_str()));
    if wants("value") {
        value_in_store();
    }
    if wants("viewers") {
        viewers_on_a_huge_trace();
    }
}

fn value_in_store() {
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

fn viewers_on_a_huge_trace() {
    let mib: usize = std::env::var("PFLOW_BENCH_TRACE_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let dir =
        tempfile::tempdir_in(std::env::var_os("PFLOW_BENCH_DIR").unwrap_or_else(|| ".".into()))
            .expect("tempdir");
    let home = dir.path().join("home");
    let bin = env!("CARGO_BIN_EXE_pflow");
    // A real run to copy from: a batch of 100 items, each echoing 1 KiB of text.
    let wf = dir.path().join("fan.json");
    std::fs::write(
        &wf,
        serde_json::json!({"ir_version": "0.1.0", "metadata": {"name": "fan"}, "nodes": [
            {"id": "fan", "type": "echo", "batch": {"items": (0..100).collect::<Vec<_>>()},
             "params": {"text": format!("item ${{item}} {}", "lorem ipsum ".repeat(85))}}]})
        .to_string(),
    )
    .expect("write workflow");
    let status = std::process::Command::new(bin)
        .env("PFLOW_HOME", &home)
        .args(["run", "--trace"])
        .arg(&wf)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run pflow");
    assert!(status.success(), "pflow run failed");
    let real_path = std::fs::read_dir(home.join("traces"))
        .expect("traces")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".otlp.json"))
        .expect("a trace file");
    let real = std::fs::read_to_string(&real_path).expect("read trace");
    // The first item span, with holes for its id and index.
    let first: serde_json::Value = serde_json::from_str(real.lines().next().unwrap()).unwrap();
    let item = first["resourceSpans"][0]["scopeSpans"][0]["spans"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s.to_string().contains("\"fan[0]\"")))
        .expect("an item span")
        .clone();
    let mut template = item;
    template["spanId"] = serde_json::json!("@ID@");
    let template = template.to_string().replace("fan[0]", "fan[@N@]");
    let mut envelope = first.clone();
    envelope["resourceSpans"][0]["scopeSpans"][0]["spans"] = serde_json::json!(["@SPANS@"]);
    let envelope = envelope.to_string();
    let (open, close) = envelope.split_once("\"@SPANS@\"").unwrap();
    let big = dir.path().join("big.otlp.json");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&big).expect("create"));
    let (mut written, mut n) = (0usize, 100u64);
    let t = std::time::Instant::now();
    while written < mib << 20 {
        let mut line = String::from(open);
        for i in 0..512 {
            if i > 0 {
                line.push(',');
            }
            line.push_str(
                &template
                    .replace("@ID@", &format!("{:016x}", 0x1_0000_0000u64 + n))
                    .replace("@N@", &n.to_string()),
            );
            n += 1;
        }
        line.push_str(close);
        line.push('\n');
        written += line.len();
        std::io::Write::write_all(&mut out, line.as_bytes()).expect("write");
    }
    // The real file last: its batch, workflow and run spans end after every item.
    std::io::Write::write_all(&mut out, real.as_bytes()).expect("write");
    drop(out);
    println!(
        "trace viewers on a {:.0} MiB trace ({} item spans; written in {:.1} s):",
        written as f64 / (1 << 20) as f64,
        n,
        t.elapsed().as_secs_f64()
    );
    let page = dir.path().join("big.html");
    let big_s = big.to_str().unwrap();
    for args in [
        vec!["trace", "summary", big_s],
        vec!["trace", "show", big_s],
        vec!["trace", "show", big_s, "--node", "fan[50]"],
        vec!["trace", "report", big_s, "--output", page.to_str().unwrap()],
    ] {
        let mut c = std::process::Command::new(bin);
        c.env("PFLOW_HOME", &home)
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let m = measure(&mut c);
        println!(
            "  {:<28} wall {:>6.1} s  CPU {:>6.1} s  peak RSS {:>9} KiB",
            args.iter()
                .filter(|a| **a != big_s)
                .copied()
                .collect::<Vec<_>>()
                .join(" ")
                .replace(page.to_str().unwrap(), "PAGE"),
            m.wall_s,
            m.cpu_s,
            m.rss_kib
        );
    }
}
