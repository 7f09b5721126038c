//! The commands: what each asks the broker, what it writes, and what it prints. Stdout
//! carries only the command's result; diagnostics go to stderr. This module holds what they
//! share (global options, output, the credential cache's keys); each group of commands has a
//! module of its own.

use std::io::Write;

use anyhow::{Context, bail};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::Output;
use crate::cache::CredentialCache;
use crate::client::Client;
use crate::config::{self, Config, Identity, Kind, Profile, Store, TokenSource};
use crate::credentials;

mod access;
mod approval;
mod creds;
mod login;
mod migrate;
mod obtain;
mod profiles;
mod queries;
mod runlog;
mod validate;

pub use access::{setup_customer, support_access};
pub use approval::{Verdict, sessions_decide, sessions_pending, sessions_wait};
pub use creds::{check, credential_process, export, refresh};
pub use login::{login, login_sso, token_info};
pub use migrate::migrate;
use obtain::obtain;
pub use obtain::{Target, cache_key};
pub use profiles::profiles;
pub use queries::{customers_list, ping, sessions_list, sessions_revoke, usage_report};
pub use validate::validate;

/// Global options and where state lives.
pub struct Ctx {
    server: Option<String>,
    token: Option<String>,
    /// --ca-file / LANYARD_CA_FILE.
    ca_file: Option<std::path::PathBuf>,
    /// The Lanyard token a CI OIDC token was exchanged for, once per command.
    exchanged: std::cell::OnceCell<String>,
    pub debug: bool,
    pub output: Output,
    pub store: Store,
    /// Cached credentials are served only while the broker vouched for them at most this
    /// long ago (`--revocation-check-secs`).
    pub check_within: chrono::Duration,
}

impl Ctx {
    pub fn new(
        server: Option<String>,
        token: Option<String>,
        ca_file: Option<std::path::PathBuf>,
        debug: bool,
        output: Output,
    ) -> anyhow::Result<Ctx> {
        let store = Store::open()?;
        let ctx = Ctx {
            server: server.filter(|s| !s.is_empty()),
            token: token.filter(|t| !t.trim().is_empty()),
            ca_file: ca_file.filter(|p| !p.as_os_str().is_empty()),
            exchanged: std::cell::OnceCell::new(),
            debug,
            output,
            store,
            check_within: chrono::Duration::seconds(
                credentials::revocation::DEFAULT_WINDOW_SECS.into(),
            ),
        };
        ctx.note(&format!("config directory {}", ctx.store.dir.display()));
        Ok(ctx)
    }

    /// Sets the revocation check's window (`--revocation-check-secs`).
    pub fn with_revocation_check(mut self, secs: u32) -> Ctx {
        self.check_within = chrono::Duration::seconds(secs.into());
        self
    }

    pub fn note(&self, msg: &str) {
        if self.debug {
            crate::log::debug(msg);
        }
    }

    pub fn config(&self) -> anyhow::Result<Config> {
        self.store.load()
    }

    /// The broker URL: --server / LANYARD_SERVER, else the profile's, else the login's.
    pub fn server(&self, config: &Config, profile: Option<&Profile>) -> anyhow::Result<String> {
        self.server
            .clone()
            .or_else(|| profile.and_then(|p| p.server.clone()))
            .or_else(|| config.server.clone())
            .context("not logged in: run `lanyard login --server URL` (or set LANYARD_SERVER and LANYARD_TOKEN)")
    }

    /// The token for `server`: --token / LANYARD_TOKEN (the user's explicit choice, for
    /// whatever server is in effect), else the stored login's token, which is only ever sent
    /// to the broker it was stored for (the same origin as the login's server).
    pub fn token_for(&self, config: &Config, server: &str) -> anyhow::Result<String> {
        if let Some(t) = &self.token {
            return Ok(t.trim().to_owned());
        }
        if crate::oidc::offered() {
            return self.exchanged_token(server);
        }
        let origin = config::origin(server)?;
        let login = config.server.as_deref().map(config::origin).transpose()?;
        match (login, self.store.token()?) {
            (Some(login), Some(token)) if login == origin => {
                login::renewed_login_token(self, server, token)
            }
            (Some(login), Some(_)) => bail!(
                "the stored token is for {login}, not {origin}: run `lanyard login --server {origin}` (or set LANYARD_TOKEN)"
            ),
            _ => {
                bail!("no API token: run `lanyard login --server {origin}` (or set LANYARD_TOKEN)")
            }
        }
    }

    /// The environment's CI OIDC token, exchanged at `server` for a Lanyard token (once per
    /// command).
    fn exchanged_token(&self, server: &str) -> anyhow::Result<String> {
        if let Some(token) = self.exchanged.get() {
            return Ok(token.clone());
        }
        let runtime = credentials::runtime()?;
        let token = runtime.block_on(async {
            let ci = crate::oidc::from_environment(self.debug)
                .await?
                .context("no OIDC token in the environment")?;
            self.note(&format!(
                "exchanging the OIDC token from {} at the broker",
                ci.source
            ));
            // The OIDC token is a credential: only over https.
            crate::client::require_https(
                server,
                &format!("the broker the OIDC token from {} goes to", ci.source),
            )?;
            let client = self.connect(server, None)?;
            let answer = client
                .exchange(&ci.token, lanyard_api::exchange::TOKEN_TYPE_JWT)
                .await
                .with_context(|| {
                    format!(
                        "the broker did not accept the OIDC token from {}",
                        ci.source
                    )
                })?;
            self.note(&format!(
                "got a Lanyard token [redacted] for {} s",
                answer.expires_in
            ));
            anyhow::Ok(answer.access_token)
        })?;
        Ok(self.exchanged.get_or_init(|| token).clone())
    }

