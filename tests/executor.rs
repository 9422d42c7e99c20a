//! The async path never blocks its executor: a backend whose calls block their thread for
//! 200 ms, ten gets on a current-thread runtime, and a ticker that must keep ticking. A test
//! binary of its own, so that no other test's threads compete with the ticker for the CPU.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::Counting;
use kvcache::{Backend, Config, KvCache};

#[test]
fn the_executor_keeps_ticking_while_blocking_calls_run() {
    // Every store call blocks its thread for 200 ms; on a current-thread runtime, a ticker task
    // must keep ticking every 10 ms while ten gets run.
    let backend = Arc::new(Counting::blocking_for(Duration::from_millis(200)));
    let config = Config::from_pairs([("container.c.backend", "slow")]).unwrap();
    let cache = KvCache::builder(config)
        .backend("slow", Arc::clone(&backend) as Arc<dyn Backend>)
        .build()
        .unwrap();
    cache
        .register_generator("c", |key: &str| format!("value of {key}"))
        .unwrap();
    let container = cache.async_container::<String>("c").unwrap();
    let mut largest_gap = Duration::ZERO;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let test = async {
        let ticker = tokio::spawn(async {
            let mut largest = Duration::ZERO;
            let mut last = Instant::now();
            for _ in 0..60 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                largest = largest.max(last.elapsed());
                last = Instant::now();
            }
            largest
        });
        let gets: Vec<_> = (0..10)
            .map(|i| {
                let container = container.clone();
                tokio::spawn(async move { container.get(&format!("k{i}")).await })
            })
            .collect();
        for (i, get) in gets.into_iter().enumerate() {
            assert_eq!(get.await.unwrap().unwrap(), format!("value of k{i}"));
        }
        largest_gap = ticker.await.unwrap();
    };
    runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(60), test).await })
        .expect("the test hung");
    assert!(
        largest_gap < Duration::from_millis(50),
        "the ticker waited {largest_gap:?} between ticks: a blocking call ran on the executor"
    );
    assert_eq!(backend.calls.retrieves.load(Ordering::SeqCst), 10);
}
