//! The CloudWatch publisher: credential requests counted per time window and dimension set,
//! published in the background with PutMetricData. Off unless `cloudwatch_namespace` is set.
//!
//! Recording happens on the request path and must never slow or fail it: one short std
//! mutex over a map of open windows, no await, no I/O, a bounded number of entries. A
//! background task takes the closed windows every `cloudwatch_flush_secs` (default 60: one
//! window per minute, CloudWatch's standard resolution), turns each dimension set of each
//! window into statistic sets (SampleCount, Sum, Minimum, Maximum), and sends them in
//! batches within PutMetricData's limits
//! (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_PutMetricData.html>):
//! at most 1,000 datums and 1 MB per call, at most 30 dimensions per datum.
//!
//! Metrics (namespace from the configuration), each with the dimensions `Customer`,
//! `Profile`, `Kind` (`support` | `customer`) and `Outcome` (`success` | `denied` | `error`):
//!
//! | metric | unit | one sample per request |
//! | --- | --- | --- |
//! | `CredentialRequests` | Count | 1 (Sum and SampleCount are the number of requests) |
//! | `CredentialRequestDuration` | Milliseconds | the time the broker took to answer |
//! | `CredentialCacheHits` | Count | 1 if served from the credential cache, else 0 (Average is the hit rate) |
//!
//! A failed call is retried by the SDK (standard mode, exponential backoff with jitter), then
//! by this task with its own exponential backoff, at most [`MAX_ATTEMPTS`] times per batch.
//! Pending datums are bounded ([`MAX_PENDING_DATUMS`]); what does not fit, exhausts its
//! retries, or is still unsent when the shutdown flush runs out of time is dropped and
//! counted (`lanyard_cloudwatch_dropped_datums_total`). On shutdown the open window is
//! flushed once, within [`SHUTDOWN_FLUSH`]. A call under way when the stop arrives is let
//! finish within that budget, never abandoned and sent again: it may already have arrived,
//! and a batch sent twice would inflate every sum. One that the budget cuts short is
//! counted as dropped.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_cloudwatch::types::MetricDatum;
use tokio::sync::oneshot;

use crate::config::Config;
use crate::metrics::CloudWatchMetrics;

mod recorder;
#[cfg(test)]
mod tests;

pub use recorder::{CredentialRequest, Recorder};
use recorder::{Datum, datums, now_secs};

/// PutMetricData's limit on datums per call.
pub const MAX_DATUMS_PER_CALL: usize = 1000;
/// Our ceiling on the estimated form-encoded size of one call's datums: AWS's limit is
/// 1 MB per request, and the rest of the body (action, version, namespace) takes < 1 KB.
pub const MAX_CALL_BYTES: usize = 990_000;
/// Longest dimension value sent (AWS allows 1,024; shorter keeps batches large).
pub const MAX_DIMENSION_VALUE_CHARS: usize = 255;
/// Failed PutMetricData calls (each after the SDK's own retries) before a batch is dropped.
pub const MAX_ATTEMPTS: u32 = 3;
/// Datums held for sending at most; the oldest are dropped beyond this.
pub const MAX_PENDING_DATUMS: usize = 20_000;
/// Distinct (window, session, outcome) entries recorded at most; requests beyond are
/// counted as dropped instead of recorded.
pub const MAX_OPEN_ENTRIES: usize = 100_000;
/// Time the final flush on shutdown may take.
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);
/// Backoff of this task between failed calls: doubles from the first, up to the cap.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(60);

/// Names of the published metrics and dimensions.
pub const METRIC_REQUESTS: &str = "CredentialRequests";
pub const METRIC_DURATION: &str = "CredentialRequestDuration";
pub const METRIC_CACHE_HITS: &str = "CredentialCacheHits";
pub const DIMENSIONS: [&str; 4] = ["Customer", "Profile", "Kind", "Outcome"];
/// Datums for one PutMetricData call.
#[derive(Debug, Default)]
struct Batch {
    datums: Vec<MetricDatum>,
    bytes: usize,
    /// Failed calls so far; a batch that was tried is not added to any more.
    attempts: u32,
}

/// Batches waiting to be sent, bounded by [`MAX_PENDING_DATUMS`].
#[derive(Debug, Default)]
struct Pending {
    batches: VecDeque<Batch>,
    datums: usize,
}

