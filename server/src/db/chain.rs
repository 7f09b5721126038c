//! What `audit verify` reads: the chains' heads and prune points, and every chained row in
//! chain and `seq` order, all in one read-only snapshot.

use chrono::{DateTime, Utc};
use futures::Stream;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

/// A chain's recorded head.
#[derive(Debug, sqlx::FromRow)]
pub struct ChainRow {
    pub id: Uuid,
    pub writer: String,
    pub head_seq: i64,
    pub head_hash: Vec<u8>,
}

/// Where retention cut a chain: the last removed row's `seq` and hash.
#[derive(Debug, sqlx::FromRow)]
pub struct PruneRow {
    pub chain_id: Uuid,
    pub pruned_seq: i64,
    pub pruned_hash: Vec<u8>,
}

/// An audit row as stored, with everything its hash covers.
#[derive(Debug, sqlx::FromRow)]
pub struct StoredRow {
    pub id: i64,
    pub chain_id: Uuid,
    pub seq: i64,
    pub hash: Vec<u8>,
    pub occurred_at: DateTime<Utc>,
    pub request_id: Option<String>,
    pub actor: String,
    pub actor_role: Option<String>,
    pub action: String,
    pub customer_id: Option<String>,
    pub role_name: Option<String>,
    pub session_id: Option<Uuid>,
    pub case_id: Option<String>,
    pub profile: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub outcome: String,
    pub error_code: Option<String>,
    pub duration_ms: Option<i32>,
    pub cache_hit: Option<bool>,
    pub detail: Option<serde_json::Value>,
}

/// One read-only snapshot for every read of a verification: writers and retention keep
/// committing meanwhile, and a head read before a batch committed must not meet its rows.
pub async fn snapshot(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

pub async fn heads(conn: &mut PgConnection) -> Result<Vec<ChainRow>, sqlx::Error> {
    sqlx::query_as("SELECT id, writer, head_seq, head_hash FROM audit_chain")
        .fetch_all(conn)
        .await
}

pub async fn prune_points(conn: &mut PgConnection) -> Result<Vec<PruneRow>, sqlx::Error> {
    sqlx::query_as("SELECT chain_id, pruned_seq, pruned_hash FROM audit_chain_prune")
        .fetch_all(conn)
        .await
}

/// Rows without a chain: all of them, and those dated after the first chain began.
pub async fn unchained(conn: &mut PgConnection) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*),
                count(*) FILTER (WHERE occurred_at > (SELECT min(started_at) FROM audit_chain))
         FROM audit_event WHERE chain_id IS NULL",
    )
    .fetch_one(conn)
    .await
}

/// Every chained row, in chain and `seq` order, as the database sends them.
pub fn rows(conn: &mut PgConnection) -> impl Stream<Item = Result<StoredRow, sqlx::Error>> + '_ {
    sqlx::query_as::<_, StoredRow>(
        "SELECT id, chain_id, seq, hash, occurred_at, request_id, actor, actor_role, action,
                customer_id, role_name, session_id, case_id, profile, host(source_ip) AS source_ip,
                user_agent, outcome, error_code, duration_ms, cache_hit, detail
         FROM audit_event WHERE chain_id IS NOT NULL ORDER BY chain_id, seq, id",
    )
    .fetch(conn)
}
