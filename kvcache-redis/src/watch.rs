//! The backend's invalidation channel ([`Backend::watch`](kvcache_core::Backend::watch)): one
//! Redis pub/sub channel per backend, `PREFIX!changes`, on which every backend object that
//! watches a container publishes that container's stores, removals and clears, and from which
//! one subscriber task per backend object delivers the other objects' changes to its watchers.
//!
//! # Publishing
//!
//! A container publishes once [`watch`](Watch::watch) was called for it on this backend object:
//! each container's store holds the flag ([`Publisher`]) its writes check. A write of a watched
//! container sends its `PUBLISH` in the same round trip: `store`, `invalidate` and `store_many`
//! become one pipeline of the write(s) and one `PUBLISH` (listing every key of the batch);
//! `clear` publishes after its last `UNLINK`. Redis runs a pipeline's commands in order, so a
//! subscriber that reads the key again on a message reads the new value. A container nobody
//! watched publishes nothing.
//!
//! On a Redis Cluster the `PUBLISH` follows the write instead, as a command of its own: the
//! cluster client sends a pipeline to the node of one slot, and redis-rs routes `PUBLISH` by its
//! channel's slot, not the container's.
//!
//! # Payload
//!
//! ```text
//! 1 INSTANCE LEN:CONTAINER k LEN:KEY LEN:KEY ...     keys stored or removed
//! 1 INSTANCE LEN:CONTAINER c                         the container cleared
//! ```
//!
//! `1` is the format's version; `INSTANCE` the publishing backend object's id (16 lowercase hex
//! digits, random, made when the object is built: two objects in one process are two
//! instances); each `LEN` the byte length, in decimal, of the container name or key after its
//! `:`, so that any bytes round-trip (`1 0f3a9c2e5b7d1e44 8:greeting k 5:Peter 3:Ann`). A
//! payload that does not read so (another version, a message someone else published) is logged
//! and delivered to every watcher as [`Change::Lost`]: what it said is unknown.
//!
//! # Subscribing
//!
//! The first `watch` of a backend object starts its subscriber, a task on kvcache's runtime
//! with a pub/sub connection of its own (redis-rs's `PubSub`), subscribed to the channel; `watch`
//! returns once the subscription is confirmed, within `connect_timeout`. Each message is
//! delivered to the watchers of its container, except the object's own messages. An idle
//! subscription is checked with a `PING` every [`PING_EVERY`], so that a server that vanished
//! without closing the connection is noticed.
//!
//! When the connection drops (a restart, `CLIENT KILL TYPE pubsub`, an unanswered `PING`), every
//! watcher gets [`Change::Lost`]; the subscriber reconnects with a back-off of 50 ms doubling to
//! 1 s, forever, with one warning per outage, and once resubscribed delivers [`Change::Lost`]
//! again: what was published while it was away, after the first `Lost`, is lost too, and a
//! watcher that refilled its copies in between drops them.
//!
//! Classic `PUBLISH` reaches every subscriber of every node of a Redis Cluster, so one
//! subscription to any node suffices there. Pub/sub ignores the database number: backends with
//! one prefix on different databases of one server share the channel, and see each other's
//! changes as (needless) invalidations.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::fmt::Write as _;
use std::hash::BuildHasher;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use kvcache_core::{Change, Error, Result, Watcher};
use redis::aio::PubSub;
use redis::{Client, Cmd, Value};
use tokio::task::JoinHandle;

use super::{ContainerStore, Request};
use crate::config::RedisConfig;
use crate::key::Keys;

/// The version that starts every payload.
const VERSION: &[u8] = b"1";
/// The first pause before resubscribing; it doubles up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(50);
/// The longest pause between two attempts to resubscribe.
const MAX_DELAY: Duration = Duration::from_secs(1);
/// How long a subscription may stay silent before a `PING` checks it.
const PING_EVERY: Duration = Duration::from_secs(15);

