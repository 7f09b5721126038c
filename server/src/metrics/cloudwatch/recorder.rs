//! The request-path side of the CloudWatch publisher: credential requests counted into open
//! windows per session and outcome, and the statistic sets a closed window becomes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit, StatisticSet};
use uuid::Uuid;

use super::{
    DIMENSIONS, MAX_DIMENSION_VALUE_CHARS, MAX_OPEN_ENTRIES, METRIC_CACHE_HITS, METRIC_DURATION,
    METRIC_REQUESTS,
};
use crate::domain::{Outcome, SessionKind};

/// One answered credential request, borrowed from the handler's session (no copies on the
/// hot path: strings are cloned only when a window first sees a session).
#[derive(Debug, Clone, Copy)]
pub struct CredentialRequest<'a> {
    pub session: Uuid,
    pub customer: &'a str,
    pub profile: &'a str,
    pub kind: SessionKind,
    pub outcome: Outcome,
    pub cache_hit: Option<bool>,
    pub elapsed: Duration,
}

/// A window's entry: a session's requests with one outcome. Sessions map to exactly one
/// (customer, profile, kind), so keying by session id needs no string on the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Key {
    window: i64,
    session: Uuid,
    outcome: Outcome,
}

/// A CloudWatch dimension set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Dims {
    pub(super) customer: String,
    pub(super) profile: String,
    pub(super) kind: SessionKind,
    pub(super) outcome: Outcome,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Tally {
    pub(super) requests: u64,
    pub(super) cache_hits: u64,
    pub(super) ms_sum: f64,
    pub(super) ms_min: f64,
    pub(super) ms_max: f64,
}

impl Tally {
    pub(super) fn one(ms: f64, hit: bool) -> Tally {
        Tally {
            requests: 1,
            cache_hits: u64::from(hit),
            ms_sum: ms,
            ms_min: ms,
            ms_max: ms,
        }
    }

    fn merge(&mut self, other: &Tally) {
        self.requests += other.requests;
        self.cache_hits += other.cache_hits;
        self.ms_sum += other.ms_sum;
        self.ms_min = self.ms_min.min(other.ms_min);
        self.ms_max = self.ms_max.max(other.ms_max);
    }
}

/// The request-path side: counts requests into open windows.
pub struct Recorder {
    window_secs: i64,
    open: Mutex<HashMap<Key, (Dims, Tally)>>,
    dropped: prometheus::IntCounter,
}

impl Recorder {
    pub(super) fn new(window: Duration, dropped: prometheus::IntCounter) -> Recorder {
        Recorder {
            window_secs: i64::try_from(window.as_secs()).unwrap_or(60).max(1),
            open: Mutex::new(HashMap::new()),
            dropped,
        }
    }

    /// Counts one request. Never waits on I/O; holds the lock for one map update.
    pub fn record(&self, request: &CredentialRequest<'_>) {
        let window = now_secs().div_euclid(self.window_secs) * self.window_secs;
        let key = Key {
            window,
            session: request.session,
            outcome: request.outcome,
        };
        let tally = Tally::one(
            request.elapsed.as_secs_f64() * 1000.0,
            request.cache_hit == Some(true),
        );
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, existing)) = open.get_mut(&key) {
            existing.merge(&tally);
            return;
        }
        if open.len() >= MAX_OPEN_ENTRIES {
            drop(open);
            self.dropped.inc();
            return;
        }
        let dims = Dims {
            customer: request.customer.to_owned(),
            profile: request.profile.to_owned(),
            kind: request.kind,
            outcome: request.outcome,
        };
        open.insert(key, (dims, tally));
    }

    /// Takes the windows that ended by `now` (all of them when `now` is `None`), merged
    /// per window and dimension set.
    pub(super) fn take_closed(&self, now: Option<i64>) -> BTreeMap<(i64, Dims), Tally> {
        let taken: Vec<(Key, (Dims, Tally))> = {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            match now {
                None => open.drain().collect(),
                Some(now) => open
                    .extract_if(|key, _| key.window + self.window_secs <= now)
                    .collect(),
            }
        };
        let mut merged: BTreeMap<(i64, Dims), Tally> = BTreeMap::new();
        for (key, (dims, tally)) in taken {
            merged
                .entry((key.window, dims))
                .and_modify(|t| t.merge(&tally))
                .or_insert(tally);
        }
        merged
    }
}

pub(super) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A dimension value CloudWatch accepts: 1 to [`MAX_DIMENSION_VALUE_CHARS`] characters.
pub(super) fn dimension_value(value: &str) -> String {
    if value.is_empty() {
        return "none".to_owned();
    }
    value.chars().take(MAX_DIMENSION_VALUE_CHARS).collect()
}

/// One datum ready to send, with its estimated share of the request body.
#[derive(Debug, Clone)]
pub(super) struct Datum {
    pub(super) datum: MetricDatum,
    pub(super) bytes: usize,
}

/// The three datums of one window and dimension set.
pub(super) fn datums(window: i64, dims: &Dims, tally: &Tally) -> Vec<Datum> {
    let values = [
        dimension_value(&dims.customer),
        dimension_value(&dims.profile),
        dims.kind.as_str().to_owned(),
        dims.outcome.as_str().to_owned(),
    ];
    // An upper bound of the form-encoded size: field names with 4-digit member indexes,
    // the timestamp, 4 numbers of up to 24 characters, unit and resolution take < 940
    // bytes, plus each dimension value percent-encoded (at most 3 bytes per byte). With
    // short values a call carries ~970 datums; long ones cut it earlier.
    let bytes = 940 + 3 * values.iter().map(String::len).sum::<usize>();
    let dimensions: Vec<Dimension> = DIMENSIONS
        .iter()
        .zip(values)
        .map(|(name, value)| Dimension::builder().name(*name).value(value).build())
        .collect();
    let n = tally.requests as f64;
    let hits = tally.cache_hits as f64;
    let make = |name: &str, unit: StandardUnit, stats: StatisticSet| Datum {
        datum: MetricDatum::builder()
            .metric_name(name)
            .set_dimensions(Some(dimensions.clone()))
            .timestamp(DateTime::from_secs(window))
            .statistic_values(stats)
            .unit(unit)
            .storage_resolution(60)
            .build(),
        bytes,
    };
    let set = |count: f64, sum: f64, min: f64, max: f64| {
        StatisticSet::builder()
            .sample_count(count)
            .sum(sum)
            .minimum(min)
            .maximum(max)
            .build()
    };
    vec![
        make(METRIC_REQUESTS, StandardUnit::Count, set(n, n, 1.0, 1.0)),
        make(
            METRIC_DURATION,
            StandardUnit::Milliseconds,
            set(n, tally.ms_sum, tally.ms_min, tally.ms_max),
        ),
        make(
            METRIC_CACHE_HITS,
            StandardUnit::Count,
            set(
                n,
                hits,
                if tally.cache_hits == tally.requests {
                    1.0
                } else {
                    0.0
                },
                if tally.cache_hits > 0 { 1.0 } else { 0.0 },
            ),
        ),
    ]
}
