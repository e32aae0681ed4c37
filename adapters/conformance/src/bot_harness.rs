//! What an adapter provides to run the shared REST client and bot cases
//! ([`bot_cases`](crate::bot_cases), [`reply_routing_cases`](crate::reply_routing_cases))
//! against it: [`BotHarness`].
//!
//! The cases are synchronous: each harness method drives the adapter to completion on
//! the calling thread (blocking on its runtime, or plainly for a blocking adapter), and
//! the cases bound what may hang with [`bounded`]. Only `yuyo-core` types cross the
//! trait, so this crate depends on no adapter (the adapters dev-depend on it).

use std::fmt;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::pin::Pin;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Duration;

use http::Method;
use twilight_model::application::command::Command;
use twilight_model::id::Id;
use twilight_model::id::marker::GuildMarker;
use yuyo_core::deferral::ReplyRouting;
use yuyo_core::rest::bot::{BotCallbackId, BuildBot, LifecycleError, UnknownCallback};
use yuyo_core::rest::transport::{HttpSettings, ProxySettings};
use yuyo_core::rest::{RequestBody, RequestError, RestConfig, RestError, RestRequest, SyncOutcome};
use yuyo_core::service::ServeError;

use crate::Running;

/// How long one bounded step of a case may take before the case fails.
pub const LIMIT: Duration = Duration::from_secs(20);

/// A future a harness returns to the shared handlers (see [`BotHarness::sleep`]).
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// An adapter's REST client and bot, driven synchronously by the shared cases.
///
/// Every method that does I/O or waits (`request`, `call`, `start`, `close`, `join`,
/// `run`, `server`, `serve`) returns once the adapter's operation has completed. The
/// bot's builder is `yuyo-core`'s generic [`BotBuilder`](yuyo_core::rest::bot::BotBuilder)
/// over [`BotHarness::Bot`]; the other methods are the adapter's inherent ones.
pub trait BotHarness: 'static {
    /// The adapter's REST client (`RestClient`).
    type Client: Clone + fmt::Debug + Send + Sync + 'static;
    /// The adapter's bot (`Bot`).
    type Bot: BuildBot + Clone + fmt::Debug + Send + Sync + 'static;

    /// `RestClient::new(config, settings, proxy)`; panics if the transport cannot be set
    /// up (every case's settings are valid).
    fn client(
        config: RestConfig,
        settings: HttpSettings,
        proxy: Option<ProxySettings>,
    ) -> Self::Client;
    /// `RestClient::request`, the answer dropped.
    ///
    /// # Errors
    /// What the client returned.
    fn request(
        client: &Self::Client,
        method: Method,
        path: &str,
        body: RequestBody,
    ) -> Result<(), RequestError>;
    /// `RestClient::call`, the answer dropped.
    ///
    /// # Errors
    /// What the client returned.
    fn call<T: Send + 'static>(
        client: &Self::Client,
        request: RestRequest<T>,
    ) -> Result<(), RestError>;
    /// How many idle keep-alive connections the client's transport holds.
    fn idle_connections(client: &Self::Client) -> usize;

    /// `Bot::is_managed`.
    fn is_managed(bot: &Self::Bot) -> bool;
    /// `Bot::is_alive`.
    fn is_alive(bot: &Self::Bot) -> bool;
    /// `Bot::public_key`.
    fn public_key(bot: &Self::Bot) -> Option<[u8; 32]>;
    /// Whether `Bot::interaction_server` is known (it is once the key is).
    fn has_interaction_server(bot: &Self::Bot) -> bool;
    /// `Bot::reply_routing`.
    fn reply_routing(bot: &Self::Bot) -> ReplyRouting;
    /// `Bot::add_startup_callback` with a callback that runs `callback` when polled and
    /// succeeds.
    fn add_startup_callback(
        bot: &Self::Bot,
        callback: impl Fn(Self::Bot) + Send + Sync + 'static,
    ) -> BotCallbackId;
    /// `Bot::add_shutdown_callback`, as [`BotHarness::add_startup_callback`].
    fn add_shutdown_callback(
        bot: &Self::Bot,
        callback: impl Fn(Self::Bot) + Send + Sync + 'static,
    ) -> BotCallbackId;
    /// `Bot::remove_startup_callback`.
    ///
    /// # Errors
    /// What the bot returned.
    fn remove_startup_callback(bot: &Self::Bot, id: BotCallbackId) -> Result<(), UnknownCallback>;
    /// `Bot::remove_shutdown_callback`.
    ///
    /// # Errors
    /// What the bot returned.
    fn remove_shutdown_callback(bot: &Self::Bot, id: BotCallbackId) -> Result<(), UnknownCallback>;
    /// `Bot::start`.
    ///
    /// # Errors
    /// What the bot returned.
    fn start(bot: &Self::Bot) -> Result<(), LifecycleError>;
    /// `Bot::close`.
    ///
    /// # Errors
    /// What the bot returned.
    fn close(bot: &Self::Bot) -> Result<(), LifecycleError>;
    /// `Bot::join`.
    ///
    /// # Errors
    /// What the bot returned.
    fn join(bot: &Self::Bot) -> Result<(), LifecycleError>;
    /// `Bot::run`.
    ///
    /// # Errors
    /// What the bot returned.
    fn run(bot: &Self::Bot) -> Result<(), LifecycleError>;
    /// `Bot::server`, the server dropped unused (it discovers the key first).
    ///
    /// # Errors
    /// What the bot returned.
    fn server(bot: &Self::Bot) -> Result<(), LifecycleError>;
    /// `Bot::sync_commands`.
    ///
    /// # Errors
    /// What the bot returned.
    fn sync_commands(
        bot: &Self::Bot,
        guild: Option<Id<GuildMarker>>,
        desired: Vec<Command>,
    ) -> Result<SyncOutcome, RestError>;
    /// `Bot::server` (on the calling thread), then serves it on `listener` (bound to
    /// `127.0.0.1:0`) in the background and returns at once.
    ///
    /// # Errors
    /// What `Bot::server` returned; nothing is served then.
    fn serve(bot: &Self::Bot, listener: TcpListener) -> Result<ServedBot, LifecycleError>;
    /// A timer future of the adapter's runtime that the shared handlers await (a slow
    /// handler yields while it waits, as a real one would).
    fn sleep(duration: Duration) -> Sleep;
}

