// A type alias of another name than `Result` is a value: the container holds the whole `Result`.

type Parsed = Result<u16, String>;

#[kvcache::generator("parsed")]
fn parsed(text: &str) -> Parsed {
    text.parse().map_err(|_| format!("{text:?} is no port"))
}

fn main() -> kvcache::Result<()> {
    let cache = kvcache::init([
        ("backend.mem", "variable"),
        ("container.parsed.backend", "mem"),
    ])?;
    let results = cache.container::<Parsed>("parsed")?;
    assert_eq!(results.get("80")?, Ok(80));
    assert_eq!(results.get("x")?, Err("\"x\" is no port".to_owned()));
    assert_eq!(results.stats().generations, 2);
    Ok(())
}
