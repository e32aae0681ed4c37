//! The connection-level session: one input, one output (see the [module docs](super)).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::requests::{Requests, Step};
use super::slots::{Eviction, Slot, Waiting};
use super::{DriverError, MAX_UNSENT, Now};
use crate::deferral::{ReplyRouting, RestReply};
use crate::endpoint::{BoxFuture, Endpoint, Finished, HandlerFuture, HandlerResult, Ticket};
use crate::http1;
use crate::multipart::FileSource;

/// Pipelined requests answered in one turn before [`Output::Yield`].
const ANSWERS_PER_TURN: usize = 16;

/// What happened, for [`Session::handle_input`].
pub enum Input {
    /// A read into [`Session::receive_buffer`] finished; also one that found nothing
    /// (spurious readiness), so an empty buffer is released.
    Received,
    /// The peer closed its sending side (a read returned 0 bytes).
    Eof,
    /// Time passed: [`Wait::deadline`] may be due.
    Timeout,
    /// This many bytes of the last [`Output::Transmit`] were written.
    Written(usize),
    /// The verdict of the ticket of [`Output::Verify`].
    Verified(Finished),
    /// The outcome of the handler of [`Output::Handle`].
    Handled(HandlerResult),
    /// The next bytes of the file of [`Output::StreamFile`].
    FileData(Bytes),
    /// The file of [`Output::StreamFile`] ended.
    FileEnd,
    /// The file of [`Output::StreamFile`] could not be read.
    FileFailed,
    /// Graceful shutdown: finish the request in flight, then close.
    Shutdown,
    /// The connection's [`Slot`] was given to a new connection ([`Slot::eviction`]).
    Evicted,
    /// Reading or writing the socket failed: close at once.
    Failed,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Received => f.write_str("Received"),
            Self::Eof => f.write_str("Eof"),
            Self::Timeout => f.write_str("Timeout"),
            Self::Written(n) => f.debug_tuple("Written").field(n).finish(),
            Self::Verified(_) => f.write_str("Verified(..)"),
            Self::Handled(_) => f.write_str("Handled(..)"),
            Self::FileData(data) => f.debug_tuple("FileData").field(&data.len()).finish(),
            Self::FileEnd => f.write_str("FileEnd"),
            Self::FileFailed => f.write_str("FileFailed"),
            Self::Shutdown => f.write_str("Shutdown"),
            Self::Evicted => f.write_str("Evicted"),
            Self::Failed => f.write_str("Failed"),
        }
    }
}

/// What the driver must do next; returned by [`Session::poll_output`], which is drained
/// until [`Output::Timeout`].
#[must_use]
pub enum Output {
    /// Write these bytes, in order after the previous ones: what the socket takes now,
    /// without blocking, then the rest when it is writable; report each write with
    /// [`Input::Written`]. The next `Transmit` comes once these are all written.
    Transmit(Bytes),
    /// A request's signature is queued for verification. Let the runtime's other ready
    /// tasks run once (their requests join the batch), then await the ticket and pass its
    /// verdict with [`Input::Verified`].
    Verify(Ticket),
    /// Run this handler (it catches panics) and pass its outcome with [`Input::Handled`].
    /// Keep serving the session's other outputs while it runs.
    Handle(HandlerFuture),
    /// Stream this file into the response: read a chunk whenever [`Wait::file`] asks
    /// for one, passed with [`Input::FileData`], then [`Input::FileEnd`] (or
    /// [`Input::FileFailed`]).
    StreamFile(FileSource),
    /// Run this after-response work (spawn it): its response has been written.
    Spawn(BoxFuture<()>),
    /// Deliver this reply through the REST client (spawn it); see [`crate::deferral`].
    RestReply(RestReply),
    /// This connection has had its turn: let the runtime's other ready tasks (other
    /// connections) run once, then poll again. A peer whose pipelined requests are all
    /// buffered would otherwise keep a thread to itself.
    Yield,
    /// Nothing more to do now: wait as [`Wait`] says, then pass what happened.
    Timeout(Wait),
    /// Everything was written: shut down the socket's sending side. Reads go on (a
    /// lingering close, see [`http1::Linger`]): the session discards them.
    ShutdownWrite,
    /// The connection is done: close the socket (and drop any file being read).
    Close,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Transmit(bytes) => f.debug_tuple("Transmit").field(&bytes.len()).finish(),
            Self::Verify(_) => f.write_str("Verify(..)"),
            Self::Handle(_) => f.write_str("Handle(..)"),
            Self::StreamFile(source) => f.debug_tuple("StreamFile").field(source).finish(),
            Self::Spawn(_) => f.write_str("Spawn(..)"),
            Self::RestReply(_) => f.write_str("RestReply(..)"),
            Self::Yield => f.write_str("Yield"),
            Self::Timeout(wait) => f.debug_tuple("Timeout").field(wait).finish(),
            Self::ShutdownWrite => f.write_str("ShutdownWrite"),
            Self::Close => f.write_str("Close"),
        }
    }
}

