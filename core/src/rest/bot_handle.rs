//! The `Bot` every adapter hands its users (yuyo's `AsgiBot`), generic over the
//! adapter's [`ClientRuntime`]: its API and the loop over the [`Lifecycle`]'s
//! transitions live here once; the runtime does the IO and builds the server.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Weak};

use twilight_model::application::command::Command;
use twilight_model::id::Id;
use twilight_model::id::marker::GuildMarker;

use super::bot::{
    BotCallbackId, BotError, BotSettings, BotStep, BuildBot, Hooks, Lifecycle, LifecycleError,
    Operation, UnknownCallback,
};
use super::runtime::{Changes, ClientRuntime, RestClient, SyncOutcome, run_call, run_sync};
use super::transport::{HttpSettings, ProxySettings};
use super::{Commands, KeyDiscovery, RestError, RestRequest, TokenStrategy};
use crate::deferral::ReplyRouting;
use crate::endpoint::Endpoint;
use crate::lifespan::{Callback, CallbackError};

struct Inner<R: ClientRuntime> {
    rest: RestClient<R>,
    lifecycle: Arc<Lifecycle>,
    /// The lifecycle's latest version (wakes [`BotStep::Wait`](super::bot::BotStep)).
    changes: Arc<Changes>,
    executor: Option<R::Executor>,
    routing: ReplyRouting,
}

/// yuyo's `AsgiBot`: an interactions endpoint plus a rate-limited REST client,
/// started and stopped with the server (managed, the default) or by hand. Each
/// adapter names it `bot::Bot`; its operations return a future on smol and tokio and
/// block on std threads. Cheap to clone.
pub struct Bot<R: ClientRuntime> {
    inner: Arc<Inner<R>>,
}

impl<R: ClientRuntime> Clone for Bot<R> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<R: ClientRuntime> fmt::Debug for Bot<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bot")
            .field("lifecycle", &self.inner.lifecycle)
            .field("rest", &self.inner.rest)
            .finish_non_exhaustive()
    }
}

impl<R: ClientRuntime> BuildBot for Bot<R> {
    type Executor = R::Executor;

