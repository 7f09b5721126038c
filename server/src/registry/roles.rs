//! Customer roles: register (and verify), re-verify, list, show.
//!
//! Verification calls AssumeRole with the customer's external ID, then without it; what that
//! means for the role is `domain::verification::decide`.

use crate::audit::{self, Context};
use crate::auth::{Principal, customer_not_found};
use crate::config::TrustCheckMode;
use crate::db::{self, audit::NewEvent, roles::RoleRow};
use crate::domain::verification::decide;
use crate::domain::{
    CustomerId, CustomerStatus, ExternalId, Outcome, RoleArn, RoleName, RoleStatus, SessionKind,
};
use crate::error::Error;
use crate::state::AppState;
use lanyard_api::roles::{ActionDecision, Validation};

/// A role registration, its fields already checked.
pub struct RoleSpec {
    pub role_arn: RoleArn,
    pub session_kinds: Vec<SessionKind>,
    pub max_session_seconds: i32,
    pub session_policy: Option<serde_json::Value>,
    pub tiers: std::collections::BTreeMap<String, lanyard_api::roles::Tier>,
    pub required_actions: Vec<String>,
}

/// Registers or updates a role (it is `unverified` until checked), then verifies it.
pub async fn register(
    state: &AppState,
    principal: &Principal,
    ctx: &Context,
    customer: &CustomerId,
    name: &RoleName,
    spec: &RoleSpec,
) -> Result<RoleRow, Error> {
    let mut tx = state.db.begin().await?;
    db::customers::lock(&mut tx, customer.as_str())
        .await?
        .ok_or_else(|| customer_not_found(customer))?;
    db::roles::upsert(
        &mut tx,
        customer.as_str(),
        name.as_str(),
        &db::roles::RoleSpec {
            role_arn: spec.role_arn.as_str(),
            session_kinds: &spec.session_kinds,
            max_session_seconds: spec.max_session_seconds,
            session_policy: spec.session_policy.as_ref(),
            tiers: &spec.tiers,
            required_actions: &spec.required_actions,
        },
    )
    .await?;
    let event = NewEvent {
        customer_id: Some(customer.to_string()),
        role_name: Some(name.to_string()),
        detail: Some(serde_json::json!({
            "role_arn": spec.role_arn.as_str(),
            "tiers": spec.tiers.keys().collect::<Vec<_>>(),
        })),
        ..ctx.event(principal, "role.register")
    };
    audit::record_in(&mut tx, &event).await?;
    tx.commit().await?;
    state.auth_cache.forget_customer(customer.as_str());
    verify(state, principal, ctx, customer, name).await
}

/// One role; 404 when there is none.
pub async fn get(
    state: &AppState,
    customer: &CustomerId,
    name: &RoleName,
) -> Result<RoleRow, Error> {
    db::roles::get(&state.db, customer.as_str(), name.as_str())
        .await?
        .ok_or_else(|| role_not_found(customer, name))
}

/// A customer's roles; 404 when there is no such customer.
pub async fn list(state: &AppState, customer: &CustomerId) -> Result<Vec<RoleRow>, Error> {
    if db::customers::get(&state.db, customer.as_str())
        .await?
        .is_none()
    {
        return Err(customer_not_found(customer).into());
    }
    Ok(db::roles::list(&state.db, customer.as_str()).await?)
}

fn role_not_found(customer: &CustomerId, name: &RoleName) -> Error {
    Error::NotFound(format!("customer '{customer}' has no role '{name}'"))
}

/// Verifies the role against AWS (no transaction is held meanwhile), then records the result,
/// activates the customer and promotes a pending external ID, all in one transaction.
pub async fn verify(
    state: &AppState,
    principal: &Principal,
    ctx: &Context,
    customer: &CustomerId,
    name: &RoleName,
) -> Result<RoleRow, Error> {
    let role = get(state, customer, name).await?;
    let cust = db::customers::get(&state.db, customer.as_str())
        .await?
        .ok_or_else(|| customer_not_found(customer))?;
    let arn = RoleArn::parse(&role.role_arn)
        .map_err(|e| Error::Internal(anyhow::anyhow!("stored ARN: {e}")))?;
    let stored = |raw: &str| {
        ExternalId::parse(raw)
            .map_err(|e| Error::Internal(anyhow::anyhow!("stored external ID: {e}")))
    };
    let mut candidates = Vec::new();
    if let Some(pending) = &cust.pending_external_id {
        candidates.push(stored(pending)?);
    }
    candidates.push(stored(&cust.external_id)?);
    let refs: Vec<&ExternalId> = candidates.iter().collect();

    let started = std::time::Instant::now();
    let probe = state.sts.verify_role(&arn, customer.as_str(), &refs).await;
    let enforce = state.config.trust_check == TrustCheckMode::Enforce;

    let mut tx = state.db.begin().await?;
    let locked = db::customers::lock(&mut tx, customer.as_str())
        .await?
        .ok_or_else(|| customer_not_found(customer))?;
    // The external ID may have been rotated while AWS was asked.
    let still_valid = |id: &ExternalId| {
        id.as_str() == locked.external_id
            || locked.pending_external_id.as_deref() == Some(id.as_str())
    };
    let decision = decide(&probe, still_valid, enforce);
    let row = db::roles::record_check(
        &mut tx,
        customer.as_str(),
        name.as_str(),
        &db::roles::CheckResult {
            status: decision.status,
            trust_check: decision.trust,
            verified_external_id: decision.verified_with.as_ref().map(ExternalId::as_str),
            error: decision.error.as_deref(),
        },
    )
    .await?;
    if let Some(verified_with) = &decision.verified_with {
        if locked.pending_external_id.as_deref() == Some(verified_with.as_str()) {
            db::customers::promote_pending_external_id(&mut tx, customer.as_str()).await?;
        }
        if locked.status == CustomerStatus::Pending {
            db::customers::set_status(&mut tx, customer.as_str(), CustomerStatus::Active).await?;
        }
    }
    let event = NewEvent {
        customer_id: Some(customer.to_string()),
        role_name: Some(name.to_string()),
        outcome: if decision.status == RoleStatus::Verified {
            Outcome::Success
        } else {
            Outcome::Error
        },
        error_code: decision.error_code.clone(),
        duration_ms: i32::try_from(started.elapsed().as_millis()).ok(),
        detail: Some(serde_json::json!({
            "role_arn": role.role_arn, "status": decision.status, "trust_check": decision.trust,
        })),
        ..ctx.event(principal, "role.verify")
    };
    audit::record_in(&mut tx, &event).await?;
    tx.commit().await?;
    state.auth_cache.forget_customer(customer.as_str());
    if row.status != RoleStatus::Verified || row.required_actions.is_empty() {
        return Ok(row);
    }
    // A failed check is recorded on the role (`validation.error`); it does not undo the
    // verification: the role works, it may just not allow everything the job needs.
    validate(state, principal, ctx, customer, name, None).await?;
    get(state, customer, name).await
}

