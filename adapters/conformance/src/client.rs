//! A small HTTP/1.1 client over `std::net` for black-box tests: every socket has read and
//! write timeouts ([`IO_TIMEOUT`]), so no test can hang.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use yuyo_core::rest::transport::rustls;

use crate::demo::{DEMO_SECRET_SEED, DEMO_TIMESTAMP, sign};

/// Read and write timeout of every client socket.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A request to send, as header pairs and a body; [`Request::to_bytes`] frames it.
#[derive(Clone, Debug)]
pub struct Request {
    /// The method.
    pub method: String,
    /// The request target.
    pub target: String,
    /// The header fields, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body bytes (sent as they are, after the head).
    pub body: Vec<u8>,
}

impl Request {
    /// A request with `Host` only and no body.
    #[must_use]
    pub fn new(method: &str, target: &str) -> Self {
        Self {
            method: method.to_owned(),
            target: target.to_owned(),
            headers: vec![("Host".to_owned(), b"bot.example.com".to_vec())],
            body: Vec::new(),
        }
    }

    /// `POST /` of `body` with the headers Discord sends, signed with the demo key.
    #[must_use]
    pub fn signed(body: &[u8]) -> Self {
        Self::new("POST", "/")
            .set(
                "User-Agent",
                "Discord-Interactions/1.0 (+https://discord.com)",
            )
            .set("Content-Type", "application/json")
            .set("Content-Length", body.len().to_string())
            .set(
                "X-Signature-Ed25519",
                sign(&DEMO_SECRET_SEED, DEMO_TIMESTAMP, body),
            )
            .set("X-Signature-Timestamp", DEMO_TIMESTAMP)
            .body(body)
    }

    /// Replaces every `name` field with one `value`.
    #[must_use]
    pub fn set(self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.remove(name).add(name, value)
    }

    /// Adds a `name` field.
    #[must_use]
    pub fn add(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.to_owned(), value.as_ref().to_vec()));
        self
    }

    /// Removes every `name` field.
    #[must_use]
    pub fn remove(mut self, name: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    /// Sets the method.
    #[must_use]
    pub fn method(mut self, method: &str) -> Self {
        method.clone_into(&mut self.method);
        self
    }

    /// Sets the request target.
    #[must_use]
    pub fn target(mut self, target: &str) -> Self {
        target.clone_into(&mut self.target);
        self
    }

    /// Sets the body bytes (headers unchanged).
    #[must_use]
    pub fn body(mut self, body: &[u8]) -> Self {
        self.body = body.to_vec();
        self
    }

    /// Sends the body chunked in pieces of `size` bytes instead of with `Content-Length`.
    #[must_use]
    pub fn chunked(self, size: usize) -> Self {
        let mut framed = Vec::new();
        for chunk in self.body.chunks(size.max(1)) {
            framed.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            framed.extend_from_slice(chunk);
            framed.extend_from_slice(b"\r\n");
        }
        framed.extend_from_slice(b"0\r\n\r\n");
        let mut request = self
            .remove("Content-Length")
            .set("Transfer-Encoding", "chunked");
        request.body = framed;
        request
    }

    /// The head only (request line and fields, up to the blank line).
    #[must_use]
    pub fn head_bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.target).into_bytes();
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    /// Head and body, ready to write.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.head_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// A response as read from the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The header fields, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The value of the only `name` field; `None` if absent. Panics if repeated.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        let mut values = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str());
        let value = values.next();
        assert!(values.next().is_none(), "repeated response header {name}");
        value
    }

    /// The body as UTF-8 text (lossy).
    #[must_use]
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON. Panics if it is not JSON.
    #[must_use]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {}", self.text()))
    }

    /// Whether the response asked to close the connection.
    #[must_use]
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// The servers that serve HTTPS, and how to reach them: [`Client::connect`] speaks TLS to
/// them (so the plain-HTTP cases also run over TLS).
static TLS_SERVERS: Mutex<Vec<(SocketAddr, Arc<rustls::ClientConfig>)>> = Mutex::new(Vec::new());

