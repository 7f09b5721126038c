//! A customer's IAM roles.

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
