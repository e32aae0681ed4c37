//! The health check a load balancer polls: `GET` at [`EndpointConfig::health_path`]
//! answers 200 while the server serves and 503 once its shutdown began, so the balancer
//! stops sending new interactions to a replica before it stops accepting them.
//!
//! [`EndpointConfig::health_path`]: super::EndpointConfig::health_path

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use super::response::{ResponseBody, text_response};

/// Whether the server still takes new work; shared by every clone of an
/// [`Endpoint`](super::Endpoint) and flipped once, when shutdown begins.
#[derive(Clone, Debug, Default)]
pub struct Health {
    draining: Arc<AtomicBool>,
}

impl Health {
    /// Marks the server as shutting down: the health check answers 503 from now on.
    /// Idempotent; the adapters call it when a shutdown is requested.
    pub fn begin_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether the health check answers 200.
    #[must_use]
    pub fn is_serving(&self) -> bool {
        !self.draining.load(Ordering::Relaxed)
    }

    /// The answer to a health check made with `method` now.
    #[must_use]
    pub fn check(&self, method: &http::Method) -> HealthCheck {
        if method != http::Method::GET {
            HealthCheck::WrongMethod
        } else if self.is_serving() {
            HealthCheck::Serving
        } else {
            HealthCheck::Draining
        }
    }
}

/// What a request for the health path is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HealthCheck {
    /// 200 `ok`: serving.
    Serving,
    /// 503 `draining` with `Connection: close`: shutdown began.
    Draining,
    /// 405 with `Allow: GET`: the health check is a `GET`.
    WrongMethod,
}

impl HealthCheck {
    /// The status the peer gets.
    #[must_use]
    pub const fn status(self) -> StatusCode {
        match self {
            Self::Serving => StatusCode::OK,
            Self::Draining => StatusCode::SERVICE_UNAVAILABLE,
            Self::WrongMethod => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// The `text/plain` response.
    #[must_use]
    pub fn into_response(self) -> Response<ResponseBody> {
        let body = match self {
            Self::Serving => "ok",
            Self::Draining => "draining",
            Self::WrongMethod => "Method Not Allowed: use GET",
        };
        let mut response = text_response(self.status(), Bytes::from_static(body.as_bytes()));
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self {
            Self::Serving => {}
            // The balancer's next check should open a new connection, which may reach
            // the replica that replaces this one.
            Self::Draining => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Self::WrongMethod => {
                headers.insert(header::ALLOW, HeaderValue::from_static("GET"));
            }
        }
        response
    }
}
