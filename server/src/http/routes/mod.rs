//! One file per resource; each exposes its routes with their OpenAPI annotations.

pub mod audit;
pub mod auth;
pub mod customers;
pub mod health;
pub mod reports;
pub mod roles;
pub mod sessions;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::USER_AGENT;
use axum::http::request::Parts;
use utoipa::{IntoParams, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use super::RequestId;
use super::openapi::ApiDoc;
use crate::app::AppState;
use crate::auth::Principal;
use crate::db::audit::NewEvent;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::routes())
        .merge(auth::routes())
        .merge(customers::routes())
        .merge(roles::routes())
        .merge(sessions::routes())
        .merge(audit::routes())
        .merge(reports::routes())
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

/// Who sent a request and from where, for audit rows.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: Option<String>,
    pub source_ip: Option<std::net::IpAddr>,
    pub user_agent: Option<String>,
}

impl RequestContext {
    /// An audit event pre-filled with this request's context and the principal.
    pub fn event(&self, principal: &Principal, action: &'static str) -> NewEvent {
        NewEvent {
            request_id: self.request_id.clone(),
            actor: principal.actor().to_owned(),
            actor_role: Some(principal.role.as_str()),
            action,
            source_ip: self.source_ip,
            user_agent: self.user_agent.clone(),
            ..NewEvent::success()
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(RequestContext {
            request_id: parts.extensions.get::<RequestId>().map(|r| r.0.clone()),
            source_ip: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
            user_agent: parts
                .headers
                .get(USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.chars().take(256).collect()),
        })
    }
}
