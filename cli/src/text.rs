//! Text from elsewhere (the broker's messages and data, token claims) made safe for a
//! terminal: terminal escape sequences removed (a broker, or whoever controls a customer's
//! display name, must not be able to move the cursor, recolour or rewrite the screen, or set
//! the window title), other control characters dropped, and Unicode format characters
//! (bidirectional overrides, zero-width characters) dropped so that text reads as what it
//! is.

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// `text` without escape sequences, control characters (line breaks are kept, tabs become
/// spaces) and format characters.
pub fn for_terminal(text: &str) -> String {
    strip_ansi_escapes::strip_str(text.replace('\t', " "))
        .chars()
        .filter(|&c| {
            (c == '\n' || !c.is_control()) && c.general_category() != GeneralCategory::Format
        })
        .collect()
}

/// [`for_terminal`] on one line: every run of whitespace becomes one space.
pub fn one_line(text: &str) -> String {
    for_terminal(text)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_controls_and_format_characters_are_removed() {
        assert_eq!(
            for_terminal("\u{1b}[31mred\u{1b}[0m \u{1b}]0;pwned\u{7}title"),
            "red title"
        );
        assert_eq!(for_terminal("a\u{8}\u{8}b\rc\u{0}d"), "abcd");
        assert_eq!(for_terminal("evil\u{202e}txt.exe\u{200b}"), "eviltxt.exe");
        assert_eq!(for_terminal("tree\n├─ x\tok"), "tree\n├─ x ok");
        assert_eq!(one_line("two\nlines  here"), "two lines here");
        assert_eq!(for_terminal("Jörg Müller 日本"), "Jörg Müller 日本");
    }
}
