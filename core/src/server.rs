//! One served connection: the [`http1::Connection`] wired to the interaction
//! [`Endpoint`], still sans-IO.
//!
//! Every runtime adapter (smol, tokio, blocking threads) drives a [`Session`] per accepted
//! socket with the same loop, so they differ only in how they read, write, wait and run
//! futures — never in a protocol decision:
//!
//! ```text
//! loop {
//!     let action = session.poll(now);
//!     write every chunk session.poll_transmit() yields      // after EVERY poll, first
//!     match action {
//!         Action::Read             => read the socket into session.receive(now, bytes)
//!                                     (or session.receive_eof()), or, when
//!                                     session.poll_timeout() passes, session.handle_timeout(now)
//!         Action::Verify(ticket)   => let other connections run once (yield), then
//!                                     session.verified(ticket.await)  // batch verification
//!         Action::Handle(handler)  => session.complete(now, handler.await)  // panics are caught
//!         Action::StreamFile(file) => session.send_file_data(chunk) for each chunk read,
//!                                     then session.finish_file()
//!                                     (or session.abort_file() if reading fails)
//!         Action::RunAfter(work)   => spawn(work): its response is already written
//!         Action::Close            => if session.linger() is Some: shut down writing,
//!                                     drain reads as it says (a lingering close);
//!                                     close the socket; done
//!     }
//! }
//! ```
//!
//! Invariant: `poll` may queue responses (a PONG, a rejection) and then return
//! [`Action::Read`] for the next request, so the transmit queue must be written out after
//! every `poll`, before the driver waits on anything.
//!
//! A session also records a `tracing` span per request (method, path, interaction id
//! and kind, status, duration); drivers instrument handler futures with
//! [`Session::span`].

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use http::Response;
use tracing::field;

use crate::endpoint::{
    BoxFuture, Dispatch, Endpoint, Exchange, Finished, HandlerFuture, HandlerResult, Responding,
    ResponseBody, Ticket,
};
use crate::http1::{self, BodyLength, Connection, Event};
use crate::multipart::{FileSource, Segment};

/// The time as a session needs it: a monotonic instant for deadlines, and Unix seconds
/// for the optional signature-timestamp window. Drivers read both clocks; the core none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time, for deadlines.
    pub instant: Instant,
    /// Seconds since the Unix epoch, for the timestamp window.
    pub unix_secs: u64,
}

/// What the driver must do next; returned by [`Session::poll`].
#[must_use]
pub enum Action {
    /// Read from the socket, or wait for [`Session::poll_timeout`].
    Read,
    /// The request's body is complete and queued for signature verification.
    /// Let the runtime's other ready tasks run once (so their requests join
    /// the batch; e.g. `yield_now().await`), then await the ticket and pass
    /// its output to [`Session::verified`].
    Verify(Ticket),
    /// Await this handler (it catches panics) and pass its outcome to [`Session::complete`].
    Handle(HandlerFuture),
    /// Stream this file into the response with [`Session::send_file_data`] and
    /// [`Session::finish_file`].
    StreamFile(FileSource),
    /// Run this after-response work (e.g. spawn it) once [`Session::poll_transmit`] has been
    /// written out: it holds the finished response.
    RunAfter(BoxFuture<()>),
    /// Flush [`Session::poll_transmit`]; if [`Session::linger`] says so, shut down the
    /// sending side and drain reads as it says; then close the socket.
    Close,
}

impl std::fmt::Debug for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Read => f.write_str("Read"),
            Self::Verify(_) => f.write_str("Verify(..)"),
            Self::Handle(_) => f.write_str("Handle(..)"),
            Self::StreamFile(source) => f.debug_tuple("StreamFile").field(source).finish(),
            Self::RunAfter(_) => f.write_str("RunAfter(..)"),
            Self::Close => f.write_str("Close"),
        }
    }
}

/// The driver called a session method that does not fit its state (a driver bug).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DriverError {
    /// [`Session::complete`] without a handler running.
    NotHandling,
    /// [`Session::verified`] without a request awaiting verification.
    NotVerifying,
    /// File data or a file end without a file being streamed.
    NotStreaming,
    /// More or fewer file bytes than the file's declared length.
    FileLength {
        /// The declared length.
        declared: u64,
        /// The bytes supplied (so far, for too many).
        supplied: u64,
    },
}

impl std::fmt::Display for DriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotHandling => f.write_str("no handler is running on this session"),
            Self::NotVerifying => f.write_str("no request awaits verification on this session"),
            Self::NotStreaming => f.write_str("no file is being streamed on this session"),
            Self::FileLength { declared, supplied } => write!(
                f,
                "file declared {declared} bytes but {supplied} were supplied"
            ),
        }
    }
}

