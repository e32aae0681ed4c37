//! The connection cap, with slots that peers who make no progress cannot keep.
//!
//! Every served connection holds a [`Slot`]. A session publishes through it since when it
//! has been waiting on its peer (a head, a body, an idle keep-alive, a blocked write, a
//! lingering close), or that it is busy on the server's side (verifying, running a
//! handler): busy connections are never evicted. At the cap, [`Slots::admit`] takes the
//! slot of the connection that has waited longest on its peer and signals its
//! [`Eviction`]; the evicted session closes at once. A flood of silent or non-reading
//! sockets therefore cannot hold the cap against a fresh client.
//!
//! Thread-safe (the accept loop and connections may run on different threads); no clock
//! is read: times come from the sessions' inputs.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// The connection slots of one server; cheap to clone (one shared table).
#[derive(Clone, Default)]
pub struct Slots {
    table: Arc<Table>,
}

impl std::fmt::Debug for Slots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slots")
            .field("stats", &self.stats())
            .finish()
    }
}

#[derive(Default)]
struct Table {
    inner: Mutex<Inner>,
    evictions: AtomicU64,
    /// The accept loop waits in [`Vacancy`] (so state changes must wake it).
    acceptor_waiting: AtomicBool,
    acceptor: Mutex<Option<Waker>>,
    metrics: crate::metrics::SlotMetrics,
}

#[derive(Default)]
struct Inner {
    slots: Vec<Option<Arc<SlotState>>>,
    free: Vec<usize>,
    open: usize,
}

struct SlotState {
    index: usize,
    waiting: Mutex<Waiting>,
    evicted: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

/// What a connection is doing, as eviction at the cap sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// Busy on the server's side (verifying, running a handler): never evicted.
    Busy,
    /// Waiting, since then, for something its peer owes: a head, a body, reading an
    /// answer, the end of a lingering close. Evicted first, the oldest first.
    Stalled(Instant),
    /// An idle keep-alive connection, since then: evicted only when none is stalled (an
    /// honest client's next request may be about to arrive on it).
    Idle(Instant),
}

impl Waiting {
    /// The eviction order: stalled before idle, the oldest first; busy never.
    fn rank(self) -> Option<(u8, Instant)> {
        match self {
            Self::Busy => None,
            Self::Stalled(since) => Some((0, since)),
            Self::Idle(since) => Some((1, since)),
        }
    }
}

/// Counters of a server's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SlotStats {
    /// Connections open now.
    pub open: usize,
    /// Connections evicted at the cap so far.
    pub evictions: u64,
}

/// An admitted connection's slot and how many others were open then (for
/// [`ServeOptions::connection_config`](crate::service::ServeOptions::connection_config)).
#[derive(Debug)]
pub struct Admitted {
    /// The slot; give it to the connection's [`Session`](super::Session).
    pub slot: Slot,
    /// Connections open besides this one.
    pub others: usize,
}

/// Every slot is taken by a connection busy on the server's side: wait for
/// [`Slots::vacancy`], then try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Slots {
    /// An empty table.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Admits a connection if fewer than `max` are open; at the cap, evicts the one that
    /// has waited longest on its peer to make room. [`Full`] when none can be evicted.
    pub fn admit(&self, max: usize) -> Result<Admitted, Full> {
        let mut inner = lock(&self.table.inner);
        if inner.open >= max.max(1) {
            let victim = longest_waiting(&inner).ok_or(Full)?;
            inner.remove(&victim);
            victim.evicted.store(true, Ordering::SeqCst);
            self.table.evictions.fetch_add(1, Ordering::Relaxed);
            self.table.metrics.evictions.increment(1);
            self.table.metrics.open.decrement(1.0);
            if let Some(waker) = lock(&victim.waker).take() {
                waker.wake();
            }
            tracing::debug!("connection cap reached: evicted the connection waiting longest");
        }
        let others = inner.open;
        let index = inner.free.pop().unwrap_or(inner.slots.len());
        let state = Arc::new(SlotState {
            index,
            // Not evictable until its session first waits.
            waiting: Mutex::new(Waiting::Busy),
            evicted: AtomicBool::new(false),
            waker: Mutex::new(None),
        });
        if index == inner.slots.len() {
            inner.slots.push(Some(state.clone()));
        } else {
            inner.slots[index] = Some(state.clone());
        }
        inner.open += 1;
        self.table.metrics.open.increment(1.0);
        Ok(Admitted {
            slot: Slot {
                table: self.table.clone(),
                state,
            },
            others,
        })
    }

    /// Resolves once [`Slots::admit`] with `max` may succeed: a slot was freed, or a
    /// connection started waiting on its peer.
    pub fn vacancy(&self, max: usize) -> Vacancy {
        Vacancy {
            slots: self.clone(),
            max,
        }
    }

    /// Open connections and evictions so far.
    #[must_use]
    pub fn stats(&self) -> SlotStats {
        SlotStats {
            open: lock(&self.table.inner).open,
            evictions: self.table.evictions.load(Ordering::Relaxed),
        }
    }
}

fn wake_acceptor(table: &Table) {
    if table.acceptor_waiting.swap(false, Ordering::SeqCst)
        && let Some(waker) = lock(&table.acceptor).take()
    {
        waker.wake();
    }
}

