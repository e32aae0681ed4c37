//! What every REST transport shares, still sans-IO: HTTP and proxy settings, TLS client
//! configuration (`rustls`, webpki roots or a custom root store), the proxy `CONNECT`
//! handshake, the keep-alive pool's bookkeeping and how a failed exchange is classified.
//!
//! The adapters (`yuyo-tokio`, `yuyo-smol`, `yuyo-blocking`) only open sockets, move
//! bytes, keep the pooled sockets and wait; they re-export these types from their own
//! `rest` modules. Needs the `transport` feature.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use super::error::{TransportError, TransportErrorKind, TransportSetupError};

mod exchange;
#[cfg(test)]
mod exchange_tests;
mod link;

use crate::http1::client::{ClientLimits, ResponseError, ResponseReader, encode_connect};
pub(crate) use exchange::{Exchange, Pooled};
pub use exchange::{Input, Io};

pub use rustls;

/// Timeouts of the REST transport (hikari's `HTTPTimeoutSettings`), each per attempt:
/// a retried request gets them afresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect, proxy `CONNECT` and TLS handshake together.
    pub connect: Duration,
    /// The longest time without progress (a byte written or read) once the request is
    /// being written.
    pub read: Duration,
    /// From the request being written to the response being complete.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            read: Duration::from_secs(15),
            total: Duration::from_secs(30),
        }
    }
}

