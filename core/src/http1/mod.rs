//! Sans-IO HTTP/1.1, server side.
//!
//! A [`Connection`] owns the protocol state of one transport connection: it parses request
//! heads (with `httparse`), decodes bodies, enforces limits and deadlines, and encodes
//! responses. It performs no IO and reads no clock: the driver hands it received bytes and
//! the current [`Instant`], and takes from it events and bytes to write.
//!
//! # Driving a connection
//!
//! Every driver (one per runtime) runs the same loop:
//!
//! ```text
//! loop {
//!     match conn.next_event(now) {
//!         Ok(Event::Head(parts))  => decide: respond now, or keep reading the body
//!         Ok(Event::Data(bytes))  => feed the body to the application
//!         Ok(Event::End)          => the request is complete: run the handler, then
//!                                    send_response / send_data / send_end
//!         Ok(Event::NeedData)     => write poll_transmit(), then read the socket into
//!                                    receive(now, bytes) (or receive_eof) or wait until
//!                                    poll_timeout() and call handle_timeout(now)
//!         Ok(Event::Paused)       => write poll_transmit(); the response is not finished yet,
//!                                    so do not read: finish the response first
//!         Ok(Event::Closed)       => write what poll_transmit() still yields, then close
//!         Err(peer_error)         => already answered on the wire; log at debug level
//!     }
//! }
//! ```
//!
//! Invariant: after every input (`receive`, `receive_eof`, `handle_timeout`, `send_*`),
//! drain `poll_transmit` and call `next_event` until it returns `NeedData`, `Paused` or
//! `Closed`; then re-arm the timer from `poll_timeout`.
//!
//! Reading pauses while a response is pending, so pipelined requests wait in the socket,
//! not in memory: a connection never buffers more than one head (bounded by
//! [`Config::max_head_size`]) plus what one read returned.

mod body;
pub mod client;
mod error;
mod head;
mod parsed;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{StatusCode, Version, header, request, response};

use body::{BodyDecoder, Decoded};
pub use error::{HeadSyntax, PeerError, SendError};
use head::{FieldSpan, Framing};
pub use parsed::check_parsed_head;

/// Limits and deadlines of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Largest request head (request line plus header fields) in bytes; over it: 431.
    pub max_head_size: usize,
    /// Most header fields in a head; over it: 431. Capped at 256.
    pub max_headers: usize,
    /// Largest request body in bytes, declared or counted while chunked; over it: 413.
    pub max_body_size: u64,
    /// Time allowed for a request head to arrive once it is due; on expiry: 408, close.
    /// This is the slowloris defence.
    pub head_timeout: Duration,
    /// Time allowed for a request body to arrive after its head; on expiry: 408, close.
    pub body_timeout: Duration,
    /// How long an idle keep-alive connection is kept open; on expiry it closes silently.
    pub idle_timeout: Duration,
    /// How long a write may make no progress (the peer does not read) before the
    /// connection is closed. Enforced by the serving [`Session`](crate::server::Session),
    /// which owns the output; a bare [`Connection`] only queues bytes.
    pub write_timeout: Duration,
    /// How a closing connection lingers: see [`Linger`].
    pub linger: Linger,
}

/// A lingering close: after the connection shut down its sending side, the driver keeps
/// reading (and discarding) what the peer still sends until EOF, `timeout` or `max_bytes`,
/// and only then closes the socket. Closing with unread request bytes (say, the body of a
/// request answered 413 early) makes the kernel send a reset, which can destroy the
/// response before the peer reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linger {
    /// Longest time spent draining.
    pub timeout: Duration,
    /// Most bytes read and discarded.
    pub max_bytes: u64,
}

impl Default for Linger {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(2),
            max_bytes: 1024 * 1024,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_head_size: 16 * 1024,
            max_headers: 100,
            max_body_size: 1024 * 1024,
            head_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            write_timeout: Duration::from_secs(10),
            linger: Linger::default(),
        }
    }
}

