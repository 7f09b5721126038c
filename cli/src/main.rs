//! `lanyard`: the command-line client of the Lanyard credential broker.
//!
//! This is the skeleton: global options, the server connection and the HTTP client. The
//! credential commands (`credential-process`, `export`, `support-access`, …) build on it.

#[allow(dead_code)]
mod aws_config;
#[allow(dead_code)]
mod cache;
mod client;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "lanyard",
    version,
    about = "Short-lived AWS credentials from a Lanyard broker",
    long_about = "Short-lived, audited AWS credentials into customer accounts from a Lanyard \
                        broker, for the AWS CLI and SDKs (credential_process)."
)]
struct Cli {
    /// Broker URL, e.g. https://lanyard.example.com.
    #[arg(long, env = "LANYARD_SERVER", global = true)]
    server: Option<String>,
    /// API token (prefer the environment or `lanyard login` over the command line).
    #[arg(long, env = "LANYARD_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Diagnostics on stderr (secrets redacted).
    #[arg(long, global = true)]
    debug: bool,
    /// Output format of query commands.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check that the broker answers and is ready.
    Ping,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lanyard: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let server = cli
        .server
        .ok_or_else(|| anyhow::anyhow!("no broker URL: pass --server or set LANYARD_SERVER"))?;
    let client = client::Client::new(&server, cli.token, cli.debug)?;
    match cli.command {
        Command::Ping => {
            let status = client.readiness().await?;
            match cli.output {
                Output::Json => println!(
                    "{}",
                    serde_json::json!({ "server": server, "status": status })
                ),
                Output::Text => println!("{server}: {status}"),
            }
            Ok(())
        }
    }
}
