//! A webhook receiver as a customer would run one: refuses (401) what is not signed with
//! its secret, records every request the broker makes (headers, body, whether the
//! signature verified, what it answered), shows them
//! deduplicated by `Lanyard-Event-Id` as an idempotent receiver would process them, and can
//! fail on purpose: answer an error status, or go down altogether and come back on the same
//! port.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use tokio::sync::watch;

use super::config::WebhookConfig;
use super::listener::Listener;
use super::signature::{self, Verdict};

/// One request the broker made to the receiver.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The `Lanyard-Event-Id` header.
    pub event_id: Option<String>,
    /// The `Lanyard-Event-Type` header.
    pub event_type: Option<String>,
    /// The body's `session.id` (the `lanyard` format carries the session).
    pub session_id: Option<String>,
    /// The body as JSON (`null` when it is not JSON).
    pub body: Value,
    /// The body as sent.
    pub raw_body: String,
    /// The `Lanyard-Signature` header as sent.
    pub signature_header: Option<String>,
    /// What the receiver made of it.
    pub signature: Verdict,
    /// The status the receiver answered with.
    pub answered: u16,
    /// When it arrived.
    pub received_at: Instant,
}

impl Delivery {
    /// Whether the receiver took it (answered 2xx).
    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.answered)
    }
}

struct Shared {
    secret: String,
    /// The status every request gets.
    answer: AtomicU16,
    /// How long the receiver takes to answer the next request it processes.
    slow_next: Mutex<Option<Duration>>,
    log: watch::Sender<Vec<Delivery>>,
}

/// A webhook endpoint on `127.0.0.1:<port>`; see the module docs.
pub struct WebhookReceiver {
    listener: Listener,
    shared: Arc<Shared>,
}

impl WebhookReceiver {
    /// Starts a receiver that takes every delivery (answers 200), with a secret of its own.
    pub fn start() -> WebhookReceiver {
        let shared = Arc::new(Shared {
            secret: crate::unique("whsec"),
            answer: AtomicU16::new(200),
            slow_next: Mutex::new(None),
            log: watch::Sender::new(Vec::new()),
        });
        let router = Router::new().fallback(receive).with_state(shared.clone());
        WebhookReceiver {
            listener: Listener::start(router),
            shared,
        }
    }

    /// Where the broker is to deliver.
    pub fn url(&self) -> String {
        format!("http://{}/lanyard/events", self.listener.addr())
    }

    /// The secret deliveries are signed with.
    pub fn secret(&self) -> &str {
        &self.shared.secret
    }

    /// A `[[webhooks]]` entry named `name` for this receiver: the `lanyard` format, every
    /// event type, the broker's defaults for the rest.
    pub fn config(&self, name: &str) -> WebhookConfig {
        WebhookConfig {
            name: name.to_owned(),
            url: self.url(),
            secret: Some(self.secret().to_owned()),
            ..WebhookConfig::default()
        }
    }

    /// Answers every request with `status` from now on (200 again to take deliveries).
    pub fn answer_with(&self, status: u16) {
        self.shared.answer.store(status, Ordering::SeqCst);
    }

    /// Processes the next request but answers it only after `delay`: past the broker's
    /// timeout, the broker takes it for a failure and delivers the event again (at least
    /// once), and [`WebhookReceiver::events`] shows it once.
    pub fn answer_next_after(&self, delay: Duration) {
        *self.shared.slow_next.lock().unwrap() = Some(delay);
    }

    /// Goes down: stops listening and closes every connection, so the broker cannot
    /// connect at all. The port stays reserved for [`WebhookReceiver::come_up`].
    pub async fn go_down(&self) {
        self.listener.go_down().await;
    }

    /// Listens again, on the same port (the configured URL is valid again).
    pub fn come_up(&self) {
        self.listener.come_up();
    }

    pub fn is_up(&self) -> bool {
        self.listener.is_up()
    }

