//! Cases and events: closing a case, the events the broker publishes (session requested,
//! approved, denied, opened, revoked, ended; case closed), the webhooks that receive them and
//! the state of each delivery.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::sessions::Session;
use crate::status::DeliveryState;

/// The answer to `POST /v1/cases/{case_id}/close`: the sessions it ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct CaseClosed {
    pub case_id: String,
    /// The live (or pending) sessions of the case that the close revoked.
    pub sessions: Vec<Session>,
}

/// The body a case system sends with a signed close: the case again, so that the signature
/// covers which case is closed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct CloseCase {
    #[cfg_attr(feature = "utoipa", schema(example = "CS-12345"))]
    pub case_id: String,
}

/// What the broker asks the case system (`[cases] verifier_url`), signed like webhooks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseQuery {
    pub case_id: String,
    pub customer: String,
    pub requester: String,
    pub reason: String,
}

/// The case system's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseAnswer {
    /// `open`, `closed` or `unknown`; only `open` lets a session open.
    pub status: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
}

/// One event, as webhooks receive it (the `lanyard` format) and the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Event {
    /// The idempotency key; also sent as the `Lanyard-Event-Id` header.
    pub id: Uuid,
    /// `session.requested`, `session.approved`, `session.denied`, `session.opened`,
    /// `session.revoked`, `session.ended` or `case.closed`.
    #[cfg_attr(feature = "utoipa", schema(example = "session.approved"))]
    #[serde(rename = "type")]
    pub kind: String,
    pub occurred_at: DateTime<Utc>,
    /// Who caused it (`system` for an expiry).
    pub actor: String,
    /// The approver's or denier's comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_id: Option<String>,
    /// The session as it stood right after the change (absent for `case.closed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<Session>,
    /// For `case.closed`: the sessions the close ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_sessions: Option<Vec<Uuid>>,
}

/// A configured webhook and how its deliveries stand.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct WebhookStatus {
    pub name: String,
    /// The event types it receives (all when the configuration names none).
    pub events: Vec<String>,
    /// `lanyard` or `slack`.
    pub format: String,
    pub pending: i64,
    pub delivered: i64,
    pub dead: i64,
    /// When the oldest undelivered event was written.
    pub oldest_pending_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct WebhookList {
    pub webhooks: Vec<WebhookStatus>,
}

/// One event's delivery to one webhook.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Delivery {
    pub webhook: String,
    pub event_id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    pub session_id: Option<Uuid>,
    pub state: DeliveryState,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// The receiver's last HTTP status, if it answered.
    pub last_status: Option<i32>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct DeliveryList {
    pub deliveries: Vec<Delivery>,
}
