//! Delivering the outbox: every instance polls for due deliveries (and is woken at once by
//! its own commits), takes each one on a lease, POSTs it, and records the result. Failures
//! are retried with exponential backoff and jitter up to the webhook's `max_attempts`, then
//! the delivery is dead. One session's events reach a webhook in the order they were
//! written: a delivery waits while an older one of the same session is undelivered. A
//! crashed instance's leases run out and another instance (or the restarted one) takes
//! over: delivery is at least once, and `Lanyard-Event-Id` lets receivers drop repeats.
//!
//! The same task writes `session.ended` for sessions that ran out.

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::PgPool;
use tokio::sync::Notify;

use super::{ENDED, NewEvent, Outbox};
use crate::config::events::{Webhook, WebhookFormat};
use crate::db::{self, events::Claimed};
use crate::metrics::{AttemptResult, EventMetrics};
use crate::signature;

/// How often the outbox is polled for work other instances wrote (or retries fell due).
const POLL: Duration = Duration::from_secs(1);
/// How often sessions that ran out are looked for, and the backlog gauges refreshed.
const SWEEP: Duration = Duration::from_secs(2);
/// Deliveries taken per round.
const BATCH: i64 = 64;
/// Events (and their deliveries) are kept this many days once nothing waits for them.
pub const EVENT_RETENTION_DAYS: i32 = 30;
/// How often old events are pruned.
const PRUNE: Duration = Duration::from_secs(3600);
/// The first retry comes after about this long; each further one after twice as long.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Starts the deliverers, one per webhook (a slow or failing receiver holds back only its
/// own deliveries), and the expiry sweeper on this instance.
pub fn spawn(db: PgPool, outbox: Outbox, metrics: EventMetrics) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("lanyard/", env!("CARGO_PKG_VERSION")))
        .build()?;
    for webhook in outbox.webhooks().iter() {
        tokio::spawn(deliver_to(
            db.clone(),
            webhook.clone(),
            metrics.clone(),
            client.clone(),
            outbox.wake_handle(),
        ));
    }
    tokio::spawn(sweep(db, outbox, metrics));
    Ok(())
}

