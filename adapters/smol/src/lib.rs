//! yuyo on smol/async-io: a Discord interactions server.
//!
//! A thin driver around [`yuyo_core::server::Session`]: sockets come from `async-io`
//! (through `async-net`), connections run as tasks on an [`async_executor::Executor`],
//! reply files are read on the `blocking` thread pool, and deadlines are
//! [`async_io::Timer`]s armed from [`Session::poll_timeout`]. Every protocol decision is
//! the core's.
//!
//! By default [`Server::serve`] runs its own executor on one thread per core
//! ([`std::thread::available_parallelism`], see [`Server::with_threads`]);
//! [`Server::serve_on`] (or [`Server::with_executor`]) spawns onto an executor the
//! caller runs instead.
//!
//! The [`bot`] module adds yuyo's `AsgiBot` on top: a [`bot::Bot`] holds a rate-limited
//! Discord REST client ([`rest::RestClient`], `futures-rustls` over `async-net`,
//! keep-alive pool, [`Timer`] timeouts, proxies) and is started and stopped by the
//! server's lifespan (managed) or by hand with async `start`/`close`/`join`/`run`.
//!
//! ```no_run
//! use yuyo_core::endpoint::{Endpoint, EndpointConfig, Handlers, Reply, Verifier};
//! use yuyo_smol::{Server, Service};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let verifier = Verifier::from_hex("ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c")?;
//! let mut handlers = Handlers::new();
//! handlers.set_command(|_ctx| async { Ok(Some(Reply::message("pong!"))) })?;
//! let service = Service::new(Endpoint::new(EndpointConfig::new(verifier), handlers));
//!
//! async_io::block_on(async {
//!     let listener = async_net::TcpListener::bind("127.0.0.1:8080").await?;
//!     Server::new(service).serve(listener).await?;
//!     Ok(())
//! })
//! # }
//! ```
//!
//! # Replies through REST
//! A server given a REST client with [`Server::with_rest_replies`] (the [`bot::Bot`]'s
//! server is, by default) lets the core route replies through REST
//! ([`yuyo_core::deferral`]), as on yuyo-tokio:
//! - **automatic deferral**: a handler still running at the deadline (default 2.5 s,
//!   an [`async_io::Timer`]) gets a deferred response (type 5, or 6 for components)
//!   written for it; the connection keeps awaiting the handler, whose late reply is then
//!   sent through REST (edit original response, …) in a spawned task, while the
//!   connection serves its next request. Autocomplete handlers are never deferred.
//! - **oversized files**: a reply whose files exceed the inline limit (default 150 000
//!   bytes) is sent through `POST /interactions/{id}/{token}/callback` and the HTTP
//!   request is answered `202 Accepted` with no body, as Discord documents.
//!
//! Spawned REST replies count as after-response work for shutdown. A plain [`Server`]
//! has no REST client, so neither happens.
#![deny(missing_docs)]

use std::future::Future;
use std::io::{self, Read};
use std::net::Shutdown;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_executor::Executor;
use async_io::{Async, Timer};
use async_lock::Semaphore;
use async_net::{TcpListener, TcpStream};
use bytes::Bytes;
use event_listener::{Event, EventListener};
use futures_lite::future;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use tracing::Instrument;
use yuyo_core::deferral::ReplyRouting;
use yuyo_core::endpoint::Endpoint;
use yuyo_core::http1;
use yuyo_core::multipart::FileSource;
use yuyo_core::server::{Action, Now, Session};

pub use yuyo_core::service::{ServeError, ServeOptions, Service};

pub mod bot;
pub mod rest;

/// Largest piece of a reply file read (on the blocking pool) and written at once.
const FILE_CHUNK: usize = 64 * 1024;
/// How long tasks get to unwind once the grace period expired and they were cancelled.
const CANCEL_WAIT: Duration = Duration::from_secs(1);
/// Pause after an accept error that is not the peer's (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A one-way flag that async code can wait for.
#[derive(Debug, Default)]
struct Flag {
    set: AtomicBool,
    event: Event,
}

impl Flag {
    fn set(&self) {
        if !self.set.swap(true, Ordering::SeqCst) {
            self.event.notify(usize::MAX);
        }
    }

    fn is_set(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }

    async fn wait(&self) {
        loop {
            if self.is_set() {
                return;
            }
            let listener = self.event.listen();
            if self.is_set() {
                return;
            }
            listener.await;
        }
    }
}

