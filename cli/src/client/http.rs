//! The CLI's HTTP client settings, and the rule for where secrets may go.

use std::time::Duration;

use anyhow::{Context, bail};

/// The CLI's HTTP client, for the broker and the sign-in provider alike: bounded waits, the
/// system roots plus `ca_file`, and no redirects, ever: a redirect would carry the bearer
/// token (or take credentials) wherever the broker, or whoever sits in front of it, points.
/// One is an error naming where it led (see `send`).
pub fn http(ca_file: Option<&std::path::Path>) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("lanyard-cli/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = ca_file {
        builder = builder.tls_certs_merge(ca_certificates(path)?);
    }
    Ok(builder.build()?)
}

/// Checks that `raw` is `https://`, or `http://` to a loopback address only: where a secret
/// (an OIDC token, a refresh token) or the browser goes. `what` names it in the error.
pub fn require_https(raw: &str, what: &str) -> anyhow::Result<()> {
    let url = reqwest::Url::parse(raw).with_context(|| format!("{what} is not a URL"))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => bail!(
            "{what} ({}) must be https (plain http only to a loopback address)",
            crate::config::redact_url(raw)
        ),
    }
}

/// The certificates of a CA file (PEM, one or more).
fn ca_certificates(path: &std::path::Path) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let pem = std::fs::read(path).with_context(|| format!("reading CA file {}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .with_context(|| format!("CA file {} is not PEM", path.display()))?;
    if certs.is_empty() {
        bail!("CA file {} holds no certificate", path.display());
    }
    Ok(certs)
}
