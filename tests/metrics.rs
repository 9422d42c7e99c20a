//! Metrics export: containers' counters and histograms, scraped over HTTP from
//! `metrics-exporter-prometheus` listening on loopback.
//!
//! A process has one global recorder: every test here shares the one [`exporter`] installs, and
//! makes its containers after it (handles are registered when a container is made), under names
//! of its own.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use kvcache::{Backend, Config, Error, KvCache, ManualClock};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

mod common;

use common::Flaky;

/// The exporter's address, installing it on first use.
fn exporter() -> SocketAddr {
    static ADDRESS: OnceLock<SocketAddr> = OnceLock::new();
    *ADDRESS.get_or_init(|| {
        // The exporter binds the address it is given and does not tell a port it picked.
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let builder = PrometheusBuilder::new()
            .with_http_listener(address)
            .set_buckets_for_metric(
                Matcher::Prefix("kvcache_".to_owned()),
                &[0.001, 0.01, 0.1, 1.0],
            )
            .expect("buckets");
        // Installed from a thread outside any runtime, the exporter runs on a thread of its
        // own, not on the runtime of whichever test came first.
        std::thread::spawn(move || builder.install())
            .join()
            .expect("the installing thread")
            .expect("the exporter installs");
        address
    })
}

/// The body of a `GET /metrics` on the exporter.
fn scrape(address: SocketAddr) -> String {
    let mut stream = TcpStream::connect(address).expect("the exporter answers on loopback");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // HTTP/1.0: the server closes the connection after a body sent whole, never chunked.
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    body.to_owned()
}

/// The series of a scrape: (name, labels) → value.
type Series = BTreeMap<(String, BTreeMap<String, String>), f64>;

fn parse(body: &str) -> Series {
    let mut series = Series::new();
    for line in body.lines().filter(|line| !line.starts_with('#')) {
        let Some((metric, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (name, labels) = match metric.split_once('{') {
            Some((name, labels)) => (name, labels.trim_end_matches('}')),
            None => (metric, ""),
        };
        let labels = labels
            .split(',')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').expect("key=\"value\"");
                (key.to_owned(), value.trim_matches('"').to_owned())
            })
            .collect();
        let value = match value {
            "+Inf" => f64::INFINITY,
            value => value.parse().expect("a number"),
        };
        series.insert((name.to_owned(), labels), value);
    }
    series
}

/// The value of the series `name` with exactly `labels`.
fn value(series: &Series, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let labels = labels
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect();
    series.get(&(name.to_owned(), labels)).copied()
}

#[test]
fn counters_and_generator_times_of_an_in_memory_container() {
    let address = exporter();
    let cache = kvcache::init([
        ("backend.metrics_mem", "variable"),
        ("container.greetings.backend", "metrics_mem"),
    ])
    .unwrap();
    cache
        .register_generator("greetings", |name: &str| format!("Hello {name}!"))
        .unwrap();
    let greetings = cache.container::<String>("greetings").unwrap();
    assert_eq!(greetings.get("Peter").unwrap(), "Hello Peter!"); // a miss, generated
    assert_eq!(greetings.get("Peter").unwrap(), "Hello Peter!"); // a hit
    assert_eq!(greetings.get("Peter").unwrap(), "Hello Peter!"); // a hit
    assert_eq!(greetings.get("William").unwrap(), "Hello William!"); // a miss, generated
    assert_eq!(greetings.peek("nobody").unwrap(), None); // a miss
    let stats = greetings.stats();
    assert_eq!((stats.hits, stats.misses, stats.generations), (2, 3, 2));

    let body = scrape(address);
    let series = parse(&body);
    let labels = [("container", "greetings"), ("backend", "metrics_mem")];
    for (name, expected) in [
        ("kvcache_hits_total", 2.0),
        ("kvcache_misses_total", 3.0),
        ("kvcache_generations_total", 2.0),
        // Registered with the container, so they read 0 rather than being absent.
        ("kvcache_undecodable_total", 0.0),
        ("kvcache_generator_errors_total", 0.0),
        ("kvcache_backend_errors_total", 0.0),
        ("kvcache_waits_total", 0.0),
        ("kvcache_fast_failures_total", 0.0),
    ] {
        assert_eq!(
            value(&series, name, &labels),
            Some(expected),
            "{name} in\n{body}"
        );
    }
    assert_eq!(
        value(&series, "kvcache_generator_seconds_count", &labels),
        Some(2.0),
        "{body}"
    );
    let mut infinite = labels.to_vec();
    infinite.push(("le", "+Inf"));
    assert_eq!(
        value(&series, "kvcache_generator_seconds_bucket", &infinite),
        Some(2.0),
        "{body}"
    );
    for help in [
        "# HELP kvcache_hits_total Look-ups that found a value.",
        "# TYPE kvcache_hits_total counter",
        "# HELP kvcache_generator_seconds Time of each generator call",
        "# TYPE kvcache_generator_seconds histogram",
    ] {
        assert!(body.contains(help), "{help:?} in\n{body}");
    }
    // The in-memory backend's calls are not timed.
    assert!(
        !series
            .keys()
            .any(|(name, labels)| name.starts_with("kvcache_backend_seconds")
                && labels.get("container").map(String::as_str) == Some("greetings")),
        "{body}"
    );
}

