//! The revocation check of cached credentials: the cache serves an entry only while the
//! broker vouched for it at most the check window ago (`--revocation-check-secs`, default
//! 60 s). Handing the credentials out is the first such word; after that, the CLI asks
//! `GET /v1/auth/whoami` for the caller's revocation epoch (when a session they opened was
//! last revoked) and drops the entry when that is later than the credentials' issue.
//!
//! Both times compared are the broker's (its `Date` header when it issued them, and the
//! revocation time its database recorded), so this machine's clock does not enter into it;
//! the window alone is measured on this machine's clock. AWS itself cannot recall issued
//! credentials (<https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_temp_control-access_disable-perms.html>):
//! this stops Lanyard handing them out, not AWS honouring them until they expire.

use chrono::{DateTime, Duration, Utc};
use lanyard_api::whoami::WhoAmI;

use crate::cache::Cached;
use crate::client::{self, Client};

/// Default of `--revocation-check-secs` (LANYARD_REVOCATION_CHECK_SECS).
pub const DEFAULT_WINDOW_SECS: u32 = 60;
/// The environment variable that sets the window, for messages.
pub const WINDOW_ENV: &str = "LANYARD_REVOCATION_CHECK_SECS";
/// Taken off the broker's `Date` (whole seconds, rounded down) when it issued credentials:
/// room for the rounding and for the broker's clock and its database's being slightly
/// apart. A revocation within this margin before the issue costs one needless refetch.
const BROKER_CLOCK_MARGIN: Duration = Duration::seconds(5);
/// Without a `Date` header, this machine's clock stands in, off by as much as this.
const LOCAL_CLOCK_MARGIN: Duration = Duration::minutes(5);

/// Marks credentials the broker just handed out: vouched for `now`, and issued at the
/// broker's `date` (less a margin; this machine's clock less a wider one without it).
pub fn stamp(cached: &mut Cached, date: Option<DateTime<Utc>>, now: DateTime<Utc>) {
    cached.checked_at = Some(now);
    cached.issued_at = Some(match date {
        Some(date) => date - BROKER_CLOCK_MARGIN,
        None => now - LOCAL_CLOCK_MARGIN,
    });
}

/// Whether the broker vouched for `cached` at most `window` before `now` (a time after `now`,
/// from a clock set back since, does not count).
pub fn vouched(cached: &Cached, window: Duration, now: DateTime<Utc>) -> bool {
    cached
        .checked_at
        .is_some_and(|t| t <= now && now - t <= window)
}

/// How long ago the broker last vouched for `cached`, for messages: `42 s ago`, or `never`.
pub fn last_check(cached: &Cached, now: DateTime<Utc>) -> String {
    match cached.checked_at {
        Some(t) => format!("{} s ago", (now - t).num_seconds()),
        None => "never".to_owned(),
    }
}

/// What the broker's revocation epoch says of cached credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No session of the caller was revoked since they were issued.
    Unrevoked,
    /// A session of the caller was revoked at this epoch (Unix ms), after they were issued
    /// (perhaps theirs).
    RevokedSince(i64),
}

/// Judges `cached` by the caller's revocation epoch. Entries without an issue time (written
/// before the check existed) count as issued at the epoch's start: any revocation at all
/// drops them, once.
pub fn judge(cached: &Cached, who: &WhoAmI) -> Verdict {
    let issued = cached.issued_at.map_or(0, |t| t.timestamp_millis());
    if who.revocation_epoch > issued {
        Verdict::RevokedSince(who.revocation_epoch)
    } else {
        Verdict::Unrevoked
    }
}

/// Asks the broker (`GET /v1/auth/whoami`) whether `cached` may still be served.
pub async fn check(client: &Client, cached: &Cached) -> anyhow::Result<Verdict> {
    Ok(judge(cached, &client.whoami().await?))
}

/// A failed check as the line a user reads: the token refused (401), or the broker not
/// asked in time; either way the cache serves nothing.
pub fn refusal(err: anyhow::Error, cached: &Cached, window: Duration) -> anyhow::Error {
    let now = Utc::now();
    if client::status_of(&err) == Some(401) {
        return err.context("the broker refuses the token, so cached credentials are not served");
    }
    let now_what = if client::is_unavailable(&err) {
        "the broker could not be asked now"
    } else {
        "the broker's answer now does not say"
    };
    err.context(format!(
        "cached credentials are served only within {} s of the broker's word that they were \
         not revoked ({WINDOW_ENV}); the last was {}, and {now_what}",
        window.num_seconds(),
        last_check(cached, now)
    ))
}

/// The epoch as a time, for messages.
pub fn epoch_time(epoch: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(epoch)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| epoch.to_string())
}

#[cfg(test)]
mod tests {
    use lanyard_api::sessions::CredentialProcess;
    use lanyard_api::whoami::TokenRole;

    use super::*;

    fn cached() -> Cached {
        let expiration = Utc::now() + Duration::hours(1);
        Cached {
            document: CredentialProcess {
                version: 1,
                access_key_id: "ASIAEXAMPLE12345".into(),
                secret_access_key: "s3cr3t".into(),
                session_token: "tok".into(),
                expiration: expiration.to_rfc3339(),
            },
            expiration,
            checked_at: None,
            issued_at: None,
        }
    }

    fn whoami(epoch: i64) -> WhoAmI {
        WhoAmI {
            subject: "alice".into(),
            role: TokenRole::Support,
            customers: None,
            token_id: uuid::Uuid::nil(),
            expires_at: Utc::now() + Duration::hours(1),
            revocation_epoch: epoch,
        }
    }

    #[test]
    fn credentials_are_vouched_for_within_the_window_only() {
        let now = Utc::now();
        let mut c = cached();
        assert!(!vouched(&c, Duration::seconds(60), now), "never checked");
        stamp(&mut c, Some(now), now);
        assert!(vouched(&c, Duration::seconds(60), now));
        assert!(vouched(
            &c,
            Duration::seconds(60),
            now + Duration::seconds(60)
        ));
        assert!(!vouched(
            &c,
            Duration::seconds(60),
            now + Duration::seconds(61)
        ));
        // A clock set back since the check does not stretch the window.
        assert!(!vouched(
            &c,
            Duration::seconds(60),
            now - Duration::seconds(1)
        ));
        // A window of 0: every use asks.
        assert!(!vouched(
            &c,
            Duration::zero(),
            now + Duration::milliseconds(1)
        ));
    }

    #[test]
    fn a_revocation_after_the_issue_on_the_brokers_clock_drops_the_credentials() {
        let now = Utc::now();
        let mut c = cached();
        // This machine's clock is an hour ahead: only the broker's clock counts.
        let broker = now - Duration::hours(1);
        stamp(&mut c, Some(broker), now);
        let after = (broker + Duration::seconds(1)).timestamp_millis();
        assert_eq!(judge(&c, &whoami(after)), Verdict::RevokedSince(after));
        let before = (broker - Duration::minutes(1)).timestamp_millis();
        assert_eq!(judge(&c, &whoami(before)), Verdict::Unrevoked);
        assert_eq!(judge(&c, &whoami(0)), Verdict::Unrevoked);
    }

    #[test]
    fn an_entry_without_an_issue_time_is_dropped_by_any_revocation() {
        assert_eq!(judge(&cached(), &whoami(0)), Verdict::Unrevoked);
        assert_eq!(judge(&cached(), &whoami(1)), Verdict::RevokedSince(1));
    }
}
