//! Prometheus metrics, served on their own listener, and the entry point of the per-request
//! usage counts (which also feed the CloudWatch publisher, see `cloudwatch`). HTTP metrics
//! are labelled by the matched route (never the raw path, which would carry ids).
//!
//! Hot-path counters are resolved to their label children once, here, so that a request
//! pays an atomic add and no label hashing.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

pub mod cloudwatch;
mod events;
mod oidc;
mod serve;

pub use events::{AttemptResult, EventMetrics};
pub use oidc::{ExchangeOutcome, OidcMetrics};
pub use serve::{ACTIVE_SESSIONS_EVERY, spawn_active_sessions};

use crate::domain::Outcome;
use cloudwatch::{CredentialRequest, Recorder};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    credentials: CredentialMetrics,
    sts: StsMetrics,
    cloudwatch: CloudWatchMetrics,
    active_sessions: IntGauge,
    audit_batch_events: Histogram,
    audit_commit_duration: Histogram,
    exports: ExportMetrics,
    oidc: OidcMetrics,
    events: EventMetrics,
    /// Set when CloudWatch publishing is on.
    recorder: Option<Arc<Recorder>>,
}

/// `lanyard_credential_requests_total{outcome}` children and the cache counters.
#[derive(Clone)]
struct CredentialMetrics {
    success: IntCounter,
    denied: IntCounter,
    error: IntCounter,
    cache_hits: IntCounter,
    cache_misses: IntCounter,
}

/// What `sts` counts about its calls to AWS.
#[derive(Clone)]
pub struct StsMetrics {
    success: IntCounter,
    denied: IntCounter,
    throttled: IntCounter,
    error: IntCounter,
    duration: Histogram,
}

impl StsMetrics {
    /// Counts one finished AssumeRole call. `code` is the AWS error code of a failure.
    pub fn observe(&self, code: Option<&str>, elapsed: Duration) {
        let counter = match code {
            None => &self.success,
            Some("AccessDenied") => &self.denied,
            Some("Throttling" | "ThrottlingException" | "RequestLimitExceeded") => &self.throttled,
            Some(_) => &self.error,
        };
        counter.inc();
        self.duration.observe(elapsed.as_secs_f64());
    }
}

/// What the CloudWatch publisher counts about itself.
#[derive(Clone)]
pub struct CloudWatchMetrics {
    pub published_datums: IntCounter,
    pub publish_failures: IntCounter,
    pub dropped_datums: IntCounter,
    pub pending_datums: IntGauge,
}

/// Audit exports running, and those cut off (`audit::export`).
#[derive(Clone)]
struct ExportMetrics {
    running: IntGauge,
    cut_idle: IntCounter,
    cut_deadline: IntCounter,
}

/// Why an audit export was cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportCut {
    /// The client took no data for the idle write time.
    Idle,
    /// The export ran past its total time.
    Deadline,
}

impl ExportCut {
    pub fn as_str(self) -> &'static str {
        match self {
            ExportCut::Idle => "idle",
            ExportCut::Deadline => "deadline",
        }
    }
}

/// Counts an export as running until dropped.
pub struct RunningExport(IntGauge);

impl Drop for RunningExport {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Latency buckets for calls to AWS (seconds).
const AWS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0,
];

impl Metrics {
    pub fn new() -> anyhow::Result<Self> {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "lanyard_http_requests_total",
                "HTTP requests answered, by route, method and status",
            ),
            &["route", "method", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "lanyard_http_request_duration_seconds",
                "HTTP request latency, by route and method",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["route", "method"],
        )?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;

