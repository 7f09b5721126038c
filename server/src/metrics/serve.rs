//! Serving the metrics: `GET /metrics` on its own listener, and the periodic count of live
//! sessions.

use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, TextEncoder};

use super::Metrics;

impl Metrics {
    fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// The router of the metrics listener: `GET /metrics`.
    pub fn router(&self) -> Router {
        let metrics = self.clone();
        Router::new().route(
            "/metrics",
            get(move || async move {
                match metrics.render() {
                    Ok(text) => (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        text,
                    )
                        .into_response(),
                    Err(e) => {
                        tracing::error!(error = %e, "encoding metrics failed");
                        StatusCode::INTERNAL_SERVER_ERROR.into_response()
                    }
                }
            }),
        )
    }
}

/// Keeps `lanyard_active_sessions` current: one COUNT every [`ACTIVE_SESSIONS_EVERY`], never
/// per request. A failed count leaves the last value (and logs).
pub fn spawn_active_sessions(db: sqlx::PgPool, metrics: Metrics) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(ACTIVE_SESSIONS_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match crate::db::sessions::count_active(&db).await {
                Ok(n) => metrics.set_active_sessions(n),
                Err(sqlx::Error::PoolClosed) => return, // the application stopped
                Err(e) => tracing::warn!(error = %e, "counting active sessions failed"),
            }
        }
    });
}

pub const ACTIVE_SESSIONS_EVERY: Duration = Duration::from_secs(15);
