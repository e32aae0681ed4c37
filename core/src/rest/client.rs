//! The whole REST client as one sans-IO state machine: a [`Call`]'s rate limits and
//! retries joined to the transport's [`Exchange`]s, the keep-alive pool and the
//! limiter every call of a client shares.
//!
//! Each call is one loop, polled until [`Output::Done`] (the loop is
//! [`RestClient`](super::RestClient)'s, over an adapter's runtime):
//!
//! ```ignore
//! let mut call = client.call(request);          // client: Arc<Client<Stream>>
//! let mut file = None;                          // the open request file, if any
//! loop {
//!     let input = match call.poll_output(now()) {
//!         Output::Io(io) => perform(io, &mut file).await,  // connect, write, read, files
//!         Output::Sleep { until, wake_after } => {
//!             // sleep until `until`, or until `client.changes()` passes `wake_after`
//!             sleep(until, wake_after).await;
//!             Input::Woke
//!         }
//!         Output::Notify(version) => { client.changes().announce(version); continue }
//!         Output::Done(result) => return result,
//!     };
//!     call.handle_input(now(), input);
//! }
//! ```
//!
//! Dropping a call while its request is in flight hands its rate-limit permit back as
//! a request that may have reached Discord, and wakes the calls waiting on it.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use event_listener::{Event, EventListener};

use super::call::{Call, Response, Rest, Step};
use super::config::RestConfig;
use super::error::{RestError, TransportError, TransportErrorKind};
use super::ratelimit::{RateLimiter, later};
use super::request::{RequestBody, RestRequest};
use super::shared::{
    Failure, Finished, Grant, MAX_IDLE, Outcome, RoundTrip, SharedLimiter, Ticket,
};
use super::transport::{
    Exchange, HttpSettings, Input as IoInput, Io, Pool, Pooled, ProxySettings, Transport,
};
use crate::rest::TransportSetupError;

/// A connection the adapter opened, as the pool needs to see it.
pub trait PooledStream {
    /// Whether an idle pooled connection can carry another request: the peer has not
    /// closed it and sent nothing unasked. Must not block.
    fn is_reusable(&self) -> bool;
}

/// The latest version announced (of a client's rate limiter, of a bot's lifecycle) and
/// an event fired when it grows: what rate-limit and lifecycle waits wake on.
#[derive(Debug, Default)]
pub struct Changes {
    latest: AtomicU64,
    event: Event,
}

impl Changes {
    /// `version` is current: wake every waiter on an older one. Versions only grow; an
    /// older one announced late is ignored.
    pub fn announce(&self, version: u64) {
        if self.latest.fetch_max(version, Ordering::SeqCst) < version {
            self.event.notify(usize::MAX);
        }
    }

    /// A listener fired by the next announcement of a newer version; `None` when a
    /// version newer than `version` is already announced (nothing to wait for).
    #[must_use]
    pub fn listen_after(&self, version: u64) -> Option<EventListener> {
        let listener = self.event.listen();
        (self.latest.load(Ordering::SeqCst) <= version).then_some(listener)
    }
}

struct Shared<S> {
    limiter: RateLimiter,
    pool: Pool<Pooled<S>>,
    redis: RedisHealth<S>,
}

/// The connections to Redis and whether it answers (shared limits only).
struct RedisHealth<S> {
    idle: Vec<S>,
    /// Redis failed: it is not asked before this.
    down_until: Option<Instant>,
    /// The warning that it failed was logged (and recovery was not).
    warned: bool,
    /// Reports (and cancels of slots whose grant was lost) Redis has not confirmed:
    /// sent before the next command, so no slot stays held until it expires.
    backlog: VecDeque<Bytes>,
}

impl<S> RedisHealth<S> {
    fn is_down(&self, now: Instant) -> bool {
        self.down_until.is_some_and(|until| until > now)
    }

    /// Redis answered at `now`: keep `stream` for the next round trip. An answer while
    /// Redis counts as down is to a command sent before it failed (none is sent while it
    /// is down): it says nothing of Redis now, so it neither ends the pause nor logs a
    /// recovery that a next failure would warn about again.
    fn answered(&mut self, stream: Option<S>, now: Instant) {
        if self.is_down(now) {
            return;
        }
        self.down_until = None;
        if self.warned {
            self.warned = false;
            tracing::info!("Redis answers again: rate limits are shared with the other processes");
        }
        if let Some(stream) = stream
            && self.idle.len() < MAX_IDLE
        {
            self.idle.push(stream);
        }
    }

