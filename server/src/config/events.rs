//! `[cases]` and `[[webhooks]]` in the config file: the case system that decides whether a
//! support session may open, and the endpoints that receive the broker's events.
//!
//! ```toml
//! [cases]
//! verifier_url = "https://helpdesk.example.com/lanyard/verify"
//! secret = "…"                  # shared with the case system (HMAC-SHA256)
//! timeout = "5s"
//! when_unavailable = "refuse"   # or "allow": open, audited and flagged
//!
//! [[webhooks]]
//! name = "security-slack"
//! url = "https://hooks.slack.com/services/…"
//! format = "slack"              # or "lanyard" (default): the signed JSON event
//! events = ["session.requested", "session.approved"]
//! secret = "…"
//! max_attempts = 12
//! backoff_max = "10m"
//! timeout = "10s"
//! ```

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::domain::parse_duration;

/// Every event type the broker writes.
pub const EVENT_TYPES: [&str; 7] = [
    "session.requested",
    "session.approved",
    "session.denied",
    "session.opened",
    "session.revoked",
    "session.ended",
    "case.closed",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WhenUnavailable {
    /// No session while the case system cannot answer.
    #[default]
    Refuse,
    /// The session opens, audited and flagged `case_check: unavailable`.
    Allow,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasesSettings {
    verifier_url: String,
    secret: SecretString,
    timeout: Option<String>,
    #[serde(default)]
    when_unavailable: WhenUnavailable,
}

/// The case system, checked.
#[derive(Debug, Clone)]
pub struct CaseSystem {
    pub verifier_url: reqwest::Url,
    /// Signs the broker's questions and checks the case system's signed requests.
    pub secret: SecretString,
    pub timeout: Duration,
    pub when_unavailable: WhenUnavailable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// The event as JSON, signed (`Lanyard-Signature`).
    #[default]
    Lanyard,
    /// `{"text": "…"}` for Slack-compatible incoming webhooks (signed too).
    Slack,
}

impl WebhookFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookFormat::Lanyard => "lanyard",
            WebhookFormat::Slack => "slack",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    name: String,
    url: SecretString,
    secret: Option<SecretString>,
    events: Option<Vec<String>>,
    #[serde(default)]
    format: WebhookFormat,
    max_attempts: Option<u32>,
    backoff_max: Option<String>,
    timeout: Option<String>,
}

/// A webhook, checked. Its URL is a secret (Slack's carry their token) and never logged.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub name: String,
    pub url: SecretString,
    pub secret: Option<SecretString>,
    /// Empty: every event type.
    pub events: Vec<String>,
    pub format: WebhookFormat,
    /// After this many failed attempts a delivery is dead.
    pub max_attempts: u32,
    /// The longest wait between two attempts.
    pub backoff_max: Duration,
    pub timeout: Duration,
}

impl Webhook {
    pub fn wants(&self, event_type: &str) -> bool {
        self.events.is_empty() || self.events.iter().any(|e| e == event_type)
    }
}

pub const DEFAULT_CASE_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_WEBHOOK_ATTEMPTS: u32 = 12;
pub const DEFAULT_WEBHOOK_BACKOFF_MAX: Duration = Duration::from_secs(600);
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

fn duration(raw: Option<&str>, default: Duration, what: &str) -> anyhow::Result<Duration> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    let d = parse_duration(raw).with_context(|| format!("{what}: '{raw}'"))?;
    if d.is_zero() || d > Duration::from_secs(3600) {
        bail!("{what} must be between 1s and 1h");
    }
    Ok(d)
}

/// An endpoint the broker sends secrets or signed requests to: https, or plain http on a
/// loopback address only.
fn check_endpoint(raw: &str, what: &str) -> anyhow::Result<reqwest::Url> {
    // The URL may hold a token: errors name the field, never the value.
    let url = reqwest::Url::parse(raw).map_err(|_| anyhow::anyhow!("{what} is not a URL"))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if super::oidc::is_loopback(&url) => Ok(url),
        _ => bail!("{what} must be https (plain http only on a loopback address)"),
    }
}

impl CasesSettings {
    pub fn resolve(self) -> anyhow::Result<CaseSystem> {
        let verifier_url = check_endpoint(&self.verifier_url, "cases.verifier_url")?;
        if self.secret.expose_secret().len() < 16 {
            bail!("cases.secret must be at least 16 characters");
        }
        Ok(CaseSystem {
            verifier_url,
            secret: self.secret,
            timeout: duration(
                self.timeout.as_deref(),
                DEFAULT_CASE_TIMEOUT,
                "cases.timeout",
            )?,
            when_unavailable: self.when_unavailable,
        })
    }
}

