//! The REST client on std threads: the sans-IO [`yuyo_core::rest`] rules driven over a
//! blocking `std::net::TcpStream` (+ `rustls::StreamOwned`, webpki roots), with
//! keep-alive connection reuse, connect/read timeouts (socket timeouts set from the
//! remaining time) and HTTP proxies (`CONNECT`, optional basic auth).
//!
//! Every HTTP/1.1 byte is produced and parsed by [`yuyo_core::http1::client`]; settings,
//! TLS configuration, the proxy handshake and the pool's rules come from
//! [`yuyo_core::rest::transport`]. This module only moves bytes, waits and keeps
//! connections. A call blocks the calling thread, also through rate-limit waits.
//!
//! ```no_run
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use yuyo_core::rest::{RestConfig, RestRequest};
//! let config = RestConfig::builder().token("…").build()?;
//! let client = yuyo_blocking::rest::RestClient::new(config, Default::default(), None)?;
//! let application = client.call(RestRequest::fetch_application())?.model()?;
//! # drop(application);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
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

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A byte stream: plain TCP or TLS over TCP.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(stream) => stream,
            Self::Tls(stream) => &stream.sock,
        }
    }

    /// Whether an idle pooled connection can carry another request: the peer has not
    /// closed it and sent nothing unasked.
    fn is_reusable(&self) -> bool {
        let tcp = self.tcp();
        if tcp.set_nonblocking(true).is_err() {
            return false;
        }
        let idle = matches!(
            tcp.peek(&mut [0_u8; 1]),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock
        );
        tcp.set_nonblocking(false).is_ok() && idle
    }

    /// Socket timeouts for the time left until `deadline`; `false` when it passed.
    fn limit_to(&self, deadline: Instant) -> bool {
        let Some(left) = remaining(deadline) else {
            return false;
        };
        let tcp = self.tcp();
        tcp.set_read_timeout(Some(left)).is_ok() && tcp.set_write_timeout(Some(left)).is_ok()
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
            Self::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.write(buf),
            Self::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(s) => s.flush(),
            Self::Tls(s) => s.flush(),
        }
    }
}

/// The time left until `deadline`, `None` once it passed.
fn remaining(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|left| !left.is_zero())
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The HTTP/1.1 transport: connections, TLS, proxy, keep-alive pool.
pub struct Transport {
    settings: HttpSettings,
    proxy: Option<ProxySettings>,
    tls: Arc<rustls::ClientConfig>,
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
        let tls = settings.tls.client_config()?;
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

    /// Sends `request` and reads the whole answer, blocking. `Connect` errors mean
    /// nothing was sent; `Timeout` and `Io` that something may have been.
    ///
    /// # Errors
    /// [`TransportError`] as above.
    pub fn send(
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
            match self.exchange(stream, &origin, &method, &encoded, true) {
                Ok(response) => return Ok(response),
                Err(failure) if failure.resend_on_fresh(&method) => {
                    tracing::debug!("pooled connection was closed; reconnecting");
                }
                Err(failure) => return Err(failure.error),
            }
        }
        let stream = self.connect(&origin)?;
        self.exchange(stream, &origin, &method, &encoded, false)
            .map_err(|failure| failure.error)
    }

    /// TCP connect, proxy tunnel and TLS handshake, within the connect timeout.
    fn connect(&self, origin: &Origin) -> Result<Stream, TransportError> {
        let deadline = Instant::now() + self.settings.timeouts.connect;
        let tcp = match &self.proxy {
            None => open(&origin.host, origin.port, deadline)?,
            Some(proxy) => {
                let mut tcp = open(proxy.host(), proxy.port(), deadline)?;
                self.tunnel(&mut tcp, proxy, origin)?;
                tcp
            }
        };
        let _ = tcp.set_nodelay(true);
        if !origin.tls {
            return Ok(Stream::Plain(tcp));
        }
        let name = origin.server_name()?;
        let mut tls = rustls::ClientConnection::new(Arc::clone(&self.tls), name)
            .map_err(|e| connect_error(format!("TLS: {e}")))?;
        let mut tcp = tcp;
        while tls.is_handshaking() {
            tls.complete_io(&mut tcp).map_err(|e| {
                if is_timeout(&e) {
                    connect_error("TLS: handshake timed out")
                } else {
                    connect_error(format!("TLS: {e}"))
                }
            })?;
        }
        Ok(Stream::Tls(Box::new(rustls::StreamOwned::new(tls, tcp))))
    }

    /// `CONNECT host:port` through the proxy (socket timeouts already set).
    fn tunnel(
        &self,
        tcp: &mut TcpStream,
        proxy: &ProxySettings,
        origin: &Origin,
    ) -> Result<(), TransportError> {
        let (mut handshake, head) =
            ConnectHandshake::new(proxy, origin, self.settings.limits.clone());
        tcp.write_all(&head)
            .map_err(|e| ConnectHandshake::io_error(&e))?;
        let mut buf = [0_u8; 1024];
        while !handshake.poll()? {
            match tcp.read(&mut buf) {
                Ok(0) => handshake.receive_eof(),
                Ok(n) => handshake.receive(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ConnectHandshake::io_error(&e)),
            }
        }
        Ok(())
    }

    fn exchange(
        &self,
        mut stream: Stream,
        origin: &Origin,
        method: &Method,
        encoded: &EncodedRequest,
        reused: bool,
    ) -> Result<http::Response<Bytes>, SendFailure> {
        let read_timeout = self.settings.timeouts.read;
        let deadline = Instant::now() + read_timeout;
        if !stream.limit_to(deadline) {
            return Err(SendFailure::timeout(read_timeout));
        }
        if let Err(error) = write_request(&mut stream, encoded) {
            // A server that answers early (e.g. 413) and closes is still heard.
            tracing::debug!(%error, "request write failed");
        }
        let mut reader = ResponseReader::new(self.settings.limits.clone(), method);
        let mut buf = vec![0_u8; READ_SIZE];
        let response = loop {
            match reader.poll_response() {
                Ok(Some(response)) => break response,
                Ok(None) => {}
                Err(error) => return Err(SendFailure::response(error, reused)),
            }
            if !stream.limit_to(deadline) {
                return Err(SendFailure::timeout(read_timeout));
            }
            match stream.read(&mut buf) {
                Ok(0) => reader.receive_eof(),
                Ok(n) => reader.receive(&buf[..n]),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) if is_timeout(&error) => {
                    return Err(SendFailure::timeout(read_timeout));
                }
                Err(error) => return Err(SendFailure::io(&error, reused)),
            }
        };
        if reader.keep_alive() && !encoded.close {
            lock(&self.pool).put(origin.clone(), stream, Instant::now());
        }
        Ok(response)
    }
}

