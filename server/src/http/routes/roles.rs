//! Customer roles: register (and verify), re-verify, list, show.
//!
//! Verification calls AssumeRole with the customer's external ID, then without it: a role
//! that opens without the external ID is open to the confused-deputy attack and, with
//! `LANYARD_TRUST_CHECK=enforce`, is not activated.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{CustomerPath, RequestContext, RolePath};
use crate::app::AppState;
use crate::auth::{Action, Principal, customer_not_found};
use crate::config::TrustCheckMode;
use crate::db::{self, roles::RoleRow};
use crate::domain::{CustomerId, ExternalId, RoleArn, RoleName, SessionKind};
use crate::http::error::{ApiError, Problem};
use crate::http::extract::{ApiJson, ApiPath};
use crate::sts::{TrustCheck, Verification};

/// Room left in the 2,048-character STS policy limit for the broker's own statements.
pub const MAX_SESSION_POLICY_CHARS: usize = 1536;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_roles))
        .routes(routes!(put_role, get_role))
        .routes(routes!(verify_role))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Role {
    #[schema(example = "readonly")]
    pub name: String,
    pub customer: String,
    #[schema(example = "arn:aws:iam::111122223333:role/LanyardAccess")]
    pub role_arn: String,
    /// Session kinds that may use the role.
    pub session_kinds: Vec<SessionKind>,
    pub max_session_seconds: i32,
    /// Scoped-down session policy applied to every AssumeRole.
    #[schema(value_type = Option<Object>)]
    pub session_policy: Option<serde_json::Value>,
    /// `verified`, `failed` or `unverified`.
    #[schema(example = "verified")]
    pub status: String,
    pub verified_at: Option<DateTime<Utc>>,
    pub last_checked_at: Option<DateTime<Utc>>,
    /// Why the last verification failed, or a warning about the trust policy.
    pub last_error: Option<String>,
    /// The confused-deputy check: `passed` (AssumeRole without the external ID is denied),
    /// `open` (it is allowed), `inconclusive`, or `not_run`.
    #[schema(example = "passed")]
    pub trust_check: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<RoleRow> for Role {
    fn from(row: RoleRow) -> Self {
        Role {
            name: row.name,
            customer: row.customer_id,
            role_arn: row.role_arn,
            session_kinds: row
                .session_kinds
                .iter()
                .filter_map(|k| SessionKind::parse(k).ok())
                .collect(),
            max_session_seconds: row.max_session_seconds,
            session_policy: row.session_policy,
            status: row.status,
            verified_at: row.verified_at,
            last_checked_at: row.last_checked_at,
            last_error: row.last_error,
            trust_check: row.trust_check,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutRole {
    /// `arn:<partition>:iam::<12-digit account>:role/<optional path/><name>`.
    #[schema(
        example = "arn:aws:iam::111122223333:role/LanyardAccess",
        pattern = "^arn:aws(-cn|-us-gov|-iso|-iso-b)?:iam::[0-9]{12}:role/([!-~]*/)?[A-Za-z0-9_+=,.@-]{1,64}$",
        max_length = 2048
    )]
    pub role_arn: String,
    /// 900-43200, at most the role's MaxSessionDuration in IAM. Default 3600.
    #[schema(minimum = 900, maximum = 43200)]
    #[serde(default, deserialize_with = "crate::http::extract::integral")]
    pub max_session_seconds: Option<i32>,
    /// Default: both kinds.
    #[schema(min_items = 1)]
    pub session_kinds: Option<Vec<SessionKind>>,
    /// An IAM policy document that scopes sessions down (at most 1,536 characters compact).
    #[schema(schema_with = session_policy_schema)]
    pub session_policy: Option<serde_json::Value>,
}

/// The shape `validate_policy` accepts: an IAM policy document with a `Statement`.
fn session_policy_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{
        AdditionalProperties, ArrayBuilder, ObjectBuilder, OneOfBuilder, SchemaType, Type,
    };
    let string = || ObjectBuilder::new().schema_type(Type::String);
    ObjectBuilder::new()
        .schema_type(SchemaType::Array(vec![Type::Object, Type::Null]))
        .property("Version", string().examples(["2012-10-17"]))
        .property("Id", string())
        .property(
            "Statement",
            OneOfBuilder::new()
                .item(ObjectBuilder::new().schema_type(Type::Object))
                .item(
                    ArrayBuilder::new()
                        .items(ObjectBuilder::new().schema_type(Type::Object))
                        .min_items(Some(1)),
                )
                .description(Some("One statement or a non-empty list of them.")),
        )
        .required("Statement")
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .description(Some(
            "An IAM policy document that scopes sessions down (at most 1,536 characters compact).",
        ))
        .build()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RoleList {
    pub roles: Vec<Role>,
}

fn ids(customer: &str, name: &str) -> Result<(CustomerId, RoleName), ApiError> {
    Ok((
        CustomerId::parse(customer).map_err(|e| ApiError::invalid("id", e))?,
        RoleName::parse(name).map_err(|e| ApiError::invalid("name", e))?,
    ))
}

fn has_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(text) => text.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(has_nul),
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

fn validate_policy(policy: &serde_json::Value) -> Result<(), ApiError> {
    let field = "session_policy";
    let obj = policy.as_object().ok_or_else(|| {
        ApiError::invalid(field, "must be an IAM policy document (a JSON object)")
    })?;
    if !obj.contains_key("Statement") {
        return Err(ApiError::invalid(field, "must have a Statement"));
    }
    if obj
        .keys()
        .any(|k| !["Version", "Id", "Statement"].contains(&k.as_str()))
    {
        return Err(ApiError::invalid(
            field,
            "only Version, Id and Statement are allowed at the top level",
        ));
    }
    if ["Version", "Id"]
        .iter()
        .any(|k| obj.get(*k).is_some_and(|v| !v.is_string()))
    {
        return Err(ApiError::invalid(field, "Version and Id must be strings"));
    }
    let statements_ok = match &obj["Statement"] {
        serde_json::Value::Object(_) => true,
        serde_json::Value::Array(list) => {
            !list.is_empty() && list.iter().all(serde_json::Value::is_object)
        }
        _ => false,
    };
    if !statements_ok {
        return Err(ApiError::invalid(
            field,
            "Statement must be a statement object or a non-empty list of them",
        ));
    }
    // Postgres cannot store U+0000 in jsonb, and no IAM policy holds it.
    if has_nul(policy) {
        return Err(ApiError::invalid(field, "must not contain NUL characters"));
    }
    let compact = policy.to_string();
    if compact.len() > MAX_SESSION_POLICY_CHARS {
        return Err(ApiError::invalid(
            field,
            format!(
                "is {} characters; at most {MAX_SESSION_POLICY_CHARS} leave room within STS's 2,048",
                compact.len()
            ),
        ));
    }
    Ok(())
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
    ctx: RequestContext,
    ApiPath((customer, name)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<PutRole>,
) -> Result<Json<Role>, ApiError> {
    let (customer, name) = ids(&customer, &name)?;
    principal.authorize(Action::ManageCustomers, Some(&customer))?;
    let arn = RoleArn::parse(body.role_arn.trim()).map_err(|e| ApiError::invalid("role_arn", e))?;
    let max_session_seconds = body.max_session_seconds.unwrap_or(3600);
    if !(900..=43_200).contains(&max_session_seconds) {
        return Err(ApiError::invalid(
            "max_session_seconds",
            "must be between 900 and 43200",
        ));
    }
    let kinds = body
        .session_kinds
        .unwrap_or_else(|| SessionKind::ALL.to_vec());
    if kinds.is_empty() {
        return Err(ApiError::invalid(
            "session_kinds",
            "must name at least one kind",
        ));
    }
    let mut kind_names: Vec<String> = kinds.iter().map(|k| k.as_str().to_owned()).collect();
    kind_names.sort();
    kind_names.dedup();
    if let Some(policy) = &body.session_policy {
        validate_policy(policy)?;
    }

    let mut tx = state.db.begin().await?;
    db::customers::lock(&mut tx, customer.as_str())
        .await?
        .ok_or_else(|| customer_not_found(&customer))?;
    let spec = db::roles::RoleSpec {
        role_arn: arn.as_str(),
        session_kinds: &kind_names,
        max_session_seconds,
        session_policy: body.session_policy.as_ref(),
    };
    db::roles::upsert(&mut tx, customer.as_str(), name.as_str(), &spec).await?;
    let event = db::audit::NewEvent {
        customer_id: Some(customer.to_string()),
        role_name: Some(name.to_string()),
        detail: Some(serde_json::json!({ "role_arn": arn.as_str() })),
        ..ctx.event(&principal, "role.register")
    };
    db::audit::insert(&mut tx, &event).await?;
    tx.commit().await?;
    state.auth_cache.forget_customer(customer.as_str());

    run_verification(&state, &principal, &ctx, &customer, &name).await
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
    let row = db::roles::get(&state.db, customer.as_str(), name.as_str())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("customer '{customer}' has no role '{name}'")))?;
    Ok(Json(row.into()))
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
    if db::customers::get(&state.db, customer.as_str())
        .await?
        .is_none()
    {
        return Err(customer_not_found(&customer));
    }
    let rows = db::roles::list(&state.db, customer.as_str()).await?;
    Ok(Json(RoleList {
        roles: rows.into_iter().map(Role::from).collect(),
    }))
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
    ctx: RequestContext,
    ApiPath((customer, name)): ApiPath<(String, String)>,
) -> Result<Json<Role>, ApiError> {
    let (customer, name) = ids(&customer, &name)?;
    principal.authorize(Action::ManageCustomers, Some(&customer))?;
    run_verification(&state, &principal, &ctx, &customer, &name).await
}

/// Verifies the role against AWS (no transaction is held meanwhile), then records the result,
/// activates the customer and promotes a pending external ID, all in one transaction.
async fn run_verification(
    state: &AppState,
    principal: &Principal,
    ctx: &RequestContext,
    customer: &CustomerId,
    name: &RoleName,
) -> Result<Json<Role>, ApiError> {
    let not_found = || ApiError::NotFound(format!("customer '{customer}' has no role '{name}'"));
    let role = db::roles::get(&state.db, customer.as_str(), name.as_str())
        .await?
        .ok_or_else(not_found)?;
    let cust = db::customers::get(&state.db, customer.as_str())
        .await?
        .ok_or_else(|| customer_not_found(customer))?;
    let arn = RoleArn::parse(&role.role_arn)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("stored ARN: {e}")))?;
    let mut candidates = Vec::new();
    if let Some(pending) = &cust.pending_external_id {
        candidates.push(ExternalId::parse(pending).map_err(|e| ApiError::Internal(e.into()))?);
    }
    candidates
        .push(ExternalId::parse(&cust.external_id).map_err(|e| ApiError::Internal(e.into()))?);
    let refs: Vec<&ExternalId> = candidates.iter().collect();

    let started = std::time::Instant::now();
    let verification = state.sts.verify_role(&arn, customer.as_str(), &refs).await;
    let enforce = state.config.trust_check == TrustCheckMode::Enforce;

    let mut tx = state.db.begin().await?;
    let locked = db::customers::lock(&mut tx, customer.as_str())
        .await?
        .ok_or_else(|| customer_not_found(customer))?;
    let (status, trust, verified_with, error, error_code) = match &verification {
        Verification::Failed(e) => (
            "failed",
            "not_run",
            None,
            Some(format!("AssumeRole with the external ID failed: {e}")),
            Some(e.code.clone()),
        ),
        Verification::Assumed {
            verified_with,
            trust,
        } => {
            let still_valid = verified_with.as_str() == locked.external_id
                || locked.pending_external_id.as_deref() == Some(verified_with.as_str());
            match trust {
                _ if !still_valid => (
                    "failed",
                    trust.as_str(),
                    None,
                    Some("the external ID changed while the role was being verified; verify again".to_owned()),
                    Some("ExternalIdChanged".to_owned()),
                ),
                TrustCheck::Passed => ("verified", "passed", Some(verified_with), None, None),
                TrustCheck::Open if enforce => (
                    "failed",
                    "open",
                    None,
                    Some(
                        "the role's trust policy lets the broker assume it without the external ID \
                         (confused-deputy risk); add the sts:ExternalId condition and verify again"
                            .to_owned(),
                    ),
                    Some("TrustPolicyOpen".to_owned()),
                ),
                TrustCheck::Open => (
                    "verified",
                    "open",
                    Some(verified_with),
                    Some(
                        "warning: the trust policy does not require the external ID (confused-deputy \
                         risk); activated because LANYARD_TRUST_CHECK=warn"
                            .to_owned(),
                    ),
                    None,
                ),
                TrustCheck::Inconclusive(e) if enforce => (
                    "failed",
                    "inconclusive",
                    None,
                    Some(format!("the confused-deputy check could not complete: {e}")),
                    Some(e.code.clone()),
                ),
                TrustCheck::Inconclusive(e) => (
                    "verified",
                    "inconclusive",
                    Some(verified_with),
                    Some(format!("warning: the confused-deputy check could not complete: {e}")),
                    None,
                ),
            }
        }
    };
    let row = db::roles::record_check(
        &mut tx,
        customer.as_str(),
        name.as_str(),
        &db::roles::CheckResult {
            status,
            trust_check: trust,
            verified_external_id: verified_with.map(|e| e.as_str()),
            error: error.as_deref(),
        },
    )
    .await?;
    if let Some(verified_with) = verified_with {
        if locked.pending_external_id.as_deref() == Some(verified_with.as_str()) {
            db::customers::promote_pending_external_id(&mut tx, customer.as_str()).await?;
        }
        if locked.status == "pending" {
            db::customers::set_status(&mut tx, customer.as_str(), "active").await?;
        }
    }
    let event = db::audit::NewEvent {
        customer_id: Some(customer.to_string()),
        role_name: Some(name.to_string()),
        outcome: if status == "verified" {
            "success"
        } else {
            "error"
        },
        error_code,
        duration_ms: i32::try_from(started.elapsed().as_millis()).ok(),
        detail: Some(
            serde_json::json!({ "role_arn": role.role_arn, "status": status, "trust_check": trust }),
        ),
        ..ctx.event(principal, "role.verify")
    };
    db::audit::insert(&mut tx, &event).await?;
    tx.commit().await?;
    state.auth_cache.forget_customer(customer.as_str());
    Ok(Json(row.into()))
}
