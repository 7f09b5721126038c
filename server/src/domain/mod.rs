//! Validated domain types and the rules the broker applies: no I/O, no axum, no sqlx calls.
//! The ids, free-text rules and statuses shared with the CLI live in `lanyard-api` and are
//! re-exported here; what only the broker needs lives beside them ("parse, don't validate").

mod arn;
pub mod binding;
mod external_id;
pub mod onboarding;
pub mod policy;
pub mod session;
pub mod tier;
pub mod verification;

pub use arn::RoleArn;
pub use binding::{Binding, BindingSpec, Grant, Provenance};
pub use external_id::ExternalId;
pub use lanyard_api::status::{
    ApprovalStatus, CaseCheck, CustomerStatus, DeliveryState, Outcome, RoleStatus, SessionStatus,
    TrustCheck,
};
pub use lanyard_api::whoami::TokenRole;
pub use lanyard_api::{
    CaseId, CustomerId, DisplayName, ParseError, Reason, RoleName, SessionKind, check_plain_text,
    parse_duration,
};
