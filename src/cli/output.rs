//! Rendering: all of the CLI's output goes through here. Text mode prints
//! the workflow's outputs on stdout and a summary on stderr; JSON mode prints
//! exactly one object on stdout.

use super::{OutputFormat, RunReport};
use crate::ir::validate::Severity;
use crate::ir::{Diagnostic, IrError};
use crate::outcome::ExitCode;
use crate::runtime::{RunError, Runtime};
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::Path;

/// Every JSON object pflow prints goes through here: all of it is redacted
/// except `result`, the workflow's declared outputs (the user's own data).
/// `error` and `warnings` carry user data (params, messages): every rule.
/// Elsewhere the keys are pflow's own (`price_key`, `token_sources`), so
/// only the string values are scanned.
pub(super) fn print_json(v: &Value) {
    let red = crate::telemetry::redact::global();
    // `result` is written from the original (it may be large: never copied).
    let redacted: Vec<(&str, Option<Value>)> = match v {
        Value::Object(map) => map
            .iter()
            .map(|(k, val)| {
                let copy = match k.as_str() {
                    "result" => None,
                    "error" | "warnings" => {
                        let mut c = val.clone();
                        red.redact_json(&mut c);
                        Some(c)
                    }
                    _ => {
                        let mut c = val.clone();
                        red.redact_json_strings(&mut c);
                        Some(c)
                    }
                };
                (k.as_str(), copy)
            })
            .collect(),
        _ => Vec::new(),
    };
    struct Out<'a>(&'a Value, &'a [(&'a str, Option<Value>)]);
    impl serde::Serialize for Out<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let Value::Object(map) = self.0 else {
                let mut c = self.0.clone();
                crate::telemetry::redact::global().redact_json_strings(&mut c);
                return c.serialize(s);
            };
            let mut m = s.serialize_map(Some(self.1.len()))?;
            for ((k, copy), original) in self.1.iter().zip(map.values()) {
                m.serialize_entry(k, copy.as_ref().unwrap_or(original))?;
            }
            m.end()
        }
    }
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer_pretty(&mut out, &Out(v, &redacted));
    let _ = writeln!(out);
}

/// A message pflow prints itself (error, warning, diagnostic): redacted, control
/// characters escaped.
pub(crate) fn shown(x: impl std::fmt::Display) -> String {
    crate::telemetry::redact::for_display(&x.to_string())
}

/// The one JSON error envelope of every command: `{"success": false,
/// "error": {"type", "message", …}}`, then the command's own keys (`extra`,
/// an object; anything else adds nothing).
pub fn envelope(error: Value, extra: Value) -> Value {
    let mut out = Map::new();
    out.insert("success".into(), Value::Bool(false));
    out.insert("error".into(), error);
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            out.entry(k).or_insert(v);
        }
    }
    Value::Object(out)
}

/// An error object of the envelope: its stable `type` and the message.
pub fn error_body(kind: &str, message: &str) -> Value {
    json!({"type": kind, "message": message})
}

/// A command failed: `error: MESSAGE` on stderr, or the envelope on stdout.
pub fn fail(format: OutputFormat, code: ExitCode, kind: &str, message: &str, extra: Value) -> i32 {
    match format {
        OutputFormat::Json => print_json(&envelope(error_body(kind, message), extra)),
        OutputFormat::Text => eprintln!("error: {}", shown(message)),
    }
    code.code()
}

/// Bad command-line usage: exit code 2.
pub fn usage_error(format: OutputFormat, message: &str) -> i32 {
    fail(
        format,
        ExitCode::Invalid,
        "usage_error",
        message,
        json!({"result": null, "metrics": null, "trace_id": null, "trace_file": null}),
    )
}

pub fn validation_result(
    format: OutputFormat,
    file: &Path,
    parsed: Result<usize, IrError>,
    diags: &[Diagnostic],
) -> i32 {
    let errors = diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let ok = parsed.is_ok() && errors == 0;
    let invalid = format!("`{}` has {errors} validation error(s)", file.display());
    match format {
        OutputFormat::Json => {
            let mut v = json!({
                "valid": ok,
                "file": file.display().to_string(),
                "diagnostics": diags,
            });
            if !ok {
                let error = match parsed {
                    Err(e) => error_json(&RunError::Invalid(e)),
                    Ok(_) => error_body("validation_error", &invalid),
                };
                v = envelope(error, v);
            }
            print_json(&v)
        }
        OutputFormat::Text => match &parsed {
            Err(e) => eprintln!("error: {}", shown(e)),
            Ok(n) => {
                for d in diags {
                    eprintln!("{}", shown(d));
                }
                if ok {
                    println!("✓ `{}` is valid ({n} nodes)", file.display());
                } else {
                    eprintln!("error: {invalid}");
                }
            }
        },
    }
    if ok {
        0
    } else {
        ExitCode::Invalid.code()
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
        RunError::Budget(b) => json!({
            "node": b.node, "type": b.kind(), "message": e.to_string(), "stopped": b.stopped, "reason": b.reason,
        }),
        other => json!({"node": null, "type": other.kind(), "message": other.to_string()}),
    }
}

