//! The REST client every adapter hands its users, generic over the adapter's
//! [`ClientRuntime`]: the handle ([`RestClient`]), its API and the loop that runs a
//! [`ClientCall`](super::client::ClientCall) live here once; an adapter only says how
//! to connect, read, write, open files, sleep and wait on its runtime, and what its
//! operations return (a future on smol and tokio, the value itself on std threads).

use std::fmt;
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

pub use event_listener::{EventListener, Listener};
use http::Method;

use super::bot::Bot;
pub use super::client::Changes;
use super::client::{Client, Input, Output, PooledStream};
use super::transport::{HttpSettings, Input as IoInput, Io, ProxySettings, Transport};
use super::{
    CommandChange, CommandSync, Commands, RateLimiter, RequestBody, RequestError, Response, Rest,
    RestConfig, RestError, RestRequest, Route, TransportSetupError,
};
use crate::deferral::{ReplyRouting, RestReply};
use crate::service::Service;

/// How an adapter runs the client path: its connections and files, its clock and
/// timers, and what its operations return. Every method is one IO step; the loops
/// around them are the core's. An IO error of kind `TimedOut` (or `WouldBlock`, what
/// a blocking socket's timeout gives) means the deadline passed.
pub trait ClientRuntime: Sized + Send + Sync + 'static {
    /// A connection of the REST client.
    type Stream: PooledStream + Send + 'static;
    /// A file being uploaded.
    type File: Send + 'static;
    /// What an operation returns: a future of `T` on an async runtime, `T` itself on
    /// a blocking one.
    type Output<T: Send + 'static>;
    /// What [`BotBuilder::executor`](super::bot::BotBuilder::executor) takes; an
    /// uninhabited type where the runtime has none.
    type Executor: Send + Sync + 'static;
    /// The server a bot serves with.
    type Server: Send + 'static;

    /// The runtime's clock.
    fn now() -> Instant;
    /// A TCP connection to `host:port`, opened before `deadline`.
    fn connect(
        host: &str,
        port: u16,
        deadline: Instant,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send;
    /// Writes all of `bytes` before `deadline`.
    fn write(
        stream: &mut Self::Stream,
        bytes: &[u8],
        deadline: Instant,
    ) -> impl Future<Output = io::Result<()>> + Send;
    /// Reads some bytes into `buf` before `deadline` (0 at the end of the stream).
    fn read(
        stream: &mut Self::Stream,
        buf: &mut [u8],
        deadline: Instant,
    ) -> impl Future<Output = io::Result<usize>> + Send;
    /// Opens the file at `path` for reading.
    fn open(path: &Path) -> impl Future<Output = io::Result<Self::File>> + Send;
    /// Reads the next bytes of `file` into `buf` (0 at its end).
    fn read_file(
        file: &mut Self::File,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<usize>> + Send;
    /// Until `until`.
    fn sleep_until(until: Instant) -> impl Future<Output = ()> + Send;
    /// Until `wake` fires or, when set, `until` passes.
    fn wait(wake: EventListener, until: Option<Instant>) -> impl Future<Output = ()> + Send;
    /// `operation` as what this runtime's operations return (boxed, or run to its end).
    fn run<T: Send + 'static>(
        operation: impl Future<Output = T> + Send + 'static,
    ) -> Self::Output<T>;
    /// The server of `bot`, serving `service` (its lifespan already wired to the bot).
    fn server(bot: &Bot<Self>, service: Service) -> Self::Server;
}

/// Performs one IO the core asked for through `R`.
async fn perform<R: ClientRuntime>(
    io: Io<'_, R::Stream>,
    file: &mut Option<R::File>,
) -> IoInput<R::Stream> {
    let result = match io {
        Io::Connect {
            host,
            port,
            deadline,
        } => R::connect(host, port, deadline)
            .await
            .map(IoInput::Connected),
        Io::Write {
            stream,
            bytes,
            deadline,
        } => (R::write(stream, &bytes, deadline).await).map(|()| IoInput::Written),
        Io::Read {
            stream,
            buf,
            deadline,
        } => R::read(stream, buf, deadline).await.map(IoInput::Read),
        Io::OpenFile { path } => R::open(path).await.map(|opened| {
            *file = Some(opened);
            IoInput::FileOpened
        }),
        Io::ReadFile { buf } => match file {
            Some(open) => R::read_file(open, buf).await.map(IoInput::FileRead),
            None => Err(io::Error::other("no open file")),
        },
    };
    match result {
        Ok(input) => input,
        Err(error)
            if matches!(
                error.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) =>
        {
            IoInput::TimedOut
        }
        Err(error) => IoInput::Failed(error),
    }
}