/// One backend object's side of the channel: its instance id, which containers publish, and its
/// subscriber.
pub(super) struct Watch {
    hub: Arc<Hub>,
    /// Whether the backend is a cluster's.
    cluster: bool,
    /// The publishing flag of each container opened or watched.
    flags: Mutex<HashMap<String, Arc<AtomicBool>>>,
    /// The subscriber task, once started; aborted when the backend goes.
    task: Mutex<Option<JoinHandle<()>>>,
}

/// What the subscriber task shares with the backend object.
struct Hub {
    /// The backend's name and `redis at HOST:PORT`, for errors and logs.
    name: String,
    endpoint: String,
    channel: String,
    instance: String,
    /// The URLs of the servers to subscribe on, tried in turn: the backend's URL, or a
    /// cluster's seed nodes (a cluster delivers a classic `PUBLISH` on every node).
    urls: Vec<String>,
    connect_timeout: Duration,
    watchers: RwLock<HashMap<String, Vec<Watcher>>>,
    status: Mutex<Status>,
    changed: Condvar,
}

/// Where the subscriber is.
#[derive(Default)]
struct Status {
    subscribed: bool,
    /// Attempts to subscribe that failed so far.
    failures: u64,
    /// Why the last attempt failed, or the last subscription dropped.
    last_error: Option<String>,
}

/// A container's side of publishing: its flag, and the start of its payloads.
pub(super) struct Publisher {
    watched: Arc<AtomicBool>,
    /// Whether a write and its `PUBLISH` go in one pipeline (not on a cluster).
    pipelined: bool,
    channel: String,
    /// `1 INSTANCE LEN:CONTAINER `.
    header: Vec<u8>,
}

impl Watch {
    /// The channel of the backend `config` describes, at `endpoint`; no connection yet.
    pub(super) fn new(config: &RedisConfig, endpoint: &str) -> Watch {
        let nodes = (config.cluster_nodes().ok().flatten()).filter(|nodes| !nodes.is_empty());
        Watch {
            cluster: nodes.is_some(),
            hub: Arc::new(Hub {
                name: config.name.clone(),
                endpoint: endpoint.to_owned(),
                channel: Keys::new(&config.prefix).channel(),
                instance: instance_id(),
                urls: nodes.unwrap_or_else(|| vec![config.url.clone()]),
                connect_timeout: config.connect_timeout,
                watchers: RwLock::new(HashMap::new()),
                status: Mutex::new(Status::default()),
                changed: Condvar::new(),
            }),
            flags: Mutex::new(HashMap::new()),
            task: Mutex::new(None),
        }
    }

    fn flag(&self, container: &str) -> Arc<AtomicBool> {
        let mut flags = self.flags.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(flags.entry(container.to_owned()).or_default())
    }

    /// What `container`'s store publishes through.
    pub(super) fn publisher(&self, container: &str) -> Publisher {
        Publisher {
            watched: self.flag(container),
            pipelined: !self.cluster,
            channel: self.hub.channel.clone(),
            header: header(&self.hub.instance, container),
        }
    }

    /// Publishes `container`'s changes from now on, delivers the other instances' to `watcher`,
    /// and waits for the subscription, within `connect_timeout`.
    pub(super) fn watch(&self, container: &str, watcher: Watcher) -> Result<bool> {
        self.flag(container).store(true, Ordering::Release);
        self.hub.add(container, Arc::clone(&watcher));
        let subscribed = self.start().and_then(|()| self.hub.wait());
        if subscribed.is_err() {
            self.hub.remove(container, &watcher);
        }
        subscribed.map(|()| true)
    }

    /// Starts the subscriber, unless it runs already.
    fn start(&self) -> Result<()> {
        let mut task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if task.is_none() {
            let runtime = kvcache_core::runtime()?;
            *task = Some(runtime.spawn(Arc::clone(&self.hub).run()));
        }
        Ok(())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let task = self.task.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = task.take() {
            task.abort();
        }
    }
}

