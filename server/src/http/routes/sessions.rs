//! Sessions and credentials: open, list, show, revoke; credentials for a session, and for
//! the caller's customer session.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{CustomerPath, RequestContext};
use crate::app::AppState;
use crate::auth::{Action, Principal, customer_not_found};
use crate::cloudwatch::{CredentialRequest, Outcome};
use crate::credentials::{self, CredentialProcess, Refused};
use crate::db::sessions::{Grant, NewSession, SessionRow};
use crate::db::{self, audit::NewEvent};
use crate::domain::session::profile_name;
use crate::domain::{CaseId, CustomerId, Reason, RoleName, SessionKind};
use crate::http::error::{ApiError, Problem};
use crate::http::extract::{ApiJson, ApiPath, ApiQuery};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(open_session, list_sessions))
        .routes(routes!(get_session, revoke_session))
        .routes(routes!(issue_session_credentials))
        .routes(routes!(issue_customer_credentials))
}

/// A grant of access to one customer role for a bounded time.
#[derive(Debug, Serialize, ToSchema)]
pub struct Session {
    pub id: Uuid,
    pub kind: SessionKind,
    pub customer: String,
    pub role: String,
    pub case_id: Option<String>,
    pub reason: Option<String>,
    /// The AWS CLI profile the session is used through.
    #[schema(example = "support-acme-corp-CS-12345")]
    pub profile_name: String,
    pub requested_by: String,
    /// `active`, `expired` or `revoked`.
    #[schema(example = "active")]
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<String>,
    /// When the last credentials issued for this session stop working. STS cannot recall
    /// credentials: after a revocation, those already handed out work until this time.
    pub credentials_valid_until: Option<DateTime<Utc>>,
}

impl From<SessionRow> for Session {
    fn from(row: SessionRow) -> Self {
        let status = if row.revoked_at.is_some() {
            "revoked"
        } else if row.expires_at <= Utc::now() {
            "expired"
        } else {
            "active"
        };
        Session {
            id: row.id,
            kind: SessionKind::parse(&row.kind).unwrap_or(SessionKind::Customer),
            customer: row.customer_id,
            role: row.role_name,
            case_id: row.case_id,
            reason: row.reason,
            profile_name: row.profile_name,
            requested_by: row.requested_by,
            status: status.to_owned(),
            created_at: row.created_at,
            expires_at: row.expires_at,
            revoked_at: row.revoked_at,
            revoked_by: row.revoked_by,
            credentials_valid_until: row.credentials_valid_until,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenSession {
    pub kind: SessionKind,
    #[schema(
        example = "acme-corp",
        pattern = "^[a-z0-9][a-z0-9-]{1,62}$",
        min_length = 2,
        max_length = 63
    )]
    pub customer: String,
    #[schema(
        example = "readonly",
        pattern = "^[a-z0-9][a-z0-9_-]{0,62}$",
        min_length = 1,
        max_length = 63
    )]
    pub role: String,
    /// Required for support sessions.
    #[schema(example = "CS-12345", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{1,63}$")]
    pub case_id: Option<String>,
    /// Required for support sessions: why access is needed.
    #[schema(example = "customer reports failing S3 uploads", max_length = 500)]
    pub reason: Option<String>,
    /// Support default 1800; at most the configured maximum and the role's
    /// max_session_seconds.
    #[schema(minimum = 60, maximum = 43200)]
    #[serde(default, deserialize_with = "crate::http::extract::integral")]
    pub duration_seconds: Option<i32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionList {
    pub sessions: Vec<Session>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListSessionsQuery {
    /// Only this customer's sessions.
    #[param(pattern = "^[a-z0-9][a-z0-9-]{1,62}$")]
    pub customer: Option<String>,
    /// Only sessions for this case.
    #[param(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{1,63}$")]
    pub case_id: Option<String>,
    /// `true`: only live sessions; `false`: only expired or revoked ones.
    pub active: Option<bool>,
    pub kind: Option<SessionKind>,
    /// At most this many, newest first (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct SessionPath {
    /// Session id.
    id: Uuid,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerCredentialsRequest {
    /// The role to use; may be left out when the customer has exactly one verified role
    /// that allows customer sessions.
    #[schema(
        pattern = "^[a-z0-9][a-z0-9_-]{0,62}$",
        min_length = 1,
        max_length = 63
    )]
    pub role: Option<String>,
}

