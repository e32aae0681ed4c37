//! The whole REST client as one sans-IO state machine: a [`Call`]'s rate limits and
//! retries joined to the transport's [`Exchange`]s, the keep-alive pool and the
//! limiter every call of a client shares.
//!
//! An adapter runs each call with one loop and decides nothing:
//!
//! ```ignore
//! let mut call = client.call(request);          // client: Arc<Client<Stream>>
//! let mut file = None;                          // the open request file, if any
//! loop {
//!     let input = match call.poll_output(Instant::now()) {
//!         Output::Io(io) => perform(io, &mut file).await,  // connect, write, read, files
//!         Output::Sleep { until, wake_after } => {
//!             // sleep until `until`, or until a `Notify` above `wake_after`
//!             sleep(until, wake_after).await;
//!             Input::Woke
//!         }
//!         Output::Notify(version) => { notify(version); continue }
//!         Output::Done(result) => return result,
//!     };
//!     call.handle_input(Instant::now(), input);
//! }
//! ```
//!
//! Dropping a call while its request is in flight hands its rate-limit permit back as
//! a request that may have reached Discord.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Instant;

use super::call::{Call, Response, Rest, Step};
use super::config::RestConfig;
use super::error::{RestError, TransportError, TransportErrorKind};
use super::ratelimit::RateLimiter;
use super::request::{RequestBody, RestRequest};
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

struct Shared<S> {
    limiter: RateLimiter,
    pool: Pool<Pooled<S>>,
}

/// A rate-limited Discord REST client over connections of type `S`: configuration,
/// transport settings, the shared rate limiter and the keep-alive pool. Use it as an
/// `Arc<Client<S>>`; clones of the adapter's client share it.
pub struct Client<S> {
    rest: Rest,
    transport: Transport,
    shared: Mutex<Shared<S>>,
    /// Told the limiter's version when a call dropped in flight changed it.
    on_drop_change: OnceLock<DropHook>,
}

type DropHook = Box<dyn Fn(u64) + Send + Sync>;

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
        let rest = Rest::new(config);
        let pool = Pool::new(&settings);
        Ok(Self {
            shared: Mutex::new(Shared {
                limiter: rest.rate_limiter(),
                pool,
            }),
            transport: Transport::new(settings, proxy)?,
            rest,
            on_drop_change: OnceLock::new(),
        })
    }

    /// Calls `hook` with the rate limiter's version whenever a call dropped while its
    /// request was in flight hands its permit back: no call reports an
    /// [`Output::Notify`] for that change, so this is where the adapter wakes the calls
    /// waiting on it. Only the first hook set is kept.
    pub fn on_drop_change(&self, hook: impl Fn(u64) + Send + Sync + 'static) {
        let _ = self.on_drop_change.set(Box::new(hook));
    }

    fn lock(&self) -> MutexGuard<'_, Shared<S>> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
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
                self.start_exchange(request, now);
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
        let mut shared = self.client.lock();
        if let Some((origin, pooled)) = finished.and_then(Exchange::into_pooled) {
            shared.pool.put(origin, pooled, now);
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

    /// Reports the outcome of the last [`Output`] at `now`.
    pub fn handle_input(&mut self, now: Instant, input: Input<S>) {
        self.now = Some(now);
        if let (Input::Io(input), Some(exchange)) = (input, &mut self.exchange) {
            exchange.handle_input(now, input);
        }
    }
}

impl<T, S> Drop for ClientCall<T, S> {
    fn drop(&mut self) {
        let (Some(_), Some(now)) = (self.exchange.take(), self.now) else {
            return;
        };
        let error = TransportError::new(TransportErrorKind::Io, "the call was dropped");
        let version = {
            let mut shared = self.client.lock();
            self.call
                .on_transport_error(now, error, &mut shared.limiter);
            shared.limiter.version()
        };
        if let Some(hook) = self.client.on_drop_change.get() {
            hook(version);
        }
    }
}
