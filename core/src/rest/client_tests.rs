//! [`ClientCall`]s driven on a fake clock against a scripted fake server: rate-limit
//! waits, 429s, retries with backoff, transport failures, the keep-alive pool, and a
//! call dropped in flight. No sockets or sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};

use super::client::{Client, ClientCall, Input, Output, PooledStream};
use super::transport::{HttpSettings, Input as IoInput, Io};
use super::*;

static BASE: LazyLock<Instant> = LazyLock::new(Instant::now);

/// The fake clock: `ms` milliseconds after a fixed base.
fn at(ms: u64) -> Instant {
    *BASE + Duration::from_millis(ms)
}

const TOKEN: &str = "MTIzNDU2Nzg5.secret-bot-token";

/// A fake connection, known by its number; the pool always finds it alive (a closed
/// one shows when it is used, as in life).
#[derive(Debug)]
struct Conn(#[allow(dead_code)] u32);

impl PooledStream for Conn {
    fn is_reusable(&self) -> bool {
        true
    }
}

/// What the fake server does with the next request.
enum Reply {
    /// This answer, in one read.
    Answer(Vec<u8>),
    /// The connection ends before any answer.
    Close,
    /// No answer before the deadline.
    TimeOut,
    /// The next connect is refused (consumed by the connect).
    Refuse,
}

fn answer(status: u16, headers: &[(&str, String)], body: &str) -> Reply {
    let mut text = format!(
        "HTTP/1.1 {status} Whatever\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.push_str(body);
    Reply::Answer(text.into_bytes())
}

fn ok() -> Reply {
    answer(200, &[], "{}")
}

fn limits(bucket: &str, limit: u32, remaining: u32, reset_after: f64) -> Vec<(&str, String)> {
    vec![
        ("x-ratelimit-bucket", bucket.to_owned()),
        ("x-ratelimit-limit", limit.to_string()),
        ("x-ratelimit-remaining", remaining.to_string()),
        ("x-ratelimit-reset-after", format!("{reset_after:.3}")),
    ]
}

/// The fake network: scripted replies, and what the client did.
#[derive(Default)]
struct Net {
    replies: VecDeque<Reply>,
    /// Connections opened.
    connects: u32,
    /// Refused connects.
    refused: u32,
    /// Requests received (their written bytes).
    requests: Vec<String>,
    /// Versions the calls announced.
    notified: Vec<u64>,
    writing: Vec<u8>,
}

/// Where a call stopped: it sleeps, or it is over.
enum Seen<T> {
    Sleep {
        until: Instant,
        wake_after: Option<u64>,
    },
    Done(Result<Response<T>, RestError>),
}

impl<T> std::fmt::Debug for Seen<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sleep { until, wake_after } => f
                .debug_struct("Sleep")
                .field("until", until)
                .field("wake_after", wake_after)
                .finish(),
            Self::Done(Ok(response)) => write!(f, "Done(Ok({response:?}))"),
            Self::Done(Err(error)) => write!(f, "Done(Err({error:?}))"),
        }
    }
}

