//! Faults: an unreachable server, passwords, a server that restarts, and a Unix socket; on a
//! `redis-server` each test starts itself on a free port.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Server, config, everything_shown, free_port, paths, raw, sync_store};
use kvcache_core::{Backend, Error, Lease, testkit};
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
        let calls = [
            "retrieve",
            "store",
            "clear",
            "retrieve_many",
            "store_many",
            "lease",
            "release",
        ];
        for call in calls {
            let start = Instant::now();
            let error = match call {
                "retrieve" => store.retrieve("k").map(drop),
                "store" => store.store("k", b"v", None),
                "clear" => store.clear(),
                "retrieve_many" => store.retrieve_many(&["a", "b"]).map(drop),
                "store_many" => store.store_many(&[("a", &b"v"[..])], None),
                "lease" => store.lease("k", "t", Duration::from_secs(1)).map(drop),
                _ => store.release("k", "t"),
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

/// How many times the server ran `command` since it started (`INFO commandstats`).
fn calls_of(server: &Server, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut raw(&server.url()))
        .unwrap();
    let line = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(line.as_str()))
        .map_or(0, |rest| {
            rest.split(',').next().unwrap().trim().parse().unwrap()
        })
}

#[test]
fn a_lease_held_when_the_server_restarts_is_gone_and_leases_work_again() {
    let Some(mut server) = Server::start(&[]) else {
        return;
    };
    let backend = outage_backend(&server);
    let ttl = Duration::from_secs(60);
    for (path, store) in paths(&backend, "c") {
        eprintln!("through the {path} path");
        let (old, new) = (format!("old-{path}"), format!("new-{path}"));
        assert_eq!(store.lease("k", &old, ttl).unwrap(), Lease::Acquired);
        assert_eq!(store.lease("k", "other", ttl).unwrap(), Lease::Held);

        // Started again without persistence (`--save "" --appendonly no`): the lease is gone,
        // and so is the connection it was taken on. A first call may fail, naming the backend
        // and what it was doing, within the command timeout; a later one takes the lease.
        server.restart();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let start = Instant::now();
            match store.lease("k", &new, ttl) {
                Ok(lease) => {
                    assert_eq!(lease, Lease::Acquired, "{path} path: the old lease is gone");
                    break;
                }
                Err(error) => {
                    check_outage_error(&server, path, "lease", &error, start.elapsed());
                    assert!(
                        matches!(
                            &error,
                            Error::Backend { backend, .. } | Error::Unavailable { backend, .. }
                                if backend == "redis"
                        ),
                        "names the backend: {error:?}"
                    );
                    assert!(error.to_string().contains("lease"), "{error}");
                    assert!(
                        Instant::now() < deadline,
                        "{path} path: no lease 10 s after the restart"
                    );
                    thread::sleep(Duration::from_millis(50));
                }
            }
        }

        // The old holder's release is fine, and leaves the new holder's lease.
        store.release("k", &old).unwrap();
        assert_eq!(store.lease("k", "other", ttl).unwrap(), Lease::Held);
        store.release("k", &new).unwrap();
        assert_eq!(store.lease("k", "other", ttl).unwrap(), Lease::Acquired);
        store.release("k", "other").unwrap();
        assert_eq!(store.lease("k", &new, ttl).unwrap(), Lease::Acquired);
        store.release("k", &new).unwrap();

        // The restarted server knew no script: the first release loaded it (SCRIPT LOAD, after
        // EVALSHA's NOSCRIPT), and every release ran it by its SHA-1.
        assert_eq!(calls_of(&server, "script|load"), 1, "{path} path");
        assert_eq!(calls_of(&server, "evalsha"), 5, "{path} path");
    }
}

/// A TCP proxy to a server on loopback that, once armed, forwards the next request holding `NX`
/// and then cuts its connection instead of forwarding the answer: a command that ran on the
/// server, and whose answer was lost with the connection. Later connections pass.
struct Cutter {
    port: u16,
    armed: Arc<AtomicBool>,
}

impl Cutter {
    fn start(upstream: u16) -> Cutter {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("its address").port();
        let armed = Arc::new(AtomicBool::new(false));
        let arm = Arc::clone(&armed);
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let cut = Arc::new(AtomicBool::new(false));
                let (mut asked, mut to_server) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (arm, seen) = (Arc::clone(&arm), Arc::clone(&cut));
                thread::spawn(move || {
                    let mut buf = [0; 64 * 1024];
                    while let Ok(n @ 1..) = asked.read(&mut buf) {
                        if buf[..n].windows(4).any(|w| w == b"\r\nNX")
                            && arm.swap(false, Ordering::SeqCst)
                        {
                            seen.store(true, Ordering::SeqCst);
                        }
                        if to_server.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to_server.shutdown(Shutdown::Both);
                });
                let (mut answers, mut to_client) = (server, client);
                thread::spawn(move || {
                    let mut buf = [0; 64 * 1024];
                    while let Ok(n @ 1..) = answers.read(&mut buf) {
                        if cut.load(Ordering::SeqCst) || to_client.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to_client.shutdown(Shutdown::Both);
                    let _ = answers.shutdown(Shutdown::Both);
                });
            }
        });
        Cutter { port, armed }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Cuts the connection that sends the next `NX` request, once it reached the server.
    fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }
}

#[test]
fn a_lease_whose_answer_was_lost_with_the_connection_is_still_taken() {
    let Some(server) = Server::start(&[]) else {
        return;
    };
    let cutter = Cutter::start(server.port);
    let backend = config(&cutter.url(), "cut")
        .connect_timeout(CONNECT_TIMEOUT)
        .command_timeout(COMMAND_TIMEOUT)
        .open()
        .unwrap();
    let ttl = Duration::from_secs(60);
    for (path, store) in paths(&backend, "c") {
        eprintln!("through the {path} path");
        let token = format!("token-{path}");
        let lease = format!("cut:{{1:c}}!lease:k-{path}");
        let key = format!("k-{path}");
        cutter.arm();
        // The SET ... NX ran, its OK was lost, and it was sent again on a new connection, where
        // it found the lease held: by this very call, which the token tells.
        assert_eq!(
            store.lease(&key, &token, ttl).unwrap(),
            Lease::Acquired,
            "{path} path"
        );
        assert!(
            !cutter.armed.load(Ordering::SeqCst),
            "the proxy cut a connection"
        );
        let held: Option<String> = redis::cmd("GET")
            .arg(&lease)
            .query(&mut raw(&server.url()))
            .unwrap();
        assert_eq!(held, Some(token.clone()));
        // Asked again, not resent: held, even to its own token.
        assert_eq!(store.lease(&key, &token, ttl).unwrap(), Lease::Held);
        assert_eq!(store.lease(&key, "other", ttl).unwrap(), Lease::Held);
        store.release(&key, &token).unwrap();
        assert_eq!(store.lease(&key, "other", ttl).unwrap(), Lease::Acquired);
        // Cut while another holds it: resent, the lease is still the other's.
        cutter.arm();
        assert_eq!(store.lease(&key, &token, ttl).unwrap(), Lease::Held);
        assert!(
            !cutter.armed.load(Ordering::SeqCst),
            "the proxy cut a connection"
        );
        store.release(&key, "other").unwrap();
    }
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
    testkit::leases(&backend, testkit::Time::Real);
}
