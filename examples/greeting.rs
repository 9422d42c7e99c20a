//! The seed's example: a generator, a container on the in-memory backend, three look-ups.
//!
//! `cargo run --example greeting` prints:
//!
//! ```text
//! Generating the value for key "Peter".
//! Hello Peter!
//! Hello Peter!
//! Generating the value for key "William".
//! Hello William!
//! ```

#[kvcache::generator("greeting")]
fn greeting(name: &str) -> String {
    println!("Generating the value for key \"{name}\".");
    format!("Hello {name}!")
}

fn main() -> kvcache::Result<()> {
    let cache = kvcache::init([
        ("backend.variable", "score.kvcache.backend.VariableCache"),
        ("container.greeting.backend", "variable"),
    ])?;
    let greeting = cache.container::<String>("greeting")?;
    println!("{}", greeting.get("Peter")?);
    println!("{}", greeting.get("Peter")?);
    println!("{}", greeting.get("William")?);
    Ok(())
}