/// Checks actions against the role's own policies with iam:SimulatePrincipalPolicy, called
/// as the role (one AssumeRole with the verified external ID): `actions`, or the role's
/// `required_actions`, whose result is then stored on the role. Audited.
pub async fn validate(
    state: &AppState,
    principal: &Principal,
    ctx: &Context,
    customer: &CustomerId,
    name: &RoleName,
    actions: Option<Vec<String>>,
) -> Result<Validation, Error> {
    let role = get(state, customer, name).await?;
    let store = actions.is_none();
    let actions = match actions {
        Some(actions) => actions,
        None if role.required_actions.is_empty() => {
            return Err(Error::invalid(
                "actions",
                format!("role '{name}' lists no required_actions; name the actions to check"),
            ));
        }
        None => role.required_actions.clone(),
    };
    let external_id = match (&role.status, &role.verified_external_id) {
        (RoleStatus::Verified, Some(id)) => ExternalId::parse(id)
            .map_err(|e| Error::Internal(anyhow::anyhow!("stored external ID: {e}")))?,
        _ => {
            return Err(Error::Conflict(format!(
                "role '{name}' is {}; verify it before checking its permissions",
                role.status
            )));
        }
    };
    let arn = RoleArn::parse(&role.role_arn)
        .map_err(|e| Error::Internal(anyhow::anyhow!("stored ARN: {e}")))?;
    let started = std::time::Instant::now();
    // A few checks at a time per instance: each costs an AssumeRole from the budget every
    // credential request draws on, and anyone with a support or service token may ask.
    let _slot = state
        .validations
        .acquire()
        .await
        .map_err(|_| Error::Unavailable("the broker is stopping".into()))?;
    let checked = async {
        let credentials = state
            .sts
            .assume_role(&crate::sts::AssumeRoleRequest {
                role_arn: &arn,
                external_id: Some(&external_id),
                session_name: crate::domain::session::aws_name(&format!(
                    "lanyard-validate-{customer}"
                )),
                source_identity: Some("lanyard-validate".into()),
                tags: vec![("lanyard-purpose".into(), "validate".into())],
                duration_seconds: 900,
                policy: None,
                policy_arns: Vec::new(),
            })
            .await?;
        state.sts.simulate(&credentials, &arn, &actions).await
    }
    .await;
    let validation = match checked {
        Ok(results) => Validation {
            checked_at: chrono::Utc::now(),
            results,
            error: None,
        },
        Err(e) => Validation {
            checked_at: chrono::Utc::now(),
            results: Vec::new(),
            error: Some(format!("{}: {}", e.code, e.message)),
        },
    };
    let mut tx = state.db.begin().await?;
    if store {
        db::roles::record_validation(
            &mut *tx,
            customer.as_str(),
            name.as_str(),
            role.updated_at,
            &validation,
        )
        .await?;
    }
    let denied: Vec<&str> = validation
        .results
        .iter()
        .filter(|r| r.decision != ActionDecision::Allowed)
        .map(|r| r.action.as_str())
        .collect();
    let event = NewEvent {
        customer_id: Some(customer.to_string()),
        role_name: Some(name.to_string()),
        outcome: if validation.error.is_some() {
            Outcome::Error
        } else {
            Outcome::Success
        },
        duration_ms: i32::try_from(started.elapsed().as_millis()).ok(),
        detail: Some(serde_json::json!({
            "actions": actions.len(),
            "not_allowed": denied,
            "stored": store,
            "error": validation.error,
        })),
        ..ctx.event(principal, "role.validate")
    };
    audit::record_in(&mut tx, &event).await?;
    tx.commit().await?;
    Ok(validation)
}
