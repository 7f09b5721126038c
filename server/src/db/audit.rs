//! `audit_event`: the append-only record of every security-relevant action.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::audit::chain;

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

    /// What the row's hash covers, with the time it is written at.
    pub fn content(&self, occurred_at: DateTime<Utc>) -> chain::Content<'_> {
        chain::Content {
            occurred_at,
            request_id: self.request_id.as_deref(),
            actor: &self.actor,
            actor_role: self.actor_role,
            action: self.action,
            customer_id: self.customer_id.as_deref(),
            role_name: self.role_name.as_deref(),
            session_id: self.session_id,
            case_id: self.case_id.as_deref(),
            profile: self.profile.as_deref(),
            source_ip: self.source_ip,
            user_agent: self.user_agent.as_deref(),
            outcome: self.outcome,
            error_code: self.error_code.as_deref(),
            duration_ms: self.duration_ms,
            cache_hit: self.cache_hit,
            detail: self.detail.as_ref(),
        }
    }
}

/// Writes one event inside the caller's transaction, on the shared administrative chain
/// (see `crate::audit::chain`): the chain's head row stays locked until the transaction ends,
/// which serialises the (rare) administrative events of every instance.
#[tracing::instrument(skip_all, fields(action = event.action))]
pub async fn insert(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    event: &NewEvent,
) -> Result<(), sqlx::Error> {
    // A transaction, never a bare connection: outside one the head's lock would end with
    // the SELECT, and two writers could read the same head and fork the chain.
    let conn: &mut PgConnection = tx;
    let (head_seq, head_hash): (i64, Vec<u8>) = sqlx::query_as(
        "SELECT head_seq, head_hash FROM audit_chain WHERE id = $1 FOR NO KEY UPDATE",
    )
    .bind(chain::ADMIN_CHAIN)
    .fetch_one(&mut *conn)
    .await?;
    let prev: chain::Hash = head_hash
        .try_into()
        .map_err(|_| sqlx::Error::Protocol("audit chain head is not 32 bytes".into()))?;
    let occurred_at = chain::now();
    let seq = head_seq + 1;
    let hash = chain::hash(&prev, seq, &event.content(occurred_at));
    sqlx::query(
        "WITH ev AS (
             INSERT INTO audit_event (occurred_at, request_id, actor, actor_role, action,
                                      customer_id, role_name, session_id, case_id, profile,
                                      source_ip, user_agent, outcome, error_code, duration_ms,
                                      cache_hit, detail, chain_id, seq, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::inet, $12, $13, $14, $15,
                     $16, $17, $18, $19, $20)
         )
         UPDATE audit_chain SET head_seq = $19, head_hash = $20 WHERE id = $18",
    )
    .bind(occurred_at)
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
    .bind(chain::ADMIN_CHAIN)
    .bind(seq)
    .bind(&hash[..])
    .execute(&mut *conn)
    .await?;
    Ok(())
}
