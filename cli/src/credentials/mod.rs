//! Credentials for a profile: from the encrypted cache while they are fresh, else from the
//! broker under the profile's cross-process lock (so that N parallel invocations make one
//! request); the document's checks. The output shapes of `credential-process` and `export`
//! are in `export`.
//!
//! Freshness: botocore refreshes `credential_process` credentials 15 minutes before they
//! expire (and blocks on it from 10 minutes), so the cache hands out credentials only while
//! they have more than [`REFRESH_WINDOW`] left; the broker refreshes its own copy at the same
//! point, so the next request gets credentials with a full lifetime. Credentials that end with
//! their session (support sessions near their end) cannot be replaced by longer ones: the
//! cache serves those until [`END_MARGIN`] before they expire instead of asking the broker on
//! every call.
//!
//! Revocation: whatever its freshness, a cached entry is served only while the broker vouched
//! for it at most the check window ago (see `revocation`).

use anyhow::{Context, bail};
use chrono::{DateTime, Duration, Utc};
use lanyard_api::sessions::{CredentialProcess, CustomerCredentialsRequest};
use serde_json::Value;

use crate::cache::{Cached, CredentialCache};
use crate::client::{self, Client};
use crate::config::{Kind, Profile};

mod export;
pub mod revocation;

pub use export::{ExportFormat, export, process_line};

/// Credentials with this much or less left are fetched again (botocore's advisory window).
pub const REFRESH_WINDOW: Duration = Duration::minutes(15);
/// Credentials that end with their session are served until this close to their expiry.
pub const END_MARGIN: Duration = Duration::seconds(10);
/// Credentials fetched this recently are served even inside the refresh window: asking again
/// at once would only return the broker's same short-lived credentials.
pub const HOLD_DOWN: Duration = Duration::seconds(30);
/// Credentials expiring this close to the session's end end with it.
const SESSION_END_SLACK: Duration = Duration::minutes(2);

/// How `obtain` may use the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Fresh cached credentials, else fetch and cache.
    Normal,
    /// Fetch and cache, whatever the cache holds.
    Refresh,
    /// Fetch only: the cache is neither read nor written.
    NoCache,
}

/// Where credentials came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cache,
    Broker,
}

/// Whether cached credentials may be handed out at `now`.
pub fn is_fresh(cached: &Cached, profile: &Profile, now: DateTime<Utc>) -> bool {
    let left = cached.expiration - now;
    if left > REFRESH_WINDOW {
        return true;
    }
    let ends_with_session = profile
        .session_expires_at
        .is_some_and(|end| cached.expiration >= end - SESSION_END_SLACK);
    ends_with_session && left > END_MARGIN
}

/// What the broker must be asked, for the debug log and errors.
pub fn describe(profile: &Profile) -> String {
    match profile.kind {
        Kind::Support => format!(
            "support session {} (customer {}, case {})",
            profile.session.as_deref().unwrap_or("?"),
            profile.customer,
            profile.case.as_deref().unwrap_or("?")
        ),
        Kind::Customer => format!("customer session with {}", profile.customer),
    }
}

/// Asks the broker for the profile's credentials and checks the document's shape. The
/// answer is read as JSON first, not straight into a `CredentialProcess`: a malformed
/// document is then refused naming the field, and never echoing its value (serde's errors
/// quote what they could not read).
pub async fn fetch(client: &Client, profile: &Profile) -> anyhow::Result<Cached> {
    let started = std::time::Instant::now();
    let (document, date): (Value, _) = match profile.kind {
        Kind::Support => {
            let session = profile
                .session
                .as_deref()
                .context("the profile is a support profile without a session id")?;
            let session = client::session_id(session)?;
            client
                .post_dated(&format!("/v1/sessions/{session}/credentials"), None::<&()>)
                .await?
        }
        Kind::Customer => {
            let customer = client::customer_id(&profile.customer)?;
            // No role: no body at all, and the broker picks the customer's one role.
            let body = profile
                .role
                .as_ref()
                .map(|role| CustomerCredentialsRequest {
                    role: Some(role.clone()),
                });
            client
                .post_dated(
                    &format!("/v1/customers/{customer}/credentials"),
                    body.as_ref(),
                )
                .await?
        }
    };
    let mut cached = parse_document(document)?;
    // The broker's `Date` is when it answered; it checked the session up to a round trip
    // earlier (an STS call under throttling can take seconds). A revocation in between must
    // still count as after the issue: take the whole round trip off.
    let round_trip = Duration::from_std(started.elapsed()).unwrap_or(Duration::zero());
    revocation::stamp(&mut cached, date.map(|d| d - round_trip), Utc::now());
    Ok(cached)
}

