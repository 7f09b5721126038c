//! Authentication and every permission decision.
//!
//! A request is authenticated by a bearer JWT that this broker signed (see [`token`]); the
//! token names a subject, one [`Role`] and optionally the customers it is limited to.
//! [`Principal`] is the single place that decides what a role may do and what a token may
//! see: [`Principal::authorize`], [`Principal::authorize_owner`],
//! [`Principal::may_see_session`] and [`Principal::customer_scope`]. Recently verified tokens
//! are kept in [`cache`] for at most 500 ms, and revocations reach every instance through
//! Postgres notifications.

pub mod cache;
mod error;
pub mod oidc;
pub mod token;

use sqlx::PgPool;

pub use error::AuthError;
/// What a token may do (`admin`, `support`, `service`, `auditor`).
pub use lanyard_api::whoami::TokenRole as Role;

use crate::domain::{CustomerId, SessionKind};
use cache::AuthCache;
use token::TokenKeys;

/// Every kind of operation a permission is decided for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Create, disable and enable customers; onboarding; external-ID rotation; roles.
    ManageCustomers,
    /// List and show customers and their roles (services: the ones they may reach, so that a
    /// batch job can loop over them).
    ReadCustomers,
    /// Open a support session (case-scoped access for a person).
    OpenSupportSession,
    /// Open a customer session (services and batch jobs), explicitly or by asking for
    /// credentials.
    OpenCustomerSession,
    /// List and show sessions (non-admins see only their own, see [`Principal::sees_all_sessions`]).
    ReadSessions,
    /// Fetch credentials for, or revoke, a session: its owner or an admin
    /// (see [`Principal::authorize_owner`]).
    UseSession,
    /// Approve or deny another person's session request (never one's own; see
    /// `sessions::decide`).
    ApproveSessions,
    /// See the configured webhooks and their deliveries (not limited to customers: events
    /// of every customer pass through them, so customer-limited tokens may not).
    ReadEvents,
    /// Close a case, ending every session of it (`POST /v1/cases/{id}/close`); sessions of
    /// every customer may end, so only tokens for every customer (see
    /// [`Principal::authorize_everywhere`]).
    CloseCases,
    /// Check a role's permissions with iam:SimulatePrincipalPolicy (`lanyard validate`).
    ValidateRoles,
    /// Read the audit log (`GET /v1/audit`) and the usage report; customer-limited tokens
    /// see only rows of their customers (see [`Principal::customers`]).
    ReadAudit,
}

impl Action {
    fn allowed_for(self, role: Role) -> bool {
        use Role::*;
        match self {
            Action::ManageCustomers => matches!(role, Admin),
            Action::ReadCustomers => matches!(role, Admin | Support | Service | Auditor),
            Action::OpenSupportSession => matches!(role, Admin | Support),
            Action::OpenCustomerSession => matches!(role, Admin | Service),
            Action::ReadSessions => matches!(role, Admin | Support | Service | Auditor),
            Action::UseSession => matches!(role, Admin | Support | Service),
            Action::ReadAudit => matches!(role, Admin | Auditor),
            Action::ApproveSessions => matches!(role, Admin | Support),
            Action::ValidateRoles => matches!(role, Admin | Support | Service),
            Action::ReadEvents => matches!(role, Admin | Auditor),
            Action::CloseCases => matches!(role, Admin),
        }
    }
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub subject: String,
    pub role: Role,
    /// `None`: every customer; `Some`: only these.
    pub customers: Option<Vec<CustomerId>>,
    pub token_id: uuid::Uuid,
    /// When the token expires (Unix seconds).
    pub expires_at: i64,
}

impl Principal {
    /// Decides whether this principal may perform `action`, on `customer` when one is named.
    ///
    /// The role is checked first (403: what the role may do is no secret). A customer outside
    /// the token's customer limit is then answered exactly as one that does not exist (404),
    /// on every route: a limited token cannot even learn which other customers there are.
    pub fn authorize(
        &self,
        action: Action,
        customer: Option<&CustomerId>,
    ) -> Result<(), AuthError> {
        if !action.allowed_for(self.role) {
            return Err(AuthError::Forbidden(format!(
                "a token with role '{}' may not do this",
                self.role.as_str()
            )));
        }
        if let Some(customer) = customer
            && !self.may_see(customer)
        {
            return Err(customer_not_found(customer));
        }
        Ok(())
    }

