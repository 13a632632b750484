//! The `pflow` command line: argument parsing and rendering results as text
//! or as one JSON object. A run's lifecycle is the library's ([`crate::run`]);
//! this module only resolves the arguments into its configuration. Errors
//! from the library become messages and exit codes:
//! 0 success, 1 the workflow failed, 2 invalid input, 3 stopped by a budget
//! (`--max-cost`, `--max-tokens-total`), 130 interrupted (SIGINT), 143
//! terminated (SIGTERM).

mod live;
mod output;
mod progress;
mod stats;
mod trace;

use crate::checkpoint::{CacheMode, Mode};
use crate::ir;
use crate::outcome::ExitCode;
use crate::pricing::PriceTable;
use crate::run::{EstimateFailure, RunConfig, RunObserver, Source};
use crate::runtime::{self, CompileContext, Runtime};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

pub use crate::run::RunReport;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Parser)]
#[command(
    name = "pflow",
    version,
    about = "Run AI workflows; every run observable and cost-transparent (OpenTelemetry-native).",
    after_help = "`pflow FILE [NAME=VALUE ...]` is short for `pflow run FILE ...`."
)]
pub struct Cli {
    /// Output format: text (outputs on stdout, summary on stderr) or json (one object on stdout).
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub output_format: OutputFormat,
    /// Save the run's trace to $PFLOW_HOME/traces (always saved when a run fails).
    #[arg(long, global = true)]
    pub trace: bool,
    /// Plain progress lines on stderr instead of the live bar (PFLOW_PROGRESS=off hides progress).
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// Price overrides (JSON, USD per million tokens) instead of $PFLOW_HOME/pricing.json.
    #[arg(long, global = true, value_name = "FILE")]
    pub pricing: Option<PathBuf>,
    /// Also export spans over OTLP to this endpoint (else OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT).
    #[arg(long, global = true, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// Model for the planner (else PFLOW_PLANNER_MODEL, else PFLOW_DEFAULT_MODEL).
    #[arg(long, global = true, value_name = "MODEL")]
    pub planner_model: Option<String>,
    /// Give up planning after this many seconds (default 180).
    #[arg(long, global = true, value_name = "SECONDS")]
    pub planner_timeout: Option<f64>,
    /// Save the trace of a planned run even when it succeeds (like --trace).
    #[arg(long, global = true)]
    pub trace_planner: bool,
    /// Let prompts, responses and value previews leave the machine in exported spans
    /// (same as OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true).
    #[arg(long, global = true)]
    pub capture_content: bool,
    /// Extra attributes for a backend in exported spans: otel (GenAI conventions only,
    /// the default), phoenix (OpenInference), langfuse (else PFLOW_OTEL_PROFILE).
    #[arg(long, global = true, value_name = "PROFILE")]
    pub otel_profile: Option<String>,
    /// Stop before any LLM call (planner included) that could take the run's cost past USD,
    /// and as soon as actual spend passes it; a workflow whose estimated low end is over it
    /// does not start. Exit code 3 (else PFLOW_MAX_COST).
    #[arg(long, global = true, value_name = "USD", allow_hyphen_values = true)]
    pub max_cost: Option<String>,
    /// The same for tokens, input + output (else PFLOW_MAX_TOKENS_TOTAL).
    #[arg(long, global = true, value_name = "N", allow_hyphen_values = true)]
    pub max_tokens_total: Option<String>,
    /// Under --max-cost, call models with no known price anyway (counted as $0, with a warning).
    #[arg(long, global = true)]
    pub allow_unpriced: bool,
    /// `pflow run FILE --estimate`: print the cost range per LLM node and in total, without
    /// calling any model or running anything.
    #[arg(long, global = true)]
    pub estimate: bool,
    /// Run a planned workflow with side effects (shell, file writes, moves, copies, deletes,
    /// HTTP other than GET) without asking; without a terminal such a plan otherwise stops (exit 2).
    #[arg(long, short = 'y', global = true)]
    pub yes: bool,
    /// Serve nodes from the memo cache: an earlier successful execution with the same type,
    /// params and inputs (LLM nodes at temperature 0, echo, and nodes with `cache: true`).
    #[arg(long, global = true, conflicts_with = "no_cache")]
    pub cache: bool,
    /// Never serve a node from the memo cache, whatever the nodes say.
    #[arg(long, global = true)]
    pub no_cache: bool,
    /// Stream spans as they end: one line per node and LLM call on stderr, and a live
    /// waterfall page on 127.0.0.1 (URL printed on stderr; `pflow trace tail` follows it too).
    #[arg(long, global = true)]
    pub live: bool,
    /// Serve the live page on this port instead of a free one (implies --live).
    #[arg(long, global = true, value_name = "N")]
    pub live_port: Option<u16>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a workflow file, a saved workflow (by name) or a plain-language request (planned first).
    Run {
        /// The workflow JSON file, a saved workflow's name, or a quoted request.
        file: PathBuf,
        /// Inputs and parameters as NAME=VALUE (VALUE parsed as JSON when valid JSON).
        params: Vec<String>,
        /// Run only this node again, against the last run's values of this workflow (nothing after it runs).
        #[arg(long, value_name = "NODE", conflicts_with = "from")]
        only: Option<String>,
        /// Run this node and everything after it, the nodes before it restored from the last run.
        #[arg(long, value_name = "NODE")]
        from: Option<String>,
    },
    /// Continue a run that stopped: its completed nodes restored, the rest run
    /// (a node or input changed since invalidates it and everything downstream).
    Resume {
        /// The run: `last` (default), a run id or a prefix of one (printed when a run fails).
        #[arg(value_name = "RUN")]
        run: Option<String>,
        /// Inputs to change, as NAME=VALUE (the run's own inputs are used otherwise).
        params: Vec<String>,
    },
    /// Check a workflow file without running it: everything `pflow run` checks before it starts.
    Validate {
        /// The workflow JSON file (or a saved workflow's name).
        file: PathBuf,
        /// Inputs and parameters the run would get, as NAME=VALUE.
        params: Vec<String>,
        /// Check the workflow alone: do not require its required inputs.
        #[arg(long)]
        no_inputs: bool,
    },
    /// List node types with their params and outputs.
    Nodes,
    /// Model prices: the built-in table and your overrides.
    Pricing {
        #[command(subcommand)]
        action: PricingCommand,
    },
    /// Plan a workflow from a plain-language request without running it.
    Plan {
        /// What the workflow should do, e.g. "summarize report.txt into summary.md".
        request: String,
        /// Write the planned workflow here (else it is printed).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Values for the workflow's inputs, as NAME=VALUE.
        params: Vec<String>,
    },
    /// Saved workflows in $PFLOW_HOME/workflows, runnable by name.
    Workflow {
        #[command(subcommand)]
        action: WorkflowCommand,
    },
    /// Saved traces.
    Trace {
        #[command(subcommand)]
        action: TraceCommand,
    },
    /// Run history: totals, and usage by day, workflow, model or node ($PFLOW_HOME/history.db).
    #[command(args_conflicts_with_subcommands = true)]
    Stats {
        #[command(subcommand)]
        action: Option<stats::StatsCommand>,
        #[command(flatten)]
        query: stats::StatsArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// Validate a workflow file and save it under a name (nested files are inlined,
    /// `${workflow.dir}` becomes the file's directory).
    Save {
        /// The workflow JSON file to save.
        file: PathBuf,
        /// The name to run it by: lowercase letters, digits, `-` and `_`.
        #[arg(long)]
        name: String,
        /// What it does (else the file's `metadata.description`); the planner reads it.
        #[arg(long)]
        description: Option<String>,
        /// Replace a saved workflow of the same name.
        #[arg(long)]
        force: bool,
    },
    /// List saved workflows: name, description, nodes, inputs and outputs.
    List,
    /// Show a saved workflow: description, inputs with their defaults, outputs, nodes.
    Show {
        /// The saved workflow's name.
        name: String,
    },
    /// Delete a saved workflow.
    Delete {
        /// The saved workflow's name.
        name: String,
    },
}

/// What `pflow trace report` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Html,
    #[value(alias = "markdown")]
    Md,
}

