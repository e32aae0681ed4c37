//! The Webhook Event handler registry, and the dispatch of an event to its handler
//! after the 204 is written.

use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use super::events::{EventContext, EventKind};
use super::exchange::Completed;
use super::handlers::{BoxFuture, HandlerError, OnConflict};
use super::response::event_acknowledged;

/// What an event handler returns: the event was handled, or a failure (logged; the
/// answer to Discord was already a 204 and does not change).
pub type EventResult = Result<(), HandlerError>;

/// An async Webhook Event handler: a shareable function from [`EventContext`] to a
/// runtime-independent future of [`EventResult`].
#[derive(Clone)]
pub struct EventHandler(Arc<dyn Fn(EventContext) -> BoxFuture<EventResult> + Send + Sync>);

impl EventHandler {
    /// Wrap an async function or closure (`|ctx| async move { … }`).
    pub fn new<F, Fut>(handler: F) -> Self
    where
        F: Fn(EventContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = EventResult> + Send + 'static,
    {
        Self(Arc::new(move |ctx| Box::pin(handler(ctx))))
    }

    /// Call the handler, producing its future (panics are not caught here).
    #[must_use]
    pub fn call(&self, ctx: EventContext) -> BoxFuture<EventResult> {
        (self.0)(ctx)
    }
}

impl fmt::Debug for EventHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EventHandler(..)")
    }
}

/// A handler is already registered for this event kind (`None`: the catch-all) and
/// replacing was not asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventAlreadySet(pub Option<EventKind>);

impl fmt::Display for EventAlreadySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(kind) => write!(f, "a {kind} event handler is already set"),
            None => f.write_str("a catch-all event handler is already set"),
        }
    }
}

impl std::error::Error for EventAlreadySet {}

/// The Webhook Event handler registry: at most one handler per [`EventKind`], plus a
/// catch-all for the kinds without one and for event types this crate does not know.
///
/// Every event is acknowledged with 204 before its handler runs (Discord retries an
/// event that is not acknowledged within 3 seconds); events without a handler are
/// acknowledged too, with a debug line.
///
/// ```
/// # use yuyo_core::endpoint::{EventHandlers, EventKind, WebhookEvent};
/// let mut events = EventHandlers::new();
/// events.on(EventKind::ApplicationAuthorized, |ctx| async move {
///     if let WebhookEvent::ApplicationAuthorized(data) = ctx.event() {
///         println!("{} added the app", data.user.name);
///     }
///     Ok(())
/// })?;
/// events.on_any(|ctx| async move {
///     println!("event {}", ctx.name());
///     Ok(())
/// })?;
/// # Ok::<(), yuyo_core::endpoint::EventAlreadySet>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct EventHandlers {
    slots: [Option<EventHandler>; 4],
    fallback: Option<EventHandler>,
}

impl EventHandlers {
    /// An empty registry (every event is acknowledged and dropped).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Register `handler` for `kind` (`None`: the catch-all). Returns the handler it
    /// replaced, if any.
    ///
    /// # Errors
    /// [`EventAlreadySet`] when the slot is taken and `on_conflict` is
    /// [`OnConflict::Error`]; the registry is unchanged then.
    pub fn set(
        &mut self,
        kind: Option<EventKind>,
        handler: EventHandler,
        on_conflict: OnConflict,
    ) -> Result<Option<EventHandler>, EventAlreadySet> {
        let slot = match kind {
            Some(kind) => &mut self.slots[kind.slot()],
            None => &mut self.fallback,
        };
        match (slot.is_some(), on_conflict) {
            (true, OnConflict::Error) => Err(EventAlreadySet(kind)),
            (true, OnConflict::Replace) | (false, _) => Ok(slot.replace(handler)),
        }
    }

