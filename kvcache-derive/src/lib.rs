//! `#[generator("name")]`: registers a plain or `async` function as the generator of the
//! container `name`.
//!
//! Use it through the `kvcache` facade, as `#[kvcache::generator("name")]`:
//!
//! ```
//! #[kvcache::generator("greeting")]
//! fn greeting(name: &str) -> String {
//!     format!("Hello {name}!")
//! }
//!
//! #[kvcache::generator("port")]
//! fn port(text: &str) -> Result<u16, std::num::ParseIntError> {
//!     text.parse()
//! }
//!
//! let cache = kvcache::init([
//!     ("backend.mem", "variable"),
//!     ("container.greeting.backend", "mem"),
//!     ("container.port.backend", "mem"),
//! ])?;
//! assert_eq!(cache.container::<String>("greeting")?.get("Peter")?, "Hello Peter!");
//! let ports = cache.container::<u16>("port")?;
//! assert_eq!(ports.get("8080")?, 8080);
//! assert!(matches!(ports.get("eighty"), Err(kvcache::Error::Generator { .. })));
//! # Ok::<(), kvcache::Error>(())
//! ```
//!
//! An `async fn` is a generator too, for containers whose values come from an async upstream
//! call; both the synchronous and the async container handles call it:
//!
//! ```
//! #[kvcache::generator("length")]
//! async fn length(key: &str) -> usize {
//!     // An upstream call would be awaited here.
//!     key.len()
//! }
//!
//! # let runtime = tokio::runtime::Runtime::new().unwrap();
//! # runtime.block_on(async {
//! let cache = kvcache::init([("backend.mem", "variable"), ("container.length.backend", "mem")])?;
//! let lengths = cache.async_container::<usize>("length")?;
//! assert_eq!(lengths.get("four").await?, 4);
//! # Ok::<(), kvcache::Error>(())
//! # }).unwrap();
//! ```
//!
//! The function stays exactly as written, and `kvcache::init` gives it to the container `name`:
//! the one the configuration declares, or else one of its own on the in-memory backend. A
//! configuration can also pick it for another container with `container.OTHER.generator = name`.
//! Two functions registered under one name make `init` fail, naming both.
//!
//! # The function
//!
//! A generator is a plain `fn(key: &str) -> V` or `async fn(key: &str) -> V`: one argument, the
//! key (`&str`, or `&'a str` with the lifetime declared on the function); a value it owns (every
//! reference and lifetime in `V` is `'static`); not `unsafe`, `extern`, generic or a method. An
//! `async fn`'s future must be `Send` (containers run it in a task of its own, on any thread of a
//! multi-thread runtime), and so must its value: a future holding an `Rc` across an `.await` is a
//! compile error on the return type, "future cannot be sent between threads safely". A `const fn` is
//! accepted: it is called at run time like any other. Anything else is a compile error pointing
//! at what is wrong. It is a free function: the registration it expands to cannot stand in an
//! `impl` block, so an associated function is a compile error there too.
//!
//! A return type whose **last path segment is `Result`** (`Result<V, E>`, `io::Result<V>`,
//! `anyhow::Result<V>`) makes a fallible generator, with `E: Into<kvcache::BoxError>`: its error
//! reaches the caller of `get` as `kvcache::Error::Generator`, and nothing is stored. The rule
//! reads the name only: a type alias of another name is a value, and the container then holds
//! the whole `Result`.
//!
//! # Arguments
//!
//! - `"name"`: the container's name, a string literal that a configuration can declare as
//!   `container.NAME.backend` (not empty, no dots, no spaces around it).
//! - `crate = path` (optional): where the generated code finds `__private`: `::kvcache` by
//!   default; `crate = ::kvcache_core` in a crate that depends on `kvcache-core` alone.

mod expand;
mod parse;

use proc_macro::TokenStream;

/// Registers `fn(key: &str) -> V` (or `-> Result<V, E>`, or an `async fn` of either) as the
/// generator of the container
/// `name`: `#[generator("name")]` or `#[generator("name", crate = path)]`. See the
/// [crate docs](crate).
#[proc_macro_attribute]
pub fn generator(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::generator(args.into(), item.into()).into()
}
