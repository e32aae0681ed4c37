//! A bot's lifecycle (yuyo's `AsgiBot.start/close/join/run`) as one sans-IO state
//! machine that every handle of a bot shares: the phase, the public key and its
//! single-flight discovery, and the startup and shutdown callbacks.
//!
//! Each operation is a [`Transition`] polled until [`BotStep::Done`]; the loop is
//! [`Bot`](super::bot::Bot)'s, over the adapter's
//! [`ClientRuntime`](super::runtime::ClientRuntime) (the REST call, the callbacks, the
//! wait):
//!
//! ```ignore
//! let mut transition = lifecycle.transition(Operation::Start);
//! loop {
//!     match transition.poll() {
//!         BotStep::Fetch(request) => transition.fetched(run_call(rest, request).await),
//!         BotStep::Run(phase) => transition.ran(phase.await),
//!         BotStep::Wait(version) => changes.listen_after(version)?.await,
//!         BotStep::Done(result) => return result,
//!     }
//! }
//! ```
//!
//! # Rules
//! - A managed bot refuses `Start`, `Close`, `Join` and `Run` by hand
//!   ([`LifecycleError::Managed`]); the server's lifespan drives it with
//!   [`Operation::ServeStart`] and [`Operation::ServeClose`].
//! - Start and close never overlap: one that finds the other in progress waits for it,
//!   then decides (a start after a start is [`LifecycleError::AlreadyRunning`], a close
//!   of a stopped bot [`LifecycleError::NotRunning`]).
//! - The public key is fetched once for all waiting starts. A transition dropped while
//!   fetching (a cancelled `start`) hands the fetch back, so the next start fetches
//!   again instead of waiting forever; one dropped while starting or closing leaves the
//!   bot stopped.
//! - Callbacks run as the server's lifespan runs its own: concurrently, every one to the
//!   end, any failure failing the phase with every message ([`run_phase`]). A failed
//!   startup leaves the bot stopped; a failed shutdown still stops it.
//! - Every change of phase or key is announced through the `on_change` hook with a new
//!   version; [`BotStep::Wait`] asks to wait for a version above the one given.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::bot::{BotCallbackId, BotCallbacks, BotEndpoint, LifecycleError, UnknownCallback};
use super::bot::{discovered_verifier, public_key_of};
use super::call::Response;
use super::discovery::{Begin, KeyDiscovery};
use super::error::RestError;
use super::request::RestRequest;
use crate::endpoint::{BoxFuture, Endpoint, Verifier};
use crate::lifespan::{Callback, CallbackError, CallbackId, PhaseResults, RunPhase, run_phase};
use crate::service::Service;

/// Hooks the adapter gives its lifecycle.
pub struct Hooks {
    /// Called (under the lifecycle's lock: keep it short) with the new version after
    /// every change, to wake [`BotStep::Wait`]s.
    pub on_change: Box<dyn Fn(u64) + Send + Sync>,
    /// Called when the bot stops (drops the REST client's idle connections).
    pub on_stop: Box<dyn Fn() + Send + Sync>,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hooks")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Stopped,
    Starting,
    Running,
    Closing,
}

struct State {
    phase: Phase,
    version: u64,
    verifier: Option<Verifier>,
    discovery: KeyDiscovery,
    callbacks: BotCallbacks<Callback>,
}

/// The lifecycle every handle of one bot shares; see the [module docs](self).
pub struct Lifecycle {
    managed: bool,
    endpoint: BotEndpoint,
    hooks: Hooks,
    state: Mutex<State>,
}

impl fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lifecycle")
            .field("managed", &self.managed)
            .field("phase", &self.lock().phase)
            .finish_non_exhaustive()
    }
}

/// What a [`Transition`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `start()` by hand.
    Start,
    /// `close()` by hand.
    Close,
    /// `join()`: wait until the running bot is closed.
    Join,
    /// `run()`: start, then wait until closed.
    Run,
    /// The server's lifespan starts a managed bot.
    ServeStart,
    /// The server's lifespan closes a managed bot.
    ServeClose,
    /// Before serving: a managed bot finds its public key (an unmanaged one must have
    /// been started); nothing else.
    FindKey,
}

