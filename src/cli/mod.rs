//! The `pflow` command line: argument parsing, the run lifecycle (telemetry
//! up, root span, signals, trace saved), and rendering results as text or as
//! one JSON object. Errors from the library become messages and exit codes:
//! 0 success, 1 the workflow failed, 2 invalid input, 3 stopped by a budget
//! (`--max-cost`, `--max-tokens-total`), 130 interrupted (SIGINT), 143
//! terminated (SIGTERM).

mod output;
mod progress;
mod stats;
mod trace;

use crate::ir::{self, Diagnostic};
use crate::nodes::{Registry, Services};
use crate::pricing::PriceTable;
use crate::runtime::{self, CompileContext, RunError, RunOptions, Runtime};
use crate::telemetry::{Telemetry, TelemetryConfig, TraceMode};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{Map, Value};
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

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
    },
    /// Check a workflow file without running it.
    Validate {
        file: PathBuf,
        /// Parameters the run would get, as NAME=VALUE.
        params: Vec<String>,
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
    /// Validate a workflow file and save it under a name (nested files are inlined).
    Save {
        file: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long)]
        description: Option<String>,
        /// Replace a saved workflow of the same name.
        #[arg(long)]
        force: bool,
    },
    /// List saved workflows.
    List,
    /// Show a saved workflow: description, inputs, outputs, nodes.
    Show { name: String },
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
    },
    /// The run's `metrics` JSON, recomputed from the trace file.
    Summary {
        /// A trace file, a trace id (or prefix), `last` or `last~N`.
        #[arg(default_value = "last", value_name = "TRACE")]
        target: String,
    },
    /// One self-contained HTML file: span waterfall, cost and tokens by node and model, details on click.
    Report {
        /// A trace file, a trace id (or prefix), `last` or `last~N`.
        #[arg(default_value = "last", value_name = "TRACE")]
        target: String,
        /// Write the report here (default: the trace file's name with .html, in the current directory).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
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
    Show { model: Option<String> },
    /// Validate a price override file.
    Check { file: PathBuf },
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

/// Entry point used by the binary; returns the exit code.
pub fn main() -> i32 {
    let args = with_shortcut(std::env::args().collect());
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pflow: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let code = rt.block_on(dispatch(cli));
    // Child processes and sockets are gone with the tasks; don't wait for stragglers.
    rt.shutdown_timeout(std::time::Duration::from_millis(500));
    code
}

async fn dispatch(cli: Cli) -> i32 {
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
        Command::Trace { action } => trace::trace_cmd(action, cli.output_format),
        Command::Validate { file, params } => validate_cmd(file, params, cli.output_format),
        Command::Stats { action, query } => {
            stats::stats_cmd(action.as_ref(), query, cli.output_format)
        }
        Command::Run { file, params } => run_cmd(target_of(file), params, &cli).await,
        Command::Plan {
            request,
            output,
            params,
        } => {
            run_cmd(
                Target::PlanOnly(request.clone(), output.clone()),
                params,
                &cli,
            )
            .await
        }
    }
}

/// What `pflow run` was given.
pub enum Target {
    File(PathBuf),
    /// A plain-language request: plan, then run.
    Request(String),
    /// `pflow plan`: plan only, write the workflow to the path (or print it).
    PlanOnly(String, Option<PathBuf>),
}

