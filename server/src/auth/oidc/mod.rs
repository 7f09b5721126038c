//! Tokens of trusted OpenID issuers (company SSO, CI systems), checked for the token
//! exchange (`POST /v1/auth/token`). They never authenticate an API request themselves: the
//! exchange turns one into a short-lived Lanyard token with a record, so the credential hot
//! path stays the one that checks Lanyard tokens.
//!
//! A token is accepted when, in this order: its header names RS256, ES256 or EdDSA and a
//! `kid`; its `iss` is a configured issuer that has bindings; that issuer publishes the
//! key, for that algorithm; the signature verifies; `aud` holds one of the issuer's
//! audiences; `exp` is ahead and `nbf`/`iat` are not (30 s leeway). A binding then decides
//! what the token is exchanged for (`domain::binding`).

mod keys;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::AuthError;
use super::token::LEEWAY_SECS;
use crate::config::oidc::OidcIssuer;
use crate::domain::{Binding, Grant};
use crate::metrics::OidcMetrics;
use keys::IssuerKeys;

/// Longest token accepted for exchange, in bytes.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Longest `sub` of a token accepted for exchange.
const MAX_EXTERNAL_SUBJECT_CHARS: usize = 255;

/// The algorithms a trusted issuer's token may be signed with.
const ACCEPTED: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

/// The configured issuers, by `iss`.
#[derive(Default)]
pub struct Issuers {
    by_iss: HashMap<String, Arc<Issuer>>,
    /// The issuer and client `lanyard login --sso` signs in with, if one is configured.
    sso: Option<(String, String)>,
}

pub struct Issuer {
    pub issuer: String,
    audiences: Vec<String>,
    bindings: Vec<Binding>,
    keys: IssuerKeys,
}

/// A token whose signature and dates checked out, from `issuer`.
pub struct Verified {
    pub issuer: Arc<Issuer>,
    pub claims: Map<String, Value>,
}

impl Verified {
    /// The token's own `sub` (checked present and plain), for the audit row and the Lanyard
    /// token's provenance.
    pub fn external_subject(&self) -> &str {
        self.claims.get("sub").and_then(Value::as_str).unwrap_or("")
    }

    /// Seconds until the token itself expires (its `exp` is required and checked).
    pub fn remaining_secs(&self) -> u64 {
        let exp = self.claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
        u64::try_from(exp - Utc::now().timestamp()).unwrap_or(0)
    }

    /// The first binding that matches, and what it grants. When none matches, or the one
    /// that matched cannot use the token's subject or customer claim, the refusal the caller
    /// gets is the same `Forbidden`, naming the issuer and never a claim or binding; the
    /// reason is for the log and the audit row.
    pub fn grant(&self) -> Result<Grant, Refusal> {
        let refused = |detail: String| Refusal {
            public: AuthError::Forbidden(format!(
                "no binding of issuer {} matches this token",
                self.issuer.issuer
            )),
            detail,
        };
        let binding = self
            .issuer
            .bindings
            .iter()
            .find(|b| b.matches(&self.claims))
            .ok_or_else(|| refused("no binding matched".into()))?;
        binding
            .grant(&self.claims)
            .map_err(|why| refused(format!("binding {} matched, but {why}", binding.name)))
    }
}

/// A verified token that gets nothing: what the caller is told, and why (for the log and
/// the audit row only).
pub struct Refusal {
    pub public: AuthError,
    pub detail: String,
}

#[derive(Deserialize)]
struct IssuerOnly {
    iss: Option<String>,
}

impl Issuers {
    pub fn new(configs: &[OidcIssuer], metrics: &OidcMetrics) -> anyhow::Result<Self> {
        let by_iss = configs
            .iter()
            .map(|config| {
                let issuer = Issuer {
                    issuer: config.issuer.clone(),
                    audiences: config.audiences.clone(),
                    bindings: config.bindings.clone(),
                    keys: IssuerKeys::new(config, metrics.clone())?,
                };
                Ok((config.issuer.clone(), Arc::new(issuer)))
            })
            .collect::<anyhow::Result<_>>()?;
        let sso = configs.iter().find_map(|c| {
            c.cli_client_id
                .as_ref()
                .map(|client| (c.issuer.clone(), client.clone()))
        });
        Ok(Issuers { by_iss, sso })
    }

