#[kvcache::generator("greeting")]
fn greeting(name: &str) -> impl std::fmt::Display {
    format!("Hello {name}!")
}

fn main() {}
