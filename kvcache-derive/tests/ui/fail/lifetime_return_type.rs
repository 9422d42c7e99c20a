use std::borrow::Cow;

#[kvcache::generator("trimmed")]
fn trimmed<'a>(key: &'a str) -> Cow<'a, str> {
    Cow::Borrowed(key.trim())
}

fn main() {}
