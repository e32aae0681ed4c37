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
//! [`yuyo_core::rest::bot`]. This module runs the
//! [`Lifecycle`](yuyo_core::rest::bot::Lifecycle)'s steps on smol.
//!
//! # Replies through REST
//! A bot's server defers slow handlers and sends oversized files through the callback
//! endpoint (see [`yuyo_core::deferral`] and [the crate docs](crate#replies-through-rest)):
//! [`BotBuilder::defer_after`] (default 2.5 s, [`DEFAULT_DEFER_AFTER`]) and
//! [`BotBuilder::inline_files_limit`] (default 150 000 bytes,
//! [`DEFAULT_INLINE_FILES_LIMIT`]); `None` turns either off.

use std::sync::Arc;

use yuyo_core::rest::bot::{BotStep, Operation};

pub use yuyo_core::deferral::{DEFAULT_DEFER_AFTER, DEFAULT_INLINE_FILES_LIMIT, ReplyRouting};
pub use yuyo_core::rest::TokenStrategy;
pub use yuyo_core::rest::bot::{BotCallbackId, BotError, LifecycleError, UnknownCallback};
pub use yuyo_core::rest::{ConfigError, KeyDiscoveryError};

use crate::rest::Smol;
use crate::{Server, Service};

/// yuyo's `AsgiBot` on smol (see [`yuyo_core::rest::bot::Bot`]); its operations are
/// futures. Cheap to clone.
pub type Bot = yuyo_core::rest::bot::Bot<Smol>;

/// Builds a [`Bot`]; mirrors `AsgiBot.__init__` ([`BotBuilder::executor`] takes the
/// `Arc<Executor>` the server runs on).
pub type BotBuilder = yuyo_core::rest::bot::BotBuilder<Bot>;

/// Runs one lifecycle operation of `bot` to its end.
pub(crate) async fn drive(bot: Bot, operation: Operation) -> Result<(), LifecycleError> {
    let mut transition = bot.lifecycle().transition(operation);
    loop {
        match transition.poll() {
            BotStep::Fetch(request) => transition.fetched(bot.rest().call(request).await),
            BotStep::Run(phase) => transition.ran(phase.await),
            BotStep::Wait(version) => bot.changes().after(version, None).await,
            BotStep::Done(result) => return result,
        }
    }
}

/// The server of `bot`, once its key is known (see [`Bot::server`]).
pub(crate) async fn server(bot: Bot) -> Result<Server, LifecycleError> {
    drive(bot.clone(), Operation::FindKey).await?;
    let service: Service = bot.lifecycle().service({
        let bot = bot.clone();
        move |operation| Box::pin(drive(bot.clone(), operation))
    })?;
    let server = Server::new(service).with_rest_replies(bot.rest().clone(), bot.reply_routing());
    Ok(match bot.executor() {
        Some(executor) => server.with_executor(Arc::clone(executor)),
        None => server,
    })
}
