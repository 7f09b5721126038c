//! The ids the CLI puts into request paths and queries (customer, case, session), checked
//! against the broker's own rules before use, so that no value can change which resource a
//! request names (`../`, `?`, `#`, `%2F`) and a typo gets a clear error without a request.

use anyhow::bail;

/// A customer id: `^[a-z0-9][a-z0-9-]{1,62}$`.
pub fn customer(id: &str) -> anyhow::Result<&str> {
    let ok = (2..=63).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-');
    if !ok {
        bail!(
            "bad customer id {id:?}: 2-63 lowercase letters, digits and '-', not starting with '-'"
        );
    }
    Ok(id)
}

/// A support case id (case_id): `^[A-Za-z0-9][A-Za-z0-9._-]{1,63}$`.
pub fn case(id: &str) -> anyhow::Result<&str> {
    let ok = (2..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && id.as_bytes()[0].is_ascii_alphanumeric();
    if !ok {
        bail!(
            "bad case id {id:?}: case_id must be 2-64 letters, digits, '.', '_' and '-', starting with a letter or digit"
        );
    }
    Ok(id)
}

/// A role name: `^[a-z0-9][a-z0-9_-]{0,62}$`.
pub fn role(name: &str) -> anyhow::Result<&str> {
    let ok = (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if !ok {
        bail!(
            "bad role name {name:?}: 1-63 lowercase letters, digits, '-' and '_', starting with a letter or digit"
        );
    }
    Ok(name)
}

/// A session id: a UUID in its hyphenated form.
pub fn session(id: &str) -> anyhow::Result<&str> {
    let groups: Vec<&str> = id.split('-').collect();
    let ok = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()));
    if !ok {
        bail!("bad session id {id:?}: a session id is a UUID (e.g. 01a2b3c4-...-...)");
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_could_leave_their_path_segment_are_refused() {
        assert!(customer("acme-corp").is_ok());
        assert!(case("CS-12345").is_ok());
        assert!(case("a.b_c-D").is_ok());
        assert!(session("01a2b3c4-d5e6-47f8-9a0b-1c2d3e4f5a6b").is_ok());
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
            assert!(customer(bad).is_err(), "{bad}");
        }
        for bad in ["", "C", ".CS", "CS/1", "CS 1", "CS#1", "CS?1", "CS%2F1"] {
            assert!(case(bad).is_err(), "{bad}");
        }
        for bad in [
            "",
            "../customers",
            "01a2b3c4-d5e6-47f8-9a0b-1c2d3e4f5a6b/../x",
            "01a2b3c4d5e647f89a0b1c2d3e4f5a6b",
            "0g a2b3c4-d5e6-47f8-9a0b-1c2d3e4f5a6",
        ] {
            assert!(session(bad).is_err(), "{bad}");
        }
    }
}