    /// The issuer and client id of `lanyard login --sso`.
    pub fn sso(&self) -> Option<(&str, &str)> {
        self.sso.as_ref().map(|(i, c)| (i.as_str(), c.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.by_iss.is_empty()
    }

    /// Checks `raw` as described in the module documentation.
    pub async fn verify(&self, raw: &str) -> Result<Verified, AuthError> {
        let unauthorized = |why: String| AuthError::Unauthorized(why);
        if raw.len() > MAX_TOKEN_BYTES {
            return Err(unauthorized(format!(
                "the subject token is longer than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        // The header's `alg` is one of jsonwebtoken's algorithms (`none` is not one, so such
        // a token fails here as malformed).
        let header = jsonwebtoken::decode_header(raw)
            .map_err(|_| unauthorized("the subject token is not a signed JWT".into()))?;
        if !ACCEPTED.contains(&header.alg) {
            return Err(unauthorized(format!(
                "the subject token is signed with {:?}; only RS256, ES256 and EdDSA are accepted",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| unauthorized("the subject token names no signing key (kid)".into()))?;
        // Only to choose the issuer whose keys check the signature.
        let iss = jsonwebtoken::dangerous::insecure_decode_claims::<IssuerOnly>(raw)
            .ok()
            .and_then(|c| c.iss)
            .ok_or_else(|| unauthorized("the subject token names no issuer (iss)".into()))?;
        let issuer = self.by_iss.get(&iss).ok_or_else(|| {
            let shown: String = iss.chars().take(100).collect();
            unauthorized(format!(
                "issuer '{}' is not trusted by this broker",
                shown.escape_debug()
            ))
        })?;
        if issuer.bindings.is_empty() {
            return Err(unauthorized(format!(
                "issuer {} has no bindings: its tokens are not accepted",
                issuer.issuer
            )));
        }
        let key = issuer.keys.get(&kid).await?;
        if key.alg != header.alg {
            return Err(unauthorized(format!(
                "the subject token's algorithm does not match its key {kid}"
            )));
        }
        let mut validation = Validation::new(key.alg);
        validation.set_issuer(&[&issuer.issuer]);
        validation.set_audience(issuer.audiences.as_slice());
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(raw, &key.decoding, &validation)
            .map_err(|e| {
                unauthorized(
                    match e.kind() {
                        ErrorKind::ExpiredSignature => "the subject token has expired",
                        ErrorKind::ImmatureSignature => "the subject token is not valid yet (nbf)",
                        ErrorKind::InvalidSignature => "the subject token's signature is invalid",
                        ErrorKind::InvalidAudience => {
                            "the subject token is not meant for this broker (aud)"
                        }
                        ErrorKind::InvalidIssuer => "the subject token's issuer does not match",
                        _ => "the subject token is malformed",
                    }
                    .into(),
                )
            })?
            .claims;
        let latest = Utc::now().timestamp() + LEEWAY_SECS as i64;
        if claims
            .get("iat")
            .and_then(Value::as_i64)
            .is_some_and(|iat| iat > latest)
        {
            return Err(unauthorized(
                "the subject token is issued in the future (iat)".into(),
            ));
        }
        // The external subject goes into the token's record, its audit rows and what
        // `token list` prints: short, plain text.
        let sub_ok = claims.get("sub").and_then(Value::as_str).is_some_and(|s| {
            (1..=MAX_EXTERNAL_SUBJECT_CHARS).contains(&s.chars().count())
                && crate::domain::check_plain_text("sub", s).is_ok()
        });
        if !sub_ok {
            return Err(unauthorized(format!(
                "the subject token's sub must be 1-{MAX_EXTERNAL_SUBJECT_CHARS} characters of \
                 plain text"
            )));
        }
        Ok(Verified {
            issuer: issuer.clone(),
            claims,
        })
    }
}
