//! The bot on tokio: yuyo's `AsgiBot` — an interactions endpoint plus a rate-limited
//! REST client, started and stopped with the server (managed, the default) or by hand.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use yuyo_tokio::prelude::*;
//! let bot = Bot::builder("token").build()?; // the public key is fetched at startup
//! let server = bot.server().await?;          // managed: the server's lifespan runs it
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! server.serve(listener).await?;
//! # Ok(())
//! # }
//! ```
//!
//! The API, how it maps to yuyo's `AsgiBot`, and the lifecycle are the same on every
//! adapter: see [`yuyo_core::rest::bot`]. A bot's server defers slow handlers and sends
//! oversized files through REST ([the crate docs](crate#replies-through-rest)):
//! [`BotBuilder::defer_after`] ([`DEFAULT_DEFER_AFTER`]) and
//! [`BotBuilder::inline_files_limit`] ([`DEFAULT_INLINE_FILES_LIMIT`]).

pub use yuyo_core::deferral::{DEFAULT_DEFER_AFTER, DEFAULT_INLINE_FILES_LIMIT, ReplyRouting};
pub use yuyo_core::rest::TokenStrategy;
pub use yuyo_core::rest::bot::{BotCallbackId, BotError, LifecycleError, UnknownCallback};
pub use yuyo_core::rest::{ConfigError, KeyDiscoveryError};

use crate::rest::Tokio;

/// yuyo's `AsgiBot` on tokio (see [`yuyo_core::rest::bot::Bot`]); its operations are
/// futures. Cheap to clone.
pub type Bot = yuyo_core::rest::bot::Bot<Tokio>;

/// Builds a [`Bot`]; mirrors `AsgiBot.__init__` ([`BotBuilder::executor`] takes a
/// tokio [`Handle`](tokio::runtime::Handle)).
pub type BotBuilder = yuyo_core::rest::bot::BotBuilder<Bot>;
