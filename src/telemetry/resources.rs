//! Resource use per node: the CPU time and peak RSS of a `shell` node's
//! command (from the `wait4` rusage of its `sh`), and pflow's own CPU time
//! and memory high-water mark per node attempt, as node span attributes.
//!
//! pflow's share is its busy time: the node's future runs in slices on
//! whichever runtime thread polls it, between other tasks' slices, so the
//! monotonic clock (vDSO, ~50 ns) is read around each poll and the slices are
//! summed. That is the CPU time pflow spent running the node's own code, plus
//! any time its thread was preempted inside a poll (nothing in a poll blocks).
//! A thread CPU clock would drop the preemption, but on Linux
//! `getrusage(RUSAGE_THREAD)` lags by up to a scheduler tick (a short poll
//! reads 0) and `CLOCK_THREAD_CPUTIME_ID` is a full syscall (~0.4 µs, twice per
//! poll), beyond the 2 µs a node's recording may cost (benches/README.md).
//! What the node hands to other threads (tokio's blocking pool for file I/O)
//! and to child processes is not in it. The peak RSS is the process's
//! high-water mark, read at the end of each attempt and recorded when it is
//! above the one the attempt started from: the last read (by the attempt
//! before it, or its own first poll when none was read yet). The attempt,
//! one running beside it, or pflow's bookkeeping since the last attempt's
//! end took pflow to a new peak.
//! Elsewhere than Linux only the busy time is recorded.

use super::attr;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// CPU times and peak RSS from one `rusage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub user_us: u64,
    pub system_us: u64,
    pub max_rss_bytes: u64,
}

impl Usage {
    #[cfg(unix)]
    pub fn from_rusage(r: &libc::rusage) -> Usage {
        let us = |t: libc::timeval| {
            u64::try_from(t.tv_sec)
                .unwrap_or(0)
                .saturating_mul(1_000_000)
                .saturating_add(u64::try_from(t.tv_usec).unwrap_or(0))
        };
        // ru_maxrss is in KiB on Linux, in bytes on macOS.
        let rss_unit = if cfg!(target_os = "macos") { 1 } else { 1024 };
        Usage {
            user_us: us(r.ru_utime),
            system_us: us(r.ru_stime),
            max_rss_bytes: u64::try_from(r.ru_maxrss)
                .unwrap_or(0)
                .saturating_mul(rss_unit),
        }
    }

    /// The calling thread's CPU times and the process's peak RSS (Linux).
    #[cfg(target_os = "linux")]
    pub fn this_thread() -> Option<Usage> {
        // SAFETY: rusage is plain integers, for which all-zero is a valid value.
        let mut r: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `r` is a live, writable rusage; RUSAGE_THREAD only reads the caller's counters.
        let ok = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut r) } == 0;
        ok.then(|| Usage::from_rusage(&r))
    }

    #[cfg(not(target_os = "linux"))]
    pub fn this_thread() -> Option<Usage> {
        None
    }
}

