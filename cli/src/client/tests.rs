use super::*;

#[test]
fn ids_that_could_leave_their_path_segment_are_refused() {
    assert!(customer_id("acme-corp").is_ok());
    assert!(case_id("CS-12345").is_ok());
    assert!(case_id("a.b_c-D").is_ok());
    assert!(session_id("01a2b3c4-d5e6-47f8-9a0b-1c2d3e4f5a6b").is_ok());
    for bad in [
        "",
        "a",
        "-acme",
        "Acme",
        "acme/../x",
        "acme?x",
        "acme%2F",
        "acme corp",
    ] {
        assert!(customer_id(bad).is_err(), "{bad}");
    }
    for bad in ["", "C", ".CS", "CS/1", "CS 1", "CS#1", "CS?1", "CS%2F1"] {
        assert!(case_id(bad).is_err(), "{bad}");
    }
    for bad in [
        "",
        "../customers",
        "01a2b3c4-d5e6-47f8-9a0b-1c2d3e4f5a6b/../x",
        "01a2b3c4d5e647f89a0b1c2d3e4f5a6b",
        "{01a2b3c4-d5e6-47f8-9a0b-1c2d3e4f5a6b}",
        "urn:uuid:01a2b3c4-d5e6-47f8-9a0b-1c2d3e4f5a6b",
        "0g a2b3c4-d5e6-47f8-9a0b-1c2d3e4f5a6",
    ] {
        assert!(session_id(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_refused_id_is_named_with_its_value_and_the_rule() {
    let line = |e: anyhow::Error| format!("{e:#}");
    let customer = line(customer_id("acme?x").unwrap_err());
    assert!(
        customer.starts_with("bad customer id \"acme?x\": "),
        "{customer}"
    );
    let case = line(case_id("no spaces!").unwrap_err());
    assert!(
        case.starts_with("bad case id \"no spaces!\"") && case.contains("case_id"),
        "{case}"
    );
    let session = line(session_id("../customers").unwrap_err());
    assert!(
        session.starts_with("bad session id \"../customers\""),
        "{session}"
    );
    let role = line(role_name("Admin").unwrap_err());
    assert!(role.starts_with("bad role name \"Admin\": "), "{role}");
}
