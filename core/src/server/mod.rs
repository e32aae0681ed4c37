//! One served connection, sans-IO: the [`http1::Connection`](crate::http1::Connection)
//! wired to the interaction [`Endpoint`](crate::endpoint::Endpoint), with every deadline
//! of the connection (head, body, idle, writes, lingering close) and every decision about
//! its output. Drivers (smol, tokio, blocking threads) translate [`Output`]s into IO on
//! their runtime and feed what happened back as [`Input`]s; they decide nothing.
//!
//! The loop every driver runs, in the style of str0m: one input, one output, drained
//! until [`Output::Timeout`]:
//!
//! ```text
//! loop {
//!     match session.poll_output() {
//!         Output::Transmit(bytes)  => write what the socket takes now (non-blocking),
//!                                     handle_input(Written(n)); keep the rest for later
//!         Output::Verify(ticket)   => let other connections run once (yield), await it,
//!                                     handle_input(Verified(finished))
//!         Output::Handle(handler)  => start it (keep it; it catches panics)
//!         Output::StreamFile(file) => open it; read a chunk whenever Wait::file says so
//!         Output::Spawn(work)      => spawn it (after-response work)
//!         Output::RestReply(reply) => spawn its delivery through the REST client
//!         Output::Yield            => let other tasks run once (yield)
//!         Output::ShutdownWrite    => shut down the socket's sending side
//!         Output::Close            => drop the socket (and any file); done
//!         Output::Timeout(wait)    => wait for the first of: the socket readable (if
//!             wait.read) -> read into receive_buffer(), Received (or Eof); writable (if
//!             wait.write) -> Written(n); the handler -> Handled(outcome); the next file
//!             chunk (if wait.file) -> FileData / FileEnd / FileFailed; wait.deadline ->
//!             Timeout; shutdown requested -> Shutdown; the slot evicted -> Evicted;
//!             an IO error -> Failed
//!     }
//! }
//! ```
//!
//! Every input carries the time ([`Now`]); the session reads no clock. A session records
//! a `tracing` span per request (method, path, interaction id and kind, status, duration);
//! drivers instrument handler futures with [`Session::span`].
//!
//! With the `tls` feature a session can serve HTTPS itself (`Session::with_tls`): the
//! driver still moves raw socket bytes; see the `tls` module.
//!
//! [`Slots`] caps the connections of a server and reclaims, at the cap, the slot of the
//! connection stalled longest on its peer (idle keep-alive ones last, busy ones never).

mod requests;
mod session;
mod slots;
#[cfg(feature = "tls")]
pub mod tls;

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tracing::field;

use crate::endpoint::Dispatch;

pub use session::{Input, Output, Session, Wait};
pub use slots::{Admitted, Eviction, Full, Slot, SlotStats, Slots, Vacancy, Waiting};

/// Most bytes of output a connection holds unsent before it stops parsing pipelined
/// requests (and reading reply files): a peer that does not read cannot make the
/// server queue more than this beyond the response in progress.
pub const MAX_UNSENT: usize = 16 * 1024;

/// The time as a session needs it: a monotonic instant for deadlines, and Unix seconds
/// for the optional signature-timestamp window. Drivers read both clocks; the core none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time, for deadlines.
    pub instant: Instant,
    /// Seconds since the Unix epoch, for the timestamp window.
    pub unix_secs: u64,
}

impl Now {
    /// The time from both clocks' readings (`Now::at(Instant::now(), SystemTime::now())`);
    /// a wall clock before 1970 counts as 0.
    #[must_use]
    pub fn at(instant: Instant, wall: SystemTime) -> Self {
        Self {
            instant,
            unix_secs: wall.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        }
    }
}

/// The driver called a session method that does not fit its state (a driver bug).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DriverError {
    /// a handler outcome without a handler running.
    NotHandling,
    /// a verdict without a request awaiting verification.
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
