//! The REST client on tokio: the sans-IO [`yuyo_core::rest`] rules driven over
//! TCP + TLS (`rustls`, webpki roots), with keep-alive connection reuse, timeouts and
//! HTTP proxies (`CONNECT`, optional basic auth).
//!
//! Every HTTP/1.1 byte is produced and parsed by [`yuyo_core::http1::client`]; this
//! module only moves bytes, waits and keeps connections.
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

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use yuyo_core::http1::client::{
    ClientLimits, EncodedRequest, ResponseError, ResponseReader, encode_connect, encode_request,
};
use yuyo_core::multipart::{FileSource, Segment};
use yuyo_core::rest::{
    InvalidPath, RateLimiter, RequestBody, Response, Rest, RestConfig, RestError, RestRequest,
    Route, Step, TransportError, TransportErrorKind,
};

/// Timeouts of the REST transport (hikari's `HTTPTimeoutSettings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect, proxy `CONNECT` and TLS handshake together.
    pub connect: Duration,
    /// From the request being written to the response being complete.
    pub read: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            read: Duration::from_secs(30),
        }
    }
}

/// How certificates are verified (yuyo/hikari's `http_settings.ssl`).
#[derive(Clone, Default)]
pub enum TlsVerification {
    /// Against the Mozilla roots shipped in `webpki-roots` (the default).
    #[default]
    WebPkiRoots,
    /// Against these roots only (e.g. a test CA).
    Roots(Arc<rustls::RootCertStore>),
    /// Not at all: any certificate is accepted. Only for debugging.
    Disabled,
}

impl fmt::Debug for TlsVerification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WebPkiRoots => f.write_str("WebPkiRoots"),
            Self::Roots(roots) => write!(f, "Roots({} certificates)", roots.len()),
            Self::Disabled => f.write_str("Disabled"),
        }
    }
}

/// HTTP settings of the REST transport (yuyo's `http_settings`).
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Connect and read timeouts.
    pub timeouts: Timeouts,
    /// Certificate verification.
    pub tls: TlsVerification,
    /// Idle keep-alive connections kept per host (0: never reuse, hikari's
    /// `force_close_transports`).
    pub max_idle_per_host: usize,
    /// How long an idle connection is kept.
    pub idle_timeout: Duration,
    /// Limits on responses.
    pub limits: ClientLimits,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            timeouts: Timeouts::default(),
            tls: TlsVerification::default(),
            max_idle_per_host: 4,
            idle_timeout: Duration::from_secs(60),
            limits: ClientLimits::default(),
        }
    }
}

/// An HTTP proxy reached with `CONNECT` (yuyo's `proxy_settings`).
#[derive(Clone)]
pub struct ProxySettings {
    host: String,
    port: u16,
    headers: HeaderMap,
}

impl fmt::Debug for ProxySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxySettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A proxy URL that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidProxy(pub String);

impl fmt::Display for InvalidProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid proxy: {}", self.0)
    }
}

impl std::error::Error for InvalidProxy {}

impl ProxySettings {
    /// A proxy at `url` (`http://host:port`, port 80 by default).
    ///
    /// # Errors
    /// [`InvalidProxy`] for anything but an `http` URL with a host.
    pub fn new(url: &str) -> Result<Self, InvalidProxy> {
        let uri: http::Uri = url
            .parse()
            .map_err(|_| InvalidProxy(format!("{url:?} is not a URL")))?;
        if uri.scheme_str() != Some("http") {
            return Err(InvalidProxy("only http:// proxies are supported".into()));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| InvalidProxy("no host".into()))?;
        Ok(Self {
            host: authority.host().to_owned(),
            port: authority.port_u16().unwrap_or(80),
            headers: HeaderMap::new(),
        })
    }

    /// Authenticate with `Proxy-Authorization: Basic …` (hikari's `BasicAuthHeader`).
    #[must_use]
    pub fn with_basic_auth(mut self, username: &str, password: &str) -> Self {
        let encoded = base64(format!("{username}:{password}").as_bytes());
        if let Ok(mut value) = HeaderValue::try_from(format!("Basic {encoded}")) {
            value.set_sensitive(true);
            self.headers
                .insert(http::header::PROXY_AUTHORIZATION, value);
        }
        self
    }

