//! Serving connections on a worker thread: the core's session loop over non-blocking
//! sockets, handlers run with `block_on`. [`drive`] translates the session's outputs
//! into IO and feeds back what happened; the session owns every deadline and decision.
//! When a session waits on its peer (bytes to read, or a socket that takes no more
//! bytes), its connection is held on the worker's own poller for a while, then parked
//! with the reactor (see [`crate::reactor`]); the worker never blocks on one socket.
//!
//! A worker serves its connections as a group: every ready connection is driven up to
//! its signature check first, so their signatures are verified as one batch, then each
//! request is handled in turn, all on this thread. While handlers are quick this is a
//! small event loop with no hand-off between threads; once a handler is seen to take
//! long (it blocks, or waits), the server falls back to one connection per thread, so
//! a slow handler delays no other connection (see [`BLOCKING_HANDLER`]).

use std::fs::File;
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Wake, Waker as TaskWaker};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Buf, Bytes, BytesMut};
use futures_lite::future::block_on;
use mio::unix::SourceFd;
use mio::{Events, Interest, Token, Waker};
use tracing::Instrument;
use tracing::instrument::Instrumented;
use yuyo_core::deferral::RestReply;
use yuyo_core::endpoint::{HandlerFuture, HandlerResult, MAX_BATCH, Ticket};
use yuyo_core::multipart::FileSource;
use yuyo_core::server::{Admitted, Input, Now, Output, Session, Wait};

use crate::{Ctx, Shared, TaskGuard, lock, reactor};

const WAKE: Token = Token(usize::MAX);
/// Bytes read from a socket at once, into the worker's buffer.
const READ_SIZE: usize = 16 * 1024;
/// Bytes of a reply file read at once.
const FILE_CHUNK: usize = 64 * 1024;
/// How long a worker keeps a connection it served waiting on its peer before parking
/// it with the reactor. A busy keep-alive connection stays on its thread (no hand-off,
/// no reactor wake-up per request); an idle one holds no thread after this.
const HOLD: Duration = Duration::from_millis(10);
/// Most connections a worker serves together while handlers are quick: one batch of
/// signatures.
pub(crate) const MAX_GROUP: usize = MAX_BATCH;
/// The fewest ready connections a busy worker hands to a spare thread (another core).
const MIN_SHARE: usize = 4;
/// A handler running longer than this on a connection thread makes the server give
/// every connection its own thread from then on: handlers on `yuyo-blocking` may block
/// (on files, locks, the blocking REST client), and a blocked handler must not hold up
/// the other connections of its group more than once.
const BLOCKING_HANDLER: Duration = Duration::from_millis(2);

fn now() -> Now {
    Now::at(Instant::now(), SystemTime::now())
}

/// An accepted connection: what a parked connection keeps while it holds no thread.
pub(crate) struct Conn {
    stream: mio::net::TcpStream,
    session: Session,
    /// Its entry in the reactor's registry (and its token).
    key: usize,
    /// Shutdown was passed on to the session.
    closing: bool,
    /// Its request waits for the group's signature batch.
    verifying: Option<Ticket>,
    /// The rest of the last [`Output::Transmit`], written when the socket takes it.
    unsent: Bytes,
    /// The reply file being streamed ([`Output::StreamFile`]).
    file: Option<File>,
    /// The handler of [`Output::Handle`], while it runs.
    handler: Option<Running>,
    /// What the session waits for, as of its last [`Output::Timeout`].
    wait: Wait,
    /// Set when its slot in the connection cap was given to a new connection.
    eviction: Arc<EvictionWaker>,
    /// Counts the connection (for shutdown) until it is closed.
    guard: TaskGuard,
}

impl Conn {
    pub(crate) fn new(
        stream: mio::net::TcpStream,
        key: usize,
        ctx: &Ctx,
        admitted: Admitted,
        guard: TaskGuard,
    ) -> Box<Self> {
        let http = ctx.options.connection_config(admitted.others);
        let now = now();
        // Until its session first says what it waits for: the first request, by a
        // deadline no later than this (waking it early is harmless).
        let first = now.instant + http.head_timeout.min(http.idle_timeout);
        let mut session = Session::new(ctx.endpoint.clone(), http, now)
            .with_slot(admitted.slot)
            .with_tls(ctx.tls.as_ref());
        session.set_reply_routing(ctx.rest.routing());
        let eviction = EvictionWaker::watch(&session, key, guard.shared());
        Box::new(Self {
            stream,
            session,
            key,
            closing: false,
            verifying: None,
            unsent: Bytes::new(),
            file: None,
            handler: None,
            wait: Wait {
                deadline: Some(first),
                read: true,
                write: false,
                file: false,
            },
            eviction,
            guard,
        })
    }

