//! Faults: an unreachable server, passwords, a server that restarts, and a Unix socket; on a
//! `redis-server` each test starts itself on a free port.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{Server, config, everything_shown, free_port, raw};
use kvcache_core::{Backend, Error, testkit};
use kvcache_redis::RedisConfig;

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
    assert!(matches!(error, Error::Backend { .. }), "{shown}");
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
        backend.store("c", "k", b"v", None).unwrap();
        assert_eq!(
            backend.retrieve("c", "k").unwrap().as_deref(),
            Some(&b"v"[..])
        );
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

#[test]
fn a_restarted_server_is_used_again_by_the_same_backend() {
    let Some(mut server) = Server::start(&[]) else {
        return;
    };
    let (connect_timeout, command_timeout) = (Duration::from_millis(500), Duration::from_secs(1));
    let backend = config(&server.url(), "restart")
        .pool_size(4)
        .connect_timeout(connect_timeout)
        .command_timeout(command_timeout)
        .open()
        .unwrap();
    let busy = || {
        thread::scope(|scope| {
            for t in 0..8 {
                let backend = &backend;
                scope.spawn(move || {
                    for i in 0..200 {
                        backend.store("c", &format!("{t}/{i}"), b"v", None).unwrap();
                    }
                });
            }
        });
    };
    let pooled = || -> usize {
        let info: String = redis::cmd("INFO")
            .arg("clients")
            .query(&mut raw(&server.url()))
            .unwrap();
        let line = info
            .lines()
            .find_map(|l| l.strip_prefix("connected_clients:"))
            .unwrap();
        line.trim().parse::<usize>().unwrap() - 1
    };

    // Restarted between two calls: every pooled connection is dead, the next call still works.
    busy();
    assert!(pooled() > 1, "the pool holds several connections");
    server.restart();
    assert_eq!(
        backend.retrieve("c", "0/0").unwrap(),
        None,
        "no persistence: the value is gone"
    );
    backend.store("c", "k", b"after", None).unwrap();
    assert_eq!(
        backend.retrieve("c", "k").unwrap().as_deref(),
        Some(&b"after"[..])
    );

    // Down for a while: calls fail, within the timeouts, naming the server.
    busy();
    server.kill();
    let bound = connect_timeout + command_timeout + Duration::from_secs(1);
    for call in 0..3 {
        let start = Instant::now();
        let error = match call {
            0 => backend.retrieve("c", "k").map(drop),
            1 => backend.store("c", "k", b"v", None),
            _ => backend.clear("c"),
        }
        .expect_err("a call while the server is down fails");
        assert!(
            start.elapsed() < bound,
            "call {call} took {:?}",
            start.elapsed()
        );
        assert!(
            error
                .to_string()
                .contains(&format!("127.0.0.1:{}", server.port)),
            "{error}"
        );
    }

    // Back: the first call succeeds, on the same backend.
    server.restart();
    let start = Instant::now();
    assert_eq!(backend.retrieve("c", "k").unwrap(), None);
    assert!(
        start.elapsed() < bound,
        "the first call after the restart took {:?}",
        start.elapsed()
    );
    backend.store("c", "k", b"again", None).unwrap();
    assert_eq!(
        backend.retrieve("c", "k").unwrap().as_deref(),
        Some(&b"again"[..])
    );
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