/// A file, a saved workflow's name, or — when it is neither and reads like a
/// sentence — a request for the planner.
fn target_of(arg: &Path) -> Target {
    let resolved = resolve_workflow_arg(arg);
    match arg.to_str() {
        Some(s) if !resolved.exists() && s.trim().contains(char::is_whitespace) => {
            Target::Request(s.to_string())
        }
        _ => Target::File(resolved),
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

fn references_stdin(ir: &ir::WorkflowIr) -> bool {
    let mut found = false;
    let mut check = |_: &str, s: &str| {
        if s.contains("${stdin") {
            found = true;
        }
    };
    for n in &ir.nodes {
        ir::template::walk_strings(
            &Value::Object(n.params.clone()),
            &mut String::new(),
            &mut check,
        );
        if let Some(b) = &n.batch {
            ir::template::walk_strings(&b.items, &mut String::new(), &mut check);
        }
    }
    for o in ir.outputs.values() {
        if let Some(s) = &o.source {
            check("", s);
        }
    }
    found
}

fn validate_cmd(file: &Path, params: &[String], format: OutputFormat) -> i32 {
    let params = match parse_params(params) {
        Ok(p) => p,
        Err(e) => return output::usage_error(format, &e),
    };
    let ir = match ir::load_file(file) {
        Ok(ir) => ir,
        Err(e) => return output::validation_result(format, file, Err(e.to_string()), &[]),
    };
    let rt = Runtime::default();
    let cx = CompileContext {
        params: params.keys().cloned().collect(),
        stdin: None,
    };
    let diags = rt.check(
        &ir,
        &file.display().to_string(),
        &runtime::base_dir_of(file),
        &cx,
    );
    output::validation_result(format, file, Ok(ir.nodes.len()), &diags)
}

/// What a run produced, for rendering.
pub struct RunReport {
    pub result: Result<runtime::RunOutput, RunError>,
    pub metrics: Option<crate::telemetry::metrics::MetricsSummary>,
    pub trace_id: Option<String>,
    pub trace_file: Option<PathBuf>,
    pub warnings: Vec<String>,
    pub validation_warnings: Vec<Diagnostic>,
    pub exit_code: i32,
    /// The pre-run cost estimate, when one was made (planned runs, `--max-cost`).
    pub estimate: Option<runtime::estimate::Estimate>,
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
                2
            } else {
                1
            };
            match cli.output_format {
                OutputFormat::Json => {
                    output::print_json(&serde_json::json!({"success": false, "error": e}))
                }
                OutputFormat::Text => eprintln!("error: {}", output::shown(e)),
            }
            code
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

async fn run_cmd(target: Target, params: &[String], cli: &Cli) -> i32 {
    let started = chrono::Utc::now();
    let mut given = match parse_params(params) {
        Ok(p) => p,
        Err(e) => return output::usage_error(cli.output_format, &e),
    };
    // A malformed price file stops the run before it starts.
    let (prices, _, price_warnings) = match load_prices(cli.pricing.as_deref()) {
        Ok(t) => t,
        Err(e) => return output::usage_error(cli.output_format, &e),
    };
    let limits = match crate::llm::budget::BudgetLimits::resolve(
        cli.max_cost.as_deref(),
        cli.max_tokens_total.as_deref(),
        cli.allow_unpriced,
        |k| std::env::var(k).ok(),
    ) {
        Ok(l) => l,
        Err(e) => return output::usage_error(cli.output_format, &e.to_string()),
    };
    let profile = match crate::telemetry::profile::Profile::resolve(cli.otel_profile.as_deref()) {
        Ok(p) => p,
        Err(e) => return output::usage_error(cli.output_format, &e.to_string()),
    };
    let planning = !matches!(target, Target::File(_));
    if cli.estimate {
        return match &target {
            Target::File(f) => estimate_cmd(
                f,
                given,
                prices,
                price_warnings,
                limits.max_cost_usd,
                cli.output_format,
            ),
            _ => output::usage_error(
                cli.output_format,
                "--estimate needs a workflow file or a saved workflow's name; a planned workflow's estimate is printed before it runs (or save it with `pflow plan REQUEST -o FILE` and run `pflow run FILE --estimate`)",
            ),
        };
    }
    let planned_run = matches!(target, Target::Request(_));
    let planner_config = match &target {
        Target::File(_) => None,
        _ => Some(crate::planner::PlannerConfig {
            model: match crate::planner::PlannerConfig::resolve_model(cli.planner_model.as_deref())
            {
                Ok(m) => m,
                Err(e) => return output::usage_error(cli.output_format, &e.to_string()),
            },
            timeout: cli
                .planner_timeout
                .filter(|t| *t > 0.0)
                .map(|t| crate::limits::secs(t, crate::limits::MAX_TIMEOUT))
                .unwrap_or(crate::planner::DEFAULT_TIMEOUT),
            library: crate::workflows::dir(),
        }),
    };
    let (file, label) = match &target {
        Target::File(p) => (p.clone(), p.display().to_string()),
        Target::Request(r) | Target::PlanOnly(r, _) => {
            (PathBuf::from("planned-workflow.json"), format!("{r:?}"))
        }
    };
    let file = file.as_path();
    // Parsed once, before telemetry starts, so the workflow's name can be a
    // resource attribute; a parse error still fails the run inside its trace.
    let loaded = if planning {
        Err(ir::IrError::Io {
            file: file.to_path_buf(),
            source: std::io::Error::other("planned"),
        })
    } else {
        ir::load_file(file)
    };
    let mut config = TelemetryConfig::from_env();
    if let TraceMode::Full { .. } = config.mode {
        config.mode = TraceMode::Full {
            save_always: cli.trace || (planning && cli.trace_planner),
        };
    }
    let mut warnings = Vec::new();
    if config.mode != TraceMode::Off {
        match crate::telemetry::otlp::OtlpSettings::from_env(
            cli.otlp_endpoint.as_deref(),
            cli.capture_content,
        ) {
            Ok(o) => {
                config.otlp = o.map(|mut s| {
                    s.profile = profile;
                    s
                })
            }
            Err(e) => warnings.push(format!("OTLP export off: {e}")),
        }
        // The workflow's name as a resource attribute, so backends can group runs by it.
        if let Some(name) = loaded
            .as_ref()
            .ok()
            .and_then(|ir| ir.name())
            .map(str::to_string)
        {
            config
                .resource_attributes
                .push(("pflow.workflow.name".into(), name));
        }
    }
    let (progress_mode, progress_warning) = progress::Mode::choose(cli.no_progress);
    warnings.extend(progress_warning);
    let display = progress::Display::start(progress_mode);
    config.progress = display.as_ref().map(progress::Display::sink);
    let mut telemetry = Telemetry::init(config);
    warnings.extend(telemetry.take_warnings());
    warnings.extend(price_warnings);
    if cli.trace && telemetry.mode() == TraceMode::Off {
        warnings.push("--trace ignored: OTEL_SDK_DISABLED=true switches telemetry off".into());
    }
    // One dispatcher for the whole process: spans from every worker thread reach it.
    let _ = tracing::dispatcher::set_global_default(telemetry.dispatch());

    let root = tracing::info_span!(
        target: "pflow::run",
        "run",
        otel.name = %format!("pflow {} {label}", if matches!(target, Target::PlanOnly(..)) { "plan" } else { "run" }),
        pflow.run.command = if matches!(target, Target::PlanOnly(..)) { "plan" } else { "run" },
        pflow.workflow.file = %file.display(),
        pflow.workflow.name = tracing::field::Empty,
        pflow.run.status = tracing::field::Empty,
        pflow.run.exit_code = tracing::field::Empty,
        pflow.budget.max_cost_usd = tracing::field::Empty,
        pflow.budget.max_tokens_total = tracing::field::Empty,
        pflow.budget.allow_unpriced = tracing::field::Empty,
        pflow.budget.spent_usd = tracing::field::Empty,
        pflow.budget.tokens_used = tracing::field::Empty,
        pflow.budget.exceeded = tracing::field::Empty,
        pflow.budget.stopped = tracing::field::Empty,
        pflow.budget.reason = tracing::field::Empty,
        pflow.budget.node = tracing::field::Empty,
        pflow.budget.model = tracing::field::Empty,
        pflow.budget.next_call_estimate_usd = tracing::field::Empty,
        pflow.budget.next_call_estimate_tokens = tracing::field::Empty,
        "error.type" = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    );
    telemetry.adopt_env_parent(&root);
    let trace_id = telemetry.trace_id(&root);

    let runtime = Runtime::with_services(
        Registry::builtin(),
        Services::new(prices.map(Arc::new)).with_budget(crate::llm::budget::Budget::new(limits)),
    );
    let mut validation_warnings = Vec::new();
    let command = if matches!(target, Target::PlanOnly(..)) {
        "plan"
    } else {
        "run"
    };
    let fallback_name = match &target {
        Target::File(p) => p.file_stem().map(|s| s.to_string_lossy().into_owned()),
        _ => None,
    };
    let mut ident = None;
    let mut estimate = None;
    let mut estimate_warnings = Vec::new();
    let work = {
        let root = root.clone();
        let runtime = runtime.clone();
        let file = file.to_path_buf();
        let vw = &mut validation_warnings;
        let ident = &mut ident;
        let estimate = &mut estimate;
        let estimate_warnings = &mut estimate_warnings;
        let display = display.as_ref();
        let format = cli.output_format;
        async move {
            let (ir, plan_only) = match target {
                Target::File(_) => (loaded?, None),
                Target::Request(request) => (
                    plan_into(&request, planner_config.as_ref(), &runtime, &mut given).await?,
                    None,
                ),
                Target::PlanOnly(request, out) => {
                    let ir =
                        plan_into(&request, planner_config.as_ref(), &runtime, &mut given).await?;
                    (ir, Some(out))
                }
            };
            *ident = Some(crate::history::WorkflowIdent::of(&ir));
            if let Some(out) = plan_only {
                return write_plan(ir, out, given);
            }
            let uses_stdin = references_stdin(&ir);
            if uses_stdin && !std::io::stdin().is_terminal() {
                let mut s = String::new();
                // Empty input (e.g. </dev/null) counts as nothing piped.
                if std::io::stdin().read_to_string(&mut s).is_ok() && !s.is_empty() {
                    given.insert("stdin".into(), Value::String(s));
                }
            }
            let cx = CompileContext {
                params: given.keys().cloned().collect(),
                stdin: Some(given.contains_key("stdin")),
            };
            let wf = runtime.compile(
                ir,
                &file.display().to_string(),
                &runtime::base_dir_of(&file),
                &cx,
            )?;
            *vw = wf.warnings.clone();
            root.record("pflow.workflow.name", wf.name.as_str());
            let inputs = runtime.prepare_inputs(&wf, given)?;
            let budget = runtime.services().budget();
            if planned_run || budget.limits().max_cost_usd.is_some() {
                match estimate_with_history(
                    &wf,
                    &inputs,
                    runtime.services().prices(),
                    estimate_warnings,
                ) {
                    Ok(est) => {
                        if planned_run && format == OutputFormat::Text {
                            progress::println(display, &est.to_text());
                        }
                        let stop = budget.refuse_estimate(est.low_usd());
                        *estimate = Some(est);
                        if let Some(stop) = stop {
                            return Err(RunError::Budget(stop));
                        }
                    }
                    Err(e) => estimate_warnings.push(format!("no cost estimate: {e}")),
                }
            }
            runtime.run(wf, inputs, &RunOptions::default()).await
        }
    };
    use tracing::Instrument;
    let work = work.instrument(root.clone());
    let (result, signal_code) = tokio::select! {
        r = work => (r, None),
        code = shutdown_signal() => (Err(RunError::Interrupted), Some(code)),
    };
    let exit_code = match (&result, signal_code) {
        (_, Some(code)) => code,
        (Ok(_), None) => 0,
        (Err(e), None) => e.exit_code(),
    };
    let status = match (&result, signal_code) {
        (_, Some(_)) => "interrupted",
        (Ok(_), _) => "ok",
        (Err(RunError::Invalid(_) | RunError::Input(_)), _) => "invalid",
        (Err(RunError::Budget(_)), _) => "budget_exceeded",
        (Err(_), _) => "failed",
    };
    root.record("pflow.run.status", status);
    root.record("pflow.run.exit_code", exit_code as i64);
    record_budget(&root, runtime.services().budget());
    warnings.extend(runtime.services().budget().warnings());
    warnings.extend(estimate_warnings);
    if let Err(e) = &result {
        tracing::error!(parent: &root, { "exception.type" = e.kind(), "exception.message" = %e }, "exception");
        root.record("error.type", e.kind());
        root.record("otel.status_description", e.to_string().as_str());
    }
    drop(root);
    // Every node span has closed: the display goes before anything else is printed.
    if let Some(d) = display {
        d.finish();
    }
    let metrics = telemetry.metrics();
    if let Some(m) = &metrics {
        for model in &m.unpriced_models {
            warnings.push(format!("no price known for model `{model}`: its cost is reported as null and totals are incomplete (add it to $PFLOW_HOME/pricing.json)"));
        }
    }
    let save = cli.trace || exit_code != 0;
    let finished = telemetry.finish(
        save,
        trace_id
            .as_deref()
            .unwrap_or("00000000000000000000000000000000"),
    );
    warnings.extend(finished.warnings);
    warnings.extend(stats::after_run(stats::FinishedRun {
        started,
        command,
        ident,
        fallback_name,
        status,
        exit_code,
        trace_id: trace_id.as_deref(),
        trace_file: finished.trace_file.as_deref(),
        metrics: metrics.as_ref(),
    }));
    let report = RunReport {
        result,
        metrics,
        trace_id,
        trace_file: finished.trace_file,
        warnings,
        validation_warnings,
        exit_code,
        estimate,
    };
    output::print_run(&report, cli.output_format);
    exit_code
}

/// The budget's limits, live totals and stop (if any) as root-span
/// attributes: the metrics summary's `budget` is read back from them.
fn record_budget(root: &tracing::Span, budget: &crate::llm::budget::Budget) {
    let limits = budget.limits();
    if !limits.is_set() {
        return;
    }
    if let Some(c) = limits.max_cost_usd {
        root.record("pflow.budget.max_cost_usd", c);
    }
    if let Some(t) = limits.max_tokens_total {
        root.record("pflow.budget.max_tokens_total", t as i64);
    }
    root.record("pflow.budget.allow_unpriced", limits.allow_unpriced);
    let spent = budget.spent();
    root.record("pflow.budget.spent_usd", spent.usd);
    root.record("pflow.budget.tokens_used", spent.tokens as i64);
    let stop = budget.stopped();
    root.record(
        "pflow.budget.exceeded",
        stop.as_ref()
            .is_some_and(|s| s.reason != crate::llm::budget::Reason::UnpricedModel),
    );
    if let Some(s) = stop {
        root.record("pflow.budget.stopped", s.stopped.as_str());
        root.record("pflow.budget.reason", s.reason.as_str());
        if let Some(n) = &s.node {
            root.record("pflow.budget.node", n.as_str());
        }
        if !s.model.is_empty() {
            root.record("pflow.budget.model", s.model.as_str());
        }
        if let Some(u) = s.next_call_estimate_usd {
            root.record("pflow.budget.next_call_estimate_usd", u);
        }
        if let Some(t) = s.next_call_estimate_tokens {
            root.record("pflow.budget.next_call_estimate_tokens", t as i64);
        }
    }
}

/// The estimate of `wf`, its expected value from the earlier runs of the same
/// workflow in the history (a history that cannot be read is a warning).
fn estimate_with_history(
    wf: &runtime::CompiledWorkflow,
    inputs: &Map<String, Value>,
    prices: &PriceTable,
    warnings: &mut Vec<String>,
) -> Result<runtime::estimate::Estimate, runtime::estimate::EstimateError> {
    let past = if crate::history::enabled() {
        let hash = crate::history::WorkflowIdent::of(&wf.ir).hash;
        match crate::history::query::past_runs(&crate::history::db_path(), &hash) {
            Ok(p) => Some(p),
            Err(e) => {
                warnings.push(format!("no expected cost: {e}"));
                None
            }
        }
    } else {
        None
    };
    runtime::estimate::estimate(wf, inputs, prices, past.as_ref())
}

/// `pflow run FILE --estimate`: load, validate and estimate; nothing runs,
/// no trace is written and the history is not touched beyond reading it.
fn estimate_cmd(
    file: &Path,
    mut given: Map<String, Value>,
    prices: Option<PriceTable>,
    mut warnings: Vec<String>,
    max_cost: Option<f64>,
    format: OutputFormat,
) -> i32 {
    let prices = prices.as_ref().unwrap_or_else(|| PriceTable::builtin());
    let rt = Runtime::default();
    let compiled = ir::load_file(file).map_err(RunError::from).and_then(|ir| {
        if references_stdin(&ir) && !std::io::stdin().is_terminal() {
            let mut s = String::new();
            if std::io::stdin().read_to_string(&mut s).is_ok() && !s.is_empty() {
                given.insert("stdin".into(), Value::String(s));
            }
        }
        let cx = CompileContext {
            params: given.keys().cloned().collect(),
            stdin: Some(given.contains_key("stdin")),
        };
        let wf = rt.compile(
            ir,
            &file.display().to_string(),
            &runtime::base_dir_of(file),
            &cx,
        )?;
        let inputs = rt.prepare_inputs(&wf, given)?;
        Ok((wf, inputs))
    });
    let (wf, inputs) = match compiled {
        Ok(c) => c,
        Err(e) => {
            return output::print_estimate(format, Err(output::EstimateFailure::Run(&e)), &warnings)
        }
    };
    warnings.extend(wf.warnings.iter().map(|d| d.to_string()));
    match estimate_with_history(&wf, &inputs, prices, &mut warnings) {
        Ok(mut est) => {
            if let Some(max) = max_cost.filter(|m| est.low_usd() > *m) {
                est.notes.push(format!(
                    "the low end exceeds --max-cost {}: `pflow run` would refuse this workflow before it starts (exit code 3)",
                    crate::llm::budget::fmt_usd(max)
                ));
            }
            output::print_estimate(format, Ok(&est), &warnings)
        }
        Err(e) => output::print_estimate(
            format,
            Err(output::EstimateFailure::Estimate(&e)),
            &warnings,
        ),
    }
}

/// Plans `request`; values found for the workflow's inputs join `given`
/// (parameters on the command line win).
async fn plan_into(
    request: &str,
    config: Option<&crate::planner::PlannerConfig>,
    runtime: &Runtime,
    given: &mut Map<String, Value>,
) -> Result<ir::WorkflowIr, RunError> {
    let config = config.ok_or_else(|| RunError::Planner {
        kind: "planner_no_model".into(),
        message: crate::planner::PlannerError::NoModel.to_string(),
    })?;
    let plan = crate::planner::plan(request, config, runtime)
        .await
        .map_err(|e| match e {
            crate::planner::PlannerError::Budget(stop) => RunError::Budget(stop),
            e => RunError::Planner {
                kind: e.kind().into(),
                message: e.to_string(),
            },
        })?;
    for (k, v) in plan.inputs {
        given.entry(k).or_insert(v);
    }
    Ok(plan.ir)
}

/// `pflow plan`: the result is the workflow (written to `out`, or inline) and the inputs found.
fn write_plan(
    ir: ir::WorkflowIr,
    out: Option<PathBuf>,
    inputs: Map<String, Value>,
) -> Result<runtime::RunOutput, RunError> {
    let mut outputs = Map::new();
    let text = serde_json::to_string_pretty(&ir).unwrap_or_default();
    match out {
        Some(p) => {
            std::fs::write(&p, text + "\n").map_err(|e| RunError::Planner {
                kind: "io_error".into(),
                message: format!("cannot write `{}`: {e}", p.display()),
            })?;
            outputs.insert(
                "workflow_file".into(),
                Value::String(p.display().to_string()),
            );
        }
        None => {
            outputs.insert(
                "workflow".into(),
                serde_json::to_value(&ir).unwrap_or(Value::Null),
            );
        }
    }
    outputs.insert("inputs".into(), Value::Object(inputs));
    Ok(runtime::RunOutput {
        outputs,
        store: Map::new(),
        steps: 0,
    })
}

/// Resolves on SIGINT (→ 130) or SIGTERM (→ 143), marking the run interrupted
/// before the work is dropped so its spans end with that status.
async fn shutdown_signal() -> i32 {
    let code = wait_signal().await;
    runtime::INTERRUPTED.store(true, Ordering::SeqCst);
    code
}

async fn wait_signal() -> i32 {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        match (int, term) {
            (Ok(mut int), Ok(mut term)) => tokio::select! {
                _ = int.recv() => 130,
                _ = term.recv() => 143,
            },
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                130
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        130
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
