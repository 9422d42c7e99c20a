//! What the tests share: the Redis under test, a private `redis-server`, and cleanup.
#![allow(dead_code, unreachable_pub)] // each test binary uses a part

use std::fmt;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use kvcache_core::{AsyncStore, Backend, Lease, Result, Store};
use kvcache_redis::{RedisBackend, RedisConfig};

/// The Redis the tests use, when it can be reached: `KVCACHE_TEST_REDIS_URL`, or the loopback
/// default. Unreachable, the test is skipped with a notice, or fails when `CI=true`.
pub fn redis_url() -> Option<String> {
    let url = std::env::var("KVCACHE_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    match RedisConfig::new(&url)
        .connect_timeout(Duration::from_secs(2))
        .open()
    {
        Ok(_) => Some(url),
        Err(error) => unavailable(&format!("the Redis of KVCACHE_TEST_REDIS_URL ({error})")),
    }
}

/// Skips (prints a notice, returns `None`) or, with `CI=true`, fails.
pub fn unavailable<T>(what: &str) -> Option<T> {
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("CI=true and {what} is unavailable");
    }
    eprintln!("SKIPPED: {what} is unavailable");
    None
}

/// A backend on `url` under the unique prefix `prefix`, with short timeouts.
pub fn open(url: &str, prefix: &str) -> RedisBackend {
    config(url, prefix).open().expect("open the Redis backend")
}

pub fn config(url: &str, prefix: &str) -> RedisConfig {
    RedisConfig::new(url)
        .prefix(prefix)
        .connect_timeout(Duration::from_secs(1))
        .command_timeout(Duration::from_secs(2))
}

/// The store of `container` as synchronous callers use it.
pub fn sync_store(backend: &RedisBackend, container: &str) -> Arc<dyn Store> {
    backend
        .open(container)
        .expect("open a container")
        .sync_store()
}

/// The store of `container` as async callers use it, each call awaited on a test runtime of two
/// workers, so that a check reads the same on both paths.
pub fn async_store(backend: &RedisBackend, container: &str) -> Arc<dyn Store> {
    Arc::new(Awaited(
        backend
            .open(container)
            .expect("open a container")
            .async_store(),
    ))
}

/// The store of `container` through each path, named.
pub fn paths(backend: &RedisBackend, container: &str) -> [(&'static str, Arc<dyn Store>); 2] {
    [
        ("sync", sync_store(backend, container)),
        ("async", async_store(backend, container)),
    ]
}

/// The backend through one path, with the per-call API of the old contract: each call opens
/// the store of its container.
pub struct Via<'a> {
    pub path: &'static str,
    backend: &'a RedisBackend,
}

/// `backend` through the synchronous path, then through the async one.
pub fn both(backend: &RedisBackend) -> [Via<'_>; 2] {
    [
        Via {
            path: "sync",
            backend,
        },
        Via {
            path: "async",
            backend,
        },
    ]
}

impl Via<'_> {
    pub fn open(&self, container: &str) -> Arc<dyn Store> {
        match self.path {
            "sync" => sync_store(self.backend, container),
            _ => async_store(self.backend, container),
        }
    }

    pub fn store(
        &self,
        container: &str,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<()> {
        self.open(container).store(key, value, ttl)
    }

    pub fn retrieve(&self, container: &str, key: &str) -> Result<Option<Vec<u8>>> {
        self.open(container).retrieve(key)
    }

    pub fn invalidate(&self, container: &str, key: &str) -> Result<()> {
        self.open(container).invalidate(key)
    }

    pub fn clear(&self, container: &str) -> Result<()> {
        self.open(container).clear()
    }

    pub fn retrieve_many(&self, container: &str, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        self.open(container).retrieve_many(keys)
    }

    pub fn store_many(
        &self,
        container: &str,
        entries: &[(&str, &[u8])],
        ttl: Option<Duration>,
    ) -> Result<()> {
        self.open(container).store_many(entries, ttl)
    }
}

fn test_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a test runtime")
    })
}

/// An async store's calls, each awaited on the test runtime (under a 30 s timeout: a hang fails).
struct Awaited(Arc<dyn AsyncStore>);

