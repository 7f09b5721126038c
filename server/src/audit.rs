//! The group-commit audit writer.
//!
//! Credential requests must not answer before their audit row is committed ("no credential
//! without an audit record"). Committing one row per request would make every request wait
//! for its own fsync; instead, concurrent events queue here and a few workers each take
//! whatever has queued, write it with one multi-row INSERT in one transaction, and then wake
//! every waiting request with the outcome. Under load a batch holds many events, so the
//! cost per request falls as concurrency rises; alone, an event is written at once.
//!
//! Two details keep the batch round trip short:
//!
//! - A batch's INSERT is kept under [`MAX_BATCH_BYTES`], so that it leaves in one write (one
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
//! If the database cannot take a batch, every request in it gets an error (and answers 503
//! without credentials): the writer never drops or delays an event silently.

use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::db::audit::NewEvent;

/// Largest number of events in one INSERT.
const MAX_BATCH: usize = 512;
/// Largest estimated size of one batch's parameters (see [`encoded_size`]): with the rest of
/// the INSERT message it stays below 16 KiB, the most one TLS record carries. An event larger
/// than this on its own is written alone.
const MAX_BATCH_BYTES: usize = 14 * 1024;
/// Queued events beyond this make `record` wait (backpressure), never drop.
const QUEUE: usize = 8192;
/// Batches in flight at once: while one commits, the next one fills.
const WORKERS: usize = 4;
/// How long a worker keeps its connection while no events come (short: closing the pool at
/// shutdown waits for it).
const KEEP_IDLE: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, thiserror::Error)]
#[error("the audit log could not be written: {0}")]
pub struct AuditError(String);

struct Pending {
    event: NewEvent,
    /// [`encoded_size`] of the event.
    size: usize,
    done: oneshot::Sender<Result<(), AuditError>>,
}

/// What the workers take batches from; one worker at a time holds it.
struct Intake {
    receiver: mpsc::Receiver<Pending>,
    /// An event taken from the queue that did not fit into the last batch: the next one
    /// starts with it.
    carried: Option<Pending>,
}

#[derive(Clone)]
pub struct AuditWriter {
    queue: mpsc::Sender<Pending>,
}

impl AuditWriter {
    /// Starts the workers on the current runtime; they stop when every writer is dropped.
    pub fn start(pool: PgPool, write_timeout: Duration) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let intake = Arc::new(Mutex::new(Intake {
            receiver,
            carried: None,
        }));
        for _ in 0..WORKERS {
            tokio::spawn(work(pool.clone(), intake.clone(), write_timeout));
        }
        AuditWriter { queue }
    }

    /// Writes `event` and returns once it is committed.
    pub async fn record(&self, event: NewEvent) -> Result<(), AuditError> {
        let (done, committed) = oneshot::channel();
        let size = encoded_size(&event);
        self.queue
            .send(Pending { event, size, done })
            .await
            .map_err(|_| AuditError("the audit writer has stopped".into()))?;
        committed
            .await
            .map_err(|_| AuditError("the audit writer has stopped".into()))?
    }
}

async fn work(pool: PgPool, intake: Arc<Mutex<Intake>>, write_timeout: Duration) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
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
                match tokio::time::timeout(KEEP_IDLE, gather(&mut intake, &mut batch)).await {
                    Ok(gathered) => gathered,
                    Err(_) => {
                        conn = None;
                        gather(&mut intake, &mut batch).await
                    }
                };
            if !gathered {
                return;
            }
        }
        let events: Vec<&NewEvent> = batch.iter().map(|p| &p.event).collect();
        let write = async {
            let conn = match &mut conn {
                Some(conn) => conn,
                None => conn.insert(pool.acquire().await?),
            };
            insert_batch(conn, &events).await
        };
        let result = match tokio::time::timeout(write_timeout, write).await {
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
        drop(events);
        if result.is_err()
            && let Some(mut failed) = conn.take()
        {
            // It may be broken, or stopped half way through the INSERT: never reused.
            failed.close_on_drop();
        }
        for pending in batch.drain(..) {
            let _ = pending.done.send(result.clone());
        }
    }
}

/// Fills `batch` (empty) with the carried event or the next one queued (waiting for it), then
/// with whatever else is queued while the batch stays within [`MAX_BATCH`] and
/// [`MAX_BATCH_BYTES`]. False when every writer is gone and nothing is left.
async fn gather(intake: &mut Intake, batch: &mut Vec<Pending>) -> bool {
    let first = match intake.carried.take() {
        Some(pending) => pending,
        None => match intake.receiver.recv().await {
            Some(pending) => pending,
            None => return false,
        },
    };
    let mut bytes = first.size;
    batch.push(first);
    while batch.len() < MAX_BATCH {
        let Ok(next) = intake.receiver.try_recv() else {
            break;
        };
        if bytes + next.size > MAX_BATCH_BYTES {
            intake.carried = Some(next);
            break;
        }
        bytes += next.size;
        batch.push(next);
    }
    true
}

/// An upper estimate of the bytes an event adds to the INSERT's parameters: each column's
/// value and its 4-byte length.
fn encoded_size(e: &NewEvent) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    let detail = e.detail.as_ref().map_or(0, |d| {
        let mut counter = Counter(1); // jsonb's version byte
        let _ = serde_json::to_writer(&mut counter, d);
        counter.0
    });
    const COLUMNS: usize = 16;
    const FIXED: usize = COLUMNS * 4 + 16 /* uuid */ + 4 /* int4 */ + 1 /* bool */ + 45 /* ip */;
    FIXED
        + text(&e.request_id)
        + e.actor.len()
        + e.actor_role.map_or(0, str::len)
        + e.action.len()
        + text(&e.customer_id)
        + text(&e.role_name)
        + text(&e.case_id)
        + text(&e.profile)
        + text(&e.user_agent)
        + e.outcome.len()
        + text(&e.error_code)
        + detail
}

/// One INSERT for the whole batch, column arrays unnested into rows.
async fn insert_batch(
    conn: &mut PoolConnection<Postgres>,
    events: &[&NewEvent],
) -> Result<(), sqlx::Error> {
    fn col<'a, T>(events: &[&'a NewEvent], f: impl Fn(&'a NewEvent) -> T) -> Vec<T> {
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
    .bind(col(events, |e| e.request_id.as_deref()))
    .bind(col(events, |e| e.actor.as_str()))
    .bind(col(events, |e| e.actor_role))
    .bind(col(events, |e| e.action))
    .bind(col(events, |e| e.customer_id.as_deref()))
    .bind(col(events, |e| e.role_name.as_deref()))
    .bind(col(events, |e| e.session_id))
    .bind(col(events, |e| e.case_id.as_deref()))
    .bind(col(events, |e| e.profile.as_deref()))
    .bind(col(events, |e| e.source_ip.map(|ip| ip.to_string())))
    .bind(col(events, |e| e.user_agent.as_deref()))
    .bind(col(events, |e| e.outcome))
    .bind(col(events, |e| e.error_code.as_deref()))
    .bind(col(events, |e| e.duration_ms))
    .bind(col(events, |e| e.cache_hit))
    .bind(col(events, |e| e.detail.as_ref()))
    .execute(&mut **conn)
    .await?;
    Ok(())
}
