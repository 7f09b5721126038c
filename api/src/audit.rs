//! The audit log as the API returns it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::status::Outcome;

/// One audit event: who did what, to which customer, when, from where, and how it ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct AuditEvent {
    /// Increases with every event written; the listing's order (newest first).
    pub id: i64,
    pub occurred_at: DateTime<Utc>,
    pub request_id: Option<String>,
    /// The token's subject.
    pub actor: String,
    #[cfg_attr(feature = "utoipa", schema(example = "support"))]
    pub actor_role: Option<String>,
    #[cfg_attr(feature = "utoipa", schema(example = "credentials.issue"))]
    pub action: String,
    pub customer: Option<String>,
    pub role: Option<String>,
    pub session_id: Option<Uuid>,
    pub case_id: Option<String>,
    pub profile: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    /// `success`, `denied` or `error`.
    pub outcome: Outcome,
    pub error_code: Option<String>,
    pub duration_ms: Option<i32>,
    pub cache_hit: Option<bool>,
    /// Action-specific details (never a secret).
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<Object>))]
    pub detail: Option<serde_json::Value>,
}

/// A page of events, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    /// Pass as `cursor` (with the same filters) for the next, older page; `null` when there
    /// is none.
    pub next_cursor: Option<String>,
}

/// `json`: one page and a cursor. `ndjson`, `csv`: every matching row, streamed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub enum AuditFormat {
    #[default]
    Json,
    Ndjson,
    Csv,
}
