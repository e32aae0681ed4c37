//! yuyo on tokio: a Discord interactions server.
//!
//! A thin driver over the sans-IO [`yuyo_core::server::Session`]: it accepts
//! connections from a [`tokio::net::TcpListener`], runs one task per connection that
//! moves bytes and time between the socket and the session, awaits handler futures,
//! streams reply files from disk on tokio's blocking pool and spawns after-response
//! work. Every protocol decision is the core's. It works on both the current-thread and
//! the multi-thread runtime.
//!
//! The [`bot`] module adds yuyo's `AsgiBot` on top: a [`bot::Bot`] holds a rate-limited
//! Discord REST client ([`rest::RestClient`], `tokio-rustls`, keep-alive pool, timeouts,
//! proxies) and is started and stopped by the server's lifespan (managed) or by hand
//! with async `start`/`close`/`join`/`run`.
//!
//! ```no_run
//! # async fn run(service: yuyo_tokio::Service) -> Result<(), Box<dyn std::error::Error>> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let server = yuyo_tokio::Server::new(service);
//! let handle = server.shutdown_handle(); // call handle.shutdown() to stop gracefully
//! server.serve(listener).await?;
//! # drop(handle);
//! # Ok(())
//! # }
//! ```
//!
//! # Serving
//! [`Server::serve`] runs the startup callbacks before accepting anything (a failure is
//! returned and nothing is served), then accepts at most
//! [`ServeOptions::max_connections`] connections at once (further ones wait in the listen
//! backlog). On shutdown — [`ShutdownHandle::shutdown`], or Ctrl-C / SIGTERM when
//! [`ServeOptions::handle_signals`] is set — it stops accepting, asks every connection to
//! close after its request in flight, waits up to [`ServeOptions::grace_period`] for
//! connections and after-response work (then cancels what is left), runs the shutdown
//! callbacks and returns their result.
//!
//! # Replies through REST
//! A server given a REST client with [`Server::with_rest_replies`] (the [`bot::Bot`]'s
//! server is, by default) lets the core route replies through REST
//! ([`yuyo_core::deferral`]):
//! - **automatic deferral**: a handler still running at the deadline (default 2.5 s)
//!   gets a deferred response (type 5, or 6 for components) written for it; the
//!   connection keeps awaiting the handler, whose late reply is then sent through REST
//!   (edit original response, …) in a spawned task, while the connection serves its next
//!   request. Autocomplete handlers are never deferred.
//! - **oversized files**: a reply whose files exceed the inline limit (default 150 000
//!   bytes) is sent through `POST /interactions/{id}/{token}/callback` and the HTTP
//!   request is answered `202 Accepted` with no body, as Discord documents.
//!
//! Spawned REST replies count as after-response work for shutdown. A plain [`Server`]
//! has no REST client, so neither happens.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod bot;
pub mod glue;
pub mod rest;

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use yuyo_core::deferral::{ReplyRouting, RestReply};
use yuyo_core::endpoint::Endpoint;
use yuyo_core::http1;
use yuyo_core::multipart::FileSource;
use yuyo_core::server::{Action, Now, Session};

pub use yuyo_core::service::{ServeError, ServeOptions, Service};

/// File chunks read ahead of the socket.
const FILE_READ_AHEAD: usize = 2;

/// A server for one [`Service`] on tokio.
#[derive(Debug)]
pub struct Server {
    service: Service,
    shutdown: CancellationToken,
    runtime: Option<Handle>,
    rest: Option<(rest::RestClient, ReplyRouting)>,
}

/// Requests a graceful shutdown of a [`Server`]; cheap to clone and usable from any thread.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    token: CancellationToken,
}

impl ShutdownHandle {
    /// Asks the server to shut down gracefully. Idempotent and non-blocking; before
    /// [`Server::serve`] is called, it makes `serve` stop right after startup.
    pub fn shutdown(&self) {
        self.token.cancel();
    }

    /// Whether shutdown was requested.
    #[must_use]
    pub fn is_shutdown(&self) -> bool {
        self.token.is_cancelled()
    }
}

