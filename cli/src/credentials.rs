//! Credentials for a profile: from the encrypted cache while they are fresh, else from the
//! broker under the profile's cross-process lock (so that N parallel invocations make one
//! request), and the output shapes of `credential-process` and `export`.
//!
//! Freshness: botocore refreshes `credential_process` credentials 15 minutes before they
//! expire (and blocks on it from 10 minutes), so the cache hands out credentials only while
//! they have more than [`REFRESH_WINDOW`] left; the broker refreshes its own copy at the same
//! point, so the next request gets credentials with a full lifetime. Credentials that end with
//! their session (support sessions near their end) cannot be replaced by longer ones: the
//! cache serves those until [`END_MARGIN`] before they expire instead of asking the broker on
//! every call.

use anyhow::{Context, bail};
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

use crate::cache::{Cached, CredentialCache};
use crate::client::{self, Client};
use crate::config::{Kind, Profile};

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

/// Asks the broker for the profile's credentials and checks the document's shape.
pub async fn fetch(client: &Client, profile: &Profile) -> anyhow::Result<Cached> {
    let document = match profile.kind {
        Kind::Support => {
            let session = profile
                .session
                .as_deref()
                .context("the profile is a support profile without a session id")?;
            let session = crate::ids::session(session)?;
            client
                .json(
                    reqwest::Method::POST,
                    &format!("/v1/sessions/{session}/credentials"),
                    None,
                )
                .await?
        }
        Kind::Customer => {
            let body = profile.role.as_ref().map(|role| json!({ "role": role }));
            client
                .json(
                    reqwest::Method::POST,
                    &format!(
                        "/v1/customers/{}/credentials",
                        crate::ids::customer(&profile.customer)?
                    ),
                    body.as_ref(),
                )
                .await?
        }
    };
    parse_document(document)
}

/// A credential_process document as the AWS SDKs require it, with its expiry.
pub fn parse_document(document: Value) -> anyhow::Result<Cached> {
    let text = |key: &str| {
        document
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .with_context(|| format!("the broker's credentials lack {key}"))
    };
    if document.get("Version").and_then(Value::as_u64) != Some(1) {
        bail!("the broker's credentials are not a Version 1 credential_process document");
    }
    // These values end up in shell code (`eval "$(lanyard export)"`) and in files: only the
    // characters AWS uses are accepted, and a refused value is never echoed.
    let key = text("AccessKeyId")?;
    if !(16..=128).contains(&key.len())
        || !key
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        bail!("the broker's AccessKeyId is not 16-128 uppercase letters and digits; refusing it");
    }
    for field in ["SecretAccessKey", "SessionToken"] {
        if !text(field)?
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        {
            bail!("the broker's {field} holds characters outside base64; refusing it");
        }
    }
    let expiration = parse_expiration(text("Expiration")?)
        .context("the broker's credentials have an unreadable Expiration")?;
    Ok(Cached {
        document,
        expiration,
    })
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
}

