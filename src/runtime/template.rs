//! Template resolution against the shared store.
//!
//! Params are compiled once ([`CompiledValue`]): subtrees without `${` stay
//! literal and cost nothing to resolve. A param that is exactly one template
//! keeps the JSON type of what it names; inside longer text the value is
//! rendered (objects and arrays as compact JSON). A string that holds JSON
//! can be traversed into: `${http.response.items[0]}` works when `response`
//! is the JSON text of an object.

use crate::ir::template::{Part, Reference, Segment, Template, TemplateError};
use serde_json::{Map, Value};
use std::borrow::Cow;

/// A param value with its templates parsed.
#[derive(Debug, Clone)]
pub enum CompiledValue {
    Literal(Value),
    Template(Template),
    Array(Vec<CompiledValue>),
    Object(Vec<(String, CompiledValue)>),
}

impl CompiledValue {
    pub fn compile(v: &Value) -> Result<CompiledValue, TemplateError> {
        if !contains_template(v) {
            return Ok(CompiledValue::Literal(v.clone()));
        }
        Ok(match v {
            Value::String(s) => {
                let t = Template::parse(s)?;
                if t.is_literal() {
                    // Only `$${` escapes: the literal is the unescaped text.
                    CompiledValue::Literal(Value::String(render_literal(&t)))
                } else {
                    CompiledValue::Template(t)
                }
            }
            Value::Array(items) => CompiledValue::Array(
                items
                    .iter()
                    .map(CompiledValue::compile)
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(m) => CompiledValue::Object(
                m.iter()
                    .map(|(k, v)| Ok((k.clone(), CompiledValue::compile(v)?)))
                    .collect::<Result<_, TemplateError>>()?,
            ),
            other => CompiledValue::Literal(other.clone()),
        })
    }

    pub fn is_literal(&self) -> bool {
        matches!(self, CompiledValue::Literal(_))
    }

    /// Resolves the value; `on_resolved` sees each template string and its result.
    pub fn resolve(
        &self,
        scope: &Scope<'_>,
        on_resolved: &mut dyn FnMut(&Template, &Value),
    ) -> Result<Value, ResolveError> {
        match self {
            CompiledValue::Literal(v) => Ok(v.clone()),
            CompiledValue::Template(t) => {
                let v = resolve_template(t, scope)?;
                on_resolved(t, &v);
                Ok(v)
            }
            CompiledValue::Array(items) => Ok(Value::Array(
                items
                    .iter()
                    .map(|i| i.resolve(scope, on_resolved))
                    .collect::<Result<_, _>>()?,
            )),
            CompiledValue::Object(entries) => {
                let mut m = Map::with_capacity(entries.len());
                for (k, v) in entries {
                    m.insert(k.clone(), v.resolve(scope, on_resolved)?);
                }
                Ok(Value::Object(m))
            }
        }
    }
}

fn render_literal(t: &Template) -> String {
    t.parts
        .iter()
        .map(|p| match p {
            Part::Literal(s) => s.as_str(),
            Part::Ref(_) => "",
        })
        .collect()
}

fn contains_template(v: &Value) -> bool {
    match v {
        Value::String(s) => Template::has_template(s),
        Value::Array(items) => items.iter().any(contains_template),
        Value::Object(m) => m.values().any(contains_template),
        _ => false,
    }
}

/// Where names resolve: item-local names first (`item`, `__index__`), then the store root.
pub struct Scope<'a> {
    pub store: &'a Map<String, Value>,
    pub locals: &'a [(&'a str, &'a Value)],
}

/// A template that named something that is not there (at run time).
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot resolve `{template}`: {reason}")]
pub struct ResolveError {
    pub template: String,
    pub reason: String,
}

pub fn resolve_template(t: &Template, scope: &Scope<'_>) -> Result<Value, ResolveError> {
    if let Some(r) = t.single_reference() {
        return lookup(r, scope).map(Cow::into_owned);
    }
    let mut out = String::new();
    for p in &t.parts {
        match p {
            Part::Literal(s) => out.push_str(s),
            Part::Ref(r) => render_into(lookup(r, scope)?.as_ref(), &mut out),
        }
    }
    Ok(Value::String(out))
}

/// Text form of a value inside a longer string.
pub fn render_into(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => out.push_str(s),
        Value::Null => out.push_str("null"),
        other => out.push_str(&other.to_string()),
    }
}

/// Follows a reference's path; strings holding JSON are parsed on the way.
pub fn lookup<'s>(r: &Reference, scope: &'s Scope<'_>) -> Result<Cow<'s, Value>, ResolveError> {
    let root = scope
        .locals
        .iter()
        .find(|(n, _)| *n == r.root)
        .map(|(_, v)| *v)
        .or_else(|| scope.store.get(&r.root))
        .ok_or_else(|| ResolveError {
            template: r.text.clone(),
            reason: format!(
                "`{}` is not set (an input that was not given, or a node that has not run)",
                r.root
            ),
        })?;
    walk(Cow::Borrowed(root), &r.segments, r.root.clone()).map_err(|reason| ResolveError {
        template: r.text.clone(),
        reason,
    })
}

