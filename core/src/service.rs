//! What every server adapter serves: the [`Endpoint`] (config + handler registry), the
//! [`Lifespan`] with its callbacks, and the serving options — yuyo's `AsgiAdapter` surface
//! in one runtime-independent value, so the adapters share it instead of re-implementing it.

use std::fmt;
use std::time::Duration;

use crate::endpoint::{Endpoint, EventHandlers, Handlers};
use crate::http1;
use crate::lifespan::{
    CallbackError, CallbackId, FinishError, Lifespan, TransitionError, UnknownCallback,
};
use crate::server::Slots;

/// How a server adapter serves connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOptions {
    /// HTTP/1.1 limits and deadlines (the body limit is taken from the endpoint).
    pub http: http1::Config,
    /// Most connections served at once. At the cap, a new connection takes the slot of
    /// the one that has waited longest on its peer (see [`Slots`](crate::server::Slots));
    /// when every connection is busy on the server's side, new ones wait in the backlog.
    pub max_connections: usize,
    /// How long in-flight requests (and after-response work) may run after shutdown was
    /// requested (hikari's `shutdown_timeout`).
    pub grace_period: Duration,
    /// Shut down gracefully on Ctrl-C / SIGTERM where the runtime offers signals.
    pub handle_signals: bool,
    /// How long the server goes on accepting and serving after a shutdown is requested,
    /// while its health check ([`EndpointConfig::health_path`]) already answers 503: the
    /// time a load balancer needs to notice and stop sending new interactions here.
    /// After it, the server stops accepting, takes every connection already queued in the
    /// listen backlog (so none is reset), and finishes what it accepted within
    /// [`grace_period`](Self::grace_period). Zero by default.
    ///
    /// [`EndpointConfig::health_path`]: crate::endpoint::EndpointConfig::health_path
    pub drain_period: Duration,
    /// Head, body, write and idle deadline of connections accepted while at least half
    /// of `max_connections` are open (see [`ServeOptions::connection_config`]).
    pub pressure_timeout: Duration,
    /// The kernel send buffer of each accepted connection (`SO_SNDBUF`; `None` leaves
    /// the kernel's autotuning). Output the kernel holds is output the server has no
    /// account of: a peer that pipelines requests and never reads makes the server
    /// answer until this buffer and the session's own bound ([`MAX_UNSENT`]) are full,
    /// so a small buffer keeps the work such a peer can cause small. Interaction answers
    /// are small; 64 KiB still carries reply files at several MB/s at 20 ms round trips.
    ///
    /// [`MAX_UNSENT`]: crate::server::MAX_UNSENT
    pub send_buffer: Option<usize>,
}

impl ServeOptions {
    /// The HTTP/1.1 configuration for a connection accepted while `open` others are open.
    ///
    /// Once half the connection cap is in use, new connections must send their request
    /// heads and bodies, read their responses, and send later requests, each within
    /// [`ServeOptions::pressure_timeout`] instead of the usual deadlines: a flood of
    /// silent, stalled or non-reading sockets then drains within seconds and cannot hold
    /// the cap against real requests (which Discord sends at once, and reads at once).
    pub fn connection_config(&self, open: usize) -> http1::Config {
        let mut config = self.http.clone();
        if open.saturating_mul(2) >= self.max_connections {
            config.head_timeout = config.head_timeout.min(self.pressure_timeout);
            config.idle_timeout = config.idle_timeout.min(self.pressure_timeout);
            config.body_timeout = config.body_timeout.min(self.pressure_timeout);
            config.write_timeout = config.write_timeout.min(self.pressure_timeout);
        }
        config
    }
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            http: http1::Config::default(),
            max_connections: 1024,
            grace_period: Duration::from_secs(60),
            handle_signals: false,
            drain_period: Duration::ZERO,
            pressure_timeout: Duration::from_secs(1),
            send_buffer: Some(64 * 1024),
        }
    }
}