    pub(crate) fn key(&self) -> usize {
        self.key
    }

    pub(crate) fn stream_mut(&mut self) -> &mut mio::net::TcpStream {
        &mut self.stream
    }

    pub(crate) fn closing(&self) -> bool {
        self.closing
    }

    /// Whether the connection was evicted and its session has not heard of it yet.
    pub(crate) fn evicted(&self) -> bool {
        self.eviction.evicted.load(Ordering::SeqCst)
    }

    /// When the session must hear of the time next (its [`Wait::deadline`]).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.wait.deadline
    }

    /// The readiness the session waits for (`None`: none, only its deadline).
    pub(crate) fn interest(&self) -> Option<Interest> {
        match (self.wait.read, self.wait.write) {
            (true, true) => Some(Interest::READABLE | Interest::WRITABLE),
            (true, false) => Some(Interest::READABLE),
            (false, true) => Some(Interest::WRITABLE),
            (false, false) => None,
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Whoever drops a connection holds it out of the registry (never under its
        // lock), so the entry is `Owned` and can be reused.
        lock(&self.guard.shared().registry).release(self.key);
    }
}

/// Learns of a connection's eviction (see [`yuyo_core::server::Slots`]): the slot wakes
/// it, under the slots' lock, from the reactor's accept. It flags the connection and
/// tells the reactor, which hands the connection to a worker if it is parked; a worker
/// holding it sees the flag when it next looks at it (within [`HOLD`]).
struct EvictionWaker {
    key: usize,
    evicted: AtomicBool,
    shared: Weak<Shared>,
}

impl EvictionWaker {
    /// Registers a waker for the eviction of `session`'s slot.
    fn watch(session: &Session, key: usize, shared: &Arc<Shared>) -> Arc<Self> {
        let this = Arc::new(Self {
            key,
            evicted: AtomicBool::new(false),
            shared: Arc::downgrade(shared),
        });
        if let Some(mut eviction) = session.eviction() {
            let waker = TaskWaker::from(Arc::clone(&this));
            // Polled once: the slot keeps the waker until it is evicted.
            if Pin::new(&mut eviction)
                .poll(&mut Context::from_waker(&waker))
                .is_ready()
            {
                waker.wake();
            }
        }
        this
    }
}

impl Wake for EvictionWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Called under the slots' lock: it must not drop a connection (which frees a slot).
        self.evicted.store(true, Ordering::SeqCst);
        if let Some(shared) = self.shared.upgrade() {
            lock(&shared.evicted).push(self.key);
            shared.wake_reactor();
        }
    }
}

/// A connection a worker owns: being served, or held waiting on its peer.
struct Held {
    conn: Box<Conn>,
    /// Its interest registered with the worker's poller.
    registered: Option<Interest>,
    /// When it last finished a step; it is parked [`HOLD`] after this.
    idle_since: Instant,
}

/// A worker thread's own resources, reused for every connection it serves.
pub(crate) struct Local {
    /// What a read takes in, before it is copied into the session: a read that finds
    /// nothing (one per request, with edge-triggered readiness) then costs no memory.
    buf: Vec<u8>,
    poller: ThreadPoll,
    /// The connections this worker owns, by token.
    held: Vec<Option<Held>>,
    free: Vec<usize>,
    /// Tokens to serve again (see [`Step::Again`]).
    ready_later: Vec<usize>,
}

impl Local {
    pub(crate) fn new() -> Self {
        Self {
            buf: vec![0; READ_SIZE],
            poller: ThreadPoll { poll: None },
            held: Vec::new(),
            free: Vec::new(),
            ready_later: Vec::new(),
        }
    }

    /// Unregisters the thread's waker.
    pub(crate) fn finish(self, shared: &Shared) {
        if let Some(poll) = self.poller.poll {
            shared.remove_worker_waker(poll.waker_id);
        }
    }

    fn insert(&mut self, conn: Box<Conn>) -> usize {
        let held = Some(Held {
            conn,
            registered: None,
            idle_since: Instant::now(),
        });
        if let Some(token) = self.free.pop() {
            self.held[token] = held;
            token
        } else {
            self.held.push(held);
            self.held.len() - 1
        }
    }

    /// Takes a connection out of this worker, unregistered from its poller.
    fn remove(&mut self, token: usize) -> Option<Box<Conn>> {
        let held = self.held.get_mut(token)?.take()?;
        self.free.push(token);
        if held.registered.is_some() {
            self.poller.deregister(held.conn.stream.as_raw_fd());
        }
        Some(held.conn)
    }

