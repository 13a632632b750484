//! The run lifecycle as a library API: what `pflow run`, `pflow plan`, a
//! planned run and `--estimate` do between "arguments resolved" and "result
//! ready to render". [`run`] brings telemetry up, opens the root span, plans
//! (when given a request), compiles, estimates and refuses a run whose low
//! end is over `--max-cost`, runs, stops on SIGINT/SIGTERM with the trace
//! still saved, saves the trace and records the run in the history.
//! [`estimate`] compiles and estimates without running anything.
//!
//! Nothing here prints: the caller renders the [`RunReport`] and sees the run
//! only through a [`RunObserver`].
//!
//! ```no_run
//! # async fn demo() {
//! use pflow::run::{self, RunConfig, Source};
//! let config = RunConfig::new(Source::File("wf.json".into()));
//! let report = run::run(config, &mut run::Quiet).await;
//! std::process::exit(report.exit_code.code());
//! # }
//! ```

mod record;
mod signal;

use crate::checkpoint;
use crate::ir;
use crate::llm::budget::{Budget, BudgetLimits};
use crate::nodes::{Registry, Services};
use crate::outcome::{ExitCode, RunStatus};
use crate::planner::{PlannerConfig, PlannerError};
use crate::pricing::PriceTable;
use crate::runtime::estimate::{Estimate, EstimateError};
use crate::runtime::{self, CompileContext, CompiledWorkflow, RunError, RunOptions, Runtime};
use crate::telemetry::live::{self, LiveFeed};
use crate::telemetry::metrics::MetricsSummary;
use crate::telemetry::profile::Profile;
use crate::telemetry::progress::ProgressSink;
use crate::telemetry::{attr, Telemetry, TelemetryConfig, TraceMode};
use serde_json::{Map, Value};
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::instrument::WithSubscriber;
use tracing::Instrument;

use signal::shutdown_signal;

/// What to run.
#[derive(Debug, Clone)]
pub enum Source {
    /// A workflow file.
    File(PathBuf),
    /// A plain-language request: plan, then run.
    Request(String),
    /// `pflow plan`: plan only; the workflow is written to `output` (or returned inline).
    Plan {
        request: String,
        output: Option<PathBuf>,
    },
}

impl Source {
    /// Whether the planner makes the workflow.
    pub fn is_planned(&self) -> bool {
        !matches!(self, Source::File(_))
    }

    /// The command this run is recorded as (`pflow.run.command`, history).
    pub fn command(&self) -> &'static str {
        match self {
            Source::Plan { .. } => "plan",
            _ => "run",
        }
    }
}

/// One run, fully resolved: every flag, file and environment variable the
/// CLI reads has become a value here.
#[derive(Debug)]
pub struct RunConfig {
    pub source: Source,
    /// Inputs and parameters (`NAME=VALUE` on the command line).
    pub params: Map<String, Value>,
    /// Prices with overrides merged; `None` is the built-in table.
    pub prices: Option<PriceTable>,
    pub limits: BudgetLimits,
    /// Needed when the source is planned.
    pub planner: Option<PlannerConfig>,
    /// Keep the trace file even when the run succeeds (`--trace`).
    pub save_trace: bool,
    /// Keep a planned run's trace even when it succeeds (`--trace-planner`).
    pub trace_planner: bool,
    /// `--otlp-endpoint` (else the `OTEL_EXPORTER_OTLP_*` variables).
    pub otlp_endpoint: Option<String>,
    pub capture_content: bool,
    pub profile: Profile,
    /// Read the process's stdin into `${stdin}` when the workflow uses it and stdin is piped.
    pub read_stdin: bool,
    /// The live progress display's observer.
    pub progress: Option<ProgressSink>,
    /// `--live`: the run's `start` once its root span is open, every ended span, then its `end`.
    pub live: Option<LiveFeed>,
    /// Warnings found while resolving the configuration; they lead the report's.
    pub warnings: Vec<String>,
    /// pflow's data directory (`$PFLOW_HOME`): traces, history, checkpoints.
    pub home: PathBuf,
    /// Continue an earlier run (`pflow resume`, `--only`, `--from`).
    pub resume: Option<checkpoint::Mode>,
    /// `--cache` / `--no-cache`.
    pub cache: checkpoint::CacheMode,
}

