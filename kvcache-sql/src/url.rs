//! Database URLs: which database, where it is, what the driver gets, and which parts are secret.

use std::fmt;

use kvcache_core::{Error, Result};

/// The databases the backend speaks to, whether or not their cargo feature is enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Database {
    Postgres,
    Mysql,
    Sqlite,
}

impl Database {
    /// The database's name in messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Database::Postgres => "PostgreSQL",
            Database::Mysql => "MySQL",
            Database::Sqlite => "SQLite",
        }
    }

    /// The `kvcache` feature that compiles it in.
    pub(crate) fn feature(self) -> &'static str {
        match self {
            Database::Postgres => "sql-postgres",
            Database::Mysql => "sql-mysql",
            Database::Sqlite => "sql-sqlite",
        }
    }
}

/// Whose rules a URL follows: they differ on SQLite paths and driver names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rules {
    /// kvcache's `url`: `sqlite://PATH` takes the path as written.
    Kvcache,
    /// SQLAlchemy's, for `sqlalchemy.url` from an original configuration: `sqlite:///rel.db`
    /// is relative, `sqlite:////abs.db` absolute, and a driver may follow the scheme after `+`
    /// (`postgresql+psycopg2://`).
    SqlAlchemy,
}

/// A parsed `url` option. Neither its `Debug` nor its [`target`](DatabaseUrl::target) shows
/// the password; driver messages go through [`scrub`](DatabaseUrl::scrub).
#[derive(Clone)]
pub(crate) struct DatabaseUrl {
    database: Database,
    /// What the driver connects with: `mariadb://` becomes `mysql://`, `sqlite://` is stripped.
    connect: String,
    /// `PostgreSQL at 127.0.0.1:5432, database "test"`, or `SQLite file "kv.sqlite3"`.
    target: String,
    /// The password as written and percent-decoded, to cut out of driver messages.
    secrets: Vec<String>,
}

