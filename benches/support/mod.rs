//! What the process benches share: running `pflow` as a child and reading
//! its wall time, CPU time and peak RSS from `wait4`.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// One child run of a bench.
pub struct Measured {
    pub wall_s: f64,
    /// User + system CPU seconds.
    pub cpu_s: f64,
    pub rss_kib: i64,
    pub trace_bytes: u64,
}

/// Runs `cmd` to completion (it must succeed). `trace_bytes` is left 0.
// The child is reaped by wait4, which also reports its peak RSS and CPU time.
#[allow(clippy::zombie_processes)]
pub fn measure(cmd: &mut Command) -> Measured {
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

/// The median (upper one for an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn dir_bytes(d: &Path) -> u64 {
    std::fs::read_dir(d)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// `pflow run WF` in `mode` (`off`, `default`, `trace`), its data under `home`.
pub fn run_command(bin: &Path, home: &Path, wf: &Path, mode: &str) -> Command {
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

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}