    fn count(&self) -> usize {
        self.held.len() - self.free.len()
    }
}

/// The worker thread's own poller, created the first time it is needed, with a waker
/// shutdown uses: it holds the worker's connections while they wait on their peers
/// (see [`HOLD`]).
struct ThreadPoll {
    poll: Option<PollState>,
}

struct PollState {
    poll: mio::Poll,
    events: Events,
    waker_id: u64,
}

impl ThreadPoll {
    fn poll(&mut self, shared: &Shared) -> io::Result<&mut PollState> {
        if self.poll.is_none() {
            let poll = mio::Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
            let waker_id = shared.add_worker_waker(waker);
            self.poll = Some(PollState {
                poll,
                events: Events::with_capacity(MAX_GROUP),
                waker_id,
            });
        }
        self.poll
            .as_mut()
            .ok_or_else(|| io::Error::other("the worker's poller is missing"))
    }

    /// Changes what a held connection is registered for, from `from` to `to`.
    /// Edge-triggered, (re)registered after the read or write that would block: readiness
    /// that came in between is reported at once. The bare descriptor is registered (a
    /// `TcpStream` would refuse a second registry, the reactor's).
    fn watch(
        &mut self,
        fd: RawFd,
        token: usize,
        from: Option<Interest>,
        to: Option<Interest>,
        shared: &Shared,
    ) -> io::Result<()> {
        let registry = self.poll(shared)?.poll.registry();
        match (from, to) {
            (None, None) => Ok(()),
            (None, Some(to)) => registry.register(&mut SourceFd(&fd), Token(token), to),
            (Some(_), Some(to)) => registry.reregister(&mut SourceFd(&fd), Token(token), to),
            (Some(_), None) => registry.deregister(&mut SourceFd(&fd)),
        }
    }

    fn deregister(&mut self, fd: RawFd) {
        if let Some(poll) = &self.poll {
            let _ = poll.poll.registry().deregister(&mut SourceFd(&fd));
        }
    }

    /// Waits up to `timeout` for held connections to become ready (or for shutdown),
    /// adding their tokens to `ready`.
    fn wait(
        &mut self,
        timeout: Option<Duration>,
        ready: &mut Vec<usize>,
        shared: &Shared,
    ) -> io::Result<()> {
        let poll = self.poll(shared)?;
        let id = poll.waker_id;
        // Waiting (not just collecting what is ready), this thread can be woken for
        // queued connections while handlers are quick.
        let listed = timeout != Some(Duration::ZERO) && !shared.handlers_block();
        if listed && !crate::begin_hold(shared, id) {
            return Ok(());
        }
        let waited = poll.poll.poll(&mut poll.events, timeout);
        if listed {
            crate::end_hold(shared, id);
        }
        match waited {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        ready.extend(poll.events.iter().filter_map(|event| match event.token() {
            WAKE => None,
            Token(token) => Some(token),
        }));
        Ok(())
    }
}

/// How far [`drive`] takes a connection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Until {
    /// Up to its signature check: the ticket is kept for the group's batch.
    Verify,
    /// Until it waits on its peer or closes.
    Park,
}

/// What stopped [`drive`].
enum Step {
    /// The request waits for the group's signature batch.
    Verify,
    /// The session waits on its peer (or its deadline): hold or park the connection.
    Park,
    /// The session yielded ([`Output::Yield`]), or a request was answered and the next
    /// one awaits verification: serve the others first, then this one again.
    Again,
    /// The handler still runs after [`BLOCKING_HANDLER`] while the worker holds other
    /// connections: hand them away, then drive this one on.
    Waits,
    /// The session is done: close the socket.
    Close,
}
/// Serves `jobs` and the connections they bring, as groups (see the [module
/// docs](self)), until this worker holds none.
#[allow(clippy::vec_box)] // the connections stay boxed: they move between threads
pub(crate) fn serve(jobs: Vec<Box<Conn>>, local: &mut Local, ctx: &Arc<Ctx>, shared: &Arc<Shared>) {
    let mut ready: Vec<usize> = jobs.into_iter().map(|conn| local.insert(conn)).collect();
    loop {
        if ready.len() >= 2 * MIN_SHARE && !shared.handlers_block() && crate::spare_threads(shared)
        {
            // Another core could serve half of these.
            let mut shared_out: Vec<Box<Conn>> = ready
                .split_off(ready.len() / 2)
                .into_iter()
                .filter_map(|token| local.remove(token))
                .collect();
            crate::dispatch(shared, ctx, &mut shared_out);
        }
        if !ready.is_empty() {
            serve_group(&ready, local, ctx, shared);
            ready.clear();
        }
        if local.count() == 0 {
            return;
        }
        if shared.handlers_block() && crate::jobs_waiting(shared) {
            // One connection per thread: leave the held ones to the reactor and serve
            // a waiting one.
            release_all(local, &mut ready, shared);
            if ready.is_empty() {
                return;
            }
            continue;
        }
        let timeout = hold_timeout(local, shared);
        ready.append(&mut local.ready_later);
        let wait = if ready.is_empty() {
            timeout
        } else {
            Some(Duration::ZERO)
        };
        if let Err(error) = local.poller.wait(wait, &mut ready, shared) {
            tracing::debug!(%error, "cannot hold connections; parking them");
            release_all(local, &mut ready, shared);
        }
        ready.sort_unstable();
        ready.dedup();
        ready.retain(|&token| local.held.get(token).is_some_and(Option::is_some));
        release_idle(local, &mut ready, shared);
        take_jobs(local, &mut ready, shared);
    }
}

