//! What each verb does, and what it prints: for people, or as one JSON document.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kvcache::inspect::{Inspect, StampInfo, Summary, describe};
use kvcache::{Backend, Config, Error};
use serde_json::{Value, json};

use crate::load::load;
use crate::progress::Progress;
use crate::show;
use crate::{Cli, Verb};

/// Done.
pub(crate) const OK: u8 = 0;
/// A backend failed or could not be reached.
pub(crate) const FAILED: u8 = 1;
/// Bad usage or configuration.
pub(crate) const USAGE: u8 = 2;
/// No such key.
pub(crate) const NOT_FOUND: u8 = 3;
/// Not supported by the backend.
pub(crate) const UNSUPPORTED: u8 = 4;

/// Why an in-memory backend cannot be looked into from here.
const IN_MEMORY: &str = "an in-memory backend keeps its entries in the memory of each \
                         process that uses it; this command is a process of its own and sees \
                         none of them";

/// What a verb did: its exit code and what it prints.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) code: u8,
    /// For stdout, without `--json`.
    human: String,
    /// For stderr, without `--json`.
    complaint: String,
    /// For stdout, with `--json`.
    json: Value,
}

impl Outcome {
    fn done(human: String, json: Value) -> Self {
        Outcome {
            code: OK,
            human,
            complaint: String::new(),
            json,
        }
    }

    /// A verb that failed with `error`.
    fn failed(error: &Error) -> Self {
        Self::refused(code(error), error)
    }

    /// A verb that ends with exit code `code` for `error`.
    fn refused(code: u8, error: &dyn std::error::Error) -> Self {
        Outcome {
            code,
            human: String::new(),
            complaint: format!("kvcache: {}\n", show::error_line(error)),
            json: json!({ "error": error_json(error), "exit_code": code }),
        }
    }

    /// Prints it: JSON on stdout with `json`, else its text on stdout and its complaint on
    /// stderr.
    pub(crate) fn print(&self, json: bool) {
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&self.json).unwrap_or_default()
            );
        } else {
            print!("{}", self.human);
            eprint!("{}", self.complaint);
        }
    }
}

/// The more serious of two exit codes: bad usage, then a failure, then unsupported, then not
/// found.
fn worst(a: u8, b: u8) -> u8 {
    let rank = |code: u8| match code {
        USAGE => 4,
        FAILED => 3,
        UNSUPPORTED => 2,
        NOT_FOUND => 1,
        _ => 0,
    };
    if rank(b) > rank(a) { b } else { a }
}

/// The exit code of `error`.
fn code(error: &Error) -> u8 {
    match error {
        Error::InvalidConfig { .. }
        | Error::UnknownBackend { .. }
        | Error::UnknownContainer { .. }
        | Error::DuplicateRegistration { .. } => USAGE,
        Error::Unsupported { .. } => UNSUPPORTED,
        Error::NotFound { .. } => NOT_FOUND,
        _ => FAILED,
    }
}

fn error_json(error: &dyn std::error::Error) -> Value {
    json!({ "message": error.to_string(), "causes": show::causes(error) })
}

/// An expiry in JSON: Unix milliseconds and RFC 3339, or nulls.
fn when_json(millis: Option<u64>) -> (Value, Value) {
    match millis {
        Some(millis) => (json!(millis), json!(show::rfc3339(millis))),
        None => (Value::Null, Value::Null),
    }
}

/// Runs the verb of `cli`.
pub(crate) fn run(cli: &Cli) -> Outcome {
    let config = match load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => return Outcome::failed(&error),
    };
    let path = cli
        .config
        .as_deref()
        .map(|path| path.display().to_string())
        .unwrap_or_default();
    let mut backends = Backends::new(&config);
    let json = cli.json;
    let result = match &cli.verb {
        Verb::Check => return check(&path, &mut backends),
        Verb::Stats { containers } => return stats(&mut backends, containers, json),
        Verb::Keys {
            container,
            prefix,
            limit,
        } => keys(&mut backends, container, prefix, *limit, json),
        Verb::Get { container, key } => get(&mut backends, container, key),
        Verb::Remove { container, key } => remove(&mut backends, container, key),
        Verb::Clear { container } => clear(&mut backends, container),
        Verb::Purge { backend } => return purge(&mut backends, backend.as_deref()),
    };
    result.unwrap_or_else(|error| Outcome::failed(&error))
}

