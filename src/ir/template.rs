//! Template syntax: `${name}`, `${node.key.sub}`, `${node.items[0].name}`, the
//! `[*]` projection (`${fan.results[*].response}`: the rest of the path taken
//! from every item, as an array) and the `$${...}` escape for a literal `${`.
//!
//! Parsing lives with the IR because templates are part of the workflow format:
//! the validator checks references statically before anything runs, and the
//! runtime resolves the same parsed form against the shared store.
//!
//! ```
//! use pflow::ir::template::{Template, Segment};
//! let t = Template::parse("hello ${user.names[1]}!").unwrap();
//! let refs: Vec<_> = t.references().collect();
//! assert_eq!(refs[0].root, "user");
//! assert_eq!(refs[0].segments, vec![Segment::Key("names".into()), Segment::Index(1)]);
//! ```

use std::fmt;

/// One step of a reference path after its root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// `.key`
    Key(String),
    /// `[3]`
    Index(usize),
    /// `[*]`: every item of an array; the rest of the path applies to each.
    All,
}

/// A `${...}` reference: a root name (input, parameter or node id) and a path into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub root: String,
    pub segments: Vec<Segment>,
    /// The reference as written, `${...}` included, for messages and trace events.
    pub text: String,
}

impl Reference {
    /// The first key after the root, e.g. `response` in `${llm.response.text}`.
    pub fn first_key(&self) -> Option<&str> {
        match self.segments.first() {
            Some(Segment::Key(k)) => Some(k),
            _ => None,
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A piece of a template string.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Literal(String),
    Ref(Reference),
}

/// A parsed template string.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub parts: Vec<Part>,
}

/// Why a template string does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unterminated template starting at byte {offset}: `${{` has no closing `}}`")]
    Unterminated { offset: usize },
    #[error("empty template `${{}}` at byte {offset}")]
    Empty { offset: usize },
    #[error("invalid template `{text}`: {reason}")]
    Invalid { text: String, reason: String },
}

impl Template {
    /// Cheap pre-check: strings without `${` are plain literals and need no parsing.
    pub fn has_template(s: &str) -> bool {
        s.contains("${")
    }

    pub fn parse(s: &str) -> Result<Template, TemplateError> {
        let bytes = s.as_bytes();
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut i = 0;
        let mut lit_start = 0;
        while i < bytes.len() {
            if bytes[i] == b'$' && s[i..].starts_with("$${") {
                lit.push_str(&s[lit_start..i]);
                lit.push_str("${");
                i += 3;
                lit_start = i;
                continue;
            }
            if bytes[i] == b'$' && s[i..].starts_with("${") {
                lit.push_str(&s[lit_start..i]);
                let close = s[i + 2..]
                    .find('}')
                    .ok_or(TemplateError::Unterminated { offset: i })?;
                let inner = &s[i + 2..i + 2 + close];
                let text = &s[i..i + 3 + close];
                if inner.trim().is_empty() {
                    return Err(TemplateError::Empty { offset: i });
                }
                let reference = parse_reference(inner, text)?;
                if !lit.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut lit)));
                }
                parts.push(Part::Ref(reference));
                i += 3 + close;
                lit_start = i;
                continue;
            }
            i += 1;
        }
        lit.push_str(&s[lit_start..]);
        if !lit.is_empty() {
            parts.push(Part::Literal(lit));
        }
        Ok(Template { parts })
    }

    /// A template that is exactly one reference keeps the JSON type of the value.
    pub fn single_reference(&self) -> Option<&Reference> {
        match self.parts.as_slice() {
            [Part::Ref(r)] => Some(r),
            _ => None,
        }
    }

    pub fn references(&self) -> impl Iterator<Item = &Reference> {
        self.parts.iter().filter_map(|p| match p {
            Part::Ref(r) => Some(r),
            Part::Literal(_) => None,
        })
    }

    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn parse_reference(inner: &str, text: &str) -> Result<Reference, TemplateError> {
    let invalid = |reason: &str| TemplateError::Invalid {
        text: text.to_string(),
        reason: reason.to_string(),
    };
    let s = inner.trim();
    let mut chars = s.char_indices().peekable();
    let mut root_end = 0;
    while let Some(&(i, c)) = chars.peek() {
        if is_ident_char(c) {
            root_end = i + c.len_utf8();
            chars.next();
        } else {
            break;
        }
    }
    if root_end == 0 {
        return Err(invalid(
            "a reference starts with a name (letters, digits, `_`, `-`)",
        ));
    }
    let root = s[..root_end].to_string();
    let mut segments = Vec::new();
    let rest = &s[root_end..];
    let mut j = 0;
    let rb = rest.as_bytes();
    while j < rb.len() {
        match rb[j] {
            b'.' => {
                let start = j + 1;
                let mut end = start;
                while end < rb.len() && is_ident_char(rb[end] as char) {
                    end += 1;
                }
                if end == start {
                    return Err(invalid("expected a key name after `.`"));
                }
                segments.push(Segment::Key(rest[start..end].to_string()));
                j = end;
            }
            b'[' => {
                let close = rest[j..]
                    .find(']')
                    .ok_or_else(|| invalid("`[` has no closing `]`"))?;
                let idx_text = rest[j + 1..j + close].trim();
                if idx_text == "*" {
                    segments.push(Segment::All);
                } else {
                    let idx: usize = idx_text.parse().map_err(|_| {
                        invalid("array index must be a non-negative integer (`[0]`) or `[*]` for every item")
                    })?;
                    segments.push(Segment::Index(idx));
                }
                j += close + 1;
            }
            _ => {
                return Err(invalid(
                    "unexpected character; use `.key` or `[index]` after the name",
                ))
            }
        }
    }
    Ok(Reference {
        root,
        segments,
        text: text.to_string(),
    })
}

