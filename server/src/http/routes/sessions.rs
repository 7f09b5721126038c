//! Sessions and credentials: open, list, show, revoke; credentials for a session, and for
//! the caller's customer session.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use lanyard_api::problem::Problem;
use lanyard_api::sessions::{
    CredentialProcess, CustomerCredentialsRequest, Decision, OpenSession, Session, SessionList,
};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::CustomerPath;
use crate::audit::Context;
use crate::auth::Principal;
use crate::domain::tier::check_tier_name;
use crate::domain::{ApprovalStatus, CaseId, CustomerId, Reason, RoleName, SessionKind};
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, ApiPath, ApiQuery};
use crate::sessions::{self, ListFilter, OpenRequest};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(open_session, list_sessions))
        .routes(routes!(get_session, revoke_session))
        .routes(routes!(issue_session_credentials))
        .routes(routes!(issue_customer_credentials))
        .routes(routes!(approve_session))
        .routes(routes!(deny_session))
        .routes(routes!(list_approvals))
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

/// Checks a session request's fields; the first bad one is named.
fn open_request(body: OpenSession) -> Result<OpenRequest, ApiError> {
    let customer =
        CustomerId::parse(&body.customer).map_err(|e| ApiError::invalid("customer", e))?;
    let role = RoleName::parse(&body.role).map_err(|e| ApiError::invalid("role", e))?;
    let reason = |raw: &str| Reason::parse(raw).map_err(|e| ApiError::invalid("reason", e));
    let (case, reason) = match body.kind {
        SessionKind::Support => {
            let case = body
                .case_id
                .as_deref()
                .ok_or_else(|| ApiError::invalid("case_id", "required for support sessions"))?;
            let why = body
                .reason
                .as_deref()
                .ok_or_else(|| ApiError::invalid("reason", "required for support sessions"))?;
            (
                Some(CaseId::parse(case).map_err(|e| ApiError::invalid("case_id", e))?),
                Some(reason(why)?),
            )
        }
        SessionKind::Customer => {
            if body.case_id.is_some() {
                return Err(ApiError::invalid(
                    "case_id",
                    "only support sessions have a case",
                ));
            }
            (None, body.reason.as_deref().map(reason).transpose()?)
        }
    };
    if let Some(tier) = &body.tier {
        check_tier_name(tier).map_err(|e| ApiError::invalid("tier", e))?;
    }
    Ok(OpenRequest {
        kind: body.kind,
        customer,
        role,
        case,
        reason,
        duration_seconds: body.duration_seconds,
        tier: body.tier,
    })
}

/// Open a support session (support, admin) or a customer session (service, admin).
#[utoipa::path(post, path = "/v1/sessions", tag = "sessions", security(("bearer" = [])),
    request_body = OpenSession,
    responses((status = 201, body = Session),
               (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
               (status = 404, body = Problem),
               (status = 409, description = "Customer disabled, role not verified, or the role does not allow this kind", body = Problem),
               (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem),
               (status = 503, description = "The case system could not be asked and `when_unavailable` is `refuse`", body = Problem)))]
#[tracing::instrument(skip_all)]
async fn open_session(
    State(state): State<AppState>,
    principal: Principal,
    ctx: Context,
    ApiJson(body): ApiJson<OpenSession>,
) -> Result<(StatusCode, Json<Session>), ApiError> {
    let request = open_request(body)?;
    let row = sessions::open(&state, &principal, &ctx, &request).await?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

/// List sessions: admins and auditors see all, others their own.
#[utoipa::path(get, path = "/v1/sessions", tag = "sessions", security(("bearer" = [])),
    params(ListSessionsQuery),
    responses((status = 200, body = SessionList), (status = 400, body = Problem),
               (status = 401, body = Problem), (status = 403, body = Problem),
               (status = 404, body = Problem)))]
#[tracing::instrument(skip_all)]
async fn list_sessions(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ListSessionsQuery>,
) -> Result<Json<SessionList>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    let filter = ListFilter {
        customer: ApiError::parse_optional(
            "customer",
            query.customer.as_deref(),
            CustomerId::parse,
        )?,
        case: ApiError::parse_optional("case_id", query.case_id.as_deref(), CaseId::parse)?,
        kind: query.kind,
        active: query.active,
        limit,
    };
    let rows = sessions::list(&state, &principal, &filter).await?;
    Ok(Json(SessionList {
        sessions: rows.into_iter().map(Session::from).collect(),
    }))
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
    Ok(Json(
        sessions::visible(&state, &principal, id).await?.into(),
    ))
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
    ctx: Context,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Session>, ApiError> {
    Ok(Json(
        sessions::revoke(&state, &principal, &ctx, id).await?.into(),
    ))
}

/// Credentials for a session (its owner, or an admin in the admin's own name), in
/// credential_process form. Sent only after the audit row for this request is committed.
#[utoipa::path(post, path = "/v1/sessions/{id}/credentials", tag = "sessions", security(("bearer" = [])),
    params(SessionPath),
    responses((status = 200, body = CredentialProcess),
               (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
               (status = 404, body = Problem),
               (status = 409, description = "Customer disabled, role not verified, kind not allowed, or waiting for approval", body = Problem),
               (status = 410, description = "The session expired, was revoked or denied", body = Problem),
               (status = 502, description = "AWS refused AssumeRole; `aws_error_code` names why", body = Problem),
               (status = 503, description = "Database or AWS unavailable; no credentials were issued", body = Problem)))]
