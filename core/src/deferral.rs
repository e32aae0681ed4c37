//! Replies delivered through the REST API instead of the HTTP answer, sans-IO:
//! **automatic deferral** of slow handlers and **oversized files** sent through the
//! interaction callback endpoint.
//!
//! Both need a REST client, so both are off unless a driver that has one turns them on
//! ([`ReplyRouting`]; yuyo-tokio's `Bot` does, a bare `Server` does not). The decisions
//! are made here; the driver only keeps time and sends the [`RestRequest`]s it is given.
//!
//! # Automatic deferral
//! Discord drops an interaction whose first response takes more than 3 s. With
//! [`ReplyRouting::defer_after`] set (default [`DEFAULT_DEFER_AFTER`], 2.5 s), a handler
//! still running at the deadline gets a deferred response sent for it, and its eventual
//! outcome is delivered through REST ([`Deferred::late_reply`]):
//!
//! | interaction | deferred response |
//! |---|---|
//! | command | `DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE` (5): users see "thinking…" |
//! | component | `DEFERRED_UPDATE_MESSAGE` (6): no loading state, the message is edited later |
//! | modal submitted from a component's message | 6, as a component |
//! | modal submitted from a command | 5 |
//! | autocomplete | never deferred ([`DeferError::Autocomplete`]): Discord has no deferred autocomplete |
//!
//! The late outcome becomes, in order (see [`Deferred::late_reply`]):
//!
//! | outcome | deferred with 5 | deferred with 6 |
//! |---|---|---|
//! | message (4) | `PATCH …/messages/@original` (replaces "thinking…") | follow-up message (`POST /webhooks/…`) |
//! | ephemeral message (4 + `EPHEMERAL`) | `DELETE …/@original`, then an ephemeral follow-up (the public "thinking…" cannot become ephemeral, and the content must not leak) | ephemeral follow-up |
//! | update message (7) | `PATCH …/@original` | `PATCH …/@original` (the component's message) |
//! | deferred (5, 6) | nothing: already done | nothing |
//! | no reply (`Ok(None)`) | nothing: the handler answers through REST itself | nothing |
//! | failure or panic | logged; `DELETE …/@original`, so "thinking…" does not hang for 15 minutes | logged; nothing (no loading state is shown) |
//! | modal (9), autocomplete result (8), other types | cannot follow a deferral: logged as an error, then as a failure |
//!
//! Files go with the request as `multipart/form-data`; the reply's `after` work runs once
//! the requests are done ([`RestReply::after`]).
//!
//! # Oversized files
//! Discord accepts only small files in the HTTP answer to an interaction: multipart
//! answers past roughly 150 KB fail with "This interaction failed", while the same
//! response through the callback endpoint works (discord-api-docs issues #5250, #5925).
//! With [`ReplyRouting::inline_files_limit`] set (default [`DEFAULT_INLINE_FILES_LIMIT`]),
//! a reply whose files total more than the limit (a file of unknown length counts as
//! more) is sent as `POST /interactions/{id}/{token}/callback` (multipart), and the HTTP
//! request is answered **`202 Accepted` with no body**, which is what Discord's
//! documentation of the callback endpoint asks for ("If you send this request for an
//! interaction received over HTTP, respond to the original HTTP request with a 202 and
//! no body"). The 202 is written at once; the callback is sent right after, and the
//! reply's `after` work runs once it is done.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};
use twilight_model::application::interaction::Interaction;
use twilight_model::channel::Message;
use twilight_model::channel::message::MessageFlags;
use twilight_model::http::attachment::Attachment;
use twilight_model::http::interaction::InteractionResponse;
use twilight_model::id::Id;
use twilight_model::id::marker::{ApplicationMarker, InteractionMarker};

use crate::endpoint::{
    BoxFuture, Context, HandlerResult, InteractionKind, Reply, ReplyPayload, ResponseBody,
};
use crate::multipart::FilePart;
use crate::rest::{NoContent, Payload, RequestBody, RestRequest, Route};

/// The default deferral deadline: 2.5 s after the request was read, leaving half a
/// second of Discord's 3 s for the deferred response to arrive.
pub const DEFAULT_DEFER_AFTER: Duration = Duration::from_millis(2500);

