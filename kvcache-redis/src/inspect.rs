//! What an operator can ask of the server ([`Inspect`]), without `KEYS` and without a write.
//!
//! Every walk is `SCAN CURSOR MATCH PATTERN COUNT 1000`, as `clear` walks: a container's pattern
//! (`PREFIX:{LEN:CONTAINER}:*`, with the key prefix asked for before its `*`), or the backend's
//! (`PREFIX:{*`) to find its containers. Each step of a summary then sends one pipeline of
//! `STRLEN` and `PTTL` for the keys it found. The server walks its whole keyspace for each walk
//! (`MATCH` filters after the walk), one step at a time, so a walk never blocks it for longer than
//! a step, and each step is bounded by `command_timeout`. A key that holds something kvcache did
//! not write (a hash, a list) is left out.
//!
//! On a Redis Cluster a walk is per node: a container's walks `SCAN` the master of its slot (the
//! slot of every key of the container), and the listing of containers `SCAN`s every master in
//! turn, the masters read from `CLUSTER SLOTS` when the listing starts (a master that takes over
//! during the walk is reached by one of the slots it now serves; a walk that spans a failover may
//! miss or repeat keys, as one across a resharding would).
//!
//! Leases (`PREFIX:{LEN:CONTAINER}!lease:KEY`, see the `key` module) are no entries: a container's
//! pattern never matches them, and the backend's does, but `container_of` reads no container
//! from them, so a container that holds only leases is not listed either.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use kvcache_core::inspect::{Entry, Inspect, Summary};
use kvcache_core::{Error, Result};
use redis::cluster_routing::{Route, SlotAddr};
use redis::{RedisResult, Value};

use super::{RedisBackend, Request, SCAN_COUNT, Shared, master_of, short};

/// `text` with Redis's glob characters escaped, to match as it is.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Unix milliseconds now, on this machine's clock: a `PTTL` is relative to the server's.
fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// The expiry of a key whose `PTTL` is `pttl`: `Some(None)` for none (-1), `None` for a key
/// that is gone (-2).
fn expiry(pttl: i64, now: u64) -> Option<Option<u64>> {
    match pttl {
        -2 => None,
        ..0 => Some(None),
        ms => Some(Some(now.saturating_add(ms.unsigned_abs()))),
    }
}

/// The container a Redis key of backend prefix `prefix` belongs to: `PREFIX:{LEN:CONTAINER}:KEY`.
/// `None` for a key of another layout, a lease's (`PREFIX:{LEN:CONTAINER}!lease:KEY`) included.
fn container_of(prefix: &str, key: &[u8]) -> Option<String> {
    let rest = key.strip_prefix(prefix.as_bytes())?.strip_prefix(b":{")?;
    let digits = rest.iter().take_while(|byte| byte.is_ascii_digit()).count();
    let len: usize = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let rest = rest[digits..].strip_prefix(b":")?;
    let name = rest.get(..len)?;
    rest[len..].starts_with(b"}:").then_some(())?;
    String::from_utf8(name.to_vec()).ok()
}

/// One slot of each master in a `CLUSTER SLOTS` answer (`[[START, END, [HOST, PORT, ID, ...],
/// REPLICA...], ...]`), in the order of the answer: a route to each master.
fn one_slot_per_master(slots: &[Value]) -> Vec<u16> {
    let mut masters: Vec<(String, u16)> = Vec::new();
    for range in slots {
        let Value::Array(range) = range else {
            continue;
        };
        let (Some(Value::Int(start)), Some(Value::Array(master))) = (range.first(), range.get(2))
        else {
            continue;
        };
        let (Ok(start), Some(host), Some(Value::Int(port))) =
            (u16::try_from(*start), master.first(), master.get(1))
        else {
            continue;
        };
        let node = match host {
            Value::BulkString(host) => String::from_utf8_lossy(host).into_owned(),
            Value::SimpleString(host) => host.clone(),
            _ => continue,
        };
        let node = format!("{node}:{port}");
        if !masters.iter().any(|(seen, _)| *seen == node) {
            masters.push((node, start));
        }
    }
    masters.into_iter().map(|(_, slot)| slot).collect()
}

