#[kvcache::generator("greeting")]
fn greeting(name: &'static str) -> String {
    format!("Hello {name}!")
}

fn main() {}
