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
//! RUNS runs each. `PFLOW_SCALE_BIN` names the binary, so two builds can be
//! compared one after the other on the same machine state.
//! Nothing is committed: the workflows are generated into a temp dir.

use serde_json::json;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

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

struct Measured {
    wall_s: f64,
    cpu_s: f64,
    rss_kib: i64,
    trace_bytes: u64,
}

// The child is reaped by wait4, which also reports its peak RSS and CPU time.
#[allow(clippy::zombie_processes)]
fn measure(cmd: &mut Command) -> Measured {
    let start = Instant::now();
    let child = cmd.spawn().expect("spawn pflow");
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe {
        libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut ru);
    }
    let wall_s = start.elapsed().as_secs_f64();
    assert!(
        std::process::ExitStatus::from_raw(status).success(),
        "pflow failed"
    );
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Measured {
        wall_s,
        cpu_s: tv(ru.ru_utime) + tv(ru.ru_stime),
        rss_kib: ru.ru_maxrss,
        trace_bytes: 0,
    }
}

fn dir_bytes(d: &Path) -> u64 {
    std::fs::read_dir(d)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// `pflow run WF` in `mode` (`off`, `default`, `trace`), its data under `home`.
fn run_command(bin: &Path, home: &Path, wf: &Path, mode: &str) -> Command {
    let mut c = Command::new(bin);
    c.env("PFLOW_HOME", home)
        .env("PFLOW_PROGRESS", "off")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .arg("run")
        .arg(wf)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match mode {
        "off" => {
            c.env("OTEL_SDK_DISABLED", "true");
        }
        "trace" => {
            c.arg("--trace");
        }
        _ => {}
    }
    c
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Per-node wall and CPU time: the slope of the medians between a 10- and a 500-node chain.
fn slope(bin: &Path, dir: &Path, out: &Path, runs: usize) {
    println!("per node, slope 10 → 500 nodes, median of {runs} runs");
    for kind in ["write-file", "echo"] {
        for mode in ["off", "default", "trace"] {
            let at = |n: usize| {
                let wf = dir.join(format!("{kind}-{n}.json"));
                write_chain(&wf, n, kind, out).expect("write workflow");
                let (mut wall, mut cpu) = (Vec::new(), Vec::new());
                for r in 0..runs {
                    let home = dir.join(format!("home-slope-{r}"));
                    let m = measure(&mut run_command(bin, &home, &wf, mode));
                    let _ = std::fs::remove_dir_all(&home);
                    wall.push(m.wall_s);
                    cpu.push(m.cpu_s);
                }
                (median(wall), median(cpu))
            };
            let (w10, c10) = at(10);
            let (w500, c500) = at(500);
            let us = |a: f64, b: f64| (b - a) * 1e6 / 490.0;
            println!(
                "{kind:<11} {mode:<8} wall {:>7.1} µs/node  cpu {:>7.1} µs/node",
                us(w10, w500),
                us(c10, c500)
            );
        }
    }
}

fn main() {
    let bin = match std::env::var_os("PFLOW_SCALE_BIN") {
        Some(b) => b.into(),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/pflow"),
    };
    let bin = if bin.exists() {
        bin
    } else {
        env!("CARGO_BIN_EXE_pflow").into()
    };
    let sizes: Vec<usize> = std::env::var("PFLOW_SCALE_NODES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 10_000, 100_000]);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).expect("out dir");
    println!("binary: {}", bin.display());
    if let Some(runs) = std::env::var("PFLOW_SCALE_SLOPE")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&r| r > 0)
    {
        slope(&bin, dir.path(), &out, runs);
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