/// Runs `request` on `client` to its end: the core's call, `R`'s IO and timers.
pub(crate) async fn run_call<R: ClientRuntime, T: Send + 'static>(
    client: RestClient<R>,
    request: RestRequest<T>,
) -> Result<Response<T>, RestError> {
    let mut call = client.client().call(request);
    let mut file = None;
    loop {
        let input = match call.poll_output(R::now()) {
            Output::Io(io) => Input::Io(perform::<R>(io, &mut file).await),
            Output::Sleep {
                until,
                wake_after: None,
            } => {
                R::sleep_until(until).await;
                Input::Woke
            }
            Output::Sleep {
                until,
                wake_after: Some(version),
            } => {
                if let Some(wake) = client.changes().listen_after(version) {
                    R::wait(wake, Some(until)).await;
                }
                Input::Woke
            }
            Output::Notify(version) => {
                client.changes().announce(version);
                continue;
            }
            Output::Done(result) => return result,
        };
        call.handle_input(R::now(), input);
    }
}

/// A rate-limited Discord REST client: rate limits, retries, the keep-alive pool, TLS,
/// the proxy and every deadline are decided by the core's [`Client`]; the runtime `R`
/// runs them. Cheap to clone; clones share the rate limiter and the pool. Each
/// adapter names it `rest::RestClient`.
pub struct RestClient<R: ClientRuntime> {
    client: Arc<Client<R::Stream>>,
    runtime: PhantomData<fn() -> R>,
}

impl<R: ClientRuntime> Clone for RestClient<R> {
    fn clone(&self) -> Self {
        Self {
            client: Arc::clone(&self.client),
            runtime: PhantomData,
        }
    }
}

impl<R: ClientRuntime> fmt::Debug for RestClient<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.client.fmt(f)
    }
}

impl<R: ClientRuntime> RestClient<R> {
    /// A client for `config` over a transport with `settings` and `proxy`.
    ///
    /// # Errors
    /// [`TransportSetupError`] when TLS cannot be configured.
    pub fn new(
        config: RestConfig,
        settings: HttpSettings,
        proxy: Option<ProxySettings>,
    ) -> Result<Self, TransportSetupError> {
        let client = Arc::new(Client::new(config, settings, proxy)?);
        Ok(Self {
            client,
            runtime: PhantomData,
        })
    }

    /// The sans-IO client (rate limiter, pool, calls).
    #[must_use]
    pub fn client(&self) -> &Arc<Client<R::Stream>> {
        &self.client
    }

    /// What wakes this client's rate-limit waits.
    #[must_use]
    pub fn changes(&self) -> &Changes {
        self.client.changes()
    }

    /// The configuration.
    #[must_use]
    pub fn rest(&self) -> &Rest {
        self.client.rest()
    }

    /// The transport's settings and proxy.
    #[must_use]
    pub fn transport(&self) -> &Transport {
        self.client.transport()
    }

    /// Idle connections currently pooled (all hosts).
    #[must_use]
    pub fn idle_connections(&self) -> usize {
        self.client.idle_connections()
    }

    /// Closes every idle connection.
    pub fn clear_idle(&self) {
        self.client.clear_idle();
    }

    /// Runs `f` with the rate limiter locked (never across an await).
    pub fn with_limiter<T>(&self, f: impl FnOnce(&mut RateLimiter) -> T) -> T {
        self.client.with_limiter(f)
    }

    /// Sends `request`, waiting out rate limits and retrying as the core decides; a
    /// future to await on smol and tokio, the result itself on std threads.
    ///
    /// # Errors
    /// [`RestError`] as decided by [`Call`](super::Call).
    pub fn call<T: Send + 'static>(
        &self,
        request: RestRequest<T>,
    ) -> R::Output<Result<Response<T>, RestError>> {
        R::run(run_call(self.clone(), request))
    }

    /// Any route by method and path, still rate limited; the answer decodes to JSON.
    /// For what the typed requests ([`Interaction`](super::Interaction),
    /// [`Commands`](super::Commands)) do not cover.
    ///
    /// # Errors
    /// [`RequestError::InvalidPath`] for a path that is not a Discord route, otherwise
    /// as [`RestClient::call`].
    pub fn request(
        &self,
        method: Method,
        path: &str,
        body: RequestBody,
    ) -> R::Output<Result<Response<serde_json::Value>, RequestError>> {
        let client = self.clone();
        let route = Route::custom(method, path);
        R::run(async move {
            let request = RestRequest::new(route.map_err(RequestError::InvalidPath)?, body);
            run_call(client, request).await.map_err(RequestError::Rest)
        })
    }
}

