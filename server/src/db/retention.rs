//! Retention's statements (see `crate::audit::retention` for the rules).

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

/// `pg_try_advisory_xact_lock` key: "lanyard audit retention".
const LOCK_KEY: i64 = 0x6c61_6e79_6172_6401;

/// When the oldest audit row was written.
pub async fn oldest(pool: &PgPool) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT min(occurred_at) FROM audit_event")
        .fetch_one(pool)
        .await
}

/// Takes retention's transaction-level lock; false when another instance holds it.
pub async fn try_lock(tx: &mut Transaction<'_, Postgres>) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(LOCK_KEY)
        .fetch_one(&mut **tx)
        .await
}

/// Removes, per chain, the rows up to the newest one older than `before` (recording that
/// row's seq and hash as the chain's prune point in the same statement), and the unchained
/// rows older than `before`; rows stamped at or after `stragglers_until` stay. Returns the
/// rows removed and the chains whose prune point moved.
pub async fn prune_before(
    tx: &mut Transaction<'_, Postgres>,
    before: DateTime<Utc>,
    stragglers_until: DateTime<Utc>,
) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "WITH targets AS (
             SELECT chain_id, max(seq) AS last FROM audit_event
             WHERE occurred_at < $1 AND chain_id IS NOT NULL GROUP BY chain_id
         ), anchors AS (
             SELECT e.chain_id, e.seq, e.hash
             FROM audit_event e JOIN targets t ON e.chain_id = t.chain_id AND e.seq = t.last
             WHERE e.occurred_at < $1
         ), mark AS (
             INSERT INTO audit_chain_prune (chain_id, pruned_seq, pruned_hash)
             SELECT chain_id, seq, hash FROM anchors
             ON CONFLICT (chain_id) DO UPDATE
                 SET pruned_seq = EXCLUDED.pruned_seq, pruned_hash = EXCLUDED.pruned_hash,
                     pruned_at = now()
                 WHERE audit_chain_prune.pruned_seq < EXCLUDED.pruned_seq
             RETURNING 1
         ), gone AS (
             DELETE FROM audit_event e
             WHERE e.occurred_at < $2
               AND (e.chain_id IS NULL AND e.occurred_at < $1
                    OR EXISTS (SELECT 1 FROM targets t
                               WHERE t.chain_id = e.chain_id AND e.seq <= t.last))
             RETURNING 1
         )
         SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM mark)",
    )
    .bind(before)
    .bind(stragglers_until)
    .fetch_one(&mut **tx)
    .await
}
