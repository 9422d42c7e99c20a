//! The invalidation channel (`Backend::watch`): what one instance's writes tell another's
//! watchers, what they do not, and what a dropped subscription delivers.

mod common;

use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Cleanup, Server, async_store, open, raw, redis_url, sync_store};
use kvcache_core::{Backend, Change, Watcher, testkit};
use kvcache_redis::RedisBackend;

/// How long a change may take to arrive.
const DELIVERY: Duration = Duration::from_secs(1);

/// A watcher that sends every change it gets to the receiver.
fn recorder() -> (Watcher, Receiver<Change>) {
    let (sender, receiver) = channel();
    let sender = Mutex::new(sender);
    let watcher: Watcher = Arc::new(move |change| {
        let _ = sender.lock().unwrap().send(change);
    });
    (watcher, receiver)
}

fn keys(keys: &[&str]) -> Change {
    Change::Keys(keys.iter().map(|&key| key.to_owned()).collect())
}

/// The next change, within [`DELIVERY`].
fn next(changes: &Receiver<Change>, what: &str) -> Change {
    changes
        .recv_timeout(DELIVERY)
        .unwrap_or_else(|error| panic!("no change within {DELIVERY:?} after {what}: {error}"))
}

/// Nothing more arrives for a while.
fn quiet(changes: &Receiver<Change>, who: &str) {
    match changes.recv_timeout(Duration::from_millis(300)) {
        Err(RecvTimeoutError::Timeout) => {}
        other => panic!("{who} got {other:?}"),
    }
}

/// Two backend objects (two instances) on the Redis under test under one fresh prefix.
fn setup(label: &str) -> Option<(String, String, Cleanup)> {
    let url = redis_url()?;
    let prefix = testkit::unique(label);
    let cleanup = Cleanup {
        url: url.clone(),
        prefix: prefix.clone(),
    };
    Some((url, prefix, cleanup))
}

#[test]
fn one_instances_writes_reach_the_others_watchers_and_not_its_own() {
    let Some((url, prefix, _cleanup)) = setup("watch") else {
        return;
    };
    let (a, b) = (open(&url, &prefix), open(&url, &prefix));
    let (a_watcher, a_changes) = recorder();
    let (b_watcher, b_changes) = recorder();
    assert!(b.watch("c", b_watcher).expect("B watches"));
    assert!(a.watch("c", a_watcher).expect("A watches"));

    for (path, store) in [
        ("sync", sync_store(&a, "c")),
        ("async", async_store(&a, "c")),
    ] {
        store.store("k", b"v", None).unwrap();
        assert_eq!(next(&b_changes, "a store"), keys(&["k"]), "{path}");
        store
            .store("k", b"v", Some(Duration::from_secs(60)))
            .unwrap();
        assert_eq!(
            next(&b_changes, "a store with a ttl"),
            keys(&["k"]),
            "{path}"
        );
        store.store("k", b"v", Some(Duration::ZERO)).unwrap();
        assert_eq!(
            next(&b_changes, "a store that expires at once"),
            keys(&["k"]),
            "{path}"
        );
        let entries: [(&str, &[u8]); 3] = [("k1", b"1"), ("k 2", b"2"), ("", b"3")];
        store.store_many(&entries, None).unwrap();
        assert_eq!(
            next(&b_changes, "a batch"),
            keys(&["k1", "k 2", ""]),
            "{path}: one message lists the batch"
        );
        store.invalidate("k1").unwrap();
        assert_eq!(next(&b_changes, "a removal"), keys(&["k1"]), "{path}");
        store.clear().unwrap();
        assert_eq!(next(&b_changes, "a clear"), Change::Cleared, "{path}");
        assert_eq!(
            store.retrieve("k 2").unwrap(),
            None,
            "{path}: the clear ran"
        );
    }
    quiet(&b_changes, "B, after A's writes");
    quiet(&a_changes, "A, from its own writes");

    // And the other way round; names that look like the payload's own syntax round-trip.
    let awkward = "1 0f 3:c k 1:k";
    sync_store(&b, "c").store(awkward, b"v", None).unwrap();
    assert_eq!(next(&a_changes, "B's store"), keys(&[awkward]));
    quiet(&b_changes, "B, from its own store");

    // Another container's watchers hear nothing of `c`, and `c`'s nothing of theirs.
    let (d_watcher, d_changes) = recorder();
    assert!(b.watch("d", d_watcher).unwrap());
    sync_store(&a, "c").store("k", b"v", None).unwrap();
    assert_eq!(next(&b_changes, "a store in c"), keys(&["k"]));
    quiet(&d_changes, "d's watcher");
}

