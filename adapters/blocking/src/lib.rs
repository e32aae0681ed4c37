//! yuyo on std threads: a Discord interactions server with no async runtime.
//!
//! [`Server::serve`] runs the service's startup callbacks, then serves a
//! `std::net::TcpListener` with two kinds of threads:
//! - **the reactor**, the thread that called `serve`: one `mio` poller holding the
//!   listener and the parked connections. It admits accepted connections into the
//!   service's [`Slots`], up to
//!   [`ServeOptions::max_connections`]: at the cap a new connection takes the slot of the
//!   one that has waited longest on its peer, which is closed; when every connection is
//!   busy on the server's side (verifying, running a handler), new ones wait in the
//!   listen backlog. It keeps the connections whose sessions wait on their peers (idle
//!   keep-alive ones, ones whose request is still arriving, ones whose peer does not read
//!   its responses, lingering closes) with their deadlines, and hands a connection to a
//!   connection thread when it becomes ready, its deadline passes or it is evicted.
//! - **connection threads** (named `yuyo-connection`), a pool: each drives
//!   [`yuyo_core::server::Session`]s for the connections it was handed, translating their
//!   outputs into IO on non-blocking sockets (reads of what has arrived, writes of what
//!   the socket takes), running handler futures on the thread with
//!   `futures_lite::future::block_on` and streaming reply files from disk with `std::fs`.
//!   The session owns every deadline and decision (head, body, idle, write and linger
//!   deadlines, the lingering close); a thread never blocks on one socket. A thread
//!   serves its ready connections as a group: each is driven up to its signature check,
//!   the group's signatures are verified as one batch, then each request is handled in
//!   turn (one request per connection per round, and a bounded turn for peers that
//!   pipeline many). When a session waits on its peer, the thread keeps its connection on
//!   its own poller for up to 10 ms (a busy keep-alive connection's next request usually
//!   comes sooner, and is then served with no hand-off), then parks it with the reactor.
//!   An idle connection thus holds no thread, only its session and socket (a few KiB).
//!   While handlers are quick, a thread per core serves up to 64 connections this way,
//!   like an event loop (a busy one hands half of its ready connections to a spare core).
//!   Threads exit after 10 s without work.
//!
//! # Handlers that block
//! Handlers here may block (files, locks, the blocking [`rest::RestClient`]). The first
//! time a handler runs longer than 2 ms *and* makes its thread wait (not merely
//! preempted), the server logs it at `info` and from then on serves one connection per
//! thread, adding threads when connections wait and none is idle (or when the threads
//! stop taking any, all busy with long handlers), so a blocked handler holds up no other
//! connection. A handler still pending after 2 ms first hands its thread's other
//! connections to the reactor and to other threads; only a handler that blocks its
//! thread inside one poll can delay the other connections of its group, once.
//!
//! After-response work (and replies sent through REST) runs on a thread of its own.
//!
//! A [`ShutdownHandle`] (or Ctrl-C/SIGTERM with [`ServeOptions::handle_signals`]) wakes
//! the reactor: accepting stops, idle connections close, busy ones close after their
//! response, and connections and after-response work get
//! [`ServeOptions::grace_period`] to finish before the shutdown callbacks run.
//!
//! The [`bot`] module adds yuyo's `AsgiBot` on top: a [`bot::Bot`] holds a
//! rate-limited Discord REST client ([`rest::RestClient`]: the core's client, TLS,
//! keep-alive pool, timeouts and proxies, over `std::net::TcpStream`) and is started and stopped
//! by the server's lifespan (managed) or by hand with blocking `start`/`close`/`join`/`run`.
//!
//! ```no_run
//! use yuyo_blocking::{Server, Service};
//! # fn endpoint() -> yuyo_core::endpoint::Endpoint { unimplemented!() }
//! let server = Server::new(Service::new(endpoint()));
//! let handle = server.shutdown_handle(); // e.g. for another thread
//! server.serve(std::net::TcpListener::bind("127.0.0.1:8080")?)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Replies through REST
//! A server given a REST client with [`Server::with_rest_replies`] (the [`bot::Bot`]'s
//! server is, by default) lets the core route replies through REST
//! ([`yuyo_core::deferral`]), as on yuyo-tokio:
//! - **automatic deferral**: a handler still running at the deadline (default 2.5 s)
//!   gets a deferred response (type 5, or 6 for components) written for it; the
//!   connection thread keeps running the handler, whose late reply is then sent through
//!   REST (edit original response, …) on a thread of its own, while the connection
//!   serves its next request. Autocomplete handlers are never deferred. The deadline
//!   needs no timer thread: the connection thread runs the handler with its own small
//!   executor that parks with a timeout until the deadline (see `run_until` in the
//!   connection module), then goes on with `block_on`.
//! - **oversized files**: a reply whose files exceed the inline limit (default 150 000
//!   bytes) is sent through `POST /interactions/{id}/{token}/callback` and the HTTP
//!   request is answered `202 Accepted` with no body, as Discord documents.
//!
//! REST replies count as after-response work for shutdown. A plain [`Server`] has no
//! REST client, so neither happens.
#![deny(missing_docs)]

