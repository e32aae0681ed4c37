//! One request/response exchange, as explicit states: each state is a type
//! whose methods are exactly the legal next steps.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Response};
use twilight_model::application::interaction::{Interaction, InteractionType};
use twilight_model::http::attachment::Attachment;

use super::Endpoint;
use super::event_handlers::EventDispatch;
use super::events::{self, Envelope};
use super::handlers::{BoxFuture, Context, Handler, HandlerError, HandlerResult, InteractionKind};
use super::health::HealthCheck;
use super::probe::{TypeField, probe_type};
use super::rejection::{HeaderProblem, Rejection, SignatureHeader};
use super::reply::{Reply, ReplyPayload};
use super::response::{
    ResponseBody, event_acknowledged, json_response, multipart_response, no_content, text_response,
};
use super::window::{log_stale, within_window};
use crate::multipart::{FilePart, MultipartBody};

const X_SIGNATURE_ED25519: HeaderName = HeaderName::from_static("x-signature-ed25519");
const X_SIGNATURE_TIMESTAMP: HeaderName = HeaderName::from_static("x-signature-timestamp");

/// The PING answer, `{"type":1}` (PONG).
const PONG: &[u8] = br#"{"type":1}"#;

impl Endpoint {
    /// Start an exchange from the request head (the **Head** state): runs
    /// every check that needs only the head, in the documented order.
    ///
    /// # Errors
    /// The [`Immediate`] answer: a [`Rejection`] (404, 405, 415, 401 for signature
    /// header problems, 400 for a bad `Content-Length`, 413 for a declared
    /// length over the limit), or the [`HealthCheck`] at the health path. The body
    /// need not be read then.
    pub fn begin(&self, head: &Parts) -> Result<Exchange, Immediate> {
        let config = self.config();
        let path = head.uri.path();
        let route = if path == config.path {
            Route::Interactions
        } else if config.events_path.as_deref() == Some(path) {
            Route::Events
        } else if config.health_path.as_deref() == Some(path) {
            return Err(Immediate::Health(self.health().check(&head.method)));
        } else {
            return Err(refuse_head(Rejection::NotFound));
        };
        self.check_head(head, route).map_err(refuse_head)
    }

    fn check_head(&self, head: &Parts, route: Route) -> Result<Exchange, Rejection> {
        let config = self.config();
        if head.method != Method::POST {
            return Err(Rejection::MethodNotAllowed);
        }
        match single(&head.headers, &header::CONTENT_TYPE) {
            Ok(value) if is_json_media_type(value.as_bytes()) => {}
            Ok(_) | Err(_) => return Err(Rejection::UnsupportedMediaType),
        }

        let signature = single(&head.headers, &X_SIGNATURE_ED25519)
            .and_then(|value| parse_signature(value.as_bytes()).ok_or(HeaderProblem::Malformed))
            .map_err(|problem| Rejection::SignatureHeader(SignatureHeader::Signature, problem))?;
        let timestamp = single(&head.headers, &X_SIGNATURE_TIMESTAMP)
            .and_then(|value| {
                let bytes = value.as_bytes();
                let visible =
                    !bytes.is_empty() && bytes.iter().all(|byte| (b'!'..=b'~').contains(byte));
                if visible {
                    Ok(value.clone())
                } else {
                    Err(HeaderProblem::Malformed)
                }
            })
            .map_err(|problem| Rejection::SignatureHeader(SignatureHeader::Timestamp, problem))?;

        let declared_len = match single(&head.headers, &header::CONTENT_LENGTH) {
            Ok(value) => Some(
                parse_content_length(value.as_bytes()).ok_or(Rejection::InvalidContentLength)?,
            ),
            Err(HeaderProblem::Missing) => None,
            Err(HeaderProblem::Repeated | HeaderProblem::Malformed) => {
                return Err(Rejection::InvalidContentLength);
            }
        };
        let limit = config.max_body_size;
        if declared_len.is_some_and(|len| len > limit as u64) {
            return Err(Rejection::PayloadTooLarge(limit));
        }

        Ok(Exchange {
            endpoint: self.clone(),
            route,
            signature,
            timestamp,
            // Bounded by the limit above, so this never over-allocates.
            declared_len: declared_len.and_then(|len| usize::try_from(len).ok()),
            received: 0,
            body: BodyBuffer::Empty,
        })
    }

