//! HTTP client of the broker API: base URL, bearer token, timeouts, the wire types of
//! `lanyard_api` in and out, problem+json errors turned into one readable line, and (in
//! `ids`) the ids that go into request paths, parsed by the broker's own rules first.

use anyhow::{Context, bail};
use lanyard_api::exchange::{GRANT_TYPE, TokenExchangeResponse};
use lanyard_api::problem::Health;
use lanyard_api::whoami::WhoAmI;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::text;

/// What a request carries.
enum Body<'a, B: ?Sized> {
    Empty,
    Json(&'a B),
    /// `application/x-www-form-urlencoded` (the token exchange, as OAuth wants it).
    Form(&'a [(&'a str, &'a str)]),
}

pub struct Client {
    http: reqwest::Client,
    base: reqwest::Url,
    token: Option<String>,
    debug: bool,
}

/// The broker said no: the HTTP status and its one-line explanation.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: u16,
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiFailure {}

/// The broker did not answer (connection refused, DNS, TLS, timeout).
#[derive(Debug)]
pub struct Unreachable(pub String);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unreachable {}

/// Whether `err` says the broker is down or failing (no answer, or a 5xx), as opposed to a
/// refusal (401, 403, 404, 410, ...) or an answer the CLI rejects.
pub fn is_unavailable(err: &anyhow::Error) -> bool {
    status_of(err).is_some_and(|s| s >= 500) || err.chain().any(|e| e.is::<Unreachable>())
}

/// The HTTP status of a broker refusal inside `err`, if that is what it is.
pub fn status_of(err: &anyhow::Error) -> Option<u16> {
    err.chain()
        .find_map(|e| e.downcast_ref::<ApiFailure>())
        .map(|f| f.status)
}

impl Client {
    pub fn new(
        server: &str,
        token: Option<String>,
        debug: bool,
        ca_file: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let base = reqwest::Url::parse(server).with_context(|| {
            format!("invalid server URL '{}'", crate::config::redact_url(server))
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            bail!("server URL must be http:// or https://");
        }
        let http = http(ca_file)?;
        if let Some(token) = &token {
            crate::log::secret(token);
        }
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

    async fn send<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Body<'_, B>,
        accept: &str,
    ) -> anyhow::Result<reqwest::Response> {
        let url = self.url(path)?;
        if self.debug {
            crate::log::debug(&format!(
                "{method} {} (token {})",
                redact(&url),
                if self.token.is_some() {
                    "[redacted]"
                } else {
                    "none"
                }
            ));
        }
        let mut request = self
            .http
            .request(method, url.clone())
            .header(reqwest::header::ACCEPT, accept);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        match body {
            Body::Empty => {}
            Body::Json(body) => request = request.json(body),
            Body::Form(fields) => request = request.form(fields),
        }
        let started = std::time::Instant::now();
        let response = request
            .send()
            .await
            .map_err(|e| Unreachable(unreachable(&self.base, &e)))?;
        if self.debug {
            crate::log::debug(&format!(
                "answered {} in {} ms",
                response.status(),
                started.elapsed().as_millis()
            ));
        }
        if response.status().is_success() {
            Ok(response)
        } else if response.status().is_redirection() {
            Err(redirect_refused(&url, &response).into())
        } else {
            Err(Self::error_of(response).await.into())
        }
    }

    /// A JSON request; the JSON answer, as `T`.
    async fn json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> anyhow::Result<T> {
        Ok(self.json_dated(method, path, body).await?.0)
    }

    /// A JSON request; the JSON answer, as `T`, and the broker's clock when it answered (its
    /// `Date` header, whole seconds).
    async fn json_dated<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> anyhow::Result<(T, Option<chrono::DateTime<chrono::Utc>>)> {
        let body = body.map_or(Body::Empty, Body::Json);
        let response = self.send(method, path, body, "application/json").await?;
        let date = date_of(&response);
        let answer = response.json().await.map_err(|e| {
            // JSON of another shape is told apart from an answer that is no JSON at all.
            let shape = std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<serde_json::Error>())
                .is_some_and(|s| s.is_data());
            let what = if shape {
                "is not what lanyard expects"
            } else {
                "is not JSON"
            };
            anyhow::Error::new(e).context(format!("the broker's answer to {path} {what}"))
        })?;
        Ok((answer, date))
    }

    /// `GET path`, answered as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.json(Method::GET, path, None::<&()>).await
    }

    /// `POST path` with `body` as JSON (none: no body at all), answered as `T`.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&B>,
    ) -> anyhow::Result<T> {
        self.json(Method::POST, path, body).await
    }

    /// `POST path` as [`post`](Self::post) does, with the broker's clock when it answered
    /// (its `Date` header, whole seconds), if it sent one.
    pub async fn post_dated<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&B>,
    ) -> anyhow::Result<(T, Option<chrono::DateTime<chrono::Utc>>)> {
        self.json_dated(Method::POST, path, body).await
    }

    /// `DELETE path`, answered as `T`.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.json(Method::DELETE, path, None::<&()>).await
    }

    /// A request answered as plain text.
    pub async fn text(&self, path: &str) -> anyhow::Result<String> {
        let response = self
            .send(Method::GET, path, Body::<()>::Empty, "text/plain")
            .await?;
        Ok(response.text().await?)
    }

    /// `GET /v1/auth/whoami`: who the broker takes the token for (it checks the token).
    pub async fn whoami(&self) -> anyhow::Result<WhoAmI> {
        self.get("/v1/auth/whoami")
            .await
            .context("checking the token with the broker")
    }

    /// `POST /v1/auth/token`: exchanges an OpenID issuer's token (a CI job's) for a Lanyard
    /// token (RFC 8693). Sends no bearer token: the subject token is the credential.
    pub async fn exchange(
        &self,
        subject_token: &str,
        subject_token_type: &str,
    ) -> anyhow::Result<TokenExchangeResponse> {
        let form = [
            ("grant_type", GRANT_TYPE),
            ("subject_token", subject_token),
            ("subject_token_type", subject_token_type),
        ];
        let response = self
            .send(
                Method::POST,
                "/v1/auth/token",
                Body::<()>::Form(&form),
                "application/json",
            )
            .await
            .context("exchanging the token with the broker")?;
        response
            .json()
            .await
            .context("the broker's answer to the token exchange is not what lanyard expects")
    }

    /// `GET /readyz`: `ok`, or why the broker is not ready.
    pub async fn readiness(&self) -> anyhow::Result<String> {
        Ok(self.probe().await?.0)
    }

    /// `GET /readyz`: the readiness, and the broker's clock (its `Date` header).
    pub async fn probe(&self) -> anyhow::Result<(String, Option<chrono::DateTime<chrono::Utc>>)> {
        let url = self.url("/readyz")?;
        if self.debug {
            crate::log::debug(&format!("GET {}", redact(&url)));
        }
        let response = self
            .http
            .get(url.clone())
            .send()
            .await
            .map_err(|e| Unreachable(unreachable(&self.base, &e)))?;
        let status = response.status();
        if status.is_redirection() {
            return Err(redirect_refused(&url, &response).into());
        }
        let date = date_of(&response);
        let text = response
            .json::<Health>()
            .await
            .map(|health| text::one_line(&health.status))
            .unwrap_or_else(|_| "unknown".to_owned());
        if status.is_success() {
            Ok((text, date))
        } else {
            bail!("broker is not ready ({status}): {text}")
        }
    }

    /// Turns an error response into one line: what the broker said, status, request id.
    async fn error_of(response: reqwest::Response) -> ApiFailure {
        let status = response.status();
        let problem = response.json::<ProblemFields>().await.ok();
        let code = problem
            .as_ref()
            .and_then(|p| p.status)
            .unwrap_or(status.as_u16());
        let what = problem
            .as_ref()
            .and_then(|p| p.detail.clone().or_else(|| p.title.clone()))
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
        let request_id = problem
            .and_then(|p| p.request_id)
            .map(|id| format!(", request id {}", text::one_line(&id)))
            .unwrap_or_default();
        let hint = match code {
            401 => "; log in again with `lanyard login`",
            _ => "",
        };
        ApiFailure {
            status: code,
            message: format!("{}{hint} (HTTP {code}{request_id})", one_line(&what)),
        }
    }
}

