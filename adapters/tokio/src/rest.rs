//! The REST client on tokio: the sans-IO [`yuyo_core::rest`] rules driven over
//! TCP + TLS (`rustls`, webpki roots), with keep-alive connection reuse, timeouts and
//! HTTP proxies (`CONNECT`, optional basic auth).
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
//! let client = yuyo_tokio::rest::RestClient::new(config, Default::default(), None)?;
//! let application = client.call(RestRequest::fetch_application()).await?.model()?;
//! # drop(application);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::Method;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
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

/// A byte stream: plain TCP or TLS over TCP.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// Whether an idle pooled connection can carry another request: the peer has not
    /// closed it and sent nothing unasked (a byte read here means it is discarded).
    fn is_reusable(&self) -> bool {
        let tcp = match self {
            Self::Plain(stream) => stream,
            Self::Tls(stream) => stream.get_ref().0,
        };
        matches!(tcp.try_read(&mut [0_u8; 1]), Err(error) if error.kind() == io::ErrorKind::WouldBlock)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
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

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
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
        let origin = Origin::from_uri(request.uri())
            .ok_or_else(|| TransportError::new(TransportErrorKind::Connect, "unusable URL"))?;
        let method = request.method().clone();
        let encoded = encode_request(request)
            .map_err(|e| TransportError::new(TransportErrorKind::Connect, e.to_string()))?;
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
        let stream = tokio::time::timeout(self.settings.timeouts.connect, self.connect(&origin))
            .await
            .map_err(|_| TransportError::new(TransportErrorKind::Connect, "connect timed out"))??;
        self.exchange(stream, &origin, &method, &encoded, false)
            .await
            .map_err(|failure| failure.error)
    }

    async fn connect(&self, origin: &Origin) -> Result<Stream, TransportError> {
        let connect_error =
            |e: io::Error| TransportError::new(TransportErrorKind::Connect, e.to_string());
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
        let tls =
            self.tls.connect(name, tcp).await.map_err(|e| {
                TransportError::new(TransportErrorKind::Connect, format!("TLS: {e}"))
            })?;
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
        let result = tokio::time::timeout(read_timeout, async {
            let written = write_request(&mut stream, encoded).await;
            let mut reader = ResponseReader::new(self.settings.limits.clone(), method);
            match written {
                Ok(()) => {}
                // A server that answers early (e.g. 413) and closes is still heard.
                Err(WriteError::Socket(error)) => {
                    tracing::debug!(%error, "request write failed");
                }
                // The body cannot be completed: the request on the wire is broken, so the
                // connection is dropped (never pooled) and nothing is read from it.
                Err(WriteError::File(error)) => {
                    return Err(SendFailure {
                        error: TransportError::new(
                            TransportErrorKind::Io,
                            format!("could not stream a request file: {error}"),
                        ),
                        stale: false,
                    });
                }
            }
            loop {
                match reader.poll_response() {
                    Ok(Some(response)) => return Ok((response, reader.keep_alive())),
                    Ok(None) => {}
                    Err(error) => return Err(SendFailure::response(error, reused)),
                }
                match stream.read_buf(reader.receive_buffer()).await {
                    Ok(0) => reader.receive_eof(),
                    Ok(_) => reader.received(),
                    Err(error) => return Err(SendFailure::io(&error, reused)),
                }
            }
        })
        .await;
        match result {
            Ok(Ok((response, keep_alive))) => {
                if keep_alive && !encoded.close {
                    lock(&self.pool).put(origin.clone(), stream, Instant::now());
                }
                Ok(response)
            }
            Ok(Err(failure)) => Err(failure),
            Err(_) => Err(SendFailure::timeout(read_timeout)),
        }
    }
}

/// Why a request could not be written.
enum WriteError {
    /// The socket failed.
    Socket(io::Error),
    /// A file of the body could not be read, or did not have its declared length.
    File(io::Error),
}

impl From<io::Error> for WriteError {
    fn from(error: io::Error) -> Self {
        Self::Socket(error)
    }
}

/// Writes the request, streaming the body's files from disk a chunk at a time (read on
/// the blocking pool, [`glue::FILE_CHUNK`](crate::glue::FILE_CHUNK) bytes each, a couple
/// of chunks ahead of the socket) so a file is never held whole.
async fn write_request(stream: &mut Stream, encoded: &EncodedRequest) -> Result<(), WriteError> {
    stream.write_all(&encoded.head).await?;
    for segment in &encoded.body {
        match segment {
            Segment::Bytes(bytes) => {
                for piece in encoded.framing.frame(bytes.clone()) {
                    stream.write_all(&piece).await?;
                }
            }
            Segment::File { source, .. } => {
                let (path, declared) = match source {
                    FileSource::Path { path, len } => (path.clone(), *len),
                    FileSource::Later { .. } => {
                        return Err(WriteError::File(io::Error::other(
                            "yuyo-tokio has no source for FileSource::Later files",
                        )));
                    }
                };
                let (tx, mut chunks) = tokio::sync::mpsc::channel(2);
                drop(tokio::task::spawn_blocking(move || {
                    crate::glue::read_file_chunks(&path, &tx);
                }));
                let mut supplied: u64 = 0;
                while let Some(chunk) = chunks.recv().await {
                    let chunk = chunk.map_err(WriteError::File)?;
                    supplied += chunk.len() as u64;
                    if declared.is_some_and(|declared| supplied > declared) {
                        break;
                    }
                    for piece in encoded.framing.frame(chunk) {
                        stream.write_all(&piece).await?;
                    }
                }
                if let Some(declared) = declared
                    && declared != supplied
                {
                    return Err(WriteError::File(io::Error::other(format!(
                        "request file does not have its declared length of {declared} bytes"
                    ))));
                }
            }
        }
    }
    if let Some(end) = encoded.framing.end() {
        stream.write_all(&end).await?;
    }
    stream.flush().await?;
    Ok(())
}

struct Shared {
    rest: Rest,
    limiter: Mutex<RateLimiter>,
    /// The highest limiter version reported after an answer (wakes `Pending` waits).
    changed: watch::Sender<u64>,
    transport: Transport,
}

/// A rate-limited Discord REST client on tokio. Cheap to clone; clones share the
/// rate limiter and the connection pool.
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
                changed: watch::Sender::new(0),
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
        let mut changes = shared.changed.subscribe();
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
                    shared.changed.send_if_modified(|current| {
                        let newer = version > *current;
                        if newer {
                            *current = version;
                        }
                        newer
                    });
                }
                Step::Wait(wait) if wait.wakes_on_update() => {
                    let sleep = tokio::time::sleep_until(wait.until.into());
                    tokio::select! {
                        () = sleep => {}
                        _ = changes.wait_for(|&current| current > version) => {}
                    }
                }
                Step::Wait(wait) => tokio::time::sleep_until(wait.until.into()).await,
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