    /// Run the whole receiving side for a body available up front (as chunks):
    /// [`begin`](Self::begin), [`Exchange::push`] for each chunk, then
    /// [`Exchange::finish`], mapping every rejection to
    /// [`Finished::Respond`].
    ///
    /// Convenient for buffered drivers, tests and fuzzers; `now_unix_secs` is
    /// as in [`Exchange::finish`].
    pub fn receive<I>(&self, head: &Parts, chunks: I, now_unix_secs: u64) -> Finished
    where
        I: IntoIterator<Item = Bytes>,
    {
        let mut exchange = match self.begin(head) {
            Ok(exchange) => exchange,
            Err(immediate) => return Finished::Respond(immediate),
        };
        for chunk in chunks {
            exchange = match exchange.push(chunk) {
                Ok(exchange) => exchange,
                Err(rejection) => return Finished::Respond(Immediate::Rejected(rejection)),
            };
        }
        exchange.finish(now_unix_secs)
    }
}

/// The one value of `name`, or why there is not exactly one.
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<&'a HeaderValue, HeaderProblem> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => Ok(value),
        (None, _) => Err(HeaderProblem::Missing),
        (Some(_), Some(_)) => Err(HeaderProblem::Repeated),
    }
}

/// Whether a `Content-Type` value's media type is `application/json`
/// (case-insensitive; parameters such as `charset` are ignored).
fn is_json_media_type(value: &[u8]) -> bool {
    let media_type = value.split(|byte| *byte == b';').next().unwrap_or_default();
    media_type
        .trim_ascii()
        .eq_ignore_ascii_case(b"application/json")
}

/// Exactly 128 hex digits (either case) → the 64 signature bytes.
fn parse_signature(value: &[u8]) -> Option<[u8; 64]> {
    let mut signature = [0_u8; 64];
    if value.len() != 128 {
        return None;
    }
    hex::decode_to_slice(value, &mut signature).ok()?;
    Some(signature)
}

/// A `Content-Length` value: ASCII digits only.
fn parse_content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Which of the endpoint's paths a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    /// The interactions path.
    Interactions,
    /// The Webhook Events path.
    Events,
}

/// The body received so far.
enum BodyBuffer {
    /// Nothing yet.
    Empty,
    /// One chunk, kept as it came (no copy).
    One(Bytes),
    /// Several chunks, accumulated.
    Many(BytesMut),
}

/// The **Body** state: head accepted, body being received.
///
/// Feed every chunk with [`push`](Self::push), then call
/// [`finish`](Self::finish) at the end of the body.
pub struct Exchange {
    endpoint: Endpoint,
    route: Route,
    signature: [u8; 64],
    timestamp: HeaderValue,
    declared_len: Option<usize>,
    received: usize,
    body: BodyBuffer,
}

impl Exchange {
    /// Add a body chunk.
    ///
    /// # Errors
    /// [`Rejection::PayloadTooLarge`] (413) as soon as the running total would
    /// pass `max_body_size`; the chunk is not buffered then, and the rest of
    /// the body should not be read.
    pub fn push(mut self, chunk: Bytes) -> Result<Self, Rejection> {
        let limit = self.endpoint.config().max_body_size;
        let total = self.received.saturating_add(chunk.len());
        if total > limit {
            tracing::debug!(limit, "refused interaction request: body too large");
            return Err(Rejection::PayloadTooLarge(limit));
        }
        if chunk.is_empty() {
            return Ok(self);
        }
        self.received = total;
        self.body = match self.body {
            BodyBuffer::Empty => BodyBuffer::One(chunk),
            BodyBuffer::One(first) => {
                // Pre-size from the declared length (already checked against
                // the limit), else from what has arrived so far.
                let capacity = self.declared_len.unwrap_or(0).max(total);
                let mut buffer = BytesMut::with_capacity(capacity);
                buffer.extend_from_slice(&first);
                buffer.extend_from_slice(&chunk);
                BodyBuffer::Many(buffer)
            }
            BodyBuffer::Many(mut buffer) => {
                buffer.extend_from_slice(&chunk);
                BodyBuffer::Many(buffer)
            }
        };
        Ok(self)
    }

