//! The handler registry: one async handler per interaction kind.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use twilight_model::application::interaction::{Interaction, InteractionType};

use super::reply::Reply;

/// A boxed, `Send` future that needs no particular runtime.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a handler answers: a reply (200), nothing (204: the bot answers later
/// through the REST API), or a failure (500).
pub type HandlerResult = Result<Option<Reply>, HandlerError>;

/// The kinds of interaction a handler can be registered for (Discord
/// interaction types 2 to 5; PING, type 1, is answered by the endpoint itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InteractionKind {
    /// Type 2: a slash, user or message command.
    Command,
    /// Type 3: a message component (button, select menu) was used.
    Component,
    /// Type 4: autocomplete for a command option.
    Autocomplete,
    /// Type 5: a modal was submitted.
    Modal,
}

impl InteractionKind {
    /// Every kind, in type-number order.
    pub const ALL: [Self; 4] = [
        Self::Command,
        Self::Component,
        Self::Autocomplete,
        Self::Modal,
    ];

    /// Discord's interaction type number.
    #[must_use]
    pub const fn type_number(self) -> u8 {
        match self {
            Self::Command => 2,
            Self::Component => 3,
            Self::Autocomplete => 4,
            Self::Modal => 5,
        }
    }

    /// The kind for a Discord interaction type number, if it is one of 2–5.
    #[must_use]
    pub const fn from_type_number(number: i128) -> Option<Self> {
        match number {
            2 => Some(Self::Command),
            3 => Some(Self::Component),
            4 => Some(Self::Autocomplete),
            5 => Some(Self::Modal),
            _ => None,
        }
    }

    /// The kind for twilight's interaction type (`None` for PING and types
    /// added to twilight later).
    #[must_use]
    pub const fn from_interaction_type(kind: InteractionType) -> Option<Self> {
        match kind {
            InteractionType::ApplicationCommand => Some(Self::Command),
            InteractionType::MessageComponent => Some(Self::Component),
            InteractionType::ApplicationCommandAutocomplete => Some(Self::Autocomplete),
            InteractionType::ModalSubmit => Some(Self::Modal),
            _ => None,
        }
    }

    /// A lower-case name for messages and logs.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Command => "command",
            Self::Component => "component",
            Self::Autocomplete => "autocomplete",
            Self::Modal => "modal",
        }
    }

    const fn slot(self) -> usize {
        match self {
            Self::Command => 0,
            Self::Component => 1,
            Self::Autocomplete => 2,
            Self::Modal => 3,
        }
    }
}

impl fmt::Display for InteractionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a handler is given: the verified, parsed interaction and the raw body
/// it was parsed from (for users of other models).
///
/// `Debug` shows the interaction with its token redacted (it lets anyone answer
/// or edit the interaction's messages for 15 minutes) and the body's length
/// only (the body holds the token too).
#[derive(Clone)]
pub struct Context {
    kind: InteractionKind,
    interaction: Box<Interaction>,
    body: Bytes,
}

impl Context {
    /// Assemble a context (drivers' tests can build one directly).
    #[must_use]
    pub fn new(kind: InteractionKind, interaction: Box<Interaction>, body: Bytes) -> Self {
        Self {
            kind,
            interaction,
            body,
        }
    }

    /// The kind of interaction.
    #[must_use]
    pub fn kind(&self) -> InteractionKind {
        self.kind
    }

    /// The typed interaction.
    #[must_use]
    pub fn interaction(&self) -> &Interaction {
        &self.interaction
    }

    /// The typed interaction, by value.
    #[must_use]
    pub fn into_interaction(self) -> Box<Interaction> {
        self.interaction
    }

    /// The request body exactly as received (and verified).
    #[must_use]
    pub fn raw_body(&self) -> &Bytes {
        &self.body
    }