/// Requests a graceful shutdown of a [`Server`]; cheap to clone, usable from any thread.
#[derive(Debug, Clone, Default)]
pub struct ShutdownHandle {
    flag: Arc<Flag>,
}

impl ShutdownHandle {
    /// Stops accepting connections and lets in-flight requests finish (idempotent,
    /// non-blocking). `serve` returns once they did or the grace period ran out.
    pub fn shutdown(&self) {
        self.flag.set();
    }

    /// Whether shutdown was requested.
    #[must_use]
    pub fn is_shutdown(&self) -> bool {
        self.flag.is_set()
    }
}

/// A server for one [`Service`] on smol.
#[derive(Debug)]
pub struct Server {
    service: Service,
    threads: NonZeroUsize,
    shutdown: ShutdownHandle,
    executor: Option<Arc<Executor<'static>>>,
    rest: Option<(rest::RestClient, ReplyRouting)>,
}

impl Server {
    /// A server for `service`, running one executor thread per core by default.
    pub fn new(service: Service) -> Self {
        let threads = std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN);
        Self {
            service,
            threads,
            shutdown: ShutdownHandle::default(),
            executor: None,
            rest: None,
        }
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

    /// Sets how many threads run the server's own executor in [`Server::serve`]
    /// (default: [`std::thread::available_parallelism`]).
    #[must_use]
    pub fn with_threads(mut self, threads: NonZeroUsize) -> Self {
        self.threads = threads;
        self
    }

    /// Makes [`Server::serve`] spawn onto `executor`, which the caller runs (yuyo's
    /// `executor`), instead of running its own threads.
    #[must_use]
    pub fn with_executor(mut self, executor: Arc<Executor<'static>>) -> Self {
        self.executor = Some(executor);
        self
    }

    /// How many threads [`Server::serve`] runs its executor on.
    #[must_use]
    pub fn threads(&self) -> NonZeroUsize {
        self.threads
    }

    /// The service served.
    pub fn service(&self) -> &Service {
        &self.service
    }

    /// The service served, mutably (callbacks, options).
    pub fn service_mut(&mut self) -> &mut Service {
        &mut self.service
    }

    /// A handle that shuts this server down gracefully.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Serves `listener` on the server's own executor, run on [`Server::threads`] threads
    /// (the calling thread and `threads - 1` of its own), or on the one given to
    /// [`Server::with_executor`]. Runs the startup callbacks first, and
    /// the shutdown callbacks after a graceful shutdown.
    pub async fn serve(mut self, listener: TcpListener) -> Result<(), ServeError> {
        if let Some(executor) = self.executor.take() {
            return self.serve_on(&executor, listener).await;
        }
        let executor = Arc::new(Executor::new());
        // The calling thread runs the executor too (one thread of `threads`): with one
        // thread, accepting and serving share it, and a new connection is not handed to
        // another thread. The accept loop is a task, so any executor thread can run it.
        let workers = Workers::start(&executor, self.threads.get() - 1)?;
        let serving = {
            let executor = executor.clone();
            executor
                .clone()
                .spawn(async move { self.serve_on(&executor, listener).await })
        };
        let result = run_executor(&executor, serving).await;
        drop(workers);
        result
    }

    /// Like [`Server::serve`], but spawns connections and after-response work onto
    /// `executor`, which the caller must be running (e.g. `executor.run(..)` on threads
    /// of its own); [`Server::threads`] is not used.
    pub async fn serve_on(
        mut self,
        executor: &Arc<Executor<'static>>,
        listener: TcpListener,
    ) -> Result<(), ServeError> {
        self.service.startup().await?;

        let options = self.service.options().clone();
        let shared = Arc::new(Shared {
            executor: executor.clone(),
            stop: self.shutdown.flag.clone(),
            cancel: Flag::default(),
            active: AtomicUsize::new(0),
            drained: Event::new(),
            rest: self.rest.take(),
        });
        let signals = Signals::new(options.handle_signals);

        accept_loop(&shared, &listener, &signals, &self.service, &options).await;
        drop(listener);
        shared.stop.set();

        let drained = future::or(
            async {
                shared.wait_drained().await;
                true
            },
            future::or(
                async {
                    Timer::after(options.grace_period).await;
                    false
                },
                async {
                    signals.wait().await;
                    tracing::warn!("second signal: not waiting for in-flight requests");
                    false
                },
            ),
        )
        .await;
        if !drained {
            tracing::warn!(
                remaining = shared.active.load(Ordering::SeqCst),
                "grace period over: cancelling in-flight connections and after-response work"
            );
            shared.cancel.set();
            future::or(shared.wait_drained(), async {
                Timer::after(CANCEL_WAIT).await;
            })
            .await;
        }
        drop(signals);
        self.service.shutdown().await
    }
}

