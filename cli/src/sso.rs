//! `lanyard login --sso`: sign in at the company's OpenID provider, the one the broker names
//! (`GET /v1/auth/sso`), as its public CLI client, and exchange the ID token for a Lanyard
//! token. Two ways to sign in:
//!
//! - authorization code with PKCE on a loopback redirect (RFC 7636, RFC 8252): the browser
//!   opens the provider's page and comes back to `http://127.0.0.1:<port>/callback`, a
//!   one-request listener of this process; `--no-browser` prints the URL instead;
//! - the device authorization grant (RFC 8628, `--device`): a URL and a code to enter on
//!   any device, for machines without a browser.
//!
//! The refresh token is kept encrypted like the credential cache; commands renew the Lanyard
//! token with it, without a prompt, when less than [`RENEW_BEFORE`] of it is left.

use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use lanyard_api::exchange::SsoSettings;
use serde::{Deserialize, Serialize};

mod callback;

/// A stored Lanyard token with less than this left is renewed before use.
pub const RENEW_BEFORE: Duration = Duration::from_secs(5 * 60);
/// How long a sign-in may take at the provider.
const SIGN_IN_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The provider's endpoints, from its discovery document.
#[derive(Debug, Clone, Deserialize)]
pub struct Provider {
    issuer: String,
    token_endpoint: String,
    authorization_endpoint: Option<String>,
    device_authorization_endpoint: Option<String>,
}

impl Provider {
    pub fn token_endpoint(&self) -> &str {
        &self.token_endpoint
    }
}

/// What the provider's token endpoint answers (no `Debug`: it holds secrets).
#[derive(Deserialize)]
pub struct Tokens {
    pub id_token: Option<String>,
    pub refresh_token: Option<String>,
}

/// What is kept to renew the login without a prompt (sealed in the cache directory; no
/// `Debug`: it holds the refresh token).
#[derive(Clone, Serialize, Deserialize)]
pub struct Renewal {
    /// The broker the login is for.
    pub server: String,
    pub issuer: String,
    pub client_id: String,
    pub token_endpoint: String,
    pub refresh_token: String,
    /// A digest of the Lanyard token this sign-in issued last: only that token is renewed
    /// (a token stored by a later plain `login` is left alone).
    pub token_digest: String,
}

/// A digest of a token, to recognise it without keeping it.
pub fn digest(token: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(token.trim().as_bytes())[..16])
}

/// `https://`, or `http://` to a loopback address only: the provider's addresses (and the
/// broker's, which names the provider) are where the refresh token and the browser go.
pub fn check_url(raw: &str, what: &str) -> anyhow::Result<()> {
    crate::client::require_https(raw, what)
}

/// Whether `err` is the provider refusing the refresh token itself.
pub fn is_invalid_grant(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<Refused>()
            .is_some_and(|r| r.error == "invalid_grant")
    })
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
    error_description: Option<String>,
}

/// The provider's discovery document, which must name the issuer the broker named.
pub async fn discover(http: &reqwest::Client, issuer: &str) -> anyhow::Result<Provider> {
    check_url(issuer, "the sign-in provider")?;
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let provider: Provider = http
        .get(&url)
        .send()
        .await
        .with_context(|| format!("reaching the sign-in provider {issuer}"))?
        .error_for_status()
        .with_context(|| format!("the sign-in provider {issuer} answered with an error"))?
        .json()
        .await
        .with_context(|| format!("{url} is not an OpenID discovery document"))?;
    if provider.issuer != issuer {
        bail!("the sign-in provider at {issuer} names another issuer in its discovery document");
    }
    check_url(issuer, "the sign-in provider")?;
    check_url(&provider.token_endpoint, "its token endpoint")?;
    for endpoint in [
        &provider.authorization_endpoint,
        &provider.device_authorization_endpoint,
    ]
    .into_iter()
    .flatten()
    {
        check_url(endpoint, "its sign-in endpoint")?;
    }
    Ok(provider)
}