impl RunConfig {
    /// Defaults: built-in prices, no limits, no trace kept on success, stdin
    /// read, `$PFLOW_HOME` (else `~/.pflow`) as the data directory.
    pub fn new(source: Source) -> RunConfig {
        RunConfig {
            source,
            params: Map::new(),
            prices: None,
            limits: BudgetLimits::default(),
            planner: None,
            save_trace: false,
            trace_planner: false,
            otlp_endpoint: None,
            capture_content: false,
            profile: Profile::default(),
            read_stdin: true,
            progress: None,
            live: None,
            warnings: Vec::new(),
            home: crate::telemetry::pflow_home(),
            resume: None,
            cache: checkpoint::CacheMode::Default,
        }
    }
}

/// Whether a planned workflow may run.
pub enum Approval {
    Run,
    /// Do not run it, for this reason (exit code 2, nothing executed).
    Refuse(String),
    /// Ask someone: the (blocking) question returns `true` to run.
    Ask(Box<dyn FnOnce() -> bool + Send>),
}

/// Moments of a run the caller may want to show while it happens.
pub trait RunObserver {
    /// A planned run's cost estimate, made before the workflow starts.
    fn planned_estimate(&mut self, _estimate: &Estimate) {}
    /// A planned workflow, validated and estimated, before any of it runs;
    /// `side_effects` says what it would change outside pflow (one line per node).
    fn plan_ready(
        &mut self,
        _plan: &ir::WorkflowIr,
        _inputs: &Map<String, Value>,
        _side_effects: &[String],
    ) -> Approval {
        Approval::Run
    }
    /// Every span of the run has closed (a progress display can go now).
    fn spans_closed(&mut self) {}
}

/// An observer that shows nothing.
pub struct Quiet;

impl RunObserver for Quiet {}

/// What a run produced, for rendering.
pub struct RunReport {
    pub result: Result<runtime::RunOutput, RunError>,
    pub metrics: Option<MetricsSummary>,
    pub trace_id: Option<String>,
    pub trace_file: Option<PathBuf>,
    pub warnings: Vec<String>,
    pub validation_warnings: Vec<ir::Diagnostic>,
    pub status: RunStatus,
    pub exit_code: ExitCode,
    /// The pre-run cost estimate, when one was made (planned runs, `--max-cost`).
    pub estimate: Option<Estimate>,
    /// A planned run's workflow (whether it ran or not).
    pub plan: Option<ir::WorkflowIr>,
    /// The run's id (its checkpoint directory under `$PFLOW_HOME/runs/`).
    pub run_id: Option<String>,
    /// When the run did not succeed and its checkpoint was kept: the command that resumes it.
    pub resume_command: Option<String>,
    /// What a continued run took over and what it ran again.
    pub resume: Option<checkpoint::ResumeSummary>,
}

