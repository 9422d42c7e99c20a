//! The Redis backend on the real Redis of `KVCACHE_TEST_REDIS_URL`: the shared conformance
//! suite, the key layout (leases' included), expiry, and keys kvcache did not write.

mod common;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{Cleanup, both, open, raw, redis_url};
use kvcache_core::inspect::Inspect;
use kvcache_core::{KvCache, Lease, ManualClock, testkit};

/// A backend under a unique prefix on the Redis under test, and the cleanup of that prefix.
fn setup(label: &str) -> Option<(String, String, Cleanup)> {
    let url = redis_url()?;
    let prefix = testkit::unique(label);
    let cleanup = Cleanup {
        url: url.clone(),
        prefix: prefix.clone(),
    };
    Some((url, prefix, cleanup))
}

/// The Redis key of (container, key), as the crate docs state it.
fn documented_key(prefix: &str, container: &str, key: &str) -> String {
    format!("{prefix}:{{{}:{container}}}:{key}", container.len())
}

/// The Redis key of the lease on (container, key), as the crate docs state it.
fn documented_lease(prefix: &str, container: &str, key: &str) -> String {
    format!("{prefix}:{{{}:{container}}}!lease:{key}", container.len())
}

#[test]
fn passes_the_conformance_suite() {
    let Some((url, prefix, _cleanup)) = setup("conformance") else {
        return;
    };
    let backend = open(&url, &prefix);
    testkit::run(&backend, testkit::Time::Real);
    testkit::leases(&backend, testkit::Time::Real);
}

#[test]
fn leases_follow_the_documented_layout_apart_from_entries() {
    let Some((url, prefix, _cleanup)) = setup("lease-layout") else {
        return;
    };
    let redis = open(&url, &prefix);
    let mut conn = raw(&url);
    let exists = |conn: &mut redis::Connection, key: &str| -> bool {
        redis::cmd("EXISTS").arg(key).query(conn).unwrap()
    };
    let none = &mut |_| {};
    for backend in both(&redis) {
        eprintln!("through the {} path", backend.path);
        let (c, only) = (backend.open("c"), backend.open("only-leases"));
        c.store("k", b"v", None).unwrap();
        c.store("k2", b"v", None).unwrap();
        let ttl = Duration::from_secs(60);
        assert_eq!(c.lease("k", "token", ttl).unwrap(), Lease::Acquired);
        assert_eq!(only.lease("k", "token", ttl).unwrap(), Lease::Acquired);

        // The documented key, holding the token, with the ttl to the millisecond.
        let lease = documented_lease(&prefix, "c", "k");
        let held: Option<String> = redis::cmd("GET").arg(&lease).query(&mut conn).unwrap();
        assert_eq!(held.as_deref(), Some("token"));
        let left: i64 = redis::cmd("PTTL").arg(&lease).query(&mut conn).unwrap();
        assert!((59_000..=60_000).contains(&left), "PTTL {left}");
        assert_eq!(
            c.retrieve("k").unwrap().as_deref(),
            Some(&b"v"[..]),
            "the entry is its own key"
        );

        // No walk sees a lease: not as a container, not as a key, not in a summary.
        assert_eq!(
            redis.containers(none).unwrap(),
            Some(vec!["c".to_owned()]),
            "a container of leases only is not listed"
        );
        assert_eq!(redis.keys("c", "", None, none).unwrap(), ["k", "k2"]);
        assert_eq!(redis.keys("c", "k", None, none).unwrap(), ["k", "k2"]);
        assert!(
            redis
                .keys("only-leases", "", None, none)
                .unwrap()
                .is_empty()
        );
        assert_eq!(redis.summary("c", none).unwrap().entries, 2);
        assert_eq!(redis.summary("only-leases", none).unwrap().entries, 0);

        // Clear deletes the entries and leaves the leases.
        c.clear().unwrap();
        only.clear().unwrap();
        assert_eq!(c.retrieve("k").unwrap(), None);
        assert!(exists(&mut conn, &lease), "clear leaves the lease");
        assert_eq!(c.lease("k", "other", ttl).unwrap(), Lease::Held);

        // Release deletes the key; a zero ttl is a lease of one millisecond.
        c.release("k", "token").unwrap();
        only.release("k", "token").unwrap();
        assert!(!exists(&mut conn, &lease), "released");
        assert!(!exists(
            &mut conn,
            &documented_lease(&prefix, "only-leases", "k")
        ));
        assert_eq!(c.lease("z", "a", Duration::ZERO).unwrap(), Lease::Acquired);
        thread::sleep(Duration::from_millis(20));
        assert_eq!(c.lease("z", "b", Duration::ZERO).unwrap(), Lease::Acquired);
        thread::sleep(Duration::from_millis(20));
        assert_eq!(redis.containers(none).unwrap(), Some(Vec::new()));
    }
}