/// The backends of a configuration, each opened when first needed, at most once.
struct Backends<'a> {
    config: &'a Config,
    opened: BTreeMap<String, Result<Arc<dyn Backend>, Error>>,
}

/// How a backend can be looked into.
enum Access<'a> {
    Inspect(&'a dyn Inspect),
    /// In the memory of another process.
    Memory,
    /// It offers no inspection.
    None,
}

impl<'a> Backends<'a> {
    fn new(config: &'a Config) -> Self {
        Backends {
            config,
            opened: BTreeMap::new(),
        }
    }

    /// The backend declared as `name`, opened.
    fn get(&mut self, name: &str) -> Result<Arc<dyn Backend>, Error> {
        let config = self.config;
        self.opened
            .entry(name.to_owned())
            .or_insert_with(|| config.open_backend(name))
            .clone()
    }

    /// The name of the backend of `container`, or the error naming the declared containers.
    fn backend_of(&self, container: &str) -> Result<String, Error> {
        self.config
            .container_backend(container)
            .map(str::to_owned)
            .ok_or_else(|| Error::UnknownContainer {
                name: container.to_owned(),
                known: self.config.container_names().map(str::to_owned).collect(),
            })
    }

    /// The backend of `container`, with its name.
    fn of(&mut self, container: &str) -> Result<(String, Arc<dyn Backend>), Error> {
        let name = self.backend_of(container)?;
        let backend = self.get(&name)?;
        Ok((name, backend))
    }
}

/// How `backend` can be looked into, as the space of `container` tells.
fn access<'b>(backend: &'b Arc<dyn Backend>, container: &str) -> Access<'b> {
    if let Some(inspect) = backend.inspect() {
        return Access::Inspect(inspect);
    }
    match backend.open(container) {
        Ok(space) if space.is_memory() => Access::Memory,
        _ => Access::None,
    }
}

/// The [`Inspect`] of `backend` (declared as `name`) for `operation` on `container`, or the
/// error saying it has none.
fn inspector<'b>(
    name: &str,
    backend: &'b Arc<dyn Backend>,
    container: &str,
    operation: &str,
) -> Result<&'b dyn Inspect, Error> {
    match access(backend, container) {
        Access::Inspect(inspect) => Ok(inspect),
        Access::Memory => Err(unsupported(name, operation, Some(in_memory()))),
        Access::None => Err(unsupported(name, operation, None)),
    }
}

fn in_memory() -> String {
    IN_MEMORY.to_owned()
}

fn unsupported(name: &str, operation: &str, reason: Option<String>) -> Error {
    Error::Unsupported {
        backend: name.to_owned(),
        operation: operation.to_owned(),
        reason,
    }
}

