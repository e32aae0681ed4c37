//! Message bodies: what an interaction response, the original response or a
//! follow-up says ([`MessageCreate`], [`MessageEdit`]), and the files it
//! carries ([`Attachment`]).
//!
//! Both builders turn into a [`Payload`]: plain JSON without files,
//! `multipart/form-data` with them (`payload_json` plus `files[n]`, each
//! file listed in the JSON's `attachments` with `id: n`). Files on disk are
//! streamed by the adapter while it writes the body, never read here.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::Serialize;
use twilight_model::channel::message::{AllowedMentions, Component, Embed, MessageFlags};
use twilight_model::id::Id;
use twilight_model::id::marker::AttachmentMarker;
use twilight_model::poll::Poll;

use super::request::Payload;
use crate::multipart::{FileData, FilePart, FileSource};

/// A file to upload with a message: its name, contents (in memory or a file
/// the adapter streams from disk), and optional description (alt text) and
/// media type.
///
/// ```
/// # use yuyo_core::rest::Attachment;
/// let log = Attachment::from_bytes("log.txt", "all good").description("Today's log");
/// let chart = Attachment::from_path("/tmp/chart.png").content_type("image/png");
/// assert_eq!(chart.name(), "chart.png");
/// # let _ = log;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    filename: String,
    description: Option<String>,
    content_type: Option<String>,
    data: FileData,
}

impl Attachment {
    /// A file whose bytes are in memory.
    #[must_use]
    pub fn from_bytes(filename: impl Into<String>, bytes: impl Into<Bytes>) -> Self {
        Self::new(filename.into(), FileData::Memory(bytes.into()))
    }

    /// A file on disk, streamed by the adapter while it sends the request
    /// (its length is not known here, so the body goes without
    /// `Content-Length`; use [`Attachment::from_source`] with a length to
    /// send one). Named after the path's last component (`file` if it has
    /// none); rename with [`Attachment::filename`].
    #[must_use]
    pub fn from_path(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let filename = Path::new(&path).file_name().map_or_else(
            || "file".to_owned(),
            |name| name.to_string_lossy().into_owned(),
        );
        Self::from_source(filename, FileSource::Path { path, len: None })
    }

    /// A file the adapter supplies while it sends the request.
    #[must_use]
    pub fn from_source(filename: impl Into<String>, source: FileSource) -> Self {
        Self::new(filename.into(), FileData::Source(source))
    }

    fn new(filename: String, data: FileData) -> Self {
        Self {
            filename,
            description: None,
            content_type: None,
            data,
        }
    }

    /// Upload under another name (what Discord shows, and what
    /// `attachment://name` in an embed refers to).
    #[must_use]
    pub fn filename(mut self, filename: impl Into<String>) -> Self {
        self.filename = filename.into();
        self
    }

    /// The description (alt text).
    #[must_use]
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// The media type (e.g. `image/png`; `application/octet-stream` without).
    #[must_use]
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// The name it is uploaded under.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.filename
    }

    /// The contents.
    #[must_use]
    pub fn data(&self) -> &FileData {
        &self.data
    }

    /// Its entry in the JSON's `attachments`, as upload `index`.
    fn entry(&self, index: usize) -> AttachmentEntry<'_> {
        AttachmentEntry {
            id: index as u64,
            filename: Some(&self.filename),
            description: self.description.as_deref(),
        }
    }

    fn into_part(self) -> FilePart {
        let part = FilePart::new(self.filename, self.data);
        match self.content_type {
            Some(content_type) => part.with_content_type(content_type),
            None => part,
        }
    }
}

impl From<FilePart> for Attachment {
    fn from(part: FilePart) -> Self {
        let mut attachment = Self::new(part.filename().to_owned(), part.data().clone());
        attachment.content_type = part.content_type().map(str::to_owned);
        attachment
    }
}

/// An entry of a message's `attachments`: a new upload (`id` = its
/// `files[n]` index) or an existing attachment to keep (its snowflake).
#[derive(Serialize)]
struct AttachmentEntry<'a> {
    id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    filename: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
}

/// Encode `json` with `attachments` as the body: JSON alone without files.
fn payload(json: Vec<u8>, attachments: Vec<Attachment>) -> Payload {
    Payload::raw_json(json).with_files(attachments.into_iter().map(Attachment::into_part))
}

/// A new message: an interaction's message response or a follow-up.
///
/// ```
/// # use yuyo_core::rest::{Attachment, MessageCreate};
/// # use twilight_model::channel::message::AllowedMentions;
/// let message = MessageCreate::new()
///     .content("Here is the report, <@123>")
///     .attachment(Attachment::from_bytes("report.txt", "all good"))
///     .allowed_mentions(AllowedMentions::default()) // ping nobody
///     .ephemeral();
/// let payload = message.into_payload()?;
/// assert_eq!(payload.files().len(), 1);
/// # Ok::<_, serde_json::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MessageCreate {
    content: Option<String>,
    embeds: Vec<Embed>,
    components: Vec<Component>,
    attachments: Vec<Attachment>,
    allowed_mentions: Option<AllowedMentions>,
    flags: Option<MessageFlags>,
    tts: bool,
    poll: Option<Poll>,
}

