//! Settings: command-line flags, `LANYARD_*` environment variables and an optional TOML file
//! (`--config`), in that order of precedence, over the defaults below. `--help` documents
//! every setting; secrets are redacted in `Debug` output and never logged.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::ValueEnum;
use secrecy::SecretString;
use serde::Deserialize;

use crate::domain::ExternalId;
use events::{CaseSystem, Webhook};
use oidc::OidcIssuer;

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
pub const DEFAULT_AUTH_CACHE_MS: u64 = 500;
pub const DEFAULT_EXPORT_MAX_SECS: u64 = 3600;
pub const DEFAULT_APPROVAL_WINDOW_SECS: u32 = 3600;

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
    /// Where iam:SimulatePrincipalPolicy goes; `None`: `aws_endpoint_url`, else real AWS.
    pub iam_endpoint_url: Option<String>,
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
    /// How long token and session state read from the database is acted on.
    pub auth_cache: Duration,
    /// Trusted OpenID issuers (`[[oidc.issuers]]`); none: no token exchange.
    pub oidc_issuers: Vec<OidcIssuer>,
    /// The case system support sessions are checked with (`[cases]`); none: case IDs are
    /// taken as given.
    pub cases: Option<CaseSystem>,
    /// Where events are delivered (`[[webhooks]]`).
    pub webhooks: Vec<Webhook>,
    /// How long a session request waits for approval before it expires.
    pub approval_window: Duration,
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
        let auth_cache_ms = s.auth_cache_ms.unwrap_or(DEFAULT_AUTH_CACHE_MS);
        if !(1..=600_000).contains(&auth_cache_ms) {
            bail!("auth_cache_ms must be between 1 and 600000");
        }
        let oidc_issuers = s.oidc.unwrap_or_default().resolve()?;
        let cases = s.cases.map(events::CasesSettings::resolve).transpose()?;
        let webhooks = events::resolve_webhooks(s.webhooks.unwrap_or_default())?;
        let approval_window = secs(s.approval_window_secs, DEFAULT_APPROVAL_WINDOW_SECS);
        if !(10..=7 * 86_400).contains(&approval_window.as_secs()) {
            bail!("approval_window_secs must be between 10 and 604800 (7 days)");
        }
        Ok(Config {
            cases,
            webhooks,
            approval_window,
            oidc_issuers,
            auth_cache: Duration::from_millis(auth_cache_ms),
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
            iam_endpoint_url: s.iam_endpoint_url.filter(|u| !u.is_empty()),
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
            iam_endpoint_url: self.iam_endpoint_url.or(lower.iam_endpoint_url),
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
            auth_cache_ms: self.auth_cache_ms.or(lower.auth_cache_ms),
            oidc: self.oidc.or(lower.oidc),
            cases: self.cases.or(lower.cases),
            webhooks: self.webhooks.or(lower.webhooks),
            approval_window_secs: self.approval_window_secs.or(lower.approval_window_secs),
        }
    }
}

pub(crate) fn parse_secret(raw: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(raw))
}

fn parse_addr(raw: &str) -> anyhow::Result<SocketAddr> {
    raw.parse()
        .with_context(|| format!("invalid address {raw}"))
}

pub mod events;
pub mod oidc;
mod settings;
#[cfg(test)]
mod tests;

pub use settings::Settings;
