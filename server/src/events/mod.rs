//! The event outbox: session requested / approved / denied / opened / revoked / ended and
//! case closed, written in the same transaction as the change they describe (so an event
//! exists exactly when its change committed), then delivered to the configured webhooks by
//! [`deliver`], at least once, in order per session, surviving restarts.

pub mod deliver;

use std::sync::Arc;

use lanyard_api::events::Event;
use lanyard_api::sessions::Session;
use sqlx::PgConnection;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::config::events::Webhook;
use crate::db::{self, sessions::SessionRow};
use crate::domain::CaseId;
use crate::metrics::EventMetrics;

/// Event types.
pub const REQUESTED: &str = "session.requested";
pub const APPROVED: &str = "session.approved";
pub const DENIED: &str = "session.denied";
pub const OPENED: &str = "session.opened";
pub const REVOKED: &str = "session.revoked";
pub const ENDED: &str = "session.ended";
pub const CASE_CLOSED: &str = "case.closed";

/// Writes events and wakes the local deliverer once they committed.
#[derive(Clone)]
pub struct Outbox {
    webhooks: Arc<Vec<Webhook>>,
    wake: Arc<Notify>,
    metrics: EventMetrics,
}

/// What happened, to whom, by whom.
pub struct NewEvent<'a> {
    pub kind: &'static str,
    pub actor: &'a str,
    pub comment: Option<&'a str>,
    pub session: Option<&'a SessionRow>,
    pub case_id: Option<&'a CaseId>,
    pub ended_sessions: Option<Vec<Uuid>>,
}

impl<'a> NewEvent<'a> {
    /// An event about one session.
    pub fn session(kind: &'static str, actor: &'a str, session: &'a SessionRow) -> Self {
        NewEvent {
            kind,
            actor,
            comment: None,
            session: Some(session),
            case_id: session.case_id.as_ref(),
            ended_sessions: None,
        }
    }
}

impl Outbox {
    pub fn new(webhooks: Vec<Webhook>, metrics: EventMetrics) -> Self {
        Outbox {
            webhooks: Arc::new(webhooks),
            wake: Arc::new(Notify::new()),
            metrics,
        }
    }

    pub fn webhooks(&self) -> &Arc<Vec<Webhook>> {
        &self.webhooks
    }

    /// Writes `event` inside the caller's transaction, with a delivery for every webhook
    /// that takes its type. Call [`Outbox::committed`] after the commit.
    pub async fn write(
        &self,
        conn: &mut PgConnection,
        event: NewEvent<'_>,
    ) -> Result<Uuid, sqlx::Error> {
        let id = Uuid::now_v7();
        let (ordering_key, session_id) = match (event.session, event.case_id) {
            (Some(s), _) => (format!("session:{}", s.id), Some(s.id)),
            (None, Some(case)) => (format!("case:{case}"), None),
            (None, None) => ("broker".to_owned(), None),
        };
        let payload = Event {
            id,
            kind: event.kind.to_owned(),
            occurred_at: chrono::Utc::now(),
            actor: event.actor.to_owned(),
            comment: event.comment.map(str::to_owned),
            case_id: event.case_id.map(ToString::to_string),
            session: event.session.cloned().map(Session::from),
            ended_sessions: event.ended_sessions,
        };
        let payload = serde_json::to_value(&payload)
            .map_err(|e| sqlx::Error::Protocol(format!("event payload: {e}")))?;
        let receivers: Vec<&str> = self
            .webhooks
            .iter()
            .filter(|w| w.wants(event.kind))
            .map(|w| w.name.as_str())
            .collect();
        db::events::insert(
            conn,
            id,
            event.kind,
            &ordering_key,
            session_id,
            &payload,
            &receivers,
        )
        .await?;
        self.metrics.written(event.kind);
        Ok(id)
    }

    /// Tells the local deliverer that new events committed (other instances find them on
    /// their next poll).
    pub fn committed(&self) {
        // Every webhook's deliverer that is waiting; one that is busy claims again anyway.
        self.wake.notify_waiters();
    }

    pub(crate) fn wake_handle(&self) -> Arc<Notify> {
        self.wake.clone()
    }
}
