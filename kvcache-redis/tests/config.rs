//! Configuration errors: each names its key and what was expected, before any connection.

use kvcache_core::Error;
// Links the crate, and with it its registration of the `redis` kind.
use kvcache_redis as _;

/// The error of building a cache whose `backend.r` has `options`.
fn error(options: &[(&str, &str)]) -> Error {
    let mut pairs = vec![("backend.r".to_owned(), "redis".to_owned())];
    for (option, value) in options {
        pairs.push((format!("backend.r.{option}"), (*value).to_owned()));
    }
    kvcache_core::init(pairs).expect_err("a configuration error")
}

fn assert_config_error(options: &[(&str, &str)], key: &str, says: &str) {
    match error(options) {
        Error::InvalidConfig {
            key: found,
            message,
        } => {
            assert_eq!(found, key, "{message}");
            assert!(message.contains(says), "{key}: {message}");
        }
        other => panic!("expected an error of {key}, got {other:?}"),
    }
}

#[test]
fn rediss_is_refused_with_the_reason() {
    assert_config_error(
        &[("url", "rediss://:secret@127.0.0.1:6380")],
        "backend.r.url",
        "rediss:// (TLS) is not supported",
    );
}

#[test]
fn other_schemes_and_non_urls_are_refused() {
    assert_config_error(
        &[("url", "http://127.0.0.1:6379")],
        "backend.r.url",
        "unknown scheme \"http\"",
    );
    assert_config_error(
        &[("url", "127.0.0.1:6379")],
        "backend.r.url",
        "expected a URL such as",
    );
    assert_config_error(
        &[("url", "redis://:secret@127.0.0.1:notaport")],
        "backend.r.url",
        "not a usable Redis URL",
    );
}

#[test]
fn a_malformed_url_never_shows_its_password() {
    for url in [
        "redis://:secret@127.0.0.1:notaport",
        "rediss://user:secret@127.0.0.1",
        "redis://user:secret@[::1/0",
        "secret",
    ] {
        let error = error(&[("url", url)]);
        assert!(matches!(error, Error::InvalidConfig { .. }), "{error:?}");
        assert!(
            !format!("{error} {error:?}").contains("secret"),
            "{error:?}"
        );
    }
}

#[test]
fn bad_prefixes_are_refused() {
    for prefix in ["", "a{b", "a}"] {
        assert_config_error(
            &[("prefix", prefix)],
            "backend.r.prefix",
            "expected a non-empty prefix",
        );
    }
}

#[test]
fn bad_pool_sizes_and_timeouts_are_refused() {
    assert_config_error(&[("pool_size", "0")], "backend.r.pool_size", "at least 1");
    assert_config_error(
        &[("pool_size", "many")],
        "backend.r.pool_size",
        "a whole number",
    );
    assert_config_error(
        &[("connect_timeout", "0")],
        "backend.r.connect_timeout",
        "above 0",
    );
    assert_config_error(
        &[("command_timeout", "2 days")],
        "backend.r.command_timeout",
        "at most 1 day",
    );
    assert_config_error(
        &[("command_timeout", "soon")],
        "backend.r.command_timeout",
        "expected an interval",
    );
}

#[test]
fn unknown_options_are_refused_with_the_accepted_ones() {
    assert_config_error(
        &[("ttl", "5s")],
        "backend.r.ttl",
        "accepted: url, prefix, pool_size, connect_timeout, command_timeout",
    );
}

#[test]
fn pool_size_of_the_pooled_versions_is_still_accepted() {
    // Nothing listens there: the error is the connect's, so the options were accepted.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    let error = kvcache_core::init([
        ("backend.r", "redis"),
        ("backend.r.url", url.as_str()),
        ("backend.r.pool_size", "16"),
        ("backend.r.connect_timeout", "1s"),
    ])
    .expect_err("nothing listens");
    assert!(
        matches!(error, Error::Backend { .. } | Error::Unavailable { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("connection refused"), "{error}");
}