/// How long the held connections may wait: until the first one's [`HOLD`] ends or its
/// session's deadline passes.
fn hold_timeout(local: &Local, shared: &Shared) -> Option<Duration> {
    if shared.is_stopping() {
        return Some(Duration::ZERO);
    }
    let now = Instant::now();
    local
        .held
        .iter()
        .flatten()
        .map(|held| {
            let hold = held.idle_since + HOLD;
            held.conn
                .deadline()
                .map_or(hold, |deadline| deadline.min(hold))
        })
        .min()
        .map(|at| at.saturating_duration_since(now))
}

/// Adds connections whose deadline passed (or that must learn of shutdown or their
/// eviction) to `ready`, and parks those held longer than [`HOLD`] (or closing) with the
/// reactor.
fn release_idle(local: &mut Local, ready: &mut Vec<usize>, shared: &Shared) {
    let now = Instant::now();
    let stopping = shared.is_stopping();
    let mut park = Vec::new();
    for (token, held) in local.held.iter().enumerate() {
        let Some(held) = held else { continue };
        if ready.contains(&token) {
            continue;
        }
        let due = held.conn.deadline().is_some_and(|deadline| deadline <= now);
        if due || held.conn.evicted() || (stopping && !held.conn.closing) {
            ready.push(token);
        } else if stopping || held.idle_since + HOLD <= now {
            park.push(token);
        }
    }
    for token in park {
        park_held(local, token, ready, shared);
    }
}

/// Parks every held connection that is not ready with the reactor. Those to serve again
/// (see [`Step::Again`]) become ready: they hold a request already read, which no
/// readiness event would bring back.
fn release_all(local: &mut Local, ready: &mut Vec<usize>, shared: &Shared) {
    ready.append(&mut local.ready_later);
    let tokens: Vec<usize> = (0..local.held.len())
        .filter(|token| local.held[*token].is_some() && !ready.contains(token))
        .collect();
    for token in tokens {
        park_held(local, token, ready, shared);
    }
}

fn park_held(local: &mut Local, token: usize, ready: &mut Vec<usize>, shared: &Shared) {
    let Some(conn) = local.remove(token) else {
        return;
    };
    if let Err(back) = reactor::park(shared, conn) {
        // Readiness (or shutdown, or its eviction) came meanwhile: serve it again.
        ready.push(local.insert(back));
    }
}

/// Takes a share of the queued connections into this worker's group, while handlers are
/// quick and the group has room.
fn take_jobs(local: &mut Local, ready: &mut Vec<usize>, shared: &Shared) {
    if shared.handlers_block() {
        return;
    }
    let room = MAX_GROUP.saturating_sub(local.count());
    for conn in crate::take_jobs(shared, room) {
        ready.push(local.insert(conn));
    }
}

/// Serves the ready connections `tokens`: first each up to its signature check, then
/// each one's request (the first ticket verifies the whole batch).
fn serve_group(tokens: &[usize], local: &mut Local, ctx: &Arc<Ctx>, shared: &Arc<Shared>) {
    let grouped = tokens.len() > 1;
    for &token in tokens {
        let until = if grouped { Until::Verify } else { Until::Park };
        settle(token, until, local, ctx, shared);
    }
    if !grouped {
        return;
    }
    for (at, &token) in tokens.iter().enumerate() {
        let waiting = local
            .held
            .get(token)
            .and_then(Option::as_ref)
            .is_some_and(|held| held.conn.verifying.is_some());
        if !waiting {
            continue;
        }
        if shared.handlers_block() {
            // A handler blocked: the rest of the group goes to other threads.
            hand_off(&tokens[at..], local, ctx, shared);
            return;
        }
        settle(token, Until::Park, local, ctx, shared);
    }
}

