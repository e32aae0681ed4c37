//! Pacing cases: the REST client against the [`MockDiscord`]'s model of Discord's rate
//! limits ([`RateLimits`]), each generic over the adapter's [`BotHarness`];
//! [`bot_suite!`](crate::bot_suite) makes a `#[test]` of each.
//!
//! The mock refuses (429) whatever its model would, so "no 429" means the client paced
//! itself; the elapsed times bound that pacing from both sides (the lower bound is what
//! the limit allows at best, the upper one what a client that wastes no time needs).
//! Every case prints its measured times (`--nocapture`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use std::num::NonZeroU32;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use http::Method;
use twilight_model::id::Id;
use yuyo_core::rest::ratelimit::MAX_UPSTREAM_WAIT;
use yuyo_core::rest::{
    Backoff, Interaction, MessageCreate, MessageEdit, RequestBody, RequestError, RestConfig,
    RestConfigBuilder, RestError,
};

use crate::bot_harness::{BotHarness, bounded};
use crate::mock_discord::{MockDiscord, Overruns, RateLimits, Reply, RouteLimit};

/// The follow-up route (`POST /webhooks/{application_id}/{token}`).
const FOLLOWUP: &str = "/webhooks/{webhook_id}/{webhook_token}";
/// The original response's route (`PATCH …/messages/@original`).
const ORIGINAL: &str = "/webhooks/{webhook_id}/{webhook_token}/messages/@original";

// ---------------------------------------------------------------------------------------
// Helpers

/// A client for `url` with a fast retry backoff and `f`'s changes.
fn client<H: BotHarness>(
    url: &str,
    f: impl FnOnce(RestConfigBuilder) -> RestConfigBuilder,
) -> H::Client {
    let backoff = Backoff {
        base: Duration::from_millis(10),
        max: Duration::from_millis(50),
        jitter_seed: None,
    };
    let config = f(RestConfig::builder()
        .token("tok")
        .rest_url(url)
        .backoff(backoff))
    .build()
    .unwrap();
    H::client(config, Default::default(), None)
}

/// The interaction whose follow-ups and original response the cases send.
fn interaction() -> Interaction {
    Interaction::new(Id::new(7), Id::new(1), "itoken")
}

