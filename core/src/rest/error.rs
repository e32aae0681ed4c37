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

/// Error bodies longer than this are not decoded (Discord's are a few KiB at
/// most; anything larger is not its error JSON and would only cost memory).
const MAX_ERROR_BODY: usize = 1024 * 1024;

/// How deep [`DiscordError::field_errors`] descends into the `errors` tree.
const MAX_ERROR_DEPTH: usize = 32;

/// How many entries [`DiscordError::field_errors`] lists at most.
const MAX_FIELD_ERRORS: usize = 256;

impl DiscordError {
    /// `10008`: the message does not exist (e.g. a deleted follow-up).
    pub const UNKNOWN_MESSAGE: u64 = 10008;
    /// `10015`: the webhook does not exist (e.g. an expired interaction token).
    pub const UNKNOWN_WEBHOOK: u64 = 10015;
    /// `10062`: the interaction does not exist or its token expired (answer
    /// within 3 seconds, follow up within 15 minutes).
    pub const UNKNOWN_INTERACTION: u64 = 10062;
    /// `10063`: the application command does not exist.
    pub const UNKNOWN_APPLICATION_COMMAND: u64 = 10063;
    /// `40060`: the interaction has already been acknowledged (answered twice).
    pub const ALREADY_ACKNOWLEDGED: u64 = 40060;
    /// `50001`: the bot lacks access to the resource.
    pub const MISSING_ACCESS: u64 = 50001;
    /// `50013`: the bot lacks a permission.
    pub const MISSING_PERMISSIONS: u64 = 50013;
    /// `50035`: the body is invalid; see [`DiscordError::field_errors`].
    pub const INVALID_FORM_BODY: u64 = 50035;

    /// Decode Discord's error JSON; `None` when the body is something else
    /// (a proxy's HTML page, empty, malformed, or larger than 1 MiB).
    #[must_use]
    pub fn from_body(body: &[u8]) -> Option<Self> {
        if body.len() > MAX_ERROR_BODY {
            return None;
        }
        serde_json::from_slice(body).ok()
    }

    /// Whether Discord's error code is `code` (e.g. [`Self::UNKNOWN_INTERACTION`]).
    #[must_use]
    pub fn is(&self, code: u64) -> bool {
        self.code == code
    }

    /// The leaves of the `errors` tree: each field path (`embeds[0].title`,
    /// or empty for the body itself) with the error code and message Discord
    /// gave for it, ordered by path (keys sorted, indices as text). Bounded in depth and count, so a
    /// hostile body costs little; malformed entries are skipped.
    ///
    /// ```
    /// # use yuyo_core::rest::DiscordError;
    /// let body = br#"{"code": 50035, "message": "Invalid Form Body", "errors":
    ///     {"embeds": {"0": {"title": {"_errors": [
    ///         {"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 256 or fewer in length."}
    ///     ]}}}}}"#;
    /// let error = DiscordError::from_body(body).unwrap();
    /// let fields = error.field_errors();
    /// assert_eq!(fields[0].path, "embeds[0].title");
    /// assert_eq!(fields[0].code, "BASE_TYPE_MAX_LENGTH");
    /// ```
    #[must_use]
    pub fn field_errors(&self) -> Vec<FieldError> {
        let mut out = Vec::new();
        if let Some(errors) = &self.errors {
            collect_field_errors(errors, &mut String::new(), 0, &mut out);
        }
        out
    }
}

/// One invalid field of a request body, from Discord's `errors` tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Where: object keys joined with `.`, array indices as `[n]`
    /// (`components[0].components[1].label`); empty for the body itself.
    pub path: String,
    /// Discord's code for the problem (e.g. `BASE_TYPE_REQUIRED`); may be empty.
    pub code: String,
    /// The human-readable message; may be empty.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(body)"
        } else {
            &self.path
        };
        write!(f, "{path}: {} ({})", self.message, self.code)
    }
}

/// Walk Discord's `errors` tree: objects keyed by field names or indices,
/// with `_errors: [{code, message}]` lists at the leaves.
fn collect_field_errors(
    node: &serde_json::Value,
    path: &mut String,
    depth: usize,
    out: &mut Vec<FieldError>,
) {
    let serde_json::Value::Object(map) = node else {
        return;
    };
    if depth > MAX_ERROR_DEPTH {
        return;
    }
    for (key, value) in map {
        if out.len() >= MAX_FIELD_ERRORS {
            return;
        }
        if key == "_errors" {
            push_leaf_errors(value, path, out);
            continue;
        }
        let before = path.len();
        if !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit()) {
            path.push('[');
            path.push_str(key);
            path.push(']');
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(key);
        }
        collect_field_errors(value, path, depth + 1, out);
        path.truncate(before);
    }
}

