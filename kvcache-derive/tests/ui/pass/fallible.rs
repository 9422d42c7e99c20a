// `fn(&str) -> Result<V, E>`: a fallible generator; its error reaches the caller.

use std::num::ParseIntError;

#[kvcache::generator("port")]
fn port(text: &str) -> Result<u16, ParseIntError> {
    text.parse()
}

fn main() -> kvcache::Result<()> {
    let cache = kvcache::init([
        ("backend.mem", "variable"),
        ("container.port.backend", "mem"),
    ])?;
    let ports = cache.container::<u16>("port")?;
    assert_eq!(ports.get("8080")?, 8080);
    match ports.get("eighty") {
        Err(kvcache::Error::Generator { key, source, .. }) => {
            assert_eq!(key, "eighty");
            assert!(source.is::<ParseIntError>(), "{source}");
        }
        other => panic!("expected Error::Generator, got {other:?}"),
    }
    Ok(())
}
