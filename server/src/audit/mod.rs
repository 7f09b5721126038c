//! The group-commit audit writer.
//!
//! Credential requests must not answer before their audit row is committed ("no credential
//! without an audit record"). Committing one row per request would make every request wait
//! for its own fsync; instead, concurrent events queue here and a worker takes
//! whatever has queued, writes it with one multi-row INSERT in one transaction, and then
//! wakes every waiting request with the outcome. Under load a batch holds many events, so the
//! cost per request falls as concurrency rises; alone, an event is written at once.
//!
//! Two details keep the batch round trip short:
//!
//! - A batch's INSERT is kept under [`batch::MAX_BATCH_BYTES`], so that it leaves in one write (one
//!   TLS record when the database connection uses TLS). sqlx 0.9 does not set `TCP_NODELAY`
//!   on its sockets, and it writes a larger message as several TLS records, one `send` each:
//!   Nagle's algorithm then holds the last part back until Postgres acknowledges the first,
//!   and Postgres, still waiting for the rest of the message, delays that acknowledgement by
//!   its delayed-ACK timer (~40 ms). Every request in such a batch waited ~50 ms.
//! - While events keep coming, a worker keeps its pooled connection from one batch to the
//!   next instead of returning and re-acquiring it (each acquire pings the connection, a
//!   round trip of its own); it hands the connection back after [`KEEP_IDLE`] without
//!   events, and closes it after any failure.
//!
//! Each worker owns a hash chain (see [`chain`]): it numbers and hashes its rows in the order
//! it writes them, and the same statement that inserts a batch moves the chain's head and
//! folds the batch's credential requests into the usage rollups
//! ([`crate::db::usage`]), so that rows, chain and rollups commit or fail together. After
//! any failure the worker starts a new chain: whether a timed-out batch committed is not
//! known, and a chain must never fork.
//!
//! If the database cannot take a batch, every request in it gets an error (and answers 503
//! without credentials): the writer never drops or delays an event silently.

use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::auth::Principal;
use crate::db;
use crate::db::audit::{BatchRow, Head, NewEvent};

use crate::metrics::Metrics;
use batch::{Intake, MAX_BATCH, Pending, encoded_size, gather};

mod batch;
pub mod chain;
pub mod export;
pub mod retention;

/// Queued events beyond this make `record` wait (backpressure), never drop.
const QUEUE: usize = 8192;
/// Batches in flight at once. While one commits, the next one fills; more than one worker
/// only made the batches smaller and had them wait on each other's locks on the rollup rows
/// and chain heads they share (bench, 2 CPUs: 1 worker 15,000 req/s, p99 8 ms; 4 workers
/// 10,000 req/s, p99 13 ms).
const WORKERS: usize = 1;
/// How long a worker keeps its connection while no events come (short: closing the pool at
/// shutdown waits for it).
const KEEP_IDLE: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, thiserror::Error)]
#[error("the audit log could not be written: {0}")]
pub struct AuditError(String);

#[derive(Clone)]
pub struct AuditWriter {
    queue: mpsc::Sender<Pending>,
}

impl AuditWriter {
    /// Starts the workers on the current runtime; they stop when every writer is dropped.
    pub fn start(pool: PgPool, write_timeout: Duration, metrics: Metrics) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let intake = Arc::new(Mutex::new(Intake {
            receiver,
            carried: None,
        }));
        // The host name names the chain's writer (HOSTNAME is often not exported).
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        for n in 0..WORKERS {
            let writer = format!("{host}/{}/{n}", std::process::id());
            tokio::spawn(work(
                pool.clone(),
                intake.clone(),
                write_timeout,
                metrics.clone(),
                Worker {
                    writer,
                    chain: None,
                },
            ));
        }
        AuditWriter { queue }
    }

    /// A writer that writes nothing and answers every event at once, through the same queue
    /// and wake-up as the real one: the audit-off benchmark (`tests/bench P3`) measures the
    /// credential path with it. Only in builds with the `bench-unaudited` feature, which
    /// nothing but the benchmark enables; no setting reaches it.
    #[cfg(feature = "bench-unaudited")]
    pub fn discarding() -> Self {
        let (queue, mut receiver) = mpsc::channel::<Pending>(QUEUE);
        tokio::spawn(async move {
            while let Some(pending) = receiver.recv().await {
                let _ = pending.done.send(Ok(()));
            }
        });
        AuditWriter { queue }
    }

    /// Writes `event` (with a group of others) and returns once it is committed.
    pub async fn record(&self, event: NewEvent) -> Result<(), AuditError> {
        let (done, committed) = oneshot::channel();
        let size = encoded_size(&event);
        let occurred_at = chain::now();
        self.queue
            .send(Pending {
                event,
                occurred_at,
                size,
                done,
            })
            .await
            .map_err(|_| AuditError("the audit writer has stopped".into()))?;
        committed
            .await
            .map_err(|_| AuditError("the audit writer has stopped".into()))?
    }
}

/// A worker's identity and the head of the chain it writes.
struct Worker {
    /// `host/pid/worker`, recorded with each chain it starts.
    writer: String,
    chain: Option<ChainHead>,
}

