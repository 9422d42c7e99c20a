#[kvcache::generator("greeting")]
fn greeting() -> String {
    "Hello!".to_owned()
}

fn main() {}
