//! The bot [`Lifecycle`] driven by hand: transitions polled step by step, callback
//! phases run on the spot, key fetches answered with scripted outcomes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;

use super::bot::{
    BotEndpoint, BotStep, Hooks, Lifecycle, LifecycleError, Operation, Transition, UnknownCallback,
};
use super::*;
use crate::endpoint::Verifier;
use crate::lifespan::{Callback, CallbackError, PhaseResults, RunPhase};

static NOW: LazyLock<Instant> = LazyLock::new(Instant::now);

const TOKEN: &str = "MTIzNDU2Nzg5.secret-bot-token";

fn key() -> [u8; 32] {
    ed25519_dalek::SigningKey::from_bytes(&[7; 32])
        .verifying_key()
        .to_bytes()
}

/// A lifecycle and what its hooks saw.
struct Bot {
    lifecycle: Arc<Lifecycle>,
    versions: Arc<Mutex<Vec<u64>>>,
    stops: Arc<AtomicUsize>,
}

impl Bot {
    fn new(managed: bool, known_key: bool, token: Option<TokenType>) -> Self {
        let versions = Arc::new(Mutex::new(Vec::new()));
        let stops = Arc::new(AtomicUsize::new(0));
        let hooks = Hooks {
            on_change: Box::new({
                let versions = Arc::clone(&versions);
                move |version| versions.lock().unwrap().push(version)
            }),
            on_stop: Box::new({
                let stops = Arc::clone(&stops);
                move || {
                    stops.fetch_add(1, Ordering::SeqCst);
                }
            }),
        };
        let verifier = known_key.then(|| Verifier::from_bytes(&key()).unwrap());
        let lifecycle = Lifecycle::new(
            managed,
            verifier,
            KeyDiscovery::new(token),
            BotEndpoint::default(),
            hooks,
        );
        Self {
            lifecycle: Arc::new(lifecycle),
            versions,
            stops,
        }
    }

    /// Unmanaged, with its key.
    fn unmanaged() -> Self {
        Self::new(false, true, Some(TokenType::Bot))
    }

    /// Unmanaged, its key to be discovered with a bot token.
    fn discovering() -> Self {
        Self::new(false, false, Some(TokenType::Bot))
    }

    fn begin(&self, operation: Operation) -> Transition {
        self.lifecycle.transition(operation)
    }

    fn last_version(&self) -> u64 {
        self.versions.lock().unwrap().last().copied().unwrap_or(0)
    }

    fn stops(&self) -> usize {
        self.stops.load(Ordering::SeqCst)
    }

    /// Runs `operation` to its end: phases run at once, fetches answered by `fetch`.
    fn drive(
        &self,
        operation: Operation,
        mut fetch: impl FnMut(RestRequest<serde_json::Value>) -> FetchOutcome,
    ) -> Result<(), LifecycleError> {
        let mut transition = self.begin(operation);
        loop {
            match transition.poll() {
                BotStep::Fetch(request) => transition.fetched(fetch(request)),
                BotStep::Run(phase) => transition.ran(run(phase)),
                BotStep::Wait(version) => panic!("{operation:?} waits at version {version}"),
                BotStep::Done(result) => return result,
            }
        }
    }

    /// Runs `operation` to its end; it must not fetch.
    fn run(&self, operation: Operation) -> Result<(), LifecycleError> {
        self.drive(operation, |_| panic!("no fetch expected"))
    }
}

type FetchOutcome = Result<Response<serde_json::Value>, RestError>;

/// `request` answered with 200 and `body`, as a call reports it.
fn answered(request: RestRequest<serde_json::Value>, body: &str) -> FetchOutcome {
    let rest = Rest::new(RestConfig::builder().token(TOKEN).build().unwrap());
    let mut limiter = rest.rate_limiter();
    let mut call = rest.call(request);
    let Step::Send(_) = call.poll(*NOW, &mut limiter) else {
        panic!("a fresh call sends");
    };
    let response = http::Response::builder()
        .status(200)
        .body(Bytes::from(body.to_owned()))
        .unwrap();
    call.on_response(*NOW, response, &mut limiter);
    match call.poll(*NOW, &mut limiter) {
        Step::Done(result) => result,
        other => panic!("expected Done, got {other:?}"),
    }
}

