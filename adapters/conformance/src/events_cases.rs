//! The Webhook Events cases: the demo service serves them at `/events`
//! ([`DEMO_EVENTS_PATH`]); a probe service has event handlers that wait on a gate, fail
//! or panic. [`suite!`](crate::suite) makes a `#[test]` of each.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};

use yuyo_core::endpoint::{
    Endpoint, EndpointConfig, EventContext, EventHandlers, EventKind, HandlerError,
};
use yuyo_core::service::Service;

use crate::Harness;
use crate::cases::{
    TEXT, ask, assert_text, connect, demo_service, finish, service_for, start, stop_ok, watcher,
};
use crate::client::{IO_TIMEOUT, Request, Response};
use crate::demo::{DEMO_EVENTS_PATH, demo_handlers, demo_verifier};
use crate::fixtures::{self, events};
use crate::gate::Gate;

/// `POST /events` of `body`, signed like Discord signs it.
fn event(body: &[u8]) -> Request {
    Request::signed(body).target(DEMO_EVENTS_PATH)
}

#[track_caller]
fn assert_acknowledged(response: &Response) {
    assert_eq!(response.status, 204, "status of {response:?}");
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "{response:?}"
    );
    assert!(response.body.is_empty(), "{response:?}");
}

/// A type 0 PING on the events path: 204 with a `Content-Type` and no body.
pub fn events_ping_204<H: Harness>() {
    let running = start::<H>(demo_service());
    assert_acknowledged(&ask(running.addr, &event(events::PING)));
    stop_ok(running);
}

