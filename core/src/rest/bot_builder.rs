//! The one `BotBuilder` (yuyo's `AsgiBot.__init__`) every adapter's `Bot` is built with:
//! the settings are the same on every runtime; only the bot it builds differs.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use super::bot::{BotEndpoint, BotError};
use super::transport::{HttpSettings, ProxySettings};
use super::{RestConfig, RestConfigBuilder, TokenStrategy, TokenType};
use crate::deferral::ReplyRouting;
use crate::endpoint::{EventHandlers, Handlers, KeyError, Verifier};

/// A runtime's bot, made from the checked settings of a [`BotBuilder`].
pub trait BuildBot: Sized {
    /// What [`BotBuilder::executor`] takes (yuyo's `executor`); an uninhabited type
    /// where the runtime has none.
    type Executor;

    /// The bot for `settings`.
    ///
    /// # Errors
    /// [`BotError::Transport`] when the REST transport cannot be set up.
    fn from_settings(settings: BotSettings<Self::Executor>) -> Result<Self, BotError>;
}

/// What a runtime builds its bot from: a [`BotBuilder`]'s settings, checked.
#[derive(Debug)]
#[non_exhaustive]
pub struct BotSettings<E> {
    /// The REST client's configuration.
    pub rest: RestConfig,
    /// The public key, when given (else it is discovered at startup).
    pub verifier: Option<Verifier>,
    /// Started and stopped with the server's lifespan (yuyo's `asgi_managed`).
    pub managed: bool,
    /// HTTP settings of the REST transport.
    pub http: HttpSettings,
    /// An HTTP proxy for REST.
    pub proxy: Option<ProxySettings>,
    /// How the interaction endpoint is made once the key is known.
    pub endpoint: BotEndpoint,
    /// Replies through REST (automatic deferral, oversized files).
    pub routing: ReplyRouting,
    /// The executor, when given.
    pub executor: Option<E>,
}

/// Builds a bot of type `B`; mirrors `AsgiBot.__init__`. Each adapter names it
/// `bot::BotBuilder` and starts it with `Bot::builder`.
pub struct BotBuilder<B: BuildBot> {
    rest: RestConfigBuilder,
    public_key: Option<Result<Verifier, KeyError>>,
    managed: bool,
    http: HttpSettings,
    proxy: Option<ProxySettings>,
    endpoint: BotEndpoint,
    routing: ReplyRouting,
    executor: Option<B::Executor>,
    bot: PhantomData<fn() -> B>,
}

impl<B: BuildBot> fmt::Debug for BotBuilder<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BotBuilder")
            .field("rest", &self.rest)
            .field("managed", &self.managed)
            .field("http", &self.http)
            .field("proxy", &self.proxy)
            .field("routing", &self.routing)
            .field("executor", &self.executor.is_some())
            .finish_non_exhaustive()
    }
}

impl<B: BuildBot> BotBuilder<B> {
    /// A builder for a bot authenticated with `token` (a `Bot` token unless
    /// [`BotBuilder::token_type`] says otherwise).
    #[must_use]
    pub fn new(token: impl Into<String>) -> Self {
        Self::with_rest(RestConfig::builder().token(token))
    }

    /// A builder for a bot authenticated through `strategy`.
    #[must_use]
    pub fn with_strategy(strategy: Arc<dyn TokenStrategy>) -> Self {
        Self::with_rest(RestConfig::builder().token_strategy(strategy))
    }

    fn with_rest(rest: RestConfigBuilder) -> Self {
        Self {
            rest,
            public_key: None,
            managed: true,
            http: HttpSettings::default(),
            proxy: None,
            endpoint: BotEndpoint::default(),
            routing: ReplyRouting::enabled(),
            executor: None,
            bot: PhantomData,
        }
    }

    /// Defer a handler still running this long after its request arrived, and deliver
    /// its reply through REST (default
    /// [`DEFAULT_DEFER_AFTER`](crate::deferral::DEFAULT_DEFER_AFTER), 2.5 s; `None`:
    /// never). Keep it under Discord's 3 s.
    #[must_use]
    pub fn defer_after(mut self, after: Option<Duration>) -> Self {
        self.routing.defer_after = after;
        self
    }

