//! Every span, attribute, event and metric name pflow emits, in one place, so
//! no name is typed twice. OpenTelemetry semantic-convention names are used
//! where one exists (GenAI conventions, `error.type`, `exception.*`); pflow's
//! own carry a `pflow.` prefix. `docs/telemetry.md` documents each of them.
//!
//! [`REGISTRY`] is the same list as a table (name, kind, content flag, brief)
//! for code that walks it: the export policy's content attributes, the HTML
//! report's names, and the tests that hold the code and the docs to it.
//! Span names are patterns (`node {id}`); the functions below build them.
//! Every pattern is low-cardinality: files, requests and indexes go in attributes.

/// What a registered name names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A span name pattern: `{…}` stands for a value.
    Span,
    /// A span attribute.
    Attr,
    /// A span event.
    Event,
    /// An attribute of span events.
    EventAttr,
    /// A resource attribute.
    Resource,
    /// An OpenTelemetry metric instrument.
    Metric,
}

/// One registered name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Name {
    /// The constant's identifier in this module (what the report's script uses).
    pub id: &'static str,
    pub name: &'static str,
    pub kind: Kind,
    /// Carries prompts, responses or values: kept local unless content capture is on.
    pub content: bool,
    pub brief: &'static str,
}

macro_rules! registry {
    ($($id:ident = $name:literal, $kind:ident, $content:literal, $brief:literal;)*) => {
        $(#[doc = $brief] pub const $id: &str = $name;)*
        /// Every name above, in order.
        pub const REGISTRY: &[Name] = &[
            $(Name { id: stringify!($id), name: $name, kind: Kind::$kind, content: $content, brief: $brief },)*
        ];
    };
}

registry! {
    // Span name patterns.
    SPAN_RUN = "pflow {command}", Span, false, "root span: `pflow run` or `pflow plan` (the file is `pflow.workflow.file`, the request `pflow.planner.request`)";
    SPAN_WORKFLOW = "invoke_workflow {name}", Span, false, "a workflow (top level or nested)";
    SPAN_NODE = "node {id}", Span, false, "one node attempt, batch, or batch item (the item's index is `pflow.batch.index`, the full path `pflow.node.path`)";
    SPAN_PLANNER = "plan pflow", Span, false, "the planning phase: the one `plan` operation (`gen_ai.agent.name` = `pflow`)";
    SPAN_PLANNER_STEP = "planner {step}", Span, false, "one planner step (not an operation of its own)";
    SPAN_LLM_CHAT = "chat {model}", Span, false, "one LLM call attempt (OpenAI, Anthropic, Ollama, echo)";
    SPAN_LLM_GENERATE = "generate_content {model}", Span, false, "one LLM call attempt (Gemini)";
    SPAN_HTTP_CLIENT = "{method}", Span, false, "one HTTP request (CLIENT): the `http` node's, or an LLM attempt's; `GET`, `POST`, … (`HTTP` for other methods)";

    // Semantic-convention names.
    GEN_AI_OPERATION_NAME = "gen_ai.operation.name", Attr, false, "`invoke_workflow`, `plan`, `chat`, `generate_content`";
    GEN_AI_WORKFLOW_NAME = "gen_ai.workflow.name", Attr, false, "the workflow's name (`invoke_workflow` spans)";
    GEN_AI_AGENT_NAME = "gen_ai.agent.name", Attr, false, "`pflow`: the planner, as the agent that plans";
    ERROR_TYPE = "error.type", Attr, false, "the error kind of a failed span";
    EXCEPTION_TYPE = "exception.type", EventAttr, false, "the error kind (exception event)";
    EXCEPTION_MESSAGE = "exception.message", EventAttr, true, "the error message (exception event; content: stderr tails, commands, URLs)";
    EXCEPTION_STACKTRACE = "exception.stacktrace", EventAttr, true, "a stack trace (dropped on export without content capture)";
    EXCEPTION_MESSAGE_SIZE = "pflow.exception.message.size", EventAttr, false, "exported instead of `exception.message` when content capture is off";
    SERVICE_NAME = "service.name", Resource, false, "`OTEL_SERVICE_NAME`, default `pflow`";
    SERVICE_VERSION = "service.version", Resource, false, "pflow's version";
    HOST_NAME = "host.name", Resource, false, "the machine's host name";
    HOST_ARCH = "host.arch", Resource, false, "the conventions' value: `amd64`, `arm64`, `x86`, `arm32`, `ppc64`, `s390x`";
    SERVICE_INSTANCE_ID = "service.instance.id", Resource, false, "a random UUID per pflow process";
    TELEMETRY_SDK_VERSION = "telemetry.sdk.version", Resource, false, "the OpenTelemetry SDK's version (with `telemetry.sdk.name` and `telemetry.sdk.language`)";
    SERVER_ADDRESS = "server.address", Attr, false, "the host an LLM call or HTTP request goes to (LLM and HTTP client spans, LLM metrics)";
    SERVER_PORT = "server.port", Attr, false, "its port";
    HTTP_REQUEST_METHOD = "http.request.method", Attr, false, "`GET`, `POST`, … (`_OTHER` for a method the conventions do not know)";
    HTTP_REQUEST_METHOD_ORIGINAL = "http.request.method_original", Attr, false, "the method as sent, when `http.request.method` is `_OTHER`";
    URL_FULL = "url.full", Attr, false, "the request URL, credentials and secret query values redacted";
    HTTP_RESPONSE_STATUS_CODE = "http.response.status_code", Attr, false, "the response status";

    // Run (root span).
    RUN_STATUS = "pflow.run.status", Attr, false, "`ok`, `failed`, `invalid`, `budget_exceeded`, `interrupted`";
    RUN_COMMAND = "pflow.run.command", Attr, false, "`run` or `plan`";
    RUN_EXIT_CODE = "pflow.run.exit_code", Attr, false, "the process exit code";
    RUN_ID = "pflow.run.id", Attr, false, "the run's id: its checkpoints are in `$PFLOW_HOME/runs/<id>` (`pflow resume <id>`)";
    RUN_RESUMED_FROM = "pflow.run.resumed_from", Attr, false, "the run whose checkpoints this run continues (`pflow resume`, `--only`, `--from`)";
    RUN_RESUME_MODE = "pflow.run.resume_mode", Attr, false, "`resume`, `only` or `from`";

    // Budget facts (root span, only when `--max-cost` / `--max-tokens-total` is set).
    BUDGET_MAX_COST_USD = "pflow.budget.max_cost_usd", Attr, false, "the cost limit";
    BUDGET_MAX_TOKENS_TOTAL = "pflow.budget.max_tokens_total", Attr, false, "the token limit";
    BUDGET_ALLOW_UNPRICED = "pflow.budget.allow_unpriced", Attr, false, "`--allow-unpriced`";
    BUDGET_SPENT_USD = "pflow.budget.spent_usd", Attr, false, "actual cost of the settled LLM attempts";
    BUDGET_TOKENS_USED = "pflow.budget.tokens_used", Attr, false, "actual tokens of those attempts";
    BUDGET_EXCEEDED = "pflow.budget.exceeded", Attr, false, "a limit stopped the run";
    BUDGET_STOPPED = "pflow.budget.stopped", Attr, false, "`before_call`, `after_call` or `estimate`";
    BUDGET_REASON = "pflow.budget.reason", Attr, false, "`max_cost`, `max_tokens_total` or `unpriced_model`";
    BUDGET_NODE = "pflow.budget.node", Attr, false, "the node whose call was refused or crossed the limit";
    BUDGET_MODEL = "pflow.budget.model", Attr, false, "that call's model";
    BUDGET_NEXT_CALL_ESTIMATE_USD = "pflow.budget.next_call_estimate_usd", Attr, false, "the refused call's worst-case cost";
    BUDGET_NEXT_CALL_ESTIMATE_TOKENS = "pflow.budget.next_call_estimate_tokens", Attr, false, "the refused call's worst-case tokens";

    // Workflow spans.
    WORKFLOW_NAME = "pflow.workflow.name", Attr, false, "the workflow's name (also a resource attribute)";
    WORKFLOW_FILE = "pflow.workflow.file", Attr, false, "the workflow file";
    WORKFLOW_DEPTH = "pflow.workflow.depth", Attr, false, "0 for the top workflow, 1 for a child, …";
    WORKFLOW_NODE_COUNT = "pflow.workflow.node_count", Attr, false, "nodes in the IR";
    WORKFLOW_STEPS = "pflow.workflow.steps", Attr, false, "node executions performed";
    WORKFLOW_STATUS = "pflow.workflow.status", Attr, false, "`ok`, `error`, `cancelled`, `interrupted`";

    // Node spans.
    NODE_ID = "pflow.node.id", Attr, false, "node id in its workflow";
    NODE_TYPE = "pflow.node.type", Attr, false, "node type";
    NODE_PATH = "pflow.node.path", Attr, false, "unambiguous node path";
    NODE_ROLE = "pflow.node.role", Attr, false, "`node`, `batch`, `batch_item`";
    NODE_ATTEMPT = "pflow.node.attempt", Attr, false, "1 for the first attempt";
    NODE_MAX_ATTEMPTS = "pflow.node.max_attempts", Attr, false, "`max_retries + 1`";
    NODE_ACTION = "pflow.node.action", Attr, false, "the action returned";
    NODE_STATUS = "pflow.node.status", Attr, false, "`ok`, `error`, `cancelled`, `interrupted`; `restored` (from a checkpoint) or `cached` (a memo hit): not run again";
    NODE_ORIGIN_RUN_ID = "pflow.node.origin.run_id", Attr, false, "restored or cached node: the run that executed it";
    NODE_ORIGIN_TRACE_ID = "pflow.node.origin.trace_id", Attr, false, "restored or cached node: the trace of that execution";
    NODE_ORIGIN_SPAN_ID = "pflow.node.origin.span_id", Attr, false, "restored or cached node: the span of that execution (also a span link)";
    REUSED_LLM_CALLS = "pflow.reused.llm_calls", Attr, false, "restored or cached node: LLM calls it did not make again";
    REUSED_INPUT_TOKENS = "pflow.reused.input_tokens", Attr, false, "their input tokens";
    REUSED_OUTPUT_TOKENS = "pflow.reused.output_tokens", Attr, false, "their output tokens";
    REUSED_COST_USD = "pflow.reused.cost_usd", Attr, false, "what they cost when first made (absent when unknown)";
    LINK_TYPE = "pflow.link.type", Attr, false, "span link attribute: `resumed_from` (root), `restored_from`, `cached_from` (node)";
    NODE_PARAMS = "pflow.node.params", Attr, true, "params after template resolution (redacted preview)";
    NODE_PARAMS_DIGEST = "pflow.node.params_digest", Attr, true, "per-param digest of the full value (`{\"key\": \"<16 hex>\"}`), beside the preview: `trace diff` compares it";
    BATCH_INDEX = "pflow.batch.index", Attr, false, "item index (batch items)";
    BATCH_SIZE = "pflow.batch.size", Attr, false, "number of items (batch span)";
    BATCH_PARALLEL = "pflow.batch.parallel", Attr, false, "items run concurrently";
    BATCH_MAX_CONCURRENT = "pflow.batch.max_concurrent", Attr, false, "concurrency bound";
    BATCH_FAILED = "pflow.batch.failed", Attr, false, "items that failed";

    // Resource use (node spans; `http.*` sizes and the first byte on HTTP CLIENT spans).
    NODE_BUSY_US = "pflow.node.busy_us", Attr, false, "µs pflow's own runtime threads spent running the attempt's code (its CPU time, plus preemption inside a poll); absent when 0";
    NODE_RSS_PEAK = "pflow.node.rss_peak_bytes", Attr, false, "pflow's peak RSS (process high-water mark) at the attempt's end, only when it rose since the last one read (the attempt before's end)";
    PROCESS_CPU_USER = "pflow.process.cpu.user_us", Attr, false, "`shell`: the command's user CPU time in µs (`wait4` rusage: `sh` and every descendant it waited for)";
    PROCESS_CPU_SYSTEM = "pflow.process.cpu.system_us", Attr, false, "`shell`: the command's system CPU time in µs";
    PROCESS_MEMORY_PEAK = "pflow.process.memory.peak_bytes", Attr, false, "`shell`: the peak RSS of the largest process in the command's waited-for tree (`ru_maxrss`)";
    HTTP_REQUEST_BODY_SIZE = "http.request.body.size", Attr, false, "bytes of request body sent";
    HTTP_RESPONSE_BODY_SIZE = "http.response.body.size", Attr, false, "bytes of response body received (`http` node)";
    HTTP_TIME_TO_FIRST_BYTE = "pflow.http.time_to_first_byte_s", Attr, false, "seconds from sending the request to the response head";
    LLM_OUTPUT_TOKENS_PER_S = "pflow.llm.output_tokens_per_s", Attr, false, "streaming: output tokens per second from the first chunk to the end of the stream";

    // Span events and their attributes (the debugging tier).
    EVENT_TEMPLATE_RESOLVED = "pflow.template.resolved", Event, false, "a template string resolved";
    EVENT_STORE_WRITE = "pflow.store.write", Event, false, "an output written to the shared store";
    EVENT_RETRY = "pflow.node.retry", Event, false, "another node attempt follows";
    EVENT_LLM_RETRY = "pflow.llm.retry", Event, false, "another LLM attempt follows";
    EVENT_OUTPUT_UNRESOLVED = "pflow.output.unresolved", Event, false, "a workflow output's source could not be resolved";
    EVENT_PLANNER_MALFORMED = "pflow.planner.malformed", Event, false, "a planner step's answer could not be parsed";
    EVENT_EXCEPTION = "exception", Event, false, "the span failed";
    TEMPLATE = "pflow.template", EventAttr, false, "the template text";
    PARAM = "pflow.param", EventAttr, false, "the param the template belongs to";
    STORE_KEY = "pflow.store.key", EventAttr, false, "`node.key` written";
    VALUE_PREVIEW = "pflow.value.preview", EventAttr, true, "a bounded, redacted preview of the value";
    VALUE_SIZE = "pflow.value.size", EventAttr, false, "the value's size in bytes";
    VALUE_TRUNCATED = "pflow.value.truncated", EventAttr, false, "the preview is cut";
    NODE_NEXT_ATTEMPT = "pflow.node.next_attempt", EventAttr, false, "the attempt that follows";
    NODE_WAIT_S = "pflow.node.wait_s", EventAttr, false, "seconds before it";
    LLM_NEXT_ATTEMPT = "pflow.llm.next_attempt", EventAttr, false, "the LLM attempt that follows";
    LLM_WAIT_S = "pflow.llm.wait_s", EventAttr, false, "seconds before it";
    OUTPUT = "pflow.output", EventAttr, false, "the workflow output concerned";
    MALFORMED_STEP = "pflow.planner.step", EventAttr, false, "the planner step whose answer was malformed (`pflow.planner.malformed`)";
    MALFORMED_ATTEMPT = "pflow.planner.attempt", EventAttr, false, "that answer's attempt, 1 for the first (`pflow.planner.malformed`)";
    REASON = "pflow.reason", EventAttr, false, "why";

    // Token and cost attributes (GenAI conventions; filled by the LLM call).
    USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens", Attr, false, "every prompt-side token";
    USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens", Attr, false, "every generated token";
    USAGE_CACHE_READ = "gen_ai.usage.cache_read.input_tokens", Attr, false, "cache reads (part of input)";
    USAGE_CACHE_CREATION = "gen_ai.usage.cache_creation.input_tokens", Attr, false, "cache writes (older spelling)";
    USAGE_CACHE_WRITE = "gen_ai.usage.cache_write.input_tokens", Attr, false, "cache writes (part of input)";
    USAGE_REASONING = "gen_ai.usage.reasoning.output_tokens", Attr, false, "reasoning share of output";
    USAGE_COST = "gen_ai.usage.cost", Attr, false, "alias of `pflow.cost.usd` for backends that read it";
    COST_USD = "pflow.cost.usd", Attr, false, "the call's cost in USD";
    USAGE_ESTIMATED = "pflow.usage.estimated", Attr, false, "tokens are an estimate";
    USAGE_SOURCE = "pflow.usage.source", Attr, false, "`provider`, `provider_stream`, `estimated`";
    USAGE_CACHE_WRITE_1H = "pflow.usage.cache_write_1h.input_tokens", Attr, false, "the 1-hour share of the cache writes (Anthropic)";
    COST_PRICE_KEY = "pflow.cost.price_key", Attr, false, "the table entry a cost was computed from";
    COST_CACHE_SAVINGS_USD = "pflow.cost.cache_savings_usd", Attr, false, "what cache reads saved versus the input price";
    COST_SOURCE = "pflow.cost.source", Attr, false, "where the cost came from";

    // LLM call spans.
    LLM_NODE_PATH = "pflow.llm.node_path", Attr, false, "the node path an LLM call belongs to";
    LLM_ATTEMPT = "pflow.llm.attempt", Attr, false, "1 for the first attempt";
    LLM_STREAM = "pflow.llm.stream", Attr, false, "streaming";
    LLM_API = "pflow.llm.api", Attr, false, "`chat` or `responses`";
    LLM_INPUT_BYTES = "pflow.llm.input_bytes", Attr, false, "size of prompt and system prompt";
    LLM_OUTPUT_BYTES = "pflow.llm.output_bytes", Attr, false, "size of the answer";
    GEN_AI_REQUEST_MODEL = "gen_ai.request.model", Attr, false, "the model asked for";
    GEN_AI_REQUEST_TEMPERATURE = "gen_ai.request.temperature", Attr, false, "temperature, when set";
    GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens", Attr, false, "max tokens, when set";
    GEN_AI_RESPONSE_MODEL = "gen_ai.response.model", Attr, false, "the model that answered";
    GEN_AI_RESPONSE_ID = "gen_ai.response.id", Attr, false, "the provider's response id";
    GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons", Attr, false, "the finish reasons, a string array";
    GEN_AI_REQUEST_STREAM = "gen_ai.request.stream", Attr, false, "the response was asked for as a stream";
    GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk", Attr, false, "streaming: seconds from the request to the first chunk";
    GEN_AI_OUTPUT_TYPE = "gen_ai.output.type", Attr, false, "`json` for a JSON-mode call";
    GEN_AI_PROVIDER_NAME = "gen_ai.provider.name", Attr, false, "the provider";
    GEN_AI_SYSTEM = "gen_ai.system", Attr, false, "the provider, deprecated name";
    GEN_AI_SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions", Attr, true, "the system prompt (JSON)";
    GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages", Attr, true, "the prompt (JSON)";
    GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages", Attr, true, "the answer (JSON)";
    SECTION = "pflow.section", Attr, false, "`workflow` or `planner`";

    // Planner spans.
    PLANNER_REQUEST = "pflow.planner.request", Attr, true, "the request text";
    PLANNER_PATH = "pflow.planner.path", Attr, false, "`A` (saved workflow reused) or `B` (generated)";
    PLANNER_ATTEMPTS = "pflow.planner.attempts", Attr, false, "generation attempts";
    PLANNER_WORKFLOW = "pflow.planner.workflow", Attr, false, "the planned workflow's name";
    PLANNER_IR = "pflow.planner.ir", Attr, true, "the planned workflow, as IR JSON";
    PLANNER_STEP = "pflow.planner.step", Attr, false, "the planner step";
    PLANNER_ATTEMPT = "pflow.planner.attempt", Attr, false, "1, 2, 3 (generate steps)";

    // Trace file and export.
    TRACE_TRUNCATED = "pflow.trace.truncated", Attr, false, "spans are missing from this file (size cap)";
    TRACE_DROPPED_SPANS = "pflow.trace.dropped_spans", Attr, false, "how many spans were not written";
    CONTENT_OMITTED = "pflow.content.omitted", Attr, false, "content attributes were dropped on export";

    // OpenTelemetry metric instruments.
    METRIC_TOKEN_USAGE = "gen_ai.client.token.usage", Metric, false, "tokens per LLM call";
    METRIC_OPERATION_DURATION = "gen_ai.client.operation.duration", Metric, false, "LLM call duration";
    METRIC_TIME_TO_FIRST_CHUNK = "gen_ai.client.operation.time_to_first_chunk", Metric, false, "streamed LLM calls: time to the first chunk";
    METRIC_INFERENCE_DURATION = "gen_ai.client.inference.duration", Metric, false, "opt-in: LLM call duration";
    METRIC_INFERENCE_INPUT_TOKENS = "gen_ai.client.inference.usage.input_tokens", Metric, false, "opt-in: input tokens per LLM call";
    METRIC_INFERENCE_OUTPUT_TOKENS = "gen_ai.client.inference.usage.output_tokens", Metric, false, "opt-in: output tokens per LLM call";
    METRIC_INFERENCE_TIME_TO_FIRST_CHUNK = "gen_ai.client.inference.time_to_first_chunk", Metric, false, "opt-in: streamed LLM calls: time to the first chunk";
    METRIC_LLM_COST = "pflow.llm.cost", Metric, false, "LLM cost in USD";
    METRIC_NODE_DURATION = "pflow.node.duration", Metric, false, "node duration";
    METRIC_RUNS = "pflow.runs", Metric, false, "runs by status";
    GEN_AI_TOKEN_TYPE = "gen_ai.token.type", Attr, false, "`input` or `output` (metric attribute)";
}

/// The semantic-conventions release pflow's names follow: the schema URL of
/// its tracer and meter scopes and its resource.
pub const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.41.0";

/// `host.arch` as the conventions spell it, from Rust's `std::env::consts::ARCH`.
pub fn host_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "x86",
        "arm" => "arm32",
        "powerpc" => "ppc32",
        "powerpc64" => "ppc64",
        "s390x" => "s390x",
        other => other,
    }
}

