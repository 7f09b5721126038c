//! Resilience of the credential path: when Postgres goes away under load, the broker fails
//! closed (503, never credentials without a committed audit row, even for sessions whose
//! credentials are cached), answers before its request timeout, and serves again within
//! seconds once Postgres is back, without a restart. Faults are injected with
//! [`lanyard_tests::FaultProxy`] between the app and the real Postgres; the drill itself
//! ([`credentials_through_a_database_outage`]) is shared with the F4 benchmark.

use std::time::Duration;

use lanyard_tests::faults::{Outage, credentials_through_a_database_outage};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_outage_never_hands_out_credentials_without_an_audit_row() {
    credentials_through_a_database_outage(Outage::Refused, Duration::ZERO)
        .await
        .assert_held();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_front_end_without_a_backend_never_hands_out_unaudited_credentials() {
    credentials_through_a_database_outage(Outage::AcceptedThenClosed, Duration::ZERO)
        .await
        .assert_held();
}
