//! Reading the configuration the library reads: a TOML file, or flat `key = value` lines.

use std::fs;
use std::path::Path;

use kvcache::{Config, Error, Result};

/// Reads the configuration at `path` (from `--config` or `KVCACHE_CONFIG`).
///
/// TOML when the text parses as TOML; otherwise flat `key = value` lines, as the original's
/// configurations are written: `#` or `;` starts a comment at the beginning of a line, and `#`
/// after a space ends a line. Every container must name a declared backend, as building a cache
/// requires.
pub(crate) fn load(path: Option<&Path>) -> Result<Config> {
    let path = path.ok_or_else(|| {
        Error::config(
            "--config",
            "no configuration given: pass --config PATH or set KVCACHE_CONFIG",
        )
    })?;
    let shown = path.display().to_string();
    let text = fs::read_to_string(path).map_err(|error| {
        Error::config(
            &shown,
            format!("cannot read the configuration file: {error}"),
        )
    })?;
    let looks_like_toml = text.lines().any(|line| line.trim_start().starts_with('['));
    let config = if toml::from_str::<toml::Table>(&text).is_ok() || looks_like_toml {
        // A TOML file that does not parse is reported as TOML, with its line.
        Config::from_toml_file(path)?
    } else {
        Config::from_pairs(flat_pairs(&text, &shown)?)?
    };
    check_backends(&config)?;
    Ok(config)
}

/// The `key = value` pairs of flat lines; `origin` names the file in errors.
fn flat_pairs(text: &str, origin: &str) -> Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = without_comment(line).trim();
        if line.is_empty() {
            continue;
        }
        let (key, value) = line.split_once('=').ok_or_else(|| {
            Error::config(
                format!("{origin}, line {}", number + 1),
                format!("expected `key = value` (or TOML), got {line:?}"),
            )
        })?;
        pairs.push((key.trim().to_owned(), value.trim().to_owned()));
    }
    Ok(pairs)
}

/// `line` without its comment: one that starts it (`#`, `;`), or a `#` after whitespace.
fn without_comment(line: &str) -> &str {
    let trimmed = line.trim_start();
    if trimmed.starts_with('#') || trimmed.starts_with(';') {
        return "";
    }
    let bytes = line.as_bytes();
    let comment =
        (1..bytes.len()).find(|&i| bytes[i] == b'#' && bytes[i - 1].is_ascii_whitespace());
    comment.map_or(line, |at| &line[..at])
}

/// Every container names a declared backend, as [`kvcache::KvCache::new`] requires.
fn check_backends(config: &Config) -> Result<()> {
    let declared: Vec<&str> = config.backend_names().collect();
    for container in config.container_names() {
        let backend = config.container_backend(container).unwrap_or_default();
        if !declared.contains(&backend) {
            return Err(Error::config(
                format!("container.{container}.backend"),
                format!(
                    "names the backend {backend:?}, which is not declared (declared: {})",
                    if declared.is_empty() {
                        "none".to_owned()
                    } else {
                        declared.join(", ")
                    }
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{flat_pairs, without_comment};

    #[test]
    fn flat_lines_are_pairs_without_comments() {
        let text = "# a comment\n; another\nbackend.mem = variable   # a backend\n\n\
                    backend.r.url = redis://:pa#ss@host\ncontainer.c.backend=mem\n";
        let pairs = flat_pairs(text, "f").unwrap();
        assert_eq!(
            pairs,
            [
                ("backend.mem".to_owned(), "variable".to_owned()),
                ("backend.r.url".to_owned(), "redis://:pa#ss@host".to_owned()),
                ("container.c.backend".to_owned(), "mem".to_owned()),
            ]
        );
        assert_eq!(without_comment("a = b #c"), "a = b ");
        let error = flat_pairs("a = b\nnonsense\n", "f.conf").unwrap_err();
        assert_eq!(
            error.to_string(),
            "f.conf, line 2: expected `key = value` (or TOML), got \"nonsense\""
        );
    }
}
