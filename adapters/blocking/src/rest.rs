//! The REST client on std threads: [`yuyo_core::rest::RestClient`] (rate limits,
//! retries, the pool, TLS, the proxy `CONNECT`, every deadline, the loops) over blocking
//! `std::net` sockets (socket timeouts set from the core's deadlines) and `std::fs`
//! files. This module only connects, reads, writes, opens and sleeps.
//!
//! ```no_run
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use yuyo_blocking::prelude::*;
//! let config = RestConfig::builder().token("…").build()?;
//! let client = RestClient::new(config, HttpSettings::default(), None)?;
//! let application = client.call(RestRequest::fetch_application())?.model()?;
//! # drop(application);
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

use yuyo_core::rest::bot::Bot;
use yuyo_core::rest::client::PooledStream;
use yuyo_core::rest::runtime::{ClientRuntime, EventListener, Listener};

pub use yuyo_core::rest::runtime::prelude::*;

/// A rate-limited Discord REST client on std threads (see
/// [`yuyo_core::rest::RestClient`]); its calls block. Cheap to clone; clones share the
/// rate limiter and the pool.
pub type RestClient = yuyo_core::rest::RestClient<Blocking>;

/// Time left until `deadline`, `None` once it passed.
fn remaining(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|left| !left.is_zero())
}

/// A TCP connection to `host:port`, trying each address until `deadline`.
fn connect(host: &str, port: u16, deadline: Instant) -> io::Result<TcpStream> {
    let mut last = io::Error::other("no address");
    for addr in (host, port).to_socket_addrs()? {
        let left = remaining(deadline).ok_or(io::ErrorKind::TimedOut)?;
        match TcpStream::connect_timeout(&addr, left) {
            Ok(tcp) => return Ok(tcp),
            Err(error) => last = error,
        }
    }
    Err(last)
}

/// Sets `tcp`'s timeouts to the time left until `deadline`.
fn limit(tcp: &TcpStream, deadline: Instant) -> io::Result<()> {
    let left = remaining(deadline).ok_or(io::ErrorKind::TimedOut)?;
    tcp.set_read_timeout(Some(left))?;
    tcp.set_write_timeout(Some(left))
}

/// The std-threads runtime of the client path: [`RestClient`] and
/// [`Bot`](crate::bot::Bot) operations run on the calling thread (the core's loop under
/// `block_on`; every IO step blocks).
#[derive(Debug, Clone, Copy)]
pub struct Blocking;

impl ClientRuntime for Blocking {
    type Stream = Connection;
    type File = std::fs::File;
    type Output<T: Send + 'static> = T;
    type Executor = std::convert::Infallible;
    type Server = crate::Server;

    fn run<T: Send + 'static>(operation: impl Future<Output = T> + Send + 'static) -> T {
        futures_lite::future::block_on(operation)
    }

    fn server(bot: &Bot<Self>, service: crate::Service) -> crate::Server {
        crate::Server::new(service).with_rest_replies(bot.rest().clone(), bot.reply_routing())
    }

    fn now() -> Instant {
        Instant::now()
    }

    async fn connect(host: &str, port: u16, deadline: Instant) -> io::Result<Connection> {
        let tcp = connect(host, port, deadline)?;
        let _ = tcp.set_nodelay(true);
        Ok(Connection(tcp))
    }

    async fn write(stream: &mut Connection, bytes: &[u8], deadline: Instant) -> io::Result<()> {
        limit(&stream.0, deadline)?;
        stream.0.write_all(bytes)
    }

    async fn read(stream: &mut Connection, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
        limit(&stream.0, deadline)?;
        stream.0.read(buf)
    }

    async fn open(path: &Path) -> io::Result<std::fs::File> {
        std::fs::File::open(path)
    }

    async fn read_file(file: &mut std::fs::File, buf: &mut [u8]) -> io::Result<usize> {
        file.read(buf)
    }

    async fn sleep_until(until: Instant) {
        std::thread::sleep(remaining(until).unwrap_or_default());
    }

    async fn wait(wake: EventListener, until: Option<Instant>) {
        match until {
            Some(deadline) => drop(wake.wait_deadline(deadline)),
            None => wake.wait(),
        }
    }
}

/// A TCP connection of the client (TLS, when used, lives in the core).
#[derive(Debug)]
pub struct Connection(TcpStream);

impl PooledStream for Connection {
    fn is_reusable(&self) -> bool {
        if self.0.set_nonblocking(true).is_err() {
            return false;
        }
        let idle = matches!(
            self.0.peek(&mut [0_u8; 1]),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock
        );
        self.0.set_nonblocking(false).is_ok() && idle
    }
}
