use super::*;

#[test]
fn cursors_round_trip_and_anything_else_is_refused() {
    for id in [1, 42, 1 << 40, i64::MAX] {
        let cursor = encode_cursor(id);
        assert_eq!(cursor.len(), 11);
        assert_eq!(decode_cursor(&cursor).unwrap(), id);
    }
    for bad in [
        "",
        "abc",
        "AAAAAAAAAAA",  // id 0
        "gAAAAAAAAAA",  // negative
        "AAAAAAAAAAB",  // non-canonical trailing bits
        "AAAAAAAAACo=", // padded
        "AAAAAAAAAA+",  // not the URL-safe alphabet
        "AAAAAAAAAAAAAAA",
    ] {
        assert!(decode_cursor(bad).is_err(), "{bad}");
    }
}

#[test]
fn timestamps_must_be_rfc_3339() {
    assert!(timestamp("from", "2026-11-25T10:00:00Z").is_ok());
    assert!(timestamp("from", "2026-11-25T10:00:00.123+01:00").is_ok());
    for bad in [
        "2026-11-25",
        "2026-11-25 10:00:00Z",
        "2026-11-25T10:00:00",
        "2026-11-25T10:00:00 01:00",
        "yesterday",
        "",
    ] {
        assert!(timestamp("from", bad).is_err(), "{bad}");
    }
}

#[test]
fn action_names_follow_the_documented_pattern() {
    assert!(is_action_name("credentials.issue"));
    assert!(is_action_name("session.open"));
    for bad in ["", "Session.open", ".x", "a b", &"a".repeat(65)] {
        assert!(!is_action_name(bad), "{bad}");
    }
}
