//! yuyo as a [`tower::Service`], to mount in axum or serve with hyper.
//!
//! [`InteractionService`] implements `tower::Service<http::Request<B>>` for any
//! [`http_body::Body`] `B`, and answers with `http::Response<`[`ResponseBody`]`>`. It
//! drives the core [`Endpoint`] directly (the host — hyper, axum — does HTTP/1.1): the
//! head goes to [`Endpoint::begin`], body frames are pushed into the exchange as they
//! arrive (so the body limit is enforced while the body streams in, never after buffering
//! it whole: 413), then the handler runs and its reply becomes the response.
//!
//! With the `server` feature (on by default), `Server` serves the service with hyper's
//! HTTP/1.1 server on a tokio listener, with the same API as the other adapters' servers
//! (`new`, `service`, `service_mut`, `shutdown_handle`, `serve`).
//!
//! # Runtime
//! This adapter needs a **tokio** runtime: reply files are read from disk on tokio's
//! blocking pool, after-response work is spawned on the runtime that called
//! [`InteractionService::start`], and the body deadline uses tokio's timer.
//!
//! # Lifecycle
//! The host owns the process, so the lifespan is driven by hand:
//! [`InteractionService::start`] runs the startup callbacks and
//! [`InteractionService::close`] stops taking requests, waits (up to
//! [`ServeOptions::grace_period`]) for requests in flight — including their response
//! bodies — and for after-response work, then runs the shutdown callbacks. Before
//! `start()` has succeeded, and from `close()` on, every request is answered
//! `503 Service Unavailable` with `Retry-After`, never by a half-initialised endpoint.
//! [`ShutdownHandle::shutdown`] turns the health check
//! ([`EndpointConfig::health_path`](yuyo_core::endpoint::EndpointConfig::health_path))
//! to 503 at once, so a load balancer stops sending new work, but requests are still
//! served until `close()`: one that reached an accepted connection is never refused.
//!
//! Of the [`ServeOptions`], the grace period and `http.body_timeout` (a request body that
//! does not arrive in time is answered 408) apply; connection limits, head and idle
//! timeouts and signals are the host's business (`Server` maps them onto hyper's settings
//! where hyper has one: see its docs and the README).
//!
//! # Replies through REST
//! This adapter has no REST client, so it neither defers slow handlers nor sends
//! oversized files through the callback endpoint ([`yuyo_core::deferral`]): every reply is
//! the HTTP answer, as with a plain `yuyo_tokio::Server`. A handler that may run past
//! Discord's 3 s should answer [`Reply::deferred`](yuyo_core::endpoint::Reply::deferred)
//! itself and finish through REST (e.g. in its `after` work); yuyo-tokio's `Bot` server
//! does this automatically.
//!
//! # Mounting in axum
//! ```ignore
//! let interactions = yuyo_tower::InteractionService::new(service);
//! interactions.start().await?;
//! let app = axum::Router::new().nest_service("/interactions", interactions.clone());
//! axum::serve(listener, app)
//!     .with_graceful_shutdown(interactions.shutdown_requested())
//!     .await?;
//! interactions.close().await?;
//! ```
//! `nest_service` strips the prefix, so the endpoint's configured path stays `/` (the
//! default) while Discord is given `https://host/interactions`. With
//! `Router::route_service("/interactions", ..)` the path is not stripped: configure the
//! endpoint's path as `/interactions` then.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::{TaskTracker, task_tracker::TaskTrackerToken};
use tracing::Instrument;
use yuyo_core::endpoint::{
    BoxFuture, Endpoint, Exchange, Finished, Rejection, ResponseBody as CoreBody,
};
use yuyo_core::metrics::RequestKind;
use yuyo_core::multipart::{FileSource, Segment};
use yuyo_core::server::{record_dispatch, record_response, request_span};

pub use yuyo_core::service::{ServeError, ServeOptions, Service};

#[cfg(feature = "server")]
mod server;
#[cfg(feature = "server")]
pub use server::Server;

/// Seconds a client is told to wait (`Retry-After`) when the service is not running.
pub const RETRY_AFTER_SECS: u32 = 5;
/// File chunks read ahead of the host.
const FILE_READ_AHEAD: usize = 2;

const NEW: u8 = 0;
const RUNNING: u8 = 1;
const CLOSED: u8 = 2;

