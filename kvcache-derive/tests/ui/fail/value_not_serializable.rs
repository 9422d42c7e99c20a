// A generator's value is stored with serde: a type without `Serialize` is rejected where it is named.

struct Opaque;

#[kvcache::generator("opaque")]
fn opaque(_key: &str) -> Opaque {
    Opaque
}

fn main() {}
