//! Bounds on numbers and sizes that come from outside pflow (environment
//! variables, params, server headers, files): parsed with caps, never a
//! panic, never an unbounded read.
//!
//! ```
//! use std::time::Duration;
//! use pflow::limits::{secs, MAX_TIMEOUT};
//! assert_eq!(secs(1e308, MAX_TIMEOUT), MAX_TIMEOUT);
//! assert_eq!(secs(f64::NAN, MAX_TIMEOUT), Duration::ZERO);
//! assert_eq!(secs(1.5, MAX_TIMEOUT), Duration::from_millis(1500));
//! ```

use std::io::Read;
use std::path::Path;
use std::time::Duration;

/// The longest timeout or wait pflow takes from outside: a week (far past any
/// real one; `Instant + Duration` and timers overflow on far larger values).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Workflow files (`pflow run`, `validate`, `workflow_ref`).
pub const MAX_WORKFLOW_BYTES: u64 = 16 * 1024 * 1024;
/// Price override files (`--pricing`, `pricing check`).
pub const MAX_PRICING_BYTES: u64 = 64 * 1024 * 1024;
/// Trace files read back (`trace show|report|diff|export`).
pub const MAX_TRACE_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// `v` seconds as a duration, capped at `cap`; NaN, zero and negatives are zero.
pub fn secs(v: f64, cap: Duration) -> Duration {
    if v.is_nan() || v <= 0.0 {
        return Duration::ZERO;
    }
    if v >= cap.as_secs_f64() {
        return cap;
    }
    Duration::try_from_secs_f64(v).unwrap_or(cap)
}

/// Opens a file that must be a regular file (not a device, FIFO or
/// directory: `/dev/zero` would never end) of at most `max` bytes, for
/// reading as a stream; reads stop at `max + 1` bytes even if it grows.
/// Errors are `std::io::Error`s whose message says which rule was broken.
pub fn open_regular(path: &Path, max: u64) -> std::io::Result<std::io::Take<std::fs::File>> {
    use std::io::{Error, ErrorKind};
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    if meta.len() > max {
        return Err(too_large(max));
    }
    Ok(file.take(max + 1))
}

fn too_large(max: u64) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("larger than the {} limit", human(max)),
    )
}

/// Reads a whole text file under the rules of [`open_regular`].
pub fn read_text(path: &Path, max: u64) -> std::io::Result<String> {
    let mut text = String::new();
    open_regular(path, max)?.read_to_string(&mut text)?;
    // The file may have grown while it was read.
    if text.len() as u64 > max {
        return Err(too_large(max));
    }
    Ok(text)
}

/// A limit as its error message says it: `16 MiB`, `2 GiB`, `1024 bytes`.
pub fn human(n: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if n >= 1024 * MIB && n.is_multiple_of(1024 * MIB) {
        format!("{} GiB", n / (1024 * MIB))
    } else if n >= MIB {
        format!("{} MiB", n / MIB)
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_capped_never_a_panic() {
        for v in [f64::INFINITY, 1e300, 1e308, f64::MAX] {
            assert_eq!(secs(v, MAX_TIMEOUT), MAX_TIMEOUT);
        }
        for v in [f64::NAN, f64::NEG_INFINITY, -1.0, 0.0] {
            assert_eq!(secs(v, MAX_TIMEOUT), Duration::ZERO);
        }
        assert_eq!(secs(30.0, Duration::from_secs(60)), Duration::from_secs(30));
    }

    #[cfg(unix)]
    #[test]
    fn devices_and_oversized_files_are_refused() {
        let e = read_text(Path::new("/dev/zero"), 1024).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.json");
        std::fs::write(&p, vec![b' '; 2048]).unwrap();
        let e = read_text(&p, 1024).unwrap_err();
        assert!(e.to_string().contains("1024 bytes limit"), "{e}");
        assert_eq!(read_text(&p, 4096).unwrap().len(), 2048);
        assert!(read_text(dir.path(), 4096).is_err());
    }
}
