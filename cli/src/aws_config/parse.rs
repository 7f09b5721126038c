//! The AWS config file's text as the AWS CLI reads it, and a profile's section rewritten in
//! it. Lines are classified the way botocore reads the file (Python's
//! `configparser.RawConfigParser`, then `shlex.split` of `profile NAME` section names): `#`
//! and `;` start comment lines, keys are case-insensitive, a line indented deeper than the
//! key before it continues that key's value (nested `s3 =` settings).

/// Pure: `content` with section `[profile <profile>]` (or `[default]` when profile is
/// "default"; the last such section when several name it) holding `settings` (key, value): keys already in the section are replaced
/// in place (value only, keeping the line's indentation and the key's spelling), missing
/// keys are appended after the section's last key line; every other byte of the file is
/// unchanged. A new section is appended at the end, separated from the previous content by
/// one blank line, using the file's line ending. Inputs are expected to pass `validate`
/// (as `write_profile` checks); others give a file that may not read back the same.
pub fn upsert_profile(content: &str, profile: &str, settings: &[(&str, &str)]) -> String {
    let lines = parse(content);
    let eol = if content.contains("\r\n") {
        "\r\n"
    } else {
        "\n"
    };
    // botocore reads every section naming the profile (`[profile x]`, `[profile "x"]`) and
    // the last one wins: that is the one to edit.
    let Some(header) = lines
        .iter()
        .rposition(|l| matches!(&l.kind, Kind::Section(name) if section_profile(name).as_deref() == Some(profile)))
    else {
        return append_section(content, &lines, eol, profile, settings);
    };
    let end = lines[header + 1..]
        .iter()
        .position(|l| matches!(l.kind, Kind::Section(_)))
        .map_or(lines.len(), |i| header + 1 + i);

    let mut out: Vec<String> = Vec::with_capacity(lines.len() + settings.len());
    let mut present = vec![false; settings.len()];
    // Index in `out` after which missing keys go: the header, or the last key line (with
    // its continuation lines) of the section.
    let mut anchor = 0;
    // Indentation for added keys: that of the last key line, so that neither the added
    // lines continue its value nor the next line becomes a continuation of ours.
    let mut indent: Option<&str> = None;
    let mut dropping_continuation = false;
    for (i, line) in lines.iter().enumerate() {
        if i <= header || i >= end {
            out.push(line.raw.to_owned());
            if i == header {
                anchor = out.len() - 1;
            }
            continue;
        }
        match &line.kind {
            Kind::Key { name, value_at } => {
                dropping_continuation = false;
                let wanted = settings
                    .iter()
                    .position(|(k, _)| k.to_ascii_lowercase() == *name);
                match wanted {
                    Some(s) => {
                        present[s] = true;
                        let new_value = settings[s].1;
                        let old_value = line.text[*value_at..].trim_end();
                        let has_continuation = lines[i + 1..end]
                            .iter()
                            .take_while(|l| !matches!(l.kind, Kind::Key { .. } | Kind::Other))
                            .any(|l| matches!(l.kind, Kind::Continuation));
                        if old_value == new_value && !has_continuation {
                            out.push(line.raw.to_owned());
                        } else {
                            // A multi-line value is replaced whole.
                            dropping_continuation = has_continuation;
                            out.push(format!(
                                "{}{new_value}{}",
                                &line.text[..*value_at],
                                line.eol
                            ));
                        }
                    }
                    None => out.push(line.raw.to_owned()),
                }
                anchor = out.len() - 1;
                indent = Some(leading_whitespace(line.text));
            }
            Kind::Continuation => {
                if !dropping_continuation {
                    out.push(line.raw.to_owned());
                    anchor = out.len() - 1;
                }
            }
            Kind::Other => {
                dropping_continuation = false;
                out.push(line.raw.to_owned());
            }
            Kind::Blank | Kind::Comment | Kind::Section(_) => out.push(line.raw.to_owned()),
        }
    }

    let missing: Vec<String> = settings
        .iter()
        .zip(&present)
        .filter(|(_, present)| !**present)
        .map(|((k, v), _)| format!("{k} = {v}"))
        .collect();
    if !missing.is_empty() {
        // No key in the section: indent like the next line that matters, which configparser
        // would otherwise read as a continuation of the added keys (e.g. an indented `[…]`).
        let indent = indent.unwrap_or_else(|| {
            lines[header + 1..]
                .iter()
                .find(|l| !matches!(l.kind, Kind::Blank | Kind::Comment))
                .map_or("", |l| leading_whitespace(l.text))
        });
        let missing: Vec<String> = missing.iter().map(|l| format!("{indent}{l}")).collect();
        let anchor_line = &mut out[anchor];
        if anchor_line.ends_with('\n') {
            let block: String = missing.iter().map(|l| format!("{l}{eol}")).collect();
            out.insert(anchor + 1, block);
        } else {
            // The anchor is the file's last line and has no line ending: neither will ours.
            let block: String = missing.iter().map(|l| format!("{eol}{l}")).collect();
            anchor_line.push_str(&block);
        }
    }
    out.concat()
}

