//! Waiting for a condition, never for a duration.

use std::time::Duration;

/// Polls `check` until it returns true or `deadline` passes; returns whether it did. For
/// guarantees stated as "within N seconds" (revocation across instances).
pub async fn eventually<F, Fut>(deadline: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = std::time::Instant::now() + deadline;
    loop {
        if check().await {
            return true;
        }
        if std::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
