//! The `kvcache` command end to end: the built binary run on real backends (a file in a
//! temporary directory, Redis and PostgreSQL on loopback), populated through the library first.
//!
//! A test that needs a server it cannot reach prints a notice and passes, except with `CI=true`,
//! where that is a failure. The servers are `KVCACHE_TEST_REDIS_URL`
//! (`redis://127.0.0.1:6379`) and `KVCACHE_TEST_POSTGRES_URL`
//! (`postgres://postgres@127.0.0.1:5432/test`), as for the other crates' tests.

// Each backend's test is behind its feature; the helpers serve whichever are on.
#![cfg_attr(
    not(all(feature = "file", feature = "redis", feature = "sql-postgres")),
    allow(dead_code, unused_imports)
)]

use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kvcache::{Config, KvCache};
use serde_json::Value;

/// The command's result: exit code, stdout, stderr.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.stdout))
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `kvcache ARGS` with `--config config` (when given) and no `KVCACHE_CONFIG`.
fn kvcache(config: Option<&Path>, args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kvcache"));
    command.env_remove("KVCACHE_CONFIG");
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = command.args(args).output().expect("run kvcache");
    use std::os::unix::process::ExitStatusExt;
    Run {
        // Killed by a signal: its number, negated.
        code: status
            .code()
            .unwrap_or_else(|| -status.signal().unwrap_or_default()),
        stdout: String::from_utf8(stdout).expect("UTF-8 on stdout"),
        stderr: String::from_utf8(stderr).expect("UTF-8 on stderr"),
    }
}

/// Asserts that `run` exited with `code`.
#[track_caller]
fn exits(run: &Run, code: i32) {
    assert_eq!(run.code, code, "{run:?}");
}

/// A name no other run uses.
fn unique(what: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{what}_{}_{nanos}", std::process::id())
}

/// Writes `text` to `name` in `dir`.
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a configuration");
    path
}

/// The URL in `var` (or `default`) when its server answers on TCP; else a notice and `None`,
/// or a failure with `CI=true`.
fn service(var: &str, default: &str) -> Option<String> {
    let url = std::env::var(var).unwrap_or_else(|_| default.to_owned());
    let authority = url
        .split_once("://")
        .map_or("", |(_, rest)| rest.split(['/', '?']).next().unwrap_or(""));
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let reachable = host_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut addresses| addresses.next())
        .is_some_and(|address| {
            TcpStream::connect_timeout(&address, Duration::from_secs(2)).is_ok()
        });
    if reachable {
        return Some(url);
    }
    let notice = format!("{var}: nothing answers at {host_port:?}");
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{notice} (and CI=true)"
    );
    eprintln!("SKIPPED: {notice}; set {var} or start the server to run this test");
    None
}

/// A loopback port nothing listens on (it was free a moment ago).
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

/// A value type the command does not know: shown as a hex preview.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Point {
    x: i32,
    y: i32,
}

/// Stores the entries every backend's test reads, through the library, on the configuration at
/// `config`: `greeting` (strings, expiring in an hour), `counts` (`u64`, no expiry), `points`
/// (a struct) and `short` (expiring within 50 ms).
fn populate(config: &Path) -> KvCache {
    let cache = KvCache::new(Config::from_toml_file(config).expect("parse")).expect("build");
    let greeting = cache.container::<String>("greeting").unwrap();
    for name in ["Peter", "Paul", "Mary", "Pam"] {
        greeting.set(name, &format!("Hello {name}!")).unwrap();
    }
    let counts = cache.container::<u64>("counts").unwrap();
    counts.set("visits", &42).unwrap();
    let points = cache.container::<Point>("points").unwrap();
    points.set("origin", &Point { x: 3, y: -4 }).unwrap();
    let short = cache.container::<String>("short").unwrap();
    short.set("soon", &"gone".to_owned()).unwrap();
    short.set("sooner", &"gone".to_owned()).unwrap();
    cache
}

/// The containers `populate` writes, on the backend `backend`, as TOML.
fn containers_on(backend: &str) -> String {
    format!(
        r#"
[container.greeting]
backend = "{backend}"
expire = "1h"

[container.counts]
backend = "{backend}"

[container.points]
backend = "{backend}"

[container.short]
backend = "{backend}"
expire = "50 milliseconds"
"#
    )
}