impl std::error::Error for DriverError {}

/// Where the request in flight stands.
enum Stage {
    /// No request, or one already answered (remaining body events are ignored).
    Idle,
    /// The endpoint accumulates the body.
    Body(Exchange),
    /// The driver awaits the signature check ([`Action::Verify`]).
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

/// One served connection; see the [module docs](self).
pub struct Session {
    conn: Connection,
    endpoint: Endpoint,
    stage: Stage,
    after: Option<BoxFuture<()>>,
    span: tracing::Span,
    started: Option<Instant>,
    routing: crate::deferral::Routing,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session for a connection accepted at `now`. The connection's body limit is the
    /// endpoint's `max_body_size`, so both layers refuse at the same size.
    pub fn new(endpoint: Endpoint, mut config: http1::Config, now: Instant) -> Self {
        config.max_body_size = endpoint.config().get_max_body_size() as u64;
        Self {
            conn: Connection::new(config, now),
            endpoint,
            stage: Stage::Idle,
            after: None,
            span: tracing::Span::none(),
            started: None,
            routing: crate::deferral::Routing::default(),
        }
    }

    /// Hands the session bytes read from the socket.
    pub fn receive(&mut self, now: Instant, data: &[u8]) {
        self.conn.receive(now, data);
    }

    /// The receive buffer, for drivers that read straight into it; see
    /// [`Connection::receive_buffer`]. Call [`Session::received`] after appending.
    pub fn receive_buffer(&mut self) -> &mut bytes::BytesMut {
        self.conn.receive_buffer()
    }

    /// Tells the session a read into [`Session::receive_buffer`] finished at `now`; call it
    /// after every read attempt, also one that found nothing (see [`Connection::received`]).
    pub fn received(&mut self, now: Instant) {
        self.conn.received(now);
    }

    /// Tells the session the peer closed its sending side.
    pub fn receive_eof(&mut self) {
        self.conn.receive_eof();
    }

    /// When [`Session::handle_timeout`] is next due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.conn.poll_timeout()
    }

