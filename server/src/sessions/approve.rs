//! Two-person approval: a session whose tier requires it waits as `pending_approval` until a
//! different person with an approving role (admin or support) approves or denies it. The
//! session's clock starts at the approval. Nobody decides their own request; an admin token
//! does not bypass that (the database refuses it too).

use uuid::Uuid;

use crate::audit::{self, Context};
use crate::auth::{Action, Principal};
use crate::db::{self, sessions::SessionRow};
use crate::domain::{ApprovalStatus, SessionStatus};
use crate::error::Error;
use crate::events::{self, NewEvent as OutboxEvent};
use crate::state::AppState;

/// Requests waiting for approval that the principal may decide (its own are listed too, so
/// that a requester sees where theirs stands), oldest first.
pub async fn pending(
    state: &AppState,
    principal: &Principal,
    limit: i64,
) -> Result<Vec<SessionRow>, Error> {
    principal.authorize(Action::ApproveSessions, None)?;
    let scope = principal.customer_scope();
    Ok(db::session_changes::pending(&state.db, scope.as_deref(), limit).await?)
}

/// Approves (or denies) a pending request. Refusals are audited.
pub async fn decide(
    state: &AppState,
    principal: &Principal,
    ctx: &Context,
    id: Uuid,
    decision: ApprovalStatus,
    comment: Option<&str>,
) -> Result<SessionRow, Error> {
    let action = match decision {
        ApprovalStatus::Denied => "session.deny",
        _ => "session.approve",
    };
    let checked = check(state, principal, id).await;
    let customer = checked.as_ref().ok().map(|row| row.customer_id.clone());
    let decided = match checked {
        Ok(_) => record(state, principal, ctx, id, decision, comment, action).await,
        Err(e) => Err(e),
    };
    super::audit_denial(state, principal, ctx, action, customer.as_ref(), decided).await
}

/// Whether the principal may decide this request now, and why not.
async fn check(state: &AppState, principal: &Principal, id: Uuid) -> Result<SessionRow, Error> {
    let row = db::sessions::get(&state.db, id)
        .await?
        .filter(|row| principal.may_see(&row.customer_id))
        .ok_or_else(|| Error::NotFound(format!("session {id} does not exist")))?;
    principal.authorize(Action::ApproveSessions, Some(&row.customer_id))?;
    if row.requested_by == principal.actor() {
        return Err(Error::Forbidden(format!(
            "session {id} is your own request: a different person must approve or deny it"
        )));
    }
    why_not_pending(&row)?;
    Ok(row)
}

/// A request that is not pending any more, and why.
fn why_not_pending(row: &SessionRow) -> Result<(), Error> {
    let id = row.id;
    let at =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    match (row.approval, row.status(chrono::Utc::now())) {
        (_, SessionStatus::PendingApproval) => Ok(()),
        (None, _) => Err(Error::Conflict(format!(
            "session {id} does not need approval"
        ))),
        (Some(decided @ (ApprovalStatus::Approved | ApprovalStatus::Denied)), _) => {
            Err(Error::Conflict(format!(
                "session {id} was already {} by {}{}",
                decided.as_str(),
                row.decided_by.as_deref().unwrap_or("?"),
                row.decided_at
                    .map(|t| format!(" at {}", at(t)))
                    .unwrap_or_default()
            )))
        }
        (Some(ApprovalStatus::Pending), SessionStatus::Revoked) => Err(Error::Gone(format!(
            "session {id} was withdrawn or revoked by {}",
            row.revoked_by.as_deref().unwrap_or("?")
        ))),
        (Some(ApprovalStatus::Pending), _) => Err(Error::Gone(format!(
            "the request for session {id} expired unapproved at {}",
            at(row.expires_at)
        ))),
    }
}

async fn record(
    state: &AppState,
    principal: &Principal,
    ctx: &Context,
    id: Uuid,
    decision: ApprovalStatus,
    comment: Option<&str>,
    action: &'static str,
) -> Result<SessionRow, Error> {
    let mut tx = state.db.begin().await?;
    let Some(row) =
        db::session_changes::decide(&mut tx, id, decision, principal.actor(), comment).await?
    else {
        // Decided, withdrawn or expired since it was checked: say which.
        drop(tx);
        let now = db::sessions::get(&state.db, id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("session {id} does not exist")))?;
        why_not_pending(&now)?;
        return Err(Error::Conflict(format!(
            "session {id} is not pending approval"
        )));
    };
    let event = db::audit::NewEvent {
        customer_id: Some(row.customer_id.to_string()),
        role_name: Some(row.role_name.to_string()),
        session_id: Some(id),
        case_id: row.case_id.as_ref().map(ToString::to_string),
        profile: Some(row.profile_name.clone()),
        detail: Some(serde_json::json!({
            "requested_by": row.requested_by,
            "tier": row.tier,
            "comment": comment,
            "expires_at": (decision == ApprovalStatus::Approved).then_some(row.expires_at),
        })),
        ..ctx.event(principal, action)
    };
    audit::record_in(&mut tx, &event).await?;
    let kind = match decision {
        ApprovalStatus::Denied => events::DENIED,
        _ => events::APPROVED,
    };
    let mut decided = OutboxEvent::session(kind, principal.actor(), &row);
    decided.comment = comment;
    state.outbox.write(&mut tx, decided).await?;
    if decision == ApprovalStatus::Approved {
        state
            .outbox
            .write(
                &mut tx,
                OutboxEvent::session(events::OPENED, principal.actor(), &row),
            )
            .await?;
    }
    tx.commit().await?;
    state.outbox.committed();
    state.auth_cache.forget_session(id);
    Ok(row)
}
