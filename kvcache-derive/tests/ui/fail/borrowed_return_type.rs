#[kvcache::generator("trimmed")]
fn trimmed(key: &str) -> &str {
    key.trim()
}

fn main() {}