/// An output value as text: the user's data, not redacted, but with control
/// characters escaped so a value cannot drive the terminal.
fn render_value(v: &Value) -> String {
    let text = match v {
        Value::String(s) => s.clone(),
        other => serde_json::to_string_pretty(other).unwrap_or_default(),
    };
    crate::telemetry::redact::escape_controls(&text).into_owned()
}

/// A planned workflow, compact: its inputs, one line per node with its
/// params, the edges, and what it would change (⚠).
pub fn plan_text(
    ir: &crate::ir::WorkflowIr,
    inputs: &serde_json::Map<String, Value>,
    side_effects: &[String],
) -> String {
    fn short(v: &Value) -> String {
        let s = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let s = s.replace('\n', "⏎");
        let cut: String = s.chars().take(70).collect();
        if cut.len() < s.len() {
            format!("{cut}…")
        } else {
            cut
        }
    }
    let mut out = format!(
        "plan: {}{}\n",
        ir.name().unwrap_or("planned workflow"),
        ir.metadata
            .get("description")
            .and_then(Value::as_str)
            .map(|d| format!(" — {d}"))
            .unwrap_or_default()
    );
    if !ir.inputs.is_empty() {
        let shown: Vec<String> = ir
            .inputs
            .iter()
            .map(|(k, spec)| match inputs.get(k).or(spec.default.as_ref()) {
                Some(v) => format!("{k}={}", short(v)),
                None => format!("{k}=?"),
            })
            .collect();
        out.push_str(&format!("  inputs: {}\n", shown.join(", ")));
    }
    let width = ir.nodes.iter().map(|n| n.id.len()).max().unwrap_or(0);
    let twidth = ir
        .nodes
        .iter()
        .map(|n| n.node_type.len())
        .max()
        .unwrap_or(0);
    for (i, n) in ir.nodes.iter().enumerate() {
        let params: Vec<String> = n
            .params
            .iter()
            .map(|(k, v)| format!("{k}={}", short(v)))
            .collect();
        let batch = n
            .batch
            .as_ref()
            .map(|b| format!(" [for each {} in {}]", b.as_name, short(&b.items)))
            .unwrap_or_default();
        out.push_str(&format!(
            "  {}. {:<width$}  {:<twidth$}  {}{batch}\n",
            i + 1,
            n.id,
            n.node_type,
            params.join("  ")
        ));
    }
    if !ir.edges.is_empty() {
        let edges: Vec<String> = ir
            .edges
            .iter()
            .map(|e| {
                if e.action == "default" {
                    format!("{} → {}", e.from, e.to)
                } else {
                    format!("{} →[{}] {}", e.from, e.action, e.to)
                }
            })
            .collect();
        out.push_str(&format!("  edges: {}\n", edges.join(", ")));
    }
    for e in side_effects {
        out.push_str(&format!("  ⚠ {e}\n"));
    }
    out
}

