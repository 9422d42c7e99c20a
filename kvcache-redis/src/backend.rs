//! The Redis store: one multiplexed connection per backend, shared by every container; one
//! command per call, `MGET` and a pipeline for batches, `SCAN` + `UNLINK` for `clear`,
//! `SET ... NX PX` and a compare-and-delete script for leases.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use kvcache_core::{AsyncStore, Backend, BoxFuture, Error, Lease, Result, Space};
use redis::cluster::ClusterClient;
use redis::cluster_routing::{Route, SlotAddr};
use redis::{
    AsyncConnectionConfig, Cmd, ErrorKind, FromRedisValue, Pipeline, RedisError, RedisResult,
    Script, ScriptInvocation, ServerErrorKind,
};

use crate::config::RedisConfig;
use crate::key::{ContainerKeys, Keys};
use crate::link::{Connection, Link, NoLink, Target};

// A child of this module, to use the backend's connection: what an operator can ask of it.
#[path = "inspect.rs"]
mod inspect;
// A child too, to wrap the writes: the invalidation channel (`Backend::watch`).
#[path = "watch.rs"]
mod watch;
use watch::{Publisher, Watch};

/// How many keys one `SCAN` step of `clear` asks for.
const SCAN_COUNT: u32 = 1000;
/// The longest expiry sent, in milliseconds: "never" in practice, and far enough from
/// `i64::MAX` that Redis's `now + PX` cannot overflow.
const MAX_PX: u64 = i64::MAX as u64 / 2;

/// A Redis server, or a Redis Cluster, as a kvcache backend, shared by every container that
/// names it.
///
/// Built from a [`RedisConfig`] ([`RedisConfig::open`]), or by `kvcache::init` for
/// `backend.NAME = redis`. It holds one multiplexed connection (redis-rs's
/// [`MultiplexedConnection`](redis::aio::MultiplexedConnection)), which every container and
/// every caller share: concurrent commands are pipelined on it. A connection the server dropped
/// (it restarted) is replaced on the next call, without rebuilding anything. On a cluster it
/// holds redis-rs's cluster connection instead, one multiplexed connection per node, which
/// follows the cluster's redirections and failovers by itself.
///
/// Calls use the connection from the caller's own task. Connecting always runs on kvcache's
/// own runtime ([`kvcache_core::runtime`]), so that the task driving the connection outlives
/// any runtime of the application's. Cloning is cheap: clones share the connection.
///
/// Its `Debug` output names the host and port (or socket), never the URL's credentials.
#[derive(Clone)]
pub struct RedisBackend {
    shared: Arc<Shared>,
}

/// What every container of one backend shares.
struct Shared {
    /// The backend's name in the configuration, for errors.
    name: String,
    /// `redis at HOST:PORT` or `redis at unix socket PATH`.
    endpoint: String,
    keys: Keys,
    link: Arc<Link>,
    command_timeout: Duration,
    connect_timeout: Duration,
    /// The invalidation channel: this object's instance id, its subscriber, who publishes.
    watch: Watch,
}

/// One container's entries: the backend's connection and the container's keys, computed once.
struct ContainerStore {
    shared: Arc<Shared>,
    container: String,
    keys: ContainerKeys,
    publish: Publisher,
}

/// What a store does about expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    Never,
    /// `SET ... PX` this many milliseconds.
    After(u64),
    /// A zero ttl: the entry is expired as soon as it is written, so it is deleted.
    Now,
}

/// `ttl` in whole milliseconds, rounded up so that nothing expires early, and at most [`MAX_PX`].
fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_nanos().div_ceil(1_000_000)).map_or(MAX_PX, |ms| ms.min(MAX_PX))
}

impl Expiry {
    /// A ttl in whole milliseconds, rounded up so that an entry never expires early.
    fn of(ttl: Option<Duration>) -> Expiry {
        match ttl {
            None => Expiry::Never,
            Some(ttl) if ttl.is_zero() => Expiry::Now,
            Some(ttl) => Expiry::After(millis(ttl)),
        }
    }

    /// The command that stores `value` under `entry` with this expiry.
    fn command(self, entry: &str, value: &[u8]) -> Cmd {
        if self == Expiry::Now {
            let mut unlink = redis::cmd("UNLINK");
            unlink.arg(entry);
            return unlink;
        }
        let mut set = redis::cmd("SET");
        set.arg(entry).arg(value);
        if let Expiry::After(ms) = self {
            set.arg("PX").arg(ms);
        }
        set
    }
}