    /// Send these extra fields with `CONNECT` (hikari's `ProxySettings.headers`).
    #[must_use]
    pub fn with_headers(mut self, headers: HeaderMap) -> Self {
        self.headers.extend(headers);
        self
    }

    /// The proxy's host.
    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The proxy's port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }
}

fn base64(input: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(TABLE[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The transport could not be set up.
#[derive(Debug)]
pub struct TransportSetupError(String);

impl fmt::Display for TransportSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot set up the REST transport: {}", self.0)
    }
}

impl std::error::Error for TransportSetupError {}

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

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    tls: bool,
    host: String,
    port: u16,
}

struct Idle {
    stream: Stream,
    since: Instant,
}

/// The HTTP/1.1 transport: connections, TLS, proxy, keep-alive pool.
pub struct Transport {
    settings: HttpSettings,
    proxy: Option<ProxySettings>,
    tls: TlsConnector,
    pool: Mutex<HashMap<PoolKey, Vec<Idle>>>,
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

/// A failure while sending one request.
struct SendFailure {
    error: TransportError,
    /// A reused connection failed before any byte of an answer: the server had
    /// closed it, so the request can be sent again on a fresh one.
    stale: bool,
}

impl SendFailure {
    fn new(kind: TransportErrorKind, message: impl Into<String>) -> Self {
        Self {
            error: TransportError::new(kind, message),
            stale: false,
        }
    }
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
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TransportSetupError(e.to_string()))?;
        let config = match &settings.tls {
            TlsVerification::WebPkiRoots => builder
                .with_root_certificates(rustls::RootCertStore::from_iter(
                    webpki_roots::TLS_SERVER_ROOTS.iter().cloned(),
                ))
                .with_no_client_auth(),
            TlsVerification::Roots(roots) => builder
                .with_root_certificates(Arc::clone(roots))
                .with_no_client_auth(),
            TlsVerification::Disabled => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
                .with_no_client_auth(),
        };
        Ok(Self {
            settings,
            proxy,
            tls: TlsConnector::from(Arc::new(config)),
            pool: Mutex::new(HashMap::new()),
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
        lock(&self.pool).values().map(Vec::len).sum()
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
        let key = pool_key(request.uri())
            .ok_or_else(|| TransportError::new(TransportErrorKind::Connect, "unusable URL"))?;
        let method = request.method().clone();
        let encoded = encode_request(request)
            .map_err(|e| TransportError::new(TransportErrorKind::Connect, e.to_string()))?;
        // One retry on a fresh connection when a pooled one turns out to be closed.
        if let Some(stream) = self.take_idle(&key) {
            match self.exchange(stream, &key, &method, &encoded, true).await {
                Ok(response) => return Ok(response),
                // Only a request that may be repeated is sent again: a POST whose pooled
                // connection died may still have reached Discord (the core then decides).
                Err(failure) if failure.stale && method.is_idempotent() => {
                    tracing::debug!("pooled connection was closed; reconnecting");
                }
                Err(failure) => return Err(failure.error),
            }
        }
        let stream = tokio::time::timeout(self.settings.timeouts.connect, self.connect(&key))
            .await
            .map_err(|_| TransportError::new(TransportErrorKind::Connect, "connect timed out"))??;
        self.exchange(stream, &key, &method, &encoded, false)
            .await
            .map_err(|failure| failure.error)
    }

    fn take_idle(&self, key: &PoolKey) -> Option<Stream> {
        let mut pool = lock(&self.pool);
        let idle = pool.get_mut(key)?;
        while let Some(entry) = idle.pop() {
            if entry.since.elapsed() < self.settings.idle_timeout && entry.stream.is_reusable() {
                return Some(entry.stream);
            }
        }
        None
    }

    fn put_idle(&self, key: PoolKey, stream: Stream) {
        if self.settings.max_idle_per_host == 0 {
            return;
        }
        let mut pool = lock(&self.pool);
        let idle = pool.entry(key).or_default();
        idle.retain(|entry| entry.since.elapsed() < self.settings.idle_timeout);
        if idle.len() < self.settings.max_idle_per_host {
            idle.push(Idle {
                stream,
                since: Instant::now(),
            });
        }
    }

    async fn connect(&self, key: &PoolKey) -> Result<Stream, TransportError> {
        let connect_error =
            |e: io::Error| TransportError::new(TransportErrorKind::Connect, e.to_string());
        let tcp = match &self.proxy {
            None => TcpStream::connect((key.host.as_str(), key.port))
                .await
                .map_err(connect_error)?,
            Some(proxy) => {
                let mut tcp = TcpStream::connect((proxy.host.as_str(), proxy.port))
                    .await
                    .map_err(connect_error)?;
                self.tunnel(&mut tcp, proxy, key).await?;
                tcp
            }
        };
        let _ = tcp.set_nodelay(true);
        if !key.tls {
            return Ok(Stream::Plain(tcp));
        }
        let name = ServerName::try_from(key.host.clone())
            .map_err(|e| TransportError::new(TransportErrorKind::Connect, e.to_string()))?;
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
        key: &PoolKey,
    ) -> Result<(), TransportError> {
        let fail = |message: String| TransportError::new(TransportErrorKind::Connect, message);
        let authority = if key.host.contains(':') {
            format!("[{}]:{}", key.host, key.port)
        } else {
            format!("{}:{}", key.host, key.port)
        };
        let head = encode_connect(&authority, proxy.headers.iter());
        tcp.write_all(&head)
            .await
            .map_err(|e| fail(format!("proxy: {e}")))?;
        let mut reader = ResponseReader::new(self.settings.limits.clone(), &Method::CONNECT);
        let response = loop {
            match reader.poll_response() {
                Ok(Some(response)) => break response,
                Ok(None) => {}
                Err(e) => return Err(fail(format!("proxy: {e}"))),
            }
            match tcp.read_buf(reader.receive_buffer()).await {
                Ok(0) => reader.receive_eof(),
                Ok(_) => reader.received(),
                Err(e) => return Err(fail(format!("proxy: {e}"))),
            }
        };
        if !response.status().is_success() {
            return Err(fail(format!("proxy answered {}", response.status())));
        }
        if !reader.into_remaining().is_empty() {
            return Err(fail("proxy sent bytes before the tunnel was used".into()));
        }
        Ok(())
    }

    async fn exchange(
        &self,
        mut stream: Stream,
        key: &PoolKey,
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
                    return Err(SendFailure::new(
                        TransportErrorKind::Io,
                        format!("could not stream a request file: {error}"),
                    ));
                }
            }
            loop {
                match reader.poll_response() {
                    Ok(Some(response)) => return Ok((response, reader.keep_alive())),
                    Ok(None) => {}
                    Err(ResponseError::IncompleteHead {
                        received_any: false,
                    }) => {
                        return Err(SendFailure {
                            error: TransportError::new(
                                TransportErrorKind::Io,
                                "connection closed before any response",
                            ),
                            stale: reused,
                        });
                    }
                    Err(error) => {
                        return Err(SendFailure::new(TransportErrorKind::Io, error.to_string()));
                    }
                }
                match stream.read_buf(reader.receive_buffer()).await {
                    Ok(0) => reader.receive_eof(),
                    Ok(_) => reader.received(),
                    Err(error) => {
                        return Err(SendFailure {
                            error: TransportError::new(TransportErrorKind::Io, error.to_string()),
                            stale: reused && error.kind() == io::ErrorKind::ConnectionReset,
                        });
                    }
                }
            }
        })
        .await;
        match result {
            Ok(Ok((response, keep_alive))) => {
                if keep_alive && !encoded.close {
                    self.put_idle(key.clone(), stream);
                }
                Ok(response)
            }
            Ok(Err(failure)) => Err(failure),
            Err(_) => Err(SendFailure::new(
                TransportErrorKind::Timeout,
                format!("no complete answer within {read_timeout:?}"),
            )),
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

fn pool_key(uri: &http::Uri) -> Option<PoolKey> {
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return None,
    };
    let authority = uri.authority()?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Some(PoolKey { tls, host, port })
}

/// Accepts any certificate ([`TlsVerification::Disabled`]); signatures are still
/// checked so the handshake itself is sound.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
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

/// Why [`RestClient::request`] failed.
#[derive(Debug, Clone)]
pub enum RequestError {
    /// The path is not usable as a route.
    InvalidPath(InvalidPath),
    /// The call failed.
    Rest(RestError),
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidPath(e) => write!(f, "invalid path: {e}"),
            Self::Rest(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for RequestError {}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_matches_rfc4648() {
        for (input, output) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("user:pass", "dXNlcjpwYXNz"),
        ] {
            assert_eq!(base64(input.as_bytes()), output);
        }
    }
}
