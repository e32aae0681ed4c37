//! One connection: the core's [`Session`] outputs translated into IO on async-io. Every
//! decision (deadlines, what to read or write and when, closing) is the session's.

use std::fs::File;
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use async_io::{Async, Timer};
use async_net::TcpStream;
use bytes::{Buf, Bytes};
use event_listener::EventListener;
use futures_lite::future;
use tracing::Instrument;
use yuyo_core::endpoint::HandlerFuture;
use yuyo_core::multipart::FileSource;
use yuyo_core::server::{Eviction, Input, Output, Session, Wait};

use crate::{FILE_CHUNK, Shared, now};

type Handler = Pin<Box<tracing::instrument::Instrumented<HandlerFuture>>>;
type Chunk = blocking::Task<(File, io::Result<Vec<u8>>)>;

/// Serves one connection until its session closes.
pub(crate) async fn serve(stream: TcpStream, mut session: Session, shared: Arc<Shared>) {
    session.set_reply_routing(shared.rest.routing());
    let mut io = Io::new(stream.into(), session.eviction());
    loop {
        let input = match session.poll_output() {
            Output::Transmit(bytes) => {
                io.unsent = bytes;
                io.write()
            }
            Output::Verify(ticket) => {
                // Other connections' finished requests join this one's batch.
                future::yield_now().await;
                Input::Verified(ticket.await)
            }
            Output::Handle(handler) => {
                io.handler = Some(Box::pin(handler.instrument(session.span().clone())));
                continue;
            }
            Output::StreamFile(source) => match io.open(source).await {
                Some(failed) => failed,
                None => continue,
            },
            Output::Spawn(work) => {
                shared.spawn(work);
                continue;
            }
            Output::RestReply(reply) => {
                shared.send_rest_reply(reply, session.span().clone());
                continue;
            }
            Output::ShutdownWrite => {
                // The peer may already be gone; the session finds out by reading.
                let _ = io.socket.get_ref().shutdown(Shutdown::Write);
                continue;
            }
            Output::Yield => {
                future::yield_now().await;
                continue;
            }
            Output::Close => return,
            Output::Timeout(wait) => {
                let woke = future::poll_fn(|cx| io.poll_wait(cx, wait, &shared)).await;
                io.complete(woke, &mut session)
            }
        };
        if let Err(error) = session.handle_input(now(), input) {
            tracing::error!(%error, "driver error");
        }
    }
}

/// What ended a wait.
enum Woke {
    Readable,
    Writable,
    Handled(yuyo_core::endpoint::HandlerResult),
    Chunk(File, io::Result<Vec<u8>>),
    Deadline,
    Shutdown,
    Evicted,
    Failed(io::Error),
}

/// The connection's IO state: the socket and what is in flight on it.
struct Io {
    socket: Arc<Async<std::net::TcpStream>>,
    /// The rest of the last `Transmit`.
    unsent: Bytes,
    handler: Option<Handler>,
    /// The file being streamed, when no chunk read is in flight.
    file: Option<File>,
    chunk: Option<Chunk>,
    timer: Timer,
    armed: Option<Instant>,
    stop: Option<EventListener>,
    stopped: bool,
    eviction: Option<Eviction>,
}

impl Io {
    fn new(socket: Arc<Async<std::net::TcpStream>>, eviction: Option<Eviction>) -> Self {
        Self {
            socket,
            unsent: Bytes::new(),
            handler: None,
            file: None,
            chunk: None,
            timer: Timer::never(),
            armed: None,
            stop: None,
            stopped: false,
            eviction,
        }
    }

    /// Writes what the socket takes now.
    fn write(&mut self) -> Input {
        match (&mut self.socket.get_ref()).write(&self.unsent) {
            Ok(n) => {
                self.unsent.advance(n);
                Input::Written(n)
            }
            Err(error) if is_retry(&error) => Input::Written(0),
            Err(error) => failed(&error),
        }
    }

    /// Reads what the socket holds straight into the session's receive buffer.
    fn read(&mut self, session: &mut Session) -> Input {
        let buf = session.receive_buffer();
        let filled = buf.len();
        // std's `Read` needs initialised memory: zero the reserved room, then keep what came.
        buf.resize(buf.capacity(), 0);
        let read = (&mut self.socket.get_ref()).read(&mut buf[filled..]);
        buf.truncate(filled + *read.as_ref().unwrap_or(&0));
        match read {
            Ok(0) => Input::Eof,
            Ok(_) => Input::Received,
            Err(error) if is_retry(&error) => Input::Received,
            Err(error) => failed(&error),
        }
    }

    /// Opens a reply file on the blocking pool; `Some(FileFailed)` when it cannot be read.
    async fn open(&mut self, source: FileSource) -> Option<Input> {
        let FileSource::Path { path, .. } = source else {
            tracing::error!("this adapter has no source for `Later` files");
            return Some(Input::FileFailed);
        };
        match blocking::unblock(move || File::open(path)).await {
            Ok(file) => {
                self.file = Some(file);
                None
            }
            Err(error) => {
                tracing::error!(%error, "cannot open a reply file");
                Some(Input::FileFailed)
            }
        }
    }

