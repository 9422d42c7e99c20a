// Every problem is reported at once, each where it is.

#[kvcache::generator("", crate = ::kvcache, verbose)]
async fn greeting<T>(name: String) {
    println!("Hello {name}!");
}

fn main() {}
