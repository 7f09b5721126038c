//! Customer ids, role names, display names and session kinds.

use super::{ParseError, string_newtype};

/// A customer slug: `^[a-z0-9][a-z0-9-]{1,62}$`, e.g. `acme-corp`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

/// A human-readable customer name: 1-200 characters of plain text (see
/// [`check_plain_text`](super::check_plain_text)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.chars().count() > 200 {
            return Err(ParseError::new("display name must be 1-200 characters"));
        }
        super::check_plain_text("display name", trimmed)?;
        Ok(Self(trimmed.to_owned()))
    }
}
string_newtype!(DisplayName);

/// Who a session serves: a support engineer on a case, or a service acting for a customer.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
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
    fn display_names_are_trimmed_and_bounded() {
        assert_eq!(
            DisplayName::parse("  Acme  ").map(|d| d.0),
            Ok("Acme".to_owned())
        );
        assert!(DisplayName::parse("   ").is_err());
        assert!(DisplayName::parse("a\nb").is_err());
        assert!(DisplayName::parse("Acme\u{202e}proC").is_err());
        assert!(DisplayName::parse(&"x".repeat(201)).is_err());
    }
}