/// A credential_process document as the AWS SDKs require it, with its expiry.
pub fn parse_document(document: Value) -> anyhow::Result<Cached> {
    if document.get("Version").and_then(Value::as_u64) != Some(1) {
        bail!("the broker's credentials are not a Version 1 credential_process document");
    }
    // A missing field, or one that is not a string, reads as empty: `check_document` refuses
    // it, naming it.
    let text = |key: &str| {
        document
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let document = CredentialProcess {
        version: 1,
        access_key_id: text("AccessKeyId"),
        secret_access_key: text("SecretAccessKey"),
        session_token: text("SessionToken"),
        expiration: text("Expiration"),
    };
    let expiration = check_document(&document)?;
    Ok(Cached {
        document,
        expiration,
        checked_at: None,
        issued_at: None,
    })
}

/// The document's checks; its expiry. These values end up in shell code
/// (`eval "$(lanyard export)"`) and in files: only the characters AWS uses are accepted, and
/// a refused value is never echoed.
pub fn check_document(document: &CredentialProcess) -> anyhow::Result<DateTime<Utc>> {
    if document.version != 1 {
        bail!("the broker's credentials are not a Version 1 credential_process document");
    }
    let present = |key: &str, value: &str| -> anyhow::Result<()> {
        if value.is_empty() {
            bail!("the broker's credentials lack {key}");
        }
        Ok(())
    };
    let key = &document.access_key_id;
    present("AccessKeyId", key)?;
    if !(16..=128).contains(&key.len())
        || !key
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        bail!("the broker's AccessKeyId is not 16-128 uppercase letters and digits; refusing it");
    }
    for (field, value) in [
        ("SecretAccessKey", &document.secret_access_key),
        ("SessionToken", &document.session_token),
    ] {
        present(field, value)?;
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        {
            bail!("the broker's {field} holds characters outside base64; refusing it");
        }
    }
    present("Expiration", &document.expiration)?;
    parse_expiration(&document.expiration)
        .context("the broker's credentials have an unreadable Expiration")
}

/// An `Expiration` in strict RFC 3339 (<https://www.rfc-editor.org/rfc/rfc3339#section-5.6>):
/// date, `T`, time, and `Z` or a numeric offset, made of digits and `-:.+TZ` only. chrono
/// alone also takes a space for the `T`, and such a value would split into two words in a
/// shell.
pub fn parse_expiration(raw: &str) -> anyhow::Result<DateTime<Utc>> {
    let strict = matches!(raw.as_bytes().get(10), Some(b'T' | b't'))
        && raw.bytes().all(|b| {
            b.is_ascii_digit() || matches!(b, b'-' | b':' | b'.' | b'+' | b'T' | b't' | b'Z' | b'z')
        });
    if !strict {
        bail!("Expiration is not an RFC 3339 timestamp such as 2026-11-26T10:30:00Z");
    }
    Ok(DateTime::parse_from_rfc3339(raw)
        .context("Expiration is not an RFC 3339 timestamp such as 2026-11-26T10:30:00Z")?
        .with_timezone(&Utc))
}

/// Everything `obtain` needs besides the profile.
pub struct Obtain<'a> {
    pub name: &'a str,
    /// The profile's cache entry (see `commands::cache_key`).
    pub key: &'a str,
    pub profile: &'a Profile,
    pub cache: Option<&'a CredentialCache>,
    pub mode: Mode,
    pub debug: bool,
    /// Cached entries are served only while the broker vouched for them at most this long
    /// ago (`--revocation-check-secs`).
    pub check_within: Duration,
}

