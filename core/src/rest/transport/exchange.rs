//! One request sent and its answer read, sans-IO: connect (or reuse a pooled
//! connection), the proxy `CONNECT`, the TLS handshake, the request written with its
//! files streamed from disk, the response read; every step under a deadline.
//!
//! The driver performs the [`Io`] that [`Exchange::io`] names and reports the outcome
//! with [`Exchange::handle_input`]; it decides nothing.

use std::io;
use std::path::Path;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::Method;

use super::link::Link;
use super::{ConnectHandshake, Origin, SendFailure, Transport};
use crate::http1::client::{EncodedRequest, ResponseReader, encode_request};
use crate::multipart::{FileSource, Segment};
use crate::rest::error::{TransportError, TransportErrorKind};
use crate::rest::request::RequestBody;

/// Bytes read from a socket or a file at once.
const CHUNK: usize = 32 * 1024;

/// What the driver does next for an exchange.
#[derive(Debug)]
pub enum Io<'a, S> {
    /// Open a TCP connection to `host:port` before `deadline`; report
    /// [`Input::Connected`].
    Connect {
        /// Host name or IP address.
        host: &'a str,
        /// Port.
        port: u16,
        /// When to give up ([`Input::TimedOut`]).
        deadline: Instant,
    },
    /// Write all of `bytes` to `stream` before `deadline`; report [`Input::Written`].
    Write {
        /// The connection.
        stream: &'a mut S,
        /// The bytes to write.
        bytes: Bytes,
        /// When to give up ([`Input::TimedOut`]).
        deadline: Instant,
    },
    /// Read some bytes from `stream` into `buf` before `deadline`; report
    /// [`Input::Read`] (0 at the end of the stream).
    Read {
        /// The connection.
        stream: &'a mut S,
        /// Where to put them.
        buf: &'a mut [u8],
        /// When to give up ([`Input::TimedOut`]).
        deadline: Instant,
    },
    /// Open the file at `path` for reading (the driver keeps it); report
    /// [`Input::FileOpened`].
    OpenFile {
        /// The file.
        path: &'a Path,
    },
    /// Read the next bytes of the open file into `buf`; report [`Input::FileRead`]
    /// (0 at its end).
    ReadFile {
        /// Where to put them.
        buf: &'a mut [u8],
    },
}

/// The outcome of the [`Io`] asked for, reported to [`Exchange::handle_input`].
#[derive(Debug)]
pub enum Input<S> {
    /// The connection asked for is open.
    Connected(S),
    /// Every byte was written.
    Written,
    /// This many bytes were read into the buffer (0: the end).
    Read(usize),
    /// The file is open.
    FileOpened,
    /// This many bytes of the file were read into the buffer (0: its end).
    FileRead(usize),
    /// The operation failed.
    Failed(io::Error),
    /// The deadline passed first.
    TimedOut,
}

/// Where writing the request is.
#[derive(Debug, Clone, Copy)]
enum Cursor {
    /// The head is next.
    Head,
    /// Body segment `n` is next.
    Segment(usize),
    /// Segment `n` is a file being opened.
    Opening(usize),
    /// Segment `n` is an open file of which `supplied` bytes were written.
    Streaming { segment: usize, supplied: u64 },
    /// The body's end (the last chunk) is next.
    End,
}

enum Phase {
    /// Waiting for a TCP connection.
    Connect,
    /// Through the proxy's `CONNECT`.
    Tunnel(ConnectHandshake),
    /// In the TLS handshake.
    Handshake,
    /// Writing the request.
    Send(Cursor),
    /// Reading the answer.
    Receive,
    /// Over; the outcome until taken.
    Finished(Option<Result<http::Response<Bytes>, TransportError>>),
}

/// A connection kept for reuse: the socket and its TLS session.
pub(crate) struct Pooled<S> {
    pub(crate) stream: S,
    link: Link,
}

/// One request on one connection (or two: a pooled connection that turns out to be
/// closed is replaced by a fresh one when the request may be repeated).
pub(crate) struct Exchange<S> {
    transport: Transport,
    origin: Origin,
    method: Method,
    request: EncodedRequest,
    stream: Option<S>,
    link: Link,
    phase: Phase,
    /// Wire bytes to write before anything else.
    pending: Option<Bytes>,
    reader: ResponseReader,
    plain: BytesMut,
    buf: Box<[u8]>,
    reused: bool,
    sent_all: bool,
    connect_by: Instant,
    total_by: Instant,
    idle_by: Instant,
}

fn connect_error(message: impl std::fmt::Display) -> TransportError {
    TransportError::new(TransportErrorKind::Connect, message.to_string())
}

