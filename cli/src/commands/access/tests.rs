use std::io::Write;

use super::*;

#[cfg(not(windows))]
#[test]
fn the_credential_process_line_splits_back_into_the_same_words_with_shlex() {
    assert_eq!(
        process_command("/usr/local/bin/lanyard", "support-acme-CS-1.2_x").unwrap(),
        "/usr/local/bin/lanyard credential-process --profile support-acme-CS-1.2_x"
    );
    let paths = [
        "/opt/my tools/lanyard",
        "/home/o'brien/bin/lanyard",
        "/tmp/$HOME/`id`/\"q\"/back\\slash/lanyard",
        "/tmp/tab\there;&|<>*?~#!/lanyard",
        "/tmp/ünïcode/lanyard",
    ];
    let lines: Vec<String> = paths
        .iter()
        .map(|p| process_command(p, "customer-acme").unwrap())
        .collect();
    let script = "import json, shlex, sys\nprint(json.dumps([shlex.split(l) for l in json.load(sys.stdin)]))";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 is needed for the shlex check");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(&lines).unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let split: Vec<Vec<String>> = serde_json::from_slice(&out.stdout).unwrap();
    for ((path, words), line) in paths.iter().zip(split).zip(&lines) {
        let expected = [*path, "credential-process", "--profile", "customer-acme"];
        assert_eq!(words, expected, "{path}");
        // `lanyard doctor` reads the line back the same way.
        assert_eq!(
            aws_config::shell_words(line).as_deref(),
            Some(&expected.map(String::from)[..]),
            "{line}"
        );
    }
}

#[test]
fn durations_take_units_and_give_whole_seconds() {
    assert_eq!(duration_seconds("30m").unwrap(), 1800);
    assert_eq!(duration_seconds("1h30m").unwrap(), 5400);
    assert_eq!(duration_seconds("90s").unwrap(), 90);
    assert_eq!(duration_seconds("1800").unwrap(), 1800);
    assert_eq!(duration_seconds("1d").unwrap(), 86_400);
    for bad in [
        "",
        "m",
        "0m",
        "0",
        "1h30",
        "-5m",
        "30x",
        "500ms",
        "100000000d",
    ] {
        let err = duration_seconds(bad).unwrap_err().to_string();
        assert!(err.starts_with(&format!("bad duration '{bad}': ")), "{err}");
    }
}

#[test]
fn spans_read_as_durations_are_written() {
    assert_eq!(span(1800), "30m");
    assert_eq!(span(3600), "1h");
    assert_eq!(span(5400), "1h30m");
    assert_eq!(span(90), "1m30s");
    assert_eq!(span(0), "0s");
}