/// The summary of `container` in `stats --json`'s answer.
fn summary<'a>(stats: &'a Value, container: &str) -> &'a Value {
    stats["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["container"] == container)
        .unwrap_or_else(|| panic!("no {container} in {stats:#}"))
}

/// What every backend's test checks, once `populate` ran on `config` (whose backend is
/// `backend`): stats, keys, get, remove, clear, purge, human and JSON.
fn exercise(config: &Path, backend: &str, purges: bool) {
    let check = kvcache(Some(config), &["check"]);
    exits(&check, 0);
    assert!(
        check.stdout.contains(&format!("backend {backend} ("))
            && check.stdout.contains("reachable"),
        "{check:?}"
    );

    // stats: entries, bytes and expiry, per container.
    let stats = kvcache(Some(config), &["--json", "stats"]);
    exits(&stats, 0);
    let stats = stats.json();
    let greeting = summary(&stats, "greeting");
    assert_eq!(greeting["entries"], 4, "{stats:#}");
    assert_eq!(greeting["backend"], backend);
    // Each value: the 9-byte header, a length byte, "Hello NAME!".
    let bytes: u64 = ["Peter", "Paul", "Mary", "Pam"]
        .iter()
        .map(|name| 9 + 1 + 7 + name.len() as u64)
        .sum();
    assert_eq!(greeting["bytes"], bytes);
    assert_eq!(greeting["without_expiry"], 0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let oldest = greeting["oldest_expiry"].as_u64().expect("an expiry");
    let newest = greeting["newest_expiry"].as_u64().expect("an expiry");
    assert!(
        oldest <= newest && newest <= now + 3_600_000 && oldest > now + 3_500_000,
        "{greeting:#}"
    );
    assert!(
        greeting["oldest_expiry_rfc3339"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    let counts = summary(&stats, "counts");
    assert_eq!(counts["entries"], 1);
    assert_eq!(counts["without_expiry"], 1);
    assert_eq!(counts["oldest_expiry"], Value::Null);
    let human = kvcache(Some(config), &["stats", "greeting", "counts"]);
    exits(&human, 0);
    let lines: Vec<&str> = human.stdout.lines().collect();
    assert!(
        lines[0].starts_with("CONTAINER") && lines[0].contains("ENTRIES"),
        "{human:?}"
    );
    assert!(
        lines[1].starts_with("greeting") && lines[1].contains("in 59m")
            || lines[1].contains("in 1h"),
        "{human:?}"
    );

    // keys: sorted, by prefix, limited.
    let keys = kvcache(Some(config), &["keys", "greeting"]);
    exits(&keys, 0);
    assert_eq!(keys.stdout, "Mary\nPam\nPaul\nPeter\n");
    let keys = kvcache(Some(config), &["keys", "greeting", "--prefix", "Pa"]);
    assert_eq!(keys.stdout, "Pam\nPaul\n", "{keys:?}");
    let keys = kvcache(
        Some(config),
        &["--json", "keys", "greeting", "--limit", "2"],
    );
    exits(&keys, 0);
    assert_eq!(keys.json()["keys"].as_array().unwrap().len(), 2, "{keys:?}");

    // get: size, expiry, format and fingerprint, and the value.
    let get = kvcache(Some(config), &["get", "greeting", "Peter"]);
    exits(&get, 0);
    for expected in [
        "size       22 bytes",
        "format     2",
        "type       String (fingerprint 08658207b516bf54)",
        "value      \"Hello Peter!\"",
    ] {
        assert!(get.stdout.contains(expected), "{expected:?} in {get:?}");
    }
    let get = kvcache(Some(config), &["--json", "get", "greeting", "Peter"]).json();
    assert_eq!(get["type"], "String");
    assert_eq!(get["value"], "\"Hello Peter!\"");
    assert_eq!(get["fingerprint"], "08658207b516bf54");
    assert_eq!(get["size"], 22);
    assert_eq!(get["stamp"], Value::Null, "an unstamped value");
    assert!(get["expires_at"].as_u64().unwrap() > now);
    let get = kvcache(Some(config), &["--json", "get", "counts", "visits"]).json();
    assert_eq!(get["value"], "42");
    assert_eq!(get["type"], "u64 or usize");
    assert_eq!(get["expires_at"], Value::Null);
    let get = kvcache(Some(config), &["get", "points", "origin"]);
    exits(&get, 0);
    assert!(
        get.stdout.contains("type       not one this command knows"),
        "{get:?}"
    );
    // x = 3, y = -4 as zigzag varints.
    assert!(get.stdout.contains("body       2 bytes: 06 07"), "{get:?}");

    // A key that is not there: exit 3, for get and remove.
    let missing = kvcache(Some(config), &["get", "greeting", "Nobody"]);
    exits(&missing, 3);
    assert!(
        missing
            .stderr
            .contains("key \"Nobody\" is not in container \"greeting\""),
        "{missing:?}"
    );
    let missing = kvcache(Some(config), &["--json", "get", "greeting", "Nobody"]);
    exits(&missing, 3);
    assert_eq!(missing.json()["exit_code"], 3);
    exits(&kvcache(Some(config), &["remove", "greeting", "Nobody"]), 3);

    // remove, then it is gone.
    let removed = kvcache(Some(config), &["remove", "greeting", "Peter"]);
    exits(&removed, 0);
    assert!(
        removed.stdout.contains("removed key \"Peter\""),
        "{removed:?}"
    );
    exits(&kvcache(Some(config), &["get", "greeting", "Peter"]), 3);

    // Expired entries: not entries, counted apart until a purge where the backend keeps them.
    std::thread::sleep(Duration::from_millis(120));
    let stats = kvcache(Some(config), &["--json", "stats", "short"]).json();
    let short = summary(&stats, "short");
    assert_eq!(short["entries"], 0, "{stats:#}");
    if purges {
        assert_eq!(short["expired"], 2, "{stats:#}");
    }
    exits(&kvcache(Some(config), &["get", "short", "soon"]), 3);
    let purge = kvcache(Some(config), &["purge"]);
    exits(&purge, 0);
    assert!(
        purge
            .stdout
            .contains(&format!("backend {backend}: expired entries deleted"))
    );
    if purges {
        let stats = kvcache(Some(config), &["--json", "stats", "short"]).json();
        assert_eq!(summary(&stats, "short")["expired"], 0, "{stats:#}");
    }

    // clear: that container only.
    let cleared = kvcache(Some(config), &["clear", "greeting"]);
    exits(&cleared, 0);
    let stats = kvcache(Some(config), &["--json", "stats", "greeting", "counts"]).json();
    assert_eq!(summary(&stats, "greeting")["entries"], 0);
    assert_eq!(summary(&stats, "counts")["entries"], 1);
}

#[cfg(feature = "file")]
#[test]
fn a_file_cache_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kv.sqlite3");
    let config = write(
        dir.path(),
        "kvcache.toml",
        &format!(
            "[backend.disk]\nkind = \"file\"\npath = {:?}\n{}",
            file.display().to_string(),
            containers_on("disk")
        ),
    );
    let cache = populate(&config);
    // A container the configuration below no longer declares.
    let old_config = write(
        dir.path(),
        "old.toml",
        &format!(
            "[backend.disk]\nkind = \"file\"\npath = {:?}\n[container.retired]\nbackend = \"disk\"\n",
            file.display().to_string()
        ),
    );
    let old = KvCache::new(Config::from_toml_file(&old_config).unwrap()).unwrap();
    old.container::<String>("retired")
        .unwrap()
        .set("k", &"v".to_owned())
        .unwrap();
    drop((cache, old));

    exercise(&config, "disk", true);

    let stats = kvcache(Some(&config), &["--json", "stats"]).json();
    let retired = summary(&stats, "retired");
    assert_eq!(retired["declared"], false, "{stats:#}");
    assert_eq!(retired["entries"], 1);
    let human = kvcache(Some(&config), &["stats"]);
    assert!(human.stdout.contains("retired (undeclared)"), "{human:?}");

    // The same configuration as flat lines.
    let flat = write(
        dir.path(),
        "kvcache.conf",
        &format!(
            "# the original's form\nbackend.disk = file\nbackend.disk.path = {}\ncontainer.counts.backend = disk\n",
            file.display()
        ),
    );
    let get = kvcache(Some(&flat), &["--json", "get", "counts", "visits"]);
    exits(&get, 0);
    assert_eq!(get.json()["value"], "42");
}

#[cfg(feature = "file")]
#[test]
fn a_stamped_value_shows_its_refresh_and_until_when_it_serves() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kv.sqlite3");
    let config = write(
        dir.path(),
        "kvcache.toml",
        &format!(
            r#"[backend.disk]
kind = "file"
path = {:?}

[container.fresh]
backend = "disk"
expire = "1h"
refresh = "10m"

[container.flaky]
backend = "disk"
expire = "1h"
cache_errors = "30s"
"#,
            file.display().to_string()
        ),
    );
    let cache = KvCache::new(Config::from_toml_file(&config).unwrap()).unwrap();
    cache
        .register_generator("fresh", |key: &str| format!("Hello {key}!"))
        .unwrap();
    cache
        .register_fallible_generator("flaky", |key: &str| {
            Err::<String, _>(std::io::Error::other(format!("upstream down for {key}")))
        })
        .unwrap();
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let fresh = cache.container::<String>("fresh").unwrap();
    assert_eq!(fresh.get("Ann").unwrap(), "Hello Ann!");
    let flaky = cache.container::<String>("flaky").unwrap();
    assert!(flaky.get("Bob").is_err());
    drop((fresh, flaky, cache));

    let get = kvcache(Some(&config), &["get", "fresh", "Ann"]);
    exits(&get, 0);
    let line = |label: &str| {
        get.stdout
            .lines()
            .find(|line| line.starts_with(&format!("{label} ")))
            .unwrap_or_else(|| panic!("no {label:?} line in {get:?}"))
            .to_owned()
    };
    let refresh = line("refresh");
    assert!(
        refresh.contains("(in 9m") || refresh.contains("(in 10m)"),
        "{get:?}"
    );
    let serves = line("serves until");
    assert!(
        serves.contains("(in 59m") || serves.contains("(in 1h)"),
        "{get:?}"
    );
    // Without stale_if_error, the entry leaves the store when it expires.
    assert!(!serves.contains("generator fails"), "{get:?}");
    assert!(line("generated in").ends_with("ms"), "{get:?}");
    assert!(line("format").ends_with(" 2, stamped"), "{get:?}");
    assert!(
        line("type").contains("String (fingerprint 08658207b516bf54)"),
        "{get:?}"
    );
    assert!(line("value").ends_with(" \"Hello Ann!\""), "{get:?}");
    assert!(!get.stdout.contains("retry"), "{get:?}");

    let json = kvcache(Some(&config), &["--json", "get", "fresh", "Ann"]).json();
    let stamp = &json["stamp"];
    let refresh_at = stamp["refresh_at"].as_u64().expect("a refresh time");
    let expires_at = stamp["expires_at"].as_u64().expect("an expiry");
    assert!(
        (before + 600_000..before + 610_000).contains(&refresh_at),
        "{json:#}"
    );
    assert_eq!(expires_at - refresh_at, 3_000_000, "{json:#}");
    assert!(stamp["refresh_at_rfc3339"].as_str().unwrap().ends_with('Z'));
    assert_eq!(stamp["retry_at"], Value::Null);
    assert_eq!(stamp["failure"], Value::Null);
    assert!(stamp["took_ms"].is_u64(), "{json:#}");
    assert_eq!(json["value"], "\"Hello Ann!\"");
    assert_eq!(json["format"], 2);

    // A remembered failure: its message, no value.
    let get = kvcache(Some(&config), &["get", "flaky", "Bob"]);
    exits(&get, 0);
    assert!(
        get.stdout
            .contains("failure          \"upstream down for Bob\""),
        "{get:?}"
    );
    assert!(get.stdout.contains("remembered until "), "{get:?}");
    assert!(!get.stdout.contains("value "), "{get:?}");
    let json = kvcache(Some(&config), &["--json", "get", "flaky", "Bob"]).json();
    assert_eq!(
        json["stamp"]["failure"], "upstream down for Bob",
        "{json:#}"
    );
    assert_eq!(json["value"], Value::Null);
    assert!(json["stamp"]["expires_at"].as_u64().unwrap() <= before + 40_000);
}

/// Clears the containers `populate` writes when dropped, even when the test panics: the
/// servers outlive the test.
struct Cleared<'a>(&'a Path);