pub fn print_run(r: &RunReport, format: OutputFormat) {
    match format {
        OutputFormat::Json => {
            let mut warnings: Vec<String> = r.warnings.clone();
            warnings.extend(r.validation_warnings.iter().map(|d| d.to_string()));
            let mut v = json!({
                "success": r.result.is_ok(),
                "result": r.result.as_ref().ok().map(|o| Value::Object(o.outputs.clone())),
                "error": r.result.as_ref().err().map(error_json),
                "metrics": r.metrics,
                "trace_id": r.trace_id,
                "trace_file": r.trace_file.as_ref().map(|p| p.display().to_string()),
                "warnings": warnings,
            });
            if let Some(o) = v.as_object_mut() {
                if let Some(e) = &r.estimate {
                    o.insert("estimate".into(), json!(e));
                }
                if let Some(p) = &r.plan {
                    o.insert("plan".into(), json!(p));
                }
                // No declared `outputs`: `result` holds the last node's outputs, and says whose.
                if let Some(node) = r.result.as_ref().ok().and_then(|o| o.result_node.as_ref()) {
                    o.insert("result_node".into(), json!(node));
                }
                if let Some(id) = &r.run_id {
                    o.insert("run_id".into(), json!(id));
                }
                if let Some(c) = &r.resume_command {
                    o.insert("resume_command".into(), json!(c));
                }
                if let Some(s) = &r.resume {
                    o.insert("resume".into(), json!(s));
                }
            }
            print_json(&v);
            if let Some(p) = &r.trace_file {
                eprintln!("Trace saved: {}", p.display());
            }
        }
        OutputFormat::Text => {
            for d in &r.validation_warnings {
                eprintln!("{}", shown(d));
            }
            for w in &r.warnings {
                eprintln!("warning: {}", shown(w));
            }
            for line in r.resume.iter().flat_map(|s| s.lines()) {
                eprintln!("↻ {}", shown(&line));
            }
            match &r.result {
                Ok(out) => {
                    if let Some(node) = &out.result_node {
                        eprintln!(
                            "(no `outputs` declared: showing the outputs of the last node, `{}`)",
                            shown(node)
                        );
                    }
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
                Err(e) => eprintln!("error: {}", shown(e)),
            }
            eprintln!("{}", summary_line(r));
            if let Some(p) = &r.trace_file {
                eprintln!("Trace saved: {}", p.display());
            }
            if let (Some(id), Some(c)) = (&r.run_id, &r.resume_command) {
                eprintln!("Run {id} stopped; its completed nodes are kept. Resume with: {c}");
            }
        }
    }
}

/// Why `--estimate` could not estimate.
pub enum EstimateFailure<'a> {
    /// The workflow or its inputs are invalid (exit code 2, as for a run).
    Run(&'a RunError),
    Estimate(&'a crate::runtime::estimate::EstimateError),
}

/// `pflow run FILE --estimate`: the table on stdout (JSON: `{"estimate": {...}}`).
pub fn print_estimate(
    format: OutputFormat,
    result: Result<&crate::runtime::estimate::Estimate, EstimateFailure<'_>>,
    warnings: &[String],
) -> i32 {
    let (error, code) = match &result {
        Ok(_) => (None, 0),
        Err(EstimateFailure::Run(e)) => (Some(error_json(e)), e.exit_code().code()),
        Err(EstimateFailure::Estimate(e)) => (
            Some(json!({"node": null, "type": "estimate_error", "message": e.to_string()})),
            ExitCode::Invalid.code(),
        ),
    };
    match format {
        OutputFormat::Json => print_json(&json!({
            "success": result.is_ok(),
            "estimate": result.as_ref().ok(),
            "error": error,
            "warnings": warnings,
        })),
        OutputFormat::Text => {
            for w in warnings {
                eprintln!("warning: {}", shown(w));
            }
            match &result {
                Ok(e) => print!("{}", e.to_text()),
                Err(EstimateFailure::Run(e)) => eprintln!("error: {}", shown(e)),
                Err(EstimateFailure::Estimate(e)) => eprintln!("error: {}", shown(e)),
            }
        }
    }
    code
}

fn summary_line(r: &RunReport) -> String {
    let mark = if r.result.is_ok() { "✓" } else { "✗" };
    match &r.metrics {
        Some(m) => {
            use crate::format;
            let w = &m.workflow;
            let items = if w.batch_items > 0 {
                format!(" (+{})", format::count(w.batch_items, "batch item"))
            } else {
                String::new()
            };
            let reused = match &m.reused {
                Some(r) => format!(
                    " · reused {} restored + {} cached: {}, {}, {} when first made",
                    r.nodes_restored,
                    r.nodes_cached,
                    format::count(r.llm_calls, "LLM call"),
                    format::count(r.tokens.total, "token"),
                    r.cost_reused_usd
                        .map_or_else(|| "cost unknown".to_string(), format::usd_compact),
                ),
                None => String::new(),
            };
            format!(
                "{mark} {}{items} in {:.1} ms · {} · {} · {}{reused}",
                format::count(w.nodes_executed, "node"),
                m.total.duration_ms,
                format::count(m.total.llm_calls, "LLM call"),
                format::count(m.total.tokens_total, "token"),
                format::cost_with_unpriced(&m.total.cost, m.unpriced_models.len()),
            )
        }
        None => match &r.result {
            Ok(out) => format!("{mark} {} steps (telemetry off)", out.steps),
            Err(_) => format!("{mark} failed (telemetry off)"),
        },
    }
}

pub fn pricing_check(
    format: OutputFormat,
    file: &Path,
    result: Result<&Vec<crate::pricing::PricingWarning>, &str>,
) -> i32 {
    match (format, result) {
        (OutputFormat::Json, Ok(w)) => print_json(
            &json!({"valid": true, "file": file.display().to_string(), "warnings": w.iter().map(|w| w.to_string()).collect::<Vec<_>>()}),
        ),
        (OutputFormat::Json, Err(e)) => print_json(&envelope(
            error_body("invalid_price_file", e),
            json!({"valid": false, "file": file.display().to_string()}),
        )),
        (OutputFormat::Text, Ok(w)) => {
            for x in w {
                eprintln!("warning: {}", shown(x));
            }
            println!("✓ `{}` is a valid price file", file.display());
        }
        (OutputFormat::Text, Err(e)) => eprintln!("error: {}", shown(e)),
    }
    if result.is_ok() {
        0
    } else {
        2
    }
}

pub fn pricing_show(
    format: OutputFormat,
    table: &crate::pricing::PriceTable,
    model: Option<&str>,
    overrides: Option<&Path>,
    warnings: &[String],
) -> i32 {
    for w in warnings {
        eprintln!("warning: {}", shown(w));
    }
    let overrides_s = overrides.map(|p| p.display().to_string());
    let Some(model) = model else {
        let v = json!({"models": table.len(), "builtin_source": "LiteLLM model_prices_and_context_window.json (MIT), see data/README.md", "overrides": overrides_s});
        match format {
            OutputFormat::Json => print_json(&v),
            OutputFormat::Text => {
                println!(
                    "{} priced models (USD per 1M tokens), built in from LiteLLM's price map",
                    table.len()
                );
                println!(
                    "overrides: {}",
                    overrides_s
                        .as_deref()
                        .unwrap_or("none ($PFLOW_HOME/pricing.json or --pricing FILE)")
                );
            }
        }
        return 0;
    };
    let provider = crate::llm::resolve_model(model).ok();
    let prefix = provider.as_ref().and_then(|(p, _)| p.pricing().prefix);
    let name = provider.as_ref().map(|(_, m)| m.as_str()).unwrap_or(model);
    match table.lookup(name, prefix) {
        Some(r) => {
            let from = match r.source {
                crate::pricing::PriceSource::Builtin => "built-in table".to_string(),
                crate::pricing::PriceSource::Override => {
                    format!("override file {}", overrides_s.clone().unwrap_or_default())
                }
            };
            match format {
                OutputFormat::Json => print_json(
                    &json!({"model": model, "key": r.key, "source": r.source, "from": from, "price_per_million_tokens": r.price}),
                ),
                OutputFormat::Text => {
                    println!("{model} → `{}` ({from}), USD per 1M tokens:", r.key);
                    let p = &r.price;
                    println!("  input        {}", p.input);
                    println!("  output       {}", p.output);
                    let opt = |v: Option<f64>, fallback: &str| {
                        v.map(|x| x.to_string())
                            .unwrap_or_else(|| format!("(as {fallback})"))
                    };
                    println!("  cache_read   {}", opt(p.cache_read, "input"));
                    println!("  cache_write  {}", opt(p.cache_write, "input"));
                    if let Some(x) = p.cache_write_1h {
                        println!("  cache_write_1h {x}");
                    }
                    if let Some(x) = p.reasoning {
                        println!("  reasoning    {x}");
                    }
                    for t in &p.tiers {
                        println!(
                            "  above {} prompt tokens: input {:?} output {:?}",
                            t.above, t.input, t.output
                        );
                    }
                }
            }
            0
        }
        None => {
            let msg = format!("no price known for `{model}`; add it to $PFLOW_HOME/pricing.json, e.g. {{\"{model}\": {{\"input\": 1.0, \"output\": 2.0}}}}");
            fail(
                format,
                ExitCode::Failed,
                "unknown_price",
                &msg,
                json!({"model": model}),
            )
        }
    }
}

pub fn workflow_cmd(action: &super::WorkflowCommand, format: OutputFormat) -> i32 {
    use crate::workflows;
    let dir = workflows::dir();
    let fail = |e: &workflows::LibraryError, code: ExitCode| {
        fail(format, code, e.kind(), &e.to_string(), Value::Null)
    };
    match action {
        super::WorkflowCommand::Save {
            file,
            name,
            description,
            force,
        } => match workflows::save(&dir, file, name, description.as_deref(), *force) {
            Ok(saved) => {
                match format {
                    OutputFormat::Json => print_json(&json!({
                        "success": true,
                        "name": name,
                        "path": saved.path.display().to_string(),
                        "workflow_dir": saved.workflow_dir.as_ref().map(|d| d.display().to_string()),
                        "relative_paths": saved.relative_paths,
                    })),
                    OutputFormat::Text => {
                        println!(
                            "✓ saved `{name}` ({}); run it with `pflow run {name}`",
                            saved.path.display()
                        );
                        if let Some(d) = &saved.workflow_dir {
                            println!("  ${{workflow.dir}} is now {}", d.display());
                        }
                        if !saved.relative_paths.is_empty() {
                            println!("  these paths stay relative to the directory you run it from (use ${{workflow.dir}}/… to pin them):");
                            for p in &saved.relative_paths {
                                println!("    {}", shown(p));
                            }
                        }
                    }
                }
                0
            }
            Err(e) => fail(&e, ExitCode::Invalid),
        },
        super::WorkflowCommand::Delete { name } => match workflows::delete(&dir, name) {
            Ok(p) => {
                match format {
                    OutputFormat::Json => print_json(
                        &json!({"success": true, "name": name, "deleted": p.display().to_string()}),
                    ),
                    OutputFormat::Text => println!("✓ deleted `{name}` ({})", p.display()),
                }
                0
            }
            Err(e) => fail(&e, ExitCode::Invalid),
        },
        super::WorkflowCommand::List => {
            let all = workflows::list(&dir);
            match format {
                OutputFormat::Json => print_json(&json!({"workflows": all})),
                OutputFormat::Text if all.is_empty() => println!(
                    "no saved workflows (save one with `pflow workflow save FILE --name NAME`)"
                ),
                OutputFormat::Text => {
                    for w in &all {
                        println!(
                            "{}  {}",
                            w.name,
                            w.description.as_deref().unwrap_or("(no description)")
                        );
                        let mut facts = vec![format!(
                            "{} node{}",
                            w.nodes,
                            if w.nodes == 1 { "" } else { "s" }
                        )];
                        if !w.inputs.is_empty() {
                            facts.push(format!("inputs: {}", w.inputs.join(", ")));
                        }
                        if !w.outputs.is_empty() {
                            facts.push(format!("outputs: {}", w.outputs.join(", ")));
                        }
                        println!("    {}", facts.join(" · "));
                    }
                }
            }
            0
        }
        super::WorkflowCommand::Show { name } => match workflows::load(&dir, name) {
            Ok(ir) => {
                match format {
                    OutputFormat::Json => {
                        print_json(&serde_json::to_value(&ir).unwrap_or(Value::Null))
                    }
                    OutputFormat::Text => {
                        println!(
                            "{name}: {}",
                            ir.metadata
                                .get("description")
                                .and_then(Value::as_str)
                                .unwrap_or("(no description)")
                        );
                        if let Some(c) = ir.metadata.get("created").and_then(Value::as_str) {
                            println!("created {c}");
                        }
                        println!("inputs:");
                        for (k, i) in &ir.inputs {
                            let t = i.value_type.map(|t| t.as_str()).unwrap_or("any");
                            let status = match (&i.default, i.required) {
                                (Some(d), _) => format!(
                                    "default {}",
                                    serde_json::to_string(d).unwrap_or_default()
                                ),
                                (None, true) => "required".into(),
                                (None, false) => "optional".into(),
                            };
                            let desc = i
                                .description
                                .as_deref()
                                .map(|d| format!(" — {d}"))
                                .unwrap_or_default();
                            println!("  {k:<16} {t:<8} {status}{desc}");
                        }
                        println!("outputs:");
                        for (k, o) in &ir.outputs {
                            println!("  {k:<16} {}", o.source.as_deref().unwrap_or(""));
                        }
                        println!("nodes:");
                        for n in &ir.nodes {
                            println!("  {:<16} {}", n.id, n.node_type);
                        }
                    }
                }
                0
            }
            Err(e) => fail(&e, ExitCode::Invalid),
        },
    }
}
