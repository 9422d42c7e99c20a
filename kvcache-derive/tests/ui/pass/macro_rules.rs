// A signature written by `macro_rules!`: the return type arrives in an invisible group and is
// still recognised as a `Result`.

use std::num::ParseIntError;

macro_rules! parser {
    ($name:ident, $container:literal, $value:ty) => {
        #[kvcache::generator($container)]
        fn $name(text: &str) -> $value {
            text.parse()
        }
    };
}

parser!(byte, "byte", Result<u8, ParseIntError>);

fn main() -> kvcache::Result<()> {
    let cache = kvcache::init([
        ("backend.mem", "variable"),
        ("container.byte.backend", "mem"),
    ])?;
    let bytes = cache.container::<u8>("byte")?;
    assert_eq!(bytes.get("255")?, 255);
    assert!(bytes.get("256").is_err());
    Ok(())
}
