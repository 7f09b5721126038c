//! `audit_event`: the append-only record of every security-relevant action.

use std::net::IpAddr;

use sqlx::PgExecutor;
use uuid::Uuid;

/// One audit row to write. Never put a secret in any field.
#[derive(Debug, Clone, Default)]
pub struct NewEvent {
    pub request_id: Option<String>,
    pub actor: String,
    pub actor_role: Option<&'static str>,
    pub action: &'static str,
    pub customer_id: Option<String>,
    pub role_name: Option<String>,
    pub session_id: Option<Uuid>,
    pub case_id: Option<String>,
    pub profile: Option<String>,
    pub source_ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub outcome: &'static str,
    pub error_code: Option<String>,
    pub duration_ms: Option<i32>,
    pub cache_hit: Option<bool>,
    pub detail: Option<serde_json::Value>,
}

impl NewEvent {
    pub fn success() -> Self {
        NewEvent {
            outcome: "success",
            ..NewEvent::default()
        }
    }
}

#[tracing::instrument(skip_all, fields(action = event.action))]
pub async fn insert<'e>(exec: impl PgExecutor<'e>, event: &NewEvent) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_event (request_id, actor, actor_role, action, customer_id, role_name,
                                  session_id, case_id, profile, source_ip, user_agent, outcome,
                                  error_code, duration_ms, cache_hit, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::inet, $11, $12, $13, $14, $15, $16)",
    )
    .bind(&event.request_id)
    .bind(&event.actor)
    .bind(event.actor_role)
    .bind(event.action)
    .bind(&event.customer_id)
    .bind(&event.role_name)
    .bind(event.session_id)
    .bind(&event.case_id)
    .bind(&event.profile)
    .bind(event.source_ip.map(|ip| ip.to_string()))
    .bind(&event.user_agent)
    .bind(event.outcome)
    .bind(&event.error_code)
    .bind(event.duration_ms)
    .bind(event.cache_hit)
    .bind(&event.detail)
    .execute(exec)
    .await?;
    Ok(())
}