#[test]
fn evictions_are_refreshed_from_the_in_memory_backend() {
    let address = exporter();
    let clock = ManualClock::new(0);
    let config = Config::from_pairs([
        ("backend.metrics_bounded", "variable"),
        ("backend.metrics_bounded.max_entries", "10"),
        ("container.brief.backend", "metrics_bounded"),
        ("container.brief.expire", "1s"),
        ("container.kept.backend", "metrics_bounded"),
    ])
    .unwrap();
    let cache = KvCache::builder(config)
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let brief = cache.container::<u32>("brief").unwrap();
    let kept = cache.container::<u32>("kept").unwrap();
    for i in 0..5 {
        brief.set(&i.to_string(), &i).unwrap();
    }
    clock.advance(Duration::from_secs(2));
    for i in 0..30 {
        kept.set(&i.to_string(), &i).unwrap();
    }
    let evictions = |series: &Series, container: &str, cause: &str| {
        value(
            series,
            "kvcache_evictions_total",
            &[
                ("container", container),
                ("backend", "metrics_bounded"),
                ("cause", cause),
            ],
        )
    };
    // Nobody reads `stats()`: the refresher, every second, sets them.
    let deadline = Instant::now() + Duration::from_secs(10);
    let series = loop {
        let series = parse(&scrape(address));
        if evictions(&series, "brief", "expired") == Some(5.0)
            && evictions(&series, "kept", "size") == Some(20.0)
        {
            break series;
        }
        assert!(
            Instant::now() < deadline,
            "the eviction counters were not refreshed: {series:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(evictions(&series, "brief", "size"), Some(0.0));
    assert_eq!(evictions(&series, "kept", "expired"), Some(0.0));
    let (brief, kept) = (brief.stats(), kept.stats());
    assert_eq!((brief.evicted_expired, brief.evicted_size), (5, 0));
    assert_eq!((kept.evicted_expired, kept.evicted_size), (0, 20));
}

#[test]
fn backend_call_times_by_operation_and_errors() {
    let address = exporter();
    let flaky = Arc::new(Flaky::default());
    let config = Config::from_pairs([("container.rows.backend", "metrics_db")]).unwrap();
    let cache = KvCache::builder(config)
        .backend("metrics_db", Arc::clone(&flaky) as Arc<dyn Backend>)
        .build()
        .unwrap();
    cache
        .register_fallible_generator("rows", |key: &str| match key {
            "bad" => Err("no such row"),
            key => Ok(key.len()),
        })
        .unwrap();
    let rows = cache.container::<usize>("rows").unwrap();
    assert_eq!(rows.get("one").unwrap(), 3); // retrieve, generate, store
    assert_eq!(rows.get("one").unwrap(), 3); // retrieve
    assert_eq!(rows.get_many(&["one", "three"]).unwrap(), [3, 5]); // retrieve_many, store
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let async_rows = rows.to_async();
    assert_eq!(runtime.block_on(async_rows.get("three")).unwrap(), 5); // retrieve, on the pool
    assert!(matches!(rows.get("bad"), Err(Error::Generator { .. }))); // retrieve, generate
    rows.remove("one").unwrap(); // invalidate
    rows.clear().unwrap(); // clear
    flaky.down.reads.store(true, Ordering::SeqCst);
    assert!(matches!(rows.get("one"), Err(Error::Backend { .. }))); // retrieve, failed
    flaky.down.reads.store(false, Ordering::SeqCst);
    let stats = rows.stats();
    assert_eq!((stats.generations, stats.generator_errors), (2, 1));
    assert_eq!(stats.backend_errors, 1);

    let body = scrape(address);
    let series = parse(&body);
    let labels = [("container", "rows"), ("backend", "metrics_db")];
    for (name, expected) in [
        ("kvcache_hits_total", 3.0),
        ("kvcache_misses_total", 3.0),
        ("kvcache_generations_total", 2.0),
        ("kvcache_generator_errors_total", 1.0),
        ("kvcache_backend_errors_total", 1.0),
        ("kvcache_generator_seconds_count", 3.0),
    ] {
        assert_eq!(
            value(&series, name, &labels),
            Some(expected),
            "{name} in\n{body}"
        );
    }
    for (operation, calls) in [
        ("retrieve", 5.0),
        ("retrieve_many", 1.0),
        ("store", 2.0),
        ("invalidate", 1.0),
        ("clear", 1.0),
    ] {
        let mut labels = labels.to_vec();
        labels.push(("operation", operation));
        assert_eq!(
            value(&series, "kvcache_backend_seconds_count", &labels),
            Some(calls),
            "{operation} in\n{body}"
        );
        let sum = value(&series, "kvcache_backend_seconds_sum", &labels).unwrap();
        assert!((0.0..10.0).contains(&sum), "{operation}: {sum} s");
    }
    assert!(
        body.contains("# HELP kvcache_backend_seconds Time of each call to the backend's native store, by operation"),
        "{body}"
    );
}
