//! Container semantics checked against a plain model (a map with expiry) over random operations.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kvcache::{Clock as _, Config, KvCache, ManualClock};
use proptest::prelude::*;

const EXPIRE_MS: u64 = 10_000;
const CONTAINERS: [&str; 2] = ["first", "second"];

#[derive(Debug, Clone)]
enum Op {
    Get(usize, &'static str),
    Peek(usize, &'static str),
    Set(usize, &'static str, u8),
    Remove(usize, &'static str),
    Clear(usize),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let container = 0..CONTAINERS.len();
    let key = prop::sample::select(&["a", "b", "c", "a:b", ""][..]);
    prop_oneof![
        4 => (container.clone(), key.clone()).prop_map(|(c, k)| Op::Get(c, k)),
        2 => (container.clone(), key.clone()).prop_map(|(c, k)| Op::Peek(c, k)),
        3 => (container.clone(), key.clone(), any::<u8>()).prop_map(|(c, k, v)| Op::Set(c, k, v)),
        1 => (container.clone(), key).prop_map(|(c, k)| Op::Remove(c, k)),
        1 => container.prop_map(Op::Clear),
        2 => (0..=EXPIRE_MS + 2_000).prop_map(Op::Advance),
    ]
}

/// What the cache should hold: (container, key) → (value, expires at).
#[derive(Default)]
struct Model {
    entries: HashMap<(usize, &'static str), (String, u64)>,
    now: u64,
}

impl Model {
    fn live(&self, container: usize, key: &'static str) -> Option<String> {
        self.entries
            .get(&(container, key))
            .filter(|(_, expires)| self.now < *expires)
            .map(|(value, _)| value.clone())
    }

    fn put(&mut self, container: usize, key: &'static str, value: String) {
        self.entries
            .insert((container, key), (value, self.now + EXPIRE_MS));
    }
}

fn generated(container: usize, key: &str) -> String {
    format!("generated {} {key}", CONTAINERS[container])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn containers_behave_like_a_map_with_expiry(ops in prop::collection::vec(op(), 1..60)) {
        let clock = ManualClock::new(1_000_000);
        let config = Config::from_pairs([
            ("backend.mem", "variable"),
            ("container.first.backend", "mem"),
            ("container.first.expire", "10s"),
            ("container.second.backend", "mem"),
            ("container.second.expire", "10 seconds"),
        ]).unwrap();
        let cache = KvCache::builder(config).clock(Arc::new(clock.clone())).build().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        for (index, name) in CONTAINERS.iter().enumerate() {
            let calls = Arc::clone(&calls);
            cache.register_generator(name, move |key: &str| {
                calls.fetch_add(1, Ordering::SeqCst);
                generated(index, key)
            }).unwrap();
        }
        let containers: Vec<_> = CONTAINERS.iter().map(|n| cache.container::<String>(n).unwrap()).collect();
        let mut model = Model { now: clock.now_millis(), ..Model::default() };
        let mut expected_calls = 0;

        for op in ops {
            match op {
                Op::Get(c, k) => {
                    let expected = match model.live(c, k) {
                        Some(value) => value,
                        None => {
                            expected_calls += 1;
                            model.put(c, k, generated(c, k));
                            generated(c, k)
                        }
                    };
                    prop_assert_eq!(containers[c].get(k).unwrap(), expected, "get {:?}", (c, k));
                    prop_assert_eq!(calls.load(Ordering::SeqCst), expected_calls, "generator calls");
                }
                Op::Peek(c, k) => prop_assert_eq!(containers[c].peek(k).unwrap(), model.live(c, k)),
                Op::Set(c, k, v) => {
                    containers[c].set(k, &v.to_string()).unwrap();
                    model.put(c, k, v.to_string());
                }
                Op::Remove(c, k) => {
                    containers[c].remove(k).unwrap();
                    model.entries.remove(&(c, k));
                }
                Op::Clear(c) => {
                    containers[c].clear().unwrap();
                    model.entries.retain(|(container, _), _| *container != c);
                }
                Op::Advance(ms) => {
                    clock.advance(Duration::from_millis(ms));
                    model.now += ms;
                }
            }
        }
    }
}
