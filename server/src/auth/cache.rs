//! Short-lived caches of authorization state, and how revocations reach them.
//!
//! Postgres is the truth for token revocation, session revocation and expiry, customer
//! status and roles. Reading all of that on every credential request would make the
//! database the bottleneck of the cached credential path, so each instance keeps what it
//! read for at most its staleness bound (`LANYARD_AUTH_CACHE_MS`, [`DEFAULT_MAX_STALENESS`]
//! by default), and drops it sooner when told:
//!
//! - the instance that makes a change drops its own entries at once;
//! - database triggers (`migrations/*_revocation_notify.sql`) send `NOTIFY lanyard_revocation`
//!   for every revoked token or session and every customer or role change, and every
//!   instance listens and drops the matching entries (typically within milliseconds);
//! - if the listening connection fails, everything cached is dropped, and the staleness
//!   bound holds regardless: no instance acts on state older than the bound.
//!
//! A read that started before a revocation was applied here never refills the cache after
//! it: every read takes a [`Read`] ticket first, and an entry is stored only if no entry was
//! dropped since the ticket was taken (checked under the same lock as the drop).
//!
//! So a revocation made anywhere is honoured by every instance within 1 second, usually at
//! once. Tokens are cached only after their signature verified; a token's own expiry is
//! checked on every use.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use uuid::Uuid;

use super::Principal;
use crate::db::sessions::Grant;

/// The longest any instance acts on authorization state it read earlier, by default.
pub const DEFAULT_MAX_STALENESS: Duration = Duration::from_millis(500);
/// The channel the triggers notify on.
pub const CHANNEL: &str = "lanyard_revocation";
/// Entries kept before the caches are emptied (they refill from the database).
const MAX_ENTRIES: usize = 50_000;

struct Entry<T> {
    value: T,
    read_at: Instant,
    /// Set by the one request that starts the background re-read.
    refreshing: std::sync::atomic::AtomicBool,
}

impl<T> Entry<T> {
    fn new(value: T, read_at: Instant) -> Self {
        Entry {
            value,
            read_at,
            refreshing: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// True for exactly one caller once the entry is due for a re-read (half way through its
    /// life): busy tokens and sessions are re-read in the background while still served, so
    /// that they never all expire at once and send every request to the database.
    fn claim_refresh(&self, refresh_after: Duration) -> bool {
        self.read_at.elapsed() >= refresh_after
            && !self
                .refreshing
                .swap(true, std::sync::atomic::Ordering::Relaxed)
    }
}

/// A cached value, and whether the caller should re-read it in the background.
pub struct Cached<T> {
    pub value: T,
    pub refresh: bool,
}

/// Taken before a database read whose result may be cached: when it started, and how many
/// drops the cache had seen then.
#[derive(Debug, Clone, Copy)]
pub struct Read {
    at: Instant,
    drops: u64,
}

pub struct AuthCache {
    max_staleness: Duration,
    /// Incremented by every drop (forget, clear), under the lock of the map it drops from.
    drops: AtomicU64,
    /// Verified, unrevoked tokens by their text, with their expiry (Unix seconds).
    tokens: RwLock<HashMap<String, Entry<(Principal, i64)>>>,
    grants: RwLock<HashMap<Uuid, Entry<Grant>>>,
    /// Which session serves a service's customer credentials. Only a hint: the session's
    /// grant is checked on every use.
    customer_sessions: RwLock<HashMap<CustomerSessionKey, Uuid>>,
}

/// (customer, requested role, actor): the key of [`AuthCache::customer_session`].
pub type CustomerSessionKey = (String, Option<String>, String);

impl AuthCache {
    /// A cache whose entries are served for at most `max_staleness`.
    pub fn new(max_staleness: Duration) -> Self {
        AuthCache {
            max_staleness,
            drops: AtomicU64::new(0),
            tokens: RwLock::default(),
            grants: RwLock::default(),
            customer_sessions: RwLock::default(),
        }
    }

    /// A ticket for a read about to start (see [`Read`]).
    pub fn begin_read(&self) -> Read {
        Read {
            at: Instant::now(),
            drops: self.drops.load(Ordering::SeqCst),
        }
    }

    /// Whether nothing was dropped since `read` began; call with the map's write lock held.
    fn still_current(&self, read: Read) -> bool {
        self.drops.load(Ordering::SeqCst) == read.drops
    }

    /// Counts a drop; call with the write lock of the map it drops from held.
    fn dropped(&self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }

    fn fresh<T>(&self, entry: &Entry<T>) -> bool {
        entry.read_at.elapsed() < self.max_staleness
    }

    fn claim_refresh<T>(&self, entry: &Entry<T>) -> bool {
        entry.claim_refresh(self.max_staleness / 2)
    }

    /// The principal for a token verified and found unrevoked within the staleness bound.
    pub fn principal(&self, token: &str) -> Option<Cached<Principal>> {
        let tokens = self.tokens.read().unwrap_or_else(|p| p.into_inner());
        let entry = tokens.get(token).filter(|e| self.fresh(e))?;
        let (principal, exp) = &entry.value;
        let leeway = i64::try_from(crate::auth::token::LEEWAY_SECS).unwrap_or(0);
        (chrono::Utc::now().timestamp() < *exp + leeway).then(|| Cached {
            value: principal.clone(),
            refresh: self.claim_refresh(entry),
        })
    }

    /// `read`: the ticket taken before the database read behind it (staleness counts from
    /// there; nothing is stored if an entry was dropped since).
    pub fn store_principal(&self, token: &str, principal: &Principal, exp: i64, read: Read) {
        let mut tokens = self.tokens.write().unwrap_or_else(|p| p.into_inner());
        if !self.still_current(read) {
            return;
        }
        if tokens.len() >= MAX_ENTRIES {
            tokens.clear();
        }
        tokens.insert(
            token.to_owned(),
            Entry::new((principal.clone(), exp), read.at),
        );
    }

    /// A session's grant read within the staleness bound, its `now` moved on by the time
    /// since it was read (so expiry checks use the present).
    pub fn grant(&self, session: Uuid) -> Option<Cached<Grant>> {
        let grants = self.grants.read().unwrap_or_else(|p| p.into_inner());
        let entry = grants.get(&session).filter(|e| self.fresh(e))?;
        let mut grant = entry.value.clone();
        grant.now += chrono::Duration::from_std(entry.read_at.elapsed()).ok()?;
        Some(Cached {
            value: grant,
            refresh: self.claim_refresh(entry),
        })
    }

    /// `read`: as for [`AuthCache::store_principal`].
    pub fn store_grant(&self, grant: &Grant, read: Read) {
        let mut grants = self.grants.write().unwrap_or_else(|p| p.into_inner());
        if !self.still_current(read) {
            return;
        }
        if grants.len() >= MAX_ENTRIES {
            grants.clear();
        }
        grants.insert(grant.session.id, Entry::new(grant.clone(), read.at));
    }

    pub fn customer_session(&self, key: &CustomerSessionKey) -> Option<Uuid> {
        self.customer_sessions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .copied()
    }

    pub fn store_customer_session(&self, key: CustomerSessionKey, session: Uuid) {
        let mut map = self
            .customer_sessions
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(key, session);
    }

    pub fn forget_token(&self, jti: Uuid) {
        let mut tokens = self.tokens.write().unwrap_or_else(|p| p.into_inner());
        self.dropped();
        tokens.retain(|_, e| e.value.0.token_id != jti);
    }

    pub fn forget_session(&self, session: Uuid) {
        {
            let mut grants = self.grants.write().unwrap_or_else(|p| p.into_inner());
            self.dropped();
            grants.remove(&session);
        }
        self.customer_sessions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, id| *id != session);
    }

    pub fn forget_customer(&self, customer: &str) {
        {
            let mut grants = self.grants.write().unwrap_or_else(|p| p.into_inner());
            self.dropped();
            grants.retain(|_, e| e.value.session.customer_id.as_str() != customer);
        }
        self.customer_sessions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(c, _, _), _| c != customer);
    }