    /// How many body bytes have been received.
    #[must_use]
    pub fn received(&self) -> usize {
        self.received
    }

    /// End of body: verify the signature, check the timestamp window, parse
    /// the interaction and pick its handler.
    ///
    /// `now_unix_secs` is the current Unix time in seconds; it is only read
    /// when a timestamp window is configured. Drivers serving many
    /// connections use [`end`](Self::end) instead, to verify signatures in
    /// batches.
    pub fn finish(self, now_unix_secs: u64) -> Finished {
        match self.end() {
            Ok(signed) => signed.verify(now_unix_secs),
            Err(immediate) => Finished::Respond(immediate),
        }
    }

    /// End of body, leaving the signature check to the caller (the **Signed**
    /// state): [`Signed::verify`] on its own, or [`Signed::enqueue`] to be
    /// verified together with other connections' requests.
    ///
    /// # Errors
    /// [`Rejection::EmptyBody`] (400) for an empty body.
    pub fn end(self) -> Result<Signed, Immediate> {
        let Self {
            endpoint,
            route,
            signature,
            timestamp,
            body,
            ..
        } = self;
        let body = match body {
            BodyBuffer::Empty => return Err(refuse_unauthenticated(Rejection::EmptyBody)),
            BodyBuffer::One(body) => body,
            BodyBuffer::Many(body) => body.freeze(),
        };
        Ok(Signed {
            endpoint,
            route,
            signature,
            timestamp,
            body,
        })
    }
}

/// The **Signed** state: a complete body whose signature is not checked yet.
///
/// Verify it alone with [`verify`](Self::verify), or hand it to the
/// endpoint's [`VerifyQueue`](super::VerifyQueue) with
/// [`enqueue`](Self::enqueue) so requests that complete together are verified
/// as one batch (about half the CPU per signature).
pub struct Signed {
    endpoint: Endpoint,
    route: Route,
    signature: [u8; 64],
    /// The signed message is `timestamp ‖ body`.
    timestamp: HeaderValue,
    body: Bytes,
}

impl std::fmt::Debug for Signed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signed")
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl Signed {
    /// Verify the signature on its own, then continue as [`Exchange::finish`].
    pub fn verify(self, now_unix_secs: u64) -> Finished {
        let verified = self.endpoint.config().verifier().verify(
            self.timestamp.as_bytes(),
            &self.body,
            &self.signature,
        );
        self.conclude(verified.is_ok(), now_unix_secs)
    }

    /// Join the endpoint's batch of requests awaiting verification; the
    /// [`Ticket`](super::Ticket) resolves to what [`verify`](Self::verify)
    /// would have returned.
    pub fn enqueue(self, now_unix_secs: u64) -> super::Ticket {
        super::VerifyQueue::submit(self.endpoint.clone(), self, now_unix_secs)
    }

    pub(super) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub(super) fn timestamp(&self) -> &[u8] {
        self.timestamp.as_bytes()
    }

    pub(super) fn body(&self) -> &[u8] {
        &self.body
    }

    pub(super) fn signature(&self) -> &[u8; 64] {
        &self.signature
    }

    /// The rest of the checks, once the signature's fate is known.
    pub(super) fn conclude(self, verified: bool, now_unix_secs: u64) -> Finished {
        if !verified {
            self.endpoint.metrics().verify_failed();
            return reject_unauthenticated(Rejection::InvalidSignature);
        }
        // Only now, with the signature known to be Discord's: a forged request
        // is a 401 for its signature whatever its timestamp, at a debug line.
        let config = self.endpoint.config();
        if let Some(window) = config.timestamp_window {
            let window = window.as_secs();
            let timestamp = self.timestamp.as_bytes();
            if !within_window(timestamp, now_unix_secs, window) {
                let warnings = &self.endpoint.shared.stale_warnings;
                log_stale(warnings, timestamp, now_unix_secs, window);
                let rejection = Rejection::TimestampOutsideWindow;
                return Finished::Respond(Immediate::Rejected(rejection));
            }
        }
        match self.route {
            Route::Interactions => self.endpoint.dispatch(self.body),
            Route::Events => self.endpoint.dispatch_event(self.body),
        }
    }
}

