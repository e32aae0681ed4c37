//! Serving connections on a worker thread: the core's session loop over non-blocking
//! sockets, handlers run with `block_on`. When a session waits for bytes that have not
//! arrived, its connection is held on the worker's own poller for a while, then parked
//! with the reactor (see [`crate::reactor`]); the worker never blocks on one read.
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
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker as TaskWaker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures_lite::future::block_on;
use mio::unix::SourceFd;
use mio::{Events, Interest, Token, Waker};
use tracing::Instrument;
use yuyo_core::endpoint::{MAX_BATCH, Ticket};
use yuyo_core::http1;
use yuyo_core::multipart::FileSource;
use yuyo_core::server::{Action, Now, Session};

use crate::reactor::{self, Wait};
use crate::{Ctx, Shared, TaskGuard, lock};

const WAKE: Token = Token(usize::MAX);
/// Bytes read from a socket at once, into the worker's buffer.
const READ_SIZE: usize = 16 * 1024;
/// Bytes of a reply file read at once.
const FILE_CHUNK: usize = 64 * 1024;
/// How long a worker keeps a connection it served waiting for the next request before
/// parking it with the reactor. A busy keep-alive connection stays on its thread (no
/// hand-off, no reactor wake-up per request); an idle one holds no thread after this.
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
    Now {
        instant: Instant::now(),
        unix_secs: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs()),
    }
}

/// An accepted connection: what a parked connection keeps while it holds no thread.
pub(crate) struct Conn {
    stream: mio::net::TcpStream,
    session: Session,
    /// Its slot in the reactor's registry (and its token).
    key: usize,
    /// Shutdown was passed on to the session.
    closing: bool,
    /// Its request waits for the group's signature batch.
    verifying: Option<Ticket>,
    /// Counts the connection (for the cap and shutdown) until it is closed.
    guard: TaskGuard,
}

impl Conn {
    pub(crate) fn new(
        stream: mio::net::TcpStream,
        key: usize,
        ctx: &Ctx,
        http: http1::Config,
        guard: TaskGuard,
    ) -> Box<Self> {
        let mut session = Session::new(ctx.endpoint.clone(), http, Instant::now());
        if let Some((_, routing)) = &ctx.rest {
            session.set_reply_routing(*routing);
        }
        Box::new(Self {
            stream,
            session,
            key,
            closing: false,
            verifying: None,
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
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Whoever drops a connection holds it out of the registry (never under its
        // lock), so the slot is `Owned` and can be reused.
        lock(&self.guard.shared().registry).release(self.key);
    }
}

/// A connection a worker owns: being served, or held waiting for its next request.
struct Held {
    conn: Box<Conn>,
    /// Registered with the worker's poller (for reading).
    registered: bool,
    /// When it last finished a step; it is parked [`HOLD`] after this.
    idle_since: Instant,
}

/// A worker thread's own resources, reused for every connection it serves.
pub(crate) struct Local {
    buf: Vec<u8>,
    poller: ThreadPoll,
    /// The connections this worker owns, by token.
    held: Vec<Option<Held>>,
    free: Vec<usize>,
    /// Tokens that became ready while the worker waited for one socket to take bytes.
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
            registered: false,
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
        if held.registered {
            self.poller.deregister(held.conn.stream.as_raw_fd());
        }
        Some(held.conn)
    }

    fn count(&self) -> usize {
        self.held.len() - self.free.len()
    }
}

/// The worker thread's own poller, created the first time it is needed, with a waker
/// shutdown uses: it holds the worker's connections between requests (see [`HOLD`])
/// and waits for a socket to take more bytes.
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

    /// Registers a held connection for reading. Edge-triggered, registered after the
    /// read that would block: data that came in between is reported at once.
    fn register(&mut self, fd: RawFd, token: usize, shared: &Shared) -> io::Result<()> {
        let poll = self.poll(shared)?;
        poll.poll
            .registry()
            .register(&mut SourceFd(&fd), Token(token), Interest::READABLE)
    }

    fn deregister(&mut self, fd: RawFd) {
        if let Some(poll) = &self.poll {
            let _ = poll.poll.registry().deregister(&mut SourceFd(&fd));
        }
    }

    /// Waits for the socket of `token` to take more bytes (or for shutdown); readiness
    /// of other held connections seen meanwhile goes to `ready_later`.
    fn wait_writable(
        &mut self,
        fd: RawFd,
        token: usize,
        registered: bool,
        ready_later: &mut Vec<usize>,
        shared: &Shared,
    ) -> io::Result<()> {
        let poll = self.poll(shared)?;
        // The bare descriptor is registered (a `TcpStream` would refuse a second
        // registry), only while waiting; a held one is already there for reading.
        if registered {
            poll.poll.registry().reregister(
                &mut SourceFd(&fd),
                Token(token),
                Interest::READABLE | Interest::WRITABLE,
            )?;
        } else {
            poll.poll
                .registry()
                .register(&mut SourceFd(&fd), Token(token), Interest::WRITABLE)?;
        }
        let waited = loop {
            match poll.poll.poll(&mut poll.events, None) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => break Ok(()),
                Err(e) => break Err(e),
            }
            let mut done = false;
            for event in &poll.events {
                match event.token() {
                    WAKE => done = true,
                    Token(t) if t == token => {
                        done |= event.is_writable() || event.is_error() || event.is_write_closed();
                    }
                    Token(t) => ready_later.push(t),
                }
            }
            if done {
                break Ok(());
            }
        };
        if registered {
            poll.poll.registry().reregister(
                &mut SourceFd(&fd),
                Token(token),
                Interest::READABLE,
            )?;
        } else {
            let _ = poll.poll.registry().deregister(&mut SourceFd(&fd));
        }
        waited
    }

