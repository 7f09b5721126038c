//! `lanyard`: the command-line client of the Lanyard credential broker.
//!
//! `main` parses the command line and hands over to `commands`; errors end as one line on
//! stderr (`lanyard: ...`) and exit status 1. `credential-process` on a warm cache reads
//! two small files and prints: no async runtime and no HTTP client are built for it.

mod aws_config;
// Part of its API (try_lock, key_source, from_document) serves tests and diagnostics only.
#[allow(dead_code)]
mod cache;
mod client;
mod commands;
mod config;
mod credentials;
mod doctor;
mod log;
mod oidc;
mod private;
mod sso;
mod text;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use credentials::ExportFormat;

#[derive(Debug, Parser)]
#[command(
    name = "lanyard",
    version,
    about = "Short-lived AWS credentials from a Lanyard broker",
    long_about = "Short-lived, audited AWS credentials into customer accounts from a Lanyard \
                  broker, for the AWS CLI and SDKs (credential_process).\n\n\
                  State: login and profiles in $LANYARD_CONFIG_DIR (default \
                  $XDG_CONFIG_HOME/lanyard or ~/.config/lanyard), the encrypted credential \
                  cache in $LANYARD_CACHE_DIR (default $XDG_CACHE_HOME/lanyard or \
                  ~/.cache/lanyard). AWS profiles go to $AWS_CONFIG_FILE (default \
                  ~/.aws/config)."
)]
pub struct Cli {
    /// Broker URL, e.g. https://lanyard.example.com (overrides the stored login).
    #[arg(long, env = "LANYARD_SERVER", global = true)]
    server: Option<String>,
    /// API token (overrides the stored login; prefer `lanyard login` or the environment
    /// over the command line).
    #[arg(long, env = "LANYARD_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// PEM file of CA certificates trusted for the broker besides the system's (a private
    /// CA); `lanyard login --ca-file` stores it for later commands.
    #[arg(long, env = "LANYARD_CA_FILE", global = true)]
    ca_file: Option<std::path::PathBuf>,
    /// Diagnostics on stderr (tokens and secrets redacted), and into --log-file. The
    /// environment variable reaches the runs the AWS CLI starts through credential_process.
    #[arg(
        long,
        global = true,
        env = "LANYARD_DEBUG",
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    debug: bool,
    /// Append diagnostics to this file: one line per credential-process or export run
    /// (profile, session, served from the local cache or the broker, duration, outcome), and
    /// the --debug lines when --debug is on. Created 0600; at 1 MiB it moves to FILE.1. No
    /// token or secret is ever written.
    #[arg(long, global = true, env = "LANYARD_LOG_FILE", value_name = "FILE")]
    log_file: Option<std::path::PathBuf>,
    /// Output format of the commands that report something.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Cached credentials are served only while the broker said at most this many seconds
    /// ago that they were not revoked; past that, the broker is asked first, and a broker
    /// that cannot be asked means no credentials (0: ask on every use).
    #[arg(
        long,
        env = "LANYARD_REVOCATION_CHECK_SECS",
        global = true,
        value_name = "SECS",
        default_value_t = credentials::revocation::DEFAULT_WINDOW_SECS
    )]
    revocation_check_secs: u32,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Store the broker URL (--server) and an API token (from --token-file, LANYARD_TOKEN or
    /// stdin) under the config directory, the token in a 0600 file; or, with --sso, sign in
    /// through the company's single sign-on and keep a token that renews itself.
    Login(LoginArgs),
    /// Print the profile's credentials as credential_process JSON (for ~/.aws/config).
    CredentialProcess(ProfileArgs),
    /// Print the profile's credentials the way `aws configure export-credentials` does.
    Export(ExportArgs),
    /// Open a support session for a case and write its AWS profile
    /// (`support-<customer>-<case>`); with --tier, in one of the role's access tiers, which
    /// may first need a second person's approval (see --wait).
    SupportAccess(SupportAccessArgs),
    /// Write the AWS profile `customer-<customer>` for the caller's customer session.
    SetupCustomer(SetupCustomerArgs),
    /// Rewrite the AWS profiles that reach a customer role registered at the broker
    /// (role_arn), and static-key profiles named with --static-profile, as Lanyard profiles;
    /// the removed keys and external IDs go to a 0600 backup file.
    ///
    /// Each profile keeps its name (`aws --profile NAME` goes on working) and becomes a
    /// customer profile as `setup-customer` writes it: credential_process runs `lanyard
    /// credential-process --profile NAME`. A profile is first proven at the broker (its
    /// credentials are handed out) and left as it is otherwise. Every other byte of
    /// $AWS_CONFIG_FILE and $AWS_SHARED_CREDENTIALS_FILE stays as it was; running it again
    /// finds nothing to migrate.
    Migrate(MigrateArgs),
    /// List the profiles Lanyard serves (those whose credential_process runs lanyard, and
    /// those in Lanyard's config): kind, customer, role, case, session, and what the local
    /// cache holds (no broker request).
    Profiles,
    /// Show the profile's cached credentials, when they expire and when the broker last said
    /// they were not revoked; for a support profile, the session's status at the broker
    /// (active, revoked, expired).
    Check(ProfileOnly),
    /// Ask the broker for the profile's credentials now, bypassing and replacing the local
    /// cache. The broker may return its own still-valid credentials (the same access key);
    /// it issues new ones only when its copy is near expiry.
    Refresh(ProfileOnly),
    /// Check which IAM actions the profile's role allows (iam:SimulatePrincipalPolicy, run
    /// by the broker as the role): its required_actions, or --actions. Exit status 1 when
    /// any action is not allowed or the check could not run.
    Validate(ValidateArgs),
    /// Customers the token may see.
    Customers {
        #[command(subcommand)]
        command: CustomersCommand,
    },
    /// Sessions: list, revoke; requests waiting for approval: pending, approve, deny, wait.
    Sessions {
        #[command(subcommand)]
        command: SessionsCommand,
    },
    /// Credential usage per profile over the last N days, as a tree or JSON.
    UsageReport(UsageArgs),
    /// Check config, broker, token, credentials, AWS CLI wiring and clock, one line each.
    Doctor(ProfileOnly),
    /// Print a shell completion script (e.g. `lanyard completions bash > /etc/bash_completion.d/lanyard`).
    Completions { shell: clap_complete::Shell },
    /// Check that the broker answers and is ready.
    Ping,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Sign in through the company's single sign-on (the OpenID provider the broker names)
    /// instead of storing a token: the browser opens the provider's page.
    #[arg(long, conflicts_with_all = ["token_file", "no_verify"])]
    sso: bool,
    /// With --sso: sign in on any device with a URL and a code (device flow), for machines
    /// without a browser.
    #[arg(long, requires = "sso")]
    device: bool,
    /// With --sso: print the sign-in URL instead of opening the browser.
    #[arg(long, requires = "sso", conflicts_with = "device")]
    no_browser: bool,
    /// Read the token from this file (`-` for stdin) instead of LANYARD_TOKEN or stdin.
    #[arg(long)]
    token_file: Option<std::path::PathBuf>,
    /// Store the login without asking the broker whether it answers.
    #[arg(long)]
    no_verify: bool,
}

