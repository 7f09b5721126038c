//! Opening sessions: the rules a new session must meet (customer enabled, role verified and
//! allowing the kind, duration within the caps), and finding the caller's live customer
//! session to reuse.

use crate::audit::{self, Context};
use crate::auth::{Action, Principal, customer_not_found};
use crate::cases::{self, CaseInfo};
use crate::db::{self, sessions::SessionRow};
use crate::domain::session::profile_name;
use crate::domain::{
    CaseId, CustomerId, CustomerStatus, Reason, RoleName, RoleStatus, SessionKind,
};
use crate::error::Error;
use crate::events::{self, NewEvent as OutboxEvent};
use crate::state::AppState;

/// A session to open, its fields already parsed.
pub struct OpenRequest {
    pub kind: SessionKind,
    pub customer: CustomerId,
    pub role: RoleName,
    pub case: Option<CaseId>,
    pub reason: Option<Reason>,
    pub duration_seconds: Option<i32>,
    /// One of the role's tiers; `None`: the base grant.
    pub tier: Option<String>,
}

/// Opens a session after checking the customer, the role and the duration; the session and
/// its audit row commit together. A refusal is audited too.
pub async fn open(
    state: &AppState,
    principal: &Principal,
    ctx: &Context,
    req: &OpenRequest,
) -> Result<SessionRow, Error> {
    let opened = open_checked(state, principal, ctx, req, false).await;
    super::audit_denial(
        state,
        principal,
        ctx,
        "session.open",
        Some(&req.customer),
        opened,
    )
    .await
}

/// [`open`], or with `reuse` the caller's live customer session that outlasts the reuse
/// margin, found under the customer's row lock (so concurrent first requests share one).
pub(super) async fn open_checked(
    state: &AppState,
    principal: &Principal,
    ctx: &Context,
    req: &OpenRequest,
    reuse: bool,
) -> Result<SessionRow, Error> {
    let action = match req.kind {
        SessionKind::Support => Action::OpenSupportSession,
        SessionKind::Customer => Action::OpenCustomerSession,
    };
    principal.authorize(action, Some(&req.customer))?;
    // A request the role's rules refuse anyway never reaches the case system (checked again
    // under the lock below, where it counts).
    if let Some(role) = db::roles::get(&state.db, req.customer.as_str(), req.role.as_str()).await? {
        grant_of(state, req, &role)?;
    }
    // The case system is asked before anything is locked (it may take seconds to answer).
    let case_info = match (&req.case, req.kind) {
        (Some(case), SessionKind::Support) => {
            cases::check(
                state,
                principal,
                ctx,
                case,
                &req.customer,
                req.reason.as_ref(),
            )
            .await?
        }
        _ => CaseInfo::default(),
    };
    let mut tx = state.db.begin().await?;
    let customer = db::customers::lock(&mut tx, req.customer.as_str())
        .await?
        .ok_or_else(|| customer_not_found(&req.customer))?;
    if customer.status == CustomerStatus::Disabled {
        return Err(Error::Conflict(format!(
            "customer '{}' is disabled",
            req.customer
        )));
    }
    let role = db::roles::get(&mut *tx, req.customer.as_str(), req.role.as_str())
        .await?
        .ok_or_else(|| {
            Error::NotFound(format!(
                "customer '{}' has no role '{}'",
                req.customer, req.role
            ))
        })?;
    if role.status != RoleStatus::Verified {
        return Err(Error::Conflict(format!(
            "role '{}' is {}; it must be verified before sessions can use it",
            req.role, role.status
        )));
    }
    if !role.session_kinds.contains(&req.kind) {
        return Err(Error::Conflict(format!(
            "role '{}' does not allow {} sessions",
            req.role, req.kind
        )));
    }
    let (tier, duration) = grant_of(state, req, &role)?;
    if let (Some(case), SessionKind::Support) = (&req.case, req.kind) {
        // Serialised with closing the case: a close either sees this session, or this sees
        // the close.
        if let Some(closed) = db::cases::lock_and_get_closed(&mut tx, case).await?
            && case_info
                .asked_at
                .is_none_or(|asked| asked < closed.closed_at)
        {
            return Err(Error::Forbidden(format!(
                "case {case} was closed at {} by {}; no session can open for it",
                closed
                    .closed_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                closed.closed_by
            )));
        }
    }
    let needs_approval = tier.is_some_and(|t| t.requires_approval)
        || (req.kind == SessionKind::Support && customer.requires_approval);
    if reuse
        && let Some(row) = db::sessions::find_open_customer_session(
            &mut tx,
            &req.customer,
            &req.role,
            principal.actor(),
            reuse_margin_secs(state),
        )
        .await?
    {
        return Ok(row);
    }
    let id = uuid::Uuid::now_v7();
    let profile = profile_name(
        req.kind,
        &req.customer,
        req.case.as_ref(),
        req.tier.as_deref(),
    );
    let row = db::sessions::insert(
        &mut tx,
        &db::sessions::NewSession {
            id,
            kind: req.kind,
            customer_id: &req.customer,
            role_name: &req.role,
            case_id: req.case.as_ref(),
            reason: req.reason.as_ref().map(Reason::as_str),
            profile_name: &profile,
            requested_by: principal.actor(),
            requested_by_role: principal.role.as_str(),
            duration_seconds: duration,
            tier: req.tier.as_deref(),
            case_title: case_info.title.as_deref(),
            case_url: case_info.url.as_deref(),
            case_check: case_info.check,
            approval_window: needs_approval.then(|| state.config.approval_window.as_secs() as i64),
        },
    )
    .await?;
    let event = db::audit::NewEvent {
        customer_id: Some(req.customer.to_string()),
        role_name: Some(req.role.to_string()),
        session_id: Some(id),
        case_id: req.case.as_ref().map(ToString::to_string),
        profile: Some(profile),
        detail: Some(serde_json::json!({
            "kind": req.kind.as_str(),
            "duration_seconds": duration,
            "reason": req.reason.as_ref().map(Reason::as_str),
            "tier": req.tier,
            "requires_approval": needs_approval,
            "case_title": case_info.title,
            "case_url": case_info.url,
            "case_check": case_info.check,
        })),
        ..ctx.event(principal, "session.open")
    };
    audit::record_in(&mut tx, &event).await?;
    let kind = if needs_approval {
        events::REQUESTED
    } else {
        events::OPENED
    };
    state
        .outbox
        .write(&mut tx, OutboxEvent::session(kind, principal.actor(), &row))
        .await?;
    tx.commit().await?;
    state.outbox.committed();
    Ok(row)
}