/// What [`RestClient::sync_commands`] did.
#[derive(Debug)]
pub enum SyncOutcome {
    /// Discord's commands already were the desired ones: nothing was sent.
    UpToDate,
    /// The commands were overwritten in bulk.
    Overwritten {
        /// What differed, by command.
        changes: Vec<CommandChange>,
        /// The commands Discord stored (with their ids).
        stored: Vec<twilight_model::application::command::Command>,
    },
}

impl<R: ClientRuntime> RestClient<R> {
    /// Makes `commands`' set (global or a guild's) equal to `desired`: fetches the
    /// current set, compares ([`Commands::plan_sync`]) and sends the bulk overwrite only
    /// when something differs. Check a file first with
    /// [`parse_commands`](super::parse_commands).
    ///
    /// # Errors
    /// [`RestError`] of the list or the overwrite.
    pub fn sync_commands(
        &self,
        commands: Commands,
        desired: Vec<twilight_model::application::command::Command>,
    ) -> R::Output<Result<SyncOutcome, RestError>> {
        R::run(run_sync(self.clone(), commands, desired))
    }
}

/// Fetches `commands`' current set and overwrites it with `desired` when they differ.
pub(crate) async fn run_sync<R: ClientRuntime>(
    client: RestClient<R>,
    commands: Commands,
    desired: Vec<twilight_model::application::command::Command>,
) -> Result<SyncOutcome, RestError> {
    let current = run_call(client.clone(), commands.list_with_localizations())
        .await?
        .model()?;
    let plan = commands
        .plan_sync(&current, &desired)
        .map_err(|error| RestError::Decode {
            route: commands.list().route().key().clone(),
            message: format!("cannot encode the commands: {error}"),
        })?;
    match plan {
        CommandSync::UpToDate => Ok(SyncOutcome::UpToDate),
        CommandSync::Overwrite { changes, request } => {
            let stored = run_call(client, request).await?.model()?;
            Ok(SyncOutcome::Overwritten { changes, stored })
        }
    }
}

/// A server's REST client for replies and how it routes them (see
/// [`crate::deferral`]); without a client (the default) every reply is the HTTP answer.
pub struct RestReplies<R: ClientRuntime> {
    rest: Option<(RestClient<R>, ReplyRouting)>,
}

impl<R: ClientRuntime> Default for RestReplies<R> {
    fn default() -> Self {
        Self { rest: None }
    }
}

impl<R: ClientRuntime> Clone for RestReplies<R> {
    fn clone(&self) -> Self {
        Self {
            rest: self.rest.clone(),
        }
    }
}

impl<R: ClientRuntime> fmt::Debug for RestReplies<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestReplies")
            .field("routing", &self.routing())
            .finish_non_exhaustive()
    }
}

impl<R: ClientRuntime> RestReplies<R> {
    /// Replies through `client` as `routing` says.
    #[must_use]
    pub fn new(client: RestClient<R>, routing: ReplyRouting) -> Self {
        Self {
            rest: Some((client, routing)),
        }
    }

    /// The routing in force: [`ReplyRouting::disabled`] without a client.
    #[must_use]
    pub fn routing(&self) -> ReplyRouting {
        self.rest
            .as_ref()
            .map_or(ReplyRouting::disabled(), |(_, routing)| *routing)
    }

    /// The delivery of `reply` (its requests in order, then its `after` work; see
    /// [`RestReply::deliver`]) for the adapter to spawn; `None`, with an error logged,
    /// without a client (a session only routes replies to REST when given one).
    #[must_use]
    pub fn deliver(&self, reply: RestReply) -> Option<impl Future<Output = ()> + Send + 'static> {
        let Some((client, _)) = &self.rest else {
            tracing::error!("a reply went to REST without a REST client");
            return None;
        };
        let client = client.clone();
        Some(async move {
            let client = &client;
            reply
                .deliver(|request| async move { run_call(client.clone(), request).await.map(drop) })
                .await;
        })
    }
}

/// What every adapter's `rest` module re-exports beside its `RestClient`: the
/// transport's settings and the call's answer and errors.
pub mod prelude {
    pub use crate::http1::client::ClientLimits;
    pub use crate::rest::transport::{
        HttpSettings, InvalidProxy, ProxySettings, Timeouts, TlsVerification, Transport, rustls,
    };
    pub use crate::rest::{RequestError, Response, TransportSetupError};
}
