// A `const fn` is accepted: the container calls it at run time like any other function.

#[kvcache::generator("length")]
const fn length(key: &str) -> usize {
    key.len()
}

const FOUR: usize = length("four");

fn main() -> kvcache::Result<()> {
    let cache = kvcache::init([
        ("backend.mem", "variable"),
        ("container.length.backend", "mem"),
    ])?;
    assert_eq!(cache.container::<usize>("length")?.get("four")?, FOUR);
    Ok(())
}
