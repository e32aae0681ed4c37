//! A fleet of replicas of one bot sharing Discord's rate limits through Redis, each
//! case generic over the adapter's [`BotHarness`]; [`bot_suite!`](crate::bot_suite)
//! makes an ignored `#[test]` of each (they need `redis-server` on the `PATH`; run
//! them with `-- --include-ignored redis`).
//!
//! Three REST clients (the replicas, each with its own in-process limiter) send 30
//! concurrent calls to one [`MockDiscord`] with a global limit of 3 per second and a
//! sliding bucket of 2 per second. The mock counts arrivals and refuses (429) what
//! Discord would: with limits shared in a [`RedisServer`] nothing is refused; with
//! in-process limiters alone the fleet overruns both.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::num::NonZeroU32;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use http::Method;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};
use yuyo_core::rest::{Backoff, RequestBody, RequestError, RestConfig, SharedLimits};

use crate::bot_harness::{BotHarness, LIMIT, bounded};
use crate::mock_discord::{MockDiscord, Overruns, RateLimits, Reply, RouteLimit};

/// Replicas in the fleet.
const REPLICAS: usize = 3;
/// Calls sent by the fleet.
const CALLS: usize = 30;
/// The warning a replica logs when Redis fails.
const WARNING: &str = "Redis rate limits unavailable";

/// A `redis-server` of its own on a free 127.0.0.1 port, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    /// Starts `redis-server` without persistence and waits (bounded) until it answers
    /// `PING`.
    ///
    /// # Panics
    /// When `redis-server` cannot be started or does not answer within 10 s.
    #[must_use]
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on the PATH (apt-get install redis-server)");
        let mut server = Self { child, port };
        let start = Instant::now();
        while !server.answers_ping() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("redis-server exited: {status}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis-server did not answer PING"
            );
            thread::sleep(Duration::from_millis(10));
        }
        server
    }

    /// `redis://127.0.0.1:{port}/`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    /// Whether `key` exists (`EXISTS`); `false` when the server does not answer.
    #[must_use]
    pub fn exists(&self, key: &str) -> bool {
        self.command(&["EXISTS", key]) == b":1\r\n"
    }

    /// The raw reply to `args` (what one read gives: short replies only); empty when
    /// the server does not answer.
    #[must_use]
    pub fn command(&self, args: &[&str]) -> Vec<u8> {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return Vec::new();
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut command = format!("*{}\r\n", args.len());
        for arg in args {
            command.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        let mut reply = vec![0; 64 * 1024];
        let n = match stream.write_all(command.as_bytes()) {
            Ok(()) => stream.read(&mut reply).unwrap_or(0),
            Err(_) => 0,
        };
        reply.truncate(n);
        reply
    }

    /// Kills the server (`SIGKILL`) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------
// The warnings logged, counted by a global subscriber

/// The warnings that say Redis failed, by key prefix.
static WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Counts the warnings that say Redis failed; ignores everything else.
struct WarningCounter;

#[derive(Default)]
struct Message {
    text: String,
    prefix: String,
}

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "key_prefix" {
            value.clone_into(&mut self.prefix);
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.text = format!("{value:?}"),
            "key_prefix" => self.prefix = format!("{value:?}"),
            _ => {}
        }
    }
}

impl Subscriber for WarningCounter {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() == Level::WARN
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut message = Message::default();
        event.record(&mut message);
        if message.text.contains(WARNING) {
            lock(&WARNINGS).push(message.prefix);
        }
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts counting the Redis warnings; `false` when another global subscriber was
/// installed first (nothing can be counted then).
fn count_warnings() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| tracing::subscriber::set_global_default(WarningCounter).is_ok())
}

/// How many Redis warnings named `prefix`.
fn warnings(prefix: &str) -> usize {
    lock(&WARNINGS)
        .iter()
        .filter(|named| *named == prefix)
        .count()
}

// ---------------------------------------------------------------------------------------
// The fleet

/// The mock: a global limit of 3 per second, a sliding bucket of 2 per second on
/// `GET /channels/{id}/pins`; other routes have no bucket.
fn limited_mock() -> (MockDiscord, String) {
    let limits = RateLimits::new().global(3).route(
        "GET",
        "/channels/{channel_id}/pins",
        RouteLimit::sliding("p1n5", 2, Duration::from_secs(1)),
    );
    let mock = MockDiscord::new().with_rate_limits(limits);
    let url = mock.start().unwrap();
    (mock, url)
}

/// The replicas of one bot (token `tok`) calling `url`, sharing limits in `redis` if
/// given.
fn fleet<H: BotHarness>(url: &str, redis: Option<&RedisServer>, prefix: &str) -> Vec<H::Client> {
    let shared = redis.map(|redis| SharedLimits::redis(redis.url()).key_prefix(prefix));
    fleet_sharing::<H>(url, shared.as_ref())
}