    /// Keeps `commands` for the next round trip (the oldest are dropped past
    /// [`MAX_BACKLOG`]: their slots expire on their own).
    fn postpone(&mut self, commands: impl IntoIterator<Item = Bytes>) {
        self.backlog.extend(commands);
        while self.backlog.len() > MAX_BACKLOG {
            self.backlog.pop_front();
        }
    }

    /// The backlog to send before the next command, at most [`BACKLOG_PER_TRIP`].
    fn take_backlog(&mut self) -> Vec<Bytes> {
        let n = self.backlog.len().min(BACKLOG_PER_TRIP);
        self.backlog.drain(..n).collect()
    }

    /// Redis failed at `now`: local limits only for a while, one warning.
    fn failed(&mut self, failure: &Failure, now: Instant, limits: &SharedLimiter) {
        let retry = limits.retry_delay();
        self.idle.clear();
        self.down_until = Some(later(now, retry));
        if !self.warned {
            self.warned = true;
            tracing::warn!(
                error = %failure,
                ?retry,
                key_prefix = limits.prefix(),
                "Redis rate limits unavailable: this process goes on under its own limits only"
            );
        }
    }
}

/// Unconfirmed Redis commands kept at most.
const MAX_BACKLOG: usize = 256;

/// Unconfirmed Redis commands sent before one command.
const BACKLOG_PER_TRIP: usize = 32;

/// What a Redis round trip of a call is for.
enum RedisStep {
    /// Asking for `ticket`; `request` goes once granted.
    Acquire(Ticket, Box<http::Request<RequestBody>>),
    /// Handing a ticket back with this command (in full, `EVAL`, to send again if
    /// unconfirmed).
    Report(Bytes),
}

/// A rate-limited Discord REST client over connections of type `S`: configuration,
/// transport settings, the shared rate limiter and the keep-alive pool. Use it as an
/// `Arc<Client<S>>`; clones of the adapter's client share it.
pub struct Client<S> {
    rest: Rest,
    transport: Transport,
    shared: Mutex<Shared<S>>,
    /// The limiter's versions announced to waiting calls.
    changes: Changes,
    /// The rate limits shared through Redis, when on.
    shared_limits: Option<SharedLimiter>,
}

