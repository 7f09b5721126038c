//! The API tokens the broker signs: issuing (record, sign, audit) and revoking them. Both
//! are operator actions of `lanyard-server token` on the server's host; every instance
//! refuses a revoked token within 1 s (see `auth::cache`).

use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::audit;
use crate::auth::Role;
use crate::auth::token::{AUDIENCE, Claims, ISSUER, TokenKeys};
use crate::db::{self, audit::NewEvent, tokens::TokenRow};
use crate::domain::CustomerId;

/// A token just issued, as printed by `lanyard-server token issue`.
#[derive(Debug)]
pub struct IssuedToken {
    pub token: String,
    pub jti: Uuid,
    pub expires_at: DateTime<Utc>,
}

/// Records and signs a new token. `actor` is who asked for it, for the audit row.
pub async fn issue(
    pool: &PgPool,
    keys: &TokenKeys,
    actor: &str,
    subject: &str,
    role: Role,
    customers: Option<Vec<CustomerId>>,
    ttl: Duration,
) -> anyhow::Result<IssuedToken> {
    if subject.is_empty() || subject.chars().count() > 128 {
        bail!("subject must be 1-128 characters");
    }
    crate::domain::check_plain_text("subject", subject)?;
    let now = Utc::now();
    let expires_at = now + chrono::Duration::from_std(ttl).context("ttl too large")?;
    let jti = Uuid::new_v4();
    let customer_names: Option<Vec<String>> =
        customers.map(|list| list.iter().map(|c| c.to_string()).collect());
    let claims = Claims {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: subject.into(),
        role: role.as_str().into(),
        customers: customer_names.clone(),
        jti,
        iat: now.timestamp(),
        nbf: None,
        exp: expires_at.timestamp(),
    };
    let token = keys.sign(&claims)?;
    let mut tx = pool.begin().await?;
    db::tokens::insert(
        &mut tx,
        jti,
        subject,
        role,
        customer_names.as_deref(),
        now,
        expires_at,
    )
    .await?;
    audit::record_in(
        &mut tx,
        &NewEvent {
            detail: Some(serde_json::json!({
                "jti": jti, "subject": subject, "role": role.as_str(),
                "customers": customer_names, "expires_at": expires_at,
            })),
            ..NewEvent::success(actor, "token.issue")
        },
    )
    .await?;
    tx.commit().await?;
    Ok(IssuedToken {
        token,
        jti,
        expires_at,
    })
}

/// Revokes a token at once on every instance; `actor` is who asked, for the audit row.
/// Revoking a revoked token keeps its first revocation time.
pub async fn revoke(pool: &PgPool, actor: &str, jti: Uuid) -> anyhow::Result<TokenRow> {
    let mut tx = pool.begin().await?;
    let row = db::tokens::revoke(&mut tx, jti)
        .await?
        .with_context(|| format!("no token with id {jti}"))?;
    audit::record_in(
        &mut tx,
        &NewEvent {
            detail: Some(serde_json::json!({ "jti": jti, "subject": row.subject })),
            ..NewEvent::success(actor, "token.revoke")
        },
    )
    .await?;
    tx.commit().await?;
    Ok(row)
}
