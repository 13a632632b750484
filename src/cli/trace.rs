//! `pflow trace …`: saved traces listed, shown as a tree or one node,
//! summarised, reported as HTML, repriced and compared. Rendering lives in
//! [`crate::traces`]; this is the command edge (resolve, load, print, exit code).

use super::output::{fail, print_json, usage_error};
use super::OutputFormat;
use crate::outcome::ExitCode;
use serde_json::{json, Value};
use std::path::Path;

/// A trace that could not be found or read: exit 2 (named wrongly) or 1 (broken file).
pub fn trace_error(format: OutputFormat, e: &crate::traces::TraceError) -> i32 {
    fail(format, e.exit_code(), e.kind(), &e.to_string(), Value::Null)
}

/// `pflow trace reprice`: the trace priced again with the current table
/// (`--pricing` or `$PFLOW_HOME/pricing.json` over the built-in one).
pub fn trace_reprice(target: &str, pricing: Option<&Path>, format: OutputFormat) -> i32 {
    use crate::traces::{self, reprice, show};
    use std::io::IsTerminal;
    let t = match traces::resolve(target, &traces::default_dir()).and_then(|p| traces::load(&p)) {
        Ok(t) => t,
        Err(e) => return trace_error(format, &e),
    };
    let (table, source, warnings) = match super::load_prices(pricing) {
        Ok(loaded) => loaded,
        Err(e) => return usage_error(format, &e),
    };
    let table = table
        .as_ref()
        .unwrap_or_else(|| crate::pricing::PriceTable::builtin());
    let r = reprice::reprice(&t, table, source.as_deref());
    match format {
        OutputFormat::Json => {
            let mut v = serde_json::to_value(&r).unwrap_or(Value::Null);
            v["warnings"] = json!(warnings);
            print_json(&v);
        }
        OutputFormat::Text => {
            for w in &warnings {
                eprintln!("warning: {}", super::output::shown(w));
            }
            let style = show::Style::detect(std::io::stdout().is_terminal());
            print!("{}", reprice::render(&r, &style));
        }
    }
    0
}

/// `pflow trace tail [TRACE] [--follow]`: a live run's spans on stdout as they
/// end (JSON lines with `--output-format json`); exit 1 when no run is live or
/// the run's server went away before the run's end.
pub async fn trace_tail(target: Option<&str>, follow: bool, format: OutputFormat) -> i32 {
    use crate::live::tail::{tail, TailError, Tailed};
    use std::io::Write;
    let home = crate::telemetry::pflow_home();
    let mut print = |line: &str| {
        let mut out = std::io::stdout().lock();
        let shown = match format {
            OutputFormat::Json => line.to_string(),
            OutputFormat::Text => super::output::shown(line),
        };
        // Flushed per line: whoever reads the pipe sees each span as it ends.
        let _ = writeln!(out, "{shown}").and_then(|_| out.flush());
    };
    match tail(
        &home,
        target,
        follow,
        format == OutputFormat::Json,
        &mut print,
    )
    .await
    {
        Ok(Tailed::Gone) => {
            eprintln!("warning: the run's live server closed before the run ended");
            ExitCode::Failed.code()
        }
        Ok(_) => 0,
        Err(TailError::Trace(e)) => trace_error(format, &e),
        Err(e) => fail(
            format,
            ExitCode::Failed,
            e.kind(),
            &e.to_string(),
            Value::Null,
        ),
    }
}

/// Whether an insight also reads the history for the workflow's suggestions.
#[derive(Clone, Copy, PartialEq)]
enum History {
    Read,
    /// `trace summary` shows only the top nodes: no reason to open the database.
    Skip,
}

/// The insight of a loaded trace, priced with the built-in table under
/// `$PFLOW_HOME/pricing.json` (a broken file is named and skipped).
fn insight_of(t: &crate::traces::Trace, history: History) -> crate::insight::Insight {
    let table = match super::load_prices(None) {
        Ok((table, _, warnings)) => {
            for w in &warnings {
                eprintln!("warning: {}", super::output::shown(w));
            }
            table
        }
        Err(e) => {
            eprintln!(
                "warning: {}; using the built-in prices",
                super::output::shown(&e)
            );
            None
        }
    };
    let table = table
        .as_ref()
        .unwrap_or_else(|| crate::pricing::PriceTable::builtin());
    let mut insight = crate::insight::analyze(t, table);
    // What the history says about this workflow's nodes (a cheaper model, a
    // max_tokens far above use) belongs beside what this one run says.
    if let Some(name) = t.workflow_name().filter(|_| history == History::Read) {
        match crate::history::suggest::for_workflow(
            &crate::history::db_path(),
            Some(name),
            None,
            table,
        ) {
            Ok(found) => insight.suggestions.extend(found.iter().map(Into::into)),
            Err(e) => eprintln!(
                "warning: {}; suggestions from the history left out",
                super::output::shown(e.to_string())
            ),
        }
    }
    insight
}