/// What to wait for after [`Output::Timeout`]: whichever comes first. A running handler
/// (from [`Output::Handle`]), shutdown and eviction are always waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    /// Pass [`Input::Timeout`] at this instant (the earliest of the session's deadlines).
    pub deadline: Option<Instant>,
    /// Read the socket when it is readable.
    pub read: bool,
    /// Write the rest of the last [`Output::Transmit`] when the socket is writable.
    pub write: bool,
    /// Read the next chunk of the file being streamed.
    pub file: bool,
}

/// What the driver owes the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owed {
    Nothing,
    /// The verdict of [`Output::Verify`].
    Verdict,
    /// The outcome of [`Output::Handle`].
    Outcome,
    /// The chunks of [`Output::StreamFile`].
    File,
}

/// Where the connection stands as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Serving requests.
    Serving,
    /// No more requests: writing what is left, then a lingering close or a close.
    Flushing,
    /// The sending side is shut down; reads are discarded until EOF, `until` or `left`
    /// more bytes.
    Lingering { until: Instant, left: u64 },
    /// Closed (or abandoned: nothing more is read or written).
    Done,
}

/// Output waiting to be written, and the write deadline.
#[derive(Debug, Default)]
struct Outbox {
    /// Not handed to the driver yet.
    queue: VecDeque<Bytes>,
    queued: usize,
    /// Handed to the driver with [`Output::Transmit`], not written yet.
    handed: usize,
    /// The last write progress (or when the bytes in hand were handed out).
    progress: Option<Instant>,
}

impl Outbox {
    fn push(&mut self, bytes: Bytes) {
        self.queued += bytes.len();
        self.queue.push_back(bytes);
    }

    /// Whether bytes wait to be handed out (none are in the driver's hands).
    fn has_hand_out(&self) -> bool {
        self.handed == 0 && self.queued > 0
    }

    /// The next bytes to hand out, once the ones in hand are written: every queued
    /// piece up to [`MAX_UNSENT`] joined, so a burst of answers is one write.
    fn hand_out(&mut self, now: Instant) -> Option<Bytes> {
        if self.handed > 0 {
            return None;
        }
        let mut bytes = self.queue.pop_front()?;
        if bytes.len() < MAX_UNSENT && self.queue.front().is_some() {
            let mut joined = bytes::BytesMut::from(&bytes[..]);
            while let Some(next) = self.queue.front()
                && joined.len() + next.len() <= MAX_UNSENT
            {
                joined.extend_from_slice(next);
                self.queue.pop_front();
            }
            bytes = joined.freeze();
        }
        self.queued -= bytes.len();
        self.handed = bytes.len();
        self.progress = Some(now);
        Some(bytes)
    }

    fn written(&mut self, n: usize, now: Instant) {
        if n > 0 {
            self.handed = self.handed.saturating_sub(n);
            self.progress = Some(now);
        }
    }

    fn unsent(&self) -> usize {
        self.queued + self.handed
    }

    fn is_empty(&self) -> bool {
        self.unsent() == 0
    }

    fn clear(&mut self) {
        *self = Self::default();
    }

    /// When a write that makes no progress gives up.
    fn deadline(&self, timeout: Duration) -> Option<Instant> {
        (self.handed > 0)
            .then_some(self.progress?)
            .map(|at| at + timeout)
    }
}