/// What the adapter does next for a [`Transition`].
#[must_use]
pub enum BotStep {
    /// Call this request with the bot's REST client; report with
    /// [`Transition::fetched`].
    Fetch(RestRequest<serde_json::Value>),
    /// Run these callbacks (await the future); report with [`Transition::ran`].
    Run(RunPhase),
    /// Wait until the lifecycle announced a version above this one, then poll again.
    Wait(u64),
    /// The operation is over.
    Done(Result<(), LifecycleError>),
}

impl fmt::Debug for BotStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fetch(_) => f.write_str("Fetch"),
            Self::Run(phase) => f.debug_tuple("Run").field(phase).finish(),
            Self::Wait(version) => f.debug_tuple("Wait").field(version).finish(),
            Self::Done(result) => f.debug_tuple("Done").field(result).finish(),
        }
    }
}

impl Lifecycle {
    /// The lifecycle of a bot (`managed`: driven by the server's lifespan) whose
    /// endpoint is made by `endpoint` once the key (`verifier`, when given) is known.
    #[must_use]
    pub fn new(
        managed: bool,
        verifier: Option<Verifier>,
        discovery: KeyDiscovery,
        endpoint: BotEndpoint,
        hooks: Hooks,
    ) -> Self {
        Self {
            managed,
            endpoint,
            hooks,
            state: Mutex::new(State {
                phase: Phase::Stopped,
                version: 0,
                verifier,
                discovery,
                callbacks: BotCallbacks::default(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the server's lifespan starts and stops the bot.
    #[must_use]
    pub fn is_managed(&self) -> bool {
        self.managed
    }

    /// Whether the bot is running (closing counts as running until it stopped).
    #[must_use]
    pub fn is_alive(&self) -> bool {
        matches!(self.lock().phase, Phase::Running | Phase::Closing)
    }

    /// The public key, once given or discovered.
    #[must_use]
    pub fn public_key(&self) -> Option<[u8; 32]> {
        self.lock().verifier.as_ref().and_then(public_key_of)
    }

    /// The interaction endpoint, once the key is known.
    #[must_use]
    pub fn endpoint(&self) -> Option<Endpoint> {
        let verifier = self.lock().verifier.clone()?;
        Some(self.endpoint.endpoint(verifier))
    }

    /// Adds a startup callback; a failure fails the start.
    pub fn add_startup_callback(&self, callback: Callback) -> BotCallbackId {
        self.lock().callbacks.add_startup(callback)
    }

    /// Adds a shutdown callback; a failure fails the close (the bot stops anyway).
    pub fn add_shutdown_callback(&self, callback: Callback) -> BotCallbackId {
        self.lock().callbacks.add_shutdown(callback)
    }

    /// Removes a startup callback.
    ///
    /// # Errors
    /// [`UnknownCallback`] when `id` is not a registered startup callback.
    pub fn remove_startup_callback(&self, id: BotCallbackId) -> Result<(), UnknownCallback> {
        self.lock().callbacks.remove_startup(id)
    }

    /// Removes a shutdown callback.
    ///
    /// # Errors
    /// [`UnknownCallback`] when `id` is not a registered shutdown callback.
    pub fn remove_shutdown_callback(&self, id: BotCallbackId) -> Result<(), UnknownCallback> {
        self.lock().callbacks.remove_shutdown(id)
    }

    /// The service a bot's server runs, once the key is known (after
    /// [`Operation::FindKey`]); for a managed bot its lifespan runs
    /// [`Operation::ServeStart`] and [`Operation::ServeClose`] through `drive` (the
    /// adapter's transition driver).
    ///
    /// # Errors
    /// [`LifecycleError::NotRunning`] while the key is not known.
    pub fn service<F>(&self, drive: F) -> Result<Service, LifecycleError>
    where
        F: Fn(Operation) -> BoxFuture<Result<(), LifecycleError>> + Send + Sync + 'static,
    {
        let endpoint = self.endpoint().ok_or(LifecycleError::NotRunning)?;
        let mut service = Service::new(endpoint);
        if self.managed {
            let drive = Arc::new(drive);
            for operation in [Operation::ServeStart, Operation::ServeClose] {
                let drive = Arc::clone(&drive);
                let callback = move || {
                    let run = drive(operation);
                    async move { run.await.map_err(CallbackError::new) }
                };
                if operation == Operation::ServeStart {
                    service.add_startup_callback(callback);
                } else {
                    service.add_shutdown_callback(callback);
                }
            }
        }
        Ok(service)
    }

    /// Begins `operation`.
    #[must_use]
    pub fn transition(self: &Arc<Self>, operation: Operation) -> Transition {
        Transition {
            lifecycle: Arc::clone(self),
            operation,
            stage: Stage::Begin,
            outcome: None,
        }
    }

    /// Moves to `phase` and announces it.
    fn set(&self, state: &mut State, phase: Phase) {
        state.phase = phase;
        self.announce(state);
    }

    fn announce(&self, state: &mut State) {
        state.version += 1;
        (self.hooks.on_change)(state.version);
    }

    fn stop(&self, state: &mut State) {
        (self.hooks.on_stop)();
        self.set(state, Phase::Stopped);
    }
}

/// Where a transition is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Begin,
    /// Finding the key (this transition set `Starting`, unless it only finds the key).
    Key,
    /// This transition holds the key fetch.
    Fetching,
    /// Startup callbacks handed out.
    Starting,
    /// Shutdown callbacks handed out.
    Closing,
    /// Started by `Run`: waiting until stopped.
    AwaitStop,
    Done,
}

/// One lifecycle operation in progress; see the [module docs](self).
pub struct Transition {
    lifecycle: Arc<Lifecycle>,
    operation: Operation,
    stage: Stage,
    /// The result, once decided outside `poll`.
    outcome: Option<Result<(), LifecycleError>>,
}

impl fmt::Debug for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transition")
            .field("operation", &self.operation)
            .field("stage", &self.stage)
            .finish()
    }
}

fn callback_phase(callbacks: Vec<(BotCallbackId, Callback)>) -> RunPhase {
    run_phase(
        callbacks
            .into_iter()
            .map(|(id, callback)| (CallbackId::from_raw(id.get()), callback)),
    )
}

fn failures(results: PhaseResults) -> Result<(), LifecycleError> {
    LifecycleError::from_callback_failures(
        results
            .into_iter()
            .filter_map(|(_, result)| result.err().map(|error| error.to_string()))
            .collect(),
    )
}

impl Transition {
    /// What to do next.
    pub fn poll(&mut self) -> BotStep {
        if let Some(result) = self.outcome.take() {
            self.stage = Stage::Done;
            return BotStep::Done(result);
        }
        let lifecycle = Arc::clone(&self.lifecycle);
        let mut state = lifecycle.lock();
        let step = match self.stage {
            Stage::Begin => self.begin(&mut state),
            Stage::Key => self.find_key(&mut state),
            Stage::AwaitStop if state.phase == Phase::Stopped => BotStep::Done(Ok(())),
            Stage::AwaitStop => BotStep::Wait(state.version),
            // Steps handed out and not reported: given up as if dropped.
            Stage::Fetching | Stage::Starting | Stage::Closing => {
                self.hand_back(&mut state);
                BotStep::Done(Err(LifecycleError::NotRunning))
            }
            Stage::Done => BotStep::Done(Err(LifecycleError::NotRunning)),
        };
        if let BotStep::Done(_) = step {
            self.stage = Stage::Done;
        }
        step
    }

    fn begin(&mut self, state: &mut State) -> BotStep {
        let by_hand = matches!(
            self.operation,
            Operation::Start | Operation::Close | Operation::Join | Operation::Run
        );
        if by_hand && self.lifecycle.managed {
            return BotStep::Done(Err(LifecycleError::Managed));
        }
        match (self.operation, state.phase) {
            (Operation::FindKey, _) if !self.lifecycle.managed => BotStep::Done(Ok(())),
            (Operation::FindKey, _) => {
                self.stage = Stage::Key;
                self.find_key(state)
            }
            (Operation::Join, Phase::Stopped) => BotStep::Done(Err(LifecycleError::NotRunning)),
            (Operation::Join, _) => {
                self.stage = Stage::AwaitStop;
                BotStep::Wait(state.version)
            }
            (_, Phase::Starting | Phase::Closing) => BotStep::Wait(state.version),
            (Operation::Start | Operation::Run | Operation::ServeStart, Phase::Running) => {
                BotStep::Done(Err(LifecycleError::AlreadyRunning))
            }
            (Operation::Start | Operation::Run | Operation::ServeStart, Phase::Stopped) => {
                self.lifecycle.set(state, Phase::Starting);
                self.stage = Stage::Key;
                self.find_key(state)
            }
            (_, Phase::Stopped) => BotStep::Done(Err(LifecycleError::NotRunning)),
            (_, Phase::Running) => {
                self.lifecycle.set(state, Phase::Closing);
                self.stage = Stage::Closing;
                BotStep::Run(callback_phase(state.callbacks.shutdown_with_ids()))
            }
        }
    }

    fn find_key(&mut self, state: &mut State) -> BotStep {
        if state.verifier.is_some() {
            return self.key_known(state);
        }
        let error = match state.discovery.begin() {
            Ok(Begin::Ready(key)) => match discovered_verifier(&key) {
                Ok(verifier) => {
                    state.verifier = Some(verifier);
                    return self.key_known(state);
                }
                Err(error) => error,
            },
            Ok(Begin::Wait) => return BotStep::Wait(state.version),
            Ok(Begin::Fetch(request)) => {
                self.stage = Stage::Fetching;
                return BotStep::Fetch(request);
            }
            Err(error) => LifecycleError::KeyDiscovery(error),
        };
        self.abandon_start(state);
        BotStep::Done(Err(error))
    }

    fn key_known(&mut self, state: &mut State) -> BotStep {
        if self.operation == Operation::FindKey {
            return BotStep::Done(Ok(()));
        }
        self.stage = Stage::Starting;
        BotStep::Run(callback_phase(state.callbacks.startup_with_ids()))
    }

    /// A start that does not go on leaves the bot stopped.
    fn abandon_start(&self, state: &mut State) {
        if self.operation != Operation::FindKey {
            self.lifecycle.set(state, Phase::Stopped);
        }
    }

    /// Reports the outcome of a [`BotStep::Fetch`]; poll again after.
    pub fn fetched(&mut self, outcome: Result<Response<serde_json::Value>, RestError>) {
        if self.stage != Stage::Fetching {
            return;
        }
        self.stage = Stage::Key;
        let lifecycle = Arc::clone(&self.lifecycle);
        let mut state = lifecycle.lock();
        let found = state
            .discovery
            .finish(outcome)
            .map_err(LifecycleError::KeyDiscovery)
            .and_then(|key| discovered_verifier(&key));
        match found {
            Ok(verifier) => {
                state.verifier = Some(verifier);
                lifecycle.announce(&mut state);
            }
            Err(error) => {
                // Waiting starts fetch again (or fail the same way).
                lifecycle.announce(&mut state);
                self.abandon_start(&mut state);
                self.outcome = Some(Err(error));
            }
        }
    }

    /// Reports the outcome of a [`BotStep::Run`]; poll again after.
    pub fn ran(&mut self, results: PhaseResults) {
        let lifecycle = Arc::clone(&self.lifecycle);
        let mut state = lifecycle.lock();
        let result = failures(results);
        match self.stage {
            Stage::Starting => {
                let phase = if result.is_ok() {
                    Phase::Running
                } else {
                    Phase::Stopped
                };
                lifecycle.set(&mut state, phase);
                if result.is_ok() && self.operation == Operation::Run {
                    self.stage = Stage::AwaitStop;
                } else {
                    self.outcome = Some(result);
                }
            }
            Stage::Closing => {
                lifecycle.stop(&mut state);
                self.outcome = Some(result);
            }
            _ => {}
        }
    }
}

impl Drop for Transition {
    /// A transition dropped half-way (its future was cancelled) hands the key fetch
    /// back and leaves the bot stopped, so nothing waits for it forever.
    fn drop(&mut self) {
        let lifecycle = Arc::clone(&self.lifecycle);
        let mut state = lifecycle.lock();
        self.hand_back(&mut state);
    }
}

impl Transition {
    /// Gives up where the transition is: hands the key fetch back and leaves the bot
    /// stopped, so nothing waits for it forever.
    fn hand_back(&mut self, state: &mut State) {
        match self.stage {
            Stage::Fetching => {
                state.discovery.abandon();
                self.lifecycle.announce(state);
                self.abandon_start(state);
            }
            Stage::Key | Stage::Starting if self.operation != Operation::FindKey => {
                self.lifecycle.set(state, Phase::Stopped);
            }
            Stage::Closing => self.lifecycle.stop(state),
            _ => {}
        }
        self.stage = Stage::Done;
    }
}
