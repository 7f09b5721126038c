//! `Lanyard-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "{t}.{body}">`: how the broker
//! signs what it sends to the case system and to webhooks, and how it checks what the case
//! system sends it. The scheme is Stripe's: the timestamp is signed with the body, receivers
//! refuse a `t` more than five minutes from their clock, and several `v1` values may be sent
//! while a secret is rotated.

use aws_lc_rs::hmac;

/// The header's name.
pub const HEADER: &str = "Lanyard-Signature";
/// How far `t` may be from the receiver's clock, in seconds.
pub const TOLERANCE_SECS: u64 = 300;
/// Most `v1` values one header may carry (a rotation needs two).
const MAX_CANDIDATES: usize = 4;

/// The header value for `body` sent at `t`.
pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, &signed_payload(t, body));
    format!("t={t},v1={}", hex::encode(tag.as_ref()))
}

fn signed_payload(t: i64, body: &[u8]) -> Vec<u8> {
    let mut payload = format!("{t}.").into_bytes();
    payload.extend_from_slice(body);
    payload
}

/// Why a signature was refused (the message is for the caller; it holds no secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the {HEADER} header must be 't=<unix seconds>,v1=<hex HMAC-SHA256>'")]
    Malformed,
    #[error("the {HEADER} timestamp is more than 5 minutes from the broker's clock")]
    Stale,
    #[error("the {HEADER} does not match the body")]
    Mismatch,
}

/// Checks a header against `body` at `now` (Unix seconds): the timestamp within
/// [`TOLERANCE_SECS`], and one `v1` the HMAC of `"{t}.{body}"` (compared in constant time).
/// Returns the matching `v1`, the key under which a replay is recognised.
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: i64) -> Result<String, Refused> {
    let mut t = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => t = Some(value.parse::<i64>().map_err(|_| Refused::Malformed)?),
            Some(("v1", value)) => candidates.push(value),
            Some(_) => {}
            None => return Err(Refused::Malformed),
        }
    }
    let (Some(t), false) = (
        t,
        candidates.is_empty() || candidates.len() > MAX_CANDIDATES,
    ) else {
        return Err(Refused::Malformed);
    };
    if now.abs_diff(t) > TOLERANCE_SECS {
        return Err(Refused::Stale);
    }
    // One HMAC, compared with each candidate in constant time.
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let expected = hmac::sign(&key, &signed_payload(t, body));
    for candidate in candidates {
        let Ok(tag) = hex::decode(candidate) else {
            continue;
        };
        if aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_ref(), &tag).is_ok() {
            return Ok(candidate.to_ascii_lowercase());
        }
    }
    Err(Refused::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_anything_changed_does_not() {
        let secret = b"0123456789abcdef";
        let header = sign(secret, 1_800_000_000, b"{\"case_id\":\"CS-1\"}");
        assert!(header.starts_with("t=1800000000,v1="));
        let v1 = verify(secret, &header, b"{\"case_id\":\"CS-1\"}", 1_800_000_100).unwrap();
        assert_eq!(v1.len(), 64);
        assert_eq!(
            verify(secret, &header, b"{\"case_id\":\"CS-2\"}", 1_800_000_000),
            Err(Refused::Mismatch)
        );
        assert_eq!(
            verify(
                b"another secret!!",
                &header,
                b"{\"case_id\":\"CS-1\"}",
                1_800_000_000
            ),
            Err(Refused::Mismatch)
        );
        assert_eq!(
            verify(secret, &header, b"{\"case_id\":\"CS-1\"}", 1_800_000_301),
            Err(Refused::Stale)
        );
        // A forged timestamp breaks the MAC.
        let moved = header.replace("t=1800000000", "t=1800000200");
        assert_eq!(
            verify(secret, &moved, b"{\"case_id\":\"CS-1\"}", 1_800_000_200),
            Err(Refused::Mismatch)
        );
        let five = format!("t=1800000000{}", ",v1=00".repeat(5));
        for bad in ["", "v1=00", "t=1800000000", "t=x,v1=00", "garbage", &five] {
            assert_eq!(
                verify(secret, bad, b"", 1_800_000_000),
                Err(Refused::Malformed),
                "{bad}"
            );
        }
        // A timestamp at the end of the range is stale, not a panic.
        assert_eq!(
            verify(secret, "t=-9223372036854775808,v1=00", b"", 1_800_000_000),
            Err(Refused::Stale)
        );
        // During a rotation, any one matching v1 will do.
        let rotated = format!("{header},v1={}", "0".repeat(64));
        assert!(verify(secret, &rotated, b"{\"case_id\":\"CS-1\"}", 1_800_000_000).is_ok());
    }
}
