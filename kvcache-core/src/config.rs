//! Reading the configuration: a flat map of dotted keys, or TOML of the same shape.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use crate::error::{Error, Result};
use crate::interval::parse_interval;
use crate::options::{Compression, ContainerOptions};
use crate::size::parse_size;

/// A parsed configuration: the backends and containers it declares.
///
/// Read from the flat map of the original ([`Config::from_pairs`]):
///
/// ```text
/// backend.disk = file                     # or backend.disk.kind = file
/// backend.disk.path = cache/kv.sqlite3    # an option of the backend
/// container.greeting.backend = disk
/// container.greeting.expire = 1h 30m      # absent or 0: never
/// container.greeting.generator = greeting # a generator registered under that name
/// container.greeting.on_backend_error = generate  # or fail (the default)
/// container.greeting.compress = zstd      # or lz4, none (the default)
/// container.greeting.compress_above = 1 KiB  # default 256 bytes
/// container.greeting.lock_timeout = 10s    # default 5s; 0: each process generates its own
/// container.greeting.refresh = 10m         # stale while revalidate after 10 minutes
/// container.greeting.stale_if_error = 1h   # serve the last value for 1h past expiry on errors
/// container.greeting.cache_errors = 30s    # remember a generator's failure for 30s
/// container.greeting.early_refresh = 1.0   # XFetch beta: probabilistic early refresh
/// ```
///
/// or from TOML of the same shape, where a backend is a table with a `kind`
/// ([`Config::from_toml_str`], [`Config::from_toml_file`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pub(crate) backends: BTreeMap<String, BackendSpec>,
    pub(crate) containers: BTreeMap<String, ContainerSpec>,
}

/// A declared backend. Two are equal when their kinds and options are, whichever key gave the kind.
#[derive(Debug, Clone, Default)]
pub(crate) struct BackendSpec {
    /// The kind, and the key that gave it.
    pub(crate) kind: Option<(String, String)>,
    pub(crate) options: BTreeMap<String, String>,
}

impl PartialEq for BackendSpec {
    fn eq(&self, other: &Self) -> bool {
        let kind = |spec: &Self| spec.kind.as_ref().map(|(kind, _)| kind.clone());
        kind(self) == kind(other) && self.options == other.options
    }
}

impl Eq for BackendSpec {}

/// A declared container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ContainerSpec {
    pub(crate) backend: Option<String>,
    pub(crate) options: ContainerOptions,
    pub(crate) generator: Option<String>,
}

