//! `lanyard-server`: parse the command line and run it.

use clap::Parser;

/// glibc's allocator spent about a quarter of the server's CPU on the credential path
/// (arena locks, consolidation); mimalloc's thread-local free lists avoid both.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = lanyard_server::cli::Cli::parse();
    match lanyard_server::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lanyard-server: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
