//! Validated domain types: every identifier and rule the broker relies on, parsed once at
//! the edge ("parse, don't validate"). No I/O, no axum, no sqlx.

mod arn;
mod duration;
mod external_id;
mod names;
pub mod session;

pub use arn::RoleArn;
pub use duration::parse_duration;
pub use external_id::ExternalId;
pub use names::{CustomerId, DisplayName, RoleName, SessionKind};
pub use session::{CaseId, Reason};

/// Why a value was rejected; the message names the rule, never echoes secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl ParseError {
    pub(crate) fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

/// Checks free text that people read (reasons, display names, subjects): no control
/// characters (line breaks, terminal escape sequences) and no Unicode format characters
/// (bidirectional overrides, zero-width characters), which make text display differently
/// from what it is (<https://trojansource.codes>, CVE-2021-42574).
pub fn check_plain_text(what: &str, raw: &str) -> Result<(), ParseError> {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    if raw.chars().any(char::is_control) {
        return Err(ParseError::new(format!(
            "{what} must not contain control characters"
        )));
    }
    if raw
        .chars()
        .any(|c| c.general_category() == GeneralCategory::Format)
    {
        return Err(ParseError::new(format!(
            "{what} must not contain invisible formatting characters (bidirectional \
             overrides, zero-width characters)"
        )));
    }
    Ok(())
}

/// Implements the boilerplate shared by string newtypes: `as_str`, `Display`, `AsRef<str>`,
/// `Serialize`, and a `Deserialize` that runs the type's parser.
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
pub(crate) use string_newtype;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_refuses_controls_bidi_overrides_and_zero_width_characters() {
        assert!(check_plain_text("reason", "customer reports failing S3 uploads").is_ok());
        assert!(check_plain_text("reason", "Jörg Müller – 日本").is_ok());
        for bad in [
            "a\u{1b}[31mred",
            "line\nbreak",
            "admin\u{202e}txt.exe",
            "zero\u{200b}width",
            "isolate\u{2066}x\u{2069}",
            "bom\u{feff}",
            "soft\u{ad}hyphen",
        ] {
            assert!(check_plain_text("reason", bad).is_err(), "{bad:?}");
        }
    }
}
