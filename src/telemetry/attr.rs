//! Every span, attribute and event name pflow emits, in one place, so no name
//! is typed twice. OpenTelemetry semantic-convention names are used where one
//! exists (GenAI conventions, `error.type`, `exception.*`); pflow's own carry a
//! `pflow.` prefix. `docs/telemetry.md` documents each of them.

// Semantic-convention names.
pub const GEN_AI_OPERATION_NAME: &str = "gen_ai.operation.name";
pub const ERROR_TYPE: &str = "error.type";
pub const EXCEPTION_TYPE: &str = "exception.type";
pub const EXCEPTION_MESSAGE: &str = "exception.message";
/// Exported instead of `exception.message` when content capture is off.
pub const EXCEPTION_MESSAGE_SIZE: &str = "pflow.exception.message.size";
pub const SERVICE_NAME: &str = "service.name";
pub const SERVICE_VERSION: &str = "service.version";

// Run (root span).
pub const RUN_STATUS: &str = "pflow.run.status";
pub const RUN_COMMAND: &str = "pflow.run.command";
pub const RUN_EXIT_CODE: &str = "pflow.run.exit_code";

// Budget facts (root span, only when `--max-cost` / `--max-tokens-total` is set).
pub const BUDGET_MAX_COST_USD: &str = "pflow.budget.max_cost_usd";
pub const BUDGET_MAX_TOKENS_TOTAL: &str = "pflow.budget.max_tokens_total";
pub const BUDGET_ALLOW_UNPRICED: &str = "pflow.budget.allow_unpriced";
pub const BUDGET_SPENT_USD: &str = "pflow.budget.spent_usd";
pub const BUDGET_TOKENS_USED: &str = "pflow.budget.tokens_used";
pub const BUDGET_EXCEEDED: &str = "pflow.budget.exceeded";
/// `before_call` or `after_call`.
pub const BUDGET_STOPPED: &str = "pflow.budget.stopped";
/// `max_cost`, `max_tokens_total` or `unpriced_model`.
pub const BUDGET_REASON: &str = "pflow.budget.reason";
pub const BUDGET_NODE: &str = "pflow.budget.node";
pub const BUDGET_MODEL: &str = "pflow.budget.model";
pub const BUDGET_NEXT_CALL_ESTIMATE_USD: &str = "pflow.budget.next_call_estimate_usd";
pub const BUDGET_NEXT_CALL_ESTIMATE_TOKENS: &str = "pflow.budget.next_call_estimate_tokens";

// Workflow spans (`invoke_workflow {name}`).
pub const WORKFLOW_NAME: &str = "pflow.workflow.name";
pub const WORKFLOW_FILE: &str = "pflow.workflow.file";
pub const WORKFLOW_DEPTH: &str = "pflow.workflow.depth";
pub const WORKFLOW_NODE_COUNT: &str = "pflow.workflow.node_count";
pub const WORKFLOW_STEPS: &str = "pflow.workflow.steps";
pub const WORKFLOW_STATUS: &str = "pflow.workflow.status";

// Node spans (`node {path}`).
pub const NODE_ID: &str = "pflow.node.id";
pub const NODE_TYPE: &str = "pflow.node.type";
pub const NODE_PATH: &str = "pflow.node.path";
pub const NODE_ROLE: &str = "pflow.node.role";
pub const NODE_ATTEMPT: &str = "pflow.node.attempt";
pub const NODE_MAX_ATTEMPTS: &str = "pflow.node.max_attempts";
pub const NODE_ACTION: &str = "pflow.node.action";
pub const NODE_STATUS: &str = "pflow.node.status";
pub const NODE_PARAMS: &str = "pflow.node.params";
pub const BATCH_INDEX: &str = "pflow.batch.index";
pub const BATCH_SIZE: &str = "pflow.batch.size";
pub const BATCH_PARALLEL: &str = "pflow.batch.parallel";
pub const BATCH_MAX_CONCURRENT: &str = "pflow.batch.max_concurrent";
pub const BATCH_FAILED: &str = "pflow.batch.failed";

// Values of `pflow.node.role`.
pub const ROLE_NODE: &str = "node";
pub const ROLE_BATCH: &str = "batch";
pub const ROLE_BATCH_ITEM: &str = "batch_item";

// Span event names and their attributes (the debugging tier).
pub const EVENT_TEMPLATE_RESOLVED: &str = "pflow.template.resolved";
pub const EVENT_STORE_WRITE: &str = "pflow.store.write";
pub const EVENT_RETRY: &str = "pflow.node.retry";
pub const EVENT_EXCEPTION: &str = "exception";
pub const TEMPLATE: &str = "pflow.template";
pub const PARAM: &str = "pflow.param";
pub const STORE_KEY: &str = "pflow.store.key";
pub const VALUE_PREVIEW: &str = "pflow.value.preview";
pub const VALUE_SIZE: &str = "pflow.value.size";
pub const VALUE_TRUNCATED: &str = "pflow.value.truncated";

// Token and cost attributes (GenAI conventions; filled by the LLM node).
pub const USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
pub const USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
pub const USAGE_CACHE_READ: &str = "gen_ai.usage.cache_read.input_tokens";
pub const USAGE_CACHE_CREATION: &str = "gen_ai.usage.cache_creation.input_tokens";
pub const USAGE_CACHE_WRITE: &str = "gen_ai.usage.cache_write.input_tokens";
pub const USAGE_REASONING: &str = "gen_ai.usage.reasoning.output_tokens";
pub const COST_USD: &str = "pflow.cost.usd";
pub const USAGE_ESTIMATED: &str = "pflow.usage.estimated";
/// Where the token counts came from: `provider`, `provider_stream`, `estimated`.
pub const USAGE_SOURCE: &str = "pflow.usage.source";
/// The 1-hour share of the cache writes (Anthropic), when there is one.
pub const USAGE_CACHE_WRITE_1H: &str = "pflow.usage.cache_write_1h.input_tokens";
/// The table entry a cost was computed from.
pub const COST_PRICE_KEY: &str = "pflow.cost.price_key";
/// What cache reads saved versus the input price, in USD (0 when nothing was cached).
pub const COST_CACHE_SAVINGS_USD: &str = "pflow.cost.cache_savings_usd";
/// Where the cost came from: `table`, `override`, `provider`, `free`, `local`, `unpriced`.
pub const COST_SOURCE: &str = "pflow.cost.source";
/// The node path an LLM call belongs to.
pub const LLM_NODE_PATH: &str = "pflow.llm.node_path";
pub const GEN_AI_REQUEST_MODEL: &str = "gen_ai.request.model";
pub const GEN_AI_RESPONSE_MODEL: &str = "gen_ai.response.model";
pub const GEN_AI_PROVIDER_NAME: &str = "gen_ai.provider.name";
/// Which part of the run a span belongs to: `workflow` or `planner`.
pub const SECTION: &str = "pflow.section";

// Planner spans (`plan pflow`, `plan {step}`).
/// The request text (content: kept local unless capture is on).
pub const PLANNER_REQUEST: &str = "pflow.planner.request";
pub const PLANNER_PATH: &str = "pflow.planner.path";
pub const PLANNER_ATTEMPTS: &str = "pflow.planner.attempts";
pub const PLANNER_STEP: &str = "pflow.planner.step";
