//! Sans-IO Discord REST client: builds requests, rate limits them as Discord
//! documents, and decides from answers and the `now` it is given what happens
//! next (send, wait until, retry, done, fail). No sockets, clocks or sleeps.
//!
//! - [`RestConfig`]: base URL, token, `max_rate_limit`, `max_retries`,
//!   global limit, backoff.
//! - [`Route`] / [`RestRequest`]: a route, a body and the model its answer
//!   decodes to; [`Route::custom`] with [`RestRequest::new`] for anything the
//!   typed requests do not cover.
//! - [`Interaction`]: typed requests to answer an interaction (the callback,
//!   the original response, follow-ups), with message bodies
//!   [`MessageCreate`] / [`MessageEdit`] and files ([`Attachment`]).
//! - [`Commands`]: typed requests for global and guild application commands.
//! - [`Rest`] / [`Call`]: one call as a state machine.
//! - [`RateLimiter`]: the rate-limit state every call of a client shares
//!   (rules in [`ratelimit`]); [`SharedLimits`] adds limits shared by the bot's
//!   processes through Redis (`transport` feature).
//! - [`KeyDiscovery`]: single-flight public-key discovery.
//! - [`bot`]: what every adapter's `Bot` shares (errors, callbacks, endpoint).
//! - `transport` (feature `transport`): what every adapter's HTTP transport shares
//!   (settings, TLS configuration, proxy `CONNECT`, pool bookkeeping).
//!
//! # Driving a call
//! Every adapter runs the same loop (`limiter` is the client's
//! `Mutex<RateLimiter>`, `changed` a notification fired after every
//! `on_response` / `on_transport_error`, `send` the adapter's HTTP client):
//!
//! ```ignore
//! let mut call = rest.call(request);
//! loop {
//!     let step = call.poll(Instant::now(), &mut limiter.lock());
//!     match step {
//!         Step::Send(request) => {
//!             let outcome = send(request).await; // with the adapter's timeouts
//!             let mut limiter = limiter.lock();
//!             match outcome {
//!                 Ok(response) => call.on_response(Instant::now(), response, &mut limiter),
//!                 Err(error) => call.on_transport_error(Instant::now(), error, &mut limiter),
//!             }
//!             changed.notify_waiters();
//!         }
//!         Step::Wait(wait) if wait.wakes_on_update() => {
//!             select(sleep_until(wait.until), changed.notified()).await
//!         }
//!         Step::Wait(wait) => sleep_until(wait.until).await,
//!         Step::Done(result) => break result,
//!         Step::InFlight => {} // not produced by this loop: outcomes come first
//!     }
//! }
//! ```
//!
//! Invariants: after every `Send`, report exactly one outcome before polling
//! again; never hold the limiter's lock across IO or a sleep. A call dropped
//! while its request is in flight takes its permit with it; the limiter stops
//! waiting for that answer after `in_flight_timeout`. To avoid missing a
//! wake-up, read [`RateLimiter::version`] together with the step and wait only
//! while it is unchanged (a `tokio::sync::watch` of the version does this).
//!
//! # Retries and errors
//! - 2xx → `Done(Ok)`; decode with [`Response::model`].
//! - 429 → wait `retry_after` (body) or `Retry-After` (header) and send
//!   again (not counted as a retry); longer than `max_rate_limit` →
//!   [`RestError::RateLimitTooLong`]. Waiting for an exhausted bucket or the
//!   global limit is checked the same way.
//! - 5xx → retried up to `max_retries` times with [`Backoff`], then
//!   [`RestError::RetriesExhausted`].
//! - transport failure → the same, if the request was not sent
//!   ([`TransportErrorKind::Connect`]) or may be repeated (not `POST`);
//!   otherwise [`RestError::Transport`] / [`RestError::Timeout`].
//! - other 4xx → [`RestError::Http`] with Discord's error JSON decoded
//!   ([`DiscordError`], its invalid fields as [`FieldError`]s); a 401 also
//!   tells the token strategy to drop its token. [`RestError::code`],
//!   [`RestError::is_not_found`], [`RestError::is_unknown_interaction`] and
//!   the like answer the common questions.
//!
//! # Typed requests
//! Each builds a [`RestRequest<T>`](RestRequest) that every adapter's
//! `call` runs; [`Response::model`] decodes `T`. Failures carry Discord's
//! error JSON, with predicates for the usual cases.
//!
//! ```
//! use twilight_model::id::Id;
//! use yuyo_core::rest::{Attachment, Commands, Interaction, MessageCreate, MessageEdit, RestError};
//!
//! # fn main() -> Result<(), serde_json::Error> {
//! // From the interaction's payload: `Interaction::from(&interaction)`.
//! let interaction = Interaction::new(Id::new(1), Id::new(2), "interaction-token");
//! let defer = interaction.defer(true); // RestRequest<NoContent>
//! let answer = interaction.edit_original(
//!     MessageEdit::new()
//!         .content("Here is the report")
//!         .attachment(Attachment::from_path("/tmp/report.pdf")), // streamed from disk
//! )?; // RestRequest<Message>
//! let more = interaction.followup(MessageCreate::new().content("Anything else?").ephemeral())?;
//! assert!(!format!("{defer:?}{answer:?}{more:?}").contains("interaction-token"));
//!
//! let list = Commands::global(Id::new(2)).list(); // RestRequest<Vec<Command>>
//! assert_eq!(list.route().path(), "/applications/2/commands");
//!
//! // What to do when a call fails:
//! fn on_error(error: &RestError) {
//!     if error.is_unknown_interaction() {
//!         // too late: the token expired or the 3 s to answer passed
//!     } else if error.is_already_acknowledged() {
//!         // answered twice: edit the original response instead
//!     } else if let Some(http) = error.http() {
//!         for field in http.field_errors() {
//!             eprintln!("{field}"); // e.g. "embeds[0].title: Must be 256 or fewer in length. (…)"
//!         }
//!     }
//! }
//! # let _ = on_error;
//! # Ok(())
//! # }
//! ```
//!
//! # yuyo's `AsgiBot` parameters
//! | yuyo | here |
//! |---|---|
//! | `token: str` | [`RestConfigBuilder::token`] |
//! | `token: TokenStrategy` | [`RestConfigBuilder::token_strategy`] ([`TokenStrategy`]) |
//! | `token_type` (`"Bot"`/`"Bearer"`, default Bot) | [`RestConfigBuilder::token_type`] ([`TokenType`]) |
//! | `token_type` with a strategy → `ValueError` | [`ConfigError::TokenTypeWithStrategy`] |
//! | `public_key=None` (discover it) | [`KeyDiscovery`], [`verify_key_from`] |
//! | `max_rate_limit=300.0` / `float("inf")` | [`RestConfigBuilder::max_rate_limit`] (`Some(300 s)` / `None`) |
//! | `max_retries=3` | [`RestConfigBuilder::max_retries`] |
//! | `rest_url=None` | [`RestConfigBuilder::rest_url`] ([`DEFAULT_REST_URL`]) |
//! | `RateLimitTooLongError` | [`RestError::RateLimitTooLong`] |
//! | `http_settings`, `proxy_settings` | the adapters' transports (not sans-IO) |
//!
//! # Secrets
//! Tokens never appear in `Debug` output or logs: the `Authorization` value is
//! marked sensitive, [`StaticToken`], [`RestConfigBuilder`] and
//! [`Interaction`] redact it, and a [`Route`]'s `Debug` and every error show the route template
//! ([`RouteKey`]), never the interaction or webhook token in the path. The
//! path itself ([`Route::path`], the request URI) does hold it: adapters must
//! not log URIs.

