//! The server's lifespan: startup and shutdown callbacks as a sans-IO state machine.
//!
//! This is the Rust successor of `yuyo.asgi`'s startup/shutdown callbacks (ASGI's
//! `lifespan` protocol). [`Lifespan`] only *decides*: it owns the registered callbacks and
//! the state, and tells the adapter which callbacks to run and what the outcome was. The
//! adapter (smol, tokio, blocking threads, tower, …) *runs* the callbacks and reports their
//! results. There is no runtime, thread or clock in here.
//!
//! # States
//!
//! | from           | transition                  | to                                  |
//! |----------------|-----------------------------|-------------------------------------|
//! | `Idle`         | [`Lifespan::begin_startup`]   | `StartingUp`                        |
//! | `StartingUp`   | [`Lifespan::finish_startup`]  | `Running` or `StartupFailed(msg)`   |
//! | `Running`      | [`Lifespan::begin_shutdown`]  | `ShuttingDown`                      |
//! | `ShuttingDown` | [`Lifespan::finish_shutdown`] | `Stopped` or `ShutdownFailed(msg)`  |
//!
//! Every other (state, transition) pair is rejected with a [`TransitionError`] and leaves
//! the state unchanged; nothing here panics. `Stopped`, `StartupFailed` and
//! `ShutdownFailed` are terminal. [`State::allows`] and [`Transition::ALL`] expose this
//! table so that tests can enumerate it.
//!
//! Decisions:
//!
//! - **No shutdown after a failed startup.** ASGI servers do not send `lifespan.shutdown`
//!   once startup failed, so `StartupFailed → ShuttingDown` is illegal: only
//!   `Running → ShuttingDown` is. An adapter that wants to release what a half-successful
//!   startup acquired must do so itself.
//! - **Callbacks may be added and removed in any state**, including while a phase runs.
//!   A phase runs the snapshot of callbacks it began with; changes take effect for the next
//!   phase (so a shutdown callback added during startup does run at shutdown).
//! - **Callback ids are unique across both phases**: removing a shutdown callback's id with
//!   [`Lifespan::remove_startup_callback`] is an [`UnknownCallback`] error.
//! - **Any failure fails the phase.** The [`PhaseFailed`] error and the
//!   `StartupFailed`/`ShutdownFailed` state carry every failed callback's message, in
//!   registration order.
//! - **The reported results must match the phase exactly** (each callback of the snapshot
//!   once, in any order); otherwise [`FinishError::Mismatch`] is returned and the phase stays
//!   in progress so that the adapter may report again.
//!
//! # Driving loop
//!
//! Every adapter's loop is the same few lines. [`Phase::run`] (or [`run_phase`]) runs a
//! phase's callbacks concurrently on whatever executor polls it and catches their panics;
//! an adapter may instead spawn each callback as a task and collect the results itself.
//!
//! ```
//! use yuyo_core::lifespan::Lifespan;
//!
//! async fn serve(mut lifespan: Lifespan) -> Result<(), Box<dyn std::error::Error>> {
//!     let phase = lifespan.begin_startup()?; // Idle -> StartingUp
//!     let results = phase.run().await; // concurrently, on any executor
//!     lifespan.finish_startup(results)?; // -> Running, or StartupFailed(message)
//!
//!     // ... serve requests until asked to stop ...
//!
//!     let phase = lifespan.begin_shutdown()?; // Running -> ShuttingDown
//!     lifespan.finish_shutdown(phase.run().await)?; // -> Stopped, or ShutdownFailed(message)
//!     Ok(())
//! }
//!
//! let lifespan = Lifespan::new()
//!     .with_startup_callback(|| async { Ok(()) })
//!     .with_shutdown_callback(|| async {
//!         std::fs::metadata(".")?; // `?` converts any std error into a CallbackError
//!         Ok(())
//!     });
//! # let _ = serve(lifespan); // an executor of the adapter's choice would drive this
//! ```

use std::any::Any;
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// A boxed, thread-safe error: what [`CallbackError`] wraps.
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// The future a [`Callback`] returns: boxed so that callbacks of any type can be stored
/// together, and `Send` so that any runtime (including multi-threaded ones) may run it.
pub type CallbackFuture = Pin<Box<dyn Future<Output = Result<(), CallbackError>> + Send + 'static>>;

/// The results of one phase's callbacks, as [`Lifespan::finish_startup`] and
/// [`Lifespan::finish_shutdown`] take them and [`run_phase`] produces them.
pub type PhaseResults = Vec<(CallbackId, Result<(), CallbackError>)>;

/// Identifies a registered callback, to remove it or to report its result.
///
/// Ids are handed out by one [`Lifespan`], unique across its startup and shutdown
/// callbacks, and never reused by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallbackId(u64);

impl CallbackId {
    /// The id numbered `raw` (for registries outside a [`Lifespan`], such as a bot's).
    pub(crate) const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    /// The id as a number, e.g. for logging.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for CallbackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Why a callback failed: the error it returned, or its panic.
///
/// Like `anyhow::Error`, this type deliberately does **not** implement
/// [`std::error::Error`], so that `?` converts any `std` error into it inside a callback
/// (`From<E: Error + Send + Sync + 'static>`) and `|| async { Ok(()) }` needs no type
/// annotation. Messages and other boxed errors go through [`CallbackError::new`]; the
/// wrapped error is reachable through [`CallbackError::as_error`] and
/// `Box<dyn Error + Send + Sync>::from`.
///
/// `Display` shows the error; the alternate form (`{:#}`) appends its `source()` chain,
/// joined with `": "`.
pub struct CallbackError {
    inner: BoxError,
}

/// The error stored for a callback that panicked.
#[derive(Debug)]
struct Panicked {
    message: String,
}

impl fmt::Display for Panicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "panicked: {}", self.message)
    }
}

impl Error for Panicked {}

impl CallbackError {
    /// Wraps an error or a message (`&str`, `String`, a boxed error, any `std` error).
    pub fn new(error: impl Into<BoxError>) -> Self {
        Self {
            inner: error.into(),
        }
    }

    /// Turns a panic payload (from [`std::panic::catch_unwind`], or e.g. a runtime's
    /// `JoinError::into_panic`) into an error carrying the panic message.
    ///
    /// Adapters that run callbacks themselves use this so that a panicking callback fails
    /// the phase exactly like [`run_phase`] would report it.
    #[must_use]
    pub fn from_panic(payload: Box<dyn Any + Send + 'static>) -> Self {
        let message = if let Some(message) = payload.downcast_ref::<&'static str>() {
            (*message).to_owned()
        } else if let Some(message) = payload.downcast_ref::<String>() {
            message.clone()
        } else {
            "non-string panic payload".to_owned()
        };
        Self {
            inner: Box::new(Panicked { message }),
        }
    }

    /// Whether the callback panicked rather than returned an error.
    #[must_use]
    pub fn is_panic(&self) -> bool {
        self.inner.is::<Panicked>()
    }

    /// The panic message if the callback panicked.
    #[must_use]
    pub fn panic_message(&self) -> Option<&str> {
        self.inner
            .downcast_ref::<Panicked>()
            .map(|panicked| panicked.message.as_str())
    }

    /// The wrapped error, e.g. to `downcast_ref` it.
    #[must_use]
    pub fn as_error(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.inner
    }
}

impl<E> From<E> for CallbackError
where
    E: Error + Send + Sync + 'static,
{
    fn from(error: E) -> Self {
        Self {
            inner: Box::new(error),
        }
    }
}

impl From<CallbackError> for BoxError {
    fn from(error: CallbackError) -> Self {
        error.inner
    }
}

impl fmt::Debug for CallbackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CallbackError").field(&self.inner).finish()
    }
}

impl fmt::Display for CallbackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.inner)?;
        if f.alternate() {
            let mut source = self.inner.source();
            while let Some(error) = source {
                write!(f, ": {error}")?;
                source = error.source();
            }
        }
        Ok(())
    }
}

