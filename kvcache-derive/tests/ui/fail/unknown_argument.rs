#[kvcache::generator("greeting", backend = "mem")]
fn greeting(name: &str) -> String {
    format!("Hello {name}!")
}

fn main() {}
