//! The caller's own token, as the broker takes it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a token may do. Roles are not hierarchical except `admin`, which may do everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[cfg_attr(
    feature = "sqlx",
    derive(sqlx::Type),
    sqlx(type_name = "text", rename_all = "lowercase")
)]
pub enum TokenRole {
    /// Everything: customers, roles, sessions, audit.
    Admin,
    /// Open support sessions, fetch credentials for their own sessions, list customers.
    Support,
    /// Customer sessions for services and batch jobs.
    Service,
    /// Read the audit log and reports.
    Auditor,
}

impl TokenRole {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRole::Admin => "admin",
            TokenRole::Support => "support",
            TokenRole::Service => "service",
            TokenRole::Auditor => "auditor",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "admin" => Some(TokenRole::Admin),
            "support" => Some(TokenRole::Support),
            "service" => Some(TokenRole::Service),
            "auditor" => Some(TokenRole::Auditor),
            _ => None,
        }
    }
}

impl std::fmt::Display for TokenRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the broker knows of the token a request carried.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct WhoAmI {
    /// The token's subject: the actor in audit rows.
    pub subject: String,
    pub role: TokenRole,
    /// The customers the token is limited to; `null` for every customer.
    pub customers: Option<Vec<String>>,
    /// The token's id (`jti`), as `lanyard-server token list` shows it.
    pub token_id: Uuid,
    pub expires_at: DateTime<Utc>,
    /// When a session this subject opened was last revoked (Unix milliseconds; 0: never).
    /// A client holding credentials it cached before this time asks the broker again
    /// before using them (`lanyard credential-process` checks it at most every 60 s).
    #[serde(default)]
    pub revocation_epoch: i64,
}