/// The default limit on a reply's files sent inline in the HTTP answer: 150 000 bytes
/// in total. Discord's undocumented limit on multipart interaction answers lies
/// somewhere around 150 KB (answers of 150 KB were reported to work, 160 KB to fail).
pub const DEFAULT_INLINE_FILES_LIMIT: u64 = 150_000;

/// What a driver with a REST client lets a session do through REST; see the
/// [module docs](self). [`ReplyRouting::default`] and [`ReplyRouting::disabled`] turn
/// everything off; [`ReplyRouting::enabled`] uses the documented defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplyRouting {
    /// Defer a handler still running this long after its request's head arrived (`None`:
    /// never defer).
    pub defer_after: Option<Duration>,
    /// Send a reply whose files total more than this many bytes through the callback
    /// endpoint (`None`: always inline).
    pub inline_files_limit: Option<u64>,
}

impl ReplyRouting {
    /// Nothing goes through REST (a driver without a REST client).
    #[must_use]
    pub const fn disabled() -> Self {
        Self {
            defer_after: None,
            inline_files_limit: None,
        }
    }

    /// Deferral after [`DEFAULT_DEFER_AFTER`] and files over
    /// [`DEFAULT_INLINE_FILES_LIMIT`] through the callback endpoint.
    #[must_use]
    pub const fn enabled() -> Self {
        Self {
            defer_after: Some(DEFAULT_DEFER_AFTER),
            inline_files_limit: Some(DEFAULT_INLINE_FILES_LIMIT),
        }
    }

    /// Whether anything goes through REST.
    #[must_use]
    pub const fn is_enabled(&self) -> bool {
        self.defer_after.is_some() || self.inline_files_limit.is_some()
    }
}

/// Why a handler cannot be deferred.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeferError {
    /// Autocomplete has no deferred response: its handler is never deferred.
    Autocomplete,
    /// No handler is running (or it was already deferred): a driver bug.
    NotHandling,
}

impl fmt::Display for DeferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Autocomplete => f.write_str("autocomplete interactions cannot be deferred"),
            Self::NotHandling => f.write_str("no handler is running to defer"),
        }
    }
}

impl std::error::Error for DeferError {}

/// The interaction a reply goes to: what the REST routes need. `Debug` never shows the
/// token.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    kind: InteractionKind,
    interaction_id: Id<InteractionMarker>,
    application_id: Id<ApplicationMarker>,
    token: String,
    from_message: bool,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("kind", &self.kind)
            .field("interaction_id", &self.interaction_id)
            .field("application_id", &self.application_id)
            .field("token", &"<redacted>")
            .field("from_message", &self.from_message)
            .finish()
    }
}

impl Target {
    /// The target of the interaction a handler is given.
    #[must_use]
    pub fn from_context(context: &Context) -> Self {
        Self::new(context.kind(), context.interaction())
    }

    /// The target of `interaction`, of `kind`.
    #[must_use]
    pub fn new(kind: InteractionKind, interaction: &Interaction) -> Self {
        Self {
            kind,
            interaction_id: interaction.id,
            application_id: interaction.application_id,
            token: interaction.token.clone(),
            from_message: interaction.message.is_some(),
        }
    }

    /// The kind of interaction.
    #[must_use]
    pub fn kind(&self) -> InteractionKind {
        self.kind
    }

    /// The interaction's id.
    #[must_use]
    pub fn interaction_id(&self) -> Id<InteractionMarker> {
        self.interaction_id
    }

    /// The application's id.
    #[must_use]
    pub fn application_id(&self) -> Id<ApplicationMarker> {
        self.application_id
    }

    /// The interaction token (a secret for 15 minutes: never log it).
    #[must_use]
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Sends a complete `reply` through `POST /interactions/{id}/{token}/callback`
    /// instead of the HTTP answer (which must then be [`accepted`]).
    pub fn callback_reply(&self, reply: Reply) -> RestReply {
        let (payload, files, after) = reply.into_parts();
        let json = match payload {
            ReplyPayload::RawJson(json) => json,
            ReplyPayload::Typed(mut response) => {
                describe_attachments(&mut response, &files);
                match serde_json::to_vec(&response) {
                    Ok(json) => Bytes::from(json),
                    Err(error) => {
                        tracing::error!(kind = %self.kind, %error, "could not serialise an interaction reply");
                        return RestReply::default();
                    }
                }
            }
        };
        let payload = Payload::raw_json(json).with_files(files);
        RestReply {
            requests: vec![RestCall::CreateResponse(RestRequest::new(
                Route::interaction_callback(self.interaction_id, &self.token),
                payload.into_body(),
            ))],
            after,
        }
    }
}