#[test]
fn corrupt_values_are_misses_that_get_regenerated() {
    let Some((url, prefix, _cleanup)) = setup("corrupt") else {
        return;
    };
    testkit::corruption(std::sync::Arc::new(open(&url, &prefix)));
}

#[test]
fn keys_follow_the_documented_layout() {
    let Some((url, prefix, _cleanup)) = setup("layout") else {
        return;
    };
    let backend = open(&url, &prefix);
    for backend in both(&backend) {
        eprintln!("through the {} path", backend.path);
        let value = format!("Hello Peter, from the {} path!", backend.path);
        backend
            .store("greeting", "Peter", value.as_bytes(), None)
            .unwrap();
        let stored: Option<Vec<u8>> = redis::cmd("GET")
            .arg(documented_key(&prefix, "greeting", "Peter"))
            .query(&mut raw(&url))
            .unwrap();
        assert_eq!(stored.as_deref(), Some(value.as_bytes()));
    }
}

#[test]
fn names_with_colons_braces_and_digits_never_collide() {
    let Some((url, prefix, _cleanup)) = setup("collide") else {
        return;
    };
    let backend = open(&url, &prefix);
    for backend in both(&backend) {
        eprintln!("through the {} path", backend.path);
        // Pairs that a plain `container:key` join, or a hash tag cut at the first `}`, would confuse.
        let pairs = [
            ("a:b", "c"),
            ("a", "b:c"),
            ("a:b:c", ""),
            ("", "a:b:c"),
            ("1:a", "b"),
            ("1", "a}:b"),
            ("a}", "b"),
            ("a", "}:b"),
            ("{3:a:b}", "c"),
            ("2:a}:{1", "b}"),
        ];
        for (i, (container, key)) in pairs.iter().enumerate() {
            backend
                .store(container, key, format!("value {i}").as_bytes(), None)
                .unwrap();
        }
        for (i, (container, key)) in pairs.iter().enumerate() {
            assert_eq!(
                backend.retrieve(container, key).unwrap(),
                Some(format!("value {i}").into_bytes()),
                "({container:?}, {key:?})"
            );
        }
        backend.clear("a").unwrap();
        assert_eq!(backend.retrieve("a", "b:c").unwrap(), None);
        assert_eq!(backend.retrieve("a", "}:b").unwrap(), None);
        for (i, (container, key)) in pairs.iter().enumerate().filter(|(_, (c, _))| *c != "a") {
            assert_eq!(
                backend.retrieve(container, key).unwrap(),
                Some(format!("value {i}").into_bytes()),
                "({container:?}, {key:?}) after clearing \"a\""
            );
        }
    }
}

