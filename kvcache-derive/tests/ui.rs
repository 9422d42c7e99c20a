//! The forms `#[generator]` accepts (compiled and run) and rejects (with the committed compiler
//! output in `ui/fail/*.stderr`, which depends on the toolchain pinned in `rust-toolchain.toml`).
//!
//! Refresh the output after a deliberate change with `TRYBUILD=overwrite`, then read the diff.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