impl Drop for Cleared<'_> {
    fn drop(&mut self) {
        for container in ["greeting", "counts", "points", "short"] {
            let _ = kvcache(Some(self.0), &["clear", container]);
        }
    }
}

#[cfg(feature = "redis")]
#[test]
fn a_redis_cache_end_to_end() {
    let Some(url) = service("KVCACHE_TEST_REDIS_URL", "redis://127.0.0.1:6379") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // A prefix of this run's own: the server is shared.
    let prefix = unique("kvcli");
    let config = write(
        dir.path(),
        "kvcache.toml",
        &format!(
            "[backend.shared]\nkind = \"redis\"\nurl = {url:?}\nprefix = {prefix:?}\n{}",
            containers_on("shared")
        ),
    );
    let _cleared = Cleared(&config);
    drop(populate(&config));
    exercise(&config, "shared", false);
    // The walk over the prefix finds every container, and none undeclared.
    let stats = kvcache(Some(&config), &["--json", "stats"]).json();
    assert_eq!(summary(&stats, "points")["entries"], 1, "{stats:#}");
    assert!(
        stats["containers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|row| row["declared"] == true),
        "{stats:#}"
    );
}

#[cfg(feature = "sql-postgres")]
#[test]
fn a_postgres_cache_end_to_end() {
    let Some(url) = service(
        "KVCACHE_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // One table for every run, emptied before and after.
    let config = write(
        dir.path(),
        "kvcache.toml",
        &format!(
            "[backend.db]\nkind = \"sql\"\nurl = {url:?}\ntable = \"kvcache_cli_test\"\n{}",
            containers_on("db")
        ),
    );
    drop(Cleared(&config));
    let _cleared = Cleared(&config);
    drop(populate(&config));
    exercise(&config, "db", true);
}

#[cfg(feature = "sql-mysql")]
#[test]
fn a_mariadb_cache_end_to_end() {
    let Some(url) = service("KVCACHE_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "kvcache.toml",
        &format!(
            "[backend.db]\nkind = \"sql\"\nurl = {url:?}\ntable = \"kvcache_cli_test\"\n{}",
            containers_on("db")
        ),
    );
    drop(Cleared(&config));
    let _cleared = Cleared(&config);
    drop(populate(&config));
    exercise(&config, "db", true);
}

#[cfg(feature = "sql-sqlite")]
#[test]
fn an_sql_sqlite_cache_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sql.sqlite3");
    let config = write(
        dir.path(),
        "kvcache.toml",
        &format!(
            "[backend.db]\nkind = \"sql\"\nurl = \"sqlite://{}\"\n{}",
            file.display(),
            containers_on("db")
        ),
    );
    drop(populate(&config));
    exercise(&config, "db", true);
}

#[test]
fn every_verb_has_help_with_the_exit_codes() {
    for verb in [
        None,
        Some("check"),
        Some("stats"),
        Some("keys"),
        Some("get"),
        Some("remove"),
        Some("clear"),
        Some("purge"),
    ] {
        let mut args: Vec<&str> = verb.into_iter().collect();
        args.push("--help");
        let help = kvcache(None, &args);
        exits(&help, 0);
        assert!(
            help.stdout.contains("Exit codes:") && help.stdout.contains("4  not supported"),
            "{help:?}"
        );
    }
    let usage = kvcache(None, &["get", "only-a-container"]);
    exits(&usage, 2);
    assert!(usage.stderr.contains("KEY"), "{usage:?}");
}

#[test]
fn a_missing_or_bad_configuration_is_exit_2_naming_what_and_where() {
    let none = kvcache(None, &["check"]);
    exits(&none, 2);
    assert!(
        none.stderr
            .contains("pass --config PATH or set KVCACHE_CONFIG"),
        "{none:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere.toml");
    let run = kvcache(Some(&missing), &["stats"]);
    exits(&run, 2);
    assert!(
        run.stderr.contains("nowhere.toml")
            && run.stderr.contains("cannot read the configuration file"),
        "{run:?}"
    );
    let run = kvcache(Some(&missing), &["--json", "stats"]);
    exits(&run, 2);
    assert!(
        run.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nowhere.toml")
    );

    // Through the environment, as the help says.
    let typo = write(
        dir.path(),
        "typo.toml",
        "[backend.mem]\nkind = \"variable\"\n[container.c]\nbackend = \"mem\"\nexpires = \"1h\"\n",
    );
    let output = Command::new(env!("CARGO_BIN_EXE_kvcache"))
        .env("KVCACHE_CONFIG", &typo)
        .arg("check")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("container.c.expires: unknown container setting"),
        "{stderr}"
    );

    let broken = write(dir.path(), "broken.toml", "[backend.mem\nkind = 1\n");
    let run = kvcache(Some(&broken), &["check"]);
    exits(&run, 2);
    assert!(run.stderr.contains("is not valid TOML"), "{run:?}");

    let flat = write(
        dir.path(),
        "flat.conf",
        "backend.mem = variable\nnonsense\n",
    );
    let run = kvcache(Some(&flat), &["check"]);
    exits(&run, 2);
    assert!(
        run.stderr
            .contains("flat.conf, line 2: expected `key = value`"),
        "{run:?}"
    );

    let undeclared = write(
        dir.path(),
        "undeclared.conf",
        "container.c.backend = nowhere\n",
    );
    let run = kvcache(Some(&undeclared), &["check"]);
    exits(&run, 2);
    assert!(
        run.stderr
            .contains("container.c.backend: names the backend \"nowhere\", which is not declared"),
        "{run:?}"
    );

    let unknown_kind = write(dir.path(), "kind.conf", "backend.b = nosuchkind\n");
    let run = kvcache(Some(&unknown_kind), &["check"]);
    exits(&run, 2);
    assert!(
        run.stdout.contains("unknown backend kind \"nosuchkind\""),
        "{run:?}"
    );

    let memory = write(
        dir.path(),
        "memory.conf",
        "backend.mem = variable\ncontainer.c.backend = mem\n",
    );
    let run = kvcache(Some(&memory), &["get", "other", "k"]);
    exits(&run, 2);
    assert!(
        run.stderr
            .contains("there is no container \"other\" (known containers: c)"),
        "{run:?}"
    );
}