/// A bot's server started by [`BotHarness::serve`].
#[derive(Debug)]
pub struct ServedBot {
    /// The server, serving in the background.
    pub running: Running,
    /// The server's reply routing (`Server::reply_routing`).
    pub reply_routing: ReplyRouting,
}

impl ServedBot {
    /// A server at `addr` routing replies as `reply_routing` says, served by `serve` on
    /// a thread of its own until `shutdown` (which must not block) is called.
    pub fn on_thread(
        addr: SocketAddr,
        reply_routing: ReplyRouting,
        shutdown: impl FnOnce() + Send + 'static,
        serve: impl FnOnce() -> Result<(), ServeError> + Send + 'static,
    ) -> Self {
        let serving = thread::spawn(serve);
        let join = move || {
            serving
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        };
        Self {
            running: Running::new(addr, shutdown, join),
            reply_routing,
        }
    }
}

/// Runs `f` on a thread of its own and returns its result, failing the test if it takes
/// longer than [`LIMIT`]; a panic in `f` is the test's panic.
///
/// # Panics
/// When `f` panics or takes too long.
pub fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let thread = thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(LIMIT) {
        Ok(value) => value,
        Err(RecvTimeoutError::Timeout) => panic!("test took too long (over {LIMIT:?})"),
        Err(RecvTimeoutError::Disconnected) => match thread.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => panic!("the bounded thread ended without a result"),
        },
    }
}

