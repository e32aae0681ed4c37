//! yuyo on tokio: a Discord interactions server.
//!
//! A thin driver over the sans-IO [`yuyo_core::server::Session`]: it accepts
//! connections from a [`tokio::net::TcpListener`] into the service's connection
//! [`Slots`], and runs one task per connection that translates the session's
//! [`Output`]s into IO — writing what the socket takes, reading into the session's
//! buffer, awaiting signature tickets and handler futures, reading reply files a chunk at
//! a time on tokio's blocking pool, spawning after-response work and REST replies — and
//! feeds back what happened as [`Input`]s. Every protocol and timing decision is the
//! core's: the session's [`Wait::deadline`] is a connection's only timer. It works on
//! both the current-thread and the multi-thread runtime.
//!
//! The [`bot`] module adds yuyo's `AsgiBot` on top: a [`bot::Bot`] holds a rate-limited
//! Discord REST client ([`rest::RestClient`]: the core's client, TLS, keep-alive pool,
//! timeouts and proxies, over tokio's sockets) and is started and stopped by the server's lifespan (managed) or by hand
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
//! returned and nothing is served), then serves at most
//! [`ServeOptions::max_connections`] connections at once: at the cap, a new connection
//! takes the slot of the one that has waited longest on its peer (which is closed at
//! once); while every connection is busy on the server's side (verifying, running a
//! handler), the accepted connection waits for a free slot and further ones wait in the
//! listen backlog. On shutdown — [`ShutdownHandle::shutdown`], or Ctrl-C / SIGTERM when
//! [`ServeOptions::handle_signals`] is set — its health check answers 503 at once; after
//! [`ServeOptions::drain_period`] it stops accepting, takes the connections queued in the
//! listen backlog, asks every connection to close after its request in flight, waits up to [`ServeOptions::grace_period`] for
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

/// The README's Rust examples, compiled as doctests (they use this adapter).
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;

/// What a bot needs in one `use`: [`yuyo_core::prelude`] (handlers, replies, the
/// typed REST requests and their settings, errors, TLS, twilight's models) and
/// yuyo-tokio's `Bot`, `RestClient` and `Server`.
pub mod prelude {
    pub use crate::bot::{Bot, BotBuilder};
    pub use crate::rest::RestClient;
    pub use crate::{Server, Service};
    pub use yuyo_core::prelude::*;
}

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::{Buf, Bytes};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use tracing::instrument::Instrumented;
use yuyo_core::deferral::{ReplyRouting, RestReply};
use yuyo_core::endpoint::{Endpoint, HandlerFuture};
use yuyo_core::multipart::FileSource;
use yuyo_core::rest::RestReplies;
use yuyo_core::server::{Admitted, Eviction, Input, Now, Output, Session, Slots, Wait};

/// HTTPS, served by the core session itself: `Service::with_tls(ServerTls::from_pem_files(..)?)`.
pub use yuyo_core::server::tls::{ServerTls, TlsError};
pub use yuyo_core::service::{ServeError, ServeOptions, Service};

/// A server for one [`Service`] on tokio.
#[derive(Debug)]
pub struct Server {
    service: Service,
    shutdown: CancellationToken,
    runtime: Option<Handle>,
    rest: RestReplies<rest::Tokio>,
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
            rest: RestReplies::default(),
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
        self.rest = RestReplies::new(rest, routing);
        self
    }

    /// The reply routing in force ([`ReplyRouting::disabled`] without a REST client).
    #[must_use]
    pub fn reply_routing(&self) -> ReplyRouting {
        self.rest.routing()
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
        let slots = service.slots().clone();
        // `shutdown` is the request; `stop` ends accepting once the drain period is over.
        let stop = CancellationToken::new();
        let draining = {
            let (requested, stop) = (shutdown.clone(), stop.clone());
            let health = service.endpoint().health().clone();
            let drain_period = options.drain_period;
            tokio::spawn(async move {
                glue::drained(requested.cancelled(), &health, drain_period).await;
                stop.cancel();
            })
        };
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
            tls: service.tls().cloned(),
            options: options.clone(),
            shutdown: stop,
            force: CancellationToken::new(),
            tracker: TaskTracker::new(),
            runtime,
            rest,
        });

        accept(&listener, &shared, &slots, options.max_connections).await;
        drop(listener);
        draining.abort();

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
    /// HTTPS, served by the sessions themselves.
    tls: Option<ServerTls>,
    options: ServeOptions,
    /// Graceful shutdown: stop accepting, close connections after their request.
    shutdown: CancellationToken,
    /// The grace period is over: drop whatever still runs.
    force: CancellationToken,
    /// Connections and after-response work.
    tracker: TaskTracker,
    runtime: Option<Handle>,
    /// The REST client replies go through, and how.
    rest: RestReplies<rest::Tokio>,
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

    /// The session of a connection accepted now into its slot.
    fn session(&self, admitted: Admitted) -> Session {
        let config = self.options.connection_config(admitted.others);
        let mut session = Session::new(self.endpoint.clone(), config, now())
            .with_slot(admitted.slot)
            .with_tls(self.tls.as_ref());
        session.set_reply_routing(self.rest.routing());
        session
    }

    /// Spawns the delivery of `reply` through the REST client, in `span`.
    fn send_rest_reply(&self, reply: RestReply, span: &tracing::Span) {
        if let Some(send) = self.rest.deliver(reply) {
            self.spawn(send.instrument(span.clone()));
        }
    }
}

