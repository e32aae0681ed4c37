//! [`Server`]: the [`InteractionService`] served by hyper's HTTP/1.1 server on tokio, with
//! the same API as the other adapters' servers (feature `server`, on by default).
//!
//! hyper is configured with the core's limits (see [`Connections::builder`]); the service
//! hyper calls ([`PerConnection`]) adds the head rules hyper lacks ([`head`]), and the
//! transport a write deadline ([`io`]). The README lists the rules hyper cannot follow.

mod head;
mod io;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use yuyo_core::http1::Config;
use yuyo_core::server::{Admitted, Slot, Slots, Waiting};

use crate::{
    Inner, InteractionService, ResponseBody, ResponseFuture, ServeError, ServeOptions, Service,
    ShutdownHandle,
};

/// hyper's smallest read buffer limit (`max_buf_size` panics below it).
const HYPER_MIN_BUF_SIZE: usize = 8 * 1024;
/// Most header fields the core counts ([`Config::max_headers`] is capped there).
const MAX_HEADERS_CAP: usize = 256;

/// A server for one [`Service`]: its [`InteractionService`] served by hyper (HTTP/1.1).
///
/// [`Server::serve`] starts the service (startup callbacks) before accepting anything,
/// accepts at most [`ServeOptions::max_connections`](crate::ServeOptions) connections at
/// once, and on shutdown — [`ShutdownHandle::shutdown`], or Ctrl-C / SIGTERM when
/// `handle_signals` is set — answers 503 to health checks, after the drain period stops
/// accepting (taking the connections queued in the backlog), lets hyper finish the
/// requests in flight (idle connections close at once), waits for after-response work
/// within the grace period and runs the shutdown callbacks.
///
/// Every connection gets the core's HTTP/1.1 limits from the [`ServeOptions`] (for the
/// connections open when it was accepted, as [`ServeOptions::connection_config`] says):
/// hyper refuses heads over `http.max_head_size` or `http.max_headers` fields (431) and
/// closes connections that send no complete head within `http.head_timeout` — also
/// between requests, as hyper has no separate idle deadline; the service answers a body
/// that does not arrive within `http.body_timeout` 408 and refuses the heads hyper lets
/// through but the core does not (no or a bad `Host`, a transfer coding other than one
/// `chunked`, an expectation other than `100-continue`); a response write that makes no
/// progress for `http.write_timeout` (the pressure deadline under pressure) drops the
/// connection.
#[derive(Debug)]
pub struct Server {
    service: Service,
    shutdown: ShutdownHandle,
}

impl Server {
    /// A server for `service`.
    #[must_use]
    pub fn new(service: Service) -> Self {
        Self {
            service,
            shutdown: ShutdownHandle::default(),
        }
    }

    /// The service (endpoint, lifespan callbacks, options).
    #[must_use]
    pub fn service(&self) -> &Service {
        &self.service
    }

    /// The service, mutably.
    pub fn service_mut(&mut self) -> &mut Service {
        &mut self.service
    }

    /// A handle that shuts this server down gracefully.
    #[must_use]
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Serves `listener` until shutdown.
    ///
    /// # Errors
    /// [`ServeError::Startup`] if a startup callback failed (nothing was served),
    /// [`ServeError::Shutdown`] if a shutdown callback failed.
    pub async fn serve(self, listener: TcpListener) -> Result<(), ServeError> {
        let Self { service, shutdown } = self;
        let options = service.options().clone();
        let slots = service.slots().clone();
        let interactions = InteractionService::with_shutdown(service, shutdown.clone());
        interactions.start().await?;
        let signals = options.handle_signals.then(|| {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                if yuyo_tokio::glue::wait_for_signal().await {
                    tracing::info!("signal received: shutting down");
                    shutdown.shutdown();
                }
            })
        });

        // The shutdown request turns the health check to 503; accepting stops once the
        // drain period is over.
        let stop = CancellationToken::new();
        let draining = {
            let (requested, stop) = (shutdown.requested(), stop.clone());
            let health = interactions.endpoint().health().clone();
            let drain_period = options.drain_period;
            tokio::spawn(async move {
                yuyo_tokio::glue::drained(requested, &health, drain_period).await;
                stop.cancel();
            })
        };
        let connections = Connections {
            service: interactions.clone(),
            stop,
            force: CancellationToken::new(),
            tracker: TaskTracker::new(),
            options: options.clone(),
            slots,
        };
        connections.accept(&listener, options.max_connections).await;
        drop(listener);
        draining.abort();

        let deadline = tokio::time::Instant::now() + options.grace_period;
        connections.tracker.close();
        if tokio::time::timeout_at(deadline, connections.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                connections = connections.tracker.len(),
                "grace period over: closing the remaining connections"
            );
            connections.force.cancel();
            connections.tracker.wait().await;
        }
        if let Some(signals) = signals {
            signals.abort();
        }
        interactions.close_by(deadline).await
    }
}

struct Connections {
    service: InteractionService,
    /// Stop accepting: the drain period after the shutdown request is over.
    stop: CancellationToken,
    /// The grace period is over.
    force: CancellationToken,
    tracker: TaskTracker,
    options: ServeOptions,
    /// The connection cap, with eviction of connections waiting on their peer.
    slots: Slots,
}