fn with_key(request: RestRequest<serde_json::Value>) -> FetchOutcome {
    answered(
        request,
        &format!(r#"{{"id":"1","verify_key":"{}"}}"#, hex::encode(key())),
    )
}

fn run(phase: RunPhase) -> PhaseResults {
    futures::executor::block_on(phase)
}

fn counting(counter: &Arc<AtomicUsize>) -> Callback {
    let counter = Arc::clone(counter);
    Callback::new(move || {
        let counter = Arc::clone(&counter);
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    })
}

fn failing(message: &'static str) -> Callback {
    Callback::new(move || async move { Err(CallbackError::new(message)) })
}

#[track_caller]
fn expect_run(step: BotStep) -> RunPhase {
    match step {
        BotStep::Run(phase) => phase,
        other => panic!("expected Run, got {other:?}"),
    }
}

#[track_caller]
fn expect_wait(step: BotStep) -> u64 {
    match step {
        BotStep::Wait(version) => version,
        other => panic!("expected Wait, got {other:?}"),
    }
}

#[track_caller]
fn expect_fetch(step: BotStep) -> RestRequest<serde_json::Value> {
    match step {
        BotStep::Fetch(request) => request,
        other => panic!("expected Fetch, got {other:?}"),
    }
}

#[track_caller]
fn expect_done(step: BotStep) -> Result<(), LifecycleError> {
    match step {
        BotStep::Done(result) => result,
        other => panic!("expected Done, got {other:?}"),
    }
}

// ---------------------------------------------------------------- start, close, join, run

#[test]
fn unmanaged_start_runs_the_startup_callbacks_then_runs() {
    let bot = Bot::unmanaged();
    let started = Arc::new(AtomicUsize::new(0));
    bot.lifecycle.add_startup_callback(counting(&started));
    assert!(!bot.lifecycle.is_managed());
    assert!(!bot.lifecycle.is_alive());

    let mut start = bot.begin(Operation::Start);
    let phase = expect_run(start.poll());
    assert!(!bot.lifecycle.is_alive(), "starting is not running yet");
    start.ran(run(phase));
    expect_done(start.poll()).unwrap();
    assert!(bot.lifecycle.is_alive());
    assert_eq!(started.load(Ordering::SeqCst), 1);
    assert_eq!(bot.lifecycle.public_key(), Some(key()));
    // Starting, then running: each change announced with a higher version.
    let versions = bot.versions.lock().unwrap().clone();
    assert_eq!(versions, [1, 2]);
}

#[test]
fn start_twice_is_already_running() {
    let bot = Bot::unmanaged();
    bot.run(Operation::Start).unwrap();
    assert!(matches!(
        bot.run(Operation::Start),
        Err(LifecycleError::AlreadyRunning)
    ));
    assert!(matches!(
        bot.run(Operation::Run),
        Err(LifecycleError::AlreadyRunning)
    ));
    assert!(bot.lifecycle.is_alive());
}

#[test]
fn close_and_join_of_a_stopped_bot_are_not_running() {
    let bot = Bot::unmanaged();
    assert!(matches!(
        bot.run(Operation::Close),
        Err(LifecycleError::NotRunning)
    ));
    assert!(matches!(
        bot.run(Operation::Join),
        Err(LifecycleError::NotRunning)
    ));
    assert_eq!(bot.stops(), 0);
    assert!(bot.versions.lock().unwrap().is_empty(), "nothing changed");
}

#[test]
fn close_runs_the_shutdown_callbacks_and_stops() {
    let bot = Bot::unmanaged();
    let closed = Arc::new(AtomicUsize::new(0));
    bot.lifecycle.add_shutdown_callback(counting(&closed));
    bot.run(Operation::Start).unwrap();
    assert_eq!(closed.load(Ordering::SeqCst), 0);

    let mut close = bot.begin(Operation::Close);
    let phase = expect_run(close.poll());
    assert!(bot.lifecycle.is_alive(), "closing counts as running");
    close.ran(run(phase));
    expect_done(close.poll()).unwrap();
    assert!(!bot.lifecycle.is_alive());
    assert_eq!(closed.load(Ordering::SeqCst), 1);
    assert_eq!(bot.stops(), 1);
    // Stopped: it can start again.
    bot.run(Operation::Start).unwrap();
}

#[test]
fn join_waits_until_the_bot_is_closed() {
    let bot = Bot::unmanaged();
    bot.run(Operation::Start).unwrap();
    let mut join = bot.begin(Operation::Join);
    let version = expect_wait(join.poll());
    assert_eq!(version, bot.last_version());
    // Nothing changed: still waiting on the same version.
    assert_eq!(expect_wait(join.poll()), version);
    bot.run(Operation::Close).unwrap();
    assert!(bot.last_version() > version);
    expect_done(join.poll()).unwrap();
}

#[test]
fn run_starts_then_returns_once_closed() {
    let bot = Bot::unmanaged();
    let started = Arc::new(AtomicUsize::new(0));
    bot.lifecycle.add_startup_callback(counting(&started));
    let mut running = bot.begin(Operation::Run);
    let phase = expect_run(running.poll());
    running.ran(run(phase));
    let version = expect_wait(running.poll());
    assert!(bot.lifecycle.is_alive());
    assert_eq!(started.load(Ordering::SeqCst), 1);
    bot.run(Operation::Close).unwrap();
    assert!(bot.last_version() > version);
    expect_done(running.poll()).unwrap();
}

#[test]
fn run_whose_start_fails_returns_the_failure() {
    let bot = Bot::unmanaged();
    bot.lifecycle.add_startup_callback(failing("no database"));
    let result = bot.run(Operation::Run);
    assert!(
        matches!(&result, Err(LifecycleError::Callback(message)) if message.contains("no database")),
        "{result:?}"
    );
    assert!(!bot.lifecycle.is_alive());
}

#[test]
fn start_while_closing_waits_then_starts() {
    let bot = Bot::unmanaged();
    bot.run(Operation::Start).unwrap();
    let mut close = bot.begin(Operation::Close);
    let phase = expect_run(close.poll());
    let mut start = bot.begin(Operation::Start);
    let version = expect_wait(start.poll());
    close.ran(run(phase));
    expect_done(close.poll()).unwrap();
    assert!(bot.last_version() > version);
    // Now stopped: the start goes on.
    let phase = expect_run(start.poll());
    start.ran(run(phase));
    expect_done(start.poll()).unwrap();
    assert!(bot.lifecycle.is_alive());
}

#[test]
fn close_while_starting_waits_then_closes() {
    let bot = Bot::unmanaged();
    let mut start = bot.begin(Operation::Start);
    let phase = expect_run(start.poll());
    let mut close = bot.begin(Operation::Close);
    expect_wait(close.poll());
    start.ran(run(phase));
    expect_done(start.poll()).unwrap();
    let phase = expect_run(close.poll());
    close.ran(run(phase));
    expect_done(close.poll()).unwrap();
    assert!(!bot.lifecycle.is_alive());
}

// ---------------------------------------------------------------- managed bots

#[test]
fn managed_bot_refuses_operations_by_hand() {
    let bot = Bot::new(true, true, Some(TokenType::Bot));
    assert!(bot.lifecycle.is_managed());
    for operation in [
        Operation::Start,
        Operation::Close,
        Operation::Join,
        Operation::Run,
    ] {
        assert!(
            matches!(bot.run(operation), Err(LifecycleError::Managed)),
            "{operation:?}"
        );
    }
    assert!(!bot.lifecycle.is_alive());
}

#[test]
fn managed_bot_follows_the_servers_lifespan() {
    let bot = Bot::new(true, true, Some(TokenType::Bot));
    let started = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    bot.lifecycle.add_startup_callback(counting(&started));
    bot.lifecycle.add_shutdown_callback(counting(&closed));
    bot.run(Operation::ServeStart).unwrap();
    assert!(bot.lifecycle.is_alive());
    assert!(matches!(
        bot.run(Operation::ServeStart),
        Err(LifecycleError::AlreadyRunning)
    ));
    bot.run(Operation::ServeClose).unwrap();
    assert!(!bot.lifecycle.is_alive());
    assert_eq!(
        (
            started.load(Ordering::SeqCst),
            closed.load(Ordering::SeqCst)
        ),
        (1, 1)
    );
    assert_eq!(bot.stops(), 1);
    assert!(matches!(
        bot.run(Operation::ServeClose),
        Err(LifecycleError::NotRunning)
    ));
}

#[test]
fn find_key_is_nothing_for_an_unmanaged_bot() {
    let bot = Bot::discovering();
    bot.run(Operation::FindKey).unwrap();
    assert_eq!(bot.lifecycle.public_key(), None);
}

#[test]
fn service_needs_the_key() {
    let drive = |_: Operation| -> crate::endpoint::BoxFuture<Result<(), LifecycleError>> {
        Box::pin(async { Ok(()) })
    };
    let bot = Bot::new(true, false, Some(TokenType::Bot));
    assert!(matches!(
        bot.lifecycle.service(drive),
        Err(LifecycleError::NotRunning)
    ));
    bot.drive(Operation::FindKey, with_key).unwrap();
    assert!(bot.lifecycle.service(drive).is_ok());
    assert!(bot.lifecycle.endpoint().is_some());
    assert!(!bot.lifecycle.is_alive(), "finding the key starts nothing");
}

// ---------------------------------------------------------------- key discovery

#[test]
fn start_discovers_the_key_then_starts() {
    let bot = Bot::discovering();
    assert!(bot.lifecycle.endpoint().is_none());
    let mut fetches = 0;
    bot.drive(Operation::Start, |request| {
        fetches += 1;
        assert_eq!(request.route().path(), "/applications/@me");
        with_key(request)
    })
    .unwrap();
    assert_eq!(fetches, 1);
    assert_eq!(bot.lifecycle.public_key(), Some(key()));
    assert!(bot.lifecycle.endpoint().is_some());
    // Known from now on: closing and starting again fetches nothing.
    bot.run(Operation::Close).unwrap();
    bot.run(Operation::Start).unwrap();
}

#[test]
fn bearer_token_discovers_through_oauth2() {
    let bot = Bot::new(false, false, Some(TokenType::Bearer));
    bot.drive(Operation::Start, |request| {
        assert_eq!(request.route().path(), "/oauth2/@me");
        answered(
            request,
            &format!(
                r#"{{"application":{{"verify_key":"{}"}}}}"#,
                hex::encode(key())
            ),
        )
    })
    .unwrap();
    assert_eq!(bot.lifecycle.public_key(), Some(key()));
}

#[test]
fn key_discovery_is_single_flight() {
    let bot = Bot::new(true, false, Some(TokenType::Bot));
    let mut first = bot.begin(Operation::FindKey);
    let mut second = bot.begin(Operation::FindKey);
    let request = expect_fetch(first.poll());
    let version = expect_wait(second.poll());
    assert_eq!(expect_wait(second.poll()), version, "still only one fetch");
    first.fetched(with_key(request));
    expect_done(first.poll()).unwrap();
    assert!(bot.last_version() > version);
    expect_done(second.poll()).unwrap();
    assert_eq!(bot.lifecycle.public_key(), Some(key()));
}

#[test]
fn second_start_waits_for_the_first_ones_discovery() {
    let bot = Bot::discovering();
    let mut first = bot.begin(Operation::Start);
    let request = expect_fetch(first.poll());
    let mut second = bot.begin(Operation::Start);
    expect_wait(second.poll());
    first.fetched(with_key(request));
    let phase = expect_run(first.poll());
    first.ran(run(phase));
    expect_done(first.poll()).unwrap();
    assert!(matches!(
        expect_done(second.poll()),
        Err(LifecycleError::AlreadyRunning)
    ));
}

#[test]
fn cancelled_discovery_is_taken_over_by_the_next_attempt() {
    let bot = Bot::new(true, false, Some(TokenType::Bot));
    let mut first = bot.begin(Operation::FindKey);
    let mut waiting = bot.begin(Operation::FindKey);
    expect_fetch(first.poll());
    let version = expect_wait(waiting.poll());
    drop(first);
    assert!(bot.last_version() > version, "the waiter is woken");
    // Not stuck fetching: the waiter fetches itself.
    let request = expect_fetch(waiting.poll());
    waiting.fetched(with_key(request));
    expect_done(waiting.poll()).unwrap();
    assert_eq!(bot.lifecycle.public_key(), Some(key()));
}

#[test]
fn cancelled_start_while_fetching_leaves_the_bot_stopped() {
    let bot = Bot::discovering();
    let mut start = bot.begin(Operation::Start);
    expect_fetch(start.poll());
    drop(start);
    assert!(!bot.lifecycle.is_alive());
    // The next start fetches again: neither waiting forever nor "already running".
    let mut fetches = 0;
    bot.drive(Operation::Start, |request| {
        fetches += 1;
        with_key(request)
    })
    .unwrap();
    assert_eq!(fetches, 1);
    assert!(bot.lifecycle.is_alive());
}

#[test]
fn failed_discovery_fails_the_start_and_the_next_one_fetches_again() {
    let bot = Bot::discovering();
    let result = bot.drive(Operation::Start, |_| Err(RestError::CallFinished));
    assert!(
        matches!(
            result,
            Err(LifecycleError::KeyDiscovery(KeyDiscoveryError::Rest(_)))
        ),
        "{result:?}"
    );
    assert!(!bot.lifecycle.is_alive());
    assert_eq!(bot.lifecycle.public_key(), None);
    bot.drive(Operation::Start, with_key).unwrap();
    assert!(bot.lifecycle.is_alive());
}

#[test]
fn unusable_verify_keys_fail_the_start() {
    let weak = format!("01{}", "00".repeat(31));
    for body in [
        r#"{"id":"1"}"#.to_owned(),
        r#"{"verify_key":"not hex"}"#.to_owned(),
        format!(r#"{{"verify_key":"{weak}"}}"#),
    ] {
        let bot = Bot::discovering();
        let result = bot.drive(Operation::Start, |request| answered(request, &body));
        assert!(
            matches!(
                result,
                Err(LifecycleError::KeyDiscovery(
                    KeyDiscoveryError::InvalidVerifyKey
                ))
            ),
            "{body}: {result:?}"
        );
        assert!(!bot.lifecycle.is_alive());
        assert!(bot.lifecycle.endpoint().is_none());
    }
}

#[test]
fn no_token_and_no_key_fails_every_start_without_sticking() {
    let bot = Bot::new(false, false, None);
    for _ in 0..2 {
        let result = bot.run(Operation::Start);
        assert!(
            matches!(
                result,
                Err(LifecycleError::KeyDiscovery(KeyDiscoveryError::NoToken))
            ),
            "{result:?}"
        );
        assert!(!bot.lifecycle.is_alive());
    }
}

// ---------------------------------------------------------------- callbacks

#[test]
fn callbacks_of_a_phase_run_concurrently() {
    let bot = Bot::unmanaged();
    let flag = Arc::new(AtomicBool::new(false));
    // The first waits for the second: run one after the other, it never ends.
    bot.lifecycle.add_startup_callback({
        let flag = Arc::clone(&flag);
        Callback::new(move || {
            let flag = Arc::clone(&flag);
            std::future::poll_fn(move |_| {
                if flag.load(Ordering::SeqCst) {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Pending
                }
            })
        })
    });
    bot.lifecycle.add_startup_callback({
        let flag = Arc::clone(&flag);
        Callback::new(move || {
            let flag = Arc::clone(&flag);
            async move {
                flag.store(true, Ordering::SeqCst);
                Ok(())
            }
        })
    });
    let mut start = bot.begin(Operation::Start);
    let mut phase = expect_run(start.poll());
    let mut cx = Context::from_waker(Waker::noop());
    let mut results = None;
    for _ in 0..3 {
        if let Poll::Ready(done) = Pin::new(&mut phase).poll(&mut cx) {
            results = Some(done);
            break;
        }
    }
    let results = results.expect("both callbacks progressed together");
    assert_eq!(results.len(), 2);
    start.ran(results);
    expect_done(start.poll()).unwrap();
}

#[test]
fn every_startup_callback_runs_and_every_failure_is_reported() {
    let bot = Bot::unmanaged();
    let ran = Arc::new(AtomicUsize::new(0));
    bot.lifecycle.add_startup_callback(failing("first broke"));
    bot.lifecycle.add_startup_callback(counting(&ran));
    bot.lifecycle.add_startup_callback(failing("third broke"));
    let result = bot.run(Operation::Start);
    let Err(LifecycleError::Callback(message)) = result else {
        panic!("expected a callback failure, got {result:?}");
    };
    assert!(message.contains("first broke"), "{message}");
    assert!(message.contains("third broke"), "{message}");
    assert_eq!(ran.load(Ordering::SeqCst), 1, "the others still ran");
    assert!(
        !bot.lifecycle.is_alive(),
        "a failed start leaves it stopped"
    );
    assert_eq!(bot.stops(), 0);
}

#[test]
fn panicking_callback_fails_the_phase() {
    let bot = Bot::unmanaged();
    bot.lifecycle
        .add_startup_callback(Callback::new(|| async { panic!("kaboom") }));
    let result = bot.run(Operation::Start);
    assert!(
        matches!(&result, Err(LifecycleError::Callback(_))),
        "{result:?}"
    );
    assert!(!bot.lifecycle.is_alive());
}

#[test]
fn failed_shutdown_still_stops_the_bot() {
    let bot = Bot::unmanaged();
    bot.lifecycle.add_shutdown_callback(failing("flush failed"));
    bot.run(Operation::Start).unwrap();
    let result = bot.run(Operation::Close);
    assert!(
        matches!(&result, Err(LifecycleError::Callback(message)) if message.contains("flush failed")),
        "{result:?}"
    );
    assert!(!bot.lifecycle.is_alive());
    assert_eq!(bot.stops(), 1);
}

#[test]
fn removed_callbacks_do_not_run_and_unknown_ids_are_refused() {
    let bot = Bot::unmanaged();
    let ran = Arc::new(AtomicUsize::new(0));
    let startup = bot.lifecycle.add_startup_callback(counting(&ran));
    let shutdown = bot.lifecycle.add_shutdown_callback(counting(&ran));
    assert_ne!(startup, shutdown);
    // Each kind only knows its own ids.
    assert_eq!(
        bot.lifecycle.remove_shutdown_callback(startup),
        Err(UnknownCallback(startup))
    );
    assert_eq!(
        bot.lifecycle.remove_startup_callback(shutdown),
        Err(UnknownCallback(shutdown))
    );
    bot.lifecycle.remove_startup_callback(startup).unwrap();
    assert_eq!(
        bot.lifecycle.remove_startup_callback(startup),
        Err(UnknownCallback(startup)),
        "removed twice"
    );
    bot.run(Operation::Start).unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    bot.lifecycle.remove_shutdown_callback(shutdown).unwrap();
    bot.run(Operation::Close).unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

// ---------------------------------------------------------------- cancelled transitions

#[test]
fn start_dropped_while_its_callbacks_run_leaves_the_bot_stopped() {
    let bot = Bot::unmanaged();
    let mut start = bot.begin(Operation::Start);
    let _phase = expect_run(start.poll());
    let before = bot.last_version();
    drop(start);
    assert!(!bot.lifecycle.is_alive());
    assert!(bot.last_version() > before, "waiters are told");
    bot.run(Operation::Start).unwrap();
}

#[test]
fn close_dropped_while_its_callbacks_run_still_stops_the_bot() {
    let bot = Bot::unmanaged();
    bot.run(Operation::Start).unwrap();
    let mut close = bot.begin(Operation::Close);
    let _phase = expect_run(close.poll());
    drop(close);
    assert!(!bot.lifecycle.is_alive());
    assert_eq!(bot.stops(), 1);
}

#[test]
fn finished_transition_dropped_changes_nothing() {
    let bot = Bot::unmanaged();
    bot.run(Operation::Start).unwrap();
    let before = bot.last_version();
    let mut join = bot.begin(Operation::Join);
    expect_wait(join.poll());
    drop(join);
    assert!(bot.lifecycle.is_alive());
    assert_eq!(bot.last_version(), before);
}

#[test]
fn transition_polled_again_while_its_fetch_is_out_hands_the_fetch_back() {
    let bot = Bot::discovering();
    let mut start = bot.begin(Operation::Start);
    expect_fetch(start.poll());
    // A driver that polls again instead of reporting gets an error...
    assert!(matches!(
        expect_done(start.poll()),
        Err(LifecycleError::NotRunning)
    ));
    drop(start);
    // ...and the bot is not left starting and fetching forever.
    assert!(!bot.lifecycle.is_alive());
    let mut next = bot.begin(Operation::Start);
    expect_fetch(next.poll());
}

#[test]
fn transition_polled_again_while_its_callbacks_run_leaves_the_bot_stopped() {
    let bot = Bot::unmanaged();
    let mut start = bot.begin(Operation::Start);
    let _phase = expect_run(start.poll());
    assert!(matches!(
        expect_done(start.poll()),
        Err(LifecycleError::NotRunning)
    ));
    drop(start);
    bot.run(Operation::Start).unwrap();
    let mut close = bot.begin(Operation::Close);
    let _phase = expect_run(close.poll());
    assert!(matches!(
        expect_done(close.poll()),
        Err(LifecycleError::NotRunning)
    ));
    drop(close);
    assert!(!bot.lifecycle.is_alive());
    assert_eq!(bot.stops(), 1);
    bot.run(Operation::Start).unwrap();
}

#[test]
fn failed_discovery_lets_a_waiting_start_fetch_itself() {
    let bot = Bot::new(true, false, Some(TokenType::Bot));
    let mut first = bot.begin(Operation::FindKey);
    let mut second = bot.begin(Operation::FindKey);
    expect_fetch(first.poll());
    expect_wait(second.poll());
    first.fetched(Err(RestError::CallFinished));
    assert!(matches!(
        expect_done(first.poll()),
        Err(LifecycleError::KeyDiscovery(_))
    ));
    let request = expect_fetch(second.poll());
    second.fetched(with_key(request));
    expect_done(second.poll()).unwrap();
}

#[test]
fn managed_serve_start_discovers_the_key() {
    let bot = Bot::new(true, false, Some(TokenType::Bot));
    let mut fetches = 0;
    bot.drive(Operation::ServeStart, |request| {
        fetches += 1;
        with_key(request)
    })
    .unwrap();
    assert_eq!(fetches, 1);
    assert!(bot.lifecycle.is_alive());
    assert_eq!(bot.lifecycle.public_key(), Some(key()));
}