/// A startup or shutdown callback: a cheaply clonable, runtime-agnostic async function.
///
/// Each call returns a new [`CallbackFuture`]; the future must not depend on a particular
/// runtime if the adapter is to stay interchangeable. `Debug` prints no more than
/// `Callback`: callbacks are identified by their [`CallbackId`].
#[derive(Clone)]
pub struct Callback {
    function: Arc<dyn Fn() -> CallbackFuture + Send + Sync + 'static>,
}

impl Callback {
    /// Wraps an async function, e.g. `Callback::new(|| async { Ok(()) })`.
    pub fn new<F, Fut>(function: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), CallbackError>> + Send + 'static,
    {
        Self {
            function: Arc::new(move || -> CallbackFuture { Box::pin(function()) }),
        }
    }

    /// Calls the function, returning the future to run.
    #[must_use]
    pub fn call(&self) -> CallbackFuture {
        (self.function)()
    }
}

impl fmt::Debug for Callback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Callback")
    }
}

/// Which of the two phases: startup or shutdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PhaseKind {
    /// Startup: `Idle → StartingUp → Running | StartupFailed`.
    Startup,
    /// Shutdown: `Running → ShuttingDown → Stopped | ShutdownFailed`.
    Shutdown,
}

impl fmt::Display for PhaseKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Startup => "startup",
            Self::Shutdown => "shutdown",
        })
    }
}

/// Where a [`Lifespan`] is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Created; startup has not begun. Callbacks are usually registered here.
    Idle,
    /// The startup callbacks are running; the adapter will report their results.
    StartingUp,
    /// Startup succeeded: the server serves requests.
    Running,
    /// The shutdown callbacks are running; the adapter will report their results.
    ShuttingDown,
    /// Shutdown succeeded. Terminal.
    Stopped,
    /// A startup callback failed; the message names every failure. Terminal: the server
    /// must not serve, and shutdown is not run (as in ASGI).
    StartupFailed(String),
    /// A shutdown callback failed; the message names every failure. Terminal.
    ShutdownFailed(String),
}

impl State {
    /// Whether `transition` is legal from this state (the state table in the module docs).
    #[must_use]
    pub fn allows(&self, transition: Transition) -> bool {
        matches!(
            (self, transition),
            (Self::Idle, Transition::BeginStartup)
                | (Self::StartingUp, Transition::FinishStartup)
                | (Self::Running, Transition::BeginShutdown)
                | (Self::ShuttingDown, Transition::FinishShutdown)
        )
    }

    /// Whether no transition is possible any more (`Stopped` or a failure).
    #[must_use]
    pub fn is_terminal(&self) -> bool {
        match self {
            Self::Idle | Self::StartingUp | Self::Running | Self::ShuttingDown => false,
            Self::Stopped | Self::StartupFailed(_) | Self::ShutdownFailed(_) => true,
        }
    }

    /// A short name of the state, without a failure message (for error messages).
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::StartingUp => "starting up",
            Self::Running => "running",
            Self::ShuttingDown => "shutting down",
            Self::Stopped => "stopped",
            Self::StartupFailed(_) => "startup failed",
            Self::ShutdownFailed(_) => "shutdown failed",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Idle | Self::StartingUp | Self::Running | Self::ShuttingDown | Self::Stopped => {
                f.write_str(self.name())
            }
            Self::StartupFailed(message) | Self::ShutdownFailed(message) => f.write_str(message),
        }
    }
}

/// A driving call of [`Lifespan`], as named in a [`TransitionError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transition {
    /// [`Lifespan::begin_startup`].
    BeginStartup,
    /// [`Lifespan::finish_startup`].
    FinishStartup,
    /// [`Lifespan::begin_shutdown`].
    BeginShutdown,
    /// [`Lifespan::finish_shutdown`].
    FinishShutdown,
}

impl Transition {
    /// Every transition, to enumerate the state table.
    pub const ALL: [Self; 4] = [
        Self::BeginStartup,
        Self::FinishStartup,
        Self::BeginShutdown,
        Self::FinishShutdown,
    ];
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BeginStartup => "begin startup",
            Self::FinishStartup => "finish startup",
            Self::BeginShutdown => "begin shutdown",
            Self::FinishShutdown => "finish shutdown",
        })
    }
}

/// A driving call was made in a state that does not allow it (e.g. shutdown before
/// startup, startup twice, finishing a phase that was not begun). The state is unchanged.
///
/// This is a bug in the adapter (or a misbehaving server), not a callback failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransitionError {
    from: State,
    attempted: Transition,
}

impl TransitionError {
    /// The state the lifespan was (and still is) in.
    #[must_use]
    pub fn from(&self) -> &State {
        &self.from
    }

    /// The transition that was refused.
    #[must_use]
    pub fn attempted(&self) -> Transition {
        self.attempted
    }
}

impl fmt::Display for TransitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot {} while the lifespan is {}",
            self.attempted,
            self.from.name()
        )
    }
}

impl Error for TransitionError {}

/// No callback with this id is registered for this phase (Rust's version of yuyo's
/// `ValueError`): it was never added, was already removed, or belongs to the other phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownCallback {
    id: CallbackId,
    kind: PhaseKind,
}

impl UnknownCallback {
    /// The id that was not found.
    #[must_use]
    pub fn id(&self) -> CallbackId {
        self.id
    }

    /// The phase whose callbacks were searched.
    #[must_use]
    pub fn kind(&self) -> PhaseKind {
        self.kind
    }
}

impl fmt::Display for UnknownCallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no {} callback {} is registered", self.kind, self.id)
    }
}

impl Error for UnknownCallback {}

/// How reported results differ from the callbacks the phase began with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// A result for an id that is not part of this phase.
    Unexpected(CallbackId),
    /// A second result for the same id.
    Duplicate(CallbackId),
    /// No result for a callback of this phase.
    Missing(CallbackId),
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unexpected(id) => write!(
                f,
                "a result for callback {id}, which is not part of this phase"
            ),
            Self::Duplicate(id) => write!(f, "two results for callback {id}"),
            Self::Missing(id) => write!(f, "no result for callback {id}"),
        }
    }
}

/// A phase failed: at least one callback returned an error or panicked.
///
/// The lifespan is now `StartupFailed` or `ShutdownFailed` with [`PhaseFailed::message`].
#[derive(Debug)]
pub struct PhaseFailed {
    kind: PhaseKind,
    total: usize,
    failures: Vec<(CallbackId, CallbackError)>,
    message: String,
}

impl PhaseFailed {
    /// Which phase failed.
    #[must_use]
    pub fn kind(&self) -> PhaseKind {
        self.kind
    }

    /// How many callbacks the phase ran (failed or not).
    #[must_use]
    pub fn total(&self) -> usize {
        self.total
    }

    /// Every failure, in registration order.
    #[must_use]
    pub fn failures(&self) -> &[(CallbackId, CallbackError)] {
        &self.failures
    }

    /// Every failure in one line, e.g.
    /// `startup failed (2 of 3 callbacks): callback #1: boom; callback #3: panicked: bang`.
    /// This is also the message of the failed [`State`].
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for PhaseFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error for PhaseFailed {}

/// Why [`Lifespan::finish_startup`] or [`Lifespan::finish_shutdown`] did not succeed.
#[derive(Debug)]
pub enum FinishError {
    /// No such phase is in progress; the state is unchanged.
    Transition(TransitionError),
    /// The results do not match the phase's callbacks; the phase is still in progress and
    /// the results may be reported again.
    Mismatch(Mismatch),
    /// The phase completed and failed; the state is now the corresponding failure.
    Failed(PhaseFailed),
}

impl fmt::Display for FinishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Transition(error) => fmt::Display::fmt(error, f),
            Self::Mismatch(mismatch) => write!(f, "results do not match the phase: {mismatch}"),
            Self::Failed(error) => fmt::Display::fmt(error, f),
        }
    }
}

impl Error for FinishError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Transition(error) => Some(error),
            Self::Mismatch(_) => None,
            Self::Failed(error) => Some(error),
        }
    }
}

impl From<TransitionError> for FinishError {
    fn from(error: TransitionError) -> Self {
        Self::Transition(error)
    }
}

