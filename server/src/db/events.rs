//! `event_outbox` and `webhook_delivery`: events written with the change they describe, and
//! the state of their delivery to each webhook.

use chrono::{DateTime, Utc};
use lanyard_api::events::{Delivery, WebhookStatus};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::DeliveryState;

/// Writes one event and a pending delivery for each webhook in `webhooks`.
#[tracing::instrument(skip_all, fields(event = kind))]
pub async fn insert(
    conn: &mut PgConnection,
    event_id: Uuid,
    kind: &str,
    ordering_key: &str,
    session_id: Option<Uuid>,
    payload: &serde_json::Value,
    webhooks: &[&str],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH e AS (
             INSERT INTO event_outbox (event_id, type, ordering_key, session_id, payload)
             VALUES ($1, $2, $3, $4, $5) RETURNING id)
         INSERT INTO webhook_delivery (event, webhook, ordering_key)
         SELECT e.id, w, $3 FROM e, unnest($6::text[]) AS w",
    )
    .bind(event_id)
    .bind(kind)
    .bind(ordering_key)
    .bind(session_id)
    .bind(payload)
    .bind(webhooks)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes events older than `days` that no webhook still waits for (their deliveries go
/// with them); returns how many.
pub async fn prune(pool: &PgPool, days: i32) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM event_outbox o
         WHERE o.created_at < now() - make_interval(days => $1)
           AND NOT EXISTS (SELECT 1 FROM webhook_delivery d
                           WHERE d.event = o.id AND d.state = 'pending')",
    )
    .bind(days)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// A delivery an instance took on.
#[derive(Debug, sqlx::FromRow)]
pub struct Claimed {
    pub id: i64,
    /// The lease taken: results are recorded only while it is still this one (a delivery
    /// whose lease ran out belongs to whichever instance took it over).
    pub leased_until: DateTime<Utc>,
    pub webhook: String,
    pub attempts: i32,
    pub event_id: Uuid,
    pub kind: String,
    pub payload: serde_json::Value,
}

/// Takes up to `limit` due deliveries of `webhooks` for `lease_secs`: for each webhook and
/// ordering key only the oldest undelivered one, so that a receiver sees one session's
/// events in order; rows another instance holds are skipped.
#[tracing::instrument(skip_all)]
pub async fn claim(
    pool: &PgPool,
    webhooks: &[String],
    limit: i64,
    lease_secs: f64,
) -> Result<Vec<Claimed>, sqlx::Error> {
    sqlx::query_as(
        "WITH due AS (
             SELECT d.id FROM webhook_delivery d
             WHERE d.state = 'pending' AND d.next_attempt_at <= now()
               AND (d.leased_until IS NULL OR d.leased_until < now())
               AND d.webhook = ANY($1)
               AND NOT EXISTS (
                   SELECT 1 FROM webhook_delivery e
                   WHERE e.webhook = d.webhook AND e.ordering_key = d.ordering_key
                     AND e.state = 'pending' AND e.id < d.id)
             ORDER BY d.id LIMIT $2 FOR UPDATE SKIP LOCKED)
         UPDATE webhook_delivery d SET leased_until = now() + make_interval(secs => $3)
         FROM due, event_outbox o
         WHERE d.id = due.id AND o.id = d.event
         RETURNING d.id, d.leased_until, d.webhook, d.attempts, o.event_id, o.type AS kind,
                   o.payload",
    )
    .bind(webhooks)
    .bind(limit)
    .bind(lease_secs)
    .fetch_all(pool)
    .await
}

/// Records a delivery's success, under the lease it was taken with.
pub async fn delivered(pool: &PgPool, d: &Claimed, status: i32) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhook_delivery SET state = 'delivered', attempts = attempts + 1,
                delivered_at = now(), last_status = $2, last_error = NULL, leased_until = NULL
         WHERE id = $1 AND state = 'pending' AND leased_until = $3",
    )
    .bind(d.id)
    .bind(status)
    .bind(d.leased_until)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records a failed attempt, under the lease it was taken with: tried again after