    /// A client of the broker at `server` (`token`: none for the unauthenticated routes),
    /// trusting the system's roots and the CA file in effect (--ca-file / LANYARD_CA_FILE,
    /// else the login's).
    pub fn connect(&self, server: &str, token: Option<String>) -> anyhow::Result<Client> {
        Client::new(
            server,
            token,
            self.debug,
            self.ca_file_in_effect().as_deref(),
        )
    }

    /// The CA file in effect: --ca-file / LANYARD_CA_FILE, else the login's.
    pub fn ca_file_in_effect(&self) -> Option<std::path::PathBuf> {
        self.ca_file
            .clone()
            .or_else(|| self.config().ok().and_then(|c| c.ca_file))
    }

    /// The --ca-file given to this command, if any.
    pub fn ca_file_flag(&self) -> Option<&std::path::Path> {
        self.ca_file.as_deref()
    }

    /// A digest of the token in effect (LANYARD_TOKEN, an OIDC token the environment holds,
    /// else the stored login), to bind cache entries to; `None` when there is none to read
    /// without a request.
    pub fn token_digest(&self) -> Option<String> {
        let token = match &self.token {
            Some(token) => token.clone(),
            None if crate::oidc::offered() => crate::oidc::held()?,
            None => self.store.token().ok()??,
        };
        Some(crate::sso::digest(&token))
    }

    /// A client for an authenticated request.
    pub fn client(&self, config: &Config, profile: Option<&Profile>) -> anyhow::Result<Client> {
        let server = self.server(config, profile)?;
        let token = self.token_for(config, &server)?;
        self.note(&format!(
            "broker {}, token [redacted]",
            config::origin(&server)?
        ));
        self.connect(&server, Some(token))
    }

    /// Where the token in effect comes from.
    pub fn token_source(&self) -> TokenSource {
        if self.token.is_some() {
            TokenSource::Environment
        } else if crate::oidc::offered() {
            TokenSource::Oidc
        } else {
            TokenSource::Login
        }
    }

    /// The identity of the token in effect for `server` (its subject as the token states it;
    /// the broker checks the token itself).
    pub fn identity(&self, config: &Config, server: &str) -> anyhow::Result<Identity> {
        let token = self.token_for(config, server)?;
        let subject = token_info(&token)
            .and_then(|i| i.subject)
            .context("the token in effect names no subject")?;
        Ok(Identity {
            subject,
            token: self.token_source(),
        })
    }

    /// A client for profile `name`, after checking that the token in effect is the identity
    /// the profile was written with.
    pub fn client_for(
        &self,
        config: &Config,
        name: &str,
        profile: &Profile,
    ) -> anyhow::Result<Client> {
        if let Some(expected) = &profile.identity {
            let server = self.server(config, Some(profile))?;
            let again = match profile.kind {
                Kind::Support => "`lanyard support-access`",
                Kind::Customer => "`lanyard setup-customer`",
            };
            if expected.token == TokenSource::Oidc && !crate::oidc::offered() {
                bail!(
                    "profile {name} was set up with a CI system's OIDC token (as {}), which \
                     this environment does not offer (LANYARD_OIDC_TOKEN, \
                     LANYARD_OIDC_TOKEN_FILE or GitHub Actions' id-token permission)",
                    expected.subject
                );
            }
            if expected.token == TokenSource::Environment && self.token.is_none() {
                bail!(
                    "profile {name} was set up with LANYARD_TOKEN (as {}), which is not set here; \
                     the stored login may be someone else's: set LANYARD_TOKEN wherever this \
                     profile is used, or write the profile again with {again} after `lanyard login`",
                    expected.subject
                );
            }
            // A token that names no subject the CLI can read is left to the broker to judge.
            if let Ok(current) = self.identity(config, &server)
                && current.subject != expected.subject
            {
                bail!(
                    "profile {name} belongs to {}, but the token in effect ({}) is {}'s: use {}'s \
                     token, or write the profile again with {again}",
                    expected.subject,
                    current.token.describe(),
                    current.subject,
                    expected.subject
                );
            }
        }
        self.client(config, Some(profile))
    }

    pub fn cache(&self) -> anyhow::Result<CredentialCache> {
        let dir = config::cache_dir()?;
        self.note(&format!("cache directory {}", dir.display()));
        let cache = CredentialCache::open(&dir)?;
        self.note(&format!("cache key {}", cache.key_source()));
        Ok(cache)
    }

    fn json_output(&self) -> bool {
        self.output == Output::Json
    }
}

/// Writes text meant for a person to stdout, without anything a terminal would act on (see
/// `text::for_terminal`): it holds what the broker sent.
pub fn print(text: &str) -> anyhow::Result<()> {
    print_raw(&crate::text::for_terminal(text))
}

/// Writes machine-readable output (JSON, whose strings carry control characters escaped;
/// credential documents and shell lines, checked before) to stdout as it is; a closed pipe
/// is an error, not a panic.
pub fn print_raw(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing to stdout")
}

/// Writes `value` as pretty JSON. It goes through `serde_json::Value`, whose objects keep
/// their keys sorted (serde_json's default map): the output is the one the CLI gave when it
/// printed the broker's JSON as it came, whatever the order of the wire type's fields.
pub fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    let value = serde_json::to_value(value)?;
    print_raw(&format!("{}\n", serde_json::to_string_pretty(&value)?))
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// How long until `t`: `42s left`, `12m 5s left`, `2h 3m left`, or `expired`.
fn left(t: DateTime<Utc>) -> String {
    let secs = (t - Utc::now()).num_seconds();
    if secs <= 0 {
        return "expired".into();
    }
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s left"),
        (0, _) => format!("{m}m {s}s left"),
        _ => format!("{h}h {m}m left"),
    }
}
