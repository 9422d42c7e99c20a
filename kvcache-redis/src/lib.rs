//! The Redis backend of kvcache: `backend.NAME = redis`.
//!
//! The instances of a service share one cache in a Redis server (4.0 or later, or Valkey), or in
//! a Redis Cluster (`url = redis+cluster://HOST:PORT,HOST:PORT,...`, see
//! [Redis Cluster](#redis-cluster)). The backend is native async: one multiplexed connection (redis-rs's `MultiplexedConnection`, replaced when the server drops it) serves
//! every container, on both of kvcache's paths. Async callers await their commands; synchronous
//! callers wait while kvcache's own runtime ([`kvcache_core::runtime`]) drives them.
//!
//! ```no_run
//! use std::sync::Arc;
//! use kvcache_core::{Config, KvCache};
//! use kvcache_redis::RedisConfig;
//!
//! let redis = RedisConfig::new("redis://127.0.0.1:6379").prefix("myapp").open()?;
//! let config = Config::from_pairs([
//!     ("container.greeting.backend", "shared"),
//!     ("container.greeting.expire", "10 min"),
//! ])?;
//! let cache = KvCache::builder(config).backend("shared", Arc::new(redis)).build()?;
//! cache.register_generator("greeting", |name: &str| format!("Hello {name}!"))?;
//!
//! let greeting = cache.container::<String>("greeting")?;
//! assert_eq!(greeting.get("Peter")?, "Hello Peter!");
//!
//! // The same container, for async callers, on the same connection.
//! let greeting = cache.async_container::<String>("greeting")?;
//! # let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! # runtime.block_on(async {
//! assert_eq!(greeting.get("Peter").await?, "Hello Peter!");
//! # Ok::<(), kvcache_core::Error>(())
//! # })?;
//! # Ok::<(), kvcache_core::Error>(())
//! ```
//!
//! In a configuration:
//!
//! ```text
//! backend.shared = redis
//! backend.shared.url = redis://:PASSWORD@cache.internal:6379/0
//! container.greeting.backend = shared
//! container.greeting.expire = 10 min
//! ```
//!
//! | option | meaning | default |
//! |---|---|---|
//! | `url` | `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]` or `redis+unix:///PATH[?db=DB&user=USER&pass=PASSWORD]`; for a Redis Cluster, its seed nodes: `redis+cluster://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]` | `redis://127.0.0.1:6379` |
//! | `prefix` | the first part of every key; not empty, no `{` or `}` | `kvcache` |
//! | `connect_timeout` | the longest a connect may take, resolving the host and authenticating included | 5 s |
//! | `command_timeout` | the longest a call may take, from the moment it is made to its answer, a reconnect it waits for included | 5 s |
//! | `pool_size` | ignored: accepted (a whole number, at least 1) so that configurations written for the pooled versions still read | |
//!
//! `rediss://` (TLS) is a configuration error that says so: the crate is built without a TLS
//! stack, which would pull a large dependency tree into every build. Reach a TLS-only server
//! through a local TLS tunnel with `redis://`, or through a Unix socket.
//!
//! # Keys
//!
//! The entry (container, key) is the Redis key `PREFIX:{LEN:CONTAINER}:KEY`, where `LEN` is the
//! container name's length in bytes (`kvcache:{8:greeting}:Peter`). The length says where the
//! container ends, so names holding `:` never collide: (`a:b`, `c`) is `kvcache:{3:a:b}:c` and
//! (`a`, `b:c`) is `kvcache:{1:a}:b:c`. Keys are binary-safe and compared exactly.
//!
//! # Leases
//!
//! The lease on generating a missing (container, key)
//! ([`Store::lease`](kvcache_core::Store::lease)), by which one caller among every process
//! sharing the server generates it while the others wait, is the Redis key
//! `PREFIX:{LEN:CONTAINER}!lease:KEY` (`kvcache:{8:greeting}!lease:Peter`), holding the caller's
//! token. It is taken with `SET LEASE TOKEN NX PX TTL` (the ttl rounded up to the millisecond, at
//! least 1 ms), so that a holder that dies blocks the key for its ttl at most, and released by a
//! script that deletes it only while it still holds the caller's token (compare-and-delete, sent
//! by its SHA-1 with `EVALSHA`, loaded first on a server that does not know it). After
//! the container's `}` an entry key has `:` and a lease key `!`, so no lease is ever an entry, and
//! none matches a container's `SCAN` pattern: reads, `clear` and the `kvcache` command's listings
//! never see leases (`clear` leaves them to their holders and their ttl). The braces are the
//! entry's, so a lease is in its container's slot.
//!
//! # Expiry
//!
//! A value and its expiry are written by one command, `SET KEY VALUE PX MILLISECONDS`: the ttl
//! is kept to the millisecond (rounded up, so an entry never expires early), a zero ttl deletes
//! the entry, and a store without ttl removes an earlier one. Expiry runs on Redis's clock, not
//! on the [`Clock`](kvcache_core::Clock) a cache is built with, so instances whose clocks
//! disagree still agree on what has expired. [`purge_expired`](kvcache_core::Backend::purge_expired)
//! does nothing: deleting expired keys is Redis's own job (when they are read, and in its
//! background expiry cycle).
//!
//! # Batches
//!
//! `retrieve_many` is one `MGET`; `store_many` is one pipeline of `SET`s.
//!
//! # Clearing a container: `SCAN` + `UNLINK`
//!
//! `clear(container)` walks the keyspace with `SCAN CURSOR MATCH PREFIX:{LEN:CONTAINER}:* COUNT
//! 1000` and deletes what each step finds with one `UNLINK` (which frees the memory off the
//! server's main thread). It never runs `KEYS`, and never blocks the server for longer than
//! one step. An O(1) generation counter per container (an `INCR` on clear, the generation in
//! every key) was rejected: every read and write would first read the counter (a second round
//! trip, or a script touching keys it does not declare, which Redis Cluster forbids); the
//! entries of old generations would stay in memory until they expire, which for a container
//! without expiry is never; and the counter is state that must survive, while a Redis without
//! persistence, an eviction under `maxmemory` or a failover that loses the last `INCR` would
//! reset it and bring cleared entries back. The price of `SCAN`: a clear takes time in
//! proportion to the keys on the server (`MATCH` filters after the walk), and it is not atomic:
//! a value stored while it runs may survive it, as if stored just after. Both suit a cache,
//! where `clear` is rare.
//!
//! # Redis Cluster
//!
//! A cluster is configured by its seed nodes, as one URL: the nodes, separated by commas, after
//! the scheme `redis+cluster://` and the credentials every node shares.
//!
//! ```text
//! backend.shared = redis
//! backend.shared.url = redis+cluster://:PASSWORD@10.0.0.1:7000,10.0.0.2:7000,10.0.0.3:7000
//! ```
//!
//! The seeds are where the backend first asks for the cluster's slot map (`CLUSTER SLOTS`); one
//! that answers is enough, and the others are tried when it does not. A cluster URL has no
//! database (a cluster has database 0 only) and no query; an error names `backend.NAME.url` and
//! what is wrong (an empty seed, a port that is not a number). A cluster over TLS (`rediss://`)
//! or Unix sockets is not supported.
//!
//! The braces in the key layout are a hash tag: Redis Cluster computes a key's slot from
//! `LEN:CONTAINER` only, so every key of one container is in one slot, its leases' too. So each
//! command names keys of one slot only, as Cluster requires, and goes to the one node that
//! serves it: `GET`, `SET ... PX`, `UNLINK`; a batch's `MGET`, one round trip to one node
//! whatever the batch's size; `store_many`'s pipeline of `SET`s; a lease's `SET ... NX PX`; and
//! the release script, which declares its key and is sent by `EVALSHA` to the node of that key
//! (`SCRIPT LOAD`, when a node answers `NOSCRIPT`, loads it on every node). `clear` sends its
//! `SCAN` steps to the master of the container's slot, which holds every key of the container,
//! and its `UNLINK`s by their keys' slot, which is the same. The `kvcache` command's walks of a
//! container do the same; its listing of containers `SCAN`s every master in turn, read from
//! `CLUSTER SLOTS` when it starts. The price of the layout: a container's keys all live on one
//! node; split a very large container into several to spread it.
//!
//! The connection is redis-rs's cluster connection (its `cluster-async` support): a multiplexed
//! connection to each node, shared by every call, that follows `MOVED` and `ASK` redirections,
//! refreshes the slot map when a node says it has moved, and reconnects to a node it lost by
//! itself; when it lost every node it starts again from the seeds. It is made once, when the
//! backend is built, and kept for the backend's life. `connect_timeout` bounds each connect to a
//! node, and `command_timeout` each call from the moment it is made to its answer, the
//! redirections and retries redis-rs makes included. When a master fails, the calls for its
//! slots fail with [`Error::Unavailable`](kvcache_core::Error::Unavailable) (no answer within
//! `command_timeout`, or the cluster's `CLUSTERDOWN`, `TRYAGAIN` or `MASTERDOWN`), which opens
//! the backend's circuit breaker as an outage of one server does, until a replica has taken over
//! (with `cluster-node-timeout 2000`, about 4 to 6 s after a `SIGKILL` in the crate's tests);
//! then the same backend serves them again, from the replica, nothing rebuilt. A write that the
//! failed master had not yet sent to its replica is lost with it, as Redis replication is
//! asynchronous: a cache regenerates it. A lease whose `SET ... NX` ran on a master but whose
//! answer was lost in a failover may be sent again by redis-rs and read as held by its own
//! taker, which then waits for it as for a lease whose holder died: for its ttl at most.
//!
//! # Connection
//!
//! (On one server; a cluster's is described [above](#redis-cluster).) One connection per
//! backend, multiplexed: concurrent calls of every container and every thread
//! or task are pipelined on it, which is how Redis serves the most requests per connection. It
//! is opened, and its driver task lives, on kvcache's runtime, so that it outlives any runtime of
//! the application's; a call made from a task of another runtime is sent there as a task of its
//! own (aborted if its caller stops waiting), and a synchronous call is driven there. When the
//! server drops it, the next call reconnects (one connect attempt, bounded by
//! `connect_timeout`) and is sent again on the new connection: every command sent is
//! idempotent but a lease's `SET ... NX`, which, sent again, may find the lease its first
//! sending took before the drop; it then reads the lease's token, and the call has the lease
//! when the token is its own.
//!
//! # Faults
//!
//! - A server that cannot be reached when the backend is built is an error naming its host and
//!   port (or socket), within `connect_timeout`; one that does not answer `PING` then, or refuses
//!   the credentials, is an error too. No error, `Debug` output or log line holds the URL's
//!   password.
//! - Every call is bounded by `command_timeout`, on both paths, whatever the server does: an
//!   error names the backend, the server, what the call was doing and, for a timeout, the bound
//!   (`no answer from redis at 127.0.0.1:6379 within 500 ms while reading key "k" of container
//!   "c"`); a refused or lost connection says so.
//! - No state but the values and the leases lives in Redis: a server without persistence that
//!   restarts is an empty cache, and every value is regenerated; the leases held then are gone,
//!   so a key may be generated by a caller that takes the lease anew while its earlier holder
//!   still generates it, and the earlier holder's release leaves the new lease alone. Calls made while it is down fail fast (a
//!   refused connection) or at `command_timeout` (a server that does not answer); the first call
//!   after it is back reconnects and succeeds, on the same backend.
//! - A key holding something kvcache did not write (a hash, a list) reads as a miss, and the
//!   next store replaces it; a string kvcache did not write reads as a miss in the container.
//!
//! # Invalidation channel
//!
//! [`Backend::watch`] (a near tier in front of the backend, in
//! each instance) uses one pub/sub channel per backend: `PREFIX!changes` (`kvcache!changes`).
//! Once a container is watched on a backend object, that object's stores, removals, batches and
//! clears of the container also `PUBLISH` what changed, pipelined with the write (after the last
//! `UNLINK` for a clear; after the write, as a command of its own, on a cluster); a container no
//! one watched publishes nothing. The payload is
//! `1 INSTANCE LEN:CONTAINER k LEN:KEY LEN:KEY ...` for keys stored or removed and
//! `1 INSTANCE LEN:CONTAINER c` for a clear: the format's version, the publishing object's
//! random id (16 hex digits, made when it is built: two objects in one process are two
//! instances), and each name after its length in bytes, so that any name round-trips
//! (`1 0f3a9c2e5b7d1e44 8:greeting k 5:Peter`).
//!
//! The first `watch` starts a subscriber on kvcache's runtime, on a pub/sub connection of its own,
//! and returns once the subscription is confirmed, within `connect_timeout`. It delivers each
//! message to the watchers of its container but the publishing object's own. When the
//! connection drops (a restart, `CLIENT KILL TYPE pubsub`, an unanswered `PING` after 15 s of
//! silence), or a message does not read, every watcher gets `Change::Lost`; the subscriber
//! resubscribes with a back-off from 50 ms to 1 s, forever, warns once per outage, and delivers
//! `Change::Lost` again once back, for what was published in between. Pub/sub ignores the
//! database number: backends with one prefix on different databases share a channel.
//!
//! # Inspection
//!
//! The backend answers the `kvcache` command ([`Backend::inspect`])
//! by walking with `SCAN ... MATCH` as `clear` does, never `KEYS`: a container's keys under its
//! pattern, its summary with one pipeline of `STRLEN` and `PTTL` per step, and the containers
//! under `PREFIX:{*` (whose lease keys name none). The server walks its whole keyspace for each, one bounded step at a time.
//! On a cluster, a container's walks are on the master of its slot, and the listing walks every
//! master in turn. Sizes are the values' bytes, expiries `PTTL` added to this machine's clock.

mod backend;
mod config;
mod key;
mod link;

pub use backend::RedisBackend;
pub use config::RedisConfig;

use std::sync::Arc;

use kvcache_core::{Backend, BackendConfig, BackendRegistration, Result};

/// The kind's name in configurations.
pub const KIND: &str = "redis";

fn open(config: &BackendConfig) -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(RedisConfig::from_backend_config(config)?.open()?))
}

kvcache_core::register_backend!(BackendRegistration::new(KIND, open).options(&[
    "url",
    "prefix",
    "pool_size",
    "connect_timeout",
    "command_timeout",
]));
