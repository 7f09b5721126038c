//! Where the CLI keeps its state and what it holds: the login (server URL, and the token in
//! a 0600 file of its own) and the named profiles, in `config.toml` under the XDG config
//! directory; the credential cache under the XDG cache directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::private::{self, Sensitivity};

const CONFIG_FILE: &str = "config.toml";
const TOKEN_FILE: &str = "token";

/// `LANYARD_CONFIG_DIR`, else `$XDG_CONFIG_HOME/lanyard`, else `~/.config/lanyard`.
pub fn config_dir() -> anyhow::Result<PathBuf> {
    xdg_dir("LANYARD_CONFIG_DIR", "XDG_CONFIG_HOME", ".config")
}

/// `LANYARD_CACHE_DIR`, else `$XDG_CACHE_HOME/lanyard`, else `~/.cache/lanyard`.
pub fn cache_dir() -> anyhow::Result<PathBuf> {
    xdg_dir("LANYARD_CACHE_DIR", "XDG_CACHE_HOME", ".cache")
}

fn xdg_dir(own: &str, xdg: &str, fallback: &str) -> anyhow::Result<PathBuf> {
    let set = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = set(own) {
        return Ok(PathBuf::from(dir));
    }
    // The XDG spec ignores relative paths.
    if let Some(dir) = set(xdg).map(PathBuf::from).filter(|d| d.is_absolute()) {
        return Ok(dir.join("lanyard"));
    }
    let home = set("HOME").with_context(|| format!("HOME is not set; set {own}"))?;
    Ok(PathBuf::from(home).join(fallback).join("lanyard"))
}

/// The origin of a broker URL (`scheme://host[:port]`, without user info or path): what a
/// stored token and cached credentials are bound to.
pub fn origin(server: &str) -> anyhow::Result<String> {
    let url = reqwest::Url::parse(server)
        .map_err(|e| anyhow::anyhow!("invalid server URL '{}': {e}", redact_url(server)))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        bail!("server URL must be http:// or https:// with a host");
    }
    Ok(url.origin().ascii_serialization())
}

/// A URL for messages: any `user:password@` removed.
pub fn redact_url(server: &str) -> String {
    match reqwest::Url::parse(server) {
        Ok(mut url) if !url.username().is_empty() || url.password().is_some() => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.to_string()
        }
        Ok(_) => server.to_owned(),
        // Unparseable: drop everything between the scheme and the last '@' of the authority.
        Err(_) => match (server.find("://"), server.rfind('@')) {
            (Some(s), Some(at)) if at > s => format!("{}{}", &server[..s + 3], &server[at + 1..]),
            _ => server.to_owned(),
        },
    }
}

/// Which kind of session a profile's credentials come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A support session opened with `support-access`: credentials for `session`.
    Support,
    /// The caller's customer session with `customer` (opened by the broker as needed).
    Customer,
}

/// Where the token that serves a profile comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenSource {
    /// The login stored by `lanyard login`.
    Login,
    /// `LANYARD_TOKEN` or `--token`, which must then be set wherever the profile is used.
    Environment,
    /// A CI system's OIDC token, exchanged at the broker (see `oidc`).
    Oidc,
}

impl TokenSource {
    pub fn describe(self) -> &'static str {
        match self {
            TokenSource::Login => "the stored login",
            TokenSource::Environment => "LANYARD_TOKEN",
            TokenSource::Oidc => "the CI system's OIDC token",
        }
    }
}

/// Whose token a profile was written with: its credentials are asked for with that identity
/// only (a later `lanyard login` as someone else, or a missing `LANYARD_TOKEN`, is refused with
/// an explanation rather than failing at the broker an hour later).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// The token's subject.
    pub subject: String,
    pub token: TokenSource,
}

/// One named profile: what to ask the broker for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Broker URL for this profile, when it differs from the login's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    pub kind: Kind,
    pub customer: String,
    /// Support sessions: the session id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Support sessions: the case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case: Option<String>,
    /// The customer role; customer profiles may leave it out when the customer has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Support sessions: when the session ends (RFC 3339). Credentials cannot outlast it, so
    /// the cache serves credentials that end with the session until they expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Support sessions in one of the role's access tiers: its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Support sessions: the case's title, as the broker's case system gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_title: Option<String>,
    /// Support sessions that were waiting for approval when the profile was written: when
    /// the request expires unapproved (`session_expires_at` is unknown until the approval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Whose token serves the profile (profiles written before this was recorded have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
}

