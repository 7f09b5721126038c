use std::os::unix::fs::PermissionsExt;

use std::io::Write;

use super::*;

const SUPPORT: &[(&str, &str)] = &[
    (
        "credential_process",
        "lanyard credential-process --profile support-acme-CS-1",
    ),
    ("region", "eu-west-1"),
];

#[test]
fn a_new_profile_is_appended_after_one_blank_line_leaving_the_rest_alone() {
    let original = "# my settings\n[default]\nregion = us-east-1\n; old\n\n[profile dev]\nregion=eu-central-1\noutput = json\n";
    let updated = upsert_profile(original, "support-acme-CS-1", SUPPORT);
    assert_eq!(
        updated,
        format!(
            "{original}\n[profile support-acme-CS-1]\ncredential_process = lanyard \
             credential-process --profile support-acme-CS-1\nregion = eu-west-1\n"
        )
    );
}

#[test]
fn crlf_files_stay_crlf_and_a_missing_final_newline_is_kept_missing() {
    let original = "[default]\r\nregion = us-east-1";
    assert_eq!(
        upsert_profile(original, "x", &[("region", "eu-west-1")]),
        "[default]\r\nregion = us-east-1\r\n\r\n[profile x]\r\nregion = eu-west-1\r\n"
    );
    // Inside an existing last section the file still ends without a newline.
    assert_eq!(
        upsert_profile(
            "[profile x]\r\nregion = a",
            "x",
            &[("region", "b"), ("output", "json")]
        ),
        "[profile x]\r\nregion = b\r\noutput = json"
    );
    assert_eq!(
        upsert_profile("[profile x]", "x", &[("region", "b")]),
        "[profile x]\nregion = b"
    );
}

#[test]
fn an_existing_profile_is_updated_in_place_keeping_its_other_keys_and_comments() {
    let original = "\
[profile support-acme-CS-1]
# written by lanyard
  Region=us-east-1
mfa_serial = arn:aws:iam::1:mfa/me
; keep me

[profile other]
region = us-west-2
";
    let expected = "\
[profile support-acme-CS-1]
# written by lanyard
  Region=eu-west-1
mfa_serial = arn:aws:iam::1:mfa/me
credential_process = lanyard credential-process --profile support-acme-CS-1
; keep me

[profile other]
region = us-west-2
";
    let updated = upsert_profile(original, "support-acme-CS-1", SUPPORT);
    assert_eq!(updated, expected);
    // The same values again: the same bytes.
    assert_eq!(
        upsert_profile(&updated, "support-acme-CS-1", SUPPORT),
        updated
    );
}

#[test]
fn section_names_match_the_way_the_aws_cli_reads_them() {
    for header in [
        "[profile  x]",
        "[profile\tx]",
        "[profile \"x\"]",
        "[profile 'x']",
        "  [profile x]  ",
        "[profile x] trailing",
    ] {
        let original = format!("{header}\nregion = a\n");
        assert_eq!(
            upsert_profile(&original, "x", &[("region", "b")]),
            format!("{header}\nregion = b\n"),
            "{header}"
        );
    }
    // Not profile x for the AWS CLI: a new section is added.
    for header in [
        "[profile X]",
        "[profilex]",
        "[x]",
        "[profile x y]",
        "[ profile x]",
    ] {
        let original = format!("{header}\nregion = a\n");
        assert_eq!(
            upsert_profile(&original, "x", &[("region", "b")]),
            format!("{original}\n[profile x]\nregion = b\n"),
            "{header}"
        );
    }
    assert_eq!(
        upsert_profile("[default]\nregion = a\n", "default", &[("region", "b")]),
        "[default]\nregion = b\n"
    );
    assert_eq!(
        upsert_profile("", "default", &[("region", "b")]),
        "[default]\nregion = b\n"
    );
}