mod auth;
pub mod bot;
#[cfg(feature = "transport")]
mod bot_builder;
#[cfg(feature = "transport")]
mod bot_handle;
mod call;
#[cfg(feature = "transport")]
pub mod client;
#[cfg(all(test, feature = "transport"))]
mod client_tests;
mod command_sync;
mod commands;
mod config;
mod discovery;
mod error;
mod interactions;
mod lifecycle;
#[cfg(test)]
mod lifecycle_tests;
mod message;
pub mod ratelimit;
mod request;
mod route;
#[cfg(feature = "transport")]
pub mod runtime;
#[cfg(feature = "transport")]
mod shared;
mod shared_limits;
#[cfg(feature = "transport")]
pub mod transport;

#[cfg(test)]
#[allow(deprecated)] // the raw constructors are tested until they go
mod tests;
#[cfg(test)]
mod typed_tests;

pub use auth::{StaticToken, TokenError, TokenStrategy, TokenType};
pub use call::{Call, Response, Rest, Step};
pub use command_sync::{
    CommandChange, CommandProblem, CommandSync, MAX_CHAT_INPUT_COMMANDS, MAX_CONTEXT_MENU_COMMANDS,
    MAX_DESCRIPTION, MAX_NAME, MAX_OPTIONS, parse_commands, validate_commands,
};
pub use commands::Commands;
pub use config::{
    Backoff, ConfigError, DEFAULT_GLOBAL_LIMIT, DEFAULT_IN_FLIGHT_TIMEOUT, DEFAULT_MAX_RATE_LIMIT,
    DEFAULT_MAX_RETRIES, DEFAULT_REST_URL, RestConfig, RestConfigBuilder, USER_AGENT,
};
pub use discovery::{Begin, KeyDiscovery, KeyDiscoveryError, verify_key_from, verify_key_request};
pub use error::{
    DiscordError, FieldError, HttpError, RequestError, RestError, TransportError,
    TransportErrorKind, TransportSetupError,
};
pub use interactions::{
    Callback, Interaction, InteractionCallback, InteractionCallbackResource,
    InteractionCallbackResponse,
};
pub use message::{Attachment, MessageCreate, MessageEdit};
pub use ratelimit::{
    Permit, RateLimitHeaders, RateLimited, RateLimiter, Scope, WaitReason, WaitUntil,
};
pub use request::{ApplicationUpdate, NoContent, Payload, RequestBody, RestRequest};
pub use route::{InvalidPath, Major, RateLimitKey, Route, RouteKey};
#[cfg(feature = "transport")]
pub use runtime::{RestClient, RestReplies, SyncOutcome};
pub use shared_limits::{DEFAULT_REDIS_RETRY, DEFAULT_REDIS_TIMEOUT, SharedLimits};