    /// Fires the connection's deadline if it is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.conn.handle_timeout(now);
    }

    /// The next bytes to write to the socket.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.conn.poll_transmit()
    }

    /// How to close the socket after [`Action::Close`]: drain it first as the
    /// [`http1::Linger`] says, or (`None`, the peer sends nothing more) close at once;
    /// see [`http1::Connection::linger`].
    pub fn linger(&self) -> Option<http1::Linger> {
        self.conn.linger()
    }

    /// Graceful shutdown: finish the request in flight, then close.
    pub fn close(&mut self) {
        self.conn.close();
    }

    /// The span of the request in flight (or of the last one, between requests).
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// What the driver must do next. Write everything [`Session::poll_transmit`] yields
    /// after every call, before acting on the result (see the module docs).
    pub fn poll(&mut self, now: Now) -> Action {
        if let Some(after) = self.after.take() {
            return Action::RunAfter(after);
        }
        if let Stage::Dispatching(_) = self.stage
            && let Stage::Dispatching(dispatch) = std::mem::replace(&mut self.stage, Stage::Idle)
        {
            record_dispatch(&self.span, &dispatch);
            self.routing
                .dispatched(dispatch.context(), self.started.unwrap_or(now.instant));
            let (responding, handler) = dispatch.start();
            self.stage = Stage::Handling(responding);
            return Action::Handle(handler);
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
                Event::Head(parts) => {
                    self.span = request_span(&parts);
                    self.started = Some(now.instant);
                    match self.endpoint.begin(&parts) {
                        Ok(exchange) => self.stage = Stage::Body(exchange),
                        Err(rejection) => self.respond(now, rejection.into_response(), None),
                    }
                }
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
                                return Action::Verify(signed.enqueue(now.unix_secs));
                            }
                        }
                    }
                }
                Event::NeedData => return Action::Read,
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
                        return Action::Close;
                    }
                },
                Event::Closed => return Action::Close,
            }
            if let Some(after) = self.after.take() {
                return Action::RunAfter(after);
            }
        }
    }

    /// Takes the verification result of [`Action::Verify`]: a rejection or a
    /// PONG is queued for sending, a dispatch starts its handler at the next
    /// [`Session::poll`].
    pub fn verified(&mut self, now: Now, finished: Finished) -> Result<(), DriverError> {
        let Stage::Verifying = self.stage else {
            return Err(DriverError::NotVerifying);
        };
        match finished {
            Finished::Respond(immediate) => {
                self.stage = Stage::Idle;
                self.respond(now, immediate.into_response(), None);
            }
            Finished::Dispatch(dispatch) => self.stage = Stage::Dispatching(dispatch),
        }
        Ok(())
    }

    /// Turns the handler's outcome into the response.
    pub fn complete(&mut self, now: Now, outcome: HandlerResult) -> Result<(), DriverError> {
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
    pub fn send_file_data(&mut self, data: Bytes) -> Result<(), DriverError> {
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
    pub fn finish_file(&mut self) -> Result<(), DriverError> {
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
    pub fn abort_file(&mut self) {
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
            record_response(
                &self.span,
                parts.status,
                now.instant.saturating_duration_since(started),
            );
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
    fn stream(&mut self) -> Option<Action> {
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
                    return Some(Action::StreamFile(source));
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

/// The span of one request, with the fields every driver records: method and path now,
/// interaction id and kind at dispatch ([`record_dispatch`]), status and duration at the
/// response ([`record_response`]). Debug level: a flood of bad requests costs nothing
/// unless debug tracing is on.
pub fn request_span(head: &http::request::Parts) -> tracing::Span {
    tracing::debug_span!(
        "request",
        method = %head.method,
        path = head.uri.path(),
        interaction.id = field::Empty,
        interaction.kind = field::Empty,
        status = field::Empty,
        duration_us = field::Empty,
    )
}

/// Records the dispatched interaction's id and kind on a [`request_span`].
pub fn record_dispatch(span: &tracing::Span, dispatch: &Dispatch) {
    span.record("interaction.id", dispatch.context().interaction().id.get());
    span.record("interaction.kind", dispatch.kind().name());
}

/// Records the response status and the time since the head on a [`request_span`].
pub fn record_response(span: &tracing::Span, status: http::StatusCode, took: std::time::Duration) {
    span.record("status", status.as_u16());
    span.record(
        "duration_us",
        u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
    );
}

/// Replies through REST: automatic deferral and oversized files (see [`crate::deferral`]).
/// Drivers without a REST client never enable them, and nothing below then changes what
/// a session does.
///
/// With routing enabled the loop gains two steps:
///
/// ```text
/// Action::Handle(handler) => race handler against session.defer_deadline():
///     deadline first  => session.defer(now); write session.poll_transmit() (the type 5/6
///                        answer); keep awaiting the handler
///     then            => session.complete(now, outcome)   // never a second HTTP answer
///                        write session.poll_transmit(); then, for each
///                        session.poll_rest_reply(): send its requests in order through
///                        REST (spawned), then run its `after`
/// ```
impl Session {
    /// Lets this session send replies through REST as `routing` says (off by default).
    pub fn set_reply_routing(&mut self, routing: crate::deferral::ReplyRouting) {
        self.routing.config = routing;
    }

    /// The reply routing in force.
    #[must_use]
    pub fn reply_routing(&self) -> crate::deferral::ReplyRouting {
        self.routing.config
    }

    /// When the handler in flight is to be deferred with [`Session::defer`]: only while
    /// a handler runs, deferral is enabled, it was not deferred yet and it is not an
    /// autocomplete handler. Separate from [`Session::poll_timeout`], which is for
    /// [`Action::Read`]; this one is for [`Action::Handle`].
    #[must_use]
    pub fn defer_deadline(&self) -> Option<Instant> {
        match self.stage {
            Stage::Handling(_) if self.routing.deferred.is_none() => self.routing.deadline,
            _ => None,
        }
    }

    /// Answers the request of the handler in flight with a deferred response (type 5,
    /// or 6 for components; see [`crate::deferral`]) and queues it for
    /// [`Session::poll_transmit`]. The handler keeps running: pass its outcome to
    /// [`Session::complete`] as usual, which then writes nothing on the connection and
    /// queues the late reply for [`Session::poll_rest_reply`]. May be called before the
    /// deadline (e.g. on shutdown).
    ///
    /// # Errors
    /// [`DeferError::Autocomplete`](crate::deferral::DeferError::Autocomplete);
    /// [`DeferError::NotHandling`](crate::deferral::DeferError::NotHandling) when no
    /// handler runs, it was already deferred, or routing is disabled.
    pub fn defer(
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

    /// The next reply to send through REST, if any (after [`Session::complete`]).
    pub fn poll_rest_reply(&mut self) -> Option<crate::deferral::RestReply> {
        self.routing.queue.pop_front()
    }

    /// The part of [`Session::complete`] that routes through REST: `None` when the
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
