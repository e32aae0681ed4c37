//! What every adapter's `Bot` (yuyo's `AsgiBot`) shares: its errors, the
//! [`Lifecycle`] state machine (start, close, join, run, key discovery, callbacks) and
//! how the interaction endpoint is made once the key is known. Each adapter's `Bot` is
//! [`Bot`] over its runtime, with the same API everywhere (async on smol and tokio,
//! blocking on std threads).
//!
//! # yuyo's `AsgiBot` → `Bot`
//! | yuyo | here |
//! |---|---|
//! | `AsgiBot(token, …)` | `Bot::builder(token)` … `BotBuilder::build` |
//! | `token: TokenStrategy` | `Bot::builder_with_strategy` |
//! | `token_type="Bot"/"Bearer"` (default Bot) | `BotBuilder::token_type` |
//! | `token_type` with a strategy → `ValueError` | `BotError::Config` (`ConfigError::TokenTypeWithStrategy`) |
//! | `public_key: str` (hex) / `bytes` | `BotBuilder::public_key_hex` / `BotBuilder::public_key_bytes`; bad hex → `BotError::PublicKey` at `build` |
//! | `public_key=None` (fetched from the token) | `KeyDiscovery`, single-flight, at startup (`Bot::public_key`) |
//! | `asgi_managed=True` / `False` | default / `BotBuilder::unmanaged` (`Bot::is_managed`) |
//! | `executor` | `BotBuilder::executor` (the runtime's executor; `Bot::executor`) |
//! | `http_settings` | `BotBuilder::http_settings` (`HttpSettings`; `Bot::http_settings`) |
//! | `proxy_settings` | `BotBuilder::proxy_settings` (`ProxySettings`; `Bot::proxy_settings`) |
//! | `max_body_size=1024**2` | `BotBuilder::max_body_size` |
//! | `max_rate_limit=300.0` / `inf` | `BotBuilder::max_rate_limit` (`Some` / `None`) |
//! | `max_retries=3` | `BotBuilder::max_retries` |
//! | `rest_url` | `BotBuilder::rest_url` |
//! | (Webhook Events) | `BotBuilder::events` (a path and its `EventHandlers`) |
//! | `__call__` (ASGI app) | `Bot::server` (a `Server` whose lifespan runs the bot) |
//! | `rest` | `Bot::rest` |
//! | `interaction_server` / `server` | `Bot::interaction_server` (once the key is known) |
//! | `is_alive` | `Bot::is_alive` |
//! | `start()` / `close()` / `join()` / `run()` | `Bot::start` / `Bot::close` / `Bot::join` / `Bot::run` |
//! | `RuntimeError` (managed; already alive; not alive) | `LifecycleError::Managed` / `LifecycleError::AlreadyRunning` / `LifecycleError::NotRunning` |
//! | `add_startup_callback(cb)` / `add_shutdown_callback(cb)` | `Bot::add_startup_callback` / `Bot::add_shutdown_callback` (callbacks receive the `Bot`) |
//! | `remove_*_callback` unknown → `ValueError` | `UnknownCallback` |
//! | callback failure fails startup/shutdown | `LifecycleError::Callback` (callbacks run concurrently, as the server's lifespan runs its own) |

use std::collections::BTreeMap;
use std::fmt;

use super::ConfigError;
#[cfg(feature = "transport")]
pub use super::bot_builder::{BotBuilder, BotSettings, BuildBot};
#[cfg(feature = "transport")]
pub use super::bot_handle::Bot;
use super::discovery::KeyDiscoveryError;
use super::error::TransportSetupError;
pub use super::lifecycle::{BotStep, Hooks, Lifecycle, Operation, Transition};
use crate::endpoint::{Endpoint, EndpointConfig, EventHandlers, Handlers, KeyError, Verifier};

/// Why a bot could not be built or served.
#[derive(Debug)]
#[non_exhaustive]
pub enum BotError {
    /// Contradictory or unusable REST settings (yuyo's `ValueError`).
    Config(ConfigError),
    /// The public key given is not a usable key (bad hex, wrong length, bad point).
    PublicKey(KeyError),
    /// The transport (TLS) could not be set up.
    Transport(TransportSetupError),
    /// Starting or stopping failed.
    Lifecycle(LifecycleError),
}

