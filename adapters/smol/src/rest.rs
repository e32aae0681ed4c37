//! The REST client on smol: the sans-IO [`yuyo_core::rest`] rules driven over
//! `async-net` TCP + TLS (`futures-rustls`, webpki roots), with keep-alive connection
//! reuse, timeouts ([`async_io::Timer`]) and HTTP proxies (`CONNECT`, optional basic
//! auth).
//!
//! Every HTTP/1.1 byte is produced and parsed by [`yuyo_core::http1::client`]; settings,
//! TLS configuration, the proxy handshake and the pool's rules come from
//! [`yuyo_core::rest::transport`]. This module only moves bytes, waits and keeps
//! connections.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use yuyo_core::rest::{RestConfig, RestRequest};
//! let config = RestConfig::builder().token("…").build()?;
//! let client = yuyo_smol::rest::RestClient::new(config, Default::default(), None)?;
//! let application = client.call(RestRequest::fetch_application()).await?.model()?;
//! # drop(application);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use async_io::{Async, Timer};
use async_net::TcpStream;
use bytes::Bytes;
use event_listener::Event;
use futures_lite::future;
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures_rustls::TlsConnector;
use futures_rustls::client::TlsStream;
use http::Method;
use yuyo_core::http1::client::{EncodedRequest, ResponseReader, encode_request};
use yuyo_core::multipart::{FileSource, Segment};
use yuyo_core::rest::transport::{ConnectHandshake, Origin, Pool, SendFailure};
use yuyo_core::rest::{
    RateLimiter, RequestBody, Response, Rest, RestConfig, RestError, RestRequest, Route, Step,
    TransportError, TransportErrorKind,
};

pub use yuyo_core::http1::client::ClientLimits;
pub use yuyo_core::rest::transport::{
    HttpSettings, InvalidProxy, ProxySettings, Timeouts, TlsVerification, rustls,
};
pub use yuyo_core::rest::{RequestError, TransportSetupError};

/// Bytes read from a socket at once.
const READ_SIZE: usize = 16 * 1024;

