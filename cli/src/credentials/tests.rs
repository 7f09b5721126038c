use serde_json::json;

use super::*;

fn cached(left: Duration) -> Cached {
    let expiration = Utc::now() + left;
    Cached {
        document: CredentialProcess {
            version: 1,
            access_key_id: "ASIAEXAMPLE12345".into(),
            secret_access_key: "s3cr3t/+=".into(),
            session_token: "tok".into(),
            expiration: expiration.to_rfc3339(),
        },
        expiration,
        checked_at: None,
        issued_at: None,
    }
}

fn profile(session_end: Option<DateTime<Utc>>) -> Profile {
    Profile {
        server: None,
        kind: Kind::Support,
        customer: "acme-corp".into(),
        session: Some("s".into()),
        case: Some("CS-1".into()),
        role: None,
        session_expires_at: session_end,
        tier: None,
        case_title: None,
        approval_expires_at: None,
        identity: None,
    }
}

#[test]
fn credentials_outside_the_sdk_refresh_window_are_fresh() {
    assert!(is_fresh(
        &cached(Duration::minutes(16)),
        &profile(None),
        Utc::now()
    ));
    assert!(!is_fresh(
        &cached(Duration::minutes(14)),
        &profile(None),
        Utc::now()
    ));
}

#[test]
fn credentials_that_end_with_the_session_are_served_until_they_expire() {
    let c = cached(Duration::minutes(5));
    assert!(is_fresh(&c, &profile(Some(c.expiration)), Utc::now()));
    // A session that lasts longer can give longer credentials: refresh.
    let later = c.expiration + Duration::hours(1);
    assert!(!is_fresh(&c, &profile(Some(later)), Utc::now()));
    let ending = cached(Duration::seconds(5));
    assert!(!is_fresh(
        &ending,
        &profile(Some(ending.expiration)),
        Utc::now()
    ));
}

#[test]
fn an_expiration_that_is_not_strict_rfc_3339_is_refused() {
    assert!(parse_expiration("2099-01-01T00:00:00Z").is_ok());
    assert!(parse_expiration("2099-01-01T00:00:00.123+02:00").is_ok());
    for bad in [
        "2099-01-01 00:00:00Z",
        "2099-01-01T00:00:00",
        "2099-01-01",
        "2099-01-01T00:00:00Z;id",
        "tomorrow",
    ] {
        assert!(parse_expiration(bad).is_err(), "{bad}");
        let doc = json!({"Version": 1, "AccessKeyId": "ASIAEXAMPLE12345",
            "SecretAccessKey": "abc", "SessionToken": "dG9r", "Expiration": bad});
        assert!(parse_document(doc).is_err(), "{bad}");
    }
}

#[test]
fn a_document_without_a_secret_is_refused() {
    assert!(
        parse_document(
            json!({"Version": 1, "AccessKeyId": "A", "SessionToken": "t",
        "Expiration": "2030-01-01T00:00:00Z"})
        )
        .is_err()
    );
    let err = parse_document(json!({"Version": 1, "AccessKeyId": "ASIAEXAMPLE12345",
        "SessionToken": "dG9r", "Expiration": "2030-01-01T00:00:00Z"}))
    .unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "the broker's credentials lack SecretAccessKey"
    );
}

#[test]
fn documents_that_could_break_out_of_a_shell_are_refused_without_echoing_them() {
    let good = || {
        json!({"Version": 1, "AccessKeyId": "ASIAEXAMPLE12345", "SecretAccessKey": "abc+/=",
            "SessionToken": "dG9r", "Expiration": "2030-01-01T00:00:00Z"})
    };
    assert!(parse_document(good()).is_ok());
    for (field, evil) in [
        ("AccessKeyId", "ASIA$(touch /tmp/pwned)"),
        ("AccessKeyId", "asiaexample12345"),
        ("AccessKeyId", "ASIA"),
        ("SecretAccessKey", "abc; rm -rf ~"),
        ("SecretAccessKey", "abc`id`"),
        ("SessionToken", "tok\nexport PATH=/evil"),
        ("SessionToken", "tok\"; id; \""),
    ] {
        let mut doc = good();
        doc[field] = json!(evil);
        let err = format!("{:#}", parse_document(doc.clone()).unwrap_err());
        assert!(err.contains(field), "{err}");
        assert!(!err.contains(evil), "{err}");
        let cached = Cached {
            document: serde_json::from_value(doc).unwrap(),
            expiration: Utc::now() + Duration::hours(1),
            checked_at: None,
            issued_at: None,
        };
        assert!(export(&cached, ExportFormat::Env).is_err());
    }
}
