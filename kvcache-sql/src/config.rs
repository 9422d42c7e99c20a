//! The backend's options, read and checked from a [`BackendConfig`].

use std::time::Duration;

use kvcache_core::{BackendConfig, Error, Result};

use crate::url::{DatabaseUrl, Rules};

/// The table used when `table` is not set.
pub(crate) const DEFAULT_TABLE: &str = "kvcache";
/// Connections held at most when `pool_size` is not set.
const DEFAULT_POOL_SIZE: u32 = 10;
/// How long connecting may take when `connect_timeout` is not set.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a call may take when `statement_timeout` is not set.
const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest timeout accepted: longer ones are configuration mistakes.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// The longest table name: with `_expires_at` (its index) or `_leases` (its leases table)
/// appended it still fits PostgreSQL's 63 bytes and MySQL's 64.
const MAX_TABLE_LEN: usize = 48;

/// The options of one `sql` backend.
#[derive(Debug)]
pub(crate) struct SqlConfig {
    /// The configuration key the URL came from (`url` or `sqlalchemy.url`), for errors.
    pub(crate) url_key: String,
    pub(crate) url: DatabaseUrl,
    pub(crate) pool_size: u32,
    pub(crate) connect_timeout: Duration,
    /// How long one call may take in all: waiting for a connection, its statements, and the
    /// server's waits for locks.
    pub(crate) statement_timeout: Duration,
    pub(crate) table: String,
}

impl SqlConfig {
    /// Reads the options, with an [`Error::InvalidConfig`] naming the key of the first bad one.
    pub(crate) fn read(config: &BackendConfig) -> Result<Self> {
        let Some((option, url)) = config.get_any(&["url", "sqlalchemy.url"]) else {
            return Err(Error::config(
                config.key("url"),
                "is required: the database's URL (postgres://, mysql://, mariadb:// or sqlite://)",
            ));
        };
        let url_key = config.key(option);
        let rules = match option {
            "sqlalchemy.url" => Rules::SqlAlchemy,
            _ => Rules::Kvcache,
        };
        let url = DatabaseUrl::parse(url, &url_key, rules)?;
        let pool_size = config
            .parse::<u32>("pool_size", "a whole number of connections")?
            .unwrap_or(DEFAULT_POOL_SIZE);
        if pool_size == 0 {
            return Err(Error::config(
                config.key("pool_size"),
                "expected at least 1 connection",
            ));
        }
        let timeout = |option: &str, default: Duration| {
            let timeout = config.duration(option)?.unwrap_or(default);
            if timeout.is_zero() || timeout > MAX_TIMEOUT {
                return Err(Error::config(
                    config.key(option),
                    format!(
                        "expected a positive interval of at most a day, such as `5s`; \
                         got {timeout:?}"
                    ),
                ));
            }
            Ok(timeout)
        };
        let connect_timeout = timeout("connect_timeout", DEFAULT_CONNECT_TIMEOUT)?;
        let statement_timeout = timeout("statement_timeout", DEFAULT_STATEMENT_TIMEOUT)?;
        let table = config.get("table").unwrap_or(DEFAULT_TABLE).trim();
        if !is_table_name(table) {
            return Err(Error::config(
                config.key("table"),
                format!(
                    "expected a table name of 1 to {MAX_TABLE_LEN} ASCII letters, digits and \
                     underscores, not starting with a digit; got {table:?}"
                ),
            ));
        }
        Ok(SqlConfig {
            url_key,
            url,
            pool_size,
            connect_timeout,
            statement_timeout,
            table: table.to_owned(),
        })
    }
}

/// Letters, digits and underscores, not starting with a digit: a name that needs no escaping
/// inside quotes on any of the databases.
fn is_table_name(name: &str) -> bool {
    name.len() <= MAX_TABLE_LEN
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(options: &[(&str, &str)]) -> Result<SqlConfig> {
        let config = options
            .iter()
            .fold(BackendConfig::new("db", "sql"), |config, (key, value)| {
                config.option(*key, *value)
            });
        SqlConfig::read(&config)
    }

    fn error(options: &[(&str, &str)]) -> String {
        read(options).unwrap_err().to_string()
    }

    #[test]
    fn defaults() {
        let config = read(&[("url", "sqlite://kv.sqlite3")]).unwrap();
        assert_eq!(config.url_key, "backend.db.url");
        assert_eq!(config.pool_size, 10);
        assert_eq!(config.connect_timeout, Duration::from_secs(5));
        assert_eq!(config.statement_timeout, Duration::from_secs(5));
        assert_eq!(config.table, "kvcache");
    }

    #[test]
    fn options() {
        let config = read(&[
            ("sqlalchemy.url", "postgresql://postgres@127.0.0.1/test"),
            ("pool_size", "3"),
            ("connect_timeout", "1500 milliseconds"),
            ("statement_timeout", "250ms"),
            ("table", "Cache_2"),
        ])
        .unwrap();
        assert_eq!(config.url_key, "backend.db.sqlalchemy.url");
        assert_eq!(
            config.url.target(),
            r#"PostgreSQL at 127.0.0.1:5432, database "test""#
        );
        assert_eq!(config.pool_size, 3);
        assert_eq!(config.connect_timeout, Duration::from_millis(1500));
        assert_eq!(config.statement_timeout, Duration::from_millis(250));
        assert_eq!(config.table, "Cache_2");
    }

    #[test]
    fn each_url_key_reads_sqlite_paths_by_its_own_rule() {
        let url = read(&[("url", "sqlite:///kv.sqlite3")]).unwrap();
        assert_eq!(url.url.connect(), "/kv.sqlite3");
        let sqlalchemy = read(&[("sqlalchemy.url", "sqlite:///kv.sqlite3")]).unwrap();
        assert_eq!(sqlalchemy.url.connect(), "kv.sqlite3");
        let sqlalchemy = read(&[("sqlalchemy.url", "sqlite:////kv.sqlite3")]).unwrap();
        assert_eq!(sqlalchemy.url.connect(), "/kv.sqlite3");
    }

    #[test]
    fn bad_options_name_their_key() {
        let url = ("url", "sqlite://kv.sqlite3");
        assert!(error(&[]).starts_with("backend.db.url: is required"));
        assert!(error(&[url, ("pool_size", "0")]).starts_with("backend.db.pool_size: "));
        assert!(error(&[url, ("pool_size", "many")]).starts_with("backend.db.pool_size: "));
        assert!(
            error(&[url, ("connect_timeout", "0")]).starts_with("backend.db.connect_timeout: ")
        );
        assert!(
            error(&[url, ("connect_timeout", "soon")]).starts_with("backend.db.connect_timeout: ")
        );
        for bad in ["0", "0ms", "2 days", "later"] {
            let message = error(&[url, ("statement_timeout", bad)]);
            assert!(
                message.starts_with("backend.db.statement_timeout: "),
                "{bad}: {message}"
            );
        }
        for table in [
            "",
            "1st",
            "kv cache",
            "kv\"; DROP TABLE x; --",
            "kv-cache",
            "ключ",
            &"t".repeat(49),
        ] {
            let message = error(&[url, ("table", table)]);
            assert!(
                message.starts_with("backend.db.table: expected a table name"),
                "{message}"
            );
        }
    }
}