/// The callbacks of a phase that just began, for the adapter to run **concurrently**.
///
/// Run them with [`Phase::run`], or call each [`Callback`] and run the futures on your
/// runtime (converting panics with [`CallbackError::from_panic`]); then report every result
/// with the matching `finish_*` call.
#[derive(Clone, Debug)]
#[must_use = "a phase's callbacks must be run and their results reported"]
pub struct Phase {
    kind: PhaseKind,
    callbacks: Vec<(CallbackId, Callback)>,
}

impl Phase {
    /// Which phase this is.
    pub fn kind(&self) -> PhaseKind {
        self.kind
    }

    /// The callbacks to run, in registration order.
    pub fn callbacks(&self) -> &[(CallbackId, Callback)] {
        &self.callbacks
    }

    /// Whether there is nothing to run (the phase must still be finished, with no results).
    pub fn is_empty(&self) -> bool {
        self.callbacks.is_empty()
    }

    /// The callbacks to run, in registration order.
    pub fn into_callbacks(self) -> Vec<(CallbackId, Callback)> {
        self.callbacks
    }

    /// Runs every callback concurrently: see [`run_phase`].
    pub fn run(self) -> RunPhase {
        run_phase(self.callbacks)
    }
}

/// Runs callbacks concurrently on whatever executor polls the returned future (or
/// `block_on`), catching panics; resolves to each callback's result in the given order.
///
/// No runtime is involved: the returned [`RunPhase`] polls every callback that has not
/// finished each time it is polled, with the caller's waker, so it works on smol, tokio
/// or a plain `block_on`. All callbacks run on the polling task (concurrently, not in
/// parallel); an adapter wanting parallelism spawns them itself.
///
/// Callbacks are only called on the first poll. A callback that panics (when called or
/// while polled) is dropped and reported as [`CallbackError::from_panic`], so every adapter
/// treats panics alike; the panic hook still runs (and prints) as usual, and with
/// `panic = "abort"` nothing can be caught.
pub fn run_phase(callbacks: impl IntoIterator<Item = (CallbackId, Callback)>) -> RunPhase {
    RunPhase {
        slots: callbacks
            .into_iter()
            .map(|(id, callback)| (id, Slot::NotCalled(callback)))
            .collect(),
    }
}

/// The future returned by [`run_phase`] and [`Phase::run`]: a small join-all.
///
/// Polling it again after it resolved resolves to an empty list.
#[must_use = "futures do nothing unless polled"]
pub struct RunPhase {
    slots: Vec<(CallbackId, Slot)>,
}

/// One callback's progress inside [`RunPhase`].
enum Slot {
    NotCalled(Callback),
    Running(CallbackFuture),
    Done(Result<(), CallbackError>),
}

impl Slot {
    /// Advances this callback; returns whether it is done.
    fn poll(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            match self {
                Self::NotCalled(callback) => {
                    let callback = callback.clone();
                    *self = match catch_unwind(AssertUnwindSafe(|| callback.call())) {
                        Ok(future) => Self::Running(future),
                        Err(payload) => Self::Done(Err(CallbackError::from_panic(payload))),
                    };
                }
                Self::Running(future) => {
                    let result = match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
                        Ok(Poll::Pending) => return false,
                        Ok(Poll::Ready(result)) => result,
                        Err(payload) => Err(CallbackError::from_panic(payload)),
                    };
                    let finished = std::mem::replace(self, Self::Done(result));
                    // Dropping a future that panicked may panic again; that is contained too.
                    let _ = catch_unwind(AssertUnwindSafe(move || drop(finished)));
                    return true;
                }
                Self::Done(_) => return true,
            }
        }
    }
}

impl Future for RunPhase {
    type Output = PhaseResults;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut all_done = true;
        for (_, slot) in &mut self.slots {
            all_done &= slot.poll(cx);
        }
        if !all_done {
            return Poll::Pending;
        }
        let results = std::mem::take(&mut self.slots)
            .into_iter()
            .filter_map(|(id, slot)| match slot {
                Slot::Done(result) => Some((id, result)),
                Slot::NotCalled(_) | Slot::Running(_) => None,
            })
            .collect();
        Poll::Ready(results)
    }
}

impl fmt::Debug for RunPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (id, slot) in &self.slots {
            let progress = match slot {
                Slot::NotCalled(_) => "not called",
                Slot::Running(_) => "running",
                Slot::Done(Ok(())) => "succeeded",
                Slot::Done(Err(_)) => "failed",
            };
            map.entry(id, &progress);
        }
        map.finish()
    }
}

/// The lifespan state machine: registered callbacks plus the current [`State`].
///
/// See the [module documentation](crate::lifespan) for the state table and the driving loop.
/// `Debug` prints the state and the callbacks' ids.
pub struct Lifespan {
    state: State,
    next_id: u64,
    startup: Vec<(CallbackId, Callback)>,
    shutdown: Vec<(CallbackId, Callback)>,
    /// The ids of the phase in progress (`StartingUp`/`ShuttingDown`), in registration order.
    in_progress: Vec<CallbackId>,
}

impl Default for Lifespan {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Lifespan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids = |callbacks: &[(CallbackId, Callback)]| -> Vec<CallbackId> {
            callbacks.iter().map(|(id, _)| *id).collect()
        };
        f.debug_struct("Lifespan")
            .field("state", &self.state)
            .field("startup", &ids(&self.startup))
            .field("shutdown", &ids(&self.shutdown))
            .field("in_progress", &self.in_progress)
            .finish()
    }
}

impl Lifespan {
    /// An `Idle` lifespan without callbacks.
    #[must_use]
    pub fn new() -> Self {
        Self {
            state: State::Idle,
            next_id: 0,
            startup: Vec::new(),
            shutdown: Vec::new(),
            in_progress: Vec::new(),
        }
    }