#[cfg(feature = "variable")]
#[test]
fn an_in_memory_backend_is_unsupported_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let memory = write(
        dir.path(),
        "memory.conf",
        "backend.mem = variable\ncontainer.c.backend = mem\n",
    );
    for args in [
        &["keys", "c"][..],
        &["get", "c", "k"],
        &["remove", "c", "k"],
        &["clear", "c"],
        &["stats", "c"],
    ] {
        let run = kvcache(Some(&memory), args);
        exits(&run, 4);
        assert!(
            run.stderr.contains("is not supported by this backend")
                && run
                    .stderr
                    .contains("in the memory of each process that uses it"),
            "{args:?}: {run:?}"
        );
    }
    // Listed by `check` and `stats` without failing them.
    exits(&kvcache(Some(&memory), &["check"]), 0);
    let stats = kvcache(Some(&memory), &["--json", "stats"]);
    exits(&stats, 0);
    assert!(
        summary(&stats.json(), "c")["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not supported")
    );
}

#[cfg(feature = "redis")]
#[test]
fn an_unreachable_backend_is_exit_1_naming_it_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let port = closed_port();
    let config = write(
        dir.path(),
        "gone.conf",
        &format!(
            "backend.gone = redis\nbackend.gone.url = redis://127.0.0.1:{port}\n\
             backend.gone.connect_timeout = 1s\ncontainer.c.backend = gone\n"
        ),
    );
    let check = kvcache(Some(&config), &["check"]);
    exits(&check, 1);
    assert!(
        check.stdout.contains(&format!(
            "backend gone (redis): unreachable: backend \"gone\" is unavailable: cannot reach redis at 127.0.0.1:{port} (connection refused)"
        )),
        "{check:?}"
    );
    let check = kvcache(Some(&config), &["--json", "check"]).json();
    assert_eq!(check["ok"], false);
    assert_eq!(check["backends"][0]["status"], "unreachable");
    for args in [
        &["get", "c", "k"][..],
        &["stats"],
        &["purge"],
        &["clear", "c"],
    ] {
        let run = kvcache(Some(&config), args);
        exits(&run, 1);
        assert!(
            run.stderr.contains("connection refused"),
            "{args:?}: {run:?}"
        );
    }
}