/// Every budget attribute starts with this (the metrics summary's `budget`).
pub const BUDGET_PREFIX: &str = "pflow.budget.";

// Values of `pflow.node.role`.
pub const ROLE_NODE: &str = "node";
pub const ROLE_BATCH: &str = "batch";
pub const ROLE_BATCH_ITEM: &str = "batch_item";

/// The root span's name ([`SPAN_RUN`]): the command alone, so every run of
/// it has the same name (span names must be low-cardinality).
pub fn run_span(command: &str) -> String {
    format!("pflow {command}")
}

/// A workflow span's name ([`SPAN_WORKFLOW`]).
pub fn workflow_span(name: &str) -> String {
    format!("invoke_workflow {name}")
}

/// A node span's name ([`SPAN_NODE`]): the node's id, the same for every
/// attempt and batch item of it.
pub fn node_span(id: &str) -> String {
    format!("node {id}")
}

/// A planner step span's name ([`SPAN_PLANNER_STEP`]): not `plan …`, so one
/// planning phase reads as one `plan` operation.
pub fn planner_step_span(step: &str) -> String {
    format!("planner {step}")
}

/// The planner's `gen_ai.agent.name` (the `{name}` of [`SPAN_PLANNER`]).
pub const PLANNER_AGENT: &str = "pflow";

