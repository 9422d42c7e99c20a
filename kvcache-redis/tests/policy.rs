//! The backend-error policy on a real backend that fails: a private `redis-server` killed
//! mid-test, and restarted; on the synchronous path, then on the async one.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::Server;
use kvcache_core::{Error, KvCache};
use kvcache_redis::RedisConfig;

/// How long the backend's calls fail at once after an outage is seen: the tests wait it out after
/// a restart, as a service would see its cache serve from Redis again within one interval.
const BACKOFF: Duration = Duration::from_millis(100);

/// A cache with containers `open` (fails open) and `strict` (the default policy) on `url`.
fn cache(url: &str) -> (kvcache_core::KvCache, Arc<AtomicUsize>) {
    let cache = kvcache_core::init([
        ("backend.r", "redis"),
        ("backend.r.url", url),
        ("backend.r.connect_timeout", "300ms"),
        ("backend.r.command_timeout", "300ms"),
        ("backend.r.outage_backoff", "100ms"),
        ("container.open.backend", "r"),
        ("container.open.on_backend_error", "generate"),
        ("container.strict.backend", "r"),
    ])
    .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    for name in ["open", "strict"] {
        let calls = Arc::clone(&calls);
        cache
            .register_generator(name, move |key: &str| {
                calls.fetch_add(1, Ordering::SeqCst);
                format!("fresh {key}")
            })
            .unwrap();
    }
    (cache, calls)
}

#[test]
fn generate_fails_open_and_fail_fails_while_the_server_is_down() {
    let Some(mut server) = Server::start(&[]) else {
        return;
    };
    let (cache, calls) = cache(&server.url());
    let open = cache.container::<String>("open").unwrap();
    let strict = cache.container::<String>("strict").unwrap();
    assert_eq!(open.get("k").unwrap(), "fresh k");
    assert_eq!(strict.get("k").unwrap(), "fresh k");
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    server.kill();
    assert_eq!(
        open.get("k").unwrap(),
        "fresh k",
        "fail-open: the generator's value"
    );
    assert_eq!(open.get_many(&["a", "b"]).unwrap(), ["fresh a", "fresh b"]);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        5,
        "generated while the server is down"
    );
    let error = strict.get("k").unwrap_err();
    assert!(
        matches!(error, Error::Backend { .. } | Error::Unavailable { .. }),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains(&format!("127.0.0.1:{}", server.port)),
        "{error}"
    );
    assert!(
        open.set("k", &"v".to_owned()).is_err(),
        "writes still report the failure"
    );
    assert_eq!(open.stats().backend_errors, 3);

    server.restart();
    std::thread::sleep(BACKOFF + Duration::from_millis(50));
    assert_eq!(
        open.peek("k").unwrap(),
        None,
        "nothing was stored while down (and the restart emptied it)"
    );
    assert_eq!(open.get("k").unwrap(), "fresh k");
    assert_eq!(
        open.peek("k").unwrap().as_deref(),
        Some("fresh k"),
        "stored again once back"
    );
    assert_eq!(strict.get("k").unwrap(), "fresh k");
}

/// The containers of `cache` on a backend built in code, through the builder.
fn built_cache(server: &Server) -> (kvcache_core::KvCache, Arc<AtomicUsize>) {
    let backend = RedisConfig::new(server.url())
        .prefix("policy")
        .connect_timeout(Duration::from_millis(300))
        .command_timeout(Duration::from_millis(500))
        .open()
        .unwrap();
    let config = kvcache_core::Config::from_pairs([
        ("container.open.backend", "r"),
        ("container.open.on_backend_error", "generate"),
        ("container.strict.backend", "r"),
    ])
    .unwrap();
    let cache = KvCache::builder(config)
        .backend("r", Arc::new(backend))
        .outage_backoff("r", BACKOFF)
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    for name in ["open", "strict"] {
        let calls = Arc::clone(&calls);
        cache
            .register_async_generator(name, move |key: String| {
                let calls = Arc::clone(&calls);
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    format!("fresh {key}")
                }
            })
            .unwrap();
    }
    (cache, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_serves_the_generator_on_the_async_path_while_the_server_is_down() {
    let Some(mut server) = Server::start(&[]) else {
        return;
    };
    tokio::time::timeout(Duration::from_secs(60), async {
        let (cache, calls) = built_cache(&server);
        let open = cache.async_container::<String>("open").unwrap();
        let strict = cache.async_container::<String>("strict").unwrap();
        assert_eq!(open.get("k").await.unwrap(), "fresh k");
        assert_eq!(strict.get("k").await.unwrap(), "fresh k");
        assert_eq!(open.get("k").await.unwrap(), "fresh k", "a hit");
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        server.kill();
        let start = Instant::now();
        assert_eq!(
            open.get("k").await.unwrap(),
            "fresh k",
            "fail-open: the generator's value"
        );
        assert_eq!(
            open.get_many(&["a", "b"]).await.unwrap(),
            ["fresh a", "fresh b"]
        );
        let took = start.elapsed();
        eprintln!("outage: two fail-open async reads took {took:?}");
        assert!(took < Duration::from_secs(1), "took {took:?}");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            5,
            "generated while the server is down"
        );
        let start = Instant::now();
        let error = strict.get("k").await.unwrap_err();
        eprintln!(
            "outage: a strict async read failed after {:?}: {error}",
            start.elapsed()
        );
        assert!(
            matches!(error, Error::Backend { .. } | Error::Unavailable { .. }),
            "{error}"
        );
        assert!(
            error
                .to_string()
                .contains(&format!("127.0.0.1:{}", server.port)),
            "{error}"
        );
        assert!(
            open.set("k", &"v".to_owned()).await.is_err(),
            "writes still report the failure"
        );

        // Back: served from Redis again, by the same cache.
        server.restart();
        tokio::time::sleep(BACKOFF + Duration::from_millis(50)).await;
        assert_eq!(
            open.peek("k").await.unwrap(),
            None,
            "nothing was stored while down (and the restart emptied it)"
        );
        assert_eq!(open.get("k").await.unwrap(), "fresh k");
        let generated = calls.load(Ordering::SeqCst);
        assert_eq!(open.get("k").await.unwrap(), "fresh k");
        assert_eq!(calls.load(Ordering::SeqCst), generated, "a hit, from Redis");
        let stored: Option<Vec<u8>> = redis::cmd("GET")
            .arg("policy:{4:open}:k")
            .query(&mut common::raw(&server.url()))
            .unwrap();
        assert!(stored.is_some(), "the value is in Redis again");
        assert_eq!(strict.get("k").await.unwrap(), "fresh k");

        // Stopped (no answer): fail-open serves the generator's value at the command timeout.
        server.pause();
        let start = Instant::now();
        assert_eq!(open.get("p").await.unwrap(), "fresh p");
        let took = start.elapsed();
        eprintln!("hung server: a fail-open async read took {took:?}");
        assert!(took < Duration::from_millis(800), "took {took:?}");
        // Calls after it fail at once: the breaker is open.
        let start = Instant::now();
        assert_eq!(open.get("q").await.unwrap(), "fresh q");
        let fast = start.elapsed();
        eprintln!("hung server, breaker open: a fail-open async read took {fast:?}");
        assert!(fast < Duration::from_millis(50), "took {fast:?}");
        assert!(open.stats().fast_failures >= 1);
        server.resume();
        tokio::time::sleep(BACKOFF + Duration::from_millis(50)).await;
        assert_eq!(open.get("k").await.unwrap(), "fresh k");
    })
    .await
    .expect("no call hangs");
}
