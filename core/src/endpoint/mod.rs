//! The Discord interaction endpoint, sans-IO: what yuyo's `AsgiAdapter` and
//! hikari's `InteractionServer` do, as explicit states with no IO, clock or
//! runtime.
//!
//! # Driving an exchange
//! A driver (runtime adapter) takes each request through these states; every
//! state is a type whose methods are the only legal next steps:
//!
//! | state | value | next step |
//! |---|---|---|
//! | Head | [`Endpoint`] + `http::request::Parts` | [`Endpoint::begin`] → [`Exchange`] or [`Rejection`] |
//! | Body | [`Exchange`] | [`Exchange::push`] each chunk (→ `Exchange` or 413 [`Rejection`]); at the end [`Exchange::finish`]`(now)` → [`Finished`], or [`Exchange::end`] → [`Signed`] |
//! | Signed | [`Signed`] | [`Signed::verify`]`(now)` → [`Finished`], or [`Signed::enqueue`]`(now)` → a [`Ticket`] that resolves to it, verified in a batch with other requests |
//! | Respond now | [`Finished::Respond`]`(`[`Immediate`]`)` | [`Immediate::into_response`] (rejections and PONG) |
//! | Dispatch | [`Finished::Dispatch`]`(`[`Dispatch`]`)` | [`Dispatch::start`] → ([`Responding`], [`HandlerFuture`]) |
//! | Event | [`Finished::Event`]`(`[`EventDispatch`]`)` | [`EventDispatch::acknowledge`] → [`Completed`] (a 204; the event handler is its `after`) |
//! | Responding | [`Responding`] | await the `HandlerFuture`, then [`Responding::complete`]`(outcome)` → [`Completed`] |
//! | Done | [`Completed`] | write `response`; then run `after`, if any |
//!
//! The loop every adapter writes (`read_chunk`, `write` and `spawn` are the
//! driver's own IO):
//!
//! ```ignore
//! let finished = match endpoint.begin(&parts) {
//!     Err(rejection) => return write(rejection.into_response()).await,
//!     Ok(mut exchange) => {
//!         while let Some(chunk) = read_chunk().await? {
//!             exchange = match exchange.push(chunk) {
//!                 Ok(exchange) => exchange,
//!                 Err(rejection) => return write(rejection.into_response()).await,
//!             };
//!         }
//!         exchange.finish(unix_now_secs())
//!     }
//! };
//! match finished {
//!     Finished::Respond(immediate) => write(immediate.into_response()).await,
//!     Finished::Dispatch(dispatch) => {
//!         let (responding, handler) = dispatch.start();
//!         let done = responding.complete(handler.await);
//!         write(done.response).await?;
//!         if let Some(after) = done.after { spawn(after) }
//!     }
//!     Finished::Event(event) => {
//!         let done = event.acknowledge();
//!         write(done.response).await?;
//!         if let Some(after) = done.after { spawn(after) }
//!     }
//! }
//! ```
//!
//! A body that is available up front can go through [`Endpoint::receive`]
//! instead of `begin`/`push`/`finish`.
//!
//! Invariants a driver can rely on: every rejection is returned at most once
//! and ends the exchange (states are consumed by value); the body is never
//! buffered past `max_body_size`; a handler's panics come out of its
//! [`HandlerFuture`] as a failure (500), not as an unwinding driver.
//!
//! # Checks, in order
//! The first failing check decides the answer (text bodies are
//! `text/plain; charset=utf-8`):
//!
//! 1. path ≠ configured path (query ignored) → 404
//! 2. method ≠ `POST` → 405 with `Allow: POST`
//! 3. `Content-Type` missing, repeated or not `application/json`
//!    (case-insensitive, parameters ignored) → 415
//! 4. `X-Signature-Ed25519` / `X-Signature-Timestamp` missing, repeated,
//!    signature not exactly 128 hex digits, timestamp not visible ASCII → 401
//! 5. `Content-Length` repeated or not a number → 400; declared length over
//!    `max_body_size` → 413; running total over it while streaming → 413
//! 6. empty body → 400
//! 7. signature does not verify (`verify_strict`) over `timestamp ‖ body` → 401
//!    (drivers verify requests that complete together as one batch, with the
//!    same answers: see [`VerifyQueue`])
//! 8. timestamp window configured and timestamp not an integer within it → 401
//!    (checked only once the signature verifies; see
//!    [`EndpointConfig::timestamp_window`] for its warning)
//! 9. body not a JSON object → 400; `type` missing or not an integer → 400
//! 10. `type` 1 (PING) → 200 `{"type":1}` (`application/json`, no handler)
//! 11. `type` not 2–5 → 501
//! 12. authentic payload twilight-model cannot read → 500 (logged with the error)
//! 13. no handler for the kind → 501
//! 14. handler: no reply → 204; reply → 200 JSON or multipart with files;
//!     failure or panic → 500
//!
//! # Webhook Events
//! With [`EndpointConfig::events_path`] set, requests for that path go through checks
//! 2–8 exactly as above (same key, limits and batch verifier); then:
//!
//! 9. body not a JSON object → 400; envelope `type` missing or not an integer → 400
//! 10. `type` 0 (PING) → 204 with `Content-Type: application/json`, no body
//! 11. `type` not 0 or 1 → 501
//! 12. `application_id` not a snowflake string, `event` not an object, `event.type` or
//!     `event.timestamp` not a string → 400 (the message names the field)
//! 13. data of a known [`EventKind`] the typed model cannot read → 500 (logged)
//! 14. otherwise 204 with `Content-Type: application/json` at once; the event's handler
//!     ([`EventHandlers`]: its kind's, else the catch-all) runs after the response is
//!     written, and its failure or panic is only logged. Unknown event types and
//!     events without a handler are acknowledged the same way (a debug line).
//!
//! Requests that fail before the signature verifies cost at most a
//! `tracing::debug!` line, since anyone can send them.
//!
//! # Example
//! ```
//! # use yuyo_core::endpoint::*;
//! # use bytes::Bytes;
//! # use ed25519_dalek::{Signer, SigningKey};
//! let signing_key = SigningKey::from_bytes(&[7; 32]);
//! let verifier = Verifier::from_bytes(signing_key.verifying_key().as_bytes())?;
//! let mut handlers = Handlers::new();
//! handlers.set_command(|_ctx| async { Ok(Some(Reply::message("pong!"))) })?;
//! let endpoint = Endpoint::new(EndpointConfig::new(verifier), handlers);
//!
//! let body = br#"{"type":1}"#;
//! let signature = signing_key.sign(&[&b"1700000000"[..], body].concat());
//! let (parts, ()) = http::Request::post("/")
//!     .header("content-type", "application/json")
//!     .header("x-signature-ed25519", hex::encode(signature.to_bytes()))
//!     .header("x-signature-timestamp", "1700000000")
//!     .body(())?
//!     .into_parts();
//!
//! match endpoint.receive(&parts, [Bytes::from_static(body)], 1_700_000_000) {
//!     Finished::Respond(immediate) => assert_eq!(immediate, Immediate::Pong),
//!     Finished::Dispatch(_) | Finished::Event(_) => unreachable!("a PING never reaches a handler"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod batch;
mod config;
mod event_handlers;
mod events;
mod exchange;
mod handlers;
mod health;
mod parse;
mod probe;
mod rejection;
mod reply;
mod response;
mod signature;
mod window;

