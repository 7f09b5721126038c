//! The caller's own token: who the broker takes it for.

use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::{Principal, Role};
use crate::http::error::{ApiError, Problem};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(whoami))
}

/// What the broker knows of the token a request carried.
#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmI {
    /// The token's subject: the actor in audit rows.
    pub subject: String,
    pub role: Role,
    /// The customers the token is limited to; `null` for every customer.
    pub customers: Option<Vec<String>>,
    /// The token's id (`jti`), as `lanyard-server token list` shows it.
    pub token_id: Uuid,
    pub expires_at: DateTime<Utc>,
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
