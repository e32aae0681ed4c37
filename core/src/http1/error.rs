//! What can go wrong on a connection, split h11-style into what the peer did wrong
//! ([`PeerError`], answered on the wire) and what the local application did wrong
//! ([`SendError`], a bug in the caller, never seen by the peer).

use std::fmt;

use http::StatusCode;

/// The peer sent something this server will not accept.
///
/// By the time the application sees one of these, the connection has already queued the
/// answer ([`PeerError::status`] with [`PeerError::message`] as a `text/plain` body) when no
/// response had been started, and will close once it is transmitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PeerError {
    /// The request line or a header line is not valid HTTP/1.1 syntax.
    MalformedHead(HeadSyntax),
    /// The request head is longer than [`Config::max_head_size`](super::Config).
    HeadTooLarge,
    /// The request head has more header fields than [`Config::max_headers`](super::Config).
    TooManyHeaders,
    /// An HTTP/1.1 request without a `Host` header field.
    MissingHost,
    /// More than one `Host` header field.
    MultipleHosts,
    /// A `Host` value that is not a valid authority.
    InvalidHost,
    /// A `Content-Length` that is not a plain decimal number, or repeated with different values.
    InvalidContentLength,
    /// Both `Content-Length` and `Transfer-Encoding`: a request-smuggling vector (RFC 9112 §6.3).
    ContentLengthWithTransferEncoding,
    /// A `Transfer-Encoding` this server cannot decode (anything but `chunked`).
    UnsupportedTransferCoding,
    /// A malformed `Transfer-Encoding` (empty, `chunked` twice, or sent in HTTP/1.0).
    InvalidTransferEncoding,
    /// An `Expect` value other than `100-continue`.
    UnsupportedExpectation,
    /// The body is longer than [`Config::max_body_size`](super::Config), declared or counted.
    BodyTooLarge,
    /// A chunked body with a bad chunk-size line (no size, a bare LF, a control character),
    /// missing CRLF, over-long chunk extension, or malformed trailers (a bare LF among them).
    InvalidChunk,
    /// Chunked trailer fields larger than the head limit allows.
    TrailersTooLarge,
    /// The peer closed its side before the body was complete.
    IncompleteBody,
    /// The head did not arrive within [`Config::head_timeout`](super::Config).
    HeadTimeout,
    /// The body did not arrive within [`Config::body_timeout`](super::Config).
    BodyTimeout,
}

/// Which part of the head failed to parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HeadSyntax {
    /// The request line (method, target, version) is malformed, or ends in a bare LF.
    RequestLine,
    /// The method token is not a valid method.
    Method,
    /// The request target is not a valid URI.
    Target,
    /// The HTTP version is not HTTP/1.0 or HTTP/1.1.
    Version,
    /// A header line is malformed (name, colon, value or line ending).
    HeaderLine,
}

impl PeerError {
    /// The status the peer is (or would be) answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MalformedHead(_)
            | Self::MissingHost
            | Self::MultipleHosts
            | Self::InvalidHost
            | Self::InvalidContentLength
            | Self::ContentLengthWithTransferEncoding
            | Self::InvalidTransferEncoding
            | Self::InvalidChunk
            | Self::IncompleteBody => StatusCode::BAD_REQUEST,
            Self::HeadTooLarge | Self::TooManyHeaders | Self::TrailersTooLarge => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            Self::UnsupportedTransferCoding => StatusCode::NOT_IMPLEMENTED,
            Self::UnsupportedExpectation => StatusCode::EXPECTATION_FAILED,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::HeadTimeout | Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// The plain-text explanation sent to the peer.
    pub fn message(&self) -> &'static str {
        match self {
            Self::MalformedHead(HeadSyntax::RequestLine) => "malformed request line",
            Self::MalformedHead(HeadSyntax::Method) => "invalid request method",
            Self::MalformedHead(HeadSyntax::Target) => "invalid request target",
            Self::MalformedHead(HeadSyntax::Version) => "unsupported HTTP version",
            Self::MalformedHead(HeadSyntax::HeaderLine) => "malformed header field",
            Self::HeadTooLarge => "request head too large",
            Self::TooManyHeaders => "too many header fields",
            Self::MissingHost => "missing Host header",
            Self::MultipleHosts => "more than one Host header",
            Self::InvalidHost => "invalid Host header",
            Self::InvalidContentLength => "invalid Content-Length",
            Self::ContentLengthWithTransferEncoding => {
                "both Content-Length and Transfer-Encoding present"
            }
            Self::UnsupportedTransferCoding => "unsupported transfer coding",
            Self::InvalidTransferEncoding => "invalid Transfer-Encoding",
            Self::UnsupportedExpectation => "unsupported expectation",
            Self::BodyTooLarge => "request body too large",
            Self::InvalidChunk => "malformed chunked body",
            Self::TrailersTooLarge => "chunked trailers too large",
            Self::IncompleteBody => "request body ended early",
            Self::HeadTimeout => "timed out reading request head",
            Self::BodyTimeout => "timed out reading request body",
        }
    }
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (answered {})", self.message(), self.status())
    }
}

impl std::error::Error for PeerError {}

/// The local application used the connection out of order. Nothing is written to the peer
/// for a call that fails this way; the connection's state is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SendError {
    /// There is no request in flight to respond to.
    NoRequest,
    /// A response to the in-flight request has already been started.
    AlreadyResponding,
    /// Body data or an end was sent before a response head.
    NotResponding,
    /// A 1xx status was given as a final response; `100 Continue` is managed by the connection.
    Informational,
    /// More body bytes than the declared length.
    BodyTooLong {
        /// The length declared in [`BodyLength::Known`](super::BodyLength).
        declared: u64,
        /// The length the body would have reached with this call.
        attempted: u64,
    },
    /// The response ended before the declared length was sent.
    BodyTooShort {
        /// The length declared in [`BodyLength::Known`](super::BodyLength).
        declared: u64,
        /// The bytes sent so far.
        sent: u64,
    },
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoRequest => f.write_str("no request in flight to respond to"),
            Self::AlreadyResponding => f.write_str("a response has already been started"),
            Self::NotResponding => f.write_str("no response has been started"),
            Self::Informational => f.write_str("1xx statuses cannot be sent as final responses"),
            Self::BodyTooLong {
                declared,
                attempted,
            } => write!(
                f,
                "response body of {attempted} bytes exceeds its declared length {declared}"
            ),
            Self::BodyTooShort { declared, sent } => write!(
                f,
                "response ended after {sent} bytes, {declared} were declared"
            ),
        }
    }
}

impl std::error::Error for SendError {}
