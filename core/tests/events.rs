//! Discord Webhook Events on the endpoint's second path: the same checks and
//! verification as interactions, PING, typed dispatch, and handlers that run only after
//! the 204.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{NOW, TIMESTAMP, config, discord_headers, handlers, head, outcome, sign};
use yuyo_core::endpoint::{
    Endpoint, EventContext, EventHandlers, EventKind, Finished, HandlerError, Immediate, Rejection,
    WebhookEvent,
};

const EVENTS: &str = "/events";

fn event_fixture(name: &str) -> Bytes {
    let path = format!(
        "{}/fixtures/webhook_events/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

/// What the handlers saw, in order.
type Seen = Arc<Mutex<Vec<(Option<EventKind>, EventContext)>>>;

/// Handlers for every known kind and a catch-all, recording what they get.
fn recording() -> (EventHandlers, Seen) {
    let seen: Seen = Arc::default();
    let mut events = EventHandlers::new();
    for kind in EventKind::ALL {
        let seen = Arc::clone(&seen);
        events
            .on(kind, move |ctx| {
                let seen = Arc::clone(&seen);
                async move {
                    seen.lock().unwrap().push((Some(kind), ctx));
                    Ok(())
                }
            })
            .unwrap();
    }
    let all = Arc::clone(&seen);
    events
        .on_any(move |ctx| {
            let seen = Arc::clone(&all);
            async move {
                seen.lock().unwrap().push((None, ctx));
                Ok(())
            }
        })
        .unwrap();
    (events, seen)
}

fn endpoint_with(events: EventHandlers) -> Endpoint {
    Endpoint::with_events(config().events_path(EVENTS), handlers(), events)
}

fn receive(endpoint: &Endpoint, path: &str, body: &[u8]) -> Finished {
    let head = head("POST", path, &discord_headers(body));
    endpoint.receive(&head, [Bytes::copy_from_slice(body)], NOW)
}

#[track_caller]
fn assert_acknowledged(response: &http::Response<yuyo_core::endpoint::ResponseBody>) {
    assert_eq!(response.status(), 204);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert!(response.headers().get("content-length").is_none());
    assert!(response.body().is_empty());
}

#[track_caller]
fn rejected(finished: Finished) -> Rejection {
    match finished {
        Finished::Respond(Immediate::Rejected(rejection)) => rejection,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn ping_is_204_with_a_content_type_and_no_handler() {
    let (events, seen) = recording();
    let endpoint = endpoint_with(events);
    let finished = receive(&endpoint, EVENTS, &event_fixture("ping"));
    let Finished::Respond(immediate) = finished else {
        panic!("a PING never reaches a handler: {finished:?}")
    };
    assert_eq!(immediate, Immediate::Acknowledge);
    assert_eq!(immediate.status(), 204);
    assert_acknowledged(&immediate.into_response());
    assert!(seen.lock().unwrap().is_empty());
}

/// Acknowledges `finished` (an event with a handler) and runs its after-work.
fn acknowledge_and_run(finished: Finished) {
    let Finished::Event(event) = finished else {
        panic!("expected an event dispatch, got {finished:?}")
    };
    let done = event.acknowledge();
    assert_acknowledged(&done.response);
    futures::executor::block_on(done.after.expect("the handler is the after-work"));
}

#[test]
fn each_fixture_reaches_its_handler_typed() {
    let (events, seen) = recording();
    let endpoint = endpoint_with(events);
    for name in [
        "application_authorized",
        "application_authorized_user_install",
        "application_deauthorized",
        "entitlement_create",
        "unknown_event",
    ] {
        let body = event_fixture(name);
        acknowledge_and_run(receive(&endpoint, EVENTS, &body));
        let (slot, ctx) = seen.lock().unwrap().pop().expect(name);
        assert_eq!(ctx.raw_body(), &body, "{name}");
        assert_eq!(ctx.application_id().get(), 1_178_812_346_128_379_904);
        assert_eq!(
            slot,
            ctx.kind(),
            "{name}: the kind's own handler, else the catch-all"
        );
        check_typed(name, &ctx);
    }
}

fn check_typed(name: &str, ctx: &EventContext) {
    match (name, ctx.event()) {
        ("application_authorized", WebhookEvent::ApplicationAuthorized(data)) => {
            assert_eq!(ctx.name(), "APPLICATION_AUTHORIZED");
            assert_eq!(ctx.timestamp(), "2026-11-30T18:02:11.489412");
            assert_eq!(data.user.name, "nelly");
            assert_eq!(data.integration_type, Some(0));
            assert_eq!(data.scopes, ["applications.commands", "bot"]);
            assert_eq!(data.guild_id().unwrap().get(), 400_000_000_000_000_001);
        }
        ("application_authorized_user_install", WebhookEvent::ApplicationAuthorized(data)) => {
            assert_eq!(data.user.name, "mika");
            assert_eq!(data.integration_type, Some(1));
            assert_eq!(data.guild, None);
            assert_eq!(data.guild_id(), None);
        }
        ("application_deauthorized", WebhookEvent::ApplicationDeauthorized(data)) => {
            assert_eq!(data.user.id.get(), 300_000_000_000_000_002);
        }
        ("entitlement_create", WebhookEvent::EntitlementCreate(entitlement)) => {
            assert_eq!(entitlement.id.get(), 500_000_000_000_000_001);
            assert_eq!(entitlement.sku_id.get(), 600_000_000_000_000_001);
            assert_eq!(entitlement.user_id.unwrap().get(), 300_000_000_000_000_001);
            assert!(!entitlement.deleted);
        }
        ("unknown_event", WebhookEvent::Unknown(data)) => {
            assert_eq!(ctx.name(), "SOMETHING_NEW");
            assert_eq!(ctx.kind(), None);
            assert_eq!(data, &serde_json::json!({"anything": [1, 2, 3]}));
        }
        (name, event) => panic!("{name}: unexpected {event:?}"),
    }
}

#[test]
fn events_without_a_handler_are_acknowledged() {
    // No catch-all: an unknown type, and a known kind without a handler.
    let mut events = EventHandlers::new();
    events
        .on(EventKind::EntitlementCreate, |_| async { Ok(()) })
        .unwrap();
    let endpoint = endpoint_with(events);
    for name in ["unknown_event", "application_deauthorized"] {
        let finished = receive(&endpoint, EVENTS, &event_fixture(name));
        let Finished::Respond(immediate) = finished else {
            panic!("{name}: no handler to run, got {finished:?}")
        };
        assert_eq!(immediate, Immediate::Acknowledge, "{name}");
        assert_acknowledged(&immediate.into_response());
    }
    // And with no event handlers at all.
    let endpoint = endpoint_with(EventHandlers::new());
    let finished = receive(&endpoint, EVENTS, &event_fixture("entitlement_create"));
    assert!(
        matches!(finished, Finished::Respond(Immediate::Acknowledge)),
        "{finished:?}"
    );
}

#[test]
fn the_handler_runs_only_after_the_response() {
    let ran = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&ran);
    let mut events = EventHandlers::new();
    events
        .on_any(move |_| {
            // Even the handler's synchronous part waits for the after-work.
            flag.store(true, Ordering::SeqCst);
            async { Ok(()) }
        })
        .unwrap();
    let endpoint = endpoint_with(events);
    let Finished::Event(event) = receive(&endpoint, EVENTS, &event_fixture("unknown_event")) else {
        panic!("an event with a handler")
    };
    let done = event.acknowledge();
    assert_acknowledged(&done.response);
    assert!(
        !ran.load(Ordering::SeqCst),
        "nothing ran before the response"
    );
    futures::executor::block_on(done.after.unwrap());
    assert!(ran.load(Ordering::SeqCst));
}

#[test]
fn failing_and_panicking_handlers_do_not_change_the_204() {
    let mut events = EventHandlers::new();
    events
        .on(EventKind::ApplicationAuthorized, |_| async {
            Err(HandlerError::msg("no database"))
        })
        .unwrap()
        .on(EventKind::ApplicationDeauthorized, |_| async {
            panic!("handler panicked while polled")
        })
        .unwrap()
        .on(EventKind::EntitlementCreate, |_| -> std::future::Ready<_> {
            panic!("handler panicked before returning its future")
        })
        .unwrap();
    let endpoint = endpoint_with(events);
    for name in [
        "application_authorized",
        "application_deauthorized",
        "entitlement_create",
    ] {
        // The after-work completes (the failure is logged) instead of unwinding.
        acknowledge_and_run(receive(&endpoint, EVENTS, &event_fixture(name)));
    }
}

#[test]
fn same_checks_and_verification_as_interactions() {
    let endpoint = endpoint_with(recording().0);
    let body = event_fixture("entitlement_create");
    let mut headers = discord_headers(&body);
    // A valid signature over other bytes.
    headers[4].1 = sign(TIMESTAMP.as_bytes(), b"{}").into_bytes();
    let head = head("POST", EVENTS, &headers);
    let finished = endpoint.receive(&head, [body.clone()], NOW);
    assert_eq!(rejected(finished), Rejection::InvalidSignature);

    let get = common::head("GET", EVENTS, &discord_headers(&body));
    assert_eq!(
        rejected(endpoint.receive(&get, [body.clone()], NOW)),
        Rejection::MethodNotAllowed
    );
    let mut text = discord_headers(&body);
    text[2].1 = b"text/plain".to_vec();
    let text = common::head("POST", EVENTS, &text);
    assert_eq!(
        rejected(endpoint.receive(&text, [body.clone()], NOW)),
        Rejection::UnsupportedMediaType
    );
    // The query is ignored, as on the interactions path.
    let finished = receive(&endpoint, "/events?x=1", &body);
    assert!(matches!(finished, Finished::Event(_)), "{finished:?}");
    // The body limit is the endpoint's.
    let small = Endpoint::with_events(
        config().events_path(EVENTS).max_body_size(64),
        handlers(),
        EventHandlers::new(),
    );
    assert_eq!(
        rejected(receive(&small, EVENTS, &body)),
        Rejection::PayloadTooLarge(64)
    );
}

#[test]
fn timestamp_window_applies_to_events() {
    let endpoint = Endpoint::with_events(
        config()
            .events_path(EVENTS)
            .timestamp_window(Duration::from_secs(300)),
        handlers(),
        EventHandlers::new(),
    );
    let body = event_fixture("ping");
    let head = head("POST", EVENTS, &discord_headers(&body));
    assert_eq!(
        rejected(endpoint.receive(&head, [body.clone()], NOW + 3600)),
        Rejection::TimestampOutsideWindow
    );
    let finished = endpoint.receive(&head, [body], NOW + 10);
    assert!(matches!(
        finished,
        Finished::Respond(Immediate::Acknowledge)
    ));
}

#[test]
fn batch_verification_serves_events_too() {
    let (events, _) = recording();
    let endpoint = endpoint_with(events);
    let tickets: Vec<_> = ["entitlement_create", "ping", "unknown_event"]
        .into_iter()
        .map(|name| {
            let body = event_fixture(name);
            let head = head("POST", EVENTS, &discord_headers(&body));
            let exchange = endpoint.begin(&head).unwrap().push(body).unwrap();
            exchange.end().unwrap().enqueue(NOW)
        })
        .collect();
    let answers: Vec<_> = tickets
        .into_iter()
        .map(futures::executor::block_on)
        .collect();
    assert!(matches!(answers[0], Finished::Event(_)), "{:?}", answers[0]);
    assert!(matches!(
        answers[1],
        Finished::Respond(Immediate::Acknowledge)
    ));
    assert!(matches!(answers[2], Finished::Event(_)), "{:?}", answers[2]);
    assert!(endpoint.verify_queue().stats().batched_signatures >= 3);
}

#[test]
fn malformed_envelopes_get_a_precise_400() {
    let endpoint = endpoint_with(recording().0);
    let cases: &[(&[u8], u16, &str)] = &[
        (b"not json", 400, "Body is not a JSON object"),
        (b"[1]", 400, "Body is not a JSON object"),
        (
            br#"{"version":1}"#,
            400,
            "Invalid webhook event: `type` is missing or not an integer",
        ),
        (
            br#"{"type":"1"}"#,
            400,
            "Invalid webhook event: `type` is missing or not an integer",
        ),
        (
            br#"{"type":1,"event":{"type":"X","timestamp":"t"}}"#,
            400,
            "Invalid webhook event: `application_id` is missing or not a snowflake string",
        ),
        (
            br#"{"type":1,"application_id":"1"}"#,
            400,
            "Invalid webhook event: `event` is missing or not an object",
        ),
        (
            br#"{"type":1,"application_id":"1","event":{"type":7,"timestamp":"t"}}"#,
            400,
            "Invalid webhook event: `event.type` is missing or not a string",
        ),
        (
            br#"{"type":1,"application_id":"1","event":{"type":"X"}}"#,
            400,
            "Invalid webhook event: `event.timestamp` is missing or not a string",
        ),
        (br#"{"type":7}"#, 501, "Unsupported webhook event type 7"),
        (
            br#"{"type":1,"application_id":"1","event":{"type":"ENTITLEMENT_CREATE","timestamp":"t","data":{"id":"x"}}}"#,
            500,
            "Could not read the ENTITLEMENT_CREATE event",
        ),
    ];
    for &(body, status, message) in cases {
        let head = head("POST", EVENTS, &discord_headers(body));
        let response = match endpoint.receive(&head, [Bytes::copy_from_slice(body)], NOW) {
            Finished::Respond(immediate) => immediate.into_response(),
            other => panic!("{}: {other:?}", String::from_utf8_lossy(body)),
        };
        let outcome = outcome(response, false);
        assert_eq!(outcome.status, status, "{}", String::from_utf8_lossy(body));
        assert_eq!(outcome.text(), message);
        assert_eq!(
            outcome.content_type.as_deref(),
            Some("text/plain; charset=utf-8")
        );
    }
}

#[test]
fn without_an_events_path_events_are_404_and_interactions_unchanged() {
    let (events, seen) = recording();
    // Event handlers but no events path: nothing is served there.
    let endpoint = Endpoint::with_events(config(), handlers(), events);
    let body = event_fixture("entitlement_create");
    assert_eq!(
        rejected(receive(&endpoint, EVENTS, &body)),
        Rejection::NotFound
    );
    assert!(seen.lock().unwrap().is_empty());
    // An event body on the interactions path is read as an interaction (type 1: PING).
    let finished = receive(&endpoint, "/", &body);
    assert!(matches!(finished, Finished::Respond(Immediate::Pong)));
    // Interactions are served as before, with or without an events path.
    for endpoint in [endpoint, endpoint_with(EventHandlers::new())] {
        let echo = common::fixture("command_echo");
        let finished = receive(&endpoint, "/", &echo);
        assert!(matches!(finished, Finished::Dispatch(_)), "{finished:?}");
        let ping = common::fixture("ping");
        assert!(matches!(
            receive(&endpoint, "/", &ping),
            Finished::Respond(Immediate::Pong)
        ));
    }
}

#[test]
fn events_path_is_normalised_like_the_path() {
    let config = config().events_path("hooks/events?x=1");
    assert_eq!(config.get_events_path(), Some("/hooks/events"));
    assert_eq!(common::config().get_events_path(), None);
}

/// A request as Discord sends it, to the events path.
fn event_request(body: &[u8]) -> Vec<u8> {
    let mut request = common::driver::request(body);
    request.splice(0..7, b"POST /events ".iter().copied());
    request
}

#[test]
fn a_session_writes_the_204_before_the_handler_runs() {
    let ran_at = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&ran_at);
    let mut events = EventHandlers::new();
    events
        .on(EventKind::EntitlementCreate, move |ctx| {
            let seen = Arc::clone(&seen);
            async move {
                seen.lock().unwrap().push(ctx.name().to_owned());
                Ok(())
            }
        })
        .unwrap()
        .on(EventKind::ApplicationDeauthorized, |_| async {
            panic!("a broken handler")
        })
        .unwrap();
    let mut d = common::driver::Driver::new(endpoint_with(events));
    let mut input = event_request(&event_fixture("entitlement_create"));
    input.extend(event_request(&event_fixture("application_deauthorized")));
    input.extend(event_request(&event_fixture("ping")));
    input.extend(common::driver::request(&common::fixture("ping")));
    assert!(d.receive(&input).read);
    let responses = d.responses();
    let statuses: Vec<u16> = responses.iter().map(|r| r.0).collect();
    assert_eq!(statuses, [204, 204, 204, 200]);
    for (_, headers, body) in &responses[..3] {
        assert!(body.is_empty());
        assert!(
            headers
                .iter()
                .any(|(name, value)| name == "content-type" && value == "application/json"),
            "{headers:?}"
        );
    }
    assert_eq!(*ran_at.lock().unwrap(), ["ENTITLEMENT_CREATE"]);
    // Each handler started only once its 204 had been written.
    assert_eq!(d.afters.len(), 2);
    let text = String::from_utf8_lossy(&d.out);
    let first_end = text.find("\r\n\r\n").unwrap() + 4;
    assert!(d.afters[0] >= first_end, "{:?} {first_end}", d.afters);
}
