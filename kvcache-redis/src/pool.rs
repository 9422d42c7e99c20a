//! Pooled connections whose every connect and every command is bounded by a timeout.
//!
//! `redis`'s own r2d2 manager connects without a timeout; this one connects with the connect
//! timeout, sets the command timeout as the socket's read and write timeouts, and lets the
//! backend mark a connection broken after an error that may have left it out of step.

use std::time::Duration;

use redis::{Client, Connection, ConnectionLike, RedisError, RedisResult};

/// Opens connections to one server.
pub(crate) struct Manager {
    client: Client,
    connect_timeout: Duration,
    command_timeout: Duration,
}

/// A connection, and whether it must be dropped instead of going back to the pool.
pub(crate) struct Conn {
    pub(crate) redis: Connection,
    pub(crate) broken: bool,
}

impl Manager {
    pub(crate) fn new(
        client: Client,
        connect_timeout: Duration,
        command_timeout: Duration,
    ) -> Self {
        Manager {
            client,
            connect_timeout,
            command_timeout,
        }
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = Conn;
    type Error = RedisError;

    fn connect(&self) -> RedisResult<Conn> {
        let redis = self
            .client
            .get_connection_with_timeout(self.connect_timeout)?;
        redis.set_read_timeout(Some(self.command_timeout))?;
        redis.set_write_timeout(Some(self.command_timeout))?;
        Ok(Conn {
            redis,
            broken: false,
        })
    }

    fn is_valid(&self, conn: &mut Conn) -> RedisResult<()> {
        redis::cmd("PING").query(&mut conn.redis)
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.broken || !conn.redis.is_open()
    }
}
