//! The configuration reader on arbitrary input: it never panics, and every error names a key.

use std::sync::Arc;
use std::time::Duration;

use kvcache_core::{
    Backend, BackendConfig, BackendRegistration, Config, Error, KvCache, Result, Space, Store,
};
use proptest::prelude::*;

/// A kind that opens without I/O, so that building a cache from any configuration is cheap.
#[derive(Debug)]
struct Nothing;

impl Backend for Nothing {
    fn open(&self, _: &str) -> Result<Space> {
        Ok(Space::Blocking(Arc::new(Nothing)))
    }
    fn purge_expired(&self) -> Result<()> {
        Ok(())
    }
}

impl Store for Nothing {
    fn store(&self, _: &str, _: &[u8], _: Option<Duration>) -> Result<()> {
        Ok(())
    }
    fn retrieve(&self, _: &str) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }
    fn invalidate(&self, _: &str) -> Result<()> {
        Ok(())
    }
    fn clear(&self) -> Result<()> {
        Ok(())
    }
}

fn open(config: &BackendConfig) -> Result<Arc<dyn Backend>> {
    config.duration("timeout")?;
    config.parse::<u32>("size", "a whole number")?;
    Ok(Arc::new(Nothing))
}

kvcache_core::register_backend!(
    BackendRegistration::new("nothing", open).options(&["timeout", "size"])
);

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("backend".to_owned()),
        Just("container".to_owned()),
        Just("kind".to_owned()),
        Just("expire".to_owned()),
        Just("generator".to_owned()),
        Just("on_backend_error".to_owned()),
        Just("timeout".to_owned()),
        Just("size".to_owned()),
        Just("m".to_owned()),
        Just("c".to_owned()),
        "[a-z_ .]{0,5}",
        "\\PC{0,4}",
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 1..5).prop_map(|parts| parts.join("."))
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("nothing".to_owned()),
        Just("m".to_owned()),
        Just("fail".to_owned()),
        Just("generate".to_owned()),
        "[0-9]{1,25}",
        "[0-9]{1,4} ?(ms|s|sec|seconds|m|min|h|hours|d|days|w|weeks|milliseconds|parsecs)",
        "\\PC{0,12}",
    ]
}

fn check_error(error: &Error, keys: &[String]) {
    match error {
        Error::InvalidConfig { key, message }
        | Error::UnknownBackend {
            key, kind: message, ..
        } => {
            assert!(!message.is_empty(), "{error:?}");
            let named = keys.iter().any(|k| k.trim() == key)
                || key.starts_with("backend.")
                || key.starts_with("container.");
            assert!(
                named,
                "the error names no key of the configuration: {error}"
            );
        }
        other => panic!("unexpected error kind: {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_flat_map_reads_or_fails_naming_a_key(pairs in prop::collection::vec((key(), value()), 0..8)) {
        let keys: Vec<String> = pairs.iter().map(|(k, _)| k.clone()).collect();
        match Config::from_pairs(pairs) {
            Ok(config) => {
                if let Err(error) = KvCache::new(config) {
                    check_error(&error, &keys);
                }
            }
            Err(error) => check_error(&error, &keys),
        }
    }

    #[test]
    fn any_toml_text_reads_or_fails_clearly(
        lines in prop::collection::vec(
            prop_oneof![
                (key(), value()).prop_map(|(k, v)| format!("{k} = {v:?}")),
                (key(), "-?[0-9]{1,20}").prop_map(|(k, v)| format!("{k} = {v}")),
                key().prop_map(|k| format!("[{k}]")),
                key().prop_map(|k| format!("{k} = [1, 2]")),
                "\\PC{0,20}",
            ],
            0..8,
        )
    ) {
        let text = lines.join("\n");
        match Config::from_toml_str(&text) {
            Ok(config) => {
                if let Err(error) = KvCache::new(config) {
                    check_error(&error, &[]);
                }
            }
            Err(Error::InvalidConfig { key, message }) => {
                let syntax = key == "the TOML configuration" && message.contains("line");
                let first = key.split('.').next().unwrap_or_default();
                let named = !first.is_empty() && text.contains(first);
                prop_assert!(syntax || named, "{key}: {message}");
            }
            Err(other) => prop_assert!(false, "unexpected error kind: {other:?}"),
        }
    }
}
