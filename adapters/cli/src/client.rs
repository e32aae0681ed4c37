//! A tiny HTTP/1.1 client over `std::net` for `yuyo check`: http, or https through
//! rustls ([`Tls`]), one request per connection, every step bounded by a deadline (from
//! connecting to the last byte) and a size limit. The bytes on the
//! wire are core's HTTP/1.1 client codec ([`encode_request`], [`ResponseReader`]); this
//! module only moves them over a blocking socket.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, header};
use rustls::{ClientConnection, StreamOwned};
use yuyo_core::http1::client::{ClientLimits, EncodedRequest, ResponseReader, encode_request};
use yuyo_core::multipart::Segment;
use yuyo_core::rest::RequestBody;

use crate::tls::Tls;

/// Connect timeout, and the longest wait for any one read or write.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a whole exchange (request sent, response read) may take once connected.
const EXCHANGE: Duration = Duration::from_secs(30);
/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Most header fields accepted in a response head.
const MAX_HEADERS: usize = 64;
/// Largest response body accepted.
const MAX_BODY: u64 = 1024 * 1024;
/// Bytes asked of the socket per read.
const READ_SIZE: usize = 8 * 1024;

/// Where to send requests, from an `http://` or `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `https`: TLS.
    pub tls: bool,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// The `Host` header value.
    pub authority: String,
    /// Path and query, at least `/`.
    pub path: String,
}

impl Target {
    /// Parses `http(s)://host[:port][/path][?query]`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let lower = url.to_ascii_lowercase();
        let (tls, rest) = if lower.starts_with("https://") {
            (true, &url["https://".len()..])
        } else if lower.starts_with("http://") {
            (false, &url["http://".len()..])
        } else {
            return Err(format!(
                "{url}: expected a URL starting with https:// (or http://)"
            ));
        };
        let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(split);
        let tail = tail.split('#').next().unwrap_or("");
        let path = if tail.starts_with('/') {
            tail.to_owned()
        } else {
            format!("/{tail}")
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("{url}: expected http(s)://host[:port]/path"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{url}: unterminated IPv6 address"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        let port = match port {
            Some(port) => port
                .parse()
                .map_err(|_| format!("{url}: bad port `{port}`"))?,
            None if tls => 443,
            None => 80,
        };
        Ok(Self {
            tls,
            host: host.to_owned(),
            port,
            authority: authority.to_owned(),
            path,
        })
    }
}

/// A response: status and body.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

/// How long and how much: every exchange is bounded by these.
#[derive(Debug, Clone)]
struct Bounds {
    /// Connect timeout per address, and the longest wait for any one read or write.
    io_timeout: Duration,
    /// The whole exchange once connected: sending the request and reading the response.
    exchange: Duration,
    /// Response head and body limits.
    limits: ClientLimits,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            io_timeout: TIMEOUT,
            exchange: EXCHANGE,
            limits: ClientLimits {
                max_head_size: MAX_HEAD,
                max_headers: MAX_HEADERS,
                max_body_size: MAX_BODY,
            },
        }
    }
}

/// One request: method, extra header fields, body.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The method.
    pub method: &'a Method,
    /// Extra header fields.
    pub headers: &'a [(&'a str, &'a str)],
    /// The body (sent with `Content-Length`; none for an empty `GET`).
    pub body: &'a [u8],
}

/// Sends `request` to `target` on a new connection (TLS with `tls` for https), the
/// whole exchange, connecting included, within `within`.
pub fn send(
    target: &Target,
    tls: Option<&Tls>,
    request: Request<'_>,
    within: Duration,
) -> Result<Response, String> {
    let bounds = Bounds {
        io_timeout: TIMEOUT.min(within),
        exchange: within,
        ..Bounds::default()
    };
    exchange(target, tls, request, &bounds)
}