/// How long an accept loop waits after an accept error that is not the peer's (out of
/// file descriptors or memory) before accepting again.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What an accept error means for an accept loop; see [`AcceptError::classify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptError {
    /// The connection failed before it was accepted, or the call was interrupted: log at
    /// debug level and accept again at once.
    Retry,
    /// The server ran out of something (file descriptors, memory, buffers) or the error
    /// is unknown: log it as an error and wait [`ACCEPT_BACKOFF`] rather than spin.
    Backoff,
}

impl AcceptError {
    /// Classifies an error returned by `accept`, the same way for every adapter.
    #[must_use]
    pub fn classify(error: &std::io::Error) -> Self {
        use std::io::ErrorKind;
        match error.kind() {
            ErrorKind::ConnectionRefused
            | ErrorKind::ConnectionAborted
            | ErrorKind::ConnectionReset
            | ErrorKind::Interrupted
            | ErrorKind::WouldBlock
            | ErrorKind::PermissionDenied => Self::Retry,
            _ => Self::Backoff,
        }
    }
}

/// Why serving ended with an error.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServeError {
    /// A startup callback failed: nothing was served. Holds every callback's message.
    Startup(FinishError),
    /// A shutdown callback failed (after serving stopped).
    Shutdown(FinishError),
    /// The lifespan was not in a state to start or stop (e.g. served twice).
    Lifespan(TransitionError),
    /// The listener failed.
    Io(std::io::Error),
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Startup(e) => write!(f, "startup failed: {e}"),
            Self::Shutdown(e) => write!(f, "shutdown failed: {e}"),
            Self::Lifespan(e) => write!(f, "lifespan: {e}"),
            Self::Io(e) => write!(f, "listener: {e}"),
        }
    }
}

impl std::error::Error for ServeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Startup(e) | Self::Shutdown(e) => Some(e),
            Self::Lifespan(e) => Some(e),
            Self::Io(e) => Some(e),
        }
    }
}

impl From<std::io::Error> for ServeError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

/// An endpoint with its lifespan and serving options: what an adapter serves.
#[derive(Debug)]
pub struct Service {
    endpoint: Endpoint,
    lifespan: Lifespan,
    options: ServeOptions,
    slots: Slots,
    #[cfg(feature = "tls")]
    tls: Option<crate::server::tls::ServerTls>,
}

impl Service {
    /// A service for `endpoint` with no lifespan callbacks and default options.
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            lifespan: Lifespan::new(),
            options: ServeOptions::default(),
            slots: Slots::new(),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Serves HTTPS with `tls` (builder form): every adapter's connections run the TLS
    /// layer of their [`Session`](crate::server::Session). Keep a clone of `tls` to
    /// reload it while serving.
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn with_tls(mut self, tls: crate::server::tls::ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Serves HTTPS with `tls`, or plain HTTP with `None`.
    #[cfg(feature = "tls")]
    pub fn set_tls(&mut self, tls: Option<crate::server::tls::ServerTls>) {
        self.tls = tls;
    }

    /// The TLS configuration served, if HTTPS (a shared handle: reload it through it).
    #[cfg(feature = "tls")]
    pub fn tls(&self) -> Option<&crate::server::tls::ServerTls> {
        self.tls.as_ref()
    }

    /// The endpoint (yuyo's `server` property: config and handler registry).
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The handler registry.
    pub fn handlers(&self) -> &Handlers {
        self.endpoint.handlers()
    }

    /// The Webhook Event handler registry (served at the endpoint's events path).
    pub fn event_handlers(&self) -> &EventHandlers {
        self.endpoint.event_handlers()
    }

    /// The lifespan state machine and its callbacks.
    pub fn lifespan(&self) -> &Lifespan {
        &self.lifespan
    }

    /// The lifespan, mutably (to add or remove callbacks).
    pub fn lifespan_mut(&mut self) -> &mut Lifespan {
        &mut self.lifespan
    }

    /// The serving options.
    pub fn options(&self) -> &ServeOptions {
        &self.options
    }

    /// The connection slots its server admits connections into (a shared handle: clone
    /// it before serving to read [`Slots::stats`] afterwards).
    pub fn slots(&self) -> &Slots {
        &self.slots
    }

    /// The serving options, mutably.
    pub fn options_mut(&mut self) -> &mut ServeOptions {
        &mut self.options
    }

    /// Replaces the serving options (builder form).
    #[must_use]
    pub fn with_options(mut self, options: ServeOptions) -> Self {
        self.options = options;
        self
    }

    /// Adds a callback run (concurrently with the others) before connections are accepted.
    pub fn add_startup_callback<F, Fut>(&mut self, callback: F) -> CallbackId
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), CallbackError>> + Send + 'static,
    {
        self.lifespan.add_startup_callback(callback)
    }

