//! The ids that name things in requests and paths: customers, roles, support cases, and the
//! two kinds of session. Each parses once, at the edge, by the broker's rules.

use crate::{ParseError, string_newtype};

/// A customer slug: `^[a-z0-9][a-z0-9-]{1,62}$`, e.g. `acme-corp`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "sqlx", derive(sqlx::Type), sqlx(transparent))]
pub struct CustomerId(String);

impl CustomerId {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let ok = (2..=63).contains(&raw.len())
            && raw
                .bytes()
                .enumerate()
                .all(|(i, b)| b.is_ascii_lowercase() || b.is_ascii_digit() || (i > 0 && b == b'-'));
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ParseError::new(
                "customer id must be 2-63 characters of lowercase letters, digits and '-', \
                 starting with a letter or digit",
            ))
        }
    }
}
string_newtype!(CustomerId);

/// A role's short name within a customer: `^[a-z0-9][a-z0-9_-]{0,62}$`, e.g. `readonly`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "sqlx", derive(sqlx::Type), sqlx(transparent))]
pub struct RoleName(String);

impl RoleName {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let ok = (1..=63).contains(&raw.len())
            && raw.bytes().enumerate().all(|(i, b)| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || (i > 0 && (b == b'-' || b == b'_'))
            });
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ParseError::new(
                "role name must be 1-63 characters of lowercase letters, digits, '-' and '_', \
                 starting with a letter or digit",
            ))
        }
    }
}
string_newtype!(RoleName);

/// A support case reference such as `CS-12345`: `^[A-Za-z0-9][A-Za-z0-9._-]{1,63}$`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "sqlx", derive(sqlx::Type), sqlx(transparent))]
pub struct CaseId(String);

impl CaseId {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let bytes = raw.as_bytes();
        let ok = (2..=64).contains(&bytes.len())
            && bytes[0].is_ascii_alphanumeric()
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ParseError::new(
                "case id must be 2-64 characters of letters, digits, '.', '_' and '-', \
                 starting with a letter or digit",
            ))
        }
    }
}
string_newtype!(CaseId);

/// Who a session serves: a support engineer on a case, or a service acting for a customer.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[cfg_attr(
    feature = "sqlx",
    derive(sqlx::Type),
    sqlx(type_name = "text", rename_all = "snake_case")
)]
pub enum SessionKind {
    Support,
    Customer,
}

impl SessionKind {
    pub const ALL: [SessionKind; 2] = [SessionKind::Support, SessionKind::Customer];

    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::Support => "support",
            SessionKind::Customer => "customer",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        match raw {
            "support" => Ok(SessionKind::Support),
            "customer" => Ok(SessionKind::Customer),
            _ => Err(ParseError::new(
                "session kind must be 'support' or 'customer'",
            )),
        }
    }
}

impl std::fmt::Display for SessionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customer_ids_follow_the_slug_rule() {
        for ok in ["acme-corp", "a1", "0abc", "x-y-z"] {
            assert!(CustomerId::parse(ok).is_ok(), "{ok}");
        }
        let too_long = "a".repeat(64);
        for bad in [
            "",
            "a",
            "-acme",
            "Acme",
            "acme_corp",
            "acme corp",
            "ac/me",
            "acme/../x",
            "acme?x",
            "acme%2F",
            too_long.as_str(),
        ] {
            assert!(CustomerId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn role_names_allow_underscores_but_not_leading_punctuation() {
        assert!(RoleName::parse("read_only").is_ok());
        assert!(RoleName::parse("r").is_ok());
        assert!(RoleName::parse("_r").is_err());
        assert!(RoleName::parse("Read").is_err());
    }

    #[test]
    fn case_ids_follow_the_rule() {
        assert!(CaseId::parse("CS-12345").is_ok());
        assert!(CaseId::parse("a.b_c-1").is_ok());
        for bad in [
            "",
            "C",
            "-CS1",
            ".CS",
            "CS 1",
            "CS/1",
            "CS#1",
            "CS?1",
            "CS%2F1",
            &"x".repeat(65),
        ] {
            assert!(CaseId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_deserialize_through_their_parser() {
        assert!(serde_json::from_str::<CustomerId>("\"acme-corp\"").is_ok());
        assert!(serde_json::from_str::<CustomerId>("\"Acme Corp\"").is_err());
        assert_eq!(
            serde_json::from_str::<SessionKind>("\"support\"").unwrap(),
            SessionKind::Support
        );
    }
}
