//! The backend's one connection: to one server, a multiplexed connection, replaced when the
//! server drops it; to a Redis Cluster, redis-rs's cluster connection, which holds one multiplexed
//! connection per node, follows `MOVED` and `ASK`, refreshes the slot map and reconnects to a node
//! by itself, and so is kept for the backend's life. Calls use it from whatever task makes them;
//! connecting always runs on kvcache's runtime, so the tasks that drive the connections live there
//! and outlive the runtime of the call that noticed a drop.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo};
use redis::{AsyncConnectionConfig, Client, Cmd, FromRedisValue, RedisFuture, RedisResult, Value};
use tokio::task::JoinHandle;

/// What a link connects to.
pub(crate) enum Target {
    /// One server; `config` bounds each connect by `connect_timeout`.
    Server {
        client: Client,
        config: AsyncConnectionConfig,
    },
    /// A Redis Cluster, found from its seed nodes; the client bounds each node's connect and
    /// each answer.
    Cluster(ClusterClient),
}

/// A connection of either kind: commands, pipelines and scripts are sent on it alike.
#[derive(Clone)]
pub(crate) enum Connection {
    Server(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Server(connection) => connection.req_packed_command(cmd),
            Connection::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Server(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            Connection::Cluster(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Server(connection) => connection.get_db(),
            Connection::Cluster(connection) => connection.get_db(),
        }
    }
}

impl Connection {
    /// Sends `command`, which names no key (`SCAN`), to the node `route` says (the master of a
    /// slot) on a cluster; to the server otherwise.
    pub(crate) async fn query_at<T: FromRedisValue>(
        &mut self,
        command: &Cmd,
        route: &Route,
    ) -> RedisResult<T> {
        match self {
            Connection::Server(connection) => command.query_async(connection).await,
            Connection::Cluster(connection) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(*route));
                let value = connection.route_command(command.clone(), routing).await?;
                Ok(T::from_redis_value(value.extract_error()?)?)
            }
        }
    }
}

/// Why no connection could be had.
pub(crate) enum NoLink {
    /// The server refused, or the connect failed.
    Redis(redis::RedisError),
    /// The connect took longer than this bound.
    TimedOut(Duration),
    /// kvcache's runtime could not run the connect.
    Lost(String),
}

/// A connection, and the count of connections made before it, to tell it from its successor.
type Current = (u64, Connection);

pub(crate) struct Link {
    target: Target,
    connect_timeout: Duration,
    current: Mutex<Option<Current>>,
    /// One connect at a time; it holds the count of connections made.
    connecting: tokio::sync::Mutex<u64>,
}

impl Link {
    /// A link to `target`, whose connects are bounded by `connect_timeout`.
    pub(crate) fn new(target: Target, connect_timeout: Duration) -> Self {
        Link {
            target,
            connect_timeout,
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(0),
        }
    }

    /// Whether the link is to a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    fn current(&self) -> Option<Current> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The connection, connecting first when there is none.
    pub(crate) async fn get(&self) -> Result<Current, NoLink> {
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let mut made = self.connecting.lock().await;
        // Another caller may have connected while this one waited for its turn.
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let connected = match &self.target {
            Target::Server { client, config } => {
                let (client, config) = (client.clone(), config.clone());
                let connect = async move {
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await
                        .map(Connection::Server)
                };
                on_kvcache_runtime(connect).await
            }
            Target::Cluster(client) => {
                let client = client.clone();
                let connect =
                    async move { client.get_async_connection().await.map(Connection::Cluster) };
                on_kvcache_runtime(connect).await
            }
        };
        let connection = match connected {
            Err(NoLink::Redis(error)) if error.is_timeout() => {
                return Err(NoLink::TimedOut(self.connect_timeout));
            }
            connected => connected?,
        };
        *made += 1;
        let current = (*made, connection);
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(current.clone());
        Ok(current)
    }

    /// Forgets connection `generation`, which the server dropped: the next call connects anew.
    /// A successor already made is kept. A cluster connection is never forgotten: it reconnects
    /// to each node, and finds the cluster again from its seeds, by itself.
    pub(crate) fn forget(&self, generation: u64) {
        if self.is_cluster() {
            return;
        }
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current
            .as_ref()
            .is_some_and(|(made, _)| *made == generation)
        {
            *current = None;
        }
    }
}

/// Runs a connect on kvcache's runtime: inline when the caller is there already, else as a task
/// there, aborted if the caller stops waiting.
async fn on_kvcache_runtime(
    connect: impl Future<Output = RedisResult<Connection>> + Send + 'static,
) -> Result<Connection, NoLink> {
    if kvcache_core::on_kvcache_runtime() {
        return connect.await.map_err(NoLink::Redis);
    }
    let runtime = kvcache_core::runtime().map_err(|error| NoLink::Lost(error.to_string()))?;
    match Spawned(runtime.spawn(connect)).await {
        Ok(connected) => connected.map_err(NoLink::Redis),
        Err(error) => Err(NoLink::Lost(error.to_string())),
    }
}

/// A task of kvcache's runtime, aborted when the caller stops waiting for it.
struct Spawned<T>(JoinHandle<T>);

impl<T> Future for Spawned<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for Spawned<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
