//! The grant behind a credential request: the session, its customer and role, read in one
//! query, and kept per instance for at most 500 ms (see `auth::cache`).

use uuid::Uuid;

use crate::db::{self, sessions::Grant};
use crate::error::Error;
use crate::state::AppState;

/// The session's grant, from the short-lived cache or the database. An entry due for a
/// re-read is served while one background task reads it again.
pub(super) async fn cached_grant(state: &AppState, id: Uuid) -> Result<Option<Grant>, Error> {
    if let Some(cached) = state.auth_cache.grant(id) {
        if cached.refresh {
            let state = state.clone();
            tokio::spawn(async move {
                let read = state.auth_cache.begin_read();
                match db::sessions::grant(&state.db, id).await {
                    Ok(Some(grant)) => state.auth_cache.store_grant(&grant, read),
                    Ok(None) => state.auth_cache.forget_session(id),
                    // Unknown: the entry expires on its own (at most the staleness bound).
                    Err(_) => {}
                }
            });
        }
        return Ok(Some(cached.value));
    }
    let read = state.auth_cache.begin_read();
    let grant = db::sessions::grant(&state.db, id).await?;
    if let Some(grant) = &grant {
        state.auth_cache.store_grant(grant, read);
    }
    Ok(grant)
}
