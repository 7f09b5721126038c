//! Credentials for a session: whether the session may have them now, the AssumeRole
//! context (external ID, session name, source identity, tags, lifetime, session policy), the
//! per-holder cache, and the record of every AssumeRole.
//!
//! The caller (`vend`) audits the outcome and answers only after that audit row committed.

use std::time::Instant;

use chrono::{SecondsFormat, Utc};
use lanyard_api::sessions::CredentialProcess;

use crate::db::sessions::Grant;
use crate::domain::session::{
    credential_lifetime, role_session_name, session_policy, source_identity, tag_value,
};
use crate::domain::verification::AwsError;
use crate::domain::{ApprovalStatus, ExternalId, Outcome, RoleArn};
use crate::error::Error;
use crate::state::AppState;
use crate::sts::AssumeRoleRequest;
use crate::sts::cache::{Cached, Holder, Lookup};

/// STS's limit on a session policy's plain-text size.
const MAX_POLICY_CHARS: usize = 2048;

/// Credentials handed out, and how.
#[derive(Debug)]
pub struct Issued {
    pub document: CredentialProcess,
    pub cache_hit: bool,
    /// The SourceIdentity and RoleSessionName the credentials were issued with (what the
    /// customer's CloudTrail shows for every call made with them).
    pub source_identity: String,
    pub role_session_name: String,
}

/// Why no credentials: the client's answer, and the audit row's outcome and code.
#[derive(Debug)]
pub struct Refused {
    pub error: Error,
    /// `denied` (the rules or AWS said no) or `error` (something failed).
    pub outcome: Outcome,
    pub code: String,
    pub cache_hit: Option<bool>,
}

impl Refused {
    pub fn denied(code: &str, error: Error) -> Self {
        Refused {
            error,
            outcome: Outcome::Denied,
            code: code.to_owned(),
            cache_hit: None,
        }
    }

    fn failed(code: &str, error: Error) -> Self {
        Refused {
            error,
            outcome: Outcome::Error,
            code: code.to_owned(),
            cache_hit: None,
        }
    }
}

/// Credentials for `actor` on a session that passed [`super::grant::check`]: cached, or from one
/// AssumeRole shared by every concurrent request of the same holder.
///
/// Credentials are never shared across people: whoever acts on a session that is not theirs
/// (an admin) gets credentials of their own, from an AssumeRole that names them
/// (SourceIdentity, RoleSessionName) and a cache entry of their own, so the customer's
/// CloudTrail shows who really made each call.
#[tracing::instrument(skip_all, fields(session = %grant.session.id))]
pub(super) async fn issue(
    state: &AppState,
    grant: &Grant,
    actor: &str,
    request_id: Option<&str>,
) -> Result<Issued, Refused> {
    let holder = if actor == grant.session.requested_by {
        Holder::Owner
    } else {
        Holder::Other(actor)
    };
    let session_end = grant.session.expires_at;
    let refresh = chrono::Duration::from_std(state.config.credential_refresh)
        .unwrap_or(chrono::Duration::zero());
    let usable = |c: &Cached| {
        let now = Utc::now();
        let exp = c.credentials.expiration;
        c.role_version == grant.role_updated_at
            && c.session_end == session_end
            && exp > now
            && (exp - now > refresh || exp >= session_end)
    };
    let lookup = state
        .assumed_roles
        .get_or_issue(
            grant.session.id,
            holder,
            grant.role_updated_at,
            usable,
            || assume(state, grant, actor, request_id),
        )
        .await;
    let (cached, cache_hit) = match lookup {
        Lookup::Hit(c) => (c, true),
        Lookup::Issued(c) => (c, false),
        Lookup::Failed { error, cached } => {
            let mut refused = refusal(error);
            refused.cache_hit = Some(cached);
            return Err(refused);
        }
    };
    let expires_at = cached.credentials.expiration.min(session_end);
    Ok(Issued {
        document: CredentialProcess {
            version: 1,
            access_key_id: cached.credentials.access_key_id.clone(),
            secret_access_key: cached.credentials.secret_access_key.clone(),
            session_token: cached.credentials.session_token.clone(),
            expiration: expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        },
        cache_hit,
        source_identity: cached.source_identity.clone(),
        role_session_name: cached.role_session_name.clone(),
    })
}

/// Errors inside the single-flight that are not AWS's: carried as pseudo STS codes.
const BROKER_ERROR: &str = "LanyardInternal";
const DATABASE_ERROR: &str = "LanyardDatabase";
const POLICY_TOO_LARGE: &str = "LanyardPolicyTooLarge";
const SESSION_ENDED: &str = "SessionEnded";

