//! What can go wrong with a REST call.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;

use super::auth::TokenError;
use super::route::{InvalidPath, RouteKey};

/// Discord's JSON error body (`{"code": 50035, "message": "...", "errors": {...}}`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct DiscordError {
    /// Discord's JSON error code (e.g. 10062 "Unknown interaction").
    pub code: u64,
    /// The human-readable message.
    pub message: String,
    /// Per-field errors for invalid form bodies, as sent.
    #[serde(default)]
    pub errors: Option<serde_json::Value>,
}

impl DiscordError {
    /// Decode Discord's error JSON; `None` when the body is something else
    /// (a proxy's HTML page, empty).
    #[must_use]
    pub fn from_body(body: &[u8]) -> Option<Self> {
        serde_json::from_slice(body).ok()
    }
}

/// Discord (or whatever answered) returned a status that is not a success.
#[derive(Clone, Debug)]
pub struct HttpError {
    /// The route the request was for.
    pub route: RouteKey,
    /// The status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body as received.
    pub body: Bytes,
    /// The body decoded as Discord's error JSON, when it is that.
    pub discord: Option<DiscordError>,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} answered {}", self.route, self.status)?;
        if let Some(discord) = &self.discord {
            write!(f, ": {} (code {})", discord.message, discord.code)?;
        }
        Ok(())
    }
}

/// How a transport (the adapter's HTTP client) failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportErrorKind {
    /// The request was not sent (DNS, connect, TLS handshake, proxy): always
    /// safe to retry.
    Connect,
    /// No complete answer in time after (part of) the request was sent.
    Timeout,
    /// The connection failed after (part of) the request was sent.
    Io,
}

/// A transport failure reported by the driver with
/// [`Call::on_transport_error`](super::Call::on_transport_error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportError {
    /// What failed.
    pub kind: TransportErrorKind,
    /// The driver's description (must not hold secrets).
    pub message: String,
}

impl TransportError {
    /// A transport failure of `kind`.
    #[must_use]
    pub fn new(kind: TransportErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            TransportErrorKind::Connect => "could not connect",
            TransportErrorKind::Timeout => "timed out",
            TransportErrorKind::Io => "connection failed",
        };
        write!(f, "{what}: {}", self.message)
    }
}

/// Why a REST call failed.
#[derive(Clone, Debug)]
pub enum RestError {
    /// A non-success status that is not retried (4xx other than 429).
    Http(Box<HttpError>),
    /// Discord asked to wait longer than `max_rate_limit` (yuyo's
    /// `RateLimitTooLongError`).
    RateLimitTooLong {
        /// The wait that was asked for.
        wait: Duration,
        /// The route.
        route: RouteKey,
        /// Whether it was the global limit.
        global: bool,
    },
    /// The transport failed and the request could not safely be retried
    /// (it may have reached Discord and is not idempotent).
    Transport {
        /// The route.
        route: RouteKey,
        /// The failure.
        error: TransportError,
    },
    /// No answer in time, and the request could not safely be retried.
    Timeout {
        /// The route.
        route: RouteKey,
    },
    /// Every allowed retry failed too; holds the last failure.
    RetriesExhausted {
        /// How many times the request was sent.
        attempts: u32,
        /// The last failure (an [`RestError::Http`] 5xx, or a transport error).
        last: Box<RestError>,
    },
    /// No `Authorization` header could be produced.
    Token(TokenError),
    /// The answer was a success but its body is not the expected model.
    Decode {
        /// The route.
        route: RouteKey,
        /// The decoder's message.
        message: String,
    },
    /// `poll` was called after the call already returned `Done` (a driver bug).
    CallFinished,
}

impl RestError {
    /// The HTTP error, if this is one (directly or as the last retry).
    #[must_use]
    pub fn http(&self) -> Option<&HttpError> {
        match self {
            Self::Http(error) => Some(error),
            Self::RetriesExhausted { last, .. } => last.http(),
            Self::RateLimitTooLong { .. }
            | Self::Transport { .. }
            | Self::Timeout { .. }
            | Self::Token(_)
            | Self::Decode { .. }
            | Self::CallFinished => None,
        }
    }
}

impl fmt::Display for RestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Http(error) => error.fmt(f),
            Self::RateLimitTooLong {
                wait,
                route,
                global,
            } => {
                let which = if *global { "global" } else { "route" };
                write!(
                    f,
                    "{route}: {which} rate limit asks to wait {wait:?}, longer than max_rate_limit"
                )
            }
            Self::Transport { route, error } => write!(f, "{route}: {error}"),
            Self::Timeout { route } => write!(f, "{route}: timed out"),
            Self::RetriesExhausted { attempts, last } => {
                write!(f, "gave up after {attempts} attempts: {last}")
            }
            Self::Token(error) => error.fmt(f),
            Self::Decode { route, message } => {
                write!(f, "{route}: unexpected response body: {message}")
            }
            Self::CallFinished => f.write_str("the call already finished"),
        }
    }
}

impl std::error::Error for RestError {}

/// A REST transport could not be set up (e.g. TLS configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportSetupError(String);

impl TransportSetupError {
    /// A setup failure described by `message`.
    #[must_use]
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for TransportSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot set up the REST transport: {}", self.0)
    }
}

impl std::error::Error for TransportSetupError {}

/// Why an adapter's generic `request(method, path, body)` failed.
#[derive(Debug, Clone)]
pub enum RequestError {
    /// The path is not usable as a route.
    InvalidPath(InvalidPath),
    /// The call failed.
    Rest(RestError),
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidPath(e) => write!(f, "invalid path: {e}"),
            Self::Rest(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for RequestError {}
