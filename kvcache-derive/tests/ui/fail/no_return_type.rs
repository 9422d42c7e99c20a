#[kvcache::generator("greeting")]
fn greeting(name: &str) {
    println!("Hello {name}!");
}

fn main() {}