    /// Waits up to `timeout` for held connections to become readable (or for shutdown),
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

/// The socket's sending side, for one worker.
struct Out<'a> {
    stream: &'a mut mio::net::TcpStream,
    token: usize,
    registered: bool,
    /// The worker's other connections and its poller.
    local: &'a mut Local,
    ctx: &'a Arc<Ctx>,
    shared: &'a Arc<Shared>,
}

impl Out<'_> {
    /// Writes all of `data`, waiting for the socket to take it.
    fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            match self.stream.write(data) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // A peer that does not read holds up only its own connection: the
                    // thread's others go to the reactor or other threads first.
                    if self.local.held.iter().any(Option::is_some) {
                        evacuate(self.local, self.ctx, self.shared);
                    }
                    let Local {
                        poller,
                        ready_later,
                        ..
                    } = &mut *self.local;
                    poller.wait_writable(
                        self.stream.as_raw_fd(),
                        self.token,
                        self.registered,
                        ready_later,
                        self.shared,
                    )?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes everything the session has to send.
    fn flush(&mut self, session: &mut Session) -> io::Result<()> {
        while let Some(bytes) = session.poll_transmit() {
            self.write_all(&bytes)?;
        }
        Ok(())
    }
}

/// Reads once: `Some(0)` at EOF, `None` if nothing is there yet.
fn read(stream: &mut mio::net::TcpStream, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        match stream.read(buf) {
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// How far [`drive`] takes a connection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Until {
    /// Up to its signature check: the ticket is kept for the group's batch.
    Verify,
    /// Until it waits for bytes or closes.
    Park,
}

/// What stopped [`drive`].
enum Step {
    /// The request waits for the group's signature batch.
    Verify,
    /// The session waits for bytes that have not arrived.
    Park,
    /// A request was answered: serve the others first, then this one again.
    Again,
    /// The session is done: close it lingering.
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

/// How long the held connections may wait for bytes: until the first one's [`HOLD`]
/// ends or its session's deadline passes.
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
                .session
                .poll_timeout()
                .map_or(hold, |deadline| deadline.min(hold))
        })
        .min()
        .map(|at| at.saturating_duration_since(now))
}