impl<S> Exchange<S> {
    /// An exchange of `request` at `now`; [`Exchange::reuse`] gives it a pooled
    /// connection, otherwise it connects.
    pub(crate) fn new(
        transport: &Transport,
        request: http::Request<RequestBody>,
        now: Instant,
    ) -> Result<Self, TransportError> {
        let origin =
            Origin::from_uri(request.uri()).ok_or_else(|| connect_error("unusable URL"))?;
        let method = request.method().clone();
        let request = encode_request(request).map_err(connect_error)?;
        let limits = transport.settings.limits.clone();
        Ok(Self {
            transport: transport.clone(),
            reader: ResponseReader::new(limits, &method),
            origin,
            method,
            request,
            stream: None,
            link: Link::Plain,
            phase: Phase::Connect,
            pending: None,
            plain: BytesMut::new(),
            buf: vec![0; CHUNK].into_boxed_slice(),
            reused: false,
            sent_all: false,
            connect_by: now + transport.settings.timeouts.connect,
            total_by: now,
            idle_by: now,
        })
    }

    /// Where the request goes (the pool's key).
    pub(crate) fn origin(&self) -> &Origin {
        &self.origin
    }

    /// Sends on `pooled`, an idle connection to the same origin.
    pub(crate) fn reuse(&mut self, pooled: Pooled<S>, now: Instant) {
        self.stream = Some(pooled.stream);
        self.link = pooled.link;
        self.reused = true;
        self.start_sending(now);
    }

    fn start_sending(&mut self, now: Instant) {
        self.phase = Phase::Send(Cursor::Head);
        self.total_by = now + self.transport.settings.timeouts.total;
        self.progress(now);
    }

    fn progress(&mut self, now: Instant) {
        self.idle_by = now + self.transport.settings.timeouts.read;
    }

    /// The outcome once the exchange is over (taken once).
    pub(crate) fn take_outcome(&mut self) -> Option<Result<http::Response<Bytes>, TransportError>> {
        match &mut self.phase {
            Phase::Finished(outcome) => outcome.take(),
            _ => None,
        }
    }

    /// The connection, for the pool, when it may carry another request.
    pub(crate) fn into_pooled(self) -> Option<(Origin, Pooled<S>)> {
        let reusable = self.sent_all && self.reader.keep_alive() && !self.request.close;
        let stream = self.stream.filter(|_| reusable)?;
        Some((
            self.origin,
            Pooled {
                stream,
                link: self.link,
            },
        ))
    }

    fn finish(&mut self, outcome: Result<http::Response<Bytes>, TransportError>) {
        self.pending = None;
        self.phase = Phase::Finished(Some(outcome));
    }

    /// A failure after the request started: on a stale pooled connection a request
    /// that may be repeated starts again on a fresh one; otherwise the exchange fails.
    fn fail_sending(&mut self, failure: SendFailure, now: Instant) {
        if !failure.resend_on_fresh(&self.method, self.sent_all) {
            self.finish(Err(failure.error));
            return;
        }
        tracing::debug!("pooled connection was closed; reconnecting");
        self.stream = None;
        self.link = Link::Plain;
        self.reused = false;
        self.sent_all = false;
        self.pending = None;
        self.plain.clear();
        self.reader = ResponseReader::new(self.transport.settings.limits.clone(), &self.method);
        self.phase = Phase::Connect;
        self.connect_by = now + self.transport.settings.timeouts.connect;
    }

    /// Moves the exchange on as far as it goes without IO.
    pub(crate) fn advance(&mut self, now: Instant) {
        while self.pending.is_none() {
            let next = match &mut self.phase {
                Phase::Connect | Phase::Finished(_) => return,
                Phase::Tunnel(handshake) => match handshake.poll() {
                    Ok(true) => self.after_tunnel(),
                    Ok(false) => return,
                    Err(error) => Err(error),
                },
                Phase::Handshake => self.handshake_step(now),
                Phase::Send(cursor) => {
                    let cursor = *cursor;
                    self.send_step(cursor)
                }
                Phase::Receive => match self.reader.poll_response() {
                    Ok(Some(response)) => {
                        self.finish(Ok(response));
                        return;
                    }
                    Ok(None) => return,
                    Err(error) => {
                        let failure = SendFailure::response(error, self.reused);
                        self.fail_sending(failure, now);
                        Ok(true)
                    }
                },
            };
            match next {
                Ok(true) => {}
                Ok(false) => return,
                Err(error) => {
                    self.finish(Err(error));
                    return;
                }
            }
        }
    }

