//! What a bot needs in one `use`: the endpoint's handlers and replies, the typed REST
//! requests and their errors, the service's options and twilight's models.
//!
//! Each adapter's `prelude` re-exports this one plus its runtime's `RestClient`, `Bot`
//! and `Server`, so a bot depends on its adapter alone:
//!
//! ```
//! use yuyo_core::prelude::*;
//! use twilight_model::id::Id;
//!
//! // The interaction's id, application id and token come with the interaction.
//! let interaction = Interaction::new(Id::new(1), Id::new(2), "token");
//! let followup = interaction.followup(MessageCreate::new().content("pong").ephemeral());
//! assert!(followup.is_ok());
//! let _reply = Reply::message("pong");
//! ```

pub use crate::endpoint::{
    Context, Endpoint, EndpointConfig, EventContext, EventHandlers, EventKind, EventResult,
    HandlerError, HandlerResult, Handlers, InteractionKind, Reply, Verifier, WebhookEvent,
};
pub use crate::lifespan::CallbackError;
pub use crate::multipart::FilePart;
pub use crate::rest::bot::{BotCallbackId, BotError, LifecycleError};
#[cfg(feature = "transport")]
pub use crate::rest::transport::{HttpSettings, ProxySettings};
pub use crate::rest::{
    ApplicationUpdate, Attachment, Callback, Commands, ConfigError, DiscordError, FieldError,
    HttpError, Interaction, InteractionCallbackResponse, MessageCreate, MessageEdit, NoContent,
    Payload, RequestBody, RequestError, Response, RestConfig, RestError, RestRequest, Route,
    TokenType,
};
#[cfg(feature = "tls")]
pub use crate::server::tls::{ServerTls, TlsError};
pub use crate::service::{ServeError, ServeOptions};
pub use twilight_model;
