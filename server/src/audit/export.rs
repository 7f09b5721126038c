//! Audit exports: every matching audit row, streamed to a client that may read slowly, or
//! not at all.
//!
//! An export holds a database connection (one query, one snapshot) for as long as its client
//! reads, and the pool must keep serving credential requests, so an instance runs a few
//! exports at a time ([`SLOTS`]); further exports wait for a turn. A client that stops
//! reading must not keep its turn for ever: each export has a total time and an idle write
//! time, and when either runs out the export is cut off, its slot and its connection are
//! released, and `lanyard_audit_exports_cut_total{reason}` counts it. The client then sees a
//! truncated transfer (the chunked body ends without its last chunk), never a short file
//! that looks complete.
//!
//! Rows pass through a relay task: database → relay (renders rows into chunks, enforces both
//! limits) → a one-chunk channel → the HTTP body. The channel is what makes a stalled client
//! visible: the HTTP server polls the body only when the socket takes more bytes, so the
//! relay's send waits exactly while the client does not read.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use futures::Stream;
use sqlx::PgPool;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;

use crate::db::audit_query::{self, EventRow, Filter};
use crate::metrics::{ExportCut, Metrics};

/// Exports running at once on one instance.
pub const SLOTS: usize = 2;
/// Rows rendered into one chunk when the database has them ready.
const ROWS_PER_CHUNK: usize = 256;

/// Appends one rendered row to the chunk being built.
pub type Render = Box<dyn FnMut(EventRow, &mut Vec<u8>) -> std::io::Result<()> + Send>;

/// The export slots of one instance and the limits every export runs under.
pub struct Exports {
    slots: Arc<Semaphore>,
    /// Longest wait for the client to take the next chunk.
    idle: Duration,
    /// Longest time one export may take, start to end.
    max: Duration,
    metrics: Metrics,
}

impl Exports {
    pub fn new(idle: Duration, max: Duration, metrics: Metrics) -> Self {
        Exports {
            slots: Arc::new(Semaphore::new(SLOTS)),
            idle,
            max,
            metrics,
        }
    }

    /// Waits for a slot, starts the query and waits for its first answer, so that a database
    /// that is down gives an error (503) rather than a broken 200. The caller's request
    /// timeout bounds the wait for a slot. `header` goes out first (the CSV header row).
    pub async fn start(
        &self,
        pool: PgPool,
        filter: Filter,
        header: Option<Bytes>,
        render: Render,
    ) -> Result<impl Stream<Item = std::io::Result<Bytes>> + Send + 'static, sqlx::Error> {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let mut rows = audit_query::export(pool, filter);
        let first = match rows.recv().await {
            Some(Err(e)) => return Err(e),
            Some(Ok(row)) => Some(row),
            None => None,
        };
        let (tx, rx) = mpsc::channel(1);
        let complete = Arc::new(AtomicBool::new(false));
        let relay = Relay {
            _permit: permit,
            rows,
            render,
            tx,
            complete: complete.clone(),
            idle: self.idle,
            deadline: Instant::now() + self.max,
            metrics: self.metrics.clone(),
        };
        tokio::spawn(relay.run(header, first));
        Ok(futures::stream::unfold(
            (rx, complete),
            |(mut rx, complete)| async move {
                match rx.recv().await {
                    Some(chunk) => Some((Ok(chunk), (rx, complete))),
                    // The relay stopped: at the end of the rows, or cut off (then the body is
                    // aborted, so the client cannot take a part for the whole).
                    None if complete.load(Ordering::Acquire) => None,
                    None => Some((
                        Err(std::io::Error::other("audit export cut off")),
                        (rx, complete),
                    )),
                }
            },
        ))
    }
}

struct Relay {
    /// The export's slot, released when the relay ends, whatever ends it.
    _permit: OwnedSemaphorePermit,
    rows: mpsc::Receiver<Result<EventRow, sqlx::Error>>,
    render: Render,
    tx: mpsc::Sender<Bytes>,
    complete: Arc<AtomicBool>,
    idle: Duration,
    deadline: Instant,
    metrics: Metrics,
}

enum Next {
    Chunk(Vec<u8>),
    End,
    Stop,
}

impl Relay {
    async fn run(mut self, header: Option<Bytes>, first: Option<EventRow>) {
        let _running = self.metrics.export_running();
        if let Some(header) = header
            && !self.send(header.to_vec()).await
        {
            return;
        }
        let mut first = first;
        loop {
            let next = match first.take() {
                Some(row) => self.chunk(row),
                None => self.next_chunk().await,
            };
            match next {
                Next::Chunk(chunk) => {
                    if !self.send(chunk).await {
                        return;
                    }
                }
                Next::Stop => return,
                Next::End => break,
            }
        }
        self.complete.store(true, Ordering::Release);
    }

    /// The next row, and whatever else the database has ready, rendered.
    async fn next_chunk(&mut self) -> Next {
        match tokio::time::timeout_at(self.deadline, self.rows.recv()).await {
            Err(_) => self.cut(ExportCut::Deadline),
            Ok(None) => Next::End,
            Ok(Some(Err(e))) => {
                tracing::error!(error = %e, "audit export failed part-way; body aborted");
                Next::Stop
            }
            Ok(Some(Ok(row))) => self.chunk(row),
        }
    }

    /// `first` and up to [`ROWS_PER_CHUNK`] - 1 more rows the database has already sent,
    /// rendered into one chunk.
    fn chunk(&mut self, first: EventRow) -> Next {
        let mut out = Vec::with_capacity(ROWS_PER_CHUNK * 256);
        let mut row = first;
        for taken in 1..=ROWS_PER_CHUNK {
            if let Err(e) = (self.render)(row, &mut out) {
                tracing::error!(error = %e, "rendering an audit row failed; body aborted");
                return Next::Stop;
            }
            if taken == ROWS_PER_CHUNK {
                break;
            }
            row = match self.rows.try_recv() {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "audit export failed part-way; body aborted");
                    return Next::Stop;
                }
                Err(_) => break,
            };
        }
        Next::Chunk(out)
    }

    /// Hands a chunk to the HTTP body; false when the export must stop (client gone, or a
    /// limit ran out).
    async fn send(&mut self, chunk: Vec<u8>) -> bool {
        let now = Instant::now();
        if now >= self.deadline {
            self.cut(ExportCut::Deadline);
            return false;
        }
        let wait = self.idle.min(self.deadline - now);
        match tokio::time::timeout(wait, self.tx.send(Bytes::from(chunk))).await {
            Ok(Ok(())) => true,
            // The client went away: nothing to count.
            Ok(Err(_)) => false,
            Err(_) => {
                let reason = if Instant::now() >= self.deadline {
                    ExportCut::Deadline
                } else {
                    ExportCut::Idle
                };
                self.cut(reason);
                false
            }
        }
    }

    fn cut(&self, reason: ExportCut) -> Next {
        self.metrics.export_cut(reason);
        tracing::warn!(
            reason = reason.as_str(),
            idle_secs = self.idle.as_secs(),
            "audit export cut off: the client did not read it in time; its slot is free again"
        );
        Next::Stop
    }
}
