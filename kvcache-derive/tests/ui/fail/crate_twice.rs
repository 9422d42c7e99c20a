#[kvcache::generator("greeting", crate = ::kvcache, crate = ::kvcache)]
fn greeting(name: &str) -> String {
    format!("Hello {name}!")
}

fn main() {}
