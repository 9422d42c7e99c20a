#[kvcache::generator("parsed")]
fn parsed<T: std::str::FromStr>(text: &str) -> Option<T> {
    text.parse().ok()
}

fn main() {}
