//! `echo`: returns its params as outputs. Used by examples, tests and the
//! runtime benchmark, where a node must cost as little as possible.

use super::{opt, Node, NodeContext, NodeError, NodeOutput, NodeSpec, Params};
use futures::future::BoxFuture;

pub struct Echo;

static SPEC: NodeSpec = NodeSpec {
    name: "echo",
    description: "Return every param as an output of the same name. A string param `action` also picks the outgoing edge; a string param `fail` makes the node fail with that message (for testing error edges).",
    params: &[
        opt("*", "any", "any params; each becomes an output"),
        opt("action", "string", "action to return (default `default`)"),
        opt("fail", "string", "fail with this message instead of succeeding"),
    ],
    outputs: &[opt("*", "any", "the params, unchanged")],
    dynamic_outputs: true,
};

impl Node for Echo {
    fn spec(&self) -> &'static NodeSpec {
        &SPEC
    }

    fn run<'a>(
        &'a self,
        _ctx: &'a NodeContext,
        params: Params,
    ) -> BoxFuture<'a, Result<NodeOutput, NodeError>> {
        Box::pin(async move {
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
