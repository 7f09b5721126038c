//! `session` and `credential_issue`: access grants, and every AssumeRole made for them.

use chrono::{DateTime, Utc};
use lanyard_api::roles::Tier;
use lanyard_api::sessions::{Approval, Session};
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use crate::domain::{
    ApprovalStatus, CaseCheck, CaseId, CustomerId, CustomerStatus, RoleName, RoleStatus,
    SessionKind, SessionStatus,
};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub id: Uuid,
    pub kind: SessionKind,
    pub customer_id: CustomerId,
    pub role_name: RoleName,
    pub case_id: Option<CaseId>,
    pub reason: Option<String>,
    pub profile_name: String,
    pub requested_by: String,
    pub requested_by_role: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<String>,
    pub credentials_valid_until: Option<DateTime<Utc>>,
    pub tier: Option<String>,
    pub case_title: Option<String>,
    pub case_url: Option<String>,
    pub case_check: Option<CaseCheck>,
    pub duration_seconds: Option<i32>,
    pub approval: Option<ApprovalStatus>,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decision_comment: Option<String>,
}

pub(super) const COLUMNS: &str =
    "s.id, s.kind, s.customer_id, s.role_name, s.case_id, s.reason, s.profile_name,
    s.requested_by, s.requested_by_role, s.created_at, s.expires_at, s.revoked_at, s.revoked_by,
    s.credentials_valid_until, s.tier, s.case_title, s.case_url, s.case_check,
    s.duration_seconds, s.approval, s.decided_by, s.decided_at, s.decision_comment";

pub struct NewSession<'a> {
    pub id: Uuid,
    pub kind: SessionKind,
    pub customer_id: &'a CustomerId,
    pub role_name: &'a RoleName,
    pub case_id: Option<&'a CaseId>,
    pub reason: Option<&'a str>,
    pub profile_name: &'a str,
    pub requested_by: &'a str,
    pub requested_by_role: &'a str,
    /// The session ends this long after now (the database's clock), or after its approval.
    pub duration_seconds: i64,
    pub tier: Option<&'a str>,
    pub case_title: Option<&'a str>,
    pub case_url: Option<&'a str>,
    pub case_check: Option<CaseCheck>,
    /// `Some(window)`: the session waits for approval, and the request expires after
    /// `window` seconds.
    pub approval_window: Option<i64>,
}

#[tracing::instrument(skip_all, fields(session = %s.id))]
pub async fn insert(
    conn: &mut PgConnection,
    s: &NewSession<'_>,
) -> Result<SessionRow, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO session AS s (id, kind, customer_id, role_name, case_id, reason, profile_name,
                                   requested_by, requested_by_role, expires_at, duration_seconds,
                                   tier, case_title, case_url, case_check, approval)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,
                 now() + make_interval(secs => COALESCE($15, $10)), $10, $11, $12, $13, $14,
                 CASE WHEN $15 IS NULL THEN NULL ELSE 'pending' END)
         RETURNING {COLUMNS}"
    )))
    .bind(s.id)
    .bind(s.kind)
    .bind(s.customer_id)
    .bind(s.role_name)
    .bind(s.case_id)
    .bind(s.reason)
    .bind(s.profile_name)
    .bind(s.requested_by)
    .bind(s.requested_by_role)
    .bind(s.duration_seconds as f64)
    .bind(s.tier)
    .bind(s.case_title)
    .bind(s.case_url)
    .bind(s.case_check)
    .bind(s.approval_window.map(|w| w as f64))
    .fetch_one(conn)
    .await
}

#[tracing::instrument(skip_all, fields(session = %id))]
pub async fn get<'e>(
    exec: impl PgExecutor<'e>,
    id: Uuid,
) -> Result<Option<SessionRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM session s WHERE s.id = $1"
    )))
    .bind(id)
    .fetch_optional(exec)
    .await
}