    /// Adds a callback run after serving stopped.
    pub fn add_shutdown_callback<F, Fut>(&mut self, callback: F) -> CallbackId
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), CallbackError>> + Send + 'static,
    {
        self.lifespan.add_shutdown_callback(callback)
    }

    /// Builder form of [`Service::add_startup_callback`] (yuyo's chained calls).
    #[must_use]
    pub fn with_startup_callback<F, Fut>(mut self, callback: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), CallbackError>> + Send + 'static,
    {
        self.lifespan.add_startup_callback(callback);
        self
    }

    /// Builder form of [`Service::add_shutdown_callback`].
    #[must_use]
    pub fn with_shutdown_callback<F, Fut>(mut self, callback: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), CallbackError>> + Send + 'static,
    {
        self.lifespan.add_shutdown_callback(callback);
        self
    }

    /// Removes a startup callback; an unknown id is an error (yuyo's `ValueError`).
    pub fn remove_startup_callback(&mut self, id: CallbackId) -> Result<(), UnknownCallback> {
        self.lifespan.remove_startup_callback(id)
    }

    /// Removes a shutdown callback; an unknown id is an error.
    pub fn remove_shutdown_callback(&mut self, id: CallbackId) -> Result<(), UnknownCallback> {
        self.lifespan.remove_shutdown_callback(id)
    }

    /// Runs the startup callbacks concurrently on the caller's runtime (no runtime of
    /// its own). Any failure fails startup with every message.
    pub async fn startup(&mut self) -> Result<(), ServeError> {
        let phase = self
            .lifespan
            .begin_startup()
            .map_err(ServeError::Lifespan)?;
        let results = phase.run().await;
        self.lifespan
            .finish_startup(results)
            .map_err(ServeError::Startup)
    }

    /// Runs the shutdown callbacks concurrently.
    pub async fn shutdown(&mut self) -> Result<(), ServeError> {
        let phase = self
            .lifespan
            .begin_shutdown()
            .map_err(ServeError::Lifespan)?;
        let results = phase.run().await;
        self.lifespan
            .finish_shutdown(results)
            .map_err(ServeError::Shutdown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_are_classified_once() {
        use std::io::{Error, ErrorKind};
        assert_eq!(
            AcceptError::classify(&Error::from(ErrorKind::ConnectionAborted)),
            AcceptError::Retry
        );
        // EMFILE: out of file descriptors.
        assert_eq!(
            AcceptError::classify(&Error::from_raw_os_error(24)),
            AcceptError::Backoff
        );
    }

    #[test]
    fn deadlines_shrink_once_half_the_cap_is_open() {
        let options = ServeOptions {
            max_connections: 10,
            ..ServeOptions::default()
        };
        let calm = options.connection_config(4);
        assert_eq!(calm, options.http);
        let busy = options.connection_config(5);
        assert_eq!(busy.head_timeout, Duration::from_secs(1));
        assert_eq!(busy.idle_timeout, Duration::from_secs(1));
        assert_eq!(busy.body_timeout, Duration::from_secs(1));
        assert_eq!(busy.write_timeout, Duration::from_secs(1));
        // Deadlines already shorter than the pressure timeout stay as they are.
        let short = ServeOptions {
            max_connections: 10,
            http: http1::Config {
                head_timeout: Duration::from_millis(200),
                ..http1::Config::default()
            },
            ..ServeOptions::default()
        };
        assert_eq!(
            short.connection_config(9).head_timeout,
            Duration::from_millis(200)
        );
    }
}
