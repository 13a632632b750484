//! `transform`: reshapes JSON with a jq filter, run by jaq (a jq
//! implementation in Rust). Its `result` is typed JSON: `split("\n")` gives
//! an array, `length` a number, so later nodes and batches get real values
//! instead of text to parse.
//!
//! The filter runs on a blocking thread under a timeout: a filter that never
//! ends (`[repeat(1)]`) fails the node instead of stalling the run.

use super::{specs, Node, NodeContext, NodeError, NodeFuture, NodeOutput, NodeSpec, Params};
use jaq_core::load::{Arena, File, Loader};
use jaq_core::{data, unwrap_valr, Compiler, Ctx, Vars};
use jaq_json::Val;
use serde_json::{Map, Value};

pub struct Transform;

const DEFAULT_TIMEOUT_S: f64 = 30.0;

type Filter = jaq_core::compile::Filter<jaq_core::Native<data::JustLut<Val>>>;

/// Why a filter does not compile, with the column it stops at.
pub fn check_filter(code: &str) -> Result<(), String> {
    compile(code).map(|_| ())
}

fn compile(code: &str) -> Result<Filter, String> {
    let defs = jaq_core::defs()
        .chain(jaq_std::defs())
        .chain(jaq_json::defs());
    let funs = jaq_core::funs()
        .chain(jaq_std::funs())
        .chain(jaq_json::funs());
    let loader = Loader::new(defs);
    let arena = Arena::default();
    let column = |at: &str| {
        // `at` is a slice of `code`: its offset is where the error is.
        let offset = (at.as_ptr() as usize).saturating_sub(code.as_ptr() as usize);
        code.get(..offset).map_or(1, |s| s.chars().count() + 1)
    };
    let modules = loader
        .load(&arena, File { code, path: () })
        .map_err(|errs| {
            let mut msgs = Vec::new();
            for (_, e) in errs {
                use jaq_core::load::Error;
                match e {
                    Error::Io(v) => msgs.extend(v.into_iter().map(|(_, m)| m)),
                    Error::Lex(v) => msgs.extend(v.into_iter().map(|(exp, at)| {
                        use jaq_core::load::lex::Expect;
                        let what = match exp {
                            Expect::Delim(d) => format!("a match for `{d}`"),
                            other => other.as_str().to_string(),
                        };
                        format!("expected {what} at column {}", column(at))
                    })),
                    Error::Parse(v) => msgs.extend(v.into_iter().map(|(exp, at)| {
                        let got = if at.is_empty() {
                            "the end".to_string()
                        } else {
                            format!("`{}`", at.chars().take(12).collect::<String>())
                        };
                        format!(
                            "expected {} at column {}, found {got}",
                            exp.as_str(),
                            column(at)
                        )
                    })),
                }
            }
            format!("invalid jq filter: {}", msgs.join("; "))
        })?;
    Compiler::default()
        .with_funs(funs)
        .compile(modules)
        .map_err(|errs| {
            let msgs: Vec<String> = errs
                .into_iter()
                .flat_map(|(_, v)| v)
                .map(|(name, undef)| {
                    format!(
                        "unknown {} `{name}` at column {}",
                        undef.as_str(),
                        column(name)
                    )
                })
                .collect();
            format!("invalid jq filter: {}", msgs.join("; "))
        })
}

/// Runs `code` on `input`: one value out (none is `null`; several is an error).
pub fn apply(code: &str, input: &Value) -> Result<Value, String> {
    let filter = compile(code)?;
    let text = serde_json::to_string(input).map_err(|e| e.to_string())?;
    let input = jaq_json::read::parse_single(text.as_bytes())
        .map_err(|e| format!("input is not JSON: {e}"))?;
    let ctx = Ctx::<data::JustLut<Val>>::new(&filter.lut, Vars::new([]));
    let mut out = filter.id.run((ctx, input)).map(unwrap_valr);
    let first = match out.next() {
        None => return Ok(Value::Null),
        Some(r) => r.map_err(|e| format!("filter failed: {e}"))?,
    };
    if let Some(second) = out.next() {
        second.map_err(|e| format!("filter failed: {e}"))?;
        return Err(
            "the filter yields more than one value; collect them into an array with `[ … ]`".into(),
        );
    }
    Ok(to_json(&first))
}

