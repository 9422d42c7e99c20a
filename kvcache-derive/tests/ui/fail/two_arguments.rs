#[kvcache::generator("greeting")]
fn greeting(name: &str, polite: bool) -> String {
    if polite {
        format!("Good day, {name}.")
    } else {
        format!("Hi {name}!")
    }
}

fn main() {}
