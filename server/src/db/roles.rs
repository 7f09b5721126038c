//! `role`: the IAM roles customers registered, and what their last verification found.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use lanyard_api::roles::{Role, Tier, Validation};
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};

use crate::domain::{CustomerId, RoleName, RoleStatus, SessionKind, TrustCheck};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RoleRow {
    pub customer_id: CustomerId,
    pub name: RoleName,
    pub role_arn: String,
    pub session_kinds: Vec<SessionKind>,
    pub max_session_seconds: i32,
    pub session_policy: Option<serde_json::Value>,
    pub tiers: Json<BTreeMap<String, Tier>>,
    pub required_actions: Vec<String>,
    pub validation: Option<Json<Validation>>,
    /// The external ID the role last verified with.
    pub verified_external_id: Option<String>,
    pub status: RoleStatus,
    pub trust_check: TrustCheck,
    pub verified_at: Option<DateTime<Utc>>,
    pub last_checked_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str =
    "customer_id, name, role_arn, session_kinds, max_session_seconds, session_policy, tiers,
    required_actions, validation, verified_external_id, status, trust_check, verified_at, last_checked_at, last_error, created_at, updated_at";

pub struct RoleSpec<'a> {
    pub role_arn: &'a str,
    pub session_kinds: &'a [SessionKind],
    pub max_session_seconds: i32,
    pub session_policy: Option<&'a serde_json::Value>,
    pub tiers: &'a BTreeMap<String, Tier>,
    pub required_actions: &'a [String],
}

/// Registers or updates a role. Any change resets it to `unverified` until checked again.
#[tracing::instrument(skip_all, fields(customer, name))]
pub async fn upsert(
    conn: &mut PgConnection,
    customer: &str,
    name: &str,
    spec: &RoleSpec<'_>,
) -> Result<RoleRow, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO role (customer_id, name, role_arn, session_kinds, max_session_seconds, session_policy, tiers,
                          required_actions)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (customer_id, name) DO UPDATE
            SET role_arn = EXCLUDED.role_arn, session_kinds = EXCLUDED.session_kinds,
                max_session_seconds = EXCLUDED.max_session_seconds,
                session_policy = EXCLUDED.session_policy, tiers = EXCLUDED.tiers,
                required_actions = EXCLUDED.required_actions, validation = NULL,
                status = 'unverified', trust_check = 'not_run', verified_at = NULL,
                verified_external_id = NULL, last_error = NULL, updated_at = now()
         RETURNING {COLUMNS}"
    )))
    .bind(customer)
    .bind(name)
    .bind(spec.role_arn)
    .bind(spec.session_kinds)
    .bind(spec.max_session_seconds)
    .bind(spec.session_policy)
    .bind(Json(spec.tiers))
    .bind(spec.required_actions)
    .fetch_one(conn)
    .await
}

#[tracing::instrument(skip_all, fields(customer, name))]
pub async fn get<'e>(
    exec: impl PgExecutor<'e>,
    customer: &str,
    name: &str,
) -> Result<Option<RoleRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM role WHERE customer_id = $1 AND name = $2"
    )))
    .bind(customer)
    .bind(name)
    .fetch_optional(exec)
    .await
}

#[tracing::instrument(skip_all, fields(customer))]
pub async fn list<'e>(
    exec: impl PgExecutor<'e>,
    customer: &str,
) -> Result<Vec<RoleRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM role WHERE customer_id = $1 ORDER BY name"
    )))
    .bind(customer)
    .fetch_all(exec)
    .await
}

/// Stores what the last check of the role's required actions found, unless the role changed
/// since it was read (`read_at`, its `updated_at` then): the result would be for another
/// list of actions.
pub async fn record_validation<'e>(
    exec: impl PgExecutor<'e>,
    customer: &str,
    name: &str,
    read_at: DateTime<Utc>,
    validation: &Validation,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE role SET validation = $4
         WHERE customer_id = $1 AND name = $2 AND updated_at = $3",
    )
    .bind(customer)
    .bind(name)
    .bind(read_at)
    .bind(Json(validation))
    .execute(exec)
    .await?;
    Ok(())
}

/// Whether any role of the customer is verified.
pub async fn any_verified<'e>(
    exec: impl PgExecutor<'e>,
    customer: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM role WHERE customer_id = $1 AND status = 'verified')",
    )
    .bind(customer)
    .fetch_one(exec)
    .await
}

/// The outcome of one verification run.
pub struct CheckResult<'a> {
    pub status: RoleStatus,
    pub trust_check: TrustCheck,
    pub verified_external_id: Option<&'a str>,
    pub error: Option<&'a str>,
}

#[tracing::instrument(skip_all, fields(customer, name, status = result.status.as_str()))]
pub async fn record_check(
    conn: &mut PgConnection,
    customer: &str,
    name: &str,
    result: &CheckResult<'_>,
) -> Result<RoleRow, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE role
            SET status = $3, trust_check = $4, verified_external_id = $5, last_error = $6,
                verified_at = CASE WHEN $3 = 'verified' THEN now() END,
                last_checked_at = now(), updated_at = now()
          WHERE customer_id = $1 AND name = $2
         RETURNING {COLUMNS}"
    )))
    .bind(customer)
    .bind(name)
    .bind(result.status)
    .bind(result.trust_check)
    .bind(result.verified_external_id)
    .bind(result.error)
    .fetch_one(conn)
    .await
}

impl From<RoleRow> for Role {
    fn from(row: RoleRow) -> Self {
        Role {
            name: row.name,
            customer: row.customer_id,
            role_arn: row.role_arn,
            session_kinds: row.session_kinds,
            max_session_seconds: row.max_session_seconds,
            session_policy: row.session_policy,
            tiers: row.tiers.0,
            required_actions: row.required_actions,
            validation: row.validation.map(|v| v.0),
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