/// Expands, inside `impl BotHarness for …`, to every method but
/// [`serve`](BotHarness::serve) and [`sleep`](BotHarness::sleep): they are the same
/// calls of the adapter's inherent API on every adapter, each operation run to
/// completion by `$block_on` (a generic `fn(F) -> F::Output` blocking on the runtime
/// for an async adapter, `std::convert::identity` for a blocking one).
#[macro_export]
macro_rules! bot_harness_methods {
    ($block_on:path) => {
        fn client(
            config: $crate::__yuyo_core::rest::RestConfig,
            settings: $crate::__yuyo_core::rest::transport::HttpSettings,
            proxy: ::std::option::Option<$crate::__yuyo_core::rest::transport::ProxySettings>,
        ) -> Self::Client {
            <Self::Client>::new(config, settings, proxy).expect("REST client")
        }

        fn request(
            client: &Self::Client,
            method: $crate::__http::Method,
            path: &str,
            body: $crate::__yuyo_core::rest::RequestBody,
        ) -> ::std::result::Result<(), $crate::__yuyo_core::rest::RequestError> {
            $block_on(client.request(method, path, body)).map(drop)
        }

        fn call<T: Send + 'static>(
            client: &Self::Client,
            request: $crate::__yuyo_core::rest::RestRequest<T>,
        ) -> ::std::result::Result<(), $crate::__yuyo_core::rest::RestError> {
            $block_on(client.call(request)).map(drop)
        }

        fn start(
            bot: &Self::Bot,
        ) -> ::std::result::Result<(), $crate::__yuyo_core::rest::bot::LifecycleError> {
            $block_on(bot.start())
        }

        fn close(
            bot: &Self::Bot,
        ) -> ::std::result::Result<(), $crate::__yuyo_core::rest::bot::LifecycleError> {
            $block_on(bot.close())
        }

        fn join(
            bot: &Self::Bot,
        ) -> ::std::result::Result<(), $crate::__yuyo_core::rest::bot::LifecycleError> {
            $block_on(bot.join())
        }

        fn run(
            bot: &Self::Bot,
        ) -> ::std::result::Result<(), $crate::__yuyo_core::rest::bot::LifecycleError> {
            $block_on(bot.run())
        }

        fn server(
            bot: &Self::Bot,
        ) -> ::std::result::Result<(), $crate::__yuyo_core::rest::bot::LifecycleError> {
            $block_on(bot.server()).map(drop)
        }

        fn sync_commands(
            bot: &Self::Bot,
            guild: ::std::option::Option<
                $crate::__yuyo_core::twilight_model::id::Id<
                    $crate::__yuyo_core::twilight_model::id::marker::GuildMarker,
                >,
            >,
            desired: ::std::vec::Vec<
                $crate::__yuyo_core::twilight_model::application::command::Command,
            >,
        ) -> ::std::result::Result<
            $crate::__yuyo_core::rest::SyncOutcome,
            $crate::__yuyo_core::rest::RestError,
        > {
            $block_on(bot.sync_commands(guild, desired))
        }

        fn idle_connections(client: &Self::Client) -> usize {
            client.idle_connections()
        }

        fn is_managed(bot: &Self::Bot) -> bool {
            bot.is_managed()
        }

        fn is_alive(bot: &Self::Bot) -> bool {
            bot.is_alive()
        }

        fn public_key(bot: &Self::Bot) -> ::std::option::Option<[u8; 32]> {
            bot.public_key()
        }

        fn has_interaction_server(bot: &Self::Bot) -> bool {
            bot.interaction_server().is_some()
        }

        fn reply_routing(bot: &Self::Bot) -> $crate::__yuyo_core::deferral::ReplyRouting {
            bot.reply_routing()
        }

        fn add_startup_callback(
            bot: &Self::Bot,
            callback: impl Fn(Self::Bot) + Send + Sync + 'static,
        ) -> $crate::__yuyo_core::rest::bot::BotCallbackId {
            let callback = ::std::sync::Arc::new(callback);
            bot.add_startup_callback(move |bot| {
                let callback = ::std::sync::Arc::clone(&callback);
                async move {
                    callback(bot);
                    Ok(())
                }
            })
        }

        fn add_shutdown_callback(
            bot: &Self::Bot,
            callback: impl Fn(Self::Bot) + Send + Sync + 'static,
        ) -> $crate::__yuyo_core::rest::bot::BotCallbackId {
            let callback = ::std::sync::Arc::new(callback);
            bot.add_shutdown_callback(move |bot| {
                let callback = ::std::sync::Arc::clone(&callback);
                async move {
                    callback(bot);
                    Ok(())
                }
            })
        }

        fn remove_startup_callback(
            bot: &Self::Bot,
            id: $crate::__yuyo_core::rest::bot::BotCallbackId,
        ) -> ::std::result::Result<(), $crate::__yuyo_core::rest::bot::UnknownCallback> {
            bot.remove_startup_callback(id)
        }

        fn remove_shutdown_callback(
            bot: &Self::Bot,
            id: $crate::__yuyo_core::rest::bot::BotCallbackId,
        ) -> ::std::result::Result<(), $crate::__yuyo_core::rest::bot::UnknownCallback> {
            bot.remove_shutdown_callback(id)
        }
    };
}