#[derive(Debug, Args)]
pub struct ProfileOnly {
    /// The profile (e.g. support-acme-corp-CS-12345, customer-acme-corp).
    #[arg(long)]
    profile: String,
}

#[derive(Debug, Args)]
pub struct ProfileArgs {
    /// The profile (e.g. support-acme-corp-CS-12345, customer-acme-corp).
    #[arg(long, required_unless_present = "customer")]
    profile: Option<String>,
    /// Instead of a profile: the caller's customer credentials for this customer, with no
    /// profile and no setup (services and CI jobs: with LANYARD_OIDC_TOKEN,
    /// LANYARD_OIDC_TOKEN_FILE or GitHub Actions' id-token permission and LANYARD_SERVER,
    /// no login either).
    #[arg(long, conflicts_with = "profile")]
    customer: Option<String>,
    /// With --customer: the customer role, when the customer has several.
    #[arg(long, requires = "customer")]
    role: Option<String>,
    /// Ask the broker; neither read nor write the credential cache.
    #[arg(long)]
    no_cache: bool,
}

impl ProfileArgs {
    fn target(&self) -> commands::Target {
        match (&self.profile, &self.customer) {
            (_, Some(customer)) => commands::Target::Customer {
                customer: customer.clone(),
                role: self.role.clone(),
            },
            (Some(profile), None) => commands::Target::Profile(profile.clone()),
            // clap requires one of the two.
            (None, None) => commands::Target::Profile(String::new()),
        }
    }
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    /// Output shape, as `aws configure export-credentials --format`.
    #[arg(long, value_enum, default_value_t = ExportFormat::Env)]
    format: ExportFormat,
}