#[derive(Debug, Subcommand)]
pub enum TraceCommand {
    /// Saved traces, newest first: time, workflow, status, duration, tokens, cost, file.
    List {
        /// Show at most this many (0: all).
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// The span tree of a run with durations, tokens and cost per node and LLM call.
    Show {
        /// A trace file, a trace id (or prefix), `last` or `last~N`.
        #[arg(default_value = "last", value_name = "TRACE")]
        target: String,
        /// Show one node's params, template resolutions, store writes, prompt and response.
        #[arg(long, value_name = "ID")]
        node: Option<String>,
        /// Mark the critical path (the chain of spans that set the run's wall time) with `●`.
        #[arg(long, conflicts_with = "node")]
        critical_path: bool,
    },
    /// The run's `metrics` JSON, recomputed from the trace file.
    Summary {
        /// A trace file, a trace id (or prefix), `last` or `last~N`.
        #[arg(default_value = "last", value_name = "TRACE")]
        target: String,
    },
    /// One self-contained HTML file (span waterfall with the critical path, cost and tokens
    /// by node and model, cache savings, details on click), or a Markdown summary for a CI job
    /// summary or a pull request comment (`--format md`).
    Report {
        /// A trace file, a trace id (or prefix), `last` or `last~N`.
        #[arg(default_value = "last", value_name = "TRACE")]
        target: String,
        /// Write the report here (default: html: the trace file's name with .html, in the
        /// current directory; md: standard output).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// `html` (default) or `md` (Markdown).
        #[arg(long, value_enum, default_value = "html")]
        format: ReportFormat,
    },
    /// Every LLM call's cost again from its stored tokens with today's prices
    /// (or --pricing FILE): old vs new per node and in total. The file is not changed.
    Reprice {
        /// A trace file, a trace id (or prefix), `last` or `last~N`.
        #[arg(default_value = "last", value_name = "TRACE")]
        target: String,
    },
    /// Two runs side by side per node: duration, tokens, cost, model, status,
    /// changed params and prompts, and a summary of the deltas.
    Diff {
        /// The first run (A): a trace file, a trace id (or prefix), `last` or `last~N`.
        #[arg(value_name = "A")]
        a: String,
        /// The second run (B), e.g. `pflow trace diff last~1 last`.
        #[arg(value_name = "B")]
        b: String,
    },
    /// Print a live run's spans as they end (the newest run started with --live, or the one
    /// whose trace id starts with TRACE); a TRACE that is not live is printed from its file.
    Tail {
        /// A trace id (or prefix) or `last` (the newest live run, else the newest saved trace);
        /// default: the newest live run.
        #[arg(value_name = "TRACE")]
        target: Option<String>,
        /// Keep printing until the run ends (and wait for a live run to start).
        #[arg(short, long)]
        follow: bool,
    },
    /// Send a saved trace to an OTLP backend (for runs made offline).
    /// Uses --otlp-endpoint or the OTEL_EXPORTER_OTLP_* variables.
    Export {
        /// A trace file, a trace id (or prefix), `last` or `last~N`.
        file: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PricingCommand {
    /// Show the resolved price of a model (or a summary of the table) and where it came from.
    Show {
        /// A model name, e.g. gpt-4o-mini or anthropic/claude-sonnet-4-5 (else a summary).
        model: Option<String>,
    },
    /// Validate a price override file.
    Check {
        /// The override file (JSON, USD per million tokens).
        file: PathBuf,
    },
}

/// Whether `word` names a subcommand (taken from the clap definition, so it cannot drift).
fn is_subcommand(word: &str) -> bool {
    use clap::CommandFactory;
    word == "help"
        || Cli::command()
            .get_subcommands()
            .any(|c| c.get_name() == word)
}

/// Inserts `run` for the `pflow FILE ...` shortcut.
fn with_shortcut(mut args: Vec<String>) -> Vec<String> {
    let mut i = 1;
    while i < args.len() {
        let a = &args[i];
        // Global flags that take a value: skip the value too.
        if matches!(
            a.as_str(),
            "--output-format"
                | "--pricing"
                | "--otlp-endpoint"
                | "--otel-profile"
                | "--planner-model"
                | "--planner-timeout"
                | "--max-cost"
                | "--max-tokens-total"
        ) {
            i += 2;
            continue;
        }
        if a.starts_with('-') {
            i += 1;
            continue;
        }
        if !is_subcommand(a) {
            args.insert(i, "run".into());
        }
        break;
    }
    args
}

/// Whether the arguments ask for `--output-format json` (read before clap
/// parses them, so that a parse error can be answered in JSON).
fn wants_json(args: &[String]) -> bool {
    args.iter().enumerate().any(|(i, a)| {
        a == "--output-format=json"
            || (a == "--output-format" && args.get(i + 1).is_some_and(|v| v == "json"))
    })
}

/// Entry point used by the binary; returns the exit code.
pub fn main() -> i32 {
    let args = with_shortcut(std::env::args().collect());
    let json = wants_json(&args);
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        // Under --output-format json a usage error is the error envelope too.
        Err(e) if e.use_stderr() && json => {
            let text = e.render().to_string();
            let message = text.trim().trim_start_matches("error:").trim();
            return output::usage_error(OutputFormat::Json, message);
        }
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::Invalid
            } else {
                ExitCode::Success
            }
            .code();
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pflow: cannot start the async runtime: {e}");
            return ExitCode::Failed.code();
        }
    };
    let code = rt.block_on(dispatch(cli));
    // Child processes and sockets are gone with the tasks; don't wait for stragglers.
    rt.shutdown_timeout(std::time::Duration::from_millis(500));
    code
}

