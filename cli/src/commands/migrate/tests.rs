use super::plan::*;

const ARN: &str = "arn:aws:iam::444455556666:role/AcmeAccess";
const LANYARD: &str = "/usr/bin/lanyard credential-process --profile";

const CONFIG: &str = "# my AWS settings\n[default]\nregion = eu-west-1\n\n\
    [profile acme-prod]\nrole_arn = arn:aws:iam::444455556666:role/AcmeAccess\n\
    external_id   =   Lanyard-acme-0123\nsource_profile = operator\nregion = eu-central-1\n; keep me\n\n\
    [profile work]\nrole_arn = arn:aws:iam::123456789012:role/Dev\nsource_profile = operator\n\n\
    [profile acme-static]\nregion = us-west-2\noutput = json\n";

const CREDENTIALS: &str = "[operator]\naws_access_key_id = AKIAOPERATOR00000001\n\
    aws_secret_access_key = operatorSecret/abc\n\n\
    [acme-static]\naws_access_key_id=AKIASTATIC0000000001\naws_secret_access_key=staticSecret+xyz\n";

fn role(customer: &str, name: &str, arn: &str, external_id: &str) -> KnownRole {
    KnownRole {
        customer: customer.into(),
        role: name.into(),
        role_arn: arn.into(),
        external_ids: vec![external_id.into()],
        customer_sessions: true,
        status: "verified".into(),
    }
}

fn statics() -> Vec<String> {
    vec!["acme-static".into()]
}

#[test]
fn role_profiles_of_registered_roles_and_named_static_profiles_are_found() {
    let roles = [role("acme", "readonly", ARN, "Lanyard-acme-0123")];
    let statics = statics();
    let request = Request {
        static_profiles: &statics,
        customer: Some("acme"),
        role: None,
    };
    let (found, skipped, done) = find(CONFIG, CREDENTIALS, &roles, &request).unwrap();
    assert_eq!(
        found,
        [
            Migration {
                profile: "acme-prod".into(),
                customer: "acme".into(),
                role: Some("readonly".into()),
                from: Origin::RoleArn(ARN.into()),
            },
            Migration {
                profile: "acme-static".into(),
                customer: "acme".into(),
                role: None,
                from: Origin::StaticKeys,
            },
        ]
    );
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].profile, "work");
    assert!(skipped[0].reason.contains("not a customer role registered"));
    assert_eq!(done, 0);
    // The operator's own keys are not named: they stay.
    assert!(!found.iter().any(|m| m.profile == "operator"));
}

#[test]
fn a_static_profile_without_keys_is_an_error_unless_it_is_migrated_already() {
    let none: [String; 1] = ["work".into()];
    let request = Request {
        static_profiles: &none,
        customer: Some("acme"),
        role: None,
    };
    let err = find(CONFIG, CREDENTIALS, &[], &request).unwrap_err();
    assert!(format!("{err}").contains("--static-profile work"), "{err}");
    let migrated = format!("[profile work]\ncredential_process = {LANYARD} work\n");
    let (found, _, done) = find(&migrated, "", &[], &request).unwrap();
    assert!(found.is_empty());
    assert_eq!(done, 1);
}

#[test]
fn a_role_registered_by_several_customers_is_told_apart_by_the_external_id() {
    let roles = [
        role("acme", "readonly", ARN, "Lanyard-acme-0123"),
        role("globex", "readonly", ARN, "Lanyard-globex-9"),
    ];
    let (found, _, _) = find(CONFIG, "", &roles, &Request::default()).unwrap();
    assert_eq!(found[0].customer, "acme");
    let other = CONFIG.replace("Lanyard-acme-0123", "someone-else");
    let (found, skipped, _) = find(&other, "", &roles, &Request::default()).unwrap();
    assert!(found.is_empty());
    assert!(
        skipped[0].reason.contains("registered several times"),
        "{skipped:?}"
    );
    // --customer keeps another customer's profiles as they are.
    let request = Request {
        customer: Some("globex"),
        ..Request::default()
    };
    let (found, skipped, _) = find(CONFIG, "", &roles[..1], &request).unwrap();
    assert!(found.is_empty());
    assert!(
        skipped[0].reason.contains("not --customer globex's"),
        "{skipped:?}"
    );
    // A role that allows no customer sessions is no target.
    let mut support_only = role("acme", "support", ARN, "Lanyard-acme-0123");
    support_only.customer_sessions = false;
    let (found, skipped, _) = find(CONFIG, "", &[support_only], &Request::default()).unwrap();
    assert!(found.is_empty());
    assert!(
        skipped[0]
            .reason
            .contains("does not allow customer sessions")
    );
}

