//! `Lanyard-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "{t}.{body}">`, checked and
//! made the way a receiver written from the documentation would: RustCrypto's `hmac` and
//! `sha2`, none of the broker's code, so that a mistake the broker makes in both directions
//! cannot pass unnoticed.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The header's name.
pub const HEADER: &str = "Lanyard-Signature";

/// How far `t` may be from the receiver's clock, in seconds: five minutes, as documented.
pub const TOLERANCE_SECS: i64 = 300;

/// What a receiver made of a `Lanyard-Signature` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A `v1` is the HMAC of `"{t}.{body}"` and `t` is recent.
    Valid,
    /// No header.
    Missing,
    /// Not `t=<integer>,v1=<hex>`.
    Malformed,
    /// `t` is more than five minutes from the receiver's clock.
    Stale,
    /// No `v1` matches the body.
    Mismatch,
}

/// Now, in Unix seconds.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The header value for `body` sent at `t`, signed with `secret`.
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks `header` against `body` at `now` (Unix seconds). Each `v1` is compared in
/// constant time (`Mac::verify_slice`); any one that matches will do (secret rotation).
pub fn verify(secret: &str, header: Option<&str>, body: &[u8], now: i64) -> Verdict {
    let Some(header) = header else {
        return Verdict::Missing;
    };
    let mut t = None;
    let mut tags = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => match value.parse::<i64>() {
                Ok(value) => t = Some(value),
                Err(_) => return Verdict::Malformed,
            },
            Some(("v1", value)) => match hex::decode(value) {
                Ok(tag) => tags.push(tag),
                Err(_) => return Verdict::Malformed,
            },
            _ => return Verdict::Malformed,
        }
    }
    let Some(t) = t else {
        return Verdict::Malformed;
    };
    if tags.is_empty() {
        return Verdict::Malformed;
    }
    if (now - t).abs() > TOLERANCE_SECS {
        return Verdict::Stale;
    }
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    if tags.iter().any(|tag| mac.clone().verify_slice(tag).is_ok()) {
        Verdict::Valid
    } else {
        Verdict::Mismatch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef";
    const BODY: &[u8] = br#"{"case_id":"CS-1"}"#;
    /// `hmac.new(b"0123456789abcdef", b'1800000000.{"case_id":"CS-1"}', sha256)`, computed
    /// with Python's standard library.
    const KNOWN: &str =
        "t=1800000000,v1=3fa8327de22f3053cbd5efaad11a8fb328333f74d2ba954735c3374d5f3164cc";

    #[test]
    fn signing_matches_an_independent_hmac_sha256() {
        assert_eq!(sign(SECRET, 1_800_000_000, BODY), KNOWN);
    }

    #[test]
    fn a_signature_verifies_and_anything_changed_does_not() {
        let t = 1_800_000_000;
        assert_eq!(verify(SECRET, Some(KNOWN), BODY, t + 300), Verdict::Valid);
        assert_eq!(verify(SECRET, Some(KNOWN), BODY, t + 301), Verdict::Stale);
        assert_eq!(verify(SECRET, Some(KNOWN), BODY, t - 301), Verdict::Stale);
        assert_eq!(
            verify(SECRET, Some(KNOWN), br#"{"case_id":"CS-2"}"#, t),
            Verdict::Mismatch
        );
        assert_eq!(
            verify("another secret!!", Some(KNOWN), BODY, t),
            Verdict::Mismatch
        );
        let moved = KNOWN.replace("t=1800000000", "t=1800000001");
        assert_eq!(verify(SECRET, Some(&moved), BODY, t), Verdict::Mismatch);
        let tag = KNOWN.split_once("v1=").unwrap().1;
        let rotated = format!("t={t},v1={},v1={tag}", "0".repeat(64));
        assert_eq!(verify(SECRET, Some(&rotated), BODY, t), Verdict::Valid);
        assert_eq!(verify(SECRET, None, BODY, t), Verdict::Missing);
        for bad in [
            "",
            "t=1800000000",
            "v1=00",
            "t=x,v1=00",
            "t=1800000000,v1=zz",
            "junk",
        ] {
            assert_eq!(
                verify(SECRET, Some(bad), BODY, t),
                Verdict::Malformed,
                "{bad}"
            );
        }
    }
}