/// Queues the verified-but-unserved connections among `tokens` for other threads.
fn hand_off(tokens: &[usize], local: &mut Local, ctx: &Arc<Ctx>, shared: &Arc<Shared>) {
    let mut jobs: Vec<Box<Conn>> = tokens
        .iter()
        .filter_map(|&token| {
            let waiting = local.held.get(token)?.as_ref()?.conn.verifying.is_some();
            if waiting { local.remove(token) } else { None }
        })
        .collect();
    crate::dispatch(shared, ctx, &mut jobs);
}

/// Drives the connection of `token` and acts on where it stopped.
fn settle(token: usize, until: Until, local: &mut Local, ctx: &Arc<Ctx>, shared: &Arc<Shared>) {
    loop {
        let others = local.count() > 1;
        let Local { held, buf, .. } = &mut *local;
        let Some(Some(held)) = held.get_mut(token) else {
            return;
        };
        let turn = Turn::new(until, others, buf);
        match drive(&mut held.conn, turn, ctx, shared) {
            Step::Verify => {}
            Step::Again => local.ready_later.push(token),
            Step::Waits => {
                evacuate(token, local, ctx, shared);
                continue;
            }
            Step::Park => hold(local, token, shared),
            Step::Close => drop(local.remove(token)),
        }
        return;
    }
}

/// Hands every connection this worker holds besides `token` to the reactor (those
/// waiting on their peers) or to other threads (those with a request in progress), when
/// the handler of `token` takes long.
fn evacuate(token: usize, local: &mut Local, ctx: &Arc<Ctx>, shared: &Arc<Shared>) {
    // Connections to serve again may hold requests already read: they go to threads too.
    let again = std::mem::take(&mut local.ready_later);
    let mut jobs = Vec::new();
    for other in (0..local.held.len()).filter(|&other| other != token) {
        let in_progress = match &local.held[other] {
            Some(held) => held.conn.verifying.is_some() || again.contains(&other),
            None => continue,
        };
        let Some(conn) = local.remove(other) else {
            continue;
        };
        if in_progress {
            jobs.push(conn);
        } else if let Err(back) = reactor::park(shared, conn) {
            jobs.push(back);
        }
    }
    crate::dispatch(shared, ctx, &mut jobs);
}

/// Holds a connection that waits on its peer on this worker's poller, registered for
/// what its session waits for; parks it with the reactor if that fails.
fn hold(local: &mut Local, token: usize, shared: &Shared) {
    let Local { held, poller, .. } = local;
    let Some(Some(entry)) = held.get_mut(token) else {
        return;
    };
    entry.idle_since = Instant::now();
    let interest = entry.conn.interest();
    if entry.registered == interest {
        // Still registered for it: an edge comes with the next readiness.
        return;
    }
    let fd = entry.conn.stream.as_raw_fd();
    match poller.watch(fd, token, entry.registered, interest, shared) {
        Ok(()) => entry.registered = interest,
        Err(error) => {
            tracing::debug!(%error, "cannot hold a connection; parking it");
            let mut ready = Vec::new();
            park_held(local, token, &mut ready, shared);
            local.ready_later.append(&mut ready);
        }
    }
}

/// Whether the socket may be ready, until a read or a write found it was not (then only
/// an edge from a poller says it is again).
struct Ready {
    read: bool,
    write: bool,
}

/// One call of [`drive`]: how far it goes, and what it did.
struct Turn<'a> {
    until: Until,
    /// The worker holds other connections.
    others: bool,
    /// A request was answered in this turn.
    answered: bool,
    ready: Ready,
    /// The worker's read buffer.
    buf: &'a mut [u8],
}

impl<'a> Turn<'a> {
    fn new(until: Until, others: bool, buf: &'a mut [u8]) -> Self {
        Self {
            until,
            others,
            answered: false,
            ready: Ready {
                read: true,
                write: true,
            },
            buf,
        }
    }
}