        let requests = IntCounterVec::new(
            Opts::new(
                "lanyard_credential_requests_total",
                "Credential requests answered (every credentials.issue audit event), by outcome: \
                 success, denied or error",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        let credentials = CredentialMetrics {
            success: requests.with_label_values(&["success"]),
            denied: requests.with_label_values(&["denied"]),
            error: requests.with_label_values(&["error"]),
            cache_hits: counter(
                &registry,
                "lanyard_credential_cache_hits_total",
                "Credential requests served from the per-session credential cache",
            )?,
            cache_misses: counter(
                &registry,
                "lanyard_credential_cache_misses_total",
                "Credential requests that looked in the cache and needed AssumeRole \
                 (their own call, or one shared with concurrent requests)",
            )?,
        };

        let sts_calls = IntCounterVec::new(
            Opts::new(
                "lanyard_sts_calls_total",
                "AssumeRole calls made to STS (credential issues and role verifications), by \
                 outcome: success, denied, throttled or error",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(sts_calls.clone()))?;
        let sts_duration = Histogram::with_opts(
            HistogramOpts::new(
                "lanyard_sts_call_duration_seconds",
                "Latency of AssumeRole calls, SDK retries included, rate-limiter wait excluded",
            )
            .buckets(AWS_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(sts_duration.clone()))?;
        let sts = StsMetrics {
            success: sts_calls.with_label_values(&["success"]),
            denied: sts_calls.with_label_values(&["denied"]),
            throttled: sts_calls.with_label_values(&["throttled"]),
            error: sts_calls.with_label_values(&["error"]),
            duration: sts_duration,
        };

        let cloudwatch = CloudWatchMetrics {
            published_datums: counter(
                &registry,
                "lanyard_cloudwatch_published_datums_total",
                "Metric datums CloudWatch accepted (PutMetricData succeeded)",
            )?,
            publish_failures: counter(
                &registry,
                "lanyard_cloudwatch_publish_failures_total",
                "PutMetricData calls that failed after the SDK's retries",
            )?,
            dropped_datums: counter(
                &registry,
                "lanyard_cloudwatch_dropped_datums_total",
                "Metric datums given up: buffer full, retries exhausted, or not sent before \
                 shutdown",
            )?,
            pending_datums: gauge(
                &registry,
                "lanyard_cloudwatch_pending_datums",
                "Metric datums waiting to be sent to CloudWatch",
            )?,
        };
        let active_sessions = gauge(
            &registry,
            "lanyard_active_sessions",
            "Sessions neither expired nor revoked (counted from the database every 15 s)",
        )?;
        let audit_batch_events = Histogram::with_opts(
            HistogramOpts::new(
                "lanyard_audit_batch_events",
                "Audit events written per group commit",
            )
            .buckets(vec![
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0,
            ]),
        )?;
        let audit_commit_duration = Histogram::with_opts(
            HistogramOpts::new(
                "lanyard_audit_commit_duration_seconds",
                "Time to write and commit one audit batch",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )?;
        registry.register(Box::new(audit_batch_events.clone()))?;
        registry.register(Box::new(audit_commit_duration.clone()))?;
        let cut = IntCounterVec::new(
            Opts::new(
                "lanyard_audit_exports_cut_total",
                "Audit exports (NDJSON, CSV) cut off because the client read nothing for the \
                 idle write time (reason=idle) or the export ran past its total time \
                 (reason=deadline); each released its slot and database connection",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(cut.clone()))?;
        let exports = ExportMetrics {
            running: gauge(
                &registry,
                "lanyard_audit_exports_running",
                "Audit exports streaming now (each holds an export slot and a connection)",
            )?,
            cut_idle: cut.with_label_values(&[ExportCut::Idle.as_str()]),
            cut_deadline: cut.with_label_values(&[ExportCut::Deadline.as_str()]),
        };
        let oidc = OidcMetrics::register(&registry)?;
        let events = EventMetrics::register(&registry)?;
        Ok(Metrics {
            registry,
            http_requests,
            http_duration,
            credentials,
            sts,
            cloudwatch,
            active_sessions,
            audit_batch_events,
            audit_commit_duration,
            exports,
            oidc,
            events,
            recorder: None,
        })
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Feeds every later [`Metrics::observe_credentials`] to the CloudWatch publisher too.
    pub fn with_cloudwatch(mut self, recorder: Arc<Recorder>) -> Self {
        self.recorder = Some(recorder);
        self
    }

    pub fn sts(&self) -> StsMetrics {
        self.sts.clone()
    }

    pub fn oidc(&self) -> OidcMetrics {
        self.oidc.clone()
    }

    pub fn events(&self) -> &EventMetrics {
        &self.events
    }

    pub fn cloudwatch(&self) -> CloudWatchMetrics {
        self.cloudwatch.clone()
    }

    pub fn set_active_sessions(&self, count: i64) {
        self.active_sessions.set(count);
    }

    pub fn observe_http(&self, route: &str, method: &str, status: StatusCode, elapsed: Duration) {
        self.http_requests
            .with_label_values(&[route, method, status.as_str()])
            .inc();
        self.http_duration
            .with_label_values(&[route, method])
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one answered credential request (Prometheus, and CloudWatch when on). Never
    /// waits and never fails: a few atomic adds and, with CloudWatch, one short lock.
    pub fn observe_credentials(&self, request: &CredentialRequest<'_>) {
        let c = &self.credentials;
        match request.outcome {
            Outcome::Success => c.success.inc(),
            Outcome::Denied => c.denied.inc(),
            Outcome::Error => c.error.inc(),
        }
        match request.cache_hit {
            Some(true) => c.cache_hits.inc(),
            Some(false) => c.cache_misses.inc(),
            None => {}
        }
        if let Some(recorder) = &self.recorder {
            recorder.record(request);
        }
    }

    /// Counts one audit group commit: how many events it carried and how long it took.
    pub fn observe_audit_batch(&self, events: usize, commit_seconds: f64) {
        self.audit_batch_events.observe(events as f64);
        self.audit_commit_duration.observe(commit_seconds);
    }

    /// Counts an audit export as running while the guard lives.
    pub fn export_running(&self) -> RunningExport {
        self.exports.running.inc();
        RunningExport(self.exports.running.clone())
    }

    /// Counts an audit export cut off for `reason`.
    pub fn export_cut(&self, reason: ExportCut) {
        match reason {
            ExportCut::Idle => self.exports.cut_idle.inc(),
            ExportCut::Deadline => self.exports.cut_deadline.inc(),
        }
    }
}

fn counter(registry: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounter> {
    let c = IntCounter::new(name, help)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(registry: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    let g = IntGauge::new(name, help)?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}
