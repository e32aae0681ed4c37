//! The REST client on smol: [`yuyo_core::rest::client`] (rate limits, retries, the
//! pool, TLS, the proxy `CONNECT`, every deadline) driven over blocking `std::net` sockets
//! (socket timeouts set from the core's deadlines) and `std::fs` files. This module only connects, reads, writes, sleeps and wakes.
//!
//! ```no_run
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use yuyo_core::rest::{RestConfig, RestRequest};
//! use yuyo_smol::rest::{HttpSettings, RestClient};
//! let config = RestConfig::builder().token("…").build()?;
//! let client = RestClient::new(config, HttpSettings::default(), None)?;
//! let application = client.call(RestRequest::fetch_application())?.model()?;
//! # drop(application);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use http::Method;
use yuyo_core::rest::client::{Client, Input, Output, PooledStream};
use yuyo_core::rest::transport::{Input as IoInput, Io};
use yuyo_core::rest::{
    RateLimiter, RequestBody, Response, Rest, RestConfig, RestError, RestRequest, Route,
};

pub use yuyo_core::http1::client::ClientLimits;
pub use yuyo_core::rest::transport::{
    HttpSettings, InvalidProxy, ProxySettings, Timeouts, TlsVerification, Transport, rustls,
};
pub use yuyo_core::rest::{RequestError, TransportSetupError};

/// A TCP connection of the client (TLS, when used, lives in the core).
#[derive(Debug)]
pub struct Connection(TcpStream);

impl PooledStream for Connection {
    fn is_reusable(&self) -> bool {
        if self.0.set_nonblocking(true).is_err() {
            return false;
        }
        let idle = matches!(
            self.0.peek(&mut [0_u8; 1]),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock
        );
        self.0.set_nonblocking(false).is_ok() && idle
    }
}

/// Time left until `deadline`, `None` once it passed.
fn remaining(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|left| !left.is_zero())
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A TCP connection to `host:port`, trying each address until `deadline`.
fn connect(host: &str, port: u16, deadline: Instant) -> io::Result<TcpStream> {
    let mut last = io::Error::other("no address");
    for addr in (host, port).to_socket_addrs()? {
        let left = remaining(deadline).ok_or(io::ErrorKind::TimedOut)?;
        match TcpStream::connect_timeout(&addr, left) {
            Ok(tcp) => return Ok(tcp),
            Err(error) => last = error,
        }
    }
    Err(last)
}

/// Sets `tcp`'s timeouts to the time left until `deadline`.
fn limit(tcp: &TcpStream, deadline: Instant) -> io::Result<()> {
    let left = remaining(deadline).ok_or(io::ErrorKind::TimedOut)?;
    tcp.set_read_timeout(Some(left))?;
    tcp.set_write_timeout(Some(left))
}

/// Performs one IO the core asked for.
fn perform(io: Io<'_, Connection>, file: &mut Option<std::fs::File>) -> IoInput<Connection> {
    let result = match io {
        Io::Connect {
            host,
            port,
            deadline,
        } => connect(host, port, deadline).map(|tcp| {
            let _ = tcp.set_nodelay(true);
            IoInput::Connected(Connection(tcp))
        }),
        Io::Write {
            stream,
            bytes,
            deadline,
        } => limit(&stream.0, deadline)
            .and_then(|()| stream.0.write_all(&bytes))
            .map(|()| IoInput::Written),
        Io::Read {
            stream,
            buf,
            deadline,
        } => limit(&stream.0, deadline)
            .and_then(|()| stream.0.read(buf))
            .map(IoInput::Read),
        Io::OpenFile { path } => std::fs::File::open(path).map(|opened| {
            *file = Some(opened);
            IoInput::FileOpened
        }),
        Io::ReadFile { buf } => match file {
            Some(open) => open.read(buf).map(IoInput::FileRead),
            None => Err(io::Error::other("no open file")),
        },
    };
    match result {
        Ok(input) => input,
        Err(error) if is_timeout(&error) => IoInput::TimedOut,
        Err(error) => IoInput::Failed(error),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Shared {
    client: Arc<Client<Connection>>,
    /// The highest limiter version announced.
    latest: Mutex<u64>,
    /// Signalled when `latest` grows (wakes waits on rate limits).
    changed: Condvar,
}

/// A rate-limited Discord REST client on std threads. Cheap to clone; clones share the
/// rate limiter and the connection pool.
#[derive(Clone)]
pub struct RestClient {
    shared: Arc<Shared>,
}

impl fmt::Debug for RestClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.client.fmt(f)
    }
}

impl RestClient {
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
            shared: Arc::new(Shared {
                client,
                latest: Mutex::new(0),
                changed: Condvar::new(),
            }),
        })
    }

    /// The sans-IO client (configuration).
    #[must_use]
    pub fn rest(&self) -> &Rest {
        self.shared.client.rest()
    }

    /// The transport's settings and proxy.
    #[must_use]
    pub fn transport(&self) -> &Transport {
        self.shared.client.transport()
    }

    /// Idle connections currently pooled (all hosts).
    #[must_use]
    pub fn idle_connections(&self) -> usize {
        self.shared.client.idle_connections()
    }

    /// Closes every idle connection.
    pub fn clear_idle(&self) {
        self.shared.client.clear_idle();
    }

    /// Runs `f` with the rate limiter locked.
    pub fn with_limiter<R>(&self, f: impl FnOnce(&mut RateLimiter) -> R) -> R {
        self.shared.client.with_limiter(f)
    }

    /// Sends `request`, waiting out rate limits and retrying as the core decides; blocks
    /// the calling thread.
    ///
    /// # Errors
    /// [`RestError`] as decided by [`yuyo_core::rest::Call`].
    pub fn call<T>(&self, request: RestRequest<T>) -> Result<Response<T>, RestError> {
        let mut call = self.shared.client.call(request);
        let mut file = None;
        loop {
            let input = match call.poll_output(Instant::now()) {
                Output::Io(io) => Input::Io(perform(io, &mut file)),
                Output::Sleep { until, wake_after } => {
                    self.sleep(until, wake_after);
                    Input::Woke
                }
                Output::Notify(version) => {
                    let mut latest = lock(&self.shared.latest);
                    if version > *latest {
                        *latest = version;
                        self.shared.changed.notify_all();
                    }
                    continue;
                }
                Output::Done(result) => return result,
            };
            call.handle_input(Instant::now(), input);
        }
    }

    /// Until `until`, or until another call announced a version above `wake_after`.
    fn sleep(&self, until: Instant, wake_after: Option<u64>) {
        let mut latest = lock(&self.shared.latest);
        while wake_after.is_none_or(|version| *latest <= version) {
            let Some(left) = remaining(until) else {
                return;
            };
            latest = self
                .shared
                .changed
                .wait_timeout(latest, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// The generic `request(method, path, body)`: any route, still rate limited. The
    /// answer decodes to JSON.
    ///
    /// # Errors
    /// [`RequestError::InvalidPath`] for a path that is not a Discord route, otherwise
    /// as [`RestClient::call`].
    pub fn request(
        &self,
        method: Method,
        path: &str,
        body: RequestBody,
    ) -> Result<Response<serde_json::Value>, RequestError> {
        let route = Route::custom(method, path).map_err(RequestError::InvalidPath)?;
        self.call(RestRequest::new(route, body))
            
            .map_err(RequestError::Rest)
    }
}
