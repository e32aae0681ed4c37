//! One connection thread: the core's session loop over a non-blocking socket waited on
//! with `mio` (so a shutdown wakes it), handlers run with `block_on`.

use std::fs::File;
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker as TaskWaker};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures_lite::future::block_on;
use mio::{Events, Interest, Token, Waker};
use tracing::Instrument;
use yuyo_core::deferral::ReplyRouting;
use yuyo_core::endpoint::Endpoint;
use yuyo_core::http1;
use yuyo_core::multipart::FileSource;
use yuyo_core::server::{Action, Now, Session};

use crate::Shared;
use crate::rest::RestClient;

const SOCKET: Token = Token(0);
const WAKE: Token = Token(1);
/// Bytes read from the socket at once.
const READ_SIZE: usize = 16 * 1024;
/// Bytes of a reply file read at once.
const FILE_CHUNK: usize = 64 * 1024;

fn now() -> Now {
    Now {
        instant: Instant::now(),
        unix_secs: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs()),
    }
}

/// The socket with its own poller and the waker shutdown uses.
struct Io {
    stream: mio::net::TcpStream,
    poll: mio::Poll,
    events: Events,
}

enum Received {
    Data(usize),
    Eof,
    Timeout,
    /// Shutdown was requested while waiting.
    Stopping,
}