impl<S> fmt::Debug for Client<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("rest", &self.rest)
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl<S> Client<S> {
    /// A client for `config` over a transport with `settings` and `proxy`.
    ///
    /// # Errors
    /// [`TransportSetupError`] when TLS cannot be configured.
    pub fn new(
        config: RestConfig,
        settings: HttpSettings,
        proxy: Option<ProxySettings>,
    ) -> Result<Self, TransportSetupError> {
        let shared_limits = SharedLimiter::new(&config);
        let rest = Rest::new(config);
        let pool = Pool::new(&settings);
        Ok(Self {
            shared: Mutex::new(Shared {
                limiter: rest.rate_limiter(),
                pool,
                redis: RedisHealth {
                    idle: Vec::new(),
                    down_until: None,
                    warned: false,
                    backlog: VecDeque::new(),
                },
            }),
            shared_limits,
            transport: Transport::new(settings, proxy)?,
            rest,
            changes: Changes::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Shared<S>> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What wakes the calls waiting on the rate limiter: every call's
    /// [`Output::Notify`] is announced here.
    #[must_use]
    pub fn changes(&self) -> &Changes {
        &self.changes
    }

    /// The sans-IO client (configuration).
    #[must_use]
    pub fn rest(&self) -> &Rest {
        &self.rest
    }

    /// The transport (HTTP and proxy settings).
    #[must_use]
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Runs `f` with the rate limiter locked.
    pub fn with_limiter<R>(&self, f: impl FnOnce(&mut RateLimiter) -> R) -> R {
        f(&mut self.lock().limiter)
    }

    /// Idle connections currently pooled (all hosts).
    #[must_use]
    pub fn idle_connections(&self) -> usize {
        self.lock().pool.len()
    }

    /// Closes every idle connection.
    pub fn clear_idle(&self) {
        self.lock().pool.clear();
    }

    /// A call of `request`, driven by the adapter.
    #[must_use]
    pub fn call<T>(self: &Arc<Self>, request: RestRequest<T>) -> ClientCall<T, S> {
        ClientCall {
            call: self.rest.call(request),
            client: Arc::clone(self),
            exchange: None,
            redis: None,
            ticket: None,
            notify: None,
            now: None,
        }
    }
}

/// What the adapter does next for a call; see the [module docs](self).
#[must_use]
pub enum Output<'a, T, S> {
    /// Perform this IO and report its [`Input`].
    Io(Io<'a, S>),
    /// Wait until `until`; when `wake_after` is set, also wake as soon as a
    /// [`Output::Notify`] of any call of this client carries a higher version. Then
    /// report [`Input::Woke`].
    Sleep {
        /// When to poll again.
        until: Instant,
        /// The rate limiter's version this wait was decided on.
        wake_after: Option<u64>,
    },
    /// The rate limiter changed (its version is this): wake the calls sleeping with a
    /// lower `wake_after`. Nothing is reported; poll again.
    Notify(u64),
    /// The call is over.
    Done(Result<Response<T>, RestError>),
}

impl<T, S> fmt::Debug for Output<'_, T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(_) => f.write_str("Io"),
            Self::Sleep { until, wake_after } => f
                .debug_struct("Sleep")
                .field("until", until)
                .field("wake_after", wake_after)
                .finish(),
            Self::Notify(version) => f.debug_tuple("Notify").field(version).finish(),
            Self::Done(result) => f.debug_tuple("Done").field(&result.is_ok()).finish(),
        }
    }
}

/// What the adapter reports after an [`Output`].
#[derive(Debug)]
pub enum Input<S> {
    /// The outcome of an [`Output::Io`].
    Io(IoInput<S>),
    /// An [`Output::Sleep`] ended.
    Woke,
}

/// One REST call over the transport; created by [`Client::call`].
pub struct ClientCall<T, S> {
    client: Arc<Client<S>>,
    call: Call<T>,
    exchange: Option<Exchange<S>>,
    /// A Redis round trip in progress (shared limits).
    redis: Option<(RoundTrip<S>, RedisStep)>,
    /// The Redis slot of the request in flight.
    ticket: Option<Ticket>,
    notify: Option<u64>,
    /// The last instant seen (for a drop while in flight).
    now: Option<Instant>,
}

impl<T, S> fmt::Debug for ClientCall<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCall")
            .field("call", &self.call)
            .field("in_flight", &self.exchange.is_some())
            .finish()
    }
}

