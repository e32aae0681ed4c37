//! Typed requests for answering an interaction: the first response through
//! the callback route, then the original response and follow-ups through
//! the interaction's webhook.
//!
//! Every method returns a [`RestRequest`], which any adapter's `call` runs;
//! [`Response::model`](super::Response::model) decodes the answer. These
//! routes are authenticated by the interaction token (no `Authorization`
//! header) and are outside the bot's global rate limit.

use std::fmt;

use bytes::Bytes;
use http::Method;
use serde::{Deserialize, Serialize};
use twilight_model::application::command::CommandOptionChoice;
use twilight_model::channel::Message;
use twilight_model::channel::message::Component;
use twilight_model::http::interaction::{InteractionResponse, InteractionResponseType};
use twilight_model::id::Id;
use twilight_model::id::marker::{ApplicationMarker, InteractionMarker, MessageMarker};

use super::message::{MessageCreate, MessageCreateJson, MessageEdit};
use super::request::{NoContent, Payload, RequestBody, RestRequest};
use super::route::Route;

/// The handle to answer one interaction with: its id, its application's id
/// and its token (valid 15 minutes; the first response is due within 3
/// seconds).
///
/// `Debug` shows the ids, never the token.
///
/// ```
/// # use yuyo_core::rest::{Interaction, MessageCreate, MessageEdit};
/// # use twilight_model::id::Id;
/// let interaction = Interaction::new(Id::new(1), Id::new(2), "token");
/// // Answer: "thinking…" for the invoking user only.
/// let defer = interaction.defer(true);
/// // Later: the real answer, then a follow-up.
/// let edit = interaction.edit_original(MessageEdit::new().content("Done"))?;
/// let more = interaction.followup(MessageCreate::new().content("One more thing"))?;
/// assert_eq!(edit.route().key().template(), "/webhooks/{webhook_id}/{webhook_token}/messages/@original");
/// # let _ = (defer, more);
/// # Ok::<_, serde_json::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Interaction {
    id: Id<InteractionMarker>,
    application_id: Id<ApplicationMarker>,
    token: String,
}

impl fmt::Debug for Interaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Interaction")
            .field("id", &self.id)
            .field("application_id", &self.application_id)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl From<&twilight_model::application::interaction::Interaction> for Interaction {
    fn from(interaction: &twilight_model::application::interaction::Interaction) -> Self {
        Self::new(
            interaction.id,
            interaction.application_id,
            interaction.token.clone(),
        )
    }
}

impl Interaction {
    /// The interaction `id` of `application_id`, answered with `token`.
    #[must_use]
    pub fn new(
        id: Id<InteractionMarker>,
        application_id: Id<ApplicationMarker>,
        token: impl Into<String>,
    ) -> Self {
        Self {
            id,
            application_id,
            token: token.into(),
        }
    }

    /// The interaction's id.
    #[must_use]
    pub fn id(&self) -> Id<InteractionMarker> {
        self.id
    }

    /// The application's id.
    #[must_use]
    pub fn application_id(&self) -> Id<ApplicationMarker> {
        self.application_id
    }

    /// `POST /interactions/{id}/{token}/callback`: the first response, any
    /// kind (see also [`Callback`]'s constructors).
    ///
    /// # Errors
    /// A model that cannot be serialised (e.g. a text select menu without
    /// options, which Discord would refuse too).
    pub fn respond(
        &self,
        response: impl Into<Callback>,
    ) -> Result<RestRequest<NoContent>, serde_json::Error> {
        let payload = response.into().into_payload()?;
        Ok(RestRequest::new(
            Route::interaction_callback(self.id, &self.token),
            payload.into_body(),
        ))
    }

    /// Like [`Interaction::respond`], with `?with_response=true`: Discord
    /// answers with what the response created
    /// ([`InteractionCallbackResponse::message`]).
    ///
    /// # Errors
    /// As [`Interaction::respond`].
    pub fn respond_returning(
        &self,
        response: impl Into<Callback>,
    ) -> Result<RestRequest<InteractionCallbackResponse>, serde_json::Error> {
        let payload = response.into().into_payload()?;
        Ok(RestRequest::new(
            Route::interaction_callback_with_response(self.id, &self.token),
            payload.into_body(),
        ))
    }

    /// Respond with a message (`CHANNEL_MESSAGE_WITH_SOURCE`), files included.
    ///
    /// # Errors
    /// As [`Interaction::respond`].
    pub fn respond_with_message(
        &self,
        message: MessageCreate,
    ) -> Result<RestRequest<NoContent>, serde_json::Error> {
        self.respond(Callback::message(message))
    }

    /// Acknowledge now, answer later with [`Interaction::edit_original`]
    /// (`DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE`; users see "thinking…", only
    /// the invoking user when `ephemeral`).
    #[must_use]
    pub fn defer(&self, ephemeral: bool) -> RestRequest<NoContent> {
        self.fixed_callback(if ephemeral {
            r#"{"type":5,"data":{"flags":64}}"#
        } else {
            r#"{"type":5}"#
        })
    }