impl RedisBackend {
    /// A route to each master: on a cluster, one slot of each, read from `CLUSTER SLOTS`; on one
    /// server, the server.
    fn masters(&self) -> Result<Vec<Route>> {
        if !self.shared.link.is_cluster() {
            return Ok(vec![Route::new(0, SlotAddr::Master)]);
        }
        let slots: Vec<Value> = self.wait(move |shared| async move {
            let slots = redis::cmd("CLUSTER").arg("SLOTS").to_owned();
            shared
                .call(Request::Command(slots), || {
                    "reading the cluster's masters (CLUSTER SLOTS)".to_owned()
                })
                .await
        })?;
        Ok(one_slot_per_master(&slots)
            .into_iter()
            .map(|slot| Route::new(slot, SlotAddr::Master))
            .collect())
    }

    /// Runs `call` on kvcache's runtime with the backend's shared state, and waits for it.
    fn wait<T, F>(&self, call: impl FnOnce(Arc<Shared>) -> F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        let name = self.shared.name.clone();
        kvcache_core::block_on(call(Arc::clone(&self.shared)))?.unwrap_or_else(|| {
            Err(Error::backend(
                name,
                "inspecting the server",
                "the task that ran the call panicked",
            ))
        })
    }

    /// Walks the keys matching `pattern` on the node `master` routes to, one `SCAN` step at a
    /// time, giving each step's keys to `step` until it returns `false`; `doing` describes the
    /// walk for errors.
    fn scan(
        &self,
        master: &Route,
        pattern: &str,
        doing: &str,
        mut step: impl FnMut(Vec<Vec<u8>>) -> Result<bool>,
    ) -> Result<()> {
        let mut cursor: u64 = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT);
            let (doing, master) = (doing.to_owned(), *master);
            let (next, found): (u64, Vec<Vec<u8>>) = self.wait(move |shared| async move {
                shared.call(Request::At(scan, master), || doing).await
            })?;
            if !step(found)? || next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}

impl Inspect for RedisBackend {
    /// Walks every key of the backend's prefix (`PREFIX:{*`), on every master of a cluster, and
    /// reads the container of each.
    fn containers(&self, progress: &mut dyn FnMut(u64)) -> Result<Option<Vec<String>>> {
        let prefix = self.shared.keys.prefix().to_owned();
        let pattern = format!("{}:{{*", escape(&prefix));
        let (mut names, mut seen) = (BTreeSet::new(), 0_u64);
        for master in self.masters()? {
            self.scan(&master, &pattern, "listing the containers", |found| {
                seen += found.len() as u64;
                names.extend(found.iter().filter_map(|key| container_of(&prefix, key)));
                progress(seen);
                Ok(true)
            })?;
        }
        Ok(Some(names.into_iter().collect()))
    }

    fn summary(&self, container: &str, progress: &mut dyn FnMut(u64)) -> Result<Summary> {
        let keys = self.shared.keys.container(container);
        let doing = format!("summarising container {container:?}");
        let mut summary = Summary {
            bytes: Some(0),
            without_expiry: Some(0),
            ..Summary::default()
        };
        let mut seen = BTreeSet::new();
        let master = master_of(&keys.entry(""));
        self.scan(&master, keys.pattern(), &doing, |found| {
            // SCAN may return a key twice: count each once.
            let found: Vec<Vec<u8>> = found
                .into_iter()
                .filter(|key| seen.insert(key.clone()))
                .collect();
            if found.is_empty() {
                progress(seen.len() as u64);
                return Ok(true);
            }
            let mut pipeline = redis::pipe();
            for key in &found {
                pipeline.cmd("STRLEN").arg(key).cmd("PTTL").arg(key);
            }
            pipeline.ignore_errors();
            let doing = doing.clone();
            let answers: Vec<RedisResult<i64>> = self.wait(move |shared| async move {
                shared.call(Request::Pipeline(pipeline), || doing).await
            })?;
            let now = now_millis();
            for pair in answers.chunks(2) {
                // WRONGTYPE: not a value kvcache wrote.
                let [Ok(length), Ok(pttl)] = pair else {
                    continue;
                };
                let Some(expires_at) = expiry(*pttl, now) else {
                    continue;
                };
                summary.entries += 1;
                *summary.bytes.get_or_insert(0) += length.unsigned_abs();
                match expires_at {
                    None => *summary.without_expiry.get_or_insert(0) += 1,
                    Some(at) => {
                        summary.oldest_expiry =
                            Some(summary.oldest_expiry.map_or(at, |t| t.min(at)));
                        summary.newest_expiry =
                            Some(summary.newest_expiry.map_or(at, |t| t.max(at)));
                    }
                }
            }
            progress(seen.len() as u64);
            Ok(true)
        })?;
        Ok(summary)
    }

