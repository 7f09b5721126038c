//! Errors as the API reports them: RFC 9457 problem documents
//! (<https://www.rfc-editor.org/rfc/rfc9457>), and the health probes' answer.

use serde::{Deserialize, Serialize};

/// The RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[cfg_attr(
        feature = "utoipa",
        schema(example = "urn:lanyard:problem:invalid-field")
    )]
    pub r#type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The id of the request, also sent as `x-request-id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The fields at fault, for validation errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// The AWS error code, when AWS refused the broker's call (e.g. `AccessDenied`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "utoipa", schema(example = "AccessDenied"))]
    pub aws_error_code: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Health {
    /// `ok`, or what is missing.
    pub status: String,
}
