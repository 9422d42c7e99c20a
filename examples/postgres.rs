//! The seed's example on PostgreSQL: the container lives in a table that every application
//! server sharing the database sees.
//!
//! With PostgreSQL at `KVCACHE_POSTGRES_URL` (default `postgres://postgres@127.0.0.1/test`),
//! `cargo run --example postgres --features sql-postgres` prints, every run:
//!
//! ```text
//! Generating the value for key "Peter".
//! Hello Peter!
//! Hello Peter!
//! Generating the value for key "William".
//! Hello William!
//! ```

fn main() -> kvcache::Result<()> {
    let url = std::env::var("KVCACHE_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1/test".to_owned());
    let cache = kvcache::init([
        ("backend.db", "sql"),
        ("backend.db.url", url.as_str()),
        ("container.greeting.backend", "db"),
    ])?;
    cache.register_generator("greeting", |name: &str| {
        println!("Generating the value for key \"{name}\".");
        format!("Hello {name}!")
    })?;
    let greeting = cache.container::<String>("greeting")?;
    // The table outlives the program: start from an empty container, as the seed does.
    greeting.clear()?;
    println!("{}", greeting.get("Peter")?);
    println!("{}", greeting.get("Peter")?);
    println!("{}", greeting.get("William")?);
    Ok(())
}