/// Runs `config.source` through the whole lifecycle. Never panics on bad
/// input: every failure is in the report's `result` and `exit_code`.
pub async fn run(config: RunConfig, observer: &mut dyn RunObserver) -> RunReport {
    let started = chrono::Utc::now();
    let RunConfig {
        source,
        params: mut given,
        prices,
        limits,
        planner,
        save_trace,
        trace_planner,
        otlp_endpoint,
        capture_content,
        profile,
        read_stdin,
        progress,
        live,
        warnings: config_warnings,
        home,
        resume,
        cache,
    } = config;
    let planning = source.is_planned();
    let command = source.command();
    let planned_run = matches!(source, Source::Request(_));
    let file = match &source {
        Source::File(p) => p.clone(),
        Source::Request(_) | Source::Plan { .. } => PathBuf::from("planned-workflow.json"),
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
    config.trace_dir = home.join("traces");
    let keep_trace = save_trace || (planning && trace_planner);
    if let TraceMode::Full { .. } = config.mode {
        config.mode = TraceMode::Full {
            save_always: keep_trace,
        };
    }
    let mut warnings = config_warnings;
    if config.mode != TraceMode::Off {
        match crate::telemetry::otlp::OtlpSettings::from_env(
            otlp_endpoint.as_deref(),
            capture_content,
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
                .push((attr::WORKFLOW_NAME.into(), name));
        }
    }
    config.progress = progress;
    config.live = live.clone();
    let mut telemetry = Telemetry::init(config);
    warnings.extend(telemetry.take_warnings());
    if save_trace && telemetry.mode() == TraceMode::Off {
        warnings.push("--trace ignored: OTEL_SDK_DISABLED=true switches telemetry off".into());
    }
    if live.is_some() && telemetry.mode() == TraceMode::Off {
        warnings
            .push("--live shows no spans: OTEL_SDK_DISABLED=true switches telemetry off".into());
    }
    // This run's spans go to this run's pipeline: its dispatcher is the
    // default while the work is polled (on whichever worker thread), so a
    // process can run one workflow after another. The first run's is also
    // the process-wide default, for anything the run does not poll itself.
    let dispatch = telemetry.dispatch();
    let _ = tracing::dispatcher::set_global_default(dispatch.clone());

    let root = tracing::dispatcher::with_default(&dispatch, || root_span(command, file));
    telemetry.adopt_env_parent(&root);
    let trace_id = telemetry.trace_id(&root);
    let run_id = checkpoint::new_run_id(trace_id.as_deref());
    if let Some(feed) = &live {
        feed.start(live::RunStart {
            trace_id: trace_id.clone(),
            command: command.to_string(),
            workflow: file.display().to_string(),
            // The root span has just started: lines count from here, as the trace does.
            started_ms: live::now_ms(),
            pid: std::process::id(),
        });
    }
    root.record(attr::RUN_ID, run_id.as_str());
    // Checkpoints are kept for workflow files (a planned workflow is saved with `pflow plan -o`).
    let checkpointing =
        matches!(source, Source::File(_)) && (checkpoint::enabled() || resume.is_some());
    let mut session: Option<Arc<checkpoint::Session>> = None;
    let mut resume_summary = None;

    let runtime = Runtime::with_services(
        Registry::builtin(),
        Services::new(prices.map(Arc::new)).with_budget(Budget::new(limits)),
    );
    let mut validation_warnings = Vec::new();
    let fallback_name = match &source {
        Source::File(p) => p.file_stem().map(|s| s.to_string_lossy().into_owned()),
        _ => None,
    };
    let history_db = crate::history::db_in(&home);
    let mut ident = None;
    let mut estimate = None;
    let mut estimate_warnings = Vec::new();
    let mut plan = None;
    let work = {
        let root = root.clone();
        let runtime = runtime.clone();
        let vw = &mut validation_warnings;
        let ident = &mut ident;
        let estimate = &mut estimate;
        let estimate_warnings = &mut estimate_warnings;
        let plan_slot = &mut plan;
        let observer = &mut *observer;
        let session = &mut session;
        let resume_summary = &mut resume_summary;
        let home = &home;
        let run_id = run_id.as_str();
        let trace_id = trace_id.clone();
        let resume = &resume;
        async move {
            let (ir, plan_only) = match source {
                Source::File(_) => (loaded?, None),
                Source::Request(request) => (
                    plan_into(&request, planner.as_ref(), &runtime, &mut given).await?,
                    None,
                ),
                Source::Plan { request, output } => {
                    let ir = plan_into(&request, planner.as_ref(), &runtime, &mut given).await?;
                    (ir, Some(output))
                }
            };
            let ir_hash = ident
                .insert(crate::history::WorkflowIdent::of(&ir))
                .hash
                .clone();
            if let Some(out) = plan_only {
                return write_plan(ir, out, given);
            }
            if planned_run {
                *plan_slot = Some(ir.clone());
            }
            let prior = match resume {
                Some(mode) => Some(load_prior(home, mode, file, &root)?),
                None => None,
            };
            if let Some(p) = &prior {
                given = p
                    .inputs_with(given)
                    .map_err(|e| RunError::Resume(e.to_string()))?;
            }
            // A continued run's stdin is the one its inputs recorded.
            let read_stdin = read_stdin && prior.is_none();
            let (wf, inputs) = compile(&runtime, ir, file, given, read_stdin)?;
            *vw = wf.warnings.clone();
            if checkpointing {
                let (s, summary) = checkpoint::Session::start(checkpoint::Start {
                    home,
                    run_id,
                    trace_id,
                    root_span_id: crate::telemetry::span_id(&root),
                    file,
                    ir: &wf.ir,
                    ir_hash: &ir_hash,
                    nodes: wf.node_views(),
                    inputs: &inputs,
                    mode: resume.clone(),
                    prior,
                    cache,
                    write: checkpoint::enabled(),
                })
                .map_err(|e| RunError::Resume(e.to_string()))?;
                *resume_summary = summary;
                *session = Some(Arc::new(s));
            }
            root.record(attr::WORKFLOW_NAME, wf.name.as_str());
            let budget = runtime.services().budget();
            if planned_run || budget.limits().max_cost_usd.is_some() {
                match estimate_with_history(
                    &wf,
                    &inputs,
                    runtime.services().prices(),
                    &history_db,
                    estimate_warnings,
                ) {
                    Ok(est) => {
                        if planned_run {
                            observer.planned_estimate(&est);
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
            if planned_run {
                approve(&wf.ir, &inputs, observer).await?;
            }
            let declares_outputs = !wf.ir.outputs.is_empty();
            let opts = RunOptions {
                checkpoint: session.clone(),
                ..RunOptions::default()
            };
            let mut out = runtime.run(wf, inputs, &opts).await?;
            out.default_to_last_node(declares_outputs);
            Ok(out)
        }
    };
    let work = work
        .instrument(root.clone())
        .with_subscriber(dispatch.clone());
    let (mut result, signal_code) = tokio::select! {
        r = work => (r, None),
        code = shutdown_signal() => (Err(RunError::Interrupted), Some(code)),
    };
    // `--only NODE`: what the run produced is that node's outputs.
    if let (Some(checkpoint::Mode::Only { node }), Ok(out)) = (&resume, &mut result) {
        if let Some(Value::Object(ns)) = out.store.get(node) {
            out.outputs = ns.clone();
        }
    }
    let exit_code = match (&result, signal_code) {
        (_, Some(code)) => code,
        (Ok(_), None) => ExitCode::Success,
        (Err(e), None) => e.exit_code(),
    };
    let status = match &result {
        _ if signal_code.is_some() => RunStatus::Interrupted,
        Ok(_) => RunStatus::Ok,
        Err(e) => e.status(),
    };
    root.record(attr::RUN_STATUS, status.as_str());
    root.record(attr::RUN_EXIT_CODE, i64::from(exit_code.code()));
    record_budget(&root, runtime.services().budget());
    warnings.extend(runtime.services().budget().warnings());
    warnings.extend(estimate_warnings);
    if let Err(e) = &result {
        // Recorded once: an exception event here only for what failed at the
        // root itself (a bad file or input, the estimate over budget, no
        // planner model); the rest was recorded on the span it happened in.
        let here = match e {
            RunError::Invalid(_) | RunError::Input(_) => true,
            RunError::Budget(b) => b.stopped == crate::llm::budget::Stopped::Estimate,
            RunError::Planner { kind, .. } => kind == "planner_no_model" || kind == "planner_model",
            _ => false,
        };
        tracing::dispatcher::with_default(&dispatch, || {
            if here {
                crate::telemetry::record_exception(&root, e.kind(), &e.to_string());
            } else {
                crate::telemetry::mark_failed(&root, e.kind(), &e.to_string());
            }
        });
    }
    drop(root);
    // Every node span has closed: the display goes before anything else is printed.
    observer.spans_closed();
    let metrics = telemetry.metrics();
    if let Some(m) = &metrics {
        for model in &m.unpriced_models {
            warnings.push(format!("no price known for model `{model}`: its cost is reported as null and totals are incomplete (add it to $PFLOW_HOME/pricing.json)"));
        }
    }
    let mut resume_command = None;
    if let Some(s) = &session {
        let failed_node = match &result {
            Err(RunError::Node { node, .. }) => node.split('/').next(),
            _ => None,
        };
        warnings.extend(s.finish(status.as_str(), failed_node, metrics.as_ref()));
        if s.saving() && !matches!(status, RunStatus::Ok | RunStatus::Invalid) {
            resume_command = Some(format!("pflow resume {}", s.run_id()));
        }
    }
    let save = keep_trace || exit_code != ExitCode::Success;
    let finished = telemetry.finish(
        save,
        trace_id
            .as_deref()
            .unwrap_or("00000000000000000000000000000000"),
    );
    warnings.extend(finished.warnings);
    if let Some(feed) = &live {
        feed.end(live_end(
            status,
            exit_code,
            trace_id.as_deref(),
            finished.trace_file.as_deref(),
            metrics.as_ref(),
            started,
        ));
    }
    warnings.extend(record::after_run(record::FinishedRun {
        home: &home,
        started,
        command,
        ident,
        fallback_name,
        status,
        exit_code,
        trace_id: trace_id.as_deref(),
        trace_file: finished.trace_file.as_deref(),
        metrics: metrics.as_ref(),
        checkpoint: session.as_ref().and_then(|s| s.dir()),
    }));
    RunReport {
        result,
        metrics,
        trace_id,
        trace_file: finished.trace_file,
        warnings,
        validation_warnings,
        status,
        exit_code,
        estimate,
        plan,
        run_id: session.as_ref().map(|s| s.run_id().to_string()),
        resume_command,
        resume: resume_summary,
    }
}

/// The live feed's `end` event: the run's status and totals, as its summary reports them.
fn live_end(
    status: RunStatus,
    exit_code: ExitCode,
    trace_id: Option<&str>,
    trace_file: Option<&Path>,
    metrics: Option<&MetricsSummary>,
    started: chrono::DateTime<chrono::Utc>,
) -> live::RunEnd {
    let elapsed = (chrono::Utc::now() - started)
        .num_microseconds()
        .unwrap_or(0) as f64
        / 1000.0;
    let total = metrics.map(|m| &m.total);
    live::RunEnd {
        status: status.as_str().to_string(),
        exit_code: exit_code.code(),
        trace_id: trace_id.map(str::to_string),
        trace_file: trace_file.map(|p| p.display().to_string()),
        duration_ms: total.map_or(elapsed, |t| t.duration_ms),
        llm_calls: total.map_or(0, |t| t.llm_calls),
        tokens_total: total.map_or(0, |t| t.tokens_total),
        cost_usd: total.map_or(Some(0.0), |t| t.cost.usd.filter(|_| t.cost.complete)),
        cost_lower_bound_usd: total.map_or(0.0, |t| t.cost.lower_bound_usd),
        metrics: metrics.and_then(|m| serde_json::to_value(m).ok()),
    }
}

/// Shows the planned workflow to the observer and runs only what it approves.
async fn approve(
    ir: &ir::WorkflowIr,
    inputs: &Map<String, Value>,
    observer: &mut dyn RunObserver,
) -> Result<(), RunError> {
    let effects: Vec<String> = ir
        .nodes
        .iter()
        .filter_map(|n| {
            crate::nodes::side_effect(n).map(|e| format!("`{}` ({}) {e}", n.id, n.node_type))
        })
        .collect();
    let inputs: Map<String, Value> = inputs
        .iter()
        .filter(|(k, _)| ir.inputs.contains_key(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    match observer.plan_ready(ir, &inputs, &effects) {
        Approval::Run => Ok(()),
        Approval::Refuse(reason) => Err(RunError::NotApproved(reason)),
        // Asked on a blocking thread, so Ctrl-C still ends the run meanwhile.
        Approval::Ask(question) => match tokio::task::spawn_blocking(question).await {
            Ok(true) => Ok(()),
            _ => Err(RunError::NotApproved("not confirmed".into())),
        },
    }
}

/// The run `mode` continues, linked from the root span: the root carries a
/// span link to that run's root, its id and the mode.
fn load_prior(
    home: &Path,
    mode: &checkpoint::Mode,
    file: &Path,
    root: &tracing::Span,
) -> Result<checkpoint::Prior, RunError> {
    let runs = checkpoint::runs_dir(home);
    let err = |e: checkpoint::CheckpointError| RunError::Resume(e.to_string());
    let id = match mode {
        checkpoint::Mode::Resume { run } => run.clone(),
        _ => checkpoint::last_run_of(&runs, file).map_err(err)?,
    };
    let prior = checkpoint::Prior::load(&runs, &id).map_err(err)?;
    root.record(attr::RUN_RESUMED_FROM, id.as_str());
    root.record(attr::RUN_RESUME_MODE, mode.as_str());
    if let (Some(t), Some(s)) = (&prior.manifest.trace_id, &prior.manifest.root_span_id) {
        crate::telemetry::link(root, t, s, "resumed_from");
    }
    Ok(prior)
}

/// `pflow resume RUN`: the run's id (`last`, an id or a prefix resolved) and
/// the workflow file it ran, for the [`RunConfig`].
pub fn resume_target(home: &Path, arg: &str) -> Result<(String, PathBuf), String> {
    let runs = checkpoint::runs_dir(home);
    let id = checkpoint::resolve(&runs, arg).map_err(|e| e.to_string())?;
    let prior = checkpoint::Prior::load(&runs, &id).map_err(|e| e.to_string())?;
    Ok((id, prior.manifest.workflow_file))
}

/// The run's root span, with every attribute recorded later declared empty.
fn root_span(command: &str, file: &Path) -> tracing::Span {
    tracing::info_span!(
        target: "pflow::run",
        "run",
        otel.name = %attr::run_span(command),
        { attr::RUN_COMMAND } = command,
        { attr::WORKFLOW_FILE } = %file.display(),
        { attr::WORKFLOW_NAME } = tracing::field::Empty,
        { attr::RUN_STATUS } = tracing::field::Empty,
        { attr::RUN_EXIT_CODE } = tracing::field::Empty,
        { attr::RUN_ID } = tracing::field::Empty,
        { attr::RUN_RESUMED_FROM } = tracing::field::Empty,
        { attr::RUN_RESUME_MODE } = tracing::field::Empty,
        { attr::BUDGET_MAX_COST_USD } = tracing::field::Empty,
        { attr::BUDGET_MAX_TOKENS_TOTAL } = tracing::field::Empty,
        { attr::BUDGET_ALLOW_UNPRICED } = tracing::field::Empty,
        { attr::BUDGET_SPENT_USD } = tracing::field::Empty,
        { attr::BUDGET_TOKENS_USED } = tracing::field::Empty,
        { attr::BUDGET_EXCEEDED } = tracing::field::Empty,
        { attr::BUDGET_STOPPED } = tracing::field::Empty,
        { attr::BUDGET_REASON } = tracing::field::Empty,
        { attr::BUDGET_NODE } = tracing::field::Empty,
        { attr::BUDGET_MODEL } = tracing::field::Empty,
        { attr::BUDGET_NEXT_CALL_ESTIMATE_USD } = tracing::field::Empty,
        { attr::BUDGET_NEXT_CALL_ESTIMATE_TOKENS } = tracing::field::Empty,
        { attr::ERROR_TYPE } = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    )
}

/// What `--estimate` produced.
pub struct EstimateReport {
    pub result: Result<Estimate, EstimateFailure>,
    pub warnings: Vec<String>,
}

/// Why an estimate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum EstimateFailure {
    /// Only a workflow file can be estimated without running the planner.
    #[error("--estimate needs a workflow file or a saved workflow's name; a planned workflow's estimate is printed before it runs (or save it with `pflow plan REQUEST -o FILE` and run `pflow run FILE --estimate`)")]
    Planned,
    /// The workflow or its inputs are invalid (exit code 2, as for a run).
    #[error(transparent)]
    Run(RunError),
    #[error(transparent)]
    Estimate(EstimateError),
}

/// `pflow run FILE --estimate`: load, validate and estimate; nothing runs,
/// no trace is written and the history is not touched beyond reading it.
pub fn estimate(config: RunConfig) -> EstimateReport {
    let mut warnings = config.warnings;
    let Source::File(file) = &config.source else {
        return EstimateReport {
            result: Err(EstimateFailure::Planned),
            warnings,
        };
    };
    let prices = config
        .prices
        .as_ref()
        .unwrap_or_else(|| PriceTable::builtin());
    let rt = Runtime::default();
    let compiled = ir::load_file(file)
        .map_err(RunError::from)
        .and_then(|ir| compile(&rt, ir, file, config.params, config.read_stdin));
    let (wf, inputs) = match compiled {
        Ok(c) => c,
        Err(e) => {
            return EstimateReport {
                result: Err(EstimateFailure::Run(e)),
                warnings,
            }
        }
    };
    warnings.extend(wf.warnings.iter().map(|d| d.to_string()));
    let history_db = crate::history::db_in(&config.home);
    let result = match estimate_with_history(&wf, &inputs, prices, &history_db, &mut warnings) {
        Ok(mut est) => {
            if let Some(max) = config.limits.max_cost_usd.filter(|m| est.low_usd() > *m) {
                est.notes.push(format!(
                    "the low end exceeds --max-cost {}: `pflow run` would refuse this workflow before it starts (exit code 3)",
                    crate::format::usd_compact(max)
                ));
            }
            Ok(est)
        }
        Err(e) => Err(EstimateFailure::Estimate(e)),
    };
    EstimateReport { result, warnings }
}

/// Compiles `ir` against the parameters given (and piped stdin, when the
/// workflow reads it) and checks its inputs.
fn compile(
    rt: &Runtime,
    ir: ir::WorkflowIr,
    file: &Path,
    mut given: Map<String, Value>,
    read_stdin: bool,
) -> Result<(Arc<CompiledWorkflow>, Map<String, Value>), RunError> {
    if read_stdin && references_stdin(&ir) && !std::io::stdin().is_terminal() {
        let mut s = String::new();
        // Empty input (e.g. </dev/null) counts as nothing piped.
        if std::io::stdin().read_to_string(&mut s).is_ok() && !s.is_empty() {
            given.insert("stdin".into(), Value::String(s));
        }
    }
    let cx = CompileContext {
        // Missing inputs are `prepare_inputs`' to report (error type `input_error`),
        // still before anything runs.
        no_inputs: true,
        ..CompileContext::command_line(&given, Some(given.contains_key("stdin")))
    };
    let wf = rt.compile(
        ir,
        &file.display().to_string(),
        &runtime::base_dir_of(file),
        &cx,
    )?;
    let inputs = rt.prepare_inputs(&wf, given)?;
    Ok((wf, inputs))
}

/// Whether any param, batch list or output of `ir` reads `${stdin}`.
fn references_stdin(ir: &ir::WorkflowIr) -> bool {
    let mut found = false;
    let mut check = |_: &str, s: &str| {
        if s.contains("${stdin") {
            found = true;
        }
    };
    for n in &ir.nodes {
        ir::template::walk_node_strings(n, &mut check);
    }
    for o in ir.outputs.values() {
        if let Some(s) = &o.source {
            check("", s);
        }
    }
    found
}

/// The budget's limits, live totals and stop (if any) as root-span
/// attributes: the metrics summary's `budget` is read back from them.
fn record_budget(root: &tracing::Span, budget: &Budget) {
    let limits = budget.limits();
    if !limits.is_set() {
        return;
    }
    if let Some(c) = limits.max_cost_usd {
        root.record(attr::BUDGET_MAX_COST_USD, c);
    }
    if let Some(t) = limits.max_tokens_total {
        root.record(attr::BUDGET_MAX_TOKENS_TOTAL, t as i64);
    }
    root.record(attr::BUDGET_ALLOW_UNPRICED, limits.allow_unpriced);
    let spent = budget.spent();
    root.record(attr::BUDGET_SPENT_USD, spent.usd);
    root.record(attr::BUDGET_TOKENS_USED, spent.tokens as i64);
    let stop = budget.stopped();
    root.record(
        attr::BUDGET_EXCEEDED,
        stop.as_ref()
            .is_some_and(|s| s.reason != crate::llm::budget::Reason::UnpricedModel),
    );
    if let Some(s) = stop {
        root.record(attr::BUDGET_STOPPED, s.stopped.as_str());
        root.record(attr::BUDGET_REASON, s.reason.as_str());
        if let Some(n) = &s.node {
            root.record(attr::BUDGET_NODE, n.as_str());
        }
        if !s.model.is_empty() {
            root.record(attr::BUDGET_MODEL, s.model.as_str());
        }
        if let Some(u) = s.next_call_estimate_usd {
            root.record(attr::BUDGET_NEXT_CALL_ESTIMATE_USD, u);
        }
        if let Some(t) = s.next_call_estimate_tokens {
            root.record(attr::BUDGET_NEXT_CALL_ESTIMATE_TOKENS, t as i64);
        }
    }
}

/// The estimate of `wf`, its expected value from the earlier runs of the same
/// workflow in the history (a history that cannot be read is a warning).
fn estimate_with_history(
    wf: &CompiledWorkflow,
    inputs: &Map<String, Value>,
    prices: &PriceTable,
    history_db: &Path,
    warnings: &mut Vec<String>,
) -> Result<Estimate, EstimateError> {
    let past = if crate::history::enabled() {
        let hash = crate::history::WorkflowIdent::of(&wf.ir).hash;
        match crate::history::query::past_runs(history_db, &hash) {
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

/// Plans `request`; values found for the workflow's inputs join `given`
/// (parameters on the command line win).
async fn plan_into(
    request: &str,
    config: Option<&PlannerConfig>,
    runtime: &Runtime,
    given: &mut Map<String, Value>,
) -> Result<ir::WorkflowIr, RunError> {
    let config = config.ok_or_else(|| RunError::Planner {
        kind: "planner_no_model".into(),
        message: PlannerError::NoModel.to_string(),
    })?;
    let plan = crate::planner::plan(request, config, runtime)
        .await
        .map_err(|e| match e {
            PlannerError::Budget(stop) => RunError::Budget(stop),
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
        last_node: None,
        result_node: None,
    })
}
