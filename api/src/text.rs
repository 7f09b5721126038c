//! Free text that people read later: display names and reasons.

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use crate::{ParseError, string_newtype};

/// Checks free text that people read (reasons, display names, subjects): no control
/// characters (line breaks, terminal escape sequences) and no Unicode format characters
/// (bidirectional overrides, zero-width characters), which make text display differently
/// from what it is (<https://trojansource.codes>, CVE-2021-42574).
pub fn check_plain_text(what: &str, raw: &str) -> Result<(), ParseError> {
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

/// A human-readable customer name: 1-200 characters of plain text (see
/// [`check_plain_text`]), trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.chars().count() > 200 {
            return Err(ParseError::new("display name must be 1-200 characters"));
        }
        check_plain_text("display name", trimmed)?;
        Ok(Self(trimmed.to_owned()))
    }
}
string_newtype!(DisplayName);

/// Why a session was opened: 1-500 characters of plain text (see [`check_plain_text`]),
/// trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason(String);

impl Reason {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.chars().count() > 500 {
            return Err(ParseError::new("reason must be 1-500 characters"));
        }
        check_plain_text("reason", trimmed)?;
        Ok(Self(trimmed.to_owned()))
    }
}
string_newtype!(Reason);

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
