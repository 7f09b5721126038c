//! Lanyard: a self-hosted credential broker for cross-account AWS access.

pub mod app;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod cloudwatch;
pub mod config;
pub mod credentials;
pub mod db;
pub mod domain;
pub mod http;
pub mod metrics;
pub mod revocation;
pub mod sts;
pub mod telemetry;
