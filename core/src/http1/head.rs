//! Request heads: `httparse` does the syntax, this module applies the RFC 9112 rules that
//! decide framing (Content-Length vs chunked), persistence and expectations.

use std::mem::MaybeUninit;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Uri, Version, request};

use super::Config;
use super::error::{HeadSyntax, PeerError};

/// Upper bound for [`Config::max_headers`]; the parser's header array lives on the stack.
pub(crate) const MAX_HEADERS_CAP: usize = 256;

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body at all.
    Empty,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head plus what the connection needs to know about it.
#[derive(Debug)]
pub(crate) struct ParsedHead {
    pub(crate) parts: request::Parts,
    pub(crate) framing: Framing,
    /// The peer allows the connection to stay open after this exchange.
    pub(crate) keep_alive: bool,
    /// The peer waits for `100 Continue` before sending the body.
    pub(crate) expects_continue: bool,
}

/// Where one header field lies inside the head bytes, so the values can be sliced out of
/// the frozen head without copying.
#[derive(Debug, Clone)]
pub(crate) struct FieldSpan {
    name: Range<usize>,
    value: Range<usize>,
}

/// Tries to parse one request head from the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed. On success the head's bytes have been
/// split off `buf` (the rest, body or pipelined requests, stays).
pub(crate) fn parse(
    buf: &mut BytesMut,
    config: &Config,
    spans: &mut Vec<FieldSpan>,
) -> Result<Option<ParsedHead>, PeerError> {
    let max_headers = config.max_headers.min(MAX_HEADERS_CAP);
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_CAP];
    let mut req = httparse::Request::new(&mut []);
    let status = req.parse_with_uninit_headers(buf, &mut storage[..max_headers]);
    // httparse takes a bare LF as a line end; RFC 9112 §2.2 lets a server refuse it, and
    // accepting it lets a peer frame a message that a proxy in front of us reads otherwise.
    let head_len = match status {
        Ok(httparse::Status::Complete(len)) => {
            check_line_ends(&buf[..len])?;
            len
        }
        Ok(httparse::Status::Partial) => {
            // Everything buffered is head, so a bare LF is final already.
            check_line_ends(buf)?;
            return if buf.len() > config.max_head_size {
                Err(PeerError::HeadTooLarge)
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => {
            // Counting only makes sense once the head is complete; until then more lines
            // could still arrive, but exceeding the count is already final.
            return Err(PeerError::TooManyHeaders);
        }
        Err(e) => return Err(PeerError::MalformedHead(syntax_of(e))),
    };
    if head_len > config.max_head_size {
        return Err(PeerError::HeadTooLarge);
    }
    let method = req.method.unwrap_or_default().as_bytes();
    let method =
        Method::from_bytes(method).map_err(|_| PeerError::MalformedHead(HeadSyntax::Method))?;
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Err(PeerError::MalformedHead(HeadSyntax::Version)),
    };
    let base = buf.as_ptr() as usize;
    let offset = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let target = offset(req.path.unwrap_or_default().as_bytes());
    spans.clear();
    spans.extend(req.headers.iter().map(|h| FieldSpan {
        name: offset(h.name.as_bytes()),
        value: offset(h.value),
    }));

    // From here on, the head is sliced out of one shared buffer: no per-value copies.
    let head: Bytes = buf.split_to(head_len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target))
        .map_err(|_| PeerError::MalformedHead(HeadSyntax::Target))?;
    let mut headers = http::HeaderMap::with_capacity(spans.len());
    for span in spans.iter() {
        let name = HeaderName::from_bytes(&head[span.name.clone()])
            .map_err(|_| PeerError::MalformedHead(HeadSyntax::HeaderLine))?;
        let value = HeaderValue::from_maybe_shared(head.slice(span.value.clone()))
            .map_err(|_| PeerError::MalformedHead(HeadSyntax::HeaderLine))?;
        headers.append(name, value);
    }

    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    interpret(parts).map(Some)
}

