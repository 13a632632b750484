//! Peak memory of the `pflow` binary: a run with a 50 MB value in the store
//! (telemetry off vs the full trace to file, and how much of the value
//! reaches the trace), and the trace viewers (`trace summary|show|report`)
//! on a huge trace file (`PFLOW_BENCH_TRACE_MB`, default 1024) grown from a
//! real batch run's item spans.
//!
//! Runs the real `pflow` binary (built by cargo for this bench) in child
//! processes and reads each child's peak RSS from `wait4`. Prints numbers;
//! `cargo bench --bench memory` (both), `-- value` or `-- viewers` (one).

use std::process::Command;

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
    let dir = tempfile::tempdir().expect("tempdir");
    let size = 50 * 1024 * 1024;
    let data = dir.path().join("big.txt");
    std::fs::write(&data, "z".repeat(size)).expect("write data");
    let wf = dir.path().join("big.json");
    std::fs::write(
        &wf,
        serde_json::json!({"ir_version": "0.1.0", "nodes": [
            {"id": "read", "type": "read-file", "params": {"file_path": data.display().to_string()}},
            {"id": "copy", "type": "echo", "params": {"value": "${read.content}"}}],
            "edges": [{"from": "read", "to": "copy"}]})
        .to_string(),
    )
    .expect("write workflow");
    let bin = env!("CARGO_BIN_EXE_pflow");
    let run = |traced: bool| {
        let home = dir
            .path()
            .join(if traced { "home-traced" } else { "home-off" });
        let mut c = Command::new(bin);
        c.env("PFLOW_HOME", &home)
            .arg("run")
            .arg(&wf)
            .stdout(std::process::Stdio::null());
        if traced {
            c.arg("--trace");
        } else {
            c.env("OTEL_SDK_DISABLED", "true");
        }
        let (rss, _, status) = peak_rss_and_cpu(&mut c);
        assert!(status.success(), "pflow failed");
        let trace_bytes: u64 = std::fs::read_dir(home.join("traces"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .sum();
        (rss, trace_bytes)
    };
    let mut off = Vec::new();
    let mut on = Vec::new();
    for _ in 0..3 {
        off.push(run(false));
        on.push(run(true));
    }
    let min = |v: &[(i64, u64)]| v.iter().map(|x| x.0).min().unwrap_or(0);
    let (off_kib, on_kib) = (min(&off), min(&on));
    println!("50 MB value in the store (peak RSS, best of 3):");
    println!("  telemetry off : {:>8} KiB", off_kib);
    println!(
        "  full trace    : {:>8} KiB  ({:+.1}%)",
        on_kib,
        (on_kib - off_kib) as f64 * 100.0 / off_kib as f64
    );
    println!(
        "  trace file    : {:>8} bytes for a {} byte value",
        on[0].1, size
    );
}

/// `trace summary`, `trace show`, `trace show --node` and `trace report` on
/// a trace of `PFLOW_BENCH_TRACE_MB` MiB: wall time, CPU time and peak RSS.
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
    let status = Command::new(bin)
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
        .and_then(|a| a.iter().find(|s| s["name"] == "node fan[0]"))
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
        let mut c = Command::new(bin);
        c.env("PFLOW_HOME", &home)
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let t = std::time::Instant::now();
        let (rss, cpu, status) = peak_rss_and_cpu(&mut c);
        assert!(status.success(), "{args:?} failed");
        println!(
            "  {:<28} wall {:>6.1} s  CPU {:>6.1} s  peak RSS {:>9} KiB",
            args.iter()
                .filter(|a| **a != big_s)
                .copied()
                .collect::<Vec<_>>()
                .join(" ")
                .replace(page.to_str().unwrap(), "PAGE"),
            t.elapsed().as_secs_f64(),
            cpu,
            rss
        );
    }
}

// The child is reaped by wait4 below, which also reports its peak RSS and CPU time.
#[allow(clippy::zombie_processes)]
fn peak_rss_and_cpu(cmd: &mut Command) -> (i64, f64, std::process::ExitStatus) {
    let child = cmd.spawn().expect("spawn pflow");
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe {
        libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut ru);
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    use std::os::unix::process::ExitStatusExt;
    (
        ru.ru_maxrss,
        secs(ru.ru_utime) + secs(ru.ru_stime),
        std::process::ExitStatus::from_raw(status),
    )
}
