//! `lanyard-server`: parse the command line and run it.

use clap::Parser;

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
