//! The case system: asked before a support session opens whether its case is open
//! (`[cases] verifier_url`), and able to end a case's access by closing it
//! (`POST /v1/cases/{case_id}/close`, signed with the shared secret). Both directions use
//! the `Lanyard-Signature` scheme of [`crate::signature`].

use std::time::Instant;

use lanyard_api::events::{CaseAnswer, CaseQuery};
use secrecy::ExposeSecret;

use crate::audit::{self, Context};
use crate::auth::Principal;
use crate::config::events::{CaseSystem, WhenUnavailable};
use crate::db::{self, audit::NewEvent, sessions::SessionRow};
use crate::domain::{CaseCheck, CaseId, CustomerId, Outcome, Reason, check_plain_text};
use crate::error::Error;
use crate::events::{self, NewEvent as NewOutboxEvent};
use crate::signature;
use crate::state::AppState;

/// What the case system said about a case that may have a session.
#[derive(Debug, Clone, Default)]
pub struct CaseInfo {
    pub title: Option<String>,
    pub url: Option<String>,
    /// When the case system was asked, if it answered that the case is open: a close
    /// recorded before then was undone there (the case was reopened).
    pub asked_at: Option<chrono::DateTime<chrono::Utc>>,
    /// `None` when no case system is configured.
    pub check: Option<CaseCheck>,
}

/// Longest case title kept (longer ones are cut).
const MAX_TITLE: usize = 300;

/// Asks the case system whether `case` is open. Closed or unknown: refused, saying why.
/// Unreachable (or an answer that is not one): refused in `refuse` mode (audited), let
/// through and flagged in `allow` mode.
pub async fn check(
    state: &AppState,
    principal: &Principal,
    ctx: &Context,
    case: &CaseId,
    customer: &CustomerId,
    reason: Option<&Reason>,
) -> Result<CaseInfo, Error> {
    let Some(system) = &state.config.cases else {
        return Ok(CaseInfo::default());
    };
    let query = CaseQuery {
        case_id: case.to_string(),
        customer: customer.to_string(),
        requester: principal.actor().to_owned(),
        reason: reason.map(|r| r.as_str().to_owned()).unwrap_or_default(),
    };
    let started = Instant::now();
    let asked_at = chrono::Utc::now();
    match ask(&state.http, system, &query).await {
        Ok(answer) => match answer.status.as_str() {
            "open" => Ok(CaseInfo {
                asked_at: Some(asked_at),
                title: answer
                    .title
                    .map(|t| t.chars().take(MAX_TITLE).collect::<String>())
                    .filter(|t| check_plain_text("title", t).is_ok()),
                url: answer.url.filter(|u| usable_url(u)),
                check: Some(CaseCheck::Open),
            }),
            "closed" => Err(Error::Forbidden(format!(
                "case {case} is closed in the case system; no session can open for it"
            ))),
            _ => Err(Error::Forbidden(format!(
                "case {case} is unknown to the case system; no session can open for it"
            ))),
        },
        Err(why) => {
            tracing::warn!(case = %case, error = %why, elapsed_ms = started.elapsed().as_millis() as u64,
                           "the case system could not answer");
            match system.when_unavailable {
                WhenUnavailable::Allow => Ok(CaseInfo {
                    check: Some(CaseCheck::Unavailable),
                    ..CaseInfo::default()
                }),
                WhenUnavailable::Refuse => {
                    let event = NewEvent {
                        customer_id: Some(customer.to_string()),
                        case_id: Some(case.to_string()),
                        outcome: Outcome::Denied,
                        error_code: Some("CaseSystemUnavailable".into()),
                        detail: Some(serde_json::json!({ "detail": why })),
                        ..ctx.event(principal, "session.open")
                    };
                    state.audit.record(event).await?;
                    Err(Error::CaseSystemUnavailable(format!(
                        "the case system could not be asked about case {case} ({why}); support \
                         sessions are refused while it is unavailable"
                    )))
                }
            }
        }
    }
}

/// A case link worth showing: http(s), no control characters, at most 2,048 characters.
fn usable_url(raw: &str) -> bool {
    raw.len() <= 2048
        && reqwest::Url::parse(raw).is_ok_and(|u| matches!(u.scheme(), "https" | "http"))
        && !raw.chars().any(char::is_control)
}

/// One signed question to the case system; the error says what failed, never the secret.
async fn ask(
    http: &reqwest::Client,
    system: &CaseSystem,
    query: &CaseQuery,
) -> Result<CaseAnswer, String> {
    let body = serde_json::to_vec(query).map_err(|e| e.to_string())?;
    let now = chrono::Utc::now().timestamp();
    let response = http
        .post(system.verifier_url.clone())
        .timeout(system.timeout)
        .header("content-type", "application/json")
        .header(
            signature::HEADER,
            signature::sign(system.secret.expose_secret().as_bytes(), now, &body),
        )
        .body(body)
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                format!("no answer within {:?}", system.timeout)
            } else {
                "could not connect".to_owned()
            }
        })?;
    if !response.status().is_success() {
        return Err(format!("it answered {}", response.status()));
    }
    let bytes = response
        .bytes()
        .await
        .map_err(|_| "its answer was cut off".to_owned())?;
    if bytes.len() > 64 * 1024 {
        return Err("its answer is larger than 64 KiB".into());
    }
    let answer: CaseAnswer = serde_json::from_slice(&bytes)
        .map_err(|_| "its answer is not {\"status\": …} JSON".to_owned())?;
    if !matches!(answer.status.as_str(), "open" | "closed" | "unknown") {
        return Err(format!(
            "its answer's status {:?} is not open, closed or unknown",
            answer.status.chars().take(20).collect::<String>()
        ));
    }
    Ok(answer)
}