/// A byte stream: plain TCP or TLS over TCP.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// Whether an idle pooled connection can carry another request: the peer has not
    /// closed it and sent nothing unasked.
    fn is_reusable(&self) -> bool {
        let tcp = match self {
            Self::Plain(stream) => stream,
            Self::Tls(stream) => stream.get_ref().0,
        };
        // The socket under `Async` is non-blocking: nothing to read is `WouldBlock`.
        let socket: Arc<Async<std::net::TcpStream>> = tcp.clone().into();
        matches!(
            socket.get_ref().peek(&mut [0_u8; 1]),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock
        )
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_close(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

/// `future`, or `on_timeout` once `deadline` passed.
async fn until<T>(deadline: Instant, future: impl Future<Output = T>, on_timeout: T) -> T {
    future::or(future, async {
        Timer::at(deadline).await;
        on_timeout
    })
    .await
}

/// The HTTP/1.1 transport: connections, TLS, proxy, keep-alive pool.
pub struct Transport {
    settings: HttpSettings,
    proxy: Option<ProxySettings>,
    tls: TlsConnector,
    pool: Mutex<Pool<Stream>>,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("settings", &self.settings)
            .field("proxy", &self.proxy)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn connect_error(message: impl fmt::Display) -> TransportError {
    TransportError::new(TransportErrorKind::Connect, message.to_string())
}

impl Transport {
    /// A transport with `settings`, through `proxy` if given.
    ///
    /// # Errors
    /// [`TransportSetupError`] when TLS cannot be configured.
    pub fn new(
        settings: HttpSettings,
        proxy: Option<ProxySettings>,
    ) -> Result<Self, TransportSetupError> {
        let tls = TlsConnector::from(settings.tls.client_config()?);
        let pool = Mutex::new(Pool::new(&settings));
        Ok(Self {
            settings,
            proxy,
            tls,
            pool,
        })
    }

    /// The HTTP settings.
    #[must_use]
    pub fn settings(&self) -> &HttpSettings {
        &self.settings
    }

    /// The proxy settings.
    #[must_use]
    pub fn proxy(&self) -> Option<&ProxySettings> {
        self.proxy.as_ref()
    }

    /// Idle connections currently pooled (all hosts).
    #[must_use]
    pub fn idle_connections(&self) -> usize {
        lock(&self.pool).len()
    }

    /// Closes every idle connection.
    pub fn clear_idle(&self) {
        lock(&self.pool).clear();
    }

    /// Sends `request` and reads the whole answer. `Connect` errors mean nothing was
    /// sent; `Timeout` and `Io` that something may have been.
    ///
    /// # Errors
    /// [`TransportError`] as above.
    pub async fn send(
        &self,
        request: http::Request<RequestBody>,
    ) -> Result<http::Response<Bytes>, TransportError> {
        let origin =
            Origin::from_uri(request.uri()).ok_or_else(|| connect_error("unusable URL"))?;
        let method = request.method().clone();
        let encoded = encode_request(request).map_err(connect_error)?;
        // One retry on a fresh connection when a pooled one turns out to be closed.
        let idle = lock(&self.pool).take(&origin, Instant::now(), Stream::is_reusable);
        if let Some(stream) = idle {
            match self
                .exchange(stream, &origin, &method, &encoded, true)
                .await
            {
                Ok(response) => return Ok(response),
                Err(failure) if failure.resend_on_fresh(&method) => {
                    tracing::debug!("pooled connection was closed; reconnecting");
                }
                Err(failure) => return Err(failure.error),
            }
        }
        let deadline = Instant::now() + self.settings.timeouts.connect;
        let stream = until(
            deadline,
            self.connect(&origin),
            Err(connect_error("connect timed out")),
        )
        .await?;
        self.exchange(stream, &origin, &method, &encoded, false)
            .await
            .map_err(|failure| failure.error)
    }

    /// TCP connect, proxy tunnel and TLS handshake.
    async fn connect(&self, origin: &Origin) -> Result<Stream, TransportError> {
        let tcp = match &self.proxy {
            None => TcpStream::connect((origin.host.as_str(), origin.port))
                .await
                .map_err(connect_error)?,
            Some(proxy) => {
                let mut tcp = TcpStream::connect((proxy.host(), proxy.port()))
                    .await
                    .map_err(connect_error)?;
                self.tunnel(&mut tcp, proxy, origin).await?;
                tcp
            }
        };
        let _ = tcp.set_nodelay(true);
        if !origin.tls {
            return Ok(Stream::Plain(tcp));
        }
        let name = origin.server_name()?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| connect_error(format!("TLS: {e}")))?;
        Ok(Stream::Tls(Box::new(tls)))
    }

    /// `CONNECT host:port` through the proxy.
    async fn tunnel(
        &self,
        tcp: &mut TcpStream,
        proxy: &ProxySettings,
        origin: &Origin,
    ) -> Result<(), TransportError> {
        let (mut handshake, head) =
            ConnectHandshake::new(proxy, origin, self.settings.limits.clone());
        tcp.write_all(&head)
            .await
            .map_err(|e| ConnectHandshake::io_error(&e))?;
        let mut buf = [0_u8; 1024];
        while !handshake.poll()? {
            match tcp.read(&mut buf).await {
                Ok(0) => handshake.receive_eof(),
                Ok(n) => handshake.receive(&buf[..n]),
                Err(e) => return Err(ConnectHandshake::io_error(&e)),
            }
        }
        Ok(())
    }

    async fn exchange(
        &self,
        mut stream: Stream,
        origin: &Origin,
        method: &Method,
        encoded: &EncodedRequest,
        reused: bool,
    ) -> Result<http::Response<Bytes>, SendFailure> {
        let read_timeout = self.settings.timeouts.read;
        let limits = self.settings.limits.clone();
        let exchange = async {
            if let Err(error) = write_request(&mut stream, encoded).await {
                // A server that answers early (e.g. 413) and closes is still heard.
                tracing::debug!(%error, "request write failed");
            }
            let mut reader = ResponseReader::new(limits, method);
            let mut buf = vec![0_u8; READ_SIZE];
            loop {
                match reader.poll_response() {
                    Ok(Some(response)) => return Ok((response, reader.keep_alive())),
                    Ok(None) => {}
                    Err(error) => return Err(SendFailure::response(error, reused)),
                }
                match stream.read(&mut buf).await {
                    Ok(0) => reader.receive_eof(),
                    Ok(n) => reader.receive(&buf[..n]),
                    Err(error) => return Err(SendFailure::io(&error, reused)),
                }
            }
        };
        let deadline = Instant::now() + read_timeout;
        let (response, keep_alive) =
            until(deadline, exchange, Err(SendFailure::timeout(read_timeout))).await?;
        if keep_alive && !encoded.close {
            lock(&self.pool).put(origin.clone(), stream, Instant::now());
        }
        Ok(response)
    }
}

async fn write_request(stream: &mut Stream, encoded: &EncodedRequest) -> io::Result<()> {
    stream.write_all(&encoded.head).await?;
    for segment in &encoded.body {
        let data = match segment {
            Segment::Bytes(bytes) => bytes.clone(),
            Segment::File { source, .. } => read_source(source).await?,
        };
        for piece in encoded.framing.frame(data) {
            stream.write_all(&piece).await?;
        }
    }
    if let Some(end) = encoded.framing.end() {
        stream.write_all(&end).await?;
    }
    stream.flush().await
}

async fn read_source(source: &FileSource) -> io::Result<Bytes> {
    match source {
        FileSource::Path { path, .. } => {
            let path = path.clone();
            blocking::unblock(move || std::fs::read(path))
                .await
                .map(Bytes::from)
        }
        FileSource::Later { .. } => Err(io::Error::other(
            "yuyo-smol has no source for FileSource::Later files",
        )),
    }
}

struct Shared {
    rest: Rest,
    limiter: Mutex<RateLimiter>,
    /// The highest limiter version reported after an answer (wakes `Pending` waits).
    latest: AtomicU64,
    changed: Event,
    transport: Transport,
}

/// A rate-limited Discord REST client on smol. Cheap to clone; clones share the rate
/// limiter and the connection pool.
#[derive(Clone)]
pub struct RestClient {
    shared: Arc<Shared>,
}

impl fmt::Debug for RestClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestClient")
            .field("rest", &self.shared.rest)
            .field("transport", &self.shared.transport)
            .finish()
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
        let rest = Rest::new(config);
        let limiter = Mutex::new(rest.rate_limiter());
        Ok(Self {
            shared: Arc::new(Shared {
                rest,
                limiter,
                latest: AtomicU64::new(0),
                changed: Event::new(),
                transport: Transport::new(settings, proxy)?,
            }),
        })
    }

    /// The sans-IO client (configuration).
    #[must_use]
    pub fn rest(&self) -> &Rest {
        &self.shared.rest
    }

    /// The transport (HTTP and proxy settings, pool).
    #[must_use]
    pub fn transport(&self) -> &Transport {
        &self.shared.transport
    }

    /// Runs `f` with the rate limiter locked (never across an await).
    pub fn with_limiter<R>(&self, f: impl FnOnce(&mut RateLimiter) -> R) -> R {
        f(&mut lock(&self.shared.limiter))
    }

    /// Sends `request`, waiting out rate limits and retrying as the core decides.
    ///
    /// # Errors
    /// [`RestError`] as decided by [`yuyo_core::rest::Call`].
    pub async fn call<T>(&self, request: RestRequest<T>) -> Result<Response<T>, RestError> {
        let shared = &self.shared;
        let mut call = shared.rest.call(request);
        loop {
            let (step, version) = {
                let mut limiter = lock(&shared.limiter);
                let step = call.poll(Instant::now(), &mut limiter);
                (step, limiter.version())
            };
            match step {
                Step::Send(request) => {
                    let outcome = shared.transport.send(request).await;
                    let version = {
                        let mut limiter = lock(&shared.limiter);
                        match outcome {
                            Ok(response) => {
                                call.on_response(Instant::now(), response, &mut limiter);
                            }
                            Err(error) => {
                                call.on_transport_error(Instant::now(), error, &mut limiter);
                            }
                        }
                        limiter.version()
                    };
                    if shared.latest.fetch_max(version, Ordering::SeqCst) < version {
                        shared.changed.notify(usize::MAX);
                    }
                }
                Step::Wait(wait) if wait.wakes_on_update() => {
                    // Until `until`, or until another call's answer changed the limiter.
                    let listener = shared.changed.listen();
                    if shared.latest.load(Ordering::SeqCst) <= version {
                        future::or(listener, async {
                            Timer::at(wait.until).await;
                        })
                        .await;
                    }
                }
                Step::Wait(wait) => {
                    Timer::at(wait.until).await;
                }
                Step::Done(result) => return result,
                Step::InFlight => {
                    // Not produced by this loop (every Send is reported first).
                    return Err(RestError::CallFinished);
                }
            }
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