/// The value of `key` in the profile's section as the AWS CLI reads it (the last section
/// naming the profile; keys case-insensitive), on one line; None when there is none.
pub fn profile_setting(content: &str, profile: &str, key: &str) -> Option<String> {
    let lines = parse(content);
    let header = lines.iter().rposition(
        |l| matches!(&l.kind, Kind::Section(name) if section_profile(name).as_deref() == Some(profile)),
    )?;
    let key = key.to_ascii_lowercase();
    lines[header + 1..]
        .iter()
        .take_while(|l| !matches!(l.kind, Kind::Section(_)))
        .find_map(|l| match &l.kind {
            Kind::Key { name, value_at } if *name == key => {
                Some(l.text[*value_at..].trim_end().to_owned())
            }
            _ => None,
        })
}

fn append_section(
    content: &str,
    lines: &[Line<'_>],
    eol: &str,
    profile: &str,
    settings: &[(&str, &str)],
) -> String {
    let mut out = content.to_owned();
    if !content.is_empty() {
        if !content.ends_with('\n') {
            out.push_str(eol);
        }
        let ends_blank = lines
            .last()
            .is_some_and(|l| matches!(l.kind, Kind::Blank) && !l.eol.is_empty());
        if !ends_blank {
            out.push_str(eol);
        }
    }
    if profile == "default" {
        out.push_str("[default]");
    } else {
        out.push_str(&format!("[profile {profile}]"));
    }
    out.push_str(eol);
    for (k, v) in settings {
        out.push_str(&format!("{k} = {v}{eol}"));
    }
    out
}

#[derive(Debug)]
pub(super) enum Kind {
    Blank,
    Comment,
    /// `[name]`: the text between the first `[` and the last `]`.
    Section(String),
    /// `key = value`: the lowercased key and where the value starts in the line.
    Key {
        name: String,
        value_at: usize,
    },
    /// A line indented deeper than the key line before it: part of that key's value.
    Continuation,
    /// Anything else (configparser would reject it); kept as it is.
    Other,
}

pub(super) struct Line<'a> {
    /// The whole line, ending included.
    pub(super) raw: &'a str,
    /// The line without its ending.
    pub(super) text: &'a str,
    pub(super) eol: &'a str,
    pub(super) kind: Kind,
}

pub(super) fn parse(content: &str) -> Vec<Line<'_>> {
    let mut lines = Vec::new();
    // Indent of the current key line, while continuation lines may follow it.
    let mut key_indent: Option<usize> = None;
    for raw in content.split_inclusive('\n') {
        let (text, eol) = match raw.strip_suffix("\r\n") {
            Some(text) => (text, "\r\n"),
            None => match raw.strip_suffix('\n') {
                Some(text) => (text, "\n"),
                None => (raw, ""),
            },
        };
        let stripped = text.trim();
        let indent = leading_whitespace(text).len();
        let kind = if stripped.starts_with(['#', ';']) {
            Kind::Comment
        } else if stripped.is_empty() {
            Kind::Blank
        } else if key_indent.is_some_and(|k| indent > k) {
            Kind::Continuation
        } else if let Some(name) = section_name(stripped) {
            key_indent = None;
            Kind::Section(name.to_owned())
        } else if let Some(d) = stripped.find(['=', ':']) {
            key_indent = Some(indent);
            let after = &stripped[d + 1..];
            Kind::Key {
                name: stripped[..d].trim_end().to_lowercase(),
                value_at: indent + d + 1 + (after.len() - after.trim_start().len()),
            }
        } else {
            key_indent = None;
            Kind::Other
        };
        lines.push(Line {
            raw,
            text,
            eol,
            kind,
        });
    }
    lines
}

fn leading_whitespace(text: &str) -> &str {
    &text[..text.len() - text.trim_start().len()]
}

/// configparser's `\[(?P<header>.+)\]` matched at the start of the stripped line.
fn section_name(stripped: &str) -> Option<&str> {
    let rest = stripped.strip_prefix('[')?;
    let close = rest.rfind(']')?;
    (close > 0).then(|| &rest[..close])
}

/// The profile a section defines, as botocore reads it: `default`, or `profile NAME`
/// split like a shell command line into exactly two words.
pub(super) fn section_profile(section: &str) -> Option<String> {
    if section == "default" {
        return Some("default".to_owned());
    }
    if !section.starts_with("profile") {
        return None;
    }
    let mut words = shell_words(section)?;
    (words.len() == 2).then(|| words.remove(1))
}

/// POSIX `shlex.split` as botocore calls it (Python's, without comments): whitespace-separated
/// words, with '…' and "…" quoting and `\` escapes. None for an unterminated quote (botocore
/// then ignores the section). Not the `shlex` crate's `split`, which takes a word starting
/// with `#` for a comment: `[profile x #note]` would be profile `x` for it, and is not one for
/// botocore.
pub fn shell_words(s: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => w.push(c),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => match chars.next()? {
                            c @ ('"' | '\\' | '$' | '`') => w.push(c),
                            '\n' => {}
                            c => {
                                w.push('\\');
                                w.push(c);
                            }
                        },
                        c => w.push(c),
                    }
                }
            }
            '\\' => {
                let w = word.get_or_insert_with(String::new);
                if let Some(c) = chars.next() {
                    w.push(c);
                }
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Some(words)
}
