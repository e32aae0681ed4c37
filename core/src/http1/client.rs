//! Sans-IO HTTP/1.1, client side: what a REST transport needs to talk to Discord.
//!
//! It shares its framing code with the server [`Connection`](super::Connection) (as h11
//! does both sides): the same chunked/Content-Length `BodyDecoder` decodes response
//! bodies, under the same limits.
//!
//! - [`encode_request`] turns an `http::Request<RequestBody>` into a head and the body
//!   pieces to write, framed by [`BodyFraming`] (`Content-Length` when the length is
//!   known, chunked otherwise; multipart files are streamed by the driver).
//! - [`encode_connect`] is the head of a proxy `CONNECT` tunnel.
//! - [`ResponseReader`] parses the response head with `httparse`, decodes the body
//!   (Content-Length, chunked or until close) and decides whether the connection can be
//!   reused.
//!
//! ```text
//! let (head, framing, segments) = encode_request(request)?;
//! write head; for each segment write framing.frame(bytes) (files chunk by chunk);
//! write framing.end();
//! let mut reader = ResponseReader::new(limits, &method);
//! loop {
//!     match reader.poll_response()? {
//!         Some(response) => break response,     // reader.keep_alive(): reuse the socket
//!         None => read the socket into reader.receive(bytes) or reader.receive_eof(),
//!     }
//! }
//! ```

use std::fmt;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version, response};

use super::body::{BodyDecoder, Chunk, Decoded};
use super::error::PeerError;
use super::head::MAX_HEADERS_CAP;
use crate::multipart::Segment;
use crate::rest::RequestBody;

/// Limits a client applies to responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientLimits {
    /// Largest response head (status line plus header fields) in bytes.
    pub max_head_size: usize,
    /// Most header fields in a response head. Capped at 256.
    pub max_headers: usize,
    /// Largest response body in bytes, declared or counted.
    pub max_body_size: u64,
}

impl Default for ClientLimits {
    fn default() -> Self {
        Self {
            max_head_size: 64 * 1024,
            max_headers: 128,
            max_body_size: 16 * 1024 * 1024,
        }
    }
}

/// Why a request could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EncodeError {
    /// The URI has no host to send in `Host`.
    MissingHost,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingHost => f.write_str("request URI has no host"),
        }
    }
}

impl std::error::Error for EncodeError {}

/// The response was not acceptable HTTP/1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResponseError {
    /// The status line or a header line is malformed.
    MalformedHead,
    /// The head is longer than [`ClientLimits::max_head_size`].
    HeadTooLarge,
    /// More header fields than [`ClientLimits::max_headers`].
    TooManyHeaders,
    /// A `Content-Length` that is not a number, or repeated with different values.
    InvalidContentLength,
    /// A transfer coding other than `chunked`.
    UnsupportedTransferCoding,
    /// `101 Switching Protocols`, which this client never asks for.
    UnexpectedUpgrade,
    /// The body is longer than [`ClientLimits::max_body_size`].
    BodyTooLarge,
    /// A malformed chunked body.
    InvalidChunk,
    /// Chunked trailers larger than the head limit.
    TrailersTooLarge,
    /// The server closed the connection before the head was complete (a stale
    /// keep-alive connection when nothing was received at all).
    IncompleteHead {
        /// Whether any byte of the response arrived.
        received_any: bool,
    },
    /// The server closed the connection before the body was complete.
    IncompleteBody,
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Self::MalformedHead => "malformed response head",
            Self::HeadTooLarge => "response head too large",
            Self::TooManyHeaders => "too many response header fields",
            Self::InvalidContentLength => "invalid Content-Length in response",
            Self::UnsupportedTransferCoding => "unsupported transfer coding in response",
            Self::UnexpectedUpgrade => "unexpected 101 Switching Protocols",
            Self::BodyTooLarge => "response body too large",
            Self::InvalidChunk => "malformed chunked response body",
            Self::TrailersTooLarge => "response trailers too large",
            Self::IncompleteHead {
                received_any: false,
            } => "connection closed before any response",
            Self::IncompleteHead { received_any: true } => {
                "connection closed in the middle of the response head"
            }
            Self::IncompleteBody => "connection closed in the middle of the response body",
        };
        f.write_str(text)
    }
}

