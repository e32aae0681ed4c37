//! A mock Discord REST server and an HTTP `CONNECT` proxy for the adapters' REST and
//! bot tests: std threads on 127.0.0.1, scripted answers, every request recorded.
//!
//! The mock answers requests in order from its script (`200 {}` once it is empty); a
//! [`Reply`] can also be delayed (a slow Discord) or drop the connection unanswered.
//! [`MockDiscord::start_with`] wraps each accepted socket first (e.g. in a TLS
//! session), so the same mock serves `https`. [`MockDiscord::wait_for`] waits (bounded)
//! for requests sent in the background, such as late replies.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// How long a mock connection waits for the client before giving up (threads end).
const IDLE: Duration = Duration::from_secs(30);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One scripted answer.
#[derive(Clone, Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Extra header fields.
    pub headers: Vec<(String, String)>,
    /// Body (sent with `Content-Length`, as JSON).
    pub body: String,
    /// Wait this long before answering (a slow Discord).
    pub delay: Option<Duration>,
    /// Close the connection without answering.
    pub drop: bool,
}

impl Reply {
    /// `200` with `body`.
    #[must_use]
    pub fn ok(body: &str) -> Self {
        Self {
            status: 200,
            headers: Vec::new(),
            body: body.to_owned(),
            delay: None,
            drop: false,
        }
    }

    /// `status` with `body`.
    #[must_use]
    pub fn status(status: u16, body: &str) -> Self {
        Self {
            status,
            ..Self::ok(body)
        }
    }

    /// Adds a header field.
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Answers only after `delay`.
    #[must_use]
    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Closes the connection unanswered.
    #[must_use]
    pub fn dropped() -> Self {
        Self {
            drop: true,
            ..Self::ok("")
        }
    }
}

/// A request the mock (or the proxy) received.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Method.
    pub method: String,
    /// Request target (the path, or `host:port` for `CONNECT`).
    pub path: String,
    /// Header fields, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Body (`Content-Length` framed, or chunked and then de-chunked).
    pub body: Vec<u8>,
    /// When it was complete.
    pub at: Instant,
}

impl Recorded {
    /// The first value of header `name`.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The mock Discord REST server; clones share the script and the log.
#[derive(Clone, Debug, Default)]
pub struct MockDiscord {
    script: Arc<Mutex<VecDeque<Reply>>>,
    log: Arc<Mutex<Vec<Recorded>>>,
    /// Notified on every request logged, for [`MockDiscord::wait_for`].
    arrived: Arc<Condvar>,
}

impl MockDiscord {
    /// A mock with an empty script.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues the answer to the next request.
    pub fn push(&self, reply: Reply) {
        lock(&self.script).push_back(reply);
    }

    /// The requests received so far.
    #[must_use]
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.log).clone()
    }

    /// Waits until at least `n` requests have arrived, then returns them all; `None`
    /// when `timeout` passes first.
    #[must_use]
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Option<Vec<Recorded>> {
        let log = lock(&self.log);
        let (log, _) = self
            .arrived
            .wait_timeout_while(log, timeout, |log| log.len() < n)
            .unwrap_or_else(PoisonError::into_inner);
        (log.len() >= n).then(|| log.clone())
    }

    /// Listens on 127.0.0.1 and returns the REST base URL (`http://…/api/v10`).
    ///
    /// # Errors
    /// When no port can be bound.
    pub fn start(&self) -> io::Result<String> {
        let addr = self.start_with(Some)?;
        Ok(format!("http://{addr}/api/v10"))
    }

    /// Listens on 127.0.0.1, wrapping each connection with `wrap` (`None`: drop it)
    /// before serving it; returns the address.
    ///
    /// # Errors
    /// When no port can be bound.
    pub fn start_with<S, F>(&self, wrap: F) -> io::Result<SocketAddr>
    where
        S: Read + Write + 'static,
        F: Fn(TcpStream) -> Option<S> + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let mock = self.clone();
        let wrap = Arc::new(wrap);
        thread::Builder::new()
            .name("mock-discord".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    let _ = stream.set_read_timeout(Some(IDLE));
                    let mock = mock.clone();
                    let wrap = Arc::clone(&wrap);
                    let _ = thread::Builder::new()
                        .name("mock-discord-conn".into())
                        .spawn(move || {
                            if let Some(stream) = wrap(stream) {
                                mock.serve(stream);
                            }
                        });
                }
            })?;
        Ok(addr)
    }

    /// Serves requests on one connection until it closes or a reply drops it.
    pub fn serve<S: Read + Write>(&self, mut stream: S) {
        let mut buf = Vec::new();
        while let Some(request) = read_request(&mut stream, &mut buf) {
            lock(&self.log).push(request);
            self.arrived.notify_all();
            let reply = lock(&self.script)
                .pop_front()
                .unwrap_or_else(|| Reply::ok("{}"));
            if let Some(delay) = reply.delay {
                // The scripted peer is slow: this is the behaviour under test.
                thread::sleep(delay);
            }
            if reply.drop {
                return;
            }
            let mut out = format!(
                "HTTP/1.1 {} X\r\ncontent-length: {}\r\ncontent-type: application/json\r\n",
                reply.status,
                reply.body.len()
            );
            for (name, value) in &reply.headers {
                out.push_str(&format!("{name}: {value}\r\n"));
            }
            out.push_str("\r\n");
            out.push_str(&reply.body);
            if stream.write_all(out.as_bytes()).is_err() || stream.flush().is_err() {
                return;
            }
        }
    }
}

