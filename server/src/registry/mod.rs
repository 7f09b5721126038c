//! The registry: customers (with their external IDs and onboarding document), the IAM roles
//! they registered (with their verification), and the API tokens the broker signed. No axum: handlers parse, authorize, call
//! these and respond.

pub mod customers;
pub mod roles;
pub mod tokens;
