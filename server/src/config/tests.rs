use super::*;
use secrecy::ExposeSecret;

#[test]
fn flags_override_the_file_and_defaults_fill_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lanyard.toml");
    std::fs::write(
        &path,
        "listen_addr = \"127.0.0.1:7000\"\nexternal_id_prefix = \"Acme\"\ntrust_check = \"warn\"\n",
    )
    .unwrap();
    let settings = Settings {
        config: Some(path),
        external_id_prefix: Some("Flag".into()),
        ..Settings::default()
    };
    let config = settings.resolve().unwrap();
    assert_eq!(config.listen_addr.port(), 7000);
    assert_eq!(config.external_id_prefix, "Flag");
    assert_eq!(config.trust_check, TrustCheckMode::Warn);
    assert_eq!(config.database_url.expose_secret(), DEFAULT_DATABASE_URL);
}

#[test]
fn unknown_file_keys_and_bad_prefixes_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lanyard.toml");
    std::fs::write(&path, "listen_adr = \"127.0.0.1:7000\"\n").unwrap();
    let settings = Settings {
        config: Some(path),
        ..Settings::default()
    };
    assert!(settings.resolve().is_err());
    let settings = Settings {
        external_id_prefix: Some("has space".into()),
        ..Settings::default()
    };
    assert!(settings.resolve().is_err());
}

#[test]
fn cloudwatch_windows_must_tile_a_minute() {
    let with = |secs| Settings {
        cloudwatch_flush_secs: Some(secs),
        ..Settings::default()
    };
    assert!(with(7).resolve().is_err());
    assert!(with(0).resolve().is_err());
    assert!(with(120).resolve().is_err());
    assert_eq!(with(15).resolve().unwrap().cloudwatch_flush.as_secs(), 15);
    let named = |ns: &str| Settings {
        cloudwatch_namespace: Some(ns.into()),
        ..Settings::default()
    };
    assert!(named("Lanyard/prod").resolve().is_ok());
    assert!(named("AWS/EC2").resolve().is_err());
    assert!(named("bad|name").resolve().is_err());
    assert!(named(&"x".repeat(256)).resolve().is_err());
    let config = Settings::default().resolve().unwrap();
    assert_eq!(config.cloudwatch_flush.as_secs(), 60);
    assert!(config.cloudwatch_namespace.is_none());
}

#[test]
fn debug_output_hides_the_database_password() {
    let settings = Settings {
        database_url: Some(SecretString::from("postgres://u:hunter2@db/lanyard")),
        ..Settings::default()
    };
    assert!(!format!("{settings:?}").contains("hunter2"));
    let config = settings.resolve().unwrap();
    assert!(!format!("{config:?}").contains("hunter2"));
}
