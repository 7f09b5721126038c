//! The caller's own token (who the broker takes it for), and the token exchange that turns
//! a trusted OpenID issuer's token into a Lanyard token.

use axum::Json;
use axum::http::header::{CACHE_CONTROL, PRAGMA};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use lanyard_api::exchange::{
    GRANT_TYPE, SSO_SCOPES, SsoSettings, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_ID_TOKEN,
    TOKEN_TYPE_JWT, TokenExchangeRequest, TokenExchangeResponse,
};
use lanyard_api::problem::Problem;
use lanyard_api::whoami::WhoAmI;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::audit::Context;
use crate::auth::Principal;
use crate::http::error::ApiError;
use crate::http::extract::ApiForm;
use crate::registry;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(whoami))
        .routes(routes!(exchange))
        .routes(routes!(sso))
}

/// Where `lanyard login --sso` signs in: the OpenID issuer and the public client the CLI
/// uses there (`cli_client_id` of an `[[oidc.issuers]]` table). No bearer token: this is
/// how a CLI without a token finds out. 404 when the broker has none.
#[utoipa::path(get, path = "/v1/auth/sso", tag = "auth",
    responses((status = 200, body = SsoSettings), (status = 404, body = Problem)))]
#[tracing::instrument(skip_all)]
async fn sso(state: axum::extract::State<AppState>) -> Result<Json<SsoSettings>, ApiError> {
    let (issuer, client_id) = state.issuers.sso().ok_or_else(|| {
        ApiError::not_found(
            "this broker has no single sign-on: no [[oidc.issuers]] table names a cli_client_id",
        )
    })?;
    Ok(Json(SsoSettings {
        issuer: issuer.to_owned(),
        client_id: client_id.to_owned(),
        scopes: SSO_SCOPES.to_owned(),
    }))
}

/// Who the broker takes the caller's token for (any valid token), and when a session of the
/// caller's was last revoked. `lanyard login` and `lanyard doctor` use it to check a token
/// against the broker; `lanyard credential-process` to check that what it cached was not
/// revoked since.
#[utoipa::path(get, path = "/v1/auth/whoami", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = WhoAmI), (status = 401, body = Problem)))]
#[tracing::instrument(skip_all)]
async fn whoami(
    axum::extract::State(state): axum::extract::State<AppState>,
    principal: Principal,
) -> Result<Json<WhoAmI>, ApiError> {
    let revocation_epoch =
        crate::db::sessions::revocation_epoch(&state.db, principal.actor()).await?;
    Ok(Json(WhoAmI {
        revocation_epoch,
        customers: principal.customer_scope(),
        subject: principal.subject,
        role: principal.role,
        token_id: principal.token_id,
        expires_at: DateTime::from_timestamp(principal.expires_at, 0)
            .ok_or_else(|| ApiError::Unauthorized("token claims are invalid".into()))?,
    }))
}

/// Exchanges a trusted OpenID issuer's token (a CI job's OIDC token, an SSO ID token) for a
/// short-lived Lanyard token (RFC 8693). The first binding of the issuer whose claims all
/// match decides the role, the customers, the subject and the lifetime. No bearer token: the
/// subject token is the credential. 401 when it does not verify, 403 when no binding matches
/// (the answer names the issuer, never the claim), 503 when the issuer's keys cannot be
/// fetched.
#[utoipa::path(post, path = "/v1/auth/token", tag = "auth",
    request_body(content = TokenExchangeRequest,
                 content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = TokenExchangeResponse),
              (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 415, body = Problem),
              (status = 422, body = Problem), (status = 503, body = Problem)))]
#[tracing::instrument(skip_all)]
async fn exchange(
    ctx: Context,
    state: axum::extract::State<AppState>,
    ApiForm(req): ApiForm<TokenExchangeRequest>,
) -> Result<impl IntoResponse, ApiError> {
    if req.grant_type != GRANT_TYPE {
        return Err(ApiError::invalid(
            "grant_type",
            format!("must be {GRANT_TYPE}"),
        ));
    }
    if req.subject_token_type != TOKEN_TYPE_JWT && req.subject_token_type != TOKEN_TYPE_ID_TOKEN {
        return Err(ApiError::invalid(
            "subject_token_type",
            format!("must be {TOKEN_TYPE_JWT} or {TOKEN_TYPE_ID_TOKEN}"),
        ));
    }
    if req
        .requested_token_type
        .as_deref()
        .is_some_and(|t| t != TOKEN_TYPE_ACCESS_TOKEN)
    {
        return Err(ApiError::invalid(
            "requested_token_type",
            format!("only {TOKEN_TYPE_ACCESS_TOKEN} is issued"),
        ));
    }
    if req.actor_token.is_some() {
        return Err(ApiError::invalid(
            "actor_token",
            "delegation (an actor token) is not supported",
        ));
    }
    if state.issuers.is_empty() {
        return Err(ApiError::Unauthorized(
            "this broker trusts no OpenID issuer ([[oidc.issuers]] in its config)".into(),
        ));
    }
    let issued = registry::tokens::exchange(&state, &ctx, &req.subject_token).await?;
    let expires_in = (issued.expires_at - Utc::now()).num_seconds().max(0) as u64;
    // RFC 6749 §5.1: a response carrying a token must not be cached.
    Ok((
        [(CACHE_CONTROL, "no-store"), (PRAGMA, "no-cache")],
        Json(TokenExchangeResponse {
            access_token: issued.token,
            issued_token_type: TOKEN_TYPE_ACCESS_TOKEN.into(),
            token_type: "Bearer".into(),
            expires_in,
        }),
    ))
}
