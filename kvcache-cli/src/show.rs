//! Numbers, times and tables for people.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Unix milliseconds now.
pub(crate) fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// `bytes` in the largest binary unit that keeps a whole part: `512 B`, `1.5 KiB`, `95.4 MiB`.
pub(crate) fn bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Unix milliseconds as RFC 3339, to the millisecond, in UTC.
pub(crate) fn rfc3339(millis: u64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(millis);
    humantime::format_rfc3339_millis(at).to_string()
}

/// How far `millis` is from `now`, to the second: `in 1h 29m 59s`, `3s ago`, `now`.
pub(crate) fn relative(millis: u64, now: u64) -> String {
    let seconds = |ms: u64| Duration::from_secs(ms / 1000);
    if millis >= now + 1000 {
        format!("in {}", humantime::format_duration(seconds(millis - now)))
    } else if now >= millis + 1000 {
        format!("{} ago", humantime::format_duration(seconds(now - millis)))
    } else {
        "now".to_owned()
    }
}

/// The first `max` of `bytes` in hexadecimal, with `…` when there are more.
pub(crate) fn hex(bytes: &[u8], max: usize) -> String {
    let shown: Vec<String> = bytes
        .iter()
        .take(max)
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let mut text = shown.join(" ");
    if bytes.len() > max {
        text.push_str(" …");
    }
    text
}

/// `text` cut after `max` characters, with `…`.
pub(crate) fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// A table: `headers`, then `rows`, in columns two spaces apart; the columns named in `right`
/// are aligned right (numbers).
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>], right: &[usize]) -> String {
    let mut widths: Vec<usize> = headers
        .iter()
        .map(|header| header.chars().count())
        .collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(column, (cell, &width))| {
                if right.contains(&column) {
                    format!("{cell:>width$}")
                } else {
                    format!("{cell:<width$}")
                }
            })
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut text = line(headers.to_vec());
    for row in rows {
        text.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    text
}

/// The messages of `error`'s sources, outermost first.
pub(crate) fn causes(error: &dyn std::error::Error) -> Vec<String> {
    let mut causes = Vec::new();
    let mut source = error.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        // A source that only repeats its error adds nothing.
        if causes.last().is_none_or(|last: &String| last != &text) {
            causes.push(text);
        }
        source = inner.source();
    }
    causes
}

/// `error` and its causes, for a person: `message: cause: cause`.
pub(crate) fn error_line(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    for cause in causes(error) {
        line.push_str(": ");
        line.push_str(&cause);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::{bytes, cut, hex, relative, rfc3339, table};

    #[test]
    fn numbers_and_times_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(100 << 20), "100.0 MiB");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(relative(5_400_000 + 500, 0), "in 1h 30m");
        assert_eq!(relative(0, 3_000), "3s ago");
        assert_eq!(relative(10, 0), "now");
        assert_eq!(hex(&[1, 2, 255], 2), "01 02 …");
        assert_eq!(cut("abcdef", 3), "abc…");
    }

    #[test]
    fn tables_align_their_columns() {
        let rows = vec![
            vec!["greeting".to_owned(), "12".to_owned()],
            vec!["c".to_owned(), "1000".to_owned()],
        ];
        assert_eq!(
            table(&["CONTAINER", "ENTRIES"], &rows, &[1]),
            "CONTAINER  ENTRIES\ngreeting        12\nc             1000\n"
        );
    }
}