/// One served connection; see the [module docs](super).
pub struct Session {
    requests: Requests,
    /// The time of the last input.
    now: Now,
    phase: Phase,
    owed: Owed,
    outbox: Outbox,
    /// After-response work whose response is not written yet.
    after: VecDeque<BoxFuture<()>>,
    /// The last request step asked for bytes.
    wants_read: bool,
    /// The last request step answered a request: more may be buffered.
    parsing: bool,
    /// Requests answered since the session last waited or yielded.
    answered: usize,
    peer_eof: bool,
    write_timeout: Duration,
    slot: Option<Slot>,
    /// What the connection waits for (as published to the slot).
    waiting: Waiting,
    /// The head deadline, which a TLS handshake must also meet.
    #[cfg(feature = "tls")]
    head_timeout: Duration,
    /// HTTPS: the TLS layer between the socket bytes and the requests.
    #[cfg(feature = "tls")]
    tls: Option<Box<super::tls::Layer>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("phase", &self.phase)
            .field("owed", &self.owed)
            .field("unsent", &self.outbox.unsent())
            .field("requests", &self.requests)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session for a connection accepted at `now`. The connection's body limit is the
    /// endpoint's `max_body_size`, so both layers refuse at the same size.
    pub fn new(endpoint: Endpoint, config: http1::Config, now: Now) -> Self {
        let write_timeout = config.write_timeout;
        #[cfg(feature = "tls")]
        let head_timeout = config.head_timeout;
        Self {
            requests: Requests::new(endpoint, config, now.instant),
            now,
            phase: Phase::Serving,
            owed: Owed::Nothing,
            outbox: Outbox::default(),
            after: VecDeque::new(),
            wants_read: false,
            parsing: false,
            answered: 0,
            peer_eof: false,
            write_timeout,
            slot: None,
            waiting: Waiting::Busy,
            #[cfg(feature = "tls")]
            head_timeout,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Serves this connection over TLS with the configuration `tls` gives new connections
    /// now, if any (builder form; call it before the first input). The handshake must end
    /// by the head deadline. A configuration rustls refuses closes the connection.
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn with_tls(mut self, tls: Option<&super::tls::ServerTls>) -> Self {
        let Some(tls) = tls else { return self };
        let until = self.now.instant + self.head_timeout;
        match super::tls::Layer::new(tls.config(), until) {
            Ok(layer) => self.tls = Some(Box::new(layer)),
            Err(error) => {
                tracing::error!(%error, "TLS configuration refused; closing the connection");
                self.abandon("TLS configuration refused");
            }
        }
        self
    }

    /// Whether the connection is served over TLS.
    #[must_use]
    pub fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }

    /// The ALPN protocol the TLS handshake negotiated (`None` before the handshake ends,
    /// without ALPN, or without TLS).
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.tls.as_ref()?.alpn_protocol()
    }

    /// Gives the session its place in the server's [`Slots`](super::Slots): it publishes
    /// when it waits on its peer, so that at the cap it can be evicted (builder form).
    #[must_use]
    pub fn with_slot(mut self, slot: Slot) -> Self {
        self.slot = Some(slot);
        self
    }

    /// Resolves when the session's slot is evicted (never without a slot); pass
    /// [`Input::Evicted`] then.
    #[must_use]
    pub fn eviction(&self) -> Option<Eviction> {
        self.slot.as_ref().map(Slot::eviction)
    }

    /// Lets this session send replies through REST as `routing` says (off by default;
    /// see [`crate::deferral`]).
    pub fn set_reply_routing(&mut self, routing: ReplyRouting) {
        self.requests.set_reply_routing(routing);
    }

    /// The reply routing in force.
    #[must_use]
    pub fn reply_routing(&self) -> ReplyRouting {
        self.requests.reply_routing()
    }

    /// The receive buffer, with room for one read reserved, for drivers that read
    /// straight into it; pass [`Input::Received`] after every read attempt. Between
    /// requests it is released, so an idle connection holds no receive memory. Over TLS
    /// it takes the ciphertext, which the session decrypts (rustls itself keeps a 4 KiB
    /// read buffer per connection).
    pub fn receive_buffer(&mut self) -> &mut bytes::BytesMut {
        #[cfg(feature = "tls")]
        if let Some(tls) = &mut self.tls {
            return tls.receive_buffer();
        }
        self.requests.receive_buffer()
    }

    /// Copies `data` into the receive buffer and passes [`Input::Received`].
    pub fn receive(&mut self, now: Now, data: &[u8]) {
        self.receive_buffer().extend_from_slice(data);
        // Cannot fail: `Received` fits every state.
        let _ = self.handle_input(now, Input::Received);
    }

