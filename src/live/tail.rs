//! `pflow trace tail [TRACE] [--follow]`: prints a run's spans as they end.
//!
//! The trace file is no use for this: a run's spans are held (or buffered)
//! until the run ends and written whole (see `telemetry::file`). A run
//! started with `--live` publishes them instead: its server streams every
//! ended span as a server-sent event and announces its URL in
//! `$PFLOW_HOME/traces/live/<pid>.json`. `tail` finds the newest such run
//! (or the one whose trace id starts with TRACE), prints the spans so far and,
//! with `--follow`, the rest until the run ends. A TRACE that is not live is
//! read from its saved file and printed the same way, in the order its spans ended.

use super::{discovery_dir, Discovery};
use crate::telemetry::live::{self, EventKind, LiveSpan, RunStart, SpanParts};
use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often `--follow` looks for a live run to appear.
const POLL: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error(
        "no live run: start one with `pflow run FILE --live` (or use --follow to wait for one)"
    )]
    NoLiveRun,
    #[error("cannot read the live run at {url}: {message}")]
    Stream { url: String, message: String },
    #[error(transparent)]
    Trace(#[from] crate::traces::TraceError),
}

impl TailError {
    pub fn kind(&self) -> &'static str {
        match self {
            TailError::NoLiveRun => "no_live_run",
            TailError::Stream { .. } => "live_stream_error",
            TailError::Trace(e) => e.kind(),
        }
    }
}

/// How the tail ended.
#[derive(Debug, PartialEq)]
pub enum Tailed {
    /// The run ended; its `end` event, as printed.
    Ended(Box<live::RunEnd>),
    /// Without `--follow`: the spans so far were printed, the run goes on.
    SoFar,
    /// The run's server went away without an `end` (the run was killed).
    Gone,
    /// A saved trace was printed.
    Saved(PathBuf),
}

/// A live run's announcement, when its process is still there.
fn live_runs(home: &Path) -> Vec<Discovery> {
    let Ok(dir) = std::fs::read_dir(discovery_dir(home)) else {
        return Vec::new();
    };
    let mut runs: Vec<Discovery> = dir
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| {
            let d: Discovery = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
            if alive(d.pid) {
                Some(d)
            } else {
                // A run that died without closing its server: its file is stale.
                let _ = std::fs::remove_file(e.path());
                None
            }
        })
        .collect();
    runs.sort_by(|a, b| b.started.cmp(&a.started));
    runs
}

fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists; nothing is sent.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap_or_default()
}

/// The live run whose trace id starts with `target` (`None`: the newest).
async fn find(home: &Path, target: Option<&str>) -> Option<Discovery> {
    let runs = live_runs(home);
    let Some(target) = target.filter(|t| *t != "last") else {
        return runs.into_iter().next();
    };
    let http = client();
    for d in runs {
        let start: Option<RunStart> = match http.get(format!("{}run", d.url)).send().await {
            Ok(r) => r.json().await.ok().flatten(),
            Err(_) => None,
        };
        if start
            .and_then(|s| s.trace_id)
            .is_some_and(|id| id.starts_with(target))
        {
            return Some(d);
        }
    }
    None
}

/// Follows (or reads so far) the run `target` names, printing each line with `print`.
pub async fn tail(
    home: &Path,
    target: Option<&str>,
    follow: bool,
    json: bool,
    print: &mut dyn FnMut(&str),
) -> Result<Tailed, TailError> {
    let found = loop {
        if let Some(d) = find(home, target).await {
            break d;
        }
        match target {
            // Not live: perhaps saved (`last`: the newest saved trace).
            Some(t) => return saved(home, t, json, print),
            None if follow => tokio::time::sleep(POLL).await,
            None => return Err(TailError::NoLiveRun),
        }
    };
    stream(&found.url, follow, json, print).await
}

/// One event as a JSON line (`--output-format json`): `{"event": NAME, "data": {…}}`.
fn json_line(name: &str, data: &str) -> String {
    let data: serde_json::Value = serde_json::from_str(data).unwrap_or(serde_json::Value::Null);
    serde_json::json!({"event": name, "data": data}).to_string()
}

