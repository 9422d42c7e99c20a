//! Faults: an unreachable server, passwords, a server that restarts, and a Unix socket; on a
//! `redis-server` each test starts itself on a free port.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{Server, config, everything_shown, free_port, raw, sync_store};
use kvcache_core::{Backend, Error, testkit};
use kvcache_redis::{RedisBackend, RedisConfig};

/// Builds the backend `url` names, expecting an error within `connect_timeout` and some slack.
fn open_fails(url: &str, connect_timeout: Duration) -> Error {
    let start = Instant::now();
    let error = RedisConfig::new(url)
        .connect_timeout(connect_timeout)
        .open()
        .expect_err("an unreachable server is an error");
    let took = start.elapsed();
    assert!(
        took < connect_timeout + Duration::from_secs(1),
        "the error took {took:?}"
    );
    error
}

#[test]
fn an_unreachable_server_is_an_error_naming_host_and_port_without_the_password() {
    let port = free_port();
    let url = format!("redis://:secret-password@127.0.0.1:{port}/0");
    let error = open_fails(&url, Duration::from_secs(1));
    let shown = everything_shown(&error);
    assert!(
        matches!(error, Error::Backend { .. } | Error::Unavailable { .. }),
        "{shown}"
    );
    assert!(
        error.to_string().contains(&format!("127.0.0.1:{port}")),
        "{error}"
    );
    assert!(!shown.contains("secret-password"), "{shown}");
    let config = RedisConfig::new(&url);
    assert!(
        !format!("{config:?}").contains("secret-password"),
        "{config:?}"
    );

    // The same through a configuration.
    let error = kvcache_core::init([
        ("backend.shared", "redis"),
        ("backend.shared.url", url.as_str()),
        ("backend.shared.connect_timeout", "1s"),
    ])
    .expect_err("an unreachable server is an error");
    let shown = everything_shown(&error);
    assert!(
        error.to_string().contains("\"shared\""),
        "names the backend: {error}"
    );
    assert!(
        error.to_string().contains(&format!("127.0.0.1:{port}")),
        "{error}"
    );
    assert!(!shown.contains("secret-password"), "{shown}");
}

#[test]
fn a_server_that_never_answers_fails_within_the_connect_timeout() {
    // TEST-NET-1 (RFC 5737): routed nowhere, so a connect either hangs or fails at once.
    let error = open_fails(
        "redis://:secret-password@192.0.2.1:6379",
        Duration::from_millis(300),
    );
    assert!(error.to_string().contains("192.0.2.1:6379"), "{error}");
    assert!(!everything_shown(&error).contains("secret-password"));
}

#[test]
fn a_missing_socket_is_an_error_naming_its_path() {
    let error = open_fails(
        "redis+unix:///nonexistent/kvcache/redis.sock",
        Duration::from_secs(1),
    );
    assert!(
        error
            .to_string()
            .contains("unix socket /nonexistent/kvcache/redis.sock"),
        "{error}"
    );
}

#[test]
fn passwords_never_appear_in_errors_or_debug_output() {
    let Some(server) = Server::start(&["--requirepass", "right-password"]) else {
        return;
    };
    let wrong = format!("redis://:wrong-password@127.0.0.1:{}", server.port);
    let error = open_fails(&wrong, Duration::from_secs(2));
    let shown = everything_shown(&error);
    assert!(
        error
            .to_string()
            .contains(&format!("127.0.0.1:{}", server.port)),
        "{error}"
    );
    assert!(shown.contains("authentication failed"), "says why: {shown}");
    assert!(!shown.contains("wrong-password"), "{shown}");
    let missing = open_fails(&server.url(), Duration::from_secs(2));
    assert!(
        everything_shown(&missing).contains("NOAUTH"),
        "says why: {missing:?}"
    );

    for url in [
        format!("redis://:right-password@127.0.0.1:{}", server.port),
        format!("redis://default:right-password@127.0.0.1:{}/0", server.port),
        format!(
            "redis+unix://{}?pass=right-password",
            server.socket().display()
        ),
    ] {
        let backend = RedisConfig::new(&url).open().expect("the right password");
        let store = sync_store(&backend, "c");
        store.store("k", b"v", None).unwrap();
        assert_eq!(store.retrieve("k").unwrap().as_deref(), Some(&b"v"[..]));
        assert!(
            !format!("{backend:?}").contains("right-password"),
            "{backend:?}"
        );
        let cache = kvcache_core::init([
            ("backend.shared", "redis"),
            ("backend.shared.url", url.as_str()),
        ])
        .expect("the right password through a configuration");
        assert!(
            !format!("{cache:?}").contains("right-password"),
            "{cache:?}"
        );
    }
}