    /// The span of the request in flight (or of the last one, between requests).
    pub fn span(&self) -> &tracing::Span {
        self.requests.span()
    }

    /// Whether the session is closed (the next output is [`Output::Close`], unless a
    /// verdict or handler outcome is still owed).
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Takes what happened at `now`.
    ///
    /// # Errors
    /// A [`DriverError`] when the input does not fit what the session asked for (a
    /// driver bug); the connection is then abandoned.
    pub fn handle_input(&mut self, now: Now, input: Input) -> Result<(), DriverError> {
        self.now = now;
        let result = match input {
            Input::Received => {
                self.received();
                Ok(())
            }
            Input::Eof => {
                self.peer_eof = true;
                self.requests.receive_eof();
                if let Phase::Lingering { .. } = self.phase {
                    self.phase = Phase::Done;
                }
                Ok(())
            }
            Input::Timeout => {
                self.timeout();
                Ok(())
            }
            Input::Written(n) => {
                self.outbox.written(n, now.instant);
                Ok(())
            }
            Input::Verified(finished) => self
                .take(Owed::Verdict, DriverError::NotVerifying)
                .and_then(|()| {
                    if self.phase == Phase::Done {
                        return Ok(());
                    }
                    self.requests.verified(now, finished)
                }),
            Input::Handled(outcome) => self
                .take(Owed::Outcome, DriverError::NotHandling)
                .map(|()| self.handled(outcome)),
            Input::FileData(data) => self.file_data(data),
            Input::FileEnd => self
                .take(Owed::File, DriverError::NotStreaming)
                .and_then(|()| {
                    if self.phase == Phase::Done {
                        return Ok(());
                    }
                    self.requests.finish_file()
                }),
            Input::FileFailed => self.take(Owed::File, DriverError::NotStreaming).map(|()| {
                if self.phase != Phase::Done {
                    self.requests.abort_file();
                }
            }),
            Input::Shutdown => {
                self.requests.close();
                Ok(())
            }
            Input::Evicted => {
                self.abandon("evicted at the connection cap");
                Ok(())
            }
            Input::Failed => {
                self.abandon("the socket failed");
                Ok(())
            }
        };
        if let Err(error) = result {
            tracing::error!(%error, "driver error; closing the connection");
            self.abandon("driver error");
        }
        result
    }

    /// What the driver must do next; call until it returns [`Output::Timeout`] (or
    /// [`Output::Close`]).
    pub fn poll_output(&mut self) -> Output {
        loop {
            if self.phase != Phase::Done {
                self.gather_transmit();
            }
            // Answers to pipelined requests already buffered are gathered (up to the
            // bound) into one transmit: one write for a burst, not one per request.
            let gathering = self.parsing && self.outbox.unsent() < MAX_UNSENT;
            if !gathering && let Some(bytes) = self.outbox.hand_out(self.now.instant) {
                return Output::Transmit(bytes);
            }
            if (self.outbox.is_empty() || self.phase == Phase::Done)
                && let Some(work) = self.after.pop_front()
            {
                return Output::Spawn(work);
            }
            if let Some(reply) = self.requests.poll_rest_reply() {
                return Output::RestReply(reply);
            }
            if let Some(output) = self.step() {
                return output;
            }
        }
    }

