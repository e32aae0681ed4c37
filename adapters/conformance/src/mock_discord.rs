//! A mock Discord REST server and an HTTP `CONNECT` proxy for the adapters' REST and
//! bot tests: std threads on 127.0.0.1, scripted answers, every request recorded.
//!
//! The mock answers requests in order from its script (`200 {}` once it is empty); a
//! [`Reply`] can also be delayed (a slow Discord) or drop the connection unanswered.
//! [`MockDiscord::start_with`] wraps each accepted socket first (e.g. in a TLS
//! session), so the same mock serves `https`. [`MockDiscord::wait_for`] waits (bounded)
//! for requests sent in the background, such as late replies.
//!
//! On top of the script, [`MockDiscord::with_rate_limits`] makes the mock enforce
//! Discord's rate limits as a model ([`RateLimits`]): per-route buckets (sliding or
//! fixed windows, per top-level resource) and the global limit, both counted at
//! arrival (once a request's head and body are read). A request the model refuses is
//! answered with Discord's 429 (the script is not consumed) and recorded
//! ([`MockDiscord::refusals`], [`MockDiscord::overruns`]); one it admits gets the
//! script's answer plus the bucket's `X-RateLimit-*` headers.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

pub use crate::mock_validation::Validation;
use crate::mock_validation::validate;

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

/// The mock Discord REST server; clones share the script, the log and the rate-limit
/// model.
#[derive(Clone, Debug, Default)]
pub struct MockDiscord {
    script: Arc<Mutex<VecDeque<Reply>>>,
    log: Arc<Mutex<Vec<Recorded>>>,
    /// Notified on every request logged, for [`MockDiscord::wait_for`].
    arrived: Arc<Condvar>,
    /// The rate limits enforced, if any, their state and the 429s sent.
    model: Arc<Mutex<Model>>,
    /// How `PATCH /applications/@me` URLs are validated, if they are.
    validation: Arc<Mutex<Option<Validation>>>,
    /// Why validations failed, in order.
    validation_failures: Arc<Mutex<Vec<String>>>,
}

impl MockDiscord {
    /// A mock with an empty script.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Enforces `limits` from now on (replacing any earlier ones and their state); clones
    /// share them.
    #[must_use]
    pub fn with_rate_limits(self, limits: RateLimits) -> Self {
        *lock(&self.model) = Model {
            limits: Some(limits),
            ..Model::default()
        };
        self
    }

    /// Validates the URLs set through `PATCH /applications/@me` as Discord does, with
    /// `validation` (the script is not consumed by those requests): a signed PING and a
    /// badly signed one to each URL, answered 200 with the application JSON when both
    /// get the right answer in time, 400 with Discord's error (code 50035, the field's
    /// `_errors`) otherwise.
    #[must_use]
    pub fn with_validation(self, validation: Validation) -> Self {
        *lock(&self.validation) = Some(validation);
        self
    }

    /// What each failed validation saw, in order.
    #[must_use]
    pub fn validation_failures(&self) -> Vec<String> {
        lock(&self.validation_failures).clone()
    }

    /// Every 429 the rate-limit model sent, in order.
    #[must_use]
    pub fn refusals(&self) -> Vec<Refusal> {
        lock(&self.model).refusals.clone()
    }

