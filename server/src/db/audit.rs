//! `audit_event` and `audit_chain`: the append-only record of every security-relevant action
//! and the heads of its hash chains. The hashes are computed by `crate::audit`; these
//! functions store rows and heads exactly as given.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::Outcome;

/// One audit row to write. Never put a secret in any field.
#[derive(Debug, Clone)]
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
    pub outcome: Outcome,
    pub error_code: Option<String>,
    pub duration_ms: Option<i32>,
    pub cache_hit: Option<bool>,
    pub detail: Option<serde_json::Value>,
}

impl NewEvent {
    /// A successful `action` by `actor`, every other field empty.
    pub fn success(actor: impl Into<String>, action: &'static str) -> Self {
        NewEvent {
            request_id: None,
            actor: actor.into(),
            actor_role: None,
            action,
            customer_id: None,
            role_name: None,
            session_id: None,
            case_id: None,
            profile: None,
            source_ip: None,
            user_agent: None,
            outcome: Outcome::Success,
            error_code: None,
            duration_ms: None,
            cache_hit: None,
            detail: None,
        }
    }
}

/// A chain's head: the last row's `seq` and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub seq: i64,
    pub hash: [u8; 32],
}

/// The head of chain `chain`, locked until the transaction ends (a transaction, never a bare
/// connection: outside one the lock would end with the SELECT, and two writers could read
/// the same head and fork the chain).
#[tracing::instrument(skip_all)]
pub async fn lock_head(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    chain: Uuid,
) -> Result<Head, sqlx::Error> {
    let conn: &mut PgConnection = tx;
    let (seq, hash): (i64, Vec<u8>) = sqlx::query_as(
        "SELECT head_seq, head_hash FROM audit_chain WHERE id = $1 FOR NO KEY UPDATE",
    )
    .bind(chain)
    .fetch_one(conn)
    .await?;
    let hash = hash
        .try_into()
        .map_err(|_| sqlx::Error::Protocol("audit chain head is not 32 bytes".into()))?;
    Ok(Head { seq, hash })
}

/// Writes one row of chain `chain` at `head` (its `seq` and hash) and moves the chain's
/// head there, in the caller's transaction (after [`lock_head`]).
#[tracing::instrument(skip_all, fields(action = event.action))]
pub async fn insert_one(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    event: &NewEvent,
    occurred_at: DateTime<Utc>,
    chain: Uuid,
    head: Head,
) -> Result<(), sqlx::Error> {
    let conn: &mut PgConnection = tx;
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
    .bind(chain)
    .bind(head.seq)
    .bind(&head.hash[..])
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a new chain written by `writer` (`host/pid/worker`).
pub async fn start_chain(
    conn: &mut PgConnection,
    id: Uuid,
    writer: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO audit_chain (id, writer) VALUES ($1, $2)")
        .bind(id)
        .bind(writer)
        .execute(conn)
        .await?;
    Ok(())
}

/// One row of a batch: the event, when it happened, and its place in the chain.
pub struct BatchRow<'a> {
    pub event: &'a NewEvent,
    pub occurred_at: DateTime<Utc>,
    pub seq: i64,
    pub hash: [u8; 32],
}

/// The batch statement (built once).
static STATEMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// One statement for a whole batch of chain `chain`: the rows (column arrays unnested), the
/// usage rollups (`super::usage`) and the chain's new head (the last row's), so that rows,
/// chain and rollups commit or fail together.
pub async fn insert_batch(
    conn: &mut PgConnection,
    chain: Uuid,
    rows: &[BatchRow<'_>],
) -> Result<(), sqlx::Error> {
    fn col<'a, T>(rows: &'a [BatchRow<'a>], f: impl Fn(&'a NewEvent) -> T) -> Vec<T> {
        rows.iter().map(|r| f(r.event)).collect()
    }
    let Some(last) = rows.last() else {
        return Ok(());
    };
    let sql = STATEMENT.get_or_init(|| {
        format!(
            "WITH ev AS (
                 INSERT INTO audit_event (occurred_at, request_id, actor, actor_role, action,
                                          customer_id, role_name, session_id, case_id, profile,
                                          source_ip, user_agent, outcome, error_code,
                                          duration_ms, cache_hit, detail, chain_id, seq, hash)
                 SELECT ts, r, a, ar, ac, c, rn, s, ca, p, ip::inet, ua, o, ec, d, ch, dt, $18,
                        sq, h
                 FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[],
                             $6::text[], $7::text[], $8::uuid[], $9::text[], $10::text[],
                             $11::text[], $12::text[], $13::text[], $14::text[], $15::int4[],
                             $16::bool[], $17::jsonb[], $19::int8[], $20::bytea[])
                      AS t(ts, r, a, ar, ac, c, rn, s, ca, p, ip, ua, o, ec, d, ch, dt, sq, h)
                 RETURNING occurred_at, customer_id, profile, case_id, actor, action, outcome,
                           cache_hit, duration_ms, detail->>'tier' AS tier
             ), {}
             UPDATE audit_chain SET head_seq = $21, head_hash = $22 WHERE id = $18",
            super::usage::upsert_ctes()
        )
    });
    sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
        .bind(rows.iter().map(|r| r.occurred_at).collect::<Vec<_>>())
        .bind(col(rows, |e| e.request_id.as_deref()))
        .bind(col(rows, |e| e.actor.as_str()))
        .bind(col(rows, |e| e.actor_role))
        .bind(col(rows, |e| e.action))
        .bind(col(rows, |e| e.customer_id.as_deref()))
        .bind(col(rows, |e| e.role_name.as_deref()))
        .bind(col(rows, |e| e.session_id))
        .bind(col(rows, |e| e.case_id.as_deref()))
        .bind(col(rows, |e| e.profile.as_deref()))
        .bind(col(rows, |e| e.source_ip.map(|ip| ip.to_string())))
        .bind(col(rows, |e| e.user_agent.as_deref()))
        .bind(col(rows, |e| e.outcome.as_str()))
        .bind(col(rows, |e| e.error_code.as_deref()))
        .bind(col(rows, |e| e.duration_ms))
        .bind(col(rows, |e| e.cache_hit))
        .bind(col(rows, |e| e.detail.as_ref()))
        .bind(chain)
        .bind(rows.iter().map(|r| r.seq).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.hash.to_vec()).collect::<Vec<_>>())
        .bind(last.seq)
        .bind(last.hash.to_vec())
        .execute(conn)
        .await?;
    Ok(())
}