/// A reply's files total more than `limit` bytes (a file of unknown length counts as
/// more): it must go through the callback endpoint.
#[must_use]
pub fn files_exceed(reply: &Reply, limit: u64) -> bool {
    let mut total: u64 = 0;
    for file in reply.files() {
        match file.data().known_len() {
            Some(len) => total = total.saturating_add(len),
            None => return true,
        }
    }
    total > limit
}

/// The HTTP answer when the reply goes through the callback endpoint: `202 Accepted`,
/// no body (`Content-Length: 0`), as Discord documents.
#[must_use]
pub fn accepted() -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::Empty);
    *response.status_mut() = StatusCode::ACCEPTED;
    response
}

/// Which deferred response was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeferredKind {
    /// `DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE` (5): "thinking…", the original response
    /// is the message to edit.
    Message,
    /// `DEFERRED_UPDATE_MESSAGE` (6): the original response is the component's message.
    Update,
}

impl DeferredKind {
    /// Discord's response type number.
    #[must_use]
    pub const fn type_number(self) -> u8 {
        match self {
            Self::Message => 5,
            Self::Update => 6,
        }
    }
}

/// A handler that was deferred: the deferred response sent for it, and how its late
/// outcome is delivered. `Debug` never shows the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deferred {
    target: Target,
    kind: DeferredKind,
}

impl Deferred {
    /// Decide the deferred response for `target` (see the [module docs](self)).
    ///
    /// # Errors
    /// [`DeferError::Autocomplete`].
    pub fn new(target: Target) -> Result<Self, DeferError> {
        let kind = match target.kind {
            InteractionKind::Autocomplete => return Err(DeferError::Autocomplete),
            InteractionKind::Command => DeferredKind::Message,
            InteractionKind::Component => DeferredKind::Update,
            InteractionKind::Modal if target.from_message => DeferredKind::Update,
            InteractionKind::Modal => DeferredKind::Message,
        };
        Ok(Self { target, kind })
    }

    /// The interaction.
    #[must_use]
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Which deferred response is sent.
    #[must_use]
    pub fn kind(&self) -> DeferredKind {
        self.kind
    }

