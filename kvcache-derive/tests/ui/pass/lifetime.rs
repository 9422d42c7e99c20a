// A lifetime on the key (`&'a str`) is fine.

#[kvcache::generator("length")]
fn length<'a>(key: &'a str) -> usize {
    key.len()
}

fn main() -> kvcache::Result<()> {
    let cache = kvcache::init([
        ("backend.mem", "variable"),
        ("container.length.backend", "mem"),
    ])?;
    assert_eq!(cache.container::<usize>("length")?.get("four")?, 4);
    Ok(())
}