/// How many tasks a serving thread runs between two polls of the reactor.
///
/// Fewer polls let async-io's fallback thread take the reactor over (see
/// [`run_executor`]); at 64 connections it did in 10 of 20 runs with `Executor::run`
/// (a poll every 200 tasks), 2 of 11 with 32, 1 of 15 with 16 and 0 of 17 with 8. The
/// price: requests woken by one poll form one signature batch (see
/// [`yuyo_core::endpoint::VerifyQueue`]), and at 16 connections batches shrank from 14
/// signatures to 8.
const TASKS_PER_IO_POLL: usize = 8;

/// Runs `executor`'s tasks until `until` completes, going back to the enclosing
/// `async_io::block_on` every [`TASKS_PER_IO_POLL`] tasks, so that this thread polls
/// the reactor (without blocking) itself.
///
/// `Executor::run` goes back only every 200 tasks. Under load that leaves the reactor
/// unpolled for milliseconds, and async-io's fallback thread takes it over: I/O events
/// then cost context switches on the busy core (measured at 64 connections: 0.15 to 1.3
/// per request in those runs, against 0.01 otherwise, and up to a third more CPU per
/// request).
async fn run_executor<T>(executor: &Executor<'static>, until: impl Future<Output = T>) -> T {
    let tasks = async {
        let mut ran = 0;
        loop {
            if executor.try_tick() {
                ran += 1;
                if ran == TASKS_PER_IO_POLL {
                    ran = 0;
                    future::yield_now().await;
                }
            } else {
                ran = 0;
                // Nothing to run: wait for a task while `block_on` waits on the reactor.
                executor.tick().await;
            }
        }
    };
    future::or(until, tasks).await
}

/// The server's own executor threads; stopped when dropped.
struct Workers {
    stop: Arc<Flag>,
}

impl Workers {
    fn start(executor: &Arc<Executor<'static>>, threads: usize) -> io::Result<Self> {
        let stop = Arc::new(Flag::default());
        for index in 0..threads {
            let executor = executor.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("yuyo-smol-{index}"))
                .spawn(move || async_io::block_on(run_executor(&executor, stop.wait())))?;
        }
        Ok(Self { stop })
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Threads stuck in a blocking handler are not joined; they exit when it returns.
        self.stop.set();
    }
}

/// Ctrl-C / SIGTERM, when the options ask for them.
struct Signals {
    #[cfg(any(unix, windows))]
    inner: Option<async_signal::Signals>,
}

impl Signals {
    fn new(enabled: bool) -> Self {
        #[cfg(any(unix, windows))]
        {
            use async_signal::Signal;
            let inner = if enabled {
                match async_signal::Signals::new([Signal::Int, Signal::Term]) {
                    Ok(signals) => Some(signals),
                    Err(error) => {
                        tracing::warn!(%error, "cannot listen for signals");
                        None
                    }
                }
            } else {
                None
            };
            Self { inner }
        }
        #[cfg(not(any(unix, windows)))]
        {
            let _ = enabled;
            Self {}
        }
    }

    /// Resolves on the next signal (never without signals).
    async fn wait(&self) {
        #[cfg(any(unix, windows))]
        if let Some(signals) = &self.inner {
            use futures_lite::StreamExt;
            let mut signals = signals;
            match signals.next().await {
                Some(Ok(signal)) => {
                    tracing::info!(?signal, "signal received: shutting down");
                    return;
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "cannot read signals; use the shutdown handle");
                }
                None => {}
            }
        }
        future::pending::<()>().await;
    }
}

/// State shared by the accept loop and every task it spawned.
struct Shared {
    executor: Arc<Executor<'static>>,
    /// Graceful shutdown requested.
    stop: Arc<Flag>,
    /// The grace period is over: tasks stop where they are.
    cancel: Flag,
    /// Connections, after-response work and REST replies still running.
    active: AtomicUsize,
    drained: Event,
    /// The REST client replies go through, and how.
    rest: Option<(rest::RestClient, ReplyRouting)>,
}

