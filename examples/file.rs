//! The seed's example on the SQLite file backend: the values outlive the process.
//!
//! The first run generates both greetings; a second run finds them in the file and prints the
//! same lines without the two "Generating" ones. To start afresh, delete the file (the path is
//! `kvcache-example/greetings.sqlite3` under the system's temporary directory, `/tmp` on Linux).

fn main() -> kvcache::Result<()> {
    let path = std::env::temp_dir()
        .join("kvcache-example")
        .join("greetings.sqlite3");
    let cache = kvcache::init([
        ("backend.disk", "file"),
        ("backend.disk.path", &*path.to_string_lossy()),
        ("container.greeting.backend", "disk"),
    ])?;
    cache.register_generator("greeting", |name: &str| {
        println!("Generating the value for key \"{name}\".");
        format!("Hello {name}!")
    })?;
    let greeting = cache.container::<String>("greeting")?;
    println!("{}", greeting.get("Peter")?);
    println!("{}", greeting.get("Peter")?);
    println!("{}", greeting.get("William")?);
    Ok(())
}
