//! The backend's one multiplexed connection, replaced when the server drops it. Calls use it from
//! whatever task makes them; connecting always runs on kvcache's runtime, so the task that drives
//! the connection lives there and outlives the runtime of the call that noticed the drop.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisResult};
use tokio::task::JoinHandle;

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
type Current = (u64, MultiplexedConnection);

pub(crate) struct Link {
    client: Client,
    connect_timeout: Duration,
    config: AsyncConnectionConfig,
    current: Mutex<Option<Current>>,
    /// One connect at a time; it holds the count of connections made.
    connecting: tokio::sync::Mutex<u64>,
}

impl Link {
    /// A link to `client`'s server; `config` bounds each connect by `connect_timeout`.
    pub(crate) fn new(
        client: Client,
        connect_timeout: Duration,
        config: AsyncConnectionConfig,
    ) -> Self {
        Link {
            client,
            connect_timeout,
            config,
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(0),
        }
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
        let (client, config) = (self.client.clone(), self.config.clone());
        let connect = async move {
            client
                .get_multiplexed_async_connection_with_config(&config)
                .await
        };
        let connection = match on_kvcache_runtime(connect).await {
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
    /// A successor already made is kept.
    pub(crate) fn forget(&self, generation: u64) {
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
    connect: impl Future<Output = RedisResult<MultiplexedConnection>> + Send + 'static,
) -> Result<MultiplexedConnection, NoLink> {
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
