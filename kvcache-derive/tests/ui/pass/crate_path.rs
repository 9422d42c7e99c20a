// `crate = path`: the generated code reaches `__private` through `path`, as a crate that depends
// on `kvcache-core` alone writes `crate = ::kvcache_core`.

mod reexport {
    pub use kvcache::__private;
}

#[kvcache::generator("greeting", crate = crate::reexport)]
fn greeting(name: &str) -> String {
    format!("Hello {name}!")
}

fn main() -> kvcache::Result<()> {
    let cache = kvcache::init([
        ("backend.mem", "variable"),
        ("container.greeting.backend", "mem"),
    ])?;
    assert_eq!(
        cache.container::<String>("greeting")?.get("Peter")?,
        "Hello Peter!"
    );
    Ok(())
}
