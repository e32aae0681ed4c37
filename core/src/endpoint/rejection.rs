//! Every way a request can be refused before it reaches a handler.

use std::fmt;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use super::events::{EnvelopeField, EventKind};
use super::handlers::InteractionKind;
use super::response::{ResponseBody, text_response};

/// Which of the two signature headers a [`Rejection`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignatureHeader {
    /// `X-Signature-Ed25519`.
    Signature,
    /// `X-Signature-Timestamp`.
    Timestamp,
}

impl SignatureHeader {
    /// The header's canonical name.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Signature => "X-Signature-Ed25519",
            Self::Timestamp => "X-Signature-Timestamp",
        }
    }
}

/// What is wrong with a signature header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HeaderProblem {
    /// The header is absent.
    Missing,
    /// The header occurs more than once.
    Repeated,
    /// The value has the wrong shape: the signature is not exactly 128 hex
    /// digits, or the timestamp is empty or not visible ASCII.
    Malformed,
}

/// A request refused by the endpoint, with the status and plain-text message
/// the peer gets.
///
/// The variants are listed in the order the checks run; the first failing
/// check decides the answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// 404: the path (query ignored) is not the configured one.
    NotFound,
    /// 405 with `Allow: POST`: right path, other method.
    MethodNotAllowed,
    /// 415: `Content-Type` missing, repeated, or not `application/json`.
    UnsupportedMediaType,
    /// 401: a signature header is missing, repeated or malformed.
    SignatureHeader(SignatureHeader, HeaderProblem),
    /// 400: `Content-Length` is repeated or not a decimal number (the HTTP
    /// layer normally refuses this first).
    InvalidContentLength,
    /// 413: the declared or received body exceeds this many bytes
    /// (the configured `max_body_size`).
    PayloadTooLarge(usize),
    /// 400: the body is empty.
    EmptyBody,
    /// 401: the signature does not verify over `timestamp ‖ body`.
    InvalidSignature,
    /// 401: a timestamp window is configured and the timestamp of an
    /// authentic request is not an integer within it.
    TimestampOutsideWindow,
    /// 400: the (authentic) body is not a JSON object.
    NotJsonObject,
    /// 400: the object's `type` is missing or not an integer.
    InvalidType,
    /// 501: `type` is an integer other than 1 to 5.
    UnsupportedType(i128),
    /// 500: an authentic interaction of a known type that the typed model
    /// (twilight-model) cannot read. Logged with the parse error.
    UnreadableInteraction,
    /// 501: no handler is registered for this kind of interaction.
    NoHandler(InteractionKind),
    /// 400, on the Webhook Events path: an envelope field is missing or has the wrong
    /// type.
    InvalidEvent(EnvelopeField),
    /// 501, on the Webhook Events path: the envelope `type` is an integer other than 0
    /// (PING) and 1 (event).
    UnsupportedEventType(i128),
    /// 500, on the Webhook Events path: an authentic event of a known kind whose data
    /// the typed model cannot read. Logged with the parse error.
    UnreadableEvent(EventKind),
    /// 400, closing the connection: the transport failed to deliver the body (for
    /// drivers that get the body from a host, e.g. the tower service).
    UnreadableBody,
    /// 408, closing the connection: the body did not arrive within the body deadline.
    BodyTimeout,
    /// 503 with `Retry-After` (seconds), closing the connection: the server is not
    /// running (not started yet, or shutting down).
    Unavailable {
        /// What `Retry-After` tells the peer.
        retry_after_secs: u32,
    },
}

