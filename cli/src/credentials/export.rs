//! The output shapes of credentials: the `credential_process` line, and the shapes of
//! `aws configure export-credentials --format ...`, each value quoted for its shell.

use crate::cache::Cached;

/// The `credential_process` document on one line (fields in the order the AWS docs show
/// them: the order of `CredentialProcess`).
pub fn process_line(cached: &Cached) -> anyhow::Result<String> {
    Ok(format!("{}\n", serde_json::to_string(&cached.document)?))
}

/// Output shapes of `aws configure export-credentials --format ...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// `export AWS_ACCESS_KEY_ID='...'` (bash, zsh).
    Env,
    /// `AWS_ACCESS_KEY_ID='...'`.
    EnvNoExport,
    /// `$Env:AWS_ACCESS_KEY_ID='...'`.
    Powershell,
    /// `set "AWS_ACCESS_KEY_ID=..."`.
    WindowsCmd,
    /// `set -gx AWS_ACCESS_KEY_ID '...'`.
    Fish,
    /// The credential_process JSON.
    Process,
}

/// The credentials in `format`, as `aws configure export-credentials` prints them.
pub fn export(cached: &Cached, format: ExportFormat) -> anyhow::Result<String> {
    // What is printed for a shell to run is checked again, whatever its source.
    super::check_document(&cached.document)?;
    let d = &cached.document;
    if format == ExportFormat::Process {
        return Ok(format!("{}\n", serde_json::to_string_pretty(d)?));
    }
    let vars = [
        ("AWS_ACCESS_KEY_ID", &d.access_key_id),
        ("AWS_SECRET_ACCESS_KEY", &d.secret_access_key),
        ("AWS_SESSION_TOKEN", &d.session_token),
        ("AWS_CREDENTIAL_EXPIRATION", &d.expiration),
    ];
    Ok(vars
        .iter()
        .map(|(name, value)| match format {
            ExportFormat::Env => format!("export {name}={}\n", posix_quote(value)),
            ExportFormat::EnvNoExport => format!("{name}={}\n", posix_quote(value)),
            ExportFormat::Powershell => format!("$Env:{name}={}\n", powershell_quote(value)),
            ExportFormat::WindowsCmd => format!("set \"{name}={value}\"\n"),
            ExportFormat::Fish => format!("set -gx {name} {}\n", fish_quote(value)),
            ExportFormat::Process => String::new(),
        })
        .collect())
}

// Every value is quoted for its shell, whatever it holds (the values were checked above too:
// defence in depth). Each quoting is the one string form of that shell in which nothing is
// expanded. (`shlex` leaves plain words unquoted and knows only POSIX shells.)

/// POSIX sh, bash, zsh: single quotes; a `'` closes, is escaped, and reopens.
fn posix_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// PowerShell: single-quoted strings are verbatim; a `'` is written twice.
fn powershell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// fish: inside single quotes only `\\` and `\'` are escapes.
fn fish_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', r"\\").replace('\'', r"\'"))
}

// cmd.exe: `set "NAME=value"` keeps `&|<>^` and spaces literal. cmd has no quoting that stops
// `%` (or `!` under delayed expansion); neither can reach here, since only base64 characters
// and RFC 3339 timestamps pass `check_document`.

#[cfg(test)]
mod tests {
    use chrono::{Duration, Utc};
    use serde_json::json;

    use super::*;
    use crate::credentials::parse_document;

    fn cached() -> Cached {
        let expiration = Utc::now() + Duration::hours(1);
        parse_document(json!({"Version": 1, "AccessKeyId": "ASIAEXAMPLE12345",
            "SecretAccessKey": "s3cr3t/+=", "SessionToken": "tok",
            "Expiration": expiration.to_rfc3339()}))
        .unwrap()
    }

    #[test]
    fn export_formats_quote_every_value_for_their_shell() {
        let c = cached();
        let exp = c.document.expiration.clone();
        assert_eq!(
            export(&c, ExportFormat::Env).unwrap(),
            format!(
                "export AWS_ACCESS_KEY_ID='ASIAEXAMPLE12345'\nexport AWS_SECRET_ACCESS_KEY='s3cr3t/+='\nexport AWS_SESSION_TOKEN='tok'\nexport AWS_CREDENTIAL_EXPIRATION='{exp}'\n"
            )
        );
        assert!(
            export(&c, ExportFormat::EnvNoExport)
                .unwrap()
                .starts_with("AWS_ACCESS_KEY_ID='ASIAEXAMPLE12345'\n")
        );
        assert!(
            export(&c, ExportFormat::Powershell)
                .unwrap()
                .starts_with("$Env:AWS_ACCESS_KEY_ID='ASIAEXAMPLE12345'\n")
        );
        assert!(
            export(&c, ExportFormat::Fish)
                .unwrap()
                .starts_with("set -gx AWS_ACCESS_KEY_ID 'ASIAEXAMPLE12345'\n")
        );
        assert!(
            export(&c, ExportFormat::WindowsCmd)
                .unwrap()
                .starts_with("set \"AWS_ACCESS_KEY_ID=ASIAEXAMPLE12345\"\n")
        );
        let process = export(&c, ExportFormat::Process).unwrap();
        assert!(
            process.starts_with("{\n  \"Version\": 1,\n  \"AccessKeyId\": \"ASIAEXAMPLE12345\",\n"),
            "{process}"
        );
        assert_eq!(
            process_line(&c).unwrap(),
            format!(
                "{{\"Version\":1,\"AccessKeyId\":\"ASIAEXAMPLE12345\",\"SecretAccessKey\":\"s3cr3t/+=\",\"SessionToken\":\"tok\",\"Expiration\":\"{exp}\"}}\n"
            )
        );
    }

    #[test]
    fn quoting_holds_whatever_a_value_contains() {
        let evil = "a'b\\c $(id) `x` ; \"q\"";
        assert_eq!(posix_quote(evil), r#"'a'\''b\c $(id) `x` ; "q"'"#);
        assert_eq!(powershell_quote(evil), r#"'a''b\c $(id) `x` ; "q"'"#);
        assert_eq!(fish_quote(evil), r#"'a\'b\\c $(id) `x` ; "q"'"#);
    }
}