/// `check`: every backend opened, and each container's.
fn check(path: &str, backends: &mut Backends<'_>) -> Outcome {
    let config = backends.config;
    let names: Vec<String> = config.backend_names().map(str::to_owned).collect();
    let containers: Vec<String> = config.container_names().map(str::to_owned).collect();
    let mut human = format!(
        "configuration {path}: {} backend{}, {} container{}\n",
        names.len(),
        plural(names.len()),
        containers.len(),
        plural(containers.len())
    );
    let mut code = OK;
    let mut listed = Vec::new();
    let mut state = BTreeMap::new();
    for name in &names {
        let kind = config.backend_kind(name).unwrap_or_default();
        let (status, line, error) = match backends.get(name) {
            Ok(backend) => match access(&backend, "") {
                Access::Inspect(_) => ("reachable", "reachable".to_owned(), None),
                Access::Memory => ("in memory", format!("in memory ({IN_MEMORY})"), None),
                Access::None => (
                    "reachable",
                    "reachable (cannot be inspected: it offers no inspection)".to_owned(),
                    None,
                ),
            },
            Err(error) => {
                let failed = code_of_open(&error);
                code = worst(code, failed);
                let status = if failed == USAGE {
                    "misconfigured"
                } else {
                    "unreachable"
                };
                (
                    status,
                    format!("{status}: {}", show::error_line(&error)),
                    Some(error),
                )
            }
        };
        human.push_str(&format!("backend {name} ({kind}): {line}\n"));
        state.insert(name.clone(), status);
        listed.push(json!({
            "name": name,
            "kind": kind,
            "status": status,
            "error": error.as_ref().map(|error| error_json(error)),
        }));
    }
    let mut declared = Vec::new();
    for container in &containers {
        let backend = config.container_backend(container).unwrap_or_default();
        let status = state.get(backend).copied().unwrap_or("unknown");
        human.push_str(&format!(
            "container {container}: on backend {backend} ({status})\n"
        ));
        declared.push(json!({ "name": container, "backend": backend, "status": status }));
    }
    Outcome {
        code,
        human,
        complaint: String::new(),
        json: json!({
            "configuration": path,
            "ok": code == OK,
            "backends": listed,
            "containers": declared,
            "exit_code": code,
        }),
    }
}