/// Adds connections whose deadline passed (or that must learn of shutdown) to `ready`,
/// and parks those held longer than [`HOLD`] (or closing) with the reactor.
fn release_idle(local: &mut Local, ready: &mut Vec<usize>, shared: &Shared) {
    let now = Instant::now();
    let stopping = shared.is_stopping();
    let mut park = Vec::new();
    for (token, held) in local.held.iter().enumerate() {
        let Some(held) = held else { continue };
        if ready.contains(&token) {
            continue;
        }
        let due = held
            .conn
            .session
            .poll_timeout()
            .is_some_and(|deadline| deadline <= now);
        if due || (stopping && !held.conn.closing) {
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
/// (see [`Step::Again`]) become ready: their sessions may hold requests already read, which
/// no readable event would bring back.
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
    let deadline = conn.session.poll_timeout();
    if let Err(back) = reactor::park(shared, conn, Wait::Read, deadline) {
        // Bytes (or shutdown) arrived meanwhile: serve it again.
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

/// Hands every connection this worker holds, besides the one being driven, to the
/// reactor (idle ones) or to other threads (ones with a request in progress), before the
/// worker waits for a peer to take bytes.
fn evacuate(local: &mut Local, ctx: &Arc<Ctx>, shared: &Arc<Shared>) {
    // Connections to serve again may hold requests already read: they go to threads too.
    let again = std::mem::take(&mut local.ready_later);
    let mut jobs = Vec::new();
    for token in 0..local.held.len() {
        let in_progress = match &local.held[token] {
            Some(held) => held.conn.verifying.is_some() || again.contains(&token),
            None => continue,
        };
        let Some(conn) = local.remove(token) else {
            continue;
        };
        if in_progress {
            jobs.push(conn);
        } else {
            let deadline = conn.session.poll_timeout();
            if let Err(back) = reactor::park(shared, conn, Wait::Read, deadline) {
                jobs.push(back);
            }
        }
    }
    crate::dispatch(shared, ctx, &mut jobs);
}

/// Drives the connection of `token` and acts on where it stopped.
fn settle(token: usize, until: Until, local: &mut Local, ctx: &Arc<Ctx>, shared: &Arc<Shared>) {
    // Out of its slot while driven (the slot stays reserved), so a write that must wait
    // can hand the worker's other connections away (see [`evacuate`]).
    let Some(mut entry) = local.held.get_mut(token).and_then(Option::take) else {
        return;
    };
    let mut buf = std::mem::take(&mut local.buf);
    let step = drive(&mut entry, token, until, &mut buf, local, ctx, shared);
    local.buf = buf;
    local.held[token] = Some(entry);
    match step {
        Ok(Step::Verify) => {}
        Ok(Step::Again) => local.ready_later.push(token),
        Ok(Step::Park) => {
            let Local { held, poller, .. } = local;
            let Some(Some(entry)) = held.get_mut(token) else {
                return;
            };
            entry.idle_since = Instant::now();
            if entry.registered {
                return;
            }
            match poller.register(entry.conn.stream.as_raw_fd(), token, shared) {
                Ok(()) => entry.registered = true,
                Err(error) => {
                    tracing::debug!(%error, "cannot hold a connection; parking it");
                    let mut ready = Vec::new();
                    park_held(local, token, &mut ready, shared);
                    local.ready_later.append(&mut ready);
                }
            }
        }
        Ok(Step::Close) => {
            if let Some(conn) = local.remove(token) {
                linger(conn, local, shared);
            }
        }
        Err(error) => {
            tracing::debug!(%error, "connection ended with an IO error");
            drop(local.remove(token));
        }
    }
}

/// A lingering close (see [`yuyo_core::http1::Linger`]): drain what the peer still sends,
/// so unread request bytes do not turn the close into a reset that destroys the response.
/// What has not arrived yet is drained by the reactor, so the worker does not wait for
/// the peer's FIN.
fn linger(mut conn: Box<Conn>, local: &mut Local, shared: &Shared) {
    // Without a lingering close, dropping the connection closes the socket.
    let Some(linger) = conn.session.linger() else {
        return;
    };
    let _ = conn.stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + linger.timeout;
    let mut left = linger.max_bytes;
    loop {
        match drain(&mut conn, &mut local.buf, left) {
            Some(still) => left = still,
            None => return,
        }
        match reactor::park(shared, conn, Wait::Drain { deadline, left }, Some(deadline)) {
            Ok(()) => return,
            Err(back) => conn = back,
        }
    }
}

/// Reads and discards until the socket has nothing more for now (`Some` of the bytes
/// still allowed) or the drain is over (`None`: EOF, an error, or `left` bytes read).
pub(crate) fn drain(conn: &mut Conn, scratch: &mut [u8], mut left: u64) -> Option<u64> {
    while left > 0 {
        match read(&mut conn.stream, scratch) {
            Ok(Some(0)) | Err(_) => return None,
            Ok(Some(n)) => left = left.saturating_sub(n as u64),
            Ok(None) => return Some(left),
        }
    }
    None
}

fn drive(
    entry: &mut Held,
    token: usize,
    until: Until,
    buf: &mut [u8],
    local: &mut Local,
    ctx: &Arc<Ctx>,
    shared: &Arc<Shared>,
) -> io::Result<Step> {
    let Conn {
        stream,
        session,
        closing,
        verifying,
        ..
    } = &mut *entry.conn;
    let mut io = Out {
        stream,
        token,
        registered: entry.registered,
        local,
        ctx,
        shared,
    };
    let rest = ctx.rest.as_ref();
    if let Some(ticket) = verifying.take()
        && let Err(error) = session.verified(now(), block_on(ticket))
    {
        tracing::error!(%error, "driver error; closing the connection");
        io.flush(session)?;
        return Ok(Step::Close);
    }
    loop {
        io.flush(session)?;
        if !*closing && shared.is_stopping() {
            session.close();
            *closing = true;
        }
        match session.poll(now()) {
            Action::Read => {
                // `poll` may have queued a response (e.g. a rejection) before asking to read.
                io.flush(session)?;
                match read(io.stream, buf)? {
                    Some(0) => session.receive_eof(),
                    Some(n) => session.receive(Instant::now(), &buf[..n]),
                    None => {
                        let now = Instant::now();
                        if session.poll_timeout().is_some_and(|at| at <= now) {
                            session.handle_timeout(now);
                        } else {
                            return Ok(Step::Park);
                        }
                    }
                }
            }
            Action::Verify(ticket) => {
                if until == Until::Verify {
                    *verifying = Some(ticket);
                    return Ok(Step::Verify);
                }
                if shared.handlers_block() {
                    // Other connections' finished requests may join this one's batch.
                    std::thread::yield_now();
                }
                if let Err(error) = session.verified(now(), block_on(ticket)) {
                    tracing::error!(%error, "driver error; closing the connection");
                    io.flush(session)?;
                    return Ok(Step::Close);
                }
            }
            Action::Handle(handler) => {
                let started = (!shared.handlers_block()).then(ThreadWaits::now);
                let mut handler = std::pin::pin!(handler.instrument(session.span().clone()));
                // Race the handler against the deferral deadline, when the core wants one
                // (see `yuyo_core::deferral`); the handler keeps running after it.
                let outcome = match session.defer_deadline() {
                    Some(at) => match run_until(handler.as_mut(), at) {
                        Some(outcome) => outcome,
                        None => {
                            match session.defer(now()) {
                                // The deferred answer goes out now; the handler goes on.
                                Ok(_) => io.flush(session)?,
                                Err(error) => tracing::debug!(%error, "handler not deferred"),
                            }
                            block_on(handler)
                        }
                    },
                    None => block_on(handler),
                };
                if let Some(started) = started
                    && let Some(took) = started.blocked_for()
                {
                    shared.note_blocking_handler(took);
                }
                if let Err(error) = session.complete(now(), outcome) {
                    tracing::error!(%error, "driver error; closing the connection");
                    io.flush(session)?;
                    return Ok(Step::Close);
                }
                // The HTTP answer (e.g. the 202 of a reply sent through the callback
                // endpoint) goes out before the REST requests start.
                let flushed = io.flush(session);
                while let Some(reply) = session.poll_rest_reply() {
                    let _span = session.span().clone().entered();
                    match rest {
                        Some((client, _)) => shared.spawn_rest_reply(client.clone(), reply),
                        None => tracing::error!("a reply went to REST without a REST client"),
                    }
                }
                flushed?;
                if until == Until::Park && io.local.held.iter().any(Option::is_some) {
                    // One request at a time while the thread holds others: a peer that
                    // pipelines many does not keep them waiting.
                    return Ok(Step::Again);
                }
            }
            Action::StreamFile(source) => stream_file(&mut io, session, &source)?,
            Action::RunAfter(work) => {
                io.flush(session)?;
                shared.spawn_after(work);
            }
            Action::Close => {
                io.flush(session)?;
                return Ok(Step::Close);
            }
        }
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
/// This is how a connection thread races a handler against its deferral deadline
/// without a timer thread: like `futures_lite::future::block_on`, it polls the future
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

/// Streams a reply file into the session, writing as it goes (memory stays bounded).
fn stream_file(io: &mut Out<'_>, session: &mut Session, source: &FileSource) -> io::Result<()> {
    let FileSource::Path { path, .. } = source else {
        tracing::error!(
            ?source,
            "the blocking adapter only streams files from paths"
        );
        session.abort_file();
        return Ok(());
    };
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(error) => {
            tracing::error!(%error, path = %path.display(), "cannot open a reply file");
            session.abort_file();
            return Ok(());
        }
    };
    loop {
        let mut chunk = BytesMut::zeroed(FILE_CHUNK);
        match file.read(&mut chunk) {
            Ok(0) => {
                if let Err(error) = session.finish_file() {
                    tracing::error!(%error, path = %path.display(), "reply file changed size");
                }
                return Ok(());
            }
            Ok(n) => {
                chunk.truncate(n);
                if let Err(error) = session.send_file_data(Bytes::from(chunk)) {
                    tracing::error!(%error, path = %path.display(), "reply file changed size");
                    return Ok(());
                }
                if let Err(error) = io.flush(session) {
                    session.abort_file();
                    return Err(error);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                tracing::error!(%error, path = %path.display(), "cannot read a reply file");
                session.abort_file();
                return Ok(());
            }
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