#[test]
fn of_several_sections_naming_the_profile_the_last_one_is_edited_as_botocore_reads_it() {
    let original = format!(
        "[profile {TARGET}]\nregion = a\n\n[profile \"{TARGET}\"]\nregion = b\n\n[profile y]\nregion = c\n"
    );
    let updated = upsert_profile(&original, TARGET, &[("region", "new")]);
    assert_eq!(updated, original.replace("region = b", "region = new"));
    check_with_configparser(
        &[serde_json::json!({ "original": original, "updated": updated })],
        &[("region", "new")],
    );
}

#[test]
fn nested_values_are_neither_mistaken_for_keys_nor_left_half_replaced() {
    let original = "\
[profile x]
s3 =
  region = inside-s3
  max_concurrent_requests = 20
credential_process = old
  continued
output = json
";
    let expected = "\
[profile x]
s3 =
  region = inside-s3
  max_concurrent_requests = 20
credential_process = new
output = json
region = eu-west-1
";
    assert_eq!(
        upsert_profile(
            original,
            "x",
            &[("credential_process", "new"), ("region", "eu-west-1")]
        ),
        expected
    );
}

#[test]
fn names_and_values_that_would_break_the_file_are_refused() {
    for profile in [
        "", "a b", "a]b", "[a", "a\nb", "a#b", "a;b", "a\"b", "a\\b", "a\rb",
    ] {
        assert!(validate(profile, SUPPORT).is_err(), "{profile:?}");
    }
    for (key, value) in [
        ("region", "a\nb"),
        ("region", "a\r"),
        ("region", " a"),
        ("region", "a\t"),
        ("", "a"),
        ("re gion", "a"),
        ("a=b", "a"),
        ("a:b", "a"),
        ("#a", "a"),
        ("[a]", "a"),
    ] {
        assert!(validate("p", &[(key, value)]).is_err(), "{key:?} {value:?}");
    }
    validate("support-acme-CS-12345", SUPPORT).unwrap();
    validate("préprod@team+1", &[("region", "")]).unwrap();
}

#[test]
fn the_config_path_honours_aws_config_file_and_a_leading_tilde() {
    let home = Some(PathBuf::from("/home/me"));
    assert_eq!(
        config_path_from(None, home.clone()).unwrap(),
        PathBuf::from("/home/me/.aws/config")
    );
    assert_eq!(
        config_path_from(Some("".into()), home.clone()).unwrap(),
        PathBuf::from("/home/me/.aws/config")
    );
    assert_eq!(
        config_path_from(Some("~/cfg/aws".into()), home.clone()).unwrap(),
        PathBuf::from("/home/me/cfg/aws")
    );
    assert_eq!(
        config_path_from(Some("/etc/aws".into()), None).unwrap(),
        PathBuf::from("/etc/aws")
    );
    assert_eq!(
        config_path_from(Some("~other/aws".into()), home).unwrap(),
        PathBuf::from("~other/aws")
    );
    assert!(config_path_from(None, None).is_err());
}

#[test]
fn writing_creates_a_private_file_and_a_second_write_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("home").join(".aws").join("config");

    assert!(write_profile(&path, "support-acme-CS-1", SUPPORT).unwrap());
    let first = fs::read(&path).unwrap();
    assert_eq!(
        fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    assert!(!write_profile(&path, "support-acme-CS-1", SUPPORT).unwrap());
    assert_eq!(fs::read(&path).unwrap(), first);
}

#[test]
fn writing_keeps_the_mode_and_writes_through_a_symlink() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("dotfiles-aws-config");
    fs::write(&target, "[default]\nregion = us-east-1\n").unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o640)).unwrap();
    let link = tmp.path().join("config");
    std::os::unix::fs::symlink(&target, &link).unwrap();

    assert!(write_profile(&link, "x", &[("region", "eu-west-1")]).unwrap());
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        fs::read_to_string(&target).unwrap(),
        "[default]\nregion = us-east-1\n\n[profile x]\nregion = eu-west-1\n"
    );
    assert_eq!(
        fs::metadata(&target).unwrap().permissions().mode() & 0o777,
        0o640
    );
}

