//! Customers: create, list, show, disable and enable; the onboarding document; external-ID
//! rotation.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{CustomerPath, RequestContext};
use crate::app::AppState;
use crate::auth::{Action, Principal, customer_not_found};
use crate::db::{self, customers::CustomerRow};
use crate::domain::{CustomerId, DisplayName, ExternalId};
use crate::http::error::{ApiError, Problem};
use crate::http::extract::{ApiJson, ApiPath, ApiQuery};

/// The CloudFormation template that creates the customer's role, as shipped in `deploy/`.
pub const CUSTOMER_ROLE_TEMPLATE: &str = include_str!("../../../../deploy/aws/customer-role.yaml");
/// The role name the template and documentation suggest.
pub const SUGGESTED_ROLE_NAME: &str = "LanyardAccess";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_customer, list_customers))
        .routes(routes!(get_customer))
        .routes(routes!(disable_customer))
        .routes(routes!(enable_customer))
        .routes(routes!(get_onboarding))
        .routes(routes!(rotate_external_id))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Customer {
    #[schema(example = "acme-corp")]
    pub id: String,
    pub display_name: String,
    /// The external ID the broker sends with every AssumeRole for this customer.
    pub external_id: String,
    /// A rotated external ID, in use once a role verifies with it.
    pub pending_external_id: Option<String>,
    /// `pending` until a role verifies, then `active`; `disabled` blocks new credentials.
    #[schema(example = "active")]
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
}

