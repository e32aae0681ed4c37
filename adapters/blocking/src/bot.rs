//! The bot on std threads: yuyo's `AsgiBot` — an interactions endpoint plus a
//! rate-limited REST client, started and stopped with the server (managed, the
//! default) or by hand. Every method blocks the calling thread.
//!
//! ```no_run
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use yuyo_blocking::bot::Bot;
//! let bot = Bot::builder("token").build()?; // the public key is fetched at startup
//! let server = bot.server()?;                // managed: the server's lifespan runs it
//! server.serve(std::net::TcpListener::bind("127.0.0.1:8080")?)?;
//! # Ok(())
//! # }
//! ```
//!
//! # yuyo's `AsgiBot` → here
//! | yuyo | here |
//! |---|---|
//! | `AsgiBot(token, …)` | [`Bot::builder`]`(token)` … [`BotBuilder::build`] |
//! | `token: TokenStrategy` | [`Bot::builder_with_strategy`] |
//! | `token_type="Bot"/"Bearer"` (default Bot) | [`BotBuilder::token_type`] |
//! | `token_type` with a strategy → `ValueError` | [`BotError::Config`] ([`ConfigError::TokenTypeWithStrategy`]) |
//! | `public_key: str` (hex) / `bytes` | [`BotBuilder::public_key_hex`] / [`BotBuilder::public_key_bytes`]; bad hex → [`BotError::PublicKey`] at `build` |
//! | `public_key=None` (fetched from the token) | [`KeyDiscovery`], single-flight, at startup ([`Bot::public_key`]) |
//! | `asgi_managed=True` / `False` | default / [`BotBuilder::unmanaged`] ([`Bot::is_managed`]) |
//! | `executor` | none: handlers run on the server's connection threads |
//! | `http_settings` | [`BotBuilder::http_settings`] ([`HttpSettings`]; [`Bot::http_settings`]) |
//! | `proxy_settings` | [`BotBuilder::proxy_settings`] ([`ProxySettings`]; [`Bot::proxy_settings`]) |
//! | `max_body_size=1024**2` | [`BotBuilder::max_body_size`] |
//! | `max_rate_limit=300.0` / `inf` | [`BotBuilder::max_rate_limit`] (`Some` / `None`) |
//! | `max_retries=3` | [`BotBuilder::max_retries`] |
//! | `rest_url` | [`BotBuilder::rest_url`] |
//! | `__call__` (ASGI app) | [`Bot::server`] (a [`Server`] whose lifespan runs the bot) |
//! | `rest` | [`Bot::rest`] |
//! | `interaction_server` / `server` | [`Bot::interaction_server`] (once the key is known) |
//! | `is_alive` | [`Bot::is_alive`] |
//! | `start()` / `close()` / `join()` / `run()` | [`Bot::start`] / [`Bot::close`] / [`Bot::join`] / [`Bot::run`] (blocking) |
//! | `RuntimeError` (managed; already alive; not alive) | [`LifecycleError::Managed`] / [`LifecycleError::AlreadyRunning`] / [`LifecycleError::NotRunning`] |
//! | `add_startup_callback(cb)` / `add_shutdown_callback(cb)` | [`Bot::add_startup_callback`] / [`Bot::add_shutdown_callback`] (callbacks receive the [`Bot`]) |
//! | `remove_*_callback` unknown → `ValueError` | [`UnknownCallback`] |
//! | callback failure fails startup/shutdown | [`LifecycleError::Callback`] |
//!
//! # Replies through REST
//! A bot's server defers slow handlers and sends oversized files through the callback
//! endpoint (see [`yuyo_core::deferral`] and [the crate docs](crate#replies-through-rest)),
//! exactly as on yuyo-tokio: [`BotBuilder::defer_after`] (default 2.5 s,
//! [`DEFAULT_DEFER_AFTER`]) and [`BotBuilder::inline_files_limit`] (default 150 000
//! bytes, [`DEFAULT_INLINE_FILES_LIMIT`]); `None` turns either off.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use futures_lite::future::block_on;
pub use yuyo_core::deferral::{DEFAULT_DEFER_AFTER, DEFAULT_INLINE_FILES_LIMIT, ReplyRouting};
use yuyo_core::endpoint::{BoxFuture, Endpoint, Verifier};
use yuyo_core::lifespan::CallbackError;
use yuyo_core::rest::bot::{
    BotCallbacks, BotEndpoint, BotSettings, BuildBot, discovered_verifier, public_key_of,
};
use yuyo_core::rest::{Begin, KeyDiscovery, TokenStrategy};

pub use yuyo_core::rest::bot::{BotCallbackId, BotError, LifecycleError, UnknownCallback};
pub use yuyo_core::rest::{ConfigError, KeyDiscoveryError};

use crate::rest::{HttpSettings, ProxySettings, RestClient};
use crate::{Server, Service};

type BotCallback = Arc<dyn Fn(Bot) -> BoxFuture<Result<(), CallbackError>> + Send + Sync>;