/// The caller's live customer session for this customer and role, if any (for reuse).
/// Runs under the customer row lock, so two requests cannot both open one.
pub async fn find_open_customer_session(
    conn: &mut PgConnection,
    customer: &CustomerId,
    role: &RoleName,
    requested_by: &str,
    min_remaining_secs: i64,
) -> Result<Option<SessionRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM session s
         WHERE s.kind = 'customer' AND s.customer_id = $1 AND s.role_name = $2
           AND s.requested_by = $3 AND s.revoked_at IS NULL
           AND s.tier IS NULL AND s.approval IS NULL
           AND s.expires_at > now() + make_interval(secs => $4)
         ORDER BY s.expires_at DESC LIMIT 1"
    )))
    .bind(customer)
    .bind(role)
    .bind(requested_by)
    .bind(min_remaining_secs as f64)
    .fetch_optional(conn)
    .await
}

/// Filters for listing; `None` means "any".
#[derive(Debug, Default)]
pub struct Filter<'a> {
    pub customer: Option<&'a CustomerId>,
    pub case_id: Option<&'a CaseId>,
    pub kind: Option<SessionKind>,
    pub active: Option<bool>,
    /// Only sessions this subject opened (non-admin callers).
    pub requested_by: Option<&'a str>,
    /// Only these customers (customer-limited tokens).
    pub customers: Option<&'a [String]>,
    pub limit: i64,
}

#[tracing::instrument(skip_all)]
pub async fn list(pool: &PgPool, f: &Filter<'_>) -> Result<Vec<SessionRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM session s
         WHERE ($1::text IS NULL OR s.customer_id = $1)
           AND ($2::text IS NULL OR s.case_id = $2)
           AND ($3::text IS NULL OR s.kind = $3)
           AND ($4::boolean IS NULL
                OR $4 = (s.revoked_at IS NULL AND s.expires_at > now()
                         AND (s.approval IS NULL OR s.approval = 'approved')))
           AND ($5::text IS NULL OR s.requested_by = $5)
           AND ($6::text[] IS NULL OR s.customer_id = ANY($6))
         ORDER BY s.created_at DESC, s.id
         LIMIT $7"
    )))
    .bind(f.customer)
    .bind(f.case_id)
    .bind(f.kind)
    .bind(f.active)
    .bind(f.requested_by)
    .bind(f.customers)
    .bind(f.limit)
    .fetch_all(pool)
    .await
}

/// Revokes a live session. `None` when it does not exist or was already revoked.
#[tracing::instrument(skip_all, fields(session = %id))]
pub async fn revoke<'e>(
    exec: impl PgExecutor<'e>,
    id: Uuid,
    by: &str,
) -> Result<Option<SessionRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE session s SET revoked_at = clock_timestamp(), revoked_by = $2
         WHERE s.id = $1 AND s.revoked_at IS NULL AND s.approval IS DISTINCT FROM 'denied'
         RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(by)
    .fetch_optional(exec)
    .await
}

/// Everything needed to issue credentials for a session, read in one query so that a
/// revocation, an expiry, a disabled customer or a changed role is seen by every instance
/// on the very next request.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Grant {
    #[sqlx(flatten)]
    pub session: SessionRow,
    pub customer_status: CustomerStatus,
    pub role_arn: String,
    pub role_status: RoleStatus,
    pub role_kinds: Vec<SessionKind>,
    pub role_max_session_seconds: i32,
    pub role_session_policy: Option<serde_json::Value>,
    /// The session's tier as the role defines it now (`None` without a tier, or when the
    /// role no longer has it).
    pub tier_spec: Option<Json<Tier>>,
    /// The external ID the role verified with.
    pub external_id: Option<String>,
    /// When the role was last changed: cached credentials older than this are not reused.
    pub role_updated_at: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

