#[kvcache::generator("greeting.english")]
fn greeting(name: &str) -> String {
    format!("Hello {name}!")
}

fn main() {}