/// Runs the session of `conn`: each [`Output`] becomes IO on this thread, and what
/// happened goes back as an [`Input`], until the session waits on its peer or closes
/// (or, see [`Until`], its request waits for the group's signature batch).
fn drive(conn: &mut Conn, mut turn: Turn<'_>, ctx: &Ctx, shared: &Arc<Shared>) -> Step {
    loop {
        if let Some(notice) = conn.notice(shared) {
            conn.pass(notice);
        }
        match conn.session.poll_output() {
            Output::Transmit(bytes) => conn.transmit(bytes, &mut turn.ready),
            // Awaited at the next wait (the session then counts as busy, not evictable).
            Output::Verify(ticket) => conn.verifying = Some(ticket),
            Output::Handle(future) => {
                conn.handler = Some(Running::start(future, &conn.session, shared));
            }
            Output::StreamFile(source) => conn.open_file(&source),
            Output::Spawn(work) => shared.spawn_after(work),
            Output::RestReply(reply) => rest_reply(reply, &conn.session, ctx, shared),
            // What the session awaits (unsent bytes, the ticket, the handler, the file) is
            // kept in `conn`: the turn may end here.
            Output::Yield => return Step::Again,
            Output::ShutdownWrite => {
                let _ = conn.stream.shutdown(Shutdown::Write);
            }
            Output::Close => return Step::Close,
            Output::Timeout(wait) => {
                conn.wait = wait;
                let input = match conn.next_input(&mut turn, shared) {
                    Ok(input) => input,
                    Err(step) => return step,
                };
                turn.answered |= matches!(input, Input::Handled(_));
                conn.pass(input);
            }
        }
    }
}

impl Conn {
    /// Passes `input` to the session, with the time now.
    fn pass(&mut self, input: Input) {
        // A driver error is logged by the session, which then closes the connection.
        let _ = self.session.handle_input(now(), input);
    }

    /// Shutdown or the eviction of the slot, once each, when they happened.
    fn notice(&mut self, shared: &Shared) -> Option<Input> {
        if !self.closing && shared.is_stopping() {
            self.closing = true;
            return Some(Input::Shutdown);
        }
        let evicted = self.evicted() && self.eviction.evicted.swap(false, Ordering::SeqCst);
        evicted.then_some(Input::Evicted)
    }

    /// What happened, without waiting on the peer, since the session asked to wait as
    /// [`Conn::wait`] says: its deadline, the verdict, the socket's readiness, the file's
    /// next chunk, the handler's outcome (it runs until the deadline). `Err` ends the
    /// turn: the verdict waits for the group's batch, the handler waits (see
    /// [`Step::Waits`]), or only the peer can make progress.
    fn next_input(&mut self, turn: &mut Turn<'_>, shared: &Shared) -> Result<Input, Step> {
        let wait = self.wait;
        if wait.deadline.is_some_and(|at| at <= Instant::now()) {
            return Ok(Input::Timeout);
        }
        if let Some(ticket) = self.verifying.take() {
            return self.verdict(ticket, turn, shared);
        }
        let ready = &mut turn.ready;
        if wait.write
            && ready.write
            && let Some(input) = write(&mut self.stream, &mut self.unsent, ready)
        {
            return Ok(input);
        }
        if wait.file {
            return Ok(read_file(&mut self.file));
        }
        if let Some(running) = &mut self.handler {
            return match running.run(wait.deadline, turn.others, shared) {
                Ran::Done(outcome) => {
                    self.handler = None;
                    Ok(Input::Handled(outcome))
                }
                Ran::Deadline => Ok(Input::Timeout),
                Ran::Waits => Err(Step::Waits),
            };
        }
        if wait.read && ready.read {
            return Ok(read(&mut self.stream, &mut self.session, turn.buf, ready));
        }
        Err(Step::Park)
    }

    /// The verdict on the request's signature, unless it waits for the group's batch or,
    /// once a request was answered in this turn, for the worker's other connections (one
    /// request at a time: a peer that pipelines many does not keep them waiting).
    fn verdict(&mut self, ticket: Ticket, turn: &Turn<'_>, shared: &Shared) -> Result<Input, Step> {
        if turn.until == Until::Verify || (turn.answered && turn.others) {
            self.verifying = Some(ticket);
            return Err(match turn.until {
                Until::Verify => Step::Verify,
                Until::Park => Step::Again,
            });
        }
        if shared.handlers_block() {
            // Other connections' finished requests may join this one's batch.
            std::thread::yield_now();
        }
        Ok(Input::Verified(block_on(ticket)))
    }

    /// Writes what the socket takes of `bytes` now; it keeps the rest.
    fn transmit(&mut self, bytes: Bytes, ready: &mut Ready) {
        self.unsent = bytes;
        while !self.unsent.is_empty()
            && let Some(input) = write(&mut self.stream, &mut self.unsent, ready)
        {
            self.pass(input);
        }
    }

    /// Opens the reply file of [`Output::StreamFile`], or tells the session it cannot.
    fn open_file(&mut self, source: &FileSource) {
        let FileSource::Path { path, .. } = source else {
            tracing::error!(
                ?source,
                "the blocking adapter only streams files from paths"
            );
            return self.pass(Input::FileFailed);
        };
        match File::open(path) {
            Ok(file) => self.file = Some(file),
            Err(error) => {
                tracing::error!(%error, path = %path.display(), "cannot open a reply file");
                self.pass(Input::FileFailed);
            }
        }
    }
}