impl Net {
    fn with(replies: impl IntoIterator<Item = Reply>) -> Self {
        Self {
            replies: replies.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Runs `call` at `now` (all IO instant) until it sleeps or is over.
    fn drive<T>(&mut self, call: &mut ClientCall<T, Conn>, now: Instant) -> Seen<T> {
        loop {
            let input = match call.poll_output(now) {
                Output::Io(io) => self.perform(io),
                Output::Notify(version) => {
                    self.notified.push(version);
                    continue;
                }
                Output::Sleep { until, wake_after } => return Seen::Sleep { until, wake_after },
                Output::Done(result) => return Seen::Done(result),
            };
            call.handle_input(now, Input::Io(input));
        }
    }

    fn perform(&mut self, io: Io<'_, Conn>) -> IoInput<Conn> {
        match io {
            Io::Connect { .. } => {
                if matches!(self.replies.front(), Some(Reply::Refuse)) {
                    self.replies.pop_front();
                    self.refused += 1;
                    return IoInput::Failed(io::ErrorKind::ConnectionRefused.into());
                }
                self.connects += 1;
                IoInput::Connected(Conn(self.connects))
            }
            Io::Write { bytes, .. } => {
                self.writing.extend_from_slice(&bytes);
                IoInput::Written
            }
            Io::Read { buf, .. } => {
                if !self.writing.is_empty() {
                    let request = std::mem::take(&mut self.writing);
                    self.requests
                        .push(String::from_utf8_lossy(&request).into_owned());
                }
                match self.replies.pop_front().expect("a reply for every request") {
                    Reply::Answer(bytes) => {
                        buf[..bytes.len()].copy_from_slice(&bytes);
                        IoInput::Read(bytes.len())
                    }
                    Reply::Close => IoInput::Read(0),
                    Reply::TimeOut => IoInput::TimedOut,
                    Reply::Refuse => panic!("Refuse answers a connect"),
                }
            }
            Io::OpenFile { .. } | Io::ReadFile { .. } => panic!("no files here"),
        }
    }
}

fn builder() -> RestConfigBuilder {
    RestConfig::builder()
        .token(TOKEN)
        .rest_url("http://discord.test/api/v10")
        .max_retries(2)
        .backoff(Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(16),
            jitter_seed: None,
        })
}

fn client(builder: RestConfigBuilder) -> Arc<Client<Conn>> {
    let config = builder.build().unwrap();
    Arc::new(Client::new(config, HttpSettings::default(), None).unwrap())
}

fn get(path: &str) -> RestRequest<serde_json::Value> {
    RestRequest::new(
        Route::custom(Method::GET, path).unwrap(),
        RequestBody::Empty,
    )
}

fn post(path: &str) -> RestRequest<serde_json::Value> {
    RestRequest::new(
        Route::custom(Method::POST, path).unwrap(),
        RequestBody::Json(Bytes::from_static(br#"{"content":"hi"}"#)),
    )
}

const MESSAGES: &str = "/channels/1/messages";

#[track_caller]
fn expect_ok<T>(seen: Seen<T>) -> Response<T> {
    match seen {
        Seen::Done(Ok(response)) => response,
        other => panic!("expected success, got {other:?}"),
    }
}

#[track_caller]
fn expect_err<T>(seen: Seen<T>) -> RestError {
    match seen {
        Seen::Done(Err(error)) => error,
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[track_caller]
fn expect_sleep<T>(seen: Seen<T>) -> (Instant, Option<u64>) {
    match seen {
        Seen::Sleep { until, wake_after } => (until, wake_after),
        other => panic!("expected a sleep, got {other:?}"),
    }
}

// ---------------------------------------------------------------- rate limits

#[test]
fn call_waits_for_an_exhausted_bucket_then_goes_on_the_pooled_connection() {
    let client = client(builder());
    let mut net = Net::with([answer(200, &limits("b", 1, 0, 2.0), "{}")]);
    let mut first = client.call(get(MESSAGES));
    expect_ok(net.drive(&mut first, at(0)));
    assert_eq!(client.idle_connections(), 1);

    let mut second = client.call(get(MESSAGES));
    let (until, wake_after) = expect_sleep(net.drive(&mut second, at(100)));
    assert!(until >= at(2_000) && until <= at(2_100), "{until:?}");
    assert_eq!(wake_after, None, "a bucket wait ends at its time");
    // Woken early: still waiting, nothing sent.
    expect_sleep(net.drive(&mut second, at(1_000)));
    assert_eq!(net.requests.len(), 1);

    net.replies.push_back(ok());
    // The bucket's hold and its slot's 5 ms margin may end one after the other.
    let mut now = until;
    let mut sleeps = 0;
    loop {
        match net.drive(&mut second, now) {
            Seen::Sleep { until, .. } => {
                assert!(until > now && until <= at(2_100), "{until:?}");
                now = until;
                sleeps += 1;
                assert!(sleeps < 3, "no end of waiting");
            }
            seen => {
                expect_ok(seen);
                break;
            }
        }
    }
    assert_eq!(net.requests.len(), 2);
    assert_eq!(net.connects, 1, "the keep-alive connection was reused");
}

#[test]
fn route_429_waits_retry_after_then_retries_without_using_a_retry() {
    let client = client(builder().max_retries(0));
    let mut headers = limits("b", 5, 0, 1.5);
    headers.push(("x-ratelimit-scope", "user".to_owned()));
    let mut net = Net::with([
        answer(
            429,
            &headers,
            r#"{"message":"You are being rate limited.","retry_after":1.5,"global":false}"#,
        ),
        ok(),
    ]);
    let mut call = client.call(get(MESSAGES));
    let (until, _) = expect_sleep(net.drive(&mut call, at(0)));
    assert_eq!(until, at(1_500));
    expect_sleep(net.drive(&mut call, at(1_499)));
    assert_eq!(net.requests.len(), 1);
    let response = expect_ok(net.drive(&mut call, at(1_500)));
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(net.requests.len(), 2);
}

#[test]
fn retry_after_longer_than_max_rate_limit_fails_at_once() {
    let client = client(builder().max_rate_limit(Some(Duration::from_secs(1))));
    let mut headers = limits("b", 5, 0, 5.0);
    headers.push(("x-ratelimit-scope", "user".to_owned()));
    let mut net = Net::with([answer(
        429,
        &headers,
        r#"{"message":"slow down","retry_after":5,"global":false}"#,
    )]);
    let mut call = client.call(get(MESSAGES));
    match expect_err(net.drive(&mut call, at(0))) {
        RestError::RateLimitTooLong { wait, global, .. } => {
            assert_eq!(wait, Duration::from_secs(5));
            assert!(!global);
        }
        other => panic!("expected RateLimitTooLong, got {other:?}"),
    }
    assert_eq!(net.requests.len(), 1);
}

#[test]
fn bucket_wait_longer_than_max_rate_limit_fails_without_sending() {
    let client = client(builder().max_rate_limit(Some(Duration::from_secs(1))));
    let mut net = Net::with([answer(200, &limits("b", 1, 0, 10.0), "{}")]);
    expect_ok(net.drive(&mut client.call(get(MESSAGES)), at(0)));
    let mut second = client.call(get(MESSAGES));
    let error = expect_err(net.drive(&mut second, at(0)));
    assert!(
        matches!(error, RestError::RateLimitTooLong { global: false, .. }),
        "{error:?}"
    );
    assert!(error.is_rate_limited());
    assert_eq!(
        net.requests.len(),
        1,
        "nothing was sent for the second call"
    );
}

// ---------------------------------------------------------------- retries

#[test]
fn server_errors_are_retried_with_backoff_then_given_up() {
    let client = client(builder());
    let mut net = Net::with([
        answer(500, &[], ""),
        answer(502, &[], ""),
        answer(503, &[], r#"{"message":"down","code":0}"#),
    ]);
    let mut call = client.call(get(MESSAGES));
    let (until, _) = expect_sleep(net.drive(&mut call, at(0)));
    assert_eq!(until, at(1_000), "first backoff: base");
    // Polled before the backoff ends: nothing is sent.
    expect_sleep(net.drive(&mut call, at(500)));
    assert_eq!(net.requests.len(), 1);
    let (until, _) = expect_sleep(net.drive(&mut call, at(1_000)));
    assert_eq!(until, at(3_000), "second backoff: twice the base");
    match expect_err(net.drive(&mut call, at(3_000))) {
        RestError::RetriesExhausted { attempts, last } => {
            assert_eq!(attempts, 3);
            assert_eq!(last.http().unwrap().status, StatusCode::SERVICE_UNAVAILABLE);
        }
        other => panic!("expected RetriesExhausted, got {other:?}"),
    }
    assert_eq!(net.requests.len(), 3);
    assert!(net.replies.is_empty());
}

#[test]
fn server_error_then_success() {
    let client = client(builder());
    let mut net = Net::with([answer(500, &[], ""), answer(200, &[], r#"{"id":"1"}"#)]);
    let mut call = client.call(get(MESSAGES));
    let (until, _) = expect_sleep(net.drive(&mut call, at(0)));
    let response = expect_ok(net.drive(&mut call, until));
    assert_eq!(response.model().unwrap()["id"], "1");
}

#[test]
fn client_errors_are_not_retried() {
    let client = client(builder());
    let mut net = Net::with([answer(
        404,
        &[],
        r#"{"message":"Unknown Message","code":10008}"#,
    )]);
    let error = expect_err(net.drive(&mut client.call(get(MESSAGES)), at(0)));
    assert!(error.is_not_found(), "{error:?}");
    assert_eq!(error.code(), Some(10008));
    assert_eq!(net.requests.len(), 1);
}

#[test]
fn refused_connects_are_retried_even_for_post() {
    for request in [get(MESSAGES), post(MESSAGES)] {
        let client = client(builder());
        let mut net = Net::with([Reply::Refuse, ok()]);
        let mut call = client.call(request);
        let (until, _) = expect_sleep(net.drive(&mut call, at(0)));
        assert_eq!(until, at(1_000));
        expect_ok(net.drive(&mut call, until));
        assert_eq!((net.refused, net.connects, net.requests.len()), (1, 1, 1));
    }
}

#[test]
fn refused_connects_exhaust_the_retries() {
    let client = client(builder());
    let mut net = Net::with([Reply::Refuse, Reply::Refuse, Reply::Refuse]);
    let mut call = client.call(get(MESSAGES));
    let (until, _) = expect_sleep(net.drive(&mut call, at(0)));
    let (until, _) = expect_sleep(net.drive(&mut call, until));
    match expect_err(net.drive(&mut call, until)) {
        RestError::RetriesExhausted { attempts: 3, last } => assert!(
            matches!(*last, RestError::Transport { ref error, .. } if error.kind == TransportErrorKind::Connect),
            "{last:?}"
        ),
        other => panic!("expected RetriesExhausted, got {other:?}"),
    }
}

#[test]
fn lost_answer_is_retried_for_get_but_not_for_post() {
    let client = client(builder());
    let mut net = Net::with([Reply::Close, ok()]);
    let mut call = client.call(get(MESSAGES));
    let (until, _) = expect_sleep(net.drive(&mut call, at(0)));
    expect_ok(net.drive(&mut call, until));
    assert_eq!(net.requests.len(), 2);

    let mut net = Net::with([Reply::Close]);
    let error = expect_err(net.drive(&mut client.call(post("/channels/2/messages")), at(0)));
    match error {
        RestError::Transport { error, .. } => assert_eq!(error.kind, TransportErrorKind::Io),
        other => panic!("expected a transport error, got {other:?}"),
    }
    assert_eq!(
        net.requests.len(),
        1,
        "a POST that may have arrived is not repeated"
    );
}

#[test]
fn timeouts_are_retried_for_get_and_reported_for_post() {
    let client = client(builder());
    let mut net = Net::with([Reply::TimeOut, ok()]);
    let mut call = client.call(get(MESSAGES));
    let (until, _) = expect_sleep(net.drive(&mut call, at(0)));
    expect_ok(net.drive(&mut call, until));

    let mut net = Net::with([Reply::TimeOut]);
    let error = expect_err(net.drive(&mut client.call(post("/channels/2/messages")), at(0)));
    assert!(matches!(error, RestError::Timeout { .. }), "{error:?}");
}

#[test]
fn stale_pooled_connection_get_is_resent_at_once_on_a_fresh_one() {
    let client = client(builder());
    let mut net = Net::with([ok(), Reply::Close, ok()]);
    expect_ok(net.drive(&mut client.call(get(MESSAGES)), at(0)));
    // The pooled connection was closed by the server meanwhile: no backoff, no retry
    // used, just a fresh connection.
    expect_ok(net.drive(&mut client.call(get("/channels/1")), at(10)));
    assert_eq!(net.connects, 2);
    assert_eq!(net.requests.len(), 3);
    assert_eq!(client.idle_connections(), 1);
}

#[test]
fn stale_pooled_connection_post_is_not_repeated() {
    let client = client(builder());
    let mut net = Net::with([ok(), Reply::Close]);
    expect_ok(net.drive(&mut client.call(get(MESSAGES)), at(0)));
    let error = expect_err(net.drive(&mut client.call(post("/channels/2/messages")), at(10)));
    assert!(matches!(error, RestError::Transport { .. }), "{error:?}");
    assert_eq!(net.connects, 1, "no reconnect for the POST");
    assert_eq!(client.idle_connections(), 0);
}

// ---------------------------------------------------------------- the pool and notifications

#[test]
fn connection_close_answers_leave_nothing_in_the_pool() {
    let client = client(builder());
    let mut net = Net::with([
        answer(200, &[("connection", "close".to_owned())], "{}"),
        ok(),
    ]);
    expect_ok(net.drive(&mut client.call(get(MESSAGES)), at(0)));
    assert_eq!(client.idle_connections(), 0);
    expect_ok(net.drive(&mut client.call(get(MESSAGES)), at(10)));
    assert_eq!(net.connects, 2);
    assert_eq!(client.idle_connections(), 1);
    client.clear_idle();
    assert_eq!(client.idle_connections(), 0);
}

#[test]
fn every_outcome_is_announced_with_the_limiters_version() {
    let client = client(builder());
    let mut net = Net::with([answer(500, &[], ""), ok()]);
    let mut call = client.call(get(MESSAGES));
    let (until, _) = expect_sleep(net.drive(&mut call, at(0)));
    assert_eq!(net.notified.len(), 1);
    expect_ok(net.drive(&mut call, until));
    assert_eq!(net.notified.len(), 2);
    assert!(net.notified[0] < net.notified[1]);
    assert_eq!(
        net.notified.last().copied(),
        Some(client.with_limiter(|limiter| limiter.version()))
    );
}

#[test]
fn a_finished_call_polled_again_is_call_finished() {
    let client = client(builder());
    let mut net = Net::with([ok()]);
    let mut call = client.call(get(MESSAGES));
    expect_ok(net.drive(&mut call, at(0)));
    let error = expect_err(net.drive(&mut call, at(1)));
    assert!(matches!(error, RestError::CallFinished), "{error:?}");
    assert_eq!(net.requests.len(), 1);
}

// ---------------------------------------------------------------- dropped calls

#[test]
fn call_dropped_in_flight_lets_the_next_call_go() {
    let client = client(builder());
    let mut net = Net::default();
    let mut first = client.call(get(MESSAGES));
    assert!(matches!(
        first.poll_output(at(0)),
        Output::Io(Io::Connect { .. })
    ));
    assert_eq!(client.with_limiter(|limiter| limiter.in_flight()), 1);

    // The route's bucket is unknown: one request at a time.
    let mut second = client.call(get(MESSAGES));
    let (until, wake_after) = expect_sleep(net.drive(&mut second, at(10)));
    let version = wake_after.expect("waiting for an answer wakes on a change");
    assert!(until > at(10));

    drop(first);
    assert_eq!(client.with_limiter(|limiter| limiter.in_flight()), 0);
    assert!(client.with_limiter(|limiter| limiter.version()) > version);

    net.replies.push_back(ok());
    expect_ok(net.drive(&mut second, at(20)));
    assert_eq!(net.requests.len(), 1);
}

#[test]
fn call_dropped_mid_answer_lets_the_next_call_go() {
    let client = client(builder());
    let mut first = client.call(get(MESSAGES));
    // Connected and written; dropped while reading.
    loop {
        let input = match first.poll_output(at(0)) {
            Output::Io(Io::Connect { .. }) => IoInput::Connected(Conn(1)),
            Output::Io(Io::Write { .. }) => IoInput::Written,
            Output::Io(Io::Read { .. }) => break,
            other => panic!("unexpected {other:?}"),
        };
        first.handle_input(at(0), Input::Io(input));
    }
    drop(first);
    assert_eq!(client.with_limiter(|limiter| limiter.in_flight()), 0);
    assert_eq!(
        client.idle_connections(),
        0,
        "a half-used connection is not pooled"
    );
    let mut net = Net::with([ok()]);
    expect_ok(net.drive(&mut client.call(get(MESSAGES)), at(10)));
}

#[test]
fn call_dropped_before_sending_changes_nothing() {
    let client = client(builder());
    let version = client.with_limiter(|limiter| limiter.version());
    drop(client.call(get(MESSAGES)));
    assert_eq!(client.with_limiter(|limiter| limiter.version()), version);
    assert_eq!(client.with_limiter(|limiter| limiter.in_flight()), 0);
}

// ---------------------------------------------------------------- more of the pool and waits

#[test]
fn idle_connection_older_than_the_idle_timeout_is_not_reused() {
    let config = builder().build().unwrap();
    let settings = HttpSettings {
        idle_timeout: Duration::from_secs(5),
        ..HttpSettings::default()
    };
    let client: Arc<Client<Conn>> = Arc::new(Client::new(config, settings, None).unwrap());
    let mut net = Net::with([ok(), ok(), ok()]);
    expect_ok(net.drive(&mut client.call(get(MESSAGES)), at(0)));
    expect_ok(net.drive(&mut client.call(get(MESSAGES)), at(4_999)));
    assert_eq!(net.connects, 1, "reused within the idle timeout");
    expect_ok(net.drive(&mut client.call(get(MESSAGES)), at(4_999 + 5_000)));
    assert_eq!(net.connects, 2, "too old: a fresh connection");
}

#[test]
fn pool_disabled_connects_for_every_call() {
    let config = builder().build().unwrap();
    let settings = HttpSettings {
        max_idle_per_host: 0,
        ..HttpSettings::default()
    };
    let client: Arc<Client<Conn>> = Arc::new(Client::new(config, settings, None).unwrap());
    let mut net = Net::with([ok(), ok()]);
    expect_ok(net.drive(&mut client.call(get(MESSAGES)), at(0)));
    expect_ok(net.drive(&mut client.call(get(MESSAGES)), at(10)));
    assert_eq!(net.connects, 2);
    assert_eq!(client.idle_connections(), 0);
}

#[test]
fn call_waiting_for_an_answer_is_woken_by_its_notification() {
    let client = client(builder());
    let mut net = Net::default();
    let mut first = client.call(get(MESSAGES));
    assert!(matches!(
        first.poll_output(at(0)),
        Output::Io(Io::Connect { .. })
    ));
    first.handle_input(at(0), Input::Io(IoInput::Connected(Conn(99))));
    let mut second = client.call(get(MESSAGES));
    let (_, wake_after) = expect_sleep(net.drive(&mut second, at(10)));
    let version = wake_after.unwrap();

    net.replies
        .push_back(answer(200, &limits("b", 5, 4, 1.0), "{}"));
    expect_ok(net.drive(&mut first, at(20)));
    assert!(
        net.notified.iter().any(|&notified| notified > version),
        "the answer is announced above the waiter's version"
    );
    // The bucket is known now and has room: the waiter goes at once.
    net.replies.push_back(ok());
    expect_ok(net.drive(&mut second, at(20)));
    assert_eq!(net.requests.len(), 2);
}
