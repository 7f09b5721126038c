//! API tokens the broker signs itself: Ed25519 (EdDSA) JWTs with a `jti` recorded in
//! Postgres, so that revocation takes effect on every instance at once.
//!
//! The signing key comes from `--signing-key-file`, or is generated once into the data
//! directory (0600). Instances behind one load balancer must share the key.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use chrono::Utc;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use super::{AuthError, Principal, Role};
use crate::config::Config;
use crate::db;
use crate::domain::CustomerId;
pub use crate::domain::Provenance;

pub const ISSUER: &str = "lanyard";
pub const AUDIENCE: &str = "lanyard-api";
const KEY_FILE_NAME: &str = "signing-key.pem";
const PEM_TAG: &str = "PRIVATE KEY";

/// Clock skew allowed on a token's `exp`, in seconds; the token cache applies the same.
pub const LEEWAY_SECS: u64 = 30;

/// The claims of a Lanyard API token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customers: Option<Vec<String>>,
    pub jti: Uuid,
    pub iat: i64,
    /// Not valid before (Unix seconds); the broker's own tokens leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    pub exp: i64,
    /// Tokens from an exchange (`POST /v1/auth/token`): the trusted issuer and the subject
    /// it vouched for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<Provenance>,
}

impl Claims {
    pub fn into_principal(self) -> Result<Principal, AuthError> {
        let bad = || AuthError::Unauthorized("token claims are invalid".into());
        let role = Role::parse(&self.role).ok_or_else(bad)?;
        let customers = self
            .customers
            .map(|list| {
                list.iter()
                    .map(|c| CustomerId::parse(c))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()
            .map_err(|_| bad())?;
        Ok(Principal {
            subject: self.sub,
            role,
            customers,
            token_id: self.jti,
            expires_at: self.exp,
        })
    }
}

/// The key pair that signs and verifies tokens.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys([redacted])")
    }
}

impl TokenKeys {
    /// Loads the configured key file, or the data directory's key, generating it if missing.
    /// Only the server does this; the other commands [`load`](Self::load) the key it made.
    pub fn load_or_generate(config: &Config) -> anyhow::Result<Self> {
        let path = match &config.signing_key_file {
            Some(path) => path.clone(),
            None => generate_if_missing(&config.data_dir)?,
        };
        Self::read(&path)
    }

    /// Loads the key the server uses, and fails, naming the place it looked, when there is
    /// none: a new key made here would sign tokens that the running server refuses.
    pub fn load(config: &Config) -> anyhow::Result<Self> {
        let path = config
            .signing_key_file
            .clone()
            .unwrap_or_else(|| config.data_dir.join(KEY_FILE_NAME));
        if !path.exists() {
            let absolute = std::path::absolute(&path).unwrap_or(path);
            bail!(
                "no signing key at {}: run this with the server's settings (the same \
                 --data-dir / LANYARD_DATA_DIR, or --signing-key-file), from the directory \
                 the server runs in; the server creates the key when it first starts",
                absolute.display()
            );
        }
        Self::read(&path)
    }

    fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read(path)
            .with_context(|| format!("reading signing key {}", path.display()))?;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(path = %path.display(), "signing key file is readable by group or others; chmod 600 it");
        }
        Self::from_pem(&text).with_context(|| format!("loading signing key {}", path.display()))
    }

    /// Reads a PKCS#8 Ed25519 private key in PEM form (`openssl genpkey -algorithm ed25519`).
    pub fn from_pem(pem_text: &[u8]) -> anyhow::Result<Self> {
        let parsed = pem::parse(pem_text).context("not a PEM file")?;
        if parsed.tag() != PEM_TAG {
            bail!("expected a '{PEM_TAG}' PEM block, found '{}'", parsed.tag());
        }
        let der = parsed.contents();
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| anyhow::anyhow!("not a PKCS#8 Ed25519 key: {e}"))?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECS;
        Ok(Self {
            encoding: EncodingKey::from_ed_der(der),
            decoding: DecodingKey::from_ed_der(pair.public_key().as_ref()),
            validation,
        })
    }

    pub fn sign(&self, claims: &Claims) -> anyhow::Result<String> {
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, &self.encoding)
            .context("signing token")
    }

    /// Checks signature, issuer, audience, expiry, and that neither `iat` nor `nbf` lies in
    /// the future (beyond [`LEEWAY_SECS`]): a token dated ahead was not issued by this
    /// broker's clock (<https://www.rfc-editor.org/rfc/rfc7519#section-4.1.5>). The record
    /// behind the token is checked separately ([`check_record`]).
    pub fn verify(&self, raw: &str) -> Result<Claims, AuthError> {
        let claims = self.decode(raw)?;
        let latest = Utc::now().timestamp() + LEEWAY_SECS as i64;
        if claims.iat > latest || claims.nbf.is_some_and(|nbf| nbf > latest) {
            return Err(AuthError::Unauthorized(
                "token is not valid yet (issued or valid from a time in the future)".into(),
            ));
        }
        Ok(claims)
    }

    fn decode(&self, raw: &str) -> Result<Claims, AuthError> {
        jsonwebtoken::decode::<Claims>(raw, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| {
                let why = match e.kind() {
                    ErrorKind::ExpiredSignature => "token has expired",
                    ErrorKind::InvalidSignature => "token signature is invalid",
                    ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => {
                        "token was not issued for this broker"
                    }
                    _ => "token is malformed",
                };
                AuthError::Unauthorized(why.into())
            })
    }
}