/// Reads more of `stream` into `buf`; `None` at EOF or on an error.
fn fill<S: Read>(stream: &mut S, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0_u8; 16 * 1024];
    let n = stream.read(&mut chunk).ok()?;
    if n == 0 {
        return None;
    }
    buf.extend_from_slice(&chunk[..n]);
    Some(())
}

/// Reads a chunked body (after the head) and returns it de-chunked.
fn read_chunked<S: Read>(stream: &mut S, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(pos) = buf.windows(2).position(|w| w == b"\r\n") {
                break pos;
            }
            fill(stream, buf)?;
        };
        let size = usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).ok()?, 16).ok()?;
        buf.drain(..line_end + 2);
        while buf.len() < size + 2 {
            fill(stream, buf)?;
        }
        body.extend(buf.drain(..size));
        buf.drain(..2);
        if size == 0 {
            return Some(body);
        }
    }
}

/// Reads one request, its body `Content-Length` framed or chunked; `None` at EOF or on
/// a bad request.
pub fn read_request<S: Read>(stream: &mut S, buf: &mut Vec<u8>) -> Option<Recorded> {
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        fill(stream, buf)?;
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let path = first.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    buf.drain(..head_end);
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        read_chunked(stream, buf)?
    } else {
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < len {
            fill(stream, buf)?;
        }
        buf.drain(..len).collect()
    };
    Some(Recorded {
        method,
        path,
        headers,
        body,
        at: Instant::now(),
    })
}

/// An HTTP `CONNECT` proxy on 127.0.0.1 that records each `CONNECT` and then relays
/// bytes both ways.
#[derive(Debug)]
pub struct ConnectProxy {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Recorded>>>,
}

impl ConnectProxy {
    /// Starts the proxy.
    ///
    /// # Errors
    /// When no port can be bound.
    pub fn start() -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&log);
        thread::Builder::new()
            .name("mock-proxy".into())
            .spawn(move || {
                for client in listener.incoming() {
                    let Ok(client) = client else { continue };
                    let seen = Arc::clone(&seen);
                    let _ = thread::Builder::new()
                        .name("mock-proxy-conn".into())
                        .spawn(move || tunnel(client, &seen));
                }
            })?;
        Ok(Self { addr, log })
    }

    /// The proxy's address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `CONNECT` requests received.
    #[must_use]
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.log).clone()
    }
}

fn tunnel(mut client: TcpStream, log: &Mutex<Vec<Recorded>>) {
    let _ = client.set_read_timeout(Some(IDLE));
    let mut buf = Vec::new();
    let Some(request) = read_request(&mut client, &mut buf) else {
        return;
    };
    let target = request.path.clone();
    lock(log).push(request);
    // Only loopback targets: this proxy never reaches out.
    let upstream = target
        .parse::<SocketAddr>()
        .ok()
        .filter(|addr| addr.ip().is_loopback())
        .and_then(|addr| TcpStream::connect(addr).ok());
    let Some(mut upstream) = upstream else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n");
        return;
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .is_err()
    {
        return;
    }
    let _ = upstream.set_read_timeout(Some(IDLE));
    let (Ok(mut client_in), Ok(mut upstream_out)) = (client.try_clone(), upstream.try_clone())
    else {
        return;
    };
    let forward = thread::spawn(move || {
        let _ = io::copy(&mut client_in, &mut upstream_out);
        let _ = upstream_out.shutdown(Shutdown::Write);
    });
    let _ = io::copy(&mut upstream, &mut client);
    let _ = client.shutdown(Shutdown::Write);
    let _ = forward.join();
}
