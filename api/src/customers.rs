//! Customers and their onboarding document.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::CustomerId;
use crate::status::CustomerStatus;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Customer {
    #[cfg_attr(feature = "utoipa", schema(value_type = String, example = "acme-corp"))]
    pub id: CustomerId,
    pub display_name: String,
    /// The external ID the broker sends with every AssumeRole for this customer.
    pub external_id: String,
    /// A rotated external ID, in use once a role verifies with it.
    pub pending_external_id: Option<String>,
    /// `pending` until a role verifies, then `active`; `disabled` blocks new credentials.
    pub status: CustomerStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
    /// Every support session of this customer waits for a second person's approval,
    /// whatever its tier.
    #[serde(default)]
    pub requires_approval: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct CreateCustomer {
    /// Slug: 2-63 of `[a-z0-9-]`, starting with a letter or digit.
    #[cfg_attr(
        feature = "utoipa",
        schema(
            example = "acme-corp",
            pattern = "^[a-z0-9][a-z0-9-]{1,62}$",
            min_length = 2,
            max_length = 63
        )
    )]
    pub id: String,
    /// Human-readable name (defaults to the id): 1-200 characters, not blank, no control
    /// characters.
    #[cfg_attr(
        feature = "utoipa",
        schema(
            example = "Acme Corp",
            max_length = 200,
            pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"
        )
    )]
    pub display_name: Option<String>,
    /// Every support session of this customer waits for a second person's approval.
    /// Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_approval: Option<bool>,
}

/// The body of `PUT /v1/customers/{id}/approval`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct CustomerApproval {
    /// Every support session of this customer waits for a second person's approval.
    pub requires_approval: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct CustomerList {
    pub customers: Vec<Customer>,
}

/// What a customer needs to create the role: external ID, trust policy, template.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Onboarding {
    #[cfg_attr(feature = "utoipa", schema(value_type = String))]
    pub customer: CustomerId,
    /// The external ID to put in the role's trust policy (the pending one during rotation).
    pub external_id: String,
    /// Every external ID the broker may send right now; the trust policy accepts all of them.
    pub accepted_external_ids: Vec<String>,
    /// The broker's IAM principal, which the trust policy must name.
    pub broker_principal_arn: String,
    /// The trust policy for the role, as JSON.
    #[cfg_attr(feature = "utoipa", schema(value_type = Object))]
    pub trust_policy: serde_json::Value,
    /// CloudFormation template (YAML) that creates the role.
    pub cloudformation_template: String,
    /// Parameter values for the template.
    pub cloudformation_parameters: BTreeMap<String, String>,
    /// Console link that opens the template with its parameters filled in, when the
    /// broker knows the template's S3 URL.
    pub quick_create_url: Option<String>,
    /// What to do, in order.
    pub steps: Vec<String>,
}