impl Rejection {
    /// The status code the peer gets.
    #[must_use]
    pub const fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::SignatureHeader(..) | Self::InvalidSignature | Self::TimestampOutsideWindow => {
                StatusCode::UNAUTHORIZED
            }
            Self::InvalidContentLength
            | Self::EmptyBody
            | Self::NotJsonObject
            | Self::InvalidType
            | Self::InvalidEvent(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedType(_) | Self::NoHandler(_) | Self::UnsupportedEventType(_) => {
                StatusCode::NOT_IMPLEMENTED
            }
            Self::UnreadableInteraction | Self::UnreadableEvent(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Self::UnreadableBody => StatusCode::BAD_REQUEST,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `text/plain; charset=utf-8` response for the peer: status, message
    /// and, for 405, `Allow: POST`.
    #[must_use]
    pub fn into_response(self) -> Response<ResponseBody> {
        let mut response = text_response(self.status(), Bytes::from(self.to_string()));
        let headers = response.headers_mut();
        match self {
            Self::MethodNotAllowed => {
                headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            Self::Unavailable { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            // The byte stream may be out of step with the request: do not reuse it.
            Self::UnreadableBody | Self::BodyTimeout => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

impl fmt::Display for Rejection {
    /// The message sent to the peer.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound => f.write_str("Not Found"),
            Self::MethodNotAllowed => f.write_str("Method Not Allowed: use POST"),
            Self::UnsupportedMediaType => {
                f.write_str("Unsupported Media Type: Content-Type must be application/json")
            }
            Self::SignatureHeader(which, HeaderProblem::Missing) => {
                write!(f, "Missing {} header", which.name())
            }
            Self::SignatureHeader(which, HeaderProblem::Repeated) => {
                write!(f, "Repeated {} header", which.name())
            }
            Self::SignatureHeader(SignatureHeader::Signature, HeaderProblem::Malformed) => {
                f.write_str("X-Signature-Ed25519 must be exactly 128 hexadecimal digits")
            }
            Self::SignatureHeader(SignatureHeader::Timestamp, HeaderProblem::Malformed) => {
                f.write_str("X-Signature-Timestamp must be non-empty visible ASCII")
            }
            Self::InvalidContentLength => f.write_str("Invalid Content-Length header"),
            Self::PayloadTooLarge(limit) => {
                write!(
                    f,
                    "Content Too Large: the body may be at most {limit} bytes"
                )
            }
            Self::EmptyBody => f.write_str("Empty request body"),
            Self::InvalidSignature => f.write_str("Invalid request signature"),
            Self::TimestampOutsideWindow => {
                f.write_str("X-Signature-Timestamp is outside the accepted window")
            }
            Self::NotJsonObject => f.write_str("Body is not a JSON object"),
            Self::InvalidType => f.write_str("Interaction type is missing or not an integer"),
            Self::UnsupportedType(kind) => write!(f, "Unsupported interaction type {kind}"),
            Self::UnreadableInteraction => f.write_str("Could not read the interaction"),
            Self::NoHandler(kind) => write!(f, "No handler for {} interactions", kind.name()),
            Self::InvalidEvent(field) => write!(f, "Invalid webhook event: {}", field.describe()),
            Self::UnsupportedEventType(kind) => write!(f, "Unsupported webhook event type {kind}"),
            Self::UnreadableEvent(name) => write!(f, "Could not read the {name} event"),
            Self::UnreadableBody => f.write_str("Bad Request: unreadable body"),
            Self::BodyTimeout => f.write_str("Request Timeout: the body did not arrive in time"),
            Self::Unavailable { .. } => {
                f.write_str("Service Unavailable: the interaction service is not running")
            }
        }
    }
}

impl std::error::Error for Rejection {}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn transport_rejections_close_the_connection() {
        for (rejection, status) in [
            (Rejection::UnreadableBody, 400),
            (Rejection::BodyTimeout, 408),
            (
                Rejection::Unavailable {
                    retry_after_secs: 5,
                },
                503,
            ),
        ] {
            let response = rejection.clone().into_response();
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(response.headers()[header::CONNECTION], "close");
            assert_eq!(
                response.headers()[header::CONTENT_TYPE],
                "text/plain; charset=utf-8"
            );
            if status == 503 {
                assert_eq!(response.headers()[header::RETRY_AFTER], "5");
            }
            let ResponseBody::Full(body) = response.into_body() else {
                panic!("text body")
            };
            assert_eq!(body, rejection.to_string());
        }
    }
}