impl Pending {
    /// Appends datums, filling the last untried batch first; drops (and returns the number
    /// of) the oldest datums when the bound is exceeded.
    fn push(&mut self, new: Vec<Datum>) -> usize {
        for d in new {
            let fits = self.batches.back().is_some_and(|b| {
                b.attempts == 0
                    && b.datums.len() < MAX_DATUMS_PER_CALL
                    && b.bytes + d.bytes <= MAX_CALL_BYTES
            });
            if !fits {
                self.batches.push_back(Batch::default());
            }
            if let Some(batch) = self.batches.back_mut() {
                batch.datums.push(d.datum);
                batch.bytes += d.bytes;
                self.datums += 1;
            }
        }
        let mut dropped = 0;
        while self.datums > MAX_PENDING_DATUMS {
            match self.batches.pop_front() {
                Some(b) => {
                    dropped += b.datums.len();
                    self.datums -= b.datums.len();
                }
                None => break,
            }
        }
        dropped
    }

    fn pop_front(&mut self) -> Option<Batch> {
        let batch = self.batches.pop_front()?;
        self.datums -= batch.datums.len();
        Some(batch)
    }
}

/// The running publisher: stop it with [`Publisher::stop`] for the final flush.
pub struct Publisher {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    /// Starts publishing when `cloudwatch_namespace` is set; returns the recorder for the
    /// request path and the publisher. `sdk` is the AWS configuration STS uses; the
    /// endpoint may be overridden by `cloudwatch_endpoint_url`.
    pub fn start(
        config: &Config,
        sdk: &SdkConfig,
        metrics: CloudWatchMetrics,
    ) -> Option<(Arc<Recorder>, Publisher)> {
        let namespace = config.cloudwatch_namespace.clone()?;
        let mut builder = aws_sdk_cloudwatch::config::Builder::from(sdk)
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(Duration::from_secs(10))
                    .operation_timeout(Duration::from_secs(30))
                    .build(),
            );
        if let Some(url) = &config.cloudwatch_endpoint_url {
            builder = builder.endpoint_url(url);
        }
        let client = aws_sdk_cloudwatch::Client::from_conf(builder.build());
        let recorder = Arc::new(Recorder::new(
            config.cloudwatch_flush,
            metrics.dropped_datums.clone(),
        ));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(
            Sender {
                client,
                namespace,
                metrics,
                pending: Pending::default(),
                failures_in_row: 0,
                retry_at: None,
                in_flight: AtomicBool::new(false),
            },
            recorder.clone(),
            config.cloudwatch_flush,
            stopped,
        ));
        Some((recorder, Publisher { stop, task }))
    }

    /// Flushes what was recorded (the open window too) once, within [`SHUTDOWN_FLUSH`], and
    /// ends the task.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        if tokio::time::timeout(SHUTDOWN_FLUSH + Duration::from_secs(1), self.task)
            .await
            .is_err()
        {
            tracing::warn!("the CloudWatch publisher did not stop in time");
        }
    }
}

struct Sender {
    client: aws_sdk_cloudwatch::Client,
    namespace: String,
    metrics: CloudWatchMetrics,
    pending: Pending,
    failures_in_row: u32,
    /// No call before this instant (backoff after a failure).
    retry_at: Option<Instant>,
    /// Set while a PutMetricData call is under way: still set after the call was dropped
    /// half way.
    in_flight: AtomicBool,
}

async fn run(
    mut sender: Sender,
    recorder: Arc<Recorder>,
    every: Duration,
    mut stopped: oneshot::Receiver<()>,
) {
    // Ticks just after each window ends, so a window goes out within a moment of closing.
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let into_window = Duration::from_millis(
        u64::try_from(since_epoch.as_millis() % every.as_millis().max(1)).unwrap_or(0),
    );
    let first = every.saturating_sub(into_window) + (every / 4).min(Duration::from_secs(2));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + first, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The shutdown budget, counted from the moment the stop arrives.
    let stop_seen = std::sync::OnceLock::new();
    let flush_deadline = || *stop_seen.get_or_init(|| tokio::time::Instant::now() + SHUTDOWN_FLUSH);
    loop {
        tokio::select! {
            biased;
            _ = &mut stopped => break,
            _ = tick.tick() => {}
        }
        sender.enqueue(&recorder, Some(now_secs()));
        let stopping = {
            let send = sender.send_due();
            tokio::pin!(send);
            tokio::select! {
                biased;
                () = &mut send => false,
                _ = &mut stopped => {
                    // A call in flight may already have arrived: it finishes (within the
                    // shutdown budget) rather than its batch going out twice in the flush.
                    let _ = tokio::time::timeout_at(flush_deadline(), send).await;
                    true
                }
            }
        };
        if stopping {
            break;
        }
    }
    if sender.in_flight.swap(false, Ordering::Relaxed) {
        // Cut short by the shutdown budget: whether CloudWatch took it is unknown, and a
        // batch sent twice would inflate every sum, so it is not sent again.
        if let Some(cut) = sender.pending.pop_front() {
            sender
                .metrics
                .dropped_datums
                .inc_by(cut.datums.len() as u64);
            tracing::warn!(
                datums = cut.datums.len(),
                "a PutMetricData call cut short at shutdown is not repeated (it may have arrived)"
            );
        }
    }
    sender.enqueue(&recorder, None);
    let unsent = tokio::time::timeout_at(flush_deadline(), sender.send_each_once()).await;
    let left = sender.pending.datums;
    if left > 0 {
        sender.metrics.dropped_datums.inc_by(left as u64);
        sender.metrics.pending_datums.set(0);
        tracing::warn!(
            datums = left,
            timed_out = unsent.is_err(),
            "CloudWatch datums not sent before shutdown"
        );
    }
}

