//! HTTP client of the broker API: base URL, bearer token, timeouts, and problem+json errors
//! turned into one readable line.

use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

pub struct Client {
    http: reqwest::Client,
    base: reqwest::Url,
    token: Option<String>,
    debug: bool,
}

/// The RFC 9457 problem document the broker answers errors with.
#[derive(Debug, Deserialize)]
struct Problem {
    status: Option<u16>,
    detail: Option<String>,
    request_id: Option<String>,
}

impl Client {
    pub fn new(server: &str, token: Option<String>, debug: bool) -> anyhow::Result<Self> {
        let base = reqwest::Url::parse(server)
            .with_context(|| format!("invalid server URL '{server}'"))?;
        if !matches!(base.scheme(), "http" | "https") {
            bail!("server URL must be http:// or https://");
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("lanyard-cli/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Client {
            http,
            base,
            token,
            debug,
        })
    }

    fn url(&self, path: &str) -> anyhow::Result<reqwest::Url> {
        self.base
            .join(path)
            .with_context(|| format!("building URL for {path}"))
    }

    /// `GET /readyz`: `ok`, or why the broker is not ready.
    pub async fn readiness(&self) -> anyhow::Result<String> {
        let url = self.url("/readyz")?;
        if self.debug {
            eprintln!(
                "debug: GET {url} (token {})",
                if self.token.is_some() {
                    "[redacted]"
                } else {
                    "none"
                }
            );
        }
        let response = self
            .http
            .get(url.clone())
            .send()
            .await
            .with_context(|| format!("cannot reach the broker at {}", self.base))?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let text = body
            .get("status")
            .and_then(|s| s.as_str())
            .unwrap_or("unknown")
            .to_owned();
        if status.is_success() {
            Ok(text)
        } else {
            bail!("broker is not ready ({status}): {text}")
        }
    }

    /// Turns an error response into one line: status, detail, request id.
    #[allow(dead_code)]
    pub async fn error_of(response: reqwest::Response) -> anyhow::Error {
        let status = response.status();
        match response.json::<Problem>().await {
            Ok(p) => anyhow::anyhow!(
                "broker answered {}: {}{}",
                p.status.unwrap_or(status.as_u16()),
                p.detail.unwrap_or_default(),
                p.request_id
                    .map(|id| format!(" (request id {id})"))
                    .unwrap_or_default()
            ),
            Err(_) => anyhow::anyhow!("broker answered {status}"),
        }
    }
}
