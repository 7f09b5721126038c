//! The caller's own token: who the broker takes it for.

use axum::Json;
use chrono::DateTime;
use lanyard_api::problem::Problem;
use lanyard_api::whoami::WhoAmI;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::Principal;
use crate::http::error::ApiError;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(whoami))
}

/// Who the broker takes the caller's token for (any valid token). `lanyard login` and
/// `lanyard doctor` use it to check a token against the broker.
#[utoipa::path(get, path = "/v1/auth/whoami", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = WhoAmI), (status = 401, body = Problem)))]
#[tracing::instrument(skip_all)]
async fn whoami(principal: Principal) -> Result<Json<WhoAmI>, ApiError> {
    Ok(Json(WhoAmI {
        customers: principal.customer_scope(),
        subject: principal.subject,
        role: principal.role,
        token_id: principal.token_id,
        expires_at: DateTime::from_timestamp(principal.expires_at, 0)
            .ok_or_else(|| ApiError::Unauthorized("token claims are invalid".into()))?,
    }))
}
