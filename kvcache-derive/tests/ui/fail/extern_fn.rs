#[kvcache::generator("length")]
extern "C" fn length(key: &str) -> usize {
    key.len()
}

fn main() {}