/// Delivers one webhook's due deliveries until the application stops (it closes the pool;
/// what is left is delivered by another instance, or by this one when it starts again).
async fn deliver_to(
    db: PgPool,
    webhook: Webhook,
    metrics: EventMetrics,
    client: reqwest::Client,
    wake: Arc<Notify>,
) {
    let names = [webhook.name.clone()];
    // A crashed instance's deliveries are taken over once their lease runs out.
    let lease = (webhook.timeout + Duration::from_secs(20)).as_secs_f64();
    while !db.is_closed() {
        match db::events::claim(&db, &names, BATCH, lease).await {
            Ok(batch) if !batch.is_empty() => {
                // At most one per session (ordering key): they may go out side by side.
                let mut tasks = tokio::task::JoinSet::new();
                for delivery in batch {
                    let (db, client, metrics, webhook) =
                        (db.clone(), client.clone(), metrics.clone(), webhook.clone());
                    tasks.spawn(async move {
                        deliver(&db, &client, &metrics, &webhook, delivery).await;
                    });
                }
                while tasks.join_next().await.is_some() {}
                // More may be due at once (the next event of a session just delivered).
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(webhook = %webhook.name, error = %e,
                                     "reading the event outbox failed; retrying"),
        }
        let _ = tokio::time::timeout(POLL, wake.notified()).await;
    }
}

/// Writes `session.ended` for sessions that ran out and refreshes the backlog gauges, every
/// [`SWEEP`], until the application stops.
async fn sweep(db: PgPool, outbox: Outbox, metrics: EventMetrics) {
    let names: Vec<String> = outbox.webhooks().iter().map(|w| w.name.clone()).collect();
    let mut last_prune: Option<tokio::time::Instant> = None;
    while !db.is_closed() {
        if let Err(e) = sweep_ended(&db, &outbox).await {
            tracing::warn!(error = %e, "writing session.ended events failed; retrying");
        }
        if last_prune.is_none_or(|at| at.elapsed() >= PRUNE) {
            match db::events::prune(&db, EVENT_RETENTION_DAYS).await {
                Ok(pruned) => {
                    last_prune = Some(tokio::time::Instant::now());
                    if pruned > 0 {
                        tracing::info!(
                            pruned,
                            "deleted events older than {EVENT_RETENTION_DAYS} days"
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %e, "pruning old events failed; retrying"),
            }
        }
        refresh_backlog(&db, &names, &metrics).await;
        tokio::time::sleep(SWEEP).await;
    }
}

/// One attempt at one delivery, and its result recorded.
async fn deliver(
    db: &PgPool,
    client: &reqwest::Client,
    metrics: &EventMetrics,
    webhook: &Webhook,
    delivery: Claimed,
) {
    let body = match webhook.format {
        WebhookFormat::Lanyard => delivery.payload.to_string(),
        WebhookFormat::Slack => {
            serde_json::json!({ "text": slack_text(&delivery.payload) }).to_string()
        }
    };
    let mut request = client
        .post(webhook.url.expose_secret())
        .timeout(webhook.timeout)
        .header("content-type", "application/json")
        .header("lanyard-event-id", delivery.event_id.to_string())
        .header("lanyard-event-type", &delivery.kind);
    if let Some(secret) = &webhook.secret {
        let now = chrono::Utc::now().timestamp();
        request = request.header(
            signature::HEADER,
            signature::sign(secret.expose_secret().as_bytes(), now, body.as_bytes()),
        );
    }
    let outcome = match request.body(body).send().await {
        Ok(response) if response.status().is_success() => Ok(response.status().as_u16()),
        Ok(response) => Err((
            Some(response.status().as_u16()),
            format!("the receiver answered {}", response.status()),
        )),
        // The error's text may carry the URL (a secret for Slack): say what kind it was.
        Err(e) => Err((None, describe(&e).to_owned())),
    };
    let recorded = match outcome {
        Ok(status) => {
            metrics.attempt(&webhook.name, AttemptResult::Delivered);
            db::events::delivered(db, &delivery, i32::from(status)).await
        }
        Err((status, error)) => {
            let attempts = u32::try_from(delivery.attempts).unwrap_or(0) + 1;
            let dead = attempts >= webhook.max_attempts;
            metrics.attempt(
                &webhook.name,
                if dead {
                    AttemptResult::Dead
                } else {
                    AttemptResult::Failed
                },
            );
            tracing::warn!(webhook = %webhook.name, event = %delivery.event_id, attempts, dead,
                           %error, "webhook delivery failed");
            let wait = backoff(attempts, webhook.backoff_max);
            db::events::failed(
                db,
                &delivery,
                status.map(i32::from),
                &error,
                wait.as_secs_f64(),
                dead,
            )
            .await
        }
    };
    if let Err(e) = recorded {
        // The lease runs out and the delivery is tried again: at least once.
        tracing::warn!(error = %e, "recording a webhook delivery failed");
    }
}

fn describe(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_redirect() {
        "redirected (not followed)"
    } else {
        "request failed"
    }
}

/// The wait before attempt `attempts + 1`: 1 s, 2 s, 4 s … up to `max`, each between half
/// and all of that (full jitter keeps many brokers' retries from arriving together).
pub fn backoff(attempts: u32, max: Duration) -> Duration {
    let exp = FIRST_RETRY.saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
    let ceiling = exp.min(max);
    let mut byte = [0u8; 1];
    let fraction = if getrandom::fill(&mut byte).is_ok() {
        0.5 + f64::from(byte[0]) / 510.0
    } else {
        1.0
    };
    ceiling.mul_f64(fraction)
}

/// `text` with Slack's control characters escaped (`&`, `<`, `>`), so that a case title or
/// a comment cannot mention `<!channel>` or disguise a link.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A one-line summary for Slack-compatible receivers, every value from the event escaped.
fn slack_text(payload: &serde_json::Value) -> String {
    slack_text_raw(&escape_strings(payload))
}

fn escape_strings(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::String(s) => serde_json::Value::String(slack_escape(s)),
        serde_json::Value::Array(items) => items.iter().map(escape_strings).collect(),
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.clone(), escape_strings(v)))
            .collect(),
        other => other.clone(),
    }
}