fn reject_unauthenticated(rejection: Rejection) -> Finished {
    Finished::Respond(refuse_unauthenticated(rejection))
}

fn refuse_unauthenticated(rejection: Rejection) -> Immediate {
    // Discord probes endpoints with bad signatures, and anyone can send
    // these: never more than a debug line.
    tracing::debug!(status = rejection.status().as_u16(), %rejection, "refused interaction request");
    Immediate::Rejected(rejection)
}

fn reject_authentic(rejection: Rejection) -> Finished {
    // The body is signed by Discord, so this is a protocol mismatch worth
    // seeing (and cannot be used to flood the logs).
    tracing::warn!(status = rejection.status().as_u16(), %rejection, "refused authentic interaction");
    Finished::Respond(Immediate::Rejected(rejection))
}

impl Endpoint {
    /// Parse a verified body and decide what happens to it.
    fn dispatch(&self, body: Bytes) -> Finished {
        // The typed parse comes first: on the hot path it is the only pass
        // over the body. Only when it fails does the cheap probe run, to
        // answer with the right status.
        let error = match super::parse::interaction(&body) {
            Ok(interaction) => match InteractionKind::from_interaction_type(interaction.kind) {
                Some(kind) => return self.to_handler(kind, Box::new(interaction), body),
                None if interaction.kind == InteractionType::Ping => {
                    return Finished::Respond(Immediate::Pong);
                }
                // A type twilight knows and this crate does not: classify by number below.
                None => None,
            },
            Err(error) => Some(error),
        };
        match probe_type(&body) {
            Err(_) => reject_authentic(Rejection::NotJsonObject),
            Ok(TypeField::Missing | TypeField::NotInteger) => {
                reject_authentic(Rejection::InvalidType)
            }
            Ok(TypeField::Integer(1)) => Finished::Respond(Immediate::Pong),
            Ok(TypeField::Integer(number)) => {
                match (InteractionKind::from_type_number(number), error) {
                    (None, _) | (Some(_), None) => {
                        reject_authentic(Rejection::UnsupportedType(number))
                    }
                    (Some(kind), Some(error)) => {
                        tracing::error!(%kind, %error, "could not read an authentic interaction with the typed model");
                        Finished::Respond(Immediate::Rejected(Rejection::UnreadableInteraction))
                    }
                }
            }
        }
    }

    /// Decode a verified Webhook Events body and pick its handler.
    fn dispatch_event(&self, body: Bytes) -> Finished {
        let context = match events::decode(body) {
            Ok(Envelope::Ping) => return Finished::Respond(Immediate::Acknowledge),
            Ok(Envelope::Event(context)) => context,
            Err(rejection) => return reject_authentic(rejection),
        };
        match self.event_handlers().handler_for(context.kind()) {
            Some(handler) => Finished::Event(EventDispatch::new(handler.clone(), context)),
            None => {
                tracing::debug!(
                    event = context.name(),
                    "no handler for a webhook event; acknowledged"
                );
                Finished::Respond(Immediate::Acknowledge)
            }
        }
    }

    fn to_handler(
        &self,
        kind: InteractionKind,
        interaction: Box<Interaction>,
        body: Bytes,
    ) -> Finished {
        match self.handlers().get(kind) {
            Some(handler) => Finished::Dispatch(Dispatch {
                handler: handler.clone(),
                context: Context::new(kind, interaction, body),
            }),
            None => reject_authentic(Rejection::NoHandler(kind)),
        }
    }
}

/// The end of the receiving side: either answer right away, or dispatch.
///
/// `Debug` never shows the interaction token or the body (see [`Dispatch`]).
#[must_use]
pub enum Finished {
    /// Answer without running a handler (a rejection or a PONG).
    Respond(Immediate),
    /// A verified interaction with a handler to run (the **Dispatch** state).
    Dispatch(Dispatch),
    /// A verified Webhook Event with a handler: [`EventDispatch::acknowledge`] gives
    /// the 204 to write and the handler to run after it.
    Event(EventDispatch),
}

