//! `[oidc]` in the config file: the OpenID issuers (company SSO, CI systems) whose tokens
//! `POST /v1/auth/token` exchanges for short-lived Lanyard tokens, and their bindings.
//!
//! ```toml
//! [[oidc.issuers]]
//! issuer = "https://token.actions.githubusercontent.com"
//! audiences = ["lanyard"]
//! [[oidc.issuers.bindings]]
//! claims = { repository = "acme/billing-*", ref = "refs/heads/main" }
//! role = "service"
//! customers = ["acme-corp"]
//! subject_claim = "job_workflow_ref"
//! ttl = "15m"
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::domain::{Binding, BindingSpec, TokenRole, parse_duration};

/// Keys fetched from an issuer are used this long before they are fetched again.
pub const DEFAULT_KEYS_TTL: Duration = Duration::from_secs(300);
/// While the issuer cannot be reached, its last keys keep serving this long past their TTL.
pub const DEFAULT_KEYS_STALE: Duration = Duration::from_secs(3600);
/// Fetches caused by a token naming an unknown key, at most one per this interval.
pub const DEFAULT_KEYS_MIN_REFRESH: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSettings {
    #[serde(default)]
    pub issuers: Vec<IssuerSettings>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSettings {
    issuer: String,
    audiences: Vec<String>,
    ca_file: Option<PathBuf>,
    /// The OAuth client `lanyard login --sso` signs in with (a public client: device flow
    /// and PKCE); one of `audiences`. At most one issuer names one.
    cli_client_id: Option<String>,
    #[serde(default)]
    bindings: Vec<BindingSettings>,
    keys_ttl: Option<String>,
    keys_stale: Option<String>,
    keys_min_refresh: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct BindingSettings {
    name: Option<String>,
    #[serde(default)]
    claims: BTreeMap<String, String>,
    role: TokenRole,
    customers: Option<Vec<String>>,
    customers_claim: Option<String>,
    subject_claim: Option<String>,
    subject_prefix: Option<String>,
    ttl: Option<String>,
}

/// A trusted issuer, checked.
#[derive(Debug, Clone)]
pub struct OidcIssuer {
    /// Exactly as tokens carry it in `iss`.
    pub issuer: String,
    pub audiences: Vec<String>,
    /// Extra roots (PEM) for the issuer's TLS certificate, beside the system's.
    pub ca_file: Option<PathBuf>,
    /// The client `lanyard login --sso` uses at this issuer.
    pub cli_client_id: Option<String>,
    pub bindings: Vec<Binding>,
    pub keys_ttl: Duration,
    pub keys_stale: Duration,
    pub keys_min_refresh: Duration,
}

impl OidcSettings {
    pub fn resolve(self) -> anyhow::Result<Vec<OidcIssuer>> {
        let mut seen = std::collections::HashSet::new();
        let mut issuers = Vec::new();
        for settings in self.issuers {
            let name = settings.issuer.clone();
            if !seen.insert(name.clone()) {
                bail!("oidc issuer {name} is listed twice");
            }
            issuers.push(
                settings
                    .resolve()
                    .with_context(|| format!("oidc issuer {name}"))?,
            );
        }
        if issuers.iter().filter(|i| i.cli_client_id.is_some()).count() > 1 {
            bail!(
                "cli_client_id is set for more than one oidc issuer: `lanyard login --sso` needs one"
            );
        }
        Ok(issuers)
    }
}

impl IssuerSettings {
    fn resolve(self) -> anyhow::Result<OidcIssuer> {
        check_issuer_url(&self.issuer)?;
        if self.audiences.is_empty() || self.audiences.iter().any(String::is_empty) {
            bail!("audiences must name at least one audience (the broker's), none empty");
        }
        if let Some(client) = &self.cli_client_id
            && !self.audiences.contains(client)
        {
            bail!("cli_client_id {client} must be one of audiences (its ID tokens are for it)");
        }
        if let Some(ca) = &self.ca_file
            && !ca.is_file()
        {
            bail!("ca_file {} is not a readable file", ca.display());
        }
        let duration = |field: &str, raw: Option<&str>, default: Duration| match raw {
            None => Ok(default),
            Some(raw) => parse_duration(raw).with_context(|| field.to_owned()),
        };
        // Subjects from this issuer are `<issuer without scheme>:<claim>` unless a binding
        // says otherwise: they cannot pass for another issuer's or an operator's subjects.
        let default_prefix = crate::domain::binding::subject_prefix_of(&self.issuer);
        let bindings = self
            .bindings
            .into_iter()
            .enumerate()
            .map(|(i, b)| {
                let name = b.name.clone().unwrap_or_else(|| format!("#{}", i + 1));
                let ttl = b
                    .ttl
                    .as_deref()
                    .map(parse_duration)
                    .transpose()
                    .with_context(|| format!("binding {name}: ttl"))?;
                Binding::new(BindingSpec {
                    name: name.clone(),
                    claims: &b.claims,
                    role: b.role,
                    customers: b.customers.as_deref(),
                    customers_claim: b.customers_claim.as_deref(),
                    subject_claim: b.subject_claim.as_deref(),
                    subject_prefix: b.subject_prefix.clone().unwrap_or(default_prefix.clone()),
                    ttl,
                })
                .map_err(|e| anyhow::anyhow!("binding {name}: {e}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if bindings.is_empty() {
            tracing::warn!(issuer = %self.issuer, "oidc issuer has no bindings: its tokens are refused");
        }
        let keys_ttl = duration("keys_ttl", self.keys_ttl.as_deref(), DEFAULT_KEYS_TTL)?;
        let keys_min_refresh = duration(
            "keys_min_refresh",
            self.keys_min_refresh.as_deref(),
            DEFAULT_KEYS_MIN_REFRESH,
        )?;
        // The grammar refuses 0; at least a second between fetches, and keys kept at least
        // as long as the interval between fetches.
        if keys_min_refresh < Duration::from_secs(1) || keys_ttl < keys_min_refresh {
            bail!("keys_min_refresh must be at least 1s, and keys_ttl at least keys_min_refresh");
        }
        Ok(OidcIssuer {
            keys_ttl,
            keys_stale: duration("keys_stale", self.keys_stale.as_deref(), DEFAULT_KEYS_STALE)?,
            keys_min_refresh,
            issuer: self.issuer,
            audiences: self.audiences,
            ca_file: self.ca_file,
            cli_client_id: self.cli_client_id,
            bindings,
        })
    }
}

/// `https://`, or `http://` on a loopback address (tests and local trials); no query, no
/// fragment, no user information.
pub fn check_issuer_url(raw: &str) -> anyhow::Result<()> {
    let url = reqwest::Url::parse(raw).with_context(|| format!("'{raw}' is not a URL"))?;
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        bail!("'{raw}' must not carry a query, a fragment or user information");
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&url) => Ok(()),
        "http" => bail!(
            "'{raw}' is plain http: only https issuers are trusted (http only on a loopback address)"
        ),
        other => bail!("'{raw}' has scheme {other}: only https issuers are trusted"),
    }
}

pub(super) fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<Vec<OidcIssuer>> {
        #[derive(Deserialize)]
        struct File {
            oidc: OidcSettings,
        }
        toml::from_str::<File>(text)?.oidc.resolve()
    }

    #[test]
    fn the_documented_example_parses() {
        let issuers = parse(
            r#"
            [[oidc.issuers]]
            issuer = "https://token.actions.githubusercontent.com"
            audiences = ["lanyard"]
            [[oidc.issuers.bindings]]
            claims = { repository = "acme/billing-*", ref = "refs/heads/main" }
            role = "service"
            customers = ["acme-corp"]
            subject_claim = "job_workflow_ref"
            ttl = "15m"
            "#,
        )
        .unwrap();
        assert_eq!(issuers.len(), 1);
        assert_eq!(issuers[0].bindings[0].name, "#1");
        assert_eq!(
            issuers[0].bindings[0].subject_prefix,
            "token.actions.githubusercontent.com:"
        );
        assert_eq!(issuers[0].bindings[0].ttl, Duration::from_secs(900));
        assert_eq!(issuers[0].keys_ttl, DEFAULT_KEYS_TTL);
    }

    #[test]
    fn plain_http_is_only_for_loopback_and_audiences_are_required() {
        assert!(check_issuer_url("http://127.0.0.1:8000").is_ok());
        assert!(check_issuer_url("http://localhost:8000/realms/x").is_ok());
        assert!(check_issuer_url("http://[::1]:8000").is_ok());
        assert!(check_issuer_url("http://idp.example.com").is_err());
        assert!(check_issuer_url("ftp://idp.example.com").is_err());
        assert!(check_issuer_url("https://idp.example.com?x=1").is_err());
        let no_audience =
            parse("[[oidc.issuers]]\nissuer = \"https://idp.example.com\"\naudiences = []\n");
        assert!(no_audience.is_err());
        let twice = parse(
            "[[oidc.issuers]]\nissuer = \"https://a.example\"\naudiences = [\"l\"]\n\
             [[oidc.issuers]]\nissuer = \"https://a.example\"\naudiences = [\"l\"]\n",
        );
        assert!(twice.is_err());
    }
}
