//! The per-container policy for backend errors: `fail` returns them, `generate` fails open.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

mod common;

use common::Flaky;
use kvcache::{Backend, Config, Error, KvCache};

/// A cache with container `c` (policy `policy`) on a flaky backend, and its generator's call count.
fn setup(policy: &str) -> (KvCache, Arc<Flaky>, Arc<AtomicUsize>) {
    let flaky = Arc::new(Flaky::default());
    let config = Config::from_pairs([
        ("container.c.backend", "flaky"),
        ("container.c.on_backend_error", policy),
        ("container.plain.backend", "flaky"),
        ("container.plain.on_backend_error", policy),
    ])
    .unwrap();
    let cache = KvCache::builder(config)
        .backend("flaky", Arc::clone(&flaky) as Arc<dyn Backend>)
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    cache
        .register_generator("c", move |key: &str| {
            counter.fetch_add(1, Ordering::SeqCst);
            format!("fresh {key}")
        })
        .unwrap();
    (cache, flaky, calls)
}

#[test]
fn fail_is_the_default_and_returns_the_backend_error() {
    let config = Config::from_pairs([("container.c.backend", "flaky")]).unwrap();
    let flaky = Arc::new(Flaky::default());
    let cache = KvCache::builder(config)
        .backend("flaky", Arc::clone(&flaky) as Arc<dyn Backend>)
        .build()
        .unwrap();
    cache
        .register_generator("c", |key: &str| key.to_owned())
        .unwrap();
    let c = cache.container::<String>("c").unwrap();
    assert_eq!(c.on_backend_error(), kvcache::OnBackendError::Fail);
    flaky.down.reads.store(true, Ordering::SeqCst);
    let error = c.get("k").unwrap_err();
    assert!(matches!(error, Error::Backend { .. }), "{error}");
    assert!(
        error.to_string().contains("retrieving at 127.0.0.1:1"),
        "{error}"
    );
    assert_eq!(c.stats().backend_errors, 1);
    assert_eq!(c.stats().generations, 0, "fail does not generate");
}

#[test]
fn fail_returns_a_store_error_too() {
    let (cache, flaky, _) = setup("fail");
    let c = cache.container::<String>("c").unwrap();
    flaky.down.writes.store(true, Ordering::SeqCst);
    assert!(matches!(c.get("k").unwrap_err(), Error::Backend { .. }));
    assert_eq!(
        c.get_many(&["a", "b"]).unwrap_err().to_string(),
        c.get("a").unwrap_err().to_string()
    );
}

#[test]
fn generate_returns_the_generators_value_and_stores_nothing_while_reads_fail() {
    let (cache, flaky, calls) = setup("generate");
    let c = cache.container::<String>("c").unwrap();
    flaky.down.reads.store(true, Ordering::SeqCst);
    let warnings = warnings_during(|| {
        assert_eq!(c.get("k").unwrap(), "fresh k");
        assert_eq!(c.get_many(&["a", "b"]).unwrap(), ["fresh a", "fresh b"]);
    });
    assert_eq!(warnings, 2, "each failure is reported at warn level");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    flaky.down.reads.store(false, Ordering::SeqCst);
    assert_eq!(c.peek("k").unwrap(), None, "nothing was stored");
    assert_eq!(
        c.get("k").unwrap(),
        "fresh k",
        "once the backend is back, get stores again"
    );
    assert_eq!(c.peek("k").unwrap().as_deref(), Some("fresh k"));
    let stats = c.stats();
    assert_eq!((stats.backend_errors, stats.generations), (2, 4));
}

#[test]
fn generate_returns_the_value_when_only_the_store_fails() {
    let (cache, flaky, _) = setup("generate");
    let c = cache.container::<String>("c").unwrap();
    flaky.down.writes.store(true, Ordering::SeqCst);
    let warnings = warnings_during(|| assert_eq!(c.get("k").unwrap(), "fresh k"));
    assert_eq!(warnings, 1);
    assert_eq!(c.peek("k").unwrap(), None);
}

#[test]
fn generate_still_returns_errors_it_cannot_answer() {
    let (cache, flaky, _) = setup("generate");
    flaky.down.reads.store(true, Ordering::SeqCst);
    flaky.down.writes.store(true, Ordering::SeqCst);
    let plain = cache.container::<String>("plain").unwrap();
    assert!(
        matches!(plain.get("k").unwrap_err(), Error::Backend { .. }),
        "no generator to fall back on"
    );
    let c = cache.container::<String>("c").unwrap();
    assert!(
        matches!(c.peek("k").unwrap_err(), Error::Backend { .. }),
        "peek never generates"
    );
    assert!(
        c.set("k", &"v".to_owned()).is_err(),
        "writes report their failure"
    );
    assert!(c.remove("k").is_err());
}

#[test]
fn an_unknown_policy_is_a_config_error_naming_the_key() {
    let error = Config::from_pairs([
        ("container.c.backend", "m"),
        ("container.c.on_backend_error", "ignore"),
    ])
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("container.c.on_backend_error") && error.contains("\"ignore\""),
        "{error}"
    );
}

/// Counts the warn-level events `f` emits.
fn warnings_during(f: impl FnOnce()) -> usize {
    let subscriber = WarnCounter::default();
    let count = Arc::clone(&subscriber.warnings);
    tracing::subscriber::with_default(subscriber, f);
    count.load(Ordering::SeqCst)
}

#[derive(Default)]
struct WarnCounter {
    warnings: Arc<AtomicUsize>,
    spans: AtomicUsize,
}

impl tracing::Subscriber for WarnCounter {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(self.spans.fetch_add(1, Ordering::SeqCst) as u64 + 1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() == tracing::Level::WARN {
            self.warnings.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