/// Open a support session (support, admin) or a customer session (service, admin).
#[utoipa::path(post, path = "/v1/sessions", tag = "sessions", security(("bearer" = [])),
    request_body = OpenSession,
    responses((status = 201, body = Session),
               (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
               (status = 404, body = Problem),
               (status = 409, description = "Customer disabled, role not verified, or the role does not allow this kind", body = Problem),
               (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
#[tracing::instrument(skip_all)]
async fn open_session(
    State(state): State<AppState>,
    principal: Principal,
    ctx: RequestContext,
    ApiJson(body): ApiJson<OpenSession>,
) -> Result<(StatusCode, Json<Session>), ApiError> {
    let customer =
        CustomerId::parse(&body.customer).map_err(|e| ApiError::invalid("customer", e))?;
    let role = RoleName::parse(&body.role).map_err(|e| ApiError::invalid("role", e))?;
    let (case, reason) = match body.kind {
        SessionKind::Support => {
            let case = body
                .case_id
                .as_deref()
                .ok_or_else(|| ApiError::invalid("case_id", "required for support sessions"))?;
            let reason = body
                .reason
                .as_deref()
                .ok_or_else(|| ApiError::invalid("reason", "required for support sessions"))?;
            (
                Some(CaseId::parse(case).map_err(|e| ApiError::invalid("case_id", e))?),
                Some(Reason::parse(reason).map_err(|e| ApiError::invalid("reason", e))?),
            )
        }
        SessionKind::Customer => {
            if body.case_id.is_some() {
                return Err(ApiError::invalid(
                    "case_id",
                    "only support sessions have a case",
                ));
            }
            let reason = body.reason.as_deref().map(Reason::parse).transpose();
            (None, reason.map_err(|e| ApiError::invalid("reason", e))?)
        }
    };
    let request = SessionRequest {
        kind: body.kind,
        customer,
        role,
        case,
        reason,
        duration_seconds: body.duration_seconds,
        reuse: false,
    };
    let row = open(&state, &principal, &ctx, &request).await;
    let row = audit_denial(
        &state,
        &principal,
        &ctx,
        "session.open",
        Some(&request.customer),
        row,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

/// Records a refusal (403, 404, 409, 410) as a `denied` audit row before it is answered;
/// malformed input (400, 422) is not security-relevant and is not audited. If the audit
/// row cannot be written, the answer is 503.
async fn audit_denial<T>(
    state: &AppState,
    principal: &Principal,
    ctx: &RequestContext,
    action: &'static str,
    customer: Option<&CustomerId>,
    result: Result<T, ApiError>,
) -> Result<T, ApiError> {
    let Err(error) = result else {
        return result;
    };
    if !matches!(
        error.status(),
        StatusCode::FORBIDDEN | StatusCode::NOT_FOUND | StatusCode::CONFLICT | StatusCode::GONE
    ) {
        return Err(error);
    }
    let event = NewEvent {
        customer_id: customer.map(ToString::to_string),
        outcome: "denied",
        error_code: Some(error.slug().to_owned()),
        detail: Some(serde_json::json!({ "detail": error.to_string() })),
        ..ctx.event(principal, action)
    };
    state.audit.record(event).await.map_err(audit_unavailable)?;
    Err(error)
}

struct SessionRequest {
    kind: SessionKind,
    customer: CustomerId,
    role: RoleName,
    case: Option<CaseId>,
    reason: Option<Reason>,
    duration_seconds: Option<i32>,
    /// Return the caller's live customer session instead of opening another one.
    reuse: bool,
}

/// Opens a session after checking the customer, the role and the duration; audited in the
/// same transaction.
async fn open(
    state: &AppState,
    principal: &Principal,
    ctx: &RequestContext,
    req: &SessionRequest,
) -> Result<SessionRow, ApiError> {
    let action = match req.kind {
        SessionKind::Support => Action::OpenSupportSession,
        SessionKind::Customer => Action::OpenCustomerSession,
    };
    principal.authorize(action, Some(&req.customer))?;
    let mut tx = state.db.begin().await?;
    let customer = db::customers::lock(&mut tx, req.customer.as_str())
        .await?
        .ok_or_else(|| customer_not_found(&req.customer))?;
    if customer.status == "disabled" {
        return Err(ApiError::Conflict(format!(
            "customer '{}' is disabled",
            req.customer
        )));
    }
    let role = db::roles::get(&mut *tx, req.customer.as_str(), req.role.as_str())
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "customer '{}' has no role '{}'",
                req.customer, req.role
            ))
        })?;
    if role.status != "verified" {
        return Err(ApiError::Conflict(format!(
            "role '{}' is {}; it must be verified before sessions can use it",
            req.role, role.status
        )));
    }
    if !role.session_kinds.iter().any(|k| k == req.kind.as_str()) {
        return Err(ApiError::Conflict(format!(
            "role '{}' does not allow {} sessions",
            req.role,
            req.kind.as_str()
        )));
    }
    let (default, config_max) = match req.kind {
        SessionKind::Support => (
            crate::config::DEFAULT_SUPPORT_SESSION_SECS as i64,
            state.config.support_session_max.as_secs() as i64,
        ),
        SessionKind::Customer => {
            let secs = state.config.customer_session.as_secs() as i64;
            (secs, secs)
        }
    };
    let max = config_max.min(i64::from(role.max_session_seconds));
    let duration = match req.duration_seconds {
        Some(d) if !(60..=max).contains(&i64::from(d)) => {
            return Err(ApiError::invalid(
                "duration_seconds",
                format!(
                    "must be between 60 and {max} (the configured maximum and role '{}''s max_session_seconds)",
                    req.role
                ),
            ));
        }
        Some(d) => i64::from(d),
        None => default.min(max),
    };
    if req.reuse
        && let Some(row) = db::sessions::find_open_customer_session(
            &mut tx,
            req.customer.as_str(),
            req.role.as_str(),
            principal.actor(),
            reuse_margin_secs(state),
        )
        .await?
    {
        return Ok(row);
    }
    let id = Uuid::now_v7();
    let profile = profile_name(req.kind, &req.customer, req.case.as_ref());
    let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut *tx)
        .await?;
    let row = db::sessions::insert(
        &mut tx,
        &NewSession {
            id,
            kind: req.kind.as_str(),
            customer_id: req.customer.as_str(),
            role_name: req.role.as_str(),
            case_id: req.case.as_ref().map(CaseId::as_str),
            reason: req.reason.as_ref().map(Reason::as_str),
            profile_name: &profile,
            requested_by: principal.actor(),
            requested_by_role: principal.role.as_str(),
            expires_at: now + chrono::Duration::seconds(duration),
        },
    )
    .await?;
    let event = NewEvent {
        customer_id: Some(req.customer.to_string()),
        role_name: Some(req.role.to_string()),
        session_id: Some(id),
        case_id: req.case.as_ref().map(ToString::to_string),
        profile: Some(profile),
        detail: Some(serde_json::json!({
            "kind": req.kind.as_str(),
            "duration_seconds": duration,
            "reason": req.reason.as_ref().map(Reason::as_str),
        })),
        ..ctx.event(principal, "session.open")
    };
    db::audit::insert(&mut tx, &event).await?;
    tx.commit().await?;
    Ok(row)
}

