//! The reactor: one `mio::Poll` on the thread in [`crate::Server::serve`] holding the
//! listener, a waker and the parked connections, and the registry it shares with the
//! workers.
//!
//! Every connection owns a slot in the [`Registry`] from accept until it is closed, and
//! is registered here (edge-triggered, for reading) only while parked or draining: a
//! connection a worker serves or holds costs the reactor no wake-up per request. A slot
//! is in one of three states:
//! - `Owned`: a worker is serving (or holding) the connection. A `ready` flag, checked
//!   under the registry lock when the worker parks the connection, catches a readable
//!   event collected for it before it was taken out.
//! - `Parked`: idle or waiting for more request bytes; the registry holds the connection
//!   (session, socket, task guard), so an idle connection costs memory, not a thread. It
//!   is registered after the read that found nothing, so bytes that came in between are
//!   reported at once; an event or its deadline hands it back to a worker, unregistered.
//! - `Draining`: a lingering close; the reactor itself reads and discards what the peer
//!   still sends, so no worker waits for the peer's FIN.
//!
//! Deadlines of parked and draining slots are kept in an ordered set (exact, removed when
//! the slot is taken out), and the reactor sleeps until the earliest. A worker parking a
//! connection wakes the reactor only when the new deadline is earlier than the reactor's
//! planned wake-up, so keep-alive traffic costs no extra syscall.
//!
//! Lock discipline: a [`Conn`] is never dropped while the registry lock is held, because
//! dropping it frees its slot, which takes the lock.

use std::collections::BTreeSet;
use std::io;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};

use crate::connection::{self, Conn};
use crate::{Ctx, Shared, TaskGuard, lock};

const LISTENER: Token = Token(0);
const WAKE: Token = Token(1);
/// Connection tokens start after the listener's and the waker's.
const FIRST_CONN: usize = 2;
/// How long queued jobs may wait with no thread taking any before a thread is added.
const STALL: Duration = Duration::from_millis(10);
/// How soon accepting is retried after the process ran out of file descriptors (or
/// memory), in case no connection ends to wake the reactor.
const EXHAUSTED_RETRY: Duration = Duration::from_millis(100);
/// Bytes read at once while draining a lingering close.
const DRAIN_CHUNK: usize = 16 * 1024;

/// A connection's slot; see the [module docs](self).
enum Slot {
    Owned {
        ready: bool,
    },
    Parked {
        conn: Box<Conn>,
        deadline: Option<Instant>,
    },
    Draining {
        conn: Box<Conn>,
        deadline: Instant,
        left: u64,
    },
}

/// Why a worker hands a connection to the reactor.
pub(crate) enum Wait {
    /// For more bytes (or the connection's deadline).
    Read,
    /// For the end of a lingering close: EOF, `deadline` or `left` more bytes.
    Drain { deadline: Instant, left: u64 },
}

/// The connections' slots and deadlines, shared by the reactor and the workers.
#[derive(Default)]
pub(crate) struct Registry {
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    deadlines: BTreeSet<(Instant, usize)>,
    /// When the reactor will wake up on its own (`None`: only for an event).
    wake_at: Option<Instant>,
    /// The reactor stopped (the grace period is over): nothing is parked any more.
    closed: bool,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("slots", &(self.slots.len() - self.free.len()))
            .field("deadlines", &self.deadlines.len())
            .field("closed", &self.closed)
            .finish()
    }
}

impl Registry {
    fn insert(&mut self) -> usize {
        let slot = Some(Slot::Owned { ready: false });
        if let Some(key) = self.free.pop() {
            self.slots[key] = slot;
            key
        } else {
            self.slots.push(slot);
            self.slots.len() - 1
        }
    }

    /// Frees the slot of a connection out of the registry (being dropped).
    pub(crate) fn release(&mut self, key: usize) {
        if let Some(entry @ Some(Slot::Owned { .. })) = self.slots.get_mut(key) {
            *entry = None;
            self.free.push(key);
        }
    }

