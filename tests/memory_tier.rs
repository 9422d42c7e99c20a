//! The in-memory tier through containers: hits hand out the value held, not a decoded copy;
//! containers and value types sharing one tier stay apart; evictions are counted by cause.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kvcache::{Config, KvCache, ManualClock};
use serde::{Deserialize, Deserializer, Serialize};

fn cache(pairs: &[(&str, &str)], clock: &ManualClock) -> KvCache {
    let config = Config::from_pairs(pairs.iter().copied()).unwrap();
    KvCache::builder(config)
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap()
}

static DECODES: AtomicUsize = AtomicUsize::new(0);

/// A value that counts how often it is decoded.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Counted(String);

impl<'de> Deserialize<'de> for Counted {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        DECODES.fetch_add(1, Ordering::SeqCst);
        String::deserialize(deserializer).map(Counted)
    }
}

#[test]
fn a_hit_clones_the_held_value_and_never_decodes() {
    let clock = ManualClock::new(0);
    let cache = cache(
        &[("backend.mem", "variable"), ("container.c.backend", "mem")],
        &clock,
    );
    cache
        .register_generator("c", |key: &str| Counted(format!("value of {key}")))
        .unwrap();
    let container = cache.container::<Counted>("c").unwrap();
    container.get("k").unwrap();
    container.set("other", &Counted("set".into())).unwrap();
    let before = DECODES.load(Ordering::SeqCst);
    for _ in 0..100 {
        assert_eq!(container.get("k").unwrap(), Counted("value of k".into()));
        assert_eq!(
            container.peek("other").unwrap(),
            Some(Counted("set".into()))
        );
    }
    assert_eq!(container.get_many(&["k", "other"]).unwrap().len(), 2);
    assert_eq!(DECODES.load(Ordering::SeqCst), before, "a hit decoded");
    assert_eq!(container.stats().hits, 202);
}

#[test]
fn containers_and_value_types_on_one_tier_stay_apart() {
    let clock = ManualClock::new(0);
    let cache = cache(
        &[
            ("backend.mem", "variable"),
            ("container.numbers.backend", "mem"),
            ("container.words.backend", "mem"),
        ],
        &clock,
    );
    let numbers = cache.container::<u64>("numbers").unwrap();
    let words = cache.container::<String>("words").unwrap();
    numbers.set("k", &42).unwrap();
    words.set("k", &"forty-two".to_owned()).unwrap();
    assert_eq!(numbers.peek("k").unwrap(), Some(42));
    assert_eq!(words.peek("k").unwrap(), Some("forty-two".to_owned()));
    // Another value type on the same container never gets the value held as a u64.
    let as_text = cache.container::<String>("numbers").unwrap();
    assert_eq!(as_text.peek("k").unwrap(), None);
    assert_eq!(as_text.stats().undecodable, 1);
    let as_signed = cache.container::<i64>("numbers").unwrap();
    assert_eq!(as_signed.peek("k").unwrap(), None);
    words.clear().unwrap();
    assert_eq!(
        numbers.peek("k").unwrap(),
        Some(42),
        "a clear of one container only"
    );
}

#[test]
fn bytes_stored_through_the_byte_view_read_as_values() {
    let clock = ManualClock::new(0);
    let cache = cache(
        &[("backend.mem", "variable"), ("container.c.backend", "mem")],
        &clock,
    );
    let container = cache.container::<String>("c").unwrap();
    container.set("k", &"hello".to_owned()).unwrap();
    let bytes = {
        let space = cache.backend("mem").unwrap().open("c").unwrap();
        let store = space.sync_store();
        let bytes = store.retrieve("k").unwrap().expect("held");
        store.store("copy", &bytes, None).unwrap();
        bytes
    };
    assert!(bytes.len() > 5, "header and value");
    assert_eq!(container.peek("copy").unwrap(), Some("hello".to_owned()));
}

#[test]
fn evictions_are_counted_by_cause() {
    let clock = ManualClock::new(0);
    let cache = cache(
        &[
            ("backend.mem", "variable"),
            ("backend.mem.max_entries", "10"),
            ("container.brief.backend", "mem"),
            ("container.brief.expire", "1s"),
            ("container.kept.backend", "mem"),
        ],
        &clock,
    );
    let brief = cache.container::<u32>("brief").unwrap();
    let kept = cache.container::<u32>("kept").unwrap();
    for i in 0..5 {
        brief.set(&i.to_string(), &i).unwrap();
    }
    clock.advance(Duration::from_secs(2));
    for i in 0..30 {
        kept.set(&i.to_string(), &i).unwrap();
    }
    let (brief, kept) = (brief.stats(), kept.stats());
    assert_eq!((brief.evicted_expired, brief.evicted_size), (5, 0));
    assert_eq!((kept.evicted_expired, kept.evicted_size), (0, 20));
}

#[test]
fn a_malformed_bound_names_its_key() {
    for (option, value) in [
        ("max_bytes", "lots"),
        ("max_entries", "0"),
        ("max_bytes", "0"),
    ] {
        let key = format!("backend.mem.{option}");
        let Err(error) = kvcache::init([("backend.mem", "variable"), (key.as_str(), value)]) else {
            panic!("{key} = {value} was accepted");
        };
        assert!(error.to_string().contains(&key), "{error}");
    }
}

#[test]
fn a_weigher_sets_what_the_byte_bound_counts() {
    let clock = ManualClock::new(0);
    let cache = cache(
        &[
            ("backend.mem", "variable"),
            ("backend.mem.max_bytes", "10 KiB"),
            ("container.blobs.backend", "mem"),
        ],
        &clock,
    );
    // Each value claims 4 KiB whatever its encoding: two fit, the third evicts one.
    cache
        .register_weigher("blobs", |_: &str, _: &Vec<u8>| 4 << 10)
        .unwrap();
    let blobs = cache.container::<Vec<u8>>("blobs").unwrap();
    for key in ["a", "b", "c"] {
        blobs.set(key, &vec![1; 10]).unwrap();
    }
    let held = ["a", "b", "c"]
        .iter()
        .filter(|key| blobs.peek(key).unwrap().is_some())
        .count();
    assert_eq!(held, 2);
    assert_eq!(blobs.stats().evicted_size, 1);
    assert!(
        cache
            .register_weigher("nothing", |_: &str, _: &u8| 1)
            .is_err()
    );
}