#[test]
fn clear_treats_glob_characters_in_names_literally() {
    let Some((url, prefix, _cleanup)) = setup("glob") else {
        return;
    };
    let backend = open(&url, &prefix);
    for backend in both(&backend) {
        eprintln!("through the {} path", backend.path);
        let containers = ["*", "a*", "?", "[a]", "a", "\\", "\\*", "b"];
        for container in containers {
            backend
                .store(container, "k", container.as_bytes(), None)
                .unwrap();
        }
        for cleared in containers {
            backend.clear(cleared).unwrap();
            let still: Vec<&str> = containers
                .iter()
                .copied()
                .filter(|c| backend.retrieve(c, "k").unwrap().is_some())
                .collect();
            let expected: Vec<&str> = containers
                .iter()
                .copied()
                .skip_while(|c| *c != cleared)
                .skip(1)
                .collect();
            assert_eq!(still, expected, "after clearing {cleared:?}");
        }
    }
}

#[test]
fn clear_deletes_more_keys_than_one_scan_step_finds() {
    let Some((url, prefix, _cleanup)) = setup("bigclear") else {
        return;
    };
    let backend = open(&url, &prefix);
    for backend in both(&backend) {
        eprintln!("through the {} path", backend.path);
        let keys: Vec<String> = (0..5000).map(|i| i.to_string()).collect();
        let entries: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &b"v"[..])).collect();
        backend.store_many("big", &entries, None).unwrap();
        backend.store("kept", "k", b"v", None).unwrap();
        backend.clear("big").unwrap();
        let asked: Vec<&str> = keys.iter().map(String::as_str).collect();
        assert!(
            backend
                .retrieve_many("big", &asked)
                .unwrap()
                .iter()
                .all(Option::is_none)
        );
        assert!(backend.retrieve("kept", "k").unwrap().is_some());
    }
}

#[test]
fn a_ttl_is_sent_to_the_millisecond_with_the_value() {
    let Some((url, prefix, _cleanup)) = setup("pttl") else {
        return;
    };
    let backend = open(&url, &prefix);
    for backend in both(&backend) {
        eprintln!("through the {} path", backend.path);
        let mut conn = raw(&url);
        let pttl = |conn: &mut redis::Connection, key: &str| -> i64 {
            redis::cmd("PTTL")
                .arg(documented_key(&prefix, "c", key))
                .query(conn)
                .unwrap()
        };
        // 86 400 123.4 ms: kept to the millisecond, rounded up.
        let start = Instant::now();
        backend
            .store("c", "k", b"v", Some(Duration::from_micros(86_400_123_400)))
            .unwrap();
        let left = pttl(&mut conn, "k");
        let elapsed = i64::try_from(start.elapsed().as_millis()).unwrap();
        assert!(
            (86_400_124 - elapsed - 1..=86_400_124).contains(&left),
            "PTTL {left} ms, {elapsed} ms after a store with 86 400 123.4 ms"
        );
        backend.store("c", "k", b"v", None).unwrap();
        assert_eq!(
            pttl(&mut conn, "k"),
            -1,
            "a store without ttl removes the earlier ttl"
        );
        backend.store("c", "k", b"v", Some(Duration::ZERO)).unwrap();
        assert_eq!(
            backend.retrieve("c", "k").unwrap(),
            None,
            "a zero ttl is expired at once"
        );
        backend.store("c", "k", b"v", Some(Duration::MAX)).unwrap();
        assert!(
            pttl(&mut conn, "k") > 1 << 60,
            "an endless ttl is accepted by Redis"
        );
        let keys: Vec<String> = (0..100).map(|i| i.to_string()).collect();
        let entries: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &b"v"[..])).collect();
        let start = Instant::now();
        backend
            .store_many("c", &entries, Some(Duration::from_millis(60_000)))
            .unwrap();
        for key in &keys {
            let left = pttl(&mut conn, key);
            let elapsed = i64::try_from(start.elapsed().as_millis()).unwrap();
            assert!(
                (60_000 - elapsed - 1..=60_000).contains(&left),
                "batch key {key}: PTTL {left}"
            );
        }
    }
}