/// Who closes a case: an admin, or the case system itself (a valid signature).
pub enum Closer<'a> {
    Admin(&'a Principal),
    CaseSystem,
}

impl Closer<'_> {
    fn actor(&self) -> &str {
        match self {
            Closer::Admin(p) => p.actor(),
            Closer::CaseSystem => "case-system",
        }
    }
}

/// Checks a case system's signed request: the signature over `body` with the `[cases]`
/// secret, at most five minutes old. Returns what [`spend_signature`] takes; nothing is
/// recorded yet.
pub fn verify_signed(state: &AppState, header: &str, body: &[u8]) -> Result<String, Error> {
    let Some(system) = &state.config.cases else {
        return Err(Error::Unauthenticated(
            "no case system is configured: closing a case needs an admin token".into(),
        ));
    };
    let now = chrono::Utc::now().timestamp();
    signature::verify(system.secret.expose_secret().as_bytes(), header, body, now)
        .map_err(|e| Error::Unauthenticated(e.to_string()))
}

/// Records a verified signature as used: a replay (within the minutes it would still be
/// accepted) is refused.
pub async fn spend_signature(state: &AppState, v1: &str) -> Result<(), Error> {
    let fresh: bool = sqlx::query_scalar(
        "WITH pruned AS (DELETE FROM used_signature WHERE received_at < now() - interval '10 minutes')
         INSERT INTO used_signature (signature) VALUES ($1) ON CONFLICT DO NOTHING RETURNING true",
    )
    .bind(v1)
    .fetch_optional(&state.db)
    .await?
    .unwrap_or(false);
    if !fresh {
        return Err(Error::Unauthenticated(format!(
            "this {} was already used: a signed request is accepted once",
            signature::HEADER
        )));
    }
    Ok(())
}

/// Closes a case: revokes every live or pending session of it (the same guarantees as a
/// revocation: no new credentials from any instance), audits each, writes `session.revoked`
/// for each and one `case.closed`, all in one transaction.
pub async fn close(
    state: &AppState,
    closer: Closer<'_>,
    ctx: &Context,
    case: &CaseId,
) -> Result<Vec<SessionRow>, Error> {
    let actor = closer.actor().to_owned();
    let mut tx = state.db.begin().await?;
    // Remembered, under the case's lock: a session being opened for the case right now
    // either committed before (and is revoked below) or sees the close.
    db::cases::lock_and_close(&mut tx, case, &actor).await?;
    let ended = db::session_changes::revoke_case(&mut tx, case, &actor).await?;
    for session in &ended {
        let event = NewEvent {
            customer_id: Some(session.customer_id.to_string()),
            role_name: Some(session.role_name.to_string()),
            session_id: Some(session.id),
            case_id: Some(case.to_string()),
            profile: Some(session.profile_name.clone()),
            detail: Some(serde_json::json!({ "reason": "case closed" })),
            ..base_event(&closer, ctx, &actor, "session.revoke")
        };
        audit::record_in(&mut tx, &event).await?;
        state
            .outbox
            .write(
                &mut tx,
                NewOutboxEvent::session(events::REVOKED, &actor, session),
            )
            .await?;
    }
    let event = NewEvent {
        case_id: Some(case.to_string()),
        detail: Some(serde_json::json!({
            "sessions_ended": ended.iter().map(|s| s.id).collect::<Vec<_>>(),
        })),
        ..base_event(&closer, ctx, &actor, "case.close")
    };
    audit::record_in(&mut tx, &event).await?;
    state
        .outbox
        .write(
            &mut tx,
            NewOutboxEvent {
                kind: events::CASE_CLOSED,
                actor: &actor,
                comment: None,
                session: None,
                case_id: Some(case),
                ended_sessions: Some(ended.iter().map(|s| s.id).collect()),
            },
        )
        .await?;
    tx.commit().await?;
    state.outbox.committed();
    for session in &ended {
        state.auth_cache.forget_session(session.id);
        state.assumed_roles.forget(session.id);
    }
    Ok(ended)
}

fn base_event(closer: &Closer<'_>, ctx: &Context, actor: &str, action: &'static str) -> NewEvent {
    match closer {
        Closer::Admin(principal) => ctx.event(principal, action),
        Closer::CaseSystem => NewEvent {
            request_id: ctx.request_id.clone(),
            source_ip: ctx.source_ip,
            user_agent: ctx.user_agent.clone(),
            ..NewEvent::success(actor, action)
        },
    }
}