impl std::error::Error for ResponseError {}

impl ResponseError {
    fn from_peer(error: PeerError) -> Self {
        match error {
            PeerError::BodyTooLarge => Self::BodyTooLarge,
            PeerError::TrailersTooLarge => Self::TrailersTooLarge,
            PeerError::InvalidChunk => Self::InvalidChunk,
            PeerError::IncompleteBody => Self::IncompleteBody,
            PeerError::InvalidContentLength => Self::InvalidContentLength,
            PeerError::UnsupportedTransferCoding | PeerError::InvalidTransferEncoding => {
                Self::UnsupportedTransferCoding
            }
            PeerError::HeadTooLarge => Self::HeadTooLarge,
            PeerError::TooManyHeaders => Self::TooManyHeaders,
            PeerError::MalformedHead(_)
            | PeerError::MissingHost
            | PeerError::MultipleHosts
            | PeerError::InvalidHost
            | PeerError::ContentLengthWithTransferEncoding
            | PeerError::UnsupportedExpectation
            | PeerError::HeadTimeout
            | PeerError::BodyTimeout => Self::MalformedHead,
        }
    }
}

/// How the request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// `Content-Length` (possibly 0): body bytes are written as they are.
    Length(u64),
    /// `Transfer-Encoding: chunked`: each piece gets a chunk header.
    Chunked,
}

impl BodyFraming {
    /// The wire bytes for one body piece (empty pieces produce nothing).
    #[must_use]
    pub fn frame(&self, data: Bytes) -> Vec<Bytes> {
        match self {
            _ if data.is_empty() => Vec::new(),
            Self::Length(_) => vec![data],
            Self::Chunked => vec![
                Bytes::from(format!("{:x}\r\n", data.len())),
                data,
                Bytes::from_static(b"\r\n"),
            ],
        }
    }

    /// The bytes that end the body (the last chunk for chunked framing).
    #[must_use]
    pub fn end(&self) -> Option<Bytes> {
        match self {
            Self::Length(_) => None,
            Self::Chunked => Some(Bytes::from_static(b"0\r\n\r\n")),
        }
    }
}

/// A request ready to write: its head, the body framing and the body pieces in order
/// (files among them are read and framed by the driver).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedRequest {
    /// The request line and header fields, ending with the empty line.
    pub head: Bytes,
    /// How body pieces are framed.
    pub framing: BodyFraming,
    /// The body, in order.
    pub body: Vec<Segment>,
    /// The request asked the server to close the connection after the response.
    pub close: bool,
}