/// Where the first LF not preceded by CR is in `bytes`, if anywhere.
pub(crate) fn bare_lf(bytes: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(lf) = bytes[from..].iter().position(|&byte| byte == b'\n') {
        let at = from + lf;
        if at == 0 || bytes[at - 1] != b'\r' {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Refuses a head with a bare LF, as a malformed request line when it ends the request
/// line (or an empty line before it), else as a malformed header line.
fn check_line_ends(head: &[u8]) -> Result<(), PeerError> {
    let Some(at) = bare_lf(head) else {
        return Ok(());
    };
    // The request line ends at the first LF after the empty lines a client may send
    // before it (RFC 9112 §2.2).
    let request_line = head.iter().position(|&byte| !matches!(byte, b'\r' | b'\n'));
    let request_line_end = request_line.and_then(|start| {
        head[start..]
            .iter()
            .position(|&byte| byte == b'\n')
            .map(|lf| start + lf)
    });
    let in_request_line = request_line_end.is_none_or(|end| at <= end);
    Err(PeerError::MalformedHead(if in_request_line {
        HeadSyntax::RequestLine
    } else {
        HeadSyntax::HeaderLine
    }))
}

fn syntax_of(e: httparse::Error) -> HeadSyntax {
    match e {
        httparse::Error::Version => HeadSyntax::Version,
        httparse::Error::Token | httparse::Error::NewLine | httparse::Error::Status => {
            HeadSyntax::RequestLine
        }
        httparse::Error::HeaderName
        | httparse::Error::HeaderValue
        | httparse::Error::TooManyHeaders => HeadSyntax::HeaderLine,
    }
}

/// Applies the semantic rules to a syntactically valid head.
fn interpret(parts: request::Parts) -> Result<ParsedHead, PeerError> {
    let headers = &parts.headers;
    let http11 = parts.version == Version::HTTP_11;

    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if http11 => return Err(PeerError::MissingHost),
        (None, _) => {}
        (Some(_), Some(_)) => return Err(PeerError::MultipleHosts),
        (Some(host), None) => {
            // An empty Host is what a client sends for a target without authority.
            if !host.is_empty() && http::uri::Authority::try_from(host.as_bytes()).is_err() {
                return Err(PeerError::InvalidHost);
            }
        }
    }

    let chunked = transfer_encoding(&parts)?;
    let length = content_length(headers)?;
    let framing = match (chunked, length) {
        (true, Some(_)) => return Err(PeerError::ContentLengthWithTransferEncoding),
        (true, None) => Framing::Chunked,
        (false, Some(0) | None) => Framing::Empty,
        (false, Some(n)) => Framing::Length(n),
    };

    let mut close = false;
    let mut keep_alive = false;
    for token in list_tokens(headers, header::CONNECTION) {
        close |= token.eq_ignore_ascii_case(b"close");
        keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
    }
    let keep_alive = !close && (http11 || keep_alive);

    let mut expects_continue = false;
    for token in list_tokens(headers, header::EXPECT) {
        if token.eq_ignore_ascii_case(b"100-continue") {
            // RFC 9110 §10.1.1: HTTP/1.0 clients cannot expect an interim response.
            expects_continue = http11;
        } else {
            return Err(PeerError::UnsupportedExpectation);
        }
    }

    Ok(ParsedHead {
        parts,
        framing,
        keep_alive,
        expects_continue: expects_continue && framing != Framing::Empty,
    })
}

/// `Ok(true)` for a valid `chunked` coding, `Ok(false)` when the header is absent.
fn transfer_encoding(parts: &request::Parts) -> Result<bool, PeerError> {
    if !parts.headers.contains_key(header::TRANSFER_ENCODING) {
        return Ok(false);
    }
    if parts.version == Version::HTTP_10 {
        return Err(PeerError::InvalidTransferEncoding);
    }
    let mut chunked = 0usize;
    let mut codings = 0usize;
    for value in parts.headers.get_all(header::TRANSFER_ENCODING) {
        for token in value.as_bytes().split(|&b| b == b',') {
            let token = token.trim_ascii();
            if token.is_empty() {
                continue;
            }
            codings += 1;
            if token.eq_ignore_ascii_case(b"chunked") {
                chunked += 1;
            } else {
                return Err(PeerError::UnsupportedTransferCoding);
            }
        }
    }
    match (codings, chunked) {
        (0, _) => Err(PeerError::InvalidTransferEncoding),
        (1, 1) => Ok(true),
        _ => Err(PeerError::InvalidTransferEncoding),
    }
}

/// The declared length; every value of every field must be the same plain decimal.
fn content_length(headers: &http::HeaderMap) -> Result<Option<u64>, PeerError> {
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for item in value.as_bytes().split(|&b| b == b',') {
            let item = item.trim_ascii();
            if item.is_empty() || !item.iter().all(u8::is_ascii_digit) {
                return Err(PeerError::InvalidContentLength);
            }
            let n = item.iter().try_fold(0u64, |acc, d| {
                acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
            });
            let n = n.ok_or(PeerError::InvalidContentLength)?;
            match length {
                Some(previous) if previous != n => return Err(PeerError::InvalidContentLength),
                _ => length = Some(n),
            }
        }
    }
    Ok(length)
}

/// The comma-separated tokens of every field named `name`.
fn list_tokens(headers: &http::HeaderMap, name: HeaderName) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(name)
        .into_iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}