impl Hub {
    fn status(&self) -> MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_status(&self, subscribed: Result<(), String>) {
        let mut status = self.status();
        match subscribed {
            Ok(()) => status.subscribed = true,
            Err(why) => {
                if !status.subscribed {
                    status.failures += 1;
                }
                status.subscribed = false;
                status.last_error = Some(why);
            }
        }
        drop(status);
        self.changed.notify_all();
    }

    /// Waits until the subscription is confirmed, an attempt fails, or `connect_timeout` (and a
    /// little) passes.
    fn wait(&self) -> Result<()> {
        let mut status = self.status();
        if status.subscribed {
            return Ok(());
        }
        if kvcache_core::on_kvcache_runtime() {
            return Err(Error::backend(
                &self.name,
                format!(
                    "subscribing to channel {:?} on {}",
                    self.channel, self.endpoint
                ),
                "a watch from inside kvcache's own runtime cannot wait for the subscriber it runs",
            ));
        }
        let failures = status.failures;
        let deadline = Instant::now() + self.connect_timeout + Duration::from_millis(100);
        loop {
            if status.subscribed {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if status.failures > failures || left.is_zero() {
                let why = match (&status.last_error, status.failures > failures) {
                    (Some(why), true) => why.clone(),
                    (Some(why), false) => format!(
                        "not subscribed within {} ms (connect_timeout); last: {why}",
                        self.connect_timeout.as_millis()
                    ),
                    (None, _) => format!(
                        "not subscribed within {} ms (connect_timeout)",
                        self.connect_timeout.as_millis()
                    ),
                };
                return Err(Error::unavailable(
                    &self.name,
                    format!(
                        "cannot subscribe to channel {:?} on {}",
                        self.channel, self.endpoint
                    ),
                    why,
                ));
            }
            status = self
                .changed
                .wait_timeout(status, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn add(&self, container: &str, watcher: Watcher) {
        let mut watchers = self
            .watchers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        watchers
            .entry(container.to_owned())
            .or_default()
            .push(watcher);
    }

    fn remove(&self, container: &str, watcher: &Watcher) {
        let mut watchers = self
            .watchers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(of) = watchers.get_mut(container) {
            of.retain(|other| !Arc::ptr_eq(other, watcher));
            if of.is_empty() {
                watchers.remove(container);
            }
        }
    }

    /// The subscriber: subscribes, delivers, and when the connection drops, tells every watcher
    /// and subscribes again, forever.
    async fn run(self: Arc<Self>) {
        let mut delay = FIRST_DELAY;
        let (mut ever, mut down) = (false, false);
        for attempt in 0_usize.. {
            match self.subscribe(&self.urls[attempt % self.urls.len()]).await {
                Ok(pubsub) => {
                    self.set_status(Ok(()));
                    if down {
                        tracing::info!(
                            backend = %self.name,
                            endpoint = %self.endpoint,
                            channel = %self.channel,
                            "subscribed to the invalidation channel again"
                        );
                    }
                    if ever {
                        // What was published since the drop's `Lost` was missed.
                        self.lost();
                    }
                    (ever, delay) = (true, FIRST_DELAY);
                    let why = self.listen(pubsub).await;
                    self.set_status(Err(why.clone()));
                    tracing::warn!(
                        backend = %self.name,
                        endpoint = %self.endpoint,
                        channel = %self.channel,
                        why,
                        "the invalidation channel dropped: its watchers are told (Lost); resubscribing"
                    );
                    down = true;
                    self.lost();
                }
                Err(why) => {
                    if !down {
                        tracing::warn!(
                            backend = %self.name,
                            endpoint = %self.endpoint,
                            channel = %self.channel,
                            why,
                            "cannot subscribe to the invalidation channel: retrying"
                        );
                        down = true;
                    }
                    self.set_status(Err(why));
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_DELAY);
        }
    }

    /// A pub/sub connection to the server at `url`, subscribed to the channel, within
    /// `connect_timeout`.
    async fn subscribe(&self, url: &str) -> Result<PubSub, String> {
        let subscribe = async {
            let mut pubsub = Client::open(url)?.get_async_pubsub().await?;
            pubsub.subscribe(&self.channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(self.connect_timeout, subscribe).await {
            Ok(Ok(pubsub)) => Ok(pubsub),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!(
                "no answer within {} ms (connect_timeout)",
                self.connect_timeout.as_millis()
            )),
        }
    }

    /// Delivers the messages of `pubsub` until its connection drops; says why it did.
    async fn listen(&self, pubsub: PubSub) -> String {
        let (mut sink, mut messages) = pubsub.split();
        loop {
            match tokio::time::timeout(PING_EVERY, messages.next()).await {
                Ok(Some(message)) => self.dispatch(message.get_payload_bytes()),
                Ok(None) => return "the connection was closed".to_owned(),
                Err(_) => {
                    match tokio::time::timeout(self.connect_timeout, sink.ping::<Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => return format!("PING failed: {error}"),
                        Err(_) => {
                            return format!(
                                "no answer to PING within {} ms",
                                self.connect_timeout.as_millis()
                            );
                        }
                    }
                }
            }
        }
    }

    /// Delivers one message to the watchers of its container, unless this object sent it.
    fn dispatch(&self, payload: &[u8]) {
        match decode(payload) {
            Ok(message) if message.instance == self.instance.as_bytes() => {}
            Ok(message) => {
                let watchers = self
                    .watchers
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&message.container)
                    .cloned()
                    .unwrap_or_default();
                for watcher in &watchers {
                    self.deliver(watcher, message.change.clone());
                }
            }
            Err(why) => {
                tracing::warn!(
                    backend = %self.name,
                    endpoint = %self.endpoint,
                    channel = %self.channel,
                    why,
                    payload = %String::from_utf8_lossy(&payload[..payload.len().min(200)]),
                    "an unreadable message on the invalidation channel: its watchers are told (Lost)"
                );
                self.lost();
            }
        }
    }

    /// Delivers [`Change::Lost`] to every watcher.
    fn lost(&self) {
        let watchers: Vec<Watcher> = self
            .watchers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .flatten()
            .cloned()
            .collect();
        for watcher in &watchers {
            self.deliver(watcher, Change::Lost);
        }
    }

    /// Calls `watcher`; a watcher that panics is logged, and the subscriber lives on.
    fn deliver(&self, watcher: &Watcher, change: Change) {
        if catch_unwind(AssertUnwindSafe(|| watcher(change))).is_err() {
            tracing::error!(
                backend = %self.name,
                channel = %self.channel,
                "a watcher of the invalidation channel panicked"
            );
        }
    }
}

impl Publisher {
    /// The `PUBLISH` of `keys`' change, when the container is watched.
    pub(super) fn keys<'k>(&self, keys: impl IntoIterator<Item = &'k str>) -> Option<Cmd> {
        if !self.watched.load(Ordering::Acquire) {
            return None;
        }
        let mut payload = self.header.clone();
        push_keys(&mut payload, keys);
        Some(self.publish(payload))
    }

    /// The `PUBLISH` of the container's clear, when it is watched.
    pub(super) fn cleared(&self) -> Option<Cmd> {
        if !self.watched.load(Ordering::Acquire) {
            return None;
        }
        let mut payload = self.header.clone();
        payload.push(b'c');
        Some(self.publish(payload))
    }

    fn publish(&self, payload: Vec<u8>) -> Cmd {
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(&self.channel).arg(payload);
        publish
    }
}

impl ContainerStore {
    /// Sends the write `request` and then `publish`, its change's `PUBLISH` when the container
    /// is watched: in one pipeline where [`Publisher`] says so, else one after the other.
    /// `doing` describes the write for errors.
    pub(super) async fn write(
        &self,
        request: Request,
        publish: Option<Cmd>,
        doing: impl Fn() -> String,
    ) -> Result<()> {
        let Some(publish) = publish else {
            return self.shared.call(request, doing).await;
        };
        let request = match request {
            Request::Command(command) if self.publish.pipelined => {
                let mut pipeline = redis::pipe();
                pipeline.add_command(command).ignore();
                Request::Pipeline(pipeline)
            }
            other => other,
        };
        match request {
            Request::Pipeline(mut pipeline) if self.publish.pipelined => {
                pipeline.add_command(publish).ignore();
                self.shared.call(Request::Pipeline(pipeline), doing).await
            }
            request => {
                self.shared.call::<()>(request, &doing).await?;
                self.shared.call(Request::Command(publish), doing).await
            }
        }
    }
}

/// A new backend object's id: 64 random bits (the operating system's randomness, through
/// `RandomState`), mixed with this process's id, the time and a counter.
fn instance_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let id = RandomState::new().hash_one((std::process::id(), nanos, count));
    format!("{id:016x}")
}

/// `1 INSTANCE LEN:CONTAINER `: what every payload of `container` starts with.
fn header(instance: &str, container: &str) -> Vec<u8> {
    let mut header = Vec::with_capacity(VERSION.len() + instance.len() + container.len() + 16);
    header.extend_from_slice(VERSION);
    header.push(b' ');
    header.extend_from_slice(instance.as_bytes());
    header.push(b' ');
    push_field(&mut header, container.as_bytes());
    header.push(b' ');
    header
}

/// Appends `k` and ` LEN:KEY` for each of `keys`.
fn push_keys<'k>(payload: &mut Vec<u8>, keys: impl IntoIterator<Item = &'k str>) {
    payload.push(b'k');
    for key in keys {
        payload.push(b' ');
        push_field(payload, key.as_bytes());
    }
}

/// Appends `LEN:BYTES`.
fn push_field(payload: &mut Vec<u8>, bytes: &[u8]) {
    let mut len = String::with_capacity(8);
    write!(len, "{}:", bytes.len()).expect("writing to a String cannot fail");
    payload.extend_from_slice(len.as_bytes());
    payload.extend_from_slice(bytes);
}

/// The payload of `change` to `container` by `instance`; [`Change::Lost`] is never published.
#[cfg(test)]
fn encode(instance: &str, container: &str, change: &Change) -> Vec<u8> {
    let mut payload = header(instance, container);
    match change {
        Change::Keys(keys) => push_keys(&mut payload, keys.iter().map(String::as_str)),
        Change::Cleared => payload.push(b'c'),
        Change::Lost => panic!("Lost is never published"),
    }
    payload
}

/// A payload read back.
#[derive(Debug, PartialEq, Eq)]
struct Message<'a> {
    instance: &'a [u8],
    container: String,
    change: Change,
}

/// Reads a payload; says what is wrong with one that does not read.
fn decode(payload: &[u8]) -> Result<Message<'_>, &'static str> {
    let mut rest = payload
        .strip_prefix(VERSION)
        .and_then(|rest| rest.strip_prefix(b" "))
        .ok_or("not a version 1 payload")?;
    let end = rest
        .iter()
        .position(|&b| b == b' ')
        .ok_or("no instance id")?;
    let instance = &rest[..end];
    if instance.is_empty() {
        return Err("an empty instance id");
    }
    rest = &rest[end + 1..];
    let container = text(field(&mut rest)?)?;
    rest = rest
        .strip_prefix(b" ")
        .ok_or("no change after the container")?;
    let change = match rest.split_first() {
        Some((b'c', [])) => Change::Cleared,
        Some((b'k', mut keys)) => {
            let mut all = Vec::new();
            while !keys.is_empty() {
                keys = keys.strip_prefix(b" ").ok_or("no space before a key")?;
                all.push(text(field(&mut keys)?)?);
            }
            Change::Keys(all)
        }
        Some((b'c', _)) => return Err("bytes after `c`"),
        _ => return Err("an unknown change"),
    };
    Ok(Message {
        instance,
        container,
        change,
    })
}

/// Takes `LEN:BYTES` off the front of `rest`.
fn field<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], &'static str> {
    let colon = rest
        .iter()
        .take(21)
        .position(|&b| b == b':')
        .ok_or("no length")?;
    let digits = &rest[..colon];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err("a length that is not a number");
    }
    let len: usize = std::str::from_utf8(digits)
        .ok()
        .and_then(|digits| digits.parse().ok())
        .ok_or("a length too large")?;
    let after = &rest[colon + 1..];
    if after.len() < len {
        return Err("a length past the end");
    }
    let (bytes, tail) = after.split_at(len);
    *rest = tail;
    Ok(bytes)
}

