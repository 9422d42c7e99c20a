#[kvcache::generator("greeting")]
async fn greeting(name: &str) -> String {
    format!("Hello {name}!")
}

fn main() {}
