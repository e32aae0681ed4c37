//! The reactor: one `mio::Poll` on the thread in [`crate::Server::serve`] holding the
//! listener, a waker and the parked connections, and the registry it shares with the
//! workers.
//!
//! It admits accepted connections into the service's
//! [`Slots`](yuyo_core::server::Slots) (the connection cap): at the cap a new connection
//! takes the slot of the one that has waited longest on its peer, whose worker (or this
//! reactor, if it is parked) then passes the eviction to its session; when every
//! connection is busy on the server's side, the accepted socket waits for a vacancy and
//! further ones wait in the listen backlog.
//!
//! Every connection owns an entry in the [`Registry`] from accept until it is closed, and
//! is registered here (edge-triggered, for what its session waits for: reading, writing)
//! only while parked: a connection a worker serves or holds costs the reactor no wake-up
//! per request. An entry is in one of two states:
//! - `Owned`: a worker is serving (or holding) the connection. A `ready` flag, checked
//!   under the registry lock when the worker parks the connection, catches an event
//!   collected for it (or its eviction) before it was taken out.
//! - `Parked`: its session waits on the peer (an idle keep-alive connection, a request
//!   still arriving, a peer that does not read, a lingering close); the registry holds
//!   the connection (session, socket, task guard), so it costs memory, not a thread. It
//!   is registered after the read or write that would block, so readiness that came in
//!   between is reported at once; an event, its deadline or its eviction hands it back
//!   to a worker, unregistered.
//!
//! Deadlines of parked entries are kept in an ordered set (exact, removed when the entry
//! is taken out), and the reactor sleeps until the earliest. A worker parking a
//! connection wakes the reactor only when the new deadline is earlier than the reactor's
//! planned wake-up, so keep-alive traffic costs no extra syscall.
//!
//! Lock discipline: a [`Conn`] is never dropped while the registry lock is held, because
//! dropping it frees its entry, which takes the lock; nor under the slots' lock (an
//! eviction wakes the evicted connection under it), because dropping it frees its slot.

use std::collections::BTreeSet;
use std::io;
use std::net::TcpListener;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Wake, Waker as TaskWaker};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};
use yuyo_core::server::Admitted;

use crate::connection::Conn;
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

/// A connection's entry; see the [module docs](self).
enum Entry {
    Owned {
        ready: bool,
    },
    Parked {
        conn: Box<Conn>,
        deadline: Option<Instant>,
    },
}

/// The connections' entries and deadlines, shared by the reactor and the workers.
#[derive(Default)]
pub(crate) struct Registry {
    slots: Vec<Option<Entry>>,
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
        let slot = Some(Entry::Owned { ready: false });
        if let Some(key) = self.free.pop() {
            self.slots[key] = slot;
            key
        } else {
            self.slots.push(slot);
            self.slots.len() - 1
        }
    }

    /// Frees the entry of a connection out of the registry (being dropped).
    pub(crate) fn release(&mut self, key: usize) {
        if let Some(entry @ Some(Entry::Owned { .. })) = self.slots.get_mut(key) {
            *entry = None;
            self.free.push(key);
        }
    }

    /// Takes a parked connection out, leaving its entry `Owned`.
    fn take(&mut self, key: usize) -> Option<Box<Conn>> {
        let entry = self.slots.get_mut(key)?;
        if !matches!(entry, Some(Entry::Parked { .. })) {
            return None;
        }
        let Some(Entry::Parked { conn, deadline }) = entry.replace(Entry::Owned { ready: false })
        else {
            return None;
        };
        if let Some(deadline) = deadline {
            self.deadlines.remove(&(deadline, key));
        }
        Some(conn)
    }

    fn put(&mut self, conn: Box<Conn>, deadline: Option<Instant>) {
        let key = conn.key();
        if let Some(deadline) = deadline {
            self.deadlines.insert((deadline, key));
        }
        self.slots[key] = Some(Entry::Parked { conn, deadline });
    }
}