/// List sessions: admins and auditors see all, others their own.
#[utoipa::path(get, path = "/v1/sessions", tag = "sessions", security(("bearer" = [])),
    params(ListSessionsQuery),
    responses((status = 200, body = SessionList), (status = 400, body = Problem),
               (status = 401, body = Problem), (status = 403, body = Problem)))]
#[tracing::instrument(skip_all)]
async fn list_sessions(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ListSessionsQuery>,
) -> Result<Json<SessionList>, ApiError> {
    let customer =
        ApiError::parse_optional("customer", query.customer.as_deref(), CustomerId::parse)?;
    principal.authorize(Action::ReadSessions, customer.as_ref())?;
    let case = ApiError::parse_optional("case_id", query.case_id.as_deref(), CaseId::parse)?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    let limited = principal.customer_scope();
    let rows = db::sessions::list(
        &state.db,
        &db::sessions::Filter {
            customer: customer.as_ref().map(CustomerId::as_str),
            case_id: case.as_ref().map(CaseId::as_str),
            kind: query.kind.map(SessionKind::as_str),
            active: query.active,
            requested_by: (!principal.sees_all_sessions()).then(|| principal.actor()),
            customers: limited.as_deref(),
            limit,
        },
    )
    .await?;
    Ok(Json(SessionList {
        sessions: rows.into_iter().map(Session::from).collect(),
    }))
}