/// The timeouts of the outage tests: short, so that a bound is visibly kept.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);
/// What a bound may be exceeded by on a loaded machine: scheduling, not waiting.
const SLACK: Duration = Duration::from_millis(300);

/// A backend on `server` with the outage tests' timeouts.
fn outage_backend(server: &Server) -> RedisBackend {
    config(&server.url(), "outage")
        .connect_timeout(CONNECT_TIMEOUT)
        .command_timeout(COMMAND_TIMEOUT)
        .open()
        .unwrap()
}

/// The connections the server has, this test's plain one left out.
fn clients(server: &Server) -> usize {
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query(&mut raw(&server.url()))
        .unwrap();
    let line = info
        .lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .unwrap();
    line.trim().parse::<usize>().unwrap() - 1
}

/// Checks that `error`, of a call that took `took`, came within the command timeout and says
/// what and where; `path` and `what` name the call in messages.
fn check_outage_error(server: &Server, path: &str, what: &str, error: &Error, took: Duration) {
    eprintln!("outage, {path} path: {what} failed after {took:?}: {error}");
    assert!(
        took < COMMAND_TIMEOUT + SLACK,
        "{path} path: {what} took {took:?}"
    );
    assert!(
        matches!(error, Error::Backend { .. } | Error::Unavailable { .. }),
        "{error:?}"
    );
    let shown = error.to_string();
    assert!(
        shown.contains(&format!("redis at 127.0.0.1:{}", server.port)),
        "{shown}"
    );
    assert!(
        shown.contains("container \"c\""),
        "says what it was doing: {shown}"
    );
}

