//! The bodies of the responses the endpoint produces.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::multipart::MultipartBody;

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";
const APPLICATION_JSON: &str = "application/json";

/// The body of a response produced by the endpoint.
///
/// Responses carry `Content-Type` and, when the length is known and the
/// status allows a body, `Content-Length`; a multipart body with a file of
/// unknown length has none, so the HTTP layer must use chunked encoding.
#[derive(Debug)]
pub enum ResponseBody {
    /// No body (204).
    Empty,
    /// The whole body, in memory.
    Full(Bytes),
    /// A `multipart/form-data` reply with files, written segment by segment;
    /// some segments may be files the driver has to stream.
    Multipart(MultipartBody),
}

impl ResponseBody {
    /// The body's length in bytes, when it is known in advance.
    #[must_use]
    pub fn len(&self) -> Option<u64> {
        match self {
            Self::Empty => Some(0),
            Self::Full(bytes) => Some(bytes.len() as u64),
            Self::Multipart(body) => body.content_length(),
        }
    }

    /// Whether the body is known to be empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }
}

/// A response with `Content-Type: content_type` and `Content-Length`.
fn full_response(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
) -> Response<ResponseBody> {
    let len = body.len();
    let mut response = Response::new(ResponseBody::Full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    response
}

/// A `text/plain; charset=utf-8` response, used for every refusal and failure.
pub(crate) fn text_response(status: StatusCode, body: Bytes) -> Response<ResponseBody> {
    full_response(status, TEXT_PLAIN, body)
}

/// A 200 `application/json` response.
pub(crate) fn json_response(body: Bytes) -> Response<ResponseBody> {
    full_response(StatusCode::OK, APPLICATION_JSON, body)
}

/// A 204 No Content response (no `Content-Length`, as RFC 9110 requires).
pub(crate) fn no_content() -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::Empty);
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

/// 204 No Content with `Content-Type: application/json`: the answer to a Webhook
/// Events PING and the acknowledgement of an event (Discord's docs ask for a
/// `Content-Type` on it).
pub(crate) fn event_acknowledged() -> Response<ResponseBody> {
    let mut response = no_content();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(APPLICATION_JSON),
    );
    response
}

/// A 200 `multipart/form-data` response.
pub(crate) fn multipart_response(body: MultipartBody) -> Response<ResponseBody> {
    let content_type = body.content_type();
    let len = body.content_length();
    let mut response = Response::new(ResponseBody::Multipart(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    if let Some(len) = len {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    response
}