/// Makes [`Client::connect`] to `addr` speak TLS with `config` (`None`: plain again).
pub fn serve_tls_at(addr: SocketAddr, config: Option<Arc<rustls::ClientConfig>>) {
    let mut servers = TLS_SERVERS.lock().unwrap_or_else(PoisonError::into_inner);
    servers.retain(|(at, _)| *at != addr);
    if let Some(config) = config {
        servers.push((addr, config));
    }
}

fn tls_server(addr: SocketAddr) -> Option<Arc<rustls::ClientConfig>> {
    let servers = TLS_SERVERS.lock().unwrap_or_else(PoisonError::into_inner);
    servers
        .iter()
        .find(|(at, _)| *at == addr)
        .map(|(_, config)| Arc::clone(config))
}

/// One client connection with a read-ahead buffer (so pipelined responses can be read
/// one by one).
#[derive(Debug)]
pub struct Client {
    stream: Stream,
    buf: Vec<u8>,
    eof: bool,
}

/// The connection of a [`Client`]: plain TCP, or TLS over TCP.
#[derive(Debug)]
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(tcp) => tcp,
            Self::Tls(tls) => &tls.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(tcp) => tcp.read(buf),
            Self::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(tcp) => tcp.write(buf),
            Self::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(tcp) => tcp.flush(),
            Self::Tls(tls) => tls.flush(),
        }
    }
}