    /// Decides an `action` that reaches every customer at once (closing a case, reading the
    /// webhooks' deliveries): the role may do it, and the token is not limited to some
    /// customers.
    pub fn authorize_everywhere(&self, action: Action) -> Result<(), AuthError> {
        self.authorize(action, None)?;
        if self.customers.is_some() {
            return Err(AuthError::Forbidden(
                "this reaches every customer: a token limited to some customers may not do it"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The token's customer limit as database values: `None` for every customer.
    pub fn customer_scope(&self) -> Option<Vec<String>> {
        self.customers
            .as_ref()
            .map(|list| list.iter().map(ToString::to_string).collect())
    }

    /// Decides whether this principal may act on a session `owner` opened: `UseSession`
    /// for the customer, and then only its owner (or an admin).
    /// The owner must also still hold a role that may open sessions of that `kind` (a
    /// service token of the same subject does not get a support session).
    pub fn authorize_owner(
        &self,
        customer: &CustomerId,
        owner: &str,
        kind: SessionKind,
    ) -> Result<(), AuthError> {
        self.authorize(Action::UseSession, Some(customer))?;
        if self.role == Role::Admin {
            return Ok(());
        }
        let opens = match kind {
            SessionKind::Support => Action::OpenSupportSession,
            SessionKind::Customer => Action::OpenCustomerSession,
        };
        if self.subject != owner || !opens.allowed_for(self.role) {
            return Err(AuthError::Forbidden(
                "only the session's owner or an admin may do this".into(),
            ));
        }
        Ok(())
    }

    /// Admins and auditors see every session; others only the ones they opened.
    pub fn sees_all_sessions(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Auditor)
    }

    /// Whether a session of `customer` opened by `owner` is visible to this principal (a
    /// session it may not see is answered as one that does not exist).
    pub fn may_see_session(&self, customer: &CustomerId, owner: &str) -> bool {
        self.may_see(customer) && (self.sees_all_sessions() || owner == self.actor())
    }

    /// Whether the token's customer limit (if any) includes `customer`.
    pub fn may_see(&self, customer: &CustomerId) -> bool {
        self.customers
            .as_ref()
            .is_none_or(|list| list.contains(customer))
    }

    /// The actor name written to audit rows and AWS session context.
    pub fn actor(&self) -> &str {
        &self.subject
    }
}

/// The answer for a customer that does not exist, or that the caller may not see: the same
/// either way.
pub fn customer_not_found(customer: &CustomerId) -> AuthError {
    AuthError::NotFound(format!("customer '{customer}' does not exist"))
}

/// The principal a bearer token stands for: from the short-lived cache, or verified
/// (signature, issuer, audience, expiry, dates) and checked against its record.
pub async fn authenticate(
    cache: &std::sync::Arc<AuthCache>,
    keys: &std::sync::Arc<TokenKeys>,
    db: &PgPool,
    raw: &str,
) -> Result<Principal, AuthError> {
    if let Some(cached) = cache.principal(raw) {
        if cached.refresh {
            refresh_token(
                cache.clone(),
                keys.clone(),
                db.clone(),
                raw.to_owned(),
                cached.value.token_id,
            );
        }
        return Ok(cached.value);
    }
    let claims = keys.verify(raw)?;
    let read = cache.begin_read();
    token::check_record(db, &claims).await?;
    let exp = claims.exp;
    let principal = claims.into_principal()?;
    cache.store_principal(raw, &principal, exp, read);
    Ok(principal)
}

/// Re-reads a cached token's record in the background (see [`cache`]).
fn refresh_token(
    cache: std::sync::Arc<AuthCache>,
    keys: std::sync::Arc<TokenKeys>,
    db: PgPool,
    raw: String,
    jti: uuid::Uuid,
) {
    tokio::spawn(async move {
        let read = cache.begin_read();
        let Ok(claims) = keys.verify(&raw) else {
            return cache.forget_token(jti);
        };
        match token::check_record(&db, &claims).await {
            Ok(()) => {
                if let Ok(principal) = claims.clone().into_principal() {
                    cache.store_principal(&raw, &principal, claims.exp, read);
                }
            }
            // Unknown (the database did not answer): leave the entry to expire on its own
            // (at most the staleness bound).
            Err(
                AuthError::Unavailable(_)
                | AuthError::IssuerUnavailable(_)
                | AuthError::Internal(_),
            ) => {}
            Err(_) => cache.forget_token(jti),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: Role, customers: Option<Vec<&str>>) -> Principal {
        Principal {
            subject: "alice".into(),
            role,
            customers: customers.map(|c| {
                c.into_iter()
                    .map(|s| CustomerId::parse(s).unwrap())
                    .collect()
            }),
            token_id: uuid::Uuid::nil(),
            expires_at: 0,
        }
    }

    #[test]
    fn only_admins_manage_customers() {
        for role in [Role::Support, Role::Service, Role::Auditor] {
            assert!(
                principal(role, None)
                    .authorize(Action::ManageCustomers, None)
                    .is_err()
            );
        }
        assert!(
            principal(Role::Admin, None)
                .authorize(Action::ManageCustomers, None)
                .is_ok()
        );
    }

    #[test]
    fn every_role_reads_the_customers_it_may_reach() {
        let acme = CustomerId::parse("acme-corp").unwrap();
        let limited = principal(Role::Service, Some(vec!["acme-corp"]));
        assert!(
            limited
                .authorize(Action::ReadCustomers, Some(&acme))
                .is_ok()
        );
        assert!(
            limited
                .authorize(
                    Action::ReadCustomers,
                    Some(&CustomerId::parse("globex").unwrap())
                )
                .is_err()
        );
        for role in [Role::Admin, Role::Support, Role::Service, Role::Auditor] {
            assert!(
                principal(role, None)
                    .authorize(Action::ReadCustomers, None)
                    .is_ok()
            );
        }
    }

    #[test]
    fn only_owners_holding_a_role_for_the_kind_use_a_session() {
        let acme = CustomerId::parse("acme-corp").unwrap();
        let support = principal(Role::Support, None);
        assert!(
            support
                .authorize_owner(&acme, "alice", SessionKind::Support)
                .is_ok()
        );
        assert!(
            support
                .authorize_owner(&acme, "bob", SessionKind::Support)
                .is_err()
        );
        // Same subject, but a service token does not get the support session.
        let service = principal(Role::Service, None);
        assert!(
            service
                .authorize_owner(&acme, "alice", SessionKind::Support)
                .is_err()
        );
        assert!(
            service
                .authorize_owner(&acme, "alice", SessionKind::Customer)
                .is_ok()
        );
        assert!(
            principal(Role::Auditor, None)
                .authorize_owner(&acme, "alice", SessionKind::Support)
                .is_err()
        );
        assert!(
            principal(Role::Admin, None)
                .authorize_owner(&acme, "bob", SessionKind::Support)
                .is_ok()
        );
        let limited = principal(Role::Support, Some(vec!["globex"]));
        assert!(
            limited
                .authorize_owner(&acme, "alice", SessionKind::Support)
                .is_err()
        );
    }

    #[test]
    fn only_admins_and_auditors_read_the_audit_log() {
        for role in [Role::Support, Role::Service] {
            assert!(
                principal(role, None)
                    .authorize(Action::ReadAudit, None)
                    .is_err()
            );
        }
        for role in [Role::Admin, Role::Auditor] {
            assert!(
                principal(role, None)
                    .authorize(Action::ReadAudit, None)
                    .is_ok()
            );
        }
        // A customer limit narrows what an auditor reads; it does not widen the roles.
        let acme = CustomerId::parse("acme-corp").unwrap();
        let globex = CustomerId::parse("globex").unwrap();
        let limited = principal(Role::Auditor, Some(vec!["acme-corp"]));
        assert!(limited.authorize(Action::ReadAudit, None).is_ok());
        assert!(limited.authorize(Action::ReadAudit, Some(&acme)).is_ok());
        assert!(limited.authorize(Action::ReadAudit, Some(&globex)).is_err());
        assert!(
            principal(Role::Support, Some(vec!["acme-corp"]))
                .authorize(Action::ReadAudit, Some(&acme))
                .is_err()
        );
    }

    #[test]
    fn customer_limited_tokens_see_only_their_customers() {
        let p = principal(Role::Support, Some(vec!["acme-corp"]));
        let acme = CustomerId::parse("acme-corp").unwrap();
        let other = CustomerId::parse("globex").unwrap();
        assert!(p.authorize(Action::ReadCustomers, Some(&acme)).is_ok());
        // Another customer looks exactly like one that does not exist.
        let refused = p
            .authorize(Action::ReadCustomers, Some(&other))
            .unwrap_err();
        assert!(matches!(refused, AuthError::NotFound(_)));
        assert_eq!(refused.to_string(), customer_not_found(&other).to_string());
    }
}