/// jaq's value as JSON: byte strings become text, NaN and infinities `null`
/// (as jq prints them), non-string keys their JSON text.
fn to_json(v: &Val) -> Value {
    match v {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(n) => {
            let text = n.to_string();
            match serde_json::from_str::<Value>(&text) {
                Ok(v @ Value::Number(_)) => v,
                _ => Value::Null,
            }
        }
        Val::TStr(b) | Val::BStr(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
        Val::Arr(a) => Value::Array(a.iter().map(to_json).collect()),
        Val::Obj(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Val::TStr(b) | Val::BStr(b) => String::from_utf8_lossy(b).into_owned(),
                        other => to_json(other).to_string(),
                    };
                    (key, to_json(v))
                })
                .collect::<Map<_, _>>(),
        ),
    }
}

impl Node for Transform {
    fn spec(&self) -> &'static NodeSpec {
        &specs::TRANSFORM
    }

    fn run<'a>(&'a self, _ctx: &'a NodeContext, params: Params) -> NodeFuture<'a> {
        Box::pin(async move {
            let filter = params.str("filter")?.to_string();
            let input = params.0.get("input").cloned().unwrap_or(Value::Null);
            let timeout = params.f64_opt("timeout")?.unwrap_or(DEFAULT_TIMEOUT_S);
            if !(timeout > 0.0 && timeout.is_finite()) {
                return Err(NodeError::param(
                    "timeout",
                    "must be a positive number of seconds",
                ));
            }
            let work = tokio::task::spawn_blocking(move || apply(&filter, &input));
            let result = match tokio::time::timeout(
                crate::limits::secs(timeout, crate::limits::MAX_TIMEOUT),
                work,
            )
            .await
            {
                Err(_) => {
                    return Err(NodeError::new(
                        "timeout",
                        format!("the filter did not finish within {timeout}s"),
                    ))
                }
                Ok(Err(e)) => return Err(NodeError::new("panic", format!("filter panicked: {e}"))),
                Ok(Ok(r)) => r.map_err(|m| NodeError::new("transform_error", m))?,
            };
            let mut outputs = Map::new();
            outputs.insert("result".into(), result);
            Ok(NodeOutput::new(outputs))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn typed_results() {
        assert_eq!(
            apply(
                r#"split("\n") | map(select(length > 0))"#,
                &json!("a b\n\nc\n")
            )
            .unwrap(),
            json!(["a b", "c"])
        );
        assert_eq!(
            apply(
                r#"[splits("\\s+") | select(length > 0)] | length"#,
                &json!(" one  two three ")
            )
            .unwrap(),
            json!(3)
        );
        assert_eq!(
            apply(".a.b", &json!({"a": {"b": [1, 2.5]}})).unwrap(),
            json!([1, 2.5])
        );
        assert_eq!(
            apply("fromjson", &json!("{\"x\": 1}")).unwrap(),
            json!({"x": 1})
        );
        assert_eq!(apply("empty", &json!(1)).unwrap(), Value::Null);
        assert_eq!(
            apply("1 / 0 | isinfinite", &json!(null)).unwrap(),
            json!(true)
        );
        assert_eq!(
            apply("{(\"k\"): 1, b: .}", &json!(2)).unwrap(),
            json!({"k": 1, "b": 2})
        );
    }

    #[test]
    fn errors_are_explained() {
        let e = apply(".[]", &json!([1, 2])).unwrap_err();
        assert!(e.contains("more than one value"), "{e}");
        let e = check_filter("map(.x").unwrap_err();
        assert!(e.starts_with("invalid jq filter"), "{e}");
        let e = check_filter(".a | nosuchfn").unwrap_err();
        assert!(e.contains("unknown filter `nosuchfn` at column 6"), "{e}");
        let e = apply(".a", &json!([1])).unwrap_err();
        assert!(e.starts_with("filter failed"), "{e}");
    }
}