    pub fn clear(&self) {
        let mut tokens = self.tokens.write().unwrap_or_else(|p| p.into_inner());
        let mut grants = self.grants.write().unwrap_or_else(|p| p.into_inner());
        self.dropped();
        tokens.clear();
        grants.clear();
        drop((tokens, grants));
        self.customer_sessions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Applies one notification payload: `token:<jti>`, `session:<id>` or `customer:<id>`.
    pub fn apply(&self, payload: &str) {
        match payload.split_once(':') {
            Some(("token", jti)) => match jti.parse() {
                Ok(jti) => self.forget_token(jti),
                Err(_) => self.clear(),
            },
            Some(("session", id)) => match id.parse() {
                Ok(id) => self.forget_session(id),
                Err(_) => self.clear(),
            },
            Some(("customer", id)) => self.forget_customer(id),
            _ => self.clear(),
        }
    }
}

/// Listens for revocations until the process ends; reconnects after failures, dropping
/// everything cached each time (notifications may have been missed).
pub fn spawn_listener(pool: PgPool, cache: Arc<AuthCache>) {
    tokio::spawn(async move {
        loop {
            match listen(&pool, &cache).await {
                Ok(()) => return,
                // The application is stopping (it closes the pool): nothing was lost.
                Err(_) if pool.is_closed() => return,
                Err(e) => {
                    cache.clear();
                    tracing::warn!(error = %e, "revocation listener lost its connection; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
}

async fn listen(pool: &PgPool, cache: &AuthCache) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    cache.clear();
    loop {
        match listener.try_recv().await? {
            Some(notification) => cache.apply(notification.payload()),
            // The connection was lost and re-established: anything may have been missed.
            None => cache.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    fn principal(token_id: Uuid) -> Principal {
        Principal {
            subject: "alice".into(),
            role: Role::Support,
            customers: None,
            token_id,
            expires_at: chrono::Utc::now().timestamp() + 3600,
        }
    }

    #[test]
    fn a_read_that_began_before_a_revocation_does_not_refill_the_cache() {
        let cache = AuthCache::new(DEFAULT_MAX_STALENESS);
        let jti = Uuid::new_v4();
        let p = principal(jti);
        // A background re-read starts, the token is revoked meanwhile (dropped here), then
        // the read, which saw the token still valid, finishes.
        let read = cache.begin_read();
        cache.forget_token(jti);
        cache.store_principal("raw", &p, p.expires_at, read);
        assert!(cache.principal("raw").is_none());
        // A read that began after the drop is stored as before.
        let read = cache.begin_read();
        cache.store_principal("raw", &p, p.expires_at, read);
        assert!(cache.principal("raw").is_some());
    }
}