#[tracing::instrument(skip_all, fields(session = %id))]
pub async fn grant(pool: &PgPool, id: Uuid) -> Result<Option<Grant>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS}, c.status AS customer_status, r.role_arn, r.status AS role_status,
                r.session_kinds AS role_kinds, r.max_session_seconds AS role_max_session_seconds,
                r.session_policy AS role_session_policy, r.tiers -> s.tier AS tier_spec,
                r.verified_external_id AS external_id,
                r.updated_at AS role_updated_at, now() AS now
         FROM session s
         JOIN customer c ON c.id = s.customer_id
         JOIN role r ON r.customer_id = s.customer_id AND r.name = s.role_name
         WHERE s.id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Records one AssumeRole for a session (never the secret or the token) and extends the
/// session's `credentials_valid_until`, but only while the session is live: `false` when it
/// was revoked or expired meanwhile (the credentials must then not be handed out).
#[tracing::instrument(skip_all, fields(session = %session_id))]
pub async fn record_issue(
    pool: &PgPool,
    session_id: Uuid,
    access_key_id: &str,
    expires_at: DateTime<Utc>,
    actor: &str,
    request_id: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let recorded: Option<i64> = sqlx::query_scalar(
        "WITH live AS (
            UPDATE session SET credentials_valid_until = GREATEST(credentials_valid_until, $3)
            WHERE id = $1 AND revoked_at IS NULL AND expires_at > now()
              AND (approval IS NULL OR approval = 'approved')
            RETURNING id
         )
         INSERT INTO credential_issue (session_id, access_key_id, expires_at, actor, request_id)
         SELECT id, $2, $3, $4, $5 FROM live
         RETURNING id",
    )
    .bind(session_id)
    .bind(access_key_id)
    .bind(expires_at)
    .bind(actor)
    .bind(request_id)
    .fetch_optional(pool)
    .await?;
    Ok(recorded.is_some())
}

/// When a session `subject` opened was last revoked, in Unix milliseconds (0: never).
pub async fn revocation_epoch(pool: &PgPool, subject: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce((extract(epoch FROM max(revoked_at)) * 1000)::int8, 0)
         FROM session WHERE requested_by = $1 AND revoked_at IS NOT NULL",
    )
    .bind(subject)
    .fetch_one(pool)
    .await
}

/// Sessions neither expired nor revoked, nor waiting for (or refused) approval (for the
/// `lanyard_active_sessions` gauge; a periodic count, not a per-request one).
#[tracing::instrument(skip_all)]
pub async fn count_active(db: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM session WHERE revoked_at IS NULL AND expires_at > now()
         AND (approval IS NULL OR approval = 'approved')",
    )
    .fetch_one(db)
    .await
}

impl SessionRow {
    /// Where the session stands at `now`.
    pub fn status(&self, now: DateTime<Utc>) -> SessionStatus {
        if self.revoked_at.is_some() {
            SessionStatus::Revoked
        } else if self.approval == Some(ApprovalStatus::Denied) {
            SessionStatus::Denied
        } else if self.expires_at <= now {
            SessionStatus::Expired
        } else if self.approval == Some(ApprovalStatus::Pending) {
            SessionStatus::PendingApproval
        } else {
            SessionStatus::Active
        }
    }
}

impl From<SessionRow> for Session {
    fn from(row: SessionRow) -> Self {
        Session {
            status: row.status(Utc::now()),
            id: row.id,
            kind: row.kind,
            customer: row.customer_id,
            role: row.role_name,
            case_id: row.case_id,
            reason: row.reason,
            profile_name: row.profile_name,
            requested_by: row.requested_by,
            created_at: row.created_at,
            expires_at: row.expires_at,
            revoked_at: row.revoked_at,
            revoked_by: row.revoked_by,
            credentials_valid_until: row.credentials_valid_until,
            tier: row.tier,
            case_title: row.case_title,
            case_url: row.case_url,
            case_check: row.case_check,
            approval: row.approval.map(|status| Approval {
                status,
                decided_by: row.decided_by,
                decided_at: row.decided_at,
                comment: row.decision_comment,
            }),
            duration_seconds: row.duration_seconds,
        }
    }
}
