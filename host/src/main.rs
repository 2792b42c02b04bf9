//! The `vigil` binary: parses the command line and runs it.

use std::process::ExitCode;

use clap::Parser;

// Vigil allocates many small objects on one thread and frees them on another (events move
// from ingest to the log, from parsing to detection); mimalloc handles that far better
// than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = vigil::cli::Cli::parse();
    match vigil::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
