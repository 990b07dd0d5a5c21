//! Human durations in rule files: `"500ms"`, `"2s"`, `"10m"`, `"1h"`, `"1d"`,
//! and sums of them such as `"1h30m"`. Milliseconds are the unit everywhere
//! else in the crate because that is what the engine stores.

/// Parses a duration into milliseconds, or explains what is wrong with it.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "invalid duration `{text}`: expected a whole number followed by ms, s, m, h or d (e.g. \"10m\", \"1h30m\")"
        )
    };
    if text.is_empty() {
        return Err(bad());
    }
    let bytes = text.as_bytes();
    let mut total: u64 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(bad());
        }
        let number: u64 = text[start..i].parse().map_err(|_| bad())?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let factor: u64 = match &text[unit_start..i] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        total = number
            .checked_mul(factor)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(|| format!("duration `{text}` is too large"))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn parses_each_unit_and_sums() {
        assert_eq!(parse_duration("500ms"), Ok(500));
        assert_eq!(parse_duration("2s"), Ok(2_000));
        assert_eq!(parse_duration("10m"), Ok(600_000));
        assert_eq!(parse_duration("1h"), Ok(3_600_000));
        assert_eq!(parse_duration("1d"), Ok(86_400_000));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "10",
            "m",
            "10 m",
            "1.5h",
            "10min",
            "-1s",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
