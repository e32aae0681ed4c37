//! What is sent: bodies, payloads with files, and typed requests for the
//! routes an interaction bot needs.

use std::fmt;
use std::marker::PhantomData;

use crate::endpoint::ReplyPayload;
use crate::multipart::{FilePart, MultipartBody};
use bytes::Bytes;
use http::{HeaderValue, Method};
use serde::{Deserialize, Serialize};
use twilight_model::channel::Message;
use twilight_model::id::Id;
use twilight_model::id::marker::{ApplicationMarker, InteractionMarker, MessageMarker};
use twilight_model::oauth::{Application, CurrentAuthorizationInformation};

use super::route::Route;

/// A request body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestBody {
    /// No body.
    Empty,
    /// A JSON document (`Content-Type: application/json`).
    Json(Bytes),
    /// `multipart/form-data` with a `payload_json` part and files, encoded by
    /// the same encoder as the endpoint's replies. Its
    /// [`Segment::File`](crate::multipart::Segment::File)s are
    /// streamed by the driver.
    Multipart(MultipartBody),
}

impl RequestBody {
    /// The `Content-Type` to send, if there is a body.
    #[must_use]
    pub fn content_type(&self) -> Option<HeaderValue> {
        match self {
            Self::Empty => None,
            Self::Json(_) => Some(HeaderValue::from_static("application/json")),
            Self::Multipart(body) => Some(body.content_type()),
        }
    }

    /// The body's length, when known.
    #[must_use]
    pub fn content_length(&self) -> Option<u64> {
        match self {
            Self::Empty => Some(0),
            Self::Json(json) => Some(json.len() as u64),
            Self::Multipart(body) => body.content_length(),
        }
    }

    /// The whole body in one buffer, unless a file is streamed by the driver.
    #[must_use]
    pub fn to_bytes(&self) -> Option<Bytes> {
        match self {
            Self::Empty => Some(Bytes::new()),
            Self::Json(json) => Some(json.clone()),
            Self::Multipart(body) => body.to_bytes(),
        }
    }
}

/// A message-like JSON body plus files: JSON alone when there are no files,
/// `multipart/form-data` otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    json: Bytes,
    files: Vec<FilePart>,
}

impl Payload {
    /// Serialise `value` (e.g. an `InteractionResponse`, or
    /// `InteractionResponseData` for messages).
    ///
    /// # Errors
    /// The serialiser's error (twilight-model types do not fail).
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        Ok(Self::raw_json(serde_json::to_vec(value)?))
    }

    /// JSON sent exactly as given (not validated).
    #[must_use]
    pub fn raw_json(json: impl Into<Bytes>) -> Self {
        Self {
            json: json.into(),
            files: Vec::new(),
        }
    }

    /// The JSON part of an endpoint [`Reply`](crate::endpoint::Reply),
    /// e.g. to send a reply through the callback route instead of the HTTP
    /// answer.
    ///
    /// # Errors
    /// The serialiser's error.
    pub fn from_reply(payload: &ReplyPayload) -> Result<Self, serde_json::Error> {
        match payload {
            ReplyPayload::Typed(response) => Self::json(response),
            ReplyPayload::RawJson(json) => Ok(Self::raw_json(json.clone())),
        }
    }

    /// Attach a file (`files[n]`, in order).
    #[must_use]
    pub fn with_file(mut self, file: FilePart) -> Self {
        self.files.push(file);
        self
    }

    /// Attach files.
    #[must_use]
    pub fn with_files(mut self, files: impl IntoIterator<Item = FilePart>) -> Self {
        self.files.extend(files);
        self
    }

    /// The JSON.
    #[must_use]
    pub fn json_bytes(&self) -> &Bytes {
        &self.json
    }

    /// The files.
    #[must_use]
    pub fn files(&self) -> &[FilePart] {
        &self.files
    }

    /// The body to send.
    #[must_use]
    pub fn into_body(self) -> RequestBody {
        if self.files.is_empty() {
            RequestBody::Json(self.json)
        } else {
            RequestBody::Multipart(MultipartBody::encode(self.json, self.files))
        }
    }
}

/// The model of answers without a body (`204 No Content`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct NoContent;

/// A request: route, body, optional audit-log reason, and the model `T` its
/// successful answer decodes to ([`Response::model`](super::Response::model)).
pub struct RestRequest<T> {
    route: Route,
    body: RequestBody,
    audit_log_reason: Option<HeaderValue>,
    model: PhantomData<fn() -> T>,
}