/// The profile's credentials: fresh from the cache, or from the broker (built on demand by
/// `connect`, so that a warm cache never pays for a TLS client).
pub fn obtain(
    req: &Obtain<'_>,
    connect: impl FnOnce() -> anyhow::Result<Client>,
) -> anyhow::Result<(Cached, Source)> {
    let debug = |msg: &str| {
        if req.debug {
            crate::log::debug(msg);
        }
    };
    let cache = match (req.mode, req.cache) {
        (Mode::NoCache, _) | (_, None) => None,
        (_, Some(cache)) => Some(cache),
    };
    let fresh = |cached: &Cached| is_fresh(cached, req.profile, Utc::now());
    let vouched = |cached: &Cached| revocation::vouched(cached, req.check_within, Utc::now());
    // The key id the cache held before this process waited for the lock: a different one
    // found under the lock was fetched by another process meanwhile.
    let mut before: Option<String> = None;
    if req.mode == Mode::Normal
        && let Some(cache) = cache
    {
        match cache.read(req.key) {
            Some(cached) if fresh(&cached) && vouched(&cached) => {
                debug(&cached_note(&cached));
                return Ok((cached, Source::Cache));
            }
            Some(cached) if just_fetched(cache, req.key, &cached) && vouched(&cached) => {
                debug(&format!(
                    "{}: fetched less than {} s ago, not asking again",
                    cached_note(&cached),
                    HOLD_DOWN.num_seconds()
                ));
                return Ok((cached, Source::Cache));
            }
            Some(cached) if fresh(&cached) || just_fetched(cache, req.key, &cached) => {
                debug(&format!(
                    "{}; the broker's last word that they were not revoked was {}: asking it",
                    cached_note(&cached),
                    revocation::last_check(&cached, Utc::now())
                ));
                before = Some(access_key_id(&cached).to_owned());
            }
            Some(cached) => {
                debug(&format!("{}: refreshing", cached_note(&cached)));
                before = Some(access_key_id(&cached).to_owned());
            }
            None => debug(&format!("no usable cache entry for profile {}", req.name)),
        }
    }
    // One process per profile talks to the broker; the others wait here, then find the
    // cache filled (or checked).
    let _lock = match cache {
        Some(cache) => {
            debug(&format!("waiting for the lock of profile {}", req.name));
            Some(cache.lock(req.key)?)
        }
        None => None,
    };
    let mut broker = Broker::new(connect);
    // What the cache holds under the lock: served should the broker be down, if the broker
    // vouched for it within the window.
    let mut standby: Option<Cached> = None;
    // Why what the cache holds is not served should the broker be down.
    let mut unvouched: Option<String> = None;
    if req.mode == Mode::Normal
        && let Some(cache) = cache
        && let Some(cached) = cache.read(req.key)
    {
        // Filled while this process waited: the broker's answer of a moment ago, even when
        // it is short-lived (a role whose maximum is 15 minutes), is what asking again
        // would give; N waiting processes must not make N requests.
        let filled = before.as_deref() != Some(access_key_id(&cached))
            && cached.expiration - Utc::now() > END_MARGIN;
        let servable = fresh(&cached) || filled || just_fetched(cache, req.key, &cached);
        if servable && vouched(&cached) {
            debug(&format!(
                "filled or checked by another process; {}",
                cached_note(&cached)
            ));
            return Ok((cached, Source::Cache));
        }
        if servable {
            let checked = broker
                .connected()
                .and_then(|(client, rt)| rt.block_on(revocation::check(client, &cached)));
            match checked {
                Ok(revocation::Verdict::Unrevoked) => {
                    debug("the broker says no session of the caller was revoked since");
                    let mut cached = cached;
                    cached.checked_at = Some(Utc::now());
                    if let Err(e) = cache.write(req.key, &cached) {
                        debug(&format!("warning: revocation check not recorded: {e:#}"));
                    }
                    return Ok((cached, Source::Cache));
                }
                Ok(revocation::Verdict::RevokedSince(epoch)) => {
                    // Perhaps another of the caller's sessions: the broker tells (new
                    // credentials, or 410 for this session).
                    debug(&format!(
                        "a session of the caller was revoked at {}, after these credentials \
                         were issued: dropping them and asking the broker",
                        revocation::epoch_time(epoch)
                    ));
                    if let Err(e) = cache.remove(req.key) {
                        debug(&format!("warning: {e:#}"));
                    }
                }
                Err(err) => {
                    let err = revocation::refusal(err, &cached, req.check_within);
                    return Err(err.context(format!("profile {}", req.name)));
                }
            }
        } else if vouched(&cached) {
            standby = Some(cached);
        } else {
            unvouched = Some(format!(
                "the cached credentials are not served meanwhile: the broker's last word that \
                 they were not revoked was {} ({} s allowed, {})",
                revocation::last_check(&cached, Utc::now()),
                req.check_within.num_seconds(),
                revocation::WINDOW_ENV
            ));
        }
    }
    debug(&format!("asking the broker for {}", describe(req.profile)));
    let (client, runtime) = broker.connected()?;
    match runtime.block_on(fetch(client, req.profile)) {
        Ok(fetched) => {
            debug(&format!(
                "got AccessKeyId {} (secret [redacted]) expiring {}",
                fetched.document.access_key_id,
                fetched.expiration.to_rfc3339()
            ));
            // A cache that cannot be written costs the next call a request, not this one
            // its credentials.
            if let Some(cache) = cache
                && let Err(e) = cache.write(req.key, &fetched)
            {
                debug(&format!("warning: credentials not cached: {e:#}"));
            }
            Ok((fetched, Source::Broker))
        }
        Err(err) => {
            // The broker is down or failing: credentials still valid beyond the end margin
            // are better than none (the SDK asks again on its next call). Refusals fail.
            if client::is_unavailable(&err)
                && let Some(cached) = standby.filter(|c| c.expiration - Utc::now() > END_MARGIN)
            {
                debug(&format!(
                    "{err:#}; serving the cached credentials meanwhile"
                ));
                return Ok((cached, Source::Cache));
            }
            // The session is over (revoked or expired): what the cache holds belongs to it,
            // so it goes; the next call says so again instead of handing those out.
            if client::status_of(&err) == Some(410)
                && let Some(cache) = cache
            {
                let _ = cache.remove(req.key);
            }
            let err = match unvouched {
                Some(why) if client::is_unavailable(&err) => err.context(why),
                _ => err,
            };
            Err(err.context(format!("profile {}", req.name)))
        }
    }
}

