//! Reading `audit_event`: filtered pages in a stable order (newest first by `id`) and
//! exports streamed row by row.
//!
//! Only the existing indexes are used (primary key `id`, `occurred_at`,
//! `(customer_id, occurred_at)`): every index added to `audit_event` slows the credential
//! hot path, which writes a row per request.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use sqlx::{PgPool, Postgres, QueryBuilder};
use tokio::sync::mpsc;
use tracing::Instrument;
use uuid::Uuid;

use crate::domain::Outcome;

/// One audit row as the API shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub id: i64,
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
    /// `host(source_ip)`: the address without a prefix length.
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub outcome: Outcome,
    pub error_code: Option<String>,
    pub duration_ms: Option<i32>,
    pub cache_hit: Option<bool>,
    pub detail: Option<serde_json::Value>,
}

/// Which rows to read; `None` means "any". Every condition must hold.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// `occurred_at >= from`.
    pub from: Option<DateTime<Utc>>,
    /// `occurred_at < to` (half-open with `from`).
    pub to: Option<DateTime<Utc>>,
    pub actor: Option<String>,
    pub customer: Option<String>,
    pub case_id: Option<String>,
    pub session: Option<Uuid>,
    pub action: Option<String>,
    pub outcome: Option<Outcome>,
    /// Only rows of these customers (customer-limited tokens); rows without a customer are
    /// then left out too.
    pub customers: Option<Vec<String>>,
    /// Only rows older than this id: the position a cursor points at.
    pub before_id: Option<i64>,
    /// Only rows up to this id: the [`settled_horizon`] of a listing's first page.
    pub max_id: Option<i64>,
    /// At most this many rows; `None` for all (exports).
    pub limit: Option<i64>,
}

/// Builds the one SELECT both reads use: newest first by `id`, which is unique and never
/// changes, so that `id < cursor` continues a listing exactly where it stopped.
fn select(filter: &Filter) -> QueryBuilder<Postgres> {
    let mut q = QueryBuilder::new(
        "SELECT id, occurred_at, request_id, actor, actor_role, action, customer_id, role_name,
                session_id, case_id, profile, host(source_ip) AS source_ip, user_agent, outcome,
                error_code, duration_ms, cache_hit, detail
         FROM audit_event WHERE true",
    );
    if let Some(from) = filter.from {
        q.push(" AND occurred_at >= ").push_bind(from);
    }
    if let Some(to) = filter.to {
        q.push(" AND occurred_at < ").push_bind(to);
    }
    if let Some(actor) = &filter.actor {
        q.push(" AND actor = ").push_bind(actor.as_str());
    }
    if let Some(customer) = &filter.customer {
        q.push(" AND customer_id = ").push_bind(customer.as_str());
    }
    if let Some(customers) = &filter.customers {
        q.push(" AND customer_id = ANY(")
            .push_bind(customers.as_slice())
            .push(")");
    }
    if let Some(case_id) = &filter.case_id {
        q.push(" AND case_id = ").push_bind(case_id.as_str());
    }
    if let Some(session) = filter.session {
        q.push(" AND session_id = ").push_bind(session);
    }
    if let Some(action) = &filter.action {
        q.push(" AND action = ").push_bind(action.as_str());
    }
    if let Some(outcome) = filter.outcome {
        q.push(" AND outcome = ").push_bind(outcome);
    }
    if let Some(before) = filter.before_id {
        q.push(" AND id < ").push_bind(before);
    }
    if let Some(max) = filter.max_id {
        q.push(" AND id <= ").push_bind(max);
    }
    q.push(" ORDER BY id DESC");
    if let Some(limit) = filter.limit {
        q.push(" LIMIT ").push_bind(limit);
    }
    q
}

/// The newest id below which every row is settled: committed (and visible) or rolled back.
///
/// Ids are drawn from the sequence when a row is inserted, not when its transaction
/// commits, so a listing that simply started from the newest visible row could pass over an
/// older id still committing, and a cursor walk would never come back to it. Every
/// transaction that draws an id holds `RowExclusiveLock` on `audit_event` from before it
/// draws the id until it ends, so: read the last id handed out, then wait for the
/// transactions holding that lock at that moment to end. Rows inserted since are newer
/// than the horizon and show up in the next listing. Neither step blocks writers.
///
/// If those transactions have not ended after `max_wait` (a stuck writer), the horizon is
/// returned anyway and a warning logged: an answer beats none, and an event still
/// committing then may be missed by this walk (it stays in the table).
#[tracing::instrument(skip_all)]
pub async fn settled_horizon(pool: &PgPool, max_wait: Duration) -> Result<i64, sqlx::Error> {
    let last: Option<i64> = sqlx::query_scalar(
        "SELECT pg_sequence_last_value(pg_get_serial_sequence('audit_event', 'id')::regclass)",
    )
    .fetch_one(pool)
    .await?;
    let Some(last) = last else {
        // No id was ever drawn.
        return Ok(0);
    };
    // Relation OIDs are per database: name this one, or another database's table counts.
    const WRITERS: &str = "FROM pg_locks WHERE locktype = 'relation'
        AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND relation = 'audit_event'::regclass AND mode = 'RowExclusiveLock' AND granted";
    let writers: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT virtualtransaction {WRITERS}"
    )))
    .fetch_all(pool)
    .await?;
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    let mut waiting = writers;
    while !waiting.is_empty() {
        if started.elapsed() >= max_wait {
            tracing::warn!(
                transactions = waiting.len(),
                "audit writers did not finish in time; listing without waiting for them"
            );
            break;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
        waiting = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT virtualtransaction {WRITERS} AND virtualtransaction = ANY($1)"
        )))
        .bind(&waiting)
        .fetch_all(pool)
        .await?;
    }
    Ok(last)
}

/// One page of matching rows, newest first.
#[tracing::instrument(skip_all)]
pub async fn page(pool: &PgPool, filter: &Filter) -> Result<Vec<EventRow>, sqlx::Error> {
    select(filter).build_query_as().fetch_all(pool).await
}

/// Every matching row, newest first, read from one query (one snapshot) as the database
/// sends them. Rows arrive through a small bounded channel, so memory stays flat however
/// many rows match: the reader is held back until the receiver takes more. Dropping the
/// receiver stops the query and returns its connection to the pool.
pub fn export(pool: PgPool, filter: Filter) -> mpsc::Receiver<Result<EventRow, sqlx::Error>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(
        async move {
            let mut query = select(&filter);
            let mut rows = query.build_query_as::<EventRow>().fetch(&pool);
            loop {
                let next = tokio::select! {
                    // The client went away: stop reading at once, even in a slow scan.
                    () = tx.closed() => break,
                    next = rows.next() => next,
                };
                let Some(row) = next else { break };
                let failed = row.is_err();
                if tx.send(row).await.is_err() || failed {
                    break;
                }
            }
        }
        .instrument(tracing::Span::current()),
    );
    rx
}

impl From<EventRow> for lanyard_api::audit::AuditEvent {
    fn from(row: EventRow) -> Self {
        lanyard_api::audit::AuditEvent {
            id: row.id,
            occurred_at: row.occurred_at,
            request_id: row.request_id,
            actor: row.actor,
            actor_role: row.actor_role,
            action: row.action,
            customer: row.customer_id,
            role: row.role_name,
            session_id: row.session_id,
            case_id: row.case_id,
            profile: row.profile,
            source_ip: row.source_ip,
            user_agent: row.user_agent,
            outcome: row.outcome,
            error_code: row.error_code,
            duration_ms: row.duration_ms,
            cache_hit: row.cache_hit,
            detail: row.detail,
        }
    }
}
