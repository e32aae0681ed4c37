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

use std::fmt;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_io::{Async, Timer};
use async_net::TcpStream;
use blocking::Unblock;
use event_listener::Event;
use futures_lite::{AsyncReadExt, AsyncWriteExt, future};
use http::Method;
use yuyo_core::rest::client::{Client, Input, Output, PooledStream};
use yuyo_core::rest::transport::{Input as IoInput, Io};
use yuyo_core::rest::{
    RateLimiter, RequestBody, Response, Rest, RestConfig, RestError, RestRequest, Route,
};

pub use yuyo_core::http1::client::ClientLimits;
pub use yuyo_core::rest::transport::{
    HttpSettings, InvalidProxy, ProxySettings, Timeouts, TlsVerification, Transport, rustls,
};
pub use yuyo_core::rest::{RequestError, TransportSetupError};

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

struct Shared {
    client: Arc<Client<Connection>>,
    /// The highest limiter version announced.
    latest: AtomicU64,
    /// Fired when `latest` grows (wakes waits on rate limits).
    changed: Event,
}

/// A rate-limited Discord REST client on smol. Cheap to clone; clones share the
/// rate limiter and the connection pool.
#[derive(Clone)]
pub struct RestClient {
    shared: Arc<Shared>,
}

impl fmt::Debug for RestClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.client.fmt(f)
    }
}

impl RestClient {
    /// A client for `config` over a transport with `settings` and `proxy`.
    ///
    /// # Errors
    /// [`TransportSetupError`] when TLS cannot be configured.
    pub fn new(
        config: RestConfig,
        settings: HttpSettings,
        proxy: Option<ProxySettings>,
    ) -> Result<Self, TransportSetupError> {
        let client = Arc::new(Client::new(config, settings, proxy)?);
        Ok(Self {
            shared: Arc::new(Shared {
                client,
                latest: AtomicU64::new(0),
                changed: Event::new(),
            }),
        })
    }

    /// The sans-IO client (configuration).
    #[must_use]
    pub fn rest(&self) -> &Rest {
        self.shared.client.rest()
    }

    /// The transport's settings and proxy.
    #[must_use]
    pub fn transport(&self) -> &Transport {
        self.shared.client.transport()
    }

    /// Idle connections currently pooled (all hosts).
    #[must_use]
    pub fn idle_connections(&self) -> usize {
        self.shared.client.idle_connections()
    }

    /// Closes every idle connection.
    pub fn clear_idle(&self) {
        self.shared.client.clear_idle();
    }

    /// Runs `f` with the rate limiter locked (never across an await).
    pub fn with_limiter<R>(&self, f: impl FnOnce(&mut RateLimiter) -> R) -> R {
        self.shared.client.with_limiter(f)
    }

    /// Sends `request`, waiting out rate limits and retrying as the core decides.
    ///
    /// # Errors
    /// [`RestError`] as decided by [`yuyo_core::rest::Call`].
    pub async fn call<T>(&self, request: RestRequest<T>) -> Result<Response<T>, RestError> {
        let mut call = self.shared.client.call(request);
        let mut file = None;
        loop {
            let input = match call.poll_output(Instant::now()) {
                Output::Io(io) => Input::Io(perform(io, &mut file).await),
                Output::Sleep { until, wake_after } => {
                    self.sleep(until, wake_after).await;
                    Input::Woke
                }
                Output::Notify(version) => {
                    if self.shared.latest.fetch_max(version, Ordering::SeqCst) < version {
                        self.shared.changed.notify(usize::MAX);
                    }
                    continue;
                }
                Output::Done(result) => return result,
            };
            call.handle_input(Instant::now(), input);
        }
    }

    /// Until `until`, or until another call announced a version above `wake_after`.
    async fn sleep(&self, until: Instant, wake_after: Option<u64>) {
        let Some(version) = wake_after else {
            Timer::at(until).await;
            return;
        };
        let listener = self.shared.changed.listen();
        if self.shared.latest.load(Ordering::SeqCst) <= version {
            future::or(listener, async {
                Timer::at(until).await;
            })
            .await;
        }
    }

    /// The generic `request(method, path, body)`: any route, still rate limited. The
    /// answer decodes to JSON.
    ///
    /// # Errors
    /// [`RequestError::InvalidPath`] for a path that is not a Discord route, otherwise
    /// as [`RestClient::call`].
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: RequestBody,
    ) -> Result<Response<serde_json::Value>, RequestError> {
        let route = Route::custom(method, path).map_err(RequestError::InvalidPath)?;
        self.call(RestRequest::new(route, body))
            .await
            .map_err(RequestError::Rest)
    }
}
