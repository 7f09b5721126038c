//! The grant behind a credential request: the session, its customer and role, read in one
//! query, and kept per instance for at most 500 ms (see `auth::cache`); and whether it lets
//! the session have credentials now.

use chrono::SecondsFormat;
use uuid::Uuid;

use super::assume::Refused;
use crate::domain::{ApprovalStatus, CustomerStatus, RoleStatus};

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

/// Whether the session may have credentials right now, and why not. Every instance reads
/// the grant from the database on every request, so a revocation holds everywhere at once.
pub(super) fn check(grant: &Grant) -> Result<(), Refused> {
    let s = &grant.session;
    if let Some(revoked_at) = s.revoked_at {
        let still = s
            .credentials_valid_until
            .filter(|until| *until > grant.now)
            .map(|until| {
                format!(
                    "; credentials issued before keep working until {}",
                    until.to_rfc3339_opts(SecondsFormat::Secs, true)
                )
            })
            .unwrap_or_default();
        return Err(Refused::denied(
            "SessionRevoked",
            Error::Gone(format!(
                "session {} was revoked at {}{still}",
                s.id,
                revoked_at.to_rfc3339_opts(SecondsFormat::Secs, true)
            )),
        ));
    }
    match s.approval {
        Some(ApprovalStatus::Denied) => {
            return Err(Refused::denied(
                "SessionDenied",
                Error::Gone(format!(
                    "session {} was denied by {}{}",
                    s.id,
                    s.decided_by.as_deref().unwrap_or("?"),
                    s.decision_comment
                        .as_deref()
                        .map(|c| format!(": {c}"))
                        .unwrap_or_default()
                )),
            ));
        }
        Some(ApprovalStatus::Pending) if s.expires_at > grant.now => {
            return Err(Refused::denied(
                "PendingApproval",
                Error::Conflict(format!(
                    "session {} is waiting for approval by a second person (tier '{}'); the \
                     request expires at {} unless approved (`lanyard sessions approve {}`)",
                    s.id,
                    s.tier.as_deref().unwrap_or("base"),
                    s.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
                    s.id
                )),
            ));
        }
        Some(ApprovalStatus::Pending) => {
            return Err(Refused::denied(
                "ApprovalExpired",
                Error::Gone(format!(
                    "the request for session {} expired unapproved at {}",
                    s.id,
                    s.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true)
                )),
            ));
        }
        _ => {}
    }
    if s.tier.is_some() && grant.tier_spec.is_none() {
        return Err(Refused::denied(
            "TierRemoved",
            Error::Conflict(format!(
                "role '{}' no longer has the tier '{}' this session was opened in",
                s.role_name,
                s.tier.as_deref().unwrap_or_default()
            )),
        ));
    }
    if s.expires_at <= grant.now {
        return Err(Refused::denied(
            "SessionExpired",
            Error::Gone(format!(
                "session {} expired at {}",
                s.id,
                s.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true)
            )),
        ));
    }
    if grant.customer_status == CustomerStatus::Disabled {
        return Err(Refused::denied(
            "CustomerDisabled",
            Error::Conflict(format!("customer '{}' is disabled", s.customer_id)),
        ));
    }
    if grant.role_status != RoleStatus::Verified || grant.external_id.is_none() {
        return Err(Refused::denied(
            "RoleNotVerified",
            Error::Conflict(format!(
                "role '{}' of customer '{}' is {}; verify it first",
                s.role_name, s.customer_id, grant.role_status
            )),
        ));
    }
    if !grant.role_kinds.contains(&s.kind) {
        return Err(Refused::denied(
            "SessionKindNotAllowed",
            Error::Conflict(format!(
                "role '{}' does not allow {} sessions",
                s.role_name, s.kind
            )),
        ));
    }
    Ok(())
}