    /// How many 429s the rate-limit model sent, by kind.
    #[must_use]
    pub fn overruns(&self) -> Overruns {
        let model = lock(&self.model);
        let global = model.refusals.iter().filter(|r| r.global).count();
        Overruns {
            route: model.refusals.len() - global,
            global,
        }
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
            let validation = lock(&self.validation).clone().filter(|_| {
                request.method == "PATCH" && request.path.ends_with("/applications/@me")
            });
            let verdict = match validation {
                Some(validation) => {
                    let mut failures = Vec::new();
                    let reply = validate(&validation, &request.body, &mut failures);
                    lock(&self.validation_failures).extend(failures);
                    Verdict::Refused(reply)
                }
                None => lock(&self.model).admit(&request),
            };
            lock(&self.log).push(request);
            self.arrived.notify_all();
            let reply = match verdict {
                Verdict::Refused(reply) => reply,
                Verdict::Admitted(headers) => {
                    let mut reply = lock(&self.script)
                        .pop_front()
                        .unwrap_or_else(|| Reply::ok("{}"));
                    reply.headers.extend(headers);
                    reply
                }
            };
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

// ---------------------------------------------------------------------------------------
// Rate limits

/// How a bucket's window moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// At most `limit` requests in any span of `per` (Discord's usual behaviour).
    Sliding,
    /// The first request opens a window of `per`; all of it resets at its end.
    Fixed,
}

/// A per-route bucket: at most `limit` requests per `per`, counted separately for each
/// top-level resource (channel, guild, webhook or interaction with its token).
#[derive(Clone, Debug)]
pub struct RouteLimit {
    /// `X-RateLimit-Bucket`; routes given the same name share their counts.
    pub bucket: String,
    /// `X-RateLimit-Limit`.
    pub limit: u32,
    /// The window's length.
    pub per: Duration,
    /// Sliding or fixed.
    pub window: Window,
}

impl RouteLimit {
    /// A sliding bucket named `bucket`: at most `limit` in any span of `per`.
    #[must_use]
    pub fn sliding(bucket: &str, limit: u32, per: Duration) -> Self {
        Self {
            bucket: bucket.to_owned(),
            limit,
            per,
            window: Window::Sliding,
        }
    }

    /// A fixed-window bucket named `bucket`: `limit` per window of `per` opened by its
    /// first request.
    #[must_use]
    pub fn fixed(bucket: &str, limit: u32, per: Duration) -> Self {
        Self {
            window: Window::Fixed,
            ..Self::sliding(bucket, limit, per)
        }
    }
}

/// Discord's rate limits as the mock enforces them (see the module docs): buckets by
/// route template and a global limit.
///
/// A route is named by its method and template, the path after `/api/v10` without the
/// query, its ids replaced as `yuyo-core` names them: `{channel_id}`, `{guild_id}`,
/// `{webhook_id}/{webhook_token}`, `{interaction_id}/{interaction_token}` for the
/// top-level resource, `{id}` for other numbers (e.g.
/// `POST /webhooks/{webhook_id}/{webhook_token}`). Routes without a bucket answer
/// without `X-RateLimit-*` headers.
#[derive(Clone, Debug, Default)]
pub struct RateLimits {
    routes: Vec<(String, String, RouteLimit)>,
    global: Option<u32>,
}

impl RateLimits {
    /// No limits yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Limits route `method template` by `limit`.
    #[must_use]
    pub fn route(mut self, method: &str, template: &str, limit: RouteLimit) -> Self {
        self.routes
            .push((method.to_ascii_uppercase(), template.to_owned(), limit));
        self
    }

    /// At most `per_second` authenticated requests (those with `Authorization`, as
    /// Discord counts a bot's global limit) arrive in any span of one second.
    #[must_use]
    pub fn global(mut self, per_second: u32) -> Self {
        self.global = Some(per_second);
        self
    }

    fn limit_of(&self, method: &str, template: &str) -> Option<&RouteLimit> {
        self.routes
            .iter()
            .find(|(m, t, _)| m == method && t == template)
            .map(|(_, _, limit)| limit)
    }
}

/// A 429 the rate-limit model sent.
#[derive(Clone, Debug)]
pub struct Refusal {
    /// The request's method.
    pub method: String,
    /// The request's path.
    pub path: String,
    /// Whether the global limit refused it (else its route's bucket).
    pub global: bool,
    /// The `retry_after` sent, in seconds.
    pub retry_after: f64,
    /// When the request arrived.
    pub at: Instant,
}

/// How many 429s the rate-limit model sent, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Overruns {
    /// Route (bucket) 429s.
    pub route: usize,
    /// Global 429s.
    pub global: usize,
}

/// One bucket of one top-level resource: the arrivals it counts.
#[derive(Debug, Default)]
struct BucketState {
    /// Sliding: arrivals in the last `per`. Fixed: arrivals in the current window.
    arrivals: VecDeque<Instant>,
    /// Fixed: when the current window opened.
    opened: Option<Instant>,
}