    /// For components: acknowledge now, edit the message later
    /// (`DEFERRED_UPDATE_MESSAGE`).
    #[must_use]
    pub fn defer_update(&self) -> RestRequest<NoContent> {
        self.fixed_callback(r#"{"type":6}"#)
    }

    /// A response whose JSON is known in advance (so building it cannot fail).
    fn fixed_callback(&self, json: &'static str) -> RestRequest<NoContent> {
        RestRequest::new(
            Route::interaction_callback(self.id, &self.token),
            RequestBody::Json(Bytes::from_static(json.as_bytes())),
        )
    }

    /// `GET /webhooks/{application_id}/{token}/messages/@original`.
    #[must_use]
    pub fn original(&self) -> RestRequest<Message> {
        RestRequest::new(
            Route::original_response(Method::GET, self.application_id, &self.token),
            RequestBody::Empty,
        )
    }

    /// `PATCH /webhooks/{application_id}/{token}/messages/@original`: edit
    /// the response (e.g. the answer to a deferred interaction).
    ///
    /// # Errors
    /// As [`Interaction::respond`].
    pub fn edit_original(
        &self,
        edit: MessageEdit,
    ) -> Result<RestRequest<Message>, serde_json::Error> {
        Ok(RestRequest::new(
            Route::original_response(Method::PATCH, self.application_id, &self.token),
            edit.into_payload()?.into_body(),
        ))
    }

    /// `DELETE /webhooks/{application_id}/{token}/messages/@original`.
    #[must_use]
    pub fn delete_original(&self) -> RestRequest<NoContent> {
        RestRequest::new(
            Route::original_response(Method::DELETE, self.application_id, &self.token),
            RequestBody::Empty,
        )
    }

    /// `POST /webhooks/{application_id}/{token}?wait=true`: a follow-up
    /// message, answered with the message.
    ///
    /// # Errors
    /// As [`Interaction::respond`].
    pub fn followup(
        &self,
        message: MessageCreate,
    ) -> Result<RestRequest<Message>, serde_json::Error> {
        Ok(RestRequest::new(
            Route::create_followup(self.application_id, &self.token),
            message.into_payload()?.into_body(),
        ))
    }

    /// `GET /webhooks/{application_id}/{token}/messages/{message_id}`.
    #[must_use]
    pub fn followup_message(&self, message_id: Id<MessageMarker>) -> RestRequest<Message> {
        RestRequest::new(
            Route::followup(Method::GET, self.application_id, &self.token, message_id),
            RequestBody::Empty,
        )
    }

    /// `PATCH /webhooks/{application_id}/{token}/messages/{message_id}`.
    ///
    /// # Errors
    /// As [`Interaction::respond`].
    pub fn edit_followup(
        &self,
        message_id: Id<MessageMarker>,
        edit: MessageEdit,
    ) -> Result<RestRequest<Message>, serde_json::Error> {
        Ok(RestRequest::new(
            Route::followup(Method::PATCH, self.application_id, &self.token, message_id),
            edit.into_payload()?.into_body(),
        ))
    }

    /// `DELETE /webhooks/{application_id}/{token}/messages/{message_id}`.
    #[must_use]
    pub fn delete_followup(&self, message_id: Id<MessageMarker>) -> RestRequest<NoContent> {
        RestRequest::new(
            Route::followup(Method::DELETE, self.application_id, &self.token, message_id),
            RequestBody::Empty,
        )
    }
}

/// The first response to an interaction: a twilight [`InteractionResponse`]
/// (any kind, no files), or a message response built from a
/// [`MessageCreate`] (files included).
#[derive(Clone, Debug, PartialEq)]
pub enum Callback {
    /// A response as twilight models it.
    Response(InteractionResponse),
    /// A response of `kind` whose data is `message`.
    Message {
        /// The response type (4 message, 5 deferred message, 7 update).
        kind: InteractionResponseType,
        /// The message.
        message: MessageCreate,
    },
}

impl From<InteractionResponse> for Callback {
    fn from(response: InteractionResponse) -> Self {
        Self::Response(response)
    }
}

impl From<MessageCreate> for Callback {
    fn from(message: MessageCreate) -> Self {
        Self::message(message)
    }
}

impl Callback {
    /// Answer with a message (`CHANNEL_MESSAGE_WITH_SOURCE`, 4).
    #[must_use]
    pub fn message(message: MessageCreate) -> Self {
        Self::Message {
            kind: InteractionResponseType::ChannelMessageWithSource,
            message,
        }
    }

    /// For components: replace the message the component is on
    /// (`UPDATE_MESSAGE`, 7).
    #[must_use]
    pub fn update_message(message: MessageCreate) -> Self {
        Self::Message {
            kind: InteractionResponseType::UpdateMessage,
            message,
        }
    }

