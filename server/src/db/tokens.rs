//! `issued_token`: the API tokens this broker signed, for revocation.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::{Provenance, TokenRole as Role};

#[derive(Debug, sqlx::FromRow)]
pub struct TokenRow {
    pub jti: Uuid,
    pub subject: String,
    pub role: Role,
    pub customers: Option<Vec<String>>,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Exchanged tokens: the trusted issuer and the subject it vouched for.
    pub source_issuer: Option<String>,
    pub source_subject: Option<String>,
}

/// A token to record.
pub struct NewTokenRow<'a> {
    pub jti: Uuid,
    pub subject: &'a str,
    pub role: Role,
    pub customers: Option<&'a [String]>,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub source: Option<&'a Provenance>,
}

#[tracing::instrument(skip_all, fields(jti = %row.jti))]
pub async fn insert(conn: &mut PgConnection, row: &NewTokenRow<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO issued_token (jti, subject, role, customers, issued_at, expires_at,
                                   source_issuer, source_subject)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(row.jti)
    .bind(row.subject)
    .bind(row.role)
    .bind(row.customers)
    .bind(row.issued_at)
    .bind(row.expires_at)
    .bind(row.source.map(|s| &s.iss))
    .bind(row.source.map(|s| &s.sub))
    .execute(conn)
    .await?;
    Ok(())
}

/// The record of a token: what it was issued as, and whether it was revoked. `None` when
/// no such token was issued here.
#[tracing::instrument(skip_all, fields(%jti))]
pub async fn get(pool: &PgPool, jti: Uuid) -> Result<Option<TokenRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT jti, subject, role, customers, issued_at, expires_at, revoked_at,
                source_issuer, source_subject
           FROM issued_token WHERE jti = $1",
    )
    .bind(jti)
    .fetch_optional(pool)
    .await
}

/// Marks a token revoked; returns the row, or `None` if there is no such token.
#[tracing::instrument(skip_all, fields(%jti))]
pub async fn revoke(conn: &mut PgConnection, jti: Uuid) -> Result<Option<TokenRow>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE issued_token SET revoked_at = coalesce(revoked_at, now()) WHERE jti = $1
         RETURNING jti, subject, role, customers, issued_at, expires_at, revoked_at,
                   source_issuer, source_subject",
    )
    .bind(jti)
    .fetch_optional(conn)
    .await
}

#[tracing::instrument(skip_all)]
pub async fn list(pool: &PgPool, include_inactive: bool) -> Result<Vec<TokenRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT jti, subject, role, customers, issued_at, expires_at, revoked_at,
                source_issuer, source_subject
           FROM issued_token
          WHERE $1 OR (revoked_at IS NULL AND expires_at > now())
          ORDER BY issued_at",
    )
    .bind(include_inactive)
    .fetch_all(pool)
    .await
}