#[derive(Debug, Args)]
pub struct SupportAccessArgs {
    /// Customer id, e.g. acme-corp.
    #[arg(long)]
    customer: String,
    /// Support case id, e.g. CS-12345.
    #[arg(long = "case")]
    case: String,
    /// How long the session lasts: 30m, 1h, 1h30m, 90s, or seconds (1800); default 30m,
    /// capped by the broker.
    #[arg(long, default_value = "30m")]
    duration: String,
    /// Why access is needed (recorded in the audit trail; default "support case <case>").
    #[arg(long)]
    reason: Option<String>,
    /// Customer role; may be left out when the customer has one role for support sessions.
    #[arg(long)]
    role: Option<String>,
    /// AWS region written into the profile (default AWS_REGION, AWS_DEFAULT_REGION, us-east-1).
    #[arg(long)]
    region: Option<String>,
    /// One of the role's access tiers (e.g. `write`) instead of its base grant; a tier may
    /// need a second person's approval before the session opens (see --wait).
    ///
    /// A tier that requires approval (as a customer may for all its support sessions) opens
    /// the session as a request that a second person (admin or support, never you) approves
    /// with `lanyard sessions approve ID`; the session's time (--duration) counts from the
    /// approval. Without --wait the command files the request, writes the profile (its
    /// credentials come once the request is approved; until then `aws` says it waits for
    /// approval) and returns; a profile of the case that still serves a live session is left
    /// as it is until `lanyard sessions wait ID` sees the approval.
    #[arg(long)]
    tier: Option<String>,
    /// When the session needs approval (its tier or the customer requires it): wait for the
    /// decision, then write the profile as for a session that opens at once. Ctrl-C stops
    /// waiting; the request stays pending.
    ///
    /// The broker is asked every 2 s, at most until the request expires. A denied or expired
    /// request exits 1 with the decider's comment, and nothing is written. After Ctrl-C (exit
    /// 130) `lanyard sessions wait ID` resumes waiting. No effect on a session that opens at
    /// once. Without --wait a request is filed as --tier describes.
    #[arg(long)]
    wait: bool,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Print the plan and the changes as a unified diff (secrets redacted); change nothing.
    #[arg(long)]
    dry_run: bool,
    /// A profile with static keys (aws_access_key_id) to rewrite as a Lanyard profile of
    /// --customer; may be repeated.
    #[arg(long, value_name = "PROFILE", requires = "customer")]
    static_profile: Vec<String>,
    /// The customer of the --static-profile profiles; also limits the role_arn profiles
    /// migrated to this customer's.
    #[arg(long)]
    customer: Option<String>,
    /// The customer role of the --static-profile profiles, when the customer has several.
    #[arg(long, requires = "static_profile")]
    role: Option<String>,
}

