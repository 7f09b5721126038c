//! Settings: command-line flags, `LANYARD_*` environment variables and an optional TOML file
//! (`--config`), in that order of precedence, over the defaults below. `--help` documents
//! every setting; secrets are redacted in `Debug` output and never logged.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use secrecy::SecretString;
use serde::Deserialize;

use crate::domain::ExternalId;

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/lanyard";
pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:8080";
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9090";
pub const DEFAULT_DATA_DIR: &str = "./lanyard-data";
pub const DEFAULT_EXTERNAL_ID_PREFIX: &str = "Lanyard";
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 30;
pub const DEFAULT_BODY_LIMIT_BYTES: usize = 64 * 1024;
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 20;
pub const DEFAULT_DB_MAX_CONNECTIONS: u32 = 16;
pub const DEFAULT_SUPPORT_SESSION_SECS: u32 = 30 * 60;
pub const DEFAULT_SUPPORT_SESSION_MAX_SECS: u32 = 8 * 3600;
pub const DEFAULT_CUSTOMER_SESSION_SECS: u32 = 12 * 3600;
pub const DEFAULT_CREDENTIAL_MAX_SECS: u32 = 12 * 3600;
pub const DEFAULT_CREDENTIAL_REFRESH_SECS: u32 = 15 * 60;
pub const DEFAULT_STS_RATE_LIMIT: u32 = 50;
pub const DEFAULT_DENIED_CACHE_SECS: u32 = 10;
pub const DEFAULT_CLOUDWATCH_FLUSH_SECS: u64 = 60;
pub const DEFAULT_EXPORT_IDLE_SECS: u64 = 30;
pub const DEFAULT_EXPORT_MAX_SECS: u64 = 3600;

/// What to do when a role's trust policy lets AssumeRole through without the external ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TrustCheckMode {
    /// The role is not activated (status `failed`): it is open to the confused-deputy attack.
    #[default]
    Enforce,
    /// The role is activated and flagged (`trust_check: open`); for local emulators.
    Warn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

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

    /// Prefix of generated external IDs. [default: Lanyard]
    #[arg(long, env = "LANYARD_EXTERNAL_ID_PREFIX", global = true)]
    pub external_id_prefix: Option<String>,

    /// What a role whose trust policy does not require the external ID gets. [default: enforce]
    #[arg(long, env = "LANYARD_TRUST_CHECK", global = true, value_enum)]
    pub trust_check: Option<TrustCheckMode>,

    /// PEM certificate chain; with --tls-key the API listener speaks TLS. [default: plain HTTP]
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
}

