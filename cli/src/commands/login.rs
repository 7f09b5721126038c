//! `lanyard login`: the token read (file, environment or stdin), checked with the broker and
//! stored; and what a token says about itself.

use std::io::{IsTerminal, Read};
use std::path::Path;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use lanyard_api::exchange::{SsoSettings, TOKEN_TYPE_ID_TOKEN};

use super::{Ctx, print, print_json, rfc3339};
use crate::client::Client;
use crate::config;
use crate::credentials;
use crate::sso;

/// Reads the token for `login`: --token-file, else --token / LANYARD_TOKEN, else stdin.
fn login_token(ctx: &Ctx, file: Option<&Path>) -> anyhow::Result<String> {
    let raw = match file {
        Some(path) if path == Path::new("-") => read_stdin()?,
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the token from {}", path.display()))?,
        None => match &ctx.token {
            Some(t) => t.clone(),
            None => {
                if std::io::stdin().is_terminal() {
                    eprint!("Paste the API token and press Enter: ");
                }
                read_stdin()?
            }
        },
    };
    let token = raw.trim().to_owned();
    if token.is_empty() {
        bail!("no token given: pipe it on stdin, use --token-file, or set LANYARD_TOKEN");
    }
    if token.chars().any(char::is_whitespace) {
        bail!("the token must be one line without spaces");
    }
    Ok(token)
}

fn read_stdin() -> anyhow::Result<String> {
    let mut line = String::new();
    if std::io::stdin().is_terminal() {
        std::io::stdin().read_line(&mut line)?;
    } else {
        std::io::stdin().read_to_string(&mut line)?;
    }
    Ok(line)
}

/// The claims of a JWT the CLI shows (it cannot verify the signature; the broker does).
pub struct TokenInfo {
    pub subject: Option<String>,
    pub role: Option<String>,
    pub expires: Option<DateTime<Utc>>,
}

pub fn token_info(token: &str) -> Option<TokenInfo> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    Some(TokenInfo {
        subject: claims["sub"].as_str().map(str::to_owned),
        role: claims["role"].as_str().map(str::to_owned),
        expires: claims["exp"]
            .as_i64()
            .and_then(|s| DateTime::from_timestamp(s, 0)),
    })
}

pub fn login(ctx: &Ctx, token_file: Option<&Path>, no_verify: bool) -> anyhow::Result<()> {
    let server = ctx
        .server
        .clone()
        .context("login needs the broker URL: lanyard login --server URL")?;
    let token = login_token(ctx, token_file)?;
    let info = token_info(&token);
    if let Some(expires) = info.as_ref().and_then(|i| i.expires)
        && expires <= Utc::now()
    {
        bail!(
            "the token expired at {}; ask for a new one",
            rfc3339(expires)
        );
    }
    // A --ca-file given here is kept with the login, for the commands the AWS CLI runs.
    let ca_file = ctx.ca_file_flag().map(std::path::absolute).transpose()?;
    let client = Client::new(&server, Some(token.clone()), ctx.debug, ca_file.as_deref())?;
    // The broker checks the token (signature, record, revocation) before anything is stored:
    // a token it refuses is not a login.
    let checked = if no_verify {
        None
    } else {
        Some(
            credentials::runtime()?
                .block_on(client.whoami())
                .context("the broker does not accept this token; nothing was stored")?,
        )
    };
    ctx.store.update(|config| {
        config.server = Some(server.clone());
        config.ca_file = ca_file.clone();
        ctx.store.save_token(&token)
    })?;
    // This token is not the one an earlier SSO sign-in renews.
    forget_sso(ctx)?;
    let (who, role, expires) = match &checked {
        Some(w) => (w.subject.clone(), w.role.to_string(), Some(w.expires_at)),
        None => (
            info.as_ref()
                .and_then(|i| i.subject.clone())
                .unwrap_or_else(|| "?".into()),
            info.as_ref()
                .and_then(|i| i.role.clone())
                .unwrap_or_else(|| "?".into()),
            info.as_ref().and_then(|i| i.expires),
        ),
    };
    let expires = expires.map(rfc3339);
    let server = config::redact_url(&server);
    if ctx.json_output() {
        return print_json(&json!({
            "server": server, "subject": who, "role": role, "token_expires": expires,
            "customers": checked.as_ref().and_then(|w| w.customers.clone()),
            "verified": checked.is_some(),
            "config": ctx.store.config_path(), "token_file": ctx.store.token_path(),
        }));
    }
    let limited = checked
        .as_ref()
        .and_then(|w| w.customers.as_ref())
        .map(|c| format!(" for customers {}", c.join(", ")))
        .unwrap_or_default();
    print(&format!(
        "{} {server} as {who} ({role}{limited}){}.\nToken stored in {} (mode 0600).\n",
        if checked.is_some() {
            "Logged in to"
        } else {
            "Stored a login (not checked with the broker: --no-verify) for"
        },
        expires
            .map(|e| format!(", token valid until {e}"))
            .unwrap_or_default(),
        ctx.store.token_path().display()
    ))
}