#[test]
fn the_edit_moves_keys_and_external_ids_out_and_leaves_every_other_byte() {
    let migrations = [
        ("acme-prod".to_owned(), format!("{LANYARD} acme-prod")),
        ("acme-static".to_owned(), format!("{LANYARD} acme-static")),
    ];
    let edited = edit(CONFIG, CREDENTIALS, &migrations, ("CONFIG", "CREDENTIALS"));
    assert_eq!(
        edited.config,
        format!(
            "# my AWS settings\n[default]\nregion = eu-west-1\n\n\
             [profile acme-prod]\nregion = eu-central-1\ncredential_process = {LANYARD} acme-prod\n; keep me\n\n\
             [profile work]\nrole_arn = arn:aws:iam::123456789012:role/Dev\nsource_profile = operator\n\n\
             [profile acme-static]\nregion = us-west-2\noutput = json\n\
             credential_process = {LANYARD} acme-static\n"
        )
    );
    assert_eq!(
        edited.credentials,
        "[operator]\naws_access_key_id = AKIAOPERATOR00000001\n\
         aws_secret_access_key = operatorSecret/abc\n\n[acme-static]\n"
    );
    assert_eq!(
        edited.backup,
        "# CONFIG\n[profile acme-prod]\nrole_arn = arn:aws:iam::444455556666:role/AcmeAccess\n\
         external_id   =   Lanyard-acme-0123\nsource_profile = operator\n\n\
         # CREDENTIALS\n[acme-static]\naws_access_key_id=AKIASTATIC0000000001\n\
         aws_secret_access_key=staticSecret+xyz\n\n"
    );
    // Run again on the result: nothing is left to find, nothing changes.
    let roles = [role("acme", "readonly", ARN, "Lanyard-acme-0123")];
    let statics = statics();
    let request = Request {
        static_profiles: &statics,
        customer: Some("acme"),
        role: None,
    };
    let (found, _, done) = find(&edited.config, &edited.credentials, &roles, &request).unwrap();
    assert!(found.is_empty(), "{found:?}");
    assert_eq!(done, 2);
}

#[test]
fn a_run_stopped_before_the_credentials_file_is_finished_by_the_next() {
    let migrations = [("acme-static".to_owned(), format!("{LANYARD} acme-static"))];
    let edited = edit(CONFIG, CREDENTIALS, &migrations, ("C", "K"));
    // The config file was replaced, the credentials file not yet.
    let statics = statics();
    let request = Request {
        static_profiles: &statics,
        customer: Some("acme"),
        role: None,
    };
    let (found, _, _) = find(&edited.config, CREDENTIALS, &[], &request).unwrap();
    assert_eq!(found.len(), 1);
    let again = edit(&edited.config, CREDENTIALS, &migrations, ("C", "K"));
    assert_eq!(again.config, edited.config);
    assert_eq!(again.credentials, edited.credentials);
}

#[test]
fn another_programs_credential_process_is_replaced_and_kept_in_the_backup() {
    let config = "[profile x]\nrole_arn = arn:1\ncredential_process = aws-vault exec x --json\n";
    let edited = edit(
        config,
        "",
        &[("x".into(), format!("{LANYARD} x"))],
        ("C", "K"),
    );
    assert_eq!(
        edited.config,
        format!("[profile x]\ncredential_process = {LANYARD} x\n")
    );
    assert!(
        edited
            .backup
            .contains("credential_process = aws-vault exec x --json\n")
    );
    assert!(runs_lanyard(&format!("{LANYARD} x")));
    assert!(!runs_lanyard("aws-vault exec x --json"));
}

#[test]
fn a_profile_only_in_the_credentials_file_gets_a_section_in_a_crlf_config() {
    let config = "[default]\r\nregion = eu-west-1\r\n";
    let credentials =
        "[ci]\r\naws_access_key_id = AKIA\r\naws_secret_access_key = s\r\nregion = x\r\n";
    let statics: [String; 1] = ["ci".into()];
    let request = Request {
        static_profiles: &statics,
        customer: Some("acme"),
        role: Some("deploy"),
    };
    let (found, _, _) = find(config, credentials, &[], &request).unwrap();
    assert_eq!(found[0].role.as_deref(), Some("deploy"));
    let edited = edit(
        config,
        credentials,
        &[("ci".into(), format!("{LANYARD} ci"))],
        ("C", "K"),
    );
    assert_eq!(
        edited.config,
        format!(
            "[default]\r\nregion = eu-west-1\r\n\r\n[profile ci]\r\ncredential_process = {LANYARD} ci\r\n"
        )
    );
    assert_eq!(edited.credentials, "[ci]\r\nregion = x\r\n");
    assert_eq!(
        edited.backup,
        "# K\n[ci]\r\naws_access_key_id = AKIA\r\naws_secret_access_key = s\r\n\n"
    );
}