/// Builds a [`Bot`]; mirrors `AsgiBot.__init__` (the builder every adapter shares;
/// there is no executor: handlers run on the connection threads, so [`BotBuilder::executor`] cannot be called).
pub type BotBuilder = yuyo_core::rest::bot::BotBuilder<Bot>;

impl BuildBot for Bot {
    type Executor = std::convert::Infallible;

    fn from_settings(settings: BotSettings<std::convert::Infallible>) -> Result<Self, BotError> {
        let token_type = settings.rest.token_type();
        let rest = RestClient::new(settings.rest, settings.http, settings.proxy)
            .map_err(BotError::Transport)?;
        Ok(Self {
            inner: Arc::new(Inner {
                rest,
                managed: settings.managed,
                alive: AtomicBool::new(false),
                transition: Mutex::new(()),
                closed: Mutex::new(true),
                closed_changed: Condvar::new(),
                verifier: Mutex::new(settings.verifier),
                discovery: Mutex::new(KeyDiscovery::new(token_type)),
                discovered: Condvar::new(),
                endpoint: settings.endpoint,
                routing: settings.routing,
                callbacks: Mutex::new(BotCallbacks::default()),
            }),
        })
    }
}

struct Inner {
    rest: RestClient,
    managed: bool,
    alive: AtomicBool,
    /// Serialises start and close.
    transition: Mutex<()>,
    /// `true` while not running; `join` waits for it.
    closed: Mutex<bool>,
    closed_changed: Condvar,
    verifier: Mutex<Option<Verifier>>,
    discovery: Mutex<KeyDiscovery>,
    /// Signalled (with `discovery`) when a discovery finished.
    discovered: Condvar,
    endpoint: BotEndpoint,
    callbacks: Mutex<BotCallbacks<BotCallback>>,
    routing: ReplyRouting,
}

/// yuyo's `AsgiBot` on std threads; see the [module docs](self). Cheap to clone.
#[derive(Clone)]
pub struct Bot {
    inner: Arc<Inner>,
}

