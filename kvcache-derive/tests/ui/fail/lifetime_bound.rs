#[kvcache::generator("length")]
fn length<'a, 'b: 'a>(key: &'a str) -> usize {
    key.len()
}

fn main() {}
