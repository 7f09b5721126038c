//! What the token exchange counts: exchanges by outcome, and fetches of the issuers' keys
//! by issuer (configured issuers only, so the label set is bounded) and result.

use prometheus::{IntCounterVec, Opts, Registry};

/// How one `POST /v1/auth/token` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeOutcome {
    /// A Lanyard token was issued.
    Issued,
    /// The subject token was refused (401) or matched no binding (403).
    Refused,
    /// The issuer or the database could not be reached (503).
    Unavailable,
}

impl ExchangeOutcome {
    fn as_str(self) -> &'static str {
        match self {
            ExchangeOutcome::Issued => "issued",
            ExchangeOutcome::Refused => "refused",
            ExchangeOutcome::Unavailable => "unavailable",
        }
    }
}

#[derive(Clone)]
pub struct OidcMetrics {
    exchanges: IntCounterVec,
    key_fetches: IntCounterVec,
}

impl OidcMetrics {
    pub(super) fn register(registry: &Registry) -> prometheus::Result<Self> {
        let exchanges = IntCounterVec::new(
            Opts::new(
                "lanyard_token_exchanges_total",
                "Token exchanges (POST /v1/auth/token), by outcome: issued, refused or \
                 unavailable",
            ),
            &["outcome"],
        )?;
        let key_fetches = IntCounterVec::new(
            Opts::new(
                "lanyard_oidc_key_fetches_total",
                "Fetches of a trusted issuer's signing keys (discovery and JWKS), by issuer \
                 and result: ok or failed",
            ),
            &["issuer", "result"],
        )?;
        registry.register(Box::new(exchanges.clone()))?;
        registry.register(Box::new(key_fetches.clone()))?;
        Ok(OidcMetrics {
            exchanges,
            key_fetches,
        })
    }

    pub fn exchange(&self, outcome: ExchangeOutcome) {
        self.exchanges.with_label_values(&[outcome.as_str()]).inc();
    }

    pub fn key_fetch(&self, issuer: &str, ok: bool) {
        self.key_fetches
            .with_label_values(&[issuer, if ok { "ok" } else { "failed" }])
            .inc();
    }
}