impl Server {
    /// A server for `service`.
    #[must_use]
    pub fn new(service: Service) -> Self {
        Self {
            service,
            shutdown: CancellationToken::new(),
            runtime: None,
            rest: None,
        }
    }

    /// The service (endpoint, lifespan callbacks, options).
    #[must_use]
    pub fn service(&self) -> &Service {
        &self.service
    }

    /// The service, mutably (to add lifespan callbacks or change options).
    pub fn service_mut(&mut self) -> &mut Service {
        &mut self.service
    }

    /// A handle that shuts this server down gracefully.
    #[must_use]
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            token: self.shutdown.clone(),
        }
    }

    /// Runs connections, handlers, after-response work and file reads on `runtime`
    /// (yuyo's `executor`), instead of on the runtime that awaits [`Server::serve`].
    #[must_use]
    pub fn with_runtime(mut self, runtime: Handle) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Sends replies through `rest` as `routing` says: automatic deferral and oversized
    /// files (see [the crate docs](crate#replies-through-rest)). Without it (the
    /// default) every reply is the HTTP answer.
    #[must_use]
    pub fn with_rest_replies(mut self, rest: rest::RestClient, routing: ReplyRouting) -> Self {
        self.rest = Some((rest, routing));
        self
    }

    /// The reply routing in force ([`ReplyRouting::disabled`] without a REST client).
    #[must_use]
    pub fn reply_routing(&self) -> ReplyRouting {
        self.rest
            .as_ref()
            .map_or(ReplyRouting::disabled(), |(_, routing)| *routing)
    }

    /// Serves `listener` until shutdown; see the [crate docs](crate#serving).
    ///
    /// # Errors
    /// [`ServeError::Startup`] if a startup callback failed (nothing was served),
    /// [`ServeError::Shutdown`] if a shutdown callback failed, [`ServeError::Lifespan`]
    /// if the service was already served.
    pub async fn serve(self, listener: TcpListener) -> Result<(), ServeError> {
        let Self {
            mut service,
            shutdown,
            runtime,
            rest,
        } = self;
        service.startup().await?;
        let options = service.options().clone();
        let signals = options.handle_signals.then(|| {
            let token = shutdown.clone();
            tokio::spawn(async move {
                if glue::wait_for_signal().await {
                    tracing::info!("signal received: shutting down");
                    token.cancel();
                }
            })
        });
        let shared = Arc::new(Shared {
            endpoint: service.endpoint().clone(),
            options: options.clone(),
            shutdown,
            force: CancellationToken::new(),
            tracker: TaskTracker::new(),
            runtime,
            rest,
        });

        accept(&listener, &shared, options.max_connections).await;
        drop(listener);

        shared.tracker.close();
        if tokio::time::timeout(options.grace_period, shared.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                tasks = shared.tracker.len(),
                "grace period over: cancelling the remaining connections and after-response work"
            );
            shared.force.cancel();
            shared.tracker.wait().await;
        }
        if let Some(signals) = signals {
            signals.abort();
        }
        service.shutdown().await
    }
}

/// What every connection task of one server shares.
struct Shared {
    endpoint: Endpoint,
    options: ServeOptions,
    /// Graceful shutdown: stop accepting, close connections after their request.
    shutdown: CancellationToken,
    /// The grace period is over: drop whatever still runs.
    force: CancellationToken,
    /// Connections and after-response work.
    tracker: TaskTracker,
    runtime: Option<Handle>,
    /// The REST client replies go through, and how.
    rest: Option<(rest::RestClient, ReplyRouting)>,
}

