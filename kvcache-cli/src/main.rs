//! `kvcache`: what is in a kvcache's backends, how big it is, until when, and clearing it, read
//! from the application's own configuration.
//!
//! ```text
//! kvcache --config app/kvcache.toml check
//! kvcache stats
//! kvcache keys greeting --prefix Pe --limit 10
//! kvcache get greeting Peter
//! kvcache remove greeting Peter
//! kvcache clear greeting
//! kvcache purge
//! ```
//!
//! The configuration is the library's: a TOML file or flat `key = value` lines, named by
//! `--config` or `KVCACHE_CONFIG`. Each verb opens only the backends it needs, as the library
//! opens them, and never looks a generator up (the application's are not linked here). Output is
//! for people by default and one JSON document on stdout with `--json`. Exit codes: 0 done,
//! 1 a backend failed or could not be reached, 2 bad usage or configuration, 3 no such key, 4 not
//! supported by the backend (an in-memory backend lives in the memory of the process that uses
//! it: this command, a process of its own, cannot see it).
//!
//! The backends answer through [`kvcache::inspect::Inspect`]; see the README's "The kvcache
//! command" and ARCHITECTURE.md's "Inspection and the kvcache command".

mod load;
mod progress;
mod show;
mod verbs;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The exit codes, as `--help` tells them.
const EXIT_CODES: &str = "\
Exit codes:
  0  done
  1  a backend failed or could not be reached
  2  bad usage or configuration (a missing or malformed file, an undeclared container)
  3  no such key
  4  not supported by the backend (an in-memory backend: its entries live in the memory of the
     process that uses it, which this command cannot see)";

/// Looks into the backends of a kvcache configuration: checks them, counts and lists what they
/// hold, shows an entry, removes entries.
#[derive(Debug, Parser)]
#[command(name = "kvcache", version, after_long_help = EXIT_CODES, after_help = EXIT_CODES)]
struct Cli {
    /// The configuration: a TOML file, or flat `key = value` lines, as the library reads them.
    #[arg(
        long,
        short,
        global = true,
        env = "KVCACHE_CONFIG",
        value_name = "PATH"
    )]
    config: Option<PathBuf>,

    /// Prints one JSON document on stdout (errors too), and no progress bar.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Parses the configuration, opens every backend and reports each reachable or why not.
    #[command(after_help = EXIT_CODES)]
    Check,

    /// Per container: entries, bytes, and the oldest and newest expiry, where the backend can
    /// tell. Without a container: every declared one, and those a backend holds undeclared.
    #[command(after_help = EXIT_CODES)]
    Stats {
        /// Only these containers.
        #[arg(value_name = "CONTAINER")]
        containers: Vec<String>,
    },

    /// Lists the keys of a container, sorted (live entries only).
    #[command(after_help = EXIT_CODES)]
    Keys {
        /// The container, as the configuration names it.
        container: String,
        /// Only the keys that start with this.
        #[arg(long, value_name = "P", default_value = "")]
        prefix: String,
        /// At most this many keys. Redis returns the first found by its walk, sorted.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },

    /// Shows an entry: its size, expiry, format and type fingerprint, and its value where it can
    /// be shown (a common type, or a body that decodes as a string; else a hex preview).
    #[command(after_help = EXIT_CODES)]
    Get {
        /// The container.
        container: String,
        /// The key.
        key: String,
    },

    /// Removes an entry: the application's next `get` of it generates it again.
    #[command(after_help = EXIT_CODES)]
    Remove {
        /// The container.
        container: String,
        /// The key.
        key: String,
    },

    /// Removes every entry of a container, and no other container's.
    #[command(after_help = EXIT_CODES)]
    Clear {
        /// The container.
        container: String,
    },

    /// Deletes the expired entries of every backend (or of one).
    #[command(after_help = EXIT_CODES)]
    Purge {
        /// Only the backend declared under this name.
        #[arg(long, value_name = "NAME")]
        backend: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Every backend it opened is closed when `run` returns (SQLite files checkpointed).
    let outcome = verbs::run(&cli);
    outcome.print(cli.json);
    exit_now(outcome.code)
}

/// Ends the process with `code` once its output is flushed, without C's `atexit` handlers.
///
/// A pool of PostgreSQL connections opens a connection in the background whenever one is
/// taken (r2d2's `min_idle`); when the process exits during that connect, libpq's OpenSSL and
/// GSSAPI exit handlers free what the connecting thread still uses, and the process dies of a
/// segmentation fault after its work is done (10 exits in 160, measured). `_exit` skips those
/// handlers; nothing else of this process needs them.
#[allow(unsafe_code, reason = "`_exit`, which has no safe wrapper in std")]
fn exit_now(code: u8) -> ExitCode {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: `_exit` has no precondition: it ends the process at once, and what it wrote has
    // been flushed above.
    unsafe { libc::_exit(i32::from(code)) }
}
