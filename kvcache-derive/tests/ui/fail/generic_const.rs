#[kvcache::generator("prefix")]
fn prefix<const N: usize>(key: &str) -> String {
    key.chars().take(N).collect()
}

fn main() {}
