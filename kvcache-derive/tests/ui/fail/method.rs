struct Greeter;

impl Greeter {
    #[kvcache::generator("greeting")]
    fn greeting(&self, name: &str) -> String {
        format!("Hello {name}!")
    }
}

fn main() {}
