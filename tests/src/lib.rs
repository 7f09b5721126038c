//! Test harness: the real application on port 0 against a fresh Postgres database, the real
//! binaries, the local AWS emulator (moto) that `tests/run` starts, the CLI in a private
//! HOME, and fault proxies for what the real components cannot be made to do.
//!
//! Environment (set by `tests/run`): `LANYARD_TEST_DATABASE_URL` (a server URL; each test
//! gets its own database on it), `LANYARD_TEST_MOTO_URL` (moto server mode),
//! `LANYARD_TEST_MOTO_RECORDING` (moto's request recording).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod app;
pub mod cli_home;
pub mod cloudwatch;
pub mod database;
pub mod emulator;
pub mod fault;
pub mod faults;
pub mod iam;
#[cfg(target_os = "linux")]
pub mod keyring;
pub mod oidc;
pub mod processes;
pub mod receivers;
pub mod wait;

pub use app::{TestApp, credential_requests, jwt_claims, session_policy_of, test_settings, unique};
pub use cli_home::{CliHome, FakeBroker, FakeReply, Keyring, Run, logged_in_support};
pub use database::{TestDatabase, database_server_url, fresh_database_url};
pub use emulator::{PrivateMoto, moto_url, recorded_assume_roles, recorded_form_requests};
pub use fault::FaultProxy;
pub use iam::IamStandIn;
pub use processes::{ServerProcess, binary};
pub use wait::eventually;