/// The fields of an error answer the CLI shows, each optional. Not
/// `lanyard_api::problem::Problem`, which requires `type`, `title`, `status` and `detail`:
/// an answer from whatever sits in front of the broker (a proxy, a gateway) may carry only
/// some of them, and what it says is still worth showing.
#[derive(Debug, Deserialize)]
struct ProblemFields {
    status: Option<u16>,
    detail: Option<String>,
    title: Option<String>,
    request_id: Option<String>,
}

/// The error for a redirect: where it led (its origin only), and that it was not followed.
fn redirect_refused(from: &reqwest::Url, response: &reqwest::Response) -> ApiFailure {
    let status = response.status().as_u16();
    let target = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .and_then(|l| from.join(l).ok())
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|| "an unreadable location".to_owned());
    ApiFailure {
        status,
        message: format!(
            "the broker at {} answered with a redirect to {} (HTTP {status}); lanyard does \
             not follow redirects, so neither the token nor credentials go elsewhere: use the \
             broker's own URL (--server, LANYARD_SERVER or `lanyard login --server`)",
            from.origin().ascii_serialization(),
            text::one_line(&target)
        ),
    }
}

/// The answer's `Date` header: the broker's clock (RFC 9110 §6.6.1), whole seconds.
fn date_of(response: &reqwest::Response) -> Option<chrono::DateTime<chrono::Utc>> {
    response
        .headers()
        .get(reqwest::header::DATE)
        .and_then(|d| d.to_str().ok())
        .and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok())
        .map(|d| d.with_timezone(&chrono::Utc))
}

/// A URL for messages and debug lines: without `user:password@`.
fn redact(url: &reqwest::Url) -> String {
    crate::config::redact_url(url.as_str())
}

/// Why the broker could not be reached, with what to do when its certificate is the cause.
fn unreachable(base: &reqwest::Url, err: &reqwest::Error) -> String {
    let cause = root_cause(err);
    let hint = if cause.to_lowercase().contains("certificate") {
        "; its TLS certificate is not trusted here: give the CA that signed it with \
         --ca-file or LANYARD_CA_FILE (or `lanyard login --ca-file`)"
    } else {
        ""
    };
    format!("cannot reach the broker at {}: {cause}{hint}", redact(base))
}

/// The innermost cause of a transport error (e.g. "Connection refused"), on one line.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &dyn std::error::Error = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    one_line(&cause.to_string())
}

fn one_line(line: &str) -> String {
    text::one_line(line)
}

mod http;
mod ids;
pub use http::{http, require_https};
pub use ids::{case_id, customer_id, role_name, session_id};

#[cfg(test)]
mod tests;