/// A backend that cannot be opened: misconfigured (2), or unreachable and such (1).
fn code_of_open(error: &Error) -> u8 {
    match code(error) {
        USAGE => USAGE,
        _ => FAILED,
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// One row of `stats`.
struct Row {
    container: String,
    backend: String,
    declared: bool,
    summary: Result<Summary, Error>,
}

/// `stats`: a summary per container.
fn stats(backends: &mut Backends<'_>, asked: &[String], json: bool) -> Outcome {
    let config = backends.config;
    let named = !asked.is_empty();
    let containers: Vec<String> = if named {
        asked.to_vec()
    } else {
        config.container_names().map(str::to_owned).collect()
    };
    let mut rows = Vec::new();
    for container in &containers {
        let backend_name = match backends.backend_of(container) {
            Ok(name) => name,
            // A container that is not declared: bad usage, whatever the others say.
            Err(error) => return Outcome::failed(&error),
        };
        let summary = backends.get(&backend_name).and_then(|backend| {
            let operation = format!("summarising container {container:?}");
            let inspect = inspector(&backend_name, &backend, container, &operation)?;
            let mut progress = Progress::new(&operation, json);
            inspect.summary(container, &mut |n| progress.update(n))
        });
        rows.push(Row {
            container: container.clone(),
            backend: backend_name,
            declared: true,
            summary,
        });
    }
    if !named {
        rows.extend(undeclared(backends, json));
    }
    let code = rows
        .iter()
        .filter_map(|row| row.summary.as_ref().err())
        .map(|error| match code(error) {
            // Unsupported where nothing was named: reported, not a failure of the verb.
            UNSUPPORTED if !named => OK,
            code => code,
        })
        .fold(OK, worst);
    let now = show::now_millis();
    let mut table = Vec::new();
    let mut complaint = String::new();
    let mut listed = Vec::new();
    for row in &rows {
        let name = if row.declared {
            row.container.clone()
        } else {
            format!("{} (undeclared)", row.container)
        };
        let mut entry = json!({
            "container": row.container,
            "backend": row.backend,
            "declared": row.declared,
        });
        match &row.summary {
            Ok(summary) => {
                let count = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
                let at = |ms: Option<u64>| {
                    ms.map_or_else(|| "-".to_owned(), |ms| show::relative(ms, now))
                };
                table.push(vec![
                    name,
                    row.backend.clone(),
                    summary.entries.to_string(),
                    summary.bytes.map_or_else(|| "-".to_owned(), show::bytes),
                    count(summary.without_expiry),
                    at(summary.oldest_expiry),
                    at(summary.newest_expiry),
                    count(summary.expired),
                ]);
                let (oldest, oldest_text) = when_json(summary.oldest_expiry);
                let (newest, newest_text) = when_json(summary.newest_expiry);
                let fields = json!({
                    "entries": summary.entries,
                    "bytes": summary.bytes,
                    "without_expiry": summary.without_expiry,
                    "oldest_expiry": oldest,
                    "oldest_expiry_rfc3339": oldest_text,
                    "newest_expiry": newest,
                    "newest_expiry_rfc3339": newest_text,
                    "expired": summary.expired,
                });
                merge(&mut entry, fields);
            }
            Err(error) => {
                let what = if error.is_unsupported() {
                    "n/a"
                } else {
                    "failed"
                };
                table.push(vec![
                    name,
                    row.backend.clone(),
                    what.to_owned(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                ]);
                complaint.push_str(&format!(
                    "kvcache: container {:?}: {}\n",
                    row.container,
                    show::error_line(error)
                ));
                merge(&mut entry, json!({ "error": error_json(error) }));
            }
        }
        listed.push(entry);
    }
    let human = if table.is_empty() {
        "no containers\n".to_owned()
    } else {
        show::table(
            &[
                "CONTAINER",
                "BACKEND",
                "ENTRIES",
                "BYTES",
                "NO EXPIRY",
                "OLDEST EXPIRY",
                "NEWEST EXPIRY",
                "EXPIRED",
            ],
            &table,
            &[2, 3, 4, 7],
        )
    };
    Outcome {
        code,
        human,
        complaint,
        json: json!({ "containers": listed, "exit_code": code }),
    }
}

/// The containers that inspectable backends hold and the configuration does not declare on
/// them, summarised.
fn undeclared(backends: &mut Backends<'_>, json: bool) -> Vec<Row> {
    let config = backends.config;
    let mut rows = Vec::new();
    for backend_name in config.backend_names() {
        let Ok(backend) = backends.get(backend_name) else {
            continue;
        };
        let Some(inspect) = backend.inspect() else {
            continue;
        };
        let found = {
            let mut progress = Progress::new(
                format!("listing the containers of backend {backend_name:?}"),
                json,
            );
            inspect.containers(&mut |n| progress.update(n))
        };
        let declared: BTreeSet<&str> = config
            .container_names()
            .filter(|&container| config.container_backend(container) == Some(backend_name))
            .collect();
        let found = match found {
            Ok(Some(found)) => found,
            Ok(None) => continue,
            Err(error) => {
                rows.push(Row {
                    container: "(listing containers)".to_owned(),
                    backend: backend_name.to_owned(),
                    declared: false,
                    summary: Err(error),
                });
                continue;
            }
        };
        for container in found.into_iter().filter(|c| !declared.contains(c.as_str())) {
            let mut progress = Progress::new(format!("summarising container {container:?}"), json);
            let summary = inspect.summary(&container, &mut |n| progress.update(n));
            drop(progress);
            rows.push(Row {
                container,
                backend: backend_name.to_owned(),
                declared: false,
                summary,
            });
        }
    }
    rows
}

/// Adds `fields` (an object) to `object`.
fn merge(object: &mut Value, fields: Value) {
    if let (Value::Object(object), Value::Object(fields)) = (object, fields) {
        object.extend(fields);
    }
}

/// `keys`: the keys of a container.
fn keys(
    backends: &mut Backends<'_>,
    container: &str,
    prefix: &str,
    limit: Option<usize>,
    json: bool,
) -> Result<Outcome, Error> {
    let (name, backend) = backends.of(container)?;
    let operation = format!("listing the keys of container {container:?}");
    let inspect = inspector(&name, &backend, container, &operation)?;
    let keys = {
        let mut progress = Progress::new(&operation, json);
        inspect.keys(container, prefix, limit, &mut |n| progress.update(n))?
    };
    let mut human = String::new();
    for key in &keys {
        human.push_str(key);
        human.push('\n');
    }
    Ok(Outcome::done(
        human,
        json!({
            "container": container,
            "backend": name,
            "prefix": prefix,
            "limit": limit,
            "keys": keys,
        }),
    ))
}

/// A key that is not in its container.
#[derive(Debug)]
struct Absent {
    container: String,
    key: String,
    backend: String,
    doing: &'static str,
}

impl std::fmt::Display for Absent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "key {:?} is not in container {:?} (backend {:?}){}",
            self.key, self.container, self.backend, self.doing
        )
    }
}

