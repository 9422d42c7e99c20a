//! Parsing sizes in bytes (`1048576`, `64 KiB`, `1GiB`, `500MB`), as bounds are written.

/// Parses a size: a whole or fractional number, then optionally a unit: `B`, the decimal `KB`,
/// `MB`, `GB`, `TB` (powers of 1000) or the binary `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024),
/// in any case, with or without a space. A bare number is bytes.
///
/// # Errors
///
/// A message saying what was expected, for the caller to attach to its configuration key.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let expected =
        || format!("expected a size such as `1048576`, `64 KiB` or `1GiB`, got {text:?}");
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let unit: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(expected()),
    };
    if let Ok(whole) = number.parse::<u64>() {
        return whole
            .checked_mul(unit)
            .ok_or_else(|| format!("the size {text:?} is too large"));
    }
    let fraction: f64 = number.parse().map_err(|_| expected())?;
    let bytes = (fraction * unit as f64).round();
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("the size {text:?} is too large"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn reads_bare_numbers_and_units() {
        assert_eq!(parse_size("1048576"), Ok(1_048_576));
        assert_eq!(parse_size("64 KiB"), Ok(65_536));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("1.5 kib"), Ok(1_536));
        assert_eq!(parse_size(" 10 b "), Ok(10));
    }

    #[test]
    fn refuses_what_is_not_a_size() {
        for bad in [
            "",
            "MiB",
            "ten",
            "10 parsecs",
            "-1",
            "1e3",
            "99999999999 TiB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }
}
