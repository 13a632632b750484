//! Why a node failed: [`NodeErrorKind`] is the stable `error.type` of a node
//! span, the JSON `error.type` and what an error edge's `${node.error.type}`
//! reads. Built-in kinds are variants; a node type from outside pflow can
//! still name its own ([`NodeErrorKind::Other`]).

use serde::{Serialize, Serializer};

macro_rules! kinds {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// A node failure's kind.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum NodeErrorKind {
            $($(#[$doc])* $variant,)*
            /// A kind not built into pflow (custom node types).
            Other(String),
        }

        impl NodeErrorKind {
            /// Every built-in kind (for docs and tests).
            pub const BUILTIN: &'static [NodeErrorKind] = &[$(NodeErrorKind::$variant,)*];

            /// The stable snake_case name.
            pub fn as_str(&self) -> &str {
                match self {
                    $(NodeErrorKind::$variant => $name,)*
                    NodeErrorKind::Other(s) => s,
                }
            }

            /// The kind called `name` (a built-in one when it is one).
            pub fn named(name: &str) -> NodeErrorKind {
                match name {
                    $($name => NodeErrorKind::$variant,)*
                    other => NodeErrorKind::Other(other.to_string()),
                }
            }
        }
    };
}

kinds! {
    /// A param has the wrong type or is missing.
    InvalidParam => "invalid_param",
    /// A `${…}` template could not be resolved.
    TemplateError => "template_error",
    /// A nested workflow's inputs are invalid.
    InputError => "input_error",
    IoError => "io_error",
    EncodingError => "encoding_error",
    /// The destination exists and `overwrite` is off.
    Exists => "exists",
    SpawnError => "spawn_error",
    Timeout => "timeout",
    /// A shell command exited non-zero.
    ExitStatus => "exit_status",
    HttpError => "http_error",
    /// An HTTP response with status ≥ 400.
    HttpStatus => "http_status",
    ConnectError => "connect_error",
    InvalidRequest => "invalid_request",
    /// Batch items did not resolve to an array.
    BatchItems => "batch_items",
    Interrupted => "interrupted",
    /// The node panicked (a bug; the run goes on to the error edge).
    Panic => "panic",
    Internal => "internal",
    /// The `echo` node's `fail` param.
    EchoFail => "echo_fail",
    MissingApiKey => "missing_api_key",
    Unauthorized => "unauthorized",
    RateLimited => "rate_limited",
    ServerError => "server_error",
    BadRequest => "bad_request",
    StreamError => "stream_error",
    InvalidResponse => "invalid_response",
    UnknownModel => "unknown_model",
    ImageError => "image_error",
    /// A call's cost overflowed to infinity (a huge price × a huge count).
    CostOverflow => "cost_overflow",
    /// `--max-cost` / `--max-tokens-total` stopped the call.
    BudgetExceeded => "budget_exceeded",
    /// `--max-cost` and a model with no known price.
    BudgetUnpriced => "budget_unpriced",
}

impl NodeErrorKind {
    /// Whether the budget guard stopped the node.
    pub fn is_budget(&self) -> bool {
        matches!(
            self,
            NodeErrorKind::BudgetExceeded | NodeErrorKind::BudgetUnpriced
        )
    }
}

impl std::fmt::Display for NodeErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for NodeErrorKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl From<&str> for NodeErrorKind {
    fn from(s: &str) -> Self {
        NodeErrorKind::named(s)
    }
}

impl From<String> for NodeErrorKind {
    fn from(s: String) -> Self {
        NodeErrorKind::named(&s)
    }
}

impl PartialEq<&str> for NodeErrorKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_kinds_are_kept() {
        for k in NodeErrorKind::BUILTIN {
            assert_eq!(&NodeErrorKind::named(k.as_str()), k);
        }
        assert_eq!(
            NodeErrorKind::named("flaky"),
            NodeErrorKind::Other("flaky".into())
        );
        assert_eq!(
            serde_json::to_value(NodeErrorKind::ExitStatus).unwrap(),
            serde_json::json!("exit_status")
        );
        assert!(NodeErrorKind::named(crate::llm::budget::KIND_UNPRICED).is_budget());
    }
}
