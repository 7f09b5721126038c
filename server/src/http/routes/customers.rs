//! Customers: create, list, show, disable and enable; the onboarding document; external-ID
//! rotation.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use lanyard_api::customers::{
    CreateCustomer, Customer, CustomerApproval, CustomerList, Onboarding,
};
use lanyard_api::problem::Problem;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::CustomerPath;
use crate::audit::Context;
use crate::auth::{Action, Principal};
use crate::domain::{CustomerId, CustomerStatus, DisplayName};
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, ApiPath, ApiQuery};
use crate::registry::customers;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_customer, list_customers))
        .routes(routes!(get_customer))
        .routes(routes!(disable_customer))
        .routes(routes!(enable_customer))
        .routes(routes!(get_onboarding))
        .routes(routes!(rotate_external_id))
        .routes(routes!(set_approval))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListCustomersQuery {
    /// Only customers in this status (`pending`, `active`, `disabled`).
    #[param(pattern = "^(pending|active|disabled)$")]
    pub status: Option<String>,
}

fn customer_id(raw: &str) -> Result<CustomerId, ApiError> {
    CustomerId::parse(raw).map_err(|e| ApiError::invalid("id", e))
}

/// Create a customer and generate its external ID.
#[utoipa::path(post, path = "/v1/customers", tag = "customers", security(("bearer" = [])),
    request_body = CreateCustomer,
    responses(
        (status = 201, body = Customer),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, description = "The id is taken", body = Problem),
        (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem),
    ))]
#[tracing::instrument(skip_all)]
async fn create_customer(
    State(state): State<AppState>,
    principal: Principal,
    ctx: Context,
    ApiJson(body): ApiJson<CreateCustomer>,
) -> Result<(StatusCode, Json<Customer>), ApiError> {
    let id = customer_id(&body.id)?;
    principal.authorize(Action::ManageCustomers, Some(&id))?;
    let display_name = DisplayName::parse(body.display_name.as_deref().unwrap_or(id.as_str()))
        .map_err(|e| ApiError::invalid("display_name", e))?;
    let requires_approval = body.requires_approval.unwrap_or(false);
    let row = customers::create(
        &state,
        &principal,
        &ctx,
        &id,
        &display_name,
        requires_approval,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

/// List the customers this token may see.
#[utoipa::path(get, path = "/v1/customers", tag = "customers", security(("bearer" = [])),
    params(ListCustomersQuery),
    responses((status = 200, body = CustomerList), (status = 400, body = Problem),
               (status = 401, body = Problem), (status = 403, body = Problem)))]
#[tracing::instrument(skip_all)]
async fn list_customers(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<ListCustomersQuery>,
) -> Result<Json<CustomerList>, ApiError> {
    principal.authorize(Action::ReadCustomers, None)?;
    let status = ApiError::parse_optional("status", query.status.as_deref(), |s| {
        serde_json::from_value::<CustomerStatus>(serde_json::json!(s))
            .map_err(|_| "must be pending, active or disabled")
    })?;
    let rows = customers::list(&state, &principal, status).await?;
    Ok(Json(CustomerList {
        customers: rows.into_iter().map(Customer::from).collect(),
    }))
}

/// Show one customer.
#[utoipa::path(get, path = "/v1/customers/{id}", tag = "customers", security(("bearer" = [])),
    params(CustomerPath),
    responses((status = 200, body = Customer), (status = 400, body = Problem), (status = 401, body = Problem),
               (status = 403, body = Problem), (status = 404, body = Problem)))]