/// A TLS handshake with `target` alone, within `within`: the certificate the server
/// showed, or why the handshake failed.
pub fn handshake(
    target: &Target,
    tls: &Tls,
    within: Duration,
) -> Result<Option<crate::tls::Certificate>, String> {
    let deadline = Instant::now() + within;
    let bounds = Bounds {
        io_timeout: within,
        exchange: within,
        ..Bounds::default()
    };
    let mut tcp = connect(target, time_left(deadline, &bounds)?)?;
    let mut session = tls.connect(&target.host)?;
    while session.is_handshaking() {
        let left = time_left(deadline, &bounds)?;
        tcp.set_read_timeout(Some(left))
            .and_then(|()| tcp.set_write_timeout(Some(left)))
            .map_err(|e| format!("socket setup failed: {e}"))?;
        session.complete_io(&mut tcp).map_err(|e| {
            tls.explain(&e)
                .unwrap_or_else(|| describe(&e, &bounds, deadline))
        })?;
    }
    Ok(tls.last_certificate())
}

/// A connection: a socket, perhaps under TLS.
trait Wire: Read + Write {
    /// The socket, for its timeouts.
    fn socket(&self) -> &TcpStream;
}

impl Wire for TcpStream {
    fn socket(&self) -> &TcpStream {
        self
    }
}

impl Wire for StreamOwned<ClientConnection, TcpStream> {
    fn socket(&self) -> &TcpStream {
        &self.sock
    }
}

/// [`send`] under explicit `bounds`.
fn exchange(
    target: &Target,
    tls: Option<&Tls>,
    request: Request<'_>,
    bounds: &Bounds,
) -> Result<Response, String> {
    let encoded = encode(target, request)?;
    let deadline = Instant::now() + bounds.exchange;
    let tcp = connect(target, time_left(deadline, bounds)?)?;
    let mut stream: Box<dyn Wire> = match (target.tls, tls) {
        (false, _) => Box::new(tcp),
        (true, Some(tls)) => Box::new(StreamOwned::new(tls.connect(&target.host)?, tcp)),
        (true, None) => return Err("https needs a TLS configuration".to_owned()),
    };
    let explain = |e: String, io: Option<&std::io::Error>| {
        io.and_then(|io| tls.and_then(|tls| tls.explain(io)))
            .unwrap_or(e)
    };
    send_request(stream.as_mut(), encoded, bounds, deadline)
        .map_err(|(e, io)| explain(format!("cannot send the request: {e}"), io.as_ref()))?;
    read_response(stream.as_mut(), request.method, bounds, deadline)
        .map_err(|(e, io)| explain(format!("bad or no response: {e}"), io.as_ref()))
}

/// The request, encoded by core's HTTP/1.1 client codec.
fn encode(target: &Target, request: Request<'_>) -> Result<EncodedRequest, String> {
    let scheme = if target.tls { "https" } else { "http" };
    let uri = format!("{scheme}://{}{}", target.authority, target.path);
    let mut builder = http::Request::builder()
        .method(request.method.clone())
        .uri(uri.as_str())
        .header(
            header::USER_AGENT,
            concat!("yuyo-check/", env!("CARGO_PKG_VERSION")),
        )
        .header(header::CONNECTION, "close");
    for (name, value) in request.headers {
        builder = builder.header(*name, *value);
    }
    let body = if request.body.is_empty() && request.method == Method::GET {
        RequestBody::Empty
    } else {
        RequestBody::Json(Bytes::copy_from_slice(request.body))
    };
    let request = builder
        .body(body)
        .map_err(|e| format!("cannot make a request for {uri}: {e}"))?;
    encode_request(request).map_err(|e| format!("cannot make a request for {uri}: {e}"))
}

/// Connects to the first address of `target` that accepts, each within `timeout`.
fn connect(target: &Target, timeout: Duration) -> Result<TcpStream, String> {
    let addrs = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", target.host))?;
    let mut last = format!("{} resolved to no address", target.host);
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = format!("cannot connect to {addr}: {e}"),
        }
    }
    Err(last)
}

