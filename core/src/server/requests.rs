//! The request-level half of a session: the [`http1::Connection`] wired to the
//! interaction [`Endpoint`], one request at a time. [`super::Session`] wraps it with
//! everything that concerns the connection as a whole (output, deadlines, closing).

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use http::Response;

use super::{DriverError, Now, record_dispatch, record_response, request_span};
use crate::endpoint::{
    BoxFuture, Dispatch, Endpoint, Exchange, Finished, HandlerFuture, HandlerResult, Responding,
    ResponseBody, Ticket,
};
use crate::http1::{self, BodyLength, Connection, Event};
use crate::metrics::RequestKind;
use crate::multipart::{FileSource, Segment};

/// What the request side needs next; returned by [`Requests::poll`].
pub(crate) enum Step {
    /// More bytes from the peer are needed.
    Read,
    /// The request's body is complete and queued for signature verification.
    Verify(Ticket),
    /// The handler to run; its outcome goes to [`Requests::complete`].
    Handle(HandlerFuture),
    /// A file to stream into the response with [`Requests::send_file_data`].
    StreamFile(FileSource),
    /// An answer was queued for [`Requests::poll_transmit`]; poll again for more.
    Answered,
    /// After-response work of the response just finished.
    RunAfter(BoxFuture<()>),
    /// The connection is done.
    Close,
}

/// Where the request in flight stands.
enum Stage {
    /// No request, or one already answered (remaining body events are ignored).
    Idle,
    /// The endpoint accumulates the body.
    Body(Exchange),
    /// The driver awaits the signature check ([`Step::Verify`]).
    Verifying,
    /// Verified; the handler starts at the next poll.
    Dispatching(Dispatch),
    /// The handler runs in the driver.
    Handling(Responding),
    /// A multipart response is being written; `file` is the file the driver streams.
    Streaming {
        rest: VecDeque<Segment>,
        file: Option<StreamedFile>,
        after: Option<BoxFuture<()>>,
    },
}

struct StreamedFile {
    declared: Option<u64>,
    supplied: u64,
}

/// The request side of one connection; see the [module docs](self).
pub(crate) struct Requests {
    conn: Connection,
    endpoint: Endpoint,
    stage: Stage,
    after: Option<BoxFuture<()>>,
    span: tracing::Span,
    started: Option<Instant>,
    routing: crate::deferral::Routing,
    kind: RequestKind,
    dispatched: Option<Instant>,
}

impl std::fmt::Debug for Requests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requests")
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

impl Requests {
    /// A session for a connection accepted at `now`. The connection's body limit is the
    /// endpoint's `max_body_size`, so both layers refuse at the same size.
    pub(crate) fn new(endpoint: Endpoint, mut config: http1::Config, now: Instant) -> Self {
        config.max_body_size = endpoint.config().get_max_body_size() as u64;
        Self {
            conn: Connection::new(config, now),
            endpoint,
            stage: Stage::Idle,
            after: None,
            span: tracing::Span::none(),
            started: None,
            routing: crate::deferral::Routing::default(),
            kind: RequestKind::Rejected,
            dispatched: None,
        }
    }

    /// The receive buffer, for drivers that read straight into it; see
    /// [`Connection::receive_buffer`]. Call [`Requests::received`] after appending.
    pub(crate) fn receive_buffer(&mut self) -> &mut bytes::BytesMut {
        self.conn.receive_buffer()
    }

    /// Tells the session a read into [`Requests::receive_buffer`] finished at `now`; call it
    /// after every read attempt, also one that found nothing (see [`Connection::received`]).
    pub(crate) fn received(&mut self, now: Instant) {
        self.conn.received(now);
    }

    /// Drops what a read appended to the receive buffer after the connection stopped
    /// reading (a lingering close); returns how many bytes that was.
    pub(crate) fn discard_received(&mut self, now: Instant) -> usize {
        let discarded = self.conn.buffered_len();
        self.conn.received(now);
        discarded
    }

    /// Abandons the connection at once (see [`Connection::abort`]); after-response work
    /// of an unfinished response does not run.
    pub(crate) fn abort(&mut self) {
        self.after = None;
        self.conn.abort();
    }

    /// Takes the outcome of a handler whose connection is gone: a deferred handler's
    /// reply still goes through REST; any other has nobody left to answer.
    pub(crate) fn abandon(&mut self, now: Now, outcome: HandlerResult) {
        if self.routing.deferred.is_some() {
            let _ = self.complete_through_rest(now, outcome);
        } else {
            tracing::debug!(parent: &self.span, "the connection closed before the handler's reply");
        }
        self.stage = Stage::Idle;
    }

    /// Tells the session the peer closed its sending side.
    pub(crate) fn receive_eof(&mut self) {
        self.conn.receive_eof();
    }