impl std::error::Error for Absent {}

/// `get`: an entry, described.
fn get(backends: &mut Backends<'_>, container: &str, key: &str) -> Result<Outcome, Error> {
    let (name, backend) = backends.of(container)?;
    let operation = format!("reading an entry of container {container:?}");
    let inspect = inspector(&name, &backend, container, &operation)?;
    let Some(entry) = inspect.entry(container, key)? else {
        return Ok(Outcome::refused(
            NOT_FOUND,
            &Absent {
                container: container.to_owned(),
                key: key.to_owned(),
                backend: name,
                doing: "",
            },
        ));
    };
    let described = describe(&entry.value);
    let now = show::now_millis();
    let mut lines: Vec<(&str, String)> = vec![
        ("container", container.to_owned()),
        ("backend", name.clone()),
        ("key", format!("{key:?}")),
        ("size", format!("{} bytes", entry.size())),
        (
            "expires",
            entry.expires_at.map_or_else(
                || "never".to_owned(),
                |at| format!("{} ({})", show::rfc3339(at), show::relative(at, now)),
            ),
        ),
    ];
    if let Some(stamp) = &described.stamp {
        lines.extend(stamp_lines(stamp, entry.expires_at, now));
    }
    let fingerprint = described
        .header
        .as_ref()
        .map(|header| format!("{:016x}", header.fingerprint));
    let failure = described
        .stamp
        .as_ref()
        .and_then(|stamp| stamp.failure.as_ref());
    match &described.header {
        Some(header) => {
            let mut format = header.format.to_string();
            if !header.readable {
                format.push_str(" (not a format this build reads)");
            }
            if let Some(compression) = &header.compression {
                format.push_str(&format!(", compressed with {compression}"));
                if !header.decompressed {
                    format.push_str(" (not built in here: not decompressed)");
                }
            }
            if described.stamp.is_some() {
                format.push_str(", stamped");
            }
            lines.push(("format", format));
            let type_name = described
                .value
                .as_ref()
                .and_then(|value| value.type_name)
                .unwrap_or("not one this command knows");
            lines.push((
                "type",
                format!(
                    "{type_name} (fingerprint {})",
                    fingerprint.clone().unwrap_or_default()
                ),
            ));
        }
        None if failure.is_some() => lines.push((
            "format",
            "stamped: a remembered generator failure, no value".to_owned(),
        )),
        None => lines.push(("format", "none: shorter than a kvcache header".to_owned())),
    }
    match (failure, &described.value) {
        (Some(message), _) => lines.push(("failure", show::cut(&format!("{message:?}"), 4096))),
        (None, Some(value)) => {
            let mut text = show::cut(&value.text, 4096);
            if value.type_name.is_none() {
                text.push_str("  (the body decodes as a string)");
            }
            lines.push(("value", text));
        }
        (None, None) => lines.push((
            "body",
            format!(
                "{} bytes: {}",
                described.body.len(),
                show::hex(&described.body, 32)
            ),
        )),
    }
    // The labels' column: 10 wide, as for every unstamped value, or the longest label's.
    let width = lines
        .iter()
        .map(|(label, _)| label.chars().count())
        .max()
        .unwrap_or(0)
        .max(10);
    let mut human = String::new();
    for (label, text) in &lines {
        human.push_str(&format!("{label:<width$} {text}\n"));
    }
    let (expires_at, expires_text) = when_json(entry.expires_at);
    let header = described.header.as_ref();
    let json = json!({
        "container": container,
        "backend": name,
        "key": key,
        "size": entry.size(),
        "expires_at": expires_at,
        "expires_at_rfc3339": expires_text,
        "format": header.map(|header| header.format),
        "readable": header.is_some_and(|header| header.readable),
        "compression": header.and_then(|header| header.compression.clone()),
        "fingerprint": fingerprint,
        "type": described.value.as_ref().and_then(|value| value.type_name),
        "value": described.value.as_ref().map(|value| value.text.clone()),
        "body_length": described.body.len(),
        "body_hex": show::hex(&described.body, 64),
        "stamp": described.stamp.as_ref().map(stamp_json),
    });
    Ok(Outcome::done(human, json))
}