#[derive(Debug, Args)]
pub struct SetupCustomerArgs {
    /// Customer id, e.g. acme-corp.
    #[arg(long)]
    customer: String,
    /// Customer role; may be left out when the customer has one role for customer sessions.
    #[arg(long)]
    role: Option<String>,
    /// AWS region written into the profile (default AWS_REGION, AWS_DEFAULT_REGION, us-east-1).
    #[arg(long)]
    region: Option<String>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The profile whose customer and role are checked (e.g. support-acme-corp-CS-12345,
    /// customer-acme-corp).
    #[arg(long)]
    profile: String,
    /// Check these actions instead of the role's required_actions, comma-separated (e.g.
    /// s3:GetObject,s3:ListBucket); their result is not stored on the role.
    #[arg(long, value_delimiter = ',', value_name = "ACTIONS")]
    actions: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum CustomersCommand {
    /// List customers (a service token: the customers it may reach).
    List(CustomersListArgs),
}

#[derive(Debug, Args)]
pub struct CustomersListArgs {
    /// Only the customer ids, one a line, nothing else on stdout: for
    /// `for c in $(lanyard customers list --quiet); do ...; done`.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
enum SessionsCommand {
    /// List sessions (your own, or all for admins and auditors), newest first.
    List(SessionsListArgs),
    /// Revoke a session: no new credentials are issued for it; those already issued work
    /// until they expire.
    Revoke(RevokeArgs),
    /// Session requests waiting for a second person's approval (admin, support), oldest
    /// first; yours are listed too, marked "(you)", but only someone else may decide them.
    Pending(PendingArgs),
    /// Approve another person's session request: its session's time starts now.
    Approve(DecisionArgs),
    /// Deny another person's session request: it never gets credentials.
    Deny(DecisionArgs),
    /// Wait for the decision on a session request, e.g. after Ctrl-C stopped
    /// `support-access --wait`; then, for your own support session, write its profile.
    ///
    /// Approved: the profile is written and the next steps printed as `support-access` does
    /// (a request decided before answers at once). Denied or expired: exit 1 with the
    /// decider's comment. The broker is asked every 2 s; Ctrl-C stops waiting (exit 130) and
    /// leaves the request pending.
    Wait(WaitArgs),
}

#[derive(Debug, Args)]
pub struct PendingArgs {
    /// At most this many requests (1-1000).
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

#[derive(Debug, Args)]
pub struct DecisionArgs {
    /// Session id (from `lanyard sessions pending`).
    id: String,
    /// Why (1-500 characters; recorded in the audit trail and shown to the requester).
    #[arg(long)]
    comment: Option<String>,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Session id of the request.
    id: String,
    /// AWS region written into the profile (default: the region the profile has, else
    /// AWS_REGION, AWS_DEFAULT_REGION, us-east-1).
    #[arg(long)]
    region: Option<String>,
}

#[derive(Debug, Args)]
pub struct SessionsListArgs {
    /// Only this customer's sessions.
    #[arg(long)]
    customer: Option<String>,
    /// Only sessions of this case.
    #[arg(long = "case")]
    case: Option<String>,
    /// Only live sessions.
    #[arg(long)]
    active: bool,
    /// At most this many, newest first (1-1000); a list cut at the limit says so on stderr.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
    limit: u16,
    /// Only the session ids, one a line, nothing else on stdout.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct RevokeArgs {
    /// Session id.
    id: Option<String>,
    /// The session of this profile.
    #[arg(long)]
    profile: Option<String>,
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// Calendar days (UTC) to cover, today included (1-366).
    #[arg(long, default_value_t = 30)]
    days: u32,
    /// Only this customer.
    #[arg(long)]
    customer: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    log::init(cli.debug, cli.log_file.clone());
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // One line, whatever the error chain holds, and nothing a terminal would run.
            eprintln!("lanyard: {}", text::one_line(&format!("{e:#}")));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Help and version as clap prints them; a rejected command line as one `lanyard: ...` line
/// (exit 2), like every other failure.
fn usage_error(e: clap::Error) -> std::process::ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit()
    }
    let text = e.render().to_string();
    let what = text
        .split("\n\nUsage:")
        .next()
        .unwrap_or_default()
        .split("\n\nFor more information")
        .next()
        .unwrap_or_default();
    let what = what.trim().trim_start_matches("error:");
    let line = what.split_whitespace().collect::<Vec<_>>().join(" ");
    eprintln!("lanyard: {line} (see --help)");
    std::process::ExitCode::from(2)
}

fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    let ctx = commands::Ctx::new(cli.server, cli.token, cli.ca_file, cli.debug, cli.output)?
        .with_revocation_check(cli.revocation_check_secs);
    let ok = std::process::ExitCode::SUCCESS;
    match cli.command {
        Command::CredentialProcess(args) => {
            commands::credential_process(&ctx, &args.target(), args.no_cache)?
        }
        Command::Export(args) => commands::export(
            &ctx,
            &args.profile.target(),
            args.profile.no_cache,
            args.format,
        )?,
        Command::Login(args) if args.sso => {
            commands::login_sso(&ctx, args.device, !args.no_browser)?
        }
        Command::Login(args) => commands::login(&ctx, args.token_file.as_deref(), args.no_verify)?,
        Command::SupportAccess(args) => return commands::support_access(&ctx, &args),
        Command::SetupCustomer(args) => commands::setup_customer(&ctx, &args)?,
        Command::Migrate(args) => return commands::migrate(&ctx, &args),
        Command::Profiles => commands::profiles(&ctx)?,
        Command::Check(args) => commands::check(&ctx, &args.profile)?,
        Command::Refresh(args) => commands::refresh(&ctx, &args.profile)?,
        Command::Validate(args) => return commands::validate(&ctx, &args),
        Command::Customers {
            command: CustomersCommand::List(args),
        } => commands::customers_list(&ctx, args.quiet)?,
        Command::Sessions { command } => match command {
            SessionsCommand::List(args) => commands::sessions_list(&ctx, &args)?,
            SessionsCommand::Revoke(args) => {
                commands::sessions_revoke(&ctx, args.id.as_deref(), args.profile.as_deref())?
            }
            SessionsCommand::Pending(args) => commands::sessions_pending(&ctx, args.limit)?,
            SessionsCommand::Approve(args) => {
                commands::sessions_decide(&ctx, &args, commands::Verdict::Approve)?
            }
            SessionsCommand::Deny(args) => {
                commands::sessions_decide(&ctx, &args, commands::Verdict::Deny)?
            }
            SessionsCommand::Wait(args) => return commands::sessions_wait(&ctx, &args),
        },
        Command::UsageReport(args) => commands::usage_report(&ctx, &args)?,
        Command::Doctor(args) => return doctor::run(&ctx, &args.profile),
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "lanyard", &mut out);
            commands::print_raw(&String::from_utf8_lossy(&out))?;
        }
        Command::Ping => commands::ping(&ctx)?,
    }
    Ok(ok)
}