/// The broker's client and the runtime it runs on, built on first use (a warm cache never
/// pays for a TLS client), then shared by the revocation check and the credential request (a
/// client's pooled connection lives on the runtime that opened it).
struct Broker<F> {
    connect: Option<F>,
    client: Option<(Client, tokio::runtime::Runtime)>,
}

impl<F: FnOnce() -> anyhow::Result<Client>> Broker<F> {
    fn new(connect: F) -> Self {
        Broker {
            connect: Some(connect),
            client: None,
        }
    }

    fn connected(&mut self) -> anyhow::Result<(&Client, &tokio::runtime::Runtime)> {
        if self.client.is_none()
            && let Some(connect) = self.connect.take()
        {
            self.client = Some((connect()?, runtime()?));
        }
        self.client
            .as_ref()
            .map(|(client, runtime)| (client, runtime))
            .context("the broker's client could not be built")
    }
}

fn access_key_id(cached: &Cached) -> &str {
    &cached.document.access_key_id
}

/// Whether an entry that is no longer fresh was written so recently (its file's mtime) that
/// the broker would only hand out the same short-lived credentials again: then it is served
/// for [`HOLD_DOWN`] rather than asked for on every call.
fn just_fetched(cache: &CredentialCache, key: &str, cached: &Cached) -> bool {
    let now = Utc::now();
    // The earlier of when the broker issued them and when the file was written: a
    // revocation check rewrites the entry, and must not make old credentials look new.
    let written = std::fs::metadata(cache.path(key))
        .and_then(|m| m.modified())
        .map(DateTime::<Utc>::from)
        .ok();
    let fetched = match (cached.issued_at, written) {
        (Some(issued), Some(written)) => Some(issued.min(written)),
        (issued, written) => issued.or(written),
    };
    cached.expiration - now > END_MARGIN && fetched.is_some_and(|t| (now - t).abs() < HOLD_DOWN)
}

fn cached_note(cached: &Cached) -> String {
    format!(
        "cached credentials expire {} ({} s left)",
        cached.expiration.to_rfc3339(),
        (cached.expiration - Utc::now()).num_seconds()
    )
}

/// A single-threaded runtime for the one request a command makes.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

#[cfg(test)]
mod tests;
