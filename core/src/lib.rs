//! Sans-IO core of yuyo: everything that decides how a Discord interactions endpoint
//! behaves, with no sockets, clocks, threads or runtime.
//!
//! - [`http1`]: the HTTP/1.1 server connection (framing, limits, deadlines as data).
//! - [`endpoint`]: the interaction endpoint (checks, Ed25519 verification, PING, dispatch,
//!   replies), what yuyo's `AsgiAdapter` and hikari's `InteractionServer` do.
//! - [`multipart`]: the `multipart/form-data` encoder for replies with files.
//! - [`lifespan`]: the startup/shutdown state machine.
//! - [`rest`]: the Discord REST client (routes, auth, rate limits, retries, the transport
//!   and the bot's lifecycle as state machines, typed requests); its `RestClient` and
//!   `Bot` run over an adapter's runtime.
//! - [`deferral`]: replies through REST (automatic deferral, oversized files), sans-IO.
//! - [`metrics`]: what the core counts through the `metrics` facade.
//! - [`service`]: what an adapter serves (endpoint, lifespan, options).
//! - [`server`]: one served connection, [`http1`] wired to [`endpoint`], which every
//!   socket-based adapter drives with the same loop.
//! - [`prelude`]: what a bot needs in one `use` (each adapter's prelude extends it).
//!
//! ```
//! use yuyo_core::prelude::*;
//!
//! let mut handlers = Handlers::new();
//! handlers.set_command(|_ctx| async { Ok(Some(Reply::message("pong!"))) })?;
//! let key = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
//! let endpoint = Endpoint::new(EndpointConfig::new(Verifier::from_hex(key)?), handlers);
//! // An adapter serves `endpoint`; the core answers every request from bytes in.
//! # drop(endpoint);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod deferral;
pub mod endpoint;
pub mod http1;
pub mod lifespan;
pub mod metrics;
pub mod multipart;
pub mod prelude;
pub mod rest;
pub mod server;
pub mod service;

pub use twilight_model;