    /// Advances the connection by one step: `None` when the caller should look for
    /// output again.
    fn step(&mut self) -> Option<Output> {
        self.wants_read = false;
        self.parsing = false;
        match self.phase {
            Phase::Done => return Some(self.finish()),
            Phase::Lingering { .. } => return Some(self.wait()),
            Phase::Flushing if !self.outbox.is_empty() => return Some(self.wait()),
            Phase::Flushing => {
                #[cfg(feature = "tls")]
                if let Some(tls) = &mut self.tls
                    && tls.close_notify()
                {
                    // close_notify goes out before the sending side is shut down.
                    return None;
                }
                let linger = self.requests.linger().filter(|_| !self.peer_eof);
                return Some(match linger {
                    Some(linger) => {
                        self.phase = Phase::Lingering {
                            until: self.now.instant + linger.timeout,
                            left: linger.max_bytes,
                        };
                        Output::ShutdownWrite
                    }
                    None => {
                        self.phase = Phase::Done;
                        self.finish()
                    }
                });
            }
            Phase::Serving => {}
        }
        if self.owed != Owed::Nothing || self.outbox.unsent() >= MAX_UNSENT {
            return Some(self.wait());
        }
        if self.answered >= ANSWERS_PER_TURN {
            if self.outbox.has_hand_out() {
                // Hand out what was gathered first.
                return None;
            }
            self.answered = 0;
            return Some(Output::Yield);
        }
        match self.requests.poll(self.now) {
            Step::Read if self.peer_eof => self.phase = Phase::Flushing,
            // Answers queued while parsing (a rejection, a 100 Continue) go out first.
            Step::Read if self.requests.has_transmit() || self.outbox.has_hand_out() => {}
            Step::Read => {
                self.wants_read = true;
                return Some(self.wait());
            }
            Step::Verify(ticket) => {
                self.owed = Owed::Verdict;
                // Busy from now on: never evicted while verifying or handling.
                self.publish_waiting(false);
                return Some(Output::Verify(ticket));
            }
            Step::Handle(handler) => {
                self.owed = Owed::Outcome;
                self.publish_waiting(false);
                return Some(Output::Handle(handler));
            }
            Step::StreamFile(source) => {
                self.owed = Owed::File;
                return Some(Output::StreamFile(source));
            }
            Step::Answered => {
                self.parsing = true;
                self.answered += 1;
            }
            Step::RunAfter(work) => self.after.push_back(work),
            Step::Close => self.phase = Phase::Flushing,
        }
        None
    }

    /// The output of a closed session: wait for a verdict or handler still owed (their
    /// work is not cut short), else close.
    fn finish(&mut self) -> Output {
        match self.owed {
            Owed::Verdict | Owed::Outcome => {
                self.publish_waiting(false);
                Output::Timeout(Wait {
                    deadline: None,
                    read: false,
                    write: false,
                    file: false,
                })
            }
            Owed::File | Owed::Nothing => {
                self.owed = Owed::Nothing;
                Output::Close
            }
        }
    }