    /// Takes a parked or draining connection out, leaving its slot `Owned`.
    fn take(&mut self, key: usize) -> Option<(Box<Conn>, Option<u64>, Option<Instant>)> {
        let entry = self.slots.get_mut(key)?;
        if matches!(entry, None | Some(Slot::Owned { .. })) {
            return None;
        }
        let (conn, left, deadline) = match entry.replace(Slot::Owned { ready: false }) {
            Some(Slot::Parked { conn, deadline }) => (conn, None, deadline),
            Some(Slot::Draining {
                conn,
                deadline,
                left,
            }) => (conn, Some(left), Some(deadline)),
            _ => return None,
        };
        if let Some(deadline) = deadline {
            self.deadlines.remove(&(deadline, key));
        }
        Some((conn, left, deadline))
    }

    fn put(&mut self, conn: Box<Conn>, wait: Wait, deadline: Option<Instant>) {
        let key = conn.key();
        if let Some(deadline) = deadline {
            self.deadlines.insert((deadline, key));
        }
        self.slots[key] = Some(match wait {
            Wait::Read => Slot::Parked { conn, deadline },
            Wait::Drain { deadline, left } => Slot::Draining {
                conn,
                deadline,
                left,
            },
        });
    }
}

/// Hands `conn` to the reactor, which gives it back to a worker on a readable edge or at
/// `deadline`. `Err` gives it back at once: a readable edge arrived since the worker's
/// last read (read again), or shutdown started and the connection does not know yet.
pub(crate) fn park(
    shared: &Shared,
    conn: Box<Conn>,
    wait: Wait,
    deadline: Option<Instant>,
) -> Result<(), Box<Conn>> {
    let mut registry = lock(&shared.registry);
    if registry.closed {
        drop(registry);
        drop(conn);
        return Ok(());
    }
    let key = conn.key();
    match registry.slots.get_mut(key) {
        Some(Some(Slot::Owned { ready })) => {
            if *ready {
                *ready = false;
                return Err(conn);
            }
        }
        // Cannot happen: a connection being served owns its slot. Closing it is safer
        // than serving a connection the reactor no longer knows.
        _ => {
            drop(registry);
            tracing::error!(key, "a served connection lost its slot; closing it");
            drop(conn);
            return Ok(());
        }
    }
    // The reactor takes every parked connection out once when shutdown starts; one
    // parked after that must already be closing, or it would wait for its deadline.
    if matches!(wait, Wait::Read) && !conn.closing() && shared.is_stopping() {
        return Err(conn);
    }
    // Registered with the reactor only while parked: a connection a worker serves or
    // holds costs the reactor no wake-up per request. Edge-triggered, registered after the
    // read that would block: bytes that came in between are reported at once.
    let mut conn = conn;
    let Some(reactor) = lock(&shared.reactor_registry).clone() else {
        drop(registry);
        drop(conn);
        return Ok(());
    };
    let token = Token(key + FIRST_CONN);
    if let Err(error) = reactor.register(conn.stream_mut(), token, Interest::READABLE) {
        drop(registry);
        tracing::error!(%error, "cannot register a connection; closing it");
        drop(conn);
        return Ok(());
    }
    let wake = deadline.is_some_and(|at| registry.wake_at.is_none_or(|planned| at < planned));
    if wake {
        registry.wake_at = deadline;
    }
    registry.put(conn, wait, deadline);
    drop(registry);
    if wake {
        shared.wake_reactor();
    }
    Ok(())
}

/// Serves `listener` until shutdown, then until every connection closed or the grace
/// period is over; returns the listener's error, if it failed.
pub(crate) fn run(
    listener: TcpListener,
    shared: &Arc<Shared>,
    ctx: &Arc<Ctx>,
) -> (io::Result<()>, Option<Instant>) {
    let mut reactor = match Reactor::new(listener, shared, ctx) {
        Ok(reactor) => reactor,
        Err(error) => {
            shared.shutdown();
            return (Err(error), None);
        }
    };
    let result = reactor.run();
    reactor.close();
    (result, reactor.grace_deadline)
}

