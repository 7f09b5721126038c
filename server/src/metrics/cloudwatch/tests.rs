//! Tests of the CloudWatch publisher: windows, statistic sets, batching within the limits.

use super::recorder::*;
use super::*;
use uuid::Uuid;

use crate::domain::{Outcome, SessionKind};

fn request<'a>(session: Uuid, outcome: Outcome, ms: u64, hit: bool) -> CredentialRequest<'a> {
    CredentialRequest {
        session,
        customer: "acme-corp",
        profile: "customer-acme-corp",
        kind: SessionKind::Customer,
        outcome,
        cache_hit: Some(hit),
        elapsed: Duration::from_millis(ms),
    }
}

fn recorder() -> Recorder {
    Recorder::new(
        Duration::from_secs(60),
        prometheus::IntCounter::new("d", "d").unwrap(),
    )
}

#[test]
fn requests_of_sessions_sharing_a_profile_merge_into_one_statistic_set() {
    let rec = recorder();
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    rec.record(&request(a, Outcome::Success, 10, true));
    rec.record(&request(a, Outcome::Success, 30, false));
    rec.record(&request(b, Outcome::Success, 20, true));
    rec.record(&request(b, Outcome::Denied, 5, false));
    // Nothing has closed yet...
    assert!(rec.take_closed(Some(now_secs() - 120)).is_empty());
    // ...and everything is taken at shutdown.
    let closed = rec.take_closed(None);
    assert_eq!(closed.len(), 2);
    let (_, success) = closed
        .iter()
        .find(|((_, d), _)| d.outcome == Outcome::Success)
        .unwrap();
    assert_eq!(success.requests, 3);
    assert_eq!(success.cache_hits, 2);
    assert!((success.ms_sum - 60.0).abs() < 1e-9);
    assert!((success.ms_min - 10.0).abs() < 1e-9);
    assert!((success.ms_max - 30.0).abs() < 1e-9);
    let datums = datums(0, &closed.keys().next().unwrap().1, success);
    assert_eq!(datums.len(), 3);
    let stats = datums[0].datum.statistic_values().unwrap();
    assert_eq!(stats.sample_count(), Some(3.0));
    assert_eq!(stats.sum(), Some(3.0));
    assert!(rec.take_closed(None).is_empty());
}

#[test]
fn long_dimension_values_are_cut_and_empty_ones_filled() {
    let long = "x".repeat(1000);
    assert_eq!(dimension_value(&long).chars().count(), 255);
    assert_eq!(dimension_value(""), "none");
    let dims = Dims {
        customer: long.clone(),
        profile: long,
        kind: SessionKind::Support,
        outcome: Outcome::Error,
    };
    let d = datums(0, &dims, &Tally::one(1.0, false));
    let dimensions = d[0].datum.dimensions();
    assert_eq!(dimensions.len(), 4);
    assert!(dimensions.len() <= 30);
    assert!(
        dimensions
            .iter()
            .all(|d| d.value().unwrap().chars().count() <= MAX_DIMENSION_VALUE_CHARS)
    );
}

fn some_datums(n: usize, value_len: usize) -> Vec<Datum> {
    let dims = Dims {
        customer: "c".repeat(value_len),
        profile: "p".repeat(value_len),
        kind: SessionKind::Customer,
        outcome: Outcome::Success,
    };
    let one = datums(0, &dims, &Tally::one(1.0, true));
    one.into_iter().cycle().take(n).collect()
}

#[test]
fn batches_stay_within_the_call_limits() {
    let mut pending = Pending::default();
    assert_eq!(pending.push(some_datums(2500, 5)), 0);
    let sizes: Vec<usize> = pending.batches.iter().map(|b| b.datums.len()).collect();
    assert_eq!(sizes.iter().sum::<usize>(), 2500);
    assert_eq!(sizes.len(), 3, "{sizes:?}");
    assert!(
        sizes[0] > 900 && sizes[0] <= MAX_DATUMS_PER_CALL,
        "{sizes:?}"
    );
    // Long dimension values: the byte ceiling cuts batches before 1,000 datums.
    let mut pending = Pending::default();
    pending.push(some_datums(2000, 255));
    assert!(pending.batches.len() > 2);
    for b in &pending.batches {
        assert!(b.bytes <= MAX_CALL_BYTES);
        assert!(b.datums.len() <= MAX_DATUMS_PER_CALL);
    }
    assert_eq!(pending.datums, 2000);
}

#[test]
fn a_full_buffer_drops_and_counts_the_oldest_datums() {
    let mut pending = Pending::default();
    assert_eq!(pending.push(some_datums(MAX_PENDING_DATUMS, 5)), 0);
    let oldest = pending.batches[0].datums.len();
    let dropped = pending.push(some_datums(10, 5));
    assert_eq!(dropped, oldest);
    assert_eq!(pending.datums, MAX_PENDING_DATUMS + 10 - oldest);
    assert!(pending.datums <= MAX_PENDING_DATUMS);
}

#[test]
fn tried_batches_take_no_new_datums_and_backoff_grows_to_a_cap() {
    let mut pending = Pending::default();
    pending.push(some_datums(3, 5));
    pending.batches[0].attempts = 1;
    pending.push(some_datums(3, 5));
    assert_eq!(pending.batches.len(), 2);
    assert!(backoff(1) <= Duration::from_secs(1));
    assert!(backoff(3) >= Duration::from_secs(2));
    assert!(backoff(50) <= BACKOFF_CAP);
}