    /// The current state.
    #[must_use]
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The registered startup callbacks' ids, in registration (and reporting) order.
    pub fn startup_callback_ids(&self) -> impl Iterator<Item = CallbackId> + '_ {
        self.startup.iter().map(|(id, _)| *id)
    }

    /// The registered shutdown callbacks' ids, in registration (and reporting) order.
    pub fn shutdown_callback_ids(&self) -> impl Iterator<Item = CallbackId> + '_ {
        self.shutdown.iter().map(|(id, _)| *id)
    }

    fn next_id(&mut self) -> CallbackId {
        let id = CallbackId(self.next_id);
        self.next_id += 1;
        id
    }

    fn callbacks_mut(&mut self, kind: PhaseKind) -> &mut Vec<(CallbackId, Callback)> {
        match kind {
            PhaseKind::Startup => &mut self.startup,
            PhaseKind::Shutdown => &mut self.shutdown,
        }
    }

    fn add(&mut self, kind: PhaseKind, callback: Callback) -> CallbackId {
        let id = self.next_id();
        self.callbacks_mut(kind).push((id, callback));
        id
    }

    fn remove(&mut self, kind: PhaseKind, id: CallbackId) -> Result<(), UnknownCallback> {
        let callbacks = self.callbacks_mut(kind);
        match callbacks
            .iter()
            .position(|(registered, _)| *registered == id)
        {
            Some(index) => {
                callbacks.remove(index);
                Ok(())
            }
            None => Err(UnknownCallback { id, kind }),
        }
    }

    /// Registers a callback to run at startup; startup fails if it fails. Allowed in any
    /// state: a phase already in progress runs the callbacks it began with.
    ///
    /// Like yuyo's, these callbacks hold the server back from starting until they finish.
    pub fn add_startup_callback<F, Fut>(&mut self, callback: F) -> CallbackId
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), CallbackError>> + Send + 'static,
    {
        self.add(PhaseKind::Startup, Callback::new(callback))
    }

    /// Registers a callback to run at shutdown; shutdown fails if it fails. Allowed in any
    /// state: a phase already in progress runs the callbacks it began with.
    ///
    /// Like yuyo's, these callbacks hold the server back from stopping until they finish.
    pub fn add_shutdown_callback<F, Fut>(&mut self, callback: F) -> CallbackId
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), CallbackError>> + Send + 'static,
    {
        self.add(PhaseKind::Shutdown, Callback::new(callback))
    }

    /// [`Lifespan::add_startup_callback`] in builder form, for yuyo's chained style.
    #[must_use]
    pub fn with_startup_callback<F, Fut>(mut self, callback: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), CallbackError>> + Send + 'static,
    {
        self.add_startup_callback(callback);
        self
    }

    /// [`Lifespan::add_shutdown_callback`] in builder form, for yuyo's chained style.
    #[must_use]
    pub fn with_shutdown_callback<F, Fut>(mut self, callback: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), CallbackError>> + Send + 'static,
    {
        self.add_shutdown_callback(callback);
        self
    }

    /// Unregisters a startup callback. Allowed in any state; a startup in progress still
    /// runs it and expects its result.
    ///
    /// # Errors
    ///
    /// [`UnknownCallback`] if `id` is not a registered startup callback.
    pub fn remove_startup_callback(&mut self, id: CallbackId) -> Result<(), UnknownCallback> {
        self.remove(PhaseKind::Startup, id)
    }

    /// Unregisters a shutdown callback. Allowed in any state; a shutdown in progress still
    /// runs it and expects its result.
    ///
    /// # Errors
    ///
    /// [`UnknownCallback`] if `id` is not a registered shutdown callback.
    pub fn remove_shutdown_callback(&mut self, id: CallbackId) -> Result<(), UnknownCallback> {
        self.remove(PhaseKind::Shutdown, id)
    }

    /// `Idle → StartingUp`: returns the startup callbacks to run concurrently. Call when
    /// the server is about to start (ASGI `lifespan.startup`); then report the results
    /// with [`Lifespan::finish_startup`].
    ///
    /// # Errors
    ///
    /// [`TransitionError`] unless the lifespan is `Idle`; the state is unchanged.
    pub fn begin_startup(&mut self) -> Result<Phase, TransitionError> {
        self.begin(PhaseKind::Startup)
    }

    /// `StartingUp → Running | StartupFailed`: reports the startup callbacks' results, in
    /// any order.
    ///
    /// # Errors
    ///
    /// - [`FinishError::Transition`] unless the lifespan is `StartingUp`;
    /// - [`FinishError::Mismatch`] unless there is exactly one result per callback of the
    ///   phase (the phase stays in progress);
    /// - [`FinishError::Failed`] if any callback failed: the lifespan is `StartupFailed`
    ///   and the server must not serve.
    pub fn finish_startup(
        &mut self,
        results: impl IntoIterator<Item = (CallbackId, Result<(), CallbackError>)>,
    ) -> Result<(), FinishError> {
        self.finish(PhaseKind::Startup, results)
    }

    /// `Running → ShuttingDown`: returns the shutdown callbacks to run concurrently. Call
    /// when the server stops (ASGI `lifespan.shutdown`), after it stopped taking requests;
    /// then report the results with [`Lifespan::finish_shutdown`].
    ///
    /// # Errors
    ///
    /// [`TransitionError`] unless the lifespan is `Running` (in particular after a failed
    /// startup); the state is unchanged.
    pub fn begin_shutdown(&mut self) -> Result<Phase, TransitionError> {
        self.begin(PhaseKind::Shutdown)
    }

    /// `ShuttingDown → Stopped | ShutdownFailed`: reports the shutdown callbacks' results,
    /// in any order.
    ///
    /// # Errors
    ///
    /// - [`FinishError::Transition`] unless the lifespan is `ShuttingDown`;
    /// - [`FinishError::Mismatch`] unless there is exactly one result per callback of the
    ///   phase (the phase stays in progress);
    /// - [`FinishError::Failed`] if any callback failed: the lifespan is `ShutdownFailed`.
    pub fn finish_shutdown(
        &mut self,
        results: impl IntoIterator<Item = (CallbackId, Result<(), CallbackError>)>,
    ) -> Result<(), FinishError> {
        self.finish(PhaseKind::Shutdown, results)
    }

    fn begin(&mut self, kind: PhaseKind) -> Result<Phase, TransitionError> {
        let (attempted, next) = match kind {
            PhaseKind::Startup => (Transition::BeginStartup, State::StartingUp),
            PhaseKind::Shutdown => (Transition::BeginShutdown, State::ShuttingDown),
        };
        if !self.state.allows(attempted) {
            return Err(TransitionError {
                from: self.state.clone(),
                attempted,
            });
        }
        let callbacks = self.callbacks_mut(kind).clone();
        self.in_progress = callbacks.iter().map(|(id, _)| *id).collect();
        self.state = next;
        Ok(Phase { kind, callbacks })
    }

    fn finish(
        &mut self,
        kind: PhaseKind,
        results: impl IntoIterator<Item = (CallbackId, Result<(), CallbackError>)>,
    ) -> Result<(), FinishError> {
        let attempted = match kind {
            PhaseKind::Startup => Transition::FinishStartup,
            PhaseKind::Shutdown => Transition::FinishShutdown,
        };
        if !self.state.allows(attempted) {
            return Err(FinishError::Transition(TransitionError {
                from: self.state.clone(),
                attempted,
            }));
        }

        // Put each result in its callback's registration slot.
        let mut slots: Vec<Option<Result<(), CallbackError>>> =
            self.in_progress.iter().map(|_| None).collect();
        for (id, result) in results {
            let index = self
                .in_progress
                .iter()
                .position(|expected| *expected == id)
                .ok_or(FinishError::Mismatch(Mismatch::Unexpected(id)))?;
            let slot = slots
                .get_mut(index)
                .ok_or(FinishError::Mismatch(Mismatch::Unexpected(id)))?;
            if slot.is_some() {
                return Err(FinishError::Mismatch(Mismatch::Duplicate(id)));
            }
            *slot = Some(result);
        }
        let mut failures = Vec::new();
        for (id, slot) in self.in_progress.iter().zip(slots) {
            match slot {
                None => return Err(FinishError::Mismatch(Mismatch::Missing(*id))),
                Some(Ok(())) => {}
                Some(Err(error)) => failures.push((*id, error)),
            }
        }

        let total = self.in_progress.len();
        self.in_progress.clear();
        if failures.is_empty() {
            self.state = match kind {
                PhaseKind::Startup => State::Running,
                PhaseKind::Shutdown => State::Stopped,
            };
            return Ok(());
        }
        let message = failure_message(kind, total, &failures);
        self.state = match kind {
            PhaseKind::Startup => State::StartupFailed(message.clone()),
            PhaseKind::Shutdown => State::ShutdownFailed(message.clone()),
        };
        Err(FinishError::Failed(PhaseFailed {
            kind,
            total,
            failures,
            message,
        }))
    }
}

