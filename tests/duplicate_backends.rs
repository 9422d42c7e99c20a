//! Two registrations of one backend kind or alias: an error naming both, never last-one-wins.
//! (A binary of its own: the duplicates would break every other test's `variable` backend.)

use kvcache::Error;

mod first {
    fn open(_: &kvcache::BackendConfig) -> kvcache::Result<std::sync::Arc<dyn kvcache::Backend>> {
        unreachable!("a duplicate kind is never opened")
    }
    kvcache::register_backend!(kvcache::BackendRegistration::new("twice", open));
}

mod second {
    fn open(_: &kvcache::BackendConfig) -> kvcache::Result<std::sync::Arc<dyn kvcache::Backend>> {
        unreachable!("a duplicate kind is never opened")
    }
    kvcache::register_backend!(
        kvcache::BackendRegistration::new("twice", open).aliases(&["variable"])
    );
}

#[test]
fn a_duplicate_backend_kind_names_both_registrations() {
    let error = kvcache::init([("backend.t", "twice")]).unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, Error::DuplicateRegistration { .. }));
    assert_mentions(
        &text,
        &[
            "backend kind \"twice\"",
            "duplicate_backends::first",
            "duplicate_backends::second",
        ],
    );
    // An alias that claims another crate's kind is a duplicate too.
    let text = kvcache::init([("backend.v", "variable")])
        .unwrap_err()
        .to_string();
    assert_mentions(
        &text,
        &[
            "\"variable\"",
            "kvcache_variable",
            "duplicate_backends::second",
        ],
    );
}

fn assert_mentions(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{text:?} does not mention {part:?}");
    }
}

#[test]
fn kinds_without_a_duplicate_still_open() {
    assert!(kvcache::init([("backend.v", "score.kvcache.backend.VariableCache")]).is_ok());
}