/// The cache entry that holds the renewal of an SSO login.
const RENEWAL: &str = "sso-login";

/// `lanyard login --sso`: signs in at the broker's OpenID provider (browser with PKCE, or
/// `device`), exchanges the ID token at the broker, stores the Lanyard token as `login`
/// does and the refresh token sealed in the cache directory for silent renewal.
pub fn login_sso(ctx: &Ctx, device: bool, open_browser: bool) -> anyhow::Result<()> {
    let server = ctx
        .server
        .clone()
        .context("login needs the broker URL: lanyard login --sso --server URL")?;
    // The broker names the provider: a broker reached over plain http could be anyone's.
    sso::check_url(&server, "the broker URL")?;
    let ca_file = ctx.ca_file_flag().map(std::path::absolute).transpose()?;
    let broker = Client::new(&server, None, ctx.debug, ca_file.as_deref())?;
    let runtime = credentials::runtime()?;
    let (token, renewal) = runtime.block_on(async {
        let settings: SsoSettings = broker
            .get("/v1/auth/sso")
            .await
            .context("asking the broker where to sign in")?;
        let http = crate::client::http(ca_file.as_deref())?;
        let provider = sso::discover(&http, &settings.issuer).await?;
        let show = |line: &str| eprintln!("{}", crate::text::one_line(line));
        show(&format!(
            "Signing in to {} at {}",
            config::origin(&server)?,
            settings.issuer
        ));
        let tokens = if device {
            sso::device_sign_in(&http, &provider, &settings, show).await?
        } else {
            sso::browser_sign_in(&http, &provider, &settings, open_browser, show).await?
        };
        let id_token = tokens
            .id_token
            .clone()
            .context("the sign-in provider sent no ID token (is `openid` among the scopes?)")?;
        let answer = broker
            .exchange(&id_token, TOKEN_TYPE_ID_TOKEN)
            .await
            .context("the broker did not accept the sign-in")?;
        let renewal = tokens
            .refresh_token
            .clone()
            .map(|refresh_token| sso::Renewal {
                server: server.clone(),
                issuer: settings.issuer.clone(),
                client_id: settings.client_id.clone(),
                token_endpoint: provider.token_endpoint().to_owned(),
                refresh_token,
                token_digest: sso::digest(&answer.access_token),
            });
        anyhow::Ok((answer.access_token, renewal))
    })?;
    let checked = runtime.block_on(
        Client::new(&server, Some(token.clone()), ctx.debug, ca_file.as_deref())?.whoami(),
    )?;
    let cache = ctx.cache()?;
    let _lock = cache.lock(RENEWAL)?;
    ctx.store.update(|config| {
        config.server = Some(server.clone());
        config.ca_file = ca_file.clone();
        ctx.store.save_token(&token)
    })?;
    let renews = match &renewal {
        Some(renewal) => {
            cache.write_value(RENEWAL, renewal)?;
            "; it renews itself until the sign-in expires"
        }
        None => {
            cache.remove(RENEWAL)?;
            "; the provider gave no refresh token, so sign in again when it expires"
        }
    };
    print(&format!(
        "Logged in to {} as {} ({}) through single sign-on; token valid until {}{renews}.\n",
        config::redact_url(&server),
        checked.subject,
        checked.role,
        rfc3339(checked.expires_at)
    ))
}

