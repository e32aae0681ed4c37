//! The core's request-head rules that hyper does not apply itself (measured with hyper
//! 1.12): the `Host` field, transfer codings other than one `chunked`, and expectations
//! other than `100-continue`. Each is answered as the core answers it, with the core's
//! [`PeerError`] status and message.
//!
//! `Content-Length` together with `Transfer-Encoding` cannot be checked here: hyper
//! removes `Content-Length` before the service sees the request (it reads the body as
//! chunked and closes the connection after the response).

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Response, Version};
use yuyo_core::http1::PeerError;

use crate::ResponseBody;

/// Applies the rules to a head hyper accepted.
pub(super) fn check(version: Version, headers: &HeaderMap) -> Result<(), PeerError> {
    host(version, headers)?;
    transfer_coding(headers)?;
    expectation(headers)
}

/// One valid `Host`, required from HTTP/1.1 peers (RFC 9112 §3.2); an empty one is what a
/// client sends for a target without authority.
fn host(version: Version, headers: &HeaderMap) -> Result<(), PeerError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if version == Version::HTTP_11 => Err(PeerError::MissingHost),
        (None, _) => Ok(()),
        (Some(_), Some(_)) => Err(PeerError::MultipleHosts),
        (Some(host), None) => {
            if host.is_empty() || http::uri::Authority::try_from(host.as_bytes()).is_ok() {
                Ok(())
            } else {
                Err(PeerError::InvalidHost)
            }
        }
    }
}

/// Exactly one coding, `chunked`, if any: hyper only checks that the last one is.
/// (hyper itself refuses `Transfer-Encoding` from HTTP/1.0 peers.)
fn transfer_coding(headers: &HeaderMap) -> Result<(), PeerError> {
    let mut codings = 0_usize;
    for token in tokens(headers, header::TRANSFER_ENCODING) {
        if !token.eq_ignore_ascii_case(b"chunked") {
            return Err(PeerError::UnsupportedTransferCoding);
        }
        codings += 1;
    }
    match codings {
        0 if headers.contains_key(header::TRANSFER_ENCODING) => {
            Err(PeerError::InvalidTransferEncoding)
        }
        0 | 1 => Ok(()),
        _ => Err(PeerError::InvalidTransferEncoding),
    }
}

/// `100-continue` is the only expectation (hyper ignores any other).
fn expectation(headers: &HeaderMap) -> Result<(), PeerError> {
    if tokens(headers, header::EXPECT).all(|token| token.eq_ignore_ascii_case(b"100-continue")) {
        Ok(())
    } else {
        Err(PeerError::UnsupportedExpectation)
    }
}

/// The comma-separated, non-empty tokens of every `name` field.
fn tokens(headers: &HeaderMap, name: header::HeaderName) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(name)
        .into_iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty())
}

/// The core's answer to `error`: its status, its message as `text/plain`, and
/// `Connection: close`.
pub(super) fn reject(error: PeerError) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(Bytes::from(format!(
        "{}\n",
        error.message()
    ))));
    *response.status_mut() = error.status();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
