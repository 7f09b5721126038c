//! Customers: create, list, show, disable and enable; the onboarding document; external-ID
//! rotation. Every change commits with its audit row.

use lanyard_api::customers::Onboarding;

use crate::audit::{self, Context};
use crate::auth::{Principal, customer_not_found};
use crate::db::{self, audit::NewEvent, customers::CustomerRow};
use crate::domain::onboarding::{ExternalIds, onboarding_document};
use crate::domain::{CustomerId, CustomerStatus, DisplayName, ExternalId};
use crate::error::Error;
use crate::state::AppState;

/// Creates a customer with a freshly generated external ID.
pub async fn create(
    state: &AppState,
    principal: &Principal,
    ctx: &Context,
    id: &CustomerId,
    display_name: &DisplayName,
    requires_approval: bool,
) -> Result<CustomerRow, Error> {
    let external_id = new_external_id(state, id)?;
    let mut tx = state.db.begin().await?;
    let row = db::customers::insert(
        &mut tx,
        id.as_str(),
        display_name.as_str(),
        external_id.as_str(),
        requires_approval,
    )
    .await
    .map_err(|e| Error::on_unique_violation(e, format!("customer '{id}' already exists")))?;
    let event = NewEvent {
        customer_id: Some(id.to_string()),
        detail: requires_approval.then(|| serde_json::json!({ "requires_approval": true })),
        ..ctx.event(principal, "customer.create")
    };
    audit::record_in(&mut tx, &event).await?;
    tx.commit().await?;
    Ok(row)
}

/// Sets whether every support session of the customer waits for a second person's
/// approval; sessions already open or pending are not changed.
pub async fn set_requires_approval(
    state: &AppState,
    principal: &Principal,
    ctx: &Context,
    id: &CustomerId,
    required: bool,
) -> Result<CustomerRow, Error> {
    let mut tx = state.db.begin().await?;
    if !db::customers::set_requires_approval(&mut tx, id.as_str(), required).await? {
        return Err(customer_not_found(id).into());
    }
    let event = NewEvent {
        customer_id: Some(id.to_string()),
        detail: Some(serde_json::json!({ "requires_approval": required })),
        ..ctx.event(principal, "customer.approval")
    };
    audit::record_in(&mut tx, &event).await?;
    let row = db::customers::get(&mut *tx, id.as_str())
        .await?
        .ok_or_else(|| customer_not_found(id))?;
    tx.commit().await?;
    Ok(row)
}

/// The customers the principal may see, optionally only those in `status`.
pub async fn list(
    state: &AppState,
    principal: &Principal,
    status: Option<CustomerStatus>,
) -> Result<Vec<CustomerRow>, Error> {
    let only = principal.customer_scope();
    Ok(db::customers::list(&state.db, only.as_deref(), status).await?)
}

/// One customer; 404 when there is none.
pub async fn get(state: &AppState, id: &CustomerId) -> Result<CustomerRow, Error> {
    db::customers::get(&state.db, id.as_str())
        .await?
        .ok_or_else(|| customer_not_found(id).into())
}

/// Disables a customer (no new sessions or credentials), or enables it again (`active` when
/// a role is verified, else `pending`). Every instance drops what it cached of the customer.
pub async fn set_enabled(
    state: &AppState,
    principal: &Principal,
    ctx: &Context,
    id: &CustomerId,
    enabled: bool,
) -> Result<CustomerRow, Error> {
    let mut tx = state.db.begin().await?;
    let current = db::customers::lock(&mut tx, id.as_str())
        .await?
        .ok_or_else(|| customer_not_found(id))?;
    let status = if !enabled {
        CustomerStatus::Disabled
    } else if db::roles::any_verified(&mut *tx, id.as_str()).await? {
        CustomerStatus::Active
    } else {
        CustomerStatus::Pending
    };
    if current.status != status {
        db::customers::set_status(&mut tx, id.as_str(), status).await?;
        let action = if enabled {
            "customer.enable"
        } else {
            "customer.disable"
        };
        let event = NewEvent {
            customer_id: Some(id.to_string()),
            ..ctx.event(principal, action)
        };
        audit::record_in(&mut tx, &event).await?;
    }
    let row = db::customers::get(&mut *tx, id.as_str())
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    tx.commit().await?;
    // Other instances hear of it through the revocation trigger; this one at once.
    state.auth_cache.forget_customer(id.as_str());
    Ok(row)
}

/// The onboarding document of a customer: its external IDs, the trust policy naming the
/// broker's principal, the template and its quick-create link.
pub async fn onboarding(state: &AppState, id: &CustomerId) -> Result<Onboarding, Error> {
    let customer = get(state, id).await?;
    let broker = state.sts.broker_principal().await.map_err(|e| {
        Error::Unavailable(format!(
            "cannot determine the broker's AWS identity ({e}); set LANYARD_BROKER_PRINCIPAL_ARN"
        ))
    })?;
    Ok(onboarding_document(
        id,
        ExternalIds {
            current: &customer.external_id,
            pending: customer.pending_external_id.as_deref(),
        },
        &broker,
        state.config.onboarding_template_url.as_deref(),
    ))
}

/// Adds a new external ID beside the current one; the current one stays valid until a role
/// verifies with the new one.
pub async fn rotate_external_id(
    state: &AppState,
    principal: &Principal,
    ctx: &Context,
    id: &CustomerId,
) -> Result<CustomerRow, Error> {
    let new_id = new_external_id(state, id)?;
    let mut tx = state.db.begin().await?;
    db::customers::lock(&mut tx, id.as_str())
        .await?
        .ok_or_else(|| customer_not_found(id))?;
    db::customers::add_pending_external_id(&mut tx, id.as_str(), new_id.as_str()).await?;
    let event = NewEvent {
        customer_id: Some(id.to_string()),
        ..ctx.event(principal, "external_id.rotate")
    };
    audit::record_in(&mut tx, &event).await?;
    let row = db::customers::get(&mut *tx, id.as_str())
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    tx.commit().await?;
    Ok(row)
}

fn new_external_id(state: &AppState, id: &CustomerId) -> Result<ExternalId, Error> {
    ExternalId::generate(&state.config.external_id_prefix, id)
        .map_err(|e| Error::Internal(anyhow::anyhow!("OS random generator: {e}")))
}