/// `SET LEASE TOKEN NX PX MILLISECONDS`: takes the lease `lease` for `ttl` (at least 1 ms, a
/// zero `PX` being an error) unless it is held. Redis answers `OK` when it took it, nil when not.
fn lease_command(lease: &str, token: &str, ttl: Duration) -> Cmd {
    let mut set = redis::cmd("SET");
    set.arg(lease)
        .arg(token)
        .arg("NX")
        .arg("PX")
        .arg(millis(ttl).max(1));
    set
}

/// Releases the lease `KEYS[1]` if it still holds the token `ARGV[1]`: compare-and-delete in one
/// step, so that a holder whose lease expired, and was taken by another, leaves the other's be.
/// Sent by its SHA-1 (`EVALSHA`), and loaded first on a server that does not know it.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
    )
});

/// What one call sends.
enum Request {
    Command(Cmd),
    Pipeline(Pipeline),
    /// A script by its SHA-1, loaded first when the server answers `NOSCRIPT` (it restarted,
    /// or its script cache was flushed).
    Script(ScriptInvocation<'static>),
    /// A command that names no key (`SCAN`), sent on a cluster to the node the route names (the
    /// master of a container's slot); to the server otherwise.
    At(Cmd, Route),
}

impl Request {
    async fn query<T: FromRedisValue>(&self, connection: &mut Connection) -> RedisResult<T> {
        match self {
            Request::Command(command) => command.query_async(connection).await,
            Request::Pipeline(pipeline) => pipeline.query_async(connection).await,
            Request::Script(invocation) => invocation.invoke_async(connection).await,
            Request::At(command, route) => connection.query_at(command, route).await,
        }
    }
}

/// The route to the master of the slot of `key`: on a cluster, the node that holds every key of
/// the key's container (see the `key` module).
fn master_of(key: &str) -> Route {
    Route::with_key(key, SlotAddr::Master)
}

/// Which sending of a call an attempt is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    First,
    /// Once more, on a new connection, after the server dropped the first one's: what the first
    /// sent may have run before the drop.
    Again,
}

/// Why a call failed.
enum Failure {
    /// No answer within the bound.
    TimedOut,
    /// No connection within `connect_timeout`, this long.
    ConnectTimedOut(Duration),
    Redis(RedisError),
    /// The task that ran the call panicked or was cancelled by kvcache's runtime shutting down.
    Lost(String),
}

impl RedisBackend {
    /// Connects as `config` says; `config` has been checked.
    pub(crate) fn open(config: &RedisConfig) -> Result<Self> {
        let unix = config.is_unix()?;
        let (connect_timeout, command_timeout) = (config.connect_timeout, config.command_timeout);
        let unusable = |error: RedisError| {
            Error::config(
                config.key("url"),
                format!("not a usable Redis URL: {error}"),
            )
        };
        let (target, endpoint) = if let Some(nodes) = config.cluster_nodes()? {
            let client = ClusterClient::builder(nodes)
                .connection_timeout(connect_timeout)
                .response_timeout(command_timeout)
                .build()
                .map_err(unusable)?;
            let seeds = config
                .url
                .split_once("://")
                .map(|(_, rest)| rest.rsplit_once('@').map_or(rest, |(_, hosts)| hosts))
                .unwrap_or_default()
                .trim_end_matches('/');
            (Target::Cluster(client), format!("redis cluster at {seeds}"))
        } else {
            let client = redis::Client::open(config.url.as_str()).map_err(unusable)?;
            let address = client.get_connection_info().addr().to_string();
            let endpoint = if unix {
                format!("redis at unix socket {address}")
            } else {
                format!("redis at {address}")
            };
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(connect_timeout))
                .set_response_timeout(Some(command_timeout));
            (Target::Server { client, config }, endpoint)
        };
        let fail = |doing: &str, bound: Duration, failure: Failure| {
            failure.into_error(&config.name, &endpoint, bound, doing)
        };
        let link = Arc::new(Link::new(target, connect_timeout));
        // Connect and PING once now, so that a wrong address or a wrong or missing password
        // fails here, not at first use.
        let first = Arc::clone(&link);
        let connect = async move {
            let connected = tokio::time::timeout(connect_timeout, first.get()).await;
            let (_, mut connection) = match connected {
                Ok(Ok(connection)) => connection,
                Ok(Err(no_link)) => return Err(("connecting", connect_timeout, no_link.into())),
                Err(_) => return Err(("connecting", connect_timeout, Failure::TimedOut)),
            };
            let ping = tokio::time::timeout(
                command_timeout,
                redis::cmd("PING").query_async::<()>(&mut connection),
            )
            .await;
            match ping {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(("sending PING", command_timeout, Failure::Redis(error))),
                Err(_) => Err(("sending PING", command_timeout, Failure::TimedOut)),
            }
        };
        // Opened from kvcache's own runtime (in an async generator driven for a synchronous
        // caller), this is the core's clear error rather than a wait for itself.
        kvcache_core::block_on(connect)?
            .ok_or_else(|| {
                fail(
                    "connecting",
                    connect_timeout,
                    Failure::Lost("the connecting task panicked".to_owned()),
                )
            })?
            .map_err(|(doing, bound, failure)| fail(doing, bound, failure))?;
        let watch = Watch::new(config, &endpoint);
        Ok(RedisBackend {
            shared: Arc::new(Shared {
                name: config.name.clone(),
                endpoint,
                keys: Keys::new(&config.prefix),
                link,
                command_timeout,
                connect_timeout,
                watch,
            }),
        })
    }
}

