//! The REST client on smol: [`yuyo_core::rest::client`] (rate limits, retries, the
//! pool, TLS, the proxy `CONNECT`, every deadline) driven over `async-net` sockets and
//! files read on the `blocking` pool. This module only connects, reads, writes, sleeps and wakes.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use yuyo_core::rest::{RestConfig, RestRequest};
//! use yuyo_smol::rest::{HttpSettings, RestClient};
//! let config = RestConfig::builder().token("…").build()?;
//! let client = RestClient::new(config, HttpSettings::default(), None)?;
//! let application = client.call(RestRequest::fetch_application()).await?.model()?;
//! # drop(application);
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use async_io::{Async, Timer};
use async_net::TcpStream;
use blocking::Unblock;
use event_listener::Event;
use futures_lite::{AsyncReadExt, AsyncWriteExt, future};
use yuyo_core::rest::bot::{Bot, LifecycleError, Operation};
use yuyo_core::rest::client::{Input, Output, PooledStream};
use yuyo_core::rest::runtime::{Announcer, ClientRuntime};
use yuyo_core::rest::transport::{Input as IoInput, Io};
use yuyo_core::rest::{RestError, RestRequest};

pub use yuyo_core::http1::client::ClientLimits;
pub use yuyo_core::rest::transport::{
    HttpSettings, InvalidProxy, ProxySettings, Timeouts, TlsVerification, Transport, rustls,
};
pub use yuyo_core::rest::{RequestError, Response, TransportSetupError};

/// A rate-limited Discord REST client on smol (see [`yuyo_core::rest::RestClient`]);
/// its calls are futures. Cheap to clone; clones share the rate limiter and the pool.
pub type RestClient = yuyo_core::rest::RestClient<Smol>;

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

/// `future`'s output, or `None` once `deadline` passed.
async fn until<T>(deadline: Instant, future: impl Future<Output = T>) -> Option<T> {
    future::or(async { Some(future.await) }, async {
        Timer::at(deadline).await;
        None
    })
    .await
}

/// Performs one IO the core asked for.
async fn perform(
    io: Io<'_, Connection>,
    file: &mut Option<Unblock<std::fs::File>>,
) -> IoInput<Connection> {
    let result = match io {
        Io::Connect {
            host,
            port,
            deadline,
        } => match until(deadline, TcpStream::connect((host, port))).await {
            Some(Ok(tcp)) => {
                let _ = tcp.set_nodelay(true);
                return IoInput::Connected(Connection(tcp));
            }
            Some(Err(error)) => Err(error),
            None => return IoInput::TimedOut,
        },
        Io::Write {
            stream,
            bytes,
            deadline,
        } => match until(deadline, stream.0.write_all(&bytes)).await {
            Some(written) => written.map(|()| IoInput::Written),
            None => return IoInput::TimedOut,
        },
        Io::Read {
            stream,
            buf,
            deadline,
        } => match until(deadline, stream.0.read(buf)).await {
            Some(read) => read.map(IoInput::Read),
            None => return IoInput::TimedOut,
        },
        Io::OpenFile { path } => {
            let path = path.to_path_buf();
            blocking::unblock(move || std::fs::File::open(path))
                .await
                .map(|opened| {
                    *file = Some(Unblock::new(opened));
                    IoInput::FileOpened
                })
        }
        Io::ReadFile { buf } => match file {
            Some(open) => open.read(buf).await.map(IoInput::FileRead),
            None => Err(io::Error::other("no open file")),
        },
    };
    result.unwrap_or_else(IoInput::Failed)
}

/// The smol runtime of the client path: [`RestClient`] and [`Bot`](crate::bot::Bot)
/// calls are boxed futures driven here.
#[derive(Debug, Clone, Copy)]
pub struct Smol;

/// A boxed future, what a smol client or bot operation returns.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The latest version announced, and an event fired when it grows.
#[derive(Debug, Default)]
pub struct Changes {
    latest: AtomicU64,
    event: Event,
}

impl Announcer for Changes {
    fn announce(&self, version: u64) {
        if self.latest.fetch_max(version, Ordering::SeqCst) < version {
            self.event.notify(usize::MAX);
        }
    }
}

impl Changes {
    /// Until a version newer than `version` is announced, or `deadline` passed.
    pub(crate) async fn after(&self, version: u64, deadline: Option<Instant>) {
        let listener = self.event.listen();
        if self.latest.load(Ordering::SeqCst) <= version {
            match deadline {
                Some(deadline) => drop(until(deadline, listener).await),
                None => listener.await,
            }
        }
    }
}

impl ClientRuntime for Smol {
    type Stream = Connection;
    type Announcer = Changes;
    type Output<T: Send + 'static> = BoxFuture<T>;
    type Executor = Arc<async_executor::Executor<'static>>;
    type Server = crate::Server;

    fn call<T: Send + 'static>(
        client: RestClient,
        request: RestRequest<T>,
    ) -> BoxFuture<Result<Response<T>, RestError>> {
        Box::pin(async move {
            let mut call = client.client().call(request);
            let mut file = None;
            loop {
                let input = match call.poll_output(Instant::now()) {
                    Output::Io(io) => Input::Io(perform(io, &mut file).await),
                    Output::Sleep { until, wake_after } => {
                        match wake_after {
                            Some(version) => client.changes().after(version, Some(until)).await,
                            None => drop(Timer::at(until).await),
                        }
                        Input::Woke
                    }
                    Output::Notify(version) => {
                        client.changes().announce(version);
                        continue;
                    }
                    Output::Done(result) => return result,
                };
                call.handle_input(Instant::now(), input);
            }
        })
    }

    fn drive(bot: Bot<Self>, operation: Operation) -> BoxFuture<Result<(), LifecycleError>> {
        Box::pin(crate::bot::drive(bot, operation))
    }

    fn server(bot: Bot<Self>) -> BoxFuture<Result<crate::Server, LifecycleError>> {
        Box::pin(crate::bot::server(bot))
    }

    fn ready<T: Send + 'static>(value: T) -> BoxFuture<T> {
        Box::pin(std::future::ready(value))
    }

    fn map<T: Send + 'static, U: Send + 'static>(
        output: BoxFuture<T>,
        f: impl FnOnce(T) -> U + Send + 'static,
    ) -> BoxFuture<U> {
        Box::pin(async move { f(output.await) })
    }
}