pub mod bot;
mod connection;
mod reactor;
pub mod rest;

/// What a bot needs in one `use`: [`yuyo_core::prelude`] (handlers, replies, the
/// typed REST requests and their settings, errors, TLS, twilight's models) and
/// yuyo-blocking's `Bot`, `RestClient` and `Server`.
pub mod prelude {
    pub use crate::bot::{Bot, BotBuilder};
    pub use crate::rest::RestClient;
    pub use crate::{Server, Service};
    pub use yuyo_core::prelude::*;
}

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::thread;
use std::time::{Duration, Instant};

use futures_lite::future::block_on;
use mio::Waker;
use tracing::Instrument;
use yuyo_core::deferral::ReplyRouting;
use yuyo_core::endpoint::Endpoint;
use yuyo_core::rest::RestReplies;
use yuyo_core::server::Slots;

use connection::Conn;

/// HTTPS, served by the core session itself: `Service::with_tls(ServerTls::from_pem_files(..)?)`.
pub use yuyo_core::server::tls::{ServerTls, TlsError};
pub use yuyo_core::service::{ServeError, ServeOptions, Service};

/// How long a connection thread waits for a connection to serve before it exits.
const WORKER_IDLE: Duration = Duration::from_secs(10);
/// Most connection threads started for one batch of jobs.
const SPAWN_BURST: usize = 4;

/// A server for one [`Service`], on std threads.
#[derive(Debug)]
pub struct Server {
    service: Service,
    shared: Arc<Shared>,
    rest: RestReplies<rest::Blocking>,
}

/// Requests a graceful shutdown of a [`Server`]; cheap to clone, usable from any thread.
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    shared: Arc<Shared>,
}

impl ShutdownHandle {
    /// Requests a graceful shutdown: the health check answers 503, and after the drain
    /// period ([`ServeOptions::drain_period`]) stop accepting (taking the connections
    /// queued in the backlog), close idle connections, let busy
    /// ones finish. Idempotent and non-blocking; before `serve` it makes `serve` stop
    /// right after startup.
    pub fn shutdown(&self) {
        self.shared.request_shutdown();
    }
}