/// `startup failed (2 of 3 callbacks): callback #1: boom; callback #3: panicked: bang`,
/// each error with its source chain.
fn failure_message(
    kind: PhaseKind,
    total: usize,
    failures: &[(CallbackId, CallbackError)],
) -> String {
    let details: Vec<String> = failures
        .iter()
        .map(|(id, error)| format!("callback {id}: {error:#}"))
        .collect();
    format!(
        "{kind} failed ({} of {total} callbacks): {}",
        failures.len(),
        details.join("; ")
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    /// A waker that records whether it was woken.
    struct Flag(AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// A single-threaded `block_on` for futures that are only woken from this thread:
    /// panics instead of hanging if the future is pending without having been woken.
    fn block_on<F: Future>(future: F) -> F::Output {
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        for _ in 0..10_000 {
            flag.0.store(false, Ordering::SeqCst);
            if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                return output;
            }
            assert!(
                flag.0.load(Ordering::SeqCst),
                "stalled: pending without a wake-up"
            );
        }
        panic!("did not finish in 10000 polls");
    }

    /// A one-shot signal: `set` wakes every waiter.
    #[derive(Clone, Default)]
    struct Signal(Arc<Mutex<(bool, Vec<Waker>)>>);

    impl Signal {
        fn set(&self) {
            let mut inner = self.0.lock().unwrap();
            inner.0 = true;
            for waker in inner.1.drain(..) {
                waker.wake();
            }
        }

        fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
            let this = self.clone();
            std::future::poll_fn(move |cx| {
                let mut inner = this.0.lock().unwrap();
                if inner.0 {
                    Poll::Ready(())
                } else {
                    inner.1.push(cx.waker().clone());
                    Poll::Pending
                }
            })
        }
    }

    /// Returns `Pending` `n` times (waking itself each time), then `Ready`.
    fn yield_times(n: usize) -> impl Future<Output = ()> + Send + 'static {
        let mut left = n;
        std::future::poll_fn(move |cx| {
            if left == 0 {
                Poll::Ready(())
            } else {
                left -= 1;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        })
    }

    fn ok() -> impl Fn() -> std::future::Ready<Result<(), CallbackError>> + Send + Sync + 'static {
        || std::future::ready(Ok(()))
    }

    fn fail(
        message: &'static str,
    ) -> impl Fn() -> std::future::Ready<Result<(), CallbackError>> + Send + Sync + 'static {
        move || std::future::ready(Err(CallbackError::new(message)))
    }

    fn all_states() -> Vec<State> {
        vec![
            State::Idle,
            State::StartingUp,
            State::Running,
            State::ShuttingDown,
            State::Stopped,
            State::StartupFailed("startup failed (1 of 1 callbacks): callback #0: x".to_owned()),
            State::ShutdownFailed("shutdown failed (1 of 1 callbacks): callback #0: y".to_owned()),
        ]
    }

    /// Drives a fresh lifespan (no callbacks, or one failing callback) into `state`.
    fn lifespan_in(state: &State) -> Lifespan {
        let mut lifespan = Lifespan::new();
        let startup_fails = matches!(state, State::StartupFailed(_));
        let shutdown_fails = matches!(state, State::ShutdownFailed(_));
        if startup_fails {
            lifespan.add_startup_callback(fail("x"));
        }
        if shutdown_fails {
            lifespan.add_shutdown_callback(fail("y"));
        }
        let path: &[Transition] = match state {
            State::Idle => &[],
            State::StartingUp => &[Transition::BeginStartup],
            State::Running => &[Transition::BeginStartup, Transition::FinishStartup],
            State::ShuttingDown => &[
                Transition::BeginStartup,
                Transition::FinishStartup,
                Transition::BeginShutdown,
            ],
            State::Stopped | State::ShutdownFailed(_) => &Transition::ALL,
            State::StartupFailed(_) => &[Transition::BeginStartup, Transition::FinishStartup],
        };
        for transition in path {
            let _ = apply(&mut lifespan, *transition);
        }
        lifespan
    }

    /// Applies a transition with the results of really running the phase's callbacks.
    fn apply(lifespan: &mut Lifespan, transition: Transition) -> Result<(), String> {
        let err = |e: &dyn fmt::Display| e.to_string();
        match transition {
            Transition::BeginStartup => lifespan.begin_startup().map(drop).map_err(|e| err(&e)),
            Transition::BeginShutdown => lifespan.begin_shutdown().map(drop).map_err(|e| err(&e)),
            Transition::FinishStartup => {
                let results = block_on(run_phase(lifespan.startup.clone()));
                lifespan.finish_startup(results).map_err(|e| err(&e))
            }
            Transition::FinishShutdown => {
                let results = block_on(run_phase(lifespan.shutdown.clone()));
                lifespan.finish_shutdown(results).map_err(|e| err(&e))
            }
        }
    }

    #[test]
    fn every_transition_from_every_state() {
        let mut legal = 0;
        for state in all_states() {
            for transition in Transition::ALL {
                let mut lifespan = lifespan_in(&state);
                assert_eq!(lifespan.state(), &state);
                let outcome = match transition {
                    Transition::BeginStartup => lifespan
                        .begin_startup()
                        .map(drop)
                        .map_err(FinishError::from),
                    Transition::BeginShutdown => lifespan
                        .begin_shutdown()
                        .map(drop)
                        .map_err(FinishError::from),
                    Transition::FinishStartup => lifespan.finish_startup(Vec::new()),
                    Transition::FinishShutdown => lifespan.finish_shutdown(Vec::new()),
                };
                if state.allows(transition) {
                    legal += 1;
                    // No callbacks registered in the legal-path lifespans: always succeeds.
                    assert!(outcome.is_ok(), "{state:?} {transition:?}: {outcome:?}");
                    let expected = match transition {
                        Transition::BeginStartup => State::StartingUp,
                        Transition::FinishStartup => State::Running,
                        Transition::BeginShutdown => State::ShuttingDown,
                        Transition::FinishShutdown => State::Stopped,
                    };
                    assert_eq!(lifespan.state(), &expected);
                } else {
                    match outcome {
                        Err(FinishError::Transition(error)) => {
                            assert_eq!(error.from(), &state);
                            assert_eq!(error.attempted(), transition);
                            assert_eq!(
                                error.to_string(),
                                format!(
                                    "cannot {transition} while the lifespan is {}",
                                    state.name()
                                )
                            );
                        }
                        other => panic!("{state:?} {transition:?}: {other:?}"),
                    }
                    assert_eq!(lifespan.state(), &state, "state must be unchanged");
                }
            }
        }
        assert_eq!(legal, 4);
        for state in all_states() {
            assert_eq!(
                state.is_terminal(),
                Transition::ALL.iter().all(|t| !state.allows(*t)),
                "{state:?}"
            );
        }
    }

    #[test]
    fn named_illegal_transitions() {
        // Shutdown before startup.
        let mut lifespan = Lifespan::new();
        let error = lifespan.begin_shutdown().unwrap_err();
        assert_eq!(
            (error.from(), error.attempted()),
            (&State::Idle, Transition::BeginShutdown)
        );
        // Finish without begin.
        assert!(matches!(
            lifespan.finish_startup(Vec::new()),
            Err(FinishError::Transition(_))
        ));
        // Startup twice.
        let _phase = lifespan.begin_startup().unwrap();
        assert!(lifespan.begin_startup().is_err());
        lifespan.finish_startup(Vec::new()).unwrap();
        assert!(lifespan.begin_startup().is_err());
        assert_eq!(lifespan.state(), &State::Running);
        // Shutdown after a failed startup.
        let mut lifespan = Lifespan::new().with_startup_callback(fail("nope"));
        let phase = lifespan.begin_startup().unwrap();
        assert!(lifespan.finish_startup(block_on(phase.run())).is_err());
        let error = lifespan.begin_shutdown().unwrap_err();
        assert_eq!(error.attempted(), Transition::BeginShutdown);
        assert!(matches!(error.from(), State::StartupFailed(_)));
    }

    #[test]
    fn full_happy_path_runs_each_phase_once() {
        let starts = Arc::new(AtomicUsize::new(0));
        let stops = Arc::new(AtomicUsize::new(0));
        let (s, t) = (starts.clone(), stops.clone());
        let mut lifespan = Lifespan::new()
            .with_startup_callback(move || {
                s.fetch_add(1, Ordering::SeqCst);
                async { Ok(()) }
            })
            .with_shutdown_callback(move || {
                t.fetch_add(1, Ordering::SeqCst);
                async { Ok(()) }
            });
        let phase = lifespan.begin_startup().unwrap();
        assert_eq!(phase.kind(), PhaseKind::Startup);
        assert_eq!(stops.load(Ordering::SeqCst), 0);
        lifespan.finish_startup(block_on(phase.run())).unwrap();
        assert_eq!(lifespan.state(), &State::Running);
        assert_eq!(
            (starts.load(Ordering::SeqCst), stops.load(Ordering::SeqCst)),
            (1, 0)
        );
        let phase = lifespan.begin_shutdown().unwrap();
        assert_eq!(phase.kind(), PhaseKind::Shutdown);
        lifespan.finish_shutdown(block_on(phase.run())).unwrap();
        assert_eq!(lifespan.state(), &State::Stopped);
        assert_eq!(
            (starts.load(Ordering::SeqCst), stops.load(Ordering::SeqCst)),
            (1, 1)
        );
    }

    #[test]
    fn add_remove_and_unknown_ids() {
        let mut lifespan = Lifespan::new();
        let a = lifespan.add_startup_callback(ok());
        let b = lifespan.add_shutdown_callback(ok());
        let c = lifespan.add_startup_callback(ok());
        assert!(a != b && b != c && a != c, "ids are unique across phases");
        assert_eq!(lifespan.startup_callback_ids().collect::<Vec<_>>(), [a, c]);
        assert_eq!(lifespan.shutdown_callback_ids().collect::<Vec<_>>(), [b]);

        // A shutdown id is not a startup callback, and vice versa.
        let error = lifespan.remove_startup_callback(b).unwrap_err();
        assert_eq!((error.id(), error.kind()), (b, PhaseKind::Startup));
        assert_eq!(
            error.to_string(),
            format!("no startup callback {b} is registered")
        );
        let error = lifespan.remove_shutdown_callback(a).unwrap_err();
        assert_eq!((error.id(), error.kind()), (a, PhaseKind::Shutdown));

        lifespan.remove_startup_callback(a).unwrap();
        assert_eq!(
            lifespan.remove_startup_callback(a),
            Err(UnknownCallback {
                id: a,
                kind: PhaseKind::Startup
            }),
            "removing twice"
        );
        lifespan.remove_shutdown_callback(b).unwrap();
        assert!(lifespan.remove_shutdown_callback(b).is_err());
        assert_eq!(lifespan.startup_callback_ids().collect::<Vec<_>>(), [c]);
        assert_eq!(lifespan.shutdown_callback_ids().count(), 0);

        // Ids are never reused.
        let d = lifespan.add_startup_callback(ok());
        assert!(![a, b, c].contains(&d));
        assert_eq!(
            format!("{lifespan:?}"),
            format!(
                "Lifespan {{ state: Idle, startup: [{c:?}, {d:?}], shutdown: [], in_progress: [] }}"
            )
        );
    }

    #[test]
    fn builder_form_registers_in_order() {
        let lifespan = Lifespan::default()
            .with_startup_callback(ok())
            .with_shutdown_callback(ok())
            .with_startup_callback(|| async { Ok(()) });
        let startup: Vec<_> = lifespan
            .startup_callback_ids()
            .map(CallbackId::get)
            .collect();
        let shutdown: Vec<_> = lifespan
            .shutdown_callback_ids()
            .map(CallbackId::get)
            .collect();
        assert_eq!((startup, shutdown), (vec![0, 2], vec![1]));
    }

    #[test]
    fn changes_during_a_phase_apply_to_the_next_phase() {
        let mut lifespan = Lifespan::new();
        let a = lifespan.add_startup_callback(ok());
        let phase = lifespan.begin_startup().unwrap();
        let b = lifespan.add_startup_callback(ok()); // not part of this phase
        lifespan.remove_startup_callback(a).unwrap(); // still part of this phase
        let late_shutdown = lifespan.add_shutdown_callback(ok()); // runs at shutdown
        assert_eq!(
            phase
                .callbacks()
                .iter()
                .map(|(id, _)| *id)
                .collect::<Vec<_>>(),
            [a]
        );
        assert_eq!(
            lifespan
                .finish_startup(vec![(b, Ok(()))])
                .unwrap_err()
                .to_string(),
            format!(
                "results do not match the phase: a result for callback {b}, which is not part of this phase"
            )
        );
        lifespan.finish_startup(block_on(phase.run())).unwrap();
        let phase = lifespan.begin_shutdown().unwrap();
        assert_eq!(
            phase
                .callbacks()
                .iter()
                .map(|(id, _)| *id)
                .collect::<Vec<_>>(),
            [late_shutdown]
        );
    }

    #[test]
    fn mismatched_results_keep_the_phase_in_progress() {
        let mut lifespan = Lifespan::new();
        let a = lifespan.add_startup_callback(ok());
        let b = lifespan.add_startup_callback(ok());
        let s = lifespan.add_shutdown_callback(ok());
        let _phase = lifespan.begin_startup().unwrap();
        let cases = [
            (vec![(a, Ok(()))], Mismatch::Missing(b)),
            (
                vec![(a, Ok(())), (a, Ok(())), (b, Ok(()))],
                Mismatch::Duplicate(a),
            ),
            (
                vec![(a, Ok(())), (s, Ok(())), (b, Ok(()))],
                Mismatch::Unexpected(s),
            ),
            (vec![], Mismatch::Missing(a)),
        ];
        for (results, expected) in cases {
            match lifespan.finish_startup(results) {
                Err(FinishError::Mismatch(mismatch)) => assert_eq!(mismatch, expected),
                other => panic!("{other:?}"),
            }
            assert_eq!(lifespan.state(), &State::StartingUp);
        }
        // Any order is fine.
        lifespan
            .finish_startup(vec![(b, Ok(())), (a, Ok(()))])
            .unwrap();
        assert_eq!(lifespan.state(), &State::Running);
    }

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("outer")
        }
    }

    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn failures_are_aggregated_in_registration_order() {
        let mut lifespan = Lifespan::new();
        let a = lifespan.add_startup_callback(|| async {
            yield_times(3).await; // finishes last
            Err(CallbackError::new("first"))
        });
        let _b = lifespan.add_startup_callback(ok());
        let c = lifespan.add_startup_callback(|| async {
            Err(Outer(std::io::Error::other("inner")))?;
            Ok(())
        });
        let d = lifespan.add_startup_callback(|| async { panic!("bang") });
        let phase = lifespan.begin_startup().unwrap();
        let mut results = block_on(phase.run());
        results.reverse(); // reporting order does not matter
        let error = match lifespan.finish_startup(results) {
            Err(FinishError::Failed(error)) => error,
            other => panic!("{other:?}"),
        };
        let expected = format!(
            "startup failed (3 of 4 callbacks): callback {a}: first; callback {c}: outer: inner; callback {d}: panicked: bang"
        );
        assert_eq!(error.message(), expected);
        assert_eq!(error.to_string(), expected);
        assert_eq!((error.kind(), error.total()), (PhaseKind::Startup, 4));
        let ids: Vec<_> = error.failures().iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [a, c, d]);
        assert!(error.failures()[2].1.is_panic());
        assert!(error.failures()[1].1.as_error().is::<Outer>());
        assert_eq!(lifespan.state(), &State::StartupFailed(expected));
    }

    #[test]
    fn shutdown_failure() {
        let mut lifespan = Lifespan::new()
            .with_shutdown_callback(fail("disk full"))
            .with_shutdown_callback(ok());
        let phase = lifespan.begin_startup().unwrap();
        lifespan.finish_startup(block_on(phase.run())).unwrap();
        let phase = lifespan.begin_shutdown().unwrap();
        let error = lifespan.finish_shutdown(block_on(phase.run())).unwrap_err();
        let message = "shutdown failed (1 of 2 callbacks): callback #0: disk full";
        assert_eq!(error.to_string(), message);
        assert!(error.source().is_some());
        assert_eq!(lifespan.state(), &State::ShutdownFailed(message.to_owned()));
        assert_eq!(lifespan.state().to_string(), message);
        assert!(lifespan.begin_shutdown().is_err());
    }

    #[test]
    fn run_phase_runs_callbacks_concurrently() {
        // Each callback signals the other and then waits for the other's signal: run one
        // after the other, the first would wait forever (and `block_on` reports a stall).
        let (a, b) = (Signal::default(), Signal::default());
        let (a1, b1, a2, b2) = (a.clone(), b.clone(), a, b);
        let order = Arc::new(Mutex::new(Vec::new()));
        let (o1, o2) = (order.clone(), order.clone());
        let mut lifespan = Lifespan::new()
            .with_startup_callback(move || {
                let (a, b, order) = (a1.clone(), b1.clone(), o1.clone());
                async move {
                    a.set();
                    b.wait().await;
                    order.lock().unwrap().push("first");
                    Ok(())
                }
            })
            .with_startup_callback(move || {
                let (a, b, order) = (a2.clone(), b2.clone(), o2.clone());
                async move {
                    a.wait().await;
                    order.lock().unwrap().push("second");
                    b.set();
                    Ok(())
                }
            });
        let phase = lifespan.begin_startup().unwrap();
        let ids: Vec<_> = phase.callbacks().iter().map(|(id, _)| *id).collect();
        let results = block_on(phase.run());
        // Results come back in registration order even though "second" finished first.
        assert_eq!(results.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids);
        assert_eq!(*order.lock().unwrap(), ["second", "first"]);
        lifespan.finish_startup(results).unwrap();
    }

    #[test]
    fn run_phase_is_lazy_and_polls_pending_callbacks_only_when_polled() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let callback = Callback::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
            async {
                yield_times(2).await;
                Ok(())
            }
        });
        let future = run_phase(vec![(CallbackId(7), callback)]);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "not called before the first poll"
        );
        assert_eq!(format!("{future:?}"), "{CallbackId(7): \"not called\"}");
        let results = block_on(future);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(matches!(results.as_slice(), [(CallbackId(7), Ok(()))]));
        // An empty phase resolves at once.
        assert!(block_on(run_phase(Vec::new())).is_empty());
    }

    #[test]
    fn panics_are_captured() {
        let payload_string = || async { std::panic::panic_any(String::from("owned")) };
        let payload_other = || async { std::panic::panic_any(42_u8) };
        let panics_when_called =
            || -> std::future::Ready<Result<(), CallbackError>> { panic!("at call") };
        let panics_after_yield = || async {
            yield_times(1).await;
            panic!("later")
        };
        let results = block_on(run_phase(vec![
            (CallbackId(0), Callback::new(payload_string)),
            (CallbackId(1), Callback::new(payload_other)),
            (CallbackId(2), Callback::new(panics_when_called)),
            (CallbackId(3), Callback::new(panics_after_yield)),
            (CallbackId(4), Callback::new(ok())),
        ]));
        let messages: Vec<_> = results
            .iter()
            .map(|(_, result)| match result {
                Ok(()) => None,
                Err(error) => {
                    assert!(error.is_panic());
                    error.panic_message().map(str::to_owned)
                }
            })
            .collect();
        assert_eq!(
            messages,
            [
                Some("owned".to_owned()),
                Some("non-string panic payload".to_owned()),
                Some("at call".to_owned()),
                Some("later".to_owned()),
                None,
            ]
        );
        assert_eq!(
            results[0].1.as_ref().unwrap_err().to_string(),
            "panicked: owned"
        );
    }

    #[test]
    fn callback_error_conversions() {
        let error = CallbackError::new("plain");
        assert!(!error.is_panic());
        assert_eq!(error.panic_message(), None);
        assert_eq!(format!("{error}"), "plain");
        let boxed: BoxError = error.into();
        assert_eq!(boxed.to_string(), "plain");
        let error = CallbackError::from(Outer(std::io::Error::other("inner")));
        assert_eq!(format!("{error}"), "outer");
        assert_eq!(format!("{error:#}"), "outer: inner");
        assert!(format!("{error:?}").starts_with("CallbackError(Outer("));
        // Already-boxed errors go through `new`.
        let error = CallbackError::new(BoxError::from("boxed"));
        assert_eq!(error.to_string(), "boxed");
    }

    #[test]
    fn public_types_are_thread_safe_and_debug() {
        fn send_sync<T: Send + Sync + fmt::Debug>() {}
        fn send<T: Send + fmt::Debug>() {}
        send_sync::<Lifespan>();
        send_sync::<Phase>();
        send_sync::<Callback>();
        send_sync::<CallbackError>();
        send_sync::<FinishError>();
        send::<RunPhase>();
        let phase = Lifespan::new()
            .with_startup_callback(ok())
            .begin_startup()
            .unwrap();
        assert_eq!(
            format!("{phase:?}"),
            "Phase { kind: Startup, callbacks: [(CallbackId(0), Callback)] }"
        );
    }

    // ---------------------------------------------------------------------------------
    // Model-based test: random operation sequences against a simple reference model.

    mod model {
        use super::*;
        use proptest::prelude::*;

        /// What a generated callback does.
        #[derive(Clone, Copy, Debug)]
        struct Behaviour {
            fails: bool,
            yields: usize,
        }

        impl Behaviour {
            fn callback(self, label: u64) -> impl Fn() -> CallbackFuture + Send + Sync + 'static {
                move || {
                    Box::pin(async move {
                        yield_times(self.yields).await;
                        if self.fails {
                            Err(CallbackError::new(format!("boom {label}")))
                        } else {
                            Ok(())
                        }
                    })
                }
            }
        }

        /// How the harness reports the results of the phase it last began.
        #[derive(Clone, Copy, Debug)]
        enum Report {
            AsRun,
            Reversed,
            DropFirst,
            DuplicateFirst,
            AddUnknown,
        }

        #[derive(Clone, Debug)]
        enum Op {
            Add(PhaseKind, Behaviour),
            /// Removes the n-th id ever handed out (modulo; one past the end is a fresh id).
            Remove(PhaseKind, usize),
            Begin(PhaseKind),
            Finish(PhaseKind, Report),
        }

        fn kind() -> impl Strategy<Value = PhaseKind> {
            prop_oneof![Just(PhaseKind::Startup), Just(PhaseKind::Shutdown)]
        }

        fn op() -> impl Strategy<Value = Op> {
            let behaviour = (proptest::bool::weighted(0.2), 0..3_usize)
                .prop_map(|(fails, yields)| Behaviour { fails, yields });
            let report = prop_oneof![
                6 => Just(Report::AsRun),
                2 => Just(Report::Reversed),
                1 => Just(Report::DropFirst),
                1 => Just(Report::DuplicateFirst),
                1 => Just(Report::AddUnknown),
            ];
            prop_oneof![
                4 => (kind(), behaviour).prop_map(|(k, b)| Op::Add(k, b)),
                2 => (kind(), any::<usize>()).prop_map(|(k, n)| Op::Remove(k, n)),
                2 => kind().prop_map(Op::Begin),
                3 => (kind(), report).prop_map(|(k, r)| Op::Finish(k, r)),
            ]
        }

        /// The observable outcome of one operation, comparable between model and real.
        #[derive(Clone, Debug, PartialEq, Eq)]
        enum Outcome {
            Added(CallbackId),
            Removed,
            Unknown(UnknownCallback),
            Began(PhaseKind, Vec<CallbackId>),
            Finished,
            Transition(TransitionError),
            Mismatch(Mismatch),
            Failed(PhaseKind, usize, Vec<CallbackId>, String),
        }

        /// The reference model: plain data, rules restated from the module docs.
        #[derive(Default)]
        struct Model {
            state: Option<State>, // None = Idle, to keep `Default`
            next_id: u64,
            startup: Vec<(CallbackId, Behaviour)>,
            shutdown: Vec<(CallbackId, Behaviour)>,
            in_progress: Vec<(CallbackId, Behaviour)>,
            /// The phase the harness last began (of either kind), whose results it reports.
            last_phase: Vec<(CallbackId, Behaviour)>,
        }

        impl Model {
            fn state(&self) -> State {
                self.state.clone().unwrap_or(State::Idle)
            }

            fn list(&mut self, kind: PhaseKind) -> &mut Vec<(CallbackId, Behaviour)> {
                match kind {
                    PhaseKind::Startup => &mut self.startup,
                    PhaseKind::Shutdown => &mut self.shutdown,
                }
            }

            fn apply(&mut self, op: &Op) -> Outcome {
                match *op {
                    Op::Add(kind, behaviour) => {
                        let id = CallbackId(self.next_id);
                        self.next_id += 1;
                        self.list(kind).push((id, behaviour));
                        Outcome::Added(id)
                    }
                    Op::Remove(kind, n) => {
                        let id = CallbackId((n % (self.next_id as usize + 1)) as u64);
                        let list = self.list(kind);
                        let before = list.len();
                        list.retain(|(registered, _)| *registered != id);
                        if list.len() < before {
                            Outcome::Removed
                        } else {
                            Outcome::Unknown(UnknownCallback { id, kind })
                        }
                    }
                    Op::Begin(kind) => {
                        let (from, attempted, to) = match kind {
                            PhaseKind::Startup => {
                                (State::Idle, Transition::BeginStartup, State::StartingUp)
                            }
                            PhaseKind::Shutdown => (
                                State::Running,
                                Transition::BeginShutdown,
                                State::ShuttingDown,
                            ),
                        };
                        if self.state() != from {
                            return Outcome::Transition(TransitionError {
                                from: self.state(),
                                attempted,
                            });
                        }
                        self.state = Some(to);
                        self.in_progress = self.list(kind).clone();
                        self.last_phase = self.in_progress.clone();
                        Outcome::Began(kind, self.in_progress.iter().map(|(id, _)| *id).collect())
                    }
                    Op::Finish(kind, report) => {
                        let (from, attempted) = match kind {
                            PhaseKind::Startup => (State::StartingUp, Transition::FinishStartup),
                            PhaseKind::Shutdown => {
                                (State::ShuttingDown, Transition::FinishShutdown)
                            }
                        };
                        if self.state() != from {
                            return Outcome::Transition(TransitionError {
                                from: self.state(),
                                attempted,
                            });
                        }
                        let reported: Vec<CallbackId> = reported_ids(
                            self.last_phase.iter().map(|(id, _)| *id).collect(),
                            report,
                        );
                        let expected: Vec<CallbackId> =
                            self.in_progress.iter().map(|(id, _)| *id).collect();
                        let mut seen = Vec::new();
                        for id in &reported {
                            if !expected.contains(id) {
                                return Outcome::Mismatch(Mismatch::Unexpected(*id));
                            }
                            if seen.contains(id) {
                                return Outcome::Mismatch(Mismatch::Duplicate(*id));
                            }
                            seen.push(*id);
                        }
                        if let Some(id) = expected.iter().find(|id| !seen.contains(id)) {
                            return Outcome::Mismatch(Mismatch::Missing(*id));
                        }
                        let failed: Vec<CallbackId> = self
                            .in_progress
                            .iter()
                            .filter(|(_, behaviour)| behaviour.fails)
                            .map(|(id, _)| *id)
                            .collect();
                        let total = self.in_progress.len();
                        self.in_progress.clear();
                        if failed.is_empty() {
                            self.state = Some(match kind {
                                PhaseKind::Startup => State::Running,
                                PhaseKind::Shutdown => State::Stopped,
                            });
                            return Outcome::Finished;
                        }
                        let details: Vec<String> = failed
                            .iter()
                            .map(|id| format!("callback #{}: boom {}", id.0, id.0))
                            .collect();
                        let message = format!(
                            "{kind} failed ({} of {total} callbacks): {}",
                            failed.len(),
                            details.join("; ")
                        );
                        self.state = Some(match kind {
                            PhaseKind::Startup => State::StartupFailed(message.clone()),
                            PhaseKind::Shutdown => State::ShutdownFailed(message.clone()),
                        });
                        Outcome::Failed(kind, total, failed, message)
                    }
                }
            }
        }

        /// The ids a report contains, given the ids of the phase the harness last began.
        fn reported_ids(mut ids: Vec<CallbackId>, report: Report) -> Vec<CallbackId> {
            match report {
                Report::AsRun => {}
                Report::Reversed => ids.reverse(),
                Report::DropFirst => {
                    if !ids.is_empty() {
                        ids.remove(0);
                    }
                }
                Report::DuplicateFirst => {
                    if let Some(first) = ids.first().copied() {
                        ids.push(first);
                    }
                }
                Report::AddUnknown => ids.push(CallbackId(u64::MAX)),
            }
            ids
        }

        /// The real lifespan plus what the harness remembers.
        #[derive(Default)]
        struct Real {
            lifespan: Lifespan,
            issued: u64,
            last_phase: Vec<(CallbackId, Callback)>,
        }

        impl Real {
            fn apply(&mut self, op: &Op) -> Outcome {
                match *op {
                    Op::Add(kind, behaviour) => {
                        let label = self.issued;
                        self.issued += 1;
                        let id = match kind {
                            PhaseKind::Startup => self
                                .lifespan
                                .add_startup_callback(behaviour.callback(label)),
                            PhaseKind::Shutdown => self
                                .lifespan
                                .add_shutdown_callback(behaviour.callback(label)),
                        };
                        Outcome::Added(id)
                    }
                    Op::Remove(kind, n) => {
                        let id = CallbackId((n % (self.issued as usize + 1)) as u64);
                        let result = match kind {
                            PhaseKind::Startup => self.lifespan.remove_startup_callback(id),
                            PhaseKind::Shutdown => self.lifespan.remove_shutdown_callback(id),
                        };
                        match result {
                            Ok(()) => Outcome::Removed,
                            Err(error) => Outcome::Unknown(error),
                        }
                    }
                    Op::Begin(kind) => {
                        let result = match kind {
                            PhaseKind::Startup => self.lifespan.begin_startup(),
                            PhaseKind::Shutdown => self.lifespan.begin_shutdown(),
                        };
                        match result {
                            Ok(phase) => {
                                assert_eq!(phase.kind(), kind);
                                self.last_phase = phase.into_callbacks();
                                Outcome::Began(
                                    kind,
                                    self.last_phase.iter().map(|(id, _)| *id).collect(),
                                )
                            }
                            Err(error) => Outcome::Transition(error),
                        }
                    }
                    Op::Finish(kind, report) => {
                        let ran = block_on(run_phase(self.last_phase.clone()));
                        let ids = reported_ids(ran.iter().map(|(id, _)| *id).collect(), report);
                        // Rebuild the results for the reported ids from what really ran.
                        let mut pool: Vec<_> =
                            ran.into_iter().map(|(id, r)| (id, Some(r))).collect();
                        let results: PhaseResults = ids
                            .into_iter()
                            .map(|id| {
                                let result = pool
                                    .iter_mut()
                                    .find(|(ran, r)| *ran == id && r.is_some())
                                    .and_then(|(_, r)| r.take())
                                    .unwrap_or(Ok(()));
                                (id, result)
                            })
                            .collect();
                        let result = match kind {
                            PhaseKind::Startup => self.lifespan.finish_startup(results),
                            PhaseKind::Shutdown => self.lifespan.finish_shutdown(results),
                        };
                        match result {
                            Ok(()) => Outcome::Finished,
                            Err(FinishError::Transition(error)) => Outcome::Transition(error),
                            Err(FinishError::Mismatch(mismatch)) => Outcome::Mismatch(mismatch),
                            Err(FinishError::Failed(error)) => {
                                assert_eq!(error.kind(), kind);
                                Outcome::Failed(
                                    error.kind(),
                                    error.total(),
                                    error.failures().iter().map(|(id, _)| *id).collect(),
                                    error.message().to_owned(),
                                )
                            }
                        }
                    }
                }
            }
        }

        proptest! {
                #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256)
        ))]

                #[test]
                fn lifespan_matches_the_model(ops in proptest::collection::vec(op(), 0..40)) {
                    let mut model = Model::default();
                    let mut real = Real::default();
                    for (step, op) in ops.iter().enumerate() {
                        let expected = model.apply(op);
                        let actual = real.apply(op);
                        prop_assert_eq!(&actual, &expected, "step {} {:?}", step, op);
                        prop_assert_eq!(real.lifespan.state(), &model.state(), "step {} {:?}", step, op);
                        let startup: Vec<_> = model.startup.iter().map(|(id, _)| *id).collect();
                        let shutdown: Vec<_> = model.shutdown.iter().map(|(id, _)| *id).collect();
                        prop_assert_eq!(real.lifespan.startup_callback_ids().collect::<Vec<_>>(), startup);
                        prop_assert_eq!(real.lifespan.shutdown_callback_ids().collect::<Vec<_>>(), shutdown);
                    }
                }
            }
    }
}