/// The command's name as flags name it (`run`, `trace export`, …).
fn command_name(c: &Command) -> &'static str {
    match c {
        Command::Run { .. } => "run",
        Command::Resume { .. } => "resume",
        Command::Plan { .. } => "plan",
        Command::Validate { .. } => "validate",
        Command::Nodes => "nodes",
        Command::Pricing {
            action: PricingCommand::Show { .. },
        } => "pricing show",
        Command::Pricing { .. } => "pricing check",
        Command::Workflow { .. } => "workflow",
        Command::Trace {
            action: TraceCommand::Export { .. },
        } => "trace export",
        Command::Trace {
            action: TraceCommand::Reprice { .. },
        } => "trace reprice",
        Command::Trace { .. } => "trace",
        Command::Stats { .. } => "stats",
    }
}

/// A global flag given to a command it does nothing for: flags are global
/// so they can come before the command, but silently ignoring one hides a mistake.
fn misplaced_flag(cli: &Cli) -> Option<String> {
    const RUN: &[&str] = &["run", "plan", "resume"];
    const EXPORT: &[&str] = &["run", "plan", "resume", "trace export"];
    const EXECUTES: &[&str] = &["run", "resume"];
    let flags: [(&str, bool, &[&str]); 18] = [
        ("--trace", cli.trace, RUN),
        ("--no-progress", cli.no_progress, RUN),
        (
            "--pricing",
            cli.pricing.is_some(),
            &["run", "plan", "resume", "pricing show", "trace reprice"],
        ),
        ("--otlp-endpoint", cli.otlp_endpoint.is_some(), EXPORT),
        ("--planner-model", cli.planner_model.is_some(), RUN),
        ("--planner-timeout", cli.planner_timeout.is_some(), RUN),
        ("--trace-planner", cli.trace_planner, &["run"]),
        ("--capture-content", cli.capture_content, EXPORT),
        ("--otel-profile", cli.otel_profile.is_some(), EXPORT),
        ("--max-cost", cli.max_cost.is_some(), RUN),
        ("--max-tokens-total", cli.max_tokens_total.is_some(), RUN),
        ("--allow-unpriced", cli.allow_unpriced, RUN),
        ("--estimate", cli.estimate, &["run"]),
        ("--yes", cli.yes, &["run"]),
        ("--cache", cli.cache, EXECUTES),
        ("--no-cache", cli.no_cache, EXECUTES),
        ("--live", cli.live, RUN),
        ("--live-port", cli.live_port.is_some(), RUN),
    ];
    let command = command_name(&cli.command);
    flags
        .iter()
        .find(|(_, set, allowed)| *set && !allowed.contains(&command))
        .map(|(flag, _, allowed)| {
            let list: Vec<String> = allowed.iter().map(|a| format!("`pflow {a}`")).collect();
            format!(
                "{flag} does nothing for `pflow {command}`: it applies to {}",
                list.join(", ")
            )
        })
}

