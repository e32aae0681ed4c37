//! Sans-IO core of yuyo: everything that decides how a Discord interactions endpoint
//! behaves, with no sockets, clocks, threads or runtime.
//!
//! - [`http1`]: the HTTP/1.1 server connection (framing, limits, deadlines as data).
//! - [`endpoint`]: the interaction endpoint (checks, Ed25519 verification, PING, dispatch,
//!   replies), what yuyo's `AsgiAdapter` and hikari's `InteractionServer` do.
//! - [`multipart`]: the `multipart/form-data` encoder for replies with files.
//! - [`lifespan`]: the startup/shutdown state machine.
//! - [`rest`]: the Discord REST client rules (routes, auth, rate limits, retries), sans-IO.
//! - [`deferral`]: replies through REST (automatic deferral, oversized files), sans-IO.
//! - [`service`]: what an adapter serves (endpoint, lifespan, options).
//! - [`server`]: one served connection, [`http1`] wired to [`endpoint`], which every
//!   socket-based adapter drives with the same loop.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod deferral;
pub mod endpoint;
pub mod http1;
pub mod lifespan;
pub mod multipart;
pub mod prelude;
pub mod rest;
pub mod server;
pub mod service;

pub use twilight_model;