impl std::fmt::Debug for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Spelled out rather than derived so that a variant added later has to
        // decide what it shows.
        match self {
            Self::Respond(immediate) => f.debug_tuple("Respond").field(immediate).finish(),
            Self::Dispatch(dispatch) => f.debug_tuple("Dispatch").field(dispatch).finish(),
            Self::Event(event) => f.debug_tuple("Event").field(event).finish(),
        }
    }
}

/// Logs a refused head (anyone can send one: never more than a debug line).
fn refuse_head(rejection: Rejection) -> Immediate {
    tracing::debug!(status = rejection.status().as_u16(), %rejection, "refused interaction request head");
    Immediate::Rejected(rejection)
}

/// A response decided without a handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Immediate {
    /// Answer a PING with 200 `{"type":1}`.
    Pong,
    /// On the Webhook Events path: 204 with `Content-Type: application/json` and no
    /// body, for a PING (type 0) and for an event no handler takes.
    Acknowledge,
    /// Refuse the request.
    Rejected(Rejection),
    /// Answer a load balancer's health check.
    Health(HealthCheck),
}

impl Immediate {
    /// The status the peer gets.
    #[must_use]
    pub fn status(&self) -> http::StatusCode {
        match self {
            Self::Pong => http::StatusCode::OK,
            Self::Acknowledge => http::StatusCode::NO_CONTENT,
            Self::Rejected(rejection) => rejection.status(),
            Self::Health(check) => check.status(),
        }
    }

    /// The response to write.
    #[must_use]
    pub fn into_response(self) -> Response<ResponseBody> {
        match self {
            Self::Pong => json_response(Bytes::from_static(PONG)),
            Self::Acknowledge => event_acknowledged(),
            Self::Rejected(rejection) => rejection.into_response(),
            Self::Health(check) => check.into_response(),
        }
    }
}

/// The **Dispatch** state: a verified, parsed interaction and its handler.
///
/// `Debug` shows the [`Context`]'s, which redacts the interaction token and
/// leaves out the body.
pub struct Dispatch {
    handler: Handler,
    context: Context,
}

impl std::fmt::Debug for Dispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatch")
            .field("kind", &self.context.kind())
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

impl Dispatch {
    /// The kind of interaction.
    #[must_use]
    pub fn kind(&self) -> InteractionKind {
        self.context.kind()
    }

    /// What the handler will be given.
    #[must_use]
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// Call the handler (the **Responding** state): returns the token that
    /// turns its outcome into the response, and the handler's future for the
    /// driver to await on any runtime.
    ///
    /// Panics in the handler, whether while creating the future or while it
    /// is polled, are caught and come out of the future as a
    /// [`HandlerError`] (so the peer gets a 500 and the server goes on).
    pub fn start(self) -> (Responding, HandlerFuture) {
        let kind = self.context.kind();
        let Self { handler, context } = self;
        let state = match catch_unwind(AssertUnwindSafe(|| handler.call(context))) {
            Ok(future) => HandlerState::Running(future),
            Err(payload) => HandlerState::Failed(HandlerError::panicked(payload)),
        };
        (Responding { kind }, HandlerFuture { state })
    }
}

/// A running handler, as a runtime-independent future: await it, then pass
/// its output to [`Responding::complete`].
#[must_use = "futures do nothing unless polled"]
pub struct HandlerFuture {
    state: HandlerState,
}

enum HandlerState {
    Running(BoxFuture<HandlerResult>),
    Failed(HandlerError),
    Done,
}

