//! Lanyard: a self-hosted credential broker for cross-account AWS access.
//!
//! Imports flow one way: `http` (router, middleware, handlers) → the services (`sessions`,
//! `registry`, `audit`) → `domain`, `db`, `sts`, `auth`, `metrics`. `state` holds what every
//! handler shares and imports no route; `app` assembles and runs it all.

pub mod app;
pub mod audit;
pub mod auth;
pub mod aws;
pub mod cases;
pub mod cli;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod events;
pub mod http;
pub mod metrics;
pub mod registry;
pub mod sessions;
pub mod signature;
pub mod state;
pub mod sts;
pub mod telemetry;
pub mod tls;
