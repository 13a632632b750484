//! Typed access to a node's resolved params, with errors that name the param.

use super::NodeError;
use serde_json::{Map, Value};

/// A node's params after template resolution.
#[derive(Debug, Clone, Default)]
pub struct Params(pub Map<String, Value>);

impl Params {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    /// The param as `pick` reads it (absent or null: `None`), or an error
    /// naming the param and saying it should be `expected`.
    fn typed<'a, T>(
        &'a self,
        name: &str,
        expected: &str,
        pick: impl FnOnce(&'a Value) -> Option<Result<T, NodeError>>,
    ) -> Result<Option<T>, NodeError> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        pick(v).map(|r| r.map(Some)).unwrap_or_else(|| {
            Err(NodeError::param(
                name,
                format!("expected {expected}, got {}", type_name(v)),
            ))
        })
    }

    pub fn str_opt(&self, name: &str) -> Result<Option<&str>, NodeError> {
        self.typed(name, "a string", |v| v.as_str().map(Ok))
    }

    pub fn str(&self, name: &str) -> Result<&str, NodeError> {
        self.str_opt(name)?
            .ok_or_else(|| NodeError::param(name, "is required"))
    }

    /// A string, or any other JSON value rendered as text (objects as pretty JSON).
    pub fn text_opt(&self, name: &str) -> Option<String> {
        self.get(name).map(|v| match v {
            Value::String(s) => s.clone(),
            Value::Object(_) | Value::Array(_) => {
                serde_json::to_string_pretty(v).unwrap_or_default()
            }
            other => other.to_string(),
        })
    }

    /// [`Params::text_opt`], moving a string out instead of copying it: a
    /// node that consumes a large value (`write-file`'s 50 MB `content`)
    /// holds it once, not twice.
    pub fn take_text(&mut self, name: &str) -> Option<String> {
        match self.0.get_mut(name) {
            Some(Value::String(s)) => Some(std::mem::take(s)),
            _ => self.text_opt(name),
        }
    }

    pub fn bool_or(&self, name: &str, default: bool) -> Result<bool, NodeError> {
        let b = self.typed(name, "true or false", |v| match v {
            Value::Bool(b) => Some(Ok(*b)),
            Value::String(s) if s == "true" || s == "false" => Some(Ok(s == "true")),
            _ => None,
        })?;
        Ok(b.unwrap_or(default))
    }

    pub fn f64_opt(&self, name: &str) -> Result<Option<f64>, NodeError> {
        let n = self.typed(name, "a number", |v| match v {
            Value::Number(n) => Some(Ok(n.as_f64())),
            Value::String(s) => Some(
                s.trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| NodeError::param(name, format!("expected a number, got `{s}`"))),
            ),
            _ => None,
        })?;
        Ok(n.flatten())
    }

    pub fn object_opt(&self, name: &str) -> Result<Option<&Map<String, Value>>, NodeError> {
        self.typed(name, "an object", |v| v.as_object().map(Ok))
    }
}

pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn typed_getters_name_the_param() {
        let p = Params(
            json!({"a": 1, "s": "x", "b": "true", "n": "2.5"})
                .as_object()
                .unwrap()
                .clone(),
        );
        assert_eq!(p.str("s").unwrap(), "x");
        let e = p.str("a").unwrap_err();
        assert!(
            e.message.contains("`a`") && e.message.contains("a number"),
            "{e}"
        );
        assert!(p.str("zz").unwrap_err().message.contains("required"));
        assert!(p.bool_or("b", false).unwrap());
        assert_eq!(p.f64_opt("n").unwrap(), Some(2.5));
        assert_eq!(p.text_opt("a").as_deref(), Some("1"));
        let mut t = Params(
            json!({"s": "text", "o": {"k": 1}, "n": null})
                .as_object()
                .unwrap()
                .clone(),
        );
        assert_eq!(t.take_text("s").as_deref(), Some("text"));
        assert_eq!(t.take_text("o").as_deref(), Some("{\n  \"k\": 1\n}"));
        assert_eq!((t.take_text("n"), t.take_text("missing")), (None, None));
    }
}