impl Shared {
    /// Sends `request` and reads its answer, within `command_timeout`; `doing` describes it for
    /// errors.
    ///
    /// It runs on kvcache's runtime, where the connection lives: inline when the caller is there
    /// already (the synchronous path), else as a task of its own. A call that finds the connection
    /// dropped (the server restarted) has made redis-rs start a reconnect; it is sent once more,
    /// on the new connection. Every request sent this way is idempotent, so one that reached the
    /// server before its connection dropped may run twice without harm. (A lease's `SET ... NX`
    /// is not: `lease` goes through [`attempt`](Shared::attempt) and checks, when it is sent
    /// again, whether the first sending took the lease.)
    async fn call<T>(&self, request: Request, doing: impl FnOnce() -> String) -> Result<T>
    where
        T: FromRedisValue + Send + 'static,
    {
        self.send(request)
            .await
            .map_err(|failure| self.error(failure, &doing()))
    }

    /// The error of `failure` while `doing` something.
    fn error(&self, failure: Failure, doing: &str) -> Error {
        failure.into_error(&self.name, &self.endpoint, self.command_timeout, doing)
    }

    /// [`call`](Shared::call), its failure not yet an error.
    async fn send<T>(&self, request: Request) -> std::result::Result<T, Failure>
    where
        T: FromRedisValue + Send + 'static,
    {
        let request = &request;
        self.attempt(move |mut connection, _| async move { request.query(&mut connection).await })
            .await
    }

    /// Runs `query` on the connection within `command_timeout`, and once more on a new connection
    /// when the server dropped the first one ([`Attempt::Again`]): what [`send`](Shared::send)
    /// does with a request, for a call that must know which sending answered.
    async fn attempt<T, F>(
        &self,
        mut query: impl FnMut(Connection, Attempt) -> F,
    ) -> std::result::Result<T, Failure>
    where
        F: Future<Output = RedisResult<T>>,
    {
        let run = async {
            let (made, connection) = self.link.get().await?;
            match query(connection, Attempt::First).await {
                // The server dropped the connection (it restarted): once more, on a new one. A
                // timeout is no drop: the connection stays, and the call ends at its bound.
                Err(error)
                    if !error.is_timeout()
                        && (error.is_io_error() || error.is_connection_dropped()) =>
                {
                    self.link.forget(made);
                    let (_, connection) = self.link.get().await?;
                    query(connection, Attempt::Again)
                        .await
                        .map_err(Failure::Redis)
                }
                other => other.map_err(Failure::Redis),
            }
        };
        match tokio::time::timeout(self.command_timeout, run).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure::TimedOut),
        }
    }
}

impl From<NoLink> for Failure {
    fn from(no_link: NoLink) -> Self {
        match no_link {
            NoLink::Redis(error) => Failure::Redis(error),
            NoLink::TimedOut(bound) => Failure::ConnectTimedOut(bound),
            NoLink::Lost(why) => Failure::Lost(why),
        }
    }
}

