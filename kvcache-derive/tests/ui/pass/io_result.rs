// `-> io::Result<V>`: the last path segment is `Result`, so the generator is fallible.

use std::io;

#[kvcache::generator("file_size")]
fn file_size(path: &str) -> io::Result<u64> {
    Ok(std::fs::metadata(path)?.len())
}

fn main() -> kvcache::Result<()> {
    let cache = kvcache::init([
        ("backend.mem", "variable"),
        ("container.file_size.backend", "mem"),
    ])?;
    let sizes = cache.container::<u64>("file_size")?;
    assert_eq!(
        sizes.get(file!())?,
        std::fs::metadata(file!()).unwrap().len()
    );
    let missing = sizes.get("/nonexistent/kvcache-ui-test").unwrap_err();
    assert!(
        matches!(missing, kvcache::Error::Generator { .. }),
        "{missing:?}"
    );
    Ok(())
}