/// Writes once: `Written`, `Failed`, or `None` when the socket takes nothing now.
fn write(stream: &mut mio::net::TcpStream, unsent: &mut Bytes, ready: &mut Ready) -> Option<Input> {
    if unsent.is_empty() {
        return None;
    }
    loop {
        match stream.write(unsent) {
            Ok(0) => {
                *unsent = Bytes::new();
                return Some(Input::Failed);
            }
            Ok(n) => {
                unsent.advance(n);
                return Some(Input::Written(n));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                ready.write = false;
                return None;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                tracing::debug!(%error, "cannot write to a connection");
                *unsent = Bytes::new();
                return Some(Input::Failed);
            }
        }
    }
}

/// Reads once, through the worker's `buf` into the session's receive buffer: `Received`
/// (also when nothing was there), `Eof` or `Failed`.
///
/// Not straight into [`Session::receive_buffer`]: without `unsafe`, that needs its spare
/// room zeroed first, and the buffer is released after every read that finds nothing,
/// so each request would cost two allocations and two 8 KiB fills, not one copy of the
/// bytes read.
fn read(
    stream: &mut mio::net::TcpStream,
    session: &mut Session,
    buf: &mut [u8],
    ready: &mut Ready,
) -> Input {
    let result = loop {
        match stream.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            result => break result,
        }
    };
    match result {
        Ok(0) => Input::Eof,
        Ok(n) => {
            session.receive_buffer().extend_from_slice(&buf[..n]);
            Input::Received
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            ready.read = false;
            Input::Received
        }
        Err(error) => {
            tracing::debug!(%error, "cannot read from a connection");
            Input::Failed
        }
    }
}

/// Reads the next chunk of the reply file: `FileData`, `FileEnd` or `FileFailed`.
fn read_file(file: &mut Option<File>) -> Input {
    let Some(open) = file else {
        return Input::FileFailed;
    };
    let mut chunk = BytesMut::zeroed(FILE_CHUNK);
    loop {
        match open.read(&mut chunk) {
            Ok(0) => {
                *file = None;
                return Input::FileEnd;
            }
            Ok(n) => {
                chunk.truncate(n);
                return Input::FileData(chunk.freeze());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                tracing::error!(%error, "cannot read a reply file");
                *file = None;
                return Input::FileFailed;
            }
        }
    }
}

/// Delivers a reply through the REST client, on a thread of its own.
fn rest_reply(reply: RestReply, session: &Session, ctx: &Ctx, shared: &Arc<Shared>) {
    let _span = session.span().clone().entered();
    if let Some(send) = ctx.rest.deliver(reply) {
        shared.spawn_rest_reply(send);
    }
}

/// A handler running on this thread (it catches panics).
struct Running {
    future: Instrumented<HandlerFuture>,
    /// When it started, while handlers are thought quick: whether this one blocks.
    started: Option<ThreadWaits>,
}

/// Where [`Running::run`] stopped.
enum Ran {
    Done(HandlerResult),
    /// The session's deadline (e.g. for deferring the handler) passed.
    Deadline,
    /// It still runs after [`BLOCKING_HANDLER`], while the worker holds others.
    Waits,
}

impl Running {
    fn start(future: HandlerFuture, session: &Session, shared: &Shared) -> Self {
        Self {
            future: future.instrument(session.span().clone()),
            started: (!shared.handlers_block()).then(ThreadWaits::now),
        }
    }

    /// Runs the handler until it finishes or the session's `deadline` passes; while
    /// handlers are thought quick and the worker holds `others`, also until
    /// [`BLOCKING_HANDLER`] after its start (once).
    fn run(&mut self, deadline: Option<Instant>, others: bool, shared: &Shared) -> Ran {
        let check = self
            .started
            .as_ref()
            .filter(|_| others)
            .map(|started| started.at + BLOCKING_HANDLER);
        let until = match (deadline, check) {
            (Some(deadline), Some(check)) => Some(deadline.min(check)),
            (deadline, check) => deadline.or(check),
        };
        let outcome = match until {
            Some(at) => run_until(Pin::new(&mut self.future), at),
            None => Some(block_on(&mut self.future)),
        };
        let blocked = self.started.as_ref().and_then(ThreadWaits::blocked_for);
        if let Some(outcome) = outcome {
            if let Some(took) = blocked {
                shared.note_blocking_handler(took);
            }
            return Ran::Done(outcome);
        }
        if until != check {
            return Ran::Deadline;
        }
        self.started = None;
        if let Some(took) = blocked {
            // It waits: from now on connections get a thread each.
            shared.note_blocking_handler(took);
        }
        Ran::Waits
    }
}

