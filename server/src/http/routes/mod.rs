//! One file per resource; each exposes its routes with their OpenAPI annotations. Handlers
//! parse, authorize, call a service (`crate::sessions`, `crate::registry`, ...) and respond.

pub mod audit;
pub mod auth;
pub mod customers;
pub mod events;
pub mod health;
pub mod reports;
pub mod roles;
pub mod sessions;

use utoipa::{IntoParams, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use super::openapi::ApiDoc;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::routes())
        .merge(auth::routes())
        .merge(customers::routes())
        .merge(roles::routes())
        .merge(sessions::routes())
        .merge(audit::routes())
        .merge(reports::routes())
        .merge(events::routes())
}

/// `{id}` in customer paths, as the OpenAPI document describes it (`domain::CustomerId`
/// holds the rule; handlers parse with it).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct CustomerPath {
    /// Customer id.
    #[param(pattern = "^[a-z0-9][a-z0-9-]{1,62}$", min_length = 2, max_length = 63)]
    id: String,
}

/// `{id}` and `{name}` in role paths (`domain::RoleName` holds the rule).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct RolePath {
    /// Customer id.
    #[param(pattern = "^[a-z0-9][a-z0-9-]{1,62}$", min_length = 2, max_length = 63)]
    id: String,
    /// Role name.
    #[param(
        pattern = "^[a-z0-9][a-z0-9_-]{0,62}$",
        min_length = 1,
        max_length = 63
    )]
    name: String,
}