/// The rate-limit model's configuration and state.
#[derive(Debug, Default)]
struct Model {
    limits: Option<RateLimits>,
    /// By bucket name and top-level resource.
    buckets: HashMap<(String, String), BucketState>,
    /// Global arrivals in the last second.
    global: VecDeque<Instant>,
    /// The latest arrival handled (arrivals are handled in this order).
    clock: Option<Instant>,
    refusals: Vec<Refusal>,
}

enum Verdict {
    /// Answer from the script, with these headers added.
    Admitted(Vec<(String, String)>),
    /// Answer this 429.
    Refused(Reply),
}

/// Seconds, rounded up to the millisecond, as Discord writes them.
fn secs(duration: Duration) -> f64 {
    let millis = duration.as_nanos().div_ceil(1_000_000);
    #[allow(clippy::cast_precision_loss)]
    let millis = millis as f64;
    millis / 1000.0
}

fn too_many(retry_after: f64, global: bool) -> Reply {
    let body = format!(
        r#"{{"message":"You are being rate limited.","retry_after":{retry_after:.3},"global":{global}}}"#
    );
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let whole = retry_after.ceil() as u64;
    Reply::status(429, &body).header("retry-after", &whole.to_string())
}

impl Model {
    /// Counts `request` (or refuses it) at its arrival.
    fn admit(&mut self, request: &Recorded) -> Verdict {
        let Some(limits) = &self.limits else {
            return Verdict::Admitted(Vec::new());
        };
        let (template, major) = route_of(&request.path);
        let route = limits.limit_of(&request.method, &template).cloned();
        let global = limits.global;
        // Connections are served on threads of their own: handle arrivals in one
        // order of time.
        let now = self.clock.map_or(request.at, |clock| clock.max(request.at));
        self.clock = Some(now);

        if let Some(global) = global
            && request.header("authorization").is_some()
        {
            while self
                .global
                .front()
                .is_some_and(|at| now.duration_since(*at) >= Duration::from_secs(1))
            {
                self.global.pop_front();
            }
            if self.global.len() >= usize::try_from(global).unwrap_or(usize::MAX) {
                let wait = self.global.front().map_or(Duration::ZERO, |oldest| {
                    (*oldest + Duration::from_secs(1)).saturating_duration_since(now)
                });
                return self.refuse(request, now, wait, None);
            }
            self.global.push_back(now);
        }

        let Some(route) = route else {
            return Verdict::Admitted(Vec::new());
        };
        let state = self
            .buckets
            .entry((route.bucket.clone(), major))
            .or_default();
        let limit = usize::try_from(route.limit).unwrap_or(usize::MAX);
        match route.window {
            Window::Sliding => {
                while state
                    .arrivals
                    .front()
                    .is_some_and(|at| now.duration_since(*at) >= route.per)
                {
                    state.arrivals.pop_front();
                }
            }
            Window::Fixed => {
                if state
                    .opened
                    .is_none_or(|opened| now.duration_since(opened) >= route.per)
                {
                    state.opened = Some(now);
                    state.arrivals.clear();
                }
            }
        }
        // When the oldest counted request leaves the window (sliding), or the window
        // ends (fixed).
        let start = match route.window {
            Window::Sliding => state.arrivals.front().copied(),
            Window::Fixed => state.opened,
        };
        if state.arrivals.len() >= limit {
            let wait = start.map_or(Duration::ZERO, |start| {
                (start + route.per).saturating_duration_since(now)
            });
            return self.refuse(request, now, wait, Some(&route));
        }
        state.arrivals.push_back(now);
        let start = start.unwrap_or(now);
        let reset_after = (start + route.per).saturating_duration_since(now);
        let remaining = limit - state.arrivals.len();
        Verdict::Admitted(vec![
            ("x-ratelimit-bucket".into(), route.bucket.clone()),
            ("x-ratelimit-limit".into(), route.limit.to_string()),
            ("x-ratelimit-remaining".into(), remaining.to_string()),
            (
                "x-ratelimit-reset-after".into(),
                format!("{:.3}", secs(reset_after)),
            ),
        ])
    }