    /// The HTTP answer: 200 `{"type":5}` or `{"type":6}` (`application/json`).
    #[must_use]
    pub fn response(&self) -> Response<ResponseBody> {
        let body = match self.kind {
            DeferredKind::Message => Bytes::from_static(br#"{"type":5}"#),
            DeferredKind::Update => Bytes::from_static(br#"{"type":6}"#),
        };
        let len = body.len();
        let mut response = Response::new(ResponseBody::Full(body));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        response
    }

    /// The REST requests that deliver the handler's late `outcome`, in order (see the
    /// table in the [module docs](self)). Failures are logged here.
    pub fn late_reply(&self, outcome: HandlerResult) -> RestReply {
        let kind = self.target.kind;
        match outcome {
            Ok(None) => RestReply::default(),
            Ok(Some(reply)) => {
                let (payload, files, after) = reply.into_parts();
                let requests = match self.late_requests(&payload, files) {
                    Ok(requests) => requests,
                    Err(why) => {
                        tracing::error!(%kind, why, "a deferred handler's reply cannot be delivered");
                        self.failed()
                    }
                };
                RestReply { requests, after }
            }
            Err(error) => {
                tracing::error!(%kind, %error, "interaction handler failed after it was deferred");
                RestReply {
                    requests: self.failed(),
                    after: None,
                }
            }
        }
    }

    /// After a failure: take down "thinking…"; a deferred update shows nothing.
    fn failed(&self) -> Vec<RestCall> {
        match self.kind {
            DeferredKind::Message => vec![RestCall::DeleteOriginal(RestRequest::new(
                Route::original_response(
                    Method::DELETE,
                    self.target.application_id,
                    &self.target.token,
                ),
                RequestBody::Empty,
            ))],
            DeferredKind::Update => Vec::new(),
        }
    }

    fn late_requests(
        &self,
        payload: &ReplyPayload,
        files: Vec<FilePart>,
    ) -> Result<Vec<RestCall>, &'static str> {
        let (number, data) = response_parts(payload)?;
        let application = self.target.application_id;
        let token = self.target.token.as_str();
        let message = |files: Vec<FilePart>| -> Result<Payload, &'static str> {
            let data = data.clone().unwrap_or_else(|| serde_json::json!({}));
            let data = with_attachments(data, &files);
            let json = serde_json::to_vec(&data).map_err(|_| "reply data cannot be serialised")?;
            Ok(Payload::raw_json(json).with_files(files))
        };
        let edit = |files| -> Result<RestCall, &'static str> {
            Ok(RestCall::EditOriginal(RestRequest::new(
                Route::original_response(Method::PATCH, application, token),
                message(files)?.into_body(),
            )))
        };
        let followup = |files| -> Result<RestCall, &'static str> {
            Ok(RestCall::CreateFollowup(RestRequest::new(
                Route::create_followup(application, token),
                message(files)?.into_body(),
            )))
        };
        let ephemeral = data
            .as_ref()
            .and_then(|data| data.get("flags"))
            .and_then(serde_json::Value::as_u64)
            .is_some_and(|flags| flags & MessageFlags::EPHEMERAL.bits() != 0);
        match (number, self.kind) {
            // DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE, DEFERRED_UPDATE_MESSAGE: already done.
            (5 | 6, _) => Ok(Vec::new()),
            // CHANNEL_MESSAGE_WITH_SOURCE
            (4, DeferredKind::Message) if ephemeral => Ok(vec![
                RestCall::DeleteOriginal(RestRequest::new(
                    Route::original_response(Method::DELETE, application, token),
                    RequestBody::Empty,
                )),
                followup(files)?,
            ]),
            (4, DeferredKind::Message) => Ok(vec![edit(files)?]),
            (4, DeferredKind::Update) => Ok(vec![followup(files)?]),
            // UPDATE_MESSAGE
            (7, _) => Ok(vec![edit(files)?]),
            _ => Err("this response type cannot follow a deferred response"),
        }
    }
}

/// The response type number and the `data` of a reply's JSON.
fn response_parts(
    payload: &ReplyPayload,
) -> Result<(u64, Option<serde_json::Value>), &'static str> {
    let value = match payload {
        ReplyPayload::Typed(response) => {
            serde_json::to_value(response).map_err(|_| "reply cannot be serialised")?
        }
        ReplyPayload::RawJson(json) => {
            serde_json::from_slice(json).map_err(|_| "raw reply JSON is not valid JSON")?
        }
    };
    let number = value
        .get("type")
        .and_then(serde_json::Value::as_u64)
        .ok_or("reply JSON has no integer `type`")?;
    let data = value.get("data").filter(|data| !data.is_null()).cloned();
    Ok((number, data))
}

/// Lists the files in the message's `attachments` (ids match `files[n]`) unless the
/// handler listed them itself.
fn with_attachments(mut data: serde_json::Value, files: &[FilePart]) -> serde_json::Value {
    if files.is_empty() {
        return data;
    }
    if let Some(object) = data.as_object_mut()
        && object
            .get("attachments")
            .is_none_or(serde_json::Value::is_null)
    {
        let attachments: Vec<serde_json::Value> = files
            .iter()
            .zip(0_u64..)
            .map(|(file, id)| serde_json::json!({"id": id, "filename": file.filename()}))
            .collect();
        object.insert("attachments".to_owned(), attachments.into());
    }
    data
}

/// As the endpoint does for inline replies: list the files in `attachments`.
fn describe_attachments(response: &mut InteractionResponse, files: &[FilePart]) {
    if let Some(data) = &mut response.data
        && data.attachments.is_none()
        && !files.is_empty()
    {
        data.attachments = Some(
            files
                .iter()
                .zip(0_u64..)
                .map(|(file, id)| {
                    Attachment::from_bytes(file.filename().to_owned(), Vec::new(), id)
                })
                .collect(),
        );
    }
}