    /// When [`Requests::handle_timeout`] is next due.
    #[must_use]
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.conn.poll_timeout()
    }

    /// Fires the connection's deadline if it is due.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.conn.handle_timeout(now);
    }

    /// Whether the connection is idle between requests (see [`Connection::is_idle`]).
    pub(crate) fn is_idle(&self) -> bool {
        self.conn.is_idle()
    }

    /// Whether bytes wait in [`Requests::poll_transmit`].
    pub(crate) fn has_transmit(&self) -> bool {
        self.conn.has_transmit()
    }

    /// The next bytes to write to the socket.
    #[must_use]
    pub(crate) fn poll_transmit(&mut self) -> Option<Bytes> {
        self.conn.poll_transmit()
    }

    /// How to close the socket after [`Step::Close`]: drain it first as the
    /// [`http1::Linger`] says, or (`None`, the peer sends nothing more) close at once;
    /// see [`http1::Connection::linger`].
    pub(crate) fn linger(&self) -> Option<http1::Linger> {
        self.conn.linger()
    }

    /// Graceful shutdown: finish the request in flight, then close.
    pub(crate) fn close(&mut self) {
        self.conn.close();
    }

    /// The span of the request in flight (or of the last one, between requests).
    pub(crate) fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// What the request side needs next. [`Requests::poll_transmit`] may hold bytes after
    /// any call.
    pub(crate) fn poll(&mut self, now: Now) -> Step {
        if let Some(after) = self.after.take() {
            return Step::RunAfter(after);
        }
        if let Stage::Dispatching(_) = self.stage
            && let Stage::Dispatching(dispatch) = std::mem::replace(&mut self.stage, Stage::Idle)
        {
            record_dispatch(&self.span, &dispatch);
            self.kind = dispatch.kind().into();
            self.dispatched = Some(now.instant);
            self.routing
                .dispatched(dispatch.context(), self.started.unwrap_or(now.instant));
            let (responding, handler) = dispatch.start();
            self.stage = Stage::Handling(responding);
            return Step::Handle(handler);
        }
        loop {
            let event = match self.conn.next_event(now.instant) {
                Ok(event) => event,
                // Already answered on the wire (and logged at debug level by the connection).
                Err(_) => {
                    self.stage = Stage::Idle;
                    continue;
                }
            };
            match event {
                Event::Head(parts) => self.begin(now, &parts),
                Event::Data(chunk) => {
                    if let Stage::Body(exchange) = std::mem::replace(&mut self.stage, Stage::Idle) {
                        match exchange.push(chunk) {
                            Ok(exchange) => self.stage = Stage::Body(exchange),
                            Err(rejection) => self.respond(now, rejection.into_response(), None),
                        }
                    }
                }
                Event::End => {
                    if let Stage::Body(exchange) = std::mem::replace(&mut self.stage, Stage::Idle) {
                        match exchange.end() {
                            Err(immediate) => self.respond(now, immediate.into_response(), None),
                            Ok(signed) => {
                                self.stage = Stage::Verifying;
                                return Step::Verify(signed.enqueue(now.unix_secs));
                            }
                        }
                    }
                }
                Event::NeedData => return Step::Read,
                Event::Paused => match &self.stage {
                    Stage::Streaming { file: None, .. } => {
                        if let Some(action) = self.stream() {
                            return action;
                        }
                    }
                    // Polled while a handler or a file is still owed: a driver bug. Closing
                    // is the only answer that cannot send a wrong response.
                    Stage::Streaming { file: Some(_), .. }
                    | Stage::Handling(_)
                    | Stage::Verifying
                    | Stage::Dispatching(_)
                    | Stage::Idle
                    | Stage::Body(_) => {
                        tracing::error!("session polled while the driver owes it a result");
                        self.abort_file();
                        return Step::Close;
                    }
                },
                Event::Closed => return Step::Close,
            }
            if let Some(after) = self.after.take() {
                return Step::RunAfter(after);
            }
            if self.conn.has_transmit() {
                // Let the session count the answer against its output bound before
                // parsing any further pipelined request.
                return Step::Answered;
            }
        }
    }

    /// Starts a request from its head: its body is read next, or it is answered at once.
    fn begin(&mut self, now: Now, parts: &http::request::Parts) {
        self.span = request_span(parts);
        self.started = Some(now.instant);
        self.kind = RequestKind::Rejected;
        match self.endpoint.begin(parts) {
            Ok(exchange) => self.stage = Stage::Body(exchange),
            Err(immediate) => {
                self.kind = RequestKind::of_immediate(&immediate);
                self.respond(now, immediate.into_response(), None);
            }
        }
    }

    /// Takes the verification result of [`Step::Verify`]: a rejection or a
    /// PONG is queued for sending, a dispatch starts its handler at the next
    /// [`Requests::poll`].
    pub(crate) fn verified(&mut self, now: Now, finished: Finished) -> Result<(), DriverError> {
        let Stage::Verifying = self.stage else {
            return Err(DriverError::NotVerifying);
        };
        match finished {
            Finished::Respond(immediate) => {
                self.stage = Stage::Idle;
                self.kind = RequestKind::of_immediate(&immediate);
                self.respond(now, immediate.into_response(), None);
            }
            Finished::Dispatch(dispatch) => self.stage = Stage::Dispatching(dispatch),
            // A Webhook Event: 204 now, its handler as after-response work.
            Finished::Event(event) => {
                self.stage = Stage::Idle;
                self.kind = RequestKind::Event;
                let done = event.acknowledge();
                self.respond(now, done.response, done.after);
            }
        }
        Ok(())
    }

    /// Turns the handler's outcome into the response.
    pub(crate) fn complete(&mut self, now: Now, outcome: HandlerResult) -> Result<(), DriverError> {
        if let Some(dispatched) = self.dispatched.take() {
            let metrics = self.endpoint.metrics();
            metrics.handled(self.kind, dispatched, now.instant);
        }
        let Some(outcome) = self.complete_through_rest(now, outcome) else {
            return Ok(());
        };
        let Stage::Handling(responding) = std::mem::replace(&mut self.stage, Stage::Idle) else {
            return Err(DriverError::NotHandling);
        };
        let completed = responding.complete(outcome);
        self.respond(now, completed.response, completed.after);
        Ok(())
    }

    /// Supplies the next bytes of the file being streamed.
    pub(crate) fn send_file_data(&mut self, data: Bytes) -> Result<(), DriverError> {
        let Stage::Streaming {
            file: Some(file), ..
        } = &mut self.stage
        else {
            return Err(DriverError::NotStreaming);
        };
        file.supplied += data.len() as u64;
        if let Some(declared) = file.declared
            && file.supplied > declared
        {
            let supplied = file.supplied;
            self.abort_file();
            return Err(DriverError::FileLength { declared, supplied });
        }
        self.conn
            .send_data(data)
            .map_err(|_| DriverError::NotStreaming)
    }

    /// Ends the file being streamed; the response continues with its next segment.
    pub(crate) fn finish_file(&mut self) -> Result<(), DriverError> {
        let Stage::Streaming { file, .. } = &mut self.stage else {
            return Err(DriverError::NotStreaming);
        };
        let Some(done) = file.take() else {
            return Err(DriverError::NotStreaming);
        };
        if let Some(declared) = done.declared
            && declared != done.supplied
        {
            self.abort_file();
            return Err(DriverError::FileLength {
                declared,
                supplied: done.supplied,
            });
        }
        Ok(())
    }

    /// The file could not be read: the response cannot be completed, so the connection
    /// closes (the peer sees a truncated response, never a wrong one).
    pub(crate) fn abort_file(&mut self) {
        tracing::error!(parent: &self.span, "could not stream a reply file; closing the connection");
        self.stage = Stage::Idle;
        self.after = None;
        self.conn.abort();
    }

    fn respond(
        &mut self,
        now: Now,
        response: Response<ResponseBody>,
        after: Option<BoxFuture<()>>,
    ) {
        let (parts, body) = response.into_parts();
        if let Some(started) = self.started.take() {
            let took = now.instant.saturating_duration_since(started);
            record_response(&self.span, parts.status, took);
            let metrics = self.endpoint.metrics();
            metrics.responded(self.kind, parts.status, took);
        }
        // These calls cannot fail: a request is in flight and no response has started.
        let sent = match body {
            ResponseBody::Empty => self
                .conn
                .send_response(parts, BodyLength::Empty)
                .and_then(|()| self.conn.send_end()),
            ResponseBody::Full(bytes) => self.conn.send_full_response(parts, bytes),
            ResponseBody::Multipart(multipart) => {
                let length = multipart
                    .content_length()
                    .map_or(BodyLength::Unknown, BodyLength::Known);
                let sent = self.conn.send_response(parts, length);
                if sent.is_ok() {
                    // The segments are written from `poll`, which hands files to the driver.
                    self.stage = Stage::Streaming {
                        rest: multipart.into_segments().into(),
                        file: None,
                        after,
                    };
                    return;
                }
                sent
            }
        };
        if let Err(error) = sent {
            tracing::error!(%error, "could not send a response");
        }
        self.after = after;
    }

    /// Writes the in-memory segments of a multipart body up to the next file.
    fn stream(&mut self) -> Option<Step> {
        let Stage::Streaming { rest, file, after } = &mut self.stage else {
            return None;
        };
        while let Some(segment) = rest.pop_front() {
            match segment {
                Segment::Bytes(bytes) => {
                    if let Err(error) = self.conn.send_data(bytes) {
                        tracing::error!(%error, "could not send a response segment");
                    }
                }
                Segment::File { source, .. } => {
                    *file = Some(StreamedFile {
                        declared: source.known_len(),
                        supplied: 0,
                    });
                    return Some(Step::StreamFile(source));
                }
            }
        }
        let after = after.take();
        self.stage = Stage::Idle;
        if let Err(error) = self.conn.send_end() {
            tracing::error!(%error, "could not end a response");
        }
        self.after = after;
        None
    }
}

