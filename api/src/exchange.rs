//! The token exchange (`POST /v1/auth/token`, RFC 8693): a trusted OpenID issuer's token in,
//! a short-lived Lanyard token out (<https://www.rfc-editor.org/rfc/rfc8693>).

use serde::{Deserialize, Serialize};

/// `grant_type` of a token exchange.
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// `subject_token_type` of a JWT (CI tokens, Kubernetes service-account tokens).
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// `subject_token_type` of an OpenID Connect ID token (a JWT too).
pub const TOKEN_TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
/// `issued_token_type` of the answer: a Lanyard API token, used as a bearer token.
pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

/// The form (`application/x-www-form-urlencoded`) of a token exchange request. Parameters
/// of RFC 8693 that are not listed here (`resource`, `audience`, `scope`) are ignored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct TokenExchangeRequest {
    /// `urn:ietf:params:oauth:grant-type:token-exchange`.
    pub grant_type: String,
    /// The issuer's token (a signed JWT).
    pub subject_token: String,
    /// `urn:ietf:params:oauth:token-type:jwt` or `urn:ietf:params:oauth:token-type:id_token`.
    pub subject_token_type: String,
    /// If given: `urn:ietf:params:oauth:token-type:access_token` (what is issued anyway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_token_type: Option<String>,
    /// Delegation (an actor acting for the subject) is not supported; a request naming an
    /// actor token is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_token: Option<String>,
}

/// A successful token exchange (RFC 8693 §2.2.1).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct TokenExchangeResponse {
    /// The Lanyard API token: send it as `Authorization: Bearer <token>`.
    pub access_token: String,
    /// `urn:ietf:params:oauth:token-type:access_token`.
    pub issued_token_type: String,
    /// `Bearer`.
    pub token_type: String,
    /// Seconds until the token expires.
    pub expires_in: u64,
}

/// Where `lanyard login --sso` signs in: `GET /v1/auth/sso`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct SsoSettings {
    /// The OpenID issuer (discovery at `<issuer>/.well-known/openid-configuration`).
    pub issuer: String,
    /// The public OAuth client the CLI signs in as (device flow, or PKCE).
    pub client_id: String,
    /// The scopes to ask for: `openid` for the ID token the broker exchanges,
    /// `offline_access` for the refresh token that renews it.
    pub scopes: String,
}

/// The scopes `lanyard login --sso` asks for.
pub const SSO_SCOPES: &str = "openid email profile offline_access";