/// `pflow trace list|show|summary|report|diff`.
pub fn trace_cmd(action: &super::TraceCommand, format: OutputFormat) -> i32 {
    use super::TraceCommand;
    use crate::traces::{self, show};
    use std::io::IsTerminal;
    let dir = traces::default_dir();
    let style = show::Style::detect(std::io::stdout().is_terminal());
    let load = |arg: &str| traces::resolve(arg, &dir).and_then(|p| traces::load(&p));
    // The viewers stream the file and keep a bounded number of spans.
    let view = |arg: &str, keep: traces::Keep<'_>| {
        traces::resolve(arg, &dir).and_then(|p| traces::load_with(&p, keep))
    };
    match action {
        TraceCommand::List { limit } => {
            let files = traces::list_files(&dir);
            let take = if *limit == 0 { files.len() } else { *limit };
            let rows: Vec<show::ListRow> = files.iter().take(take).map(show::ListRow::of).collect();
            match format {
                OutputFormat::Json => print_json(&json!({"traces": rows, "total": files.len()})),
                OutputFormat::Text if rows.is_empty() => {
                    eprintln!(
                        "no saved traces in `{}` (run with --trace to keep one)",
                        dir.display()
                    )
                }
                OutputFormat::Text => {
                    print!("{}", show::render_list(&rows, &style));
                    if files.len() > take {
                        eprintln!(
                            "({} older traces not shown: --limit 0 lists all)",
                            files.len() - take
                        );
                    }
                }
            }
            0
        }
        TraceCommand::Show {
            target,
            node,
            critical_path,
        } => {
            let keep = match node {
                Some(id) => traces::Keep::Node(id, traces::SPAN_LIMIT),
                None => traces::Keep::First(traces::SPAN_LIMIT),
            };
            let t = match view(target, keep) {
                Ok(t) => t,
                Err(e) => return trace_error(format, &e),
            };
            match (format, node) {
                (OutputFormat::Json, None) => {
                    let spans: Vec<Value> = t
                        .spans
                        .iter()
                        .map(|s| {
                            json!({
                                "name": s.name, "span_id": s.span_id, "parent_span_id": s.parent_span_id,
                                "start_unix_nano": s.start_ns, "duration_ms": s.duration().as_secs_f64() * 1000.0,
                                "status": if s.failed() { "error" } else { "ok" }, "status_message": s.status_message,
                                "attributes": s.attributes.iter().map(|(k, v)| (k.clone(), v.to_json())).collect::<serde_json::Map<_, _>>(),
                            })
                        })
                        .collect();
                    print_json(
                        &json!({"trace_id": t.trace_id(), "file": t.path.display().to_string(),
                        "status": t.status(), "workflow": t.workflow_name(), "metrics": t.metrics(),
                        "insight": insight_of(&t, History::Read),
                        "total_spans": t.total_spans(), "omitted_spans": t.omitted_spans(), "spans": spans}),
                    );
                    0
                }
                (OutputFormat::Text, None) => {
                    let ins = insight_of(&t, History::Read);
                    let ids = ins.critical_ids();
                    print!(
                        "{}\n{}\n{}",
                        show::render_header(&t, &style),
                        show::render_tree_marked(&t, &style, critical_path.then_some(&ids)),
                        show::render_insight(&ins, &style)
                    );
                    0
                }
                (_, Some(id)) => match show::render_node(&t, id, &style) {
                    Ok(text) if format == OutputFormat::Text => {
                        print!("{text}");
                        0
                    }
                    Ok(_) => {
                        let spans: Vec<Value> = show::node_spans(&t, id)
                            .into_iter()
                            .map(|s| {
                                json!({"name": s.name, "duration_ms": s.duration().as_secs_f64() * 1000.0,
                                "attributes": s.attributes.iter().map(|(k, v)| (k.clone(), v.to_json())).collect::<serde_json::Map<_, _>>(),
                                "events": s.events.iter().map(|e| json!({"name": e.name,
                                    "attributes": e.attributes.iter().map(|(k, v)| (k.clone(), v.to_json())).collect::<serde_json::Map<_, _>>()})).collect::<Vec<_>>()})
                            })
                            .collect();
                        print_json(&json!({"node": id, "spans": spans}));
                        0
                    }
                    Err(msg) => fail(
                        format,
                        ExitCode::Invalid,
                        "node_not_found",
                        &msg,
                        json!({"node": id}),
                    ),
                },
            }
        }
        // Text mode names the top nodes too, which needs the spans.
        TraceCommand::Summary { target } => match view(
            target,
            traces::Keep::First(if format == OutputFormat::Text {
                traces::SPAN_LIMIT
            } else {
                0
            }),
        ) {
            // The same object in both formats: it is what the run printed as `metrics`.
            Ok(t) => {
                if let Some(note) = t.truncation_note() {
                    eprintln!("{note}");
                }
                print_json(&serde_json::to_value(t.metrics()).unwrap_or(Value::Null));
                // Standard output stays the metrics object; the top nodes are for the reader.
                if format == OutputFormat::Text {
                    eprint!(
                        "{}",
                        show::render_top(&insight_of(&t, History::Skip), &style)
                    );
                }
                0
            }
            Err(e) => trace_error(format, &e),
        },
        TraceCommand::Report {
            target,
            output,
            format: report_format,
        } => {
            let t = match view(target, traces::Keep::First(traces::report::SPAN_LIMIT)) {
                Ok(t) => t,
                Err(e) => return trace_error(format, &e),
            };
            let ins = insight_of(&t, History::Read);
            let markdown = *report_format == super::ReportFormat::Md;
            let path = match (output, markdown) {
                (Some(p), _) => Some(p.clone()),
                (None, false) => Some(traces::report::default_output(&t.path)),
                // Markdown goes to standard output unless -o names a file.
                (None, true) => None,
            };
            let text = if markdown {
                traces::markdown::render(&t, &ins)
            } else {
                traces::report::render_page(&t, &ins)
            };
            let Some(path) = path else {
                match format {
                    OutputFormat::Json => print_json(
                        &json!({"report": Value::Null, "format": "md", "markdown": text, "trace_id": t.trace_id(), "spans": t.total_spans()}),
                    ),
                    OutputFormat::Text => print!("{text}"),
                }
                return 0;
            };
            if let Err(e) = traces::report::write_page(&text, &path) {
                return fail(
                    format,
                    ExitCode::Failed,
                    "io_error",
                    &e.to_string(),
                    Value::Null,
                );
            }
            let omitted = traces::report::omitted_spans(&t);
            if omitted > 0 && !markdown {
                eprintln!(
                    "report written to {} ({} left out: it holds {} of {} spans, the first to end with their parents)",
                    path.display(),
                    crate::format::count(omitted as u64, "span"),
                    crate::format::thousands(t.total_spans().saturating_sub(omitted) as u64),
                    crate::format::thousands(t.total_spans() as u64),
                );
            } else {
                eprintln!("report written to {}", path.display());
            }
            if format == OutputFormat::Json {
                print_json(
                    &json!({"report": path.display().to_string(), "format": if markdown { "md" } else { "html" }, "trace_id": t.trace_id(), "spans": t.total_spans(), "omitted_spans": omitted}),
                );
            }
            0
        }
        TraceCommand::Diff { a, b } => {
            let (ta, tb) = match (load(a), load(b)) {
                (Ok(ta), Ok(tb)) => (ta, tb),
                (Err(e), _) | (_, Err(e)) => return trace_error(format, &e),
            };
            let d = traces::diff::diff(&ta, &tb);
            match format {
                OutputFormat::Json => print_json(&serde_json::to_value(&d).unwrap_or(Value::Null)),
                OutputFormat::Text => print!("{}", traces::diff::render(&d, &style)),
            }
            0
        }
        TraceCommand::Export { .. } | TraceCommand::Reprice { .. } | TraceCommand::Tail { .. } => {
            unreachable!("export and reprice are dispatched by cli::dispatch")
        }
    }
}