impl DatabaseUrl {
    /// Parses `text`, the value of the configuration key `key`, by `rules`.
    ///
    /// The error never repeats the URL: it may hold a password.
    pub(crate) fn parse(text: &str, key: &str, rules: Rules) -> Result<Self> {
        let text = text.trim();
        let expected = "expected a URL starting with postgres://, postgresql://, mysql://, \
                        mariadb:// or sqlite://";
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(Error::config(key, format!("{expected}; it has no `://`")));
        };
        let scheme = match rules {
            // `postgresql+psycopg2`: the driver is Python's business.
            Rules::SqlAlchemy => scheme.split_once('+').map_or(scheme, |(scheme, _)| scheme),
            Rules::Kvcache => scheme,
        };
        match scheme.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" => Ok(Self::server(
                Database::Postgres,
                format!("postgresql://{rest}"),
                rest,
                5432,
            )),
            "mysql" | "mariadb" => Ok(Self::server(
                Database::Mysql,
                format!("mysql://{rest}"),
                rest,
                3306,
            )),
            "sqlite" => match rules {
                Rules::Kvcache => Self::sqlite(rest, key),
                Rules::SqlAlchemy => Self::sqlalchemy_sqlite(rest, key),
            },
            _ => Err(Error::config(key, format!("{expected}, not `{scheme}://`"))),
        }
    }

    /// `scheme://[user[:password]@]host[:port][/database][?options]`.
    fn server(database: Database, connect: String, rest: &str, default_port: u16) -> Self {
        let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = before_query.split_once('/').unwrap_or((before_query, ""));
        let (userinfo, host_port) = authority.rsplit_once('@').unwrap_or(("", authority));
        let (host, port) = split_host_port(host_port);
        let host = if host.is_empty() { "localhost" } else { host };
        let port = port.map_or_else(|| default_port.to_string(), str::to_owned);
        let name = decode(path);
        let target = if name.is_empty() {
            format!("{} at {host}:{port}, default database", database.name())
        } else {
            format!("{} at {host}:{port}, database {name:?}", database.name())
        };
        let passwords = userinfo
            .split_once(':')
            .map(|(_, password)| password)
            .into_iter()
            .chain(
                query
                    .split('&')
                    .filter_map(|pair| pair.strip_prefix("password=")),
            );
        let secrets = passwords
            .flat_map(|password| [password.to_owned(), decode(password)])
            .filter(|secret| !secret.is_empty())
            .collect();
        DatabaseUrl {
            database,
            connect,
            target,
            secrets,
        }
    }

    /// `sqlite://PATH`: the path as written, relative to the working directory unless it starts
    /// with `/` (so `sqlite:///var/cache/kv.sqlite3` is absolute).
    fn sqlite(path: &str, key: &str) -> Result<Self> {
        if path.is_empty() {
            return Err(Error::config(
                key,
                "expected sqlite://PATH, with a file's path",
            ));
        }
        if path == ":memory:" || path.starts_with("file:") {
            return Err(Error::config(
                key,
                "expected sqlite://PATH with a file's path: an in-memory database or a `file:` \
                 URI would give each pooled connection a database of its own",
            ));
        }
        Ok(DatabaseUrl {
            database: Database::Sqlite,
            connect: path.to_owned(),
            target: format!("SQLite file {path:?}"),
            secrets: Vec::new(),
        })
    }

    /// `sqlite:///PATH` by SQLAlchemy's rule: what follows the third `/` is the path, so
    /// `sqlite:///kv.sqlite3` is relative and `sqlite:////var/cache/kv.sqlite3` absolute.
    fn sqlalchemy_sqlite(rest: &str, key: &str) -> Result<Self> {
        let forms = "SQLAlchemy's sqlite:///relative/path or sqlite:////absolute/path";
        if rest.contains('?') {
            return Err(Error::config(
                key,
                format!("expected {forms}, without options: options after `?` are not supported"),
            ));
        }
        match rest.strip_prefix('/') {
            Some(path) if !path.is_empty() && path != ":memory:" => Self::sqlite(path, key),
            None if !rest.is_empty() => Err(Error::config(
                key,
                format!("expected {forms}: a SQLite URL names no host"),
            )),
            _ => Err(Error::config(
                key,
                format!(
                    "expected {forms}: an in-memory database would give each pooled \
                     connection a database of its own"
                ),
            )),
        }
    }

    /// Which database it names.
    pub(crate) fn database(&self) -> Database {
        self.database
    }

    /// What the driver connects with. It may hold the password: never show it.
    pub(crate) fn connect(&self) -> &str {
        &self.connect
    }

    /// Where it points, for messages: database, host, port and database name, or the file.
    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    /// `message` with every form of the password replaced by `***`.
    pub(crate) fn scrub(&self, message: &str) -> String {
        self.secrets
            .iter()
            .fold(message.to_owned(), |message, secret| {
                message.replace(secret.as_str(), "***")
            })
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.target)
    }
}

/// `host:port`, `[v6]:port`, `host` or `[v6]`.
fn split_host_port(host_port: &str) -> (&str, Option<&str>) {
    let port_start = match host_port.rfind(']') {
        Some(end) => host_port[end..].find(':').map(|colon| end + colon),
        None => host_port.rfind(':'),
    };
    match port_start {
        Some(colon) => (&host_port[..colon], Some(&host_port[colon + 1..])),
        None => (host_port, None),
    }
}

