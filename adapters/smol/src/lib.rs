//! yuyo on smol/async-io: a Discord interactions server.
//!
//! A thin driver around [`yuyo_core::server::Session`]: sockets come from `async-io`
//! (through `async-net`), connections run as tasks on an [`async_executor::Executor`],
//! reply files are read on the `blocking` thread pool, and the session's one deadline
//! ([`Wait::deadline`](yuyo_core::server::Wait)) is an [`async_io::Timer`]. Every
//! protocol and timing decision is the core's; connections are admitted into the
//! service's [`Slots`](yuyo_core::server::Slots).
//!
//! By default [`Server::serve`] runs its own executor on one thread per core
//! ([`std::thread::available_parallelism`], see [`Server::with_threads`]);
//! [`Server::serve_on`] (or [`Server::with_executor`]) spawns onto an executor the
//! caller runs instead.
//!
//! The [`bot`] module adds yuyo's `AsgiBot` on top: a [`bot::Bot`] holds a rate-limited
//! Discord REST client ([`rest::RestClient`]: the core's client, TLS, keep-alive pool,
//! timeouts and proxies, over `async-net` and [`Timer`]s) and is started and stopped by the
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
//! - **automatic deferral**: a handler still running at the deadline (default 2.5 s)
//!   gets a deferred response (type 5, or 6 for components) written for it; the
//!   connection keeps awaiting the handler, whose late reply is then sent through REST
//!   (edit original response, …) in a spawned task. Autocomplete handlers are never
//!   deferred.
//! - **oversized files**: a reply whose files exceed the inline limit (default 150 000
//!   bytes) is sent through `POST /interactions/{id}/{token}/callback` and the HTTP
//!   request is answered `202 Accepted` with no body, as Discord documents.
//!
//! Spawned REST replies count as after-response work for shutdown. A plain [`Server`]
//! has no REST client, so neither happens.
#![deny(missing_docs)]

use std::future::Future;
use std::io;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use async_executor::Executor;
use async_io::Timer;
use async_net::TcpListener;
use event_listener::Event;
use futures_lite::future;
use tracing::Instrument;
use yuyo_core::deferral::{ReplyRouting, RestReply};
use yuyo_core::rest::RestReplies;
use yuyo_core::server::{Admitted, Full, Now, Session, Slots};

/// HTTPS, served by the core session itself: `Service::with_tls(ServerTls::from_pem_files(..)?)`.
pub use yuyo_core::server::tls::{ServerTls, TlsError};
use yuyo_core::service::{ACCEPT_BACKOFF, AcceptError};
pub use yuyo_core::service::{ServeError, ServeOptions, Service};

pub mod bot;
mod connection;
pub mod rest;

/// What a bot needs in one `use`: [`yuyo_core::prelude`] (handlers, replies, the
/// typed REST requests and their settings, errors, TLS, twilight's models) and
/// yuyo-smol's `Bot`, `RestClient` and `Server`.
pub mod prelude {
    pub use crate::bot::{Bot, BotBuilder};
    pub use crate::rest::RestClient;
    pub use crate::{Server, Service};
    pub use yuyo_core::prelude::*;
}