/// What happened on the read side; returned by [`Connection::next_event`].
#[derive(Clone)]
#[allow(clippy::large_enum_variant)] // Heads are the common event; boxing would cost an allocation each.
pub enum Event {
    /// A request head. Body events follow: zero or more [`Event::Data`], then [`Event::End`].
    Head(request::Parts),
    /// A piece of the request body, split from the receive buffer without copying.
    Data(Bytes),
    /// The request body is complete.
    End,
    /// More bytes from the peer are needed: read the socket (and watch [`Connection::poll_timeout`]).
    NeedData,
    /// Reading is paused until the response to the current request is finished.
    Paused,
    /// The connection is done: flush [`Connection::poll_transmit`] and close the transport.
    Closed,
}

/// Body pieces by their length only: they hold interaction tokens.
impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Head(parts) => f.debug_tuple("Head").field(parts).finish(),
            Self::Data(data) => write!(f, "Data({} bytes)", data.len()),
            Self::End => f.write_str("End"),
            Self::NeedData => f.write_str("NeedData"),
            Self::Paused => f.write_str("Paused"),
            Self::Closed => f.write_str("Closed"),
        }
    }
}

/// How long the body of a response will be; decides `Content-Length` vs chunked framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// No body (`Content-Length: 0` where the status allows a body).
    Empty,
    /// Exactly this many bytes will be sent with [`Connection::send_data`].
    Known(u64),
    /// The length is not known in advance: chunked for HTTP/1.1 peers, delimited by closing
    /// the connection for HTTP/1.0 peers.
    Unknown,
}

/// Which deadline is armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerKind {
    /// Between requests, nothing received: expiry closes silently.
    Idle,
    /// A head is due: expiry answers 408.
    Head,
    /// A body is due: expiry answers 408.
    Body,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Timer {
    at: Instant,
    kind: TimerKind,
}

/// The read side's state.
#[derive(Debug)]
enum Read {
    /// Waiting for the next request head.
    Head,
    /// Reading the body of the request in flight (discarding it if the response is done).
    Body {
        decoder: BodyDecoder,
        expect: Continue,
    },
    /// The request in flight was read completely; reading pauses until its response ends.
    Complete,
    /// Nothing more will be read from this connection.
    Closed,
}

/// `Expect: 100-continue` handling for the request in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Continue {
    /// No interim response is due (none expected, already sent, or the body already flows).
    Settled,
    /// The peer waits for `100 Continue` before sending the body.
    Awaited,
}

/// The write side's state.
#[derive(Debug)]
enum Write {
    /// No response started for the request in flight.
    Idle,
    /// The head is written; body bytes are framed by the writer.
    Body(Writer),
    /// The response is complete.
    Complete,
}

/// How response body bytes are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    Length {
        declared: u64,
        sent: u64,
    },
    Chunked,
    UntilClose,
    /// HEAD, 204 and 304 responses carry no body: data is dropped.
    Suppressed,
}

/// What the connection remembers about the request in flight.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    version: Version,
    is_head: bool,
    keep_alive: bool,
    /// The request itself asked to close after it (`Connection: close`, HTTP/1.0).
    peer_closes: bool,
}

/// Bytes waiting to be written; small pieces are coalesced, large ones passed through.
#[derive(Debug, Default)]
struct Transmit {
    queue: VecDeque<Bytes>,
    tail: BytesMut,
}

/// Room [`Connection::receive_buffer`] reserves for one read: a whole Discord request fits.
const READ_RESERVE: usize = 8 * 1024;

/// Pieces at least this large are queued as they are instead of being copied into the tail.
const COALESCE_LIMIT: usize = 4096;

impl Transmit {
    fn extend(&mut self, bytes: &[u8]) {
        self.tail.extend_from_slice(bytes);
    }

    fn push(&mut self, bytes: Bytes) {
        if bytes.len() < COALESCE_LIMIT {
            self.tail.extend_from_slice(&bytes);
        } else {
            if !self.tail.is_empty() {
                self.queue.push_back(self.tail.split().freeze());
            }
            self.queue.push_back(bytes);
        }
    }

    fn pop(&mut self) -> Option<Bytes> {
        self.queue
            .pop_front()
            .or_else(|| (!self.tail.is_empty()).then(|| self.tail.split().freeze()))
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.tail.is_empty()
    }
}

