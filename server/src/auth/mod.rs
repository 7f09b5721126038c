//! Authentication and every permission decision.
//!
//! A request is authenticated by a bearer JWT that this broker signed (see [`token`]); the
//! token names a subject, one [`Role`] and optionally the customers it is limited to.
//! [`Principal::authorize`] is the single place that decides what a role may do.

pub mod token;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::AppState;
use crate::domain::{CustomerId, SessionKind};
use crate::http::error::ApiError;

/// What a token may do. Roles are not hierarchical except `admin`, which may do everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
#[schema(as = TokenRole)]
pub enum Role {
    /// Everything: customers, roles, sessions, audit.
    Admin,
    /// Open support sessions, fetch credentials for their own sessions, list customers.
    Support,
    /// Customer sessions for services and batch jobs.
    Service,
    /// Read the audit log and reports.
    Auditor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Support => "support",
            Role::Service => "service",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "admin" => Some(Role::Admin),
            "support" => Some(Role::Support),
            "service" => Some(Role::Service),
            "auditor" => Some(Role::Auditor),
            _ => None,
        }
    }
}

/// Every kind of operation a permission is decided for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Create, disable and enable customers; onboarding; external-ID rotation; roles.
    ManageCustomers,
    /// List and show customers and their roles.
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
    /// Read the audit log (`GET /v1/audit`) and the usage report; customer-limited tokens
    /// see only rows of their customers (see [`Principal::customers`]).
    ReadAudit,
}

impl Action {
    fn allowed_for(self, role: Role) -> bool {
        use Role::*;
        match self {
            Action::ManageCustomers => matches!(role, Admin),
            Action::ReadCustomers => matches!(role, Admin | Support | Auditor),
            Action::OpenSupportSession => matches!(role, Admin | Support),
            Action::OpenCustomerSession => matches!(role, Admin | Service),
            Action::ReadSessions => matches!(role, Admin | Support | Service | Auditor),
            Action::UseSession => matches!(role, Admin | Support | Service),
            Action::ReadAudit => matches!(role, Admin | Auditor),
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
    pub fn authorize(&self, action: Action, customer: Option<&CustomerId>) -> Result<(), ApiError> {
        if !action.allowed_for(self.role) {
            return Err(ApiError::Forbidden(format!(
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
    ) -> Result<(), ApiError> {
        self.authorize(Action::UseSession, Some(customer))?;
        if self.role == Role::Admin {
            return Ok(());
        }
        let opens = match kind {
            SessionKind::Support => Action::OpenSupportSession,
            SessionKind::Customer => Action::OpenCustomerSession,
        };
        if self.subject != owner || !opens.allowed_for(self.role) {
            return Err(ApiError::Forbidden(
                "only the session's owner or an admin may do this".into(),
            ));
        }
        Ok(())
    }

    /// Admins and auditors see every session; others only the ones they opened.
    pub fn sees_all_sessions(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Auditor)
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
pub fn customer_not_found(customer: &CustomerId) -> ApiError {
    ApiError::NotFound(format!("customer '{customer}' does not exist"))
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| ApiError::Unauthorized("missing bearer token".into()))?;
        let raw = header
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthorized("the Authorization header must be 'Bearer <token>'".into())
            })?;
        if let Some(cached) = state.auth_cache.principal(raw) {
            if cached.refresh {
                refresh_token(state.clone(), raw.to_owned(), cached.value.token_id);
            }
            return Ok(cached.value);
        }
        let claims = state.keys.verify(raw)?;
        let read_at = std::time::Instant::now();
        token::check_record(&state.db, &claims).await?;
        let exp = claims.exp;
        let principal = claims.into_principal()?;
        state
            .auth_cache
            .store_principal(raw, &principal, exp, read_at);
        Ok(principal)
    }
}

/// Re-reads a cached token's revocation state in the background (see `revocation`).
fn refresh_token(state: AppState, raw: String, jti: uuid::Uuid) {
    tokio::spawn(async move {
        let read_at = std::time::Instant::now();
        let Ok(claims) = state.keys.verify(&raw) else {
            return state.auth_cache.forget_token(jti);
        };
        match token::check_record(&state.db, &claims).await {
            Ok(()) => {
                if let Ok(principal) = claims.clone().into_principal() {
                    state
                        .auth_cache
                        .store_principal(&raw, &principal, claims.exp, read_at);
                }
            }
            // Unknown (the database did not answer): leave the entry to expire on its own
            // (at most MAX_STALENESS).
            Err(ApiError::Unavailable(_) | ApiError::Internal(_)) => {}
            Err(_) => state.auth_cache.forget_token(jti),
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
    fn services_cannot_read_the_customer_list() {
        assert!(
            principal(Role::Service, None)
                .authorize(Action::ReadCustomers, None)
                .is_err()
        );
        for role in [Role::Admin, Role::Support, Role::Auditor] {
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
        assert_eq!(refused.status(), axum::http::StatusCode::NOT_FOUND);
        assert_eq!(refused.to_string(), customer_not_found(&other).to_string());
    }
}
