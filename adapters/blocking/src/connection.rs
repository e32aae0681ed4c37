//! Serving one connection on a worker thread: the core's session loop over a
//! non-blocking socket, handlers run with `block_on`. When the session waits for bytes
//! that have not arrived, the connection is parked with the reactor (see
//! [`crate::reactor`]) and the worker moves on; it never blocks waiting for a read.

use std::fs::File;
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker as TaskWaker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures_lite::future::block_on;
use mio::unix::SourceFd;
use mio::{Events, Interest, Token, Waker};
use tracing::Instrument;
use yuyo_core::http1;
use yuyo_core::multipart::FileSource;
use yuyo_core::server::{Action, Now, Session};

use crate::reactor::{self, Wait};
use crate::{Ctx, Shared, TaskGuard, lock};

const SOCKET: Token = Token(0);
const WAKE: Token = Token(1);
/// Bytes read from a socket at once, into the worker's buffer.
const READ_SIZE: usize = 16 * 1024;
/// Bytes of a reply file read at once.
const FILE_CHUNK: usize = 64 * 1024;
/// How long a worker keeps waiting for the next request of the connection it served
/// before parking it with the reactor. A busy keep-alive connection stays on its thread
/// (no hand-off, no reactor wake-up per request); an idle one holds no thread after this.
const HOLD: Duration = Duration::from_millis(10);

fn now() -> Now {
    Now {
        instant: Instant::now(),
        unix_secs: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs()),
    }
}

/// An accepted connection: what a parked connection keeps while it holds no thread.
pub(crate) struct Conn {
    stream: mio::net::TcpStream,
    session: Session,
    /// Its slot in the reactor's registry (and its token).
    key: usize,
    /// Shutdown was passed on to the session.
    closing: bool,
    /// Counts the connection (for the cap and shutdown) until it is closed.
    guard: TaskGuard,
}

impl Conn {
    pub(crate) fn new(
        stream: mio::net::TcpStream,
        key: usize,
        ctx: &Ctx,
        http: http1::Config,
        guard: TaskGuard,
    ) -> Box<Self> {
        let mut session = Session::new(ctx.endpoint.clone(), http, Instant::now());
        if let Some((_, routing)) = &ctx.rest {
            session.set_reply_routing(*routing);
        }
        Box::new(Self {
            stream,
            session,
            key,
            closing: false,
            guard,
        })
    }

    pub(crate) fn key(&self) -> usize {
        self.key
    }

    pub(crate) fn stream_mut(&mut self) -> &mut mio::net::TcpStream {
        &mut self.stream
    }

    pub(crate) fn closing(&self) -> bool {
        self.closing
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Whoever drops a connection holds it out of the registry (never under its
        // lock), so the slot is `Owned` and can be reused.
        lock(&self.guard.shared().registry).release(self.key);
    }
}

/// A worker thread's own resources, reused for every connection it serves.
pub(crate) struct Local {
    buf: Vec<u8>,
    poller: ThreadPoll,
}

impl Local {
    pub(crate) fn new() -> Self {
        Self {
            buf: vec![0; READ_SIZE],
            poller: ThreadPoll {
                poll: None,
                held: None,
            },
        }
    }

    /// Unregisters the thread's waker.
    pub(crate) fn finish(self, shared: &Shared) {
        if let Some(poll) = self.poller.poll {
            shared.remove_worker_waker(poll.waker_id);
        }
    }
}

/// The worker thread's own poller, created the first time it is needed, with a waker
/// shutdown uses: it waits for a socket to take more bytes, and holds a connection
/// between requests (see [`HOLD`]).
struct ThreadPoll {
    poll: Option<PollState>,
    /// The descriptor registered for reading while its connection is held.
    held: Option<RawFd>,
}

struct PollState {
    poll: mio::Poll,
    events: Events,
    waker_id: u64,
}

impl ThreadPoll {
    fn poll(&mut self, shared: &Shared) -> io::Result<&mut PollState> {
        if self.poll.is_none() {
            let poll = mio::Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
            let waker_id = shared.add_worker_waker(waker);
            self.poll = Some(PollState {
                poll,
                events: Events::with_capacity(4),
                waker_id,
            });
        }
        self.poll
            .as_mut()
            .ok_or_else(|| io::Error::other("the worker's poller is missing"))
    }