/// How much later than a stamp's expiry the store's own expiry of the same entry can fall with
/// no stale-if-error window: the store reads its clock a moment after the stamp was written,
/// so the two differ by a millisecond or so. A window shorter than this reads as none.
const SAME_EXPIRY_MS: u64 = 1_000;

/// The lines `get` shows of a stamp: when the value is refreshed, until when it is served, a
/// remembered failure's retry, and how long its generation took. `stored_until` is the entry's
/// own expiry in the store: past the stamp's (by more than [`SAME_EXPIRY_MS`]), the
/// stale-if-error window.
fn stamp_lines(
    stamp: &StampInfo,
    stored_until: Option<u64>,
    now: u64,
) -> Vec<(&'static str, String)> {
    let at = |at: u64| format!("{} ({})", show::rfc3339(at), show::relative(at, now));
    let mut lines = Vec::new();
    if stamp.failure.is_some() {
        lines.push((
            "remembered until",
            stamp.expires_at.map_or_else(|| "never".to_owned(), at),
        ));
    } else {
        lines.push((
            "refresh",
            stamp.refresh_at.map_or_else(|| "never".to_owned(), at),
        ));
        lines.push((
            "serves until",
            stamp.expires_at.map_or_else(
                || "no expiry".to_owned(),
                |expires| {
                    let mut text = at(expires);
                    if stored_until
                        .is_none_or(|stored| stored > expires.saturating_add(SAME_EXPIRY_MS))
                    {
                        text.push_str(", then only when the generator fails");
                    }
                    text
                },
            ),
        ));
    }
    if let Some(retry) = stamp.retry_at {
        lines.push((
            "retry",
            format!(
                "{} (a failure is remembered: no generator call before)",
                at(retry)
            ),
        ));
    }
    if stamp.failure.is_none() {
        let took = std::time::Duration::from_millis(u64::from(stamp.took_ms));
        let took = if stamp.took_ms == 0 {
            "0ms".to_owned()
        } else {
            humantime::format_duration(took).to_string()
        };
        lines.push(("generated in", took));
    }
    lines
}

/// A stamp in JSON: its times in Unix milliseconds and RFC 3339 (or nulls), the generation's
/// time and a remembered failure's message (or null).
fn stamp_json(stamp: &StampInfo) -> Value {
    let (refresh_at, refresh_text) = when_json(stamp.refresh_at);
    let (expires_at, expires_text) = when_json(stamp.expires_at);
    let (retry_at, retry_text) = when_json(stamp.retry_at);
    json!({
        "refresh_at": refresh_at,
        "refresh_at_rfc3339": refresh_text,
        "expires_at": expires_at,
        "expires_at_rfc3339": expires_text,
        "retry_at": retry_at,
        "retry_at_rfc3339": retry_text,
        "took_ms": stamp.took_ms,
        "failure": stamp.failure,
    })
}

