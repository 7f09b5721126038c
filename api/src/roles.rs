//! A customer's IAM roles.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::status::{RoleStatus, TrustCheck};
use crate::{CustomerId, RoleName, SessionKind};

/// Room left in the 2,048-character STS policy limit for the broker's own statements.
pub const MAX_SESSION_POLICY_CHARS: usize = 1536;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Role {
    #[cfg_attr(feature = "utoipa", schema(value_type = String, example = "readonly"))]
    pub name: RoleName,
    #[cfg_attr(feature = "utoipa", schema(value_type = String))]
    pub customer: CustomerId,
    #[cfg_attr(
        feature = "utoipa",
        schema(example = "arn:aws:iam::111122223333:role/LanyardAccess")
    )]
    pub role_arn: String,
    /// Session kinds that may use the role.
    pub session_kinds: Vec<SessionKind>,
    pub max_session_seconds: i32,
    /// Scoped-down session policy applied to every AssumeRole.
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<Object>))]
    pub session_policy: Option<serde_json::Value>,
    /// Named access tiers a session may ask for instead of the base grant.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tiers: BTreeMap<String, Tier>,
    /// IAM actions the role must allow for the job (`s3:GetObject`, …), checked with
    /// iam:SimulatePrincipalPolicy when the role is verified.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_actions: Vec<String>,
    /// What the last check of `required_actions` found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<Validation>,
    /// `verified`, `failed` or `unverified`.
    pub status: RoleStatus,
    pub verified_at: Option<DateTime<Utc>>,
    pub last_checked_at: Option<DateTime<Utc>>,
    /// Why the last verification failed, or a warning about the trust policy.
    pub last_error: Option<String>,
    /// The confused-deputy check: `passed` (AssumeRole without the external ID is denied),
    /// `open` (it is allowed), `inconclusive`, or `not_run`.
    pub trust_check: TrustCheck,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct PutRole {
    /// `arn:<partition>:iam::<12-digit account>:role/<optional path/><name>`.
    #[cfg_attr(
        feature = "utoipa",
        schema(
            example = "arn:aws:iam::111122223333:role/LanyardAccess",
            pattern = "^arn:aws(-cn|-us-gov|-iso|-iso-b)?:iam::[0-9]{12}:role/([!-~]*/)?[A-Za-z0-9_+=,.@-]{1,64}$",
            max_length = 2048
        )
    )]
    pub role_arn: String,
    /// 900-43200, at most the role's MaxSessionDuration in IAM. Default 3600.
    #[cfg_attr(feature = "utoipa", schema(minimum = 900, maximum = 43200))]
    #[serde(default, deserialize_with = "crate::integral")]
    pub max_session_seconds: Option<i32>,
    /// Default: both kinds.
    #[cfg_attr(feature = "utoipa", schema(min_items = 1))]
    pub session_kinds: Option<Vec<SessionKind>>,
    /// An IAM policy document that scopes sessions down (at most 1,536 characters compact).
    #[cfg_attr(feature = "utoipa", schema(schema_with = session_policy_schema))]
    pub session_policy: Option<serde_json::Value>,
    /// Named access tiers (at most 10; names `[a-z0-9][a-z0-9_-]{0,31}`), e.g. `read`,
    /// `billing`, `debug`, `write`. A session asks for one by name; without one it gets the
    /// base grant (`session_policy`).
    #[serde(default)]
    pub tiers: Option<BTreeMap<String, Tier>>,
    /// IAM actions the role must allow (at most 100, `service:Action`, wildcards allowed),
    /// checked with iam:SimulatePrincipalPolicy on the role when it is verified.
    #[cfg_attr(feature = "utoipa", schema(example = json!(["s3:GetObject", "s3:ListBucket"])))]
    #[serde(default)]
    pub required_actions: Option<Vec<String>>,
}

/// Most required actions one role may list.
pub const MAX_REQUIRED_ACTIONS: usize = 100;

/// What iam:SimulatePrincipalPolicy said about one action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub enum ActionDecision {
    Allowed,
    /// No statement allows it.
    ImplicitDeny,
    /// A statement denies it.
    ExplicitDeny,
}

impl ActionDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionDecision::Allowed => "allowed",
            ActionDecision::ImplicitDeny => "implicit_deny",
            ActionDecision::ExplicitDeny => "explicit_deny",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ActionResult {
    #[cfg_attr(feature = "utoipa", schema(example = "s3:GetObject"))]
    pub action: String,
    pub decision: ActionDecision,
}

/// A check of actions against the role's own policies (iam:SimulatePrincipalPolicy, called
/// with the role's credentials: the customer's template grants it on the role itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Validation {
    pub checked_at: DateTime<Utc>,
    /// One per action, in the order asked; empty when the check failed.
    pub results: Vec<ActionResult>,
    /// Why the check could not run (the role may not call SimulatePrincipalPolicy, AWS
    /// unreachable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The body of `POST /v1/customers/{id}/roles/{name}/validate`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ValidateRole {
    /// Check these actions instead of the role's `required_actions` (the result is then not
    /// stored on the role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<String>>,
}

/// Most tiers one role may declare.
pub const MAX_TIERS: usize = 10;
/// STS's limit on managed policy ARNs per AssumeRole.
pub const MAX_POLICY_ARNS: usize = 10;

/// One access tier of a role: what a session in it may do, for how long, and whether a
/// second person must approve it first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Tier {
    /// An inline session policy for this tier (replaces the role's `session_policy`; at most
    /// 1,536 characters compact).
    #[cfg_attr(feature = "utoipa", schema(schema_with = session_policy_schema))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_policy: Option<serde_json::Value>,
    /// Managed policies (at most 10 ARNs) that scope the tier's sessions down, e.g.
    /// `arn:aws:iam::aws:policy/ReadOnlyAccess`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_arns: Vec<String>,
    /// Longest session in this tier (60 up to the role's `max_session_seconds`).
    #[cfg_attr(feature = "utoipa", schema(minimum = 60, maximum = 43200))]
    #[serde(
        default,
        deserialize_with = "crate::integral",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_duration_seconds: Option<i32>,
    /// Sessions in this tier wait for a second person's approval.
    #[serde(default)]
    pub requires_approval: bool,
}

/// The shape the server's policy check accepts: an IAM policy document with a `Statement`.
#[cfg(feature = "utoipa")]
fn session_policy_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{
        AdditionalProperties, ArrayBuilder, ObjectBuilder, OneOfBuilder, SchemaType, Type,
    };
    let string = || ObjectBuilder::new().schema_type(Type::String);
    ObjectBuilder::new()
        .schema_type(SchemaType::Array(vec![Type::Object, Type::Null]))
        .property("Version", string().examples(["2012-10-17"]))
        .property("Id", string())
        .property(
            "Statement",
            OneOfBuilder::new()
                .item(ObjectBuilder::new().schema_type(Type::Object))
                .item(
                    ArrayBuilder::new()
                        .items(ObjectBuilder::new().schema_type(Type::Object))
                        .min_items(Some(1)),
                )
                .description(Some("One statement or a non-empty list of them.")),
        )
        .required("Statement")
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .description(Some(
            "An IAM policy document that scopes sessions down (at most 1,536 characters compact).",
        ))
        .build()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct RoleList {
    pub roles: Vec<Role>,
}