impl Sender {
    fn enqueue(&mut self, recorder: &Recorder, now: Option<i64>) {
        let closed = recorder.take_closed(now);
        let new: Vec<Datum> = closed
            .iter()
            .flat_map(|((window, dims), tally)| datums(*window, dims, tally))
            .collect();
        let dropped = self.pending.push(new);
        if dropped > 0 {
            self.metrics.dropped_datums.inc_by(dropped as u64);
            tracing::warn!(
                datums = dropped,
                "CloudWatch buffer full; dropped the oldest datums"
            );
        }
        self.metrics.pending_datums.set(self.pending.datums as i64);
    }

    /// Sends pending batches, oldest first, until one fails (then backs off) or none is left.
    async fn send_due(&mut self) {
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        while let Some(batch) = self.pending.batches.front() {
            let result = self.put(&batch.datums).await;
            match result {
                Ok(()) => {
                    self.failures_in_row = 0;
                    self.retry_at = None;
                    if let Some(sent) = self.pending.pop_front() {
                        self.metrics
                            .published_datums
                            .inc_by(sent.datums.len() as u64);
                    }
                }
                Err(error) => {
                    self.failures_in_row += 1;
                    let wait = backoff(self.failures_in_row);
                    self.retry_at = Some(Instant::now() + wait);
                    let mut given_up = 0;
                    if let Some(batch) = self.pending.batches.front_mut() {
                        batch.attempts += 1;
                        if batch.attempts >= MAX_ATTEMPTS {
                            given_up = self.pending.pop_front().map_or(0, |b| b.datums.len());
                            self.metrics.dropped_datums.inc_by(given_up as u64);
                        }
                    }
                    tracing::warn!(
                        error = %error,
                        retry_in_ms = wait.as_millis() as u64,
                        dropped_datums = given_up,
                        "PutMetricData failed"
                    );
                    break;
                }
            }
            self.metrics.pending_datums.set(self.pending.datums as i64);
        }
        self.metrics.pending_datums.set(self.pending.datums as i64);
    }

    /// The shutdown flush: every pending batch gets one call, whatever the backoff.
    async fn send_each_once(&mut self) {
        while let Some(batch) = self.pending.batches.front() {
            let result = self.put(&batch.datums).await;
            // Taken off only now: a call cut short by the deadline leaves its batch
            // pending, so that it is counted as dropped.
            let Some(batch) = self.pending.pop_front() else {
                break;
            };
            match result {
                Ok(()) => self
                    .metrics
                    .published_datums
                    .inc_by(batch.datums.len() as u64),
                Err(error) => {
                    self.metrics
                        .dropped_datums
                        .inc_by(batch.datums.len() as u64);
                    tracing::warn!(error = %error, "PutMetricData failed at shutdown");
                }
            }
            self.metrics.pending_datums.set(self.pending.datums as i64);
        }
    }

    async fn put(&self, datums: &[MetricDatum]) -> Result<(), String> {
        self.in_flight.store(true, Ordering::Relaxed);
        let result = self
            .client
            .put_metric_data()
            .namespace(&self.namespace)
            .set_metric_data(Some(datums.to_vec()))
            .send()
            .await;
        self.in_flight.store(false, Ordering::Relaxed);
        result.map(|_| ()).map_err(|e| {
            self.metrics.publish_failures.inc();
            crate::sts::error_text(&e)
        })
    }
}

/// Exponential backoff with jitter: half to all of `BACKOFF_FIRST * 2^(n-1)`, capped.
fn backoff(failures: u32) -> Duration {
    let full = BACKOFF_FIRST
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(BACKOFF_CAP);
    let jitter = f64::from(getrandom::u32().unwrap_or(u32::MAX / 2)) / f64::from(u32::MAX);
    full.mul_f64(0.5 + jitter / 2.0)
}