/// Counts one task as active until dropped.
struct Tracked(Arc<Shared>);

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.drained.notify(usize::MAX);
        }
    }
}

impl Shared {
    /// Spawns `task`, tracked (shutdown waits for it) and cancellable after the grace period.
    fn spawn(self: &Arc<Self>, task: impl Future<Output = ()> + Send + 'static) {
        self.active.fetch_add(1, Ordering::SeqCst);
        let tracked = Tracked(self.clone());
        self.executor
            .spawn(async move {
                let tracked = tracked;
                future::or(task, tracked.0.cancel.wait()).await;
            })
            .detach();
    }

    /// Sends every reply the session queued for REST, each in its own tracked task.
    fn send_rest_replies(self: &Arc<Self>, session: &mut Session) {
        while let Some(reply) = session.poll_rest_reply() {
            match &self.rest {
                Some((client, _)) => {
                    let client = client.clone();
                    let send = async move {
                        let client = &client;
                        reply
                            .deliver(|request| async move { client.call(request).await.map(drop) })
                            .await;
                    };
                    self.spawn(send.instrument(session.span().clone()));
                }
                None => tracing::error!("a reply went to REST without a REST client"),
            }
        }
    }

    async fn wait_drained(&self) {
        loop {
            if self.active.load(Ordering::SeqCst) == 0 {
                return;
            }
            let listener = self.drained.listen();
            if self.active.load(Ordering::SeqCst) == 0 {
                return;
            }
            listener.await;
        }
    }
}

/// Counts one open connection for as long as it lives.
struct OpenConnection {
    counter: Arc<AtomicUsize>,
    /// How many others were open when this one was accepted.
    others: usize,
}

