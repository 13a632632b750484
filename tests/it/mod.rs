mod common;
mod errors;
mod examples;
mod llm_node;
mod providers;
mod run;
mod signals;
mod trace;