    /// The tunnel is up: TLS next, or the request.
    fn after_tunnel(&mut self) -> Result<bool, TransportError> {
        self.link = Link::to(&self.origin, &self.transport.tls)?;
        self.phase = Phase::Handshake;
        Ok(true)
    }

    /// `Ok(true)`: go on; `Ok(false)`: wait for IO.
    fn handshake_step(&mut self, now: Instant) -> Result<bool, TransportError> {
        if let Some(bytes) = self.link.outgoing() {
            self.pending = Some(bytes);
            return Ok(true);
        }
        if self.link.is_handshaking() {
            return Ok(false);
        }
        self.start_sending(now);
        Ok(true)
    }

    fn seal(&mut self, plain: Bytes) -> Result<(), TransportError> {
        let wire = self.link.seal(plain)?;
        if !wire.is_empty() {
            self.pending = Some(wire);
        }
        Ok(())
    }

    fn seal_framed(&mut self, data: Bytes) -> Result<(), TransportError> {
        let framed = self.request.framing.frame(data);
        if framed.is_empty() {
            return Ok(());
        }
        self.seal(framed.concat().into())
    }

    /// Writes the next piece of the request; `Ok(false)` waits for a file.
    fn send_step(&mut self, cursor: Cursor) -> Result<bool, TransportError> {
        match cursor {
            Cursor::Head => {
                self.phase = Phase::Send(Cursor::Segment(0));
                self.seal(self.request.head.clone())?;
            }
            Cursor::Segment(n) => match self.request.body.get(n) {
                Some(Segment::Bytes(bytes)) => {
                    let bytes = bytes.clone();
                    self.phase = Phase::Send(Cursor::Segment(n + 1));
                    self.seal_framed(bytes)?;
                }
                Some(Segment::File { .. }) => self.phase = Phase::Send(Cursor::Opening(n)),
                None => self.phase = Phase::Send(Cursor::End),
            },
            Cursor::Opening(_) | Cursor::Streaming { .. } => return Ok(false),
            Cursor::End => {
                if let Some(end) = self.request.framing.end() {
                    self.seal(end)?;
                }
                self.sent_all = true;
                self.phase = Phase::Receive;
            }
        }
        Ok(true)
    }

    fn file_segment(&self, segment: usize) -> Option<(&Path, Option<u64>)> {
        match self.request.body.get(segment)? {
            Segment::File {
                source: FileSource::Path { path, len },
                ..
            } => Some((path.as_path(), *len)),
            _ => None,
        }
    }