/// The interaction endpoint as a `tower::Service`; cheap to clone (clones share state).
/// See the [crate docs](crate).
#[derive(Clone)]
pub struct InteractionService {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: Endpoint,
    options: ServeOptions,
    /// The lifespan, driven by `start` and `close`.
    service: tokio::sync::Mutex<Service>,
    state: AtomicU8,
    /// Set when shutdown is requested (the health check answers 503).
    shutdown: ShutdownHandle,
    /// Cancelled when the grace period is over.
    force: CancellationToken,
    /// Requests in flight (tokens, held until their response body is dropped) and
    /// after-response work.
    tracker: TaskTracker,
    runtime: OnceLock<Handle>,
}

impl fmt::Debug for InteractionService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InteractionService")
            .field("endpoint", &self.inner.endpoint)
            .field("state", &self.inner.state.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

/// Requests shutdown of an [`InteractionService`] (or a `Server`); cheap to clone,
/// usable from any thread.
#[derive(Debug, Clone, Default)]
pub struct ShutdownHandle {
    signal: Arc<Signal>,
}

#[derive(Debug, Default)]
struct Signal {
    requested: AtomicBool,
    token: CancellationToken,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inner").finish_non_exhaustive()
    }
}

impl ShutdownHandle {
    /// Requests shutdown: from now on the health check answers 503 (requests are still
    /// served until [`InteractionService::close`]), and
    /// [`InteractionService::shutdown_requested`] resolves (e.g. to end the host's
    /// graceful shutdown). Idempotent and non-blocking; [`InteractionService::close`] still
    /// has to be awaited to wait for requests in flight and run the shutdown callbacks
    /// (a `Server` does that itself).
    pub fn shutdown(&self) {
        self.signal.requested.store(true, Ordering::SeqCst);
        self.signal.token.cancel();
    }

    /// Whether shutdown was requested.
    #[must_use]
    pub fn is_shutdown(&self) -> bool {
        self.signal.requested.load(Ordering::SeqCst)
    }

    /// Resolves once shutdown was requested.
    pub fn requested(&self) -> WaitForCancellationFutureOwned {
        self.signal.token.clone().cancelled_owned()
    }
}

impl InteractionService {
    /// A service for `service`'s endpoint, lifespan callbacks and options (set them
    /// before wrapping: they are fixed from here on).
    #[must_use]
    pub fn new(service: Service) -> Self {
        Self::with_shutdown(service, ShutdownHandle::default())
    }

    /// A service that shuts down when `shutdown` is triggered.
    fn with_shutdown(service: Service, shutdown: ShutdownHandle) -> Self {
        Self {
            inner: Arc::new(Inner {
                endpoint: service.endpoint().clone(),
                options: service.options().clone(),
                service: tokio::sync::Mutex::new(service),
                state: AtomicU8::new(NEW),
                shutdown,
                force: CancellationToken::new(),
                tracker: TaskTracker::new(),
                runtime: OnceLock::new(),
            }),
        }
    }

    /// The endpoint (configuration and handler registry).
    #[must_use]
    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    /// The serving options.
    #[must_use]
    pub fn options(&self) -> &ServeOptions {
        &self.inner.options
    }