/// One request of a [`RestReply`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum RestCall {
    /// `POST /interactions/{id}/{token}/callback`: the whole first response.
    CreateResponse(RestRequest<NoContent>),
    /// `PATCH /webhooks/{application_id}/{token}/messages/@original`.
    EditOriginal(RestRequest<Message>),
    /// `DELETE /webhooks/{application_id}/{token}/messages/@original`.
    DeleteOriginal(RestRequest<NoContent>),
    /// `POST /webhooks/{application_id}/{token}?wait=true`.
    CreateFollowup(RestRequest<Message>),
}

impl RestCall {
    /// The route's template, safe to log (no token).
    #[must_use]
    pub fn route_key(&self) -> &crate::rest::RouteKey {
        match self {
            Self::CreateResponse(request) | Self::DeleteOriginal(request) => request.route().key(),
            Self::EditOriginal(request) | Self::CreateFollowup(request) => request.route().key(),
        }
    }

    /// The request, with its answer's body ignored: delivering a reply only needs to
    /// know whether each request succeeded.
    #[must_use]
    pub fn into_request(self) -> RestRequest<serde::de::IgnoredAny> {
        match self {
            Self::CreateResponse(request) | Self::DeleteOriginal(request) => request.expect(),
            Self::EditOriginal(request) | Self::CreateFollowup(request) => request.expect(),
        }
    }
}

/// A reply delivered through REST: the requests to send in order (stop at the first
/// that fails), then the reply's `after` work.
#[derive(Default)]
#[must_use]
pub struct RestReply {
    /// The requests, in order.
    pub requests: Vec<RestCall>,
    /// The reply's [`after`](Reply::after) work, to run once the requests are done.
    pub after: Option<BoxFuture<()>>,
}

impl RestReply {
    /// Delivers this reply, the same on every runtime: sends each request in order with
    /// `send` (a driver's REST client), stops at the first failure (logged with the
    /// route template, never the token), then runs the reply's `after` work whether the
    /// requests succeeded or not.
    ///
    /// A blocking driver passes a `send` that returns a ready future.
    pub async fn deliver<S, F, E>(self, mut send: S)
    where
        S: FnMut(RestRequest<serde::de::IgnoredAny>) -> F,
        F: Future<Output = Result<(), E>>,
        E: fmt::Display,
    {
        let Self { requests, after } = self;
        for call in requests {
            let route = call.route_key().clone();
            if let Err(error) = send(call.into_request()).await {
                tracing::error!(%route, %error, "could not deliver an interaction reply through REST");
                break;
            }
        }
        if let Some(after) = after {
            after.await;
        }
    }
}

impl fmt::Debug for RestReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestReply")
            .field("requests", &self.requests)
            .field("after", &self.after.as_ref().map(|_| ".."))
            .finish()
    }
}

/// What a [`Session`](crate::server::Session) keeps for routing replies through REST.
#[derive(Debug, Default)]
pub(crate) struct Routing {
    pub(crate) config: ReplyRouting,
    /// The interaction of the handler in flight (only kept when routing is enabled).
    pub(crate) target: Option<Target>,
    /// When the handler in flight is to be deferred.
    pub(crate) deadline: Option<std::time::Instant>,
    /// The handler in flight was deferred: its outcome goes through REST.
    pub(crate) deferred: Option<Deferred>,
    /// Replies for the driver to send.
    pub(crate) queue: std::collections::VecDeque<RestReply>,
}

impl Routing {
    /// A handler was dispatched at `now` for `context`.
    pub(crate) fn dispatched(&mut self, context: &Context, now: std::time::Instant) {
        self.deferred = None;
        if !self.config.is_enabled() {
            self.target = None;
            self.deadline = None;
            return;
        }
        self.deadline = match (context.kind(), self.config.defer_after) {
            (InteractionKind::Autocomplete, _) | (_, None) => None,
            (_, Some(after)) => now.checked_add(after),
        };
        self.target = Some(Target::from_context(context));
    }
}