impl Timeouts {
    /// Timeouts with `read` as both the idle and the total limit (what `read` meant
    /// before `total` existed).
    #[must_use]
    pub fn new(connect: Duration, read: Duration) -> Self {
        Self {
            connect,
            read,
            total: read,
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

impl TlsVerification {
    /// The `rustls` client configuration (ring provider, safe default versions).
    ///
    /// # Errors
    /// [`TransportSetupError`] when `rustls` refuses the configuration.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, TransportSetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TransportSetupError::new(e.to_string()))?;
        let config = match self {
            Self::WebPkiRoots => builder
                .with_root_certificates(rustls::RootCertStore::from_iter(
                    webpki_roots::TLS_SERVER_ROOTS.iter().cloned(),
                ))
                .with_no_client_auth(),
            Self::Roots(roots) => builder
                .with_root_certificates(Arc::clone(roots))
                .with_no_client_auth(),
            Self::Disabled => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
                .with_no_client_auth(),
        };
        Ok(Arc::new(config))
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

/// The transport's configuration: HTTP settings, proxy and the TLS client
/// configuration built from them once. Cheap to clone.
#[derive(Clone)]
pub struct Transport {
    pub(crate) settings: HttpSettings,
    pub(crate) proxy: Option<ProxySettings>,
    pub(crate) tls: Arc<rustls::ClientConfig>,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("settings", &self.settings)
            .field("proxy", &self.proxy)
            .finish_non_exhaustive()
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
        let tls = settings.tls.client_config()?;
        Ok(Self {
            settings,
            proxy,
            tls,
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
        // Header values (credentials) are never shown.
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
            host: authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
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

/// Where a connection goes: the pool's key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// `https`.
    pub tls: bool,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port (443 / 80 by default).
    pub port: u16,
}

impl Origin {
    /// The origin of an `http`/`https` URI.
    #[must_use]
    pub fn from_uri(uri: &http::Uri) -> Option<Self> {
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
        Some(Self { tls, host, port })
    }

    /// `host:port` as in `CONNECT` (IPv6 in brackets).
    #[must_use]
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The name the TLS handshake checks.
    ///
    /// # Errors
    /// A [`TransportErrorKind::Connect`] error for a host that is no DNS name or IP.
    pub fn server_name(&self) -> Result<ServerName<'static>, TransportError> {
        ServerName::try_from(self.host.clone())
            .map_err(|e| TransportError::new(TransportErrorKind::Connect, e.to_string()))
    }
}

/// The proxy `CONNECT` handshake: the head to write, then the proxy's answer fed in
/// until [`ConnectHandshake::poll`] says the tunnel is up.
#[derive(Debug)]
pub struct ConnectHandshake {
    reader: Option<ResponseReader>,
}

fn proxy_error(message: impl fmt::Display) -> TransportError {
    TransportError::new(TransportErrorKind::Connect, format!("proxy: {message}"))
}

impl ConnectHandshake {
    /// The handshake for a tunnel to `target`, and the request head to write.
    #[must_use]
    pub fn new(proxy: &ProxySettings, target: &Origin, limits: ClientLimits) -> (Self, Bytes) {
        let head = encode_connect(&target.authority(), proxy.headers.iter());
        let reader = ResponseReader::new(limits, &Method::CONNECT);
        (
            Self {
                reader: Some(reader),
            },
            head,
        )
    }

    /// Feeds bytes read from the proxy.
    pub fn receive(&mut self, data: &[u8]) {
        if let Some(reader) = &mut self.reader {
            reader.receive(data);
        }
    }

    /// Feeds the end of the proxy's stream.
    pub fn receive_eof(&mut self) {
        if let Some(reader) = &mut self.reader {
            reader.receive_eof();
        }
    }

    /// `Ok(true)` once the tunnel is established, `Ok(false)` while more bytes are
    /// needed.
    ///
    /// # Errors
    /// A [`TransportErrorKind::Connect`] error: a bad or refusing answer (not 2xx), or
    /// bytes sent before the tunnel was used.
    pub fn poll(&mut self) -> Result<bool, TransportError> {
        let Some(reader) = &mut self.reader else {
            return Ok(true);
        };
        let response = match reader.poll_response() {
            Ok(Some(response)) => response,
            Ok(None) => return Ok(false),
            Err(error) => return Err(proxy_error(error)),
        };
        if !response.status().is_success() {
            return Err(proxy_error(format!("answered {}", response.status())));
        }
        let remaining = self.reader.take().map(ResponseReader::into_remaining);
        if remaining.is_some_and(|rest| !rest.is_empty()) {
            return Err(proxy_error("bytes sent before the tunnel was used"));
        }
        Ok(true)
    }

    /// A read or write on the way to the proxy failed.
    #[must_use]
    pub fn io_error(error: &io::Error) -> TransportError {
        proxy_error(error)
    }
}

struct Idle<S> {
    stream: S,
    since: Instant,
}

/// The keep-alive pool's bookkeeping: which idle connections may still be used. The
/// adapter stores its sockets here and says whether one is still alive.
pub struct Pool<S> {
    idle: HashMap<Origin, Vec<Idle<S>>>,
    max_idle_per_host: usize,
    idle_timeout: Duration,
}

impl<S> fmt::Debug for Pool<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("idle", &self.len())
            .field("max_idle_per_host", &self.max_idle_per_host)
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

impl<S> Pool<S> {
    /// An empty pool following `settings`.
    #[must_use]
    pub fn new(settings: &HttpSettings) -> Self {
        Self {
            idle: HashMap::new(),
            max_idle_per_host: settings.max_idle_per_host,
            idle_timeout: settings.idle_timeout,
        }
    }

    /// The most recently used idle connection to `origin` that is younger than the
    /// idle timeout and that `is_alive` accepts; the others tried are dropped.
    pub fn take(
        &mut self,
        origin: &Origin,
        now: Instant,
        mut is_alive: impl FnMut(&S) -> bool,
    ) -> Option<S> {
        let idle = self.idle.get_mut(origin)?;
        while let Some(entry) = idle.pop() {
            if now.saturating_duration_since(entry.since) < self.idle_timeout
                && is_alive(&entry.stream)
            {
                return Some(entry.stream);
            }
        }
        None
    }

    /// Keeps `stream` for reuse, unless the pool for `origin` is full (or disabled).
    pub fn put(&mut self, origin: Origin, stream: S, now: Instant) {
        if self.max_idle_per_host == 0 {
            return;
        }
        let timeout = self.idle_timeout;
        let idle = self.idle.entry(origin).or_default();
        idle.retain(|entry| now.saturating_duration_since(entry.since) < timeout);
        if idle.len() < self.max_idle_per_host {
            idle.push(Idle { stream, since: now });
        }
    }

    /// Idle connections held (all origins).
    #[must_use]
    pub fn len(&self) -> usize {
        self.idle.values().map(Vec::len).sum()
    }

    /// Whether no idle connection is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every idle connection.
    pub fn clear(&mut self) {
        self.idle.clear();
    }
}

/// A failure while sending one request on one connection.
#[derive(Debug, Clone)]
pub struct SendFailure {
    /// What is reported to the call.
    pub error: TransportError,
    /// A reused connection failed before any byte of an answer: the server had closed
    /// it, so the request may be sent again on a fresh one.
    pub stale: bool,
}

impl SendFailure {
    /// The response could not be read (`reused`: the connection came from the pool).
    #[must_use]
    pub fn response(error: ResponseError, reused: bool) -> Self {
        match error {
            ResponseError::IncompleteHead {
                received_any: false,
            } => Self {
                error: TransportError::new(
                    TransportErrorKind::Io,
                    "connection closed before any response",
                ),
                stale: reused,
            },
            other => Self {
                error: TransportError::new(TransportErrorKind::Io, other.to_string()),
                stale: false,
            },
        }
    }

    /// Reading the socket failed.
    #[must_use]
    pub fn io(error: &io::Error, reused: bool) -> Self {
        Self {
            error: TransportError::new(TransportErrorKind::Io, error.to_string()),
            stale: reused && error.kind() == io::ErrorKind::ConnectionReset,
        }
    }

    /// No complete answer within the read timeout.
    #[must_use]
    pub fn timeout(read_timeout: Duration) -> Self {
        Self {
            error: TransportError::new(
                TransportErrorKind::Timeout,
                format!("no complete answer within {read_timeout:?}"),
            ),
            stale: false,
        }
    }

    /// Whether to send the request again on a fresh connection after a stale pooled one
    /// failed: a request that may be repeated, or one not written whole (`sent_whole`
    /// false), which the server cannot have acted on. A POST written whole may have
    /// reached Discord: the call decides.
    #[must_use]
    pub fn resend_on_fresh(&self, method: &Method, sent_whole: bool) -> bool {
        self.stale && (method.is_idempotent() || !sent_whole)
    }
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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

    fn origin() -> Origin {
        Origin::from_uri(&"https://[::1]/api".parse().unwrap()).unwrap()
    }

    #[test]
    fn origin_defaults_and_authority() {
        let origin = origin();
        assert_eq!(origin.port, 443);
        assert_eq!(origin.authority(), "[::1]:443");
        assert!(Origin::from_uri(&"ftp://x/".parse().unwrap()).is_none());
    }

    #[test]
    fn pool_expires_caps_and_checks_liveness() {
        let settings = HttpSettings {
            max_idle_per_host: 2,
            idle_timeout: Duration::from_secs(10),
            ..HttpSettings::default()
        };
        let mut pool = Pool::new(&settings);
        let start = Instant::now();
        for n in 0..3 {
            pool.put(origin(), n, start);
        }
        assert_eq!(pool.len(), 2);
        // The newest alive one first; a dead one is dropped.
        assert_eq!(pool.take(&origin(), start, |&n| n != 1), Some(0));
        assert!(pool.is_empty());
        pool.put(origin(), 7, start);
        assert_eq!(
            pool.take(&origin(), start + Duration::from_secs(10), |_| true),
            None
        );
        let disabled = HttpSettings {
            max_idle_per_host: 0,
            ..HttpSettings::default()
        };
        let mut pool = Pool::new(&disabled);
        pool.put(origin(), 1, start);
        assert!(pool.is_empty());
    }

    #[test]
    fn connect_handshake() {
        let proxy = ProxySettings::new("http://proxy:3128")
            .unwrap()
            .with_basic_auth("user", "pass");
        assert!(!format!("{proxy:?}").contains("dXNlcjpwYXNz"));
        let (mut handshake, head) =
            ConnectHandshake::new(&proxy, &origin(), ClientLimits::default());
        let head = String::from_utf8(head.to_vec()).unwrap();
        assert!(head.starts_with("CONNECT [::1]:443 HTTP/1.1\r\n"), "{head}");
        assert!(head.contains("proxy-authorization: Basic dXNlcjpwYXNz\r\n"));
        assert!(!handshake.poll().unwrap());
        handshake.receive(b"HTTP/1.1 200 Connection established\r\n\r\n");
        assert!(handshake.poll().unwrap());

        let (mut refused, _) = ConnectHandshake::new(&proxy, &origin(), ClientLimits::default());
        refused.receive(b"HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n");
        assert!(refused.poll().unwrap_err().message.contains("407"));

        let (mut early, _) = ConnectHandshake::new(&proxy, &origin(), ClientLimits::default());
        early.receive(b"HTTP/1.1 200 OK\r\n\r\nHTTP/1.1");
        assert!(early.poll().is_err());
    }

    #[test]
    fn stale_failures_resend_only_idempotent_requests() {
        let stale = SendFailure::response(
            ResponseError::IncompleteHead {
                received_any: false,
            },
            true,
        );
        assert!(stale.resend_on_fresh(&Method::GET, true));
        assert!(!stale.resend_on_fresh(&Method::POST, true));
        // A POST cut short cannot have been acted on.
        assert!(stale.resend_on_fresh(&Method::POST, false));
        let fresh = SendFailure::response(
            ResponseError::IncompleteHead {
                received_any: false,
            },
            false,
        );
        assert!(!fresh.resend_on_fresh(&Method::GET, false));
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert!(SendFailure::io(&reset, true).stale);
        assert!(!SendFailure::io(&io::Error::other("x"), true).stale);
    }
}