#[test]
fn a_refused_write_leaves_the_file_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("config");
    fs::write(&path, "[default]\n").unwrap();
    let err = write_profile(&path, "bad]name", SUPPORT).unwrap_err();
    assert!(format!("{err:#}").contains("bad]name"), "{err:#}");
    assert!(write_profile(&path, "x", &[("region", "a\nb")]).is_err());
    assert_eq!(fs::read_to_string(&path).unwrap(), "[default]\n");
    // A file that is not UTF-8 is not rewritten.
    fs::write(&path, b"[default]\nregion = \xff\n").unwrap();
    assert!(write_profile(&path, "x", SUPPORT).is_err());
    assert_eq!(fs::read(&path).unwrap(), b"[default]\nregion = \xff\n");
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const TARGET: &str = "support-acme-CS-1";

/// A random config file in the AWS CLI's dialect, often holding the target profile.
fn generate(rng: &mut Rng) -> String {
    let eol = if rng.below(2) == 0 { "\n" } else { "\r\n" };
    let mut lines: Vec<String> = Vec::new();
    let filler = |rng: &mut Rng, lines: &mut Vec<String>| {
        for _ in 0..rng.below(3) {
            lines.push(
                rng.pick(&[
                    "",
                    "   ",
                    "# comment",
                    "; comment [profile x]",
                    "  # indented = comment",
                ])
                .to_owned(),
            );
        }
    };
    filler(rng, &mut lines);
    let mut sections = vec![
        "default",
        "profile dev",
        "profile  prod",
        "sso-session corp",
        "profile \"qa\"",
    ];
    let has_target = rng.below(2) == 0;
    if has_target {
        sections.push(rng.pick(&[
            "profile support-acme-CS-1",
            "profile   support-acme-CS-1",
            "profile 'support-acme-CS-1'",
        ]));
    }
    // Shuffle, then keep a random subset (always the target).
    for i in (1..sections.len()).rev() {
        let j = rng.below(i + 1);
        sections.swap(i, j);
    }
    for section in sections {
        if !section.contains(TARGET) && rng.below(3) == 0 {
            continue;
        }
        lines.push(format!("{}[{section}]", rng.pick(&["", " "])));
        let mut keys = vec![
            "region",
            "Output",
            "credential_process",
            "mfa_serial",
            "s3",
            "REGION_x",
        ];
        for i in (1..keys.len()).rev() {
            let j = rng.below(i + 1);
            keys.swap(i, j);
        }
        for key in keys.into_iter().take(rng.below(5)) {
            filler(rng, &mut lines);
            let sep = rng.pick(&[" = ", "=", " =", "= ", " : "]);
            let value = rng.pick(&["eu-west-1", "json", "value with spaces", "a=b:c", ""]);
            let indent = rng.pick(&["", "", " "]);
            lines.push(format!("{indent}{key}{sep}{value}"));
            if key == "s3" || rng.below(8) == 0 {
                lines.push(format!("{indent}    region = nested"));
                lines.push(format!("{indent}    max = 3"));
            }
        }
        filler(rng, &mut lines);
    }
    let mut content = lines.join(eol);
    if !content.is_empty() && rng.below(3) != 0 {
        content.push_str(eol);
    }
    content
}

/// Whether the AWS CLI sees `profile` in `content` (an indented header under a key is
/// part of that key's value, not a section).
fn has_section(content: &str, profile: &str) -> bool {
    parse(content).iter().any(
        |l| matches!(&l.kind, Kind::Section(name) if section_profile(name).as_deref() == Some(profile)),
    )
}