/// The replicas of one bot (token `tok`) calling `url`, with `shared` limits if given.
fn fleet_sharing<H: BotHarness>(url: &str, shared: Option<&SharedLimits>) -> Vec<H::Client> {
    (0..REPLICAS)
        .map(|_| {
            let mut builder = RestConfig::builder()
                .token("tok")
                .rest_url(url)
                .global_limit(NonZeroU32::new(3))
                .backoff(Backoff {
                    base: Duration::from_millis(10),
                    max: Duration::from_millis(50),
                    jitter_seed: None,
                });
            if let Some(shared) = shared {
                builder = builder.shared_limits(shared.clone());
            }
            H::client(builder.build().unwrap(), Default::default(), None)
        })
        .collect()
}

/// Call `i`'s path: 12 of the 30 on the bucket, the others on channels of their own.
fn path(i: usize) -> String {
    if (i / REPLICAS).is_multiple_of(3) {
        "/channels/1/pins".to_owned()
    } else {
        format!("/channels/{}/messages", i + 100)
    }
}

/// Sends the 30 calls, call `i` from replica `i % 3`, released together; returns how
/// long they took and their results.
fn send_all<H: BotHarness>(clients: Vec<H::Client>) -> (Duration, Vec<Result<(), RequestError>>) {
    crate::pacing_cases::together(CALLS, move |i| {
        H::request(
            &clients[i % REPLICAS],
            Method::GET,
            &path(i),
            RequestBody::Empty,
        )
    })
}

fn name<H>() -> &'static str {
    let name = std::any::type_name::<H>();
    name.rsplit("::").next().unwrap_or(name)
}

fn all_ok(results: &[Result<(), RequestError>]) {
    for result in results {
        assert!(result.is_ok(), "{results:?}");
    }
}

/// Three replicas, 30 calls: with in-process limiters alone the fleet overruns the
/// global limit (and at times the bucket); with the limits shared in Redis the mock
/// refuses nothing.
pub fn redis_fleet_shares_the_global_limit_and_buckets<H: BotHarness>() {
    let (mock, url) = limited_mock();
    let (local_elapsed, results) = send_all::<H>(fleet::<H>(&url, None, ""));
    all_ok(&results);
    let local = mock.overruns();

    let redis = RedisServer::start();
    let (mock, url) = limited_mock();
    let clients = fleet::<H>(&url, Some(&redis), "yuyo-test:{fleet}");
    let (elapsed, results) = send_all::<H>(clients);
    eprintln!(
        "[redis] {}: {CALLS} calls, {REPLICAS} replicas, global 3/1s, bucket 2/1s: \
         in-process limiters {local_elapsed:?} {local:?}; shared in Redis {elapsed:?} {:?}",
        name::<H>(),
        mock.overruns()
    );
    all_ok(&results);
    assert_eq!(
        mock.overruns(),
        Overruns::default(),
        "{:?}",
        mock.refusals()
    );
    assert_eq!(mock.requests().len(), CALLS);
    // Each replica sees the others' requests in `X-RateLimit-Remaining`, which mostly
    // spares the bucket; nothing tells it of their global ones.
    assert!(local.global > 0, "in-process limiters: {local:?}");
    assert!(elapsed < LIMIT, "{elapsed:?}");
}

/// Redis killed while the fleet sends: every call still succeeds, under the replicas'
/// own limits, and no replica logs more than the one warning.
pub fn redis_killed_mid_run_falls_back_to_local_limits<H: BotHarness>() {
    let counting = count_warnings();
    let prefix = format!("yuyo-test:{{killed-{}}}", name::<H>());
    let mut redis = RedisServer::start();
    let (mock, url) = limited_mock();
    let clients = fleet::<H>(&url, Some(&redis), &prefix);
    let sending = thread::spawn(move || send_all::<H>(clients));
    let arrived = mock.wait_for(CALLS / 3, LIMIT);
    assert!(arrived.is_some(), "the first calls did not arrive");
    redis.kill();
    let (elapsed, results) = sending.join().unwrap();
    let warned = warnings(&prefix);
    eprintln!(
        "[redis] {}: Redis killed after {} of {CALLS} calls: done in {elapsed:?}, {:?}, \
         warnings {:?}",
        name::<H>(),
        CALLS / 3,
        mock.overruns(),
        counting.then_some(warned),
    );
    all_ok(&results);
    assert!(mock.requests().len() >= CALLS);
    if counting {
        // A replica whose remaining calls all held their grants before the kill may never
        // ask Redis again; none warns twice.
        assert!(
            (1..=REPLICAS).contains(&warned),
            "at most one warning per replica, and some: {warned}"
        );
    }
}

/// `GET path` from `client`, bounded; how long it took.
fn timed_get<H: BotHarness>(client: &H::Client, path: &'static str) -> Duration {
    let client = client.clone();
    bounded(move || {
        let start = Instant::now();
        H::request(&client, Method::GET, path, RequestBody::Empty).unwrap();
        start.elapsed()
    })
}

