//! The `pflow` binary: parse arguments, run, exit with the documented code.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // First, before anything writes a file.
    pflow::telemetry::file::survive_file_size_limit();
    std::process::exit(pflow::cli::main());
}