    /// The interaction and the raw body, by value.
    #[must_use]
    pub fn into_parts(self) -> (Box<Interaction>, Bytes) {
        (self.interaction, self.body)
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("kind", &self.kind)
            .field("interaction", &Redacted(&self.interaction))
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// An [`Interaction`] whose `Debug` shows every field but the token.
struct Redacted<'a>(&'a Interaction);

impl fmt::Debug for Redacted<'_> {
    // Lists every field, so that a new one in twilight-model fails to compile here
    // instead of silently going unprinted or, worse, holding another secret.
    #[allow(deprecated)] // `channel_id`, deprecated in twilight-model but still a field.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Interaction {
            app_permissions,
            application_id,
            authorizing_integration_owners,
            channel,
            channel_id,
            context,
            data,
            entitlements,
            guild,
            guild_id,
            guild_locale,
            id,
            kind,
            locale,
            member,
            message,
            token: _,
            user,
        } = self.0;
        f.debug_struct("Interaction")
            .field("app_permissions", app_permissions)
            .field("application_id", application_id)
            .field(
                "authorizing_integration_owners",
                authorizing_integration_owners,
            )
            .field("channel", channel)
            .field("channel_id", channel_id)
            .field("context", context)
            .field("data", data)
            .field("entitlements", entitlements)
            .field("guild", guild)
            .field("guild_id", guild_id)
            .field("guild_locale", guild_locale)
            .field("id", id)
            .field("kind", kind)
            .field("locale", locale)
            .field("member", member)
            .field("message", message)
            .field("token", &"<redacted>")
            .field("user", user)
            .finish()
    }
}

/// Why a handler failed: an error it returned, or a panic caught while
/// running it. Either way the peer gets a 500 and the server goes on.
///
/// Any `std::error::Error + Send + Sync` converts into it, so `?` works in
/// handlers (which is why it does not implement `Error` itself, like
/// `anyhow::Error`).
pub struct HandlerError {
    kind: FailureKind,
    source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FailureKind {
    Error,
    Panic,
}

impl HandlerError {
    /// A failure described by `message`.
    #[must_use]
    pub fn msg(message: impl fmt::Display) -> Self {
        Self {
            kind: FailureKind::Error,
            source: message.to_string().into(),
        }
    }

    /// A failure from a panic payload (as caught by `catch_unwind`); keeps
    /// the panic message when it is a string.
    #[must_use]
    pub fn panicked(payload: Box<dyn Any + Send>) -> Self {
        let message = match payload.downcast::<String>() {
            Ok(message) => *message,
            Err(payload) => match payload.downcast::<&'static str>() {
                Ok(message) => (*message).to_owned(),
                Err(_) => "non-string panic payload".to_owned(),
            },
        };
        Self {
            kind: FailureKind::Panic,
            source: message.into(),
        }
    }

    /// Whether this failure was a panic.
    #[must_use]
    pub fn is_panic(&self) -> bool {
        self.kind == FailureKind::Panic
    }

    /// The underlying error (for a panic: its message).
    #[must_use]
    pub fn source_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.source
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for HandlerError {
    fn from(error: E) -> Self {
        Self {
            kind: FailureKind::Error,
            source: Box::new(error),
        }
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("kind", &self.kind)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            FailureKind::Error => write!(f, "handler failed: {}", self.source),
            FailureKind::Panic => write!(f, "handler panicked: {}", self.source),
        }
    }
}

/// An async interaction handler: a shareable function from [`Context`] to a
/// runtime-independent future of [`HandlerResult`].
#[derive(Clone)]
pub struct Handler(Arc<dyn Fn(Context) -> BoxFuture<HandlerResult> + Send + Sync + 'static>);

impl Handler {
    /// Wrap an async function or closure (`|ctx| async move { … }`).
    pub fn new<F, Fut>(handler: F) -> Self
    where
        F: Fn(Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        Self(Arc::new(move |ctx| Box::pin(handler(ctx))))
    }

    /// Call the handler, producing its future. Panics are not caught here;
    /// [`Dispatch::start`](super::Dispatch::start) catches them.
    #[must_use]
    pub fn call(&self, ctx: Context) -> BoxFuture<HandlerResult> {
        (self.0)(ctx)
    }
}

impl fmt::Debug for Handler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Handler(..)")
    }
}

