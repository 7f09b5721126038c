//! `lanyard login`: the token read (file, environment or stdin), checked with the broker and
//! stored; and what a token says about itself.

use std::io::{IsTerminal, Read};
use std::path::Path;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{Ctx, print, print_json, rfc3339};
use crate::client::Client;
use crate::config;
use crate::credentials;

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
