//! A tokio service in front of a slow upstream: many concurrent requests, one upstream call per
//! key.
//!
//! The upstream is a TCP server on a loopback port that answers one line per connection after
//! 50 ms and counts what it is asked. The service handles 2,000 requests for 50 keys from 200
//! concurrent tasks through an async container whose generator calls the upstream. Concurrent
//! misses on one key share one upstream call, so `cargo run --example service` prints:
//!
//! ```text
//! requests: 2000
//! keys: 50
//! errors: 0
//! upstream calls: 50
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kvcache::AsyncContainer;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const REQUESTS: usize = 2_000;
const KEYS: usize = 50;
const CLIENTS: usize = 200;

/// What the upstream answers for a symbol.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Quote {
    symbol: String,
    cents: u64,
}

/// Starts the upstream on a loopback port: one request line in, one answer line out, 50 ms
/// later. Returns its address and its request counter.
async fn upstream() -> std::io::Result<(std::net::SocketAddr, Arc<AtomicUsize>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let served = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&served);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let (reader, mut writer) = socket.into_split();
                let mut symbol = String::new();
                if BufReader::new(reader).read_line(&mut symbol).await.is_ok() {
                    counter.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let cents = symbol.trim().bytes().map(u64::from).sum::<u64>();
                    let _ = writer.write_all(format!("{cents}\n").as_bytes()).await;
                }
            });
        }
    });
    Ok((address, served))
}

/// The upstream call the cache saves: connect, ask, read the answer.
async fn fetch(address: std::net::SocketAddr, symbol: String) -> std::io::Result<Quote> {
    let socket = TcpStream::connect(address).await?;
    let (reader, mut writer) = socket.into_split();
    writer.write_all(format!("{symbol}\n").as_bytes()).await?;
    let mut answer = String::new();
    BufReader::new(reader).read_line(&mut answer).await?;
    let cents = answer
        .trim()
        .parse()
        .map_err(|error| std::io::Error::other(format!("a bad answer {answer:?}: {error}")))?;
    Ok(Quote { symbol, cents })
}

/// A request handler, as an axum or tonic handler would be: the cache in front of the upstream.
async fn handle(quotes: &AsyncContainer<Quote>, symbol: &str) -> kvcache::Result<Quote> {
    quotes.get(symbol).await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (address, upstream_calls) = upstream().await?;
    let cache = kvcache::init([
        ("backend.mem", "variable"),
        ("container.quotes.backend", "mem"),
        ("container.quotes.expire", "1 minute"),
    ])?;
    cache.register_fallible_async_generator("quotes", move |symbol: String| {
        fetch(address, symbol)
    })?;
    let quotes = cache.async_container::<Quote>("quotes")?;

    let errors = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (quotes, errors) = (quotes.clone(), Arc::clone(&errors));
            tokio::spawn(async move {
                for request in (client..REQUESTS).step_by(CLIENTS) {
                    let symbol = format!("SYM{}", request % KEYS);
                    match handle(&quotes, &symbol).await {
                        Ok(quote) if quote.symbol == symbol => {}
                        _ => {
                            errors.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.await?;
    }
    println!("requests: {REQUESTS}");
    println!("keys: {KEYS}");
    println!("errors: {}", errors.load(Ordering::SeqCst));
    println!("upstream calls: {}", upstream_calls.load(Ordering::SeqCst));
    Ok(())
}
