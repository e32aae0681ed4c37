//! The REST client on tokio: [`yuyo_core::rest::client`] (rate limits, retries, the
//! pool, TLS, the proxy `CONNECT`, every deadline) driven over tokio's TCP sockets and
//! files. This module only connects, reads, writes, sleeps and wakes.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use yuyo_core::rest::{RestConfig, RestRequest};
//! use yuyo_tokio::rest::{HttpSettings, RestClient};
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
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
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

/// A rate-limited Discord REST client on tokio (see [`yuyo_core::rest::RestClient`]);
/// its calls are futures. Cheap to clone; clones share the rate limiter and the pool.
pub type RestClient = yuyo_core::rest::RestClient<Tokio>;

/// A TCP connection of the client (TLS, when used, lives in the core).
#[derive(Debug)]
pub struct Connection(TcpStream);

impl PooledStream for Connection {
    fn is_reusable(&self) -> bool {
        matches!(self.0.try_read(&mut [0_u8; 1]), Err(error) if error.kind() == io::ErrorKind::WouldBlock)
    }
}

/// Performs one IO the core asked for.
async fn perform(
    io: Io<'_, Connection>,
    file: &mut Option<tokio::fs::File>,
) -> IoInput<Connection> {
    let result = match io {
        Io::Connect {
            host,
            port,
            deadline,
        } => {
            let connect = TcpStream::connect((host, port));
            match tokio::time::timeout_at(deadline.into(), connect).await {
                Ok(Ok(tcp)) => {
                    let _ = tcp.set_nodelay(true);
                    return IoInput::Connected(Connection(tcp));
                }
                Ok(Err(error)) => Err(error),
                Err(_) => return IoInput::TimedOut,
            }
        }
        Io::Write {
            stream,
            bytes,
            deadline,
        } => {
            let write = stream.0.write_all(&bytes);
            match tokio::time::timeout_at(deadline.into(), write).await {
                Ok(written) => written.map(|()| IoInput::Written),
                Err(_) => return IoInput::TimedOut,
            }
        }
        Io::Read {
            stream,
            buf,
            deadline,
        } => match tokio::time::timeout_at(deadline.into(), stream.0.read(buf)).await {
            Ok(read) => read.map(IoInput::Read),
            Err(_) => return IoInput::TimedOut,
        },
        Io::OpenFile { path } => tokio::fs::File::open(path).await.map(|opened| {
            *file = Some(opened);
            IoInput::FileOpened
        }),
        Io::ReadFile { buf } => match file {
            Some(open) => open.read(buf).await.map(IoInput::FileRead),
            None => Err(io::Error::other("no open file")),
        },
    };
    result.unwrap_or_else(IoInput::Failed)
}

/// The tokio runtime of the client path: [`RestClient`] and [`Bot`](crate::bot::Bot)
/// calls are boxed futures driven here.
#[derive(Debug, Clone, Copy)]
pub struct Tokio;

/// A boxed future, what a tokio client or bot operation returns.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The latest version announced, watched by the waits on it.
#[derive(Debug)]
pub struct Changes(watch::Sender<u64>);

impl Default for Changes {
    fn default() -> Self {
        Self(watch::Sender::new(0))
    }
}

impl Announcer for Changes {
    fn announce(&self, version: u64) {
        self.0.send_if_modified(|current| {
            let newer = version > *current;
            *current = (*current).max(version);
            newer
        });
    }
}

impl Changes {
    /// Until a version newer than `version` is announced.
    pub(crate) async fn after(&self, version: u64) {
        let _ = self
            .0
            .subscribe()
            .wait_for(|&current| current > version)
            .await;
    }
}

impl ClientRuntime for Tokio {
    type Stream = Connection;
    type Announcer = Changes;
    type Output<T: Send + 'static> = BoxFuture<T>;
    type Executor = tokio::runtime::Handle;
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
                        let sleep = tokio::time::sleep_until(until.into());
                        match wake_after {
                            Some(version) => tokio::select! {
                                () = sleep => {}
                                () = client.changes().after(version) => {}
                            },
                            None => sleep.await,
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
