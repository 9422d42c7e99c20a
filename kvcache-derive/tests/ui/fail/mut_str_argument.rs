#[kvcache::generator("greeting")]
fn greeting(name: &mut str) -> String {
    format!("Hello {name}!")
}

fn main() {}