impl Connections {
    async fn accept(&self, listener: &TcpListener, max_connections: usize) {
        let stop = self.stop.cancelled();
        let slots = &self.slots;
        let serve = |stream, admitted| {
            let connection = self.connection(stream, admitted);
            let force = self.force.clone();
            self.tracker.spawn(async move {
                force.run_until_cancelled(connection).await;
            });
        };
        let unadmitted =
            yuyo_tokio::glue::accept_into_slots(listener, slots, max_connections, stop, serve)
                .await;
        let queued =
            yuyo_tokio::glue::accept_queued(listener, unadmitted, slots, max_connections, serve);
        if tokio::time::timeout(self.options.grace_period, queued)
            .await
            .is_err()
        {
            tracing::warn!(
                "grace period over while every slot was busy: the rest of the backlog is dropped"
            );
        }
    }

    /// hyper's HTTP/1.1 server with the core's limits in `config`.
    fn builder(config: &Config) -> http1::Builder {
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            // Runs from the end of the previous response too: hyper's only idle deadline.
            .header_read_timeout(config.head_timeout)
            .max_headers(config.max_headers.min(MAX_HEADERS_CAP))
            .max_header_size(config.max_head_size)
            // The read buffer holds at most one head (hyper cannot go below 8 KiB).
            .max_buf_size(config.max_head_size.max(HYPER_MIN_BUF_SIZE))
            // Answer a request whose client closed its sending side after it, as the core
            // does; without this hyper drops the connection unanswered.
            .half_close(true);
        builder
    }

    /// Serves one connection, admitted while `admitted.others` others were open; it goes
    /// at once if a new connection evicts it (see [`Slots`]).
    fn connection(
        &self,
        stream: TcpStream,
        admitted: Admitted,
    ) -> impl Future<Output = ()> + Send + 'static {
        let config = self.options.connection_config(admitted.others);
        let slot = Arc::new(admitted.slot);
        // Waiting for its first head.
        slot.set_waiting(Waiting::Stalled(Instant::now()));
        let evicted = slot.eviction();
        let write_timeout = config.write_timeout;
        yuyo_tokio::glue::set_send_buffer(&stream, self.options.send_buffer);
        // Taken from the backlog after accepting stopped: its first request is answered,
        // with `Connection: close`, rather than the connection shut at once.
        let from_backlog = self.stop.is_cancelled();
        let stop = self.stop.clone();
        let first_request = CancellationToken::new();
        let service = PerConnection {
            inner: Arc::clone(&self.service.inner),
            body_timeout: config.body_timeout,
            slot,
            first_request: first_request.clone(),
        };
        let io = io::WriteDeadline::new(TokioIo::new(stream), write_timeout);
        // Boxed once here rather than pinned inside the task: an async block keeps
        // the moved-in connection and the pinned copy in separate slots, doubling
        // what every idle connection holds.
        let mut builder = Self::builder(&config);
        builder.keep_alive(!from_backlog);
        let mut connection = Box::pin(builder.serve_connection(io, service));
        async move {
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = evicted => {
                    tracing::debug!("evicted at the connection cap");
                    return;
                }
                () = stop.cancelled(), if !from_backlog => {
                    // hyper would close a connection whose first request has not
                    // arrived yet: it was accepted, so that request is answered first.
                    tokio::select! {
                        result = connection.as_mut() => result,
                        () = first_request.cancelled() => {
                            connection.as_mut().graceful_shutdown();
                            connection.await
                        }
                    }
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
        }
    }
}

/// The service hyper calls on one connection: the head rules hyper does not apply, then
/// the interaction service with this connection's body deadline.
struct PerConnection {
    inner: Arc<Inner>,
    body_timeout: Duration,
    /// The connection's slot: waiting on the peer while hyper reads a head or a body or
    /// writes, busy from a complete body to the end of its response.
    slot: Arc<Slot>,
    /// Cancelled when the first request's head arrived.
    first_request: CancellationToken,
}

impl hyper::service::Service<Request<Incoming>> for PerConnection {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, request: Request<Incoming>) -> ResponseFuture {
        self.first_request.cancel();
        if let Err(error) =
            yuyo_core::http1::check_parsed_head(request.version(), request.headers())
        {
            tracing::debug!(%error, "rejecting HTTP/1.1 peer");
            return Box::pin(std::future::ready(Ok(head::reject(error))));
        }
        let inner = Arc::clone(&self.inner);
        let body_timeout = self.body_timeout;
        let slot = Arc::clone(&self.slot);
        let request = request.map(|body| WatchedBody::new(body, Arc::clone(&slot)));
        Box::pin(async move {
            let response = inner.handle(request, body_timeout).await;
            // hyper writes it, then waits for the next head: as an idle connection.
            slot.set_waiting(Waiting::Idle(Instant::now()));
            Ok(response)
        })
    }
}

/// A request body that tells the connection's slot whether the server waits on the peer
/// (a frame not yet arrived) or is busy (the body is complete: verifying, handling).
struct WatchedBody {
    inner: Incoming,
    slot: Arc<Slot>,
    waiting: bool,
}

impl WatchedBody {
    fn new(inner: Incoming, slot: Arc<Slot>) -> Self {
        slot.set_waiting(Waiting::Busy);
        Self {
            inner,
            slot,
            waiting: false,
        }
    }

    fn wait(&mut self, waiting: bool) {
        if waiting != self.waiting {
            self.waiting = waiting;
            self.slot.set_waiting(if waiting {
                Waiting::Stalled(Instant::now())
            } else {
                Waiting::Busy
            });
        }
    }
}

impl http_body::Body for WatchedBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        self.wait(polled.is_pending());
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
