//! The state every request handler shares: configuration, the database pool, the token keys,
//! the AWS clients, the caches, the audit writer and the metrics. It imports no routes.

use std::sync::Arc;

use sqlx::PgPool;

use crate::audit::AuditWriter;
use crate::audit::export::Exports;
use crate::auth::cache::AuthCache;
use crate::auth::oidc::Issuers;
use crate::auth::token::TokenKeys;
use crate::config::Config;
use crate::events::Outbox;
use crate::metrics::Metrics;
use crate::sts::Sts;
use crate::sts::cache::AssumedRoleCache;

/// Shared state of the handlers; cheap to clone.
#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Inner>);

pub struct Inner {
    pub config: Config,
    pub db: PgPool,
    pub keys: Arc<TokenKeys>,
    pub sts: Sts,
    pub metrics: Metrics,
    /// Group-commit writer for request-path audit events (credentials, denials).
    pub audit: AuditWriter,
    /// Credentials from AssumeRole, per session and holder (see `sts::cache`).
    pub assumed_roles: AssumedRoleCache,
    /// Recently verified tokens and session grants (see `auth::cache`).
    pub auth_cache: Arc<AuthCache>,
    /// Audit export slots and limits.
    pub exports: Exports,
    /// Trusted OpenID issuers for the token exchange, with their cached keys.
    pub issuers: Issuers,
    /// Writes events (session requested, approved, …) with the changes they describe.
    pub outbox: Outbox,
    /// Outgoing requests to the case system (no redirects followed).
    pub http: reqwest::Client,
    /// Role permission checks running at once on this instance (see `registry::roles`).
    pub validations: tokio::sync::Semaphore,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