struct Reactor<'a> {
    shared: &'a Arc<Shared>,
    ctx: &'a Arc<Ctx>,
    poll: Poll,
    listener: Option<mio::net::TcpListener>,
    /// The listener may have connections waiting (edge-triggered: accept until
    /// `WouldBlock`, unless the cap stops it first).
    backlog: bool,
    /// When accepting is retried after resource exhaustion.
    retry_accept: Option<Instant>,
    grace_deadline: Option<Instant>,
    error: Option<io::Error>,
    // Boxed: a connection moves between the registry, this list and the workers' queue.
    #[allow(clippy::vec_box)]
    jobs: Vec<Box<Conn>>,
    /// While jobs are queued: when to check the threads took some, and how many had
    /// been taken (see [`crate::unstick`]).
    stall_check: Option<(Instant, u64)>,
    scratch: Vec<u8>,
}

impl<'a> Reactor<'a> {
    fn new(listener: TcpListener, shared: &'a Arc<Shared>, ctx: &'a Arc<Ctx>) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        *lock(&shared.reactor_waker) = Some(waker);
        *lock(&shared.reactor_registry) = Some(Arc::new(poll.registry().try_clone()?));
        listener.set_nonblocking(true)?;
        let mut listener = mio::net::TcpListener::from_std(listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Self {
            shared,
            ctx,
            poll,
            listener: Some(listener),
            backlog: true,
            retry_accept: None,
            grace_deadline: None,
            error: None,
            jobs: Vec::new(),
            stall_check: None,
            scratch: vec![0; DRAIN_CHUNK],
        })
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        loop {
            if self.shared.is_stopping() && self.listener.is_some() {
                self.begin_shutdown();
            }
            if self.listener.is_some() && self.backlog {
                self.accept();
                self.dispatch();
            }
            let now = Instant::now();
            // At the grace deadline `Server::drain` (same deadline) reports what is left.
            if let Some(grace) = self.grace_deadline
                && (self.shared.connections() == 0 || now >= grace)
            {
                break;
            }
            self.watch_queue(now);
            let timeout = self.plan_wake_up(now);
            match self.poll.poll(
                &mut events,
                timeout.map(|at| at.saturating_duration_since(now)),
            ) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Without its poller the reactor cannot serve anything more.
                    self.shared.shutdown();
                    return Err(e);
                }
            }
            for event in &events {
                match event.token() {
                    LISTENER => self.backlog = true,
                    WAKE => {}
                    Token(token) => self.readable(token - FIRST_CONN),
                }
            }
            self.expire(Instant::now());
            self.dispatch();
        }
        self.error.take().map_or(Ok(()), Err)
    }

    /// Stops accepting and hands every parked connection to a worker, which closes it.
    fn begin_shutdown(&mut self) {
        self.listener = None;
        self.grace_deadline = Some(Instant::now() + self.ctx.options.grace_period);
        let mut registry = lock(&self.shared.registry);
        let mut unparked = Vec::new();
        for key in 0..registry.slots.len() {
            if matches!(registry.slots[key], Some(Slot::Parked { .. }))
                && let Some((conn, _, _)) = registry.take(key)
            {
                unparked.push(conn);
            }
        }
        drop(registry);
        for conn in unparked {
            self.unpark(conn);
        }
        self.dispatch();
    }

    /// When the reactor must wake up on its own, recorded for the workers.
    fn plan_wake_up(&mut self, now: Instant) -> Option<Instant> {
        if self.retry_accept.is_some_and(|at| at <= now) {
            self.retry_accept = None;
            self.backlog = true;
        }
        let own = [
            self.grace_deadline,
            self.retry_accept,
            self.stall_check.map(|(at, _)| at),
        ];
        let mut registry = lock(&self.shared.registry);
        let earliest = own
            .into_iter()
            .chain([registry.deadlines.first().map(|&(at, _)| at)])
            .flatten()
            .min();
        registry.wake_at = earliest;
        earliest
    }

    fn accept(&mut self) {
        // Out of `self` while accepting, for `admit`.
        let Some(listener) = self.listener.take() else {
            return;
        };
        self.accept_from(&listener);
        self.listener = Some(listener);
    }

    fn accept_from(&mut self, listener: &mio::net::TcpListener) {
        let max = self.ctx.options.max_connections.max(1);
        loop {
            let open = self.shared.connections();
            if open >= max {
                return; // a closing connection wakes the reactor (see `TaskGuard`)
            }
            match listener.accept() {
                Ok((stream, _peer)) => self.admit(stream, open),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.backlog = false;
                    return;
                }
                Err(e) if crate::is_transient(&e) => {}
                Err(e) if crate::is_resource_exhaustion(&e) => {
                    tracing::warn!(error = %e, "cannot accept a connection");
                    self.retry_accept = Some(Instant::now() + EXHAUSTED_RETRY);
                    self.backlog = false;
                    return;
                }
                Err(e) => {
                    self.error = Some(e);
                    self.shared.shutdown();
                    return;
                }
            }
        }
    }

    /// Gives a new connection a slot and queues it for a worker: it has usually sent its
    /// request already (if not, the worker parks it, which registers it here).
    fn admit(&mut self, stream: mio::net::TcpStream, open: usize) {
        let _ = stream.set_nodelay(true);
        let key = lock(&self.shared.registry).insert();
        let guard = TaskGuard::connection(self.shared);
        let http = self.ctx.options.connection_config(open);
        self.jobs
            .push(Conn::new(stream, key, self.ctx, http, guard));
    }

    fn readable(&mut self, key: usize) {
        let mut registry = lock(&self.shared.registry);
        let taken = match registry.slots.get_mut(key) {
            Some(Some(Slot::Owned { ready })) => {
                *ready = true;
                return;
            }
            Some(Some(_)) => registry.take(key),
            // A slot freed after this event was collected.
            _ => return,
        };
        drop(registry);
        match taken {
            Some((conn, None, _)) => self.unpark(conn),
            Some((mut conn, Some(left), Some(deadline))) => {
                if let Some(left) = connection::drain(&mut conn, &mut self.scratch, left) {
                    let wait = Wait::Drain { deadline, left };
                    lock(&self.shared.registry).put(conn, wait, Some(deadline));
                }
            }
            _ => {}
        }
    }

    /// Hands parked connections whose deadline passed to workers (which fire it) and
    /// closes draining ones.
    fn expire(&mut self, now: Instant) {
        let mut closed = Vec::new();
        let mut unparked = Vec::new();
        let mut registry = lock(&self.shared.registry);
        while registry.deadlines.first().is_some_and(|&(at, _)| at <= now) {
            let Some((_, key)) = registry.deadlines.pop_first() else {
                break;
            };
            match registry.take(key) {
                Some((conn, None, _)) => unparked.push(conn),
                Some((conn, Some(_), _)) => closed.push(conn),
                None => {}
            }
        }
        drop(registry);
        drop(closed);
        for conn in unparked {
            self.unpark(conn);
        }
    }

    /// Hands a parked connection to a worker, unregistered: the worker waits on it with
    /// its own poller.
    fn unpark(&mut self, mut conn: Box<Conn>) {
        let _ = self.poll.registry().deregister(conn.stream_mut());
        self.jobs.push(conn);
    }

    fn dispatch(&mut self) {
        if !self.jobs.is_empty() {
            crate::dispatch(self.shared, self.ctx, &mut self.jobs);
        }
    }

    /// Watches the queue: jobs waiting while no thread takes any get a new thread.
    fn watch_queue(&mut self, now: Instant) {
        self.stall_check = match self.stall_check {
            Some((at, _)) if now < at => self.stall_check,
            Some((_, taken)) => {
                crate::unstick(self.shared, self.ctx, Some(taken)).map(|taken| (now + STALL, taken))
            }
            None => crate::unstick(self.shared, self.ctx, None).map(|taken| (now + STALL, taken)),
        };
    }

    /// Closes what is still parked or draining, so nothing waits for a reactor that is
    /// gone; connections still served close when their worker finishes with them.
    fn close(&mut self) {
        *lock(&self.shared.reactor_waker) = None;
        *lock(&self.shared.reactor_registry) = None;
        let mut registry = lock(&self.shared.registry);
        registry.closed = true;
        let keys: Vec<usize> = (0..registry.slots.len()).collect();
        let left: Vec<_> = keys
            .into_iter()
            .filter_map(|key| registry.take(key))
            .collect();
        drop(registry);
        drop(left);
    }
}
