// An associated function without `self` cannot be told from a free one by its tokens; the
// registration it expands to is not allowed in an `impl`, and rustc says so.

struct Greeter;

impl Greeter {
    #[kvcache::generator("greeting")]
    fn greeting(name: &str) -> String {
        format!("Hello {name}!")
    }
}

fn main() {}