/// The JSON of a [`MessageCreate`] (also an interaction response's `data`).
#[derive(Serialize)]
pub(super) struct MessageCreateJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    embeds: &'a [Embed],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    components: &'a [Component],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    attachments: Vec<AttachmentEntry<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed_mentions: Option<&'a AllowedMentions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    flags: Option<MessageFlags>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    tts: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    poll: Option<&'a Poll>,
}

impl MessageCreate {
    /// An empty message (give it content, an embed, a component, a file or a
    /// poll: Discord refuses empty messages).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The text (up to 2000 characters).
    #[must_use]
    pub fn content(mut self, content: impl Into<String>) -> Self {
        self.content = Some(content.into());
        self
    }

    /// Add an embed (up to 10).
    #[must_use]
    pub fn embed(mut self, embed: Embed) -> Self {
        self.embeds.push(embed);
        self
    }

    /// Add embeds.
    #[must_use]
    pub fn embeds(mut self, embeds: impl IntoIterator<Item = Embed>) -> Self {
        self.embeds.extend(embeds);
        self
    }

    /// Add a top-level component (an action row, or with
    /// [`MessageFlags::IS_COMPONENTS_V2`] any layout component).
    #[must_use]
    pub fn component(mut self, component: Component) -> Self {
        self.components.push(component);
        self
    }

    /// Add top-level components.
    #[must_use]
    pub fn components(mut self, components: impl IntoIterator<Item = Component>) -> Self {
        self.components.extend(components);
        self
    }

    /// Upload a file with the message.
    #[must_use]
    pub fn attachment(mut self, attachment: Attachment) -> Self {
        self.attachments.push(attachment);
        self
    }

    /// Upload files with the message.
    #[must_use]
    pub fn attachments(mut self, attachments: impl IntoIterator<Item = Attachment>) -> Self {
        self.attachments.extend(attachments);
        self
    }

    /// Who may be pinged (`AllowedMentions::default()` pings nobody).
    #[must_use]
    pub fn allowed_mentions(mut self, allowed_mentions: AllowedMentions) -> Self {
        self.allowed_mentions = Some(allowed_mentions);
        self
    }

    /// Add flags (Discord accepts `EPHEMERAL`, `SUPPRESS_EMBEDS`,
    /// `SUPPRESS_NOTIFICATIONS` and `IS_COMPONENTS_V2` here).
    #[must_use]
    pub fn flags(mut self, flags: MessageFlags) -> Self {
        self.flags = Some(self.flags.unwrap_or_else(MessageFlags::empty) | flags);
        self
    }

    /// Only the user who invoked the interaction sees the message.
    #[must_use]
    pub fn ephemeral(self) -> Self {
        self.flags(MessageFlags::EPHEMERAL)
    }

    /// Read the message aloud.
    #[must_use]
    pub fn tts(mut self, tts: bool) -> Self {
        self.tts = tts;
        self
    }

    /// Attach a poll.
    #[must_use]
    pub fn poll(mut self, poll: Poll) -> Self {
        self.poll = Some(poll);
        self
    }

    /// The files to upload.
    #[must_use]
    pub fn files(&self) -> &[Attachment] {
        &self.attachments
    }

    pub(super) fn json(&self) -> MessageCreateJson<'_> {
        MessageCreateJson {
            content: self.content.as_deref(),
            embeds: &self.embeds,
            components: &self.components,
            attachments: self
                .attachments
                .iter()
                .enumerate()
                .map(|(index, attachment)| attachment.entry(index))
                .collect(),
            allowed_mentions: self.allowed_mentions.as_ref(),
            flags: self.flags,
            tts: self.tts,
            poll: self.poll.as_ref(),
        }
    }

    /// Split into the files and the message JSON as `encode` encodes it
    /// (e.g. wrapped in an interaction response).
    pub(super) fn into_payload_with(
        self,
        encode: impl FnOnce(MessageCreateJson<'_>) -> Result<Vec<u8>, serde_json::Error>,
    ) -> Result<Payload, serde_json::Error> {
        let json = encode(self.json())?;
        Ok(payload(json, self.attachments))
    }

    /// The body: JSON, or `multipart/form-data` when there are files.
    ///
    /// # Errors
    /// A model that cannot be serialised (e.g. a text select menu without
    /// options, which Discord would refuse too).
    pub fn into_payload(self) -> Result<Payload, serde_json::Error> {
        self.into_payload_with(|json| serde_json::to_vec(&json))
    }
}

/// Changes to a message: the original response or a follow-up. Fields left
/// alone stay as they are; `clear_*` removes them.
///
/// Existing attachments are kept unless the edit lists attachments: then
/// only those listed ([`MessageEdit::keep_attachment`]) and the new uploads
/// remain.
///
/// ```
/// # use yuyo_core::rest::{Attachment, MessageEdit};
/// let edit = MessageEdit::new()
///     .content("Done!")
///     .clear_components()
///     .attachment(Attachment::from_bytes("result.csv", "a,b\n1,2\n"));
/// assert_eq!(edit.into_payload()?.files().len(), 1);
/// # Ok::<_, serde_json::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MessageEdit {
    content: Option<Option<String>>,
    embeds: Option<Vec<Embed>>,
    components: Option<Vec<Component>>,
    keep: Option<Vec<Id<AttachmentMarker>>>,
    attachments: Vec<Attachment>,
    allowed_mentions: Option<AllowedMentions>,
    flags: Option<MessageFlags>,
}

