//! Cases and events: closing a case (an admin, or the case system with a signed request),
//! and the configured webhooks with the state of their deliveries.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use lanyard_api::events::{CaseClosed, CloseCase, DeliveryList, WebhookList, WebhookStatus};
use lanyard_api::problem::Problem;
use lanyard_api::sessions::Session;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::audit::Context;
use crate::auth::{Action, Principal};
use crate::cases::{self, Closer};
use crate::db;
use crate::domain::{CaseId, DeliveryState};
use crate::http::error::ApiError;
use crate::http::extract::{ApiPath, ApiQuery};
use crate::signature;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(close_case))
        .routes(routes!(list_webhooks))
        .routes(routes!(list_deliveries))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct CasePath {
    /// Case id.
    #[param(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{1,63}$")]
    case_id: String,
}

/// Close a case: every live or pending session of it is revoked at once, on every instance
/// (no new credentials; those already issued work until `credentials_valid_until`). An admin
/// token, or the case system itself: a `Lanyard-Signature` over the body
/// `{"case_id": "<the case>"}` with the `[cases]` secret.
#[utoipa::path(post, path = "/v1/cases/{case_id}/close", tag = "events",
    security(("bearer" = []), ("case_signature" = [])),
    params(CasePath),
    request_body(content = Option<CloseCase>, description = "Required with a signature (it is what is signed); optional with a token"),
    responses((status = 200, description = "The sessions the close ended", body = CaseClosed),
               (status = 400, body = Problem),
               (status = 401, description = "No token, or a forged, stale or replayed signature", body = Problem),
               (status = 403, body = Problem), (status = 422, body = Problem)))]
#[tracing::instrument(skip_all, fields(case = %case_id))]
async fn close_case(
    State(state): State<AppState>,
    principal: Option<Principal>,
    ctx: Context,
    ApiPath(case_id): ApiPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<CaseClosed>, ApiError> {
    let case = CaseId::parse(&case_id).map_err(|e| ApiError::invalid("case_id", e))?;
    // Who is asking comes first (401/403), then whether the request is complete (400); a
    // signature is spent only on a request that will be carried out.
    let (closer, signature) = match &principal {
        Some(principal) => {
            principal.authorize_everywhere(Action::CloseCases)?;
            (Closer::Admin(principal), None)
        }
        None => {
            let header = headers
                .get(signature::HEADER)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    ApiError::Unauthorized(format!(
                        "an admin bearer token or the case system's {} is required",
                        signature::HEADER
                    ))
                })?;
            let v1 = cases::verify_signed(&state, header, &body)?;
            (Closer::CaseSystem, Some(v1))
        }
    };
    // The body, when there is one, names the path's case; a signed close must have one
    // (the signature then covers which case is closed).
    let named = if body.is_empty() {
        None
    } else {
        let parsed: CloseCase = serde_json::from_slice(&body).map_err(|e| {
            ApiError::invalid("body", format!("must be {{\"case_id\": \"…\"}}: {e}"))
        })?;
        Some(parsed.case_id)
    };
    match named.as_deref() {
        Some(named) if named != case.as_str() => {
            return Err(ApiError::invalid(
                "case_id",
                format!("the body names case {named}, the path {case}"),
            ));
        }
        None if signature.is_some() => {
            return Err(ApiError::invalid(
                "body",
                format!("a signed close must carry {{\"case_id\": \"{case}\"}}"),
            ));
        }
        _ => {}
    }
    if let Some(v1) = &signature {
        cases::spend_signature(&state, v1).await?;
    }
    let ended = cases::close(&state, closer, &ctx, &case).await?;
    Ok(Json(CaseClosed {
        case_id: case.to_string(),
        sessions: ended.into_iter().map(Session::from).collect(),
    }))
}

/// The configured webhooks and how their deliveries stand (admin, auditor).
#[utoipa::path(get, path = "/v1/webhooks", tag = "events", security(("bearer" = [])),
    responses((status = 200, body = WebhookList), (status = 401, body = Problem),
               (status = 403, body = Problem)))]
#[tracing::instrument(skip_all)]
async fn list_webhooks(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<WebhookList>, ApiError> {
    principal.authorize_everywhere(Action::ReadEvents)?;
    let counts = db::events::status_counts(&state.db, false).await?;
    let webhooks = state
        .outbox
        .webhooks()
        .iter()
        .map(|w| {
            db::events::tally(
                WebhookStatus {
                    name: w.name.clone(),
                    events: w.events.clone(),
                    format: w.format.as_str().to_owned(),
                    pending: 0,
                    delivered: 0,
                    dead: 0,
                    oldest_pending_at: None,
                },
                &counts,
            )
        })
        .collect();
    Ok(Json(WebhookList { webhooks }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    /// Only this webhook's deliveries.
    pub webhook: Option<String>,
    /// `pending`, `delivered` or `dead`.
    pub state: Option<DeliveryState>,
    /// Only events about this session.
    pub session: Option<Uuid>,
    /// At most this many, newest first (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// Event deliveries, newest first (admin, auditor): attempts, the receiver's last answer,
/// the next attempt, or dead.
#[utoipa::path(get, path = "/v1/webhooks/deliveries", tag = "events", security(("bearer" = [])),
    params(DeliveriesQuery),
    responses((status = 200, body = DeliveryList), (status = 400, body = Problem),
               (status = 401, body = Problem), (status = 403, body = Problem)))]
#[tracing::instrument(skip_all)]
async fn list_deliveries(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<DeliveriesQuery>,
) -> Result<Json<DeliveryList>, ApiError> {
    principal.authorize_everywhere(Action::ReadEvents)?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    let deliveries = db::events::deliveries(
        &state.db,
        &db::events::DeliveryFilter {
            webhook: query.webhook.as_deref(),
            state: query.state,
            session: query.session,
            limit,
        },
    )
    .await?;
    Ok(Json(DeliveryList { deliveries }))
}
