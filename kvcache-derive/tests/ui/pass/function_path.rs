// The registration names the function by its path (error messages show it), raw identifiers
// without their `r#`.

mod words {
    #[kvcache::generator("kind")]
    pub fn r#type(word: &str) -> String {
        format!("{word} is a word")
    }
}

fn main() {
    let registrations: Vec<_> =
        kvcache::__private::inventory::iter::<kvcache::__private::GeneratorRegistration>
            .into_iter()
            .map(|registration| (registration.name(), registration.function()))
            .collect();
    assert_eq!(registrations.len(), 1, "{registrations:?}");
    let (name, function) = registrations[0];
    assert_eq!(name, "kind");
    assert_eq!(function, concat!(module_path!(), "::words::type"));
}
