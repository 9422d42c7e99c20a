//! Every error names what was wrong and where.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use kvcache::{Backend, BackendConfig, BackendRegistration, Error, Result, Space, Store};
use serde::{Deserialize, Serialize, Serializer};

fn message(result: Result<impl std::fmt::Debug>) -> (Error, String) {
    let error = result.expect_err("an error");
    let text = error.to_string();
    (error, text)
}

fn assert_mentions(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{text:?} does not mention {part:?}");
    }
}

fn mem(extra: &[(&'static str, &'static str)]) -> Result<kvcache::KvCache> {
    let mut pairs = vec![("backend.mem", "variable"), ("container.c.backend", "mem")];
    pairs.extend_from_slice(extra);
    kvcache::init(pairs)
}

#[test]
fn not_found_names_the_container_and_key() {
    let cache = mem(&[]).unwrap();
    let (error, text) = message(cache.container::<String>("c").unwrap().get("Peter"));
    assert!(error.is_not_found());
    assert_mentions(&text, &["\"c\"", "\"Peter\"", "no generator"]);
}

#[test]
fn container_already_configured_names_it() {
    let cache = mem(&[]).unwrap();
    let (error, text) = message(cache.create_container("c", "mem", Default::default(), None));
    assert!(matches!(error, Error::ContainerAlreadyConfigured { .. }));
    assert_mentions(&text, &["\"c\"", "already configured"]);
    let options = kvcache::ContainerOptions::default().expire(Duration::from_secs(5));
    cache.create_container("d", "mem", options, None).unwrap();
    assert_eq!(cache.containers(), ["c", "d"]);
}

#[test]
fn unknown_container_lists_the_known_ones() {
    let cache = mem(&[("container.other.backend", "mem")]).unwrap();
    let (error, text) = message(cache.container::<String>("nope"));
    assert!(matches!(error, Error::UnknownContainer { .. }));
    assert_mentions(&text, &["\"nope\"", "c, other"]);
}

#[test]
fn unknown_backend_names_the_key_and_lists_the_known_kinds() {
    let (error, text) = message(kvcache::init([("backend.x", "nosuch")]));
    assert!(matches!(error, Error::UnknownBackend { .. }));
    assert_mentions(
        &text,
        &[
            "backend.x",
            "\"nosuch\"",
            "variable",
            "score.kvcache.backend.VariableCache",
        ],
    );
}

#[test]
fn invalid_config_names_the_key() {
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case<'_>] = &[
        (
            &[("container.c.expires", "5s")],
            &["container.c.expires", "unknown container setting"],
        ),
        (
            &[("container.c.expire", "soon")],
            &["container.c.expire", "\"soon\""],
        ),
        (
            &[("backend.mem.max_entrys", "5")],
            &["backend.mem.max_entrys", "unknown option", "max_entries"],
        ),
        (
            &[("backend.mem.max_entries", "lots")],
            &["backend.mem.max_entries", "\"lots\""],
        ),
        (
            &[("backend.mem.max_entries", "0")],
            &["backend.mem.max_entries", "at least 1"],
        ),
        (
            &[("container.d.expire", "5s")],
            &["container.d.backend", "required"],
        ),
        (
            &[("container.d.backend", "disk")],
            &["container.d.backend", "\"disk\"", "declared: mem"],
        ),
        (
            &[("containers.d.backend", "mem")],
            &["containers.d.backend", "unknown key"],
        ),
        (
            &[("backend.mem.kind", "variable")],
            &["backend.mem.kind", "twice"],
        ),
        (&[("backend.other.path", "x")], &["backend.other", "kind"]),
        (
            &[("container.c.generator", "nobody")],
            &["container.c.generator", "\"nobody\""],
        ),
        (
            &[("container.a.b.backend", "mem")],
            &["container.a.b.backend", "without dots"],
        ),
    ];
    for (extra, parts) in cases {
        let (error, text) = message(mem(extra));
        assert!(
            matches!(error, Error::InvalidConfig { .. }),
            "{extra:?}: {error:?}"
        );
        assert_mentions(&text, parts);
    }
    let (_, text) = message(kvcache::init([
        ("backend.mem", "variable"),
        ("backend.mem", "variable"),
    ]));
    assert_mentions(&text, &["backend.mem", "twice"]);
}

#[test]
fn toml_errors_name_the_line_or_the_key() {
    let (_, text) = message(kvcache::Config::from_toml_str("[backend.mem\nkind = 1"));
    assert_mentions(&text, &["TOML", "line 1"]);
    let (_, text) = message(kvcache::Config::from_toml_str(
        "[container.c]\nbackend = [\"a\"]",
    ));
    assert_mentions(&text, &["container.c.backend", "array"]);
    let (_, text) = message(kvcache::Config::from_toml_file("/nonexistent/kvcache.toml"));
    assert_mentions(&text, &["/nonexistent/kvcache.toml", "cannot read"]);
}