/// An LLM call span's name ([`SPAN_LLM_CHAT`], [`SPAN_LLM_GENERATE`]): the operation, then the model.
pub fn llm_span(operation: &str, model: &str) -> String {
    format!("{operation} {model}")
}

/// The methods the HTTP conventions know; any other is `_OTHER`.
pub const HTTP_METHODS: &[&str] = &[
    "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE",
];

/// An HTTP client span's name ([`SPAN_HTTP_CLIENT`]): the method, or `HTTP`
/// for one the conventions do not know.
pub fn http_span(method: &str) -> &str {
    HTTP_METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("HTTP")
}

/// The registered name `name` of `kind`, if any (span names match their pattern).
pub fn lookup(kind: Kind, name: &str) -> Option<&'static Name> {
    REGISTRY.iter().find(|n| {
        n.kind == kind
            && (n.name == name
                || (kind == Kind::Span
                    && if n.name == SPAN_HTTP_CLIENT {
                        name == "HTTP" || HTTP_METHODS.contains(&name)
                    } else {
                        matches_pattern(n.name, name)
                    }))
    })
}

/// Whether `name` fits `pattern`, where each `{…}` stands for a non-empty value.
pub fn matches_pattern(pattern: &str, name: &str) -> bool {
    let mut pieces = pattern.split('{');
    let head = pieces.next().unwrap_or("");
    // The literal text after each placeholder.
    let literals: Vec<&str> = pieces
        .map(|p| p.split_once('}').map_or("", |(_, lit)| lit))
        .collect();
    if literals.is_empty() {
        return name == pattern;
    }
    name.strip_prefix(head)
        .is_some_and(|rest| after_placeholder(&literals, rest))
}