/// Loads a session the principal may see; 404 otherwise (no existence leak).
async fn visible(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
) -> Result<SessionRow, ApiError> {
    principal.authorize(Action::ReadSessions, None)?;
    let row = db::sessions::get(&state.db, id).await?;
    row.filter(|row| {
        CustomerId::parse(&row.customer_id).is_ok_and(|c| principal.may_see(&c))
            && (principal.sees_all_sessions() || row.requested_by == principal.actor())
    })
    .ok_or_else(|| ApiError::NotFound(format!("session {id} does not exist")))
}

/// Show a session.
#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "sessions", security(("bearer" = [])),
    params(SessionPath),
    responses((status = 200, body = Session), (status = 400, body = Problem), (status = 401, body = Problem),
               (status = 403, body = Problem), (status = 404, body = Problem)))]
#[tracing::instrument(skip_all, fields(session = %id))]
async fn get_session(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Session>, ApiError> {
    Ok(Json(visible(&state, &principal, id).await?.into()))
}

/// Revoke a session (its owner or an admin). No new credentials are issued for it from any
/// instance; credentials already issued work until `credentials_valid_until`.
#[utoipa::path(delete, path = "/v1/sessions/{id}", tag = "sessions", security(("bearer" = [])),
    params(SessionPath),
    responses((status = 200, body = Session), (status = 400, body = Problem), (status = 401, body = Problem),
               (status = 403, body = Problem), (status = 404, body = Problem),
               (status = 409, description = "Already revoked", body = Problem)))]
#[tracing::instrument(skip_all, fields(session = %id))]
async fn revoke_session(
    State(state): State<AppState>,
    principal: Principal,
    ctx: RequestContext,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Session>, ApiError> {
    let row = visible(&state, &principal, id).await;
    let row = audit_denial(&state, &principal, &ctx, "session.revoke", None, row).await?;
    let customer = CustomerId::parse(&row.customer_id).map_err(|e| ApiError::Internal(e.into()))?;
    let kind = SessionKind::parse(&row.kind).map_err(|e| ApiError::Internal(e.into()))?;
    let allowed = principal.authorize_owner(&customer, &row.requested_by, kind);
    audit_denial(
        &state,
        &principal,
        &ctx,
        "session.revoke",
        Some(&customer),
        allowed,
    )
    .await?;
    let mut tx = state.db.begin().await?;
    let Some(revoked) = db::sessions::revoke(&mut *tx, id, principal.actor()).await? else {
        return Err(ApiError::Conflict(format!(
            "session {id} is already revoked"
        )));
    };
    let event = NewEvent {
        customer_id: Some(revoked.customer_id.clone()),
        role_name: Some(revoked.role_name.clone()),
        session_id: Some(id),
        case_id: revoked.case_id.clone(),
        profile: Some(revoked.profile_name.clone()),
        ..ctx.event(&principal, "session.revoke")
    };
    db::audit::insert(&mut tx, &event).await?;
    tx.commit().await?;
    state.auth_cache.forget_session(id);
    state.credentials.forget(id);
    Ok(Json(revoked.into()))
}

/// Credentials for a session (its owner or an admin), in credential_process form. Sent only
/// after the audit row for this request is committed.
#[utoipa::path(post, path = "/v1/sessions/{id}/credentials", tag = "sessions", security(("bearer" = [])),
    params(SessionPath),
    responses((status = 200, body = CredentialProcess),
               (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
               (status = 404, body = Problem),
               (status = 409, description = "Customer disabled, role not verified, or kind not allowed", body = Problem),
               (status = 410, description = "The session expired or was revoked", body = Problem),
               (status = 502, description = "AWS refused AssumeRole; `aws_error_code` names why", body = Problem),
               (status = 503, description = "Database or AWS unavailable; no credentials were issued", body = Problem)))]
#[tracing::instrument(skip_all, fields(session = %id))]
async fn issue_session_credentials(
    State(state): State<AppState>,
    principal: Principal,
    ctx: RequestContext,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<CredentialProcess>, ApiError> {
    let started = Instant::now();
    let grant = cached_grant(&state, id)
        .await?
        .filter(|g| CustomerId::parse(&g.session.customer_id).is_ok_and(|c| principal.may_see(&c)))
        .ok_or_else(|| ApiError::NotFound(format!("session {id} does not exist")))?;
    vend(&state, &principal, &ctx, &grant, started).await
}

/// Credentials for the caller's customer session with this customer, opened if there is no
/// live one (service, admin).
#[utoipa::path(post, path = "/v1/customers/{id}/credentials", tag = "sessions", security(("bearer" = [])),
    params(CustomerPath),
    request_body(content = Option<CustomerCredentialsRequest>, description = "Optional; `{}` or no body picks the customer's only role"),
    responses((status = 200, body = CredentialProcess),
               (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
               (status = 404, body = Problem),
               (status = 409, description = "Customer disabled, role not verified, not allowed for customer sessions, or ambiguous", body = Problem),
               (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem),
               (status = 502, description = "AWS refused AssumeRole; `aws_error_code` names why", body = Problem),
               (status = 503, description = "Database or AWS unavailable; no credentials were issued", body = Problem)))]
