//! `ApiError`: every failure a handler can return, rendered as an RFC 9457
//! `application/problem+json` document (<https://www.rfc-editor.org/rfc/rfc9457>).
//! 5xx bodies are fixed text; their cause goes to the log inside the request span.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::ParseError;

pub const PROBLEM_JSON: &str = "application/problem+json";

tokio::task_local! {
    /// The current request's id, set by the middleware so that problem documents carry it.
    pub static REQUEST_ID: String;
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field or parameter is malformed (400).
    #[error("{field}: {message}")]
    InvalidField { field: String, message: String },
    /// The request as a whole cannot be read (400, 413, 415, 422 from the extractors).
    #[error("{detail}")]
    Rejected { status: StatusCode, detail: String },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    /// The request is well-formed but the state of things forbids it (422).
    #[error("{0}")]
    Unprocessable(String),
    /// The session is over: expired or revoked (410).
    #[error("{0}")]
    Gone(String),
    /// AWS STS refused or failed the AssumeRole call. The AWS error code is returned to the
    /// client (it is what they need to fix the role); `status` is 502, or 503 when retrying
    /// later may help (throttling, unreachable).
    #[error("AWS STS refused AssumeRole: {code}: {message}")]
    Aws {
        status: StatusCode,
        code: String,
        message: String,
    },
    #[error("the request took too long")]
    Timeout,
    /// A dependency (database, AWS) cannot be reached; the cause is logged, not returned.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// The RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[schema(example = "urn:lanyard:problem:invalid-field")]
    pub r#type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The id of the request, also sent as `x-request-id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The fields at fault, for validation errors.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// The AWS error code, when AWS refused the broker's call (e.g. `AccessDenied`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "AccessDenied")]
    pub aws_error_code: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, err: impl std::fmt::Display) -> Self {
        ApiError::InvalidField {
            field: field.into(),
            message: err.to_string(),
        }
    }

    /// Parses an optional parameter; a value `parse` refuses is an invalid `field`.
    pub fn parse_optional<T, E: std::fmt::Display>(
        field: &str,
        value: Option<&str>,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<Option<T>, Self> {
        value
            .map(parse)
            .transpose()
            .map_err(|e| ApiError::invalid(field, e))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidField { .. } => StatusCode::BAD_REQUEST,
            ApiError::Rejected { status, .. } => *status,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::Aws { status, .. } => *status,
            ApiError::Timeout | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The problem type's last part, e.g. `not-found`; also the audit rows' error code.
    pub fn slug(&self) -> &'static str {
        match self {
            ApiError::InvalidField { .. } => "invalid-field",
            ApiError::Rejected { status, .. } => match *status {
                StatusCode::PAYLOAD_TOO_LARGE => "body-too-large",
                StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
                StatusCode::UNPROCESSABLE_ENTITY => "invalid-body",
                _ => "bad-request",
            },
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not-found",
            ApiError::MethodNotAllowed => "method-not-allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::Unprocessable(_) => "unprocessable",
            ApiError::Gone(_) => "session-ended",
            ApiError::Aws { .. } => "aws-error",
            ApiError::Timeout => "timeout",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    /// Maps a database error: unreachable database → 503, anything else → 500.
    pub fn from_db(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed
            // A front end (pooler, load balancer) that accepts and then drops connections.
            | sqlx::Error::Protocol(_) => ApiError::Unavailable(format!("database: {err}")),
            // Postgres refusing work: connection exceptions (08), insufficient resources
            // (53: too many connections, disk full), operator intervention (57: shutting
            // down, starting up, query cancelled).
            sqlx::Error::Database(db)
                if db
                    .code()
                    .is_some_and(|c| ["08", "53", "57"].iter().any(|class| c.starts_with(class))) =>
            {
                ApiError::Unavailable(format!("database: {db}"))
            }
            other => ApiError::Internal(anyhow::Error::new(other).context("database query")),
        }
    }

    /// Turns a unique-constraint violation into 409 with `message`; other errors as `from_db`.
    pub fn on_unique_violation(err: sqlx::Error, message: impl Into<String>) -> Self {
        match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                ApiError::Conflict(message.into())
            }
            _ => ApiError::from_db(err),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        ApiError::from_db(err)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = if status.is_server_error() {
            tracing::error!(error = ?self, "request failed");
            match self {
                ApiError::Timeout | ApiError::Aws { .. } => self.to_string(),
                _ => "the server could not complete the request; see its log for this request id"
                    .to_owned(),
            }
        } else {
            self.to_string()
        };
        let errors = match &self {
            ApiError::InvalidField { field, message } => {
                vec![FieldError {
                    field: field.clone(),
                    message: message.clone(),
                }]
            }
            _ => Vec::new(),
        };
        let problem = Problem {
            r#type: format!("urn:lanyard:problem:{}", self.slug()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
            request_id: REQUEST_ID.try_with(Clone::clone).ok(),
            errors,
            aws_error_code: match &self {
                ApiError::Aws { code, .. } => Some(code.clone()),
                _ => None,
            },
        };
        let mut response = (status, axum::Json(problem)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"lanyard\""),
            );
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        ApiError::Rejected {
            status: rejection.status(),
            detail: rejection.body_text(),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::Rejected {
            status: StatusCode::BAD_REQUEST,
            detail: rejection.body_text(),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::Rejected {
            status: StatusCode::BAD_REQUEST,
            detail: rejection.body_text(),
        }
    }
}

impl From<ParseError> for ApiError {
    fn from(err: ParseError) -> Self {
        ApiError::Rejected {
            status: StatusCode::BAD_REQUEST,
            detail: err.0,
        }
    }
}
