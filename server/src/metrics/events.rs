//! What webhook delivery counts: attempts by webhook (configured ones only, so the label set
//! is bounded) and result, and each webhook's backlog.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct EventMetrics {
    attempts: IntCounterVec,
    backlog: IntGaugeVec,
    events: IntCounterVec,
}

/// How one delivery attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    Delivered,
    /// Failed; it will be tried again.
    Failed,
    /// Failed for the last time: the delivery is dead.
    Dead,
}

impl AttemptResult {
    fn as_str(self) -> &'static str {
        match self {
            AttemptResult::Delivered => "delivered",
            AttemptResult::Failed => "failed",
            AttemptResult::Dead => "dead",
        }
    }
}

impl EventMetrics {
    pub(super) fn register(registry: &Registry) -> prometheus::Result<Self> {
        let attempts = IntCounterVec::new(
            Opts::new(
                "lanyard_webhook_attempts_total",
                "Webhook delivery attempts by this instance, by webhook and result: delivered, \
                 failed (tried again later) or dead (no more attempts)",
            ),
            &["webhook", "result"],
        )?;
        let backlog = IntGaugeVec::new(
            Opts::new(
                "lanyard_webhook_deliveries",
                "Webhook deliveries in the database not delivered, by webhook and state: \
                 pending or dead (counted every 2 s)",
            ),
            &["webhook", "state"],
        )?;
        let events = IntCounterVec::new(
            Opts::new(
                "lanyard_events_total",
                "Events written to the outbox by this instance, by type (counted when written, \
                 before their transaction commits)",
            ),
            &["type"],
        )?;
        registry.register(Box::new(attempts.clone()))?;
        registry.register(Box::new(backlog.clone()))?;
        registry.register(Box::new(events.clone()))?;
        Ok(EventMetrics {
            attempts,
            backlog,
            events,
        })
    }

    pub fn attempt(&self, webhook: &str, result: AttemptResult) {
        self.attempts
            .with_label_values(&[webhook, result.as_str()])
            .inc();
    }

    pub fn backlog(&self, webhook: &str, state: &str, count: i64) {
        self.backlog.with_label_values(&[webhook, state]).set(count);
    }

    pub fn written(&self, kind: &str) {
        self.events.with_label_values(&[kind]).inc();
    }
}
