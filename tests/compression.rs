//! Compressed containers: values stored compressed on a shared backend, read by a process
//! configured without compression, and the configuration's errors.

use kvcache::{Container, KvCache};

fn cache(path: &str, compress: Option<&str>) -> KvCache {
    let mut pairs = vec![
        ("backend.disk".to_owned(), "file".to_owned()),
        ("backend.disk.path".to_owned(), path.to_owned()),
        ("container.pages.backend".to_owned(), "disk".to_owned()),
        (
            "container.pages.compress_above".to_owned(),
            "1 KiB".to_owned(),
        ),
    ];
    if let Some(compress) = compress {
        pairs.push(("container.pages.compress".to_owned(), compress.to_owned()));
    }
    kvcache::init(pairs).unwrap()
}

fn stored_len(cache: &KvCache, key: &str) -> usize {
    let store = cache
        .backend("disk")
        .unwrap()
        .open("pages")
        .unwrap()
        .sync_store();
    store.retrieve(key).unwrap().expect("stored").len()
}

#[test]
fn values_above_the_threshold_are_stored_compressed_and_read_by_every_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite3");
    let path = path.to_str().unwrap();
    let page = "<p>the same paragraph, again and again</p>".repeat(200);
    for compress in ["zstd", "lz4"] {
        let writer = cache(path, Some(compress));
        let pages: Container<String> = writer.container("pages").unwrap();
        pages.set(compress, &page).unwrap();
        pages.set("small", &"tiny".to_owned()).unwrap();
        assert!(stored_len(&writer, compress) < page.len() / 5, "{compress}");
        assert!(stored_len(&writer, "small") < 32);
        // Another process, configured without compression, reads both.
        let reader = cache(path, None);
        let pages: Container<String> = reader.container("pages").unwrap();
        assert_eq!(
            pages.peek(compress).unwrap().as_ref(),
            Some(&page),
            "{compress}"
        );
        assert_eq!(pages.peek("small").unwrap().as_deref(), Some("tiny"));
    }
}

#[test]
fn an_unknown_compression_names_its_key() {
    let Err(error) = kvcache::init([
        ("backend.mem", "variable"),
        ("container.c.backend", "mem"),
        ("container.c.compress", "brotli"),
    ]) else {
        panic!("brotli was accepted");
    };
    let text = error.to_string();
    assert!(
        text.contains("container.c.compress") && text.contains("brotli"),
        "{text}"
    );
    let Err(error) = kvcache::init([
        ("backend.mem", "variable"),
        ("container.c.backend", "mem"),
        ("container.c.compress_above", "big"),
    ]) else {
        panic!("`big` was accepted");
    };
    assert!(
        error.to_string().contains("container.c.compress_above"),
        "{error}"
    );
}
