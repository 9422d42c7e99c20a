//! Finding the TCP socket of a connection the driver just opened, so that the watchdog can cut it.
//!
//! Neither libpq nor the MariaDB client library, as diesel wraps them, gives its socket away or
//! bounds the wait for an answer: a server that stops answering (frozen by `SIGSTOP`, or a
//! host gone quiet) leaves a call blocked in `poll`, and TCP does not help (the peer's kernel
//! keeps acknowledging). So right after connecting, the backend asks the server how it sees the
//! connection (the client's and the server's address and port), finds the one socket of this
//! process with those endpoints that was not open before the connection was, and keeps a
//! duplicate of it. Shutting that duplicate down ends the driver's wait at once: the socket is
//! shared, and the driver reads end-of-file.
//!
//! Linux only (the endpoints come from `/proc/net/tcp`): elsewhere, and over Unix sockets or
//! through a proxy or NAT (where the server sees other endpoints), no socket is found, and calls
//! are bounded by the server's own timeouts only.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, TcpStream};

/// One end of a connection as the server reports it: the address when it knows it, and the
/// port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct End {
    pub(crate) ip: Option<IpAddr>,
    pub(crate) port: u16,
}

impl End {
    /// Whether `address` is this end: the same port, and the same address when it is known.
    fn is(&self, address: SocketAddr) -> bool {
        address.port() == self.port
            && self
                .ip
                .is_none_or(|ip| ip.to_canonical() == address.ip().to_canonical())
    }
}

/// The sockets this process had open before a connection was opened.
#[derive(Debug, Default)]
pub(crate) struct Before(HashSet<u64>);

impl Before {
    /// The sockets open now.
    pub(crate) fn now() -> Self {
        Before(sockets().into_iter().map(|(_, inode)| inode).collect())
    }
}

/// A duplicate of the one socket of this process from `client` to `server` that was not open
/// `before`: the socket of the connection the calling thread just opened and still holds.
pub(crate) fn find(before: &Before, client: End, server: End) -> Option<TcpStream> {
    let table = tcp_table();
    let mut found = sockets().into_iter().filter(|(_, inode)| {
        !before.0.contains(inode)
            && table
                .iter()
                .any(|row| row.inode == *inode && client.is(row.local) && server.is(row.remote))
    });
    let (fd, _) = found.next()?;
    if found.next().is_some() {
        return None;
    }
    let stream = duplicate(fd)?;
    let (local, remote) = (stream.local_addr().ok()?, stream.peer_addr().ok()?);
    (client.is(local) && server.is(remote)).then_some(stream)
}

/// A duplicate of the one Unix stream socket of this process that was not open `before`, when
/// it is connected to a PostgreSQL server's socket (`.s.PGSQL.PORT`): the socket of the
/// connection the calling thread just opened over a Unix socket, and still holds. `None` when
/// another appeared meanwhile (another thread connected too): nothing tells them apart.
///
/// As a `TcpStream`, the type the callers hold: they only wait on it (`peek`, with its
/// blocking and timeout set) and shut it down, which work alike on every stream socket.
/// PostgreSQL's listener only (`watch.rs`): the MariaDB client library's Unix sockets are
/// left alone.
#[cfg(all(unix, feature = "postgres"))]
pub(crate) fn find_unix(before: &Before) -> Option<TcpStream> {
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;

    let streams = unix_streams();
    let mut found = sockets()
        .into_iter()
        .filter(|(_, inode)| !before.0.contains(inode) && streams.contains(inode));
    let (fd, _) = found.next()?;
    if found.next().is_some() {
        return None;
    }
    let stream = UnixStream::from(duplicate_fd(fd)?);
    let peer = stream.peer_addr().ok()?;
    let name = peer.as_pathname()?.file_name()?.to_str()?;
    name.starts_with(".s.PGSQL.")
        .then(|| TcpStream::from(OwnedFd::from(stream)))
}

#[cfg(all(not(unix), feature = "postgres"))]
pub(crate) fn find_unix(_before: &Before) -> Option<TcpStream> {
    None
}

/// The inodes of the Unix stream sockets of this network namespace, from `/proc/net/unix`:
/// `Num RefCount Protocol Flags Type St Inode Path`, type `0001` a stream.
#[cfg(all(unix, feature = "postgres"))]
fn unix_streams() -> HashSet<u64> {
    let text = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(4) != Some(&"0001") {
                return None;
            }
            fields.get(6)?.parse().ok()
        })
        .collect()
}

/// A socket of `/proc/net/tcp` or `/proc/net/tcp6`.
#[derive(Debug, PartialEq, Eq)]
struct Row {
    local: SocketAddr,
    remote: SocketAddr,
    inode: u64,
}

/// The file descriptors of this process that are sockets, with their inodes.
#[cfg(target_os = "linux")]
fn sockets() -> Vec<(i32, u64)> {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let fd = entry.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(entry.path()).ok()?;
            let inode = target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()?;
            Some((fd, inode))
        })
        .collect()
}

