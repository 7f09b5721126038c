//! Lanyard's wire types, shared by the server (`lanyard-server`) and the CLI (`lanyard`):
//! validated ids ("parse, don't validate"), the duration grammar, statuses as enums, and the
//! request and response bodies of the HTTP API. No I/O.
//!
//! Features: `utoipa` derives the OpenAPI schemas the server serves; `sqlx` lets the server
//! store and read ids and statuses as database values.

mod duration;
mod ids;
mod text;

pub mod audit;
pub mod customers;
pub mod events;
pub mod exchange;
pub mod problem;
pub mod reports;
pub mod roles;
pub mod sessions;
pub mod status;
pub mod whoami;

pub use duration::parse_duration;
pub use ids::{CaseId, CustomerId, RoleName, SessionKind};
pub use text::{DisplayName, Reason, check_plain_text};

/// Why a value was rejected; the message names the rule, never echoes secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl ParseError {
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

/// Deserializes an optional `i32` that JSON may spell `18368` or `18368.0`: JSON Schema's
/// `integer` (and many clients' number encoders) treat both as the same integer.
pub fn integral<'de, D>(deserializer: D) -> Result<Option<i32>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::{Deserialize, Error};
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let value = if let Some(i) = number.as_i64() {
        i32::try_from(i).ok()
    } else {
        number
            .as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= f64::from(i32::MIN) && *f <= f64::from(i32::MAX))
            .map(|f| f as i32)
    };
    value.map(Some).ok_or_else(|| {
        D::Error::custom(format!(
            "invalid value: {number}, expected a 32-bit integer"
        ))
    })
}

/// Implements the boilerplate shared by string newtypes: `as_str`, `Display`, `AsRef<str>`,
/// `Serialize`, a `Deserialize` that runs the type's parser, and (feature `sqlx`) a database
/// text value that is read back without being parsed again.
#[macro_export]
macro_rules! string_newtype {
    ($ty:ident) => {
        impl $ty {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                $ty::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    #[derive(Debug, serde::Deserialize)]
    struct T {
        #[serde(default, deserialize_with = "super::integral")]
        n: Option<i32>,
    }

    fn parse(json: &str) -> Result<Option<i32>, serde_json::Error> {
        serde_json::from_str::<T>(json).map(|t| t.n)
    }

    #[test]
    fn integral_numbers_in_either_spelling_are_accepted() {
        assert_eq!(parse(r#"{"n": 3600}"#).unwrap(), Some(3600));
        assert_eq!(parse(r#"{"n": 3600.0}"#).unwrap(), Some(3600));
        assert_eq!(parse(r#"{"n": null}"#).unwrap(), None);
        assert_eq!(parse("{}").unwrap(), None);
        assert!(parse(r#"{"n": 3600.5}"#).is_err());
        assert!(parse(r#"{"n": 1e12}"#).is_err());
        assert!(parse(r#"{"n": "3600"}"#).is_err());
    }
}
