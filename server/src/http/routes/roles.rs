//! Customer roles: register (and verify), re-verify, list, show.

use axum::Json;
use axum::extract::State;
use lanyard_api::problem::Problem;
use lanyard_api::roles::{PutRole, Role, RoleList, ValidateRole, Validation};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{CustomerPath, RolePath};
use crate::audit::Context;
use crate::auth::{Action, Principal};
use crate::domain::policy::{check_actions, check_session_policy};
use crate::domain::tier::check_tiers;
use crate::domain::{CustomerId, RoleArn, RoleName, SessionKind};
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, ApiPath};
use crate::registry::roles::{self, RoleSpec};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_roles))
        .routes(routes!(put_role, get_role))
        .routes(routes!(verify_role))
        .routes(routes!(validate_role))
}

fn ids(customer: &str, name: &str) -> Result<(CustomerId, RoleName), ApiError> {
    Ok((
        CustomerId::parse(customer).map_err(|e| ApiError::invalid("id", e))?,
        RoleName::parse(name).map_err(|e| ApiError::invalid("name", e))?,
    ))
}

/// Checks a registration's fields; the first bad one is named.
fn spec(body: PutRole) -> Result<RoleSpec, ApiError> {
    let role_arn =
        RoleArn::parse(body.role_arn.trim()).map_err(|e| ApiError::invalid("role_arn", e))?;
    let max_session_seconds = body.max_session_seconds.unwrap_or(3600);
    if !(900..=43_200).contains(&max_session_seconds) {
        return Err(ApiError::invalid(
            "max_session_seconds",
            "must be between 900 and 43200",
        ));
    }
    let mut session_kinds = body
        .session_kinds
        .unwrap_or_else(|| SessionKind::ALL.to_vec());
    if session_kinds.is_empty() {
        return Err(ApiError::invalid(
            "session_kinds",
            "must name at least one kind",
        ));
    }
    session_kinds.sort_by_key(|k| k.as_str());
    session_kinds.dedup();
    if let Some(policy) = &body.session_policy {
        check_session_policy(policy).map_err(|e| ApiError::invalid("session_policy", e))?;
    }
    let tiers = body.tiers.unwrap_or_default();
    check_tiers(&tiers, max_session_seconds, body.session_policy.as_ref())
        .map_err(|e| ApiError::invalid("tiers", e))?;
    let required_actions = body.required_actions.unwrap_or_default();
    check_actions(&required_actions).map_err(|e| ApiError::invalid("required_actions", e))?;
    Ok(RoleSpec {
        role_arn,
        session_kinds,
        max_session_seconds,
        session_policy: body.session_policy,
        tiers,
        required_actions,
    })
}

/// Register or update a role, then verify it with AssumeRole and the external ID.
#[utoipa::path(put, path = "/v1/customers/{id}/roles/{name}", tag = "roles", security(("bearer" = [])),
    params(RolePath),
    request_body = PutRole,
    responses((status = 200, description = "Registered; see status and last_error for the verification", body = Role),
               (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
               (status = 404, body = Problem), (status = 413, body = Problem), (status = 415, body = Problem),
               (status = 422, body = Problem)))]
#[tracing::instrument(skip_all, fields(customer = %customer, role = %name))]
async fn put_role(
    State(state): State<AppState>,
    principal: Principal,
    ctx: Context,
    ApiPath((customer, name)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<PutRole>,
) -> Result<Json<Role>, ApiError> {
    let (customer, name) = ids(&customer, &name)?;
    principal.authorize(Action::ManageCustomers, Some(&customer))?;
    let spec = spec(body)?;
    let row = roles::register(&state, &principal, &ctx, &customer, &name, &spec).await?;
    Ok(Json(row.into()))
}

/// Show one role.
#[utoipa::path(get, path = "/v1/customers/{id}/roles/{name}", tag = "roles", security(("bearer" = [])),
    params(RolePath),
    responses((status = 200, body = Role), (status = 400, body = Problem), (status = 401, body = Problem),
               (status = 403, body = Problem), (status = 404, body = Problem)))]