#[cfg(not(target_os = "linux"))]
fn sockets() -> Vec<(i32, u64)> {
    Vec::new()
}

/// Every TCP socket of this network namespace.
fn tcp_table() -> Vec<Row> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|text| text.lines().skip(1).filter_map(row).collect::<Vec<_>>())
        .collect()
}

/// One line of `/proc/net/tcp`: `sl local rem st queues tr retrnsmt uid timeout inode ...`,
/// addresses as `HEX:PORT`, each 32-bit word of the address in the machine's byte order.
fn row(line: &str) -> Option<Row> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    Some(Row {
        local: address(fields.get(1)?)?,
        remote: address(fields.get(2)?)?,
        inode: fields.get(9)?.parse().ok()?,
    })
}

fn address(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for word in 0..ip.len() / 8 {
        let word = u32::from_str_radix(ip.get(word * 8..word * 8 + 8)?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// A duplicate of the socket `fd`, which `find` proved to be the connection's.
#[cfg(unix)]
fn duplicate(fd: i32) -> Option<TcpStream> {
    duplicate_fd(fd).map(TcpStream::from)
}

/// A duplicate of the socket `fd`, which `find` or `find_unix` proved to be the connection's.
#[cfg(unix)]
#[allow(
    unsafe_code,
    reason = "the one way to reach the driver's socket: see the comment on the block"
)]
fn duplicate_fd(fd: i32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::BorrowedFd;

    // SAFETY: `fd` is open for as long as this borrow lasts (one `dup`). It is the socket of
    // the connection that the calling thread opened and holds, without using it, while this
    // runs: the server reported that connection's endpoints, which no other socket on this host
    // has, and only this socket of the process has them and was not open before the connection
    // was (`find`); or the server reported none, the connection being over a Unix socket, and
    // this is the only Unix stream socket of the process that was not open before it was, so
    // the connection's (`find_unix`). The driver closes it only when the connection is
    // dropped, which cannot happen here.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    borrowed.try_clone_to_owned().ok()
}

#[cfg(not(unix))]
fn duplicate(_fd: i32) -> Option<TcpStream> {
    None
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, TcpListener};

    use super::*;

    #[test]
    fn rows_of_proc_net_tcp_in_the_machines_byte_order() {
        let ip = u32::from_ne_bytes([127, 0, 0, 1]);
        let line = format!(
            "   3: {ip:08X}:1538 {ip:08X}:D4C4 01 00000000:00000000 00:00000000 00000000   \
             114        0 73510 1 0000000000000000 20 4 30 10 -1"
        );
        assert_eq!(
            row(&line),
            Some(Row {
                local: "127.0.0.1:5432".parse().unwrap(),
                remote: "127.0.0.1:54468".parse().unwrap(),
                inode: 73510,
            })
        );
        let words: String = Ipv6Addr::LOCALHOST
            .octets()
            .chunks(4)
            .map(|word| format!("{:08X}", u32::from_ne_bytes(word.try_into().unwrap())))
            .collect();
        assert_eq!(
            address(&format!("{words}:0050")),
            Some(SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 80))
        );
        assert_eq!(row("  sl  local_address rem_address   st"), None);
    }

    #[test]
    fn an_address_is_an_end_when_the_port_and_any_known_address_match() {
        let end = End {
            ip: Some(Ipv4Addr::LOCALHOST.into()),
            port: 5432,
        };
        assert!(end.is("127.0.0.1:5432".parse().unwrap()));
        assert!(end.is("[::ffff:127.0.0.1]:5432".parse().unwrap()));
        assert!(!end.is("127.0.0.2:5432".parse().unwrap()));
        assert!(!end.is("127.0.0.1:5433".parse().unwrap()));
        let port_only = End {
            ip: None,
            port: 5432,
        };
        assert!(port_only.is("[::1]:5432".parse().unwrap()));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn finds_the_new_socket_of_a_connection_and_cuts_it() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let before = Before::now();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, _) = listener.accept().unwrap();
        let end = |address: SocketAddr| End {
            ip: Some(address.ip()),
            port: address.port(),
        };
        let (local, remote) = (client.local_addr().unwrap(), client.peer_addr().unwrap());
        assert!(
            find(&Before::now(), end(local), end(remote)).is_none(),
            "a socket open before is not the new one"
        );
        let duplicate = find(&before, end(local), end(remote)).expect("the new socket");
        assert_eq!(duplicate.local_addr().unwrap(), local);
        let accepted = find(&before, end(remote), end(local)).expect("the accepted end");
        assert_eq!(accepted.local_addr().unwrap(), remote);
        // Shutting the duplicate down ends a read on the original at once.
        duplicate.shutdown(Shutdown::Both).unwrap();
        let mut buffer = [0; 1];
        assert_eq!(client.read(&mut buffer).unwrap(), 0);
    }
}