    fn from_settings(settings: BotSettings<R::Executor>) -> Result<Self, BotError> {
        let discovery = KeyDiscovery::new(settings.rest.token_type());
        let rest = RestClient::new(settings.rest, settings.http, settings.proxy)
            .map_err(BotError::Transport)?;
        let changes = Arc::new(Changes::default());
        let hooks = Hooks {
            on_change: Box::new({
                let changes = Arc::clone(&changes);
                move |version| changes.announce(version)
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

impl<R: ClientRuntime> Bot<R> {
    /// A builder for a bot authenticated with `token`.
    #[must_use]
    pub fn builder(token: impl Into<String>) -> super::bot::BotBuilder<Self> {
        super::bot::BotBuilder::new(token)
    }

    /// A builder for a bot authenticated through `strategy`.
    #[must_use]
    pub fn builder_with_strategy(strategy: Arc<dyn TokenStrategy>) -> super::bot::BotBuilder<Self> {
        super::bot::BotBuilder::with_strategy(strategy)
    }

    /// The REST client.
    #[must_use]
    pub fn rest(&self) -> &RestClient<R> {
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

    /// The executor given to the builder, if any.
    #[must_use]
    pub fn executor(&self) -> Option<&R::Executor> {
        self.inner.executor.as_ref()
    }

    /// How the bot's server routes replies through REST.
    #[must_use]
    pub fn reply_routing(&self) -> ReplyRouting {
        self.inner.routing
    }

    /// The lifecycle (phase, key, callbacks).
    #[must_use]
    pub fn lifecycle(&self) -> &Arc<Lifecycle> {
        &self.inner.lifecycle
    }

    /// What wakes the lifecycle's waits (the runtime waits on it).
    #[must_use]
    pub fn changes(&self) -> &Changes {
        &self.inner.changes
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
        F: Fn(Self) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), CallbackError>> + Send + 'static,
    {
        let bot: Weak<Inner<R>> = Arc::downgrade(&self.inner);
        Callback::new(move || {
            let run = bot.upgrade().map(|inner| callback(Self { inner }));
            async move {
                match run {
                    Some(run) => run.await,
                    None => Ok(()),
                }
            }
        })
    }

    /// Adds a callback run (with the bot) when it starts; a failure fails startup.
    /// Callbacks of one phase run concurrently.
    pub fn add_startup_callback<F, Fut>(&self, callback: F) -> BotCallbackId
    where
        F: Fn(Self) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), CallbackError>> + Send + 'static,
    {
        let callback = self.callback(callback);
        self.inner.lifecycle.add_startup_callback(callback)
    }

    /// Adds a callback run (with the bot) when it closes; a failure fails the close.
    pub fn add_shutdown_callback<F, Fut>(&self, callback: F) -> BotCallbackId
    where
        F: Fn(Self) -> Fut + Send + Sync + 'static,
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
    pub fn start(&self) -> R::Output<Result<(), LifecycleError>> {
        R::run(run_operation(self.clone(), Operation::Start))
    }

    /// Closes the bot: runs the shutdown callbacks and drops idle connections.
    ///
    /// # Errors
    /// [`LifecycleError::Managed`], [`LifecycleError::NotRunning`], or a callback failure.
    pub fn close(&self) -> R::Output<Result<(), LifecycleError>> {
        R::run(run_operation(self.clone(), Operation::Close))
    }

    /// Waits until the bot is closed.
    ///
    /// # Errors
    /// [`LifecycleError::Managed`], [`LifecycleError::NotRunning`].
    pub fn join(&self) -> R::Output<Result<(), LifecycleError>> {
        R::run(run_operation(self.clone(), Operation::Join))
    }

    /// Starts the bot and waits until it is closed.
    ///
    /// # Errors
    /// As [`Bot::start`].
    pub fn run(&self) -> R::Output<Result<(), LifecycleError>> {
        R::run(run_operation(self.clone(), Operation::Run))
    }

    /// Makes the application's commands — global, or `guild`'s — equal to `desired`, as
    /// `yuyo commands sync` does (e.g. in a startup callback): the application is fetched
    /// for its id, then nothing is sent when Discord's set already matches.
    ///
    /// # Errors
    /// [`RestError`] of fetching the application, listing or overwriting the commands.
    pub fn sync_commands(
        &self,
        guild: Option<Id<GuildMarker>>,
        desired: Vec<Command>,
    ) -> R::Output<Result<SyncOutcome, RestError>> {
        let rest = self.rest().clone();
        R::run(async move {
            let application = run_call(rest.clone(), RestRequest::fetch_application())
                .await?
                .model()?;
            let commands = match guild {
                Some(guild) => Commands::guild(application.id, guild),
                None => Commands::global(application.id),
            };
            run_sync(rest, commands, desired).await
        })
    }

    /// A server for this bot: the key is found first (a failure is returned and nothing
    /// is served), and for a managed bot the server's lifespan runs the bot's startup
    /// and shutdown; slow handlers are deferred and oversized files sent through REST
    /// as [`Bot::reply_routing`] says.
    ///
    /// # Errors
    /// [`LifecycleError::KeyDiscovery`]; [`LifecycleError::NotRunning`] for an
    /// unmanaged bot without a known key (start it first).
    pub fn server(&self) -> R::Output<Result<R::Server, LifecycleError>> {
        let bot = self.clone();
        R::run(async move {
            run_operation(bot.clone(), Operation::FindKey).await?;
            let service = bot.lifecycle().service({
                let bot = bot.clone();
                move |operation| Box::pin(run_operation(bot.clone(), operation))
            })?;
            Ok(R::server(&bot, service))
        })
    }
}

/// Runs one lifecycle `operation` of `bot` to its end: the core's transition, `R`'s
/// REST calls and waits.
async fn run_operation<R: ClientRuntime>(
    bot: Bot<R>,
    operation: Operation,
) -> Result<(), LifecycleError> {
    let mut transition = bot.lifecycle().transition(operation);
    loop {
        match transition.poll() {
            BotStep::Fetch(request) => {
                transition.fetched(run_call(bot.rest().clone(), request).await);
            }
            BotStep::Run(phase) => transition.ran(phase.await),
            BotStep::Wait(version) => {
                if let Some(wake) = bot.changes().listen_after(version) {
                    R::wait(wake, None).await;
                }
            }
            BotStep::Done(result) => return result,
        }
    }
}