/// Hands `conn` to the reactor, which gives it back to a worker on an edge of what its
/// session waits for, at its deadline or when it is evicted. `Err` gives it back at once:
/// an edge arrived since the worker's last read or write (try again), or shutdown
/// started or the connection was evicted and its session does not know yet.
pub(crate) fn park(shared: &Shared, conn: Box<Conn>) -> Result<(), Box<Conn>> {
    let mut registry = lock(&shared.registry);
    if registry.closed {
        drop(registry);
        drop(conn);
        return Ok(());
    }
    let key = conn.key();
    match registry.slots.get_mut(key) {
        Some(Some(Entry::Owned { ready })) => {
            if *ready {
                *ready = false;
                return Err(conn);
            }
        }
        // Cannot happen: a connection being served owns its entry. Closing it is safer
        // than serving a connection the reactor no longer knows.
        _ => {
            drop(registry);
            tracing::error!(key, "a served connection lost its entry; closing it");
            drop(conn);
            return Ok(());
        }
    }
    // The reactor takes every parked connection out once when shutdown starts; one
    // parked after that must already be closing, or it would wait for its deadline.
    if (!conn.closing() && shared.is_stopping()) || conn.evicted() {
        return Err(conn);
    }
    // Registered with the reactor only while parked: a connection a worker serves or
    // holds costs the reactor no wake-up per request. Edge-triggered, registered after the
    // read or write that would block: readiness that came in between is reported at once.
    let mut conn = conn;
    let Some(reactor) = lock(&shared.reactor_registry).clone() else {
        drop(registry);
        drop(conn);
        return Ok(());
    };
    let token = Token(key + FIRST_CONN);
    if let Some(interest) = conn.interest()
        && let Err(error) = reactor.register(conn.stream_mut(), token, interest)
    {
        drop(registry);
        tracing::error!(%error, "cannot register a connection; closing it");
        drop(conn);
        return Ok(());
    }
    let deadline = conn.deadline();
    let wake = deadline.is_some_and(|at| registry.wake_at.is_none_or(|planned| at < planned));
    if wake {
        registry.wake_at = deadline;
    }
    registry.put(conn, deadline);
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
    /// An accepted connection for which every slot is taken by a busy connection: it is
    /// admitted at the next vacancy (which wakes the reactor through `waker`).
    waiting: Option<mio::net::TcpStream>,
    /// Wakes the reactor (for a vacancy in the slots).
    waker: TaskWaker,
    /// When accepting is retried after resource exhaustion.
    retry_accept: Option<Instant>,
    /// After a shutdown request: when the drain period ends and accepting stops.
    drain_deadline: Option<Instant>,
    grace_deadline: Option<Instant>,
    error: Option<io::Error>,
    // Boxed: a connection moves between the registry, this list and the workers' queue.
    #[allow(clippy::vec_box)]
    jobs: Vec<Box<Conn>>,
    /// While jobs are queued: when to check the threads took some, and how many had
    /// been taken (see [`crate::unstick`]).
    stall_check: Option<(Instant, u64)>,
}