/// Every event fixture is acknowledged with 204, on one keep-alive connection, and
/// interactions at `/` are served as before next to them.
pub fn events_fixtures_204<H: Harness>() {
    let running = start::<H>(demo_service());
    let mut client = connect(running.addr);
    for (name, body) in events::ALL {
        let response = client.roundtrip(&event(body)).expect(name);
        assert_acknowledged(&response);
        assert!(!response.closes(), "{name}: the connection stays open");
    }
    let pong = client.roundtrip(&Request::signed(fixtures::PING)).unwrap();
    assert_eq!(pong.status, 200);
    assert_eq!(pong.text(), r#"{"type":1}"#);
    drop(client);
    stop_ok(running);
}

/// The events path has the interactions' checks: 401 for a bad signature, 405 for
/// another method, 415 for another media type, 400 with a precise message for a body
/// that is not an envelope.
pub fn events_checks<H: Harness>() {
    let running = start::<H>(demo_service());
    let forged = event(events::ENTITLEMENT_CREATE)
        .body(events::UNKNOWN_EVENT)
        .set("Content-Length", events::UNKNOWN_EVENT.len().to_string());
    assert_text(
        &ask(running.addr, &forged),
        401,
        "Invalid request signature",
    );
    let get = event(events::PING).method("GET");
    assert_eq!(ask(running.addr, &get).status, 405);
    let text = event(events::PING).set("Content-Type", "text/plain");
    assert_eq!(ask(running.addr, &text).status, 415);
    assert_text(
        &ask(running.addr, &event(b"[]")),
        400,
        "Body is not a JSON object",
    );
    let no_event = br#"{"version":1,"application_id":"1","type":1}"#;
    assert_text(
        &ask(running.addr, &event(no_event)),
        400,
        "Invalid webhook event: `event` is missing or not an object",
    );
    stop_ok(running);
}

/// Without an events path, `/events` is 404 like any other unknown path.
pub fn events_path_off_404<H: Harness>() {
    let endpoint = Endpoint::new(EndpointConfig::new(demo_verifier()), demo_handlers());
    let running = start::<H>(service_for(endpoint));
    let response = ask(running.addr, &event(events::PING));
    assert_eq!(response.status, 404, "{response:?}");
    assert_eq!(response.header("content-type"), Some(TEXT));
    stop_ok(running);
}

/// What the probe's event handlers report.
type Reports = Arc<Mutex<mpsc::Sender<String>>>;

/// The demo endpoint with event handlers that report, wait on `gate`, fail or panic:
/// `ENTITLEMENT_CREATE` waits for the gate, `APPLICATION_DEAUTHORIZED` panics,
/// `APPLICATION_AUTHORIZED` fails, the catch-all reports the event's name.
fn probe_service(gate: &Gate) -> (Service, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel();
    let reports: Reports = Arc::new(Mutex::new(tx));
    let mut handlers = EventHandlers::new();
    let (waiting, gate) = (Arc::clone(&reports), gate.clone());
    handlers
        .on(EventKind::EntitlementCreate, move |ctx: EventContext| {
            let (reports, gate) = (Arc::clone(&waiting), gate.clone());
            async move {
                report(&reports, format!("{} started", ctx.name()));
                gate.wait().await;
                report(&reports, format!("{} done", ctx.name()));
                Ok(())
            }
        })
        .unwrap()
        .on(EventKind::ApplicationDeauthorized, |_| async {
            panic!("a broken event handler")
        })
        .unwrap()
        .on(EventKind::ApplicationAuthorized, |_| async {
            Err(HandlerError::msg("no database"))
        })
        .unwrap()
        .on_any(move |ctx| {
            let reports = Arc::clone(&reports);
            async move {
                report(&reports, ctx.name().to_owned());
                Ok(())
            }
        })
        .unwrap();
    let config = EndpointConfig::new(demo_verifier()).events_path(DEMO_EVENTS_PATH);
    let endpoint = Endpoint::with_events(config, demo_handlers(), handlers);
    (service_for(endpoint), rx)
}

fn report(reports: &Reports, message: String) {
    let _ = reports
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .send(message);
}

#[track_caller]
fn expect_report(reports: &mpsc::Receiver<String>, expected: &str) {
    match reports.recv_timeout(IO_TIMEOUT) {
        Ok(report) => assert_eq!(report, expected),
        Err(_) => panic!("no {expected:?} within {IO_TIMEOUT:?}"),
    }
}

/// The 204 comes while the event's handler still waits (its gate is closed), and the
/// same connection is served meanwhile; the handler then finishes.
pub fn events_handler_runs_after_the_response<H: Harness>() {
    let gate = Gate::new();
    let (service, reports) = probe_service(&gate);
    let running = start::<H>(service);
    let mut client = connect(running.addr);
    let response = client
        .roundtrip(&event(events::ENTITLEMENT_CREATE))
        .unwrap();
    assert_acknowledged(&response);
    expect_report(&reports, "ENTITLEMENT_CREATE started");
    let response = client.roundtrip(&event(events::UNKNOWN_EVENT)).unwrap();
    assert_acknowledged(&response);
    expect_report(&reports, "SOMETHING_NEW");
    assert!(!gate.is_open());
    gate.open();
    expect_report(&reports, "ENTITLEMENT_CREATE done");
    drop(client);
    stop_ok(running);
}

/// A failing and a panicking event handler: still 204, and the connection and the
/// server go on.
pub fn events_failing_handlers_still_204<H: Harness>() {
    let gate = Gate::new();
    gate.open();
    let (service, reports) = probe_service(&gate);
    let running = start::<H>(service);
    let mut client = connect(running.addr);
    for body in [
        events::APPLICATION_DEAUTHORIZED,
        events::APPLICATION_AUTHORIZED,
        events::APPLICATION_DEAUTHORIZED,
    ] {
        assert_acknowledged(&client.roundtrip(&event(body)).unwrap());
    }
    assert_acknowledged(&client.roundtrip(&event(events::UNKNOWN_EVENT)).unwrap());
    expect_report(&reports, "SOMETHING_NEW");
    let pong = client.roundtrip(&Request::signed(fixtures::PING)).unwrap();
    assert_eq!(pong.status, 200);
    drop(client);
    stop_ok(running);
}

/// A graceful shutdown waits for a running event handler before the shutdown callbacks.
pub fn events_shutdown_waits_for_the_handler<H: Harness>() {
    let gate = Gate::new();
    let (service, reports) = probe_service(&gate);
    let (tx, callback_ran) = mpsc::channel();
    let tx = Arc::new(Mutex::new(tx));
    let service = service.with_shutdown_callback(move || {
        let tx = Arc::clone(&tx);
        async move {
            let _ = tx.lock().unwrap_or_else(PoisonError::into_inner).send(());
            Ok(())
        }
    });
    let mut running = start::<H>(service);
    let mut idle = watcher(running.addr);
    assert_acknowledged(&ask(running.addr, &event(events::ENTITLEMENT_CREATE)));
    expect_report(&reports, "ENTITLEMENT_CREATE started");
    running.trigger_shutdown();
    idle.expect_closed();
    assert!(
        callback_ran.try_recv().is_err(),
        "the shutdown callbacks wait for the event handler"
    );
    gate.open();
    expect_report(&reports, "ENTITLEMENT_CREATE done");
    if let Err(error) = finish(running, false) {
        panic!("serve returned an error: {error}");
    }
    assert!(callback_ran.try_recv().is_ok(), "the shutdown callback ran");
}