/// The device authorization grant: `show` gets the URL and code for the user; then the
/// token endpoint is polled at the interval the provider asks for.
pub async fn device_sign_in(
    http: &reqwest::Client,
    provider: &Provider,
    sso: &SsoSettings,
    show: impl Fn(&str),
) -> anyhow::Result<Tokens> {
    #[derive(Deserialize)]
    struct DeviceAuthorization {
        device_code: String,
        user_code: String,
        verification_uri: String,
        verification_uri_complete: Option<String>,
        expires_in: u64,
        interval: Option<u64>,
    }
    let endpoint = provider
        .device_authorization_endpoint
        .as_deref()
        .context("the sign-in provider offers no device sign-in; leave out --device")?;
    let response = http
        .post(endpoint)
        .form(&[
            ("client_id", sso.client_id.as_str()),
            ("scope", &sso.scopes),
        ])
        .send()
        .await
        .context("asking the sign-in provider for a device code")?;
    let grant: DeviceAuthorization = oauth_answer(response).await?;
    show(&format!(
        "To sign in, open {} and enter the code {}",
        grant
            .verification_uri_complete
            .as_deref()
            .unwrap_or(&grant.verification_uri),
        grant.user_code
    ));
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(grant.expires_in).min(SIGN_IN_TIMEOUT);
    let mut interval = Duration::from_secs(grant.interval.unwrap_or(5).clamp(1, 60));
    loop {
        // RFC 8628 §3.5: the client waits the interval between polls (at most a minute,
        // and never past the deadline).
        let now = tokio::time::Instant::now();
        if now >= deadline {
            bail!("the device code expired before the sign-in finished; run the command again");
        }
        tokio::time::sleep(interval.min(deadline - now)).await;
        let response = http
            .post(&provider.token_endpoint)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", grant.device_code.as_str()),
                ("client_id", sso.client_id.as_str()),
            ])
            .send()
            .await
            .context("polling the sign-in provider")?;
        match oauth_answer::<Tokens>(response).await {
            Ok(tokens) => return Ok(tokens),
            Err(e) => match e.downcast_ref::<Refused>().map(|r| r.error.as_str()) {
                Some("authorization_pending") => {}
                Some("slow_down") => {
                    interval = (interval + Duration::from_secs(5)).min(Duration::from_secs(60));
                }
                _ => return Err(e),
            },
        }
    }
}

/// Authorization code with PKCE on a loopback redirect. `open_browser`: start the system's
/// browser on the URL (it is shown either way).
pub async fn browser_sign_in(
    http: &reqwest::Client,
    provider: &Provider,
    sso: &SsoSettings,
    open_browser: bool,
    show: impl Fn(&str),
) -> anyhow::Result<Tokens> {
    use sha2::Digest;
    let endpoint = provider
        .authorization_endpoint
        .as_deref()
        .context("the sign-in provider offers no browser sign-in; use --device")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("opening a loopback port for the sign-in redirect")?;
    let redirect_uri = format!(
        "http://127.0.0.1:{}/callback",
        listener.local_addr()?.port()
    );
    let verifier = random_b64(32)?;
    let state = random_b64(16)?;
    let challenge = b64(&sha2::Sha256::digest(verifier.as_bytes()));
    let mut url =
        reqwest::Url::parse(endpoint).context("the authorization endpoint is not a URL")?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &sso.client_id)
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("scope", &sso.scopes)
        .append_pair("state", &state)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("prompt", "consent");
    if open_browser && open(url.as_str()) {
        show(&format!(
            "Opened your browser to sign in. If it did not open, visit: {url}"
        ));
    } else {
        show(&format!("To sign in, open: {url}"));
    }
    let code = tokio::time::timeout(SIGN_IN_TIMEOUT, callback::code(listener, &state))
        .await
        .context("the sign-in did not finish within 10 minutes")??;
    let response = http
        .post(&provider.token_endpoint)
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect_uri.as_str()),
            ("client_id", sso.client_id.as_str()),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await
        .context("redeeming the sign-in code")?;
    oauth_answer(response).await
}

/// New tokens for a refresh token (which the provider may rotate).
pub async fn refresh(http: &reqwest::Client, renewal: &Renewal) -> anyhow::Result<Tokens> {
    let response = http
        .post(&renewal.token_endpoint)
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", renewal.refresh_token.as_str()),
            ("client_id", renewal.client_id.as_str()),
        ])
        .send()
        .await
        .context("reaching the sign-in provider")?;
    oauth_answer(response).await
}

/// The provider said no: its OAuth error code and description.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) error: String,
    pub(crate) description: Option<String>,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.error.as_str() {
            "access_denied" => "the sign-in was refused or aborted",
            "expired_token" => "the device code expired; run the command again",
            "invalid_grant" => "the sign-in is no longer valid",
            other => other,
        };
        write!(f, "{}", crate::text::one_line(what))?;
        if let Some(d) = &self.description {
            write!(f, " ({})", crate::text::one_line(d))?;
        }
        Ok(())
    }
}

impl std::error::Error for Refused {}

/// A successful answer as `T`, or the OAuth error as [`Refused`].
async fn oauth_answer<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
) -> anyhow::Result<T> {
    let status = response.status();
    if status.is_success() {
        return response
            .json()
            .await
            .context("the sign-in provider's answer is not what lanyard expects");
    }
    match response.json::<OAuthError>().await {
        Ok(e) => Err(Refused {
            error: e.error,
            description: e.error_description,
        }
        .into()),
        Err(_) => bail!("the sign-in provider answered {status}"),
    }
}

/// Starts the system's browser on `url`; whether that could be started.
fn open(url: &str) -> bool {
    let program = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    std::process::Command::new(program)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok()
}

fn random_b64(len: usize) -> anyhow::Result<String> {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(b64(&bytes))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
