//! Generators: the functions that compute a missing value, with their value type erased.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::BoxError;

/// A typed generator, as a container calls it.
pub(crate) type GeneratorFn<V> = Arc<dyn Fn(&str) -> Result<V, BoxError> + Send + Sync>;

/// A function that computes the value for a key, with its value type erased so that containers
/// of every type can be held in one map.
///
/// Made from a plain function or closure with [`Generator::new`], or one that can fail with
/// [`Generator::fallible`]. Asking a container for a value type other than its generator's is
/// [`Error::TypeMismatch`](crate::Error::TypeMismatch).
#[derive(Clone)]
pub struct Generator {
    value_type: &'static str,
    function: Arc<dyn Any + Send + Sync>,
}

impl Generator {
    /// A generator that always succeeds.
    pub fn new<V, F>(f: F) -> Self
    where
        V: Serialize + DeserializeOwned + 'static,
        F: Fn(&str) -> V + Send + Sync + 'static,
    {
        Self::erase::<V>(Arc::new(move |key: &str| Ok(f(key))))
    }

    /// A generator that can fail; its error reaches the caller of `get` as
    /// [`Error::Generator`](crate::Error::Generator), and nothing is stored.
    pub fn fallible<V, E, F>(f: F) -> Self
    where
        V: Serialize + DeserializeOwned + 'static,
        E: Into<BoxError>,
        F: Fn(&str) -> Result<V, E> + Send + Sync + 'static,
    {
        Self::erase::<V>(Arc::new(move |key: &str| f(key).map_err(Into::into)))
    }

    fn erase<V: 'static>(function: GeneratorFn<V>) -> Self {
        Generator {
            value_type: std::any::type_name::<V>(),
            function: Arc::new(function),
        }
    }

    /// The name of the type of value it computes.
    pub fn value_type(&self) -> &'static str {
        self.value_type
    }

    /// The typed function, if `V` is its value type.
    pub(crate) fn typed<V: 'static>(&self) -> Option<GeneratorFn<V>> {
        self.function.downcast_ref::<GeneratorFn<V>>().cloned()
    }
}

impl fmt::Debug for Generator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Generator")
            .field("value_type", &self.value_type)
            .finish_non_exhaustive()
    }
}