/// Forgets the SSO renewal (a plain `login` replaced the token it renews).
pub fn forget_sso(ctx: &Ctx) -> anyhow::Result<()> {
    if let Ok(cache) = ctx.cache() {
        let _lock = cache.lock(RENEWAL)?;
        cache.remove(RENEWAL)?;
    }
    Ok(())
}

/// The stored login's token, renewed first through its SSO sign-in when less than
/// `sso::RENEW_BEFORE` of it is left. Only the token that sign-in issued (by its digest) is
/// renewed, only for the broker it was issued by, one process at a time: the others find
/// the renewed token. A failed renewal warns while the token has time left and fails in one
/// line once it has none.
pub fn renewed_login_token(ctx: &Ctx, server: &str, token: String) -> anyhow::Result<String> {
    let left = |token: &str| {
        token_info(token)
            .and_then(|i| i.expires)
            .map(|e| e - Utc::now())
    };
    let due = |token: &str| {
        left(token).is_some_and(|l| l.to_std().map_or(true, |l| l < sso::RENEW_BEFORE))
    };
    if !due(&token) {
        return Ok(token);
    }
    let Ok(cache) = ctx.cache() else {
        return Ok(token);
    };
    if cache.read_value::<sso::Renewal>(RENEWAL).is_none() {
        return Ok(token);
    }
    let _lock = cache.lock(RENEWAL)?;
    // What is stored now (another process may have renewed, or logged in elsewhere, while
    // this one waited), and whether the renewal is for exactly that token and broker.
    let stored = ctx.config()?;
    let same_broker = |url: &str| {
        config::origin(url)
            .ok()
            .is_some_and(|o| config::origin(server).is_ok_and(|s| s == o))
    };
    let Some(token) = ctx.store.token()? else {
        bail!(
            "no API token: run `lanyard login --sso --server {}`",
            config::redact_url(server)
        );
    };
    if !stored.server.as_deref().is_some_and(same_broker) || !due(&token) {
        return Ok(token);
    }
    let Some(renewal) = cache.read_value::<sso::Renewal>(RENEWAL) else {
        return Ok(token);
    };
    if !same_broker(&renewal.server) || renewal.token_digest != sso::digest(&token) {
        return Ok(token);
    }
    ctx.note("renewing the SSO login with its refresh token");
    let renewed = credentials::runtime()?.block_on(async {
        let http = crate::client::http(ctx.ca_file_in_effect().as_deref())?;
        let tokens = match sso::refresh(&http, &renewal).await {
            Ok(tokens) => tokens,
            Err(e) => {
                // A refresh token the provider no longer takes is of no use again.
                if sso::is_invalid_grant(&e) {
                    cache.remove(RENEWAL)?;
                }
                return Err(e);
            }
        };
        // A rotated refresh token is kept at once: the old one may be dead already.
        let mut renewal = renewal.clone();
        if let Some(rotated) = &tokens.refresh_token {
            renewal.refresh_token = rotated.clone();
            cache.write_value(RENEWAL, &renewal)?;
        }
        let id_token = tokens
            .id_token
            .clone()
            .context("the sign-in provider sent no ID token")?;
        let answer = ctx
            .connect(server, None)?
            .exchange(&id_token, TOKEN_TYPE_ID_TOKEN)
            .await?;
        anyhow::Ok((answer.access_token, renewal))
    });
    let (token, renewal) = match renewed {
        Ok(renewed) => renewed,
        Err(e) => {
            let why = format!(
                "the SSO login could not be renewed ({}): run `lanyard login --sso --server {}`",
                crate::text::one_line(&format!("{e:#}")),
                config::redact_url(server)
            );
            // A token with time left still serves; one that has run out cannot.
            if left(&token).is_some_and(|l| l > chrono::TimeDelta::seconds(30)) {
                eprintln!("lanyard: warning: {why}");
                return Ok(token);
            }
            bail!("{why}");
        }
    };
    ctx.store.update(|config| {
        if !config.server.as_deref().is_some_and(same_broker) {
            bail!("the login changed to another broker while renewing; nothing was stored");
        }
        ctx.store.save_token(&token)
    })?;
    cache.write_value(
        RENEWAL,
        &sso::Renewal {
            token_digest: sso::digest(&token),
            ..renewal
        },
    )?;
    Ok(token)
}