    /// Whether requests are being served (started and not shut down).
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.inner.is_running()
    }

    /// A handle that stops this service from taking new requests.
    #[must_use]
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.inner.shutdown.clone()
    }

    /// Resolves once shutdown was requested (by a [`ShutdownHandle`] or
    /// [`InteractionService::close`]); e.g. for axum's `with_graceful_shutdown`.
    pub fn shutdown_requested(&self) -> WaitForCancellationFutureOwned {
        self.inner.shutdown.requested()
    }

    /// Runs the startup callbacks; requests are served once it returns `Ok`. Call it on
    /// the tokio runtime that serves the requests (after-response work is spawned there).
    ///
    /// # Errors
    /// [`ServeError::Startup`] with every failed callback's message (the service keeps
    /// answering 503); [`ServeError::Lifespan`] if it was already started;
    /// [`ServeError::Io`] if there is no tokio runtime or the service was closed.
    pub async fn start(&self) -> Result<(), ServeError> {
        let runtime = Handle::try_current().map_err(|_| {
            ServeError::Io(io::Error::other(
                "yuyo-tower must be started on a tokio runtime",
            ))
        })?;
        let mut service = self.inner.service.lock().await;
        if self.inner.state.load(Ordering::SeqCst) == CLOSED {
            return Err(ServeError::Io(io::Error::other(
                "the interaction service was closed before it started",
            )));
        }
        let _ = self.inner.runtime.set(runtime);
        service.startup().await?;
        // A concurrent `close` keeps the service closed.
        let _ = self
            .inner
            .state
            .compare_exchange(NEW, RUNNING, Ordering::SeqCst, Ordering::SeqCst);
        Ok(())
    }

    /// Stops taking requests (503 from now on), waits up to the grace period for requests
    /// in flight (with their response bodies) and after-response work — cancelling what
    /// is left then — and runs the shutdown callbacks if the service had started.
    /// Idempotent.
    ///
    /// # Errors
    /// [`ServeError::Shutdown`] with every failed shutdown callback's message.
    pub async fn close(&self) -> Result<(), ServeError> {
        let deadline = tokio::time::Instant::now() + self.inner.options.grace_period;
        self.close_by(deadline).await
    }

    /// [`InteractionService::close`], with the grace period ending at `deadline`.
    async fn close_by(&self, deadline: tokio::time::Instant) -> Result<(), ServeError> {
        self.inner.request_shutdown();
        let tracker = &self.inner.tracker;
        tracker.close();
        if tokio::time::timeout_at(deadline, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = tracker.len(),
                "grace period over: cancelling the remaining requests and after-response work"
            );
            self.inner.force.cancel();
        }
        let mut service = self.inner.service.lock().await;
        if matches!(
            service.lifespan().state(),
            yuyo_core::lifespan::State::Running
        ) {
            service.shutdown().await
        } else {
            Ok(())
        }
    }
}

impl Inner {
    fn request_shutdown(&self) {
        self.state.store(CLOSED, Ordering::SeqCst);
        self.shutdown.shutdown();
    }

    fn is_running(&self) -> bool {
        self.state.load(Ordering::SeqCst) == RUNNING
    }

    fn runtime(&self) -> Option<Handle> {
        self.runtime
            .get()
            .cloned()
            .or_else(|| Handle::try_current().ok())
    }

    /// Spawns after-response work, tracked by `close` and cancelled after the grace period.
    fn spawn_after(&self, work: BoxFuture<()>) {
        let Some(runtime) = self.runtime() else {
            tracing::error!("no tokio runtime to run after-response work on; dropping it");
            return;
        };
        let force = self.force.clone();
        self.tracker.spawn_on(
            async move {
                force.run_until_cancelled(work).await;
            },
            &runtime,
        );
    }

    /// Answers `request`, whose body must arrive within `body_timeout` (408 otherwise).
    async fn handle<B>(
        self: Arc<Self>,
        request: Request<B>,
        body_timeout: Duration,
    ) -> Response<ResponseBody>
    where
        B: Body + Send,
        B::Data: Send,
        B::Error: fmt::Display,
    {
        // Taken before the state is checked, so `close` either waits for this request or
        // the request sees the service closed.
        let token = self.tracker.token();
        if !self.is_running() {
            return unavailable();
        }
        if self.shutdown.is_shutdown() {
            self.endpoint.health().begin_draining();
        }
        let started = Instant::now();
        let (parts, body) = request.into_parts();
        let span = request_span(&parts);
        let force = self.force.clone();
        let mut kind = RequestKind::Rejected;
        let endpoint = self.endpoint.clone();
        let exchange =
            Arc::clone(&self).exchange(parts, body, body_timeout, token, &span, &mut kind);
        let response = force
            .run_until_cancelled(exchange)
            .instrument(span.clone())
            .await
            .unwrap_or_else(unavailable);
        let took = started.elapsed();
        record_response(&span, response.status(), took);
        endpoint.metrics().responded(kind, response.status(), took);
        response
    }

