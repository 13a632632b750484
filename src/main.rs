//! The `pflow` binary: parse arguments, run, exit with the documented code.

fn main() {
    std::process::exit(pflow::cli::main());
}