/// Checks every `[[webhooks]]` table: unique names, known event types, sane limits.
pub fn resolve_webhooks(list: Vec<WebhookSettings>) -> anyhow::Result<Vec<Webhook>> {
    let mut names = HashSet::new();
    let mut webhooks = Vec::new();
    for w in list {
        let name = w.name.clone();
        let valid_name = (1..=64).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid_name {
            bail!("webhook name {name:?} must be 1-64 of letters, digits, -, _ and .");
        }
        if !names.insert(name.clone()) {
            bail!("webhook {name} is listed twice");
        }
        let what = |field: &str| format!("webhooks.{name}.{field}");
        check_endpoint(w.url.expose_secret(), &what("url"))?;
        if let Some(secret) = &w.secret
            && secret.expose_secret().len() < 16
        {
            bail!("{} must be at least 16 characters", what("secret"));
        }
        if w.secret.is_none() && w.format == WebhookFormat::Lanyard {
            bail!(
                "{} is required for the lanyard format (receivers check the signature)",
                what("secret")
            );
        }
        let events = w.events.unwrap_or_default();
        if let Some(unknown) = events.iter().find(|e| !EVENT_TYPES.contains(&e.as_str())) {
            bail!(
                "{}: unknown event type {unknown:?} (known: {})",
                what("events"),
                EVENT_TYPES.join(", ")
            );
        }
        let max_attempts = w.max_attempts.unwrap_or(DEFAULT_WEBHOOK_ATTEMPTS);
        if !(1..=100).contains(&max_attempts) {
            bail!("{} must be between 1 and 100", what("max_attempts"));
        }
        webhooks.push(Webhook {
            backoff_max: duration(
                w.backoff_max.as_deref(),
                DEFAULT_WEBHOOK_BACKOFF_MAX,
                &what("backoff_max"),
            )?,
            timeout: duration(
                w.timeout.as_deref(),
                DEFAULT_WEBHOOK_TIMEOUT,
                &what("timeout"),
            )?,
            name,
            url: w.url,
            secret: w.secret,
            events,
            format: w.format,
            max_attempts,
        });
    }
    Ok(webhooks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        cases: Option<CasesSettings>,
        #[serde(default)]
        webhooks: Vec<WebhookSettings>,
    }

    fn parse(text: &str) -> anyhow::Result<(Option<CaseSystem>, Vec<Webhook>)> {
        let file: File = toml::from_str(text)?;
        Ok((
            file.cases.map(CasesSettings::resolve).transpose()?,
            resolve_webhooks(file.webhooks)?,
        ))
    }

    #[test]
    fn the_documented_example_parses() {
        let (cases, hooks) = parse(
            r#"
            [cases]
            verifier_url = "https://helpdesk.example.com/lanyard/verify"
            secret = "0123456789abcdef0123"
            when_unavailable = "allow"
            [[webhooks]]
            name = "security-slack"
            url = "https://hooks.slack.com/services/T0/B0/XYZ"
            format = "slack"
            events = ["session.requested", "session.approved"]
            [[webhooks]]
            name = "audit-sink"
            url = "http://127.0.0.1:9000/hook"
            secret = "0123456789abcdef0123"
            backoff_max = "30s"
            "#,
        )
        .unwrap();
        let cases = cases.unwrap();
        assert_eq!(cases.when_unavailable, WhenUnavailable::Allow);
        assert_eq!(cases.timeout, DEFAULT_CASE_TIMEOUT);
        assert_eq!(hooks.len(), 2);
        assert!(hooks[0].wants("session.approved") && !hooks[0].wants("session.ended"));
        assert!(hooks[1].wants("session.ended"));
        assert_eq!(hooks[1].backoff_max, Duration::from_secs(30));
        // The URL (a secret for Slack) stays out of Debug output.
        assert!(!format!("{hooks:?}").contains("XYZ"));
    }

    #[test]
    fn bad_settings_are_refused_with_the_rule() {
        for (text, why) in [
            (
                "[cases]\nverifier_url = \"http://helpdesk.example.com/v\"\nsecret = \"0123456789abcdef\"",
                "must be https",
            ),
            (
                "[cases]\nverifier_url = \"https://h.example.com/v\"\nsecret = \"short\"",
                "at least 16",
            ),
            (
                "[[webhooks]]\nname = \"a\"\nurl = \"https://x.example.com\"",
                "secret is required",
            ),
            (
                "[[webhooks]]\nname = \"a\"\nurl = \"https://x.example.com\"\nsecret = \"0123456789abcdef\"\nevents = [\"session.exploded\"]",
                "unknown event type",
            ),
            (
                "[[webhooks]]\nname = \"a\"\nurl = \"https://x.example.com\"\nsecret = \"0123456789abcdef\"\n[[webhooks]]\nname = \"a\"\nurl = \"https://y.example.com\"\nsecret = \"0123456789abcdef\"",
                "listed twice",
            ),
            (
                "[[webhooks]]\nname = \"a\"\nurl = \"https://x.example.com/?token=SECRETX\"\nformat = \"slack\"\nmax_attempts = 0",
                "between 1 and 100",
            ),
        ] {
            let err = format!("{:#}", parse(text).unwrap_err());
            assert!(err.contains(why), "{text}: {err}");
            assert!(!err.contains("SECRETX"), "{err}");
        }
    }
}