impl Server {
    /// A server for `service`.
    #[must_use]
    pub fn new(service: Service) -> Self {
        Self {
            service,
            shared: Arc::new(Shared::default()),
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

    /// The service: endpoint (handler registry and config), lifespan and options.
    #[must_use]
    pub fn service(&self) -> &Service {
        &self.service
    }

    /// The service, mutably (e.g. to add lifespan callbacks or change options).
    pub fn service_mut(&mut self) -> &mut Service {
        &mut self.service
    }

    /// A handle that shuts this server down gracefully.
    #[must_use]
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Serves `listener` until shut down; see the [crate docs](crate).
    ///
    /// # Errors
    /// [`ServeError::Startup`] if a startup callback failed (nothing was served),
    /// [`ServeError::Shutdown`] if a shutdown callback failed, [`ServeError::Io`] if the
    /// listener failed (connections were still shut down gracefully).
    pub fn serve(mut self, listener: TcpListener) -> Result<(), ServeError> {
        block_on(self.service.startup())?;
        if self.service.options().handle_signals {
            signals::watch(&self.shared);
        }
        let options = self.service.options().clone();
        let cores = thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        self.shared.cores.store(cores, Ordering::Relaxed);
        let ctx = Arc::new(Ctx {
            endpoint: self.service.endpoint().clone(),
            tls: self.service.tls().cloned(),
            options,
            slots: self.service.slots().clone(),
            rest: self.rest.clone(),
        });
        let (served, grace_deadline) = reactor::run(listener, &self.shared, &ctx);
        self.shared.shutdown();
        let deadline =
            grace_deadline.unwrap_or_else(|| Instant::now() + self.service.options().grace_period);
        self.drain(deadline);
        let stopped = block_on(self.service.shutdown());
        served.map_err(ServeError::Io)?;
        stopped
    }

    /// Waits for connections and after-response work, until `deadline` at most.
    fn drain(&self, deadline: Instant) {
        let mut tasks = lock(&self.shared.tasks);
        while tasks.connections + tasks.after > 0 {
            let now = Instant::now();
            if now >= deadline {
                tracing::warn!(
                    connections = tasks.connections,
                    after_work = tasks.after,
                    "grace period over; shutting down with work still running"
                );
                return;
            }
            tasks = self
                .shared
                .tasks_done
                .wait_timeout(tasks, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// What the reactor and the workers need of the server.
pub(crate) struct Ctx {
    endpoint: Endpoint,
    /// HTTPS, served by the sessions themselves.
    tls: Option<yuyo_core::server::tls::ServerTls>,
    options: ServeOptions,
    /// The connection cap (the service's slots).
    slots: Slots,
    rest: RestReplies<rest::Blocking>,
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::PermissionDenied
    )
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM.
    matches!(e.raw_os_error(), Some(23 | 24 | 105 | 12)) || e.kind() == io::ErrorKind::OutOfMemory
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// State shared by the server, its handles and its threads.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// A shutdown was requested: the health check answers 503, accepting goes on for the
    /// drain period.
    requested: AtomicBool,
    /// Accepting stopped: connections close after their request.
    stopping: AtomicBool,
    /// Wakes the reactor: shutdown, a vacancy at the connection cap, an eviction, an
    /// earlier deadline, the last connection closing during shutdown.
    reactor_waker: Mutex<Option<Arc<Waker>>>,
    /// Where parked connections are registered (the reactor's poller), while it runs.
    reactor_registry: Mutex<Option<Arc<mio::Registry>>>,
    /// Wakers of workers' pollers, to wake them for shutdown.
    worker_wakers: Mutex<HashMap<u64, Arc<Waker>>>,
    next_id: AtomicU64,
    /// Registry keys of connections evicted at the cap, for the reactor to hand to
    /// workers if they are parked.
    evicted: Mutex<Vec<usize>>,
    /// The cores this process may run on (set by `serve`): while handlers are quick, as
    /// many threads serve groups of connections.
    cores: AtomicUsize,
    /// The connections' slots, shared by the reactor and the workers.
    registry: Mutex<reactor::Registry>,
    tasks: Mutex<Tasks>,
    tasks_done: Condvar,
    workers: Mutex<Workers>,
    work_ready: Condvar,
    /// A handler ran long on a connection thread: connections get a thread each from
    /// now on (see `connection::BLOCKING_HANDLER`).
    handlers_block: AtomicBool,
}

/// Connection threads serve whichever connection has something to do, and outlive it
/// for [`WORKER_IDLE`], so a server under `Connection: close` load does not create a
/// thread per request.
#[derive(Default)]
struct Workers {
    queue: VecDeque<Box<Conn>>,
    /// Threads waiting for a job (some may be about to take a queued one).
    idle: usize,
    /// Threads, idle or busy.
    threads: usize,
    /// Jobs taken from the queue so far: the reactor's sign that the threads make
    /// progress (see [`unstick`]).
    taken: u64,
    /// Threads waiting on their held connections (by waker id): while handlers are
    /// quick, one of them takes new jobs rather than a new thread.
    holding: Vec<u64>,
}

impl Workers {
    /// This thread's share of the queue among it and the idle threads, `most` at most.
    #[allow(clippy::vec_box)] // the connections stay boxed: they move between threads
    fn take_share(&mut self, most: usize) -> Vec<Box<Conn>> {
        let take = self.queue.len().div_ceil(self.idle + 1).min(most);
        self.taken += take as u64;
        self.queue.drain(..take).collect()
    }
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("queued", &self.queue.len())
            .field("idle", &self.idle)
            .field("threads", &self.threads)
            .finish()
    }
}

/// Queues `jobs` for the connection threads. Threads are added when jobs wait that no
/// idle thread will take, at most [`SPAWN_BURST`] at once: most jobs take microseconds
/// (a request, or a read that finds nothing and parks the connection again), so a burst
/// (say a thousand idle connections closed together) does not start a thread per job,
/// while connections held by busy threads (see `connection::HOLD`) do not keep new
/// ones waiting. [`unstick`] adds threads when they stop taking jobs (long handlers).
#[allow(clippy::vec_box)] // the connections stay boxed in the queue
fn dispatch(shared: &Arc<Shared>, ctx: &Arc<Ctx>, jobs: &mut Vec<Box<Conn>>) {
    let mut workers = lock(&shared.workers);
    let available = workers.idle.saturating_sub(workers.queue.len());
    let count = jobs.len();
    let mut holder = None;
    workers.queue.extend(jobs.drain(..));
    let spawn = if shared.handlers_block() {
        // A thread per connection. Busy threads may be holding idle connections (see
        // `connection::HOLD`) rather than running handlers, so jobs no idle thread
        // covers get new threads, a few at a time.
        workers
            .queue
            .len()
            .saturating_sub(workers.idle)
            .min(SPAWN_BURST)
    } else if workers.idle > 0 {
        0
    } else if workers.threads < shared.cores.load(Ordering::Relaxed) {
        // Handlers are quick: a thread per core serves groups of connections; then a
        // thread holding connections takes these too (it is woken for them). A thread
        // stuck in a long handler is covered by [`unstick`].
        1
    } else {
        holder = workers.holding.pop();
        0
    };
    workers.threads += spawn;
    drop(workers);
    if let Some(id) = holder
        && let Some(waker) = lock(&shared.worker_wakers).get(&id).cloned()
    {
        wake(&waker);
    }
    for _ in 0..count.min(available) {
        shared.work_ready.notify_one();
    }
    for _ in 0..spawn {
        spawn_worker(shared, ctx);
    }
}

/// Whether connections wait for a thread (then no worker holds an idle one).
pub(crate) fn jobs_waiting(shared: &Shared) -> bool {
    !lock(&shared.workers).queue.is_empty()
}

/// Starts threads if jobs are queued and none was taken since `taken` (the threads are
/// all busy with long handlers); returns the current count of taken jobs, or `None` if
/// nothing is queued.
fn unstick(shared: &Arc<Shared>, ctx: &Arc<Ctx>, taken: Option<u64>) -> Option<u64> {
    let mut workers = lock(&shared.workers);
    if workers.queue.is_empty() {
        return None;
    }
    let now_taken = workers.taken;
    let spawn = if taken != Some(now_taken) {
        0
    } else if shared.handlers_block() {
        workers.queue.len().min(SPAWN_BURST)
    } else {
        // Threads serve groups: one more is enough (a group taking long on a loaded
        // machine stalls the queue too, and must not start a thread per stall).
        1
    };
    workers.threads += spawn;
    drop(workers);
    for _ in 0..spawn {
        spawn_worker(shared, ctx);
    }
    Some(now_taken)
}

/// Starts a connection thread, already counted in [`Workers::threads`].
fn spawn_worker(shared: &Arc<Shared>, ctx: &Arc<Ctx>) {
    let (for_thread, ctx) = (Arc::clone(shared), Arc::clone(ctx));
    let spawned = thread::Builder::new()
        .name("yuyo-connection".to_owned())
        .spawn(move || worker(&for_thread, &ctx));
    if let Err(error) = spawned {
        let mut workers = lock(&shared.workers);
        workers.threads -= 1;
        // Without any thread the queued connections would wait forever.
        let dropped = if workers.threads == 0 {
            std::mem::take(&mut workers.queue)
        } else {
            VecDeque::new()
        };
        drop(workers);
        tracing::error!(
            %error,
            closed = dropped.len(),
            "cannot start a connection thread"
        );
        drop(dropped);
    }
}

/// A connection thread: serves queued connections until idle for [`WORKER_IDLE`], or
/// until shutdown once nothing is queued.
fn worker(shared: &Arc<Shared>, ctx: &Arc<Ctx>) {
    let mut local = connection::Local::new();
    let mut workers = lock(&shared.workers);
    loop {
        let jobs = share_of_queue(&mut workers, shared);
        if !jobs.is_empty() {
            drop(workers);
            connection::serve(jobs, &mut local, ctx, shared);
            workers = lock(&shared.workers);
            continue;
        }
        if shared.is_stopping() {
            break;
        }
        workers.idle += 1;
        let (guard, waited) = shared
            .work_ready
            .wait_timeout(workers, WORKER_IDLE)
            .unwrap_or_else(PoisonError::into_inner);
        workers = guard;
        workers.idle -= 1;
        if waited.timed_out() && workers.queue.is_empty() {
            break;
        }
    }
    workers.threads -= 1;
    drop(workers);
    local.finish(shared);
}

/// The queued connections one thread takes: one at a time once handlers were seen to
/// block, else its share of the queue among the idle threads, up to a group.
#[allow(clippy::vec_box)] // the connections stay boxed: they move between threads
fn share_of_queue(workers: &mut Workers, shared: &Shared) -> Vec<Box<Conn>> {
    let most = if shared.handlers_block() {
        1
    } else {
        connection::MAX_GROUP
    };
    workers.take_share(most)
}

/// Whether a thread could take connections off a busy one: one is idle, or there are
/// fewer threads than cores.
pub(crate) fn spare_threads(shared: &Shared) -> bool {
    let workers = lock(&shared.workers);
    workers.idle > 0 || workers.threads < shared.cores.load(Ordering::Relaxed)
}

/// Records that the thread with waker `id` waits on its held connections, unless jobs
/// are queued (`false`: take them instead).
pub(crate) fn begin_hold(shared: &Shared, id: u64) -> bool {
    let mut workers = lock(&shared.workers);
    if !workers.queue.is_empty() {
        return false;
    }
    workers.holding.push(id);
    true
}

/// The thread with waker `id` no longer waits on its held connections.
pub(crate) fn end_hold(shared: &Shared, id: u64) {
    lock(&shared.workers).holding.retain(|&holder| holder != id);
}

/// Up to `room` queued connections, for a thread that serves a group.
#[allow(clippy::vec_box)] // the connections stay boxed: they move between threads
pub(crate) fn take_jobs(shared: &Shared, room: usize) -> Vec<Box<Conn>> {
    lock(&shared.workers).take_share(room)
}

#[derive(Debug, Default)]
struct Tasks {
    connections: usize,
    after: usize,
}

impl Shared {
    /// Whether handlers were seen to block (see `connection::BLOCKING_HANDLER`).
    pub(crate) fn handlers_block(&self) -> bool {
        self.handlers_block.load(Ordering::Relaxed)
    }

    /// A handler ran for `took`: from now on every connection gets a thread of its own.
    pub(crate) fn note_blocking_handler(&self, took: Duration) {
        if !self.handlers_block.swap(true, Ordering::Relaxed) {
            tracing::info!(
                took_ms = took.as_secs_f64() * 1e3,
                "a handler ran long on a connection thread; serving one connection per \
                 thread from now on"
            );
        }
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// A graceful shutdown was requested (the reactor starts the drain period).
    pub(crate) fn is_shutdown_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    fn request_shutdown(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.wake_reactor();
    }

    fn shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Idle connection threads exit.
        drop(lock(&self.workers));
        self.work_ready.notify_all();
        self.wake_reactor();
        for waker in lock(&self.worker_wakers).values() {
            wake(waker);
        }
    }

    pub(crate) fn wake_reactor(&self) {
        if let Some(waker) = lock(&self.reactor_waker).as_ref() {
            wake(waker);
        }
    }

    fn connections(&self) -> usize {
        lock(&self.tasks).connections
    }

    /// Registers a worker's waker; the id unregisters it.
    pub(crate) fn add_worker_waker(&self, waker: Arc<Waker>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.worker_wakers).insert(id, waker);
        id
    }

    pub(crate) fn remove_worker_waker(&self, id: u64) {
        lock(&self.worker_wakers).remove(&id);
    }

    /// Runs after-response work on a thread of its own, tracked for shutdown.
    pub(crate) fn spawn_after(self: &Arc<Self>, work: yuyo_core::endpoint::BoxFuture<()>) {
        self.spawn_tracked("yuyo-after", work);
    }

    /// Delivers a reply through REST on a thread of its own, tracked for shutdown like
    /// after-response work (see [`yuyo_core::deferral::RestReply::deliver`]).
    pub(crate) fn spawn_rest_reply(
        self: &Arc<Self>,
        send: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let span = tracing::Span::current();
        self.spawn_tracked("yuyo-rest-reply", Box::pin(send.instrument(span)));
    }

    fn spawn_tracked(self: &Arc<Self>, name: &str, work: yuyo_core::endpoint::BoxFuture<()>) {
        let guard = TaskGuard::after(self);
        let spawned = thread::Builder::new().name(name.to_owned()).spawn(move || {
            let _guard = guard;
            block_on(work);
        });
        if let Err(error) = spawned {
            tracing::error!(%error, name, "cannot start a thread for after-response work; dropped");
        }
    }
}

fn wake(waker: &Waker) {
    if let Err(error) = waker.wake() {
        tracing::error!(%error, "cannot wake a server thread");
    }
}

/// Counts a connection or after-response work until dropped (also when it panics).
pub(crate) struct TaskGuard {
    shared: Arc<Shared>,
    connection: bool,
}

impl TaskGuard {
    fn connection(shared: &Arc<Shared>) -> Self {
        lock(&shared.tasks).connections += 1;
        Self {
            shared: Arc::clone(shared),
            connection: true,
        }
    }

    fn after(shared: &Arc<Shared>) -> Self {
        lock(&shared.tasks).after += 1;
        Self {
            shared: Arc::clone(shared),
            connection: false,
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        {
            let mut tasks = lock(&self.shared.tasks);
            if self.connection {
                tasks.connections -= 1;
            } else {
                tasks.after -= 1;
            }
        }
        self.shared.tasks_done.notify_all();
        // During shutdown the reactor waits for the last connection; otherwise it need
        // not hear of a closed connection (its slot wakes it at the cap).
        if self.connection && self.shared.is_stopping() {
            self.shared.wake_reactor();
        }
    }
}

/// Ctrl-C / SIGTERM: one process-wide handler that shuts down every serving server that
/// asked for signals.
mod signals {
    use super::*;

    static TARGETS: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());
    static INSTALLED: OnceLock<bool> = OnceLock::new();

    pub(super) fn watch(shared: &Arc<Shared>) {
        {
            let mut targets = lock(&TARGETS);
            targets.retain(|target| target.strong_count() > 0);
            targets.push(Arc::downgrade(shared));
        }
        let installed = *INSTALLED.get_or_init(|| {
            match ctrlc::set_handler(|| {
                tracing::info!("signal received; shutting down gracefully");
                for target in lock(&TARGETS).iter().filter_map(Weak::upgrade) {
                    target.request_shutdown();
                }
            }) {
                Ok(()) => true,
                Err(error) => {
                    tracing::warn!(%error, "cannot handle Ctrl-C/SIGTERM");
                    false
                }
            }
        });
        if !installed {
            tracing::warn!("signals are not handled; use the shutdown handle");
        }
    }
}
