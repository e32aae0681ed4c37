//! What a handler answers with.

use std::fmt;
use std::future::Future;

use bytes::Bytes;
use twilight_model::application::command::CommandOptionChoice;
use twilight_model::channel::message::{Component, MessageFlags};
use twilight_model::http::interaction::{
    InteractionResponse, InteractionResponseData, InteractionResponseType,
};

use super::handlers::BoxFuture;
use crate::multipart::{FileData, FilePart, FileSource};

/// The JSON part of a [`Reply`].
#[derive(Clone, Debug, PartialEq)]
pub enum ReplyPayload {
    /// A typed response, serialised by the endpoint.
    Typed(Box<InteractionResponse>),
    /// Raw JSON, sent as is (an escape hatch for responses twilight-model
    /// cannot express; not validated).
    RawJson(Bytes),
}

/// A handler's answer to an interaction: the response, files to attach, and
/// optional work to run after the response has been sent.
///
/// ```
/// # use yuyo_core::endpoint::Reply;
/// let reply = Reply::message("Here you go")
///     .ephemeral()
///     .with_file("report.txt", "all good")
///     .after(async { /* e.g. a follow-up through the REST API */ });
/// assert_eq!(reply.files().len(), 1);
/// ```
pub struct Reply {
    payload: ReplyPayload,
    files: Vec<FilePart>,
    after: Option<BoxFuture<()>>,
}

impl Reply {
    /// A reply with a typed response.
    #[must_use]
    pub fn new(response: InteractionResponse) -> Self {
        Self::from_payload(ReplyPayload::Typed(Box::new(response)))
    }

    /// A reply whose JSON is sent exactly as given.
    #[must_use]
    pub fn raw_json(json: impl Into<Bytes>) -> Self {
        Self::from_payload(ReplyPayload::RawJson(json.into()))
    }

    fn from_payload(payload: ReplyPayload) -> Self {
        Self {
            payload,
            files: Vec::new(),
            after: None,
        }
    }

    fn typed(kind: InteractionResponseType, data: Option<InteractionResponseData>) -> Self {
        Self::new(InteractionResponse { kind, data })
    }

    /// Answer with a message (`CHANNEL_MESSAGE_WITH_SOURCE`, 4).
    #[must_use]
    pub fn message(content: impl Into<String>) -> Self {
        Self::typed(
            InteractionResponseType::ChannelMessageWithSource,
            Some(InteractionResponseData {
                content: Some(content.into()),
                ..InteractionResponseData::default()
            }),
        )
    }

    /// Acknowledge now and send the message later through the REST API
    /// (`DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE`, 5; users see "thinking…").
    #[must_use]
    pub fn deferred() -> Self {
        Self::typed(
            InteractionResponseType::DeferredChannelMessageWithSource,
            None,
        )
    }

    /// For components: acknowledge now, edit the message later
    /// (`DEFERRED_UPDATE_MESSAGE`, 6).
    #[must_use]
    pub fn deferred_update() -> Self {
        Self::typed(InteractionResponseType::DeferredUpdateMessage, None)
    }

    /// For components: replace the content of the message the component is on
    /// (`UPDATE_MESSAGE`, 7). Use [`Reply::data_mut`] for embeds or components.
    #[must_use]
    pub fn update_message(content: impl Into<String>) -> Self {
        Self::typed(
            InteractionResponseType::UpdateMessage,
            Some(InteractionResponseData {
                content: Some(content.into()),
                ..InteractionResponseData::default()
            }),
        )
    }

    /// Autocomplete suggestions
    /// (`APPLICATION_COMMAND_AUTOCOMPLETE_RESULT`, 8; at most 25).
    #[must_use]
    pub fn autocomplete(choices: Vec<CommandOptionChoice>) -> Self {
        Self::typed(
            InteractionResponseType::ApplicationCommandAutocompleteResult,
            Some(InteractionResponseData {
                choices: Some(choices),
                ..InteractionResponseData::default()
            }),
        )
    }

    /// Show a modal (`MODAL`, 9).
    #[must_use]
    pub fn modal(
        custom_id: impl Into<String>,
        title: impl Into<String>,
        components: Vec<Component>,
    ) -> Self {
        Self::typed(
            InteractionResponseType::Modal,
            Some(InteractionResponseData {
                custom_id: Some(custom_id.into()),
                title: Some(title.into()),
                components: Some(components),
                ..InteractionResponseData::default()
            }),
        )
    }

    /// Only the invoking user sees the message (sets the `EPHEMERAL` flag).
    /// Creates the response data if needed (a deferred reply then becomes an
    /// ephemeral "thinking…"); has no effect on a raw JSON reply.
    #[must_use]
    pub fn ephemeral(mut self) -> Self {
        if let ReplyPayload::Typed(response) = &mut self.payload {
            let data = response
                .data
                .get_or_insert_with(InteractionResponseData::default);
            let flags = data.flags.unwrap_or_else(MessageFlags::empty);
            data.flags = Some(flags | MessageFlags::EPHEMERAL);
        }
        self
    }

    /// Attach a file held in memory, sent as `application/octet-stream`.
    #[must_use]
    pub fn with_file(mut self, filename: impl Into<String>, bytes: impl Into<Bytes>) -> Self {
        self.files.push(FilePart::memory(filename, bytes));
        self
    }

    /// Attach a file whose bytes the driver supplies while writing the
    /// response (e.g. streamed from disk), with an optional media type.
    #[must_use]
    pub fn with_file_source(
        mut self,
        filename: impl Into<String>,
        source: FileSource,
        content_type: Option<&str>,
    ) -> Self {
        let file = FilePart::new(filename, FileData::Source(source));
        self.files.push(match content_type {
            Some(content_type) => file.with_content_type(content_type),
            None => file,
        });
        self
    }

    /// Attach a prepared file part.
    #[must_use]
    pub fn with_file_part(mut self, file: FilePart) -> Self {
        self.files.push(file);
        self
    }

    /// Work for the driver to run after the response has been written (e.g.
    /// follow-up messages). The core never runs it; it is handed back in
    /// [`Completed::after`](super::Completed::after).
    #[must_use]
    pub fn after<F>(mut self, work: F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.after = Some(Box::pin(work));
        self
    }

    /// The response's JSON part.
    #[must_use]
    pub fn payload(&self) -> &ReplyPayload {
        &self.payload
    }

    /// The typed response's data, if the reply is typed; created empty if
    /// absent, for setting embeds, components, allowed mentions and so on.
    pub fn data_mut(&mut self) -> Option<&mut InteractionResponseData> {
        match &mut self.payload {
            ReplyPayload::Typed(response) => Some(
                response
                    .data
                    .get_or_insert_with(InteractionResponseData::default),
            ),
            ReplyPayload::RawJson(_) => None,
        }
    }

    /// The attached files.
    #[must_use]
    pub fn files(&self) -> &[FilePart] {
        &self.files
    }

    /// Take the reply apart.
    #[must_use]
    pub fn into_parts(self) -> (ReplyPayload, Vec<FilePart>, Option<BoxFuture<()>>) {
        (self.payload, self.files, self.after)
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply")
            .field("payload", &self.payload)
            .field("files", &self.files)
            .field("after", &self.after.as_ref().map(|_| ".."))
            .finish()
    }
}
