//! Each backend crate a cargo feature enables is linked and found by name, through the facade
//! alone. `.ci/run` runs this test once per feature, with only that feature on.

fn assert_registered(kinds: &[&str], names: &[&str], enabled: bool, feature: &str) {
    for name in names {
        assert_eq!(
            kinds.contains(name),
            enabled,
            "backend kind {name:?} with feature `{feature}` {}",
            if enabled { "on" } else { "off" }
        );
    }
}

#[test]
fn every_enabled_backend_is_registered_by_name_and_no_other() {
    let kinds = kvcache::backend_kinds();
    assert_registered(
        &kinds,
        &["variable", "score.kvcache.backend.VariableCache"],
        cfg!(feature = "variable"),
        "variable",
    );
    assert_registered(
        &kinds,
        &["file", "score.kvcache.backend.FileCache"],
        cfg!(feature = "file"),
        "file",
    );
    assert_registered(
        &kinds,
        &["sql", "score.kvcache.backend.SQLAlchemyCache"],
        cfg!(any(
            feature = "sql-postgres",
            feature = "sql-mysql",
            feature = "sql-sqlite"
        )),
        "sql-*",
    );
    assert_registered(&kinds, &["redis"], cfg!(feature = "redis"), "redis");
}

#[cfg(feature = "variable")]
#[test]
fn the_in_memory_backend_opens_by_name() {
    let cache = kvcache::init([("backend.m", "variable"), ("container.c.backend", "m")]).unwrap();
    let container = cache.container::<String>("c").unwrap();
    container.set("k", &"v".to_owned()).unwrap();
    assert_eq!(container.peek("k").unwrap().as_deref(), Some("v"));
}

#[cfg(feature = "file")]
#[test]
fn the_file_backend_opens_by_name() {
    let dir = std::env::temp_dir().join(format!("kvcache-features-{}", std::process::id()));
    let path = dir.join("cache.sqlite3");
    let cache = kvcache::init([
        ("backend.d", "file"),
        ("backend.d.path", path.to_str().unwrap()),
        ("container.c.backend", "d"),
    ])
    .unwrap();
    let container = cache.container::<String>("c").unwrap();
    container.set("k", &"v".to_owned()).unwrap();
    assert_eq!(container.peek("k").unwrap().as_deref(), Some("v"));
    drop((container, cache));
    std::fs::remove_dir_all(dir).unwrap();
}
