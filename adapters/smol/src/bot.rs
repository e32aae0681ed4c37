//! The bot on smol: yuyo's `AsgiBot` — an interactions endpoint plus a rate-limited
//! REST client, started and stopped with the server (managed, the default) or by hand.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use yuyo_smol::bot::Bot;
//! let bot = Bot::builder("token").build()?; // the public key is fetched at startup
//! let server = bot.server().await?;          // managed: the server's lifespan runs it
//! let listener = async_net::TcpListener::bind("127.0.0.1:8080").await?;
//! server.serve(listener).await?;
//! # Ok(())
//! # }
//! ```
//!
//! The API, and how it maps to yuyo's `AsgiBot`, is the same on every adapter: see
//! [`yuyo_core::rest::bot`]. The lifecycle itself is [`Lifecycle`]; this module runs its
//! steps on smol.
//!
//! # Replies through REST
//! A bot's server defers slow handlers and sends oversized files through the callback
//! endpoint (see [`yuyo_core::deferral`] and [the crate docs](crate#replies-through-rest)):
//! [`BotBuilder::defer_after`] (default 2.5 s, [`DEFAULT_DEFER_AFTER`]) and
//! [`BotBuilder::inline_files_limit`] (default 150 000 bytes,
//! [`DEFAULT_INLINE_FILES_LIMIT`]); `None` turns either off.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Weak};

use std::sync::atomic::{AtomicU64, Ordering};

use async_executor::Executor;
use event_listener::Event;
pub use yuyo_core::deferral::{DEFAULT_DEFER_AFTER, DEFAULT_INLINE_FILES_LIMIT, ReplyRouting};
use yuyo_core::endpoint::Endpoint;
use yuyo_core::lifespan::{Callback, CallbackError};
use yuyo_core::rest::KeyDiscovery;
use yuyo_core::rest::bot::{BotSettings, BotStep, BuildBot, Hooks, Lifecycle, Operation};

pub use yuyo_core::rest::TokenStrategy;
pub use yuyo_core::rest::bot::{BotCallbackId, BotError, LifecycleError, UnknownCallback};
pub use yuyo_core::rest::{ConfigError, KeyDiscoveryError};

use crate::rest::{HttpSettings, ProxySettings, RestClient};
use crate::{Server, Service};

/// Builds a [`Bot`]; mirrors `AsgiBot.__init__` (the builder every adapter shares;
/// [`BotBuilder::executor`] takes the `Arc<Executor>` the server runs on).
pub type BotBuilder = yuyo_core::rest::bot::BotBuilder<Bot>;

impl BuildBot for Bot {
    type Executor = Arc<Executor<'static>>;

    fn from_settings(settings: BotSettings<Arc<Executor<'static>>>) -> Result<Self, BotError> {
        let discovery = KeyDiscovery::new(settings.rest.token_type());
        let rest = RestClient::new(settings.rest, settings.http, settings.proxy)
            .map_err(BotError::Transport)?;
        let changes = Arc::new(Changes::default());
        let hooks = Hooks {
            on_change: Box::new({
                let changes = Arc::clone(&changes);
                move |version| {
                    changes.latest.store(version, Ordering::SeqCst);
                    changes.event.notify(usize::MAX);
                }
            }),
            on_stop: Box::new({
                let rest = rest.clone();
                move || rest.clear_idle()
            }),
        };
        let lifecycle = Lifecycle::new(
            settings.managed,
            settings.verifier,
            discovery,
            settings.endpoint,
            hooks,
        );
        Ok(Self {
            inner: Arc::new(Inner {
                rest,
                lifecycle: Arc::new(lifecycle),
                changes,
                executor: settings.executor,
                routing: settings.routing,
            }),
        })
    }
}

/// The lifecycle's latest version, and an event fired when it changes (wakes
/// [`BotStep::Wait`]).
#[derive(Default)]
struct Changes {
    latest: AtomicU64,
    event: Event,
}

struct Inner {
    rest: RestClient,
    lifecycle: Arc<Lifecycle>,
    changes: Arc<Changes>,
    executor: Option<Arc<Executor<'static>>>,
    routing: ReplyRouting,
}

/// yuyo's `AsgiBot` on smol; see the [module docs](self). Cheap to clone.
#[derive(Clone)]
pub struct Bot {
    inner: Arc<Inner>,
}

impl fmt::Debug for Bot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bot")
            .field("lifecycle", &self.inner.lifecycle)
            .field("rest", &self.inner.rest)
            .finish_non_exhaustive()
    }
}

impl Bot {
    /// A builder for a bot authenticated with `token`.
    #[must_use]
    pub fn builder(token: impl Into<String>) -> BotBuilder {
        BotBuilder::new(token)
    }

    /// A builder for a bot authenticated through `strategy`.
    #[must_use]
    pub fn builder_with_strategy(strategy: Arc<dyn TokenStrategy>) -> BotBuilder {
        BotBuilder::with_strategy(strategy)
    }

    /// The REST client.
    #[must_use]
    pub fn rest(&self) -> &RestClient {
        &self.inner.rest
    }

    /// The HTTP settings.
    #[must_use]
    pub fn http_settings(&self) -> &HttpSettings {
        self.inner.rest.transport().settings()
    }

    /// The proxy settings.
    #[must_use]
    pub fn proxy_settings(&self) -> Option<&ProxySettings> {
        self.inner.rest.transport().proxy()
    }

