//! Discord Webhook Events: the envelope, the known event types and their typed data.
//!
//! Discord sends them to a second URL (see [`EndpointConfig::events_path`]), signed like
//! interactions: `{"version":1,"application_id":"…","type":0|1,"event":{"type":"…",
//! "timestamp":"…","data":{…}}}`. Type 0 is a PING, type 1 an event.
//!
//! [`EndpointConfig::events_path`]: super::EndpointConfig::events_path

use std::fmt;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value};
use twilight_model::application::monetization::Entitlement;
use twilight_model::id::Id;
use twilight_model::id::marker::{ApplicationMarker, GuildMarker};
use twilight_model::user::User;

use super::rejection::Rejection;

/// The Webhook Event types with typed data (`event.type`). Other types are still
/// acknowledged and reach a catch-all handler as [`WebhookEvent::Unknown`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// `APPLICATION_AUTHORIZED`: the app was added to a server or a user account.
    ApplicationAuthorized,
    /// `APPLICATION_DEAUTHORIZED`: the app was removed from a user account.
    ApplicationDeauthorized,
    /// `ENTITLEMENT_CREATE`: an entitlement was created.
    EntitlementCreate,
    /// `QUEST_USER_ENROLLMENT`: a user enrolled in a Quest.
    QuestUserEnrollment,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [Self; 4] = [
        Self::ApplicationAuthorized,
        Self::ApplicationDeauthorized,
        Self::EntitlementCreate,
        Self::QuestUserEnrollment,
    ];

    /// Discord's name for the event type (`event.type`).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::ApplicationAuthorized => "APPLICATION_AUTHORIZED",
            Self::ApplicationDeauthorized => "APPLICATION_DEAUTHORIZED",
            Self::EntitlementCreate => "ENTITLEMENT_CREATE",
            Self::QuestUserEnrollment => "QUEST_USER_ENROLLMENT",
        }
    }

    /// The kind Discord calls `name`, if it is one of these.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    pub(crate) const fn slot(self) -> usize {
        match self {
            Self::ApplicationAuthorized => 0,
            Self::ApplicationDeauthorized => 1,
            Self::EntitlementCreate => 2,
            Self::QuestUserEnrollment => 3,
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The data of `APPLICATION_AUTHORIZED`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct ApplicationAuthorized {
    /// Where the app was installed: 0 a server (guild install), 1 a user account.
    #[serde(default)]
    pub integration_type: Option<u8>,
    /// The user who authorized the app.
    pub user: User,
    /// The OAuth2 scopes granted.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The server the app was added to (guild installs only), as sent: a partial guild
    /// object that twilight-model's `Guild` cannot read (it lacks fields such as
    /// `large`). See [`ApplicationAuthorized::guild_id`].
    #[serde(default)]
    pub guild: Option<Value>,
}

impl ApplicationAuthorized {
    /// The id of the server the app was added to, for guild installs.
    #[must_use]
    pub fn guild_id(&self) -> Option<Id<GuildMarker>> {
        let id = self.guild.as_ref()?.get("id")?.as_str()?;
        id.parse().ok()
    }
}

/// The data of `APPLICATION_DEAUTHORIZED`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct ApplicationDeauthorized {
    /// The user who removed the app.
    pub user: User,
}

/// A Webhook Event with its typed data.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum WebhookEvent {
    /// `APPLICATION_AUTHORIZED`.
    ApplicationAuthorized(Box<ApplicationAuthorized>),
    /// `APPLICATION_DEAUTHORIZED`.
    ApplicationDeauthorized(Box<ApplicationDeauthorized>),
    /// `ENTITLEMENT_CREATE`: the entitlement.
    EntitlementCreate(Box<Entitlement>),
    /// `QUEST_USER_ENROLLMENT`: its data as sent (Discord has not documented a stable
    /// shape for it).
    QuestUserEnrollment(Value),
    /// An event type this crate does not know (Discord adds them): its data as sent.
    Unknown(Value),
}

impl WebhookEvent {
    /// The kind, `None` for [`WebhookEvent::Unknown`].
    #[must_use]
    pub fn kind(&self) -> Option<EventKind> {
        match self {
            Self::ApplicationAuthorized(_) => Some(EventKind::ApplicationAuthorized),
            Self::ApplicationDeauthorized(_) => Some(EventKind::ApplicationDeauthorized),
            Self::EntitlementCreate(_) => Some(EventKind::EntitlementCreate),
            Self::QuestUserEnrollment(_) => Some(EventKind::QuestUserEnrollment),
            Self::Unknown(_) => None,
        }
    }

    /// Types the data of an event of kind `kind`.
    fn from_data(kind: EventKind, data: Value) -> Result<Self, serde_json::Error> {
        Ok(match kind {
            EventKind::ApplicationAuthorized => {
                Self::ApplicationAuthorized(Box::new(serde_json::from_value(data)?))
            }
            EventKind::ApplicationDeauthorized => {
                Self::ApplicationDeauthorized(Box::new(serde_json::from_value(data)?))
            }
            EventKind::EntitlementCreate => {
                Self::EntitlementCreate(Box::new(serde_json::from_value(data)?))
            }
            EventKind::QuestUserEnrollment => Self::QuestUserEnrollment(data),
        })
    }
}

