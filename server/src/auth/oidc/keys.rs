//! One issuer's signing keys: found through OpenID discovery
//! (`<issuer>/.well-known/openid-configuration`, then its `jwks_uri`), cached for
//! `keys_ttl`, fetched again at most once per `keys_min_refresh` when a token names a key
//! the cache lacks (so a flood of made-up `kid`s costs the issuer almost nothing), and
//! served stale for `keys_stale` while the issuer cannot be reached; after that, tokens from
//! it get 503 until it answers again.
//!
//! A fetch runs in a task of its own, one at a time per issuer: no request holds a lock
//! across the network, a request that gives up does not cancel the fetch, and tokens under
//! keys in hand are checked at once, also while a refresh of aging keys runs in the
//! background. Only a token naming a key not in hand (or arriving when the keys in hand are
//! past their stale bound) waits for the fetch.
//!
//! Only RS256 (RSA), ES256 (P-256) and EdDSA (Ed25519) keys are kept; a key's algorithm is
//! fixed by its type, never taken from the token (no `none`, no HMAC, no key confusion).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

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

/// A fetch under way; every waiter shares it.
type Flight = Shared<BoxFuture<'static, ()>>;

#[derive(Clone)]
pub struct IssuerKeys(Arc<Inner>);

struct Inner {
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
    /// When the last fetch ended (successful or not): the refresh limit counts from here.
    finished_at: Option<Instant>,
    in_flight: Option<Flight>,
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
        Ok(IssuerKeys(Arc::new(Inner {
            issuer: config.issuer.clone(),
            http: builder.build()?,
            ttl: config.keys_ttl,
            stale: config.keys_stale,
            min_refresh: config.keys_min_refresh,
            metrics,
            state: Mutex::new(State::default()),
        })))
    }

    /// The key named `kid`: from the keys in hand when they are within their stale bound
    /// (starting a background refresh once they are past their TTL), else after a fetch
    /// (within the refresh limit). A token naming a key the issuer does not publish is 401;
    /// an issuer unreachable past the stale bound 503.
    pub async fn get(&self, kid: &str) -> Result<Key, AuthError> {
        let flight = {
            let mut state = self.lock();
            let now = Instant::now();
            if self.usable(&state, now)
                && let Some(key) = state.keys.get(kid).cloned()
            {
                if !self.fresh(&state, now) {
                    self.start_fetch(&mut state, now);
                }
                return Ok(key);
            }
            self.start_fetch(&mut state, now)
        };
        if let Some(flight) = flight {
            flight.await;
        }
        let state = self.lock();
        if !self.usable(&state, Instant::now()) {
            return Err(AuthError::IssuerUnavailable(format!(
                "the signing keys of issuer {} cannot be fetched; tokens from it cannot be \
                 checked until it answers",
                self.0.issuer
            )));
        }
        state.keys.get(kid).cloned().ok_or_else(|| {
            AuthError::Unauthorized(format!(
                "the token names a signing key (kid) that issuer {} does not publish",
                self.0.issuer
            ))
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn fresh(&self, state: &State, now: Instant) -> bool {
        state
            .fetched_at
            .is_some_and(|at| now.duration_since(at) < self.0.ttl)
    }

    fn usable(&self, state: &State, now: Instant) -> bool {
        state
            .fetched_at
            .is_some_and(|at| now.duration_since(at) < self.0.ttl + self.0.stale)
    }

    /// The fetch under way, or a new one when the refresh limit allows; `None` when neither.
    fn start_fetch(&self, state: &mut State, now: Instant) -> Option<Flight> {
        if let Some(flight) = &state.in_flight {
            return Some(flight.clone());
        }
        let allowed = state
            .finished_at
            .is_none_or(|at| now.duration_since(at) >= self.0.min_refresh);
        if !allowed {
            return None;
        }
        let keys = self.clone();
        let task = tokio::spawn(async move { keys.refresh().await });
        let flight: Flight = async move {
            let _ = task.await;
        }
        .boxed()
        .shared();
        state.in_flight = Some(flight.clone());
        Some(flight)
    }

    /// One fetch, its outcome stored.
    async fn refresh(&self) {
        let result = self.fetch().await;
        let inner = &self.0;
        inner.metrics.key_fetch(&inner.issuer, result.is_ok());
        let mut state = self.lock();
        match result {
            Ok(keys) => {
                state.keys = keys;
                state.fetched_at = Some(Instant::now());
            }
            Err(e) => {
                tracing::warn!(issuer = %inner.issuer, error = %format!("{e:#}"), "fetching the issuer's signing keys failed");
            }
        }
        state.finished_at = Some(Instant::now());
        state.in_flight = None;
    }

    async fn fetch(&self) -> anyhow::Result<HashMap<String, Key>> {
        let issuer = &self.0.issuer;
        let base = issuer.trim_end_matches('/');
        let discovery: Discovery = self
            .get_json(&format!("{base}/.well-known/openid-configuration"))
            .await?;
        // OpenID Connect Discovery 1.0 §4.3: the document must name the issuer it was
        // fetched for.
        if &discovery.issuer != issuer {
            anyhow::bail!(
                "discovery names issuer '{}', not '{issuer}'",
                discovery.issuer.escape_debug()
            );
        }
        check_issuer_url(&discovery.jwks_uri).map_err(|e| anyhow::anyhow!("jwks_uri: {e}"))?;
        let set: JwkSet = self.get_json(&discovery.jwks_uri).await?;
        Ok(keys_of(&set))
    }

    /// A JSON document of at most [`MAX_DOCUMENT_BYTES`], read in chunks so that a body
    /// without a length cannot grow past the limit in memory.
    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> anyhow::Result<T> {
        let mut response = self.0.http.get(url).send().await?;
        let status = response.status();
        if !status.is_success() {
            anyhow::bail!("{url} answered {status}");
        }
        let too_large =
            || anyhow::anyhow!("{url} answered with more than {MAX_DOCUMENT_BYTES} bytes");
        if response
            .content_length()
            .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
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
