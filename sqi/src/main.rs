//! The `sqi` binary: parse, set up telemetry, run the role, report one error line.

use std::process::ExitCode;

use clap::Parser;

/// Every role is a long-lived server whose working set swings with load (a
/// slow broker, a question over many files). glibc's allocator keeps the
/// highest swing resident; mimalloc returns freed pages to the system, so
/// RSS follows what is live (BENCHMARKS.md, soak). The image has it commit
/// its arenas on demand (`MIMALLOC_ARENA_EAGER_COMMIT=0`, Dockerfile).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let mut cli = sqi::cli::Cli::parse();
    let log_file = cli.log_file();
    sqi::telemetry::init_tracing(cli.log_format, log_file.as_deref());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(sqi::cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