    /// Send a reply whose files total more than this many bytes through the callback
    /// endpoint instead of the HTTP answer (default
    /// [`DEFAULT_INLINE_FILES_LIMIT`](crate::deferral::DEFAULT_INLINE_FILES_LIMIT);
    /// `None`: always inline).
    #[must_use]
    pub fn inline_files_limit(mut self, bytes: Option<u64>) -> Self {
        self.routing.inline_files_limit = bytes;
        self
    }

    /// The token's type (default [`TokenType::Bot`]).
    #[must_use]
    pub fn token_type(mut self, token_type: TokenType) -> Self {
        self.rest = self.rest.token_type(token_type);
        self
    }

    /// The public key as 64 hex digits; bad hex fails [`BotBuilder::build`].
    #[must_use]
    pub fn public_key_hex(mut self, key: &str) -> Self {
        self.public_key = Some(Verifier::from_hex(key));
        self
    }

    /// The raw 32-byte public key.
    #[must_use]
    pub fn public_key_bytes(mut self, key: [u8; 32]) -> Self {
        self.public_key = Some(Verifier::from_bytes(&key));
        self
    }

    /// Start and close by hand instead of with the server (yuyo's `asgi_managed=False`).
    #[must_use]
    pub fn unmanaged(mut self) -> Self {
        self.managed = false;
        self
    }

    /// The interaction handlers.
    #[must_use]
    pub fn handlers(mut self, handlers: Handlers) -> Self {
        self.endpoint.handlers = handlers;
        self
    }

    /// The endpoint's path (default: the endpoint's default).
    #[must_use]
    pub fn endpoint_path(mut self, path: impl Into<String>) -> Self {
        self.endpoint.path = Some(path.into());
        self
    }

    /// Serves Discord's Webhook Events at `path` (e.g. `/events`) with `handlers`, beside
    /// the interactions (default: no events endpoint).
    #[must_use]
    pub fn events(mut self, path: impl Into<String>, handlers: EventHandlers) -> Self {
        self.endpoint.events_path = Some(path.into());
        self.endpoint.event_handlers = handlers;
        self
    }

    /// Largest request body accepted (default 1 MiB).
    #[must_use]
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.endpoint.max_body_size = bytes;
        self
    }

    /// HTTP settings of the REST transport.
    #[must_use]
    pub fn http_settings(mut self, settings: HttpSettings) -> Self {
        self.http = settings;
        self
    }

    /// An HTTP proxy for REST.
    #[must_use]
    pub fn proxy_settings(mut self, proxy: ProxySettings) -> Self {
        self.proxy = Some(proxy);
        self
    }

    /// Longest rate-limit wait accepted (`None`: any).
    #[must_use]
    pub fn max_rate_limit(mut self, max: Option<Duration>) -> Self {
        self.rest = self.rest.max_rate_limit(max);
        self
    }

    /// Retries after 5xx answers and transport failures.
    #[must_use]
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.rest = self.rest.max_retries(retries);
        self
    }

    /// The REST base URL (a mock in tests).
    #[must_use]
    pub fn rest_url(mut self, url: impl Into<String>) -> Self {
        self.rest = self.rest.rest_url(url);
        self
    }

    /// Share the bot's rate limits with its other replicas through Redis
    /// ([`RestConfigBuilder::shared_limits`]).
    #[must_use]
    pub fn shared_limits(mut self, limits: super::SharedLimits) -> Self {
        self.rest = self.rest.shared_limits(limits);
        self
    }

    /// Any other REST setting (backoff, global limit…).
    #[must_use]
    pub fn map_rest(mut self, f: impl FnOnce(RestConfigBuilder) -> RestConfigBuilder) -> Self {
        self.rest = f(self.rest);
        self
    }

    /// What the server runs connections and handlers on (yuyo's `executor`).
    #[must_use]
    pub fn executor(mut self, executor: B::Executor) -> Self {
        self.executor = Some(executor);
        self
    }

    /// Builds the bot.
    ///
    /// # Errors
    /// [`BotError::Config`], [`BotError::PublicKey`], [`BotError::Transport`].
    pub fn build(self) -> Result<B, BotError> {
        let verifier = self.public_key.transpose().map_err(BotError::PublicKey)?;
        let rest = self.rest.build().map_err(BotError::Config)?;
        B::from_settings(BotSettings {
            rest,
            verifier,
            managed: self.managed,
            http: self.http,
            proxy: self.proxy,
            endpoint: self.endpoint,
            routing: self.routing,
            executor: self.executor,
        })
    }
}
