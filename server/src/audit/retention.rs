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

use crate::db;

/// How much time (of rows, oldest first) one statement removes.
const STEP: TimeDelta = TimeDelta::hours(1);
/// How often the background task prunes.
const EVERY: Duration = Duration::from_secs(3600);
/// Rows stamped up to this much later than the cutoff may still belong to a pruned prefix
/// (the writer's queue wait is bounded by the request timeout).
const STRAGGLERS: TimeDelta = TimeDelta::minutes(10);

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
        let Some(oldest) = db::retention::oldest(pool).await?.filter(|t| *t < cutoff) else {
            return Ok(pruned);
        };
        let step = cutoff.min(oldest + STEP);
        let mut tx = pool.begin().await?;
        if !db::retention::try_lock(&mut tx).await? {
            return Ok(pruned);
        }
        let (rows, chains) = db::retention::prune_before(&mut tx, step, step + STRAGGLERS).await?;
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