impl fmt::Debug for Bot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bot")
            .field("managed", &self.inner.managed)
            .field("alive", &self.is_alive())
            .field("rest", &self.inner.rest)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
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

    /// How the bot's server routes replies through REST.
    #[must_use]
    pub fn reply_routing(&self) -> ReplyRouting {
        self.inner.routing
    }

    /// Whether the server's lifespan starts and stops the bot.
    #[must_use]
    pub fn is_managed(&self) -> bool {
        self.inner.managed
    }

    /// Whether the bot is running.
    #[must_use]
    pub fn is_alive(&self) -> bool {
        self.inner.alive.load(Ordering::SeqCst)
    }

    /// The public key, once given or discovered.
    #[must_use]
    pub fn public_key(&self) -> Option<[u8; 32]> {
        lock(&self.inner.verifier).as_ref().and_then(public_key_of)
    }

    /// The interaction endpoint (yuyo's `interaction_server`), once the key is known.
    #[must_use]
    pub fn interaction_server(&self) -> Option<Endpoint> {
        let verifier = lock(&self.inner.verifier).clone()?;
        Some(self.inner.endpoint.endpoint(verifier))
    }

    /// Adds a callback run (with the bot) when it starts; a failure fails startup.
    pub fn add_startup_callback<F, Fut>(&self, callback: F) -> BotCallbackId
    where
        F: Fn(Bot) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), CallbackError>> + Send + 'static,
    {
        lock(&self.inner.callbacks).add_startup(boxed(callback))
    }

    /// Adds a callback run (with the bot) when it closes; a failure fails the close.
    pub fn add_shutdown_callback<F, Fut>(&self, callback: F) -> BotCallbackId
    where
        F: Fn(Bot) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), CallbackError>> + Send + 'static,
    {
        lock(&self.inner.callbacks).add_shutdown(boxed(callback))
    }

    /// Removes a startup callback.
    ///
    /// # Errors
    /// [`UnknownCallback`] when `id` is not a registered startup callback.
    pub fn remove_startup_callback(&self, id: BotCallbackId) -> Result<(), UnknownCallback> {
        lock(&self.inner.callbacks).remove_startup(id)
    }

    /// Removes a shutdown callback.
    ///
    /// # Errors
    /// [`UnknownCallback`] when `id` is not a registered shutdown callback.
    pub fn remove_shutdown_callback(&self, id: BotCallbackId) -> Result<(), UnknownCallback> {
        lock(&self.inner.callbacks).remove_shutdown(id)
    }

    /// Starts the bot: finds the public key if needed, then runs the startup callbacks.
    ///
    /// # Errors
    /// [`LifecycleError::Managed`] for a managed bot, [`LifecycleError::AlreadyRunning`],
    /// or the discovery / callback failure.
    pub fn start(&self) -> Result<(), LifecycleError> {
        if self.inner.managed {
            return Err(LifecycleError::Managed);
        }
        self.do_start()
    }

    /// Closes the bot: runs the shutdown callbacks and drops idle connections.
    ///
    /// # Errors
    /// [`LifecycleError::Managed`], [`LifecycleError::NotRunning`], or a callback failure.
    pub fn close(&self) -> Result<(), LifecycleError> {
        if self.inner.managed {
            return Err(LifecycleError::Managed);
        }
        self.do_close()
    }

    /// Blocks until the bot is closed.
    ///
    /// # Errors
    /// [`LifecycleError::Managed`], [`LifecycleError::NotRunning`].
    pub fn join(&self) -> Result<(), LifecycleError> {
        if self.inner.managed {
            return Err(LifecycleError::Managed);
        }
        if !self.is_alive() {
            return Err(LifecycleError::NotRunning);
        }
        self.closed();
        Ok(())
    }

    /// Blocks until the bot is not running.
    fn closed(&self) {
        let mut closed = lock(&self.inner.closed);
        while !*closed {
            closed = self
                .inner
                .closed_changed
                .wait(closed)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Starts the bot and blocks until it is closed.
    ///
    /// # Errors
    /// As [`Bot::start`].
    pub fn run(&self) -> Result<(), LifecycleError> {
        self.start()?;
        // Not `join`: a close right after the start still ends this run normally.
        self.closed();
        Ok(())
    }

    /// A server for this bot: the key is found first (a failure is returned and nothing
    /// is served), and for a managed bot the server's lifespan runs the bot's startup
    /// and shutdown.
    ///
    /// # Errors
    /// [`LifecycleError::KeyDiscovery`]; [`LifecycleError::NotRunning`] for an
    /// unmanaged bot without a known key (start it first).
    pub fn server(&self) -> Result<Server, LifecycleError> {
        if self.inner.managed {
            self.ensure_key()?;
        }
        let endpoint = self
            .interaction_server()
            .ok_or(LifecycleError::NotRunning)?;
        let mut service = Service::new(endpoint);
        if self.inner.managed {
            // The blocking server runs lifespan callbacks on its own thread.
            let bot = self.clone();
            service.add_startup_callback(move || {
                let result = bot.do_start().map_err(CallbackError::new);
                async move { result }
            });
            let bot = self.clone();
            service.add_shutdown_callback(move || {
                let result = bot.do_close().map_err(CallbackError::new);
                async move { result }
            });
        }
        Ok(Server::new(service).with_rest_replies(self.inner.rest.clone(), self.inner.routing))
    }

    fn do_start(&self) -> Result<(), LifecycleError> {
        let _transition = lock(&self.inner.transition);
        if self.is_alive() {
            return Err(LifecycleError::AlreadyRunning);
        }
        self.ensure_key()?;
        let callbacks = lock(&self.inner.callbacks).startup();
        run_callbacks(self, callbacks)?;
        self.inner.alive.store(true, Ordering::SeqCst);
        *lock(&self.inner.closed) = false;
        Ok(())
    }

    fn do_close(&self) -> Result<(), LifecycleError> {
        let _transition = lock(&self.inner.transition);
        if !self.is_alive() {
            return Err(LifecycleError::NotRunning);
        }
        let callbacks = lock(&self.inner.callbacks).shutdown();
        let result = run_callbacks(self, callbacks);
        self.inner.rest.clear_idle();
        self.inner.alive.store(false, Ordering::SeqCst);
        *lock(&self.inner.closed) = true;
        self.inner.closed_changed.notify_all();
        result
    }

    /// Finds the public key unless known: single-flight through [`KeyDiscovery`].
    fn ensure_key(&self) -> Result<(), LifecycleError> {
        loop {
            if lock(&self.inner.verifier).is_some() {
                return Ok(());
            }
            let mut discovery = lock(&self.inner.discovery);
            let begin = discovery.begin().map_err(LifecycleError::KeyDiscovery)?;
            match begin {
                Begin::Ready(key) => return self.set_key(&key),
                Begin::Wait => {
                    // Holding `discovery` until waiting: the fetcher cannot finish unseen.
                    drop(
                        self.inner
                            .discovered
                            .wait(discovery)
                            .unwrap_or_else(PoisonError::into_inner),
                    );
                }
                Begin::Fetch(request) => {
                    drop(discovery);
                    let outcome = self.inner.rest.call(request);
                    let found = lock(&self.inner.discovery).finish(outcome);
                    self.inner.discovered.notify_all();
                    let key = found.map_err(LifecycleError::KeyDiscovery)?;
                    return self.set_key(&key);
                }
            }
        }
    }

    fn set_key(&self, key: &[u8; 32]) -> Result<(), LifecycleError> {
        *lock(&self.inner.verifier) = Some(discovered_verifier(key)?);
        Ok(())
    }
}

fn boxed<F, Fut>(callback: F) -> BotCallback
where
    F: Fn(Bot) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), CallbackError>> + Send + 'static,
{
    Arc::new(move |bot| Box::pin(callback(bot)))
}

/// Runs `callbacks` in order on this thread; every failure is reported.
fn run_callbacks(bot: &Bot, callbacks: Vec<BotCallback>) -> Result<(), LifecycleError> {
    let failures = callbacks
        .into_iter()
        .filter_map(|callback| block_on(callback(bot.clone())).err())
        .map(|error| error.to_string())
        .collect();
    LifecycleError::from_callback_failures(failures)
}
