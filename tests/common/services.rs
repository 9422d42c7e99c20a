//! The loopback services the facade's tests share, and backends of their own on them.

use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A configuration, as `(key, value)` pairs.
pub type Pairs = Vec<(String, String)>;

/// A name no other test, run or process used, fit for a table or a key prefix: `label`, the
/// process id and the time.
pub fn unique(label: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{label}{}x{}",
        std::process::id(),
        nanos % 1_000_000_000_000
    )
}

/// Whether `service` answers at `address`; when not, prints a notice, or fails under `CI=true`.
pub fn reachable(service: &str, address: &str) -> bool {
    let up = TcpStream::connect_timeout(&address.parse().unwrap(), Duration::from_secs(1)).is_ok();
    if !up {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{service} at {address} is unreachable (and CI=true)"
        );
        eprintln!("skipped: {service} at {address} is unreachable");
    }
    up
}

/// The configuration of backend `name` of `kind` (`redis`, `postgres`, `mariadb`, `file`,
/// `sql-sqlite`) on a prefix, a table or a file of its own in `dir`, or `None` when its service
/// cannot be reached (see [`reachable`]).
pub fn shared_backend(name: &str, kind: &str, dir: &Path) -> Option<Pairs> {
    let unique = unique(label(kind));
    let options: Vec<(&str, String)> = match kind {
        "redis" => {
            if !reachable("Redis", "127.0.0.1:6379") {
                return None;
            }
            vec![
                ("", "redis".into()),
                ("url", "redis://127.0.0.1:6379".into()),
                ("prefix", unique),
            ]
        }
        "postgres" => {
            if !reachable("PostgreSQL", "127.0.0.1:5432") {
                return None;
            }
            vec![
                ("", "sql".into()),
                ("url", "postgres://postgres@127.0.0.1:5432/test".into()),
                ("table", unique),
            ]
        }
        "mariadb" => {
            if !reachable("MariaDB", "127.0.0.1:3306") {
                return None;
            }
            vec![
                ("", "sql".into()),
                ("url", "mysql://root@127.0.0.1:3306/test".into()),
                ("table", unique),
            ]
        }
        "file" => vec![
            ("", "file".into()),
            ("path", dir.join("cache.sqlite3").display().to_string()),
        ],
        "sql-sqlite" => vec![
            ("", "sql".into()),
            (
                "url",
                format!("sqlite://{}", dir.join("sql.sqlite3").display()),
            ),
        ],
        other => panic!("unknown backend {other}"),
    };
    Some(
        options
            .into_iter()
            .map(|(option, value)| {
                let key = match option {
                    "" => format!("backend.{name}"),
                    option => format!("backend.{name}.{option}"),
                };
                (key, value)
            })
            .collect(),
    )
}

/// A table-safe label of a backend kind.
fn label(kind: &str) -> &'static str {
    match kind {
        "redis" => "redis",
        "postgres" => "pg",
        "mariadb" => "maria",
        _ => "local",
    }
}

/// A configuration as `key=value` lines, to hand to another process in its environment.
pub fn to_lines(config: &[(String, String)]) -> String {
    config
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The configuration [`to_lines`] wrote.
pub fn from_lines(text: &str) -> Pairs {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}
