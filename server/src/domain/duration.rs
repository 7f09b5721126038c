//! Human durations as operators type them: `90s`, `30m`, `12h`, `30d`, `1h30m`.

use std::time::Duration;

use super::ParseError;

pub fn parse_duration(raw: &str) -> Result<Duration, ParseError> {
    let err = || {
        ParseError::new(format!(
            "invalid duration '{raw}': use e.g. 90s, 30m, 12h, 30d or 1h30m"
        ))
    };
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in raw.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(err()),
        };
        let n: u64 = digits.parse().map_err(|_| err())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(err)?;
        digits.clear();
    }
    if !digits.is_empty() {
        // A bare number is seconds.
        if total != 0 {
            return Err(err());
        }
        total = digits.parse().map_err(|_| err())?;
    }
    if total == 0 {
        return Err(err());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_the_usual_units() {
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("900"), Ok(Duration::from_secs(900)));
        for bad in ["", "0s", "m", "10x", "-5m", "1h30", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