impl Shared {
    /// Spawns `task` so that shutdown waits for it (and cancels it after the grace period).
    fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let force = self.force.clone();
        let task = async move {
            force.run_until_cancelled(task).await;
        };
        match &self.runtime {
            Some(runtime) => drop(self.tracker.spawn_on(task, runtime)),
            None => drop(self.tracker.spawn(task)),
        }
    }

    /// Sends every reply the session queued for REST, each in its own task.
    fn send_rest_replies(&self, session: &mut Session) {
        while let Some(reply) = session.poll_rest_reply() {
            match &self.rest {
                Some((client, _)) => {
                    let client = client.clone();
                    self.spawn(send_rest_reply(client, reply).instrument(session.span().clone()));
                }
                None => tracing::error!("a reply went to REST without a REST client"),
            }
        }
    }

    /// Reads `path` on the blocking pool, a chunk at a time, into the returned channel.
    fn read_file(&self, path: PathBuf) -> mpsc::Receiver<io::Result<Bytes>> {
        let (tx, rx) = mpsc::channel(FILE_READ_AHEAD);
        let read = move || glue::read_file_chunks(&path, &tx);
        match &self.runtime {
            Some(runtime) => drop(runtime.spawn_blocking(read)),
            None => drop(tokio::task::spawn_blocking(read)),
        }
        rx
    }
}

/// Accepts connections until shutdown, at most `max_connections` at once.
async fn accept(listener: &TcpListener, shared: &Arc<Shared>, max_connections: usize) {
    let stop = shared.shutdown.cancelled();
    glue::accept_loop(listener, max_connections, stop, |stream, permit, open| {
        let config = shared.options.connection_config(open);
        let connection_shared = Arc::clone(shared);
        shared.spawn(async move {
            let _permit = permit;
            serve_connection(&connection_shared, stream, config).await;
        });
    })
    .await;
}

/// Both clocks, as the session needs them.
fn now() -> Now {
    Now {
        instant: Instant::now(),
        unix_secs: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs()),
    }
}

/// Writes everything the session has to send.
async fn flush(stream: &mut TcpStream, session: &mut Session) -> io::Result<()> {
    while let Some(chunk) = session.poll_transmit() {
        stream.write_all(&chunk).await?;
    }
    Ok(())
}