    /// Register a handler for `kind`.
    ///
    /// # Errors
    /// [`EventAlreadySet`] if one is registered already.
    pub fn on<F, Fut>(&mut self, kind: EventKind, handler: F) -> Result<&mut Self, EventAlreadySet>
    where
        F: Fn(EventContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = EventResult> + Send + 'static,
    {
        self.set(Some(kind), EventHandler::new(handler), OnConflict::Error)?;
        Ok(self)
    }

    /// Register the catch-all: it gets every event whose kind has no handler of its
    /// own, and events of types this crate does not know ([`WebhookEvent::Unknown`]).
    ///
    /// # Errors
    /// [`EventAlreadySet`] if one is registered already.
    ///
    /// [`WebhookEvent::Unknown`]: super::WebhookEvent::Unknown
    pub fn on_any<F, Fut>(&mut self, handler: F) -> Result<&mut Self, EventAlreadySet>
    where
        F: Fn(EventContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = EventResult> + Send + 'static,
    {
        self.set(None, EventHandler::new(handler), OnConflict::Error)?;
        Ok(self)
    }

    /// Unregister the handler for `kind` (`None`: the catch-all), returning it.
    pub fn remove(&mut self, kind: Option<EventKind>) -> Option<EventHandler> {
        match kind {
            Some(kind) => self.slots[kind.slot()].take(),
            None => self.fallback.take(),
        }
    }

    /// The handler registered for `kind` (`None`: the catch-all), if any.
    #[must_use]
    pub fn get(&self, kind: Option<EventKind>) -> Option<&EventHandler> {
        match kind {
            Some(kind) => self.slots[kind.slot()].as_ref(),
            None => self.fallback.as_ref(),
        }
    }

    /// The handler an event of `kind` goes to: its own, else the catch-all.
    #[must_use]
    pub fn handler_for(&self, kind: Option<EventKind>) -> Option<&EventHandler> {
        kind.and_then(|kind| self.slots[kind.slot()].as_ref())
            .or(self.fallback.as_ref())
    }

    /// Whether no handler is registered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.fallback.is_none() && self.slots.iter().all(Option::is_none)
    }
}

/// A verified Webhook Event with a handler to run: acknowledge it with
/// [`acknowledge`](Self::acknowledge), which hands the handler back as after-response
/// work.
pub struct EventDispatch {
    handler: EventHandler,
    context: EventContext,
}

impl fmt::Debug for EventDispatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventDispatch")
            .field("event", &self.context.name())
            .field("body_len", &self.context.raw_body().len())
            .finish_non_exhaustive()
    }
}

impl EventDispatch {
    pub(crate) fn new(handler: EventHandler, context: EventContext) -> Self {
        Self { handler, context }
    }

    /// What the handler will be given.
    #[must_use]
    pub fn context(&self) -> &EventContext {
        &self.context
    }

    /// The answer (204 with `Content-Type: application/json`, no body) and, as its
    /// [`after`](Completed::after) work, the handler: the driver writes the response,
    /// then runs the handler, so Discord's 3 s deadline never depends on it.
    ///
    /// The after-work never panics and never fails: a handler's error or panic is
    /// logged (`error`) and goes no further.
    pub fn acknowledge(self) -> Completed {
        let Self { handler, context } = self;
        let name = context.name().to_owned();
        let after: BoxFuture<()> = Box::pin(async move {
            // Called here, not before: even the handler's synchronous part runs after
            // the response.
            let started = catch_unwind(AssertUnwindSafe(|| handler.call(context)));
            let outcome = match started {
                Ok(future) => CatchPanic(future).await,
                Err(payload) => Err(HandlerError::panicked(payload)),
            };
            match outcome {
                Ok(()) => tracing::debug!(event = %name, "webhook event handled"),
                Err(error) => {
                    tracing::error!(event = %name, %error, "webhook event handler failed")
                }
            }
        });
        Completed {
            response: event_acknowledged(),
            after: Some(after),
        }
    }
}

/// A handler's future whose panics come out as a [`HandlerError`].
struct CatchPanic(BoxFuture<EventResult>);

impl Future for CatchPanic {
    type Output = EventResult;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<EventResult> {
        match catch_unwind(AssertUnwindSafe(|| self.0.as_mut().poll(cx))) {
            Ok(poll) => poll,
            // Ready, so the future is not polled again.
            Err(payload) => Poll::Ready(Err(HandlerError::panicked(payload))),
        }
    }
}