fn text(bytes: &[u8]) -> Result<String, &'static str> {
    String::from_utf8(bytes.to_vec()).map_err(|_| "a name that is not UTF-8")
}

#[cfg(test)]
mod tests {
    use kvcache_core::Change;

    use super::{Message, decode, encode, instance_id};

    fn keys(keys: &[&str]) -> Change {
        Change::Keys(keys.iter().map(|&key| key.to_owned()).collect())
    }

    #[test]
    fn the_payload_is_versioned_and_length_prefixed() {
        let id = "0f3a9c2e5b7d1e44";
        assert_eq!(
            encode(id, "greeting", &keys(&["Peter", "Ann"])),
            b"1 0f3a9c2e5b7d1e44 8:greeting k 5:Peter 3:Ann"
        );
        assert_eq!(
            encode(id, "greeting", &Change::Cleared),
            b"1 0f3a9c2e5b7d1e44 8:greeting c"
        );
        assert_eq!(
            encode(id, "ünï", &keys(&[""])),
            "1 0f3a9c2e5b7d1e44 5:ünï k 0:".as_bytes(),
            "lengths are in bytes"
        );
    }

    #[test]
    fn any_container_and_keys_round_trip() {
        let awkward = [
            "", " ", ":", "1:", " k 1:a", "c", "k", "12:", "\n", "\0", "é", "{1:a}", "9999999:",
        ];
        for container in awkward {
            for change in [
                Change::Cleared,
                keys(&[]),
                keys(&awkward),
                keys(&[container]),
                keys(&["a", "", "b c"]),
            ] {
                let payload = encode("abc", container, &change);
                assert_eq!(
                    decode(&payload),
                    Ok(Message {
                        instance: b"abc",
                        container: container.to_owned(),
                        change: change.clone(),
                    }),
                    "{container:?} {change:?} as {:?}",
                    String::from_utf8_lossy(&payload)
                );
            }
        }
    }

    #[test]
    fn a_payload_that_does_not_read_is_an_error() {
        for payload in [
            &b""[..],
            b"hello",
            b"2 abc 1:c k 1:k",
            b"1 abc",
            b"1  1:c c",
            b"1 abc 1:c",
            b"1 abc 1:c x",
            b"1 abc 1:c c ",
            b"1 abc 1:c k1:k",
            b"1 abc 1:c k 2:k",
            b"1 abc 1:c k 1:k ",
            b"1 abc 1:c k -1:k",
            b"1 abc 1:c k :k",
            b"1 abc 99999999999999999999999:c c",
            b"1 abc 2:\xff\xfe c",
            b"1 abc 1:c k 1:\xff",
        ] {
            assert!(
                decode(payload).is_err(),
                "{:?} reads",
                String::from_utf8_lossy(payload)
            );
        }
    }

    #[test]
    fn instance_ids_differ() {
        let (a, b) = (instance_id(), instance_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