use std::sync::Arc;

pub use batch::{BatchStats, FALLBACK_SIGNATURES, MAX_BATCH, Ticket, VerifyQueue};
pub use config::{
    DEFAULT_HEALTH_PATH, DEFAULT_MAX_BODY_SIZE, EndpointConfig, InvalidSignature, KeyError,
    Verifier,
};
pub use event_handlers::{
    EventAlreadySet, EventDispatch, EventHandler, EventHandlers, EventResult,
};
pub use events::{
    ApplicationAuthorized, ApplicationDeauthorized, EnvelopeField, EventContext, EventKind,
    WebhookEvent,
};
pub use exchange::{
    Completed, Dispatch, Exchange, Finished, HandlerFuture, Immediate, Responding, Signed,
};
pub use handlers::{
    AlreadySet, BoxFuture, Context, Handler, HandlerError, HandlerResult, Handlers,
    InteractionKind, OnConflict,
};
pub use health::{Health, HealthCheck};
pub use rejection::{HeaderProblem, Rejection, SignatureHeader};
pub use reply::{Reply, ReplyPayload};
pub use response::ResponseBody;

/// A configured interaction endpoint: configuration plus handlers, shared
/// (cheap to clone) by every exchange it starts.
///
/// Handlers are fixed once the endpoint is built; build a new endpoint to
/// change them.
#[derive(Clone, Debug)]
pub struct Endpoint {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: EndpointConfig,
    handlers: Handlers,
    event_handlers: EventHandlers,
    verify_queue: VerifyQueue,
    health: Health,
    /// Rate-limits the warning about authentic requests outside the timestamp window.
    stale_warnings: window::StaleWarnings,
    metrics: crate::metrics::EndpointMetrics,
}

impl Endpoint {
    /// An endpoint serving `handlers` under `config` (no Webhook Event handlers: see
    /// [`Endpoint::with_events`]).
    #[must_use]
    pub fn new(config: EndpointConfig, handlers: Handlers) -> Self {
        Self::with_events(config, handlers, EventHandlers::new())
    }

    /// An endpoint serving interactions to `handlers` and, at
    /// [`EndpointConfig::events_path`], Webhook Events to `event_handlers`.
    ///
    /// Event handlers without an events path are never called (logged as a warning).
    #[must_use]
    pub fn with_events(
        config: EndpointConfig,
        handlers: Handlers,
        event_handlers: EventHandlers,
    ) -> Self {
        if config.events_path.is_none() && !event_handlers.is_empty() {
            tracing::warn!(
                "webhook event handlers are set but no events path is configured: they will never run"
            );
        }
        Self {
            shared: Arc::new(Shared {
                config,
                handlers,
                event_handlers,
                verify_queue: VerifyQueue::default(),
                health: Health::default(),
                stale_warnings: window::StaleWarnings::default(),
                metrics: crate::metrics::EndpointMetrics::default(),
            }),
        }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &EndpointConfig {
        &self.shared.config
    }

    /// The handlers.
    #[must_use]
    pub fn handlers(&self) -> &Handlers {
        &self.shared.handlers
    }

    /// The Webhook Event handlers.
    #[must_use]
    pub fn event_handlers(&self) -> &EventHandlers {
        &self.shared.event_handlers
    }

    /// The requests awaiting batch verification (shared by every clone).
    #[must_use]
    pub fn verify_queue(&self) -> &VerifyQueue {
        &self.shared.verify_queue
    }

    /// What the health check answers (shared by every clone): the server adapters mark
    /// it draining when a shutdown is requested.
    #[must_use]
    pub fn health(&self) -> &Health {
        &self.shared.health
    }

    /// The handles its requests are counted with (shared by every clone).
    #[must_use]
    pub fn metrics(&self) -> &crate::metrics::EndpointMetrics {
        &self.shared.metrics
    }
}
