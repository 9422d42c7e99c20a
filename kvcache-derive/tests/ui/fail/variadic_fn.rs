#[kvcache::generator("length")]
fn length(key: &str, _: ...) -> usize {
    key.len()
}

fn main() {}