#[tracing::instrument(skip_all, fields(customer = %id))]
async fn get_customer(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Customer>, ApiError> {
    let id = customer_id(&id)?;
    principal.authorize(Action::ReadCustomers, Some(&id))?;
    Ok(Json(customers::get(&state, &id).await?.into()))
}

/// Require (or stop requiring) a second person's approval for every support session of this
/// customer, whatever its tier. Sessions already open or pending are not changed.
#[utoipa::path(put, path = "/v1/customers/{id}/approval", tag = "customers", security(("bearer" = [])),
    params(CustomerPath),
    request_body = CustomerApproval,
    responses((status = 200, body = Customer), (status = 400, body = Problem), (status = 401, body = Problem),
               (status = 403, body = Problem), (status = 404, body = Problem),
               (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
#[tracing::instrument(skip_all, fields(customer = %id))]
async fn set_approval(
    State(state): State<AppState>,
    principal: Principal,
    ctx: Context,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<CustomerApproval>,
) -> Result<Json<Customer>, ApiError> {
    let id = customer_id(&id)?;
    principal.authorize(Action::ManageCustomers, Some(&id))?;
    let row =
        customers::set_requires_approval(&state, &principal, &ctx, &id, body.requires_approval)
            .await?;
    Ok(Json(row.into()))
}

/// Disable a customer: no new sessions or credentials until it is enabled again.
#[utoipa::path(post, path = "/v1/customers/{id}/disable", tag = "customers", security(("bearer" = [])),
    params(CustomerPath),
    responses((status = 200, body = Customer), (status = 400, body = Problem), (status = 401, body = Problem),
               (status = 403, body = Problem), (status = 404, body = Problem)))]
#[tracing::instrument(skip_all, fields(customer = %id))]
async fn disable_customer(
    State(state): State<AppState>,
    principal: Principal,
    ctx: Context,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Customer>, ApiError> {
    set_enabled(state, principal, ctx, id, false).await
}

/// Enable a disabled customer again (`active` if a role is verified, else `pending`).
#[utoipa::path(post, path = "/v1/customers/{id}/enable", tag = "customers", security(("bearer" = [])),
    params(CustomerPath),
    responses((status = 200, body = Customer), (status = 400, body = Problem), (status = 401, body = Problem),
               (status = 403, body = Problem), (status = 404, body = Problem)))]
#[tracing::instrument(skip_all, fields(customer = %id))]
async fn enable_customer(
    State(state): State<AppState>,
    principal: Principal,
    ctx: Context,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Customer>, ApiError> {
    set_enabled(state, principal, ctx, id, true).await
}

async fn set_enabled(
    state: AppState,
    principal: Principal,
    ctx: Context,
    id: String,
    enabled: bool,
) -> Result<Json<Customer>, ApiError> {
    let id = customer_id(&id)?;
    principal.authorize(Action::ManageCustomers, Some(&id))?;
    let row = customers::set_enabled(&state, &principal, &ctx, &id, enabled).await?;
    Ok(Json(row.into()))
}

/// The onboarding document: external ID, trust policy, CloudFormation template and link.
#[utoipa::path(get, path = "/v1/customers/{id}/onboarding", tag = "customers", security(("bearer" = [])),
    params(CustomerPath),
    responses((status = 200, body = Onboarding), (status = 400, body = Problem), (status = 401, body = Problem),
               (status = 403, body = Problem), (status = 404, body = Problem),
               (status = 503, description = "The broker's AWS identity is unknown", body = Problem)))]
#[tracing::instrument(skip_all, fields(customer = %id))]
async fn get_onboarding(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Onboarding>, ApiError> {
    let id = customer_id(&id)?;
    principal.authorize(Action::ManageCustomers, Some(&id))?;
    Ok(Json(customers::onboarding(&state, &id).await?))
}

/// Rotate the external ID: a new one is generated and the current one stays valid until a
/// role verifies with the new one.
#[utoipa::path(post, path = "/v1/customers/{id}/external-id/rotate", tag = "customers", security(("bearer" = [])),
    params(CustomerPath),
    responses((status = 200, body = Customer), (status = 400, body = Problem), (status = 401, body = Problem),
               (status = 403, body = Problem), (status = 404, body = Problem)))]
#[tracing::instrument(skip_all, fields(customer = %id))]
async fn rotate_external_id(
    State(state): State<AppState>,
    principal: Principal,
    ctx: Context,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Customer>, ApiError> {
    let id = customer_id(&id)?;
    principal.authorize(Action::ManageCustomers, Some(&id))?;
    let row = customers::rotate_external_id(&state, &principal, &ctx, &id).await?;
    Ok(Json(row.into()))
}
