//! The progress display on stderr while a workflow runs: a live indicatif bar
//! on a terminal, plain lines (one per completed top-level node) otherwise or
//! with `--no-progress`. It renders what `telemetry::progress` observes from
//! the spans; stdout is never touched, and the display is gone before the
//! final summary is printed.

use crate::telemetry::progress::ProgressSink;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::sync::mpsc;
use std::time::Duration;

/// How long plain progress lines are gathered before one write to stderr.
const PLAIN_TICK: Duration = Duration::from_millis(20);

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `PFLOW_PROGRESS=off`: nothing.
    Off,
    /// One line per completed top-level node.
    Plain,
    /// The live bar (stderr is a terminal).
    Bar,
}

impl Mode {
    /// `PFLOW_PROGRESS` (`off`, `plain`, `auto`; default `auto`), then
    /// `--no-progress` and whether stderr is a terminal. Returns a warning for
    /// an unknown value (which counts as `auto`).
    pub fn choose(no_progress: bool) -> (Mode, Option<String>) {
        let auto = if no_progress || !std::io::stderr().is_terminal() {
            Mode::Plain
        } else {
            Mode::Bar
        };
        let env = std::env::var("PFLOW_PROGRESS").unwrap_or_default();
        match env.trim().to_ascii_lowercase().as_str() {
            "off" => (Mode::Off, None),
            "plain" => (Mode::Plain, None),
            "" | "auto" => (auto, None),
            other => (
                auto,
                Some(format!(
                    "PFLOW_PROGRESS=`{other}` is not one of off, plain, auto: using auto"
                )),
            ),
        }
    }
}

/// A running display; [`Display::finish`] removes it.
pub struct Display {
    sink: ProgressSink,
    bar: Option<ProgressBar>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Display {
    pub fn start(mode: Mode) -> Option<Display> {
        match mode {
            Mode::Off => None,
            Mode::Plain => {
                let (tx, rx) = mpsc::channel::<String>();
                // A thread of its own: a slow or blocked stderr never holds a node up.
                let writer = std::thread::Builder::new()
                    .name("pflow-progress".into())
                    .spawn(move || {
                        let mut err = std::io::stderr();
                        while let Ok(first) = rx.recv() {
                            let mut buf = super::output::shown(&first);
                            buf.push('\n');
                            // Lines that arrive within one tick go out in one
                            // write: a fast chain then wakes this thread a few
                            // times a second, not once per node. `finish`
                            // unparks it, so the run's end never waits a tick.
                            std::thread::park_timeout(PLAIN_TICK);
                            for line in rx.try_iter() {
                                buf.push_str(&super::output::shown(&line));
                                buf.push('\n');
                            }
                            let _ = err.write_all(buf.as_bytes());
                        }
                    })
                    .ok();
                Some(Display {
                    sink: ProgressSink::new(writer.is_some().then_some(tx)),
                    bar: None,
                    writer,
                })
            }
            Mode::Bar => {
                let sink = ProgressSink::new(None);
                let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
                let text = sink.clone();
                // The text is built at draw time, on indicatif's tick thread.
                let style = ProgressStyle::with_template(template(colour_enabled())).map(|s| {
                    s.tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ").with_key(
                        "pflow",
                        move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                            let _ = w.write_str(&super::output::shown(text.bar_text()));
                        },
                    )
                });
                if let Ok(style) = style {
                    bar.set_style(style);
                }
                bar.enable_steady_tick(Duration::from_millis(100));
                Some(Display {
                    sink,
                    bar: Some(bar),
                    writer: None,
                })
            }
        }
    }

    /// The live bar, to hide while a question is asked on the terminal.
    pub fn bar(&self) -> Option<ProgressBar> {
        self.bar.clone()
    }

    /// The observer to install in the run's telemetry.
    pub fn sink(&self) -> ProgressSink {
        self.sink.clone()
    }

    /// Clears the bar / flushes the plain lines, so the summary comes next.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
        self.sink.close_lines();
        if let Some(w) = self.writer {
            w.thread().unpark();
            let _ = w.join();
        }
    }
}

/// Prints `text` on stderr without tearing the live bar (if one is drawn).
pub fn println(display: Option<&Display>, text: &str) {
    let text = super::output::shown(text.trim_end());
    let text = text.as_str();
    match display.and_then(|d| d.bar.as_ref()) {
        Some(bar) => bar.suspend(|| eprintln!("{text}")),
        None => eprintln!("{text}"),
    }
}

/// Colour only on a terminal (the bar is only drawn on one) and never with `NO_COLOR` set.
fn colour_enabled() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn template(colour: bool) -> &'static str {
    if colour {
        "{spinner:.cyan} {pflow}"
    } else {
        "{spinner} {pflow}"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_and_only_one_has_colour() {
        for colour in [true, false] {
            assert!(ProgressStyle::with_template(template(colour)).is_ok());
        }
        assert!(template(true).contains(".cyan"));
        assert!(!template(false).contains('.'));
    }
}
