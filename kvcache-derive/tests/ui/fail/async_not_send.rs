use std::rc::Rc;

#[kvcache::generator("greeting")]
async fn greeting(name: &str) -> String {
    let shared = Rc::new(name.to_owned());
    std::future::ready(()).await;
    format!("Hello {shared}!")
}

fn main() {}