/// Accepts connections until shutdown, each into a slot of `slots` (at most
/// `max_connections`; see [`Slots`]), and serves each in its own task.
async fn accept(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    slots: &Slots,
    max_connections: usize,
) {
    let stop = shared.shutdown.cancelled();
    let serve = |stream, admitted| {
        glue::set_send_buffer(&stream, shared.options.send_buffer);
        let conn = Connection::new(stream, shared.session(admitted), shared.shutdown.clone());
        // Boxed once, here: each async layer around a moved-in value keeps a slot of its
        // own, and the session is the largest part of a connection's memory.
        shared.spawn(Box::pin(serve_connection(Arc::clone(shared), conn)));
    };
    let unadmitted = glue::accept_into_slots(listener, slots, max_connections, stop, serve).await;
    let queued = glue::accept_queued(listener, unadmitted, slots, max_connections, serve);
    if tokio::time::timeout(shared.options.grace_period, queued)
        .await
        .is_err()
    {
        tracing::warn!(
            "grace period over while every slot was busy: the rest of the backlog is dropped"
        );
    }
}

/// Both clocks, as the session needs them.
fn now() -> Now {
    Now::at(Instant::now(), SystemTime::now())
}

/// The session loop of one connection (see [`yuyo_core::server`]): every output
/// translated into IO, every IO event fed back as an input.
async fn serve_connection(shared: Arc<Shared>, mut conn: Connection) {
    loop {
        match conn.session.poll_output() {
            Output::Transmit(bytes) => conn.transmit(bytes),
            Output::Verify(ticket) => {
                // Other connections' finished requests join this one's batch.
                glue::yield_to_queued_tasks().await;
                conn.input(Input::Verified(ticket.await));
            }
            Output::Handle(handler) => {
                conn.handler = Some(handler.instrument(conn.session.span().clone()));
            }
            Output::StreamFile(source) => conn.stream_file(source),
            Output::Spawn(work) => shared.spawn(work.instrument(conn.session.span().clone())),
            Output::RestReply(reply) => shared.send_rest_reply(reply, conn.session.span()),
            Output::ShutdownWrite => {
                if let Err(error) = conn.stream.shutdown().await {
                    conn.input(failed(&error));
                }
            }
            Output::Yield => tokio::task::yield_now().await,
            Output::Close => return,
            Output::Timeout(wait) => {
                let input = conn.next_input(wait).await;
                conn.input(input);
            }
        }
    }
}

/// One connection's socket and session, and what the session's outputs started.
struct Connection {
    stream: TcpStream,
    session: Session,
    /// The rest of the last [`Output::Transmit`], written when the socket is writable.
    unsent: Bytes,
    /// The handler of [`Output::Handle`], while it runs.
    handler: Option<Instrumented<HandlerFuture>>,
    /// The file of [`Output::StreamFile`], while it is read.
    file: Option<FileReader>,
    /// The session's deadline ([`Wait::deadline`]).
    timer: Timer,
    /// Graceful shutdown, until it was passed to the session.
    shutdown: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    /// The slot's eviction, until it was passed to the session.
    eviction: Option<Eviction>,
}

impl Connection {
    fn new(stream: TcpStream, session: Session, shutdown: CancellationToken) -> Self {
        Self {
            stream,
            eviction: session.eviction(),
            session,
            unsent: Bytes::new(),
            handler: None,
            file: None,
            timer: Timer::new(),
            shutdown: Some(Box::pin(shutdown.cancelled_owned())),
        }
    }

    /// Passes `input` to the session, with the time now. A refused input is a driver bug
    /// the session logs; it then closes the connection.
    fn input(&mut self, input: Input) {
        let _ = self.session.handle_input(now(), input);
    }

    /// Writes what the socket takes now of `bytes`; the rest waits for [`Wait::write`].
    fn transmit(&mut self, bytes: Bytes) {
        self.unsent = bytes;
        let result = self.stream.try_write(&self.unsent);
        let input = written(result, &mut self.unsent);
        self.input(input);
    }

