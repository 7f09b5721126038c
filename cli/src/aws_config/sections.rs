//! The profiles of the AWS config and credentials files as botocore reads them, and settings
//! taken out of a profile's section with every other byte of the file kept.
//!
//! botocore reads a profile from the last section naming it (a later section replaces an
//! earlier one whole), and lays the credentials file's settings over the config file's
//! (`botocore.session.Session.full_config`).

use std::collections::BTreeMap;

use super::parse::{Kind, Line, parse, section_profile};

/// Which of the two files: they name profiles differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `~/.aws/config`: `[default]` and `[profile NAME]`.
    Config,
    /// `~/.aws/credentials`: `[NAME]`.
    Credentials,
}

impl FileKind {
    fn profile_of(self, section: &str) -> Option<String> {
        match self {
            FileKind::Config => section_profile(section),
            FileKind::Credentials => Some(section.to_owned()),
        }
    }
}

/// One profile's settings: lowercased keys, each with the first line of its value.
pub type Settings = BTreeMap<String, String>;

/// Every profile of the file, with the settings of the last section naming it.
pub fn profiles(content: &str, file: FileKind) -> BTreeMap<String, Settings> {
    let mut out = BTreeMap::new();
    let mut current: Option<(String, Settings)> = None;
    for line in parse(content) {
        match &line.kind {
            Kind::Section(name) => {
                if let Some((name, settings)) = current.take() {
                    out.insert(name, settings);
                }
                current = file.profile_of(name).map(|p| (p, Settings::new()));
            }
            Kind::Key { name, value_at } => {
                if let Some((_, settings)) = &mut current {
                    settings.insert(name.clone(), line.text[*value_at..].trim_end().to_owned());
                }
            }
            _ => {}
        }
    }
    if let Some((name, settings)) = current {
        out.insert(name, settings);
    }
    out
}

/// Settings taken out of a section.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removed {
    /// The file without them.
    pub text: String,
    /// The section's header line as it was (ending included); `None` when no section names
    /// the profile.
    pub header: Option<String>,
    /// The lines removed (endings included), key lines with their continuation lines.
    pub lines: Vec<String>,
}

/// `content` without the settings `keys` (any case; with their continuation lines) of the
/// last section naming `profile`; every other byte unchanged.
pub fn remove_settings(content: &str, file: FileKind, profile: &str, keys: &[&str]) -> Removed {
    let lines = parse(content);
    let Some(header) = lines.iter().rposition(|l| {
        matches!(&l.kind, Kind::Section(name) if file.profile_of(name).as_deref() == Some(profile))
    }) else {
        return Removed {
            text: content.to_owned(),
            ..Removed::default()
        };
    };
    let mut removed = Removed {
        header: Some(lines[header].raw.to_owned()),
        ..Removed::default()
    };
    let end = lines[header + 1..]
        .iter()
        .position(|l| matches!(l.kind, Kind::Section(_)))
        .map_or(lines.len(), |i| header + 1 + i);
    // Whether the lines now read belong to a removed setting: its key line and continuation
    // lines (blank and comment lines among them stay, as they would in any other place).
    let mut dropping = false;
    for (i, line) in lines.iter().enumerate() {
        let inside = i > header && i < end;
        match &line.kind {
            Kind::Key { name, .. } if inside => {
                dropping = keys.iter().any(|k| k.eq_ignore_ascii_case(name));
            }
            Kind::Continuation if inside => {}
            Kind::Blank | Kind::Comment if inside => {
                removed.text.push_str(line.raw);
                continue;
            }
            _ => dropping = false,
        }
        if dropping {
            removed.lines.push(line.raw.to_owned());
        } else {
            removed.text.push_str(line.raw);
        }
    }
    removed
}

/// Settings whose values are secrets: never printed, not even in a dry run's diff.
pub const SECRET_KEYS: [&str; 3] = [
    "aws_secret_access_key",
    "aws_session_token",
    "aws_security_token",
];

/// `content` with the values of [`SECRET_KEYS`] (and their continuation lines) replaced by
/// `[redacted]`, for showing a file to a person.
pub fn redact_secrets(content: &str) -> String {
    let mut out = String::with_capacity(content.len());
    let mut secret = false;
    for line in parse(content) {
        match &line.kind {
            Kind::Key { name, value_at } if SECRET_KEYS.contains(&name.as_str()) => {
                secret = true;
                out.push_str(&redacted(&line, *value_at));
                continue;
            }
            Kind::Continuation if secret => {
                out.push_str(&redacted(
                    &line,
                    line.text.len() - line.text.trim_start().len(),
                ));
                continue;
            }
            Kind::Continuation | Kind::Blank | Kind::Comment => {}
            _ => secret = false,
        }
        out.push_str(line.raw);
    }
    out
}

fn redacted(line: &Line<'_>, value_at: usize) -> String {
    if line.text[value_at..].trim().is_empty() {
        return line.raw.to_owned();
    }
    format!("{}[redacted]{}", &line.text[..value_at], line.eol)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "# mine\n[default]\nregion = eu-west-1\n\n[profile a]\nrole_arn = arn:1\n  external_id=x \n\
                          s3 =\n    max_concurrent_requests = 2\n; note\n[profile \"a\"]\nROLE_ARN: arn:2\nregion=us-east-1\n[sso-session s]\nsso_region = x\n";

    #[test]
    fn the_last_section_naming_a_profile_is_the_one_read() {
        let config = profiles(CONFIG, FileKind::Config);
        assert_eq!(config.keys().collect::<Vec<_>>(), ["a", "default"]);
        assert_eq!(config["a"]["role_arn"], "arn:2");
        assert!(!config["a"].contains_key("s3"));
        let credentials = profiles("[profile x]\nk = v\n[y]\nk=w", FileKind::Credentials);
        assert_eq!(credentials["profile x"]["k"], "v");
        assert_eq!(credentials["y"]["k"], "w");
    }

    #[test]
    fn settings_come_out_with_their_continuation_lines_and_nothing_else_moves() {
        let removed = remove_settings(CONFIG, FileKind::Config, "a", &["role_arn"]);
        assert_eq!(removed.header.as_deref(), Some("[profile \"a\"]\n"));
        assert_eq!(removed.lines, ["ROLE_ARN: arn:2\n"]);
        assert_eq!(removed.text, CONFIG.replace("ROLE_ARN: arn:2\n", ""));

        let first =
            "[profile a]\nrole_arn = arn:1\ns3 =\n    max = 2\nregion = x\r\n[profile b]\ns3 = y\n";
        let removed = remove_settings(first, FileKind::Config, "a", &["S3", "region"]);
        assert_eq!(removed.lines, ["s3 =\n", "    max = 2\n", "region = x\r\n"]);
        assert_eq!(
            removed.text,
            "[profile a]\nrole_arn = arn:1\n[profile b]\ns3 = y\n"
        );

        let none = remove_settings(first, FileKind::Config, "c", &["s3"]);
        assert_eq!(none.text, first);
        assert_eq!(
            none,
            Removed {
                text: first.into(),
                header: None,
                lines: vec![]
            }
        );
    }

    #[test]
    fn secret_values_are_redacted_and_nothing_else() {
        let text = "[x]\naws_access_key_id = AKIA1\naws_secret_access_key=abc/def\r\nAWS_SESSION_TOKEN = t\n  more\nregion = r\n";
        assert_eq!(
            redact_secrets(text),
            "[x]\naws_access_key_id = AKIA1\naws_secret_access_key=[redacted]\r\nAWS_SESSION_TOKEN = [redacted]\n  [redacted]\nregion = r\n"
        );
    }
}