    /// The wait for the current state, with its merged deadline.
    fn wait(&mut self) -> Output {
        self.answered = 0;
        let write = self.outbox.handed > 0;
        let mut deadline = self.outbox.deadline(self.write_timeout);
        let mut merge = |at: Option<Instant>| {
            deadline = match (deadline, at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        };
        let read = match self.phase {
            Phase::Serving => {
                merge(self.requests.poll_timeout());
                #[cfg(feature = "tls")]
                merge(self.tls.as_ref().and_then(|tls| tls.handshake_deadline()));
                if self.owed == Owed::Outcome {
                    merge(self.requests.defer_deadline());
                }
                self.wants_read
            }
            Phase::Lingering { until, .. } => {
                merge(Some(until));
                true
            }
            Phase::Flushing | Phase::Done => false,
        };
        let file = self.owed == Owed::File
            && self.phase == Phase::Serving
            && self.outbox.unsent() < MAX_UNSENT;
        let busy = matches!(self.owed, Owed::Verdict | Owed::Outcome);
        self.publish_waiting(!busy && (read || write));
        Output::Timeout(Wait {
            deadline,
            read,
            write,
            file,
        })
    }

    /// Tells the slot whether (and since when) the connection waits on its peer, and
    /// whether it is only idle between requests.
    fn publish_waiting(&mut self, waiting: bool) {
        let idle =
            self.phase == Phase::Serving && self.outbox.is_empty() && self.requests.is_idle();
        let now = self.now.instant;
        let next = match (waiting, idle, self.waiting) {
            (false, _, _) => Waiting::Busy,
            (true, true, Waiting::Idle(since)) => Waiting::Idle(since),
            (true, true, _) => Waiting::Idle(now),
            (true, false, Waiting::Stalled(since)) => Waiting::Stalled(since),
            (true, false, _) => Waiting::Stalled(now),
        };
        if next != self.waiting {
            self.waiting = next;
            if let Some(slot) = &self.slot {
                slot.set_waiting(next);
            }
        }
    }

    fn received(&mut self) {
        #[cfg(feature = "tls")]
        if self.tls.is_some() {
            self.received_tls();
            return;
        }
        match &mut self.phase {
            Phase::Serving => self.requests.received(self.now.instant),
            Phase::Lingering { left, .. } => {
                let discarded = self.requests.discard_received(self.now.instant) as u64;
                *left = left.saturating_sub(discarded);
                if *left == 0 {
                    self.phase = Phase::Done;
                }
            }
            Phase::Flushing | Phase::Done => {
                self.requests.discard_received(self.now.instant);
            }
        }
    }

    fn timeout(&mut self) {
        let now = self.now.instant;
        if self
            .outbox
            .deadline(self.write_timeout)
            .is_some_and(|at| now >= at)
        {
            self.abandon("a write made no progress within the write timeout");
            return;
        }
        #[cfg(feature = "tls")]
        if self
            .tls
            .as_ref()
            .and_then(|tls| tls.handshake_deadline())
            .is_some_and(|at| now >= at)
        {
            self.abandon("the TLS handshake did not end by the head deadline");
            return;
        }
        match self.phase {
            Phase::Lingering { until, .. } if now >= until => self.phase = Phase::Done,
            Phase::Serving => {
                self.requests.handle_timeout(now);
                let defer_due = self.requests.defer_deadline().is_some_and(|at| now >= at);
                if self.owed == Owed::Outcome
                    && defer_due
                    && let Err(error) = self.requests.defer(self.now)
                {
                    tracing::debug!(%error, "handler not deferred");
                }
            }
            Phase::Lingering { .. } | Phase::Flushing | Phase::Done => {}
        }
    }

    fn handled(&mut self, outcome: HandlerResult) {
        let result = if self.phase == Phase::Done {
            self.requests.abandon(self.now, outcome);
            Ok(())
        } else {
            self.requests.complete(self.now, outcome)
        };
        if let Err(error) = result {
            tracing::error!(%error, "driver error");
        }
    }

    fn file_data(&mut self, data: Bytes) -> Result<(), DriverError> {
        if self.owed != Owed::File {
            return Err(DriverError::NotStreaming);
        }
        if self.phase == Phase::Done {
            return Ok(());
        }
        let sent = self.requests.send_file_data(data);
        if sent.is_err() {
            // The response was abandoned; the file is no longer wanted.
            self.owed = Owed::Nothing;
        }
        sent
    }

    /// Settles what the driver owed, if it was `owed`.
    fn take(&mut self, owed: Owed, otherwise: DriverError) -> Result<(), DriverError> {
        if self.owed != owed {
            return Err(otherwise);
        }
        self.owed = Owed::Nothing;
        Ok(())
    }

    /// Moves the request side's answers to the outbox (through TLS, if served over TLS).
    fn gather_transmit(&mut self) {
        #[cfg(feature = "tls")]
        if let Some(tls) = &mut self.tls {
            while let Some(bytes) = self.requests.poll_transmit() {
                tls.encrypt(&bytes);
            }
            while let Some(bytes) = tls.poll_transmit() {
                self.outbox.push(bytes);
            }
            return;
        }
        while let Some(bytes) = self.requests.poll_transmit() {
            self.outbox.push(bytes);
        }
    }

    /// A read into the TLS receive buffer finished: decrypt it into the request side's
    /// buffer while serving, else discard it.
    #[cfg(feature = "tls")]
    fn received_tls(&mut self) {
        use super::tls::Decrypted;
        let Some(tls) = &mut self.tls else { return };
        match &mut self.phase {
            Phase::Serving => {
                let found = tls.decrypt(self.requests.receive_buffer());
                self.requests.received(self.now.instant);
                match found {
                    Decrypted::Open => {}
                    Decrypted::Closed => {
                        self.peer_eof = true;
                        self.requests.receive_eof();
                    }
                    Decrypted::Failed => {
                        // The alert goes out, then a lingering close.
                        self.requests.abort();
                        self.phase = Phase::Flushing;
                    }
                }
            }
            Phase::Lingering { left, .. } => {
                let discarded = tls.discard_received() as u64;
                *left = left.saturating_sub(discarded);
                if *left == 0 {
                    self.phase = Phase::Done;
                }
            }
            Phase::Flushing | Phase::Done => {
                tls.discard_received();
            }
        }
    }

    /// Stops reading and writing at once: what is unsent is dropped.
    fn abandon(&mut self, why: &'static str) {
        if self.phase != Phase::Done {
            tracing::debug!(parent: self.requests.span(), why, "closing the connection");
        }
        self.phase = Phase::Done;
        self.outbox.clear();
        self.requests.abort();
    }
}