/// A TCP connection to `host:port`, trying each address until `deadline`; its socket
/// timeouts are set to the time left (for the proxy and TLS handshakes).
fn open(host: &str, port: u16, deadline: Instant) -> Result<TcpStream, TransportError> {
    let addrs = (host, port).to_socket_addrs().map_err(connect_error)?;
    let mut last = connect_error("no address");
    for addr in addrs {
        let Some(left) = remaining(deadline) else {
            return Err(connect_error("connect timed out"));
        };
        match TcpStream::connect_timeout(&addr, left) {
            Ok(tcp) => {
                let left = remaining(deadline).ok_or_else(|| connect_error("connect timed out"))?;
                tcp.set_read_timeout(Some(left)).map_err(connect_error)?;
                tcp.set_write_timeout(Some(left)).map_err(connect_error)?;
                return Ok(tcp);
            }
            Err(error) if is_timeout(&error) => last = connect_error("connect timed out"),
            Err(error) => last = connect_error(error),
        }
    }
    Err(last)
}

fn write_request(stream: &mut Stream, encoded: &EncodedRequest) -> io::Result<()> {
    stream.write_all(&encoded.head)?;
    for segment in &encoded.body {
        let data = match segment {
            Segment::Bytes(bytes) => bytes.clone(),
            Segment::File { source, .. } => read_source(source)?,
        };
        for piece in encoded.framing.frame(data) {
            stream.write_all(&piece)?;
        }
    }
    if let Some(end) = encoded.framing.end() {
        stream.write_all(&end)?;
    }
    stream.flush()
}

fn read_source(source: &FileSource) -> io::Result<Bytes> {
    match source {
        FileSource::Path { path, .. } => std::fs::read(path).map(Bytes::from),
        FileSource::Later { .. } => Err(io::Error::other(
            "yuyo-blocking has no source for FileSource::Later files",
        )),
    }
}

struct Shared {
    rest: Rest,
    limiter: Mutex<RateLimiter>,
    /// The highest limiter version reported after an answer (wakes `Pending` waits).
    latest: Mutex<u64>,
    changed: Condvar,
    transport: Transport,
}

/// A rate-limited Discord REST client on std threads. Cheap to clone; clones share the
/// rate limiter and the connection pool, and may be used from many threads at once.
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
                latest: Mutex::new(0),
                changed: Condvar::new(),
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

    /// Runs `f` with the rate limiter locked.
    pub fn with_limiter<R>(&self, f: impl FnOnce(&mut RateLimiter) -> R) -> R {
        f(&mut lock(&self.shared.limiter))
    }

    /// Sends `request`, waiting out rate limits and retrying as the core decides;
    /// blocks the calling thread.
    ///
    /// # Errors
    /// [`RestError`] as decided by [`yuyo_core::rest::Call`].
    pub fn call<T>(&self, request: RestRequest<T>) -> Result<Response<T>, RestError> {
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
                    let outcome = shared.transport.send(request);
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
                    let mut latest = lock(&shared.latest);
                    if version > *latest {
                        *latest = version;
                        shared.changed.notify_all();
                    }
                }
                Step::Wait(wait) if wait.wakes_on_update() => {
                    // Until `until`, or until another call's answer changed the limiter.
                    let mut latest = lock(&shared.latest);
                    while *latest <= version {
                        let Some(left) = remaining(wait.until) else {
                            break;
                        };
                        latest = shared
                            .changed
                            .wait_timeout(latest, left)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0;
                    }
                }
                Step::Wait(wait) => {
                    // The core asked to wait (a rate limit or a backoff): time must pass.
                    if let Some(left) = remaining(wait.until) {
                        std::thread::sleep(left);
                    }
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
    pub fn request(
        &self,
        method: Method,
        path: &str,
        body: RequestBody,
    ) -> Result<Response<serde_json::Value>, RequestError> {
        let route = Route::custom(method, path).map_err(RequestError::InvalidPath)?;
        self.call(RestRequest::new(route, body))
            .map_err(RequestError::Rest)
    }
}
