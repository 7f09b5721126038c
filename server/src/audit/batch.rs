//! How the writer forms a batch: the events it takes from the queue, within the size that
//! keeps one batch's statement in one write (see the `audit` module), and, under load, a short
//! wait to fill it.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::AuditError;
use crate::db::audit::NewEvent;

/// What a batch's Bind message holds besides its events' values: 19 array headers (20
/// bytes each), 3 scalar parameters with their lengths, the statement name and the
/// message framing (Bind, Execute, Sync).
const FIXED_BYTES: usize = 19 * 20 + 3 * 4 + 8 + 32 + 32 + 128;
/// Largest number of events in one INSERT.
pub(super) const MAX_BATCH: usize = 512;
/// Largest estimated size of one batch's parameters (see [`encoded_size`]): with the rest of
/// the INSERT message it stays below 16 KiB, the most one TLS record carries. An event larger
/// than this on its own is written alone.
pub(super) const MAX_BATCH_BYTES: usize = 14 * 1024;
/// Under load, a batch smaller than the one before waits at most this long for more events
/// (see [`gather`]).
const FILL_WAIT: Duration = Duration::from_millis(1);
/// ... when the batch before held at least this many: under load, not when events are rare.
const FILL_FROM: usize = 8;

/// An event waiting for its batch to commit, and whom to tell.
pub(super) struct Pending {
    pub(super) event: NewEvent,
    pub(super) occurred_at: chrono::DateTime<chrono::Utc>,
    /// [`encoded_size`] of the event.
    pub(super) size: usize,
    pub(super) done: oneshot::Sender<Result<(), AuditError>>,
}

/// What the workers take batches from; one worker at a time holds it.
pub(super) struct Intake {
    pub(super) receiver: mpsc::Receiver<Pending>,
    /// An event taken from the queue that did not fit into the last batch: the next one
    /// starts with it.
    pub(super) carried: Option<Pending>,
}

/// Fills `batch` (empty) with the carried event or the next one queued (waiting for it), then
/// with whatever else is queued while the batch stays within [`MAX_BATCH`] and
/// [`MAX_BATCH_BYTES`]. False when every writer is gone and nothing is left.
///
/// Under load (the batch before, `last_len` events, held at least [`FILL_FROM`]), a batch
/// smaller than the one before waits up to [`FILL_WAIT`] for more: a batch's statement has a
/// fixed cost in Postgres (its commit and the rollup upserts, a third of a 28-row batch's
/// cost, `tests/bench L`), so when the same load is shared by more instances (each of whose
/// batches would otherwise shrink), fuller batches keep the cost per row, and the database's
/// CPU, down. When events are rare, nothing waits.
pub(super) async fn gather(intake: &mut Intake, batch: &mut Vec<Pending>, last_len: usize) -> bool {
    let first = match intake.carried.take() {
        Some(pending) => pending,
        None => match intake.receiver.recv().await {
            Some(pending) => pending,
            None => return false,
        },
    };
    let mut bytes = FIXED_BYTES + first.size;
    batch.push(first);
    let target = if last_len >= FILL_FROM {
        last_len.min(MAX_BATCH)
    } else {
        0
    };
    let deadline = tokio::time::Instant::now() + FILL_WAIT;
    while batch.len() < MAX_BATCH {
        let next = match intake.receiver.try_recv() {
            Ok(next) => next,
            Err(_) if batch.len() < target => {
                match tokio::time::timeout_at(deadline, intake.receiver.recv()).await {
                    Ok(Some(next)) => next,
                    _ => break,
                }
            }
            Err(_) => break,
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
pub(super) fn encoded_size(e: &NewEvent) -> usize {
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
    const COLUMNS: usize = 19;
    const FIXED: usize = COLUMNS * 4 + 8 /* time */ + 16 /* uuid */ + 4 /* int4 */ + 1 /* bool */
        + 45 /* ip */ + 8 /* seq */ + 32 /* hash */;
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
        + e.outcome.as_str().len()
        + text(&e.error_code)
        + detail
}