/// Calls `f` for every string in a node's params and batch items (paths as
/// [`walk_strings`] gives them, from the params or from the items).
pub fn walk_node_strings(n: &super::NodeIr, f: &mut dyn FnMut(&str, &str)) {
    let mut path = String::new();
    for (k, v) in &n.params {
        path.clear();
        path.push('.');
        path.push_str(k);
        walk_strings(v, &mut path, f);
    }
    if let Some(b) = &n.batch {
        walk_strings(&b.items, &mut String::new(), f);
    }
}

/// Calls `f` for every string inside a JSON value (object values and array
/// items, recursively) with its JSON path relative to the value.
pub fn walk_strings<'a>(
    value: &'a serde_json::Value,
    path: &mut String,
    f: &mut dyn FnMut(&str, &'a str),
) {
    match value {
        serde_json::Value::String(s) => f(path, s),
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk_strings(item, path, f);
                path.truncate(len);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let len = path.len();
                path.push('.');
                path.push_str(k);
                walk_strings(v, path, f);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_only() {
        let t = Template::parse("plain text").unwrap();
        assert!(t.is_literal());
        assert_eq!(t.parts, vec![Part::Literal("plain text".into())]);
    }

    #[test]
    fn single_reference_keeps_type() {
        let t = Template::parse("${a.b}").unwrap();
        let r = t.single_reference().unwrap();
        assert_eq!(r.root, "a");
        assert_eq!(r.segments, vec![Segment::Key("b".into())]);
        assert!(Template::parse(" ${a.b}")
            .unwrap()
            .single_reference()
            .is_none());
    }

    #[test]
    fn nested_paths_and_indexes() {
        let t = Template::parse("${n.items[0].name}").unwrap();
        let r = t.single_reference().unwrap();
        assert_eq!(
            r.segments,
            vec![
                Segment::Key("items".into()),
                Segment::Index(0),
                Segment::Key("name".into())
            ]
        );
        let t = Template::parse("${m[2][3]}").unwrap();
        assert_eq!(
            t.single_reference().unwrap().segments,
            vec![Segment::Index(2), Segment::Index(3)]
        );
    }

    #[test]
    fn projection() {
        let t = Template::parse("${fan.results[*].response}").unwrap();
        assert_eq!(
            t.single_reference().unwrap().segments,
            vec![
                Segment::Key("results".into()),
                Segment::All,
                Segment::Key("response".into())
            ]
        );
        assert!(Template::parse("${a[x*]}").is_err());
    }

    #[test]
    fn escape_is_literal() {
        let t = Template::parse("cost: $${price} and ${x}").unwrap();
        assert_eq!(
            t.parts[0],
            Part::Literal("cost: ${price} and ".into()),
            "{t:?}"
        );
        assert_eq!(t.references().count(), 1);
        let t = Template::parse("$${only}").unwrap();
        assert!(t.is_literal());
    }

    #[test]
    fn errors_are_specific() {
        assert!(matches!(
            Template::parse("a ${b"),
            Err(TemplateError::Unterminated { offset: 2 })
        ));
        assert!(matches!(
            Template::parse("${}"),
            Err(TemplateError::Empty { .. })
        ));
        for invalid in ["${a.}", "${a[x]}", "${a b}"] {
            assert!(
                matches!(Template::parse(invalid), Err(TemplateError::Invalid { .. })),
                "{invalid}"
            );
        }
    }

    #[test]
    fn multiple_references_and_unicode() {
        let t = Template::parse("é ${a} → ${b.c} ✓").unwrap();
        assert_eq!(t.references().count(), 2);
        assert_eq!(t.parts.len(), 5);
    }

    #[test]
    fn walk_strings_reports_paths() {
        let v = serde_json::json!({"a": ["x", {"b": "y"}], "n": 1});
        let mut seen = vec![];
        walk_strings(&v, &mut String::new(), &mut |p, s| {
            seen.push((p.to_string(), s.to_string()))
        });
        assert_eq!(
            seen,
            vec![
                (".a[0]".to_string(), "x".to_string()),
                (".a[1].b".to_string(), "y".to_string())
            ]
        );
    }
}