impl<T, S: PooledStream> ClientCall<T, S> {
    /// What to do next at `now`.
    pub fn poll_output(&mut self, now: Instant) -> Output<'_, T, S> {
        self.now = Some(now);
        if let Some(version) = self.notify.take() {
            return Output::Notify(version);
        }
        if self.redis_in_progress(now) {
            return match self.redis.as_mut().and_then(|(trip, _)| trip.io()) {
                Some(io) => Output::Io(io),
                None => Output::Done(Err(RestError::CallFinished)),
            };
        }
        if self.exchange_in_progress(now) {
            return match self.exchange.as_mut().and_then(Exchange::io) {
                Some(io) => Output::Io(io),
                None => Output::Done(Err(RestError::CallFinished)),
            };
        }
        if let Some(version) = self.notify.take() {
            return Output::Notify(version);
        }
        let (step, version) = {
            let mut shared = self.client.lock();
            let step = self.call.poll(now, &mut shared.limiter);
            (step, shared.limiter.version())
        };
        match step {
            Step::Send(request) => {
                match self.start_acquire(now) {
                    Some((trip, ticket)) => {
                        self.redis = Some((trip, RedisStep::Acquire(ticket, Box::new(request))));
                    }
                    None => self.start_exchange(request, now),
                }
                self.poll_output(now)
            }
            Step::Wait(wait) => Output::Sleep {
                until: wait.until,
                wake_after: wait.wakes_on_update().then_some(version),
            },
            Step::Done(result) => Output::Done(result),
            Step::InFlight => Output::Done(Err(RestError::CallFinished)),
        }
    }

    /// Whether an exchange still needs IO; reports a finished one to the call.
    fn exchange_in_progress(&mut self, now: Instant) -> bool {
        let Some(exchange) = &mut self.exchange else {
            return false;
        };
        exchange.advance(now);
        let Some(outcome) = exchange.take_outcome() else {
            return true;
        };
        let finished = self.exchange.take();
        let report = self.ticket.take().and_then(|ticket| {
            let shared = self.client.shared_limits.as_ref()?;
            let outcome = match &outcome {
                Ok(response) => {
                    Outcome::Answered(response.status(), response.headers(), response.body())
                }
                Err(error) if error.kind == TransportErrorKind::Connect => Outcome::Cancelled,
                Err(_) => Outcome::Lost,
            };
            Some(shared.report(&ticket, &outcome))
        });
        let mut shared = self.client.lock();
        if let Some((origin, pooled)) = finished.and_then(Exchange::into_pooled) {
            shared.pool.put(origin, pooled, now);
        }
        if let (Some(command), Some(limits)) = (report, &self.client.shared_limits) {
            let again = Bytes::from(command.1.clone());
            if shared.redis.is_down(now) {
                shared.redis.postpone([again]);
            } else {
                let stream = take_idle(&mut shared.redis.idle);
                let backlog = shared.redis.take_backlog();
                let trip = limits.round_trip(stream, backlog, command, now);
                self.redis = Some((trip, RedisStep::Report(again)));
            }
        }
        match outcome {
            Ok(response) => self.call.on_response(now, response, &mut shared.limiter),
            Err(error) => self
                .call
                .on_transport_error(now, error, &mut shared.limiter),
        }
        self.notify = Some(shared.limiter.version());
        false
    }

    fn start_exchange(&mut self, request: http::Request<RequestBody>, now: Instant) {
        let mut exchange = match Exchange::new(&self.client.transport, request, now) {
            Ok(exchange) => exchange,
            Err(error) => {
                let mut shared = self.client.lock();
                self.call
                    .on_transport_error(now, error, &mut shared.limiter);
                self.notify = Some(shared.limiter.version());
                return;
            }
        };
        let pooled = self
            .client
            .lock()
            .pool
            .take(exchange.origin(), now, |pooled| pooled.stream.is_reusable());
        if let Some(pooled) = pooled {
            exchange.reuse(pooled, now);
        }
        self.exchange = Some(exchange);
    }

    /// A Redis round trip asking for the request's slot, when the shared limits apply
    /// to it and Redis is not known to be down.
    fn start_acquire(&mut self, now: Instant) -> Option<(RoundTrip<S>, Ticket)> {
        let limits = self.client.shared_limits.as_ref()?;
        let key = self.call.request().route().rate_limit_key();
        if !SharedLimiter::applies(&key) {
            return None;
        }
        let (stream, backlog) = {
            let mut shared = self.client.lock();
            if shared.redis.is_down(now) {
                return None;
            }
            let stream = take_idle(&mut shared.redis.idle);
            (stream, shared.redis.take_backlog())
        };
        let (ticket, command) = limits.acquire(&key);
        Some((limits.round_trip(stream, backlog, command, now), ticket))
    }

    /// Whether a Redis round trip still needs IO; acts on a finished one.
    fn redis_in_progress(&mut self, now: Instant) -> bool {
        let Some((trip, _)) = &mut self.redis else {
            return false;
        };
        trip.expire(now);
        let Some(Finished {
            reply,
            stream,
            unconfirmed,
        }) = trip.take_outcome()
        else {
            return true;
        };
        let (Some((_, step)), Some(limits)) = (self.redis.take(), &self.client.shared_limits)
        else {
            return false;
        };
        match step {
            RedisStep::Acquire(ticket, request) => {
                let grant = reply.and_then(|reply| SharedLimiter::granted(&ticket, &reply, now));
                if grant.is_err() {
                    let cancel = limits.report(&ticket, &Outcome::Cancelled).1;
                    let mut shared = self.client.lock();
                    shared
                        .redis
                        .postpone(unconfirmed.into_iter().chain([Bytes::from(cancel)]));
                }
                self.on_grant(grant, stream, *request, now);
            }
            RedisStep::Report(command) => {
                let mut shared = self.client.lock();
                match reply {
                    Ok(_) => shared.redis.answered(stream, now),
                    Err(failure) => {
                        shared.redis.failed(&failure, now, limits);
                        shared
                            .redis
                            .postpone(unconfirmed.into_iter().chain([command]));
                    }
                }
            }
        }
        false
    }

    /// Acts on Redis's answer to a slot asked for `request`.
    fn on_grant(
        &mut self,
        grant: Result<Grant, Failure>,
        stream: Option<S>,
        request: http::Request<RequestBody>,
        now: Instant,
    ) {
        let mut shared = self.client.lock();
        match grant {
            Ok(grant) => {
                shared.redis.answered(stream, now);
                match grant {
                    Grant::Granted(ticket) => self.ticket = Some(ticket),
                    Grant::Wait(wait) => {
                        self.call.defer(now, wait, &mut shared.limiter);
                        self.notify = Some(shared.limiter.version());
                        return;
                    }
                }
            }
            Err(failure) => {
                if let Some(limits) = &self.client.shared_limits {
                    shared.redis.failed(&failure, now, limits);
                }
            }
        }
        drop(shared);
        self.start_exchange(request, now);
    }

    /// Reports the outcome of the last [`Output`] at `now`.
    pub fn handle_input(&mut self, now: Instant, input: Input<S>) {
        self.now = Some(now);
        let Input::Io(input) = input else {
            return;
        };
        if let Some((trip, _)) = &mut self.redis {
            trip.handle_input(input);
        } else if let Some(exchange) = &mut self.exchange {
            exchange.handle_input(now, input);
        }
    }
}

