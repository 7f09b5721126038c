//! The settings as the command line, the environment and the TOML file give them: one
//! `clap` struct whose `///` docs are the `--help` reference. `Settings::resolve` (in
//! `config`) layers and checks them into a `Config`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use secrecy::SecretString;
use serde::Deserialize;

use super::events::{CasesSettings, WebhookSettings};
use super::oidc::OidcSettings;
use super::{LogFormat, TrustCheckMode, parse_secret};

/// Server settings. Every flag can also be set by its `LANYARD_*` variable or in the TOML
/// file given with `--config` (keys are the flag names with `_` for `-`).
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// TOML file with settings; flags and environment variables override it.
    #[arg(long, env = "LANYARD_CONFIG", global = true)]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Postgres URL; the database is created if missing and migrated on start.
    /// [default: postgres://postgres@127.0.0.1:5432/lanyard]
    #[arg(long, env = "LANYARD_DATABASE_URL", global = true, hide_env_values = true,
          value_parser = parse_secret)]
    pub database_url: Option<SecretString>,

    /// Largest number of Postgres connections this instance opens. [default: 16]
    #[arg(long, env = "LANYARD_DB_MAX_CONNECTIONS", global = true)]
    pub db_max_connections: Option<u32>,

    /// Address of the API listener. [default: 127.0.0.1:8080]
    #[arg(long, env = "LANYARD_LISTEN_ADDR", global = true)]
    pub listen_addr: Option<SocketAddr>,

    /// Address of the Prometheus `/metrics` listener. [default: 127.0.0.1:9090]
    #[arg(long, env = "LANYARD_METRICS_ADDR", global = true)]
    pub metrics_addr: Option<SocketAddr>,

    /// Directory for local state such as the generated signing key (created 0700).
    /// [default: ./lanyard-data]
    #[arg(long, env = "LANYARD_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,

    /// PEM file with the Ed25519 (PKCS#8) key that signs API tokens. Several instances must
    /// share one key. [default: <data-dir>/signing-key.pem, generated on first use]
    #[arg(long, env = "LANYARD_SIGNING_KEY_FILE", global = true)]
    pub signing_key_file: Option<PathBuf>,

    /// One endpoint for STS and CloudWatch (a local AWS emulator). The standard `AWS_*`
    /// variables and credential chain apply as usual. [default: real AWS]
    #[arg(long, env = "LANYARD_AWS_ENDPOINT_URL", global = true)]
    pub aws_endpoint_url: Option<String>,

    /// AWS region for the regional STS endpoint. [default: from the AWS chain, else us-east-1]
    #[arg(long, env = "LANYARD_AWS_REGION", global = true)]
    pub aws_region: Option<String>,

    /// The broker's own IAM principal ARN, put in customers' trust policies.
    /// [default: derived from sts:GetCallerIdentity]
    #[arg(long, env = "LANYARD_BROKER_PRINCIPAL_ARN", global = true)]
    pub broker_principal_arn: Option<String>,

    /// CloudWatch namespace for published metrics. [default: unset, CloudWatch off]
    #[arg(long, env = "LANYARD_CLOUDWATCH_NAMESPACE", global = true)]
    pub cloudwatch_namespace: Option<String>,

    /// CloudWatch endpoint, when it differs from --aws-endpoint-url.
    /// [default: --aws-endpoint-url, else real AWS]
    #[arg(long, env = "LANYARD_CLOUDWATCH_ENDPOINT_URL", global = true)]
    pub cloudwatch_endpoint_url: Option<String>,

    /// Length of the windows credential requests are counted in for CloudWatch, and how
    /// often closed windows are published, in seconds; must divide 60. Shorter windows cost
    /// more PutMetricData calls (tests use them to be fast). [default: 60]
    #[arg(long, env = "LANYARD_CLOUDWATCH_FLUSH_SECS", global = true)]
    pub cloudwatch_flush_secs: Option<u64>,

    /// IAM endpoint for iam:SimulatePrincipalPolicy (a role's required_actions), when it
    /// differs from --aws-endpoint-url. [default: --aws-endpoint-url, else real AWS]
    #[arg(long, env = "LANYARD_IAM_ENDPOINT_URL", global = true)]
    pub iam_endpoint_url: Option<String>,

    /// Prefix of generated external IDs. [default: Lanyard]
    #[arg(long, env = "LANYARD_EXTERNAL_ID_PREFIX", global = true)]
    pub external_id_prefix: Option<String>,

    /// What a role whose trust policy does not require the external ID gets. [default: enforce]
    #[arg(long, env = "LANYARD_TRUST_CHECK", global = true, value_enum)]
    pub trust_check: Option<TrustCheckMode>,

    /// PEM certificate chain; with --tls-key the API listener speaks TLS. Both files are
    /// loaded again on SIGHUP and when they change, for new connections. [default: plain HTTP]
    #[arg(long, env = "LANYARD_TLS_CERT", global = true, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "LANYARD_TLS_KEY", global = true, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// S3 URL of the customer-role template, for CloudFormation quick-create links in
    /// onboarding documents. [default: unset, no link]
    #[arg(long, env = "LANYARD_ONBOARDING_TEMPLATE_URL", global = true)]
    pub onboarding_template_url: Option<String>,

    /// Longest time a request may take before it is answered with 503. [default: 30]
    #[arg(long, env = "LANYARD_REQUEST_TIMEOUT_SECS", global = true)]
    pub request_timeout_secs: Option<u64>,

    /// Largest request body accepted, in bytes; larger bodies get 413. [default: 65536]
    #[arg(long, env = "LANYARD_BODY_LIMIT_BYTES", global = true)]
    pub body_limit_bytes: Option<usize>,

    /// Time in-flight requests get to finish after SIGTERM or ctrl-c. [default: 20]
    #[arg(long, env = "LANYARD_SHUTDOWN_GRACE_SECS", global = true)]
    pub shutdown_grace_secs: Option<u64>,

    /// Log line format; the level comes from `RUST_LOG` (default `info`). [default: text]
    #[arg(long, env = "LANYARD_LOG_FORMAT", global = true, value_enum)]
    pub log_format: Option<LogFormat>,

    /// Longest support session, in seconds; the role's max_session_seconds caps it too.
    /// [default: 28800]
    #[arg(long, env = "LANYARD_SUPPORT_SESSION_MAX_SECS", global = true)]
    pub support_session_max_secs: Option<u32>,

    /// Length of customer sessions (opened by services and batch jobs), in seconds; the
    /// role's max_session_seconds caps it. [default: 43200]
    #[arg(long, env = "LANYARD_CUSTOMER_SESSION_SECS", global = true)]
    pub customer_session_secs: Option<u32>,

    /// Ceiling on the lifetime of issued AWS credentials, in seconds (at least 900).
    /// [default: 43200]
    #[arg(long, env = "LANYARD_CREDENTIAL_MAX_SECS", global = true)]
    pub credential_max_secs: Option<u32>,

    /// Cached credentials closer than this to their expiry are replaced by fresh ones (unless
    /// they already last until the session ends). 900 matches botocore's refresh window.
    /// [default: 900]
    #[arg(long, env = "LANYARD_CREDENTIAL_REFRESH_SECS", global = true)]
    pub credential_refresh_secs: Option<u32>,

    /// Largest number of AssumeRole calls per second this instance makes (STS allows 600/s
    /// per account and region, shared by everything in the broker's account). [default: 50]
    #[arg(long, env = "LANYARD_STS_RATE_LIMIT", global = true)]
    pub sts_rate_limit: Option<u32>,

    /// How long an AccessDenied from AssumeRole is remembered for a session before STS is
    /// asked again, in seconds (0 turns this off). [default: 10]
    #[arg(long, env = "LANYARD_DENIED_CACHE_SECS", global = true)]
    pub denied_cache_secs: Option<u32>,

    /// Longest time, in milliseconds, an instance acts on token and session state it read
    /// earlier (revocations and changes also reach every instance at once through Postgres
    /// notifications; this bounds what a lost notification costs). [default: 500]
    #[arg(long, env = "LANYARD_AUTH_CACHE_MS", global = true)]
    pub auth_cache_ms: Option<u64>,

    /// An audit export (format=ndjson or csv) whose client takes no data for this many
    /// seconds is cut off and its export slot freed. [default: 30]
    #[arg(long, env = "LANYARD_EXPORT_IDLE_SECS", global = true)]
    pub export_idle_secs: Option<u64>,

    /// Longest time one audit export may stream, in seconds; then it is cut off and its
    /// export slot freed. [default: 3600]
    #[arg(long, env = "LANYARD_EXPORT_MAX_SECS", global = true)]
    pub export_max_secs: Option<u64>,

    /// Delete audit rows older than this many days (1-36500), hourly, keeping the hash chains
    /// verifiable; the usage rollups are kept. [default: unset, keep every row]
    #[arg(long, env = "LANYARD_AUDIT_RETENTION_DAYS", global = true)]
    pub audit_retention_days: Option<u32>,

    /// OpenID issuers whose tokens `POST /v1/auth/token` exchanges (config file only: the
    /// `[[oidc.issuers]]` tables, see docs/identity.md).
    #[arg(skip)]
    pub oidc: Option<OidcSettings>,

    /// How long a session request that needs a second person's approval waits before it
    /// expires, in seconds (10-604800). [default: 3600]
    #[arg(long, env = "LANYARD_APPROVAL_WINDOW_SECS", global = true)]
    pub approval_window_secs: Option<u32>,

    /// The case system that decides whether a support session may open (config file only:
    /// the `[cases]` table, see docs/cases.md).
    #[arg(skip)]
    pub cases: Option<CasesSettings>,

    /// Endpoints that receive the broker's events (config file only: `[[webhooks]]`
    /// tables, see docs/cases.md).
    #[arg(skip)]
    pub webhooks: Option<Vec<WebhookSettings>>,
}
