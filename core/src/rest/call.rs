//! One REST call as a state machine: the client hands out requests to send
//! and waits to observe, and decides from the answers what comes next.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde::de::DeserializeOwned;

use super::auth::Auth;
use super::config::RestConfig;
use super::error::{DiscordError, HttpError, RestError, TransportError, TransportErrorKind};
use super::ratelimit::{Permit, RateLimiter, WaitReason, WaitUntil, later};
use super::request::{RequestBody, RestRequest};
use super::route::RouteKey;

/// A REST client: the configuration plus a factory of [`Call`]s. Cheap to
/// clone. It holds no rate-limit state: that is the [`RateLimiter`] the
/// driver keeps (one per client, behind its mutex) and passes to each call.
#[derive(Clone, Debug)]
pub struct Rest {
    config: Arc<RestConfig>,
    calls: Arc<AtomicU64>,
}

impl Rest {
    /// A client with `config`.
    #[must_use]
    pub fn new(config: RestConfig) -> Self {
        Self {
            config: Arc::new(config),
            calls: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &RestConfig {
        &self.config
    }

    /// A fresh rate limiter for this client's settings.
    #[must_use]
    pub fn rate_limiter(&self) -> RateLimiter {
        RateLimiter::from_config(&self.config)
    }

    /// Start a call; drive it with [`Call::poll`] (see the module docs).
    #[must_use]
    pub fn call<T>(&self, request: RestRequest<T>) -> Call<T> {
        let salt = self.calls.fetch_add(1, Ordering::Relaxed);
        Call {
            config: self.config.clone(),
            request,
            state: State::Ready { not_before: None },
            sends: 0,
            failures: 0,
            salt,
            waiting: None,
        }
    }

    /// The HTTP request `request` goes out as at `now`: URL, `User-Agent`,
    /// `Authorization` (for authenticated routes), `Content-Type`,
    /// `Content-Length` when known, `X-Audit-Log-Reason`.
    ///
    /// # Errors
    /// [`RestError::Token`] when the token strategy has no token.
    pub fn build<T>(
        &self,
        request: &RestRequest<T>,
        now: Instant,
    ) -> Result<(http::Request<RequestBody>, Option<HeaderValue>), RestError> {
        build(&self.config, request, now)
    }
}

fn build<T>(
    config: &RestConfig,
    request: &RestRequest<T>,
    now: Instant,
) -> Result<(http::Request<RequestBody>, Option<HeaderValue>), RestError> {
    let route = request.route();
    let authorization = match (&config.auth, route.is_authenticated()) {
        (Auth::Strategy(strategy), true) => {
            let mut value = strategy.authorization(now).map_err(RestError::Token)?;
            value.set_sensitive(true);
            Some(value)
        }
        (Auth::Strategy(_), false) | (Auth::None, _) => None,
    };
    let mut out = http::Request::new(request.body().clone());
    *out.method_mut() = route.method().clone();
    let uri = format!("{}{}", config.rest_url, route.path());
    // Both halves are validated when built, so this parse succeeds; the
    // fallback keeps the function total.
    *out.uri_mut() = uri.parse().unwrap_or_default();
    let headers = out.headers_mut();
    headers.insert(header::USER_AGENT, config.user_agent.clone());
    if let Some(value) = &authorization {
        headers.insert(header::AUTHORIZATION, value.clone());
    }
    if let Some(content_type) = request.body().content_type() {
        headers.insert(header::CONTENT_TYPE, content_type);
    }
    let has_body = !matches!(request.body(), RequestBody::Empty);
    let wants_length =
        has_body || matches!(*route.method(), Method::POST | Method::PUT | Method::PATCH);
    if let (true, Some(len)) = (wants_length, request.body().content_length()) {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    if let Some(reason) = request.audit_log_reason() {
        headers.insert("x-audit-log-reason", reason.clone());
    }
    Ok((out, authorization))
}

/// A successful answer, whose body decodes to `T`.
pub struct Response<T> {
    route: RouteKey,
    inner: http::Response<Bytes>,
    model: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Response<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("route", &self.route)
            .field("status", &self.inner.status())
            .field("body_len", &self.inner.body().len())
            .finish()
    }
}

impl<T> Response<T> {
    /// The route that was called.
    #[must_use]
    pub fn route(&self) -> &RouteKey {
        &self.route
    }

    /// The status (a success).
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.inner.status()
    }

    /// The headers.
    #[must_use]
    pub fn headers(&self) -> &HeaderMap {
        self.inner.headers()
    }

    /// The body.
    #[must_use]
    pub fn body(&self) -> &Bytes {
        self.inner.body()
    }

    /// The HTTP response.
    #[must_use]
    pub fn into_http(self) -> http::Response<Bytes> {
        self.inner
    }
}

impl<T: DeserializeOwned> Response<T> {
    /// Decode the body (an empty body decodes as JSON `null`, which is what
    /// [`NoContent`](super::NoContent) expects).
    ///
    /// # Errors
    /// [`RestError::Decode`] when the body is not a `T`.
    pub fn model(&self) -> Result<T, RestError> {
        let body: &[u8] = match self.inner.body().as_ref() {
            b"" => b"null",
            body => body,
        };
        serde_json::from_slice(body).map_err(|error| RestError::Decode {
            route: self.route.clone(),
            message: error.to_string(),
        })
    }
}

/// What the driver does next; returned by [`Call::poll`].
#[must_use]
pub enum Step<T> {
    /// Send this request, then report the outcome with
    /// [`Call::on_response`] or [`Call::on_transport_error`].
    Send(http::Request<RequestBody>),
    /// Poll again at `until` (or earlier, when
    /// [`WaitUntil::wakes_on_update`] and the limiter's version changed).
    Wait(WaitUntil),
    /// The call is over.
    Done(Result<Response<T>, RestError>),
    /// The request from the last `Send` has not been reported yet (a driver
    /// bug if seen in the standard loop).
    InFlight,
}

impl<T> fmt::Debug for Step<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Send(request) => f
                .debug_struct("Send")
                .field("method", request.method())
                .field("headers", request.headers())
                .finish_non_exhaustive(),
            Self::Wait(wait) => f.debug_tuple("Wait").field(wait).finish(),
            Self::Done(result) => f.debug_tuple("Done").field(result).finish(),
            Self::InFlight => f.write_str("InFlight"),
        }
    }
}