    /// The executor given, if any.
    #[must_use]
    pub fn executor(&self) -> Option<&Arc<Executor<'static>>> {
        self.inner.executor.as_ref()
    }

    /// How the bot's server routes replies through REST.
    #[must_use]
    pub fn reply_routing(&self) -> ReplyRouting {
        self.inner.routing
    }

    /// The lifecycle (phase, key, callbacks).
    #[must_use]
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.inner.lifecycle
    }

    /// Whether the server's lifespan starts and stops the bot.
    #[must_use]
    pub fn is_managed(&self) -> bool {
        self.inner.lifecycle.is_managed()
    }

    /// Whether the bot is running.
    #[must_use]
    pub fn is_alive(&self) -> bool {
        self.inner.lifecycle.is_alive()
    }

    /// The public key, once given or discovered.
    #[must_use]
    pub fn public_key(&self) -> Option<[u8; 32]> {
        self.inner.lifecycle.public_key()
    }

    /// The interaction endpoint (yuyo's `interaction_server`), once the key is known.
    #[must_use]
    pub fn interaction_server(&self) -> Option<Endpoint> {
        self.inner.lifecycle.endpoint()
    }

    /// `callback` as a lifecycle callback given this bot (without keeping it alive).
    fn callback<F, Fut>(&self, callback: F) -> Callback
    where
        F: Fn(Bot) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), CallbackError>> + Send + 'static,
    {
        let bot: Weak<Inner> = Arc::downgrade(&self.inner);
        Callback::new(move || {
            let run = bot.upgrade().map(|inner| callback(Bot { inner }));
            async move {
                match run {
                    Some(run) => run.await,
                    None => Ok(()),
                }
            }
        })
    }

    /// Adds a callback run (with the bot) when it starts; a failure fails startup.
    pub fn add_startup_callback<F, Fut>(&self, callback: F) -> BotCallbackId
    where
        F: Fn(Bot) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), CallbackError>> + Send + 'static,
    {
        let callback = self.callback(callback);
        self.inner.lifecycle.add_startup_callback(callback)
    }

    /// Adds a callback run (with the bot) when it closes; a failure fails the close.
    pub fn add_shutdown_callback<F, Fut>(&self, callback: F) -> BotCallbackId
    where
        F: Fn(Bot) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), CallbackError>> + Send + 'static,
    {
        let callback = self.callback(callback);
        self.inner.lifecycle.add_shutdown_callback(callback)
    }

    /// Removes a startup callback.
    ///
    /// # Errors
    /// [`UnknownCallback`] when `id` is not a registered startup callback.
    pub fn remove_startup_callback(&self, id: BotCallbackId) -> Result<(), UnknownCallback> {
        self.inner.lifecycle.remove_startup_callback(id)
    }

    /// Removes a shutdown callback.
    ///
    /// # Errors
    /// [`UnknownCallback`] when `id` is not a registered shutdown callback.
    pub fn remove_shutdown_callback(&self, id: BotCallbackId) -> Result<(), UnknownCallback> {
        self.inner.lifecycle.remove_shutdown_callback(id)
    }

    /// Starts the bot: finds the public key if needed, then runs the startup callbacks.
    ///
    /// # Errors
    /// [`LifecycleError::Managed`] for a managed bot, [`LifecycleError::AlreadyRunning`],
    /// or the discovery / callback failure.
    pub async fn start(&self) -> Result<(), LifecycleError> {
        self.drive(Operation::Start).await
    }

    /// Closes the bot: runs the shutdown callbacks and drops idle connections.
    ///
    /// # Errors
    /// [`LifecycleError::Managed`], [`LifecycleError::NotRunning`], or a callback failure.
    pub async fn close(&self) -> Result<(), LifecycleError> {
        self.drive(Operation::Close).await
    }

    /// Waits until the bot is closed.
    ///
    /// # Errors
    /// [`LifecycleError::Managed`], [`LifecycleError::NotRunning`].
    pub async fn join(&self) -> Result<(), LifecycleError> {
        self.drive(Operation::Join).await
    }

    /// Starts the bot and waits until it is closed.
    ///
    /// # Errors
    /// As [`Bot::start`].
    pub async fn run(&self) -> Result<(), LifecycleError> {
        self.drive(Operation::Run).await
    }

    /// A server for this bot: the key is found first (a failure is returned and nothing
    /// is served), and for a managed bot the server's lifespan runs the bot's startup
    /// and shutdown.
    ///
    /// # Errors
    /// [`LifecycleError::KeyDiscovery`]; [`LifecycleError::NotRunning`] for an
    /// unmanaged bot without a known key (start it first).
    pub async fn server(&self) -> Result<Server, LifecycleError> {
        self.drive(Operation::FindKey).await?;
        let bot = self.clone();
        let service: Service = self.inner.lifecycle.service(move |operation| {
            let bot = bot.clone();
            Box::pin(async move { bot.drive(operation).await })
        })?;
        let server =
            Server::new(service).with_rest_replies(self.inner.rest.clone(), self.inner.routing);
        Ok(match &self.inner.executor {
            Some(executor) => server.with_executor(Arc::clone(executor)),
            None => server,
        })
    }

    /// Runs one lifecycle operation to its end.
    async fn drive(&self, operation: Operation) -> Result<(), LifecycleError> {
        let mut transition = self.inner.lifecycle.transition(operation);
        loop {
            match transition.poll() {
                BotStep::Fetch(request) => transition.fetched(self.inner.rest.call(request).await),
                BotStep::Run(phase) => transition.ran(phase.await),
                BotStep::Wait(version) => {
                    let changes = &self.inner.changes;
                    let listener = changes.event.listen();
                    if changes.latest.load(Ordering::SeqCst) <= version {
                        listener.await;
                    }
                }
                BotStep::Done(result) => return result,
            }
        }
    }
}