    /// Every request, in the order they arrived.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared.log.borrow().clone()
    }

    /// What an idempotent receiver processed: the accepted deliveries, each event id once
    /// (its first accepted delivery), in the order they arrived.
    pub fn events(&self) -> Vec<Delivery> {
        unique(&self.shared.log.borrow())
    }

    /// Accepted deliveries of an event id that had already been accepted (repeats the
    /// broker's at-least-once delivery may make).
    pub fn duplicates(&self) -> usize {
        let log = self.shared.log.borrow();
        log.iter().filter(|d| d.accepted()).count() - unique(&log).len()
    }

    /// The types of one session's events as [`WebhookReceiver::events`] processed them.
    pub fn session_events(&self, session_id: &str) -> Vec<String> {
        self.events()
            .into_iter()
            .filter(|d| d.session_id.as_deref() == Some(session_id))
            .map(|d| d.event_type.unwrap_or_default())
            .collect()
    }

    /// Waits until [`WebhookReceiver::events`] holds at least `count` events; returns
    /// them. Fails the test, saying what did arrive, after `within`.
    pub async fn wait_for_events(&self, count: usize, within: Duration) -> Vec<Delivery> {
        self.wait_until(within, &format!("{count} events"), |log| {
            unique(log).len() >= count
        })
        .await;
        self.events()
    }

    /// Waits until an event of `event_type` about `session_id` was accepted; returns its
    /// first delivery. Fails the test, saying what did arrive, after `within`.
    pub async fn wait_for(&self, session_id: &str, event_type: &str, within: Duration) -> Delivery {
        let matches = |d: &Delivery| {
            d.accepted()
                && d.session_id.as_deref() == Some(session_id)
                && d.event_type.as_deref() == Some(event_type)
        };
        self.wait_until(
            within,
            &format!("{event_type} for session {session_id}"),
            |log| log.iter().any(matches),
        )
        .await;
        self.deliveries().into_iter().find(matches).unwrap()
    }

    /// Waits until at least `count` requests arrived, accepted or not.
    pub async fn wait_for_requests(&self, count: usize, within: Duration) -> Vec<Delivery> {
        self.wait_until(within, &format!("{count} requests"), |log| {
            log.len() >= count
        })
        .await;
        self.deliveries()
    }

    async fn wait_until(
        &self,
        within: Duration,
        what: &str,
        mut done: impl FnMut(&Vec<Delivery>) -> bool,
    ) {
        let mut log = self.shared.log.subscribe();
        let waited = tokio::time::timeout(within, log.wait_for(|l| done(l))).await;
        if waited.is_err() {
            let seen: Vec<String> = self
                .deliveries()
                .iter()
                .map(|d| {
                    format!(
                        "{} {} ({})",
                        d.event_type.as_deref().unwrap_or("?"),
                        d.session_id.as_deref().unwrap_or("-"),
                        d.answered
                    )
                })
                .collect();
            panic!("the webhook receiver did not get {what} within {within:?}; it got {seen:#?}");
        }
    }
}

fn unique(log: &[Delivery]) -> Vec<Delivery> {
    let mut seen = HashSet::new();
    log.iter()
        .filter(|d| d.accepted() && seen.insert(d.event_id.clone()))
        .cloned()
        .collect()
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let signature_header = header(signature::HEADER);
    let verdict = signature::verify(
        &shared.secret,
        signature_header.as_deref(),
        &body,
        signature::now(),
    );
    // A receiver acts on nothing it cannot authenticate.
    let answered = if verdict == Verdict::Valid {
        shared.answer.load(Ordering::SeqCst)
    } else {
        401
    };
    let delivery = Delivery {
        event_id: header("lanyard-event-id"),
        event_type: header("lanyard-event-type"),
        session_id: parsed["session"]["id"].as_str().map(str::to_owned),
        signature_header,
        signature: verdict,
        raw_body: String::from_utf8_lossy(&body).into_owned(),
        body: parsed,
        answered,
        received_at: Instant::now(),
    };
    let processed = delivery.accepted();
    shared.log.send_modify(|log| log.push(delivery));
    let slow = if processed {
        shared.slow_next.lock().unwrap().take()
    } else {
        None
    };
    if let Some(delay) = slow {
        tokio::time::sleep(delay).await;
    }
    StatusCode::from_u16(answered).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