#[test]
fn a_restarted_server_is_used_again_by_the_same_backend() {
    let Some(mut server) = Server::start(&[]) else {
        return;
    };
    let backend = outage_backend(&server);
    let store = sync_store(&backend, "c");
    let busy = || {
        thread::scope(|scope| {
            for t in 0..8 {
                let store = &store;
                scope.spawn(move || {
                    for i in 0..200 {
                        store.store(&format!("{t}/{i}"), b"v", None).unwrap();
                    }
                });
            }
        });
    };

    // Every thread and every container share one connection.
    busy();
    let _other = sync_store(&backend, "other").retrieve("k").unwrap();
    assert_eq!(clients(&server), 1, "one multiplexed connection");

    // Restarted between two calls: the connection is dead, the next call still works.
    server.restart();
    assert_eq!(
        store.retrieve("0/0").unwrap(),
        None,
        "no persistence: the value is gone"
    );
    store.store("k", b"after", None).unwrap();
    assert_eq!(store.retrieve("k").unwrap().as_deref(), Some(&b"after"[..]));

    // Down for a while: calls fail within the command timeout, naming the server.
    busy();
    server.kill();
    for round in 0..2 {
        for call in ["retrieve", "store", "clear", "retrieve_many", "store_many"] {
            let start = Instant::now();
            let error = match call {
                "retrieve" => store.retrieve("k").map(drop),
                "store" => store.store("k", b"v", None),
                "clear" => store.clear(),
                "retrieve_many" => store.retrieve_many(&["a", "b"]).map(drop),
                _ => store.store_many(&[("a", &b"v"[..])], None),
            }
            .expect_err("a call while the server is down fails");
            check_outage_error(
                &server,
                "sync",
                &format!("{call} #{round}"),
                &error,
                start.elapsed(),
            );
        }
    }

    // Back: the first call succeeds, on the same backend.
    server.restart();
    let start = Instant::now();
    assert_eq!(store.retrieve("k").unwrap(), None);
    eprintln!(
        "after the restart, the first call took {:?}",
        start.elapsed()
    );
    assert!(
        start.elapsed() < COMMAND_TIMEOUT + SLACK,
        "the first call after the restart took {:?}",
        start.elapsed()
    );
    store.store("k", b"again", None).unwrap();
    assert_eq!(store.retrieve("k").unwrap().as_deref(), Some(&b"again"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_bounded_on_both_paths_and_ends_without_rebuilding() {
    let Some(mut server) = Server::start(&[]) else {
        return;
    };
    tokio::time::timeout(Duration::from_secs(60), async {
        let backend = outage_backend(&server);
        let space = Backend::open(&backend, "c").unwrap();
        let (awaited, blocking) = (space.async_store(), space.sync_store());
        awaited.store("k", b"before", None).await.unwrap();
        assert_eq!(
            blocking.retrieve("k").unwrap().as_deref(),
            Some(&b"before"[..])
        );

        // Killed: the connection is refused, and calls fail fast on both paths.
        server.kill();
        for round in 0..3 {
            let start = Instant::now();
            let error = awaited.retrieve("k").await.expect_err("down");
            check_outage_error(&server, "async", &format!("retrieve #{round}"), &error, start.elapsed());
            assert!(error.to_string().contains("connection refused"), "{error}");
            let start = Instant::now();
            let error = awaited.store("k", b"v", None).await.expect_err("down");
            check_outage_error(&server, "async", &format!("store #{round}"), &error, start.elapsed());
            let start = Instant::now();
            let error = blocking.retrieve("k").expect_err("down");
            check_outage_error(&server, "sync", &format!("retrieve #{round}"), &error, start.elapsed());
        }

        // Back, empty: both paths are served by the same backend again.
        server.restart();
        let start = Instant::now();
        assert_eq!(awaited.retrieve("k").await.unwrap(), None);
        eprintln!("after the restart, the first async call took {:?}", start.elapsed());
        awaited.store("k", b"again", None).await.unwrap();
        assert_eq!(
            blocking.retrieve("k").unwrap().as_deref(),
            Some(&b"again"[..])
        );

        // Stopped: connected, but no answer. Calls end at the command timeout, saying so.
        server.pause();
        let expected = format!(
            "no answer from redis at 127.0.0.1:{} within 500 ms while reading key \"k\" of container \"c\"",
            server.port
        );
        for round in 0..2 {
            let start = Instant::now();
            let error = awaited.retrieve("k").await.expect_err("paused");
            let took = start.elapsed();
            check_outage_error(&server, "async", &format!("paused retrieve #{round}"), &error, took);
            assert!(took >= COMMAND_TIMEOUT, "cut early, after {took:?}");
            assert!(error.to_string().contains(&expected), "{error}");
            let start = Instant::now();
            let error = blocking.retrieve("k").expect_err("paused");
            let took = start.elapsed();
            check_outage_error(&server, "sync", &format!("paused retrieve #{round}"), &error, took);
            assert!(error.to_string().contains(&expected), "{error}");
        }
        // A caller that gives up before the bound leaves the connection usable.
        let abandoned = tokio::time::timeout(Duration::from_millis(50), awaited.retrieve("k")).await;
        assert!(abandoned.is_err(), "no answer while paused");
        server.resume();
        assert_eq!(
            awaited.retrieve("k").await.unwrap().as_deref(),
            Some(&b"again"[..])
        );
        assert_eq!(
            blocking.retrieve("k").unwrap().as_deref(),
            Some(&b"again"[..])
        );
    })
    .await
    .expect("no call hangs");
}

#[test]
fn a_cache_regenerates_everything_after_a_restart_without_persistence() {
    let Some(mut server) = Server::start(&[]) else {
        return;
    };
    let url = server.url();
    let cache = kvcache_core::init([
        ("backend.shared", "redis"),
        ("backend.shared.url", url.as_str()),
        ("container.greeting.backend", "shared"),
    ])
    .unwrap();
    cache
        .register_generator("greeting", |name: &str| format!("Hello {name}!"))
        .unwrap();
    let greeting = cache.container::<String>("greeting").unwrap();
    assert_eq!(greeting.get("Peter").unwrap(), "Hello Peter!");
    assert_eq!(greeting.get("Peter").unwrap(), "Hello Peter!");
    server.restart();
    assert_eq!(greeting.get("Peter").unwrap(), "Hello Peter!");
    assert_eq!(
        greeting.stats().generations,
        2,
        "generated again after the restart"
    );
}

#[test]
fn passes_the_conformance_suite_on_a_unix_socket() {
    let Some(server) = Server::start(&[]) else {
        return;
    };
    let url = format!("redis+unix://{}", server.socket().display());
    let backend = config(&url, "unix").open().unwrap();
    assert!(
        format!("{backend:?}").contains("unix socket"),
        "{backend:?}"
    );
    testkit::run(&backend, testkit::Time::Real);
}