impl From<CustomerRow> for Customer {
    fn from(row: CustomerRow) -> Self {
        Customer {
            id: row.id,
            display_name: row.display_name,
            external_id: row.external_id,
            pending_external_id: row.pending_external_id,
            status: row.status,
            created_at: row.created_at,
            updated_at: row.updated_at,
            disabled_at: row.disabled_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCustomer {
    /// Slug: 2-63 of `[a-z0-9-]`, starting with a letter or digit.
    #[schema(
        example = "acme-corp",
        pattern = "^[a-z0-9][a-z0-9-]{1,62}$",
        min_length = 2,
        max_length = 63
    )]
    pub id: String,
    /// Human-readable name (defaults to the id): 1-200 characters, not blank, no control
    /// characters.
    #[schema(
        example = "Acme Corp",
        max_length = 200,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub display_name: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerList {
    pub customers: Vec<Customer>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListCustomersQuery {
    /// Only customers in this status (`pending`, `active`, `disabled`).
    #[param(pattern = "^(pending|active|disabled)$")]
    pub status: Option<String>,
}

/// What a customer needs to create the role: external ID, trust policy, template.
#[derive(Debug, Serialize, ToSchema)]
pub struct Onboarding {
    pub customer: String,
    /// The external ID to put in the role's trust policy (the pending one during rotation).
    pub external_id: String,
    /// Every external ID the broker may send right now; the trust policy accepts all of them.
    pub accepted_external_ids: Vec<String>,
    /// The broker's IAM principal, which the trust policy must name.
    pub broker_principal_arn: String,
    /// The trust policy for the role, as JSON.
    #[schema(value_type = Object)]
    pub trust_policy: serde_json::Value,
    /// CloudFormation template (YAML) that creates the role.
    pub cloudformation_template: String,
    /// Parameter values for the template.
    pub cloudformation_parameters: BTreeMap<String, String>,
    /// Console link that opens the template with its parameters filled in, when the
    /// broker knows the template's S3 URL.
    pub quick_create_url: Option<String>,
    /// What to do, in order.
    pub steps: Vec<String>,
}

fn customer_id(raw: &str) -> Result<CustomerId, ApiError> {
    CustomerId::parse(raw).map_err(|e| ApiError::invalid("id", e))
}

async fn load(state: &AppState, id: &CustomerId) -> Result<CustomerRow, ApiError> {
    db::customers::get(&state.db, id.as_str())
        .await?
        .ok_or_else(|| customer_not_found(id))
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
    ctx: RequestContext,
    ApiJson(body): ApiJson<CreateCustomer>,
) -> Result<(StatusCode, Json<Customer>), ApiError> {
    let id = customer_id(&body.id)?;
    principal.authorize(Action::ManageCustomers, Some(&id))?;
    let display_name = DisplayName::parse(body.display_name.as_deref().unwrap_or(id.as_str()))
        .map_err(|e| ApiError::invalid("display_name", e))?;
    let external_id = ExternalId::generate(&state.config.external_id_prefix, &id)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("OS random generator: {e}")))?;
    let mut tx = state.db.begin().await?;
    let row = db::customers::insert(
        &mut tx,
        id.as_str(),
        display_name.as_str(),
        external_id.as_str(),
    )
    .await
    .map_err(|e| ApiError::on_unique_violation(e, format!("customer '{id}' already exists")))?;
    let event = db::audit::NewEvent {
        customer_id: Some(id.to_string()),
        ..ctx.event(&principal, "customer.create")
    };
    db::audit::insert(&mut tx, &event).await?;
    tx.commit().await?;
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
    if let Some(status) = &query.status
        && !["pending", "active", "disabled"].contains(&status.as_str())
    {
        return Err(ApiError::invalid(
            "status",
            "must be pending, active or disabled",
        ));
    }
    let only = principal.customer_scope();
    let rows = db::customers::list(&state.db, only.as_deref(), query.status.as_deref()).await?;
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
    Ok(Json(load(&state, &id).await?.into()))
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
    ctx: RequestContext,
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
    ctx: RequestContext,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Customer>, ApiError> {
    set_enabled(state, principal, ctx, id, true).await
}

async fn set_enabled(
    state: AppState,
    principal: Principal,
    ctx: RequestContext,
    id: String,
    enabled: bool,
) -> Result<Json<Customer>, ApiError> {
    let id = customer_id(&id)?;
    principal.authorize(Action::ManageCustomers, Some(&id))?;
    let mut tx = state.db.begin().await?;
    let current = db::customers::lock(&mut tx, id.as_str())
        .await?
        .ok_or_else(|| customer_not_found(&id))?;
    let status = if !enabled {
        "disabled"
    } else if db::roles::any_verified(&mut *tx, id.as_str()).await? {
        "active"
    } else {
        "pending"
    };
    if current.status != status {
        db::customers::set_status(&mut tx, id.as_str(), status).await?;
        let action = if enabled {
            "customer.enable"
        } else {
            "customer.disable"
        };
        let event = db::audit::NewEvent {
            customer_id: Some(id.to_string()),
            ..ctx.event(&principal, action)
        };
        db::audit::insert(&mut tx, &event).await?;
    }
    let row = db::customers::get(&mut *tx, id.as_str())
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    tx.commit().await?;
    // Other instances hear of it through the revocation trigger; this one at once.
    state.auth_cache.forget_customer(id.as_str());
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
    let customer = load(&state, &id).await?;
    let broker = state.sts.broker_principal().await.map_err(|e| {
        ApiError::Unavailable(format!(
            "cannot determine the broker's AWS identity ({e}); set LANYARD_BROKER_PRINCIPAL_ARN"
        ))
    })?;
    Ok(Json(onboarding_document(
        &customer,
        &broker,
        state.config.onboarding_template_url.as_deref(),
    )))
}

fn onboarding_document(
    customer: &CustomerRow,
    broker: &str,
    template_url: Option<&str>,
) -> Onboarding {
    let external_id = customer
        .pending_external_id
        .clone()
        .unwrap_or_else(|| customer.external_id.clone());
    let accepted: Vec<String> = std::iter::once(customer.external_id.clone())
        .chain(customer.pending_external_id.clone())
        .collect();
    let condition_value = match accepted.as_slice() {
        [one] => serde_json::json!(one),
        many => serde_json::json!(many),
    };
    let trust_policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "LanyardBroker",
            "Effect": "Allow",
            "Principal": { "AWS": broker },
            "Action": ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"],
            "Condition": { "StringEquals": { "sts:ExternalId": condition_value } }
        }]
    });
    let parameters = BTreeMap::from([
        ("BrokerPrincipalArn".to_owned(), broker.to_owned()),
        ("ExternalId".to_owned(), external_id.clone()),
        ("RoleName".to_owned(), SUGGESTED_ROLE_NAME.to_owned()),
    ]);
    let quick_create_url = template_url.map(|url| {
        let params: String = parameters
            .iter()
            .map(|(k, v)| format!("&param_{k}={}", urlencoding::encode(v)))
            .collect();
        format!(
            "https://console.aws.amazon.com/cloudformation/home#/stacks/quickcreate?templateURL={}&stackName={}{params}",
            urlencoding::encode(url),
            urlencoding::encode(&format!("lanyard-{}", customer.id)),
        )
    });
    let steps = vec![
        format!(
            "In the customer's AWS account, create an IAM role (suggested name {SUGGESTED_ROLE_NAME}) \
             whose trust policy is trust_policy, with the permissions the broker may use"
        ),
        "Or deploy cloudformation_template with cloudformation_parameters (quick_create_url \
         opens it in the console when present)"
            .to_owned(),
        format!(
            "Register the role ARN: PUT /v1/customers/{}/roles/<name> {{\"role_arn\": \"arn:aws:iam::<account>:role/{SUGGESTED_ROLE_NAME}\"}}",
            customer.id
        ),
    ];
    Onboarding {
        customer: customer.id.clone(),
        external_id,
        accepted_external_ids: accepted,
        broker_principal_arn: broker.to_owned(),
        trust_policy,
        cloudformation_template: CUSTOMER_ROLE_TEMPLATE.to_owned(),
        cloudformation_parameters: parameters,
        quick_create_url,
        steps,
    }
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
    ctx: RequestContext,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Customer>, ApiError> {
    let id = customer_id(&id)?;
    principal.authorize(Action::ManageCustomers, Some(&id))?;
    let new_id = ExternalId::generate(&state.config.external_id_prefix, &id)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("OS random generator: {e}")))?;
    let mut tx = state.db.begin().await?;
    db::customers::lock(&mut tx, id.as_str())
        .await?
        .ok_or_else(|| customer_not_found(&id))?;
    db::customers::add_pending_external_id(&mut tx, id.as_str(), new_id.as_str()).await?;
    let event = db::audit::NewEvent {
        customer_id: Some(id.to_string()),
        ..ctx.event(&principal, "external_id.rotate")
    };
    db::audit::insert(&mut tx, &event).await?;
    let row = db::customers::get(&mut *tx, id.as_str())
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    tx.commit().await?;
    Ok(Json(row.into()))
}