fn protocol_error(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

impl Client {
    /// Connects to `addr` with [`IO_TIMEOUT`] on every read and write: over TLS, its
    /// handshake done, when `addr` serves HTTPS for the suite ([`serve_tls_at`]).
    pub fn connect(addr: SocketAddr) -> io::Result<Self> {
        if let Some(config) = tls_server(addr) {
            let tcp = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
            let name =
                rustls::pki_types::ServerName::try_from("localhost").map_err(io::Error::other)?;
            let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
            let mut client = Self::over_tls(tcp, conn)?;
            client.complete_handshake()?;
            return Ok(client);
        }
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: Stream::Plain(stream),
            buf: Vec::new(),
            eof: false,
        })
    }

    /// A client on an already connected `stream`, with `timeout` on every read and write.
    pub fn from_stream(stream: TcpStream, timeout: Duration) -> io::Result<Self> {
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: Stream::Plain(stream),
            buf: Vec::new(),
            eof: false,
        })
    }

    /// A client speaking TLS with `tls` over an already connected `stream`, with
    /// [`IO_TIMEOUT`] on every read and write. The handshake runs with the first write
    /// or read (see [`Client::complete_handshake`]).
    pub fn over_tls(stream: TcpStream, tls: rustls::ClientConnection) -> io::Result<Self> {
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: Stream::Tls(Box::new(rustls::StreamOwned::new(tls, stream))),
            buf: Vec::new(),
            eof: false,
        })
    }

    /// Runs the TLS handshake to its end (nothing for a plain client).
    pub fn complete_handshake(&mut self) -> io::Result<()> {
        if let Stream::Tls(tls) = &mut self.stream {
            let (conn, sock) = (&mut tls.conn, &mut tls.sock);
            while conn.is_handshaking() {
                conn.complete_io(sock)?;
            }
        }
        Ok(())
    }

    /// The TLS connection's state (negotiated ALPN, the server's certificates), if TLS.
    #[must_use]
    pub fn tls(&self) -> Option<&rustls::ClientConnection> {
        match &self.stream {
            Stream::Plain(_) => None,
            Stream::Tls(tls) => Some(&tls.conn),
        }
    }

    /// Writes all of `bytes`.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// A second handle on the socket, to write from another thread while this one reads.
    pub fn writer(&self) -> io::Result<TcpStream> {
        match &self.stream {
            Stream::Plain(tcp) => tcp.try_clone(),
            Stream::Tls(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a TLS client has no second writer",
            )),
        }
    }

    /// Closes the sending side (the server reads EOF); over TLS, after close_notify.
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        if let Stream::Tls(tls) = &mut self.stream {
            tls.conn.send_close_notify();
            tls.flush()?;
        }
        self.stream.tcp().shutdown(Shutdown::Write)
    }

    /// Sends `request` and reads the (final) response.
    pub fn roundtrip(&mut self, request: &Request) -> io::Result<Response> {
        self.send(&request.to_bytes())?;
        self.response()
    }

    /// Reads more bytes into the buffer; `Ok(false)` at EOF.
    fn fill(&mut self) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        let mut chunk = [0_u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            self.eof = true;
            return Ok(false);
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(true)
    }

    fn fill_or_fail(&mut self, what: &str) -> io::Result<()> {
        if self.fill()? {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("connection closed while reading {what}"),
            ))
        }
    }

    fn take_line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..at].to_vec();
                self.buf.drain(..at + 2);
                return Ok(line);
            }
            self.fill_or_fail("a chunk line")?;
        }
    }

    fn take_exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            self.fill_or_fail("a body")?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Reads the next response, interim (1xx) ones included.
    pub fn next_response(&mut self) -> io::Result<Response> {
        let (status, headers, head_len) = loop {
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut fields);
            match parsed.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = parsed.code.unwrap_or(0);
                    let headers = parsed
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_ascii_lowercase(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect::<Vec<_>>();
                    break (status, headers, len);
                }
                Ok(httparse::Status::Partial) => self.fill_or_fail("a response head")?,
                Err(e) => return Err(protocol_error(format!("bad response head: {e}"))),
            }
        };
        self.buf.drain(..head_len);
        let mut response = Response {
            status,
            headers,
            body: Vec::new(),
        };
        if (100..200).contains(&status) || status == 204 || status == 304 {
            return Ok(response);
        }
        let chunked = response
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        if chunked {
            loop {
                let line = self.take_line()?;
                let size = String::from_utf8_lossy(&line);
                let size = size.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size, 16)
                    .map_err(|_| protocol_error(format!("bad chunk size {size:?}")))?;
                if size == 0 {
                    // Trailers until an empty line.
                    while !self.take_line()?.is_empty() {}
                    break;
                }
                let data = self.take_exact(size)?;
                response.body.extend_from_slice(&data);
                if !self.take_line()?.is_empty() {
                    return Err(protocol_error("chunk not followed by CRLF"));
                }
            }
        } else if let Some(length) = response.header("content-length") {
            let length: usize = length
                .parse()
                .map_err(|_| protocol_error(format!("bad content-length {length:?}")))?;
            response.body = self.take_exact(length)?;
        } else {
            while self.fill()? {}
            response.body = std::mem::take(&mut self.buf);
        }
        Ok(response)
    }

    /// The bytes read past the last response (none once a lone response was read
    /// whole: a server that sent more is answering twice).
    #[must_use]
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Reads the next final response, skipping interim (1xx) ones.
    pub fn response(&mut self) -> io::Result<Response> {
        loop {
            let response = self.next_response()?;
            if !(100..200).contains(&response.status) {
                return Ok(response);
            }
        }
    }

    /// Reads until the server closes the connection, returning what arrived (after what
    /// was already buffered). A reset counts as a close.
    pub fn read_to_close(&mut self) -> io::Result<Vec<u8>> {
        loop {
            match self.fill() {
                Ok(true) => {}
                Ok(false) => return Ok(std::mem::take(&mut self.buf)),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Ok(std::mem::take(&mut self.buf));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits (at most [`IO_TIMEOUT`]) for the server to close the connection without
    /// sending anything more. Panics otherwise.
    pub fn expect_closed(&mut self) {
        match self.read_to_close() {
            Ok(rest) => assert!(
                rest.is_empty(),
                "expected the connection to close, got {:?}",
                String::from_utf8_lossy(&rest)
            ),
            Err(e) => panic!("expected the connection to close: {e}"),
        }
    }
}
