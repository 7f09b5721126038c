//! The end-to-end suite: the real server (in process and as the real binary) on a real
//! Postgres, moto as AWS, the real `lanyard` and `aws` CLIs. One test binary, one module per
//! resource or concern, so that the whole stack is linked once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit_api;
mod audit_integrity;
mod auth;
mod binaries;
mod cases;
mod cli;
mod cli_approvals;
mod cli_migrate;
mod cli_revocation;
mod cli_scripting;
mod cli_validate;
mod cloudwatch;
mod customers;
mod events;
mod fuzz;
mod http;
mod identity;
mod operations;
mod resilience;
mod roles;
mod sessions;
mod sts;
mod tls;