/// The resolved configuration the application runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: SecretString,
    pub db_max_connections: u32,
    pub listen_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub signing_key_file: Option<PathBuf>,
    pub aws_endpoint_url: Option<String>,
    pub aws_region: Option<String>,
    pub broker_principal_arn: Option<String>,
    pub cloudwatch_namespace: Option<String>,
    pub cloudwatch_endpoint_url: Option<String>,
    pub cloudwatch_flush: Duration,
    pub external_id_prefix: String,
    pub trust_check: TrustCheckMode,
    pub tls: Option<TlsFiles>,
    pub onboarding_template_url: Option<String>,
    pub request_timeout: Duration,
    pub body_limit_bytes: usize,
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
    pub support_session_max: Duration,
    pub customer_session: Duration,
    pub credential_max: Duration,
    pub credential_refresh: Duration,
    pub sts_rate_limit: u32,
    pub denied_cache: Duration,
    /// `None`: audit rows are kept for ever.
    pub audit_retention: Option<chrono::TimeDelta>,
    pub export_idle: Duration,
    pub export_max: Duration,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Settings {
    /// Layers the `--config` file (if any) under these settings and applies the defaults.
    pub fn resolve(self) -> anyhow::Result<Config> {
        let file = match &self.config {
            Some(path) => Self::from_file(path)?,
            None => Settings::default(),
        };
        let s = self.over(file);
        let prefix = s
            .external_id_prefix
            .unwrap_or_else(|| DEFAULT_EXTERNAL_ID_PREFIX.to_owned());
        ExternalId::validate_prefix(&prefix).context("invalid external_id_prefix")?;
        let tls = match (s.tls_cert, s.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => bail!("tls_cert and tls_key must be set together"),
        };
        let body_limit_bytes = s.body_limit_bytes.unwrap_or(DEFAULT_BODY_LIMIT_BYTES);
        if body_limit_bytes < 1024 {
            bail!("body_limit_bytes must be at least 1024");
        }
        let secs =
            |v: Option<u32>, default: u32| Duration::from_secs(u64::from(v.unwrap_or(default)));
        let support_session_max =
            secs(s.support_session_max_secs, DEFAULT_SUPPORT_SESSION_MAX_SECS);
        if support_session_max < Duration::from_secs(u64::from(DEFAULT_SUPPORT_SESSION_SECS)) {
            bail!("support_session_max_secs must be at least {DEFAULT_SUPPORT_SESSION_SECS}");
        }
        let customer_session = secs(s.customer_session_secs, DEFAULT_CUSTOMER_SESSION_SECS);
        let credential_max = secs(s.credential_max_secs, DEFAULT_CREDENTIAL_MAX_SECS);
        if customer_session < Duration::from_secs(60) {
            bail!("customer_session_secs must be at least 60");
        }
        if !(900..=43_200).contains(&credential_max.as_secs()) {
            bail!("credential_max_secs must be between 900 and 43200 (AWS's limits)");
        }
        let cloudwatch_flush_secs = s
            .cloudwatch_flush_secs
            .unwrap_or(DEFAULT_CLOUDWATCH_FLUSH_SECS);
        if cloudwatch_flush_secs == 0 || 60 % cloudwatch_flush_secs != 0 {
            bail!(
                "cloudwatch_flush_secs must divide 60 (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30 or 60)"
            );
        }
        if let Some(ns) = s.cloudwatch_namespace.as_deref().filter(|n| !n.is_empty()) {
            // <https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_PutMetricData.html>:
            // 1-255 characters of [0-9A-Za-z.-_/#: ], and not the reserved AWS/ prefix.
            let valid = ns.len() <= 255
                && !ns.starts_with("AWS/")
                && ns
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-_/#: ".contains(c));
            if !valid {
                bail!(
                    "cloudwatch_namespace must be 1-255 characters of letters, digits and \
                     . - _ / # : or space, and must not start with AWS/"
                );
            }
        }
        let sts_rate_limit = s.sts_rate_limit.unwrap_or(DEFAULT_STS_RATE_LIMIT);
        if !(1..=600).contains(&sts_rate_limit) {
            bail!("sts_rate_limit must be between 1 and 600 (STS's own limit per account)");
        }
        let audit_retention = match s.audit_retention_days {
            None => None,
            Some(days @ 1..=36500) => Some(chrono::TimeDelta::days(i64::from(days))),
            Some(_) => bail!("audit_retention_days must be between 1 and 36500"),
        };
        let export_idle = s.export_idle_secs.unwrap_or(DEFAULT_EXPORT_IDLE_SECS);
        let export_max = s.export_max_secs.unwrap_or(DEFAULT_EXPORT_MAX_SECS);
        if export_idle == 0 || export_max < export_idle {
            bail!("export_idle_secs must be at least 1, and export_max_secs at least as long");
        }
        Ok(Config {
            export_idle: Duration::from_secs(export_idle),
            export_max: Duration::from_secs(export_max),
            audit_retention,
            support_session_max,
            customer_session,
            credential_max,
            credential_refresh: secs(s.credential_refresh_secs, DEFAULT_CREDENTIAL_REFRESH_SECS),
            sts_rate_limit,
            denied_cache: secs(s.denied_cache_secs, DEFAULT_DENIED_CACHE_SECS),
            database_url: s
                .database_url
                .unwrap_or_else(|| SecretString::from(DEFAULT_DATABASE_URL)),
            db_max_connections: s
                .db_max_connections
                .unwrap_or(DEFAULT_DB_MAX_CONNECTIONS)
                .max(2),
            listen_addr: s.listen_addr.unwrap_or(parse_addr(DEFAULT_LISTEN_ADDR)?),
            metrics_addr: s.metrics_addr.unwrap_or(parse_addr(DEFAULT_METRICS_ADDR)?),
            data_dir: s
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            signing_key_file: s.signing_key_file,
            aws_endpoint_url: s.aws_endpoint_url.filter(|u| !u.is_empty()),
            aws_region: s.aws_region.filter(|r| !r.is_empty()),
            broker_principal_arn: s.broker_principal_arn.filter(|a| !a.is_empty()),
            cloudwatch_namespace: s.cloudwatch_namespace.filter(|n| !n.is_empty()),
            cloudwatch_endpoint_url: s.cloudwatch_endpoint_url.filter(|u| !u.is_empty()),
            cloudwatch_flush: Duration::from_secs(cloudwatch_flush_secs),
            external_id_prefix: prefix,
            trust_check: s.trust_check.unwrap_or_default(),
            tls,
            onboarding_template_url: s.onboarding_template_url.filter(|u| !u.is_empty()),
            request_timeout: Duration::from_secs(
                s.request_timeout_secs
                    .unwrap_or(DEFAULT_REQUEST_TIMEOUT_SECS)
                    .max(1),
            ),
            body_limit_bytes,
            shutdown_grace: Duration::from_secs(
                s.shutdown_grace_secs.unwrap_or(DEFAULT_SHUTDOWN_GRACE_SECS),
            ),
            log_format: s.log_format.unwrap_or_default(),
        })
    }

    fn from_file(path: &Path) -> anyhow::Result<Settings> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
    }

    /// `self` wins field by field; `lower` fills the gaps.
    fn over(self, lower: Settings) -> Settings {
        Settings {
            config: self.config,
            database_url: self.database_url.or(lower.database_url),
            db_max_connections: self.db_max_connections.or(lower.db_max_connections),
            listen_addr: self.listen_addr.or(lower.listen_addr),
            metrics_addr: self.metrics_addr.or(lower.metrics_addr),
            data_dir: self.data_dir.or(lower.data_dir),
            signing_key_file: self.signing_key_file.or(lower.signing_key_file),
            aws_endpoint_url: self.aws_endpoint_url.or(lower.aws_endpoint_url),
            aws_region: self.aws_region.or(lower.aws_region),
            broker_principal_arn: self.broker_principal_arn.or(lower.broker_principal_arn),
            cloudwatch_namespace: self.cloudwatch_namespace.or(lower.cloudwatch_namespace),
            cloudwatch_endpoint_url: self
                .cloudwatch_endpoint_url
                .or(lower.cloudwatch_endpoint_url),
            cloudwatch_flush_secs: self.cloudwatch_flush_secs.or(lower.cloudwatch_flush_secs),
            external_id_prefix: self.external_id_prefix.or(lower.external_id_prefix),
            trust_check: self.trust_check.or(lower.trust_check),
            tls_cert: self.tls_cert.or(lower.tls_cert),
            tls_key: self.tls_key.or(lower.tls_key),
            onboarding_template_url: self
                .onboarding_template_url
                .or(lower.onboarding_template_url),
            request_timeout_secs: self.request_timeout_secs.or(lower.request_timeout_secs),
            body_limit_bytes: self.body_limit_bytes.or(lower.body_limit_bytes),
            shutdown_grace_secs: self.shutdown_grace_secs.or(lower.shutdown_grace_secs),
            log_format: self.log_format.or(lower.log_format),
            support_session_max_secs: self
                .support_session_max_secs
                .or(lower.support_session_max_secs),
            customer_session_secs: self.customer_session_secs.or(lower.customer_session_secs),
            credential_max_secs: self.credential_max_secs.or(lower.credential_max_secs),
            credential_refresh_secs: self
                .credential_refresh_secs
                .or(lower.credential_refresh_secs),
            sts_rate_limit: self.sts_rate_limit.or(lower.sts_rate_limit),
            denied_cache_secs: self.denied_cache_secs.or(lower.denied_cache_secs),
            audit_retention_days: self.audit_retention_days.or(lower.audit_retention_days),
            export_idle_secs: self.export_idle_secs.or(lower.export_idle_secs),
            export_max_secs: self.export_max_secs.or(lower.export_max_secs),
        }
    }
}

