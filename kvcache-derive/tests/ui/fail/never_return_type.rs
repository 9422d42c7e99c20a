#[kvcache::generator("greeting")]
fn greeting(name: &str) -> ! {
    panic!("no greeting for {name}")
}

fn main() {}
