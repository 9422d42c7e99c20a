// Not the macro's check but rustc's: the error type of a fallible generator must convert into
// `kvcache::BoxError`, and the compiler points at the return type.

#[derive(Debug)]
struct NotAnError;

#[kvcache::generator("port")]
fn port(text: &str) -> Result<u16, NotAnError> {
    text.parse().map_err(|_| NotAnError)
}

fn main() {}