impl Failure {
    /// The error of a call that was `doing` something on `endpoint` of backend `name`, bounded by
    /// `bound`. It names all three and, for a connection that failed, how; never a credential.
    fn into_error(self, name: &str, endpoint: &str, bound: Duration, doing: &str) -> Error {
        let no_answer = || {
            format!(
                "no answer from {endpoint} within {} while {doing}",
                ms(bound)
            )
        };
        match self {
            Failure::TimedOut => Error::unavailable(
                name,
                no_answer(),
                format!("the call was cut after {}", ms(bound)),
            ),
            Failure::ConnectTimedOut(connect) => Error::unavailable(
                name,
                format!(
                    "cannot connect to {endpoint} within {} (connect_timeout) while {doing}",
                    ms(connect)
                ),
                format!("the connect was cut after {}", ms(connect)),
            ),
            Failure::Lost(why) => Error::backend(name, format!("{doing} on {endpoint}"), why),
            Failure::Redis(error) if error.is_timeout() => {
                Error::unavailable(name, no_answer(), error)
            }
            Failure::Redis(error) if error.is_io_error() => {
                let how = if error.is_connection_refusal() {
                    if endpoint.contains("unix socket") {
                        "no server listens on the socket"
                    } else {
                        "connection refused"
                    }
                } else if endpoint.starts_with("redis cluster") && doing == "connecting" {
                    // redis-rs's own error, its cause in its text: no seed gave the slot map.
                    "no seed node could be reached"
                } else if error.is_connection_dropped() {
                    "connection lost"
                } else {
                    "I/O error"
                };
                Error::unavailable(
                    name,
                    format!("cannot reach {endpoint} ({how}) while {doing}"),
                    error,
                )
            }
            // A cluster that has no node for the slot now (its master failed, and no replica has
            // taken over yet, or the cluster is down): an outage, as a refused connection is.
            Failure::Redis(error) if is_cluster_outage(&error) => Error::unavailable(
                name,
                format!("{endpoint} cannot serve the call now while {doing}"),
                error,
            ),
            Failure::Redis(error) => Error::backend(
                name,
                format!("{endpoint} answered an error while {doing}"),
                error,
            ),
        }
    }
}

/// Whether `error` says that a Redis Cluster cannot serve a slot for now: `CLUSTERDOWN`,
/// `TRYAGAIN`, `MASTERDOWN`, or no connection to any node that could serve it.
fn is_cluster_outage(error: &RedisError) -> bool {
    matches!(
        error.kind(),
        ErrorKind::ClusterConnectionNotFound
            | ErrorKind::Server(
                ServerErrorKind::ClusterDown
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::MasterDown
            )
    )
}

/// `bound` for a message: `500 ms`, `5000 ms`, or `Debug`'s form below a millisecond's grain.
fn ms(bound: Duration) -> String {
    if bound.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{} ms", bound.as_millis())
    } else {
        format!("{bound:?}")
    }
}

impl Backend for RedisBackend {
    fn open(&self, container: &str) -> Result<Space> {
        Ok(Space::Async(Arc::new(ContainerStore {
            shared: Arc::clone(&self.shared),
            container: container.to_owned(),
            keys: self.shared.keys.container(container),
            publish: self.shared.watch.publisher(container),
        })))
    }

    /// Nothing to do: Redis deletes expired keys itself.
    fn purge_expired(&self) -> Result<()> {
        Ok(())
    }

    fn inspect(&self) -> Option<&dyn kvcache_core::inspect::Inspect> {
        Some(self)
    }

    /// Pub/sub on `PREFIX!changes`: see the `watch` module.
    fn watch(&self, container: &str, watcher: kvcache_core::Watcher) -> Result<bool> {
        self.shared.watch.watch(container, watcher)
    }
}