impl Inner {
    fn remove(&mut self, state: &SlotState) {
        if let Some(entry) = self.slots.get_mut(state.index)
            && entry.take().is_some()
        {
            self.free.push(state.index);
            self.open -= 1;
        }
    }
}

fn longest_waiting(inner: &Inner) -> Option<Arc<SlotState>> {
    inner
        .slots
        .iter()
        .flatten()
        .filter_map(|state| lock(&state.waiting).rank().map(|rank| (rank, state)))
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, state)| state.clone())
}

/// The future of [`Slots::vacancy`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Vacancy {
    slots: Slots,
    max: usize,
}

impl Future for Vacancy {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let table = &self.slots.table;
        *lock(&table.acceptor) = Some(cx.waker().clone());
        table.acceptor_waiting.store(true, Ordering::SeqCst);
        let inner = lock(&table.inner);
        if inner.open < self.max.max(1) || longest_waiting(&inner).is_some() {
            table.acceptor_waiting.store(false, Ordering::SeqCst);
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// A connection's place in [`Slots`]; freed when dropped.
pub struct Slot {
    table: Arc<Table>,
    state: Arc<SlotState>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("evicted", &self.is_evicted())
            .finish_non_exhaustive()
    }
}

impl Slot {
    /// Publishes what the connection is doing (see [`Waiting`]). A
    /// [`Session`](super::Session) given the slot does this itself; a server whose
    /// connections another HTTP implementation runs (yuyo-tower under hyper) calls it.
    pub fn set_waiting(&self, waiting: Waiting) {
        *lock(&self.state.waiting) = waiting;
        if waiting != Waiting::Busy {
            wake_acceptor(&self.table);
        }
    }

    /// Whether a new connection took this slot.
    #[must_use]
    pub fn is_evicted(&self) -> bool {
        self.state.evicted.load(Ordering::SeqCst)
    }

    /// A future that resolves when this slot is evicted; the driver then passes
    /// [`Input::Evicted`](super::Input::Evicted) to the session.
    pub fn eviction(&self) -> Eviction {
        Eviction {
            state: self.state.clone(),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = lock(&self.table.inner);
        if !self.state.evicted.load(Ordering::SeqCst) {
            inner.remove(&self.state);
            self.table.metrics.open.decrement(1.0);
        }
        drop(inner);
        wake_acceptor(&self.table);
    }
}

/// Resolves when its connection's slot is evicted (see [`Slot::eviction`]). Never
/// resolves for a connection without a slot.
#[derive(Clone)]
#[must_use = "futures do nothing unless polled"]
pub struct Eviction {
    state: Arc<SlotState>,
}

impl std::fmt::Debug for Eviction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Eviction")
            .field("evicted", &self.state.evicted.load(Ordering::SeqCst))
            .finish()
    }
}

impl Future for Eviction {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.state.evicted.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        *lock(&self.state.waker) = Some(cx.waker().clone());
        if self.state.evicted.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn at_the_cap_the_longest_waiting_peer_is_evicted_and_busy_ones_never() {
        let slots = Slots::new();
        let start = Instant::now();
        let a = slots.admit(3).unwrap().slot;
        let b = slots.admit(3).unwrap().slot;
        let c = slots.admit(3).unwrap();
        assert_eq!(c.others, 2);
        let c = c.slot;
        // a busy (handler), b idle since +0 s, c stalled since +2 s.
        a.set_waiting(Waiting::Busy);
        b.set_waiting(Waiting::Idle(start));
        c.set_waiting(Waiting::Stalled(start + Duration::from_secs(2)));
        let d = slots.admit(3).unwrap().slot;
        // A stalled connection goes before an idle one, however long that one idled.
        assert!(c.is_evicted() && !a.is_evicted() && !b.is_evicted());
        assert_eq!(
            slots.stats(),
            SlotStats {
                open: 3,
                evictions: 1
            }
        );
        drop(c); // the evicted connection closing frees nothing twice
        assert_eq!(slots.stats().open, 3);
        b.set_waiting(Waiting::Busy);
        d.set_waiting(Waiting::Busy);
        assert_eq!(slots.admit(3).err(), Some(Full));
        drop(a);
        assert!(slots.admit(3).is_ok());
    }

    #[test]
    fn eviction_and_vacancy_wake_their_waiters() {
        use std::sync::atomic::AtomicUsize;
        struct Count(AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let slots = Slots::new();
        let a = slots.admit(1).unwrap().slot;
        let mut vacancy = slots.vacancy(1);
        assert!(Pin::new(&mut vacancy).poll(&mut cx).is_pending());
        let mut eviction = a.eviction();
        assert!(Pin::new(&mut eviction).poll(&mut cx).is_pending());
        a.set_waiting(Waiting::Stalled(Instant::now()));
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "the acceptor is woken");
        assert!(Pin::new(&mut vacancy).poll(&mut cx).is_ready());
        let _b = slots.admit(1).unwrap();
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            2,
            "the evicted one is woken"
        );
        assert!(Pin::new(&mut eviction).poll(&mut cx).is_ready());
    }
}
