//! Stand-in for the AWS config writer (the real module replaces this file wholesale):
//! upserts one `[profile NAME]` section and leaves every other byte as it was.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// `AWS_CONFIG_FILE`, else `~/.aws/config`.
pub fn config_path() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("AWS_CONFIG_FILE").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("HOME is not set; set AWS_CONFIG_FILE")?;
    Ok(PathBuf::from(home).join(".aws").join("config"))
}

fn header_name(line: &str) -> Option<String> {
    let t = line.trim();
    let inner = t.strip_prefix('[')?.strip_suffix(']')?.trim();
    Some(match inner.strip_prefix("profile ") {
        Some(name) => name.trim().to_owned(),
        None => inner.to_owned(),
    })
}

fn key_of(line: &str) -> Option<&str> {
    let t = line.trim_start();
    if t.starts_with('#') || t.starts_with(';') || line.starts_with([' ', '\t']) {
        return None;
    }
    let (key, _) = t.split_once('=')?;
    Some(key.trim())
}

/// The file with `[profile NAME]` holding `settings` (replaced in place, missing ones
/// appended to the section, or a new section appended at the end).
pub fn upsert_profile(content: &str, profile: &str, settings: &[(&str, &str)]) -> String {
    let lines: Vec<&str> = content.split_inclusive('\n').collect();
    let start = lines
        .iter()
        .position(|l| header_name(l).as_deref() == Some(profile));
    let Some(start) = start else {
        let mut out = content.to_owned();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        if !out.is_empty() {
            out.push('\n');
        }
        let header = if profile == "default" {
            "[default]".to_owned()
        } else {
            format!("[profile {profile}]")
        };
        out.push_str(&header);
        out.push('\n');
        for (k, v) in settings {
            out.push_str(&format!("{k} = {v}\n"));
        }
        return out;
    };
    let end = lines[start + 1..]
        .iter()
        .position(|l| header_name(l).is_some())
        .map_or(lines.len(), |i| start + 1 + i);
    let mut body: Vec<String> = lines[start + 1..end]
        .iter()
        .map(|l| l.to_string())
        .collect();
    let mut missing = Vec::new();
    for (k, v) in settings {
        match body.iter().position(|l| key_of(l) == Some(k)) {
            Some(i) => {
                let newline = if body[i].ends_with('\n') { "\n" } else { "" };
                body[i] = format!("{k} = {v}{newline}");
            }
            None => missing.push(format!("{k} = {v}\n")),
        }
    }
    if !missing.is_empty() {
        let last = body
            .iter()
            .rposition(|l| !l.trim().is_empty())
            .map_or(0, |i| i + 1);
        if last > 0 && !body[last - 1].ends_with('\n') {
            body[last - 1].push('\n');
        }
        if last == 0 && !lines[start].ends_with('\n') {
            missing.insert(0, "\n".into());
        }
        body.splice(last..last, missing);
    }
    let mut out: String = lines[..=start].concat();
    out.push_str(&body.concat());
    out.push_str(&lines[end..].concat());
    out
}

/// Writes the profile into the file at `path` atomically; `true` if the file changed.
pub fn write_profile(
    path: &Path,
    profile: &str,
    settings: &[(&str, &str)],
) -> anyhow::Result<bool> {
    let content = match std::fs::read_to_string(path) {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let updated = upsert_profile(&content, profile, settings);
    if updated == content {
        return Ok(false);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension(format!("lanyard-tmp-{}", std::process::id()));
    std::fs::write(&tmp, updated).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(true)
}
