//! The registry: customers (with their external IDs and onboarding document) and the IAM
//! roles they registered (with their verification). No axum: handlers parse, authorize, call
//! these and respond.

pub mod customers;
pub mod roles;
