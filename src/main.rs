//! The `pflow` binary: parse arguments, run, exit with the documented code.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // First, before anything writes a file.
    pflow::telemetry::file::survive_file_size_limit();
    // The process ends when its command returns.
    pflow::telemetry::process_ends_with_run();
    std::process::exit(pflow::cli::main());
}