    /// Starts reading a reply file (chunks are read as [`Wait::file`] asks).
    fn stream_file(&mut self, source: FileSource) {
        match source {
            FileSource::Path { path, .. } => self.file = Some(FileReader::new(path)),
            FileSource::Later { id, .. } => {
                tracing::error!(id, "yuyo-tokio has no source for FileSource::Later files");
                self.input(Input::FileFailed);
            }
        }
    }

    /// Waits as `wait` says, for whatever comes first, and returns it as an input.
    async fn next_input(&mut self, wait: Wait) -> Input {
        let Self {
            stream,
            session,
            unsent,
            handler,
            file,
            timer,
            shutdown,
            eviction,
        } = self;
        tokio::select! {
            biased;
            outcome = some(handler) => {
                *handler = None;
                Input::Handled(outcome)
            }
            () = some(eviction) => {
                *eviction = None;
                Input::Evicted
            }
            ready = stream.writable(), if wait.write && !unsent.is_empty() => {
                written(ready.and_then(|()| stream.try_write(unsent)), unsent)
            }
            ready = stream.readable(), if wait.read => {
                received(ready.and_then(|()| stream.try_read_buf(session.receive_buffer())))
            }
            chunk = next_chunk(file), if wait.file => file_input(chunk, file),
            () = timer.until(wait.deadline) => Input::Timeout,
            () = some(shutdown) => {
                *shutdown = None;
                Input::Shutdown
            }
        }
    }
}

/// Awaits the future in `future`; never resolves without one.
async fn some<F: Future + Unpin>(future: &mut Option<F>) -> F::Output {
    match future {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

/// The input for a write of the rest of a transmit, which it advances.
fn written(result: io::Result<usize>, unsent: &mut Bytes) -> Input {
    match result {
        Ok(n) => {
            unsent.advance(n);
            Input::Written(n)
        }
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => Input::Written(0),
        Err(error) => failed(&error),
    }
}

/// The input for a read into the session's receive buffer.
fn received(result: io::Result<usize>) -> Input {
    match result {
        Ok(0) => Input::Eof,
        Ok(_) => Input::Received,
        // A spurious wake-up: the session releases its empty buffer.
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => Input::Received,
        Err(error) => failed(&error),
    }
}

fn failed(error: &io::Error) -> Input {
    tracing::debug!(%error, "connection IO failed");
    Input::Failed
}

/// The session's deadline, on one timer re-armed only when the deadline moves.
struct Timer {
    sleep: Pin<Box<tokio::time::Sleep>>,
    armed: Option<Instant>,
}

impl Timer {
    fn new() -> Self {
        Self {
            sleep: Box::pin(tokio::time::sleep_until(tokio::time::Instant::now())),
            armed: None,
        }
    }

    /// Resolves at `deadline`; never without one.
    async fn until(&mut self, deadline: Option<Instant>) {
        let Some(at) = deadline else {
            return std::future::pending().await;
        };
        if self.armed != Some(at) {
            self.sleep.as_mut().reset(at.into());
            self.armed = Some(at);
        }
        self.sleep.as_mut().await;
    }
}

/// A reply file, read on the blocking pool one chunk at a time.
struct FileReader {
    /// The path until the first read opens the file; `None` while a read runs.
    file: Option<Result<std::fs::File, PathBuf>>,
    /// The read in progress (kept when the wait for it is dropped).
    read: Option<JoinHandle<io::Result<(std::fs::File, Bytes)>>>,
}

impl FileReader {
    fn new(path: PathBuf) -> Self {
        Self {
            file: Some(Err(path)),
            read: None,
        }
    }

    /// The next chunk, empty at the end of the file.
    async fn next(&mut self) -> io::Result<Bytes> {
        let read = self.read.get_or_insert_with(|| {
            let file = self.file.take();
            tokio::task::spawn_blocking(move || {
                let mut file = match file {
                    Some(Ok(file)) => file,
                    Some(Err(path)) => std::fs::File::open(path)?,
                    None => return Err(io::Error::other("the file failed before")),
                };
                glue::read_chunk(&mut file).map(|chunk| (file, chunk))
            })
        });
        let result = read.await;
        self.read = None;
        let (file, chunk) = result.map_err(io::Error::other)??;
        self.file = Some(Ok(file));
        Ok(chunk)
    }
}

/// The next chunk of the file being read; never resolves without one.
async fn next_chunk(file: &mut Option<FileReader>) -> io::Result<Bytes> {
    match file {
        Some(file) => file.next().await,
        None => std::future::pending().await,
    }
}

/// The input for a chunk of the file (dropped once it ended or failed).
fn file_input(chunk: io::Result<Bytes>, file: &mut Option<FileReader>) -> Input {
    match chunk {
        Ok(chunk) if !chunk.is_empty() => Input::FileData(chunk),
        Ok(_) => {
            *file = None;
            Input::FileEnd
        }
        Err(error) => {
            tracing::error!(%error, "could not read a reply file");
            *file = None;
            Input::FileFailed
        }
    }
}
