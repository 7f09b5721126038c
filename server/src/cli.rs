//! The `lanyard-server` command line: `serve` (default), `token issue|revoke|list`,
//! `openapi`, `migrate`.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use uuid::Uuid;

use crate::app::Application;
use crate::auth::Role;
use crate::auth::token::TokenKeys;
use crate::config::Settings;
use crate::domain::{CustomerId, parse_duration};
use crate::registry::tokens;
use crate::{db, http, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "lanyard-server",
    version,
    about = "Lanyard credential broker server",
    long_about = "Lanyard credential broker: brokers short-lived AWS credentials into \
                        customer accounts, audited in Postgres.\n\nWithout a command, `serve` runs."
)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the API and metrics listeners (the default).
    Serve,
    /// Issue, revoke and list API tokens (uses the same database and signing key as `serve`).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Print the OpenAPI document.
    Openapi,
    /// Create the database if missing and apply migrations, then exit.
    Migrate,
    /// Check the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute every audit row's hash chain; name the first row of each chain that does
    /// not fit (changed, inserted, or following removed rows) and chains whose end is
    /// missing. Exits non-zero when anything is broken.
    Verify,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Sign a new token and print it alone on stdout.
    Issue {
        /// Who the token is for (a person or a service); recorded as the actor in audit rows.
        #[arg(long)]
        subject: String,
        /// What the token may do: admin, support, service or auditor.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Limit the token to this customer (repeat for several). Default: all customers.
        #[arg(long = "customer", value_name = "CUSTOMER")]
        customers: Vec<String>,
        /// Lifetime, e.g. 12h, 30d.
        #[arg(long, default_value = "30d", value_parser = parse_ttl)]
        ttl: Duration,
    },
    /// Revoke a token by its id (jti); every instance refuses it from then on.
    Revoke {
        /// The token id, as shown by `token list`.
        jti: Uuid,
    },
    /// List tokens (live ones; `--all` includes expired and revoked).
    List {
        #[arg(long)]
        all: bool,
    },
}

fn parse_role(raw: &str) -> Result<Role, String> {
    Role::parse(raw)
        .ok_or_else(|| format!("invalid role '{raw}': use admin, support, service or auditor"))
}

fn parse_ttl(raw: &str) -> Result<Duration, String> {
    parse_duration(raw).map_err(|e| e.to_string())
}

/// Runs the command line; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = cli.settings.resolve()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            telemetry::init(config.log_format);
            let app = Application::build(config).await?;
            app.run_until_stopped().await
        }
        Command::Openapi => {
            print!("{}", http::openapi::document_json());
            Ok(())
        }
        Command::Migrate => {
            telemetry::init(config.log_format);
            db::connect_and_migrate(&config.database_url, 2).await?;
            eprintln!("database is up to date");
            Ok(())
        }
        Command::Audit(AuditCommand::Verify) => {
            let pool = db::connect_existing(&config.database_url).await?;
            let found = crate::audit::chain::verify(&pool).await?;
            println!(
                "checked {} rows in {} chains; {} rows predate the chains",
                found.rows, found.chains, found.unchained
            );
            if found.below_prune_point > 0 {
                println!(
                    "note: {} rows sit below their chain's prune point (left by retention when \
                     a writer's clock ran ahead; the next retention pass removes them)",
                    found.below_prune_point
                );
            }
            if found.breaks.is_empty() && found.unchained_since_chains == 0 {
                println!("audit chain intact");
                return Ok(());
            }
            if found.unchained_since_chains > 0 {
                println!(
                    "BROKEN: {} rows without a chain are dated after the chains began: the \
                     broker never writes such rows",
                    found.unchained_since_chains
                );
            }
            for broken in &found.breaks {
                println!("BROKEN: {broken}");
            }
            anyhow::bail!(
                "the audit log was tampered with: {} chain(s) broken{}",
                found.breaks.len(),
                found
                    .breaks
                    .first()
                    .map(|b| format!(", first at {b}"))
                    .unwrap_or_default()
            )
        }
        Command::Token(cmd) => {
            // Only the server creates the signing key: one made here would sign tokens the
            // running server refuses. Checked before anything touches the database.
            let keys = match &cmd {
                TokenCommand::Issue { .. } => Some(TokenKeys::load(&config)?),
                _ => None,
            };
            let pool = db::connect_and_migrate(&config.database_url, 2).await?;
            let actor = format!(
                "local:{}",
                std::env::var("USER").unwrap_or_else(|_| "operator".into())
            );
            match cmd {
                TokenCommand::Issue {
                    subject,
                    role,
                    customers,
                    ttl,
                } => {
                    let keys = keys.context("the signing key was loaded above")?;
                    let customers = if customers.is_empty() {
                        None
                    } else {
                        Some(
                            customers
                                .iter()
                                .map(|c| {
                                    CustomerId::parse(c).with_context(|| format!("--customer {c}"))
                                })
                                .collect::<anyhow::Result<Vec<_>>>()?,
                        )
                    };
                    let issued =
                        tokens::issue(&pool, &keys, &actor, &subject, role, customers, ttl).await?;
                    eprintln!(
                        "token {} for {subject} ({}) expires {}",
                        issued.jti,
                        role.as_str(),
                        issued.expires_at.to_rfc3339()
                    );
                    println!("{}", issued.token);
                }
                TokenCommand::Revoke { jti } => {
                    let row = tokens::revoke(&pool, &actor, jti).await?;
                    eprintln!("revoked token {jti} of {}", row.subject);
                }
                TokenCommand::List { all } => {
                    println!(
                        "{:<36}  {:<20}  {:<8}  {:<25}  {:<8}  {:<20}  FROM",
                        "ID", "SUBJECT", "ROLE", "EXPIRES", "STATE", "CUSTOMERS"
                    );
                    for t in db::tokens::list(&pool, all).await? {
                        let state = if t.revoked_at.is_some() {
                            "revoked"
                        } else if t.expires_at <= chrono::Utc::now() {
                            "expired"
                        } else {
                            "live"
                        };
                        // Exchanged tokens: the OpenID issuer and the subject it vouched for.
                        let from = match (&t.source_issuer, &t.source_subject) {
                            (Some(iss), Some(sub)) => format!("{sub} @ {iss}"),
                            _ => "operator".to_owned(),
                        };
                        println!(
                            "{:<36}  {:<20}  {:<8}  {:<25}  {:<8}  {:<20}  {}",
                            t.jti,
                            t.subject,
                            t.role,
                            t.expires_at
                                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                            state,
                            t.customers
                                .map(|c| c.join(","))
                                .unwrap_or_else(|| "*".into()),
                            from
                        );
                    }
                }
            }
            Ok(())
        }
    }
}