/// The synchronous store of `container` on `backend` (declared as `name`), for `operation`;
/// an in-memory backend's is not this process's to change.
fn store_of(
    name: &str,
    backend: &Arc<dyn Backend>,
    container: &str,
    operation: &str,
) -> Result<Arc<dyn kvcache::Store>, Error> {
    let space = backend.open(container)?;
    if space.is_memory() {
        return Err(unsupported(name, operation, Some(in_memory())));
    }
    Ok(space.sync_store())
}

/// `remove`: one entry.
fn remove(backends: &mut Backends<'_>, container: &str, key: &str) -> Result<Outcome, Error> {
    let (name, backend) = backends.of(container)?;
    let operation = format!("removing an entry of container {container:?}");
    let store = store_of(&name, &backend, container, &operation)?;
    // Where the backend can tell, a key that is not there is said so (exit 3).
    let present = match backend.inspect() {
        Some(inspect) => Some(inspect.entry(container, key)?.is_some()),
        None => None,
    };
    if present == Some(false) {
        return Ok(Outcome::refused(
            NOT_FOUND,
            &Absent {
                container: container.to_owned(),
                key: key.to_owned(),
                backend: name,
                doing: ": nothing removed",
            },
        ));
    }
    store.invalidate(key)?;
    let human = match present {
        Some(_) => format!("removed key {key:?} from container {container:?} (backend {name})\n"),
        None => format!(
            "removed key {key:?} from container {container:?} (backend {name}), if it was there\n"
        ),
    };
    Ok(Outcome::done(
        human,
        json!({
            "container": container,
            "backend": name,
            "key": key,
            "removed": true,
            "was_present": present,
        }),
    ))
}

/// `clear`: every entry of a container.
fn clear(backends: &mut Backends<'_>, container: &str) -> Result<Outcome, Error> {
    let (name, backend) = backends.of(container)?;
    let operation = format!("clearing container {container:?}");
    store_of(&name, &backend, container, &operation)?.clear()?;
    Ok(Outcome::done(
        format!("cleared container {container:?} (backend {name})\n"),
        json!({ "container": container, "backend": name, "cleared": true }),
    ))
}

/// `purge`: the expired entries of every backend, or of one.
fn purge(backends: &mut Backends<'_>, only: Option<&str>) -> Outcome {
    let config = backends.config;
    let names: Vec<String> = match only {
        Some(name) => {
            if config.backend_kind(name).is_none() {
                let declared: Vec<&str> = config.backend_names().collect();
                return Outcome::failed(&Error::config(
                    "--backend",
                    format!(
                        "no backend is declared as {name:?} (declared: {})",
                        if declared.is_empty() {
                            "none".to_owned()
                        } else {
                            declared.join(", ")
                        }
                    ),
                ));
            }
            vec![name.to_owned()]
        }
        None => config.backend_names().map(str::to_owned).collect(),
    };
    let mut code = OK;
    let (mut human, mut complaint, mut listed) = (String::new(), String::new(), Vec::new());
    for name in &names {
        let result = backends.get(name).and_then(|backend| {
            if let Access::Memory = access(&backend, "") {
                return Ok(false);
            }
            backend.purge_expired().map(|()| true)
        });
        match result {
            Ok(true) => {
                human.push_str(&format!("backend {name}: expired entries deleted\n"));
                listed.push(json!({ "backend": name, "purged": true }));
            }
            Ok(false) => {
                human.push_str(&format!("backend {name}: skipped ({IN_MEMORY})\n"));
                listed.push(json!({ "backend": name, "purged": false, "skipped": "in memory" }));
                if only.is_some() {
                    code = worst(code, UNSUPPORTED);
                }
            }
            Err(error) => {
                code = worst(code, code_of_open(&error));
                complaint.push_str(&format!(
                    "kvcache: backend {name}: {}\n",
                    show::error_line(&error)
                ));
                listed
                    .push(json!({ "backend": name, "purged": false, "error": error_json(&error) }));
            }
        }
    }
    Outcome {
        code,
        human,
        complaint,
        json: json!({ "backends": listed, "exit_code": code }),
    }
}
