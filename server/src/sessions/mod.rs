//! Sessions, the work behind `/v1/sessions` and both credential routes: opening sessions
//! (support and customer), the grant every credential request is checked against, vending
//! credentials (cache, single flight, AssumeRole, audit), listing and revoking. No axum:
//! handlers parse, authorize, call these and respond.
//!
//! A credential request, from handler to AWS and back: `vend::session_credentials` (or
//! `vend::customer_credentials`, which finds or opens the caller's customer session) reads
//! the session's [`grant`] (cached for at most 500 ms), lets `Principal::authorize_owner`
//! decide, checks the grant (`grant::check`), takes credentials from the per-holder cache
//! or one shared AssumeRole (`assume::issue`), writes the audit row through the group-commit
//! writer and counts the request; only then does the handler answer.

mod approve;
mod assume;
mod grant;
mod open;
mod revoke;
mod vend;

pub use approve::{decide, pending};
pub use open::{OpenRequest, open};
pub use revoke::{ListFilter, list, revoke, visible};
pub use vend::{customer_credentials, may_ask_customer_credentials, session_credentials};

use crate::audit::Context;
use crate::auth::Principal;
use crate::domain::{CustomerId, Outcome};
use crate::error::Error;
use crate::state::AppState;

/// Records a refusal (not found, forbidden, conflict, gone) as a `denied` audit row before it
/// is answered; malformed input is not security-relevant and is not audited. If the audit
/// row cannot be written, the answer is 503.
pub(crate) async fn audit_denial<T>(
    state: &AppState,
    principal: &Principal,
    ctx: &Context,
    action: &'static str,
    customer: Option<&CustomerId>,
    result: Result<T, Error>,
) -> Result<T, Error> {
    let Err(error) = result else {
        return result;
    };
    if !error.is_refusal() {
        return Err(error);
    }
    let event = crate::db::audit::NewEvent {
        customer_id: customer.map(ToString::to_string),
        outcome: Outcome::Denied,
        error_code: Some(error.slug().to_owned()),
        detail: Some(serde_json::json!({ "detail": error.to_string() })),
        ..ctx.event(principal, action)
    };
    state.audit.record(event).await?;
    Err(error)
}