/// How long the next read or write may wait: the time left before `deadline`, at most
/// the I/O timeout; an error once the deadline has passed.
fn time_left(deadline: Instant, bounds: &Bounds) -> Result<Duration, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(format!("no complete response within {:?}", bounds.exchange));
    }
    Ok(left.min(bounds.io_timeout))
}

/// A failure: in words, with the socket error when there was one (TLS errors are in it).
type Failure = (String, Option<std::io::Error>);

/// Writes the encoded request (head, framed body, end of body).
fn send_request(
    stream: &mut dyn Wire,
    request: EncodedRequest,
    bounds: &Bounds,
    deadline: Instant,
) -> Result<(), Failure> {
    let mut wire = request.head.to_vec();
    for segment in request.body {
        let Segment::Bytes(bytes) = segment else {
            return Err(("file parts are not supported".to_owned(), None));
        };
        for piece in request.framing.frame(bytes) {
            wire.extend_from_slice(&piece);
        }
    }
    if let Some(end) = request.framing.end() {
        wire.extend_from_slice(&end);
    }
    let timeout = time_left(deadline, bounds).map_err(|e| (e, None))?;
    stream
        .socket()
        .set_write_timeout(Some(timeout))
        .map_err(|e| (format!("socket setup failed: {e}"), None))?;
    stream
        .write_all(&wire)
        .and_then(|()| stream.flush())
        .map_err(|e| (describe(&e, bounds, deadline), Some(e)))
}

/// Reads until core's [`ResponseReader`] has a whole response, or fails.
fn read_response(
    stream: &mut dyn Wire,
    method: &Method,
    bounds: &Bounds,
    deadline: Instant,
) -> Result<Response, Failure> {
    let mut reader = ResponseReader::new(bounds.limits.clone(), method);
    loop {
        if let Some(response) = reader.poll_response().map_err(|e| (e.to_string(), None))? {
            return Ok(Response {
                status: response.status().as_u16(),
                body: Vec::from(response.into_body()),
            });
        }
        let timeout = time_left(deadline, bounds).map_err(|e| (e, None))?;
        stream
            .socket()
            .set_read_timeout(Some(timeout))
            .map_err(|e| (format!("socket setup failed: {e}"), None))?;
        read_some(stream, &mut reader).map_err(|e| (describe(&e, bounds, deadline), Some(e)))?;
    }
}

/// One read from `stream` straight into the reader's buffer (end of stream included).
fn read_some(stream: &mut dyn Wire, reader: &mut ResponseReader) -> std::io::Result<()> {
    let buf = reader.receive_buffer();
    let start = buf.len();
    buf.resize(start + READ_SIZE, 0);
    let read = loop {
        match stream.read(&mut buf[start..]) {
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            other => break other,
        }
    };
    let n = read.as_ref().map_or(0, |n| *n);
    buf.truncate(start + n);
    match read? {
        0 => reader.receive_eof(),
        _ => reader.received(),
    }
    Ok(())
}