#[test]
fn entries_expire_on_redis_clock_to_the_millisecond() {
    let Some((url, prefix, _cleanup)) = setup("expiry") else {
        return;
    };
    let backend = open(&url, &prefix);
    for backend in both(&backend) {
        eprintln!("through the {} path", backend.path);
        let ttl = Duration::from_millis(300);
        let before = Instant::now();
        backend.store("c", "k", b"v", Some(ttl)).unwrap();
        let after = Instant::now();
        // Redis's clock counts whole milliseconds: allow it one either way.
        let (alive_until, dead_from) = (
            before + ttl - Duration::from_millis(1),
            after + ttl + Duration::from_millis(1),
        );
        loop {
            let asked = Instant::now();
            let found = backend.retrieve("c", "k").unwrap();
            let answered = Instant::now();
            if answered < alive_until {
                assert!(
                    found.is_some(),
                    "gone {:?} after the store began",
                    answered - before
                );
            }
            if asked >= dead_from {
                assert_eq!(
                    found,
                    None,
                    "still there {:?} after the store ended",
                    asked - after
                );
                break;
            }
            thread::sleep(Duration::from_millis(1));
        }
    }
}

#[test]
fn the_cache_clock_does_not_move_redis_expiry() {
    let Some((url, prefix, _cleanup)) = setup("clock") else {
        return;
    };
    let clock = ManualClock::new(0);
    let config = kvcache_core::Config::from_pairs([
        ("backend.shared", "redis"),
        ("backend.shared.url", url.as_str()),
        ("backend.shared.prefix", prefix.as_str()),
        ("container.c.backend", "shared"),
        ("container.c.expire", "300 ms"),
    ])
    .unwrap();
    let cache = KvCache::builder(config)
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    cache
        .register_generator("c", |key: &str| key.to_uppercase())
        .unwrap();
    let c = cache.container::<String>("c").unwrap();
    assert_eq!(c.get("k").unwrap(), "K");
    clock.advance(Duration::from_secs(10 * 365 * 86_400));
    assert_eq!(
        c.peek("k").unwrap().as_deref(),
        Some("K"),
        "ten years on kvcache's clock"
    );
    thread::sleep(Duration::from_millis(500));
    assert_eq!(c.peek("k").unwrap(), None, "500 ms on Redis's clock");
    assert_eq!(c.get("k").unwrap(), "K");
    assert_eq!(c.stats().generations, 2);
}

#[test]
fn a_key_of_another_type_is_a_miss_and_is_replaced() {
    let Some((url, prefix, _cleanup)) = setup("foreign-type") else {
        return;
    };
    let backend = open(&url, &prefix);
    for backend in both(&backend) {
        eprintln!("through the {} path", backend.path);
        let mut conn = raw(&url);
        let key = documented_key(&prefix, "c", "k");
        redis::cmd("DEL").arg(&key).query::<()>(&mut conn).unwrap();
        redis::cmd("HSET")
            .arg(&key)
            .arg("field")
            .arg("value")
            .query::<()>(&mut conn)
            .unwrap();
        assert_eq!(backend.retrieve("c", "k").unwrap(), None);
        assert_eq!(
            backend.retrieve_many("c", &["k", "k"]).unwrap(),
            vec![None, None]
        );
        backend.store("c", "k", b"mine", None).unwrap();
        assert_eq!(
            backend.retrieve("c", "k").unwrap().as_deref(),
            Some(&b"mine"[..])
        );
        redis::cmd("DEL").arg(&key).query::<()>(&mut conn).unwrap();
        redis::cmd("RPUSH")
            .arg(&key)
            .arg("item")
            .query::<()>(&mut conn)
            .unwrap();
        backend
            .store_many("c", &[("k", &b"batch"[..])], Some(Duration::from_secs(60)))
            .unwrap();
        assert_eq!(
            backend.retrieve("c", "k").unwrap().as_deref(),
            Some(&b"batch"[..])
        );
    }
}