async fn dispatch(cli: Cli) -> i32 {
    if let Some(message) = misplaced_flag(&cli) {
        return output::usage_error(cli.output_format, &message);
    }
    match &cli.command {
        Command::Nodes => output::print_nodes(&Runtime::default(), cli.output_format),
        Command::Pricing { action } => pricing_cmd(action, &cli),
        Command::Workflow { action } => output::workflow_cmd(action, cli.output_format),
        Command::Trace {
            action: TraceCommand::Export { file },
        } => match crate::traces::resolve(file, &crate::traces::default_dir()) {
            Ok(path) => trace_export_cmd(&path, &cli).await,
            Err(e) => trace::trace_error(cli.output_format, &e),
        },
        Command::Trace {
            action: TraceCommand::Reprice { target },
        } => trace::trace_reprice(target, cli.pricing.as_deref(), cli.output_format),
        Command::Trace {
            action: TraceCommand::Tail { target, follow },
        } => trace::trace_tail(target.as_deref(), *follow, cli.output_format).await,
        Command::Trace { action } => trace::trace_cmd(action, cli.output_format),
        Command::Validate {
            file,
            params,
            no_inputs,
        } => validate_cmd(
            &resolve_workflow_arg(file),
            params,
            *no_inputs,
            cli.output_format,
        ),
        Command::Stats { action, query } => stats::stats_cmd(
            action.as_ref(),
            query,
            cli.pricing.as_deref(),
            cli.output_format,
        ),
        Command::Run {
            file,
            params,
            only,
            from,
        } => {
            let mode = match (only, from) {
                (Some(node), _) => Some(Mode::Only { node: node.clone() }),
                (None, Some(node)) => Some(Mode::From { node: node.clone() }),
                (None, None) => None,
            };
            let source = target_of(file);
            match (&source, &mode) {
                (Source::File(_), _) | (_, None) => run_cmd(source, params, mode, &cli).await,
                _ => output::usage_error(
                    cli.output_format,
                    "--only and --from need a workflow file (a planned workflow can be saved with `pflow plan REQUEST -o FILE`)",
                ),
            }
        }
        Command::Resume { run, params } => {
            // `pflow resume name=value`: the newest run, with an input changed.
            let mut params = params.clone();
            let arg = match run {
                Some(r) if r.contains('=') => {
                    params.insert(0, r.clone());
                    "last".to_string()
                }
                Some(r) => r.clone(),
                None => "last".to_string(),
            };
            match crate::run::resume_target(&crate::telemetry::pflow_home(), &arg) {
                Ok((id, file)) => {
                    run_cmd(
                        Source::File(file),
                        &params,
                        Some(Mode::Resume { run: id }),
                        &cli,
                    )
                    .await
                }
                Err(e) => output::fail(
                    cli.output_format,
                    ExitCode::Invalid,
                    "resume_error",
                    &e,
                    Value::Null,
                ),
            }
        }
        Command::Plan {
            request,
            output,
            params,
        } => {
            run_cmd(
                Source::Plan {
                    request: request.clone(),
                    output: output.clone(),
                },
                params,
                None,
                &cli,
            )
            .await
        }
    }
}

