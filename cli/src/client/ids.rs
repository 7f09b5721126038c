//! The ids the CLI puts into request paths and queries, parsed by the broker's own rules
//! (`lanyard_api`) before any request, so that no value can change which resource a request
//! names (`../`, `?`, `#`, `%2F`) and a typo gets a clear error, naming the value, without a
//! request.

use anyhow::Context;
use lanyard_api::{CaseId, CustomerId, RoleName};
use uuid::Uuid;

pub fn customer_id(raw: &str) -> anyhow::Result<CustomerId> {
    CustomerId::parse(raw).map_err(|e| anyhow::anyhow!("bad customer id {raw:?}: {e}"))
}

/// A support case id; the message names the broker's field for it too, as the broker does.
pub fn case_id(raw: &str) -> anyhow::Result<CaseId> {
    CaseId::parse(raw).map_err(|e| anyhow::anyhow!("bad case id {raw:?} (case_id): {e}"))
}

pub fn role_name(raw: &str) -> anyhow::Result<RoleName> {
    RoleName::parse(raw).map_err(|e| anyhow::anyhow!("bad role name {raw:?}: {e}"))
}

/// A session id: a UUID in its hyphenated form (the 36 characters the broker writes), not
/// the other spellings `Uuid::parse_str` also takes.
pub fn session_id(raw: &str) -> anyhow::Result<Uuid> {
    Uuid::parse_str(raw)
        .ok()
        .filter(|_| raw.len() == 36)
        .with_context(|| {
            format!("bad session id {raw:?}: a session id is a UUID (e.g. 01a2b3c4-...-...)")
        })
}