enum State<T> {
    /// Ready to ask the limiter, not before the given instant.
    Ready {
        not_before: Option<(Instant, WaitReason)>,
    },
    /// Sent under `permit` with `authorization`.
    Sent {
        permit: Permit,
        authorization: Option<HeaderValue>,
    },
    /// Over: the result until `poll` takes it.
    Finished(Option<Result<Response<T>, RestError>>),
}

/// One REST call: send, wait, retry, until done. Created by [`Rest::call`].
pub struct Call<T> {
    config: Arc<RestConfig>,
    request: RestRequest<T>,
    state: State<T>,
    sends: u32,
    failures: u32,
    salt: u64,
    /// Since when, and first why, the call has been waiting to be sent (for metrics).
    waiting: Option<(Instant, WaitReason)>,
}

impl<T> fmt::Debug for Call<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Ready { .. } => "ready",
            State::Sent { .. } => "sent",
            State::Finished(_) => "finished",
        };
        f.debug_struct("Call")
            .field("route", self.request.route())
            .field("state", &state)
            .field("sends", &self.sends)
            .field("failures", &self.failures)
            .finish()
    }
}

/// Methods whose requests may be repeated after they may have reached
/// Discord. `PATCH` is included: Discord's edits set fields, so repeating one
/// is harmless.
fn repeatable(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::PATCH
    )
}

impl<T> Call<T> {
    /// The request this call sends.
    #[must_use]
    pub fn request(&self) -> &RestRequest<T> {
        &self.request
    }

    /// How many times the request has been sent.
    #[must_use]
    pub fn sends(&self) -> u32 {
        self.sends
    }

    fn route(&self) -> RouteKey {
        self.request.route().key().clone()
    }

    fn finish(&mut self, result: Result<Response<T>, RestError>) {
        self.state = State::Finished(Some(result));
    }

    /// What to do next at `now`. Call it first, and after every
    /// `on_response` / `on_transport_error` and every wait.
    pub fn poll(&mut self, now: Instant, limiter: &mut RateLimiter) -> Step<T> {
        match &mut self.state {
            State::Finished(result) => {
                return Step::Done(result.take().unwrap_or(Err(RestError::CallFinished)));
            }
            State::Sent { .. } => return Step::InFlight,
            State::Ready {
                not_before: Some((until, reason)),
            } if *until > now => {
                self.waiting.get_or_insert((now, *reason));
                return Step::Wait(WaitUntil {
                    until: *until,
                    reason: *reason,
                });
            }
            State::Ready { .. } => {}
        }
        let key = self.request.route().rate_limit_key();
        match limiter.acquire(&key, now) {
            Err(wait) => {
                let too_long = match (wait.reason, self.config.max_rate_limit) {
                    (WaitReason::Bucket | WaitReason::Global, Some(max)) => {
                        wait.until.saturating_duration_since(now) > max
                    }
                    _ => false,
                };
                if too_long {
                    let result = Err(RestError::RateLimitTooLong {
                        wait: wait.until.saturating_duration_since(now),
                        route: self.route(),
                        global: wait.reason == WaitReason::Global,
                    });
                    self.state = State::Finished(None);
                    return Step::Done(result);
                }
                self.waiting.get_or_insert((now, wait.reason));
                Step::Wait(wait)
            }
            Ok(permit) => match build(&self.config, &self.request, now) {
                Ok((request, authorization)) => {
                    self.sends += 1;
                    if let Some((since, reason)) = self.waiting.take() {
                        crate::metrics::rest_waited(reason, now.saturating_duration_since(since));
                    }
                    self.state = State::Sent {
                        permit,
                        authorization,
                    };
                    Step::Send(request)
                }
                Err(error) => {
                    limiter.release(permit, now);
                    self.state = State::Finished(None);
                    Step::Done(Err(error))
                }
            },
        }
    }

