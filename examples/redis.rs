//! The seed's example on Redis: the cache lives in the server, shared by every process that
//! names it.
//!
//! `cargo run --example redis --features redis` (on the Redis of `KVCACHE_REDIS_URL`, or
//! `redis://127.0.0.1:6379`) prints, every time, because it clears the container first:
//!
//! ```text
//! Generating the value for key "Peter".
//! Hello Peter!
//! Hello Peter!
//! Generating the value for key "William".
//! Hello William!
//! ```

fn main() -> kvcache::Result<()> {
    let url =
        std::env::var("KVCACHE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let cache = kvcache::init([
        ("backend.redis", "redis"),
        ("backend.redis.url", url.as_str()),
        ("container.greeting.backend", "redis"),
    ])?;
    cache.register_generator("greeting", |name: &str| {
        println!("Generating the value for key \"{name}\".");
        format!("Hello {name}!")
    })?;
    let greeting = cache.container::<String>("greeting")?;
    greeting.clear()?;
    println!("{}", greeting.get("Peter")?);
    println!("{}", greeting.get("Peter")?);
    println!("{}", greeting.get("William")?);
    Ok(())
}