    /// Acknowledge now, answer later (`DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE`, 5).
    #[must_use]
    pub fn deferred() -> Self {
        Self::bare(InteractionResponseType::DeferredChannelMessageWithSource)
    }

    /// Like [`Callback::deferred`], and the answer is seen only by the
    /// invoking user.
    #[must_use]
    pub fn deferred_ephemeral() -> Self {
        Self::Message {
            kind: InteractionResponseType::DeferredChannelMessageWithSource,
            message: MessageCreate::new().ephemeral(),
        }
    }

    /// For components: acknowledge now, edit later (`DEFERRED_UPDATE_MESSAGE`, 6).
    #[must_use]
    pub fn deferred_update() -> Self {
        Self::bare(InteractionResponseType::DeferredUpdateMessage)
    }

    /// Autocomplete suggestions (`APPLICATION_COMMAND_AUTOCOMPLETE_RESULT`,
    /// 8; at most 25).
    #[must_use]
    pub fn autocomplete(choices: Vec<CommandOptionChoice>) -> Self {
        Self::Response(InteractionResponse {
            kind: InteractionResponseType::ApplicationCommandAutocompleteResult,
            data: Some(twilight_model::http::interaction::InteractionResponseData {
                choices: Some(choices),
                ..Default::default()
            }),
        })
    }

    /// Show a modal (`MODAL`, 9).
    #[must_use]
    pub fn modal(
        custom_id: impl Into<String>,
        title: impl Into<String>,
        components: Vec<Component>,
    ) -> Self {
        Self::Response(InteractionResponse {
            kind: InteractionResponseType::Modal,
            data: Some(twilight_model::http::interaction::InteractionResponseData {
                custom_id: Some(custom_id.into()),
                title: Some(title.into()),
                components: Some(components),
                ..Default::default()
            }),
        })
    }

    fn bare(kind: InteractionResponseType) -> Self {
        Self::Response(InteractionResponse { kind, data: None })
    }

    /// The body: JSON, or `multipart/form-data` when the message has files.
    ///
    /// # Errors
    /// A model that cannot be serialised (e.g. a text select menu without
    /// options, which Discord would refuse too).
    pub fn into_payload(self) -> Result<Payload, serde_json::Error> {
        match self {
            Self::Response(response) => Payload::json(&response),
            Self::Message { kind, message } => {
                message.into_payload_with(|data| serde_json::to_vec(&CallbackJson { kind, data }))
            }
        }
    }
}

#[derive(Serialize)]
struct CallbackJson<'a> {
    #[serde(rename = "type")]
    kind: InteractionResponseType,
    data: MessageCreateJson<'a>,
}

/// What Discord answers a response sent with `?with_response=true`
/// ([`Interaction::respond_returning`]): the interaction, and what the
/// response created.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct InteractionCallbackResponse {
    /// The interaction that was answered.
    pub interaction: InteractionCallback,
    /// What the response created (absent for some response types, e.g. a
    /// modal in older API versions).
    #[serde(default)]
    pub resource: Option<InteractionCallbackResource>,
}

impl InteractionCallbackResponse {
    /// The message the response created or updated, if any.
    #[must_use]
    pub fn message(&self) -> Option<&Message> {
        self.resource.as_ref()?.message.as_ref()
    }

    /// The message the response created or updated, if any, by value.
    #[must_use]
    pub fn into_message(self) -> Option<Message> {
        self.resource?.message
    }
}

/// The interaction part of an [`InteractionCallbackResponse`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct InteractionCallback {
    /// The interaction's id.
    pub id: Id<InteractionMarker>,
    /// The interaction's type, as Discord numbers it (2 application command,
    /// 3 component, 5 modal submit, …).
    #[serde(rename = "type")]
    pub kind: u8,
    /// The id of the message the response created, if it did.
    #[serde(default)]
    pub response_message_id: Option<Id<MessageMarker>>,
    /// Whether that message is in the "thinking…" state.
    #[serde(default)]
    pub response_message_loading: Option<bool>,
    /// Whether that message is ephemeral.
    #[serde(default)]
    pub response_message_ephemeral: Option<bool>,
    /// The activity instance, for `LAUNCH_ACTIVITY` responses.
    #[serde(default)]
    pub activity_instance_id: Option<String>,
}

/// The resource part of an [`InteractionCallbackResponse`].
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct InteractionCallbackResource {
    /// The response type that created it, as Discord numbers it (4 message,
    /// 5 deferred message, 7 update, …).
    #[serde(rename = "type")]
    pub kind: u8,
    /// The created or updated message (message responses).
    #[serde(default)]
    pub message: Option<Message>,
    /// The launched activity instance (`LAUNCH_ACTIVITY` responses), as sent.
    #[serde(default)]
    pub activity_instance: Option<serde_json::Value>,
}