/// When a handler started, and how often its thread had waited by then: a handler
/// that took long *and* made the thread wait (sleep, IO, a lock, a pending future)
/// blocks; one that was only preempted by other threads does not.
struct ThreadWaits {
    at: Instant,
    waits: Option<i64>,
}

impl ThreadWaits {
    fn now() -> Self {
        Self {
            at: Instant::now(),
            waits: voluntary_switches(),
        }
    }

    /// How long the handler ran, if it ran longer than [`BLOCKING_HANDLER`] and made the
    /// thread wait meanwhile.
    fn blocked_for(&self) -> Option<Duration> {
        let took = self.at.elapsed();
        if took <= BLOCKING_HANDLER {
            return None;
        }
        match (self.waits, voluntary_switches()) {
            (Some(before), Some(after)) if after == before => None,
            // Unknown (no per-thread usage here): assume it blocked, the safe answer.
            _ => Some(took),
        }
    }
}

/// How many times this thread gave up the CPU to wait.
fn voluntary_switches() -> Option<i64> {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_THREAD)
        .ok()
        .map(|usage| usage.voluntary_context_switches())
}

/// Wakes the thread parked in [`run_until`].
struct Unpark(parking::Unparker);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `future` on this thread until it completes (`Some`) or `deadline` passes
/// (`None`; the future is left as it is, to be run on with `block_on`).
///
/// This is how a connection thread races a handler against its session's deadline (the
/// deferral deadline, a write deadline) and [`BLOCKING_HANDLER`] without a timer thread: like `futures_lite::future::block_on`, it polls the future
/// and parks between wake-ups, but parks with [`parking::Parker::park_deadline`], so
/// the deadline itself wakes it. A timer crate would do the same with more machinery:
/// `async_io::Timer` outside `async_io::block_on` needs async-io's global driver thread.
///
/// Only a pending future can be interrupted: a handler that blocks the thread inside
/// `poll` (e.g. `std::thread::sleep`) is answered when it returns, as on any runtime.
fn run_until<F: Future>(mut future: Pin<&mut F>, deadline: Instant) -> Option<F::Output> {
    let (parker, unparker) = parking::pair();
    let waker = TaskWaker::from(Arc::new(Unpark(unparker)));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return Some(output);
        }
        if !parker.park_deadline(deadline) {
            return None;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn run_until_returns_a_ready_output() {
        let mut future = std::pin::pin!(async { 7 });
        let deadline = Instant::now() + Duration::from_secs(10);
        assert_eq!(run_until(future.as_mut(), deadline), Some(7));
    }

    #[test]
    fn run_until_gives_up_at_the_deadline_and_the_future_runs_on() {
        let (tx, rx) = async_channel_like();
        let mut waiting = std::pin::pin!(rx);
        let deadline = Instant::now() + Duration::from_millis(20);
        assert_eq!(run_until(waiting.as_mut(), deadline), None);
        assert!(Instant::now() >= deadline);
        tx.send(1).unwrap();
        assert_eq!(block_on(waiting), 1);
    }

    #[test]
    fn run_until_is_woken_by_another_thread() {
        let (tx, rx) = async_channel_like();
        let handle = std::thread::spawn(move || tx.send(5).unwrap());
        let mut future = std::pin::pin!(rx);
        let deadline = Instant::now() + Duration::from_secs(10);
        assert_eq!(run_until(future.as_mut(), deadline), Some(5));
        handle.join().unwrap();
    }

    /// A one-shot channel whose receiver is a future woken by the sender.
    fn async_channel_like() -> (OneshotSender, OneshotReceiver) {
        let shared = Arc::new(std::sync::Mutex::new((None, None::<TaskWaker>)));
        (OneshotSender(shared.clone()), OneshotReceiver(shared))
    }

    type Slot = Arc<std::sync::Mutex<(Option<u32>, Option<TaskWaker>)>>;

    struct OneshotSender(Slot);

    impl OneshotSender {
        fn send(self, value: u32) -> Result<(), ()> {
            let waker = {
                let mut slot = self.0.lock().map_err(drop)?;
                slot.0 = Some(value);
                slot.1.take()
            };
            if let Some(waker) = waker {
                waker.wake();
            }
            Ok(())
        }
    }

    struct OneshotReceiver(Slot);

    impl Future for OneshotReceiver {
        type Output = u32;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
            let mut slot = self.0.lock().unwrap();
            match slot.0.take() {
                Some(value) => Poll::Ready(value),
                None => {
                    slot.1 = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        }
    }
}