/// `content` without the section defining `profile` (header to the next section).
fn without_section(content: &str, profile: &str) -> String {
    let lines = parse(content);
    let mut inside = false;
    let mut out = String::new();
    for line in &lines {
        if let Kind::Section(name) = &line.kind {
            inside = section_profile(name).as_deref() == Some(profile);
        }
        if !inside {
            out.push_str(line.raw);
        }
    }
    out
}

/// Every generated file, updated: only the target section changes, a new section is only
/// appended, writing again changes nothing, and Python's configparser read with botocore's
/// profile naming (an independent reader) sees the new values and every other value as before.
#[test]
fn generated_files_change_only_in_the_written_section() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let settings: &[(&str, &str)] = &[
        (
            "credential_process",
            "lanyard credential-process --profile support-acme-CS-1",
        ),
        ("region", "eu-west-1"),
        ("output", "json"),
    ];
    let mut cases = Vec::new();
    let mut updated_in_place = 0;
    for _ in 0..400 {
        let original = generate(&mut rng);
        let has_target = has_section(&original, TARGET);
        updated_in_place += usize::from(has_target);
        let updated = upsert_profile(&original, TARGET, settings);
        if has_target {
            assert_eq!(
                without_section(&updated, TARGET),
                without_section(&original, TARGET),
                "original:\n{original:?}\nupdated:\n{updated:?}"
            );
        } else {
            let added = updated
                .strip_prefix(original.as_str())
                .unwrap_or_else(|| panic!("not appended:\n{original:?}\n{updated:?}"));
            let eol = if original.contains("\r\n") {
                "\r\n"
            } else {
                "\n"
            };
            assert!(added.ends_with(&format!("output = json{eol}")), "{added:?}");
            assert_eq!(
                without_section(&updated, TARGET).trim_end(),
                original.trim_end()
            );
        }
        assert_eq!(
            upsert_profile(&updated, TARGET, settings),
            updated,
            "{original:?}"
        );
        cases.push(serde_json::json!({ "original": original, "updated": updated }));
    }
    assert!(
        (100..300).contains(&updated_in_place),
        "{updated_in_place} of 400 updated in place: the generator lost its mix"
    );
    check_with_configparser(&cases, settings);
}

const CONFIGPARSER_CHECK: &str = r#"
import configparser, json, shlex, sys

def profiles(text):
    parser = configparser.RawConfigParser()
    parser.read_string(text)
    out = {}
    for section in parser.sections():
        values = dict(parser.items(section))
        if section.startswith("profile"):
            try:
                parts = shlex.split(section)
            except ValueError:
                continue
            if len(parts) == 2:
                out[parts[1]] = values
        elif section == "default":
            out["default"] = values
        else:
            out["section " + section] = values
    return out

cases, target, settings = json.load(sys.stdin)
checked = 0
for i, case in enumerate(cases):
    try:
        before = profiles(case["original"])
    except configparser.Error:
        continue  # the AWS CLI rejects this file too (e.g. a duplicate key)
    after = profiles(case["updated"])
    checked += 1
    expected = dict(before.get(target, {}))
    expected.update(settings)
    assert after[target] == expected, (i, after[target], expected)
    before.pop(target, None)
    after.pop(target)
    assert before == after, (i, before, after)
print(checked)
"#;

fn check_with_configparser(cases: &[serde_json::Value], settings: &[(&str, &str)]) {
    let settings: serde_json::Map<String, serde_json::Value> = settings
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).into()))
        .collect();
    let input = serde_json::to_vec(&serde_json::json!([cases, TARGET, settings])).unwrap();
    let mut child = std::process::Command::new("python3")
        .args(["-c", CONFIGPARSER_CHECK])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 is needed for the independent configparser check");
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "configparser disagrees:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let checked: usize = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap();
    eprintln!(
        "configparser agreed on {checked} of {} generated files",
        cases.len()
    );
    assert!(
        checked > cases.len() / 2,
        "only {checked} of {} generated files are valid for configparser",
        cases.len()
    );
}
