//! IR parsing and validation: arbitrary bytes as a workflow file, then the
//! same static checks `pflow validate` runs (nested workflows included,
//! resolved against `examples/` so the seeds' `workflow_ref`s load).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pflow::runtime::{CompileContext, Runtime};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(ir) = pflow::ir::parse_str(src, "fuzz.json") else {
        return;
    };
    let base = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples"));
    let rt = Runtime::default();
    for stdin in [None, Some(true)] {
        let cx = CompileContext {
            params: ["name".to_string(), "url".to_string()]
                .into_iter()
                .collect(),
            stdin,
            // The strict command-line checks (inputs, unknown names) too.
            command_line: stdin.is_some(),
            ..CompileContext::default()
        };
        let diags = rt.check(&ir, "fuzz.json", base, &cx);
        for d in &diags {
            let _ = d.to_string();
        }
    }
    // Compiling (what `pflow run` does before executing) must agree with checking.
    let _ = rt.compile(ir, "fuzz.json", base, &CompileContext::default());
});
