//! Peak memory with a 50 MB value in the store: telemetry off vs the full
//! trace to file, and how much of the value reaches the trace.
//!
//! Runs the real `pflow` binary (built by cargo for this bench) in child
//! processes and reads each child's peak RSS from `wait4`. Prints numbers;
//! `cargo bench --bench memory`.

use std::process::Command;

// The child is reaped by wait4 below, which also reports its peak RSS.
#[allow(clippy::zombie_processes)]
fn peak_rss_kib(cmd: &mut Command) -> (i64, std::process::ExitStatus) {
    let child = cmd.spawn().expect("spawn pflow");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe {
        libc::wait4(pid, &mut status, 0, &mut usage);
    }
    use std::os::unix::process::ExitStatusExt;
    (usage.ru_maxrss, std::process::ExitStatus::from_raw(status))
}

fn main() {
    // `cargo bench` passes `--bench`; any filter argument is ignored here.
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
        let (rss, status) = peak_rss_kib(&mut c);
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