/// `retry_in_secs`, or dead when `dead`.
pub async fn failed(
    pool: &PgPool,
    d: &Claimed,
    status: Option<i32>,
    error: &str,
    retry_in_secs: f64,
    dead: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhook_delivery SET attempts = attempts + 1, last_status = $2,
                last_error = left($3, 500), leased_until = NULL,
                state = CASE WHEN $5 THEN 'dead' ELSE 'pending' END,
                next_attempt_at = now() + make_interval(secs => $4)
         WHERE id = $1 AND state = 'pending' AND leased_until = $6",
    )
    .bind(d.id)
    .bind(status)
    .bind(error)
    .bind(retry_in_secs)
    .bind(dead)
    .bind(d.leased_until)
    .execute(pool)
    .await?;
    Ok(())
}

/// Deliveries per webhook and state, and each webhook's oldest pending one; with
/// `undelivered_only`, only the pending and dead ones (what the metrics poll: delivered rows
/// grow without bound, the others stay few).
pub async fn status_counts(
    pool: &PgPool,
    undelivered_only: bool,
) -> Result<Vec<(String, DeliveryState, i64, Option<DateTime<Utc>>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT webhook, state, count(*), min(created_at) FILTER (WHERE state = 'pending')
         FROM webhook_delivery
         WHERE NOT $1 OR state IN ('pending', 'dead')
         GROUP BY webhook, state",
    )
    .bind(undelivered_only)
    .fetch_all(pool)
    .await
}

/// A webhook's figures from [`status_counts`] filled into `status`.
pub fn tally(
    mut status: WebhookStatus,
    rows: &[(String, DeliveryState, i64, Option<DateTime<Utc>>)],
) -> WebhookStatus {
    for (_, state, count, oldest) in rows.iter().filter(|r| r.0 == status.name) {
        match state {
            DeliveryState::Pending => {
                status.pending = *count;
                status.oldest_pending_at = *oldest;
            }
            DeliveryState::Delivered => status.delivered = *count,
            DeliveryState::Dead => status.dead = *count,
        }
    }
    status
}

#[derive(Debug, sqlx::FromRow)]
struct DeliveryRow {
    webhook: String,
    event_id: Uuid,
    kind: String,
    session_id: Option<Uuid>,
    state: DeliveryState,
    attempts: i32,
    created_at: DateTime<Utc>,
    next_attempt_at: DateTime<Utc>,
    delivered_at: Option<DateTime<Utc>>,
    last_status: Option<i32>,
    last_error: Option<String>,
}

/// Filters for listing deliveries; `None` means "any".
#[derive(Debug, Default)]
pub struct DeliveryFilter<'a> {
    pub webhook: Option<&'a str>,
    pub state: Option<DeliveryState>,
    pub session: Option<Uuid>,
    pub limit: i64,
}

/// Deliveries, newest first.
pub async fn deliveries(
    pool: &PgPool,
    f: &DeliveryFilter<'_>,
) -> Result<Vec<Delivery>, sqlx::Error> {
    let rows: Vec<DeliveryRow> = sqlx::query_as(
        "SELECT d.webhook, o.event_id, o.type AS kind, o.session_id, d.state, d.attempts,
                d.created_at, d.next_attempt_at, d.delivered_at, d.last_status, d.last_error
         FROM webhook_delivery d JOIN event_outbox o ON o.id = d.event
         WHERE ($1::text IS NULL OR d.webhook = $1)
           AND ($2::text IS NULL OR d.state = $2)
           AND ($3::uuid IS NULL OR o.session_id = $3)
         ORDER BY d.id DESC LIMIT $4",
    )
    .bind(f.webhook)
    .bind(f.state)
    .bind(f.session)
    .bind(f.limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Delivery {
            next_attempt_at: (r.state == DeliveryState::Pending).then_some(r.next_attempt_at),
            webhook: r.webhook,
            event_id: r.event_id,
            kind: r.kind,
            session_id: r.session_id,
            state: r.state,
            attempts: r.attempts,
            created_at: r.created_at,
            delivered_at: r.delivered_at,
            last_status: r.last_status,
            last_error: r.last_error,
        })
        .collect())
}