#[test]
fn type_mismatch_names_both_types() {
    let cache = mem(&[]).unwrap();
    cache
        .register_generator("c", |key: &str| key.to_owned())
        .unwrap();
    let (error, text) = message(cache.container::<u32>("c"));
    assert!(matches!(error, Error::TypeMismatch { .. }));
    assert_mentions(&text, &["\"c\"", "alloc::string::String", "`u32`"]);
}

#[test]
fn a_generator_error_names_the_container_and_key_and_keeps_its_source() {
    let cache = mem(&[]).unwrap();
    cache
        .register_fallible_generator("c", |key: &str| -> Result<String, io::Error> {
            Err(io::Error::other(format!("upstream refused {key}")))
        })
        .unwrap();
    let (error, text) = message(cache.container::<String>("c").unwrap().get("Peter"));
    assert_mentions(&text, &["\"c\"", "\"Peter\""]);
    let source = std::error::Error::source(&error).unwrap().to_string();
    assert_eq!(source, "upstream refused Peter");
}

/// A value whose serialisation always fails.
#[derive(Debug, Clone, Deserialize)]
struct Unencodable;

impl Serialize for Unencodable {
    fn serialize<S: Serializer>(&self, _: S) -> std::result::Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "this value refuses to be encoded",
        ))
    }
}

#[test]
fn a_codec_error_names_the_type() {
    let cache = mem(&[]).unwrap();
    let (error, text) = message(
        cache
            .container::<Unencodable>("c")
            .unwrap()
            .set("k", &Unencodable),
    );
    assert!(matches!(error, Error::Codec { .. }));
    assert_mentions(&text, &["\"c\"", "\"k\"", "Unencodable"]);
}

/// A backend whose every call fails, as an unreachable database's would.
#[derive(Debug)]
struct Broken;

fn down<T>(doing: &str) -> Result<T> {
    Err(Error::backend(
        "broken",
        format!("{doing} at db.example:5432"),
        io::Error::other("connection refused"),
    ))
}

impl Backend for Broken {
    fn open(&self, _: &str) -> Result<Space> {
        Ok(Space::Blocking(Arc::new(Broken)))
    }
    fn purge_expired(&self) -> Result<()> {
        down("purging")
    }
}

impl Store for Broken {
    fn store(&self, _: &str, _: &[u8], _: Option<Duration>) -> Result<()> {
        down("storing")
    }
    fn retrieve(&self, _: &str) -> Result<Option<Vec<u8>>> {
        down("retrieving")
    }
    fn invalidate(&self, _: &str) -> Result<()> {
        down("deleting")
    }
    fn clear(&self) -> Result<()> {
        down("clearing")
    }
}

fn open_broken(_: &BackendConfig) -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(Broken))
}

kvcache::register_backend!(BackendRegistration::new("broken", open_broken));

#[test]
fn a_backend_error_names_the_backend_and_what_it_was_doing() {
    let cache = kvcache::init([("backend.b", "broken"), ("container.c.backend", "b")]).unwrap();
    let container = cache.container::<String>("c").unwrap();
    let (error, text) = message(container.get("k"));
    assert!(matches!(error, Error::Backend { .. }));
    assert_mentions(&text, &["\"broken\"", "retrieving at db.example:5432"]);
    assert_eq!(
        std::error::Error::source(&error).unwrap().to_string(),
        "connection refused"
    );
    assert!(container.set("k", &"v".to_owned()).is_err());
    assert!(container.remove("k").is_err());
    assert_eq!(container.stats().backend_errors, 3);
    assert!(cache.purge_expired().is_err());

    // The async path says the same.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let awaited = container.to_async();
    let (error, async_text) = message(runtime.block_on(awaited.get("k")));
    assert!(matches!(error, Error::Backend { .. }));
    assert_eq!(async_text, text, "the same error on both paths");
    assert!(runtime.block_on(awaited.set("k", &"v".to_owned())).is_err());
    assert!(runtime.block_on(awaited.remove("k")).is_err());
    assert!(runtime.block_on(awaited.clear()).is_err());
    assert_eq!(container.stats().backend_errors, 7);
}

#[test]
fn a_malformed_outage_backoff_names_its_key() {
    let error = kvcache::init([
        ("backend.m", "variable"),
        ("backend.m.outage_backoff", "soon"),
    ])
    .unwrap_err();
    let (error, text) = message(Err::<(), _>(error));
    assert!(matches!(error, Error::InvalidConfig { .. }));
    assert_mentions(&text, &["backend.m.outage_backoff", "soon"]);
    // Every kind takes it, since the core reads it.
    kvcache::init([
        ("backend.m", "variable"),
        ("backend.m.outage_backoff", "250ms"),
    ])
    .unwrap();
}
