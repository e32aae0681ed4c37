//! The REST client on smol: [`yuyo_core::rest::RestClient`] (rate limits, retries, the
//! pool, TLS, the proxy `CONNECT`, every deadline, the loops) over `async-net` sockets,
//! `async-io` timers and files read on the `blocking` pool. This module only connects,
//! reads, writes, opens and sleeps.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use yuyo_smol::prelude::*;
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
use std::sync::Arc;
use std::time::Instant;

use async_io::{Async, Timer};
use async_net::TcpStream;
use blocking::Unblock;
use futures_lite::{AsyncReadExt, AsyncWriteExt, future};
use yuyo_core::rest::bot::Bot;
use yuyo_core::rest::client::PooledStream;
use yuyo_core::rest::runtime::{ClientRuntime, EventListener};

pub use yuyo_core::endpoint::BoxFuture;
pub use yuyo_core::rest::runtime::prelude::*;

/// A rate-limited Discord REST client on smol (see [`yuyo_core::rest::RestClient`]);
/// its calls are futures. Cheap to clone; clones share the rate limiter and the pool.
pub type RestClient = yuyo_core::rest::RestClient<Smol>;

/// The smol runtime of the client path: [`RestClient`] and [`Bot`](crate::bot::Bot)
/// operations are boxed futures.
#[derive(Debug, Clone, Copy)]
pub struct Smol;

/// `future`'s output, or `None` once `deadline` passed.
async fn until<T>(deadline: Instant, future: impl Future<Output = T>) -> Option<T> {
    future::or(async { Some(future.await) }, async {
        Timer::at(deadline).await;
        None
    })
    .await
}

/// `future`'s output, or a `TimedOut` error once `deadline` passed.
async fn within<T>(
    deadline: Instant,
    future: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    until(deadline, future)
        .await
        .unwrap_or_else(|| Err(io::ErrorKind::TimedOut.into()))
}

impl ClientRuntime for Smol {
    type Stream = Connection;
    type File = Unblock<std::fs::File>;
    type Output<T: Send + 'static> = BoxFuture<T>;
    type Executor = Arc<async_executor::Executor<'static>>;
    type Server = crate::Server;

    fn run<T: Send + 'static>(operation: impl Future<Output = T> + Send + 'static) -> BoxFuture<T> {
        Box::pin(operation)
    }

    fn now() -> Instant {
        Instant::now()
    }

    fn server(bot: &Bot<Self>, service: crate::Service) -> crate::Server {
        let rest = bot.rest().clone();
        let server = crate::Server::new(service).with_rest_replies(rest, bot.reply_routing());
        match bot.executor() {
            Some(executor) => server.with_executor(Arc::clone(executor)),
            None => server,
        }
    }

    async fn connect(host: &str, port: u16, deadline: Instant) -> io::Result<Connection> {
        let tcp = within(deadline, TcpStream::connect((host, port))).await?;
        let _ = tcp.set_nodelay(true);
        Ok(Connection(tcp))
    }

    async fn write(stream: &mut Connection, bytes: &[u8], deadline: Instant) -> io::Result<()> {
        within(deadline, stream.0.write_all(bytes)).await
    }

    async fn read(stream: &mut Connection, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
        within(deadline, stream.0.read(buf)).await
    }

    async fn open(path: &Path) -> io::Result<Self::File> {
        let path = path.to_path_buf();
        let file = blocking::unblock(move || std::fs::File::open(path)).await?;
        Ok(Unblock::new(file))
    }

    async fn read_file(file: &mut Self::File, buf: &mut [u8]) -> io::Result<usize> {
        file.read(buf).await
    }

    async fn sleep_until(until: Instant) {
        Timer::at(until).await;
    }

    async fn wait(wake: EventListener, until: Option<Instant>) {
        match until {
            Some(deadline) => drop(self::until(deadline, wake).await),
            None => wake.await,
        }
    }
}

/// A TCP connection of the client (TLS, when used, lives in the core).
#[derive(Debug)]
pub struct Connection(TcpStream);

impl PooledStream for Connection {
    fn is_reusable(&self) -> bool {
        // The socket under `Async` is non-blocking: nothing to read is `WouldBlock`.
        let socket: Arc<Async<std::net::TcpStream>> = self.0.clone().into();
        matches!(
            socket.get_ref().peek(&mut [0_u8; 1]),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock
        )
    }
}