/// Largest piece of a reply file read (on the blocking pool) and written at once.
const FILE_CHUNK: usize = 64 * 1024;
/// How long tasks get to unwind once the grace period expired and they were cancelled.
const CANCEL_WAIT: Duration = Duration::from_secs(1);

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
    /// Turns the health check to 503 and, after [`ServeOptions::drain_period`], stops
    /// accepting (taking the connections queued in the backlog) and lets in-flight
    /// requests finish (idempotent, non-blocking). `serve` returns once they did or the grace period ran out.
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
    rest: RestReplies<rest::Smol>,
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
            rest: RestReplies::default(),
        }
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
            stop: Arc::new(Flag::default()),
            cancel: Flag::default(),
            active: AtomicUsize::new(0),
            drained: Event::new(),
            rest: std::mem::take(&mut self.rest),
        });
        let signals = Arc::new(Signals::new(options.handle_signals));
        let draining = executor.spawn(drain_then_stop(
            self.shutdown.flag.clone(),
            signals.clone(),
            self.service.endpoint().health().clone(),
            options.drain_period,
            shared.stop.clone(),
        ));

        let unadmitted = accept_loop(&shared, &listener, &self.service, &options).await;
        let queued = accept_queued(&shared, &listener, unadmitted, &self.service, &options);
        if future::or(async { queued.await.then_some(()) }, async {
            Timer::after(options.grace_period).await;
            None
        })
        .await
        .is_none()
        {
            tracing::warn!(
                "grace period over while every slot was busy: the rest of the backlog is dropped"
            );
        }
        drop(listener);
        drop(draining);
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
    /// Stop accepting: the drain period after the shutdown request is over.
    stop: Arc<Flag>,
    /// The grace period is over: tasks stop where they are.
    cancel: Flag,
    /// Connections, after-response work and REST replies still running.
    active: AtomicUsize,
    drained: Event,
    /// The REST client replies go through, and how.
    rest: RestReplies<rest::Smol>,
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

    /// Delivers a reply the session routed through REST, in its own tracked task.
    fn send_rest_reply(self: &Arc<Self>, reply: RestReply, span: tracing::Span) {
        if let Some(send) = self.rest.deliver(reply) {
            self.spawn(send.instrument(span));
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

/// Accepts connections into the service's [`Slots`] until shutdown: at the cap, a new
/// connection takes the slot of the one waiting longest on its peer; when every
/// connection is busy on the server's side, it waits for a vacancy.
async fn accept_loop(
    shared: &Arc<Shared>,
    listener: &TcpListener,
    service: &Service,
    options: &ServeOptions,
) -> Option<async_net::TcpStream> {
    let slots = service.slots().clone();
    let max = options.max_connections;
    let stopped = || shared.stop.wait();
    loop {
        // The stop condition is polled first, so a flood of connections cannot hide it.
        let accepted = future::or(
            async {
                stopped().await;
                None
            },
            async { Some(listener.accept().await) },
        )
        .await;
        let stream = match accepted {
            None => return None,
            Some(Ok((stream, _peer))) => stream,
            Some(Err(error)) if AcceptError::classify(&error) == AcceptError::Retry => {
                tracing::debug!(%error, "accept failed");
                continue;
            }
            Some(Err(error)) => {
                tracing::error!(%error, "accept failed; retrying shortly");
                Timer::after(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let admitted = loop {
            match slots.admit(max) {
                Ok(admitted) => break admitted,
                Err(Full) => {
                    let vacancy = future::or(
                        async {
                            stopped().await;
                            false
                        },
                        async {
                            slots.vacancy(max).await;
                            true
                        },
                    );
                    if !vacancy.await {
                        // Accepted, so it must be served: it goes first in `accept_queued`.
                        return Some(stream);
                    }
                }
            }
        };
        serve_stream(shared, service, options, stream, admitted);
    }
}

/// A slot for a connection, waiting for a vacancy while every slot is busy.
async fn admit(slots: &Slots, max: usize) -> Admitted {
    loop {
        if let Ok(admitted) = slots.admit(max) {
            return admitted;
        }
        slots.vacancy(max).await;
    }
}

/// Serves `unadmitted` (accepted when accepting stopped), then takes every connection
/// already queued in `listener`'s backlog, without waiting, and serves each; `true` once
/// the backlog is empty. Called once accepting stopped, before
/// the listener is closed: Linux resets the connections still queued on a closed
/// listener, and each may carry an interaction.
async fn accept_queued(
    shared: &Arc<Shared>,
    listener: &TcpListener,
    unadmitted: Option<async_net::TcpStream>,
    service: &Service,
    options: &ServeOptions,
) -> bool {
    if let Some(stream) = unadmitted {
        let admitted = admit(service.slots(), options.max_connections).await;
        serve_stream(shared, service, options, stream, admitted);
    }
    // Straight to the socket: the reactor may not have seen the newest arrivals yet.
    let socket = socket2::SockRef::from(listener);
    loop {
        let stream = match socket.accept() {
            Ok((stream, _peer)) => std::net::TcpStream::from(stream),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                if error.kind() != io::ErrorKind::WouldBlock {
                    tracing::debug!(%error, "accept failed while taking the backlog");
                }
                return true;
            }
        };
        let stream = match async_net::TcpStream::try_from(stream) {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(%error, "could not register a queued connection");
                continue;
            }
        };
        let admitted = admit(service.slots(), options.max_connections).await;
        serve_stream(shared, service, options, stream, admitted);
    }
}

/// Serves an accepted `stream` in its slot, in a task of its own.
fn serve_stream(
    shared: &Arc<Shared>,
    service: &Service,
    options: &ServeOptions,
    stream: async_net::TcpStream,
    admitted: Admitted,
) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
    if let Some(size) = options.send_buffer
        && let Err(error) = socket2::SockRef::from(&stream).set_send_buffer_size(size)
    {
        tracing::debug!(%error, "cannot set SO_SNDBUF");
    }
    let config = options.connection_config(admitted.others);
    let session = Session::new(service.endpoint().clone(), config, now())
        .with_slot(admitted.slot)
        .with_tls(service.tls());
    let conn_shared = shared.clone();
    // Boxed once, here: each async layer around a moved-in value keeps a slot of its
    // own, and the session is the largest part of a connection's memory.
    shared.spawn(Box::pin(connection::serve(stream, session, conn_shared)));
}

/// Completes once a shutdown is requested (the handle or a signal) and then the drain
/// period passed, and sets `stop`; marks `health` draining at the request, so the health
/// check answers 503 while the server still accepts.
async fn drain_then_stop(
    requested: Arc<Flag>,
    signals: Arc<Signals>,
    health: yuyo_core::endpoint::Health,
    drain_period: Duration,
    stop: Arc<Flag>,
) {
    future::or(requested.wait(), signals.wait()).await;
    health.begin_draining();
    if !drain_period.is_zero() {
        tracing::info!(?drain_period, "draining: the health check answers 503");
        Timer::after(drain_period).await;
    }
    stop.set();
}

fn now() -> Now {
    Now::at(Instant::now(), SystemTime::now())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn serve_futures_are_send() {
        let executor = Arc::new(Executor::new());
        let service = Service::new(yuyo_core::endpoint::Endpoint::new(
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