    async fn exchange<B>(
        self: Arc<Self>,
        parts: http::request::Parts,
        body: B,
        body_timeout: Duration,
        token: TaskTrackerToken,
        span: &tracing::Span,
        kind: &mut RequestKind,
    ) -> Response<ResponseBody>
    where
        B: Body + Send,
        B::Data: Send,
        B::Error: fmt::Display,
    {
        let exchange = match self.endpoint.begin(&parts) {
            Ok(exchange) => exchange,
            Err(immediate) => {
                *kind = RequestKind::of_immediate(&immediate);
                return plain(immediate.into_response());
            }
        };
        let exchange = match read_body(exchange, body, body_timeout).await {
            Ok(exchange) => exchange,
            Err(rejection) => return plain(rejection.into_response()),
        };
        let finished = match exchange.end() {
            Err(immediate) => Finished::Respond(immediate),
            Ok(signed) => {
                let ticket = signed.enqueue(unix_secs());
                // Other requests' finished bodies join this one's batch.
                yuyo_tokio::glue::yield_to_queued_tasks().await;
                ticket.await
            }
        };
        let completed = match finished {
            Finished::Respond(immediate) => {
                *kind = RequestKind::of_immediate(&immediate);
                return plain(immediate.into_response());
            }
            Finished::Dispatch(dispatch) => {
                record_dispatch(span, &dispatch);
                *kind = dispatch.kind().into();
                let dispatched = Instant::now();
                let (responding, handler) = dispatch.start();
                let outcome = handler.await;
                let metrics = self.endpoint.metrics();
                metrics.handled(*kind, dispatched, Instant::now());
                responding.complete(outcome)
            }
            // A Webhook Event: a 204 now, its handler as after-response work.
            Finished::Event(event) => {
                *kind = RequestKind::Event;
                event.acknowledge()
            }
        };
        let guard = Guard {
            inner: self,
            _token: token,
        };
        let mut response = completed
            .response
            .map(|body| ResponseBody::from_core(body, Some(guard)));
        response.body_mut().after = completed.after;
        response
    }
}

/// Pushes `body` into `exchange` frame by frame, all of it within `body_timeout`.
async fn read_body<B>(
    mut exchange: Exchange,
    body: B,
    body_timeout: Duration,
) -> Result<Exchange, Rejection>
where
    B: Body + Send,
    B::Data: Send,
    B::Error: fmt::Display,
{
    let deadline = tokio::time::Instant::now() + body_timeout;
    let mut body = std::pin::pin!(body);
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(None) => return Ok(exchange),
            Ok(Some(Err(error))) => {
                tracing::debug!(%error, "could not read the request body");
                return Err(Rejection::UnreadableBody);
            }
            Err(_elapsed) => {
                tracing::debug!("request body timed out");
                return Err(Rejection::BodyTimeout);
            }
        };
        if let Ok(mut data) = frame.into_data() {
            exchange = exchange.push(data.copy_to_bytes(data.remaining()))?;
        }
    }
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// A core response without after-work or files.
fn plain(response: Response<CoreBody>) -> Response<ResponseBody> {
    response.map(|body| ResponseBody::from_core(body, None))
}

/// 503 with `Retry-After`: not started, or shut down.
fn unavailable() -> Response<ResponseBody> {
    plain(
        Rejection::Unavailable {
            retry_after_secs: RETRY_AFTER_SECS,
        }
        .into_response(),
    )
}

/// The future of [`InteractionService`]'s `call`.
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>> + Send + 'static>>;

impl<B> tower::Service<Request<B>> for InteractionService
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: fmt::Display,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> ResponseFuture {
        let inner = Arc::clone(&self.inner);
        let body_timeout = inner.options.http.body_timeout;
        Box::pin(async move { Ok(inner.handle(request, body_timeout).await) })
    }
}

/// Keeps a request counted as in flight until its body is dropped, and runs its
/// after-response work then.
struct Guard {
    inner: Arc<Inner>,
    _token: TaskTrackerToken,
}

/// The body of an [`InteractionService`] response: empty, in memory, or a
/// `multipart/form-data` reply whose files are streamed from disk.
///
/// A reply's after-response work is spawned when the body is dropped after all of it
/// was handed to the host (not if the host gives up on it part-way).
pub struct ResponseBody {
    state: State,
    /// Bytes still to come, when known.
    remaining: Option<u64>,
    after: Option<BoxFuture<()>>,
    guard: Option<Guard>,
}

enum State {
    /// Every byte was handed out.
    Done,
    /// The body could not be completed (a file failed).
    Failed,
    Full(Bytes),
    Multipart {
        segments: VecDeque<Segment>,
        file: Option<FileRead>,
    },
}

struct FileRead {
    chunks: mpsc::Receiver<io::Result<Bytes>>,
    declared: Option<u64>,
    supplied: u64,
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Done => "Done",
            State::Failed => "Failed",
            State::Full(_) => "Full",
            State::Multipart { .. } => "Multipart",
        };
        f.debug_struct("ResponseBody")
            .field("state", &state)
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}