impl AsyncStore for ContainerStore {
    fn store<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        let command = Expiry::of(ttl).command(&self.keys.entry(key), value);
        let publish = self.publish.keys([key]);
        Box::pin(self.write(Request::Command(command), publish, move || {
            format!(
                "storing key {} in container {:?}",
                short(key),
                self.container
            )
        }))
    }

    fn retrieve<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        let mut get = redis::cmd("GET");
        get.arg(self.keys.entry(key));
        Box::pin(async move {
            match self.shared.send(Request::Command(get)).await {
                Ok(value) => Ok(value),
                // A hash, a list...: not a value kvcache wrote. A miss; the next store replaces it.
                Err(Failure::Redis(error)) if error.code() == Some("WRONGTYPE") => Ok(None),
                Err(failure) => Err(self.shared.error(
                    failure,
                    &format!(
                        "reading key {} of container {:?}",
                        short(key),
                        self.container
                    ),
                )),
            }
        })
    }

    fn invalidate<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<()>> {
        let mut unlink = redis::cmd("UNLINK");
        unlink.arg(self.keys.entry(key));
        let publish = self.publish.keys([key]);
        Box::pin(self.write(Request::Command(unlink), publish, move || {
            format!(
                "deleting key {} of container {:?}",
                short(key),
                self.container
            )
        }))
    }

    fn clear(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let doing = || format!("clearing container {:?}", self.container);
            // On a cluster, every key of the container is in one slot: its master has them all.
            let master = master_of(&self.keys.entry(""));
            let mut cursor: u64 = 0;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(self.keys.pattern())
                    .arg("COUNT")
                    .arg(SCAN_COUNT);
                let request = Request::At(scan, master);
                let (next, found): (u64, Vec<Vec<u8>>) = self.shared.call(request, doing).await?;
                if !found.is_empty() {
                    let mut unlink = redis::cmd("UNLINK");
                    unlink.arg(found);
                    self.shared
                        .call::<()>(Request::Command(unlink), doing)
                        .await?;
                }
                if next == 0 {
                    if let Some(publish) = self.publish.cleared() {
                        self.shared
                            .call::<()>(Request::Command(publish), doing)
                            .await?;
                    }
                    return Ok(());
                }
                cursor = next;
            }
        })
    }

    fn retrieve_many<'a>(
        &'a self,
        keys: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>>> {
        if keys.is_empty() {
            return Box::pin(std::future::ready(Ok(Vec::new())));
        }
        let mut mget = redis::cmd("MGET");
        for key in keys {
            mget.arg(self.keys.entry(key));
        }
        // MGET answers nil for a key of another type: a miss, as in `retrieve`.
        Box::pin(self.shared.call(Request::Command(mget), move || {
            format!(
                "reading {} of container {:?}",
                count(keys.len()),
                self.container
            )
        }))
    }

    fn store_many<'a>(
        &'a self,
        entries: &'a [(&'a str, &'a [u8])],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        if entries.is_empty() {
            return Box::pin(std::future::ready(Ok(())));
        }
        let expiry = Expiry::of(ttl);
        let mut pipeline = redis::pipe();
        for (key, value) in entries {
            pipeline
                .add_command(expiry.command(&self.keys.entry(key), value))
                .ignore();
        }
        let publish = self.publish.keys(entries.iter().map(|(key, _)| *key));
        Box::pin(self.write(Request::Pipeline(pipeline), publish, move || {
            format!(
                "storing {} in container {:?}",
                count(entries.len()),
                self.container
            )
        }))
    }

    /// `SET LEASE TOKEN NX PX TTL` on the lease's own key (`PREFIX:{LEN:CONTAINER}!lease:KEY`).
    fn lease<'a>(
        &'a self,
        key: &'a str,
        token: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Lease>> {
        let lease = self.keys.lease(key);
        let set = lease_command(&lease, token, ttl);
        let mut holder = redis::cmd("GET");
        holder.arg(&lease);
        Box::pin(async move {
            let (set, holder) = (&set, &holder);
            let taken = self
                .shared
                .attempt(move |mut connection, attempt| async move {
                    let taken: bool = set.query_async(&mut connection).await?;
                    if taken || attempt == Attempt::First {
                        return Ok(taken);
                    }
                    // Sent again after the connection dropped: the first SET may have taken the
                    // lease before the drop, and this one found it held, by this very call. The
                    // token tells: a caller's tokens are its own.
                    match holder.query_async::<Option<Vec<u8>>>(&mut connection).await {
                        Ok(holder) => Ok(holder.as_deref() == Some(token.as_bytes())),
                        // Not a string: not kvcache's lease, so not this call's.
                        Err(error) if error.code() == Some("WRONGTYPE") => Ok(false),
                        Err(error) => Err(error),
                    }
                })
                .await;
            match taken {
                Ok(true) => Ok(Lease::Acquired),
                Ok(false) => Ok(Lease::Held),
                Err(failure) => Err(self.shared.error(
                    failure,
                    &format!(
                        "taking the lease on key {} of container {:?}",
                        short(key),
                        self.container
                    ),
                )),
            }
        })
    }

    /// The compare-and-delete script [`RELEASE`] on the lease's key.
    fn release<'a>(&'a self, key: &'a str, token: &'a str) -> BoxFuture<'a, Result<()>> {
        let mut invocation = RELEASE.prepare_invoke();
        invocation.key(self.keys.lease(key)).arg(token);
        let request = Request::Script(invocation);
        Box::pin(self.shared.call(request, move || {
            format!(
                "releasing the lease on key {} of container {:?}",
                short(key),
                self.container
            )
        }))
    }
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("name", &self.shared.name)
            .field("endpoint", &self.shared.endpoint)
            .field("prefix", &self.shared.keys.prefix())
            .field("connect_timeout", &self.shared.connect_timeout)
            .field("command_timeout", &self.shared.command_timeout)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for ContainerStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisContainer")
            .field("backend", &self.shared.name)
            .field("endpoint", &self.shared.endpoint)
            .field("container", &self.container)
            .finish_non_exhaustive()
    }
}

