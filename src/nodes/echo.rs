//! `echo`: returns its params as outputs. Used by examples, tests and the
//! runtime benchmark, where a node must cost as little as possible.
//!
//! Debug builds only (the test binary): a string param `debug_panic` makes
//! the node panic with that message (other values are echoed), so tests can
//! check that the runtime contains a panicking node (error type `panic`,
//! trace saved). Release builds echo it like any other param.

use super::{specs, Node, NodeContext, NodeError, NodeFuture, NodeOutput, NodeSpec, Params};

pub struct Echo;

impl Node for Echo {
    fn spec(&self) -> &'static NodeSpec {
        &specs::ECHO
    }

    fn run<'a>(&'a self, _ctx: &'a NodeContext, params: Params) -> NodeFuture<'a> {
        Box::pin(async move {
            #[cfg(debug_assertions)]
            if let Some(serde_json::Value::String(msg)) = params.get("debug_panic") {
                panic!("{msg}");
            }
            if let Some(msg) = params.str_opt("fail")? {
                return Err(NodeError::new("echo_fail", msg));
            }
            let action = params.str_opt("action")?.map(str::to_string);
            Ok(NodeOutput {
                outputs: params.0,
                action,
            })
        })
    }
}
