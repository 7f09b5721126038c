//! The group-commit audit writer.
//!
//! Credential requests must not answer before their audit row is committed ("no credential
//! without an audit record"). Committing one row per request would make every request wait
//! for its own fsync; instead, concurrent events queue here and a few workers each take
//! whatever has queued, write it with one multi-row INSERT in one transaction, and then wake
//! every waiting request with the outcome. Under load a batch holds many events, so the
//! cost per request falls as concurrency rises; alone, an event is written at once.
//!
//! If the database cannot take a batch, every request in it gets an error (and answers 503
//! without credentials): the writer never drops or delays an event silently.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::db::audit::NewEvent;

/// Largest number of events in one INSERT.
const MAX_BATCH: usize = 512;
/// Queued events beyond this make `record` wait (backpressure), never drop.
const QUEUE: usize = 8192;
/// Batches in flight at once: while one commits, the next one fills.
const WORKERS: usize = 4;

#[derive(Debug, Clone, thiserror::Error)]
#[error("the audit log could not be written: {0}")]
pub struct AuditError(String);

struct Pending {
    event: NewEvent,
    done: oneshot::Sender<Result<(), AuditError>>,
}

#[derive(Clone)]
pub struct AuditWriter {
    queue: mpsc::Sender<Pending>,
}

impl AuditWriter {
    /// Starts the workers on the current runtime; they stop when every writer is dropped.
    pub fn start(pool: PgPool, write_timeout: Duration) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..WORKERS {
            tokio::spawn(work(pool.clone(), receiver.clone(), write_timeout));
        }
        AuditWriter { queue }
    }

    /// Writes `event` and returns once it is committed.
    pub async fn record(&self, event: NewEvent) -> Result<(), AuditError> {
        let (done, committed) = oneshot::channel();
        self.queue
            .send(Pending { event, done })
            .await
            .map_err(|_| AuditError("the audit writer has stopped".into()))?;
        committed
            .await
            .map_err(|_| AuditError("the audit writer has stopped".into()))?
    }
}

async fn work(
    pool: PgPool,
    receiver: Arc<Mutex<mpsc::Receiver<Pending>>>,
    write_timeout: Duration,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        {
            // One worker at a time gathers a batch: the first event it waits for, then
            // whatever else is already queued.
            let mut receiver = receiver.lock().await;
            if receiver.recv_many(&mut batch, MAX_BATCH).await == 0 {
                return;
            }
        }
        let events: Vec<&NewEvent> = batch.iter().map(|p| &p.event).collect();
        let result = match tokio::time::timeout(write_timeout, insert_batch(&pool, &events)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::error!(error = %e, events = batch.len(), "audit batch failed");
                Err(AuditError("database error".into()))
            }
            Err(_) => {
                tracing::error!(events = batch.len(), "audit batch timed out");
                Err(AuditError("database timeout".into()))
            }
        };
        for pending in batch.drain(..) {
            let _ = pending.done.send(result.clone());
        }
    }
}

/// One INSERT for the whole batch, column arrays unnested into rows.
async fn insert_batch(pool: &PgPool, events: &[&NewEvent]) -> Result<(), sqlx::Error> {
    fn col<T>(events: &[&NewEvent], f: impl Fn(&NewEvent) -> T) -> Vec<T> {
        events.iter().map(|e| f(e)).collect()
    }
    sqlx::query(
        "INSERT INTO audit_event (request_id, actor, actor_role, action, customer_id, role_name,
                                  session_id, case_id, profile, source_ip, user_agent, outcome,
                                  error_code, duration_ms, cache_hit, detail)
         SELECT r, a, ar, ac, c, rn, s, ca, p, ip::inet, ua, o, ec, d, ch, dt
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::uuid[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
                     $13::text[], $14::int4[], $15::bool[], $16::jsonb[])
              AS t(r, a, ar, ac, c, rn, s, ca, p, ip, ua, o, ec, d, ch, dt)",
    )
    .bind(col(events, |e| e.request_id.clone()))
    .bind(col(events, |e| e.actor.clone()))
    .bind(col(events, |e| e.actor_role.map(str::to_owned)))
    .bind(col(events, |e| e.action.to_owned()))
    .bind(col(events, |e| e.customer_id.clone()))
    .bind(col(events, |e| e.role_name.clone()))
    .bind(col(events, |e| e.session_id))
    .bind(col(events, |e| e.case_id.clone()))
    .bind(col(events, |e| e.profile.clone()))
    .bind(col(events, |e| e.source_ip.map(|ip| ip.to_string())))
    .bind(col(events, |e| e.user_agent.clone()))
    .bind(col(events, |e| e.outcome.to_owned()))
    .bind(col(events, |e| e.error_code.clone()))
    .bind(col(events, |e| e.duration_ms))
    .bind(col(events, |e| e.cache_hit))
    .bind(col(events, |e| e.detail.clone()))
    .execute(pool)
    .await?;
    Ok(())
}
