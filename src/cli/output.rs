//! Rendering: all of the CLI's output goes through here. Text mode prints
//! the workflow's outputs on stdout and a summary on stderr; JSON mode prints
//! exactly one object on stdout.

use super::{OutputFormat, RunReport};
use crate::ir::validate::Severity;
use crate::ir::{Diagnostic, IrError};
use crate::runtime::{RunError, Runtime};
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;

fn print_json(v: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer_pretty(&mut out, v);
    let _ = writeln!(out);
}

/// Bad command-line usage: exit code 2.
pub fn usage_error(format: OutputFormat, message: &str) -> i32 {
    match format {
        OutputFormat::Json => print_json(
            &json!({"success": false, "result": null, "error": {"type": "usage_error", "message": message}, "metrics": null, "trace_id": null, "trace_file": null}),
        ),
        OutputFormat::Text => eprintln!("error: {message}"),
    }
    2
}

pub fn validation_result(
    format: OutputFormat,
    file: &Path,
    parsed: Result<usize, String>,
    diags: &[Diagnostic],
) -> i32 {
    let errors = diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let ok = parsed.is_ok() && errors == 0;
    match format {
        OutputFormat::Json => print_json(&json!({
            "valid": ok,
            "file": file.display().to_string(),
            "error": parsed.as_ref().err(),
            "diagnostics": diags,
        })),
        OutputFormat::Text => match &parsed {
            Err(e) => eprintln!("error: {e}"),
            Ok(n) => {
                for d in diags {
                    eprintln!("{}", d);
                }
                if ok {
                    println!("✓ `{}` is valid ({n} nodes)", file.display());
                } else {
                    eprintln!(
                        "error: `{}` has {errors} validation error(s)",
                        file.display()
                    );
                }
            }
        },
    }
    if ok {
        0
    } else {
        2
    }
}

pub fn print_nodes(rt: &Runtime, format: OutputFormat) -> i32 {
    let specs = rt.registry().specs();
    match format {
        OutputFormat::Json => {
            print_json(&json!({"nodes": specs, "runtime_params": crate::nodes::RUNTIME_PARAMS}))
        }
        OutputFormat::Text => {
            let mut out = std::io::stdout().lock();
            for s in specs {
                let _ = writeln!(out, "{}\n  {}", s.name, s.description);
                let _ = writeln!(out, "  params:");
                for p in s.params {
                    let req = if p.required { " (required)" } else { "" };
                    let _ = writeln!(out, "    {:<14} {:<8} {}{req}", p.name, p.ty, p.description);
                }
                if !s.outputs.is_empty() {
                    let _ = writeln!(out, "  outputs:");
                    for o in s.outputs {
                        let _ = writeln!(out, "    {:<14} {:<8} {}", o.name, o.ty, o.description);
                    }
                }
                let _ = writeln!(out);
            }
            let _ = writeln!(out, "every node also accepts:");
            for p in crate::nodes::RUNTIME_PARAMS {
                let _ = writeln!(out, "    {:<14} {:<8} {}", p.name, p.ty, p.description);
            }
        }
    }
    0
}

fn error_json(e: &RunError) -> Value {
    match e {
        RunError::Node {
            node,
            node_type,
            kind,
            message,
            details,
        } => json!({
            "node": node, "node_type": node_type, "type": kind, "message": message, "details": details,
        }),
        RunError::Invalid(IrError::Invalid { file, diagnostics }) => json!({
            "node": null, "type": e.kind(), "message": e.to_string(), "file": file, "diagnostics": diagnostics,
        }),
        RunError::Invalid(IrError::Syntax {
            file,
            line,
            column,
            message,
        }) => json!({
            "node": null, "type": "syntax_error", "message": e.to_string(), "file": file, "line": line, "column": column, "reason": message,
        }),
        RunError::Invalid(IrError::Shape {
            file,
            path,
            line,
            column,
            ..
        }) => json!({
            "node": null, "type": "schema_error", "message": e.to_string(), "file": file, "path": path, "line": line, "column": column,
        }),
        other => json!({"node": null, "type": other.kind(), "message": other.to_string()}),
    }
}

fn render_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => serde_json::to_string_pretty(other).unwrap_or_default(),
    }
}

pub fn print_run(r: &RunReport, format: OutputFormat) {
    match format {
        OutputFormat::Json => {
            let mut warnings: Vec<String> = r.warnings.clone();
            warnings.extend(r.validation_warnings.iter().map(|d| d.to_string()));
            print_json(&json!({
                "success": r.result.is_ok(),
                "result": r.result.as_ref().ok().map(|o| Value::Object(o.outputs.clone())),
                "error": r.result.as_ref().err().map(error_json),
                "metrics": r.metrics,
                "trace_id": r.trace_id,
                "trace_file": r.trace_file.as_ref().map(|p| p.display().to_string()),
                "warnings": warnings,
            }));
            if let Some(p) = &r.trace_file {
                eprintln!("Trace saved: {}", p.display());
            }
        }
        OutputFormat::Text => {
            for d in &r.validation_warnings {
                eprintln!("{d}");
            }
            for w in &r.warnings {
                eprintln!("warning: {w}");
            }
            match &r.result {
                Ok(out) => {
                    let mut stdout = std::io::stdout().lock();
                    if out.outputs.len() == 1 {
                        if let Some(v) = out.outputs.values().next() {
                            let _ = writeln!(stdout, "{}", render_value(v));
                        }
                    } else {
                        for (k, v) in &out.outputs {
                            let _ = writeln!(stdout, "{k}: {}", render_value(v));
                        }
                    }
                }
                Err(e) => eprintln!("error: {e}"),
            }
            eprintln!("{}", summary_line(r));
            if let Some(p) = &r.trace_file {
                eprintln!("Trace saved: {}", p.display());
            }
        }
    }
}

fn summary_line(r: &RunReport) -> String {
    let mark = if r.result.is_ok() { "✓" } else { "✗" };
    match &r.metrics {
        Some(m) => {
            let w = &m.workflow;
            format!(
                "{mark} {} nodes in {:.1} ms · {} LLM calls · {} tokens · ${:.6}",
                w.nodes_executed,
                m.total.duration_ms,
                m.total.llm_calls,
                m.total.tokens_total,
                m.total.cost_usd
            )
        }
        None => match &r.result {
            Ok(out) => format!("{mark} {} steps (telemetry off)", out.steps),
            Err(_) => format!("{mark} failed (telemetry off)"),
        },
    }
}
