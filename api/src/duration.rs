//! Durations as people type them, one grammar for the server (`token issue --ttl`) and the
//! CLI (`support-access --duration`): a number with units, parsed by `humantime` (`90s`,
//! `30m`, `12h`, `30d`, `1h30m`, `1h 30m`), or a bare number of seconds (`1800`, as the origin
//! guide writes it). Whole seconds only, and more than none.

use std::time::Duration;

use crate::ParseError;

pub fn parse_duration(raw: &str) -> Result<Duration, ParseError> {
    let err = || {
        ParseError::new(format!(
            "invalid duration '{raw}': use seconds (1800) or a number with a unit, e.g. 90s, \
             30m, 12h, 30d or 1h30m"
        ))
    };
    let text = raw.trim();
    let duration = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        Duration::from_secs(text.parse().map_err(|_| err())?)
    } else {
        humantime::parse_duration(text).map_err(|_| err())?
    };
    if duration.is_zero() || duration.subsec_nanos() != 0 {
        return Err(err());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_the_usual_units_and_as_bare_seconds() {
        let secs = |s| Ok(Duration::from_secs(s));
        assert_eq!(parse_duration("30m"), secs(1800));
        assert_eq!(parse_duration("1h30m"), secs(5400));
        assert_eq!(parse_duration("1h 30m"), secs(5400));
        assert_eq!(parse_duration("90s"), secs(90));
        assert_eq!(parse_duration("30d"), secs(30 * 86_400));
        assert_eq!(parse_duration("1800"), secs(1800));
        assert_eq!(parse_duration("1.5h"), secs(5400));
        for bad in [
            "",
            "0",
            "0s",
            "m",
            "10x",
            "-5m",
            "1h30",
            "500ms",
            "1.0001s",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