    /// The IO the driver performs next, `None` once the exchange is over.
    pub(crate) fn io(&mut self) -> Option<Io<'_, S>> {
        let deadline = self.deadline();
        if let Some(bytes) = &self.pending {
            let bytes = bytes.clone();
            let stream = self.stream.as_mut()?;
            return Some(Io::Write {
                stream,
                bytes,
                deadline,
            });
        }
        match &self.phase {
            Phase::Connect => {
                let (host, port) = match &self.transport.proxy {
                    Some(proxy) => (proxy.host(), proxy.port()),
                    None => (self.origin.host.as_str(), self.origin.port),
                };
                Some(Io::Connect {
                    host,
                    port,
                    deadline,
                })
            }
            Phase::Tunnel(_) | Phase::Handshake | Phase::Receive => Some(Io::Read {
                stream: self.stream.as_mut()?,
                buf: &mut self.buf,
                deadline,
            }),
            Phase::Send(Cursor::Opening(segment)) => {
                let (path, _) = self.file_segment(*segment)?;
                Some(Io::OpenFile { path })
            }
            Phase::Send(Cursor::Streaming { .. }) => Some(Io::ReadFile { buf: &mut self.buf }),
            Phase::Send(_) | Phase::Finished(_) => None,
        }
    }

    /// When the current step times out.
    fn deadline(&self) -> Instant {
        match self.phase {
            Phase::Connect | Phase::Tunnel(_) | Phase::Handshake => self.connect_by,
            _ => self.total_by.min(self.idle_by),
        }
    }

    /// Reports the outcome of the last [`Exchange::io`] at `now`.
    pub(crate) fn handle_input(&mut self, now: Instant, input: Input<S>) {
        let outcome = match input {
            Input::Connected(stream) => self.connected(stream, now),
            Input::Written => {
                self.pending = None;
                self.progress(now);
                Ok(())
            }
            Input::Read(n) => {
                self.progress(now);
                self.received(n)
            }
            Input::FileOpened => self.file_opened(),
            Input::FileRead(n) => self.file_read(n),
            Input::Failed(error) => self.failed(&error, now),
            Input::TimedOut => Err(self.timed_out()),
        };
        if let Err(error) = outcome {
            self.finish(Err(error));
        }
    }

    fn connected(&mut self, stream: S, now: Instant) -> Result<(), TransportError> {
        if !matches!(self.phase, Phase::Connect) {
            return Ok(());
        }
        self.stream = Some(stream);
        if let Some(proxy) = &self.transport.proxy {
            let limits = self.transport.settings.limits.clone();
            let (handshake, head) = ConnectHandshake::new(proxy, &self.origin, limits);
            self.pending = Some(head);
            self.phase = Phase::Tunnel(handshake);
            return Ok(());
        }
        self.link = Link::to(&self.origin, &self.transport.tls)?;
        if matches!(self.link, Link::Plain) {
            self.start_sending(now);
        } else {
            self.phase = Phase::Handshake;
            self.progress(now);
        }
        Ok(())
    }

    fn received(&mut self, n: usize) -> Result<(), TransportError> {
        let data = &self.buf[..n.min(self.buf.len())];
        match &mut self.phase {
            Phase::Tunnel(handshake) => {
                if data.is_empty() {
                    handshake.receive_eof();
                } else {
                    handshake.receive(data);
                }
                Ok(())
            }
            Phase::Handshake => {
                let opened = self.link.open(data, &mut self.plain);
                match opened {
                    Ok(opened) if opened.closed => {
                        Err(connect_error("TLS: closed during the handshake"))
                    }
                    Ok(_) => Ok(()),
                    Err(error) => Err(connect_error(error.message)),
                }
            }
            Phase::Receive => {
                let opened = self.link.open(data, &mut self.plain)?;
                self.reader.receive(&self.plain.split());
                if opened.closed {
                    self.reader.receive_eof();
                }
                Ok(())
            }
            Phase::Connect | Phase::Send(_) | Phase::Finished(_) => Ok(()),
        }
    }

    fn file_opened(&mut self) -> Result<(), TransportError> {
        if let Phase::Send(Cursor::Opening(segment)) = self.phase {
            self.phase = Phase::Send(Cursor::Streaming {
                segment,
                supplied: 0,
            });
        }
        Ok(())
    }

    fn file_read(&mut self, n: usize) -> Result<(), TransportError> {
        let Phase::Send(Cursor::Streaming { segment, supplied }) = self.phase else {
            return Ok(());
        };
        let declared = self.file_segment(segment).and_then(|(_, len)| len);
        let n = n.min(self.buf.len());
        let supplied = supplied + n as u64;
        let wrong_length = match declared {
            Some(declared) => supplied > declared || (n == 0 && supplied != declared),
            None => false,
        };
        if wrong_length {
            return Err(TransportError::new(
                TransportErrorKind::Io,
                format!(
                    "could not stream a request file: it does not have its declared length of {} bytes",
                    declared.unwrap_or_default()
                ),
            ));
        }
        if n == 0 {
            self.phase = Phase::Send(Cursor::Segment(segment + 1));
            return Ok(());
        }
        self.phase = Phase::Send(Cursor::Streaming { segment, supplied });
        let chunk = Bytes::copy_from_slice(&self.buf[..n]);
        self.seal_framed(chunk)
    }

    fn failed(&mut self, error: &io::Error, now: Instant) -> Result<(), TransportError> {
        match &self.phase {
            Phase::Connect | Phase::Tunnel(_) | Phase::Handshake => {
                let what = if matches!(self.phase, Phase::Connect) {
                    "connect"
                } else {
                    "proxy or TLS handshake"
                };
                Err(connect_error(format!("{what}: {error}")))
            }
            Phase::Send(Cursor::Opening(_) | Cursor::Streaming { .. })
                if self.pending.is_none() =>
            {
                Err(TransportError::new(
                    TransportErrorKind::Io,
                    format!("could not stream a request file: {error}"),
                ))
            }
            Phase::Send(_) => {
                // A server that answers early (e.g. 413) and closes is still heard, and
                // a closed pooled connection shows as the end before any answer.
                tracing::debug!(%error, "request write failed");
                self.pending = None;
                self.phase = Phase::Receive;
                Ok(())
            }
            Phase::Receive => {
                self.fail_sending(SendFailure::io(error, self.reused), now);
                Ok(())
            }
            Phase::Finished(_) => Ok(()),
        }
    }

    fn timed_out(&self) -> TransportError {
        match self.phase {
            Phase::Connect | Phase::Tunnel(_) | Phase::Handshake => {
                connect_error("connect timed out")
            }
            _ => TransportError::new(
                TransportErrorKind::Timeout,
                "no complete answer within the read or total timeout",
            ),
        }
    }
}