/// `n keys`, or `1 key`.
fn count(n: usize) -> String {
    if n == 1 {
        "1 key".to_owned()
    } else {
        format!("{n} keys")
    }
}

/// `text` quoted for an error message, cut after 64 characters.
fn short(text: &str) -> String {
    match text.char_indices().nth(64) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}… ({} bytes)", &text[..end], text.len()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Expiry, MAX_PX, lease_command, ms, short};

    /// The arguments of `command`, joined by spaces.
    fn args(command: &redis::Cmd) -> String {
        command
            .args_iter()
            .map(|arg| match arg {
                redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                _ => panic!("no command here sends a cursor"),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn a_ttl_is_whole_milliseconds_rounded_up() {
        let of = |ttl| Expiry::of(Some(ttl));
        assert_eq!(Expiry::of(None), Expiry::Never);
        assert_eq!(of(Duration::ZERO), Expiry::Now);
        assert_eq!(of(Duration::from_nanos(1)), Expiry::After(1));
        assert_eq!(of(Duration::from_millis(1)), Expiry::After(1));
        assert_eq!(of(Duration::from_micros(1_001)), Expiry::After(2));
        assert_eq!(
            of(Duration::from_millis(86_400_123)),
            Expiry::After(86_400_123)
        );
        assert_eq!(of(Duration::MAX), Expiry::After(MAX_PX));
    }

    #[test]
    fn the_commands_set_with_px_or_delete() {
        let args = |expiry: Expiry| args(&expiry.command("p:{1:c}:k", b"v"));
        assert_eq!(args(Expiry::Never), "SET p:{1:c}:k v");
        assert_eq!(args(Expiry::After(1500)), "SET p:{1:c}:k v PX 1500");
        assert_eq!(args(Expiry::Now), "UNLINK p:{1:c}:k");
    }

    #[test]
    fn a_lease_is_set_if_absent_for_at_least_a_millisecond() {
        let args = |ttl| args(&lease_command("p:{1:c}!lease:k", "t", ttl));
        assert_eq!(
            args(Duration::from_secs(30)),
            "SET p:{1:c}!lease:k t NX PX 30000"
        );
        assert_eq!(
            args(Duration::from_micros(1_001)),
            "SET p:{1:c}!lease:k t NX PX 2"
        );
        assert_eq!(args(Duration::ZERO), "SET p:{1:c}!lease:k t NX PX 1");
        assert_eq!(
            args(Duration::from_nanos(1)),
            "SET p:{1:c}!lease:k t NX PX 1"
        );
        assert_eq!(
            args(Duration::MAX),
            format!("SET p:{{1:c}}!lease:k t NX PX {MAX_PX}")
        );
    }

    #[test]
    fn long_keys_are_cut_in_messages() {
        assert_eq!(short("k"), "\"k\"");
        let long = "é".repeat(1000);
        assert_eq!(short(&long), format!("{:?}… (2000 bytes)", "é".repeat(64)));
    }

    #[test]
    fn bounds_read_in_milliseconds() {
        assert_eq!(ms(Duration::from_millis(500)), "500 ms");
        assert_eq!(ms(Duration::from_secs(5)), "5000 ms");
        assert_eq!(ms(Duration::from_micros(1500)), "1.5ms");
    }
}
