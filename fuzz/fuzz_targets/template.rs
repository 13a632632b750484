//! Template parsing and resolution against arbitrary store contents.
//!
//! Input: `template text` NUL `store JSON`. When the store part is not a JSON
//! object, the store is built from the bytes with `arbitrary` instead, so both
//! hand-written seeds and raw mutations reach resolution.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use pflow::ir::template::Template;
use pflow::runtime::template::{lookup, resolve_template, CompiledValue, Scope};
use serde_json::{Map, Value};

/// A JSON value built from fuzz bytes, a few levels deep.
fn value(u: &mut Unstructured<'_>, depth: u32) -> arbitrary::Result<Value> {
    let kind = if depth == 0 {
        u.int_in_range(0..=4)?
    } else {
        u.int_in_range(0..=6)?
    };
    Ok(match kind {
        0 => Value::Null,
        1 => Value::Bool(bool::arbitrary(u)?),
        2 => Value::from(i64::arbitrary(u)?),
        3 => serde_json::Number::from_f64(f64::arbitrary(u)?).map_or(Value::Null, Value::Number),
        4 => Value::String(String::arbitrary(u)?),
        5 => {
            let n = u.int_in_range(0..=4)?;
            Value::Array(
                (0..n)
                    .map(|_| value(u, depth - 1))
                    .collect::<Result<_, _>>()?,
            )
        }
        _ => Value::Object(object(u, depth - 1)?),
    })
}

fn object(u: &mut Unstructured<'_>, depth: u32) -> arbitrary::Result<Map<String, Value>> {
    let n = u.int_in_range(0..=4)?;
    let mut m = Map::new();
    for _ in 0..n {
        let k = String::arbitrary(u)?;
        m.insert(k, value(u, depth)?);
    }
    Ok(m)
}

fuzz_target!(|data: &[u8]| {
    let (tpl, rest) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(tpl) = std::str::from_utf8(tpl) else {
        return;
    };
    let store = match serde_json::from_slice::<Value>(rest) {
        Ok(Value::Object(m)) => m,
        _ => match object(&mut Unstructured::new(rest), 3) {
            Ok(m) => m,
            Err(_) => Map::new(),
        },
    };
    let item = store.get("item").cloned().unwrap_or(Value::Null);
    let index = Value::from(0);
    let locals = [("item", &item), ("__index__", &index)];
    let scope = Scope {
        store: &store,
        locals: &locals,
    };

    // The static side: parse, inspect references, render messages.
    let parsed = Template::parse(tpl);
    if let Ok(t) = &parsed {
        for r in t.references() {
            let _ = r.first_key();
            let _ = r.to_string();
            let _ = lookup(r, &scope);
        }
        let _ = resolve_template(t, &scope);
        // A template that parses has no `${` left in its literal parts except escapes.
        assert_eq!(
            Template::has_template(tpl),
            !t.is_literal() || tpl.contains("$${")
        );
    } else if let Err(e) = &parsed {
        let _ = e.to_string();
    }

    // The runtime side: a param value holding the template, alone and inside structure.
    for v in [
        Value::String(tpl.to_string()),
        serde_json::json!({"a": [tpl, {"b": tpl}], "c": 1}),
    ] {
        match CompiledValue::compile(&v) {
            Ok(c) => {
                let mut seen = 0usize;
                let _ = c.resolve(&scope, &mut |_, _| seen += 1);
            }
            Err(e) => {
                // Compile and parse must agree on what is malformed.
                assert!(parsed.is_err(), "compile rejected what parse accepted: {e}");
            }
        }
    }
});