/// A file, a saved workflow's name, or — when it is neither and reads like a
/// sentence — a request for the planner.
fn target_of(arg: &Path) -> Source {
    let resolved = resolve_workflow_arg(arg);
    match arg.to_str() {
        Some(s) if !resolved.exists() && s.trim().contains(char::is_whitespace) => {
            Source::Request(s.to_string())
        }
        _ => Source::File(resolved),
    }
}

/// `pflow run NAME`: a path that does not exist but names a saved workflow runs that one.
fn resolve_workflow_arg(arg: &Path) -> PathBuf {
    if arg.exists() {
        return arg.to_path_buf();
    }
    arg.to_str()
        .and_then(|n| crate::workflows::find(&crate::workflows::dir(), n))
        .unwrap_or_else(|| arg.to_path_buf())
}

/// Parses `NAME=VALUE` arguments; VALUE is JSON when it parses as JSON.
pub fn parse_params(args: &[String]) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for a in args {
        let Some((k, v)) = a.split_once('=') else {
            return Err(format!("parameter `{a}` is not NAME=VALUE"));
        };
        let k = k.trim();
        if k.is_empty()
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "parameter name `{k}` is invalid: use letters, digits, `_` and `-`"
            ));
        }
        if ir::validate::is_reserved(k) {
            return Err(format!("parameter name `{k}` is reserved for the runtime"));
        }
        let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
        out.insert(k.to_string(), value);
    }
    Ok(out)
}

fn validate_cmd(file: &Path, params: &[String], no_inputs: bool, format: OutputFormat) -> i32 {
    let params = match parse_params(params) {
        Ok(p) => p,
        Err(e) => return output::usage_error(format, &e),
    };
    let ir = match ir::load_file(file) {
        Ok(ir) => ir,
        Err(e) => return output::validation_result(format, file, Err(e), &[]),
    };
    let rt = Runtime::default();
    let cx = CompileContext {
        no_inputs,
        ..CompileContext::command_line(&params, None)
    };
    let diags = rt.check(
        &ir,
        &file.display().to_string(),
        &runtime::base_dir_of(file),
        &cx,
    );
    output::validation_result(format, file, Ok(ir.nodes.len()), &diags)
}