#[test]
fn a_container_regenerates_values_kvcache_did_not_write() {
    let Some((url, prefix, _cleanup)) = setup("foreign-value") else {
        return;
    };
    let cache = kvcache_core::init([
        ("backend.shared", "redis"),
        ("backend.shared.url", url.as_str()),
        ("backend.shared.prefix", prefix.as_str()),
        ("container.greeting.backend", "shared"),
    ])
    .unwrap();
    cache
        .register_generator("greeting", |name: &str| format!("Hello {name}!"))
        .unwrap();
    let greeting = cache.container::<String>("greeting").unwrap();
    let mut conn = raw(&url);
    let hash = documented_key(&prefix, "greeting", "Hash");
    let bytes = documented_key(&prefix, "greeting", "Bytes");
    redis::cmd("HSET")
        .arg(&hash)
        .arg("f")
        .arg("v")
        .query::<()>(&mut conn)
        .unwrap();
    redis::cmd("SET")
        .arg(&bytes)
        .arg("Hello from elsewhere")
        .query::<()>(&mut conn)
        .unwrap();
    assert_eq!(greeting.get("Hash").unwrap(), "Hello Hash!");
    assert_eq!(greeting.get("Bytes").unwrap(), "Hello Bytes!");
    assert_eq!(greeting.get("Hash").unwrap(), "Hello Hash!");
    assert_eq!(
        greeting.get_many(&["Bytes", "Hash"]).unwrap(),
        ["Hello Bytes!", "Hello Hash!"]
    );
    assert_eq!(
        greeting.stats().generations,
        2,
        "each foreign value regenerated once, then hits"
    );
    let kind: String = redis::cmd("TYPE").arg(&hash).query(&mut conn).unwrap();
    assert_eq!(kind, "string", "the hash was replaced by kvcache's value");
}

#[tokio::test]
async fn opens_and_serves_inside_a_current_thread_runtime() {
    let Some((url, prefix, _cleanup)) = setup("in-runtime") else {
        return;
    };
    tokio::time::timeout(Duration::from_secs(30), async {
        // Opened inside a task of a one-thread runtime: connecting runs on kvcache's runtime.
        let cache = kvcache_core::init([
            ("backend.shared", "redis"),
            ("backend.shared.url", url.as_str()),
            ("backend.shared.prefix", prefix.as_str()),
            ("container.c.backend", "shared"),
        ])
        .unwrap();
        cache
            .register_generator("c", |key: &str| key.to_uppercase())
            .unwrap();
        let awaited = cache.async_container::<String>("c").unwrap();
        assert_eq!(awaited.get("k").await.unwrap(), "K");
        // A synchronous call from the same task: it blocks this runtime's only thread, which
        // the connection does not need.
        let blocking = cache.container::<String>("c").unwrap();
        assert_eq!(blocking.peek("k").unwrap().as_deref(), Some("K"));
        blocking
            .set("k", &"set by the sync path".to_owned())
            .unwrap();
        assert_eq!(
            awaited.peek("k").await.unwrap().as_deref(),
            Some("set by the sync path")
        );
        assert_eq!(awaited.stats().generations, 1);
    })
    .await
    .expect("no call hangs");
}

#[test]
fn the_connection_outlives_the_runtime_it_was_opened_in() {
    let Some((url, prefix, _cleanup)) = setup("outlives") else {
        return;
    };
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let backend = first.block_on(async {
        let backend = open(&url, &prefix);
        let store = kvcache_core::Backend::open(&backend, "c")
            .unwrap()
            .async_store();
        store.store("k", b"v", None).await.unwrap();
        backend
    });
    drop(first);
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let space = kvcache_core::Backend::open(&backend, "c").unwrap();
    let found = second.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), space.async_store().retrieve("k"))
            .await
            .expect("no hang")
    });
    assert_eq!(found.unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(
        space.sync_store().retrieve("k").unwrap().as_deref(),
        Some(&b"v"[..])
    );
}