impl<T> Clone for RestRequest<T> {
    fn clone(&self) -> Self {
        Self {
            route: self.route.clone(),
            body: self.body.clone(),
            audit_log_reason: self.audit_log_reason.clone(),
            model: PhantomData,
        }
    }
}

impl<T> fmt::Debug for RestRequest<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestRequest")
            .field("route", &self.route)
            .field("body", &self.body)
            .field("audit_log_reason", &self.audit_log_reason)
            .finish()
    }
}

/// Percent-encode an audit-log reason (Discord expects it URL-encoded, which
/// also keeps it a valid header value).
fn encode_reason(reason: &str) -> HeaderValue {
    let mut out = String::with_capacity(reason.len());
    for byte in reason.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b' ') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(byte >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(byte & 0xF)]));
        }
    }
    let encoded = out.trim().replace(' ', "%20");
    HeaderValue::try_from(encoded).unwrap_or_else(|_| HeaderValue::from_static(""))
}

impl<T> RestRequest<T> {
    /// A request for `route` with `body`, whose answer decodes to `T`.
    /// With [`Route::custom`] this is the generic `request(method, path, body)`.
    #[must_use]
    pub fn new(route: Route, body: RequestBody) -> Self {
        Self {
            route,
            body,
            audit_log_reason: None,
            model: PhantomData,
        }
    }

    /// Send `X-Audit-Log-Reason` (URL-encoded).
    #[must_use]
    pub fn with_audit_log_reason(mut self, reason: &str) -> Self {
        self.audit_log_reason = Some(encode_reason(reason));
        self
    }

    /// Decode the answer to `U` instead.
    #[must_use]
    pub fn expect<U>(self) -> RestRequest<U> {
        RestRequest {
            route: self.route,
            body: self.body,
            audit_log_reason: self.audit_log_reason,
            model: PhantomData,
        }
    }

    /// The route.
    #[must_use]
    pub fn route(&self) -> &Route {
        &self.route
    }

    /// The body.
    #[must_use]
    pub fn body(&self) -> &RequestBody {
        &self.body
    }

    /// The encoded `X-Audit-Log-Reason`, if set.
    #[must_use]
    pub fn audit_log_reason(&self) -> Option<&HeaderValue> {
        self.audit_log_reason.as_ref()
    }
}

impl RestRequest<Application> {
    /// `GET /applications/@me`: the bot's application.
    #[must_use]
    pub fn fetch_application() -> Self {
        Self::new(Route::fetch_application(), RequestBody::Empty)
    }
}

/// The fields of `PATCH /applications/@me` that serve an HTTP bot: where Discord sends
/// interactions and event webhooks. Fields left `None` are not sent (unchanged).
///
/// Setting `interactions_endpoint_url` (or `event_webhooks_url`) makes Discord validate
/// the URL first: it sends a signed PING and a request with a bad signature, and saves
/// the URL only if they are answered `200 {"type":1}` (`204` for event webhooks) and
/// `401` within 3 seconds. Otherwise it answers 400, code 50035, with the field's error.
///
/// ```
/// # use yuyo_core::rest::{ApplicationUpdate, RestRequest};
/// let update = ApplicationUpdate {
///     interactions_endpoint_url: Some("https://bot.example.com/interactions".into()),
///     ..ApplicationUpdate::default()
/// };
/// let request = RestRequest::update_application(&update)?;
/// assert_eq!(request.route().method(), "PATCH");
/// assert_eq!(request.route().path(), "/applications/@me");
/// # Ok::<_, serde_json::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ApplicationUpdate {
    /// The interactions endpoint URL (an empty string removes it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interactions_endpoint_url: Option<String>,
    /// The event webhooks URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_webhooks_url: Option<String>,
    /// `1`: event webhooks disabled, `2`: enabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_webhooks_status: Option<u8>,
    /// The event types sent to the event webhooks URL (e.g. `APPLICATION_AUTHORIZED`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_webhooks_types: Option<Vec<String>>,
}

impl RestRequest<Application> {
    /// `PATCH /applications/@me` with `update`, answered with the application.
    ///
    /// # Errors
    /// The serialiser's error (strings do not fail).
    pub fn update_application(update: &ApplicationUpdate) -> Result<Self, serde_json::Error> {
        let body = Payload::json(update)?;
        Ok(Self::new(Route::update_application(), body.into_body()))
    }
}

