//! Listing, showing and revoking sessions.

use uuid::Uuid;

use crate::audit::{self, Context};
use crate::auth::{Action, Principal};
use crate::db::{self, sessions::SessionRow};
use crate::domain::{CaseId, CustomerId, SessionKind};
use crate::error::Error;
use crate::events::{self, NewEvent as OutboxEvent};
use crate::state::AppState;

/// Which sessions to list; `None` means "any".
#[derive(Debug, Default)]
pub struct ListFilter {
    pub customer: Option<CustomerId>,
    pub case: Option<CaseId>,
    pub kind: Option<SessionKind>,
    /// `true`: only live sessions; `false`: only expired or revoked ones.
    pub active: Option<bool>,
    pub limit: i64,
}

/// The sessions the principal may see (admins and auditors all, others their own), newest
/// first, within the token's customer limit.
pub async fn list(
    state: &AppState,
    principal: &Principal,
    filter: &ListFilter,
) -> Result<Vec<SessionRow>, Error> {
    principal.authorize(Action::ReadSessions, filter.customer.as_ref())?;
    let limited = principal.customer_scope();
    Ok(db::sessions::list(
        &state.db,
        &db::sessions::Filter {
            customer: filter.customer.as_ref(),
            case_id: filter.case.as_ref(),
            kind: filter.kind,
            active: filter.active,
            requested_by: (!principal.sees_all_sessions()).then(|| principal.actor()),
            customers: limited.as_deref(),
            limit: filter.limit,
        },
    )
    .await?)
}

/// A session the principal may see; one it may not see does not exist (404, no leak).
pub async fn visible(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
) -> Result<SessionRow, Error> {
    principal.authorize(Action::ReadSessions, None)?;
    db::sessions::get(&state.db, id)
        .await?
        .filter(|row| {
            principal.may_see_session(&row.customer_id, &row.requested_by)
                // Whoever may approve sees the requests that need (or needed) an approval.
                || (row.approval.is_some()
                    && principal
                        .authorize(Action::ApproveSessions, Some(&row.customer_id))
                        .is_ok())
        })
        .ok_or_else(|| Error::NotFound(format!("session {id} does not exist")))
}

/// Revokes a session (its owner or an admin): no new credentials are issued for it from any
/// instance; credentials already issued work until `credentials_valid_until`. Refusals are
/// audited.
pub async fn revoke(
    state: &AppState,
    principal: &Principal,
    ctx: &Context,
    id: Uuid,
) -> Result<SessionRow, Error> {
    let row = visible(state, principal, id).await;
    let row = super::audit_denial(state, principal, ctx, "session.revoke", None, row).await?;
    let allowed = principal
        .authorize_owner(&row.customer_id, &row.requested_by, row.kind)
        .map_err(Error::from);
    super::audit_denial(
        state,
        principal,
        ctx,
        "session.revoke",
        Some(&row.customer_id),
        allowed,
    )
    .await?;
    if row.approval == Some(crate::domain::ApprovalStatus::Denied) {
        let refused = Err(Error::Conflict(format!(
            "session {id} was denied by {}: it never started, there is nothing to revoke",
            row.decided_by.as_deref().unwrap_or("?")
        )));
        return super::audit_denial(
            state,
            principal,
            ctx,
            "session.revoke",
            Some(&row.customer_id),
            refused,
        )
        .await;
    }
    let mut tx = state.db.begin().await?;
    let Some(revoked) = db::sessions::revoke(&mut *tx, id, principal.actor()).await? else {
        return Err(Error::Conflict(format!("session {id} is already revoked")));
    };
    let event = db::audit::NewEvent {
        customer_id: Some(revoked.customer_id.to_string()),
        role_name: Some(revoked.role_name.to_string()),
        session_id: Some(id),
        case_id: revoked.case_id.as_ref().map(ToString::to_string),
        profile: Some(revoked.profile_name.clone()),
        ..ctx.event(principal, "session.revoke")
    };
    audit::record_in(&mut tx, &event).await?;
    state
        .outbox
        .write(
            &mut tx,
            OutboxEvent::session(events::REVOKED, principal.actor(), &revoked),
        )
        .await?;
    tx.commit().await?;
    state.outbox.committed();
    state.auth_cache.forget_session(id);
    state.assumed_roles.forget(id);
    Ok(revoked)
}