/// What [`Handlers::set`] does when the kind already has a handler
/// (hikari's `replace=` flag).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnConflict {
    /// Keep the existing handler and return [`AlreadySet`].
    Error,
    /// Replace it (the old one is returned).
    Replace,
}

/// A handler is already registered for this kind and replacing was not asked
/// for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlreadySet(pub InteractionKind);

impl fmt::Display for AlreadySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a {} handler is already set", self.0)
    }
}

impl std::error::Error for AlreadySet {}

/// The handler registry: at most one handler per [`InteractionKind`], like
/// hikari's `InteractionServer.set_listener`.
///
/// ```
/// # use yuyo_core::endpoint::{Handlers, Reply};
/// let mut handlers = Handlers::new();
/// handlers.set_command(|ctx| async move {
///     let name = ctx.interaction().author().map_or("there", |user| user.name.as_str());
///     Ok(Some(Reply::message(format!("Hi {name}!"))))
/// })?;
/// assert!(handlers.set_command(|_| async { Ok(None) }).is_err());
/// # Ok::<(), yuyo_core::endpoint::AlreadySet>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Handlers {
    slots: [Option<Handler>; 4],
}

impl Handlers {
    /// An empty registry (every interaction would get 501).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Register `handler` for `kind`. Returns the handler it replaced, if any.
    ///
    /// # Errors
    /// [`AlreadySet`] when `kind` has a handler and `on_conflict` is
    /// [`OnConflict::Error`]; the registry is unchanged then.
    pub fn set(
        &mut self,
        kind: InteractionKind,
        handler: Handler,
        on_conflict: OnConflict,
    ) -> Result<Option<Handler>, AlreadySet> {
        let slot = &mut self.slots[kind.slot()];
        match (slot.is_some(), on_conflict) {
            (true, OnConflict::Error) => Err(AlreadySet(kind)),
            (true, OnConflict::Replace) | (false, _) => Ok(slot.replace(handler)),
        }
    }

    /// Register a command (type 2) handler.
    ///
    /// # Errors
    /// [`AlreadySet`] if one is registered already.
    pub fn set_command<F, Fut>(&mut self, handler: F) -> Result<&mut Self, AlreadySet>
    where
        F: Fn(Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.set_new(InteractionKind::Command, Handler::new(handler))
    }

    /// Register a message component (type 3) handler.
    ///
    /// # Errors
    /// [`AlreadySet`] if one is registered already.
    pub fn set_component<F, Fut>(&mut self, handler: F) -> Result<&mut Self, AlreadySet>
    where
        F: Fn(Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.set_new(InteractionKind::Component, Handler::new(handler))
    }

    /// Register an autocomplete (type 4) handler.
    ///
    /// # Errors
    /// [`AlreadySet`] if one is registered already.
    pub fn set_autocomplete<F, Fut>(&mut self, handler: F) -> Result<&mut Self, AlreadySet>
    where
        F: Fn(Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.set_new(InteractionKind::Autocomplete, Handler::new(handler))
    }

    /// Register a modal submit (type 5) handler.
    ///
    /// # Errors
    /// [`AlreadySet`] if one is registered already.
    pub fn set_modal<F, Fut>(&mut self, handler: F) -> Result<&mut Self, AlreadySet>
    where
        F: Fn(Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        self.set_new(InteractionKind::Modal, Handler::new(handler))
    }

    fn set_new(
        &mut self,
        kind: InteractionKind,
        handler: Handler,
    ) -> Result<&mut Self, AlreadySet> {
        self.set(kind, handler, OnConflict::Error)?;
        Ok(self)
    }

    /// Unregister the handler for `kind`, returning it; `None` if there was
    /// none (removing an absent handler is not an error, unlike hikari's
    /// `ValueError`, because the outcome — no handler — is the one asked for).
    pub fn remove(&mut self, kind: InteractionKind) -> Option<Handler> {
        self.slots[kind.slot()].take()
    }

    /// The handler for `kind`, if any.
    #[must_use]
    pub fn get(&self, kind: InteractionKind) -> Option<&Handler> {
        self.slots[kind.slot()].as_ref()
    }
}