/// Runs `f(0)`, …, `f(n - 1)` on `n` threads released together, bounded; returns the
/// time from their release until the last finished, and their results.
pub(crate) fn together<E: Send + 'static>(
    n: usize,
    f: impl Fn(usize) -> Result<(), E> + Send + Sync + 'static,
) -> (Duration, Vec<Result<(), E>>) {
    bounded(move || {
        let f = Arc::new(f);
        let barrier = Arc::new(Barrier::new(n + 1));
        let threads: Vec<_> = (0..n)
            .map(|i| {
                let (f, barrier) = (Arc::clone(&f), Arc::clone(&barrier));
                thread::spawn(move || {
                    barrier.wait();
                    f(i)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let results = threads.into_iter().map(|t| t.join().unwrap()).collect();
        (start.elapsed(), results)
    })
}

/// `n` concurrent follow-ups of [`interaction`].
fn followups<H: BotHarness>(
    client: &H::Client,
    n: usize,
) -> (Duration, Vec<Result<(), RestError>>) {
    let client = client.clone();
    together(n, move |i| {
        let message = MessageCreate::new().content(format!("follow-up {i}"));
        H::call(&client, interaction().followup(message).unwrap())
    })
}

/// `n` concurrent edits of [`interaction`]'s original response.
fn edits<H: BotHarness>(client: &H::Client, n: usize) -> (Duration, Vec<Result<(), RestError>>) {
    let client = client.clone();
    together(n, move |i| {
        let edit = MessageEdit::new().content(format!("edit {i}"));
        H::call(&client, interaction().edit_original(edit).unwrap())
    })
}

fn all_ok<E: std::fmt::Debug>(results: &[Result<(), E>]) {
    for result in results {
        assert!(result.is_ok(), "{results:?}");
    }
}

fn name<H>() -> &'static str {
    let name = std::any::type_name::<H>();
    name.rsplit("::").next().unwrap_or(name)
}

/// Asserts `lo <= elapsed <= hi`.
fn between(what: &str, elapsed: Duration, lo: Duration, hi: Duration) {
    assert!(
        elapsed >= lo && elapsed <= hi,
        "{what}: {elapsed:?}, expected within [{lo:?}, {hi:?}]"
    );
}

// ---------------------------------------------------------------------------------------
// Route buckets

/// Ten concurrent follow-ups on a sliding bucket of 2 per second: no 429, and done in
/// just over the 4 s the limit needs (two at once, two more each second).
pub fn followups_on_a_sliding_bucket_pace_exactly<H: BotHarness>() {
    let limits = RateLimits::new().route(
        "POST",
        FOLLOWUP,
        RouteLimit::sliding("f0110", 2, Duration::from_secs(1)),
    );
    let mock = MockDiscord::new().with_rate_limits(limits);
    let url = mock.start().unwrap();
    let client = client::<H>(&url, |b| b);
    let (elapsed, results) = followups::<H>(&client, 10);
    eprintln!(
        "[pacing] {}: 10 follow-ups, sliding 2/1s: {elapsed:?}",
        name::<H>()
    );
    all_ok(&results);
    assert_eq!(
        mock.overruns(),
        Overruns::default(),
        "{:?}",
        mock.refusals()
    );
    assert_eq!(mock.requests().len(), 10);
    between(
        "10 follow-ups at 2/1s sliding",
        elapsed,
        Duration::from_millis(3900),
        Duration::from_millis(4100),
    );
}

/// Edits of the original response right after follow-ups exhausted theirs: the edits'
/// route has a bucket of its own (2 per second) and an exhausted bucket of another
/// route on the same webhook does not delay them; no 429.
pub fn edits_after_followups_are_not_delayed<H: BotHarness>() {
    let per = Duration::from_secs(1);
    let limits = RateLimits::new()
        .route("POST", FOLLOWUP, RouteLimit::sliding("f0110", 2, per))
        .route("PATCH", ORIGINAL, RouteLimit::sliding("e0d17", 2, per));
    let mock = MockDiscord::new().with_rate_limits(limits);
    let url = mock.start().unwrap();
    let client = client::<H>(&url, |b| b);
    let (first, results) = followups::<H>(&client, 2);
    all_ok(&results);
    let (elapsed, results) = edits::<H>(&client, 6);
    eprintln!(
        "[pacing] {}: 2 follow-ups in {first:?}, then 6 edits, sliding 2/1s: {elapsed:?}",
        name::<H>()
    );
    all_ok(&results);
    assert_eq!(
        mock.overruns(),
        Overruns::default(),
        "{:?}",
        mock.refusals()
    );
    let requests = mock.requests();
    assert_eq!(requests.len(), 8);
    assert!(requests[2..].iter().all(|r| r.method == "PATCH"));
    between(
        "6 edits at 2/1s sliding after exhausted follow-ups",
        elapsed,
        Duration::from_millis(1900),
        Duration::from_millis(2100),
    );
}

/// Ten concurrent follow-ups on a fixed-window bucket of 2 per second: no 429, done in
/// a bounded time (the windows allow two each second at best).
pub fn followups_on_a_fixed_window_bucket_pace<H: BotHarness>() {
    let limits = RateLimits::new().route(
        "POST",
        FOLLOWUP,
        RouteLimit::fixed("f1xed", 2, Duration::from_secs(1)),
    );
    let mock = MockDiscord::new().with_rate_limits(limits);
    let url = mock.start().unwrap();
    let client = client::<H>(&url, |b| b);
    let (elapsed, results) = followups::<H>(&client, 10);
    eprintln!(
        "[pacing] {}: 10 follow-ups, fixed 2/1s: {elapsed:?}",
        name::<H>()
    );
    all_ok(&results);
    assert_eq!(
        mock.overruns(),
        Overruns::default(),
        "{:?}",
        mock.refusals()
    );
    assert_eq!(mock.requests().len(), 10);
    between(
        "10 follow-ups at 2/1s fixed",
        elapsed,
        Duration::from_millis(3900),
        Duration::from_millis(5100),
    );
}

// ---------------------------------------------------------------------------------------
// Global limit

/// One run: a global limit of 3 per second (the client's and the mock's), ten
/// concurrent authenticated requests on ten channels (each its own bucket); returns the
/// elapsed time and the mock's 429s.
fn global_run<H: BotHarness>() -> (Duration, Overruns) {
    let limits = RateLimits::new().global(3).route(
        "GET",
        "/channels/{channel_id}/messages",
        RouteLimit::sliding("c4a11", 5, Duration::from_secs(5)),
    );
    let mock = MockDiscord::new().with_rate_limits(limits);
    let url = mock.start().unwrap();
    let client = client::<H>(&url, |b| b.global_limit(NonZeroU32::new(3)));
    let (elapsed, results) = together(10, move |i| {
        let path = format!("/channels/{}/messages", i + 1);
        H::request(&client, Method::GET, &path, RequestBody::Empty)
    });
    all_ok::<RequestError>(&results);
    (elapsed, mock.overruns())
}

/// Ten concurrent requests under a global limit of 3 per second: the mock, counting
/// arrivals in any one-second span, never refuses one; they take the 3 s the limit
/// needs, and not much more.
pub fn global_limit_is_never_exceeded<H: BotHarness>() {
    let (elapsed, overruns) = global_run::<H>();
    eprintln!(
        "[pacing] {}: 10 requests, global 3/1s: {elapsed:?}, {overruns:?}",
        name::<H>()
    );
    assert_eq!(overruns, Overruns::default());
    between(
        "10 requests at global 3/1s",
        elapsed,
        Duration::from_millis(3000),
        Duration::from_millis(3600),
    );
}

/// [`global_limit_is_never_exceeded`] 100 times (about 5 minutes): no run may see a
/// global 429.
pub fn global_limit_is_never_exceeded_stress<H: BotHarness>() {
    let runs = 100;
    let mut refused = 0;
    let mut slowest = Duration::ZERO;
    let mut fastest = Duration::MAX;
    for _ in 0..runs {
        let (elapsed, overruns) = global_run::<H>();
        if overruns.global > 0 {
            refused += 1;
            eprintln!("[pacing] global 429s: {overruns:?} in {elapsed:?}");
        }
        assert_eq!(overruns.route, 0);
        slowest = slowest.max(elapsed);
        fastest = fastest.min(elapsed);
    }
    eprintln!(
        "[pacing] {}: global 3/1s stress: {refused} of {runs} runs had a global 429; \
         runs took {fastest:?} to {slowest:?}",
        name::<H>()
    );
    assert_eq!(refused, 0);
}

// ---------------------------------------------------------------------------------------
// Absurd upstream durations

/// A 429 asking for `1e19` seconds fails the call at once with
/// [`RestError::RateLimitTooLong`] (the wait read as at most [`MAX_UPSTREAM_WAIT`]), and
/// so does the next call on a bucket answered `Remaining: 0` with `Reset-After: 1e19`
/// (that answer itself succeeds); other routes, and the same route of another channel,
/// still work at once. (`max_rate_limit_exceeded_is_an_error` covers a sane 429 over
/// the maximum.)
pub fn absurd_retry_after_is_a_typed_error_and_the_next_call_works<H: BotHarness>() {
    let mock = MockDiscord::new();
    let url = mock.start().unwrap();
    // The default maximum wait (five minutes), below `MAX_UPSTREAM_WAIT`.
    let client = client::<H>(&url, |b| b);
    let get = {
        let client = client.clone();
        move |path: &'static str| {
            let client = client.clone();
            bounded(move || {
                let start = Instant::now();
                let result = H::request(&client, Method::GET, path, RequestBody::Empty);
                (start.elapsed(), result)
            })
        }
    };
    let too_long = |what: &str, elapsed: Duration, result: Result<(), RequestError>| {
        assert!(elapsed < Duration::from_secs(1), "{what}: took {elapsed:?}");
        match result {
            Err(RequestError::Rest(RestError::RateLimitTooLong { wait, global, .. })) => {
                assert!(!global, "{what}");
                assert!(
                    wait > Duration::from_secs(300) && wait <= MAX_UPSTREAM_WAIT,
                    "{what}: {wait:?}"
                );
            }
            other => panic!("{what}: {other:?}"),
        }
    };

    // A 429 with `retry_after: 1e19`.
    mock.push(
        Reply::status(
            429,
            r#"{"message":"You are being rate limited.","retry_after":1e19,"global":false}"#,
        )
        .header("retry-after", "10000000000000000000")
        .header("x-ratelimit-scope", "user"),
    );
    let (elapsed, result) = get("/channels/1/messages");
    too_long("429 with retry_after 1e19", elapsed, result);
    assert_eq!(mock.requests().len(), 1, "not retried");
    let (elapsed, result) = get("/guilds/1/roles");
    result.unwrap();
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    assert_eq!(mock.requests().len(), 2);

    // `Remaining: 0` with `Reset-After: 1e19`: the answer is fine, the bucket held.
    mock.push(
        Reply::ok("[]")
            .header("x-ratelimit-bucket", "ab5urd")
            .header("x-ratelimit-limit", "5")
            .header("x-ratelimit-remaining", "0")
            .header("x-ratelimit-reset-after", "1e19"),
    );
    let (_, result) = get("/channels/2/pins");
    result.unwrap();
    let (elapsed, result) = get("/channels/2/pins");
    too_long("bucket reset after 1e19", elapsed, result);
    assert_eq!(mock.requests().len(), 3, "nothing sent on the held bucket");
    let (elapsed, result) = get("/channels/3/pins");
    result.unwrap();
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    let (elapsed, result) = get("/guilds/1/roles");
    result.unwrap();
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    assert_eq!(mock.requests().len(), 5);
}