#[test]
fn a_container_nobody_watched_publishes_nothing() {
    let Some((url, prefix, _cleanup)) = setup("watch-unwatched") else {
        return;
    };
    let mut listener = raw(&url);
    let mut listener = listener.as_pubsub();
    listener
        .subscribe(format!("{prefix}!changes"))
        .expect("a plain subscription to the channel");
    listener
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();

    let (a, never) = (open(&url, &prefix), open(&url, &prefix));
    let (watcher, _changes) = recorder();
    assert!(a.watch("watched", watcher).unwrap());

    // Every write of a container A never watched, and of one only another object watched.
    let entries: [(&str, &[u8]); 2] = [("k1", b"1"), ("k2", b"2")];
    for store in [
        sync_store(&a, "unwatched"),
        async_store(&a, "unwatched"),
        sync_store(&never, "watched"),
    ] {
        store.store("k", b"v", None).unwrap();
        store.store_many(&entries, None).unwrap();
        store.invalidate("k").unwrap();
        store.clear().unwrap();
    }
    // Then one that publishes: it must be the first message on the channel.
    sync_store(&a, "watched")
        .store("sentinel", b"v", None)
        .unwrap();
    let message = listener.get_message().expect("the sentinel's message");
    let payload = String::from_utf8(message.get_payload_bytes().to_vec()).unwrap();
    let (version, rest) = payload.split_once(' ').unwrap();
    let (instance, rest) = rest.split_once(' ').unwrap();
    assert_eq!(version, "1", "{payload}");
    assert!(
        instance.len() == 16 && instance.bytes().all(|b| b.is_ascii_hexdigit()),
        "{payload}"
    );
    assert_eq!(rest, "7:watched k 8:sentinel", "the documented payload");

    sync_store(&a, "watched").clear().unwrap();
    let message = listener.get_message().expect("the clear's message");
    assert_eq!(
        message.get_payload_bytes(),
        format!("1 {instance} 7:watched c").as_bytes()
    );
}

#[test]
fn an_unreadable_message_is_lost() {
    let Some((url, prefix, _cleanup)) = setup("watch-garbage") else {
        return;
    };
    let b = open(&url, &prefix);
    let (watcher, changes) = recorder();
    assert!(b.watch("c", watcher).unwrap());
    let mut publisher = raw(&url);
    for garbage in [
        &b"hello"[..],
        b"2 abc 1:c c",
        b"1 abc 9:c k 1:k",
        b"1 abc 1:c k 1:\xff",
    ] {
        redis::cmd("PUBLISH")
            .arg(format!("{prefix}!changes"))
            .arg(garbage)
            .query::<i64>(&mut publisher)
            .unwrap();
        assert_eq!(
            next(&changes, "an unreadable message"),
            Change::Lost,
            "{}",
            String::from_utf8_lossy(garbage)
        );
    }
    // Someone else's well-formed message is delivered.
    redis::cmd("PUBLISH")
        .arg(format!("{prefix}!changes"))
        .arg("1 someone 1:c k 1:k")
        .query::<i64>(&mut publisher)
        .unwrap();
    assert_eq!(next(&changes, "a readable message"), keys(&["k"]));
}

/// `a`'s stores of `k`, one every 100 ms, until `changes` gets `Keys([k])`: the changes before
/// it, which must all be `Lost`.
fn until_delivered(a: &RedisBackend, changes: &Receiver<Change>, k: &str) -> Vec<Change> {
    let store = sync_store(a, "c");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut before = Vec::new();
    while Instant::now() < deadline {
        // A store may fail while the server restarts.
        let _ = store.store(k, b"v", None);
        while let Ok(change) = changes.recv_timeout(Duration::from_millis(100)) {
            if change == keys(&[k]) {
                return before;
            }
            before.push(change);
        }
    }
    panic!("no change delivered within 10 s of resubscribing; got {before:?}");
}