async fn trace_export_cmd(file: &Path, cli: &Cli) -> i32 {
    let profile = match crate::telemetry::profile::Profile::resolve(cli.otel_profile.as_deref()) {
        Ok(p) => p,
        Err(e) => return output::usage_error(cli.output_format, &e.to_string()),
    };
    let settings = match crate::telemetry::otlp::OtlpSettings::from_env(
        cli.otlp_endpoint.as_deref(),
        cli.capture_content,
    ) {
        Ok(Some(s)) => crate::telemetry::otlp::OtlpSettings { profile, ..s },
        Ok(None) => {
            return output::usage_error(
                cli.output_format,
                "no OTLP endpoint: pass --otlp-endpoint URL or set OTEL_EXPORTER_OTLP_ENDPOINT",
            )
        }
        Err(e) => return output::usage_error(cli.output_format, &e),
    };
    match crate::telemetry::otlp::export_file(file, &settings).await {
        Ok(report) => {
            match cli.output_format {
                OutputFormat::Json => output::print_json(&serde_json::json!(report)),
                OutputFormat::Text => println!(
                    "✓ sent {} spans ({} requests) to {} ({})",
                    report.spans,
                    report.requests,
                    output::shown(&report.endpoint),
                    report.protocol
                ),
            }
            0
        }
        Err(e) => {
            let code = if e.contains("cannot read") || e.contains("not an OTLP/JSON") {
                ExitCode::Invalid
            } else {
                ExitCode::Failed
            };
            output::fail(cli.output_format, code, "export_error", &e, Value::Null)
        }
    }
}

/// Overrides (if any), the file they came from, and warnings about them.
pub type LoadedPrices = (Option<PriceTable>, Option<PathBuf>, Vec<String>);

/// The price table for this run: built-in (`None`, parsed only when needed),
/// or merged with `--pricing FILE` or `$PFLOW_HOME/pricing.json`. Returns the
/// table, where overrides came from, and warnings.
pub fn load_prices(explicit: Option<&Path>) -> Result<LoadedPrices, String> {
    let path = match explicit {
        Some(p) => Some(p.to_path_buf()),
        None => Some(crate::telemetry::pflow_home().join("pricing.json")).filter(|p| p.is_file()),
    };
    match path {
        None => Ok((None, None, vec![])),
        Some(p) => {
            let (t, w) = PriceTable::with_overrides_file(&p).map_err(|e| e.to_string())?;
            Ok((
                Some(t),
                Some(p),
                w.into_iter().map(|w| w.to_string()).collect(),
            ))
        }
    }
}

fn pricing_cmd(action: &PricingCommand, cli: &Cli) -> i32 {
    match action {
        PricingCommand::Check { file } => match PriceTable::with_overrides_file(file) {
            Ok((_, warnings)) => output::pricing_check(cli.output_format, file, Ok(&warnings)),
            Err(e) => output::pricing_check(cli.output_format, file, Err(&e.to_string())),
        },
        PricingCommand::Show { model } => {
            let (table, source, warnings) = match load_prices(cli.pricing.as_deref()) {
                Ok(t) => t,
                Err(e) => return output::usage_error(cli.output_format, &e),
            };
            output::pricing_show(
                cli.output_format,
                table.as_ref().unwrap_or_else(|| PriceTable::builtin()),
                model.as_deref(),
                source.as_deref(),
                &warnings,
            )
        }
    }
}