/// Percent-decodes `text`; a `%` not followed by two hex digits stays as it is.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        });
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> DatabaseUrl {
        DatabaseUrl::parse(text, "backend.db.url", Rules::Kvcache).unwrap()
    }

    fn sqlalchemy(text: &str) -> Result<DatabaseUrl> {
        DatabaseUrl::parse(text, "backend.db.sqlalchemy.url", Rules::SqlAlchemy)
    }

    #[test]
    fn postgres_urls_name_host_port_and_database() {
        let url = parse("postgres://user:secret@db.example:6543/cache?sslmode=disable");
        assert_eq!(url.database(), Database::Postgres);
        assert_eq!(
            url.target(),
            r#"PostgreSQL at db.example:6543, database "cache""#
        );
        assert_eq!(
            url.connect(),
            "postgresql://user:secret@db.example:6543/cache?sslmode=disable"
        );
        let url = parse("postgresql://127.0.0.1/test");
        assert_eq!(
            url.target(),
            r#"PostgreSQL at 127.0.0.1:5432, database "test""#
        );
        let url = parse("postgresql://[::1]:5433");
        assert_eq!(url.target(), "PostgreSQL at [::1]:5433, default database");
        let url = parse("postgres:///test");
        assert_eq!(
            url.target(),
            r#"PostgreSQL at localhost:5432, database "test""#
        );
    }

    #[test]
    fn mariadb_urls_reach_the_driver_as_mysql_urls() {
        let url = parse("mariadb://root@127.0.0.1/test");
        assert_eq!(url.database(), Database::Mysql);
        assert_eq!(url.connect(), "mysql://root@127.0.0.1/test");
        assert_eq!(url.target(), r#"MySQL at 127.0.0.1:3306, database "test""#);
    }

    #[test]
    fn sqlite_urls_are_paths() {
        let url = parse("sqlite:///var/cache/kv.sqlite3");
        assert_eq!(url.database(), Database::Sqlite);
        assert_eq!(url.connect(), "/var/cache/kv.sqlite3");
        assert_eq!(url.target(), r#"SQLite file "/var/cache/kv.sqlite3""#);
        assert_eq!(parse("sqlite://kv.sqlite3").connect(), "kv.sqlite3");
    }

    #[test]
    fn sqlalchemy_sqlite_urls_have_a_third_slash_before_the_path() {
        let relative = sqlalchemy("sqlite:///kv.sqlite3").unwrap();
        assert_eq!(relative.database(), Database::Sqlite);
        assert_eq!(relative.connect(), "kv.sqlite3");
        assert_eq!(relative.target(), r#"SQLite file "kv.sqlite3""#);
        let absolute = sqlalchemy("sqlite:////var/cache/kv.sqlite3").unwrap();
        assert_eq!(absolute.connect(), "/var/cache/kv.sqlite3");
        assert_eq!(
            sqlalchemy("sqlite+pysqlite:///cache/kv.sqlite3")
                .unwrap()
                .connect(),
            "cache/kv.sqlite3"
        );
    }

    #[test]
    fn sqlalchemy_urls_may_name_a_driver() {
        let url = sqlalchemy("postgresql+psycopg2://user:secret@db.example/cache").unwrap();
        assert_eq!(url.database(), Database::Postgres);
        assert_eq!(url.connect(), "postgresql://user:secret@db.example/cache");
        let url = sqlalchemy("mysql+pymysql://root@127.0.0.1/test").unwrap();
        assert_eq!(url.database(), Database::Mysql);
        assert_eq!(url.connect(), "mysql://root@127.0.0.1/test");
        let error = DatabaseUrl::parse("postgresql+psycopg2://h/db", "url", Rules::Kvcache);
        assert!(error.is_err(), "kvcache's `url` names no driver");
    }

    #[test]
    fn bad_sqlalchemy_sqlite_urls_show_the_two_forms() {
        for (text, reason) in [
            ("sqlite://kv.sqlite3", "names no host"),
            ("sqlite://", "in-memory"),
            ("sqlite:///", "in-memory"),
            ("sqlite:///:memory:", "in-memory"),
            ("sqlite:///kv.sqlite3?timeout=5", "options after `?`"),
        ] {
            let error = sqlalchemy(text).unwrap_err().to_string();
            assert!(
                error.starts_with(
                    "backend.db.sqlalchemy.url: expected SQLAlchemy's sqlite:///relative/path \
                     or sqlite:////absolute/path"
                ) && error.contains(reason),
                "{text}: {error}"
            );
        }
    }

    #[test]
    fn bad_urls_are_config_errors_that_never_repeat_the_url() {
        for text in [
            "ftp://user:secret@host/db",
            "user:secret@host/db",
            "sqlite://",
            "sqlite://:memory:",
            "sqlite://file:kv?mode=memory",
        ] {
            let error = DatabaseUrl::parse(text, "backend.db.url", Rules::Kvcache)
                .unwrap_err()
                .to_string();
            assert!(error.starts_with("backend.db.url: expected"), "{error}");
            assert!(
                !error.contains("secret") && !error.contains("kv?"),
                "{error}"
            );
        }
    }

    #[test]
    fn passwords_are_scrubbed_in_every_form() {
        let url = parse("postgres://user:p%40ss%zz@host/db?password=other");
        let message = "bad token \"p%40ss%zz\", user p@ss%zz, password other";
        assert_eq!(
            url.scrub(message),
            "bad token \"***\", user ***, password ***"
        );
        assert!(!format!("{url:?}").contains("p%40ss"));
        assert_eq!(parse("mysql://root@host/db").scrub("root"), "root");
    }
}