async fn assume(
    state: &AppState,
    grant: &Grant,
    actor: &str,
    request_id: Option<&str>,
) -> Result<Cached, AwsError> {
    let internal = |message: String| AwsError::new(BROKER_ERROR, message);
    let s = &grant.session;
    let role_arn = RoleArn::parse(&grant.role_arn).map_err(|e| internal(e.to_string()))?;
    let external_id = ExternalId::parse(grant.external_id.as_deref().unwrap_or_default())
        .map_err(|e| internal(e.to_string()))?;

    let broker_on_role = state.sts.broker_on_role().await;
    let lifetime = credential_lifetime(
        Utc::now(),
        s.expires_at,
        i64::from(grant.role_max_session_seconds),
        i64::try_from(state.config.credential_max.as_secs()).unwrap_or(i64::MAX),
        broker_on_role,
    );
    // A tier's own session policy replaces the role's; its managed policies go beside it.
    let tier = grant.tier_spec.as_ref().map(|t| &t.0);
    let base_policy = match tier {
        Some(t) => t.session_policy.as_ref(),
        None => grant.role_session_policy.as_ref(),
    };
    let policy_arns = tier.map(|t| t.policy_arns.clone()).unwrap_or_default();
    let policy = session_policy(
        base_policy,
        !policy_arns.is_empty(),
        lifetime.cut_at_session_end.then_some(s.expires_at),
    );
    // STS counts the inline policy and the managed policies' ARNs together.
    let packed =
        policy.as_ref().map_or(0, String::len) + policy_arns.iter().map(String::len).sum::<usize>();
    if packed > MAX_POLICY_CHARS {
        return Err(AwsError::new(
            POLICY_TOO_LARGE,
            format!(
                "the session policy, its managed policy ARNs and the session-end statement \
                 exceed STS's {MAX_POLICY_CHARS} characters; shorten the role's (or tier's) \
                 session_policy"
            ),
        ));
    }
    let mut tags = vec![
        ("lanyard-session-id".to_owned(), s.id.to_string()),
        ("lanyard-kind".to_owned(), s.kind.as_str().to_owned()),
        (
            "lanyard-customer".to_owned(),
            tag_value(s.customer_id.as_str()),
        ),
    ];
    if let Some(case) = &s.case_id {
        tags.push(("lanyard-case-id".to_owned(), tag_value(case.as_str())));
    }
    if actor != s.requested_by {
        tags.push((
            "lanyard-session-owner".to_owned(),
            tag_value(&s.requested_by),
        ));
    }
    if let Some(tier) = &s.tier {
        tags.push(("lanyard:tier".to_owned(), tag_value(tier)));
    }
    if s.approval == Some(ApprovalStatus::Approved)
        && let Some(approver) = &s.decided_by
    {
        tags.push(("lanyard:approver".to_owned(), tag_value(approver)));
    }
    let session_name = role_session_name(s.kind, &s.customer_id, s.case_id.as_ref(), actor);
    let identity = source_identity(actor);
    let request = AssumeRoleRequest {
        role_arn: &role_arn,
        external_id: Some(&external_id),
        session_name: session_name.clone(),
        source_identity: Some(identity.clone()),
        tags,
        duration_seconds: lifetime.duration_seconds,
        policy,
        policy_arns,
    };
    let started = Instant::now();
    let credentials = state.sts.assume_role(&request).await?;
    tracing::info!(
        access_key_id = %credentials.access_key_id,
        duration_seconds = lifetime.duration_seconds,
        cut_at_session_end = lifetime.cut_at_session_end,
        sts_ms = started.elapsed().as_millis() as u64,
        "assumed role"
    );
    // The record of this AssumeRole comes first: credentials nobody could trace back to the
    // session are never handed out (nor cached).
    let recorded = crate::db::sessions::record_issue(
        &state.db,
        s.id,
        &credentials.access_key_id,
        // When they really stop working: the policy cuts them at the session's end.
        credentials.expiration.min(s.expires_at),
        actor,
        request_id,
    )
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "recording the credential issue failed");
        AwsError::new(DATABASE_ERROR, "database")
    })?;
    if !recorded {
        // Revoked or expired while STS was answering: these credentials go nowhere.
        return Err(AwsError::new(
            SESSION_ENDED,
            format!(
                "session {} ended while its credentials were being issued",
                s.id
            ),
        ));
    }
    Ok(Cached {
        credentials,
        role_version: grant.role_updated_at,
        session_end: s.expires_at,
        source_identity: identity,
        role_session_name: session_name,
    })
}

/// The client's answer for a failed AssumeRole.
fn refusal(error: AwsError) -> Refused {
    match error.code.as_str() {
        DATABASE_ERROR => Refused::failed(
            DATABASE_ERROR,
            Error::Unavailable("database unavailable while recording credentials".into()),
        ),
        BROKER_ERROR => Refused::failed(
            BROKER_ERROR,
            Error::Internal(anyhow::anyhow!("{}", error.message)),
        ),
        POLICY_TOO_LARGE => Refused::denied(POLICY_TOO_LARGE, Error::Conflict(error.message)),
        SESSION_ENDED => Refused::denied(SESSION_ENDED, Error::Gone(error.message)),
        code => {
            let retry = matches!(
                code,
                "Throttling"
                    | "ThrottlingException"
                    | "RequestLimitExceeded"
                    | "Unreachable"
                    | "Timeout"
                    | "ServiceUnavailable"
                    | "InternalFailure"
                    | "ClientError"
            ) || code.starts_with("HTTP5");
            let denied = matches!(
                code,
                "AccessDenied"
                    | "ExpiredToken"
                    | "RegionDisabledException"
                    | "MalformedPolicyDocument"
                    | "PackedPolicyTooLarge"
                    | "ValidationError"
                    | "InvalidClientTokenId"
            );
            Refused {
                outcome: if denied {
                    Outcome::Denied
                } else {
                    Outcome::Error
                },
                code: code.to_owned(),
                cache_hit: None,
                error: Error::Aws { error, retry },
            }
        }
    }
}