#[derive(Serialize)]
struct MessageEditJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    embeds: Option<&'a [Embed]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    components: Option<&'a [Component]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attachments: Option<Vec<AttachmentEntry<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed_mentions: Option<&'a AllowedMentions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    flags: Option<MessageFlags>,
}

impl MessageEdit {
    /// An edit that changes nothing yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Replace the text.
    #[must_use]
    pub fn content(mut self, content: impl Into<String>) -> Self {
        self.content = Some(Some(content.into()));
        self
    }

    /// Remove the text.
    #[must_use]
    pub fn clear_content(mut self) -> Self {
        self.content = Some(None);
        self
    }

    /// Replace the embeds with these (added to those given before).
    #[must_use]
    pub fn embed(mut self, embed: Embed) -> Self {
        self.embeds.get_or_insert_with(Vec::new).push(embed);
        self
    }

    /// Replace the embeds with these (added to those given before).
    #[must_use]
    pub fn embeds(mut self, embeds: impl IntoIterator<Item = Embed>) -> Self {
        self.embeds.get_or_insert_with(Vec::new).extend(embeds);
        self
    }

    /// Remove every embed.
    #[must_use]
    pub fn clear_embeds(mut self) -> Self {
        self.embeds = Some(Vec::new());
        self
    }

    /// Replace the components with these (added to those given before).
    #[must_use]
    pub fn component(mut self, component: Component) -> Self {
        self.components.get_or_insert_with(Vec::new).push(component);
        self
    }

    /// Replace the components with these (added to those given before).
    #[must_use]
    pub fn components(mut self, components: impl IntoIterator<Item = Component>) -> Self {
        self.components
            .get_or_insert_with(Vec::new)
            .extend(components);
        self
    }

    /// Remove every component (e.g. disable buttons after a click).
    #[must_use]
    pub fn clear_components(mut self) -> Self {
        self.components = Some(Vec::new());
        self
    }

    /// Keep an existing attachment (by its id, from the message) when the
    /// edit lists attachments.
    #[must_use]
    pub fn keep_attachment(mut self, id: Id<AttachmentMarker>) -> Self {
        self.keep.get_or_insert_with(Vec::new).push(id);
        self
    }

    /// Remove every existing attachment not kept with
    /// [`MessageEdit::keep_attachment`].
    #[must_use]
    pub fn clear_attachments(mut self) -> Self {
        self.keep.get_or_insert_with(Vec::new);
        self
    }

    /// Upload a file (existing attachments are then replaced unless kept).
    #[must_use]
    pub fn attachment(mut self, attachment: Attachment) -> Self {
        self.keep.get_or_insert_with(Vec::new);
        self.attachments.push(attachment);
        self
    }

    /// Upload files (existing attachments are then replaced unless kept).
    #[must_use]
    pub fn attachments(mut self, attachments: impl IntoIterator<Item = Attachment>) -> Self {
        self.keep.get_or_insert_with(Vec::new);
        self.attachments.extend(attachments);
        self
    }

    /// Who may be pinged by the new content.
    #[must_use]
    pub fn allowed_mentions(mut self, allowed_mentions: AllowedMentions) -> Self {
        self.allowed_mentions = Some(allowed_mentions);
        self
    }

    /// Set the flags (Discord accepts `SUPPRESS_EMBEDS` and
    /// `IS_COMPONENTS_V2` on edits).
    #[must_use]
    pub fn flags(mut self, flags: MessageFlags) -> Self {
        self.flags = Some(flags);
        self
    }

    fn json(&self) -> MessageEditJson<'_> {
        let attachments = self.keep.as_ref().map(|keep| {
            let kept = keep.iter().map(|id| AttachmentEntry {
                id: id.get(),
                filename: None,
                description: None,
            });
            let uploads = self
                .attachments
                .iter()
                .enumerate()
                .map(|(index, attachment)| attachment.entry(index));
            kept.chain(uploads).collect()
        });
        MessageEditJson {
            content: self.content.as_ref().map(Option::as_deref),
            embeds: self.embeds.as_deref(),
            components: self.components.as_deref(),
            attachments,
            allowed_mentions: self.allowed_mentions.as_ref(),
            flags: self.flags,
        }
    }

    /// The body: JSON, or `multipart/form-data` when there are new files.
    ///
    /// # Errors
    /// A model that cannot be serialised (e.g. a text select menu without
    /// options, which Discord would refuse too).
    pub fn into_payload(self) -> Result<Payload, serde_json::Error> {
        let json = serde_json::to_vec(&self.json())?;
        Ok(payload(json, self.attachments))
    }
}