impl ResponseBody {
    /// A body of these bytes.
    #[must_use]
    pub fn full(bytes: Bytes) -> Self {
        Self {
            remaining: Some(bytes.len() as u64),
            state: if bytes.is_empty() {
                State::Done
            } else {
                State::Full(bytes)
            },
            after: None,
            guard: None,
        }
    }

    /// An empty body.
    #[must_use]
    pub fn empty() -> Self {
        Self::full(Bytes::new())
    }

    fn from_core(body: CoreBody, guard: Option<Guard>) -> Self {
        let mut this = match body {
            CoreBody::Empty => Self::empty(),
            CoreBody::Full(bytes) => Self::full(bytes),
            CoreBody::Multipart(multipart) => Self {
                remaining: multipart.content_length(),
                state: State::Multipart {
                    segments: multipart.into_segments().into(),
                    file: None,
                },
                after: None,
                guard: None,
            },
        };
        this.guard = guard;
        this
    }

    fn yielded(&mut self, chunk: Bytes) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(remaining) = &mut self.remaining {
            *remaining = remaining.saturating_sub(chunk.len() as u64);
        }
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn fail(&mut self, error: io::Error) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        tracing::error!(%error, "could not stream a reply file; abandoning the response");
        self.state = State::Failed;
        Poll::Ready(Some(Err(error)))
    }

    fn open(&self, source: FileSource) -> io::Result<FileRead> {
        let declared = source.known_len();
        let FileSource::Path { path, .. } = source else {
            return Err(io::Error::other(
                "yuyo-tower has no source for FileSource::Later files",
            ));
        };
        let runtime = self
            .guard
            .as_ref()
            .and_then(|guard| guard.inner.runtime())
            .or_else(|| Handle::try_current().ok())
            .ok_or_else(|| io::Error::other("no tokio runtime to read a reply file on"))?;
        let (tx, chunks) = mpsc::channel(FILE_READ_AHEAD);
        drop(runtime.spawn_blocking(move || yuyo_tokio::glue::read_file_chunks(&path, &tx)));
        Ok(FileRead {
            chunks,
            declared,
            supplied: 0,
        })
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            let (segments, file) = match &mut this.state {
                State::Done | State::Failed => return Poll::Ready(None),
                State::Full(_) => {
                    let State::Full(bytes) = std::mem::replace(&mut this.state, State::Done) else {
                        return Poll::Ready(None);
                    };
                    return this.yielded(bytes);
                }
                State::Multipart { segments, file } => (segments, file),
            };
            if let Some(read) = file {
                match read.chunks.poll_recv(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Ok(chunk))) => {
                        read.supplied += chunk.len() as u64;
                        if read
                            .declared
                            .is_some_and(|declared| read.supplied > declared)
                        {
                            return this.fail(io::Error::other(
                                "reply file is longer than its declared length",
                            ));
                        }
                        return this.yielded(chunk);
                    }
                    Poll::Ready(Some(Err(error))) => return this.fail(error),
                    Poll::Ready(None) => {
                        if read
                            .declared
                            .is_some_and(|declared| read.supplied != declared)
                        {
                            return this.fail(io::Error::other(
                                "reply file is shorter than its declared length",
                            ));
                        }
                        *file = None;
                    }
                }
                continue;
            }
            match segments.pop_front() {
                None => {
                    this.state = State::Done;
                    return Poll::Ready(None);
                }
                Some(Segment::Bytes(bytes)) => {
                    if segments.is_empty() {
                        this.state = State::Done;
                    }
                    return this.yielded(bytes);
                }
                Some(Segment::File { source, .. }) => match this.open(source) {
                    Ok(read) => {
                        if let State::Multipart { file, .. } = &mut this.state {
                            *file = Some(read);
                        }
                    }
                    Err(error) => return this.fail(error),
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done | State::Failed)
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.state, self.remaining) {
            (State::Done | State::Failed, _) => SizeHint::with_exact(0),
            (_, Some(remaining)) => SizeHint::with_exact(remaining),
            (_, None) => SizeHint::default(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // Run after-response work only for a body handed out whole; the guard (and with
        // it the in-flight count) is dropped after the work is tracked.
        if let (State::Done, Some(after), Some(guard)) =
            (&self.state, self.after.take(), &self.guard)
        {
            guard.inner.spawn_after(after);
        }
    }
}
