//! The REST client on std threads: [`yuyo_core::rest::client`] (rate limits, retries,
//! the pool, TLS, the proxy `CONNECT`, every deadline) driven over blocking `std::net`
//! sockets (socket timeouts set from the core's deadlines) and `std::fs` files. This
//! module only connects, reads, writes, sleeps and wakes.
//!
//! ```no_run
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use yuyo_core::rest::{RestConfig, RestRequest};
//! use yuyo_blocking::rest::{HttpSettings, RestClient};
//! let config = RestConfig::builder().token("…").build()?;
//! let client = RestClient::new(config, HttpSettings::default(), None)?;
//! let application = client.call(RestRequest::fetch_application())?.model()?;
//! # drop(application);
//! # Ok(())
//! # }
//! ```

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use yuyo_core::rest::bot::{Bot, LifecycleError, Operation};
use yuyo_core::rest::client::{Input, Output, PooledStream};
use yuyo_core::rest::runtime::{Announcer, ClientRuntime};
use yuyo_core::rest::transport::{Input as IoInput, Io};
use yuyo_core::rest::{RestError, RestRequest};

pub use yuyo_core::http1::client::ClientLimits;
pub use yuyo_core::rest::transport::{
    HttpSettings, InvalidProxy, ProxySettings, Timeouts, TlsVerification, Transport, rustls,
};
pub use yuyo_core::rest::{RequestError, Response, TransportSetupError};

/// A rate-limited Discord REST client on std threads (see
/// [`yuyo_core::rest::RestClient`]); its calls block. Cheap to clone; clones share the
/// rate limiter and the pool.
pub type RestClient = yuyo_core::rest::RestClient<Blocking>;

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

/// The std-threads runtime of the client path: [`RestClient`] and
/// [`Bot`](crate::bot::Bot) calls run on the calling thread.
#[derive(Debug, Clone, Copy)]
pub struct Blocking;

/// The latest version announced, signalled when it grows.
#[derive(Debug, Default)]
pub struct Changes {
    latest: Mutex<u64>,
    changed: Condvar,
}

impl Announcer for Changes {
    fn announce(&self, version: u64) {
        let mut latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        if version > *latest {
            *latest = version;
            self.changed.notify_all();
        }
    }
}

impl Changes {
    /// Until a version newer than `version` is announced, or `deadline` passed.
    pub(crate) fn after(&self, version: u64, deadline: Option<Instant>) {
        let mut latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        while *latest <= version {
            latest = match deadline.map(remaining) {
                None => self
                    .changed
                    .wait(latest)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(Some(left)) => {
                    let waited = self.changed.wait_timeout(latest, left);
                    waited.unwrap_or_else(PoisonError::into_inner).0
                }
                Some(None) => return,
            };
        }
    }
}

impl ClientRuntime for Blocking {
    type Stream = Connection;
    type Announcer = Changes;
    type Output<T: Send + 'static> = T;
    type Executor = std::convert::Infallible;
    type Server = crate::Server;

    fn call<T: Send + 'static>(
        client: RestClient,
        request: RestRequest<T>,
    ) -> Result<Response<T>, RestError> {
        let mut call = client.client().call(request);
        let mut file = None;
        loop {
            let input = match call.poll_output(Instant::now()) {
                Output::Io(io) => Input::Io(perform(io, &mut file)),
                Output::Sleep { until, wake_after } => {
                    match wake_after {
                        Some(version) => client.changes().after(version, Some(until)),
                        None => std::thread::sleep(remaining(until).unwrap_or_default()),
                    }
                    Input::Woke
                }
                Output::Notify(version) => {
                    client.changes().announce(version);
                    continue;
                }
                Output::Done(result) => return result,
            };
            call.handle_input(Instant::now(), input);
        }
    }

    fn drive(bot: Bot<Self>, operation: Operation) -> Result<(), LifecycleError> {
        crate::bot::drive(&bot, operation)
    }

    fn server(bot: Bot<Self>) -> Result<crate::Server, LifecycleError> {
        crate::bot::server(&bot)
    }

    fn ready<T: Send + 'static>(value: T) -> T {
        value
    }

    fn map<T: Send + 'static, U: Send + 'static>(
        output: T,
        f: impl FnOnce(T) -> U + Send + 'static,
    ) -> U {
        f(output)
    }
}