impl Io {
    /// Reads once, waiting until data, EOF, `deadline`, or (unless `closing`) shutdown.
    fn read(
        &mut self,
        buf: &mut [u8],
        deadline: Option<Instant>,
        shared: &Shared,
        closing: bool,
    ) -> io::Result<Received> {
        loop {
            match self.stream.read(buf) {
                Ok(0) => return Ok(Received::Eof),
                Ok(n) => return Ok(Received::Data(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if !closing && shared.is_stopping() {
                return Ok(Received::Stopping);
            }
            let timeout = match deadline {
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Ok(Received::Timeout);
                    }
                    Some(deadline - now)
                }
                None => None,
            };
            self.wait(timeout)?;
        }
    }

    /// Writes all of `data`, waiting for the socket to take it.
    fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            match self.stream.write(data) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait(None)?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn wait(&mut self, timeout: Option<std::time::Duration>) -> io::Result<()> {
        match self.poll.poll(&mut self.events, timeout) {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => Err(e),
            _ => Ok(()),
        }
    }

    /// Writes everything the session has to send.
    fn flush(&mut self, session: &mut Session) -> io::Result<()> {
        while let Some(bytes) = session.poll_transmit() {
            self.write_all(&bytes)?;
        }
        Ok(())
    }
}

/// Serves one accepted connection until it closes.
pub(crate) fn run(
    stream: mio::net::TcpStream,
    endpoint: Endpoint,
    http: http1::Config,
    rest: Option<(RestClient, ReplyRouting)>,
    shared: &Arc<Shared>,
) {
    let Some((mut io, waker)) = setup(stream) else {
        return;
    };
    let id = shared.add_connection_waker(waker);
    let linger = http.linger;
    match serve(&mut io, endpoint, http, rest.as_ref(), shared) {
        Ok(()) => {
            let _ = io.stream.shutdown(Shutdown::Write);
            drain(&mut io, linger, shared);
        }
        Err(error) => tracing::debug!(%error, "connection ended with an IO error"),
    }
    shared.remove_connection_waker(id);
}

/// A lingering close (see [`yuyo_core::http1::Linger`]): drain what the peer still sends,
/// so unread request bytes do not turn the close into a reset that destroys the response.
fn drain(io: &mut Io, linger: http1::Linger, shared: &Shared) {
    let deadline = Instant::now() + linger.timeout;
    let mut scratch = vec![0_u8; 16 * 1024];
    let mut left = linger.max_bytes;
    while left > 0 {
        match io.read(&mut scratch, Some(deadline), shared, true) {
            Ok(Received::Data(n)) => left = left.saturating_sub(n as u64),
            Ok(Received::Eof | Received::Timeout | Received::Stopping) | Err(_) => break,
        }
    }
}

fn setup(mut stream: mio::net::TcpStream) -> Option<(Io, Arc<Waker>)> {
    let prepared = (|| -> io::Result<(Io, Arc<Waker>)> {
        let poll = mio::Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        poll.registry()
            .register(&mut stream, SOCKET, Interest::READABLE | Interest::WRITABLE)?;
        Ok((
            Io {
                stream,
                poll,
                events: Events::with_capacity(4),
            },
            waker,
        ))
    })();
    match prepared {
        Ok(prepared) => Some(prepared),
        Err(error) => {
            tracing::error!(%error, "cannot set up a connection; closing it");
            None
        }
    }
}

fn serve(
    io: &mut Io,
    endpoint: Endpoint,
    http: http1::Config,
    rest: Option<&(RestClient, ReplyRouting)>,
    shared: &Arc<Shared>,
) -> io::Result<()> {
    let mut session = Session::new(endpoint, http, Instant::now());
    if let Some((_, routing)) = rest {
        session.set_reply_routing(*routing);
    }
    let mut closing = false;
    let mut buf = vec![0_u8; READ_SIZE];
    loop {
        io.flush(&mut session)?;
        if !closing && shared.is_stopping() {
            session.close();
            closing = true;
        }
        match session.poll(now()) {
            Action::Read => {
                // `poll` may have queued a response (e.g. a rejection) before asking to read.
                io.flush(&mut session)?;
                let deadline = session.poll_timeout();
                match io.read(&mut buf, deadline, shared, closing)? {
                    Received::Data(n) => session.receive(Instant::now(), &buf[..n]),
                    Received::Eof => session.receive_eof(),
                    Received::Timeout => session.handle_timeout(Instant::now()),
                    Received::Stopping => {} // closed at the top of the loop
                }
            }
            Action::Verify(ticket) => {
                // Other connections' finished requests may join this one's batch.
                std::thread::yield_now();
                if let Err(error) = session.verified(now(), block_on(ticket)) {
                    tracing::error!(%error, "driver error; closing the connection");
                    io.flush(&mut session)?;
                    return Ok(());
                }
            }
            Action::Handle(handler) => {
                let mut handler = std::pin::pin!(handler.instrument(session.span().clone()));
                // Race the handler against the deferral deadline, when the core wants one
                // (see `yuyo_core::deferral`); the handler keeps running after it.
                let outcome = match session.defer_deadline() {
                    Some(at) => match run_until(handler.as_mut(), at) {
                        Some(outcome) => outcome,
                        None => {
                            match session.defer(now()) {
                                // The deferred answer goes out now; the handler goes on.
                                Ok(_) => io.flush(&mut session)?,
                                Err(error) => tracing::debug!(%error, "handler not deferred"),
                            }
                            block_on(handler)
                        }
                    },
                    None => block_on(handler),
                };
                if let Err(error) = session.complete(now(), outcome) {
                    tracing::error!(%error, "driver error; closing the connection");
                    io.flush(&mut session)?;
                    return Ok(());
                }
                // The HTTP answer (e.g. the 202 of a reply sent through the callback
                // endpoint) goes out before the REST requests start.
                let flushed = io.flush(&mut session);
                while let Some(reply) = session.poll_rest_reply() {
                    let _span = session.span().clone().entered();
                    match rest {
                        Some((client, _)) => shared.spawn_rest_reply(client.clone(), reply),
                        None => tracing::error!("a reply went to REST without a REST client"),
                    }
                }
                flushed?;
            }
            Action::StreamFile(source) => stream_file(io, &mut session, &source)?,
            Action::RunAfter(work) => {
                io.flush(&mut session)?;
                shared.spawn_after(work);
            }
            Action::Close => return io.flush(&mut session),
        }
    }
}

/// Wakes the thread parked in [`run_until`].
struct Unpark(parking::Unparker);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `future` on this thread until it completes (`Some`) or `deadline` passes
/// (`None`; the future is left as it is, to be run on with `block_on`).
///
/// This is how a connection thread races a handler against its deferral deadline
/// without a timer thread: like `futures_lite::future::block_on`, it polls the future
/// and parks between wake-ups, but parks with [`parking::Parker::park_deadline`], so
/// the deadline itself wakes it. A timer crate would do the same with more machinery:
/// `async_io::Timer` outside `async_io::block_on` needs async-io's global driver thread.
///
/// Only a pending future can be interrupted: a handler that blocks the thread inside
/// `poll` (e.g. `std::thread::sleep`) is answered when it returns, as on any runtime.
fn run_until<F: Future>(mut future: Pin<&mut F>, deadline: Instant) -> Option<F::Output> {
    let (parker, unparker) = parking::pair();
    let waker = TaskWaker::from(Arc::new(Unpark(unparker)));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return Some(output);
        }
        if !parker.park_deadline(deadline) {
            return None;
        }
    }
}