/// `config.toml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The broker URL stored by `lanyard login`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Extra CA certificates (PEM) trusted for the broker, beside the system's: stored by
    /// `lanyard login --ca-file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

pub struct Store {
    pub dir: PathBuf,
}

impl Store {
    pub fn open() -> anyhow::Result<Store> {
        Ok(Store { dir: config_dir()? })
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join(CONFIG_FILE)
    }

    pub fn token_path(&self) -> PathBuf {
        self.dir.join(TOKEN_FILE)
    }

    /// The config, or an empty one when there is no file yet. The directory and the file
    /// must be the user's own (see `private`): whoever could edit them could send the token
    /// to a broker of their choosing.
    pub fn load(&self) -> anyhow::Result<Config> {
        let path = self.config_path();
        if self.dir.exists() {
            private::check_dir(&self.dir)?;
        }
        match private::read_file(&path, Sensitivity::Settings)? {
            Some(bytes) => {
                let text = String::from_utf8(bytes)
                    .with_context(|| format!("{} is not UTF-8", path.display()))?;
                toml::from_str(&text).with_context(|| format!("{} is invalid", path.display()))
            }
            None => Ok(Config::default()),
        }
    }

    pub fn save(&self, config: &Config) -> anyhow::Result<()> {
        let text = format!(
            "# Written by `lanyard`; profiles are added by `lanyard support-access` and\n\
             # `lanyard setup-customer`. The token lives in the file `{TOKEN_FILE}` beside this one.\n\n{}",
            toml::to_string_pretty(config)?
        );
        write_private(&self.config_path(), text.as_bytes())
    }

    /// Loads the config under an exclusive lock (`config.toml.lock`), applies `edit` and
    /// saves it before the lock is released: parallel runs each add their profile instead of
    /// overwriting each other's with what they read before their broker request.
    pub fn update<T>(
        &self,
        edit: impl FnOnce(&mut Config) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        private::ensure_dir(&self.dir)?;
        let lock = private::lock_exclusive(&self.dir.join(format!("{CONFIG_FILE}.lock")))?;
        let mut config = self.load()?;
        let value = edit(&mut config)?;
        self.save(&config)?;
        drop(lock);
        Ok(value)
    }

    /// The stored token, if any: a file of the user's own that nobody else may read.
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        let path = self.token_path();
        let Some(bytes) = private::read_file(&path, Sensitivity::Secret)? else {
            return Ok(None);
        };
        let text =
            String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8", path.display()))?;
        Ok(Some(text.trim().to_owned()).filter(|t| !t.is_empty()))
    }

    pub fn save_token(&self, token: &str) -> anyhow::Result<()> {
        write_private(&self.token_path(), format!("{token}\n").as_bytes())
    }

    /// A profile by name, or a clear error naming the profiles there are.
    pub fn profile<'a>(&self, config: &'a Config, name: &str) -> anyhow::Result<&'a Profile> {
        if let Some(p) = config.profiles.get(name) {
            return Ok(p);
        }
        let known: Vec<&str> = config.profiles.keys().map(String::as_str).collect();
        if known.is_empty() {
            bail!(
                "unknown profile '{name}': {} has no profiles yet (run `lanyard support-access` or `lanyard setup-customer`)",
                self.config_path().display()
            )
        }
        bail!(
            "unknown profile '{name}' (profiles in {}: {})",
            self.config_path().display(),
            known.join(", ")
        )
    }
}

/// Writes `bytes` to `path` atomically, readable by the owner only (see
/// [`private::write_atomically`]), in a directory of the user's own (created 0700).
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("path has no directory")?;
    private::ensure_dir(dir)?;
    private::write_atomically(path, bytes, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_lose_their_user_info_in_messages_and_origins() {
        assert_eq!(
            redact_url("https://alice:hunter2@lanyard.example.com:8443/x"),
            "https://lanyard.example.com:8443/x"
        );
        assert_eq!(redact_url("http://127.0.0.1:9"), "http://127.0.0.1:9");
        assert_eq!(redact_url("http://u:p@[::1:9"), "http://[::1:9");
        assert_eq!(
            origin("https://alice:hunter2@lanyard.example.com:443/api").unwrap(),
            "https://lanyard.example.com"
        );
        let err = format!("{:#}", origin("https://alice:hunter2@").unwrap_err());
        assert!(!err.contains("hunter2"), "{err}");
    }
}
