//! Benchmark P7: PutMetricData calls per 10,000 vends with CloudWatch publishing on.
//!
//! 10,000 credential requests ("vends") of one support session from 32 concurrent clients,
//! on the application in process publishing to moto under a namespace of its own (the
//! default one-minute window), then a graceful stop that flushes the open window; the
//! PutMetricData calls are counted in moto's request recording. Baseline: the 10,000 vends,
//! one call each for a publisher that sent every request's datums as they came. The run
//! also checks that the figures add up exactly in CloudWatch (requests, durations, cache
//! hits), as the api test `cloudwatch::ten_thousand_requests_...` does with the same code
//! (`lanyard_tests::cloudwatch::vends_published`).
//!
//! Run it with `tests/bench P7`. No goal beyond "a few calls" (the api test allows 10).

use lanyard_tests::cloudwatch::{PublishedVends, vends_published};

use crate::table::{Row, report};

const VENDS: usize = 10_000;

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: tests/bench P7"]
async fn p7_put_metric_data_calls_per_ten_thousand_vends() {
    let PublishedVends { took, calls } = vends_published(VENDS).await;
    let datums: usize = calls.iter().sum();
    println!();
    println!(
        "{VENDS} vends in {took:?}: {} PutMetricData calls carrying {datums} datums ({calls:?})",
        calls.len()
    );
    report(Row {
        id: "P7",
        what: "PutMetricData calls per 10,000 vends",
        figure: format!("{} call(s)", calls.len()),
        baseline: format!("{VENDS} vends (a call each, unbatched)"),
        ratio: Some(calls.len() as f64 / VENDS as f64),
        goal: "",
        met: None,
    });
}