/// An idle Redis connection that can carry another command.
fn take_idle<S: PooledStream>(idle: &mut Vec<S>) -> Option<S> {
    while let Some(stream) = idle.pop() {
        if stream.is_reusable() {
            return Some(stream);
        }
    }
    None
}

impl<T, S> Drop for ClientCall<T, S> {
    fn drop(&mut self) {
        let acquiring = matches!(self.redis, Some((_, RedisStep::Acquire(..))));
        let (true, Some(now)) = (self.exchange.take().is_some() || acquiring, self.now) else {
            return;
        };
        let kind = if acquiring {
            TransportErrorKind::Connect
        } else {
            TransportErrorKind::Io
        };
        let error = TransportError::new(kind, "the call was dropped");
        let version = {
            let mut shared = self.client.lock();
            self.call
                .on_transport_error(now, error, &mut shared.limiter);
            shared.limiter.version()
        };
        self.client.changes.announce(version);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use http::Method;

    use super::*;
    use crate::rest::{NoContent, Route};

    /// A connection never opened (the test performs no IO).
    struct Unopened;

    impl PooledStream for Unopened {
        fn is_reusable(&self) -> bool {
            false
        }
    }

    fn get(path: &str) -> RestRequest<NoContent> {
        RestRequest::new(
            Route::custom(Method::GET, path).unwrap(),
            RequestBody::Empty,
        )
    }

    #[test]
    fn a_call_dropped_in_flight_wakes_the_calls_waiting_on_it() {
        let config = RestConfig::builder()
            .token("tok")
            .rest_url("http://127.0.0.1:9/api/v10")
            .build()
            .unwrap();
        let client =
            Arc::new(Client::<Unopened>::new(config, HttpSettings::default(), None).unwrap());
        let now = Instant::now();
        let mut first = client.call(get("/channels/1"));
        assert!(matches!(
            first.poll_output(now),
            Output::Io(Io::Connect { .. })
        ));
        let mut second = client.call(get("/channels/1"));
        let Output::Sleep {
            wake_after: Some(version),
            ..
        } = second.poll_output(now)
        else {
            panic!("the second call should wait on the first one's answer");
        };
        assert!(client.changes().listen_after(version).is_some());
        drop(first);
        // The first call's permit is back and announced: the second one wakes and goes.
        assert!(client.changes().listen_after(version).is_none());
        assert!(matches!(
            second.poll_output(now),
            Output::Io(Io::Connect { .. })
        ));
    }
}
