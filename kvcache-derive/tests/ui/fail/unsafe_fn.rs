#[kvcache::generator("greeting")]
unsafe fn greeting(name: &str) -> String {
    format!("Hello {name}!")
}

fn main() {}