impl<'a> Reactor<'a> {
    fn new(listener: TcpListener, shared: &'a Arc<Shared>, ctx: &'a Arc<Ctx>) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        *lock(&shared.reactor_waker) = Some(Arc::clone(&waker));
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
            waiting: None,
            waker: TaskWaker::from(Arc::new(WakeReactor(waker))),
            retry_accept: None,
            drain_deadline: None,
            grace_deadline: None,
            error: None,
            jobs: Vec::new(),
            stall_check: None,
        })
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        loop {
            if self.listener.is_some() {
                self.drain(Instant::now());
            }
            if self.shared.is_stopping() && self.listener.is_some() {
                self.begin_shutdown();
            }
            if self.listener.is_some() && (self.backlog || self.waiting.is_some()) {
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
                    Token(token) => self.ready(token - FIRST_CONN),
                }
            }
            self.expire(Instant::now());
            self.dispatch();
        }
        self.error.take().map_or(Ok(()), Err)
    }

    /// Starts the drain period at a shutdown request (the health check answers 503 from
    /// then on) and, once it is over, takes every connection still queued in the backlog
    /// before accepting stops: Linux resets the ones left on a closed listener. While
    /// every slot is busy, stopping waits for a vacancy, for a grace period at most.
    fn drain(&mut self, now: Instant) {
        if !self.shared.is_shutdown_requested() || self.shared.is_stopping() {
            return;
        }
        let Some(deadline) = self.drain_deadline else {
            self.ctx.endpoint.health().begin_draining();
            let period = self.ctx.options.drain_period;
            if !period.is_zero() {
                tracing::info!(drain_period = ?period, "draining: the health check answers 503");
            }
            self.drain_deadline = Some(now + period);
            return self.drain(now);
        };
        if now < deadline {
            return;
        }
        self.backlog = true;
        self.accept();
        self.dispatch();
        let given_up = now >= deadline + self.ctx.options.grace_period;
        if self.waiting.is_none() || given_up {
            self.shared.shutdown();
        }
    }

    /// Stops accepting and hands every parked connection whose session has not heard of
    /// shutdown to a worker, which tells it.
    fn begin_shutdown(&mut self) {
        self.listener = None;
        self.waiting = None;
        self.grace_deadline = Some(Instant::now() + self.ctx.options.grace_period);
        let mut registry = lock(&self.shared.registry);
        let mut unparked = Vec::new();
        for key in 0..registry.slots.len() {
            let told = match &registry.slots[key] {
                Some(Entry::Parked { conn, .. }) => conn.closing(),
                _ => true,
            };
            if !told && let Some(conn) = registry.take(key) {
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
            self.drain_deadline.filter(|_| self.listener.is_some()),
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
        // Connections evicted meanwhile that are parked go to workers, which close them.
        let evicted = std::mem::take(&mut *lock(&self.shared.evicted));
        for key in evicted {
            self.ready(key);
        }
    }

    fn accept_from(&mut self, listener: &mio::net::TcpListener) {
        loop {
            let accepted = match self.waiting.take() {
                Some(stream) => Ok(stream),
                None if !self.backlog => return,
                None => listener.accept().map(|(stream, _peer)| stream),
            };
            match accepted {
                Ok(stream) => {
                    if let Err(stream) = self.admit(stream) {
                        self.waiting = Some(stream);
                        return;
                    }
                }
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

    /// Gives a new connection a slot in the connection cap and an entry here, and queues
    /// it for a worker: it has usually sent its request already (if not, the worker holds
    /// it, then parks it here). `Err` gives it back when every slot is busy; the next
    /// vacancy wakes the reactor.
    fn admit(&mut self, stream: mio::net::TcpStream) -> Result<(), mio::net::TcpStream> {
        let Some(admitted) = self.slot() else {
            return Err(stream);
        };
        let _ = stream.set_nodelay(true);
        if let Some(size) = self.ctx.options.send_buffer
            && let Err(error) = socket2::SockRef::from(&stream).set_send_buffer_size(size)
        {
            tracing::debug!(%error, "cannot set a connection's send buffer");
        }
        let key = lock(&self.shared.registry).insert();
        let guard = TaskGuard::connection(self.shared);
        self.jobs
            .push(Conn::new(stream, key, self.ctx, admitted, guard));
        Ok(())
    }

    /// A slot for a new connection, evicting the one that has waited longest on its peer
    /// at the cap; `None` (and the reactor's waker registered for a vacancy) when every
    /// connection is busy on the server's side.
    fn slot(&mut self) -> Option<Admitted> {
        let slots = &self.ctx.slots;
        let max = self.ctx.options.max_connections;
        loop {
            if let Ok(admitted) = slots.admit(max) {
                return Some(admitted);
            }
            let mut vacancy = slots.vacancy(max);
            let mut cx = Context::from_waker(&self.waker);
            if Pin::new(&mut vacancy).poll(&mut cx).is_pending() {
                return None;
            }
        }
    }

    /// A parked connection became ready (or was evicted): a worker serves it. One a
    /// worker owns is flagged, so it is not parked before it was served again.
    fn ready(&mut self, key: usize) {
        let mut registry = lock(&self.shared.registry);
        let taken = match registry.slots.get_mut(key) {
            Some(Some(Entry::Owned { ready })) => {
                *ready = true;
                return;
            }
            Some(Some(_)) => registry.take(key),
            // An entry freed after this event was collected.
            _ => return,
        };
        drop(registry);
        if let Some(conn) = taken {
            self.unpark(conn);
        }
    }

    /// Hands parked connections whose deadline passed to workers (which pass it on).
    fn expire(&mut self, now: Instant) {
        let mut unparked = Vec::new();
        let mut registry = lock(&self.shared.registry);
        while registry.deadlines.first().is_some_and(|&(at, _)| at <= now) {
            let Some((_, key)) = registry.deadlines.pop_first() else {
                break;
            };
            unparked.extend(registry.take(key));
        }
        drop(registry);
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

    /// Closes what is still parked, so nothing waits for a reactor that is gone;
    /// connections still served close when their worker finishes with them.
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

/// Wakes the reactor's poller from a [`std::task::Waker`] (a vacancy in the slots).
struct WakeReactor(Arc<Waker>);

impl Wake for WakeReactor {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        crate::wake(&self.0);
    }
}