impl Awaited {
    fn wait<T>(&self, future: impl Future<Output = Result<T>>) -> Result<T> {
        test_runtime().block_on(async {
            tokio::time::timeout(Duration::from_secs(30), future)
                .await
                .expect("an async call hung")
        })
    }
}

impl fmt::Debug for Awaited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl Store for Awaited {
    fn store(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.wait(self.0.store(key, value, ttl))
    }

    fn retrieve(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.wait(self.0.retrieve(key))
    }

    fn invalidate(&self, key: &str) -> Result<()> {
        self.wait(self.0.invalidate(key))
    }

    fn clear(&self) -> Result<()> {
        self.wait(self.0.clear())
    }

    fn retrieve_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        self.wait(self.0.retrieve_many(keys))
    }

    fn store_many(&self, entries: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        self.wait(self.0.store_many(entries, ttl))
    }

    fn lease(&self, key: &str, token: &str, ttl: Duration) -> Result<Lease> {
        self.wait(self.0.lease(key, token, ttl))
    }

    fn release(&self, key: &str, token: &str) -> Result<()> {
        self.wait(self.0.release(key, token))
    }
}

/// A plain connection, to look at and plant keys behind kvcache's back.
pub fn raw(url: &str) -> redis::Connection {
    let conn = redis::Client::open(url)
        .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(2)))
        .expect("a plain Redis connection");
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("a read timeout");
    conn
}

/// Deletes every key under `prefix` when dropped, even when the test panics.
pub struct Cleanup {
    pub url: String,
    pub prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        unlink_prefix(&self.url, &self.prefix);
    }
}

/// Deletes every key under `prefix` on the server at `url`, best effort: one `UNLINK` a key,
/// pipelined, so that it serves a cluster's node too, where a step's keys may be in several
/// slots.
pub fn unlink_prefix(url: &str, prefix: &str) {
    let Ok(mut conn) = redis::Client::open(url)
        .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(2)))
    else {
        return;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let pattern = format!("{prefix}:*");
    let mut cursor = 0_u64;
    loop {
        let Ok((next, keys)) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query::<(u64, Vec<Vec<u8>>)>(&mut conn)
        else {
            return;
        };
        let mut pipeline = redis::pipe();
        for key in &keys {
            pipeline.cmd("UNLINK").arg(key).ignore();
        }
        let _ = pipeline.query::<()>(&mut conn);
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

/// A port nothing listens on (at the time of asking).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("its address").port()
}

/// A `redis-server` this test runs on a free port and a Unix socket, without persistence.
/// Killed when dropped.
pub struct Server {
    pub port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
    child: Option<Child>,
}

impl Server {
    /// Starts one with `args` added, or skips when `redis-server` is not installed.
    pub fn start(args: &[&str]) -> Option<Server> {
        let mut server = Server {
            port: free_port(),
            dir: tempfile::tempdir().expect("a temporary directory"),
            args: args.iter().map(|&arg| arg.to_owned()).collect(),
            child: None,
        };
        match server.spawn() {
            Ok(()) => Some(server),
            Err(error) => unavailable(&format!("redis-server ({error})")),
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// Kills it (SIGKILL: no goodbye to the clients) and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops it (SIGSTOP): it keeps its connections and answers nothing until [`resume`]d.
    ///
    /// [`resume`]: Server::resume
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Continues it after [`pause`](Server::pause) (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("a running redis-server");
        let status = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Starts it again on the same port and socket.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn().expect("restart redis-server");
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--unixsocket")
            .arg(self.socket())
            .args(["--unixsocketperm", "700"])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(std::io::Error::other(format!(
                    "redis-server exited: {status}"
                )));
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen within 10 s"
            );
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The error's message with every source's, and its `Debug` form: all a user could see.
pub fn everything_shown(error: &dyn std::error::Error) -> String {
    let mut shown = format!("{error:?}\n{error}");
    let mut source = error.source();
    while let Some(inner) = source {
        shown.push_str(&format!("\n{inner}\n{inner:?}"));
        source = inner.source();
    }
    shown
}