fn slack_text_raw(payload: &serde_json::Value) -> String {
    let kind = payload["type"].as_str().unwrap_or("event");
    let actor = payload["actor"].as_str().unwrap_or("?");
    let s = &payload["session"];
    let what = match s["tier"].as_str() {
        Some(tier) => format!("{tier}-tier session"),
        None => "session".to_owned(),
    };
    let case = payload["case_id"]
        .as_str()
        .map(|c| match s["case_title"].as_str() {
            Some(title) => format!(" (case {c}: {title})"),
            None => format!(" (case {c})"),
        })
        .unwrap_or_default();
    let customer = s["customer"].as_str().unwrap_or("?");
    let owner = s["requested_by"].as_str().unwrap_or("?");
    let comment = payload["comment"]
        .as_str()
        .map(|c| format!(": \"{c}\""))
        .unwrap_or_default();
    match kind {
        "session.requested" => format!(
            "Lanyard: {owner} asks for a {what} on {customer}{case}; it needs approval \
             (`lanyard sessions approve {}`)",
            s["id"].as_str().unwrap_or("?")
        ),
        "session.approved" => {
            format!("Lanyard: {actor} approved {owner}'s {what} on {customer}{case}{comment}")
        }
        "session.denied" => {
            format!("Lanyard: {actor} denied {owner}'s {what} on {customer}{case}{comment}")
        }
        "session.opened" => format!("Lanyard: {owner} opened a {what} on {customer}{case}"),
        "session.revoked" => {
            format!("Lanyard: {actor} revoked {owner}'s {what} on {customer}{case}")
        }
        "session.ended" => format!("Lanyard: {owner}'s {what} on {customer}{case} ended"),
        "case.closed" => format!(
            "Lanyard: case {} closed by {actor}",
            payload["case_id"].as_str().unwrap_or("?")
        ),
        other => format!("Lanyard: {other} by {actor}"),
    }
}

/// Writes `session.ended` for sessions that ran out since the last sweep (each once, on
/// whichever instance marks it first).
async fn sweep_ended(db: &PgPool, outbox: &Outbox) -> Result<(), sqlx::Error> {
    loop {
        let mut tx = db.begin().await?;
        let ended = db::session_changes::claim_ended(&mut tx, 100).await?;
        for session in &ended {
            outbox
                .write(&mut tx, NewEvent::session(ENDED, "system", session))
                .await?;
        }
        tx.commit().await?;
        if ended.is_empty() {
            return Ok(());
        }
        outbox.committed();
    }
}

async fn refresh_backlog(db: &PgPool, names: &[String], metrics: &EventMetrics) {
    let Ok(rows) = db::events::status_counts(db, true).await else {
        return;
    };
    for name in names {
        for state in ["pending", "dead"] {
            let count = rows
                .iter()
                .find(|r| &r.0 == name && r.1.as_str() == state)
                .map_or(0, |r| r.2);
            metrics.backlog(name, state, count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_text_escapes_what_slack_would_act_on() {
        let text = slack_text(&serde_json::json!({
            "type": "session.approved", "actor": "bob", "comment": "<!channel> & <https://x|y>",
            "case_id": "CS-1",
            "session": { "customer": "acme", "requested_by": "alice", "case_title": "a<b" }
        }));
        assert!(
            !text.contains("<!channel>") && !text.contains("<https"),
            "{text}"
        );
        assert!(text.contains("&lt;!channel&gt; &amp;"), "{text}");
        assert!(text.contains("case CS-1: a&lt;b"), "{text}");
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let max = Duration::from_secs(60);
        for attempts in 1..=10u32 {
            let full = Duration::from_secs(1 << (attempts - 1)).min(max);
            let wait = backoff(attempts, max);
            assert!(wait <= full && wait >= full / 2, "{attempts}: {wait:?}");
        }
        assert!(backoff(40, max) <= max);
    }
}
