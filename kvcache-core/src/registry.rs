//! The registries of backend kinds and generators that crates fill through `inventory`.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use crate::backend::{Backend, BackendConfig};
use crate::error::{Error, Result};
use crate::generator::Generator;

/// Builds a backend from its configuration.
pub type BackendFactory = fn(&BackendConfig) -> Result<Arc<dyn Backend>>;

/// A backend kind, as a backend crate registers it with [`register_backend!`](crate::register_backend).
///
/// ```
/// use kvcache_core::{BackendConfig, BackendRegistration, Backend, Result};
/// use std::sync::Arc;
///
/// fn open(config: &BackendConfig) -> Result<Arc<dyn Backend>> {
///     # unimplemented!()
/// }
///
/// kvcache_core::register_backend!(
///     BackendRegistration::new("mine", open)
///         .aliases(&["my.old.MineCache"])
///         .options(&["path"])
/// );
/// ```
#[derive(Debug)]
pub struct BackendRegistration {
    kind: &'static str,
    aliases: &'static [&'static str],
    options: &'static [&'static str],
    factory: BackendFactory,
    origin: &'static str,
}

impl BackendRegistration {
    /// The kind `kind`, built by `factory`, with no aliases and no options.
    pub const fn new(kind: &'static str, factory: BackendFactory) -> Self {
        BackendRegistration {
            kind,
            aliases: &[],
            options: &[],
            factory,
            origin: "",
        }
    }

    /// Other names of the kind: the original's class paths.
    pub const fn aliases(mut self, aliases: &'static [&'static str]) -> Self {
        self.aliases = aliases;
        self
    }

    /// The options it accepts under `backend.NAME.`; any other is a configuration error.
    pub const fn options(mut self, options: &'static [&'static str]) -> Self {
        self.options = options;
        self
    }

    /// Where the registration comes from, for error messages: set by [`register_backend!`](crate::register_backend).
    #[doc(hidden)]
    pub const fn origin(mut self, origin: &'static str) -> Self {
        self.origin = origin;
        self
    }

    /// The kind's name.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Builds a backend, after checking that every option is one it accepts.
    pub fn open(&self, config: &BackendConfig) -> Result<Arc<dyn Backend>> {
        if let Some(unknown) = config
            .options()
            .keys()
            .find(|option| !self.options.contains(&option.as_str()))
        {
            let accepted = if self.options.is_empty() {
                "none".to_owned()
            } else {
                self.options.join(", ")
            };
            return Err(Error::config(
                config.key(unknown),
                format!(
                    "unknown option for a `{}` backend (accepted: {accepted})",
                    self.kind
                ),
            ));
        }
        (self.factory)(config)
    }
}

inventory::collect!(BackendRegistration);

/// A generator, as `#[generator("name")]` registers it for the container `name`.
#[derive(Debug)]
pub struct GeneratorRegistration {
    name: &'static str,
    function: &'static str,
    make: fn() -> Generator,
}

impl GeneratorRegistration {
    /// The generator `make()` for the container `name`; `function` names it in error messages.
    pub const fn new(name: &'static str, function: &'static str, make: fn() -> Generator) -> Self {
        GeneratorRegistration {
            name,
            function,
            make,
        }
    }

    /// The container it generates values for.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The function's path.
    pub fn function(&self) -> &'static str {
        self.function
    }

    /// The generator.
    pub fn generator(&self) -> Generator {
        (self.make)()
    }
}

inventory::collect!(GeneratorRegistration);

/// Registers a backend kind: `register_backend!(BackendRegistration::new("kind", factory))`.
///
/// The backend's crate must be linked into the program for the registration to exist: the
/// `kvcache` facade links every backend its features enable.
#[macro_export]
macro_rules! register_backend {
    ($registration:expr) => {
        $crate::__private::inventory::submit! {
            $registration.origin(::core::module_path!())
        }
    };
}

type Slot<T> = std::result::Result<&'static T, (&'static str, &'static str)>;

fn backends() -> &'static BTreeMap<&'static str, Slot<BackendRegistration>> {
    static MAP: OnceLock<BTreeMap<&'static str, Slot<BackendRegistration>>> = OnceLock::new();
    MAP.get_or_init(|| {
        let mut map = BTreeMap::new();
        for registration in inventory::iter::<BackendRegistration> {
            for &name in std::iter::once(&registration.kind).chain(registration.aliases) {
                insert(&mut map, name, registration, |r| r.origin);
            }
        }
        map
    })
}

fn insert<T>(
    map: &mut BTreeMap<&'static str, Slot<T>>,
    name: &'static str,
    item: &'static T,
    origin: fn(&T) -> &'static str,
) {
    let slot = match map.get(name) {
        None => Ok(item),
        Some(Ok(first)) => Err((origin(first), origin(item))),
        Some(Err(both)) => Err(*both),
    };
    map.insert(name, slot);
}

/// Every registered backend kind and alias, sorted.
pub fn backend_kinds() -> Vec<&'static str> {
    backends().keys().copied().collect()
}

/// The registration of the backend kind (or alias) `kind`; `key` is the configuration key that
/// named it, for the error.
pub fn backend_kind(kind: &str, key: &str) -> Result<&'static BackendRegistration> {
    match backends().get(kind) {
        Some(Ok(registration)) => Ok(registration),
        Some(Err((first, second))) => Err(Error::DuplicateRegistration {
            what: "backend kind",
            name: kind.to_owned(),
            first: (*first).to_owned(),
            second: (*second).to_owned(),
        }),
        None => Err(Error::UnknownBackend {
            key: key.to_owned(),
            kind: kind.to_owned(),
            known: backend_kinds().into_iter().map(str::to_owned).collect(),
        }),
    }
}

/// Every generator registered with `#[generator]`, by container name.
///
/// # Errors
///
/// [`Error::DuplicateRegistration`] naming both functions when two claim one container.
pub fn generators() -> Result<BTreeMap<&'static str, &'static GeneratorRegistration>> {
    static MAP: OnceLock<BTreeMap<&'static str, Slot<GeneratorRegistration>>> = OnceLock::new();
    let map = MAP.get_or_init(|| {
        let mut map = BTreeMap::new();
        for registration in inventory::iter::<GeneratorRegistration> {
            insert(&mut map, registration.name, registration, |r| r.function);
        }
        map
    });
    map.iter()
        .map(|(&name, slot)| match slot {
            Ok(registration) => Ok((name, *registration)),
            Err((first, second)) => Err(Error::DuplicateRegistration {
                what: "generator",
                name: name.to_owned(),
                first: (*first).to_owned(),
                second: (*second).to_owned(),
            }),
        })
        .collect()
}