impl fmt::Display for BotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(e) => e.fmt(f),
            Self::PublicKey(e) => e.fmt(f),
            Self::Transport(e) => e.fmt(f),
            Self::Lifecycle(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for BotError {}

/// yuyo's `RuntimeError`s, and failures while starting or stopping.
#[derive(Debug)]
#[non_exhaustive]
pub enum LifecycleError {
    /// The bot is managed by the server's lifespan: start/close/join/run by hand are refused.
    Managed,
    /// `start`/`run` on a bot that is running.
    AlreadyRunning,
    /// `close`/`join` on a bot that is not running; `server` on an unmanaged bot
    /// whose key is not known yet.
    NotRunning,
    /// The public key could not be discovered.
    KeyDiscovery(KeyDiscoveryError),
    /// A startup or shutdown callback failed (all failures' messages).
    Callback(String),
}

impl fmt::Display for LifecycleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Managed => f.write_str(
                "the bot is managed by the server's lifespan; build it unmanaged to start or close it by hand",
            ),
            Self::AlreadyRunning => f.write_str("the bot is already running"),
            Self::NotRunning => f.write_str("the bot is not running"),
            Self::KeyDiscovery(e) => e.fmt(f),
            Self::Callback(e) => write!(f, "a lifecycle callback failed: {e}"),
        }
    }
}

impl std::error::Error for LifecycleError {}

impl LifecycleError {
    /// The failure of callbacks whose error messages are `failures` (`Ok` when none).
    ///
    /// # Errors
    /// [`LifecycleError::Callback`] with every message when any failed.
    pub fn from_callback_failures(failures: Vec<String>) -> Result<(), Self> {
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Self::Callback(failures.join("; ")))
        }
    }
}

/// A callback id was not registered (yuyo's `ValueError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownCallback(pub BotCallbackId);

impl fmt::Display for UnknownCallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "callback {} is not registered", self.0.0)
    }
}

impl std::error::Error for UnknownCallback {}

/// Identifies a startup or shutdown callback of a bot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BotCallbackId(u64);

impl BotCallbackId {
    /// The id as a number, e.g. for logging.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// A bot's startup and shutdown callbacks (`C`: the adapter's callback type), run in
/// the order they were added.
#[derive(Debug)]
pub struct BotCallbacks<C> {
    next_id: u64,
    startup: BTreeMap<BotCallbackId, C>,
    shutdown: BTreeMap<BotCallbackId, C>,
}

impl<C> Default for BotCallbacks<C> {
    fn default() -> Self {
        Self {
            next_id: 0,
            startup: BTreeMap::new(),
            shutdown: BTreeMap::new(),
        }
    }
}

impl<C: Clone> BotCallbacks<C> {
    fn next(&mut self) -> BotCallbackId {
        let id = BotCallbackId(self.next_id);
        self.next_id += 1;
        id
    }

    /// Adds a startup callback.
    pub fn add_startup(&mut self, callback: C) -> BotCallbackId {
        let id = self.next();
        self.startup.insert(id, callback);
        id
    }

    /// Adds a shutdown callback.
    pub fn add_shutdown(&mut self, callback: C) -> BotCallbackId {
        let id = self.next();
        self.shutdown.insert(id, callback);
        id
    }

    /// Removes a startup callback.
    ///
    /// # Errors
    /// [`UnknownCallback`] when `id` is not a registered startup callback.
    pub fn remove_startup(&mut self, id: BotCallbackId) -> Result<(), UnknownCallback> {
        self.startup
            .remove(&id)
            .map(drop)
            .ok_or(UnknownCallback(id))
    }

    /// Removes a shutdown callback.
    ///
    /// # Errors
    /// [`UnknownCallback`] when `id` is not a registered shutdown callback.
    pub fn remove_shutdown(&mut self, id: BotCallbackId) -> Result<(), UnknownCallback> {
        self.shutdown
            .remove(&id)
            .map(drop)
            .ok_or(UnknownCallback(id))
    }