    /// The first `limit` keys the walk finds, sorted: a walk is in no key order.
    fn keys(
        &self,
        container: &str,
        prefix: &str,
        limit: Option<usize>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Vec<String>> {
        let keys = self.shared.keys.container(container);
        let start = keys.entry("");
        let pattern = keys.pattern();
        let pattern = format!(
            "{}{}*",
            pattern.strip_suffix('*').unwrap_or(pattern),
            escape(prefix)
        );
        let limit = limit.unwrap_or(usize::MAX);
        let mut found = BTreeSet::new();
        if limit > 0 {
            let doing = format!("listing the keys of container {container:?}");
            self.scan(&master_of(&start), &pattern, &doing, |step| {
                for key in step {
                    let key = key
                        .strip_prefix(start.as_bytes())
                        .map(|key| String::from_utf8_lossy(key).into_owned());
                    if let Some(key) = key {
                        found.insert(key);
                        if found.len() >= limit {
                            break;
                        }
                    }
                }
                progress(found.len() as u64);
                Ok(found.len() < limit)
            })?;
        }
        Ok(found.into_iter().collect())
    }

    fn entry(&self, container: &str, key: &str) -> Result<Option<Entry>> {
        let entry = self.shared.keys.container(container).entry(key);
        let mut pipeline = redis::pipe();
        pipeline
            .cmd("GET")
            .arg(&entry)
            .cmd("PTTL")
            .arg(&entry)
            .ignore_errors();
        let doing = format!("reading key {} of container {container:?}", short(key));
        let (value, pttl): (RedisResult<Option<Vec<u8>>>, RedisResult<i64>) =
            self.wait(move |shared| async move {
                shared.call(Request::Pipeline(pipeline), || doing).await
            })?;
        // WRONGTYPE: not a value kvcache wrote, a miss as for `retrieve`.
        let (Ok(Some(value)), Ok(pttl)) = (value, pttl) else {
            return Ok(None);
        };
        Ok(expiry(pttl, now_millis()).map(|expires_at| Entry::new(value, expires_at)))
    }
}

#[cfg(test)]
mod tests {
    use redis::Value;

    use super::{container_of, escape, expiry, one_slot_per_master};

    #[test]
    fn one_slot_of_each_master_is_read_from_cluster_slots() {
        let node = |port: i64, id: &str| {
            Value::Array(vec![
                Value::BulkString(b"127.0.0.1".to_vec()),
                Value::Int(port),
                Value::BulkString(id.as_bytes().to_vec()),
            ])
        };
        let range = |start: i64, end: i64, master: Value, replica: Value| {
            Value::Array(vec![Value::Int(start), Value::Int(end), master, replica])
        };
        let (a, b, c) = (node(7000, "a"), node(7001, "b"), node(7002, "c"));
        let (d, e, f) = (node(7003, "d"), node(7004, "e"), node(7005, "f"));
        let slots = [
            range(0, 5460, a.clone(), f.clone()),
            range(5461, 10922, b, d),
            range(10923, 11000, c, e),
            range(11001, 16383, a, f),
            Value::Nil,
        ];
        assert_eq!(one_slot_per_master(&slots), [0, 5461, 10923]);
        assert!(one_slot_per_master(&[]).is_empty());
    }

    #[test]
    fn containers_are_read_back_from_keys() {
        assert_eq!(
            container_of("kvcache", b"kvcache:{8:greeting}:Peter").as_deref(),
            Some("greeting")
        );
        assert_eq!(container_of("p", b"p:{3:a:b}:c").as_deref(), Some("a:b"));
        assert_eq!(container_of("p", b"p:{3:a}:c"), None, "too short");
        assert_eq!(container_of("p", b"q:{1:a}:c"), None, "another prefix");
        assert_eq!(container_of("p", b"p:{x:a}:c"), None);
    }

    #[test]
    fn leases_are_no_containers() {
        let keys = crate::key::Keys::new("p");
        for (container, key) in [("a", "k"), ("a:b", ""), ("a}", "b"), ("1:a}!lease:", "c")] {
            assert_eq!(
                container_of("p", keys.lease(container, key).as_bytes()),
                None,
                "the lease on ({container:?}, {key:?})"
            );
            assert_eq!(
                container_of("p", keys.entry(container, key).as_bytes()).as_deref(),
                Some(container)
            );
        }
    }

    #[test]
    fn globs_are_escaped_and_ttls_read() {
        assert_eq!(escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(expiry(-2, 10), None);
        assert_eq!(expiry(-1, 10), Some(None));
        assert_eq!(expiry(5, 10), Some(Some(15)));
    }
}