/// Streams a reply file into the session, writing as it goes (memory stays bounded).
fn stream_file(io: &mut Io, session: &mut Session, source: &FileSource) -> io::Result<()> {
    let FileSource::Path { path, .. } = source else {
        tracing::error!(
            ?source,
            "the blocking adapter only streams files from paths"
        );
        session.abort_file();
        return Ok(());
    };
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(error) => {
            tracing::error!(%error, path = %path.display(), "cannot open a reply file");
            session.abort_file();
            return Ok(());
        }
    };
    loop {
        let mut chunk = BytesMut::zeroed(FILE_CHUNK);
        match file.read(&mut chunk) {
            Ok(0) => {
                if let Err(error) = session.finish_file() {
                    tracing::error!(%error, path = %path.display(), "reply file changed size");
                }
                return Ok(());
            }
            Ok(n) => {
                chunk.truncate(n);
                if let Err(error) = session.send_file_data(Bytes::from(chunk)) {
                    tracing::error!(%error, path = %path.display(), "reply file changed size");
                    return Ok(());
                }
                if let Err(error) = io.flush(session) {
                    session.abort_file();
                    return Err(error);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                tracing::error!(%error, path = %path.display(), "cannot read a reply file");
                session.abort_file();
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn run_until_returns_a_ready_output() {
        let mut future = std::pin::pin!(async { 7 });
        let deadline = Instant::now() + Duration::from_secs(10);
        assert_eq!(run_until(future.as_mut(), deadline), Some(7));
    }

    #[test]
    fn run_until_gives_up_at_the_deadline_and_the_future_runs_on() {
        let (tx, rx) = async_channel_like();
        let mut waiting = std::pin::pin!(rx);
        let deadline = Instant::now() + Duration::from_millis(20);
        assert_eq!(run_until(waiting.as_mut(), deadline), None);
        assert!(Instant::now() >= deadline);
        tx.send(1).unwrap();
        assert_eq!(block_on(waiting), 1);
    }

    #[test]
    fn run_until_is_woken_by_another_thread() {
        let (tx, rx) = async_channel_like();
        let handle = std::thread::spawn(move || tx.send(5).unwrap());
        let mut future = std::pin::pin!(rx);
        let deadline = Instant::now() + Duration::from_secs(10);
        assert_eq!(run_until(future.as_mut(), deadline), Some(5));
        handle.join().unwrap();
    }

    /// A one-shot channel whose receiver is a future woken by the sender.
    fn async_channel_like() -> (OneshotSender, OneshotReceiver) {
        let shared = Arc::new(std::sync::Mutex::new((None, None::<TaskWaker>)));
        (OneshotSender(shared.clone()), OneshotReceiver(shared))
    }

    type Slot = Arc<std::sync::Mutex<(Option<u32>, Option<TaskWaker>)>>;

    struct OneshotSender(Slot);

    impl OneshotSender {
        fn send(self, value: u32) -> Result<(), ()> {
            let waker = {
                let mut slot = self.0.lock().map_err(drop)?;
                slot.0 = Some(value);
                slot.1.take()
            };
            if let Some(waker) = waker {
                waker.wake();
            }
            Ok(())
        }
    }

    struct OneshotReceiver(Slot);

    impl Future for OneshotReceiver {
        type Output = u32;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
            let mut slot = self.0.lock().unwrap();
            match slot.0.take() {
                Some(value) => Poll::Ready(value),
                None => {
                    slot.1 = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        }
    }
}