    /// Turns what ended a wait into the session's input.
    fn complete(&mut self, woke: Woke, session: &mut Session) -> Input {
        match woke {
            Woke::Readable => self.read(session),
            Woke::Writable => self.write(),
            Woke::Handled(outcome) => Input::Handled(outcome),
            Woke::Chunk(file, Ok(chunk)) if chunk.is_empty() => {
                drop(file);
                Input::FileEnd
            }
            Woke::Chunk(file, Ok(chunk)) => {
                self.file = Some(file);
                Input::FileData(Bytes::from(chunk))
            }
            Woke::Chunk(_, Err(error)) => {
                tracing::error!(%error, "cannot read a reply file");
                Input::FileFailed
            }
            Woke::Deadline => Input::Timeout,
            Woke::Shutdown => Input::Shutdown,
            Woke::Evicted => Input::Evicted,
            Woke::Failed(error) => failed(&error),
        }
    }

    /// Polls everything `wait` asks for, and what is always waited for.
    fn poll_wait(&mut self, cx: &mut Context<'_>, wait: Wait, shared: &Shared) -> Poll<Woke> {
        if let Some(handler) = &mut self.handler
            && let Poll::Ready(outcome) = handler.as_mut().poll(cx)
        {
            self.handler = None;
            return Poll::Ready(Woke::Handled(outcome));
        }
        if let Poll::Ready(woke) = self.poll_socket(cx, wait) {
            return Poll::Ready(woke);
        }
        if wait.file && self.chunk.is_none() {
            self.chunk = self.file.take().map(read_chunk);
        }
        if let Some(chunk) = &mut self.chunk
            && let Poll::Ready((file, read)) = Pin::new(chunk).poll(cx)
        {
            self.chunk = None;
            return Poll::Ready(Woke::Chunk(file, read));
        }
        if self.poll_deadline(cx, wait.deadline).is_ready() {
            return Poll::Ready(Woke::Deadline);
        }
        if self.poll_stop(cx, shared).is_ready() {
            return Poll::Ready(Woke::Shutdown);
        }
        let evicted = self
            .eviction
            .as_mut()
            .is_some_and(|eviction| Pin::new(eviction).poll(cx).is_ready());
        if evicted {
            self.eviction = None;
            return Poll::Ready(Woke::Evicted);
        }
        Poll::Pending
    }

    fn poll_socket(&mut self, cx: &mut Context<'_>, wait: Wait) -> Poll<Woke> {
        let ready = |polled: Poll<io::Result<()>>, woke: fn() -> Woke| match polled {
            Poll::Ready(Ok(())) => Poll::Ready(woke()),
            Poll::Ready(Err(error)) => Poll::Ready(Woke::Failed(error)),
            Poll::Pending => Poll::Pending,
        };
        if wait.write
            && let Poll::Ready(woke) = ready(self.socket.poll_writable(cx), || Woke::Writable)
        {
            return Poll::Ready(woke);
        }
        if wait.read {
            return ready(self.socket.poll_readable(cx), || Woke::Readable);
        }
        Poll::Pending
    }

    fn poll_deadline(&mut self, cx: &mut Context<'_>, deadline: Option<Instant>) -> Poll<()> {
        let Some(at) = deadline else {
            return Poll::Pending;
        };
        if self.armed != Some(at) {
            self.timer.set_at(at);
            self.armed = Some(at);
        }
        Pin::new(&mut self.timer)
            .poll(cx)
            .map(|_| self.armed = None)
    }

    /// Shutdown, passed to the session once.
    fn poll_stop(&mut self, cx: &mut Context<'_>, shared: &Shared) -> Poll<()> {
        if self.stopped {
            return Poll::Pending;
        }
        loop {
            if shared.stop.is_set() {
                self.stopped = true;
                self.stop = None;
                return Poll::Ready(());
            }
            match &mut self.stop {
                Some(listener) => {
                    std::task::ready!(Pin::new(listener).poll(cx));
                    self.stop = None;
                }
                None => self.stop = Some(shared.stop.event.listen()),
            }
        }
    }
}

/// Reads the next chunk of `file` on the blocking pool.
fn read_chunk(mut file: File) -> Chunk {
    blocking::unblock(move || {
        let mut chunk = vec![0u8; FILE_CHUNK];
        let read = loop {
            match file.read(&mut chunk) {
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                other => break other,
            }
        };
        let read = read.map(|n| {
            chunk.truncate(n);
            chunk
        });
        (file, read)
    })
}

fn is_retry(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

fn failed(error: &io::Error) -> Input {
    tracing::debug!(%error, "socket failed; dropping the connection");
    Input::Failed
}
