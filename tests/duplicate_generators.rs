//! Two `#[kvcache::generator]` functions for one container make `kvcache::init` fail, naming both.
#![cfg(all(feature = "derive", feature = "variable"))]

mod english {
    #[kvcache::generator("same")]
    fn greeting(name: &str) -> String {
        format!("Hello {name}!")
    }
}

mod french {
    #[kvcache::generator("same")]
    fn greeting(name: &str) -> String {
        format!("Bonjour {name} !")
    }
}

#[test]
fn two_generators_of_one_name_make_init_fail() {
    let error = kvcache::init([
        ("container.same.backend", "mem"),
        ("backend.mem", "variable"),
    ])
    .unwrap_err();
    let english = concat!(module_path!(), "::english::greeting");
    let french = concat!(module_path!(), "::french::greeting");
    match &error {
        kvcache::Error::DuplicateRegistration {
            what,
            name,
            first,
            second,
        } => {
            assert_eq!((*what, name.as_str()), ("generator", "same"));
            let mut both = [first.as_str(), second.as_str()];
            both.sort_unstable();
            assert_eq!(both, [english, french]);
        }
        other => panic!("expected Error::DuplicateRegistration, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains(english) && message.contains(french),
        "{message}"
    );
}
