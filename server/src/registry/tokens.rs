//! The API tokens the broker signs: issuing and revoking them (operator actions of
//! `lanyard-server token` on the server's host), and exchanging a trusted issuer's token for
//! one (`POST /v1/auth/token`). Every token is recorded and audited; every instance refuses
//! a revoked token within 1 s (see `auth::cache`).

use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::audit::{self, Context as RequestContext};
use crate::auth::token::{AUDIENCE, Claims, ISSUER, Provenance, TokenKeys};
use crate::auth::{AuthError, Role};
use crate::db::{self, audit::NewEvent, tokens::TokenRow};
use crate::domain::binding::subject_prefix_of;
use crate::domain::{CustomerId, Outcome};
use crate::error::Error;
use crate::metrics::ExchangeOutcome;
use crate::state::AppState;

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
    let token = NewToken {
        subject,
        role,
        customers: customers.map(|list| list.iter().map(|c| c.to_string()).collect()),
        ttl,
        src: None,
    };
    let issued = mint(pool, keys, &token, |detail| NewEvent {
        detail: Some(detail),
        ..NewEvent::success(actor, "token.issue")
    })
    .await?;
    Ok(issued)
}

/// A token to record and sign.
struct NewToken<'a> {
    subject: &'a str,
    role: Role,
    customers: Option<Vec<String>>,
    ttl: Duration,
    src: Option<Provenance>,
}

/// Records the token and its audit row (`event` gets the token's description as its
/// detail) in one transaction, and signs it.
async fn mint(
    pool: &PgPool,
    keys: &TokenKeys,
    new: &NewToken<'_>,
    event: impl FnOnce(serde_json::Value) -> NewEvent,
) -> Result<IssuedToken, Error> {
    let now = Utc::now();
    let expires_at =
        now + chrono::Duration::from_std(new.ttl).map_err(|e| anyhow::anyhow!("ttl: {e}"))?;
    let jti = Uuid::new_v4();
    let claims = Claims {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: new.subject.into(),
        role: new.role.as_str().into(),
        customers: new.customers.clone(),
        jti,
        iat: now.timestamp(),
        nbf: None,
        exp: expires_at.timestamp(),
        src: new.src.clone(),
    };
    let token = keys.sign(&claims)?;
    let mut tx = pool.begin().await?;
    db::tokens::insert(
        &mut tx,
        &db::tokens::NewTokenRow {
            jti,
            subject: new.subject,
            role: new.role,
            customers: new.customers.as_deref(),
            issued_at: now,
            expires_at,
            source: new.src.as_ref(),
        },
    )
    .await?;
    let mut detail = serde_json::json!({
        "jti": jti, "subject": new.subject, "role": new.role.as_str(),
        "customers": new.customers, "expires_at": expires_at,
    });
    if let (Some(src), Some(map)) = (&new.src, detail.as_object_mut()) {
        map.insert("source_issuer".into(), src.iss.clone().into());
        map.insert("source_subject".into(), src.sub.clone().into());
    }
    audit::record_in(&mut tx, &event(detail)).await?;
    tx.commit().await?;
    Ok(IssuedToken {
        token,
        jti,
        expires_at,
    })
}

/// `POST /v1/auth/token`: exchanges a trusted issuer's token (RFC 8693) for a Lanyard token
/// with the role, customers and subject of the first binding it matches, recorded (listable,
/// revocable) and audited as `token.exchange` with the issuer, the external subject and the
/// binding. A verified token that no binding takes is audited as denied; a token that does
/// not verify is only counted (anyone can send one; it names no one).
pub async fn exchange(
    state: &AppState,
    ctx: &RequestContext,
    subject_token: &str,
) -> Result<IssuedToken, Error> {
    let outcome = exchange_verified(state, ctx, subject_token).await;
    state.metrics.oidc().exchange(match &outcome {
        Ok(_) => ExchangeOutcome::Issued,
        Err(Error::Unavailable(_) | Error::IssuerUnavailable(_) | Error::Internal(_)) => {
            ExchangeOutcome::Unavailable
        }
        Err(_) => ExchangeOutcome::Refused,
    });
    outcome
}

async fn exchange_verified(
    state: &AppState,
    ctx: &RequestContext,
    subject_token: &str,
) -> Result<IssuedToken, Error> {
    let verified = state
        .issuers
        .verify(subject_token)
        .await
        .map_err(|e| match e {
            AuthError::Unauthorized(m) => Error::Unauthenticated(m),
            other => other.into(),
        })?;
    let src = Provenance {
        iss: verified.issuer.issuer.clone(),
        sub: verified.external_subject().to_owned(),
    };
    let event = |actor: &str| NewEvent {
        request_id: ctx.request_id.clone(),
        source_ip: ctx.source_ip,
        user_agent: ctx.user_agent.clone(),
        ..NewEvent::success(actor, "token.exchange")
    };
    let grant = match verified.grant() {
        Ok(grant) => grant,
        Err(refusal) => {
            let error = Error::from(refusal.public);
            tracing::info!(issuer = %src.iss, reason = %refusal.detail, "token exchange refused");
            state
                .audit
                .record(NewEvent {
                    outcome: Outcome::Denied,
                    error_code: Some(error.slug().to_owned()),
                    detail: Some(serde_json::json!({
                        "source_issuer": src.iss, "source_subject": src.sub,
                        "detail": refusal.detail,
                    })),
                    ..event(&external_actor(&src))
                })
                .await?;
            return Err(error);
        }
    };
    // The Lanyard token does not outlive the assertion it was made from.
    let ttl = grant.ttl.min(std::time::Duration::from_secs(
        verified.remaining_secs().max(1),
    ));
    let token = NewToken {
        subject: &grant.subject,
        role: grant.role,
        customers: grant
            .customers
            .map(|list| list.iter().map(ToString::to_string).collect()),
        ttl,
        src: Some(src),
    };
    mint(&state.db, &state.keys, &token, |mut detail| {
        if let Some(map) = detail.as_object_mut() {
            map.insert("binding".into(), grant.binding.clone().into());
        }
        NewEvent {
            actor_role: Some(grant.role.as_str()),
            detail: Some(detail),
            ..event(&grant.subject)
        }
    })
    .await
}

/// The actor of a refused exchange: the external subject after its issuer's default subject
/// prefix, so that it cannot pass for a Lanyard subject.
fn external_actor(src: &Provenance) -> String {
    format!("{}{}", subject_prefix_of(&src.iss), src.sub)
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