/// The profile's credentials: fresh from the cache, or from the broker (built on demand by
/// `connect`, so that a warm cache never pays for a TLS client).
pub fn obtain(
    req: &Obtain<'_>,
    connect: impl FnOnce() -> anyhow::Result<Client>,
) -> anyhow::Result<(Cached, Source)> {
    let debug = |msg: &str| {
        if req.debug {
            eprintln!("debug: {msg}");
        }
    };
    let cache = match (req.mode, req.cache) {
        (Mode::NoCache, _) | (_, None) => None,
        (_, Some(cache)) => Some(cache),
    };
    let fresh = |cached: &Cached| is_fresh(cached, req.profile, Utc::now());
    // The key id the cache held before this process waited for the lock: a different one
    // found under the lock was fetched by another process meanwhile.
    let mut before: Option<String> = None;
    if req.mode == Mode::Normal
        && let Some(cache) = cache
    {
        match cache.read(req.key) {
            Some(cached) if fresh(&cached) => {
                debug(&cached_note(&cached));
                return Ok((cached, Source::Cache));
            }
            Some(cached) if just_fetched(cache, req.key, &cached) => {
                debug(&format!(
                    "{}: fetched less than {} s ago, not asking again",
                    cached_note(&cached),
                    HOLD_DOWN.num_seconds()
                ));
                return Ok((cached, Source::Cache));
            }
            Some(cached) => {
                debug(&format!("{}: refreshing", cached_note(&cached)));
                before = Some(access_key_id(&cached).to_owned());
            }
            None => debug(&format!("no usable cache entry for profile {}", req.name)),
        }
    }
    // One process per profile talks to the broker; the others wait here, then find the
    // cache filled.
    let _lock = match cache {
        Some(cache) => {
            debug(&format!("waiting for the lock of profile {}", req.name));
            Some(cache.lock(req.key)?)
        }
        None => None,
    };
    // What the cache holds under the lock: served should the broker be down.
    let mut standby: Option<Cached> = None;
    if req.mode == Mode::Normal
        && let Some(cached) = cache.and_then(|c| c.read(req.key))
    {
        // Filled while this process waited: the broker's answer of a moment ago, even when
        // it is short-lived (a role whose maximum is 15 minutes), is what asking again
        // would give; N waiting processes must not make N requests.
        let filled = before.as_deref() != Some(access_key_id(&cached))
            && cached.expiration - Utc::now() > END_MARGIN;
        if fresh(&cached) || filled {
            debug(&format!(
                "filled by another process; {}",
                cached_note(&cached)
            ));
            return Ok((cached, Source::Cache));
        }
        standby = Some(cached);
    }
    debug(&format!("asking the broker for {}", describe(req.profile)));
    let client = connect()?;
    let runtime = runtime()?;
    match runtime.block_on(fetch(&client, req.profile)) {
        Ok(fetched) => {
            debug(&format!(
                "got AccessKeyId {} (secret [redacted]) expiring {}",
                fetched.document["AccessKeyId"].as_str().unwrap_or("?"),
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
            Err(err.context(format!("profile {}", req.name)))
        }
    }
}

fn access_key_id(cached: &Cached) -> &str {
    cached.document["AccessKeyId"].as_str().unwrap_or_default()
}

/// Whether an entry that is no longer fresh was written so recently (its file's mtime) that
/// the broker would only hand out the same short-lived credentials again: then it is served
/// for [`HOLD_DOWN`] rather than asked for on every call.
fn just_fetched(cache: &CredentialCache, key: &str, cached: &Cached) -> bool {
    let now = Utc::now();
    let written = std::fs::metadata(cache.path(key))
        .and_then(|m| m.modified())
        .map(DateTime::<Utc>::from);
    cached.expiration - now > END_MARGIN && written.is_ok_and(|t| (now - t).abs() < HOLD_DOWN)
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

/// The credential_process document, fields in the order the AWS docs show them.
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct Document<'a> {
    version: u8,
    access_key_id: &'a str,
    secret_access_key: &'a str,
    session_token: &'a str,
    expiration: &'a str,
}

fn document(cached: &Cached) -> Document<'_> {
    let field = |k: &str| cached.document[k].as_str().unwrap_or_default();
    Document {
        version: 1,
        access_key_id: field("AccessKeyId"),
        secret_access_key: field("SecretAccessKey"),
        session_token: field("SessionToken"),
        expiration: field("Expiration"),
    }
}

/// The `credential_process` document on one line.
pub fn process_line(cached: &Cached) -> anyhow::Result<String> {
    Ok(format!("{}\n", serde_json::to_string(&document(cached))?))
}

/// Output shapes of `aws configure export-credentials --format ...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// `export AWS_ACCESS_KEY_ID='...'` (bash, zsh).
    Env,
    /// `AWS_ACCESS_KEY_ID='...'`.
    EnvNoExport,
    /// `$Env:AWS_ACCESS_KEY_ID='...'`.
    Powershell,
    /// `set "AWS_ACCESS_KEY_ID=..."`.
    WindowsCmd,
    /// `set -gx AWS_ACCESS_KEY_ID '...'`.
    Fish,
    /// The credential_process JSON.
    Process,
}