    /// Records and builds the 429 for `request`: global, or by `route`'s bucket.
    fn refuse(
        &mut self,
        request: &Recorded,
        now: Instant,
        wait: Duration,
        route: Option<&RouteLimit>,
    ) -> Verdict {
        let retry_after = secs(wait);
        self.refusals.push(Refusal {
            method: request.method.clone(),
            path: request.path.clone(),
            global: route.is_none(),
            retry_after,
            at: now,
        });
        let reply = too_many(retry_after, route.is_none());
        Verdict::Refused(match route {
            None => reply
                .header("x-ratelimit-global", "true")
                .header("x-ratelimit-scope", "global"),
            Some(route) => reply
                .header("x-ratelimit-bucket", &route.bucket)
                .header("x-ratelimit-limit", &route.limit.to_string())
                .header("x-ratelimit-remaining", "0")
                .header("x-ratelimit-reset-after", &format!("{retry_after:.3}"))
                .header("x-ratelimit-scope", "user"),
        })
    }
}

/// A request target's route template and top-level resource (see [`RateLimits`]).
fn route_of(target: &str) -> (String, String) {
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let path = path.strip_prefix("/api/v10").unwrap_or(path);
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let top = match segments.first().copied() {
        Some("channels") => Some(("{channel_id}", None)),
        Some("guilds") => Some(("{guild_id}", None)),
        Some("webhooks") => Some(("{webhook_id}", Some("{webhook_token}"))),
        Some("interactions") => Some(("{interaction_id}", Some("{interaction_token}"))),
        _ => None,
    };
    let mut template = String::new();
    let mut major = String::new();
    for (index, segment) in segments.iter().enumerate() {
        template.push('/');
        match (index, top) {
            (1, Some((id, _))) if numeric(segment) => {
                template.push_str(id);
                major.push_str(segment);
            }
            (2, Some((_, Some(token)))) if !major.is_empty() && !segment.is_empty() => {
                template.push_str(token);
                major.push('/');
                major.push_str(segment);
            }
            _ if numeric(segment) => template.push_str("{id}"),
            _ => template.push_str(segment),
        }
    }
    (template, major)
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
pub(crate) fn read_chunked<S: Read>(stream: &mut S, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn request(method: &str, path: &str, auth: bool, at: Instant) -> Recorded {
        let headers = if auth {
            vec![("authorization".to_owned(), "Bot tok".to_owned())]
        } else {
            Vec::new()
        };
        Recorded {
            method: method.to_owned(),
            path: path.to_owned(),
            headers,
            body: Vec::new(),
            at,
        }
    }

    fn model(limits: RateLimits) -> Model {
        Model {
            limits: Some(limits),
            ..Model::default()
        }
    }

    /// `(remaining, reset_after)` when admitted, `Err(retry_after)` when refused.
    fn send(
        model: &mut Model,
        method: &str,
        path: &str,
        at: Instant,
    ) -> Result<Option<(String, String)>, f64> {
        match model.admit(&request(method, path, true, at)) {
            Verdict::Admitted(headers) => {
                let get = |name: &str| {
                    headers
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| v.clone())
                };
                Ok(get("x-ratelimit-remaining").zip(get("x-ratelimit-reset-after")))
            }
            Verdict::Refused(reply) => {
                assert_eq!(reply.status, 429);
                let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
                Err(body["retry_after"].as_f64().unwrap())
            }
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn ok(remaining: &str, reset_after: &str) -> Result<Option<(String, String)>, f64> {
        Ok(Some((remaining.to_owned(), reset_after.to_owned())))
    }

    #[test]
    fn routes_are_named_by_template_and_top_level_resource() {
        assert_eq!(
            route_of("/api/v10/webhooks/1/tok?wait=true"),
            (FOLLOWUP_T.to_owned(), "1/tok".to_owned())
        );
        assert_eq!(
            route_of("/api/v10/webhooks/1/tok/messages/@original"),
            (
                "/webhooks/{webhook_id}/{webhook_token}/messages/@original".to_owned(),
                "1/tok".to_owned()
            )
        );
        assert_eq!(
            route_of("/api/v10/channels/12/messages/34"),
            (
                "/channels/{channel_id}/messages/{id}".to_owned(),
                "12".to_owned()
            )
        );
        assert_eq!(
            route_of("/api/v10/applications/@me"),
            ("/applications/@me".to_owned(), String::new())
        );
    }

    const FOLLOWUP_T: &str = "/webhooks/{webhook_id}/{webhook_token}";

    #[test]
    fn sliding_bucket_counts_the_last_window() {
        let mut m = model(RateLimits::new().route(
            "post",
            FOLLOWUP_T,
            RouteLimit::sliding("b", 2, Duration::from_secs(1)),
        ));
        let t = Instant::now();
        let path = "/api/v10/webhooks/1/tok";
        assert_eq!(send(&mut m, "POST", path, t), ok("1", "1.000"));
        assert_eq!(send(&mut m, "POST", path, t + ms(100)), ok("0", "0.900"));
        assert_eq!(send(&mut m, "POST", path, t + ms(500)), Err(0.5));
        // Another token is another bucket; another route is unlimited.
        assert_eq!(
            send(&mut m, "POST", "/api/v10/webhooks/1/other", t + ms(500)),
            ok("1", "1.000")
        );
        assert_eq!(
            send(
                &mut m,
                "PATCH",
                "/api/v10/webhooks/1/tok/messages/@original",
                t + ms(500)
            ),
            Ok(None)
        );
        // The first arrival has left the window, the second not.
        assert_eq!(send(&mut m, "POST", path, t + ms(1000)), ok("0", "0.100"));
        assert_eq!(send(&mut m, "POST", path, t + ms(1050)), Err(0.05));
        assert_eq!(
            m.refusals.iter().map(|r| r.global).collect::<Vec<_>>(),
            vec![false, false]
        );
    }

    #[test]
    fn fixed_bucket_resets_at_the_end_of_its_window() {
        let mut m = model(RateLimits::new().route(
            "POST",
            FOLLOWUP_T,
            RouteLimit::fixed("b", 2, Duration::from_secs(1)),
        ));
        let t = Instant::now();
        let path = "/api/v10/webhooks/1/tok";
        assert_eq!(send(&mut m, "POST", path, t), ok("1", "1.000"));
        assert_eq!(send(&mut m, "POST", path, t + ms(900)), ok("0", "0.100"));
        assert_eq!(send(&mut m, "POST", path, t + ms(950)), Err(0.05));
        // A new window: a sliding one would still count the arrival at 0.9 s.
        assert_eq!(send(&mut m, "POST", path, t + ms(1000)), ok("1", "1.000"));
        assert_eq!(send(&mut m, "POST", path, t + ms(1001)), ok("0", "0.999"));
    }

    #[test]
    fn global_limit_counts_authenticated_arrivals_in_any_second() {
        let mut m = model(RateLimits::new().global(2));
        let t = Instant::now();
        let path = "/api/v10/channels/1/messages";
        assert_eq!(send(&mut m, "GET", path, t), Ok(None));
        assert_eq!(
            send(&mut m, "GET", "/api/v10/guilds/2", t + ms(100)),
            Ok(None)
        );
        let Verdict::Refused(reply) = m.admit(&request("GET", path, true, t + ms(300))) else {
            panic!("not refused");
        };
        assert!(reply.body.contains(r#""global":true"#), "{}", reply.body);
        assert!(
            reply
                .headers
                .contains(&("x-ratelimit-global".into(), "true".into()))
        );
        assert!(
            reply
                .headers
                .contains(&("x-ratelimit-scope".into(), "global".into()))
        );
        // Unauthenticated (webhook token) requests are not counted.
        assert!(matches!(
            m.admit(&request(
                "POST",
                "/api/v10/webhooks/1/t",
                false,
                t + ms(400)
            )),
            Verdict::Admitted(_)
        ));
        assert_eq!(send(&mut m, "GET", path, t + ms(1000)), Ok(None));
        assert_eq!(send(&mut m, "GET", path, t + ms(1050)), Err(0.05));
        assert!(m.refusals.iter().all(|r| r.global));
        assert_eq!(m.refusals.len(), 2);
    }
}