#[test]
fn a_killed_subscription_is_lost_then_resubscribed() {
    let Some(server) = Server::start(&[]) else {
        return;
    };
    let url = server.url();
    let (a, b) = (open(&url, "p"), open(&url, "p"));
    let (a_watcher, a_changes) = recorder();
    let (b_watcher, b_changes) = recorder();
    assert!(b.watch("c", b_watcher).unwrap());
    assert!(a.watch("c", a_watcher).unwrap());

    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut raw(&url))
        .unwrap();
    assert_eq!(killed, 2, "both subscribers");
    assert_eq!(next(&b_changes, "the kill"), Change::Lost);
    assert_eq!(next(&a_changes, "the kill"), Change::Lost);

    let before = until_delivered(&a, &b_changes, "after-kill");
    assert!(
        before.iter().all(|change| *change == Change::Lost),
        "{before:?}"
    );
    // And A is subscribed again too.
    let before = until_delivered(&b, &a_changes, "after-kill-b");
    assert!(
        before.iter().all(|change| *change == Change::Lost),
        "{before:?}"
    );
}

#[test]
fn a_restarted_server_is_lost_then_resubscribed() {
    let Some(mut server) = Server::start(&[]) else {
        return;
    };
    let url = server.url();
    let (a, b) = (open(&url, "p"), open(&url, "p"));
    let (watcher, changes) = recorder();
    assert!(b.watch("c", watcher).unwrap());
    let (a_watcher, _a_changes) = recorder();
    assert!(a.watch("c", a_watcher).unwrap());

    server.restart();
    assert_eq!(next(&changes, "the restart"), Change::Lost);
    let before = until_delivered(&a, &changes, "after-restart");
    assert!(
        before.iter().all(|change| *change == Change::Lost),
        "{before:?}"
    );
}

#[test]
fn watching_a_server_that_is_gone_is_an_error_naming_it() {
    let Some(mut server) = Server::start(&[]) else {
        return;
    };
    let url = server.url();
    let backend = open(&url, "p");
    server.kill();
    let (watcher, _changes) = recorder();
    let start = Instant::now();
    let error = backend
        .watch("c", watcher)
        .expect_err("no subscription without a server");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "within connect_timeout (1 s): {:?}",
        start.elapsed()
    );
    let shown = error.to_string();
    assert!(shown.contains("\"redis\""), "names the backend: {shown}");
    assert!(
        shown.contains(&format!("127.0.0.1:{}", server.port)),
        "names the server: {shown}"
    );
    assert!(shown.contains("p!changes"), "names the channel: {shown}");
}

#[test]
fn on_a_cluster_every_containers_changes_reach_every_instance() {
    let url = std::env::var("KVCACHE_TEST_REDIS_CLUSTER_URL").unwrap_or_else(|_| {
        "redis+cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002".to_owned()
    });
    if let Err(error) = common::config(&url, "p").open() {
        common::unavailable::<()>(&format!(
            "the Redis Cluster of KVCACHE_TEST_REDIS_CLUSTER_URL ({error})"
        ));
        return;
    }
    let prefix = testkit::unique("watch-cluster");
    let (a, b) = (open(&url, &prefix), open(&url, &prefix));
    // Enough containers to land in the slots of every master.
    let containers: Vec<String> = (0..8).map(|n| format!("c{n}")).collect();
    let mut heard = Vec::new();
    for container in &containers {
        let (watcher, changes) = recorder();
        assert!(b.watch(container, watcher).unwrap());
        let (own, _) = recorder();
        assert!(a.watch(container, own).unwrap());
        heard.push(changes);
    }
    let ttl = Some(Duration::from_secs(60));
    for (container, changes) in containers.iter().zip(&heard) {
        let store = sync_store(&a, container);
        store.store("k", b"v", ttl).unwrap();
        assert_eq!(next(changes, "a store"), keys(&["k"]), "{container}");
        let entries: [(&str, &[u8]); 2] = [("k1", b"1"), ("k2", b"2")];
        store.store_many(&entries, ttl).unwrap();
        assert_eq!(next(changes, "a batch"), keys(&["k1", "k2"]), "{container}");
        store.invalidate("k1").unwrap();
        assert_eq!(next(changes, "a removal"), keys(&["k1"]), "{container}");
        store.clear().unwrap();
        assert_eq!(next(changes, "a clear"), Change::Cleared, "{container}");
        assert_eq!(store.retrieve("k2").unwrap(), None, "{container}");
    }
}