impl OpenConnection {
    fn count(counter: &Arc<AtomicUsize>) -> Self {
        let others = counter.fetch_add(1, Ordering::Relaxed);
        Self {
            counter: Arc::clone(counter),
            others,
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts connections, at most `max_connections` at once, until shutdown.
async fn accept_loop(
    shared: &Arc<Shared>,
    listener: &TcpListener,
    signals: &Signals,
    service: &Service,
    options: &ServeOptions,
) {
    let limit = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let open_connections = Arc::new(AtomicUsize::new(0));
    let stopped = || {
        future::or(shared.stop.wait(), async {
            signals.wait().await;
        })
    };
    loop {
        // The stop condition is polled first, so a flood of connections cannot hide it.
        let Some(permit) = future::or(
            async {
                stopped().await;
                None
            },
            async { Some(limit.acquire_arc().await) },
        )
        .await
        else {
            return;
        };
        let accepted = future::or(
            async {
                stopped().await;
                None
            },
            async { Some(listener.accept().await) },
        )
        .await;
        match accepted {
            None => return,
            Some(Ok((stream, peer))) => {
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%error, %peer, "cannot set TCP_NODELAY");
                }
                let endpoint = service.endpoint().clone();
                let open = OpenConnection::count(&open_connections);
                let config = options.connection_config(open.others);
                let conn_shared = shared.clone();
                shared.spawn(async move {
                    let _permit = permit;
                    let _open = open;
                    serve_connection(stream, endpoint, config, conn_shared).await;
                });
            }
            Some(Err(error)) => match error.kind() {
                io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::Interrupted
                | io::ErrorKind::WouldBlock => {
                    tracing::debug!(%error, "accept failed");
                }
                _ => {
                    tracing::error!(%error, "accept failed; retrying shortly");
                    Timer::after(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
}

fn now() -> Now {
    Now {
        instant: Instant::now(),
        unix_secs: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }
}

/// What woke a connection waiting to read.
enum Woke {
    Readable(io::Result<()>),
    Deadline,
    Shutdown,
}

/// Reads what the ready socket holds straight into the session's receive buffer:
/// `Some(0)` at EOF, `None` when the readiness was spurious.
fn read_into(
    socket: &Async<std::net::TcpStream>,
    session: &mut Session,
) -> io::Result<Option<usize>> {
    let buf = session.receive_buffer();
    let filled = buf.len();
    // std's `Read` needs initialised memory: zero the reserved room, then keep what came.
    buf.resize(buf.capacity(), 0);
    let read = (&mut socket.get_ref()).read(&mut buf[filled..]);
    let n = match &read {
        Ok(n) => *n,
        Err(_) => 0,
    };
    buf.truncate(filled + n);
    match read {
        Ok(n) => Ok(Some(n)),
        Err(error)
            if matches!(
                error.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// Writes everything the session has to send.
async fn flush(session: &mut Session, stream: &mut TcpStream) -> io::Result<()> {
    while let Some(chunk) = session.poll_transmit() {
        stream.write_all(&chunk).await?;
    }
    Ok(())
}

/// Runs one connection's [`Session`] loop until it closes.
async fn serve_connection(
    mut stream: TcpStream,
    endpoint: Endpoint,
    config: http1::Config,
    shared: Arc<Shared>,
) {
    let mut session = Session::new(endpoint, config, Instant::now());
    if let Some((_, routing)) = &shared.rest {
        session.set_reply_routing(*routing);
    }
    // Readiness is awaited on the shared socket, then bytes are read straight into the
    // session's buffer: an idle connection holds no read buffer.
    let socket: Arc<Async<std::net::TcpStream>> = stream.clone().into();
    let mut timer = Timer::never();
    let mut armed: Option<Instant> = None;
    let mut stop_listener: Option<EventListener> = None;
    let mut closing = false;
    let mut eof = false;
    loop {
        if !closing && shared.stop.is_set() {
            stop_listener = None;
            session.close();
            closing = true;
        }
        let action = session.poll(now());
        // `poll` itself queues answers it decides alone (rejections, PONG, 100 Continue,
        // a finished response before `RunAfter`): write them before acting.
        if let Err(error) = flush(&mut session, &mut stream).await {
            tracing::debug!(%error, "write failed; dropping the connection");
            return;
        }
        match action {
            Action::Read => {
                if eof {
                    // The session asked for more after the peer's EOF: nothing will come.
                    break;
                }
                let deadline = session.poll_timeout();
                if let Some(at) = deadline
                    && at <= Instant::now()
                {
                    session.handle_timeout(Instant::now());
                    continue;
                }
                if !closing && stop_listener.is_none() {
                    // One listener per connection, re-armed only after it fired.
                    stop_listener = Some(shared.stop.event.listen());
                    if shared.stop.is_set() {
                        stop_listener = None;
                        session.close();
                        closing = true;
                        continue;
                    }
                }
                if deadline != armed {
                    match deadline {
                        Some(at) => timer.set_at(at),
                        None => timer = Timer::never(),
                    }
                    armed = deadline;
                }
                let woke = future::or(
                    async { Woke::Readable(socket.readable().await) },
                    future::or(
                        async {
                            (&mut timer).await;
                            Woke::Deadline
                        },
                        async {
                            match stop_listener.as_mut() {
                                Some(listener) => listener.await,
                                None => future::pending::<()>().await,
                            }
                            Woke::Shutdown
                        },
                    ),
                )
                .await;
                match woke {
                    Woke::Readable(Ok(())) => match read_into(&socket, &mut session) {
                        Ok(Some(0)) => {
                            eof = true;
                            session.receive_eof();
                        }
                        // Also after spurious readiness: the empty buffer is released.
                        Ok(Some(_)) | Ok(None) => session.received(Instant::now()),
                        Err(error) => {
                            tracing::debug!(%error, "read failed; dropping the connection");
                            return;
                        }
                    },
                    Woke::Readable(Err(error)) => {
                        tracing::debug!(%error, "read failed; dropping the connection");
                        return;
                    }
                    Woke::Deadline => {
                        armed = None;
                        session.handle_timeout(Instant::now());
                    }
                    Woke::Shutdown => {
                        stop_listener = None;
                        session.close();
                        closing = true;
                    }
                }
            }
            Action::Verify(ticket) => {
                // Other connections' finished requests join this one's batch.
                futures_lite::future::yield_now().await;
                if let Err(error) = session.verified(now(), ticket.await) {
                    tracing::error!(%error, "driver error");
                    break;
                }
            }
            Action::Handle(handler) => {
                let mut handler = std::pin::pin!(handler.instrument(session.span().clone()));
                // Race the handler against the deferral deadline, when the core wants one
                // (see `yuyo_core::deferral`); the handler keeps running after it.
                let outcome = match session.defer_deadline() {
                    None => handler.await,
                    Some(at) => {
                        let raced = future::or(async { Some((&mut handler).await) }, async {
                            Timer::at(at).await;
                            None
                        })
                        .await;
                        match raced {
                            Some(outcome) => outcome,
                            None => {
                                match session.defer(now()) {
                                    // The deferred answer goes out now; the handler goes on.
                                    Ok(_) => {
                                        if let Err(error) = flush(&mut session, &mut stream).await {
                                            tracing::debug!(%error, "write failed; dropping the connection");
                                            return;
                                        }
                                    }
                                    Err(error) => tracing::debug!(%error, "handler not deferred"),
                                }
                                handler.await
                            }
                        }
                    }
                };
                if let Err(error) = session.complete(now(), outcome) {
                    tracing::error!(%error, "driver error");
                    break;
                }
                // The HTTP answer (e.g. the 202 of a reply sent through the callback
                // endpoint) goes out before the REST requests start.
                let flushed = flush(&mut session, &mut stream).await;
                shared.send_rest_replies(&mut session);
                if let Err(error) = flushed {
                    tracing::debug!(%error, "write failed; dropping the connection");
                    return;
                }
            }
            Action::StreamFile(source) => {
                let written = match source {
                    FileSource::Path { path, .. } => {
                        stream_file(&mut session, &mut stream, path).await
                    }
                    FileSource::Later { id, .. } => {
                        tracing::error!(id, "this adapter has no source for `Later` files");
                        session.abort_file();
                        Ok(())
                    }
                };
                if let Err(error) = written {
                    tracing::debug!(%error, "write failed; dropping the connection");
                    return;
                }
            }
            Action::RunAfter(work) => shared.spawn(work),
            Action::Close => break,
        }
    }
    if flush(&mut session, &mut stream).await.is_ok()
        && let Some(how) = session.linger()
    {
        // The peer may already be gone; nothing to do about it.
        let _ = stream.shutdown(Shutdown::Write);
        linger(&mut stream, how).await;
    }
}

/// A lingering close (see [`yuyo_core::http1::Linger`]): drain what the peer still sends,
/// so unread request bytes do not turn the close into a reset that destroys the response.
async fn linger(stream: &mut TcpStream, linger: http1::Linger) {
    let mut scratch = vec![0u8; 16 * 1024];
    let mut left = linger.max_bytes;
    let drain = async {
        while left > 0 {
            match stream.read(&mut scratch).await {
                Ok(n) if n > 0 => left = left.saturating_sub(n as u64),
                _ => break,
            }
        }
    };
    future::or(drain, async {
        Timer::after(linger.timeout).await;
    })
    .await;
}

/// Streams the file at `path` into the response, read in chunks on the blocking pool and
/// written out chunk by chunk. A read error aborts the response; a write error is
/// returned (the connection is gone).
async fn stream_file(
    session: &mut Session,
    stream: &mut TcpStream,
    path: PathBuf,
) -> io::Result<()> {
    let opened = blocking::unblock(move || std::fs::File::open(path)).await;
    let mut file = match opened {
        Ok(file) => file,
        Err(error) => {
            tracing::error!(%error, "cannot open a reply file");
            session.abort_file();
            return Ok(());
        }
    };
    loop {
        let (back, read) = blocking::unblock(move || {
            use std::io::Read as _;
            let mut chunk = vec![0u8; FILE_CHUNK];
            let read = loop {
                match file.read(&mut chunk) {
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    other => break other,
                }
            };
            (
                file,
                read.map(|n| {
                    chunk.truncate(n);
                    chunk
                }),
            )
        })
        .await;
        file = back;
        match read {
            Ok(chunk) if chunk.is_empty() => {
                if let Err(error) = session.finish_file() {
                    tracing::error!(%error, "reply file ended badly");
                }
                return Ok(());
            }
            Ok(chunk) => {
                if let Err(error) = session.send_file_data(Bytes::from(chunk)) {
                    tracing::error!(%error, "reply file changed while streaming");
                    return Ok(());
                }
                flush(session, stream).await?;
            }
            Err(error) => {
                tracing::error!(%error, "cannot read a reply file");
                session.abort_file();
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn serve_futures_are_send() {
        let executor = Arc::new(Executor::new());
        let service = Service::new(Endpoint::new(
            yuyo_core::endpoint::EndpointConfig::new(
                yuyo_core::endpoint::Verifier::from_hex(
                    "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c",
                )
                .unwrap(),
            ),
            yuyo_core::endpoint::Handlers::new(),
        ));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let listener = TcpListener::try_from(listener).unwrap();
        let future = Server::new(service).serve_on(&executor, listener);
        assert_send(&future);
    }
}
