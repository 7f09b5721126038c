//! Sessions changing state after they opened, other than one revocation: a second person's
//! decision on a request, the requests waiting for one, a case's close, and the sweep that
//! announces sessions that ran out.

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::sessions::{COLUMNS, SessionRow};
use crate::domain::{ApprovalStatus, CaseId};

/// Approves or denies a pending request: an approval starts the session's clock. `None`
/// when the session is not pending any more (decided, revoked or expired).
#[tracing::instrument(skip_all, fields(session = %id))]
pub async fn decide(
    conn: &mut PgConnection,
    id: Uuid,
    decision: ApprovalStatus,
    by: &str,
    comment: Option<&str>,
) -> Result<Option<SessionRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE session s SET approval = $2, decided_by = $3, decided_at = now(),
                decision_comment = $4,
                -- A denied request never started: there is no end to announce.
                ended_event_at = CASE WHEN $2 = 'denied' THEN now() ELSE s.ended_event_at END,
                expires_at = CASE WHEN $2 = 'approved'
                                  THEN now() + make_interval(secs => s.duration_seconds)
                                  ELSE s.expires_at END
         WHERE s.id = $1 AND s.approval = 'pending' AND s.revoked_at IS NULL
           AND s.expires_at > now() AND s.requested_by <> $3
         RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(decision)
    .bind(by)
    .bind(comment)
    .fetch_optional(conn)
    .await
}

/// Requests waiting for approval, oldest first, within the token's customer limit.
#[tracing::instrument(skip_all)]
pub async fn pending(
    pool: &PgPool,
    customers: Option<&[String]>,
    limit: i64,
) -> Result<Vec<SessionRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM session s
         WHERE s.approval = 'pending' AND s.revoked_at IS NULL AND s.expires_at > now()
           AND ($1::text[] IS NULL OR s.customer_id = ANY($1))
         ORDER BY s.created_at, s.id LIMIT $2"
    )))
    .bind(customers)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Revokes every live or pending session of a case (not denied ones: they never started).
#[tracing::instrument(skip_all, fields(case = %case))]
pub async fn revoke_case(
    conn: &mut PgConnection,
    case: &CaseId,
    by: &str,
) -> Result<Vec<SessionRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE session s SET revoked_at = clock_timestamp(), revoked_by = $2
         WHERE s.case_id = $1 AND s.revoked_at IS NULL AND s.expires_at > now()
           AND s.approval IS DISTINCT FROM 'denied'
         RETURNING {COLUMNS}"
    )))
    .bind(case)
    .bind(by)
    .fetch_all(conn)
    .await
}

/// Marks up to `limit` sessions that ran out (or whose request expired unapproved) since the
/// last sweep, so that their `session.ended` events are written once; rows another instance
/// is marking are skipped.
pub async fn claim_ended(
    conn: &mut PgConnection,
    limit: i64,
) -> Result<Vec<SessionRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "WITH due AS (
             SELECT id FROM session
             WHERE ended_event_at IS NULL AND revoked_at IS NULL AND expires_at <= now()
             ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)
         UPDATE session s SET ended_event_at = now() FROM due WHERE s.id = due.id
         RETURNING {COLUMNS}"
    )))
    .bind(limit)
    .fetch_all(conn)
    .await
}
