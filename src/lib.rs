//! pflow runs AI workflows with every step observable and cost-transparent.
//!
//! A workflow is a JSON file (the pflow IR, [`ir`]) of nodes and edges. The
//! [`runtime`] compiles and executes it, calling [`nodes`]; every workflow,
//! node attempt and batch item is a `tracing` span that [`telemetry`] turns
//! into OpenTelemetry spans, a metrics summary and an OTLP/JSON trace file.
//! [`history`] records each run's metrics summary for `pflow stats`;
//! [`checkpoint`] keeps each run's node outputs for `pflow resume`, `--only`,
//! `--from` and the memo cache.
//! [`run`] is a run's whole lifecycle (telemetry, root span, planning,
//! estimate and refusal, signals, trace file, history) as a library call;
//! the [`cli`] module is the `pflow` command, which only parses arguments
//! into a [`run::RunConfig`] and renders the report. Data flows one way:
//! cli → run → planner/runtime → nodes; telemetry observes, it never steers.

pub mod accounting;
pub mod checkpoint;
pub mod cli;
pub mod format;
pub mod history;
pub mod insight;
pub mod ir;
pub mod limits;
pub mod live;
pub mod llm;
pub mod nodes;
pub mod outcome;
pub mod planner;
pub mod pricing;
pub mod run;
pub mod runtime;
pub mod telemetry;
pub mod traces;
pub mod workflows;
