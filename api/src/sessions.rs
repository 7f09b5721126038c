//! Sessions and the credentials they give.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::status::{ApprovalStatus, CaseCheck, SessionStatus};
use crate::{CaseId, CustomerId, RoleName, SessionKind};

/// A grant of access to one customer role for a bounded time.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Session {
    pub id: Uuid,
    pub kind: SessionKind,
    #[cfg_attr(feature = "utoipa", schema(value_type = String))]
    pub customer: CustomerId,
    #[cfg_attr(feature = "utoipa", schema(value_type = String))]
    pub role: RoleName,
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<String>))]
    pub case_id: Option<CaseId>,
    pub reason: Option<String>,
    /// The AWS CLI profile the session is used through.
    #[cfg_attr(feature = "utoipa", schema(example = "support-acme-corp-CS-12345"))]
    pub profile_name: String,
    pub requested_by: String,
    /// `pending_approval`, `active`, `expired`, `revoked` or `denied`.
    pub status: SessionStatus,
    /// The role's access tier the session uses; absent: the role's base grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// The case's title and link, as the case system gave them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_url: Option<String>,
    /// What the case system said when the session opened; absent when no case system is
    /// configured. `unavailable`: it could not be reached and the session opened anyway
    /// (`when_unavailable = "allow"`), flagged for review.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_check: Option<CaseCheck>,
    /// The second person's decision, when the tier needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
    /// The session's length; with an approval it counts from the approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<i32>,
    /// When the request was made.
    pub created_at: DateTime<Utc>,
    /// When the session ends; while it waits for approval, when the request expires.
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<String>,
    /// When the last credentials issued for this session stop working. STS cannot recall
    /// credentials: after a revocation, those already handed out work until this time.
    pub credentials_valid_until: Option<DateTime<Utc>>,
}

/// A second person's decision on a session request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Approval {
    pub status: ApprovalStatus,
    /// Who approved or denied it.
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub comment: Option<String>,
}

/// The body of `POST /v1/sessions/{id}/approve` and `/deny`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Decision {
    /// Why: 1-500 characters, no control characters.
    #[cfg_attr(
        feature = "utoipa",
        schema(example = "change CHG-42 approved in CAB", max_length = 500)
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct OpenSession {
    pub kind: SessionKind,
    #[cfg_attr(
        feature = "utoipa",
        schema(
            example = "acme-corp",
            pattern = "^[a-z0-9][a-z0-9-]{1,62}$",
            min_length = 2,
            max_length = 63
        )
    )]
    pub customer: String,
    #[cfg_attr(
        feature = "utoipa",
        schema(
            example = "readonly",
            pattern = "^[a-z0-9][a-z0-9_-]{0,62}$",
            min_length = 1,
            max_length = 63
        )
    )]
    pub role: String,
    /// Required for support sessions.
    #[cfg_attr(
        feature = "utoipa",
        schema(example = "CS-12345", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{1,63}$")
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_id: Option<String>,
    /// Required for support sessions: why access is needed.
    #[cfg_attr(
        feature = "utoipa",
        schema(example = "customer reports failing S3 uploads", max_length = 500)
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Support default 1800; at most the configured maximum and the role's
    /// max_session_seconds.
    #[cfg_attr(feature = "utoipa", schema(minimum = 60, maximum = 43200))]
    #[serde(
        default,
        deserialize_with = "crate::integral",
        skip_serializing_if = "Option::is_none"
    )]
    pub duration_seconds: Option<i32>,
    /// One of the role's access tiers; absent: the role's base grant. A tier that requires
    /// approval opens the session as `pending_approval`.
    #[cfg_attr(
        feature = "utoipa",
        schema(example = "write", pattern = "^[a-z0-9][a-z0-9_-]{0,31}$")
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct SessionList {
    pub sessions: Vec<Session>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct CustomerCredentialsRequest {
    /// The role to use; may be left out when the customer has exactly one verified role
    /// that allows customer sessions.
    #[cfg_attr(
        feature = "utoipa",
        schema(
            pattern = "^[a-z0-9][a-z0-9_-]{0,62}$",
            min_length = 1,
            max_length = 63
        )
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// The `credential_process` document, exactly as the AWS CLI and SDKs read it
/// (<https://docs.aws.amazon.com/cli/latest/userguide/cli-configure-sourcing-external.html>).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct CredentialProcess {
    /// Always 1.
    #[cfg_attr(feature = "utoipa", schema(example = 1))]
    pub version: u8,
    #[cfg_attr(feature = "utoipa", schema(example = "ASIAIOSFODNN7EXAMPLE"))]
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// When the credentials stop working (RFC 3339, UTC): the STS expiry, or the session's
    /// end when a policy cuts them off earlier.
    #[cfg_attr(feature = "utoipa", schema(example = "2026-11-26T12:30:00Z"))]
    pub expiration: String,
}

/// Secrets never reach Debug output: only the key id and the expiry are shown.
impl std::fmt::Debug for CredentialProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialProcess")
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}