/// Encodes `request` in origin form (`GET /path?query HTTP/1.1`) with a `Host` from its
/// URI. `Content-Length` is set from the body when known (and the header is absent),
/// otherwise the body is chunked; `Transfer-Encoding`, `Host` and hop-by-hop fields in
/// the request's headers are replaced.
///
/// # Errors
/// [`EncodeError::MissingHost`] when the URI has no authority.
pub fn encode_request(request: http::Request<RequestBody>) -> Result<EncodedRequest, EncodeError> {
    let (parts, body) = request.into_parts();
    let authority = parts.uri.authority().ok_or(EncodeError::MissingHost)?;
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let length = body.content_length();
    let framing = length.map_or(BodyFraming::Chunked, BodyFraming::Length);
    let mut head = BytesMut::with_capacity(256);
    head.extend_from_slice(parts.method.as_str().as_bytes());
    head.extend_from_slice(b" ");
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    // The default port is left out, as browsers and curl do.
    let host = match (parts.uri.scheme_str(), authority.port_u16()) {
        (Some("https"), Some(443)) | (Some("http"), Some(80)) => authority.host(),
        _ => authority.as_str(),
    };
    head.extend_from_slice(host.as_bytes());
    head.extend_from_slice(b"\r\n");
    let mut close = false;
    for (name, value) in &parts.headers {
        if name == header::HOST
            || name == header::TRANSFER_ENCODING
            || name == header::CONTENT_LENGTH
            || name == header::UPGRADE
            || name == header::TE
        {
            continue;
        }
        if name == header::CONNECTION {
            close |= has_token(value, "close");
        }
        put_field(&mut head, name, value);
    }
    let has_body = !matches!(body, RequestBody::Empty);
    let method_has_body = matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
    match framing {
        BodyFraming::Length(len) if has_body || method_has_body => {
            head.extend_from_slice(b"content-length: ");
            head.extend_from_slice(len.to_string().as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        BodyFraming::Length(_) => {}
        BodyFraming::Chunked => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    head.extend_from_slice(b"\r\n");
    let body = match body {
        RequestBody::Empty => Vec::new(),
        RequestBody::Json(json) => vec![Segment::Bytes(json)],
        RequestBody::Multipart(multipart) => multipart.into_segments(),
    };
    Ok(EncodedRequest {
        head: head.freeze(),
        framing,
        body,
        close,
    })
}

/// The head of `CONNECT authority HTTP/1.1` (e.g. `discord.com:443`) for an HTTP proxy,
/// with `extra` fields such as `Proxy-Authorization`.
#[must_use]
pub fn encode_connect<'a>(
    authority: &str,
    extra: impl IntoIterator<Item = (&'a HeaderName, &'a HeaderValue)>,
) -> Bytes {
    let mut head = BytesMut::with_capacity(128);
    head.extend_from_slice(b"CONNECT ");
    head.extend_from_slice(authority.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    head.extend_from_slice(authority.as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in extra {
        put_field(&mut head, name, value);
    }
    head.extend_from_slice(b"\r\n");
    head.freeze()
}

fn put_field(head: &mut BytesMut, name: &HeaderName, value: &HeaderValue) {
    head.extend_from_slice(name.as_str().as_bytes());
    head.extend_from_slice(b": ");
    head.extend_from_slice(value.as_bytes());
    head.extend_from_slice(b"\r\n");
}

/// Whether a comma-separated header value holds `token` (case-insensitive).
fn has_token(value: &HeaderValue, token: &str) -> bool {
    value
        .as_bytes()
        .split(|&b| b == b',')
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// What [`ResponseReader::next_event`] produced.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // Heads come once per response.
pub enum ClientEvent {
    /// The final response head (interim `1xx` heads are skipped).
    Head(response::Parts),
    /// A piece of the body.
    Data(Bytes),
    /// The response is complete.
    End,
    /// More bytes are needed: read the socket.
    NeedData,
}

/// How the response body is delimited.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BodyRead {
    /// Framed by the shared decoder (Content-Length or chunked).
    Framed(BodyDecoder),
    /// Until the server closes the connection; counts what was received.
    UntilClose(u64),
}

#[derive(Debug)]
enum State {
    Head,
    Body(BodyRead),
    Done,
}

/// Reads one response from a connection; see the [module docs](self).
#[derive(Debug)]
pub struct ResponseReader {
    limits: ClientLimits,
    method: Method,
    buf: BytesMut,
    eof: bool,
    received_any: bool,
    state: State,
    keep_alive: bool,
    // Accumulated by `poll_response`.
    head: Option<response::Parts>,
    body: BytesMut,
}

impl ResponseReader {
    /// A reader for the answer to a `method` request.
    #[must_use]
    pub fn new(limits: ClientLimits, method: &Method) -> Self {
        Self {
            limits,
            method: method.clone(),
            buf: BytesMut::new(),
            eof: false,
            received_any: false,
            state: State::Head,
            keep_alive: false,
            head: None,
            body: BytesMut::new(),
        }
    }

    /// Hands the reader bytes read from the socket.
    pub fn receive(&mut self, data: &[u8]) {
        self.received_any |= !data.is_empty();
        self.buf.extend_from_slice(data);
    }

    /// The receive buffer, for drivers that read straight into it; call
    /// [`ResponseReader::received`] after appending.
    pub fn receive_buffer(&mut self) -> &mut BytesMut {
        self.buf.reserve(8 * 1024);
        &mut self.buf
    }

    /// Tells the reader bytes were appended to [`ResponseReader::receive_buffer`].
    pub fn received(&mut self) {
        self.received_any |= !self.buf.is_empty();
    }

    /// Tells the reader the server closed its sending side.
    pub fn receive_eof(&mut self) {
        self.eof = true;
    }

    /// Whether the connection may carry another request once the response is complete:
    /// the server did not ask to close, the body was delimited, and no stray bytes
    /// followed it.
    #[must_use]
    pub fn keep_alive(&self) -> bool {
        matches!(self.state, State::Done) && self.keep_alive && self.buf.is_empty() && !self.eof
    }

    /// Bytes received after the response (after a `CONNECT` answer: the tunnel's first
    /// bytes).
    #[must_use]
    pub fn into_remaining(self) -> BytesMut {
        self.buf
    }

    /// The next event.
    ///
    /// # Errors
    /// [`ResponseError`] when the response is malformed, over a limit or cut short; the
    /// connection must then be closed.
    pub fn next_event(&mut self) -> Result<ClientEvent, ResponseError> {
        loop {
            match &mut self.state {
                State::Done => return Ok(ClientEvent::End),
                State::Head => {
                    let Some((parts, body)) = self.parse_head()? else {
                        if self.eof {
                            return Err(ResponseError::IncompleteHead {
                                received_any: self.received_any,
                            });
                        }
                        return Ok(ClientEvent::NeedData);
                    };
                    match body {
                        // An interim response: the final one follows.
                        None => {}
                        Some(body) => {
                            self.state = State::Body(body);
                            return Ok(ClientEvent::Head(parts));
                        }
                    }
                }
                State::Body(BodyRead::UntilClose(total)) => {
                    if !self.buf.is_empty() {
                        let len = self.buf.len() as u64;
                        *total = total.saturating_add(len);
                        if *total > self.limits.max_body_size {
                            return Err(ResponseError::BodyTooLarge);
                        }
                        return Ok(ClientEvent::Data(self.buf.split().freeze()));
                    }
                    if self.eof {
                        self.state = State::Done;
                        return Ok(ClientEvent::End);
                    }
                    return Ok(ClientEvent::NeedData);
                }
                State::Body(BodyRead::Framed(decoder)) => {
                    let decoded = decoder
                        .decode(
                            &mut self.buf,
                            self.limits.max_body_size,
                            self.limits.max_head_size,
                        )
                        .map_err(ResponseError::from_peer)?;
                    match decoded {
                        Decoded::Data(data) => return Ok(ClientEvent::Data(data)),
                        Decoded::End => {
                            self.state = State::Done;
                            return Ok(ClientEvent::End);
                        }
                        Decoded::NeedData if self.eof => {
                            return Err(ResponseError::IncompleteBody);
                        }
                        Decoded::NeedData => return Ok(ClientEvent::NeedData),
                    }
                }
            }
        }
    }

    /// The whole response once it is complete (`None`: read more first).
    ///
    /// # Errors
    /// As [`ResponseReader::next_event`].
    pub fn poll_response(&mut self) -> Result<Option<http::Response<Bytes>>, ResponseError> {
        loop {
            match self.next_event()? {
                ClientEvent::Head(parts) => self.head = Some(parts),
                ClientEvent::Data(data) => self.body.extend_from_slice(&data),
                ClientEvent::End => {
                    let Some(parts) = self.head.take() else {
                        return Ok(None);
                    };
                    let body = self.body.split().freeze();
                    return Ok(Some(http::Response::from_parts(parts, body)));
                }
                ClientEvent::NeedData => return Ok(None),
            }
        }
    }

    /// Parses a head from the front of the buffer. `Some((parts, None))` is an interim
    /// (1xx) response, which is consumed.
    #[allow(clippy::type_complexity)]
    fn parse_head(&mut self) -> Result<Option<(response::Parts, Option<BodyRead>)>, ResponseError> {
        let max_headers = self.limits.max_headers.min(MAX_HEADERS_CAP);
        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS_CAP];
        let mut res = httparse::Response::new(&mut storage[..max_headers]);
        let len = match res.parse(&self.buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => {
                return if self.buf.len() > self.limits.max_head_size {
                    Err(ResponseError::HeadTooLarge)
                } else {
                    Ok(None)
                };
            }
            Err(httparse::Error::TooManyHeaders) => return Err(ResponseError::TooManyHeaders),
            Err(_) => return Err(ResponseError::MalformedHead),
        };
        if len > self.limits.max_head_size {
            return Err(ResponseError::HeadTooLarge);
        }
        let status = res
            .code
            .and_then(|code| StatusCode::from_u16(code).ok())
            .ok_or(ResponseError::MalformedHead)?;
        let version = match res.version {
            Some(0) => Version::HTTP_10,
            Some(1) => Version::HTTP_11,
            _ => return Err(ResponseError::MalformedHead),
        };
        let mut builder = http::Response::builder().status(status).version(version);
        let mut content_length: Option<u64> = None;
        let mut transfer_encoding = false;
        let mut chunked_last = false;
        let mut conn_close = false;
        let mut conn_keep_alive = false;
        for field in res.headers.iter() {
            let name = HeaderName::from_bytes(field.name.as_bytes())
                .map_err(|_| ResponseError::MalformedHead)?;
            let value =
                HeaderValue::from_bytes(field.value).map_err(|_| ResponseError::MalformedHead)?;
            if name == header::CONTENT_LENGTH {
                let parsed = parse_content_length(field.value)?;
                if content_length.is_some_and(|known| known != parsed) {
                    return Err(ResponseError::InvalidContentLength);
                }
                content_length = Some(parsed);
            } else if name == header::TRANSFER_ENCODING {
                transfer_encoding = true;
                // The last coding of the last field decides.
                chunked_last = value
                    .as_bytes()
                    .rsplit(|&b| b == b',')
                    .map(<[u8]>::trim_ascii)
                    .find(|coding| !coding.is_empty())
                    .is_some_and(|coding| coding.eq_ignore_ascii_case(b"chunked"));
                let only_known = value.as_bytes().split(|&b| b == b',').all(|coding| {
                    let coding = coding.trim_ascii();
                    coding.is_empty()
                        || coding.eq_ignore_ascii_case(b"chunked")
                        || coding.eq_ignore_ascii_case(b"identity")
                });
                if !only_known {
                    return Err(ResponseError::UnsupportedTransferCoding);
                }
            } else if name == header::CONNECTION {
                conn_close |= has_token(&value, "close");
                conn_keep_alive |= has_token(&value, "keep-alive");
            }
            builder = builder.header(name, value);
        }
        let _ = self.buf.split_to(len);
        let response = builder.body(()).map_err(|_| ResponseError::MalformedHead)?;
        let (parts, ()) = response.into_parts();
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(ResponseError::UnexpectedUpgrade);
        }
        if status.is_informational() {
            return Ok(Some((parts, None)));
        }
        self.keep_alive = match version {
            Version::HTTP_10 => conn_keep_alive && !conn_close,
            _ => !conn_close,
        };
        // RFC 9112 §6.3, in order.
        let no_body = self.method == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
            || (self.method == Method::CONNECT && status.is_success());
        let body = if no_body {
            BodyRead::Framed(BodyDecoder::Length { remaining: 0 })
        } else if transfer_encoding {
            // With both, Transfer-Encoding wins, but the framing is suspect: do not reuse.
            if content_length.is_some() {
                self.keep_alive = false;
            }
            if chunked_last {
                BodyRead::Framed(BodyDecoder::Chunked {
                    state: Chunk::Size,
                    total: 0,
                })
            } else {
                self.keep_alive = false;
                BodyRead::UntilClose(0)
            }
        } else if let Some(length) = content_length {
            if length > self.limits.max_body_size {
                return Err(ResponseError::BodyTooLarge);
            }
            BodyRead::Framed(BodyDecoder::Length { remaining: length })
        } else {
            self.keep_alive = false;
            BodyRead::UntilClose(0)
        };
        Ok(Some((parts, Some(body))))
    }
}

fn parse_content_length(value: &[u8]) -> Result<u64, ResponseError> {
    let mut parsed: Option<u64> = None;
    // A list of identical values ("42, 42") is accepted, as RFC 9110 allows.
    for item in value.split(|&b| b == b',') {
        let item = item.trim_ascii();
        if item.is_empty() || !item.iter().all(u8::is_ascii_digit) {
            return Err(ResponseError::InvalidContentLength);
        }
        let number = std::str::from_utf8(item)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or(ResponseError::InvalidContentLength)?;
        if parsed.is_some_and(|p| p != number) {
            return Err(ResponseError::InvalidContentLength);
        }
        parsed = Some(number);
    }
    parsed.ok_or(ResponseError::InvalidContentLength)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::multipart::FilePart;
    use crate::rest::Payload;
    use proptest::prelude::*;

    fn read_all(bytes: &[u8], method: &Method) -> Result<http::Response<Bytes>, ResponseError> {
        let mut reader = ResponseReader::new(ClientLimits::default(), method);
        reader.receive(bytes);
        reader.receive_eof();
        reader.poll_response().map(|r| r.expect("complete at eof"))
    }

    fn request(body: RequestBody) -> http::Request<RequestBody> {
        let mut req = http::Request::new(body);
        *req.method_mut() = Method::POST;
        *req.uri_mut() = "https://discord.com:443/api/v10/x?wait=true"
            .parse()
            .unwrap();
        req.headers_mut()
            .insert(header::USER_AGENT, HeaderValue::from_static("t"));
        req.headers_mut()
            .insert(header::HOST, HeaderValue::from_static("evil"));
        req
    }

    #[test]
    fn encodes_json_with_content_length() {
        let enc = encode_request(request(RequestBody::Json(Bytes::from_static(b"{}")))).unwrap();
        assert_eq!(
            &enc.head[..],
            b"POST /api/v10/x?wait=true HTTP/1.1\r\nhost: discord.com\r\nuser-agent: t\r\ncontent-length: 2\r\n\r\n"
        );
        assert_eq!(enc.framing, BodyFraming::Length(2));
        assert_eq!(enc.body, vec![Segment::Bytes(Bytes::from_static(b"{}"))]);
        assert!(!enc.close);
    }

    #[test]
    fn encodes_get_without_length_and_keeps_port() {
        let mut req = http::Request::new(RequestBody::Empty);
        *req.uri_mut() = "http://127.0.0.1:8080/a".parse().unwrap();
        let enc = encode_request(req).unwrap();
        assert_eq!(
            &enc.head[..],
            b"GET /a HTTP/1.1\r\nhost: 127.0.0.1:8080\r\n\r\n"
        );
        assert!(enc.body.is_empty());
    }

    #[test]
    fn missing_host_is_an_error() {
        let req = http::Request::new(RequestBody::Empty);
        assert_eq!(encode_request(req).unwrap_err(), EncodeError::MissingHost);
    }

    #[test]
    fn multipart_with_unknown_length_is_chunked() {
        use crate::multipart::FileSource;
        let payload = Payload::raw_json(&b"{}"[..]).with_file(FilePart::source(
            "a.bin",
            FileSource::Later { id: 1, len: None },
        ));
        let enc = encode_request(request(payload.into_body())).unwrap();
        assert_eq!(enc.framing, BodyFraming::Chunked);
        assert!(
            std::str::from_utf8(&enc.head)
                .unwrap()
                .contains("transfer-encoding: chunked\r\n")
        );
        assert!(enc.body.iter().any(|s| matches!(s, Segment::File { .. })));
        let framed: Vec<u8> = BodyFraming::Chunked
            .frame(Bytes::from_static(b"hello"))
            .concat();
        assert_eq!(framed, b"5\r\nhello\r\n");
        assert_eq!(BodyFraming::Chunked.end().unwrap(), &b"0\r\n\r\n"[..]);
    }

    #[test]
    fn multipart_in_memory_has_length() {
        let payload = Payload::raw_json(&b"{}"[..]).with_file(FilePart::memory("a.txt", "hi"));
        let body = payload.into_body();
        let len = body.content_length().unwrap();
        let enc = encode_request(request(body)).unwrap();
        assert_eq!(enc.framing, BodyFraming::Length(len));
    }

    #[test]
    fn connect_head() {
        let name = header::PROXY_AUTHORIZATION;
        let value = HeaderValue::from_static("Basic dTpw");
        let head = encode_connect("discord.com:443", [(&name, &value)]);
        assert_eq!(
            &head[..],
            b"CONNECT discord.com:443 HTTP/1.1\r\nhost: discord.com:443\r\nproxy-authorization: Basic dTpw\r\n\r\n"
        );
    }

    #[test]
    fn content_length_response_keeps_alive() {
        let mut reader = ResponseReader::new(ClientLimits::default(), &Method::GET);
        reader.receive(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello");
        let response = reader.poll_response().unwrap().unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-a"], "b");
        assert_eq!(&response.body()[..], b"hello");
        assert!(reader.keep_alive());
    }

    #[test]
    fn chunked_response_with_trailers() {
        let r = read_all(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: v\r\n\r\n",
            &Method::GET,
        )
        .unwrap();
        assert_eq!(&r.body()[..], b"abcde");
    }

    #[test]
    fn until_close_response_is_not_reused() {
        let mut reader = ResponseReader::new(ClientLimits::default(), &Method::GET);
        reader.receive(b"HTTP/1.1 200 OK\r\n\r\nsome body");
        assert!(reader.poll_response().unwrap().is_none());
        reader.receive_eof();
        let response = reader.poll_response().unwrap().unwrap();
        assert_eq!(&response.body()[..], b"some body");
        assert!(!reader.keep_alive());
    }

    #[test]
    fn connection_close_and_http10() {
        let mut reader = ResponseReader::new(ClientLimits::default(), &Method::GET);
        reader.receive(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        assert!(reader.poll_response().unwrap().is_some());
        assert!(!reader.keep_alive());
        let mut reader = ResponseReader::new(ClientLimits::default(), &Method::GET);
        reader.receive(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert!(reader.poll_response().unwrap().is_some());
        assert!(!reader.keep_alive());
        let mut reader = ResponseReader::new(ClientLimits::default(), &Method::GET);
        reader.receive(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n");
        assert!(reader.poll_response().unwrap().is_some());
        assert!(reader.keep_alive());
    }

    #[test]
    fn head_and_204_have_no_body() {
        let mut reader = ResponseReader::new(ClientLimits::default(), &Method::HEAD);
        reader.receive(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n");
        let response = reader.poll_response().unwrap().unwrap();
        assert!(response.body().is_empty());
        assert!(reader.keep_alive());
    }

    #[test]
    fn interim_responses_are_skipped() {
        let r = read_all(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx",
            &Method::POST,
        )
        .unwrap();
        assert_eq!(r.status(), 201);
    }

    #[test]
    fn connect_answer_leaves_tunnel_bytes() {
        let mut reader = ResponseReader::new(ClientLimits::default(), &Method::CONNECT);
        reader.receive(b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03");
        let response = reader.poll_response().unwrap().unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(&reader.into_remaining()[..], b"\x16\x03");
    }

    #[test]
    fn errors_are_typed() {
        let cases: &[(&[u8], ResponseError)] = &[
            (b"HTTP/1.1 2x0 OK\r\n\r\n", ResponseError::MalformedHead),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
                ResponseError::InvalidContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                ResponseError::InvalidContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                ResponseError::UnsupportedTransferCoding,
            ),
            (
                b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
                ResponseError::UnexpectedUpgrade,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                ResponseError::InvalidChunk,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
                ResponseError::IncompleteBody,
            ),
            (
                b"HTTP/1.1 200 OK\r\n",
                ResponseError::IncompleteHead { received_any: true },
            ),
            (
                b"",
                ResponseError::IncompleteHead {
                    received_any: false,
                },
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(
                read_all(bytes, &Method::GET).unwrap_err(),
                *expected,
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn limits_are_enforced() {
        let limits = ClientLimits {
            max_head_size: 64,
            max_headers: 2,
            max_body_size: 4,
        };
        let mut r = ResponseReader::new(limits.clone(), &Method::GET);
        r.receive(b"HTTP/1.1 200 OK\r\nX: ");
        r.receive(&[b'a'; 100]);
        assert_eq!(r.next_event().unwrap_err(), ResponseError::HeadTooLarge);
        let mut r = ResponseReader::new(limits.clone(), &Method::GET);
        r.receive(b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n");
        assert_eq!(r.next_event().unwrap_err(), ResponseError::TooManyHeaders);
        let mut r = ResponseReader::new(limits.clone(), &Method::GET);
        r.receive(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(r.next_event().unwrap_err(), ResponseError::BodyTooLarge);
        let mut r = ResponseReader::new(limits.clone(), &Method::GET);
        r.receive(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n");
        assert!(matches!(r.next_event(), Ok(ClientEvent::Head(_))));
        assert_eq!(r.next_event().unwrap_err(), ResponseError::BodyTooLarge);
        let mut r = ResponseReader::new(limits, &Method::GET);
        r.receive(b"HTTP/1.1 200 OK\r\n\r\n12345");
        assert!(matches!(r.next_event(), Ok(ClientEvent::Head(_))));
        assert_eq!(r.next_event().unwrap_err(), ResponseError::BodyTooLarge);
    }

    #[test]
    fn trailing_garbage_prevents_reuse() {
        let mut reader = ResponseReader::new(ClientLimits::default(), &Method::GET);
        reader.receive(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxGARBAGE");
        assert!(reader.poll_response().unwrap().is_some());
        assert!(!reader.keep_alive());
    }

    /// Feeds `wire` in pieces cut at `cuts`, returning status, body, keep-alive or error.
    fn feed_split(
        wire: &[u8],
        cuts: &[usize],
        method: &Method,
    ) -> Result<(u16, Vec<u8>, bool), ResponseError> {
        let mut reader = ResponseReader::new(ClientLimits::default(), method);
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
        points.push(wire.len());
        points.sort_unstable();
        let mut start = 0;
        for point in points {
            reader.receive(&wire[start..point]);
            start = point;
            if let Some(response) = reader.poll_response()? {
                return Ok((
                    response.status().as_u16(),
                    response.body().to_vec(),
                    reader.keep_alive(),
                ));
            }
        }
        reader.receive_eof();
        let response = reader
            .poll_response()?
            .ok_or(ResponseError::IncompleteBody)?;
        Ok((
            response.status().as_u16(),
            response.body().to_vec(),
            reader.keep_alive(),
        ))
    }

    fn wire_strategy() -> impl Strategy<Value = Vec<u8>> {
        let body = proptest::collection::vec(any::<u8>(), 0..200);
        let chunks = proptest::collection::vec(1_usize..40, 0..6);
        (body, chunks, 0_u8..4).prop_map(|(body, chunks, framing)| {
            let mut wire = b"HTTP/1.1 200 OK\r\nX-RateLimit-Bucket: abc\r\n".to_vec();
            match framing {
                0 => {
                    wire.extend_from_slice(
                        format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes(),
                    );
                    wire.extend_from_slice(&body);
                }
                1 | 2 => {
                    wire.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                    let mut rest = &body[..];
                    let mut sizes = chunks.iter().cycle();
                    while !rest.is_empty() {
                        let size = sizes.next().copied().unwrap_or(7).min(rest.len());
                        wire.extend_from_slice(format!("{size:x}\r\n").as_bytes());
                        wire.extend_from_slice(&rest[..size]);
                        wire.extend_from_slice(b"\r\n");
                        rest = &rest[size..];
                    }
                    wire.extend_from_slice(if framing == 1 {
                        b"0\r\n\r\n"
                    } else {
                        b"0\r\nA: b\r\n\r\n"
                    });
                }
                _ => {
                    wire.extend_from_slice(b"Connection: close\r\n\r\n");
                    wire.extend_from_slice(&body);
                }
            }
            wire
        })
    }

    proptest! {
        /// However the bytes are split across reads, the result is the same as reading
        /// them at once; arbitrary bytes never panic.
        #[test]
        fn split_invariance(
            wire in wire_strategy(),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let whole = feed_split(&wire, &[], &Method::GET);
            let split = feed_split(&wire, &cuts, &Method::GET);
            prop_assert!(whole.is_ok());
            prop_assert_eq!(whole, split);
        }

        #[test]
        fn arbitrary_bytes_split_invariance(
            wire in proptest::collection::vec(any::<u8>(), 0..300),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let mut prefixed = b"HTTP/1.1 200 OK\r\n".to_vec();
            prefixed.extend_from_slice(&wire);
            let whole = feed_split(&prefixed, &[], &Method::GET);
            let split = feed_split(&prefixed, &cuts, &Method::GET);
            prop_assert_eq!(whole, split);
        }
    }
}
