// `-> Result<V, &'static str>`: `'static` references are allowed, here in the error type.

#[kvcache::generator("even")]
fn even(number: &str) -> Result<u32, &'static str> {
    match number.parse::<u32>() {
        Ok(n) if n % 2 == 0 => Ok(n),
        _ => Err("not an even number"),
    }
}

fn main() -> kvcache::Result<()> {
    let cache = kvcache::init([
        ("backend.mem", "variable"),
        ("container.even.backend", "mem"),
    ])?;
    let evens = cache.container::<u32>("even")?;
    assert_eq!(evens.get("42")?, 42);
    match evens.get("7") {
        Err(kvcache::Error::Generator { source, .. }) => {
            assert_eq!(source.to_string(), "not an even number")
        }
        other => panic!("expected Error::Generator, got {other:?}"),
    }
    Ok(())
}