#[tracing::instrument(skip_all, fields(session = %id))]
async fn issue_session_credentials(
    State(state): State<AppState>,
    principal: Principal,
    ctx: Context,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<CredentialProcess>, ApiError> {
    let started = Instant::now();
    let document = sessions::session_credentials(&state, &principal, &ctx, id, started).await?;
    Ok(Json(document))
}

/// Approves or denies, after checking the decision's comment (1-500 characters of plain
/// text, optional).
async fn decide(
    state: AppState,
    principal: Principal,
    ctx: Context,
    id: Uuid,
    body: Result<Option<Json<Decision>>, JsonRejection>,
    decision: ApprovalStatus,
) -> Result<Json<Session>, ApiError> {
    let comment = match body?.and_then(|Json(b)| b.comment) {
        None => None,
        Some(text) => Some(
            Reason::parse(&text)
                .map_err(|e| ApiError::invalid("comment", e))?
                .as_str()
                .to_owned(),
        ),
    };
    let row = sessions::decide(&state, &principal, &ctx, id, decision, comment.as_deref()).await?;
    Ok(Json(row.into()))
}

/// Approve a session request that waits for a second person (admin or support; never your
/// own). The session's clock starts now.
#[utoipa::path(post, path = "/v1/sessions/{id}/approve", tag = "sessions", security(("bearer" = [])),
    params(SessionPath),
    request_body(content = Option<Decision>, description = "Optional comment"),
    responses((status = 200, body = Session),
               (status = 400, body = Problem), (status = 401, body = Problem),
               (status = 403, description = "Not an approving role, or your own request", body = Problem),
               (status = 404, body = Problem),
               (status = 409, description = "Already decided, or no approval needed", body = Problem),
               (status = 410, description = "The request expired or was withdrawn", body = Problem),
               (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
#[tracing::instrument(skip_all, fields(session = %id))]
async fn approve_session(
    State(state): State<AppState>,
    principal: Principal,
    ctx: Context,
    ApiPath(id): ApiPath<Uuid>,
    body: Result<Option<Json<Decision>>, JsonRejection>,
) -> Result<Json<Session>, ApiError> {
    decide(state, principal, ctx, id, body, ApprovalStatus::Approved).await
}

/// Deny a session request that waits for a second person (admin or support; never your own).
#[utoipa::path(post, path = "/v1/sessions/{id}/deny", tag = "sessions", security(("bearer" = [])),
    params(SessionPath),
    request_body(content = Option<Decision>, description = "Optional comment"),
    responses((status = 200, body = Session),
               (status = 400, body = Problem), (status = 401, body = Problem),
               (status = 403, description = "Not an approving role, or your own request", body = Problem),
               (status = 404, body = Problem),
               (status = 409, description = "Already decided, or no approval needed", body = Problem),
               (status = 410, description = "The request expired or was withdrawn", body = Problem),
               (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
#[tracing::instrument(skip_all, fields(session = %id))]
async fn deny_session(
    State(state): State<AppState>,
    principal: Principal,
    ctx: Context,
    ApiPath(id): ApiPath<Uuid>,
    body: Result<Option<Json<Decision>>, JsonRejection>,
) -> Result<Json<Session>, ApiError> {
    decide(state, principal, ctx, id, body, ApprovalStatus::Denied).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsQuery {
    /// At most this many, oldest first (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// Session requests waiting for approval (admin, support), oldest first; the caller's own are
/// listed too, but only someone else may decide them.
#[utoipa::path(get, path = "/v1/approvals", tag = "sessions", security(("bearer" = [])),
    params(ApprovalsQuery),
    responses((status = 200, body = SessionList), (status = 400, body = Problem),
               (status = 401, body = Problem), (status = 403, body = Problem)))]
#[tracing::instrument(skip_all)]
async fn list_approvals(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ApprovalsQuery>,
) -> Result<Json<SessionList>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    let rows = sessions::pending(&state, &principal, limit).await?;
    Ok(Json(SessionList {
        sessions: rows.into_iter().map(Session::from).collect(),
    }))
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
    ctx: Context,
    ApiPath(customer): ApiPath<String>,
    body: Result<Option<Json<CustomerCredentialsRequest>>, JsonRejection>,
) -> Result<Json<CredentialProcess>, ApiError> {
    let started = Instant::now();
    let customer = CustomerId::parse(&customer).map_err(|e| ApiError::invalid("id", e))?;
    sessions::may_ask_customer_credentials(&state, &principal, &ctx, &customer).await?;
    // The body is optional: credential_process clients send none (no content type).
    let body = body?.map(|Json(body)| body).unwrap_or_default();
    let role = ApiError::parse_optional("role", body.role.as_deref(), RoleName::parse)?;
    let document =
        sessions::customer_credentials(&state, &principal, &ctx, &customer, role, started).await?;
    Ok(Json(document))
}