/// What a verified Webhook Events body holds.
pub(crate) enum Envelope {
    /// Type 0: Discord checks the URL.
    Ping,
    /// Type 1: an event.
    Event(EventContext),
}

/// A field of the Webhook Events envelope that is missing or has the wrong type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EnvelopeField {
    /// `type`: an integer.
    Type,
    /// `application_id`: a snowflake string.
    ApplicationId,
    /// `event`: an object (required when `type` is 1).
    Event,
    /// `event.type`: a string.
    EventType,
    /// `event.timestamp`: a string.
    EventTimestamp,
}

impl EnvelopeField {
    /// What the field should be, for the 400 message.
    #[must_use]
    pub const fn describe(self) -> &'static str {
        match self {
            Self::Type => "`type` is missing or not an integer",
            Self::ApplicationId => "`application_id` is missing or not a snowflake string",
            Self::Event => "`event` is missing or not an object",
            Self::EventType => "`event.type` is missing or not a string",
            Self::EventTimestamp => "`event.timestamp` is missing or not a string",
        }
    }
}

/// Reads a verified Webhook Events body.
///
/// # Errors
/// The rejection to answer with: 400 for a body that is not a JSON object or lacks an
/// envelope field, 501 for an envelope `type` other than 0 and 1, 500 for the data of a
/// known event type that cannot be read.
pub(crate) fn decode(body: Bytes) -> Result<Envelope, Rejection> {
    let Ok(mut root) = serde_json::from_slice::<Map<String, Value>>(&body) else {
        return Err(Rejection::NotJsonObject);
    };
    let kind = root.get("type").and_then(integer);
    match kind {
        None => return Err(Rejection::InvalidEvent(EnvelopeField::Type)),
        Some(0) => return Ok(Envelope::Ping),
        Some(1) => {}
        Some(other) => return Err(Rejection::UnsupportedEventType(other)),
    }
    let application_id = root
        .get("application_id")
        .and_then(Value::as_str)
        .and_then(|id| id.parse::<Id<ApplicationMarker>>().ok())
        .ok_or(Rejection::InvalidEvent(EnvelopeField::ApplicationId))?;
    let Some(Value::Object(mut event)) = root.remove("event") else {
        return Err(Rejection::InvalidEvent(EnvelopeField::Event));
    };
    let Some(Value::String(name)) = event.remove("type") else {
        return Err(Rejection::InvalidEvent(EnvelopeField::EventType));
    };
    let Some(Value::String(timestamp)) = event.remove("timestamp") else {
        return Err(Rejection::InvalidEvent(EnvelopeField::EventTimestamp));
    };
    let data = event.remove("data").unwrap_or(Value::Null);
    let event = match EventKind::from_name(&name) {
        Some(kind) => WebhookEvent::from_data(kind, data).map_err(|error| {
            tracing::error!(event = %name, %error, "could not read an authentic webhook event with the typed model");
            Rejection::UnreadableEvent(kind)
        })?,
        None => {
            tracing::debug!(event = %name, "a webhook event of a type yuyo does not know");
            WebhookEvent::Unknown(data)
        }
    };
    Ok(Envelope::Event(EventContext {
        application_id,
        name,
        timestamp,
        event,
        body,
    }))
}

/// A JSON integer as `i128` (`None` for any other value).
fn integer(value: &Value) -> Option<i128> {
    value
        .as_i64()
        .map(i128::from)
        .or_else(|| value.as_u64().map(i128::from))
}

/// What an event handler is given: the verified event, typed, and the raw body.
#[derive(Clone, Debug)]
pub struct EventContext {
    application_id: Id<ApplicationMarker>,
    name: String,
    timestamp: String,
    event: WebhookEvent,
    body: Bytes,
}

impl EventContext {
    /// Assemble a context (for tests of handlers).
    #[must_use]
    pub fn new(
        application_id: Id<ApplicationMarker>,
        name: impl Into<String>,
        timestamp: impl Into<String>,
        event: WebhookEvent,
        body: Bytes,
    ) -> Self {
        Self {
            application_id,
            name: name.into(),
            timestamp: timestamp.into(),
            event,
            body,
        }
    }

    /// The application the event is for.
    #[must_use]
    pub fn application_id(&self) -> Id<ApplicationMarker> {
        self.application_id
    }

    /// The event type as Discord named it (`event.type`), also for unknown types.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The kind, `None` for a type this crate does not know.
    #[must_use]
    pub fn kind(&self) -> Option<EventKind> {
        self.event.kind()
    }

    /// When the event happened, as Discord wrote it (`event.timestamp`, ISO 8601).
    #[must_use]
    pub fn timestamp(&self) -> &str {
        &self.timestamp
    }

    /// The typed event.
    #[must_use]
    pub fn event(&self) -> &WebhookEvent {
        &self.event
    }

    /// The typed event, by value.
    #[must_use]
    pub fn into_event(self) -> WebhookEvent {
        self.event
    }

    /// The request body exactly as received (and verified).
    #[must_use]
    pub fn raw_body(&self) -> &Bytes {
        &self.body
    }
}