fn parse_secret(raw: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(raw))
}

fn parse_addr(raw: &str) -> anyhow::Result<SocketAddr> {
    raw.parse()
        .with_context(|| format!("invalid address {raw}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn flags_override_the_file_and_defaults_fill_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lanyard.toml");
        std::fs::write(
            &path,
            "listen_addr = \"127.0.0.1:7000\"\nexternal_id_prefix = \"Acme\"\ntrust_check = \"warn\"\n",
        )
        .unwrap();
        let settings = Settings {
            config: Some(path),
            external_id_prefix: Some("Flag".into()),
            ..Settings::default()
        };
        let config = settings.resolve().unwrap();
        assert_eq!(config.listen_addr.port(), 7000);
        assert_eq!(config.external_id_prefix, "Flag");
        assert_eq!(config.trust_check, TrustCheckMode::Warn);
        assert_eq!(config.database_url.expose_secret(), DEFAULT_DATABASE_URL);
    }

    #[test]
    fn unknown_file_keys_and_bad_prefixes_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lanyard.toml");
        std::fs::write(&path, "listen_adr = \"127.0.0.1:7000\"\n").unwrap();
        let settings = Settings {
            config: Some(path),
            ..Settings::default()
        };
        assert!(settings.resolve().is_err());
        let settings = Settings {
            external_id_prefix: Some("has space".into()),
            ..Settings::default()
        };
        assert!(settings.resolve().is_err());
    }

    #[test]
    fn cloudwatch_windows_must_tile_a_minute() {
        let with = |secs| Settings {
            cloudwatch_flush_secs: Some(secs),
            ..Settings::default()
        };
        assert!(with(7).resolve().is_err());
        assert!(with(0).resolve().is_err());
        assert!(with(120).resolve().is_err());
        assert_eq!(with(15).resolve().unwrap().cloudwatch_flush.as_secs(), 15);
        let named = |ns: &str| Settings {
            cloudwatch_namespace: Some(ns.into()),
            ..Settings::default()
        };
        assert!(named("Lanyard/prod").resolve().is_ok());
        assert!(named("AWS/EC2").resolve().is_err());
        assert!(named("bad|name").resolve().is_err());
        assert!(named(&"x".repeat(256)).resolve().is_err());
        let config = Settings::default().resolve().unwrap();
        assert_eq!(config.cloudwatch_flush.as_secs(), 60);
        assert!(config.cloudwatch_namespace.is_none());
    }

    #[test]
    fn debug_output_hides_the_database_password() {
        let settings = Settings {
            database_url: Some(SecretString::from("postgres://u:hunter2@db/lanyard")),
            ..Settings::default()
        };
        assert!(!format!("{settings:?}").contains("hunter2"));
        let config = settings.resolve().unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