/// Replies through REST: automatic deferral and oversized files (see [`crate::deferral`]).
/// Drivers without a REST client never enable them, and nothing below then changes what
/// a session does.
impl Requests {
    /// Lets this session send replies through REST as `routing` says (off by default).
    pub(crate) fn set_reply_routing(&mut self, routing: crate::deferral::ReplyRouting) {
        self.routing.config = routing;
    }

    /// The reply routing in force.
    #[must_use]
    pub(crate) fn reply_routing(&self) -> crate::deferral::ReplyRouting {
        self.routing.config
    }

    /// When the handler in flight is to be deferred with [`Requests::defer`]: only while
    /// a handler runs, deferral is enabled, it was not deferred yet and it is not an
    /// autocomplete handler. Separate from [`Requests::poll_timeout`], which is for
    /// [`Step::Read`]; this one is for [`Step::Handle`].
    #[must_use]
    pub(crate) fn defer_deadline(&self) -> Option<Instant> {
        match self.stage {
            Stage::Handling(_) if self.routing.deferred.is_none() => self.routing.deadline,
            _ => None,
        }
    }

    /// Answers the request of the handler in flight with a deferred response (type 5,
    /// or 6 for components; see [`crate::deferral`]) and queues it for
    /// [`Requests::poll_transmit`]. The handler keeps running: pass its outcome to
    /// [`Requests::complete`] as usual, which then writes nothing on the connection and
    /// queues the late reply for [`Requests::poll_rest_reply`]. May be called before the
    /// deadline (e.g. on shutdown).
    ///
    /// # Errors
    /// [`DeferError::Autocomplete`](crate::deferral::DeferError::Autocomplete);
    /// [`DeferError::NotHandling`](crate::deferral::DeferError::NotHandling) when no
    /// handler runs, it was already deferred, or routing is disabled.
    pub(crate) fn defer(
        &mut self,
        now: Now,
    ) -> Result<crate::deferral::Deferred, crate::deferral::DeferError> {
        use crate::deferral::{DeferError, Deferred};
        if !matches!(self.stage, Stage::Handling(_)) || self.routing.deferred.is_some() {
            return Err(DeferError::NotHandling);
        }
        let Some(target) = self.routing.target.clone() else {
            return Err(DeferError::NotHandling);
        };
        let deferred = Deferred::new(target)?;
        tracing::debug!(parent: &self.span, kind = deferred.kind().type_number(), "deferring a slow handler");
        self.stage = Stage::Idle;
        self.respond(now, deferred.response(), None);
        self.routing.deadline = None;
        self.routing.deferred = Some(deferred.clone());
        Ok(deferred)
    }