/// Follows `segs` from `cur` (reached by the path `walked`); `[*]` maps the
/// rest of the path over every item.
fn walk<'s>(
    mut cur: Cow<'s, Value>,
    segs: &[Segment],
    mut walked: String,
) -> Result<Cow<'s, Value>, String> {
    for (n, seg) in segs.iter().enumerate() {
        if let Value::String(s) = cur.as_ref() {
            let t = s.trim_start();
            if t.starts_with('{') || t.starts_with('[') {
                if let Ok(parsed) = serde_json::from_str::<Value>(s) {
                    cur = Cow::Owned(parsed);
                }
            }
        }
        if let Segment::All = seg {
            let items: Vec<Value> = match cur {
                Cow::Borrowed(Value::Array(a)) => a.clone(),
                Cow::Owned(Value::Array(a)) => a,
                c => {
                    return Err(format!(
                        "`{walked}[*]`: `{walked}` is not an array (it is {})",
                        describe(&c)
                    ))
                }
            };
            let rest = &segs[n + 1..];
            let mapped = items
                .into_iter()
                .enumerate()
                .map(|(i, item)| {
                    walk(Cow::Owned(item), rest, format!("{walked}[{i}]")).map(Cow::into_owned)
                })
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Cow::Owned(Value::Array(mapped)));
        }
        let next = match (seg, cur) {
            (Segment::Key(k), Cow::Borrowed(Value::Object(m))) => m.get(k).map(Cow::Borrowed),
            (Segment::Key(k), Cow::Owned(Value::Object(mut m))) => m.remove(k).map(Cow::Owned),
            (Segment::Index(i), Cow::Borrowed(Value::Array(a))) => a.get(*i).map(Cow::Borrowed),
            (Segment::Index(i), Cow::Owned(Value::Array(mut a))) if *i < a.len() => {
                Some(Cow::Owned(a.swap_remove(*i)))
            }
            (seg, c) => {
                return Err(format!(
                    "`{walked}` {} (it is {})",
                    missing(seg),
                    describe(&c)
                ));
            }
        };
        cur = next.ok_or_else(|| format!("`{walked}` {}", missing(seg)))?;
        match seg {
            Segment::Key(k) => {
                walked.push('.');
                walked.push_str(k);
            }
            Segment::Index(i) => walked.push_str(&format!("[{i}]")),
            Segment::All => {}
        }
    }
    Ok(cur)
}

fn missing(seg: &Segment) -> String {
    match seg {
        Segment::Key(k) => format!("has no key `{k}`"),
        Segment::Index(i) => format!("has no item [{i}]"),
        Segment::All => "has no items".into(),
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Object(m) => format!(
            "an object with keys {}",
            m.keys()
                .take(8)
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Array(a) => format!("an array of {} items", a.len()),
        Value::String(_) => "a string".into(),
        Value::Number(_) => "a number".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Null => "null".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store() -> Map<String, Value> {
        json!({
            "name": "Ada",
            "n": {"count": 3, "items": [{"name": "x"}, {"name": "y"}], "raw": "{\"deep\": {\"v\": [10, 20]}}"},
            "m": {"obj": {"a": 1}}
        })
        .as_object()
        .unwrap()
        .clone()
    }

    fn resolve(s: &str) -> Result<Value, ResolveError> {
        let st = store();
        let item = json!("it");
        let idx = json!(4);
        let locals = [("item", &item), ("__index__", &idx)];
        let scope = Scope {
            store: &st,
            locals: &locals,
        };
        CompiledValue::compile(&json!(s))
            .unwrap()
            .resolve(&scope, &mut |_, _| {})
    }

    /// Each template resolves to its value.
    fn assert_resolves(cases: &[(&str, Value)]) {
        for (t, want) in cases {
            assert_eq!(&resolve(t).unwrap(), want, "{t}");
        }
    }

    #[test]
    fn single_template_keeps_type() {
        assert_resolves(&[
            ("${n.count}", json!(3)),
            ("${m.obj}", json!({"a": 1})),
            ("${n.items}", json!([{"name": "x"}, {"name": "y"}])),
        ]);
    }

    #[test]
    fn text_rendering() {
        assert_resolves(&[
            (
                "hi ${name}, ${n.count} ${m.obj}",
                json!("hi Ada, 3 {\"a\":1}"),
            ),
            ("${item}#${__index__}", json!("it#4")),
        ]);
    }

    #[test]
    fn paths_indexes_and_json_strings() {
        assert_resolves(&[
            ("${n.items[1].name}", json!("y")),
            ("${n.raw.deep.v[1]}", json!(20)),
        ]);
    }

    #[test]
    fn projection_maps_every_item() {
        assert_eq!(resolve("${n.items[*].name}").unwrap(), json!(["x", "y"]));
        assert_eq!(resolve("${n.raw.deep.v[*]}").unwrap(), json!([10, 20]));
        let e = resolve("${n.items[*].nope}").unwrap_err();
        assert!(e.reason.contains("`n.items[0]` has no key `nope`"), "{e}");
        let e = resolve("${n.count[*]}").unwrap_err();
        assert!(e.reason.contains("not an array"), "{e}");
    }

    #[test]
    fn escapes_stay_literal() {
        assert_resolves(&[
            ("$${name} is ${name}", json!("${name} is Ada")),
            ("$${name}", json!("${name}")),
        ]);
    }

    #[test]
    fn missing_paths_are_explained() {
        for (t, why) in [
            ("${n.nope}", "`n` has no key `nope`"),
            ("${n.items[5]}", "no item [5]"),
            ("${n.count.x}", "a number"),
            ("${ghost}", "not set"),
        ] {
            let e = resolve(t).unwrap_err();
            assert!(e.reason.contains(why), "{e}");
        }
    }

    #[test]
    fn nested_structures_resolve_everywhere() {
        let st = store();
        let scope = Scope {
            store: &st,
            locals: &[],
        };
        let cv = CompiledValue::compile(
            &json!({"a": ["${name}", 1, {"b": "${n.count}"}], "c": "plain"}),
        )
        .unwrap();
        let mut seen = 0;
        let v = cv.resolve(&scope, &mut |_, _| seen += 1).unwrap();
        assert_eq!(v, json!({"a": ["Ada", 1, {"b": 3}], "c": "plain"}));
        assert_eq!(seen, 2);
    }
}