/// The credentials in `format`, as `aws configure export-credentials` prints them.
pub fn export(cached: &Cached, format: ExportFormat) -> anyhow::Result<String> {
    // What is printed for a shell to run is checked again, whatever its source.
    parse_document(cached.document.clone())?;
    let d = document(cached);
    if format == ExportFormat::Process {
        return Ok(format!("{}\n", serde_json::to_string_pretty(&d)?));
    }
    let vars = [
        ("AWS_ACCESS_KEY_ID", d.access_key_id),
        ("AWS_SECRET_ACCESS_KEY", d.secret_access_key),
        ("AWS_SESSION_TOKEN", d.session_token),
        ("AWS_CREDENTIAL_EXPIRATION", d.expiration),
    ];
    Ok(vars
        .iter()
        .map(|(name, value)| match format {
            ExportFormat::Env => format!("export {name}={}\n", posix_quote(value)),
            ExportFormat::EnvNoExport => format!("{name}={}\n", posix_quote(value)),
            ExportFormat::Powershell => format!("$Env:{name}={}\n", powershell_quote(value)),
            ExportFormat::WindowsCmd => format!("set \"{name}={value}\"\n"),
            ExportFormat::Fish => format!("set -gx {name} {}\n", fish_quote(value)),
            ExportFormat::Process => String::new(),
        })
        .collect())
}

// Every value is quoted for its shell, whatever it holds (the values were checked above too:
// defence in depth). Each quoting is the one string form of that shell in which nothing is
// expanded. (`shlex` leaves plain words unquoted and knows only POSIX shells.)

/// POSIX sh, bash, zsh: single quotes; a `'` closes, is escaped, and reopens.
fn posix_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// PowerShell: single-quoted strings are verbatim; a `'` is written twice.
fn powershell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// fish: inside single quotes only `\\` and `\'` are escapes.
fn fish_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', r"\\").replace('\'', r"\'"))
}

