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
//! The API, and how it maps to yuyo's `AsgiBot`, is the same on every adapter: see
//! [`yuyo_core::rest::bot`]. This module runs the
//! [`Lifecycle`](yuyo_core::rest::bot::Lifecycle)'s steps on the calling thread.
//!
//! # Replies through REST
//! A bot's server defers slow handlers and sends oversized files through the callback
//! endpoint (see [`yuyo_core::deferral`] and [the crate docs](crate#replies-through-rest)):
//! [`BotBuilder::defer_after`] (default 2.5 s, [`DEFAULT_DEFER_AFTER`]) and
//! [`BotBuilder::inline_files_limit`] (default 150 000 bytes,
//! [`DEFAULT_INLINE_FILES_LIMIT`]); `None` turns either off.

use futures_lite::future::block_on;
use yuyo_core::rest::bot::{BotStep, Operation};

pub use yuyo_core::deferral::{DEFAULT_DEFER_AFTER, DEFAULT_INLINE_FILES_LIMIT, ReplyRouting};
pub use yuyo_core::rest::TokenStrategy;
pub use yuyo_core::rest::bot::{BotCallbackId, BotError, LifecycleError, UnknownCallback};
pub use yuyo_core::rest::{ConfigError, KeyDiscoveryError};

use crate::rest::Blocking;
use crate::{Server, Service};

/// yuyo's `AsgiBot` on std threads (see [`yuyo_core::rest::bot::Bot`]); its
/// operations block. Cheap to clone.
pub type Bot = yuyo_core::rest::bot::Bot<Blocking>;

/// Builds a [`Bot`]; mirrors `AsgiBot.__init__` (there is no executor: handlers run on
/// the connection threads, so [`BotBuilder::executor`] cannot be called).
pub type BotBuilder = yuyo_core::rest::bot::BotBuilder<Bot>;

/// Runs one lifecycle operation of `bot` to its end.
pub(crate) fn drive(bot: &Bot, operation: Operation) -> Result<(), LifecycleError> {
    let mut transition = bot.lifecycle().transition(operation);
    loop {
        match transition.poll() {
            BotStep::Fetch(request) => transition.fetched(bot.rest().call(request)),
            BotStep::Run(phase) => transition.ran(block_on(phase)),
            BotStep::Wait(version) => bot.changes().after(version, None),
            BotStep::Done(result) => return result,
        }
    }
}

/// The server of `bot`, once its key is known (see [`Bot::server`]).
pub(crate) fn server(bot: &Bot) -> Result<Server, LifecycleError> {
    drive(bot, Operation::FindKey)?;
    let service: Service = bot.lifecycle().service({
        let bot = bot.clone();
        // The blocking server runs lifespan callbacks on its own thread.
        move |operation| {
            let result = drive(&bot, operation);
            Box::pin(async move { result })
        }
    })?;
    Ok(Server::new(service).with_rest_replies(bot.rest().clone(), bot.reply_routing()))
}
