//! Audit retention: deleting rows older than the configured age without breaking the hash
//! chains.
//!
//! A chain can only lose a prefix: for each chain, the rows up to the newest one that is
//! older than the cutoff are deleted, and that row's `seq` and `hash` are recorded in
//! `audit_chain_prune` in the same statement, so `audit verify` starts from there. (A row
//! may be a few seconds younger than a row before it in its chain, since it is stamped
//! before it waits in the writer's queue; such a row goes with the prefix.) Each statement
//! removes one [`STEP`] of rows, oldest first, so that none holds the table for long. The
//! usage rollups are not touched: reports over pruned days still answer.
//!
//! One instance at a time prunes (a transaction-level advisory lock; the others skip).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::PgPool;

/// How much time (of rows, oldest first) one statement removes.
const STEP: TimeDelta = TimeDelta::hours(1);
/// How often the background task prunes.
const EVERY: Duration = Duration::from_secs(3600);
/// Rows stamped up to this much later than the cutoff may still belong to a pruned prefix
/// (the writer's queue wait is bounded by the request timeout).
const STRAGGLERS: TimeDelta = TimeDelta::minutes(10);
/// `pg_try_advisory_xact_lock` key: "lanyard audit retention".
const LOCK_KEY: i64 = 0x6c61_6e79_6172_6401;

/// What one pruning pass removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub rows: u64,
    pub chains: usize,
}

/// Deletes the audit rows older than `cutoff` (whole chain prefixes, see the module docs),
/// an hour of rows per statement, oldest first. Another instance pruning at the same time
/// makes this pass stop early.
pub async fn prune(pool: &PgPool, cutoff: DateTime<Utc>) -> Result<Pruned, sqlx::Error> {
    let mut pruned = Pruned::default();
    loop {
        let oldest: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT min(occurred_at) FROM audit_event")
                .fetch_one(pool)
                .await?;
        let Some(oldest) = oldest.filter(|t| *t < cutoff) else {
            return Ok(pruned);
        };
        let step = cutoff.min(oldest + STEP);
        let mut tx = pool.begin().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(LOCK_KEY)
            .fetch_one(&mut *tx)
            .await?;
        if !locked {
            return Ok(pruned);
        }
        // Per chain, the last seq to remove (the newest row older than `step`) and that
        // row's hash, recorded as the chain's prune point; then the chains' prefixes and the
        // unchained rows older than `step`.
        let (rows, chains): (i64, i64) = sqlx::query_as(
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
        .bind(step)
        .bind(step + STRAGGLERS)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        pruned.rows += rows as u64;
        pruned.chains += chains as usize;
        if step >= cutoff {
            return Ok(pruned);
        }
    }
}

/// Prunes rows older than `retention`, now and then every hour, until the process ends.
pub fn spawn(pool: PgPool, retention: TimeDelta) {
    tokio::spawn(async move {
        loop {
            match prune(&pool, Utc::now() - retention).await {
                Ok(p) if p.rows > 0 => {
                    tracing::info!(rows = p.rows, chains = p.chains, "pruned old audit rows")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "audit retention pass failed; will retry"),
            }
            tokio::time::sleep(EVERY).await;
        }
    });
}
