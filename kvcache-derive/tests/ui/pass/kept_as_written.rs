// The function is kept as written: its visibility, attributes and docs, and it can still be
// called directly.

mod greetings {
    /// Greets `name`.
    #[kvcache::generator("greeting")]
    #[must_use]
    pub(crate) fn greeting(name: &str) -> String {
        format!("Hello {name}!")
    }
}

fn main() -> kvcache::Result<()> {
    assert_eq!(greetings::greeting("Peter"), "Hello Peter!");
    let cache = kvcache::init([
        ("backend.mem", "variable"),
        ("container.greeting.backend", "mem"),
    ])?;
    assert_eq!(
        cache.container::<String>("greeting")?.get("William")?,
        "Hello William!"
    );
    Ok(())
}