#[tracing::instrument(skip_all, fields(customer = %customer, role = %name))]
async fn get_role(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((customer, name)): ApiPath<(String, String)>,
) -> Result<Json<Role>, ApiError> {
    let (customer, name) = ids(&customer, &name)?;
    principal.authorize(Action::ReadCustomers, Some(&customer))?;
    Ok(Json(roles::get(&state, &customer, &name).await?.into()))
}

/// List a customer's roles.
#[utoipa::path(get, path = "/v1/customers/{id}/roles", tag = "roles", security(("bearer" = [])),
    params(CustomerPath),
    responses((status = 200, body = RoleList), (status = 400, body = Problem), (status = 401, body = Problem),
               (status = 403, body = Problem), (status = 404, body = Problem)))]
#[tracing::instrument(skip_all, fields(customer = %customer))]
async fn list_roles(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(customer): ApiPath<String>,
) -> Result<Json<RoleList>, ApiError> {
    let customer = CustomerId::parse(&customer).map_err(|e| ApiError::invalid("id", e))?;
    principal.authorize(Action::ReadCustomers, Some(&customer))?;
    let rows = roles::list(&state, &customer).await?;
    Ok(Json(RoleList {
        roles: rows.into_iter().map(Role::from).collect(),
    }))
}

/// Check actions against the role's own policies (iam:SimulatePrincipalPolicy, called as the
/// role): the role's `required_actions` (the result is stored on the role), or the actions
/// named in the body (admin, support, service).
#[utoipa::path(post, path = "/v1/customers/{id}/roles/{name}/validate", tag = "roles", security(("bearer" = [])),
    params(RolePath),
    request_body(content = Option<ValidateRole>, description = "Optional; without actions, the role's required_actions"),
    responses((status = 200, description = "Checked; `error` says why a check could not run", body = Validation),
               (status = 400, body = Problem), (status = 401, body = Problem),
               (status = 403, body = Problem), (status = 404, body = Problem),
               (status = 409, description = "The role is not verified", body = Problem),
               (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
#[tracing::instrument(skip_all, fields(customer = %customer, role = %name))]
async fn validate_role(
    State(state): State<AppState>,
    principal: Principal,
    ctx: Context,
    ApiPath((customer, name)): ApiPath<(String, String)>,
    body: Result<Option<Json<ValidateRole>>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Validation>, ApiError> {
    let (customer, name) = ids(&customer, &name)?;
    principal.authorize(Action::ValidateRoles, Some(&customer))?;
    let actions = body?.and_then(|Json(b)| b.actions);
    if let Some(actions) = &actions {
        if actions.is_empty() {
            return Err(ApiError::invalid("actions", "name at least one action"));
        }
        check_actions(actions).map_err(|e| ApiError::invalid("actions", e))?;
    }
    let validation = roles::validate(&state, &principal, &ctx, &customer, &name, actions).await?;
    Ok(Json(validation))
}

/// Verify a role again (after the customer changed its trust policy, or after rotation).
#[utoipa::path(post, path = "/v1/customers/{id}/roles/{name}/verify", tag = "roles", security(("bearer" = [])),
    params(RolePath),
    responses((status = 200, description = "Checked; see status and last_error", body = Role),
               (status = 400, body = Problem), (status = 401, body = Problem),
               (status = 403, body = Problem), (status = 404, body = Problem)))]
#[tracing::instrument(skip_all, fields(customer = %customer, role = %name))]
async fn verify_role(
    State(state): State<AppState>,
    principal: Principal,
    ctx: Context,
    ApiPath((customer, name)): ApiPath<(String, String)>,
) -> Result<Json<Role>, ApiError> {
    let (customer, name) = ids(&customer, &name)?;
    principal.authorize(Action::ManageCustomers, Some(&customer))?;
    let row = roles::verify(&state, &principal, &ctx, &customer, &name).await?;
    Ok(Json(row.into()))
}