fn push_leaf_errors(list: &serde_json::Value, path: &str, out: &mut Vec<FieldError>) {
    let serde_json::Value::Array(items) = list else {
        return;
    };
    for item in items {
        if out.len() >= MAX_FIELD_ERRORS {
            return;
        }
        let text = |name: &str| {
            item.get(name)
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        out.push(FieldError {
            path: path.to_owned(),
            code: text("code"),
            message: text("message"),
        });
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

impl HttpError {
    /// Discord's JSON error code, when the body is its error JSON.
    #[must_use]
    pub fn code(&self) -> Option<u64> {
        self.discord.as_ref().map(|discord| discord.code)
    }

    /// Discord's error message, when the body is its error JSON.
    #[must_use]
    pub fn message(&self) -> Option<&str> {
        self.discord
            .as_ref()
            .map(|discord| discord.message.as_str())
    }

    /// The invalid fields Discord listed ([`DiscordError::field_errors`]).
    #[must_use]
    pub fn field_errors(&self) -> Vec<FieldError> {
        self.discord
            .as_ref()
            .map(DiscordError::field_errors)
            .unwrap_or_default()
    }

    /// `400 Bad Request`.
    #[must_use]
    pub fn is_bad_request(&self) -> bool {
        self.status == StatusCode::BAD_REQUEST
    }

    /// `401 Unauthorized`: the token is invalid.
    #[must_use]
    pub fn is_unauthorized(&self) -> bool {
        self.status == StatusCode::UNAUTHORIZED
    }

    /// `403 Forbidden`: the bot may not do this.
    #[must_use]
    pub fn is_forbidden(&self) -> bool {
        self.status == StatusCode::FORBIDDEN
    }

    /// `404 Not Found`.
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        self.status == StatusCode::NOT_FOUND
    }

    /// `429 Too Many Requests` (normally waited out by the client; seen here
    /// only when handed over unretried).
    #[must_use]
    pub fn is_rate_limited(&self) -> bool {
        self.status == StatusCode::TOO_MANY_REQUESTS
    }

    /// Error code 10062: the interaction is unknown or its token expired.
    #[must_use]
    pub fn is_unknown_interaction(&self) -> bool {
        self.code() == Some(DiscordError::UNKNOWN_INTERACTION)
    }

    /// Error code 40060: the interaction was already acknowledged.
    #[must_use]
    pub fn is_already_acknowledged(&self) -> bool {
        self.code() == Some(DiscordError::ALREADY_ACKNOWLEDGED)
    }
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

    /// The status Discord answered with, for [`RestError::Http`] (directly or
    /// as the last retry).
    #[must_use]
    pub fn status(&self) -> Option<StatusCode> {
        self.http().map(|http| http.status)
    }

    /// Discord's JSON error code, when the failure is an answer carrying one.
    #[must_use]
    pub fn code(&self) -> Option<u64> {
        self.http().and_then(HttpError::code)
    }

    /// Discord answered `401 Unauthorized`.
    #[must_use]
    pub fn is_unauthorized(&self) -> bool {
        self.http().is_some_and(HttpError::is_unauthorized)
    }

    /// Discord answered `403 Forbidden`.
    #[must_use]
    pub fn is_forbidden(&self) -> bool {
        self.http().is_some_and(HttpError::is_forbidden)
    }

    /// Discord answered `404 Not Found`.
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        self.http().is_some_and(HttpError::is_not_found)
    }

    /// A rate limit stopped the call: a wait longer than `max_rate_limit`
    /// ([`RestError::RateLimitTooLong`]) or a `429` answer.
    #[must_use]
    pub fn is_rate_limited(&self) -> bool {
        matches!(self, Self::RateLimitTooLong { .. })
            || self.http().is_some_and(HttpError::is_rate_limited)
    }

    /// Error code 10062: the interaction is unknown or its token expired.
    #[must_use]
    pub fn is_unknown_interaction(&self) -> bool {
        self.http().is_some_and(HttpError::is_unknown_interaction)
    }

    /// Error code 40060: the interaction was already acknowledged.
    #[must_use]
    pub fn is_already_acknowledged(&self) -> bool {
        self.http().is_some_and(HttpError::is_already_acknowledged)
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