/// The session loop of one connection (see [`yuyo_core::server`]).
async fn serve_connection(shared: &Shared, mut stream: TcpStream, config: http1::Config) {
    let mut session = Session::new(shared.endpoint.clone(), config, Instant::now());
    if let Some((_, routing)) = &shared.rest {
        session.set_reply_routing(*routing);
    }
    let shutdown = shared.shutdown.clone().cancelled_owned();
    tokio::pin!(shutdown);
    let mut closing = false;
    // One timer for the connection's life, re-armed only when the deadline moves.
    let timer = tokio::time::sleep_until(tokio::time::Instant::now());
    tokio::pin!(timer);
    let mut armed: Option<Instant> = None;

    loop {
        let action = session.poll(now());
        // Polling produces the bytes to send (responses, `100 Continue`): write them
        // before waiting on anything, and before after-response work starts.
        if let Err(error) = flush(&mut stream, &mut session).await {
            tracing::debug!(%error, "connection write failed");
            return;
        }
        match action {
            Action::Read => {
                let deadline = session.poll_timeout();
                if deadline != armed {
                    if let Some(at) = deadline {
                        timer.as_mut().reset(at.into());
                    }
                    armed = deadline;
                }
                tokio::select! {
                    biased;
                    // Wait for readiness, then read straight into the session's buffer: an
                    // idle connection holds no read buffer at all.
                    ready = stream.readable() => {
                        let read = ready.and_then(|()| stream.try_read_buf(session.receive_buffer()));
                        match read {
                            Ok(0) => session.receive_eof(),
                            // Also after a spurious wake-up: the empty buffer is released.
                            Ok(_) => session.received(Instant::now()),
                            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                                session.received(Instant::now());
                            }
                            Err(error) => {
                                tracing::debug!(%error, "connection read failed");
                                return;
                            }
                        }
                    }
                    () = &mut timer, if armed.is_some() => {
                        armed = None;
                        session.handle_timeout(Instant::now());
                    }
                    () = &mut shutdown, if !closing => {
                        closing = true;
                        session.close();
                    }
                }
            }
            Action::Verify(ticket) => {
                // Other connections' finished requests join this one's batch.
                glue::yield_to_queued_tasks().await;
                if let Err(error) = session.verified(now(), ticket.await) {
                    tracing::error!(%error, "session refused a verification result");
                    return;
                }
            }
            Action::Handle(handler) => {
                let handler = handler.instrument(session.span().clone());
                tokio::pin!(handler);
                // The deferral deadline, when the core wants one (see `yuyo_core::deferral`).
                let defer_at = session.defer_deadline();
                let mut deferring = defer_at.is_some();
                let defer = async move {
                    match defer_at {
                        Some(at) => tokio::time::sleep_until(at.into()).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::pin!(defer);
                let outcome = loop {
                    tokio::select! {
                        biased;
                        outcome = &mut handler => break outcome,
                        () = &mut defer, if deferring => {
                            deferring = false;
                            match session.defer(now()) {
                                Ok(_) => {
                                    // The deferred answer goes out now; the handler goes on.
                                    if let Err(error) = flush(&mut stream, &mut session).await {
                                        tracing::debug!(%error, "connection write failed");
                                        return;
                                    }
                                }
                                Err(error) => tracing::debug!(%error, "handler not deferred"),
                            }
                        }
                        () = &mut shutdown, if !closing => {
                            closing = true;
                            session.close();
                        }
                    }
                };
                if let Err(error) = session.complete(now(), outcome) {
                    tracing::error!(%error, "session refused a handler outcome");
                    return;
                }
                // The HTTP answer (e.g. the 202 of a reply sent through the callback
                // endpoint) goes out before the REST requests start.
                if let Err(error) = flush(&mut stream, &mut session).await {
                    tracing::debug!(%error, "connection write failed");
                    shared.send_rest_replies(&mut session);
                    return;
                }
                shared.send_rest_replies(&mut session);
            }
            Action::StreamFile(source) => {
                if let Err(error) = stream_file(shared, &mut session, &mut stream, source).await {
                    tracing::debug!(%error, "connection write failed while streaming a file");
                    return;
                }
            }
            Action::RunAfter(work) => shared.spawn(work.instrument(session.span().clone())),
            Action::Close => {
                // Without a lingering close, dropping the stream closes it.
                if let Some(how) = session.linger() {
                    let _ = stream.shutdown().await;
                    linger(&mut stream, how).await;
                }
                return;
            }
        }
    }
}

/// A lingering close (see [`yuyo_core::http1::Linger`]): drain what the peer still sends,
/// so unread request bytes do not turn the close into a reset that destroys the response.
async fn linger(stream: &mut TcpStream, linger: yuyo_core::http1::Linger) {
    let deadline = tokio::time::Instant::now() + linger.timeout;
    let mut scratch = vec![0_u8; 16 * 1024];
    let mut left = linger.max_bytes;
    while left > 0 {
        match tokio::time::timeout_at(deadline, stream.read(&mut scratch)).await {
            Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n as u64),
            _ => break,
        }
    }
}

/// Streams one reply file into the response, writing each chunk as it is read so the
/// file is never held whole. An `Err` is a socket write failure.
async fn stream_file(
    shared: &Shared,
    session: &mut Session,
    stream: &mut TcpStream,
    source: FileSource,
) -> io::Result<()> {
    let path = match source {
        FileSource::Path { path, .. } => path,
        FileSource::Later { id, .. } => {
            tracing::error!(id, "yuyo-tokio has no source for FileSource::Later files");
            session.abort_file();
            return Ok(());
        }
    };
    let mut chunks = shared.read_file(path);
    loop {
        match chunks.recv().await {
            Some(Ok(chunk)) => {
                if let Err(error) = session.send_file_data(chunk) {
                    // The session aborted the response and will close.
                    tracing::error!(%error, "reply file does not match its declared length");
                    return Ok(());
                }
                flush(stream, session).await?;
            }
            Some(Err(error)) => {
                tracing::error!(%error, "could not read a reply file");
                session.abort_file();
                return Ok(());
            }
            None => {
                if let Err(error) = session.finish_file() {
                    tracing::error!(%error, "reply file does not match its declared length");
                }
                return Ok(());
            }
        }
    }
}

/// Sends a reply's requests in order through `client`, then runs its `after` work
/// (see [`RestReply::deliver`]).
async fn send_rest_reply(client: rest::RestClient, reply: RestReply) {
    let client = &client;
    reply
        .deliver(|request| async move { client.call(request).await.map(drop) })
        .await;
}
