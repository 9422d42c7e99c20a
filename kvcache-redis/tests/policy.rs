//! The backend-error policy on a real backend that fails: a private `redis-server` stopped
//! mid-test.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::Server;
use kvcache_core::Error;

/// A cache with containers `open` (fails open) and `strict` (the default policy) on `url`.
fn cache(url: &str) -> (kvcache_core::KvCache, Arc<AtomicUsize>) {
    let cache = kvcache_core::init([
        ("backend.r", "redis"),
        ("backend.r.url", url),
        ("backend.r.connect_timeout", "300ms"),
        ("backend.r.command_timeout", "300ms"),
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
    assert!(matches!(error, Error::Backend { .. }), "{error}");
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
