//! `--live` at the command edge: starts the live page's server before the
//! run, prints its URL and a line per ended node and LLM call on stderr
//! (above the progress bar, if one is drawn), and closes the server once the
//! run's summary is printed. stdout is never touched, so
//! `--output-format json` stays one JSON object.

use super::Cli;
use crate::live::{LiveError, LiveServer};
use crate::telemetry::live::{self, EventKind, FeedItem, LiveFeed};
use indicatif::ProgressBar;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

/// How long the summary waits for the last live lines to reach stderr.
const LINES_GRACE: Duration = Duration::from_secs(2);

/// The feed and the server showing it.
pub struct Live {
    pub feed: LiveFeed,
    pub server: LiveServer,
}

/// Starts the server when `--live` (or `--live-port`) is given; a port that
/// cannot be bound is a usage error, before anything runs.
pub async fn start(cli: &Cli, home: &Path) -> Result<Option<Live>, LiveError> {
    if !cli.live && cli.live_port.is_none() {
        return Ok(None);
    }
    let feed = LiveFeed::new();
    let server = LiveServer::start(feed.clone(), cli.live_port.unwrap_or(0), home).await?;
    eprintln!(
        "live view: {} (or `pflow trace tail -f` in another terminal)",
        server.url()
    );
    Ok(Some(Live { feed, server }))
}

/// The thread printing live lines on stderr.
pub struct Lines {
    done: mpsc::Receiver<()>,
}

impl Lines {
    /// Prints each ended node, batch item, LLM call and planner step, then the
    /// run's end line; with a `bar`, above it without tearing it.
    pub fn start(feed: &LiveFeed, bar: Option<ProgressBar>) -> Lines {
        let mut sub = feed.subscribe();
        let (tx, done) = mpsc::channel();
        let print = move |line: &str| {
            let line = super::output::shown(line);
            match &bar {
                Some(b) => b.suspend(|| eprintln!("{line}")),
                None => eprintln!("{line}"),
            }
        };
        let spawned = std::thread::Builder::new()
            .name("pflow-live-lines".into())
            .spawn(move || {
                let mut run_start = live::now_ms();
                while let Some(item) = sub.blocking_next() {
                    match item {
                        FeedItem::Event(e) => match &e.kind {
                            EventKind::Start(s) => run_start = s.started_ms,
                            EventKind::Span(s) if live::shows_line(s) => {
                                print(&live::span_line(s, run_start))
                            }
                            EventKind::Span(_) => {}
                            EventKind::End(end) => print(&live::end_line(end)),
                        },
                        FeedItem::Lagged(n) => print(&format!(
                            "… {n} live lines skipped (stderr fell behind; the trace has every span)"
                        )),
                    }
                }
                let _ = tx.send(());
            });
        if spawned.is_err() {
            // No thread: no lines, and nothing to wait for.
            let (tx, done) = mpsc::channel();
            let _ = tx.send(());
            return Lines { done };
        }
        Lines { done }
    }

    /// Waits (briefly) until the end line is out, so the summary follows it.
    pub fn finish(self) {
        let _ = self.done.recv_timeout(LINES_GRACE);
    }
}
