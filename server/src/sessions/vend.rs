//! Vending credentials: the session's grant and the caller's right to it, credentials from
//! the cache or one AssumeRole, the audit row, the counts; credentials leave only after
//! their audit row committed.

use std::time::Instant;

use lanyard_api::sessions::CredentialProcess;
use uuid::Uuid;

use super::assume::{self, Refused};
use super::grant::cached_grant;
use super::open::{OpenRequest, only_customer_role, open_checked, reusable, reuse_margin_secs};
use crate::audit::Context;
use crate::auth::{Action, Principal};
use crate::db::{audit::NewEvent, sessions::Grant};
use crate::domain::{CustomerId, Outcome, RoleName, SessionKind};
use crate::error::Error;
use crate::metrics::cloudwatch::CredentialRequest;
use crate::state::AppState;

/// Credentials for a session (its owner, or an admin in the admin's own name), in
/// credential_process form.
pub async fn session_credentials(
    state: &AppState,
    principal: &Principal,
    ctx: &Context,
    id: Uuid,
    started: Instant,
) -> Result<CredentialProcess, Error> {
    let grant = cached_grant(state, id)
        .await?
        .filter(|g| principal.may_see(&g.session.customer_id))
        .ok_or_else(|| Error::NotFound(format!("session {id} does not exist")))?;
    vend(state, principal, ctx, &grant, started).await
}

const ACTION: &str = "credentials.issue";

/// Whether the principal may ask for customer credentials of `customer`; a refusal is
/// audited. [`customer_credentials`] checks it too; handlers call it first, so that a caller
/// who may not ask learns nothing from how its request body is read.
pub async fn may_ask_customer_credentials(
    state: &AppState,
    principal: &Principal,
    ctx: &Context,
    customer: &CustomerId,
) -> Result<(), Error> {
    let allowed = principal
        .authorize(Action::OpenCustomerSession, Some(customer))
        .map_err(Error::from);
    super::audit_denial(state, principal, ctx, ACTION, Some(customer), allowed).await
}

/// Credentials for the caller's customer session with `customer`, opened if there is no live
/// one that lasts long enough (service, admin). `role` may be left out when the customer has
/// exactly one verified role for customer sessions.
pub async fn customer_credentials(
    state: &AppState,
    principal: &Principal,
    ctx: &Context,
    customer: &CustomerId,
    role: Option<RoleName>,
    started: Instant,
) -> Result<CredentialProcess, Error> {
    may_ask_customer_credentials(state, principal, ctx, customer).await?;
    // The hot path of credential_process clients: the session that served this caller last
    // time, while its (cached, at most 500 ms old) grant says it is live and long enough.
    let key = (
        customer.to_string(),
        role.as_ref().map(ToString::to_string),
        principal.actor().to_owned(),
    );
    if let Some(id) = state.auth_cache.customer_session(&key)
        && let Some(grant) = cached_grant(state, id).await?
        && grant.session.revoked_at.is_none()
        && (grant.session.expires_at - grant.now).num_seconds() > reuse_margin_secs(state)
    {
        return vend(state, principal, ctx, &grant, started).await;
    }
    let role = match role {
        Some(role) => role,
        None => {
            let only = only_customer_role(state, customer).await;
            super::audit_denial(state, principal, ctx, ACTION, Some(customer), only).await?
        }
    };
    // Reuse a live session that outlasts the credential refresh window, else open one
    // (which re-checks under the customer row lock, so concurrent first requests share one).
    let session = match reusable(state, customer, &role, principal.actor()).await? {
        Some(row) => row,
        None => {
            let request = OpenRequest {
                kind: SessionKind::Customer,
                customer: customer.clone(),
                role,
                case: None,
                reason: None,
                duration_seconds: None,
                tier: None,
            };
            let opened = open_checked(state, principal, ctx, &request, true).await;
            super::audit_denial(state, principal, ctx, ACTION, Some(customer), opened).await?
        }
    };
    state.auth_cache.store_customer_session(key, session.id);
    let grant = cached_grant(state, session.id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("session {} does not exist", session.id)))?;
    vend(state, principal, ctx, &grant, started).await
}

/// Checks, issues and audits; the credentials leave only after their audit row committed.
async fn vend(
    state: &AppState,
    principal: &Principal,
    ctx: &Context,
    grant: &Grant,
    started: Instant,
) -> Result<CredentialProcess, Error> {
    let s = &grant.session;
    let outcome = match principal.authorize_owner(&s.customer_id, &s.requested_by, s.kind) {
        Err(error) => Err(Refused::denied(
            "Forbidden",
            // Whoever may not see the session does not learn that it exists.
            if principal.may_see_session(&s.customer_id, &s.requested_by) {
                error.into()
            } else {
                Error::NotFound(format!("session {} does not exist", s.id))
            },
        )),
        Ok(()) => match super::grant::check(grant) {
            Err(refused) => Err(refused),
            Ok(()) => {
                assume::issue(state, grant, principal.actor(), ctx.request_id.as_deref()).await
            }
        },
    };
    let mut event = NewEvent {
        customer_id: Some(s.customer_id.to_string()),
        role_name: Some(s.role_name.to_string()),
        session_id: Some(s.id),
        case_id: s.case_id.as_ref().map(ToString::to_string),
        profile: Some(s.profile_name.clone()),
        duration_ms: Some(i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX)),
        ..ctx.event(principal, "credentials.issue")
    };
    match outcome {
        Ok(issued) => {
            event.cache_hit = Some(issued.cache_hit);
            // The exact values AWS got, so that a CloudTrail entry's SourceIdentity or
            // RoleSessionName always leads back here (and to the full subject: `actor`).
            let mut detail = serde_json::json!({
                "access_key_id": issued.document.access_key_id,
                "expiration": issued.document.expiration,
                "source_identity": issued.source_identity,
                "role_session_name": issued.role_session_name,
            });
            if principal.actor() != s.requested_by {
                detail["session_owner"] = serde_json::json!(s.requested_by);
            }
            if let Some(tier) = &s.tier {
                // The usage rollups read it from here (`group_by=tier`).
                detail["tier"] = serde_json::json!(tier);
            }
            event.detail = Some(detail);
            audit_and_count(state, grant, event, started).await?;
            Ok(issued.document)
        }
        Err(refused) => {
            event.outcome = refused.outcome;
            event.error_code = Some(refused.code);
            event.cache_hit = refused.cache_hit;
            event.detail = s
                .tier
                .as_ref()
                .map(|tier| serde_json::json!({ "tier": tier }));
            audit_and_count(state, grant, event, started).await?;
            Err(refused.error)
        }
    }
}

/// Writes the audit row of a credential request, then counts the request (Prometheus, and
/// CloudWatch when on) with the outcome the client gets: an audit failure answers 503, so it
/// counts as an error.
async fn audit_and_count(
    state: &AppState,
    grant: &Grant,
    event: NewEvent,
    started: Instant,
) -> Result<(), Error> {
    let session = &grant.session;
    let (outcome, cache_hit) = (event.outcome, event.cache_hit);
    let audited = state.audit.record(event).await;
    state.metrics.observe_credentials(&CredentialRequest {
        session: session.id,
        customer: session.customer_id.as_str(),
        profile: &session.profile_name,
        kind: session.kind,
        outcome: if audited.is_ok() {
            outcome
        } else {
            Outcome::Error
        },
        cache_hit,
        elapsed: started.elapsed(),
    });
    Ok(audited?)
}
