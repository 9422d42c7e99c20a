//! Reading configurations: the original's flat map, TOML of the same shape, and intervals.

use std::time::Duration;

use kvcache_core::{Config, Error};

#[test]
fn an_original_configuration_reads_unchanged() {
    // As written for score.kvcache: class paths as kinds, `sqlalchemy.url`, the original's intervals.
    let config = Config::from_pairs([
        ("backend.variable", "score.kvcache.backend.VariableCache"),
        ("backend.file", "score.kvcache.backend.FileCache"),
        ("backend.file.path", "/tmp/kvcache.sqlite3"),
        ("backend.sql", "score.kvcache.backend.SQLAlchemyCache"),
        (
            "backend.sql.sqlalchemy.url",
            "postgresql://dbuser@localhost/dbname",
        ),
        ("container.greeting.backend", "variable"),
        ("container.greeting.expire", "5 sec"),
        ("container.weather.backend", "file"),
        ("container.weather.expire", "2 hours"),
        ("container.weather.generator", "myapp.weather.generate"),
        ("container.stocks.backend", "sql"),
        ("container.stocks.expire", "5 milliseconds"),
    ])
    .unwrap();
    assert_eq!(
        config.backend_names().collect::<Vec<_>>(),
        ["file", "sql", "variable"]
    );
    assert_eq!(
        config.container_names().collect::<Vec<_>>(),
        ["greeting", "stocks", "weather"]
    );
}

#[test]
fn toml_and_the_flat_map_mean_the_same() {
    let flat = Config::from_pairs([
        ("backend.disk", "file"),
        ("backend.disk.path", "cache/kv.sqlite3"),
        ("backend.disk.busy_timeout", "5"),
        ("backend.db.kind", "sql"),
        (
            "backend.db.sqlalchemy.url",
            "postgres://postgres@127.0.0.1/test",
        ),
        ("container.greeting.backend", "disk"),
        ("container.greeting.expire", "1h 30m"),
        ("container.greeting.generator", "greeting"),
        ("container.other.backend", "db"),
    ])
    .unwrap();
    let toml = Config::from_toml_str(
        r#"
        [backend.disk]
        kind = "file"
        path = "cache/kv.sqlite3"
        busy_timeout = 5

        [backend.db]
        kind = "sql"
        sqlalchemy.url = "postgres://postgres@127.0.0.1/test"

        [container.greeting]
        backend = "disk"
        expire = "1h 30m"
        generator = "greeting"

        [container.other]
        backend = "db"
        "#,
    )
    .unwrap();
    assert_eq!(flat, toml);
}

#[test]
fn a_toml_file_reads_like_its_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kvcache.toml");
    let text =
        "[backend.mem]\nkind = \"variable\"\n\n[container.c]\nbackend = \"mem\"\nexpire = 90\n";
    std::fs::write(&path, text).unwrap();
    assert_eq!(
        Config::from_toml_file(&path).unwrap(),
        Config::from_toml_str(text).unwrap()
    );
}

#[test]
fn zero_and_absent_expiry_both_mean_never() {
    let never =
        Config::from_pairs([("backend.m", "variable"), ("container.c.backend", "m")]).unwrap();
    let zero = Config::from_pairs([
        ("backend.m", "variable"),
        ("container.c.backend", "m"),
        ("container.c.expire", "0"),
    ])
    .unwrap();
    assert_eq!(never, zero);
}

#[test]
fn keys_and_values_are_trimmed_and_order_does_not_matter() {
    let a =
        Config::from_pairs([(" container.c.backend ", " m "), ("backend.m", "variable")]).unwrap();
    let b = Config::from_pairs([("backend.m", "variable"), ("container.c.backend", "m")]).unwrap();
    assert_eq!(a, b);
}

#[test]
fn every_interval_form_of_the_original_parses() {
    for text in [
        "5 sec",
        "2 hours",
        "365days",
        "5 milliseconds",
        "1h 30m",
        "3 weeks",
        "10 min",
        "90s",
    ] {
        let config = Config::from_pairs([
            ("backend.m", "variable"),
            ("container.c.backend", "m"),
            ("container.c.expire", text),
        ]);
        assert!(config.is_ok(), "{text:?}: {config:?}");
    }
    assert_eq!(
        kvcache_core::parse_interval("5 milliseconds"),
        Ok(Duration::from_millis(5))
    );
}

#[test]
fn a_backend_without_a_kind_is_an_error_naming_it() {
    let error = Config::from_toml_str("[backend.disk]\npath = \"x\"").unwrap_err();
    assert!(
        matches!(&error, Error::InvalidConfig { key, .. } if key == "backend.disk"),
        "{error}"
    );
}