/// One HTTP/1.1 server connection's protocol state. See the [module docs](self) for the
/// driving loop.
pub struct Connection {
    config: Config,
    buf: BytesMut,
    transmit: Transmit,
    read: Read,
    write: Write,
    in_flight: Option<InFlight>,
    timer: Option<Timer>,
    /// The peer closed its sending side.
    peer_eof: bool,
    /// The local side asked to close after the request in flight (graceful shutdown).
    closing: bool,
    /// The connection closed because the peer asked to, after a request read to its
    /// end and nothing after it: the peer sends nothing more, so no lingering close.
    peer_done: bool,
    /// A peer error raised outside `next_event` (by a timeout), reported by the next call.
    pending_error: Option<PeerError>,
    spans: Vec<FieldSpan>,
}

/// Counts of the buffered bytes, never the bytes: they hold interaction tokens.
impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("read", &self.read)
            .field("write", &self.write)
            .field("in_flight", &self.in_flight)
            .field("timer", &self.timer)
            .field("buffered", &self.buf.len())
            .field("transmit_pending", &self.has_transmit())
            .field("peer_eof", &self.peer_eof)
            .field("closing", &self.closing)
            .field("pending_error", &self.pending_error)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A new connection, accepted at `now`. The first head is due within
    /// [`Config::head_timeout`].
    pub fn new(config: Config, now: Instant) -> Self {
        let timer = Timer {
            at: now + config.head_timeout,
            kind: TimerKind::Head,
        };
        Self {
            config,
            buf: BytesMut::new(),
            transmit: Transmit::default(),
            read: Read::Head,
            write: Write::Idle,
            in_flight: None,
            timer: Some(timer),
            peer_eof: false,
            closing: false,
            peer_done: false,
            pending_error: None,
            spans: Vec::new(),
        }
    }

    /// The configuration this connection enforces.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Hands the connection bytes read from the peer at `now`.
    ///
    /// Call it only after [`Event::NeedData`]; bytes received after the connection closed
    /// its read side are dropped.
    pub fn receive(&mut self, now: Instant, data: &[u8]) {
        if matches!(self.read, Read::Closed) || data.is_empty() {
            return;
        }
        self.buf.extend_from_slice(data);
        self.received(now);
    }

    /// The receive buffer, with room for at least one read reserved, for drivers that read
    /// straight into it (no copy; e.g. tokio's `try_read_buf`). Append what was read, then
    /// call [`Connection::received`]. Between requests the buffer is released, so an idle
    /// connection holds no receive memory.
    pub fn receive_buffer(&mut self) -> &mut BytesMut {
        self.buf.reserve(READ_RESERVE);
        &mut self.buf
    }

    /// Bytes the receive buffer holds allocated (0 for an idle connection).
    pub fn receive_buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Tells the connection that a read into [`Connection::receive_buffer`] finished at
    /// `now`. Call it after every read attempt, also one that found nothing (`WouldBlock`):
    /// an empty buffer is released then, so a connection waiting for readiness holds none.
    pub fn received(&mut self, now: Instant) {
        if matches!(self.read, Read::Closed) || self.buf.is_empty() {
            self.buf = BytesMut::new();
            return;
        }
        if !self.buf.is_empty()
            && let Some(Timer {
                kind: TimerKind::Idle,
                ..
            }) = self.timer
        {
            self.timer = Some(Timer {
                at: now + self.config.head_timeout,
                kind: TimerKind::Head,
            });
        }
    }

    /// Tells the connection the peer closed its sending side.
    pub fn receive_eof(&mut self) {
        self.peer_eof = true;
    }

    /// When [`Connection::handle_timeout`] must next be called, if any deadline is armed.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timer.map(|t| t.at)
    }

    /// Fires the armed deadline if `now` has reached it: a late head or body is answered
    /// 408 and the connection closes; an idle keep-alive connection closes silently.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(timer) = self.timer else { return };
        if now < timer.at {
            return;
        }
        self.timer = None;
        match timer.kind {
            TimerKind::Idle => self.read = Read::Closed,
            TimerKind::Head => self.pending_error = Some(self.fail(PeerError::HeadTimeout)),
            TimerKind::Body => self.pending_error = Some(self.fail(PeerError::BodyTimeout)),
        }
    }

    /// The next bytes to write to the peer, if any. Call until it returns `None`.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmit.pop()
    }

    /// How many received bytes are buffered and not yet handed out; bounded by
    /// [`Config::max_head_size`] plus one read, whatever the peer sends.
    pub fn buffered_len(&self) -> usize {
        self.buf.len()
    }

    /// Whether the connection is an idle keep-alive one: between requests, nothing of
    /// the next one received.
    pub fn is_idle(&self) -> bool {
        matches!(
            self.timer,
            Some(Timer {
                kind: TimerKind::Idle,
                ..
            })
        )
    }

    /// Whether bytes are waiting in [`Connection::poll_transmit`].
    pub fn has_transmit(&self) -> bool {
        !self.transmit.is_empty()
    }

    /// Asks the connection to close after the request in flight (graceful shutdown): one
    /// idle between requests closes at once, a busy one answers with `Connection: close`
    /// if its response has not started, then closes. A connection that has not sent its
    /// first request yet, or has begun the next one, still gets it answered (under the
    /// head deadline): it was accepted, so its request must not be lost.
    pub fn close(&mut self) {
        self.closing = true;
        let idle_between_requests = self.in_flight.is_none()
            && matches!(self.read, Read::Head)
            && self.timer.is_none_or(|timer| timer.kind == TimerKind::Idle);
        if idle_between_requests {
            self.read = Read::Closed;
            self.timer = None;
        }
    }

    /// Abandons the connection at once: nothing more is read or written except what
    /// [`Connection::poll_transmit`] still holds, and the next event is [`Event::Closed`].
    /// For drivers that cannot finish a response they started (a failed file read): the
    /// peer sees a truncated message, which its framing reveals, never a wrong one.
    pub fn abort(&mut self) {
        self.read = Read::Closed;
        self.write = Write::Complete;
        self.timer = None;
    }

    /// The next read-side event; `now` arms the deadlines of what comes next.
    ///
    /// An `Err` means the peer broke a rule: the connection has already queued the error
    /// response (unless one had been started) and will close.
    pub fn next_event(&mut self, now: Instant) -> Result<Event, PeerError> {
        if let Some(error) = self.pending_error.take() {
            return Err(error);
        }
        loop {
            match &mut self.read {
                Read::Closed => {
                    return Ok(match self.write {
                        Write::Body(_) => Event::Paused,
                        Write::Idle | Write::Complete => Event::Closed,
                    });
                }
                Read::Complete => match self.write {
                    Write::Complete => self.finish_exchange(now),
                    Write::Idle | Write::Body(_) => return Ok(Event::Paused),
                },
                Read::Head => {
                    match head::parse(&mut self.buf, &self.config, &mut self.spans) {
                        Ok(Some(head)) => {
                            if let Framing::Length(n) = head.framing
                                && n > self.config.max_body_size
                            {
                                // Refused before a single body byte is read or buffered.
                                return Err(self.fail(PeerError::BodyTooLarge));
                            }
                            let decoder = match head.framing {
                                Framing::Empty => BodyDecoder::Length { remaining: 0 },
                                Framing::Length(n) => BodyDecoder::Length { remaining: n },
                                Framing::Chunked => BodyDecoder::Chunked {
                                    state: body::Chunk::Size,
                                    total: 0,
                                },
                            };
                            self.in_flight = Some(InFlight {
                                version: head.parts.version,
                                is_head: head.parts.method == http::Method::HEAD,
                                keep_alive: head.keep_alive && !self.closing,
                                peer_closes: !head.keep_alive,
                            });
                            self.read = Read::Body {
                                decoder,
                                expect: if head.expects_continue {
                                    Continue::Awaited
                                } else {
                                    Continue::Settled
                                },
                            };
                            self.timer = Some(Timer {
                                at: now + self.config.body_timeout,
                                kind: TimerKind::Body,
                            });
                            return Ok(Event::Head(head.parts));
                        }
                        Ok(None) if self.peer_eof => {
                            // A peer that leaves mid-head cannot be answered meaningfully.
                            self.read = Read::Closed;
                            self.timer = None;
                        }
                        Ok(None) => return Ok(Event::NeedData),
                        Err(e) => return Err(self.fail(e)),
                    }
                }
                Read::Body { decoder, expect } => {
                    let discarding = matches!(self.write, Write::Complete);
                    if *expect == Continue::Awaited {
                        // Asking for body events is the application's decision to read
                        // the body: only now is `100 Continue` due (unless it already flows).
                        if self.buf.is_empty() && matches!(self.write, Write::Idle) {
                            self.transmit.extend(b"HTTP/1.1 100 Continue\r\n\r\n");
                        }
                        *expect = Continue::Settled;
                    }
                    let limit = self.config.max_body_size;
                    match decoder.decode(&mut self.buf, limit, self.config.max_head_size) {
                        Ok(Decoded::Data(data)) if discarding => drop(data),
                        Ok(Decoded::Data(data)) => return Ok(Event::Data(data)),
                        Ok(Decoded::End) => {
                            self.read = Read::Complete;
                            self.timer = None;
                            if !discarding {
                                return Ok(Event::End);
                            }
                        }
                        Ok(Decoded::NeedData) if self.peer_eof => {
                            return Err(self.fail(PeerError::IncompleteBody));
                        }
                        Ok(Decoded::NeedData) => return Ok(Event::NeedData),
                        Err(e) => return Err(self.fail(e)),
                    }
                }
            }
        }
    }

    /// Starts the response to the request in flight. The connection adds the framing
    /// headers (`Content-Length` or `Transfer-Encoding`) and `Connection`, replacing any the
    /// caller set; a caller's `Connection: close` is honoured.
    ///
    /// A response may start before the request body was read (an early rejection): the
    /// rest of the body is then discarded, or the connection closes if the peer is still
    /// waiting for `100 Continue`.
    pub fn send_response(
        &mut self,
        head: response::Parts,
        body: BodyLength,
    ) -> Result<(), SendError> {
        let Some(request) = self.in_flight.as_mut() else {
            return Err(SendError::NoRequest);
        };
        if !matches!(self.write, Write::Idle) {
            return Err(SendError::AlreadyResponding);
        }
        let status = head.status;
        if status.is_informational() {
            return Err(SendError::Informational);
        }
        let bodiless_status =
            status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
        let writer = if request.is_head || bodiless_status {
            Writer::Suppressed
        } else {
            match body {
                BodyLength::Empty => Writer::Length {
                    declared: 0,
                    sent: 0,
                },
                BodyLength::Known(n) => Writer::Length {
                    declared: n,
                    sent: 0,
                },
                BodyLength::Unknown if request.version == Version::HTTP_11 => Writer::Chunked,
                BodyLength::Unknown => Writer::UntilClose,
            }
        };
        let caller_close = head
            .headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        let awaiting_continue = matches!(
            self.read,
            Read::Body {
                expect: Continue::Awaited,
                ..
            }
        );
        request.keep_alive = request.keep_alive
            && !caller_close
            && !self.closing
            && !awaiting_continue
            && writer != Writer::UntilClose
            && !matches!(self.read, Read::Closed);

        let out = &mut self.transmit.tail;
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.extend_from_slice(b" ");
        out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in &head.headers {
            if name == header::CONTENT_LENGTH
                || name == header::TRANSFER_ENCODING
                || name == header::CONNECTION
            {
                continue;
            }
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        let length = match body {
            BodyLength::Empty => Some(0),
            BodyLength::Known(n) => Some(n),
            BodyLength::Unknown => None,
        };
        match (writer, length) {
            _ if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED => {}
            (Writer::Chunked, _) => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            (_, Some(n)) => {
                let _ = write!(out, "content-length: {n}\r\n");
            }
            (_, None) => {}
        }
        if !request.keep_alive {
            out.extend_from_slice(b"connection: close\r\n");
        } else if request.version == Version::HTTP_10 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        self.write = Write::Body(writer);
        Ok(())
    }

    /// Sends a piece of the response body.
    pub fn send_data(&mut self, data: Bytes) -> Result<(), SendError> {
        let Write::Body(writer) = &mut self.write else {
            return Err(SendError::NotResponding);
        };
        match writer {
            Writer::Length { declared, sent } => {
                let attempted = *sent + data.len() as u64;
                if attempted > *declared {
                    return Err(SendError::BodyTooLong {
                        declared: *declared,
                        attempted,
                    });
                }
                *sent = attempted;
                self.transmit.push(data);
            }
            Writer::Chunked if data.is_empty() => {}
            Writer::Chunked => {
                let _ = write!(self.transmit.tail, "{:x}\r\n", data.len());
                self.transmit.push(data);
                self.transmit.extend(b"\r\n");
            }
            Writer::UntilClose => self.transmit.push(data),
            Writer::Suppressed => {}
        }
        Ok(())
    }

    /// Ends the response. Afterwards the connection either reads the next request or closes.
    pub fn send_end(&mut self) -> Result<(), SendError> {
        let Write::Body(writer) = &self.write else {
            return Err(SendError::NotResponding);
        };
        match *writer {
            Writer::Length { declared, sent } if sent < declared => {
                return Err(SendError::BodyTooShort { declared, sent });
            }
            Writer::Chunked => self.transmit.extend(b"0\r\n\r\n"),
            Writer::Length { .. } | Writer::UntilClose | Writer::Suppressed => {}
        }
        self.write = Write::Complete;
        let keep_alive = self.in_flight.is_some_and(|r| r.keep_alive);
        if !keep_alive && matches!(self.read, Read::Body { .. }) {
            // Nothing more will be read: no point discarding the rest of the body.
            self.read = Read::Closed;
            self.timer = None;
        }
        Ok(())
    }

    /// Sends a whole response whose body is in memory.
    pub fn send_full_response(
        &mut self,
        head: response::Parts,
        body: Bytes,
    ) -> Result<(), SendError> {
        let length = if body.is_empty() {
            BodyLength::Empty
        } else {
            BodyLength::Known(body.len() as u64)
        };
        self.send_response(head, length)?;
        self.send_data(body)?;
        self.send_end()
    }

    /// Both sides of an exchange are complete: start the next one, or close.
    fn finish_exchange(&mut self, now: Instant) {
        let in_flight = self.in_flight.take();
        let keep_alive = in_flight.is_some_and(|r| r.keep_alive);
        let peer_closes = in_flight.is_some_and(|r| r.peer_closes);
        self.write = Write::Idle;
        if keep_alive && !self.closing && !(self.peer_eof && self.buf.is_empty()) {
            if self.buf.is_empty() {
                // An idle keep-alive connection keeps no receive memory.
                self.buf = BytesMut::new();
            }
            self.read = Read::Head;
            self.timer = Some(if self.buf.is_empty() {
                Timer {
                    at: now + self.config.idle_timeout,
                    kind: TimerKind::Idle,
                }
            } else {
                Timer {
                    at: now + self.config.head_timeout,
                    kind: TimerKind::Head,
                }
            });
        } else {
            // Reached only with the request read to its end.
            self.peer_done = peer_closes && self.buf.is_empty();
            self.read = Read::Closed;
            self.timer = None;
        }
    }

    /// How the driver closes the socket once the connection is [`Event::Closed`]: with a
    /// lingering close (`Some`, see [`Linger`]) unless the peer cannot send anything more
    /// (`None`: close at once). The peer is done when it shut down its sending side, or
    /// when it asked to close (`Connection: close`, HTTP/1.0) and its request was read to
    /// the end with nothing after it. Anything else (an error answered before the body
    /// was read, a timeout, a graceful shutdown of a keep-alive connection, pipelined
    /// bytes) may still have bytes in flight whose arrival after the close would make the
    /// kernel reset the connection, destroying the response.
    pub fn linger(&self) -> Option<Linger> {
        (!self.peer_eof && !self.peer_done).then_some(self.config.linger)
    }

    /// Records a peer error: stop reading, answer it if no response was started.
    fn fail(&mut self, error: PeerError) -> PeerError {
        tracing::debug!(%error, "rejecting HTTP/1.1 peer");
        self.read = Read::Closed;
        self.timer = None;
        if matches!(self.write, Write::Idle) {
            let message = error.message();
            let is_head = self.in_flight.is_some_and(|r| r.is_head);
            let out = &mut self.transmit.tail;
            let _ = write!(
                out,
                "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                error.status().as_str(),
                error.status().canonical_reason().unwrap_or(""),
                message.len() + 1,
            );
            if !is_head {
                out.extend_from_slice(message.as_bytes());
                out.extend_from_slice(b"\n");
            }
            self.write = Write::Complete;
        }
        error
    }
}