impl Config {
    /// Reads a flat map: any iterator of (key, value) string pairs.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the key: a key outside `backend.` and `container.`, an
    /// unknown container setting (`container.x.expires`), a malformed interval, a key given
    /// twice, a backend without a kind, a container without a backend. (A container naming an
    /// undeclared backend is an error when the cache is built.)
    pub fn from_pairs<I, K, V>(pairs: I) -> Result<Config>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut config = Config::default();
        let mut seen = BTreeMap::new();
        for (key, value) in pairs {
            let (key, value) = (key.as_ref().trim(), value.as_ref().trim());
            if seen.insert(key.to_owned(), ()).is_some() {
                return Err(Error::config(key, "is given twice"));
            }
            config.read(key, value)?;
        }
        config.check()?;
        Ok(config)
    }

    /// Reads TOML text: `[backend.NAME]` tables with a `kind` and options, `[container.NAME]`
    /// tables with `backend`, `expire` and `generator`.
    ///
    /// ```
    /// let config = kvcache_core::Config::from_toml_str(r#"
    ///     [backend.mem]
    ///     kind = "variable"
    ///
    ///     [container.greeting]
    ///     backend = "mem"
    ///     expire = "1h 30m"
    /// "#)?;
    /// assert_eq!(config.container_names().collect::<Vec<_>>(), ["greeting"]);
    /// # Ok::<(), kvcache_core::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`]: TOML that does not parse (with its line), an array or other value
    /// that is not a scalar, and everything [`Config::from_pairs`] rejects.
    pub fn from_toml_str(text: &str) -> Result<Config> {
        Self::toml(text, "the TOML configuration")
    }

    /// Reads a TOML file, as [`Config::from_toml_str`] does.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the path when it cannot be read, and every error of
    /// [`Config::from_toml_str`].
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Config> {
        let path = path.as_ref();
        let text = fs::read_to_string(path).map_err(|error| {
            Error::config(
                path.display().to_string(),
                format!("cannot read the configuration file: {error}"),
            )
        })?;
        Self::toml(&text, &path.display().to_string())
    }

    fn toml(text: &str, origin: &str) -> Result<Config> {
        let table: toml::Table = toml::from_str(text).map_err(|error| {
            Error::config(
                origin,
                format!("is not valid TOML: {}", error.to_string().trim_end()),
            )
        })?;
        let mut pairs = Vec::new();
        flatten(&table, "", &mut pairs)?;
        Config::from_pairs(pairs)
    }

    /// The names of the declared containers, sorted.
    pub fn container_names(&self) -> impl Iterator<Item = &str> {
        self.containers.keys().map(String::as_str)
    }

    /// The names of the declared backends, sorted.
    pub fn backend_names(&self) -> impl Iterator<Item = &str> {
        self.backends.keys().map(String::as_str)
    }

    fn read(&mut self, key: &str, value: &str) -> Result<()> {
        let (section, rest) = key.split_once('.').unwrap_or((key, ""));
        match section {
            "backend" => {
                let (name, option) = rest.split_once('.').unwrap_or((rest, ""));
                check_name(key, name, "backend")?;
                let backend = self.backends.entry(name.to_owned()).or_default();
                if option.is_empty() || option == "kind" {
                    if let Some((_, first)) = &backend.kind {
                        return Err(Error::config(
                            key,
                            format!("the kind is given twice (also by {first})"),
                        ));
                    }
                    if value.is_empty() {
                        return Err(Error::config(
                            key,
                            "expected a backend kind, got an empty value",
                        ));
                    }
                    backend.kind = Some((value.to_owned(), key.to_owned()));
                } else {
                    backend.options.insert(option.to_owned(), value.to_owned());
                }
            }
            "container" => {
                let (name, setting) = rest.rsplit_once('.').unwrap_or((rest, ""));
                check_name(key, name, "container")?;
                let container = self.containers.entry(name.to_owned()).or_default();
                match setting {
                    "backend" => container.backend = Some(value.to_owned()),
                    "generator" => container.generator = Some(value.to_owned()),
                    "expire" => {
                        let expire =
                            parse_interval(value).map_err(|message| Error::config(key, message))?;
                        container.options = container.options.expire(expire);
                    }
                    "on_backend_error" => {
                        let policy = value
                            .parse()
                            .map_err(|message| Error::config(key, message))?;
                        container.options = container.options.on_backend_error(policy);
                    }
                    "compress" => {
                        let compression = match value {
                            "none" => None,
                            value => {
                                let compression: Compression = value
                                    .parse()
                                    .map_err(|message| Error::config(key, message))?;
                                if !compression.is_built_in() {
                                    return Err(Error::config(
                                        key,
                                        format!(
                                            "{value} is not built in: enable kvcache's `{}` feature",
                                            compression.feature()
                                        ),
                                    ));
                                }
                                Some(compression)
                            }
                        };
                        container.options = container.options.compress(compression);
                    }
                    "compress_above" => {
                        let above =
                            parse_size(value).map_err(|message| Error::config(key, message))?;
                        container.options = container
                            .options
                            .compress_above(usize::try_from(above).unwrap_or(usize::MAX));
                    }
                    "lock_timeout" | "refresh" | "stale_if_error" | "cache_errors" => {
                        let interval =
                            parse_interval(value).map_err(|message| Error::config(key, message))?;
                        let options = container.options;
                        container.options = match setting {
                            "lock_timeout" => options.lock_timeout(interval),
                            "refresh" => options.refresh(interval),
                            "stale_if_error" => options.stale_if_error(interval),
                            _ => options.cache_errors(interval),
                        };
                    }
                    "early_refresh" => {
                        let beta: f64 = value
                            .trim()
                            .parse()
                            .ok()
                            .filter(|beta: &f64| beta.is_finite() && *beta >= 0.0)
                            .ok_or_else(|| {
                                Error::config(
                                    key,
                                    format!("expected the XFetch beta, a number >= 0 such as 1.0, got {value:?}"),
                                )
                            })?;
                        container.options = container.options.early_refresh(beta);
                    }
                    _ => {
                        return Err(Error::config(
                            key,
                            "unknown container setting (expected container.NAME.backend, .expire, .generator, .on_backend_error, .compress, .compress_above, .lock_timeout, .refresh, .stale_if_error, .cache_errors or .early_refresh)",
                        ));
                    }
                }
            }
            _ => {
                return Err(Error::config(
                    key,
                    "unknown key (expected backend.NAME, backend.NAME.OPTION or container.NAME.SETTING)",
                ));
            }
        }
        Ok(())
    }

    fn check(&self) -> Result<()> {
        for (name, backend) in &self.backends {
            if backend.kind.is_none() {
                return Err(Error::config(
                    format!("backend.{name}"),
                    "is missing: every backend needs a kind (backend.NAME = KIND)",
                ));
            }
        }
        for (name, container) in &self.containers {
            if container.backend.is_none() {
                return Err(Error::config(
                    format!("container.{name}.backend"),
                    "is required",
                ));
            }
        }
        Ok(())
    }
}

fn check_name(key: &str, name: &str, what: &str) -> Result<()> {
    if name.is_empty() || name.contains('.') || name.trim() != name {
        return Err(Error::config(
            key,
            format!("expected {what}.NAME... with a {what} name without dots or spaces"),
        ));
    }
    Ok(())
}

/// Turns nested TOML tables into dotted keys with text values.
fn flatten(table: &toml::Table, prefix: &str, out: &mut Vec<(String, String)>) -> Result<()> {
    for (key, value) in table {
        let key = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let text = match value {
            toml::Value::Table(inner) => {
                flatten(inner, &key, out)?;
                continue;
            }
            toml::Value::String(text) => text.clone(),
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::Float(x) => x.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Datetime(d) => d.to_string(),
            toml::Value::Array(_) => {
                return Err(Error::config(
                    key,
                    "expected a string or a number, got an array",
                ));
            }
        };
        out.push((key, text));
    }
    Ok(())
}