/// The tier a request names (as the role defines it) and the session's length within the
/// role's and the tier's caps.
fn grant_of<'r>(
    state: &AppState,
    req: &OpenRequest,
    role: &'r db::roles::RoleRow,
) -> Result<(Option<&'r lanyard_api::roles::Tier>, i64), Error> {
    let tier = match &req.tier {
        None => None,
        Some(name) => Some(role.tiers.get(name).ok_or_else(|| {
            let known: Vec<&str> = role.tiers.keys().map(String::as_str).collect();
            Error::invalid(
                "tier",
                if known.is_empty() {
                    format!("role '{}' has no tiers", req.role)
                } else {
                    format!(
                        "role '{}' has no tier '{name}' (it has: {})",
                        req.role,
                        known.join(", ")
                    )
                },
            )
        })?),
    };
    let tier_max = tier
        .and_then(|t| t.max_duration_seconds)
        .unwrap_or(role.max_session_seconds);
    let duration = duration_secs(state, req, role.max_session_seconds.min(tier_max))?;
    Ok((tier, duration))
}

/// The session's length: the requested one within 60 s and the caps (configuration and the
/// role's maximum), else the kind's default.
fn duration_secs(state: &AppState, req: &OpenRequest, role_max: i32) -> Result<i64, Error> {
    let (default, config_max) = match req.kind {
        SessionKind::Support => (
            i64::from(crate::config::DEFAULT_SUPPORT_SESSION_SECS),
            state.config.support_session_max.as_secs() as i64,
        ),
        SessionKind::Customer => {
            let secs = state.config.customer_session.as_secs() as i64;
            (secs, secs)
        }
    };
    let max = config_max.min(i64::from(role_max));
    match req.duration_seconds {
        Some(d) if !(60..=max).contains(&i64::from(d)) => Err(Error::invalid(
            "duration_seconds",
            format!(
                "must be between 60 and {max} (the configured maximum and role '{}''s \
                 max_session_seconds{})",
                req.role,
                if req.tier.is_some() {
                    " and the tier's max_duration_seconds"
                } else {
                    ""
                }
            ),
        )),
        Some(d) => Ok(i64::from(d)),
        None => Ok(default.min(max)),
    }
}

/// The caller's live customer session for this customer and role that outlasts the reuse
/// margin, if any.
pub(super) async fn reusable(
    state: &AppState,
    customer: &CustomerId,
    role: &RoleName,
    actor: &str,
) -> Result<Option<SessionRow>, Error> {
    let mut conn = state.db.acquire().await?;
    Ok(db::sessions::find_open_customer_session(
        &mut conn,
        customer,
        role,
        actor,
        reuse_margin_secs(state),
    )
    .await?)
}

/// A customer session is reused only while it outlasts the credential refresh window (and a
/// minute more): near its end every credential request would otherwise return credentials
/// that SDKs consider stale at once, so a fresh session is opened instead.
pub(super) fn reuse_margin_secs(state: &AppState) -> i64 {
    i64::try_from(state.config.credential_refresh.as_secs()).unwrap_or(0) + 60
}

/// The customer's one verified role that allows customer sessions.
pub(super) async fn only_customer_role(
    state: &AppState,
    customer: &CustomerId,
) -> Result<RoleName, Error> {
    let roles = db::roles::list(&state.db, customer.as_str()).await?;
    if roles.is_empty()
        && db::customers::get(&state.db, customer.as_str())
            .await?
            .is_none()
    {
        return Err(customer_not_found(customer).into());
    }
    let usable: Vec<_> = roles
        .into_iter()
        .filter(|r| {
            r.status == RoleStatus::Verified && r.session_kinds.contains(&SessionKind::Customer)
        })
        .collect();
    match usable.as_slice() {
        [one] => Ok(one.name.clone()),
        [] => Err(Error::Conflict(format!(
            "customer '{customer}' has no verified role that allows customer sessions"
        ))),
        _ => Err(Error::Conflict(format!(
            "customer '{customer}' has several roles for customer sessions; name one in 'role'"
        ))),
    }
}