/// `pflow run` / `pflow plan`: the arguments resolved into one
/// [`RunConfig`], handed to the library's runner, and its report rendered.
async fn run_cmd(source: Source, params: &[String], mode: Option<Mode>, cli: &Cli) -> i32 {
    let config = match resolve_run(source, params, mode, cli) {
        Ok(c) => c,
        Err(e) => return output::usage_error(cli.output_format, &e),
    };
    if cli.estimate {
        let report = crate::run::estimate(config);
        let result = report.result.as_ref().map_err(|e| match e {
            EstimateFailure::Planned => None,
            EstimateFailure::Run(e) => Some(output::EstimateFailure::Run(e)),
            EstimateFailure::Estimate(e) => Some(output::EstimateFailure::Estimate(e)),
        });
        return match result {
            Err(None) => {
                output::usage_error(cli.output_format, &EstimateFailure::Planned.to_string())
            }
            Ok(est) => output::print_estimate(cli.output_format, Ok(est), &report.warnings),
            Err(Some(f)) => output::print_estimate(cli.output_format, Err(f), &report.warnings),
        };
    }
    let live = match live::start(cli, &config.home).await {
        Ok(l) => l,
        Err(e) => return output::usage_error(cli.output_format, &e.to_string()),
    };
    let (mut progress_mode, progress_warning) = progress::Mode::choose(cli.no_progress);
    if live.is_some() && progress_mode == progress::Mode::Plain {
        // The live lines say more than the plain progress lines, one per span: not both.
        progress_mode = progress::Mode::Off;
    }
    let mut observer = Shown {
        display: progress::Display::start(progress_mode),
        format: cli.output_format,
        yes: cli.yes,
    };
    let mut config = config;
    config.warnings.splice(0..0, progress_warning);
    config.progress = observer.display.as_ref().map(progress::Display::sink);
    let lines = live.as_ref().map(|l| {
        config.live = Some(l.feed.clone());
        live::Lines::start(
            &l.feed,
            observer.display.as_ref().and_then(progress::Display::bar),
        )
    });
    let report = crate::run::run(config, &mut observer).await;
    if let Some(lines) = lines {
        lines.finish();
    }
    output::print_run(&report, cli.output_format);
    if let Some(l) = live {
        l.server.close().await;
    }
    let code = report.exit_code.code();
    if crate::telemetry::ends_with_run() {
        // Its per-node maps are freed by the exit that follows.
        std::mem::forget(report);
    }
    code
}

/// The command line resolved into a run configuration; an error is a usage
/// error (exit code 2) and nothing has started.
fn resolve_run(
    source: Source,
    params: &[String],
    resume: Option<Mode>,
    cli: &Cli,
) -> Result<RunConfig, String> {
    let params = parse_params(params)?;
    // A malformed price file stops the run before it starts.
    let (prices, _, price_warnings) = load_prices(cli.pricing.as_deref())?;
    let limits = crate::llm::budget::BudgetLimits::resolve(
        cli.max_cost.as_deref(),
        cli.max_tokens_total.as_deref(),
        cli.allow_unpriced,
        |k| std::env::var(k).ok(),
    )
    .map_err(|e| e.to_string())?;
    let profile = crate::telemetry::profile::Profile::resolve(cli.otel_profile.as_deref())
        .map_err(|e| e.to_string())?;
    let planner = if source.is_planned() && !cli.estimate {
        Some(crate::planner::PlannerConfig {
            model: crate::planner::PlannerConfig::resolve_model(cli.planner_model.as_deref())
                .map_err(|e| e.to_string())?,
            timeout: cli
                .planner_timeout
                .filter(|t| *t > 0.0)
                .map(|t| crate::limits::secs(t, crate::limits::MAX_TIMEOUT))
                .unwrap_or(crate::planner::DEFAULT_TIMEOUT),
            library: crate::workflows::dir(),
        })
    } else {
        None
    };
    Ok(RunConfig {
        params,
        prices,
        limits,
        planner,
        save_trace: cli.trace,
        trace_planner: cli.trace_planner,
        otlp_endpoint: cli.otlp_endpoint.clone(),
        capture_content: cli.capture_content,
        profile,
        warnings: price_warnings,
        resume,
        cache: match (cli.cache, cli.no_cache) {
            (_, true) => CacheMode::Off,
            (true, false) => CacheMode::On,
            _ => CacheMode::Default,
        },
        ..RunConfig::new(source)
    })
}

/// The progress display, and a planned run's estimate (text mode) and plan
/// printed above it; a plan with side effects runs only when approved.
struct Shown {
    display: Option<progress::Display>,
    format: OutputFormat,
    yes: bool,
}