#[tracing::instrument(skip_all, fields(customer = %customer))]
async fn issue_customer_credentials(
    State(state): State<AppState>,
    principal: Principal,
    ctx: RequestContext,
    ApiPath(customer): ApiPath<String>,
    body: Result<Option<Json<CustomerCredentialsRequest>>, JsonRejection>,
) -> Result<Json<CredentialProcess>, ApiError> {
    let started = Instant::now();
    let customer = CustomerId::parse(&customer).map_err(|e| ApiError::invalid("id", e))?;
    let allowed = principal.authorize(Action::OpenCustomerSession, Some(&customer));
    audit_denial(
        &state,
        &principal,
        &ctx,
        "credentials.issue",
        Some(&customer),
        allowed,
    )
    .await?;
    // The body is optional: credential_process clients send none (no content type).
    let body = body?.map(|Json(body)| body).unwrap_or_default();
    // The hot path of credential_process clients: the session that served this caller last
    // time, while its (cached, at most 500 ms old) grant says it is live and long enough.
    let key = (
        customer.to_string(),
        body.role.clone(),
        principal.actor().to_owned(),
    );
    if let Some(id) = state.auth_cache.customer_session(&key)
        && let Some(grant) = cached_grant(&state, id).await?
        && grant.session.revoked_at.is_none()
        && (grant.session.expires_at - grant.now).num_seconds() > reuse_margin_secs(&state)
    {
        return vend(&state, &principal, &ctx, &grant, started).await;
    }
    let role = match body.role.as_deref() {
        Some(raw) => RoleName::parse(raw).map_err(|e| ApiError::invalid("role", e))?,
        None => {
            let role = only_customer_role(&state, &customer).await;
            audit_denial(
                &state,
                &principal,
                &ctx,
                "credentials.issue",
                Some(&customer),
                role,
            )
            .await?
        }
    };
    // Reuse a live session that outlasts the credential refresh window, else open one
    // (`open` re-checks under the customer row lock, so concurrent first requests share one
    // session).
    let session = match reusable(&state, &customer, &role, principal.actor()).await? {
        Some(row) => row,
        None => {
            let request = SessionRequest {
                kind: SessionKind::Customer,
                customer: customer.clone(),
                role: role.clone(),
                case: None,
                reason: None,
                duration_seconds: None,
                reuse: true,
            };
            let opened = open(&state, &principal, &ctx, &request).await;
            audit_denial(
                &state,
                &principal,
                &ctx,
                "credentials.issue",
                Some(&customer),
                opened,
            )
            .await?
        }
    };
    state.auth_cache.store_customer_session(key, session.id);
    let grant = cached_grant(&state, session.id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("session {} does not exist", session.id)))?;
    vend(&state, &principal, &ctx, &grant, started).await
}

/// The session's grant, from the short-lived cache or the database (see `revocation`).
async fn cached_grant(state: &AppState, id: Uuid) -> Result<Option<Grant>, ApiError> {
    if let Some(cached) = state.auth_cache.grant(id) {
        if cached.refresh {
            let state = state.clone();
            tokio::spawn(async move {
                let read_at = Instant::now();
                match db::sessions::grant(&state.db, id).await {
                    Ok(Some(grant)) => state.auth_cache.store_grant(&grant, read_at),
                    Ok(None) => state.auth_cache.forget_session(id),
                    // Unknown: the entry expires on its own (at most MAX_STALENESS).
                    Err(_) => {}
                }
            });
        }
        return Ok(Some(cached.value));
    }
    let read_at = Instant::now();
    let grant = db::sessions::grant(&state.db, id).await?;
    if let Some(grant) = &grant {
        state.auth_cache.store_grant(grant, read_at);
    }
    Ok(grant)
}