    /// The startup callbacks to run now (taken out of the lock before running).
    #[must_use]
    pub fn startup(&self) -> Vec<C> {
        self.startup.values().cloned().collect()
    }

    /// The shutdown callbacks to run now.
    #[must_use]
    pub fn shutdown(&self) -> Vec<C> {
        self.shutdown.values().cloned().collect()
    }

    /// The startup callbacks with their ids.
    #[must_use]
    pub fn startup_with_ids(&self) -> Vec<(BotCallbackId, C)> {
        self.startup
            .iter()
            .map(|(id, c)| (*id, c.clone()))
            .collect()
    }

    /// The shutdown callbacks with their ids.
    #[must_use]
    pub fn shutdown_with_ids(&self) -> Vec<(BotCallbackId, C)> {
        self.shutdown
            .iter()
            .map(|(id, c)| (*id, c.clone()))
            .collect()
    }
}

/// How a bot's interaction endpoint is made once its public key is known.
#[derive(Debug, Clone)]
pub struct BotEndpoint {
    /// The interaction handlers.
    pub handlers: Handlers,
    /// The endpoint's path (`None`: the endpoint's default).
    pub path: Option<String>,
    /// Largest request body accepted.
    pub max_body_size: usize,
    /// The Webhook Events path (`None`: no events endpoint).
    pub events_path: Option<String>,
    /// The Webhook Events handlers.
    pub event_handlers: EventHandlers,
}

impl Default for BotEndpoint {
    fn default() -> Self {
        Self {
            handlers: Handlers::new(),
            path: None,
            max_body_size: 1024 * 1024,
            events_path: None,
            event_handlers: EventHandlers::new(),
        }
    }
}

impl BotEndpoint {
    /// The endpoint verifying with `verifier`.
    #[must_use]
    pub fn endpoint(&self, verifier: Verifier) -> Endpoint {
        let mut config = EndpointConfig::new(verifier).max_body_size(self.max_body_size);
        if let Some(path) = &self.path {
            config = config.path(path.clone());
        }
        if let Some(path) = &self.events_path {
            config = config.events_path(path.clone());
        }
        Endpoint::with_events(config, self.handlers.clone(), self.event_handlers.clone())
    }
}

/// The verifier for a discovered raw key.
///
/// # Errors
/// [`LifecycleError::KeyDiscovery`] ([`KeyDiscoveryError::InvalidVerifyKey`]) when the
/// bytes are no Ed25519 point.
pub fn discovered_verifier(key: &[u8; 32]) -> Result<Verifier, LifecycleError> {
    Verifier::from_bytes(key)
        .map_err(|_| LifecycleError::KeyDiscovery(KeyDiscoveryError::InvalidVerifyKey))
}

/// The raw public key of `verifier`, if it has one.
#[must_use]
pub fn public_key_of(verifier: &Verifier) -> Option<[u8; 32]> {
    verifier
        .verifying_key()
        .map(ed25519_dalek::VerifyingKey::to_bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn callbacks_keep_order_and_refuse_unknown_ids() {
        let mut callbacks = BotCallbacks::default();
        let a = callbacks.add_startup("a");
        let b = callbacks.add_startup("b");
        let c = callbacks.add_shutdown("c");
        assert_eq!(callbacks.startup(), ["a", "b"]);
        assert_eq!(callbacks.shutdown(), ["c"]);
        callbacks.remove_startup(a).unwrap();
        assert_eq!(callbacks.remove_startup(a), Err(UnknownCallback(a)));
        assert_eq!(callbacks.remove_shutdown(b), Err(UnknownCallback(b)));
        callbacks.remove_shutdown(c).unwrap();
        assert_eq!(callbacks.startup(), ["b"]);
        assert!(callbacks.shutdown().is_empty());
    }

    #[test]
    fn callback_failures_are_joined() {
        assert!(LifecycleError::from_callback_failures(Vec::new()).is_ok());
        let error =
            LifecycleError::from_callback_failures(vec!["a".into(), "b".into()]).unwrap_err();
        assert_eq!(error.to_string(), "a lifecycle callback failed: a; b");
    }
}
