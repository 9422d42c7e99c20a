// `fn(&str) -> V`: the container the configuration declares gets it, and stores what it returns.

#[kvcache::generator("greeting")]
fn greeting(name: &str) -> String {
    format!("Hello {name}!")
}

fn main() -> kvcache::Result<()> {
    let cache = kvcache::init([
        ("backend.mem", "variable"),
        ("container.greeting.backend", "mem"),
    ])?;
    let greetings = cache.container::<String>("greeting")?;
    assert_eq!(greetings.get("Peter")?, "Hello Peter!");
    assert_eq!(greetings.get("Peter")?, "Hello Peter!");
    assert_eq!(greetings.stats().generations, 1);
    Ok(())
}
