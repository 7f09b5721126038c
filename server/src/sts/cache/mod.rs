//! Credentials from AssumeRole, cached per session and holder, with single-flight refresh and a
//! short negative cache.
//!
//! Each session has one slot behind an async mutex. A request takes the slot, and either
//! finds usable credentials (a cache hit) or makes the AssumeRole call while holding it, so
//! concurrent requests for the same session wait for that one call and then find its result:
//! N cold requests cost one AssumeRole. An AccessDenied is remembered for a short while, so
//! a misconfigured role does not turn every retry of every client into an STS call.
//!
//! The cache only saves AssumeRole calls. Whether a session may get credentials at all is
//! decided before the cache is consulted, from the database, on every request.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::AssumedCredentials;
use crate::domain::verification::AwsError;

/// Credentials as cached: what STS returned, and what they were issued under.
#[derive(Debug)]
pub struct Cached {
    pub credentials: AssumedCredentials,
    /// The role's `updated_at` when they were issued: a changed role invalidates them.
    pub role_version: DateTime<Utc>,
    /// When the session ended at issue time (a later revocation is checked separately).
    pub session_end: DateTime<Utc>,
    /// The SourceIdentity and RoleSessionName sent to STS (what CloudTrail shows).
    pub source_identity: String,
    pub role_session_name: String,
}

/// Whose credentials a slot holds: the session's owner, or someone else acting on the
/// session (an admin), who gets credentials of their own (see `credentials::issue`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder<'a> {
    Owner,
    Other(&'a str),
}

/// The slots of one session: its owner's, and those of others acting on it (rare).
#[derive(Default)]
struct SessionSlots {
    owner: Arc<Slot>,
    others: Vec<(String, Arc<Slot>)>,
}

impl SessionSlots {
    fn get(&mut self, holder: Holder<'_>) -> Arc<Slot> {
        match holder {
            Holder::Owner => self.owner.clone(),
            Holder::Other(actor) => {
                if let Some((_, slot)) = self.others.iter().find(|(a, _)| a == actor) {
                    return slot.clone();
                }
                let slot = Arc::new(Slot::default());
                self.others.push((actor.to_owned(), slot.clone()));
                slot
            }
        }
    }

    fn slots(&self) -> impl Iterator<Item = &Arc<Slot>> {
        std::iter::once(&self.owner).chain(self.others.iter().map(|(_, s)| s))
    }
}

#[derive(Default)]
struct Slot {
    /// Read without waiting: the hot path is a read lock held for a pointer copy.
    credentials: std::sync::RwLock<Option<Arc<Cached>>>,
    /// Held across the AssumeRole call: the single flight. Also guards what failed.
    flight: tokio::sync::Mutex<Failures>,
}

#[derive(Default)]
struct Failures {
    /// An AccessDenied, remembered until the instant given, for the role version it was
    /// met under (a changed or re-verified role is asked again at once).
    denied: Option<(Instant, AwsError, DateTime<Utc>)>,
    /// The last failed flight and when it ended: requests that were already waiting for it
    /// share its outcome instead of each making their own call.
    last: Option<(Instant, AwsError)>,
}

impl Slot {
    fn usable(&self, usable: &impl Fn(&Cached) -> bool) -> Option<Arc<Cached>> {
        self.credentials
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|c| usable(c))
            .cloned()
    }
}

/// The outcome of [`AssumedRoleCache::get_or_issue`].
#[derive(Debug)]
pub enum Lookup {
    /// Usable credentials were cached.
    Hit(Arc<Cached>),
    /// This request made the AssumeRole call.
    Issued(Arc<Cached>),
    /// AssumeRole failed; `cached` says whether it was a remembered AccessDenied.
    Failed { error: AwsError, cached: bool },
}

pub struct AssumedRoleCache {
    /// The slots per session, and the size at which expired ones are swept out next.
    slots: Mutex<(HashMap<Uuid, SessionSlots>, usize)>,
    denied_ttl: Duration,
}

/// Slots kept before expired ones are swept out.
const SWEEP_ABOVE: usize = 4096;

impl AssumedRoleCache {
    pub fn new(denied_ttl: Duration) -> Self {
        AssumedRoleCache {
            slots: Mutex::new((HashMap::new(), SWEEP_ABOVE)),
            denied_ttl,
        }
    }

    fn slot(&self, session: Uuid, holder: Holder<'_>) -> Arc<Slot> {
        let mut guard = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let (slots, next_sweep) = &mut *guard;
        if let Some(entry) = slots.get_mut(&session) {
            return entry.get(holder);
        }
        // Amortised: a sweep happens only when the map doubled since the last one.
        if slots.len() >= *next_sweep {
            let now = Utc::now();
            slots.retain(|_, entry| {
                entry.slots().any(|slot| {
                    Arc::strong_count(slot) > 1
                        || slot
                            .credentials
                            .read()
                            .unwrap_or_else(|p| p.into_inner())
                            .as_ref()
                            .is_some_and(|c| c.credentials.expiration > now && c.session_end > now)
                })
            });
            *next_sweep = (slots.len() * 2).max(SWEEP_ABOVE);
        }
        slots.entry(session).or_default().get(holder)
    }

    /// Forgets a session's credentials, everyone's (after a revocation or a role change).
    pub fn forget(&self, session: Uuid) {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .remove(&session);
    }

    /// Cached credentials of `holder` for `session` if `usable` accepts them; otherwise the
    /// result of `issue`, made once however many requests wait for it.
    pub async fn get_or_issue<F, Fut>(
        &self,
        session: Uuid,
        holder: Holder<'_>,
        role_version: DateTime<Utc>,
        usable: impl Fn(&Cached) -> bool,
        issue: F,
    ) -> Lookup
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Cached, AwsError>>,
    {
        let slot = self.slot(session, holder);
        if let Some(cached) = slot.usable(&usable) {
            return Lookup::Hit(cached);
        }
        let arrived = Instant::now();
        let mut failures = slot.flight.lock().await;
        // Whoever held the flight before us may have just issued...
        if let Some(cached) = slot.usable(&usable) {
            return Lookup::Hit(cached);
        }
        // ...or failed while we waited: share that outcome rather than call again.
        if let Some((ended, error)) = &failures.last
            && *ended >= arrived
        {
            return Lookup::Failed {
                error: error.clone(),
                cached: true,
            };
        }
        if let Some((until, error, version)) = &failures.denied {
            if Instant::now() < *until && *version == role_version {
                return Lookup::Failed {
                    error: error.clone(),
                    cached: true,
                };
            }
            failures.denied = None;
        }
        match issue().await {
            Ok(cached) => {
                let cached = Arc::new(cached);
                *slot.credentials.write().unwrap_or_else(|p| p.into_inner()) = Some(cached.clone());
                failures.last = None;
                Lookup::Issued(cached)
            }
            Err(error) => {
                if error.is_access_denied() && !self.denied_ttl.is_zero() {
                    failures.denied = Some((
                        Instant::now() + self.denied_ttl,
                        error.clone(),
                        role_version,
                    ));
                }
                failures.last = Some((Instant::now(), error.clone()));
                Lookup::Failed {
                    error,
                    cached: false,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