    fn take_sent(&mut self) -> Option<(Permit, Option<HeaderValue>)> {
        match std::mem::replace(&mut self.state, State::Ready { not_before: None }) {
            State::Sent {
                permit,
                authorization,
            } => Some((permit, authorization)),
            other @ (State::Ready { .. } | State::Finished(_)) => {
                tracing::debug!(route = %self.request.route().key(), "outcome reported for a call with nothing in flight; ignored");
                self.state = other;
                None
            }
        }
    }

    /// The limits shared with the bot's other processes hold the request of the last
    /// `Send` back until `wait`: it goes back unsent (its permit cancelled), or fails
    /// when that is longer than `max_rate_limit`.
    #[cfg(feature = "transport")]
    pub(crate) fn defer(&mut self, now: Instant, wait: WaitUntil, limiter: &mut RateLimiter) {
        let Some((permit, _)) = self.take_sent() else {
            return;
        };
        limiter.cancel(permit, now);
        self.sends = self.sends.saturating_sub(1);
        let delay = wait.until.saturating_duration_since(now);
        let too_long = matches!(wait.reason, WaitReason::Bucket | WaitReason::Global)
            && self.config.max_rate_limit.is_some_and(|max| delay > max);
        if too_long {
            self.finish(Err(RestError::RateLimitTooLong {
                wait: delay,
                route: self.route(),
                global: wait.reason == WaitReason::Global,
            }));
        } else {
            self.state = State::Ready {
                not_before: Some((wait.until, wait.reason)),
            };
        }
    }

    /// Retry after a failure at `now`, or give up with `error` when the
    /// retries are used up.
    fn retry_or_fail(&mut self, now: Instant, error: RestError) {
        self.failures += 1;
        if self.failures > self.config.max_retries {
            self.finish(Err(RestError::RetriesExhausted {
                attempts: self.sends,
                last: Box::new(error),
            }));
        } else {
            let delay = self.config.backoff.delay(self.failures, self.salt);
            tracing::debug!(route = %self.request.route().key(), retry = self.failures, ?delay, "retrying: {error}");
            self.state = State::Ready {
                not_before: Some((later(now, delay), WaitReason::Retry)),
            };
        }
    }

    /// The request was answered with `response` at `now`.
    pub fn on_response(
        &mut self,
        now: Instant,
        response: http::Response<Bytes>,
        limiter: &mut RateLimiter,
    ) {
        let Some((permit, authorization)) = self.take_sent() else {
            return;
        };
        let status = response.status();
        let limited = limiter.update(permit, status, response.headers(), response.body(), now);
        crate::metrics::rest_answered(self.request.route().key(), Some(status));
        if let Some(limited) = &limited {
            crate::metrics::rest_rate_limited(limited);
        }
        if status.is_success() {
            self.finish(Ok(Response {
                route: self.route(),
                inner: response,
                model: PhantomData,
            }));
            return;
        }
        if let Some(limited) = limited {
            if self
                .config
                .max_rate_limit
                .is_some_and(|max| limited.retry_after > max)
            {
                self.finish(Err(RestError::RateLimitTooLong {
                    wait: limited.retry_after,
                    route: self.route(),
                    global: limited.global,
                }));
            } else {
                self.state = State::Ready {
                    not_before: Some((later(now, limited.retry_after), WaitReason::RetryAfter)),
                };
            }
            return;
        }
        if status == StatusCode::UNAUTHORIZED
            && let (Auth::Strategy(strategy), Some(rejected)) = (&self.config.auth, &authorization)
        {
            strategy.invalidate(rejected);
        }
        let (parts, body) = response.into_parts();
        let error = RestError::Http(Box::new(HttpError {
            route: self.route(),
            status,
            discord: DiscordError::from_body(&body),
            headers: parts.headers,
            body,
        }));
        if status.is_server_error() {
            self.retry_or_fail(now, error);
        } else {
            self.finish(Err(error));
        }
    }

    /// The request failed without an answer at `now`. Requests that were not
    /// sent ([`TransportErrorKind::Connect`]) are retried; the others only
    /// when their method may be repeated (not `POST`, so a follow-up is never
    /// created twice).
    pub fn on_transport_error(
        &mut self,
        now: Instant,
        error: TransportError,
        limiter: &mut RateLimiter,
    ) {
        let Some((permit, _)) = self.take_sent() else {
            return;
        };
        match error.kind {
            TransportErrorKind::Connect => limiter.cancel(permit, now),
            TransportErrorKind::Timeout | TransportErrorKind::Io => limiter.release(permit, now),
        }
        let route = self.route();
        crate::metrics::rest_answered(&route, None);
        let kind = error.kind;
        let rest_error = match kind {
            TransportErrorKind::Timeout => RestError::Timeout { route },
            TransportErrorKind::Connect | TransportErrorKind::Io => {
                RestError::Transport { route, error }
            }
        };
        let retriable =
            kind == TransportErrorKind::Connect || repeatable(self.request.route().method());
        if retriable {
            self.retry_or_fail(now, rest_error);
        } else {
            self.finish(Err(rest_error));
        }
    }
}