impl Future for HandlerFuture {
    type Output = HandlerResult;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<HandlerResult> {
        let this = &mut *self;
        let outcome = match &mut this.state {
            HandlerState::Running(future) => {
                match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
                    Ok(Poll::Pending) => return Poll::Pending,
                    Ok(Poll::Ready(outcome)) => outcome,
                    // The handler's future is dropped below and never polled again.
                    Err(payload) => Err(HandlerError::panicked(payload)),
                }
            }
            HandlerState::Failed(_) | HandlerState::Done => {
                match std::mem::replace(&mut this.state, HandlerState::Done) {
                    HandlerState::Failed(error) => Err(error),
                    HandlerState::Running(_) | HandlerState::Done => {
                        Err(HandlerError::msg("handler future polled after completion"))
                    }
                }
            }
        };
        this.state = HandlerState::Done;
        Poll::Ready(outcome)
    }
}

/// The **Responding** state: the only way to turn a handler's outcome into
/// the response.
#[derive(Debug)]
#[must_use]
pub struct Responding {
    kind: InteractionKind,
}

impl Responding {
    /// Build the response from the handler's outcome (the **Done** state):
    /// no reply → 204, a reply → 200 JSON (or `multipart/form-data` when it
    /// has files), a failure → 500.
    pub fn complete(self, outcome: HandlerResult) -> Completed {
        match outcome {
            Ok(None) => Completed {
                response: no_content(),
                after: None,
            },
            Ok(Some(reply)) => self.reply(reply),
            Err(error) => {
                tracing::error!(kind = %self.kind, %error, "interaction handler failed");
                Completed {
                    response: handler_failed(),
                    after: None,
                }
            }
        }
    }

    fn reply(self, reply: Reply) -> Completed {
        let (payload, files, after) = reply.into_parts();
        let json = match payload {
            ReplyPayload::RawJson(json) => json,
            ReplyPayload::Typed(mut response) => {
                describe_attachments(&mut response, &files);
                match serde_json::to_vec(&response) {
                    Ok(json) => Bytes::from(json),
                    Err(error) => {
                        tracing::error!(kind = %self.kind, %error, "could not serialise an interaction reply");
                        return Completed {
                            response: handler_failed(),
                            after: None,
                        };
                    }
                }
            }
        };
        let response = if files.is_empty() {
            json_response(json)
        } else {
            multipart_response(MultipartBody::encode(json, files))
        };
        Completed { response, after }
    }
}

/// List the files in the response's `attachments` (ids match `files[n]`), as
/// Discord expects, unless the handler listed them itself.
fn describe_attachments(
    response: &mut twilight_model::http::interaction::InteractionResponse,
    files: &[FilePart],
) {
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

fn handler_failed() -> Response<ResponseBody> {
    text_response(
        http::StatusCode::INTERNAL_SERVER_ERROR,
        Bytes::from_static(b"Internal Server Error: the interaction handler failed"),
    )
}

/// The finished exchange: the response to write, and work to run after it
/// has been written.
#[must_use]
pub struct Completed {
    /// The response, with `Content-Type` and (when known) `Content-Length`.
    pub response: Response<ResponseBody>,
    /// The reply's [`after`](Reply::after) work, for the driver to run once
    /// the response is written (e.g. spawned on its runtime).
    pub after: Option<BoxFuture<()>>,
}

impl std::fmt::Debug for Completed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completed")
            .field("response", &self.response)
            .field("after", &self.after.as_ref().map(|_| ".."))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drivers move exchanges and futures across threads.
    #[test]
    fn thread_safety() {
        fn send<T: Send>() {}
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Endpoint>();
        send::<Exchange>();
        send::<Finished>();
        send::<Dispatch>();
        send::<Responding>();
        send::<HandlerFuture>();
        send::<Completed>();
        send_sync::<Rejection>();
    }

    #[test]
    fn media_types() {
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            " application/json ;charset=UTF-8",
            "application/json;",
        ] {
            assert!(is_json_media_type(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            "text/json",
            "application/json+x",
            "application/jsonx",
            "application/ json",
            "application/x-json",
        ] {
            assert!(!is_json_media_type(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn signatures() {
        assert!(parse_signature(&[b'a'; 128]).is_some());
        assert!(parse_signature(&[b'A'; 128]).is_some());
        assert!(parse_signature(&[b'a'; 127]).is_none());
        assert!(parse_signature(&[b'a'; 130]).is_none());
        assert!(parse_signature(&[b'g'; 128]).is_none());
    }
}
