use std::time::Duration;

#[kvcache::generator("greeting")]
async fn greeting(name: &str) -> String {
    std::future::ready(()).await;
    format!("Hello {name}!")
}

#[derive(Debug)]
struct Down;

impl std::fmt::Display for Down {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the upstream is down")
    }
}

impl std::error::Error for Down {}

#[kvcache::generator("port")]
async fn port<'a>(text: &'a str) -> Result<u16, Down> {
    text.parse().map_err(|_| Down)
}

fn main() -> kvcache::Result<()> {
    let cache = kvcache::init([
        ("backend.mem", "variable"),
        ("container.greeting.backend", "mem"),
        ("container.port.backend", "mem"),
    ])?;
    // The synchronous path drives async generators on kvcache's own runtime.
    assert_eq!(cache.container::<String>("greeting")?.get("Peter")?, "Hello Peter!");
    let ports = cache.container::<u16>("port")?;
    assert_eq!(ports.get("8080")?, 8080);
    let error = ports.get("eighty").unwrap_err();
    let kvcache::Error::Generator { source, .. } = &error else {
        panic!("{error}");
    };
    assert!(source.downcast_ref::<Down>().is_some(), "{error:?}");
    let _ = Duration::ZERO;
    Ok(())
}