// cmd.exe: `set "NAME=value"` keeps `&|<>^` and spaces literal. cmd has no quoting that stops
// `%` (or `!` under delayed expansion); neither can reach here, since only base64 characters
// and RFC 3339 timestamps pass `parse_document`.

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(left: Duration) -> Cached {
        let expiration = Utc::now() + left;
        Cached {
            document: json!({"Version": 1, "AccessKeyId": "ASIAEXAMPLE12345", "SecretAccessKey": "s3cr3t/+=",
                "SessionToken": "tok", "Expiration": expiration.to_rfc3339()}),
            expiration,
        }
    }

    fn profile(session_end: Option<DateTime<Utc>>) -> Profile {
        Profile {
            server: None,
            kind: Kind::Support,
            customer: "acme-corp".into(),
            session: Some("s".into()),
            case: Some("CS-1".into()),
            role: None,
            session_expires_at: session_end,
            identity: None,
        }
    }

    #[test]
    fn credentials_outside_the_sdk_refresh_window_are_fresh() {
        assert!(is_fresh(
            &cached(Duration::minutes(16)),
            &profile(None),
            Utc::now()
        ));
        assert!(!is_fresh(
            &cached(Duration::minutes(14)),
            &profile(None),
            Utc::now()
        ));
    }

    #[test]
    fn credentials_that_end_with_the_session_are_served_until_they_expire() {
        let c = cached(Duration::minutes(5));
        assert!(is_fresh(&c, &profile(Some(c.expiration)), Utc::now()));
        // A session that lasts longer can give longer credentials: refresh.
        let later = c.expiration + Duration::hours(1);
        assert!(!is_fresh(&c, &profile(Some(later)), Utc::now()));
        let ending = cached(Duration::seconds(5));
        assert!(!is_fresh(
            &ending,
            &profile(Some(ending.expiration)),
            Utc::now()
        ));
    }

    #[test]
    fn export_formats_quote_every_value_for_their_shell() {
        let c = cached(Duration::hours(1));
        let exp = c.document["Expiration"].as_str().unwrap().to_owned();
        assert_eq!(
            export(&c, ExportFormat::Env).unwrap(),
            format!(
                "export AWS_ACCESS_KEY_ID='ASIAEXAMPLE12345'\nexport AWS_SECRET_ACCESS_KEY='s3cr3t/+='\nexport AWS_SESSION_TOKEN='tok'\nexport AWS_CREDENTIAL_EXPIRATION='{exp}'\n"
            )
        );
        assert!(
            export(&c, ExportFormat::EnvNoExport)
                .unwrap()
                .starts_with("AWS_ACCESS_KEY_ID='ASIAEXAMPLE12345'\n")
        );
        assert!(
            export(&c, ExportFormat::Powershell)
                .unwrap()
                .starts_with("$Env:AWS_ACCESS_KEY_ID='ASIAEXAMPLE12345'\n")
        );
        assert!(
            export(&c, ExportFormat::Fish)
                .unwrap()
                .starts_with("set -gx AWS_ACCESS_KEY_ID 'ASIAEXAMPLE12345'\n")
        );
        assert!(
            export(&c, ExportFormat::WindowsCmd)
                .unwrap()
                .starts_with("set \"AWS_ACCESS_KEY_ID=ASIAEXAMPLE12345\"\n")
        );
        let process = export(&c, ExportFormat::Process).unwrap();
        assert!(
            process.starts_with("{\n  \"Version\": 1,\n  \"AccessKeyId\": \"ASIAEXAMPLE12345\",\n"),
            "{process}"
        );
    }

    #[test]
    fn quoting_holds_whatever_a_value_contains() {
        let evil = "a'b\\c $(id) `x` ; \"q\"";
        assert_eq!(posix_quote(evil), r#"'a'\''b\c $(id) `x` ; "q"'"#);
        assert_eq!(powershell_quote(evil), r#"'a''b\c $(id) `x` ; "q"'"#);
        assert_eq!(fish_quote(evil), r#"'a\'b\\c $(id) `x` ; "q"'"#);
    }

    #[test]
    fn an_expiration_that_is_not_strict_rfc_3339_is_refused() {
        assert!(parse_expiration("2099-01-01T00:00:00Z").is_ok());
        assert!(parse_expiration("2099-01-01T00:00:00.123+02:00").is_ok());
        for bad in [
            "2099-01-01 00:00:00Z",
            "2099-01-01T00:00:00",
            "2099-01-01",
            "2099-01-01T00:00:00Z;id",
            "tomorrow",
        ] {
            assert!(parse_expiration(bad).is_err(), "{bad}");
            let doc = json!({"Version": 1, "AccessKeyId": "ASIAEXAMPLE12345",
                "SecretAccessKey": "abc", "SessionToken": "dG9r", "Expiration": bad});
            assert!(parse_document(doc).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_document_without_a_secret_is_refused() {
        assert!(
            parse_document(
                json!({"Version": 1, "AccessKeyId": "A", "SessionToken": "t",
            "Expiration": "2030-01-01T00:00:00Z"})
            )
            .is_err()
        );
    }

    #[test]
    fn documents_that_could_break_out_of_a_shell_are_refused_without_echoing_them() {
        let good = || {
            json!({"Version": 1, "AccessKeyId": "ASIAEXAMPLE12345", "SecretAccessKey": "abc+/=",
                "SessionToken": "dG9r", "Expiration": "2030-01-01T00:00:00Z"})
        };
        assert!(parse_document(good()).is_ok());
        for (field, evil) in [
            ("AccessKeyId", "ASIA$(touch /tmp/pwned)"),
            ("AccessKeyId", "asiaexample12345"),
            ("AccessKeyId", "ASIA"),
            ("SecretAccessKey", "abc; rm -rf ~"),
            ("SecretAccessKey", "abc`id`"),
            ("SessionToken", "tok\nexport PATH=/evil"),
            ("SessionToken", "tok\"; id; \""),
        ] {
            let mut doc = good();
            doc[field] = json!(evil);
            let err = format!("{:#}", parse_document(doc.clone()).unwrap_err());
            assert!(err.contains(field), "{err}");
            assert!(!err.contains(evil), "{err}");
            let cached = Cached {
                document: doc,
                expiration: Utc::now() + Duration::hours(1),
            };
            assert!(export(&cached, ExportFormat::Env).is_err());
        }
    }
}