    fn wait_writable(&mut self, stream: &mio::net::TcpStream, shared: &Shared) -> io::Result<()> {
        let fd = stream.as_raw_fd();
        let held = self.held == Some(fd);
        let poll = self.poll(shared)?;
        // The bare descriptor is registered (a `TcpStream` would refuse a second
        // registry), only while waiting; a held one is already there for reading.
        if held {
            poll.poll.registry().reregister(
                &mut SourceFd(&fd),
                SOCKET,
                Interest::READABLE | Interest::WRITABLE,
            )?;
        } else {
            poll.poll
                .registry()
                .register(&mut SourceFd(&fd), SOCKET, Interest::WRITABLE)?;
        }
        let waited = poll.poll.poll(&mut poll.events, None);
        if held {
            poll.poll
                .registry()
                .reregister(&mut SourceFd(&fd), SOCKET, Interest::READABLE)?;
        } else {
            let _ = poll.poll.registry().deregister(&mut SourceFd(&fd));
        }
        match waited {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => Err(e),
            _ => Ok(()),
        }
    }

    /// Waits up to `timeout` for `stream` to become readable (or for shutdown), keeping
    /// it registered until [`release`](Self::release); `false` when the time ran out.
    fn hold(
        &mut self,
        stream: &mio::net::TcpStream,
        timeout: Duration,
        shared: &Shared,
    ) -> io::Result<bool> {
        let fd = stream.as_raw_fd();
        let register = self.held != Some(fd);
        let poll = self.poll(shared)?;
        if register {
            // Edge-triggered, registered after the read that would block: data that came
            // in between is reported at once.
            poll.poll
                .registry()
                .register(&mut SourceFd(&fd), SOCKET, Interest::READABLE)?;
            self.held = Some(fd);
        }
        let Some(poll) = self.poll.as_mut() else {
            return Ok(false);
        };
        match poll.poll.poll(&mut poll.events, Some(timeout)) {
            Ok(()) => Ok(!poll.events.is_empty()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Stops holding `stream` (before the connection is parked, closed or dropped).
    fn release(&mut self, stream: &mio::net::TcpStream) {
        let fd = stream.as_raw_fd();
        if self.held == Some(fd) {
            self.held = None;
            if let Some(poll) = &self.poll {
                let _ = poll.poll.registry().deregister(&mut SourceFd(&fd));
            }
        }
    }
}

/// The socket's sending side, for one worker.
struct Out<'a> {
    stream: &'a mut mio::net::TcpStream,
    poller: &'a mut ThreadPoll,
    shared: &'a Shared,
}

impl Out<'_> {
    /// Writes all of `data`, waiting for the socket to take it.
    fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            match self.stream.write(data) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.poller.wait_writable(self.stream, self.shared)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes everything the session has to send.
    fn flush(&mut self, session: &mut Session) -> io::Result<()> {
        while let Some(bytes) = session.poll_transmit() {
            self.write_all(&bytes)?;
        }
        Ok(())
    }
}

/// Reads once: `Some(0)` at EOF, `None` if nothing is there yet.
fn read(stream: &mut mio::net::TcpStream, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        match stream.read(buf) {
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// What stopped [`drive`].
enum Step {
    /// The session waits for bytes that have not arrived.
    Park,
    /// The session is done: close it lingering.
    Close,
}

/// Serves `conn` until it must wait for bytes (then it is parked with the reactor) or
/// closes.
pub(crate) fn serve(mut conn: Box<Conn>, local: &mut Local, ctx: &Ctx, shared: &Arc<Shared>) {
    loop {
        let step = drive(&mut conn, local, ctx, shared);
        if matches!(step, Ok(Step::Park)) && hold(&conn, local, shared) {
            continue;
        }
        local.poller.release(&conn.stream);
        match step {
            Ok(Step::Park) => {
                let deadline = conn.session.poll_timeout();
                match reactor::park(shared, conn, Wait::Read, deadline) {
                    Ok(()) => return,
                    Err(back) => conn = back,
                }
            }
            Ok(Step::Close) => return linger(conn, local, shared),
            Err(error) => {
                tracing::debug!(%error, "connection ended with an IO error");
                return;
            }
        }
    }
}

/// Whether `conn` has bytes to read (or shutdown started) within [`HOLD`] or its
/// deadline, whichever is first; `false` parks it. Nothing is held while connections
/// wait for a thread, nor once the deadline passed (the session fires it).
fn hold(conn: &Conn, local: &mut Local, shared: &Shared) -> bool {
    if conn.closing || shared.is_stopping() || crate::jobs_waiting(shared) {
        return false;
    }
    let timeout = match conn.session.poll_timeout() {
        Some(deadline) => {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            left.min(HOLD)
        }
        None => HOLD,
    };
    match local.poller.hold(&conn.stream, timeout, shared) {
        Ok(ready) => ready,
        Err(error) => {
            tracing::debug!(%error, "cannot hold a connection; parking it");
            false
        }
    }
}

/// A lingering close (see [`yuyo_core::http1::Linger`]): drain what the peer still sends,
/// so unread request bytes do not turn the close into a reset that destroys the response.
/// What has not arrived yet is drained by the reactor, so the worker does not wait for
/// the peer's FIN.
fn linger(mut conn: Box<Conn>, local: &mut Local, shared: &Shared) {
    // Without a lingering close, dropping the connection closes the socket.
    let Some(linger) = conn.session.linger() else {
        return;
    };
    let _ = conn.stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + linger.timeout;
    let mut left = linger.max_bytes;
    loop {
        match drain(&mut conn, &mut local.buf, left) {
            Some(still) => left = still,
            None => return,
        }
        match reactor::park(shared, conn, Wait::Drain { deadline, left }, Some(deadline)) {
            Ok(()) => return,
            Err(back) => conn = back,
        }
    }
}

/// Reads and discards until the socket has nothing more for now (`Some` of the bytes
/// still allowed) or the drain is over (`None`: EOF, an error, or `left` bytes read).
pub(crate) fn drain(conn: &mut Conn, scratch: &mut [u8], mut left: u64) -> Option<u64> {
    while left > 0 {
        match read(&mut conn.stream, scratch) {
            Ok(Some(0)) | Err(_) => return None,
            Ok(Some(n)) => left = left.saturating_sub(n as u64),
            Ok(None) => return Some(left),
        }
    }
    None
}

fn drive(conn: &mut Conn, local: &mut Local, ctx: &Ctx, shared: &Arc<Shared>) -> io::Result<Step> {
    let Conn {
        stream,
        session,
        closing,
        ..
    } = conn;
    let Local { buf, poller } = local;
    let mut io = Out {
        stream,
        poller,
        shared,
    };
    let rest = ctx.rest.as_ref();
    loop {
        io.flush(session)?;
        if !*closing && shared.is_stopping() {
            session.close();
            *closing = true;
        }
        match session.poll(now()) {
            Action::Read => {
                // `poll` may have queued a response (e.g. a rejection) before asking to read.
                io.flush(session)?;
                match read(io.stream, buf)? {
                    Some(0) => session.receive_eof(),
                    Some(n) => session.receive(Instant::now(), &buf[..n]),
                    None => {
                        let now = Instant::now();
                        if session.poll_timeout().is_some_and(|at| at <= now) {
                            session.handle_timeout(now);
                        } else {
                            return Ok(Step::Park);
                        }
                    }
                }
            }
            Action::Verify(ticket) => {
                // Other connections' finished requests may join this one's batch.
                std::thread::yield_now();
                if let Err(error) = session.verified(now(), block_on(ticket)) {
                    tracing::error!(%error, "driver error; closing the connection");
                    io.flush(session)?;
                    return Ok(Step::Close);
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
                                Ok(_) => io.flush(session)?,
                                Err(error) => tracing::debug!(%error, "handler not deferred"),
                            }
                            block_on(handler)
                        }
                    },
                    None => block_on(handler),
                };
                if let Err(error) = session.complete(now(), outcome) {
                    tracing::error!(%error, "driver error; closing the connection");
                    io.flush(session)?;
                    return Ok(Step::Close);
                }
                // The HTTP answer (e.g. the 202 of a reply sent through the callback
                // endpoint) goes out before the REST requests start.
                let flushed = io.flush(session);
                while let Some(reply) = session.poll_rest_reply() {
                    let _span = session.span().clone().entered();
                    match rest {
                        Some((client, _)) => shared.spawn_rest_reply(client.clone(), reply),
                        None => tracing::error!("a reply went to REST without a REST client"),
                    }
                }
                flushed?;
            }
            Action::StreamFile(source) => stream_file(&mut io, session, &source)?,
            Action::RunAfter(work) => {
                io.flush(session)?;
                shared.spawn_after(work);
            }
            Action::Close => {
                io.flush(session)?;
                return Ok(Step::Close);
            }
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
fn stream_file(io: &mut Out<'_>, session: &mut Session, source: &FileSource) -> io::Result<()> {
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
