//! The answer to a head that breaks the core's rules hyper does not apply itself
//! (checked by [`yuyo_core::http1::check_parsed_head`]; measured with hyper 1.12: the
//! `Host` field, transfer codings other than one `chunked`, expectations other than
//! `100-continue`), as the core answers it.
//!
//! `Content-Length` together with `Transfer-Encoding` cannot be checked here: hyper
//! removes `Content-Length` before the service sees the request (it reads the body as
//! chunked and closes the connection after the response).

use bytes::Bytes;
use http::Response;
use http::header::{self, HeaderValue};
use yuyo_core::http1::PeerError;

use crate::ResponseBody;

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
