//! `#[kvcache::generator]` functions as `kvcache::init` hands them to containers.
#![cfg(all(feature = "derive", feature = "variable"))]

use std::num::ParseIntError;
use std::sync::atomic::{AtomicUsize, Ordering};

use kvcache::{Error, KvCache};

#[kvcache::generator("greeting")]
fn greeting(name: &str) -> String {
    format!("Hello {name}!")
}

/// Declared by no configuration below: it gets a container of its own.
#[kvcache::generator("shout")]
fn shout(word: &str) -> String {
    format!("{}!", word.to_uppercase())
}

/// Picked for another container with `container.NAME.generator = polite`.
#[kvcache::generator("polite")]
fn polite(name: &str) -> String {
    format!("Good day, {name}.")
}

static PORT_CALLS: AtomicUsize = AtomicUsize::new(0);

#[kvcache::generator("port")]
fn port(text: &str) -> Result<u16, ParseIntError> {
    PORT_CALLS.fetch_add(1, Ordering::SeqCst);
    text.parse()
}

fn cache(extra: &[(&str, &str)]) -> KvCache {
    let base = [
        ("backend.mem", "variable"),
        ("container.greeting.backend", "mem"),
        ("container.port.backend", "mem"),
    ];
    kvcache::init(base.iter().chain(extra).copied()).expect("a valid configuration")
}

#[test]
fn a_declared_container_gets_the_generator_of_its_name() -> kvcache::Result<()> {
    let greetings = cache(&[]).container::<String>("greeting")?;
    assert_eq!(greetings.backend(), "mem");
    assert_eq!(greetings.get("Peter")?, "Hello Peter!");
    assert_eq!(greetings.get("Peter")?, "Hello Peter!");
    assert_eq!(greetings.stats().generations, 1);
    Ok(())
}

#[test]
fn an_undeclared_container_is_made_for_its_generator() -> kvcache::Result<()> {
    let cache = cache(&[]);
    assert!(
        cache.containers().contains(&"shout".to_owned()),
        "{:?}",
        cache.containers()
    );
    let shouts = cache.container::<String>("shout")?;
    assert_eq!(shouts.get("hey")?, "HEY!");
    assert_eq!(shouts.peek("hey")?.as_deref(), Some("HEY!"));
    assert_eq!(shouts.stats().generations, 1);
    Ok(())
}

#[test]
fn another_value_type_than_the_generators_is_a_type_mismatch() {
    let error = cache(&[]).container::<u32>("greeting").unwrap_err();
    assert!(
        matches!(&error, Error::TypeMismatch { container, expected: "u32", found, .. }
            if container == "greeting" && found.ends_with("String")),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("u32") && message.contains("String"),
        "{message}"
    );
}

#[test]
fn a_fallible_generators_error_reaches_the_caller_and_stores_nothing() -> kvcache::Result<()> {
    let ports = cache(&[]).container::<u16>("port")?;
    assert_eq!(ports.get("8080")?, 8080);
    let calls = PORT_CALLS.load(Ordering::SeqCst);
    for attempt in 1..=2 {
        match ports.get("eighty") {
            Err(Error::Generator {
                container,
                key,
                source,
            }) => {
                assert_eq!((container.as_str(), key.as_str()), ("port", "eighty"));
                assert!(source.is::<ParseIntError>(), "{source}");
            }
            other => panic!("expected Error::Generator, got {other:?}"),
        }
        assert_eq!(ports.peek("eighty")?, None);
        assert_eq!(
            PORT_CALLS.load(Ordering::SeqCst),
            calls + attempt,
            "the generator runs on every miss"
        );
    }
    Ok(())
}

#[test]
fn the_configuration_can_pick_a_generator_by_its_name() -> kvcache::Result<()> {
    let cache = cache(&[
        ("container.salutation.backend", "mem"),
        ("container.salutation.generator", "polite"),
    ]);
    let salutations = cache.container::<String>("salutation")?;
    assert_eq!(salutations.get("Ada")?, "Good day, Ada.");
    assert_eq!(salutations.backend(), "mem");
    Ok(())
}