async fn reusable(
    state: &AppState,
    customer: &CustomerId,
    role: &RoleName,
    actor: &str,
) -> Result<Option<SessionRow>, ApiError> {
    let mut conn = state.db.acquire().await?;
    Ok(db::sessions::find_open_customer_session(
        &mut conn,
        customer.as_str(),
        role.as_str(),
        actor,
        reuse_margin_secs(state),
    )
    .await?)
}

/// A customer session is reused only while it outlasts the credential refresh window (and a
/// minute more): near its end every credential request would otherwise return credentials
/// that SDKs consider stale at once, so a fresh session is opened instead.
fn reuse_margin_secs(state: &AppState) -> i64 {
    i64::try_from(state.config.credential_refresh.as_secs()).unwrap_or(0) + 60
}

/// The customer's one verified role that allows customer sessions.
async fn only_customer_role(state: &AppState, customer: &CustomerId) -> Result<RoleName, ApiError> {
    let roles = db::roles::list(&state.db, customer.as_str()).await?;
    let usable: Vec<_> = roles
        .iter()
        .filter(|r| r.status == "verified" && r.session_kinds.iter().any(|k| k == "customer"))
        .collect();
    if roles.is_empty()
        && db::customers::get(&state.db, customer.as_str())
            .await?
            .is_none()
    {
        return Err(customer_not_found(customer));
    }
    match usable.as_slice() {
        [one] => RoleName::parse(&one.name).map_err(|e| ApiError::Internal(e.into())),
        [] => Err(ApiError::Conflict(format!(
            "customer '{customer}' has no verified role that allows customer sessions"
        ))),
        _ => Err(ApiError::Conflict(format!(
            "customer '{customer}' has several roles for customer sessions; name one in 'role'"
        ))),
    }
}

/// Checks, issues and audits; the credentials leave only after their audit row committed.
async fn vend(
    state: &AppState,
    principal: &Principal,
    ctx: &RequestContext,
    grant: &Grant,
    started: Instant,
) -> Result<Json<CredentialProcess>, ApiError> {
    let s = &grant.session;
    let customer = CustomerId::parse(&s.customer_id).map_err(|e| ApiError::Internal(e.into()))?;
    let kind = SessionKind::parse(&s.kind).map_err(|e| ApiError::Internal(e.into()))?;
    let outcome = match principal.authorize_owner(&customer, &s.requested_by, kind) {
        Err(error) => Err(Refused {
            // Whoever may not see the session does not learn that it exists.
            error: if principal.sees_all_sessions() || s.requested_by == principal.actor() {
                error
            } else {
                ApiError::NotFound(format!("session {} does not exist", s.id))
            },
            outcome: "denied",
            code: "Forbidden".into(),
            cache_hit: None,
        }),
        Ok(()) => match credentials::check(grant) {
            Err(refused) => Err(refused),
            Ok(()) => {
                credentials::issue(state, grant, principal.actor(), ctx.request_id.as_deref()).await
            }
        },
    };
    let mut event = NewEvent {
        customer_id: Some(s.customer_id.clone()),
        role_name: Some(s.role_name.clone()),
        session_id: Some(s.id),
        case_id: s.case_id.clone(),
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
            event.detail = Some(detail);
            audit_and_count(state, s, event, started).await?;
            Ok(Json(issued.document))
        }
        Err(refused) => {
            event.outcome = refused.outcome;
            event.error_code = Some(refused.code);
            event.cache_hit = refused.cache_hit;
            audit_and_count(state, s, event, started).await?;
            Err(refused.error)
        }
    }
}

/// Writes the audit row of a credential request, then counts the request (Prometheus, and
/// CloudWatch when on) with the outcome the client gets: an audit failure answers 503, so it
/// counts as an error.
async fn audit_and_count(
    state: &AppState,
    session: &SessionRow,
    event: NewEvent,
    started: Instant,
) -> Result<(), ApiError> {
    let (outcome, cache_hit) = (event.outcome, event.cache_hit);
    let audited = state.audit.record(event).await;
    state.metrics.observe_credentials(&CredentialRequest {
        session: session.id,
        customer: &session.customer_id,
        profile: &session.profile_name,
        kind: &session.kind,
        outcome: match audited {
            Ok(()) => Outcome::parse(outcome),
            Err(_) => Outcome::Error,
        },
        cache_hit,
        elapsed: started.elapsed(),
    });
    audited.map_err(audit_unavailable)
}

fn audit_unavailable(err: crate::audit::AuditError) -> ApiError {
    ApiError::Unavailable(format!("{err}; no credentials were issued"))
}