/// `s` starts with a placeholder's value, followed by `literals[0]`, and so on.
fn after_placeholder(literals: &[&str], s: &str) -> bool {
    match literals.split_first() {
        None => s.is_empty(),
        Some((lit, [])) => s.len() > lit.len() && s.ends_with(lit),
        Some((lit, rest)) => s
            .match_indices(lit)
            .any(|(i, _)| i > 0 && after_placeholder(rest, &s[i + lit.len()..])),
    }
}

/// Content attributes of `kind` (`Attr` on spans, `EventAttr` on events):
/// what the export policy drops without content capture.
pub fn content_attrs(kind: Kind) -> impl Iterator<Item = &'static str> {
    REGISTRY
        .iter()
        .filter(move |n| n.content && n.kind == kind)
        .map(|n| n.name)
}

/// Whether `key` is a content attribute of `kind`.
pub fn is_content(kind: Kind, key: &str) -> bool {
    content_attrs(kind).any(|n| n == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_span_builders_fit_their_patterns() {
        let mut seen = std::collections::HashSet::new();
        for n in REGISTRY {
            assert!(seen.insert((n.name, n.kind as u8)), "{} twice", n.name);
            assert!(!n.brief.is_empty(), "{} has no brief", n.name);
        }
        let built = [
            (SPAN_RUN, run_span("run")),
            (SPAN_WORKFLOW, workflow_span("hello-pipeline")),
            (SPAN_NODE, node_span("count")),
            (SPAN_PLANNER_STEP, planner_step_span("generate")),
            (SPAN_LLM_CHAT, llm_span("chat", "gpt-4o-mini")),
            (
                SPAN_LLM_GENERATE,
                llm_span("generate_content", "gemini-2.5-flash"),
            ),
        ];
        for (pattern, name) in built {
            assert!(matches_pattern(pattern, &name), "{name} vs {pattern}");
            assert!(lookup(Kind::Span, &name).is_some(), "{name}");
        }
        assert!(lookup(Kind::Span, SPAN_PLANNER).is_some());
        assert!(!matches_pattern(SPAN_NODE, "node"));
        assert!(!matches_pattern(SPAN_PLANNER, "plan pflow2"));
        assert_eq!(SPAN_PLANNER, format!("plan {PLANNER_AGENT}"));
        assert!(lookup(Kind::Span, "connecting to 127.0.0.1").is_none());
        assert_eq!(
            lookup(Kind::Span, "POST").map(|n| n.name),
            Some(SPAN_HTTP_CLIENT)
        );
        assert_eq!(http_span("FETCH"), "HTTP");
    }

    #[test]
    fn content_attributes_come_from_the_flag() {
        let spans: Vec<_> = content_attrs(Kind::Attr).collect();
        assert_eq!(
            spans,
            [
                NODE_PARAMS,
                NODE_PARAMS_DIGEST,
                GEN_AI_SYSTEM_INSTRUCTIONS,
                GEN_AI_INPUT_MESSAGES,
                GEN_AI_OUTPUT_MESSAGES,
                PLANNER_REQUEST,
                PLANNER_IR
            ]
        );
        assert!(is_content(Kind::EventAttr, VALUE_PREVIEW));
        assert!(!is_content(Kind::Attr, VALUE_PREVIEW));
        assert!(!is_content(Kind::Attr, COST_USD));
    }

    fn repo_file(rel: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// Names as code spells them: `pflow.x`, `gen_ai.x`, `error.type`, `exception.x`.
    fn spelled_names(text: &str) -> Vec<String> {
        static RE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
            regex::Regex::new(
                r"(?:^|[^A-Za-z0-9_:.])((?:pflow|gen_ai)(?:\.[a-z0-9_]+)+|error\.type|exception\.[a-z]+)",
            )
            .unwrap()
        });
        RE.captures_iter(text).map(|c| c[1].to_string()).collect()
    }

    /// Code outside attr.rs spells no name: it uses the constants. Unit-test
    /// modules (from `#[cfg(test)]` on) and comments may.
    #[test]
    fn no_name_is_spelled_outside_the_registry() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut stack = vec![root.clone()];
        let mut found = Vec::new();
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                // `tests.rs` files are test modules (`#[cfg(test)] mod tests;`).
                if path.extension().is_none_or(|e| e != "rs")
                    || path.ends_with("telemetry/attr.rs")
                    || path.file_name().is_some_and(|n| n == "tests.rs")
                {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                let code = text.split("#[cfg(test)]").next().unwrap_or("");
                for (i, line) in code.lines().enumerate() {
                    let line = line.split("//").next().unwrap_or("");
                    for name in spelled_names(line) {
                        found.push(format!("{}:{}: {name}", path.display(), i + 1));
                    }
                }
            }
        }
        assert!(
            found.is_empty(),
            "use the constants in src/telemetry/attr.rs: {found:#?}"
        );
        // The scanner does see names where they are spelled.
        let here = spelled_names(&repo_file("src/telemetry/attr.rs"));
        assert!(here.len() > 100, "{}", here.len());
        assert!(spelled_names(r#"span.record("pflow.node.id", 1); pflow.x.y = Empty"#).len() == 2);
    }

    /// docs/telemetry.md documents every registered name, and every name it
    /// documents is registered.
    #[test]
    fn docs_and_registry_agree() {
        let docs = repo_file("docs/telemetry.md");
        let undocumented: Vec<&str> = REGISTRY
            .iter()
            .map(|n| n.name)
            .filter(|name| {
                !docs.contains(&format!("`{name}`"))
                    && !docs.contains(&format!("`{name} "))
                    && !docs.contains(&format!(" {name}`"))
            })
            .collect();
        assert!(
            undocumented.is_empty(),
            "not in docs/telemetry.md: {undocumented:?}"
        );
        // `pflow.budget.*` names a family, not one name.
        let families = regex::Regex::new(r"[a-z_]+(?:\.[a-z0-9_]+)*\.\*").unwrap();
        let mut unknown: Vec<String> = spelled_names(&families.replace_all(&docs, ""))
            .into_iter()
            .filter(|name| !REGISTRY.iter().any(|n| n.name == name))
            .collect();
        unknown.dedup();
        assert!(
            unknown.is_empty(),
            "documented but not in attr.rs: {unknown:?}"
        );
    }
}