/// What one replica is told holds the others too: a bucket answered `Remaining: 0`
/// (`Reset-After` 0.5 s) and a global 429 (`retry_after` 0.5 s).
pub fn redis_holds_reach_every_replica<H: BotHarness>() {
    let redis = RedisServer::start();
    let mock = MockDiscord::new();
    let url = mock.start().unwrap();
    let clients = fleet::<H>(&url, Some(&redis), "yuyo-test:{holds}");
    let half = Duration::from_millis(500);

    mock.push(
        Reply::ok("[]")
            .header("x-ratelimit-bucket", "h0ld")
            .header("x-ratelimit-limit", "5")
            .header("x-ratelimit-remaining", "0")
            .header("x-ratelimit-reset-after", "0.5"),
    );
    let first = timed_get::<H>(&clients[0], "/channels/9/pins");
    let held = timed_get::<H>(&clients[1], "/channels/9/pins");
    eprintln!(
        "[redis] {}: Remaining 0 on one replica: {first:?}, the next on another: {held:?}",
        name::<H>()
    );
    assert!(first < half, "{first:?}");
    assert!(held >= half - Duration::from_millis(100), "{held:?}");

    mock.push(
        Reply::status(
            429,
            r#"{"message":"You are being rate limited.","retry_after":0.5,"global":true}"#,
        )
        .header("x-ratelimit-global", "true")
        .header("x-ratelimit-scope", "global"),
    );
    let refused = {
        let client = clients[0].clone();
        thread::spawn(move || timed_get::<H>(&client, "/users/@me"))
    };
    let start = Instant::now();
    while !redis.exists("yuyo-test:{holds}:gh") {
        assert!(
            start.elapsed() < LIMIT,
            "the global hold never reached Redis"
        );
        thread::yield_now();
    }
    let held = timed_get::<H>(&clients[2], "/guilds/1/roles");
    let refused = refused.join().unwrap();
    eprintln!(
        "[redis] {}: global 429 on one replica: {refused:?}, another held {held:?}",
        name::<H>()
    );
    assert!(refused >= half, "{refused:?}");
    assert!(held >= Duration::from_millis(200), "{held:?}");
    assert_eq!(mock.overruns(), Overruns::default());
}

/// Redis stopped (`SIGSTOP`: connections stay open, nothing answers): a call goes under
/// the replica's own limits after the 250 ms round-trip deadline, the next one at once,
/// and one warning is logged. Once Redis goes on (`SIGCONT`) and the replica's pause
/// (300 ms here) is over, the slot the stalled call may have been granted is cancelled.
pub fn redis_stalled_costs_one_deadline<H: BotHarness>() {
    let counting = count_warnings();
    let prefix = format!("yuyo-test:{{stalled-{}}}", name::<H>());
    let redis = RedisServer::start();
    let mock = MockDiscord::new();
    let url = mock.start().unwrap();
    let shared = SharedLimits::redis(redis.url())
        .key_prefix(&prefix)
        .retry_after(Duration::from_millis(300));
    let clients = fleet_sharing::<H>(&url, Some(&shared));
    let warm = timed_get::<H>(&clients[0], "/guilds/1/roles");
    let stop = |signal: &str| {
        let status = Command::new("kill")
            .args([signal, &redis.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    };
    stop("-STOP");
    let stalled = timed_get::<H>(&clients[0], "/guilds/2/roles");
    let next = timed_get::<H>(&clients[0], "/guilds/3/roles");
    stop("-CONT");
    eprintln!(
        "[redis] {}: Redis answering: {warm:?}; stopped: {stalled:?}, then {next:?}",
        name::<H>()
    );
    assert!(stalled < Duration::from_millis(700), "{stalled:?}");
    assert!(next < Duration::from_millis(200), "{next:?}");
    if counting {
        assert_eq!(warnings(&prefix), 1);
    }

    // Calls (paced by the local global limit) until one has gone through Redis again:
    // no slot of the fleet is left in flight then.
    let global = format!("{prefix}:g");
    let slot = |kind: u8, reply: &[u8]| reply.windows(2).any(|w| w == [b'\n', kind]);
    let in_flight = |reply: &[u8]| slot(b'f', reply);
    let phantom = in_flight(&redis.command(&["ZRANGE", &global, "0", "-1"]));
    let start = Instant::now();
    let mut calls = 0;
    loop {
        timed_get::<H>(&clients[0], "/guilds/4/roles");
        calls += 1;
        let slots = redis.command(&["ZRANGE", &global, "0", "-1"]);
        if start.elapsed() > Duration::from_millis(300) && !in_flight(&slots) {
            assert!(slot(b'a', &slots), "the call went through Redis");
            break;
        }
        assert!(
            start.elapsed() < LIMIT,
            "{}",
            String::from_utf8_lossy(&slots)
        );
    }
    eprintln!(
        "[redis] {}: after SIGCONT (a slot {} in flight), none left after {calls} \
         calls, {:?}",
        name::<H>(),
        if phantom { "was" } else { "was not" },
        start.elapsed()
    );
}
