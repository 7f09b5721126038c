//! One issuer's signing keys: found through OpenID discovery
//! (`<issuer>/.well-known/openid-configuration`, then its `jwks_uri`), cached for
//! `keys_ttl`, fetched again at most once per `keys_min_refresh` when a token names a key
//! the cache lacks (so a flood of made-up `kid`s costs the issuer almost nothing), and
//! served stale for `keys_stale` while the issuer cannot be reached; after that, tokens from
//! it get 503 until it answers again.
//!
//! Only RS256 (RSA), ES256 (P-256) and EdDSA (Ed25519) keys are kept; a key's algorithm is
//! fixed by its type, never taken from the token (no `none`, no HMAC, no key confusion).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::auth::AuthError;
use crate::config::oidc::{OidcIssuer, check_issuer_url};
use crate::metrics::OidcMetrics;

/// Largest discovery document or key set read.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// A verification key and the one algorithm it verifies.
#[derive(Clone)]
pub struct Key {
    pub alg: Algorithm,
    pub decoding: DecodingKey,
}

pub struct IssuerKeys {
    issuer: String,
    http: reqwest::Client,
    ttl: Duration,
    stale: Duration,
    min_refresh: Duration,
    metrics: OidcMetrics,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    keys: HashMap<String, Key>,
    /// When the keys in hand were fetched; `None` before the first success.
    fetched_at: Option<Instant>,
    /// When a fetch was last attempted (successful or not).
    attempted_at: Option<Instant>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

impl IssuerKeys {
    pub fn new(config: &OidcIssuer, metrics: OidcMetrics) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("lanyard-server/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("reading ca_file {}: {e}", path.display()))?;
            builder = builder.tls_certs_merge(reqwest::Certificate::from_pem_bundle(&pem)?);
        }
        Ok(IssuerKeys {
            issuer: config.issuer.clone(),
            http: builder.build()?,
            ttl: config.keys_ttl,
            stale: config.keys_stale,
            min_refresh: config.keys_min_refresh,
            metrics,
            state: Mutex::new(State::default()),
        })
    }

    /// The key named `kid`. Fetches the key set when the one in hand is older than its TTL or
    /// lacks `kid`, within the refresh limit; a token naming a key the issuer does not
    /// publish is 401, an issuer unreachable past the stale bound 503.
    pub async fn get(&self, kid: &str) -> Result<Key, AuthError> {
        let mut state = self.state.lock().await;
        let now = Instant::now();
        let fresh = state
            .fetched_at
            .is_some_and(|at| now.duration_since(at) < self.ttl);
        if fresh && let Some(key) = state.keys.get(kid) {
            return Ok(key.clone());
        }
        let may_fetch = state
            .attempted_at
            .is_none_or(|at| now.duration_since(at) >= self.min_refresh);
        let mut failure = None;
        if may_fetch {
            state.attempted_at = Some(now);
            match self.fetch().await {
                Ok(keys) => {
                    self.metrics.key_fetch(&self.issuer, true);
                    state.keys = keys;
                    state.fetched_at = Some(Instant::now());
                }
                Err(e) => {
                    self.metrics.key_fetch(&self.issuer, false);
                    tracing::warn!(issuer = %self.issuer, error = %e, "fetching the issuer's signing keys failed");
                    failure = Some(e);
                }
            }
        }
        let usable = state
            .fetched_at
            .is_some_and(|at| now.duration_since(at) < self.ttl + self.stale);
        if !usable {
            let why =
                failure.map_or_else(|| "its last fetch failed".to_owned(), |e| format!("{e:#}"));
            return Err(AuthError::IssuerUnavailable(format!(
                "the signing keys of issuer {} cannot be fetched ({why}); tokens from it \
                 cannot be checked until it answers",
                self.issuer
            )));
        }
        state.keys.get(kid).cloned().ok_or_else(|| {
            AuthError::Unauthorized(format!(
                "the token names a signing key (kid) that issuer {} does not publish",
                self.issuer
            ))
        })
    }

    async fn fetch(&self) -> anyhow::Result<HashMap<String, Key>> {
        let base = self.issuer.trim_end_matches('/');
        let discovery: Discovery = self
            .get_json(&format!("{base}/.well-known/openid-configuration"))
            .await?;
        // OpenID Connect Discovery 1.0 §4.3: the document must name the issuer it was
        // fetched for.
        if discovery.issuer != self.issuer {
            anyhow::bail!(
                "discovery names issuer '{}', not '{}'",
                discovery.issuer.escape_debug(),
                self.issuer
            );
        }
        check_issuer_url(&discovery.jwks_uri).map_err(|e| anyhow::anyhow!("jwks_uri: {e}"))?;
        let set: JwkSet = self.get_json(&discovery.jwks_uri).await?;
        Ok(keys_of(&set))
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> anyhow::Result<T> {
        let response = self.http.get(url).send().await?;
        let status = response.status();
        if !status.is_success() {
            anyhow::bail!("{url} answered {status}");
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
        {
            anyhow::bail!("{url} answered with more than {MAX_DOCUMENT_BYTES} bytes");
        }
        let body = response.bytes().await?;
        if body.len() > MAX_DOCUMENT_BYTES {
            anyhow::bail!("{url} answered with more than {MAX_DOCUMENT_BYTES} bytes");
        }
        serde_json::from_slice(&body).map_err(|e| anyhow::anyhow!("{url}: {e}"))
    }
}

/// The signature keys of a set that this broker accepts, by `kid`; others are skipped.
fn keys_of(set: &JwkSet) -> HashMap<String, Key> {
    set.keys
        .iter()
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                return None;
            }
            let alg = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                    Algorithm::ES256
                }
                AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                    Algorithm::EdDSA
                }
                _ => return None,
            };
            // A key that says it is for another algorithm is not used for this one.
            let declared_ok = match jwk.common.key_algorithm {
                None => true,
                Some(KeyAlgorithm::RS256) => alg == Algorithm::RS256,
                Some(KeyAlgorithm::ES256) => alg == Algorithm::ES256,
                Some(KeyAlgorithm::EdDSA) => alg == Algorithm::EdDSA,
                Some(_) => false,
            };
            if !declared_ok {
                return None;
            }
            let decoding = DecodingKey::from_jwk(jwk).ok()?;
            Some((kid, Key { alg, decoding }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_signature_keys_of_the_three_algorithms_are_kept() {
        let set: JwkSet = serde_json::from_value(serde_json::json!({"keys": [
            {"kty": "EC", "crv": "P-256", "kid": "ec", "use": "sig",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "crv": "P-256", "kid": "ec-enc", "use": "enc",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "EC", "crv": "P-256", "kid": "ec-says-rs", "alg": "RS256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "crv": "P-256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
        ]}))
        .unwrap();
        let keys = keys_of(&set);
        assert_eq!(keys.keys().collect::<Vec<_>>(), vec!["ec"]);
        assert_eq!(keys["ec"].alg, Algorithm::ES256);
    }
}
