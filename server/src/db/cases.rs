//! `closed_case`: cases closed through `POST /v1/cases/{id}/close`, so that no session opens
//! on them afterwards (unless the case system says the case is open again).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::domain::CaseId;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClosedCase {
    pub closed_at: DateTime<Utc>,
    pub closed_by: String,
}

/// Takes the case's transaction-scoped lock (closing and opening serialise on it).
async fn lock(conn: &mut PgConnection, case: &CaseId) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('lanyard-case:' || $1, 0))")
        .bind(case)
        .execute(conn)
        .await?;
    Ok(())
}

/// Under the case's lock: when and by whom the case was last closed, if ever.
pub async fn lock_and_get_closed(
    conn: &mut PgConnection,
    case: &CaseId,
) -> Result<Option<ClosedCase>, sqlx::Error> {
    lock(conn, case).await?;
    sqlx::query_as("SELECT closed_at, closed_by FROM closed_case WHERE case_id = $1")
        .bind(case)
        .fetch_optional(conn)
        .await
}

/// Under the case's lock: records that the case is closed now.
pub async fn lock_and_close(
    conn: &mut PgConnection,
    case: &CaseId,
    by: &str,
) -> Result<(), sqlx::Error> {
    lock(conn, case).await?;
    sqlx::query(
        "INSERT INTO closed_case (case_id, closed_at, closed_by) VALUES ($1, clock_timestamp(), $2)
         ON CONFLICT (case_id) DO UPDATE SET closed_at = EXCLUDED.closed_at,
                                             closed_by = EXCLUDED.closed_by",
    )
    .bind(case)
    .bind(by)
    .execute(conn)
    .await?;
    Ok(())
}
