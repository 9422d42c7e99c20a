//! Parsing intervals written the original's way (`5 sec`, `2 hours`) or humantime's (`1h 30m`).

use std::time::Duration;

/// Parses an interval: one or more `NUMBER [spaces] UNIT` parts (`5 sec`, `365days`, `1h 30m`),
/// or a bare number of seconds (`0`, `90`). Numbers may have a fraction (`1.5 hours`).
///
/// Units are humantime's (`ms`, `s`, `sec`, `m`, `min`, `h`, `d`, `w`, their long forms, ...)
/// plus the original's `millisecond(s)`, which humantime does not know.
///
/// # Errors
///
/// A message saying what was expected, for the caller to attach to its configuration key.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return trimmed
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| format!("the interval {text:?} is too large"));
    }
    humantime::parse_duration(&normalise(trimmed)).map_err(|error| {
        format!(
            "expected an interval such as `90s`, `5 sec`, `2 hours` or `1h 30m`, got {text:?} ({error})"
        )
    })
}

/// Joins each number to its unit (`5 sec` → `5sec`) and spells `millisecond(s)` as `ms`.
fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(|c: char| !c.is_whitespace()) {
        rest = &rest[start..];
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(digits);
        let after = if number.is_empty() {
            after
        } else {
            after.trim_start()
        };
        let unit_len = after
            .find(|c: char| !c.is_alphabetic())
            .unwrap_or(after.len());
        let (unit, tail) = after.split_at(unit_len);
        if number.is_empty() && unit.is_empty() {
            // Neither digits nor letters: hand the text as it is to humantime, which says what is wrong.
            return text.to_owned();
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(number);
        out.push_str(match unit {
            "millisecond" | "milliseconds" => "ms",
            other => other,
        });
        rest = tail;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::parse_interval;
    use std::time::Duration;

    fn ok(text: &str) -> Duration {
        parse_interval(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    #[test]
    fn the_originals_forms_parse() {
        let s = Duration::from_secs;
        for (text, expected) in [
            ("5 milliseconds", Duration::from_millis(5)),
            ("1 millisecond", Duration::from_millis(1)),
            ("5ms", Duration::from_millis(5)),
            ("5 sec", s(5)),
            ("5s", s(5)),
            ("5 seconds", s(5)),
            ("1 second", s(1)),
            ("3 m", s(180)),
            ("3min", s(180)),
            ("3 minutes", s(180)),
            ("1 minute", s(60)),
            ("2 hours", s(7200)),
            ("1 hour", s(3600)),
            ("2h", s(7200)),
            ("365days", s(365 * 86400)),
            ("1 day", s(86400)),
            ("1d", s(86400)),
            ("2 weeks", s(14 * 86400)),
            ("1 week", s(7 * 86400)),
            ("1w", s(7 * 86400)),
            ("  90s ", s(90)),
        ] {
            assert_eq!(ok(text), expected, "{text:?}");
        }
    }

    #[test]
    fn compound_and_bare_forms_parse() {
        assert_eq!(ok("1h 30m"), Duration::from_secs(5400));
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("1 hour 30 minutes"), Duration::from_secs(5400));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok("1.5 hours"), Duration::from_secs(5400));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("90"), Duration::from_secs(90));
    }

    #[test]
    fn malformed_intervals_are_errors_that_quote_the_text() {
        for text in [
            "",
            "soon",
            "5 parsecs",
            "-5s",
            "1..5h",
            "5 s s",
            "99999999999999999999999s",
        ] {
            let error = parse_interval(text).expect_err(text);
            assert!(error.contains(&format!("{text:?}")), "{text:?}: {error}");
        }
    }
}