async fn stream(
    url: &str,
    follow: bool,
    json: bool,
    print: &mut dyn FnMut(&str),
) -> Result<Tailed, TailError> {
    let err = |message: String| TailError::Stream {
        url: url.to_string(),
        message,
    };
    let events = format!("{url}events{}", if follow { "" } else { "?once=1" });
    let resp = client()
        .get(&events)
        .header("accept", "text/event-stream")
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| err(e.to_string()))?;
    let mut body = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    let mut run_start = live::now_ms();
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else {
            return Ok(Tailed::Gone);
        };
        buf.extend_from_slice(&chunk);
        while let Some(pos) = find_blank_line(&buf) {
            let raw: Vec<u8> = buf.drain(..pos + 2).collect();
            let (name, data) = parse_event(&String::from_utf8_lossy(&raw));
            if json && matches!(name.as_str(), "start" | "span" | "end" | "lagged") {
                print(&json_line(&name, &data));
                if let Some(EventKind::End(e)) = EventKind::parse(&name, &data) {
                    return Ok(Tailed::Ended(e));
                }
                continue;
            }
            match (name.as_str(), EventKind::parse(&name, &data)) {
                (_, Some(EventKind::Start(s))) => {
                    run_start = s.started_ms;
                    print(&format!(
                        "following {} (trace {}) at {url}",
                        s.workflow,
                        s.trace_id.as_deref().unwrap_or("-")
                    ));
                }
                (_, Some(EventKind::Span(s))) if live::shows_line(&s) => {
                    print(&live::span_line(&s, run_start));
                }
                (_, Some(EventKind::End(e))) => {
                    print(&live::end_line(&e));
                    return Ok(Tailed::Ended(e));
                }
                ("lagged", None) => {
                    let missed = serde_json::from_str::<serde_json::Value>(&data)
                        .ok()
                        .and_then(|v| v["missed"].as_u64())
                        .unwrap_or(0);
                    print(&format!(
                        "… {missed} events missed (the saved trace has them)"
                    ));
                }
                _ => {}
            }
        }
    }
    Ok(if follow { Tailed::Gone } else { Tailed::SoFar })
}

/// Where the first `\n\n` (the end of an event) starts.
fn find_blank_line(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\n\n")
}

/// An event's name (`message` by default) and its `data` lines joined.
pub fn parse_event(raw: &str) -> (String, String) {
    let mut name = String::from("message");
    let mut data: Vec<&str> = Vec::new();
    for line in raw.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            name = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    (name, data.join("\n"))
}

/// A saved trace's spans, in the order they ended, as the live run printed them.
fn saved(
    home: &Path,
    target: &str,
    json: bool,
    print: &mut dyn FnMut(&str),
) -> Result<Tailed, TailError> {
    let path = crate::traces::resolve(target, &home.join("traces"))?;
    let trace = crate::traces::load(&path)?;
    let mut spans: Vec<&crate::traces::TraceSpan> = trace.spans.iter().collect();
    spans.sort_by_key(|s| s.end_ns);
    let start_ms = spans.iter().map(|s| s.start_ns).min().unwrap_or(0) as f64 / 1e6;
    if !json {
        print(&format!("{} (saved, not live)", path.display()));
    }
    for s in spans {
        let ls = LiveSpan::from_parts(
            SpanParts {
                trace_id: s.trace_id.clone(),
                span_id: s.span_id.clone(),
                parent_span_id: (!s.parent_span_id.is_empty()).then(|| s.parent_span_id.clone()),
                name: &s.name,
                start_ms: s.start_ns as f64 / 1e6,
                end_ms: s.end_ns as f64 / 1e6,
                message: &s.status_message,
            },
            &s.facts(),
        );
        if json {
            print(&json_line(
                "span",
                &serde_json::to_string(&ls).unwrap_or_default(),
            ));
        } else if live::shows_line(&ls) {
            print(&live::span_line(&ls, start_ms));
        }
    }
    Ok(Tailed::Saved(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_by_name_and_data() {
        assert_eq!(
            parse_event("id: 2\nevent: span\ndata: {\"a\":1}\n\n"),
            ("span".into(), "{\"a\":1}".into())
        );
        assert_eq!(
            parse_event(": keep-alive\n\n"),
            ("message".into(), String::new())
        );
        assert_eq!(find_blank_line(b"a\nb\n\nc"), Some(3));
    }

    #[test]
    fn a_dead_process_is_not_a_live_run() {
        let dir = tempfile::tempdir().unwrap();
        let live = discovery_dir(dir.path());
        std::fs::create_dir_all(&live).unwrap();
        let dead = Discovery {
            url: "http://127.0.0.1:1/".into(),
            pid: i32::MAX as u32,
            started: "2026-01-01T00:00:00Z".into(),
        };
        let f = live.join("x.json");
        std::fs::write(&f, serde_json::to_vec(&dead).unwrap()).unwrap();
        assert!(live_runs(dir.path()).is_empty());
        assert!(!f.exists(), "stale announcements are removed");
    }
}