#[derive(Clone, Copy)]
struct ChainHead {
    id: uuid::Uuid,
    head: Head,
}

async fn work(
    pool: PgPool,
    intake: Arc<Mutex<Intake>>,
    write_timeout: Duration,
    metrics: Metrics,
    mut worker: Worker,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // The size of the batch before, which the next one tries to reach (see `gather`).
    let mut last_len = 0;
    // Kept from one batch to the next while events keep coming (see `KEEP_IDLE`).
    let mut conn: Option<PoolConnection<Postgres>> = None;
    loop {
        {
            // One worker at a time gathers a batch: the first event it waits for, then
            // whatever else is already queued, up to the size limits. A worker that waits
            // longer than `KEEP_IDLE` (for the intake or for events) first hands its
            // connection back to the pool.
            let mut intake = match tokio::time::timeout(KEEP_IDLE, intake.lock()).await {
                Ok(intake) => intake,
                Err(_) => {
                    conn = None;
                    intake.lock().await
                }
            };
            let gathered =
                match tokio::time::timeout(KEEP_IDLE, gather(&mut intake, &mut batch, last_len))
                    .await
                {
                    Ok(gathered) => gathered,
                    Err(_) => {
                        conn = None;
                        gather(&mut intake, &mut batch, last_len).await
                    }
                };
            if !gathered {
                return;
            }
        }
        let write = async {
            let conn = match &mut conn {
                Some(conn) => conn,
                None => conn.insert(pool.acquire().await?),
            };
            let head = match worker.chain {
                Some(head) => head,
                None => {
                    let id = uuid::Uuid::now_v7();
                    db::audit::start_chain(conn, id, &worker.writer).await?;
                    ChainHead {
                        id,
                        head: Head {
                            seq: 0,
                            hash: chain::GENESIS,
                        },
                    }
                }
            };
            worker.chain = Some(head);
            write_batch(conn, &batch, head).await
        };
        let started = std::time::Instant::now();
        let result = match tokio::time::timeout(write_timeout, write).await {
            Ok(Ok(head)) => {
                worker.chain = Some(head);
                metrics.observe_audit_batch(batch.len(), started.elapsed().as_secs_f64());
                Ok(())
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, events = batch.len(), "audit batch failed");
                Err(AuditError("database error".into()))
            }
            Err(_) => {
                tracing::error!(events = batch.len(), "audit batch timed out");
                Err(AuditError("database timeout".into()))
            }
        };
        if result.is_err() {
            // Whether the batch committed is unknown: the next batch starts a new chain.
            worker.chain = None;
            if let Some(mut failed) = conn.take() {
                // It may be broken, or stopped half way through the INSERT: never reused.
                failed.close_on_drop();
            }
        }
        last_len = batch.len();
        for pending in batch.drain(..) {
            let _ = pending.done.send(result.clone());
        }
    }
}

/// Numbers and hashes the batch's rows after `head` and writes them in one statement (see
/// `db::audit::insert_batch`); returns the chain's new head.
async fn write_batch(
    conn: &mut PoolConnection<Postgres>,
    batch: &[Pending],
    chain: ChainHead,
) -> Result<ChainHead, sqlx::Error> {
    let mut head = chain.head;
    let mut rows = Vec::with_capacity(batch.len());
    for pending in batch {
        head.seq += 1;
        head.hash = chain::hash(
            &head.hash,
            head.seq,
            &chain::content(&pending.event, pending.occurred_at),
        );
        rows.push(BatchRow {
            event: &pending.event,
            occurred_at: pending.occurred_at,
            seq: head.seq,
            hash: head.hash,
        });
    }
    db::audit::insert_batch(conn, chain.id, &rows).await?;
    Ok(ChainHead { id: chain.id, head })
}

/// Writes one administrative event inside the caller's transaction, on the shared
/// administrative chain (see [`chain::ADMIN_CHAIN`]): the chain's head stays locked until the
/// transaction ends, which serialises the (rare) administrative events of every instance, and
/// the event commits or rolls back with the change it records.
pub async fn record_in(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    event: &NewEvent,
) -> Result<(), sqlx::Error> {
    let prev = db::audit::lock_head(tx, chain::ADMIN_CHAIN).await?;
    let occurred_at = chain::now();
    let seq = prev.seq + 1;
    let hash = chain::hash(&prev.hash, seq, &chain::content(event, occurred_at));
    db::audit::insert_one(
        tx,
        event,
        occurred_at,
        chain::ADMIN_CHAIN,
        Head { seq, hash },
    )
    .await
}

/// Who sent a request and from where: what every audit row of the request carries.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub request_id: Option<String>,
    pub source_ip: Option<std::net::IpAddr>,
    pub user_agent: Option<String>,
}

impl Context {
    /// A successful `action` of `principal` in this request; the caller fills in the rest.
    pub fn event(&self, principal: &Principal, action: &'static str) -> NewEvent {
        NewEvent {
            request_id: self.request_id.clone(),
            actor_role: Some(principal.role.as_str()),
            source_ip: self.source_ip,
            user_agent: self.user_agent.clone(),
            ..NewEvent::success(principal.actor(), action)
        }
    }
}