/// Writes a new key to `<data_dir>/signing-key.pem` unless one exists; returns its path.
/// Safe against concurrent first starts: the file appears atomically, or not at all.
fn generate_if_missing(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let path = data_dir.join(KEY_FILE_NAME);
    if path.exists() {
        return Ok(path);
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| anyhow::anyhow!("generating an Ed25519 key failed"))?;
    let text = pem::encode(&pem::Pem::new(PEM_TAG, doc.as_ref().to_vec()));
    let tmp = data_dir.join(format!(".{KEY_FILE_NAME}.{}", Uuid::new_v4()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    drop(file);
    // hard_link fails if the target exists, so a key generated meanwhile by another process wins.
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            tracing::info!(path = %path.display(), "generated a new token signing key");
            Ok(path)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(path),
        Err(e) => Err(e).with_context(|| format!("writing {}", path.display())),
    }
}

/// Rejects tokens whose record is missing (not issued here), revoked, or says something
/// else than the token: a token means what its row says, whoever holds the signing key.
pub async fn check_record(pool: &PgPool, claims: &Claims) -> Result<(), AuthError> {
    let row = db::tokens::get(pool, claims.jti)
        .await?
        .ok_or_else(|| AuthError::Unauthorized("token is not known to this broker".into()))?;
    if row.revoked_at.is_some() {
        return Err(AuthError::Unauthorized("token has been revoked".into()));
    }
    if !matches_record(claims, &row) {
        return Err(AuthError::Unauthorized(
            "token does not match the broker's record of it".into(),
        ));
    }
    Ok(())
}

/// Subject, role, customer limit and expiry as recorded when the token was issued.
fn matches_record(claims: &Claims, row: &db::tokens::TokenRow) -> bool {
    let sorted = |list: &Option<Vec<String>>| {
        list.clone().map(|mut l| {
            l.sort();
            l
        })
    };
    claims.sub == row.subject
        && claims.role == row.role.as_str()
        && sorted(&claims.customers) == sorted(&row.customers)
        && claims.exp == row.expires_at.timestamp()
        && claims.src.as_ref().map(|s| (&s.iss, &s.sub))
            == row.source_issuer.as_ref().zip(row.source_subject.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_sign_tokens_that_verify_and_reject_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let path = generate_if_missing(dir.path()).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // A second call keeps the first key.
        let before = std::fs::read(&path).unwrap();
        generate_if_missing(dir.path()).unwrap();
        assert_eq!(before, std::fs::read(&path).unwrap());

        let keys = TokenKeys::from_pem(&before).unwrap();
        let now = Utc::now().timestamp();
        let claims = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: "alice".into(),
            role: "admin".into(),
            customers: None,
            jti: Uuid::new_v4(),
            iat: now,
            nbf: None,
            exp: now + 60,
            src: None,
        };
        let token = keys.sign(&claims).unwrap();
        assert_eq!(keys.verify(&token).unwrap().sub, "alice");

        let mut tampered = token.clone();
        tampered.insert(tampered.len() - 5, 'A');
        assert!(keys.verify(&tampered).is_err());

        let other = TokenKeys::from_pem(
            std::fs::read(generate_if_missing(tempfile::tempdir().unwrap().path()).unwrap())
                .unwrap()
                .as_slice(),
        )
        .unwrap();
        assert!(other.verify(&token).is_err());

        let expired = Claims {
            exp: now - 120,
            iat: now - 240,
            ..claims
        };
        assert!(keys.verify(&keys.sign(&expired).unwrap()).is_err());
    }
}
