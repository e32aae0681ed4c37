//! The REST client every adapter hands its users, generic over the adapter's
//! [`ClientRuntime`]: the handle ([`RestClient`]) and its API live here once; an
//! adapter only says how to run a [`ClientCall`](super::client::ClientCall) on its
//! runtime (connect, read, write, sleep, wake) and what its calls return (a future
//! on smol and tokio, the value itself on std threads).

use std::fmt;
use std::sync::Arc;

use http::Method;

use super::bot::{Bot, LifecycleError, Operation};
use super::client::{Client, PooledStream};
use super::transport::{HttpSettings, ProxySettings, Transport};
use super::{
    RateLimiter, RequestBody, RequestError, Response, Rest, RestConfig, RestError, RestRequest,
    Route, TransportSetupError,
};

/// Wakes what waits on a version (of the rate limiter, of a bot's lifecycle): the
/// adapter's notification primitive.
pub trait Announcer: Default + Send + Sync + 'static {
    /// `version` is current: wake every waiter on an older one. Versions only grow;
    /// an older one announced late is ignored.
    fn announce(&self, version: u64);
}

/// How an adapter runs the client path: the connection type, the wake-up primitive,
/// what an operation returns, and the three loops that do IO.
pub trait ClientRuntime: Sized + Send + Sync + 'static {
    /// A connection of the REST client.
    type Stream: PooledStream + Send + 'static;
    /// Wakes rate-limit and lifecycle waits.
    type Announcer: Announcer;
    /// What an operation returns: a future of `T` on an async runtime, `T` itself on
    /// a blocking one.
    type Output<T: Send + 'static>;
    /// What [`BotBuilder::executor`](super::bot::BotBuilder::executor) takes; an
    /// uninhabited type where the runtime has none.
    type Executor: Send + Sync + 'static;
    /// The server a bot serves with.
    type Server: Send + 'static;

    /// Runs `request` on `client` to its end.
    fn call<T: Send + 'static>(
        client: RestClient<Self>,
        request: RestRequest<T>,
    ) -> Self::Output<Result<Response<T>, RestError>>;

    /// Runs one lifecycle `operation` of `bot` to its end.
    fn drive(bot: Bot<Self>, operation: Operation) -> Self::Output<Result<(), LifecycleError>>;

    /// A server for `bot` (whose key is known), as [`Bot::server`] describes.
    fn server(bot: Bot<Self>) -> Self::Output<Result<Self::Server, LifecycleError>>;

    /// `value`, as an operation's output.
    fn ready<T: Send + 'static>(value: T) -> Self::Output<T>;

    /// `output`, then `f` of its value.
    fn map<T: Send + 'static, U: Send + 'static>(
        output: Self::Output<T>,
        f: impl FnOnce(T) -> U + Send + 'static,
    ) -> Self::Output<U>;
}

struct Shared<R: ClientRuntime> {
    client: Arc<Client<R::Stream>>,
    /// The highest rate-limiter version announced (wakes waits on rate limits).
    changes: R::Announcer,
}

/// A rate-limited Discord REST client: rate limits, retries, the keep-alive pool, TLS,
/// the proxy and every deadline are decided by the core's [`Client`]; the runtime `R`
/// runs them. Cheap to clone; clones share the rate limiter and the pool. Each
/// adapter names it `rest::RestClient`.
pub struct RestClient<R: ClientRuntime> {
    shared: Arc<Shared<R>>,
}

impl<R: ClientRuntime> Clone for RestClient<R> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<R: ClientRuntime> fmt::Debug for RestClient<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.client.fmt(f)
    }
}

impl<R: ClientRuntime> RestClient<R> {
    /// A client for `config` over a transport with `settings` and `proxy`.
    ///
    /// # Errors
    /// [`TransportSetupError`] when TLS cannot be configured.
    pub fn new(
        config: RestConfig,
        settings: HttpSettings,
        proxy: Option<ProxySettings>,
    ) -> Result<Self, TransportSetupError> {
        let client = Arc::new(Client::new(config, settings, proxy)?);
        let shared = Arc::new(Shared {
            client,
            changes: R::Announcer::default(),
        });
        // A call dropped in flight wakes the calls waiting for its answer.
        let weak: std::sync::Weak<Shared<R>> = Arc::downgrade(&shared);
        shared.client.on_drop_change(move |version| {
            if let Some(shared) = weak.upgrade() {
                shared.changes.announce(version);
            }
        });
        Ok(Self { shared })
    }

    /// The sans-IO client an adapter drives.
    #[must_use]
    pub fn client(&self) -> &Arc<Client<R::Stream>> {
        &self.shared.client
    }

    /// What wakes this client's rate-limit waits (the adapter announces the
    /// versions a call reports, and waits on them).
    #[must_use]
    pub fn changes(&self) -> &R::Announcer {
        &self.shared.changes
    }

    /// The configuration.
    #[must_use]
    pub fn rest(&self) -> &Rest {
        self.shared.client.rest()
    }

    /// The transport's settings and proxy.
    #[must_use]
    pub fn transport(&self) -> &Transport {
        self.shared.client.transport()
    }

    /// Idle connections currently pooled (all hosts).
    #[must_use]
    pub fn idle_connections(&self) -> usize {
        self.shared.client.idle_connections()
    }

    /// Closes every idle connection.
    pub fn clear_idle(&self) {
        self.shared.client.clear_idle();
    }

    /// Runs `f` with the rate limiter locked (never across an await).
    pub fn with_limiter<T>(&self, f: impl FnOnce(&mut RateLimiter) -> T) -> T {
        self.shared.client.with_limiter(f)
    }

    /// Sends `request`, waiting out rate limits and retrying as the core decides; a
    /// future to await on smol and tokio, the result itself on std threads.
    ///
    /// # Errors
    /// [`RestError`] as decided by [`Call`](super::Call).
    pub fn call<T: Send + 'static>(
        &self,
        request: RestRequest<T>,
    ) -> R::Output<Result<Response<T>, RestError>> {
        R::call(self.clone(), request)
    }

    /// Any route by method and path, still rate limited; the answer decodes to JSON.
    /// For what the typed requests ([`Interaction`](super::Interaction),
    /// [`Commands`](super::Commands)) do not cover.
    ///
    /// # Errors
    /// [`RequestError::InvalidPath`] for a path that is not a Discord route, otherwise
    /// as [`RestClient::call`].
    pub fn request(
        &self,
        method: Method,
        path: &str,
        body: RequestBody,
    ) -> R::Output<Result<Response<serde_json::Value>, RequestError>> {
        match Route::custom(method, path) {
            Ok(route) => R::map(self.call(RestRequest::new(route, body)), |result| {
                result.map_err(RequestError::Rest)
            }),
            Err(error) => R::ready(Err(RequestError::InvalidPath(error))),
        }
    }
}
