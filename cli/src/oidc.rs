//! CI without secrets: the OIDC token a CI system hands each job, exchanged at the broker
//! (`POST /v1/auth/token`) for a short-lived Lanyard token. Sources, first found wins:
//!
//! - `LANYARD_OIDC_TOKEN`: the token itself (GitLab CI `id_tokens`, Buildkite
//!   `buildkite-agent oidc request-token`, anything that can set a variable);
//! - `LANYARD_OIDC_TOKEN_FILE`: a file holding it, read on every use (Kubernetes projected
//!   service-account tokens, which the kubelet rotates in place);
//! - GitHub Actions: `ACTIONS_ID_TOKEN_REQUEST_URL` and `ACTIONS_ID_TOKEN_REQUEST_TOKEN`
//!   (present with `permissions: id-token: write`), asked for a token whose audience is
//!   `LANYARD_OIDC_AUDIENCE` (default `lanyard`).
//!
//! `LANYARD_TOKEN` (or `--token`) still wins over all of them: an explicit Lanyard token is
//! the user's choice.

use anyhow::{Context, bail};
use serde::Deserialize;

/// The audience asked of GitHub when `LANYARD_OIDC_AUDIENCE` is not set; the broker's
/// `audiences` for the issuer must list it.
pub const DEFAULT_AUDIENCE: &str = "lanyard";

/// An OIDC token from the environment, and where it came from (for messages).
pub struct CiToken {
    pub token: String,
    pub source: &'static str,
}

/// Whether the environment offers an OIDC token (without reading it).
pub fn offered() -> bool {
    ["LANYARD_OIDC_TOKEN", "LANYARD_OIDC_TOKEN_FILE"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
        || github_request().is_some()
}

/// The OIDC token the environment holds without asking anyone (the variable or the file);
/// `None` for GitHub Actions, whose token comes from a request.
pub fn held() -> Option<String> {
    if let Some(token) = var("LANYARD_OIDC_TOKEN") {
        return Some(token.trim().to_owned());
    }
    let path = var("LANYARD_OIDC_TOKEN_FILE")?;
    std::fs::read_to_string(path)
        .ok()
        .map(|t| t.trim().to_owned())
}

/// The OIDC token the environment offers, if any. A source that is set but unusable (an
/// empty file, GitHub refusing) is an error, not a fall-through to another identity.
pub async fn from_environment(debug: bool) -> anyhow::Result<Option<CiToken>> {
    if let Some(token) = var("LANYARD_OIDC_TOKEN") {
        return Ok(Some(CiToken {
            token: checked(token.trim(), "LANYARD_OIDC_TOKEN")?,
            source: "LANYARD_OIDC_TOKEN",
        }));
    }
    if let Some(path) = var("LANYARD_OIDC_TOKEN_FILE") {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading LANYARD_OIDC_TOKEN_FILE {path}"))?;
        return Ok(Some(CiToken {
            token: checked(text.trim(), "the file in LANYARD_OIDC_TOKEN_FILE")?,
            source: "LANYARD_OIDC_TOKEN_FILE",
        }));
    }
    if let Some((url, bearer)) = github_request() {
        let audience = var("LANYARD_OIDC_AUDIENCE").unwrap_or_else(|| DEFAULT_AUDIENCE.into());
        if debug {
            crate::log::debug(&format!(
                "asking GitHub Actions for an OIDC token (audience {audience})"
            ));
        }
        return Ok(Some(CiToken {
            token: github_token(&url, &bearer, &audience).await?,
            source: "GitHub Actions (ACTIONS_ID_TOKEN_REQUEST_URL)",
        }));
    }
    Ok(None)
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn github_request() -> Option<(String, String)> {
    Some((
        var("ACTIONS_ID_TOKEN_REQUEST_URL")?,
        var("ACTIONS_ID_TOKEN_REQUEST_TOKEN")?,
    ))
}

/// A compact JWT: three base64url parts. Anything else is refused before it is sent.
fn checked(token: &str, what: &str) -> anyhow::Result<String> {
    let parts = token.split('.').count();
    let charset = token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if token.is_empty() || parts != 3 || !charset {
        bail!("{what} does not hold a JWT (three base64url parts separated by dots)");
    }
    Ok(token.to_owned())
}

#[derive(Deserialize)]
struct GitHubAnswer {
    value: String,
}

/// GitHub's token request: `GET <url>&audience=<aud>` with the request token as bearer
/// (<https://docs.github.com/en/actions/reference/security/oidc>).
async fn github_token(url: &str, bearer: &str, audience: &str) -> anyhow::Result<String> {
    let mut url = reqwest::Url::parse(url).context("ACTIONS_ID_TOKEN_REQUEST_URL is not a URL")?;
    url.query_pairs_mut().append_pair("audience", audience);
    let http = crate::client::http(None)?;
    let response = http
        .get(url)
        .bearer_auth(bearer)
        .send()
        .await
        .context("asking GitHub Actions for an OIDC token")?;
    let status = response.status();
    if !status.is_success() {
        bail!(
            "GitHub Actions refused the OIDC token request (HTTP {status}); does the workflow \
             grant `permissions: id-token: write`?"
        );
    }
    let answer: GitHubAnswer = response
        .json()
        .await
        .context("GitHub Actions' OIDC answer is not what lanyard expects")?;
    checked(answer.value.trim(), "GitHub Actions' OIDC answer")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_compact_jwts_are_taken() {
        assert!(checked("aaa.bbb.ccc", "x").is_ok());
        assert!(checked("aaa.bbb", "x").is_err());
        assert!(checked("aaa.bbb.ccc\nrm -rf", "x").is_err());
        assert!(checked("", "x").is_err());
    }
}