/// pflow's resident set now (Linux: `/proc/self/statm`).
pub fn resident_bytes() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        // SAFETY: sysconf only reads a configuration value.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        pages.checked_mul(u64::try_from(page).ok()?)
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// Records a `shell` command's usage on its node span. `inherited` is
/// pflow's resident set when it forked the command: Linux carries a
/// process's pre-`exec` high-water mark into its `ru_maxrss`, so a peak
/// not above it may be pflow's own pages, and is left out.
pub fn record_child(span: &tracing::Span, u: &Usage, inherited: Option<u64>) {
    let set = |key, v: u64| super::set_attribute(span, key, saturating_i64(v));
    set(attr::PROCESS_CPU_USER, u.user_us);
    set(attr::PROCESS_CPU_SYSTEM, u.system_us);
    if inherited.is_none_or(|i| u.max_rss_bytes > i) {
        set(attr::PROCESS_MEMORY_PEAK, u.max_rss_bytes);
    }
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Runs `fut` inside `span` (entered for each poll, so what it starts is
/// parented to it), metering pflow's own busy time in it, and records it on
/// `span` (`pflow.node.busy_us`, `pflow.node.rss_peak_bytes`) when `fut` ends
/// or is dropped (a cancelled or interrupted attempt keeps what it used). A
/// nested workflow's meter includes its child nodes'. The span is borrowed:
/// `Instrument` takes a clone of it, and every clone's drop walks each layer.
pub async fn metered<F: Future>(span: &tracing::Span, fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    if span.is_disabled() {
        // Telemetry off: nothing would keep the numbers, nothing to enter.
        return fut.await;
    }
    let mut meter =
        (!BENCH_BYPASS.load(std::sync::atomic::Ordering::Relaxed)).then(|| Meter::new(span));
    std::future::poll_fn(|cx| {
        let _in = span.enter();
        match &mut meter {
            Some(m) => m.poll(fut.as_mut(), cx),
            None => fut.as_mut().poll(cx),
        }
    })
    .await
}

static BENCH_BYPASS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// For benchmarks only: `true` turns the per-attempt meter off, to pair runs
/// with and without it. Nothing in pflow calls it.
#[doc(hidden)]
pub fn bypass_meter_for_benchmark(on: bool) {
    BENCH_BYPASS.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// The process's high-water mark as the last meter read it (0: none has):
/// the next attempt starts from it instead of reading its own, one system
/// call a node instead of two. A rise in pflow's bookkeeping between two
/// attempts is counted to the next.
static LAST_PEAK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

struct Meter<'s> {
    span: &'s tracing::Span,
    busy_ns: u64,
    /// The high-water mark before the first poll; `None` until then, or when unreadable.
    rss_start: Option<u64>,
    polled: bool,
}

impl<'s> Meter<'s> {
    fn new(span: &'s tracing::Span) -> Meter<'s> {
        Meter {
            span,
            busy_ns: 0,
            rss_start: None,
            polled: false,
        }
    }

    fn poll<F: Future>(&mut self, fut: Pin<&mut F>, cx: &mut Context<'_>) -> Poll<F::Output> {
        if !self.polled {
            self.polled = true;
            self.rss_start = match LAST_PEAK.load(std::sync::atomic::Ordering::Relaxed) {
                0 => Usage::this_thread().map(|u| u.max_rss_bytes),
                known => Some(known),
            };
        }
        let t = std::time::Instant::now();
        let out = fut.poll(cx);
        let slice = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.busy_ns = self.busy_ns.saturating_add(slice);
        out
    }
}

impl Drop for Meter<'_> {
    fn drop(&mut self) {
        let busy_us = self.busy_ns / 1000;
        if busy_us > 0 {
            super::set_attribute(self.span, attr::NODE_BUSY_US, saturating_i64(busy_us));
        }
        if let Some(start) = self.rss_start {
            if let Some(end) = Usage::this_thread().map(|u| u.max_rss_bytes) {
                LAST_PEAK.fetch_max(end, std::sync::atomic::Ordering::Relaxed);
                if end > start {
                    super::set_attribute(self.span, attr::NODE_RSS_PEAK, saturating_i64(end));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn this_thread_reads_a_growing_cpu_clock_and_the_process_peak() {
        let a = Usage::this_thread().expect("getrusage");
        let cpu = |u: Usage| u.user_us + u.system_us;
        // Work until the clock moves (it lags by up to a tick, and a busy
        // machine gives this thread only part of the wall time).
        let t = std::time::Instant::now();
        let mut x = 0u64;
        let b = loop {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            let b = Usage::this_thread().expect("getrusage");
            if cpu(b) > cpu(a) || t.elapsed() > std::time::Duration::from_secs(10) {
                break b;
            }
        };
        assert!(cpu(b) > cpu(a), "{a:?} → {b:?}");
        // The test binary itself is resident: a peak of at least a MiB,
        // and no less than what is resident now.
        assert!(b.max_rss_bytes > 1 << 20, "{b:?}");
        // Read before the peak: other tests in this process allocate meanwhile.
        // The kernel counts resident pages per CPU and folds them into the
        // high-water mark lazily, so the two may disagree by a few batches
        // of pages (seen: 48 KiB with the whole suite running).
        let now = resident_bytes().expect("statm");
        let peak = Usage::this_thread().expect("getrusage");
        let slack = 4 << 20;
        assert!(
            now > 1 << 20 && now <= peak.max_rss_bytes + slack,
            "{now} {peak:?}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn metered_sums_only_the_polls_of_its_future() {
        // ~20 ms of work over two polls, with a 50 ms idle gap in between
        // that must not count.
        let burn = || {
            let t = std::time::Instant::now();
            while t.elapsed() < std::time::Duration::from_millis(10) {
                std::hint::black_box(t.elapsed());
            }
        };
        let none = tracing::Span::none();
        let mut meter = Meter::new(&none);
        let mut fut = std::pin::pin!(async {
            burn();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            burn();
        });
        let t = std::time::Instant::now();
        std::future::poll_fn(|cx| meter.poll(fut.as_mut(), cx)).await;
        let total = t.elapsed().as_nanos() as u64;
        // Both bursts count; the ≥ 50 ms asleep between the polls does not.
        assert!(meter.busy_ns >= 20_000_000, "{}", meter.busy_ns);
        assert!(
            meter.busy_ns <= total - 50_000_000,
            "{} of {total}",
            meter.busy_ns
        );
        #[cfg(target_os = "linux")]
        assert!(meter.rss_start.is_some_and(|r| r > 1 << 20));
    }
}