impl RunObserver for Shown {
    fn plan_ready(
        &mut self,
        plan: &ir::WorkflowIr,
        inputs: &Map<String, Value>,
        side_effects: &[String],
    ) -> crate::run::Approval {
        use crate::run::Approval;
        use std::io::IsTerminal;
        progress::println(
            self.display.as_ref(),
            &output::plan_text(plan, inputs, side_effects),
        );
        if side_effects.is_empty() || self.yes {
            return Approval::Run;
        }
        if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
            let bar = self.display.as_ref().and_then(progress::Display::bar);
            let n = side_effects.len();
            return Approval::Ask(Box::new(move || {
                let ask = || {
                    eprint!(
                        "Run this plan? It has {n} side effect{} (see ⚠ above) [y/N] ",
                        if n == 1 { "" } else { "s" }
                    );
                    let mut answer = String::new();
                    std::io::stdin().read_line(&mut answer).is_ok()
                        && matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
                };
                match bar {
                    Some(b) => b.suspend(ask),
                    None => ask(),
                }
            }));
        }
        Approval::Refuse(format!(
            "it has side effects ({}) and there is no terminal to confirm them; review the plan and rerun with --yes, or save it with `pflow plan REQUEST -o FILE`",
            side_effects.join("; ")
        ))
    }

    fn planned_estimate(&mut self, estimate: &crate::runtime::estimate::Estimate) {
        if self.format == OutputFormat::Text {
            progress::println(self.display.as_ref(), &estimate.to_text());
        }
    }

    fn spans_closed(&mut self) {
        if let Some(d) = self.display.take() {
            d.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every argument of every command says what it is in `--help`.
    #[test]
    fn every_argument_is_described() {
        use clap::CommandFactory;
        fn walk(c: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in c.get_arguments() {
                let id = a.get_id().as_str();
                if id != "help" && id != "version" && a.get_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for s in c.get_subcommands() {
                if s.get_about().is_none() {
                    missing.push(format!("{path} {}", s.get_name()));
                }
                walk(s, &format!("{path} {}", s.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "pflow", &mut missing);
        assert!(missing.is_empty(), "undescribed: {missing:?}");
    }

    #[test]
    fn run_only_flags_are_rejected_elsewhere() {
        let parse = |a: &[&str]| {
            Cli::try_parse_from(with_shortcut(a.iter().map(|s| s.to_string()).collect())).unwrap()
        };
        assert_eq!(
            misplaced_flag(&parse(&["pflow", "--trace", "run", "x.json"])),
            None
        );
        assert_eq!(misplaced_flag(&parse(&["pflow", "x.json", "--yes"])), None);
        let m = misplaced_flag(&parse(&["pflow", "nodes", "--trace"])).unwrap();
        assert!(
            m.starts_with("--trace does nothing for `pflow nodes`"),
            "{m}"
        );
        assert!(misplaced_flag(&parse(&["pflow", "stats", "--max-cost", "1"])).is_some());
        assert!(
            misplaced_flag(&parse(&["pflow", "pricing", "show", "--pricing", "p.json"])).is_none()
        );
        assert!(misplaced_flag(&parse(&[
            "pflow",
            "pricing",
            "check",
            "p.json",
            "--estimate"
        ]))
        .is_some());
    }

    #[test]
    fn shortcut_inserts_run() {
        let v = |a: &[&str]| with_shortcut(a.iter().map(|s| s.to_string()).collect());
        assert_eq!(
            v(&["pflow", "wf.json", "a=1"]),
            ["pflow", "run", "wf.json", "a=1"]
        );
        assert_eq!(
            v(&["pflow", "--output-format", "json", "--trace", "wf.json"]),
            [
                "pflow",
                "--output-format",
                "json",
                "--trace",
                "run",
                "wf.json"
            ]
        );
        assert_eq!(
            v(&["pflow", "validate", "wf.json"]),
            ["pflow", "validate", "wf.json"]
        );
        assert_eq!(v(&["pflow", "--help"]), ["pflow", "--help"]);
        assert_eq!(
            v(&["pflow", "--pricing", "p.json", "wf.json"]),
            ["pflow", "--pricing", "p.json", "run", "wf.json"]
        );
    }

    #[test]
    fn params_parse_as_json_or_string() {
        let p = parse_params(&[
            "a=1".into(),
            "b=hello".into(),
            "c={\"x\":[1]}".into(),
            "d=".into(),
            "e=a=b".into(),
        ])
        .unwrap();
        assert_eq!(p["a"], serde_json::json!(1));
        assert_eq!(p["b"], serde_json::json!("hello"));
        assert_eq!(p["c"], serde_json::json!({"x": [1]}));
        assert_eq!(p["d"], serde_json::json!(""));
        assert_eq!(p["e"], serde_json::json!("a=b"));
        assert!(parse_params(&["novalue".into()]).is_err());
        assert!(parse_params(&["__index__=1".into()]).is_err());
    }
}
