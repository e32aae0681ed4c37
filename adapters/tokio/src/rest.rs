//! The REST client on tokio: [`yuyo_core::rest::RestClient`] (rate limits, retries, the
//! pool, TLS, the proxy `CONNECT`, every deadline, the loops) over tokio's TCP sockets,
//! files and timers. This module only connects, reads, writes, opens and sleeps.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use yuyo_tokio::prelude::*;
//! let config = RestConfig::builder().token("…").build()?;
//! let client = RestClient::new(config, HttpSettings::default(), None)?;
//! let application = client.call(RestRequest::fetch_application()).await?.model()?;
//! # drop(application);
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::io;
use std::path::Path;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout_at;
use yuyo_core::rest::bot::Bot;
use yuyo_core::rest::client::PooledStream;
use yuyo_core::rest::runtime::{ClientRuntime, EventListener};

pub use yuyo_core::endpoint::BoxFuture;
pub use yuyo_core::rest::runtime::prelude::*;

/// A rate-limited Discord REST client on tokio (see [`yuyo_core::rest::RestClient`]);
/// its calls are futures. Cheap to clone; clones share the rate limiter and the pool.
pub type RestClient = yuyo_core::rest::RestClient<Tokio>;

/// The tokio runtime of the client path: [`RestClient`] and [`Bot`](crate::bot::Bot)
/// operations are boxed futures; time is tokio's (so a paused test clock holds).
#[derive(Debug, Clone, Copy)]
pub struct Tokio;

impl ClientRuntime for Tokio {
    type Stream = Connection;
    type File = tokio::fs::File;
    type Output<T: Send + 'static> = BoxFuture<T>;
    type Executor = tokio::runtime::Handle;
    type Server = crate::Server;

    fn run<T: Send + 'static>(operation: impl Future<Output = T> + Send + 'static) -> BoxFuture<T> {
        Box::pin(operation)
    }

    fn now() -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn server(bot: &Bot<Self>, service: crate::Service) -> crate::Server {
        let rest = bot.rest().clone();
        let server = crate::Server::new(service).with_rest_replies(rest, bot.reply_routing());
        match bot.executor() {
            Some(handle) => server.with_runtime(handle.clone()),
            None => server,
        }
    }

    async fn connect(host: &str, port: u16, deadline: Instant) -> io::Result<Connection> {
        let tcp = timeout_at(deadline.into(), TcpStream::connect((host, port))).await??;
        let _ = tcp.set_nodelay(true);
        Ok(Connection(tcp))
    }

    async fn write(stream: &mut Connection, bytes: &[u8], deadline: Instant) -> io::Result<()> {
        timeout_at(deadline.into(), stream.0.write_all(bytes)).await?
    }

    async fn read(stream: &mut Connection, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
        timeout_at(deadline.into(), stream.0.read(buf)).await?
    }

    async fn open(path: &Path) -> io::Result<tokio::fs::File> {
        tokio::fs::File::open(path).await
    }

    async fn read_file(file: &mut tokio::fs::File, buf: &mut [u8]) -> io::Result<usize> {
        file.read(buf).await
    }

    async fn sleep_until(until: Instant) {
        tokio::time::sleep_until(until.into()).await;
    }

    async fn wait(wake: EventListener, until: Option<Instant>) {
        match until {
            Some(until) => drop(timeout_at(until.into(), wake).await),
            None => wake.await,
        }
    }
}

/// A TCP connection of the client (TLS, when used, lives in the core).
#[derive(Debug)]
pub struct Connection(TcpStream);

impl PooledStream for Connection {
    fn is_reusable(&self) -> bool {
        matches!(self.0.try_read(&mut [0_u8; 1]), Err(error) if error.kind() == io::ErrorKind::WouldBlock)
    }
}