/// A socket error in words; timeouts say how long was waited.
fn describe(error: &std::io::Error, bounds: &Bounds, deadline: Instant) -> String {
    match error.kind() {
        // The socket timeout was the time left when that was less than the I/O timeout:
        // then the exchange's deadline is what passed.
        ErrorKind::WouldBlock | ErrorKind::TimedOut
            if deadline.saturating_duration_since(Instant::now()) < bounds.io_timeout =>
        {
            format!("no complete response within {:?}", bounds.exchange)
        }
        ErrorKind::WouldBlock | ErrorKind::TimedOut => {
            format!("timed out (nothing for {:?})", bounds.io_timeout)
        }
        _ => error.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::net::{SocketAddr, TcpListener};
    use std::sync::mpsc;
    use std::thread;

    use super::*;

    /// Bound on any test step: the server waiting for its client, the client's answer.
    const BOUND: Duration = Duration::from_secs(15);

    /// What the test server does after reading the request.
    #[derive(Clone, Copy, PartialEq)]
    enum Then {
        /// Close the connection (end of an until-close body).
        Close,
        /// Keep it open until the client closes it (or `BOUND` passes).
        Linger,
    }

    /// A server on 127.0.0.1 answering one connection with `pieces` (written one by one,
    /// `pause` apart); it sends the request it read on the returned channel.
    fn serve_once(
        pieces: Vec<Vec<u8>>,
        pause: Duration,
        then: Then,
    ) -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let deadline = Instant::now() + BOUND;
            let mut stream = loop {
                match listener.accept() {
                    Ok((stream, _)) => break stream,
                    Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                    Err(_) => return,
                }
            };
            stream.set_nonblocking(false).unwrap();
            stream.set_read_timeout(Some(BOUND)).unwrap();
            stream.set_write_timeout(Some(BOUND)).unwrap();
            let _ = tx.send(read_request(&mut stream));
            for piece in pieces {
                if stream.write_all(&piece).is_err() {
                    return;
                }
                thread::sleep(pause);
            }
            if then == Then::Linger {
                let _ = stream.read(&mut [0; 1]);
            }
        });
        (addr, rx)
    }

    /// Reads a request head and its `content-length` body.
    fn read_request(stream: &mut TcpStream) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    return buf;
                }
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return buf,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// POSTs `{"type":1}` to `addr` under `bounds`, in a thread, waiting at most `BOUND`.
    fn exchange(addr: SocketAddr, bounds: Bounds) -> Result<Response, String> {
        let target = Target::parse(&format!("http://{addr}/interactions?x=1")).unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let request = Request {
                method: &Method::POST,
                headers: &[("Content-Type", "application/json")],
                body: br#"{"type":1}"#,
            };
            let _ = tx.send(super::exchange(&target, None, request, &bounds));
        });
        rx.recv_timeout(BOUND)
            .unwrap_or_else(|_| panic!("no result within {BOUND:?}"))
    }

    /// `wire` as the whole answer, written at once, the connection then left open.
    fn answer(wire: &[u8]) -> Result<Response, String> {
        let (addr, _) = serve_once(vec![wire.to_vec()], Duration::ZERO, Then::Linger);
        exchange(addr, Bounds::default())
    }

    #[test]
    fn sends_the_request_with_core_codec() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{\"type\":1}";
        let (addr, request) = serve_once(vec![wire.to_vec()], Duration::ZERO, Then::Linger);
        let response = exchange(addr, Bounds::default()).unwrap();
        assert_eq!(
            (response.status, &response.body[..]),
            (200, &br#"{"type":1}"#[..])
        );
        let request = String::from_utf8(request.recv_timeout(BOUND).unwrap()).unwrap();
        let expected_start = format!("POST /interactions?x=1 HTTP/1.1\r\nhost: {addr}\r\n");
        assert!(request.starts_with(&expected_start), "{request}");
        for line in [
            concat!("user-agent: yuyo-check/", env!("CARGO_PKG_VERSION")),
            "connection: close",
            "content-type: application/json",
            "content-length: 10",
        ] {
            assert!(
                request.contains(&format!("{line}\r\n")),
                "{line}: {request}"
            );
        }
        assert!(request.ends_with("\r\n\r\n{\"type\":1}"), "{request}");
    }

    #[test]
    fn parses_content_length_and_chunked_responses() {
        let response =
            answer(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 3\r\n\r\nbad").unwrap();
        assert_eq!((response.status, &response.body[..]), (401, &b"bad"[..]));
        let response = answer(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              4\r\n{\"ty\r\n6;ext=1\r\npe\":1}\r\n0\r\nX-Trailer: y\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            (response.status, &response.body[..]),
            (200, &br#"{"type":1}"#[..])
        );
        let response = answer(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        assert_eq!((response.status, response.body.len()), (204, 0));
    }

    #[test]
    fn parses_a_body_split_across_reads_and_ended_by_close() {
        let pieces = [
            &b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"ty"[..],
            b"pe\":1}",
        ];
        let (addr, _) = serve_once(
            pieces.iter().map(|p| p.to_vec()).collect(),
            Duration::from_millis(50),
            Then::Close,
        );
        let response = exchange(addr, Bounds::default()).unwrap();
        assert_eq!(
            (response.status, &response.body[..]),
            (200, &br#"{"type":1}"#[..])
        );
    }

    #[test]
    fn huge_chunk_sizes_are_clean_errors() {
        let error =
            answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nabc")
                .unwrap_err();
        assert_eq!(error, "bad or no response: response body too large");
        // A first chunk, then one that would overflow the running total.
        let error = answer(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\nffffffffffffffff\r\n",
        )
        .unwrap_err();
        assert_eq!(error, "bad or no response: response body too large");
        let error =
            answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\n")
                .unwrap_err();
        assert_eq!(error, "bad or no response: malformed chunked response body");
    }

    #[test]
    fn responses_over_the_limits_are_clean_errors() {
        let too_large = "bad or no response: response body too large";
        // Declared too large.
        let declared = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert_eq!(answer(declared.as_bytes()).unwrap_err(), too_large);
        // Chunks adding up to more than the limit, actually sent.
        let half = usize::try_from(MAX_BODY / 2).unwrap();
        let mut wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..3 {
            wire.extend_from_slice(format!("{half:x}\r\n").as_bytes());
            wire.extend(std::iter::repeat_n(b'x', half));
            wire.extend_from_slice(b"\r\n");
        }
        assert_eq!(answer(&wire).unwrap_err(), too_large);
        // Until close, under a small limit.
        let (addr, _) = serve_once(
            vec![b"HTTP/1.1 200 OK\r\n\r\n".to_vec(), vec![b'x'; 64]],
            Duration::ZERO,
            Then::Close,
        );
        let mut bounds = Bounds::default();
        bounds.limits.max_body_size = 16;
        assert_eq!(exchange(addr, bounds).unwrap_err(), too_large);
        // A head that never ends.
        let mut head = b"HTTP/1.1 200 OK\r\nX-Long: ".to_vec();
        head.extend(std::iter::repeat_n(b'a', MAX_HEAD + 1));
        assert_eq!(
            answer(&head).unwrap_err(),
            "bad or no response: response head too large"
        );
    }

    #[test]
    fn silence_and_drip_feeding_are_bounded() {
        let (addr, _) = serve_once(Vec::new(), Duration::ZERO, Then::Linger);
        let bounds = Bounds {
            io_timeout: Duration::from_millis(200),
            ..Bounds::default()
        };
        let error = exchange(addr, bounds).unwrap_err();
        assert!(
            error.starts_with("bad or no response: timed out"),
            "{error}"
        );
        // Interim responses forever: each read is quick, the exchange is not.
        let drip = vec![b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(); 100];
        let (addr, _) = serve_once(drip, Duration::from_millis(20), Then::Linger);
        let bounds = Bounds {
            exchange: Duration::from_millis(300),
            ..Bounds::default()
        };
        let error = exchange(addr, bounds).unwrap_err();
        assert!(
            error.contains("no complete response within 300ms"),
            "{error}"
        );
    }

    #[test]
    fn a_closed_connection_is_a_clean_error() {
        let (addr, _) = serve_once(Vec::new(), Duration::ZERO, Then::Close);
        let error = exchange(addr, Bounds::default()).unwrap_err();
        assert_eq!(
            error,
            "bad or no response: connection closed before any response"
        );
    }

    #[test]
    fn parses_urls() {
        let t = Target::parse("http://127.0.0.1:8080/interactions?x=1")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1", 8080, "/interactions?x=1")
        );
        let t = Target::parse("http://example.com").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("example.com", 80, "/")
        );
        let t = Target::parse("http://[::1]:9/").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (t.host.as_str(), t.port, t.authority.as_str()),
            ("::1", 9, "[::1]:9")
        );
        let t = Target::parse("https://example.com/i").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((t.tls, t.port, t.path.as_str()), (true, 443, "/i"));
        assert!(Target::parse("ftp://example.com/").is_err());
        assert!(Target::parse("http://h:x/").is_err());
    }
}