impl RestRequest<CurrentAuthorizationInformation> {
    /// `GET /oauth2/@me`: the bearer token's authorization.
    #[must_use]
    pub fn fetch_authorization() -> Self {
        Self::new(Route::fetch_authorization(), RequestBody::Empty)
    }
}

impl RestRequest<NoContent> {
    /// `POST /interactions/{id}/{token}/callback`: the first response to an
    /// interaction (`payload` is an `InteractionResponse`, with files).
    #[must_use]
    #[deprecated(
        since = "0.2.0",
        note = "use `Interaction::respond` (typed `Callback`), or `RestRequest::new(Route::interaction_callback(..), payload.into_body())` for raw JSON"
    )]
    pub fn create_interaction_response(
        interaction_id: Id<InteractionMarker>,
        token: &str,
        payload: Payload,
    ) -> Self {
        Self::new(
            Route::interaction_callback(interaction_id, token),
            payload.into_body(),
        )
    }

    /// `DELETE /webhooks/{application_id}/{token}/messages/@original`.
    #[must_use]
    #[deprecated(since = "0.2.0", note = "use `Interaction::delete_original`")]
    pub fn delete_original_response(application_id: Id<ApplicationMarker>, token: &str) -> Self {
        Self::new(
            Route::original_response(Method::DELETE, application_id, token),
            RequestBody::Empty,
        )
    }

    /// `DELETE /webhooks/{application_id}/{token}/messages/{message_id}`.
    #[must_use]
    #[deprecated(since = "0.2.0", note = "use `Interaction::delete_followup`")]
    pub fn delete_followup(
        application_id: Id<ApplicationMarker>,
        token: &str,
        message_id: Id<MessageMarker>,
    ) -> Self {
        Self::new(
            Route::followup(Method::DELETE, application_id, token, message_id),
            RequestBody::Empty,
        )
    }
}

impl RestRequest<Message> {
    /// `GET /webhooks/{application_id}/{token}/messages/@original`.
    #[must_use]
    #[deprecated(since = "0.2.0", note = "use `Interaction::original`")]
    pub fn get_original_response(application_id: Id<ApplicationMarker>, token: &str) -> Self {
        Self::new(
            Route::original_response(Method::GET, application_id, token),
            RequestBody::Empty,
        )
    }

    /// `PATCH /webhooks/{application_id}/{token}/messages/@original` (e.g. the
    /// answer to a deferred interaction; `payload` is message JSON such as
    /// `InteractionResponseData`).
    #[must_use]
    #[deprecated(
        since = "0.2.0",
        note = "use `Interaction::edit_original` (typed `MessageEdit`), or `RestRequest::new(Route::original_response(..), payload.into_body())` for raw JSON"
    )]
    pub fn edit_original_response(
        application_id: Id<ApplicationMarker>,
        token: &str,
        payload: Payload,
    ) -> Self {
        Self::new(
            Route::original_response(Method::PATCH, application_id, token),
            payload.into_body(),
        )
    }

    /// `POST /webhooks/{application_id}/{token}?wait=true`: a follow-up message.
    #[must_use]
    #[deprecated(
        since = "0.2.0",
        note = "use `Interaction::followup` (typed `MessageCreate`), or `RestRequest::new(Route::create_followup(..), payload.into_body())` for raw JSON"
    )]
    pub fn create_followup(
        application_id: Id<ApplicationMarker>,
        token: &str,
        payload: Payload,
    ) -> Self {
        Self::new(
            Route::create_followup(application_id, token),
            payload.into_body(),
        )
    }

    /// `GET /webhooks/{application_id}/{token}/messages/{message_id}`.
    #[must_use]
    #[deprecated(since = "0.2.0", note = "use `Interaction::followup_message`")]
    pub fn get_followup(
        application_id: Id<ApplicationMarker>,
        token: &str,
        message_id: Id<MessageMarker>,
    ) -> Self {
        Self::new(
            Route::followup(Method::GET, application_id, token, message_id),
            RequestBody::Empty,
        )
    }

    /// `PATCH /webhooks/{application_id}/{token}/messages/{message_id}`.
    #[must_use]
    #[deprecated(
        since = "0.2.0",
        note = "use `Interaction::edit_followup` (typed `MessageEdit`)"
    )]
    pub fn edit_followup(
        application_id: Id<ApplicationMarker>,
        token: &str,
        message_id: Id<MessageMarker>,
        payload: Payload,
    ) -> Self {
        Self::new(
            Route::followup(Method::PATCH, application_id, token, message_id),
            payload.into_body(),
        )
    }
}
