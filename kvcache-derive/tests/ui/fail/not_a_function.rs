#[kvcache::generator("greeting")]
struct Greeting(String);

fn main() {}
