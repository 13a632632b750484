//! The `pflow` binary: parse arguments, run, exit with the documented code.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(pflow::cli::main());
}