    /// The next reply to send through REST, if any (after [`Requests::complete`]).
    pub(crate) fn poll_rest_reply(&mut self) -> Option<crate::deferral::RestReply> {
        self.routing.queue.pop_front()
    }

    /// The part of [`Requests::complete`] that routes through REST: `None` when the
    /// outcome was taken care of, else the outcome for the HTTP answer.
    fn complete_through_rest(&mut self, now: Now, outcome: HandlerResult) -> Option<HandlerResult> {
        if let Some(deferred) = self.routing.deferred.take() {
            self.routing.target = None;
            let reply = deferred.late_reply(outcome);
            self.routing.queue.push_back(reply);
            return None;
        }
        self.routing.deadline = None;
        let target = self.routing.target.take();
        let (Some(limit), Some(target), Stage::Handling(_)) =
            (self.routing.config.inline_files_limit, target, &self.stage)
        else {
            return Some(outcome);
        };
        match outcome {
            Ok(Some(reply)) if crate::deferral::files_exceed(&reply, limit) => {
                self.stage = Stage::Idle;
                tracing::debug!(parent: &self.span, "reply files over the inline limit: sending them through the callback endpoint");
                self.respond(now, crate::deferral::accepted(), None);
                self.routing.queue.push_back(target.callback_reply(reply));
                None
            }
            outcome => Some(outcome),
        }
    }
}
