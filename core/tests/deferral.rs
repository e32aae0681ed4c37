//! Automatic deferral and oversized-file routing of `server::Session`, driven by the
//! fake-clock driver (`common::driver`): the deadline in the session's wait, the exact
//! bytes on the connection when the deadline passes with a handler in flight, no second
//! HTTP answer after a deferral, and the REST replies the session hands out.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::type_complexity,
    missing_docs
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::driver::{Driver, request};
use common::fixture;
use yuyo_core::deferral::{
    DEFAULT_DEFER_AFTER, DeferError, Deferred, ReplyRouting, RestCall, RestReply, Target,
};
use yuyo_core::endpoint::{Endpoint, InteractionKind, Reply};
use yuyo_core::http1;
use yuyo_core::multipart::FileSource;
use yuyo_core::rest::RequestBody;
use yuyo_core::server::{Input, Session, Wait};

/// A driver with `routing` that keeps handlers in flight until `finish_handler`.
fn driver(endpoint: Endpoint, routing: ReplyRouting) -> Driver {
    let mut d = Driver::new(endpoint);
    d.session.set_reply_routing(routing);
    d.run_handlers = false;
    d
}

/// Feeds `body` as a request, now; its handler is left in flight. Returns the wait.
fn dispatch(d: &mut Driver, body: &[u8]) -> Wait {
    let wait = d.receive(&request(body));
    assert!(d.handler.is_some(), "expected a handler in flight");
    wait
}

/// Lets `by` pass; returns what was written meanwhile.
fn written_after(d: &mut Driver, by: Duration) -> Vec<u8> {
    let before = d.out.len();
    d.advance(by);
    d.out[before..].to_vec()
}

/// Runs the handler in flight to completion; returns what was written meanwhile.
fn finish(d: &mut Driver) -> Vec<u8> {
    let before = d.out.len();
    d.finish_handler();
    d.out[before..].to_vec()
}

/// The only REST reply queued so far.
fn only_rest_reply(d: &mut Driver) -> RestReply {
    assert_eq!(d.rest.len(), 1, "expected exactly one REST reply");
    d.rest.pop().unwrap()
}

const DEFERRED_5: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 10\r\n\r\n{\"type\":5}";
const DEFERRED_6: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 10\r\n\r\n{\"type\":6}";

fn json_of(body: &RequestBody) -> serde_json::Value {
    match body {
        RequestBody::Json(json) => serde_json::from_slice(json).unwrap(),
        other => panic!("expected JSON, got {other:?}"),
    }
}

#[test]
fn deadline_is_data_and_only_while_a_handler_runs() {
    // The same exchanges with routing enabled and disabled: the waits differ only while
    // a (non-autocomplete) handler runs.
    let mut on = driver(common::endpoint(), ReplyRouting::enabled());
    let mut off = driver(common::endpoint(), ReplyRouting::disabled());
    // On the same clock.
    off.now = on.now;
    off.session = Session::new(common::endpoint(), http1::Config::default(), on.now);
    let idle = on.run();
    assert_eq!(idle, off.run());
    assert_ne!(idle.deadline, Some(on.now.instant + DEFAULT_DEFER_AFTER));

    let start: Instant = on.now.instant;
    let wait = dispatch(&mut on, &fixture("command_echo"));
    assert_eq!(wait.deadline, Some(start + DEFAULT_DEFER_AFTER));
    assert_eq!(dispatch(&mut off, &fixture("command_echo")).deadline, None);

    let wait = on.finish_handler();
    assert_eq!(wait, off.finish_handler());
    assert_ne!(wait.deadline, Some(start + DEFAULT_DEFER_AFTER));
    assert_eq!(on.statuses(), [200]);
    assert!(on.rest.is_empty());

    // Autocomplete is never deferred: no deadline in its wait, and nothing is sent when
    // the deferral deadline (or more) passes.
    let wait = dispatch(&mut on, &fixture("autocomplete"));
    assert_eq!(wait.deadline, None, "{wait:?}");
    assert!(written_after(&mut on, DEFAULT_DEFER_AFTER).is_empty());
    assert!(written_after(&mut on, Duration::from_secs(10)).is_empty());
    let out = String::from_utf8(finish(&mut on)).unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.contains(r#""type":8"#), "{out}");
    assert!(on.rest.is_empty());
    // ... and the deferral itself refuses it.
    let interaction = serde_json::from_slice(&fixture("autocomplete")).unwrap();
    let target = Target::new(InteractionKind::Autocomplete, &interaction);
    assert_eq!(Deferred::new(target).unwrap_err(), DeferError::Autocomplete);
}

#[test]
fn the_deadline_counts_from_the_head() {
    let mut d = driver(common::endpoint(), ReplyRouting::enabled());
    let input = request(&fixture("command_echo"));
    let split = input.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head_at = d.now.instant;
    d.receive(&input[..split]);
    assert!(d.handler.is_none());
    d.now.instant += Duration::from_secs(1);
    let wait = d.receive(&input[split..]);
    assert!(d.handler.is_some());
    assert_eq!(wait.deadline, Some(head_at + DEFAULT_DEFER_AFTER));
    // Not before the deadline; at it.
    assert!(written_after(&mut d, Duration::from_millis(1499)).is_empty());
    assert_eq!(written_after(&mut d, Duration::from_millis(1)), DEFERRED_5);
}

#[test]
fn disabled_routing_never_defers() {
    let mut d = driver(common::endpoint(), ReplyRouting::disabled());
    assert_eq!(d.session.reply_routing(), ReplyRouting::disabled());
    let wait = dispatch(&mut d, &fixture("command_echo"));
    assert_eq!(wait.deadline, None);
    assert!(written_after(&mut d, DEFAULT_DEFER_AFTER).is_empty());
    assert!(written_after(&mut d, Duration::from_secs(60)).is_empty());
    finish(&mut d);
    let responses = d.responses();
    assert_eq!(responses.len(), 1);
    assert_eq!(responses[0].0, 200);
    let json: serde_json::Value = serde_json::from_slice(&responses[0].2).unwrap();
    assert_eq!(json["type"], 4);
    assert!(d.rest.is_empty());
}

#[test]
fn defer_without_a_handler_is_refused() {
    // Time passing with no handler running sends no deferred answer.
    let mut d = driver(common::endpoint(), ReplyRouting::enabled());
    d.run();
    assert!(written_after(&mut d, DEFAULT_DEFER_AFTER).is_empty());
    assert!(d.rest.is_empty());

    // Nor once a handler has finished.
    let mut d = driver(common::endpoint(), ReplyRouting::enabled());
    dispatch(&mut d, &fixture("command_echo"));
    let answer = finish(&mut d);
    assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(written_after(&mut d, DEFAULT_DEFER_AFTER).is_empty());
    assert_eq!(d.statuses(), [200]);
    assert!(d.rest.is_empty());

    // Nor while the request is still being read.
    let mut d = driver(common::endpoint(), ReplyRouting::enabled());
    let input = request(&fixture("command_echo"));
    d.receive(&input[..input.len() - 1]);
    assert!(d.handler.is_none());
    assert!(written_after(&mut d, DEFAULT_DEFER_AFTER).is_empty());
    assert!(d.rest.is_empty());
}

#[test]
fn command_is_deferred_with_type_5_and_its_reply_edits_the_original() {
    let mut d = driver(common::endpoint(), ReplyRouting::enabled());
    let mut input = request(&fixture("command_echo"));
    input.extend(request(&fixture("ping")));
    d.receive(&input);
    assert!(d.handler.is_some());
    assert!(d.out.is_empty());
    assert_eq!(written_after(&mut d, DEFAULT_DEFER_AFTER), DEFERRED_5);
    assert!(d.rest.is_empty(), "nothing through REST before the outcome");
    // Once deferred: no deadline, no second deferral.
    assert_eq!(d.wait.unwrap().deadline, None, "{:?}", d.wait);
    assert!(written_after(&mut d, DEFAULT_DEFER_AFTER).is_empty());

    finish(&mut d);
    // No second HTTP answer: what follows is the pipelined ping's.
    let responses = d.responses();
    assert_eq!(responses.len(), 2, "{:?}", String::from_utf8_lossy(&d.out));
    assert_eq!(responses[0].2, br#"{"type":5}"#);
    assert_eq!(responses[1].2, br#"{"type":1}"#);
    assert!(d.out.starts_with(DEFERRED_5));

    let reply = only_rest_reply(&mut d);
    let [RestCall::EditOriginal(edit)] = reply.requests.as_slice() else {
        panic!("{reply:?}")
    };
    assert_eq!(edit.route().key().method(), http::Method::PATCH);
    assert_eq!(
        edit.route().key().template(),
        "/webhooks/{webhook_id}/{webhook_token}/messages/@original"
    );
    assert!(
        edit.route()
            .path()
            .starts_with("/webhooks/1178812346128379904/")
    );
    assert_eq!(
        json_of(edit.body())["content"],
        "Hello from the conformance suite! ✓ café"
    );

    // The connection goes on.
    assert!(d.wait.unwrap().read);
    assert!(!d.closed && !d.shut_down_write);
}

#[test]
fn component_is_deferred_with_type_6_and_its_update_edits_the_message() {
    let mut d = driver(common::endpoint(), ReplyRouting::enabled());
    dispatch(&mut d, &fixture("component"));
    assert_eq!(written_after(&mut d, DEFAULT_DEFER_AFTER), DEFERRED_6);
    assert!(finish(&mut d).is_empty(), "no second HTTP answer");
    let reply = only_rest_reply(&mut d);
    let [RestCall::EditOriginal(edit)] = reply.requests.as_slice() else {
        panic!("{reply:?}")
    };
    assert_eq!(json_of(edit.body())["content"], "clicked confirm_button");
}

#[test]
fn handler_failure_after_deferral_removes_thinking() {
    let mut d = driver(common::endpoint(), ReplyRouting::enabled());
    dispatch(&mut d, &fixture("command_boom"));
    assert_eq!(written_after(&mut d, DEFAULT_DEFER_AFTER), DEFERRED_5);
    assert!(finish(&mut d).is_empty(), "no 500 after the deferral");
    assert_eq!(d.out, DEFERRED_5);
    let reply = only_rest_reply(&mut d);
    let [RestCall::DeleteOriginal(delete)] = reply.requests.as_slice() else {
        panic!("{reply:?}")
    };
    assert_eq!(delete.route().key().method(), http::Method::DELETE);
}

#[test]
fn ephemeral_reply_after_type_5_is_not_made_public() {
    let mut d = driver(common::endpoint(), ReplyRouting::enabled());
    dispatch(&mut d, &fixture("command_ephemeral"));
    assert_eq!(written_after(&mut d, DEFAULT_DEFER_AFTER), DEFERRED_5);
    assert!(finish(&mut d).is_empty());
    let reply = only_rest_reply(&mut d);
    let [
        RestCall::DeleteOriginal(_),
        RestCall::CreateFollowup(followup),
    ] = reply.requests.as_slice()
    else {
        panic!("{reply:?}")
    };
    let json = json_of(followup.body());
    assert_eq!(json["content"], "secret");
    assert_eq!(json["flags"], 64);
}

#[test]
fn deferred_file_reply_is_multipart() {
    let mut d = driver(common::endpoint(), ReplyRouting::enabled());
    dispatch(&mut d, &fixture("command_file"));
    assert_eq!(written_after(&mut d, DEFAULT_DEFER_AFTER), DEFERRED_5);
    assert!(finish(&mut d).is_empty());
    let RestReply { requests, .. } = only_rest_reply(&mut d);
    let [RestCall::EditOriginal(edit)] = requests.as_slice() else {
        panic!("{requests:?}")
    };
    let body = String::from_utf8(edit.body().to_bytes().unwrap().to_vec()).unwrap();
    assert!(
        body.contains(r#""attachments":[{"filename":"hello world.txt","id":0}]"#),
        "{body}"
    );
    assert!(body.contains("name=\"files[0]\""), "{body}");
}

#[test]
fn a_deferred_reply_goes_through_rest_after_the_connection_fails() {
    let mut d = driver(common::endpoint(), ReplyRouting::enabled());
    dispatch(&mut d, &fixture("command_echo"));
    assert_eq!(written_after(&mut d, DEFAULT_DEFER_AFTER), DEFERRED_5);
    d.input(Input::Failed);
    assert!(!d.closed, "the handler's outcome is awaited");
    assert!(finish(&mut d).is_empty());
    assert!(d.closed);
    let reply = only_rest_reply(&mut d);
    assert!(matches!(
        reply.requests.as_slice(),
        [RestCall::EditOriginal(_)]
    ));

    // A handler that was not deferred has nobody left to answer.
    let mut d = driver(common::endpoint(), ReplyRouting::enabled());
    dispatch(&mut d, &fixture("command_echo"));
    d.input(Input::Failed);
    assert!(finish(&mut d).is_empty());
    assert!(d.closed);
    assert!(d.rest.is_empty());
}

#[test]
fn shutdown_while_a_handler_runs_still_defers_then_closes() {
    let mut d = driver(common::endpoint(), ReplyRouting::enabled());
    let start = d.now.instant;
    dispatch(&mut d, &fixture("command_echo"));
    let wait = d.input(Input::Shutdown);
    assert_eq!(wait.deadline, Some(start + DEFAULT_DEFER_AFTER));
    assert!(d.out.is_empty());
    assert_eq!(
        written_after(&mut d, DEFAULT_DEFER_AFTER),
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 10\r\n\
          connection: close\r\n\r\n{\"type\":5}"
    );
    assert!(
        !d.closed && !d.shut_down_write,
        "the handler's outcome is awaited"
    );
    assert!(finish(&mut d).is_empty());
    assert!(d.closed || d.shut_down_write);
    let reply = only_rest_reply(&mut d);
    assert!(matches!(
        reply.requests.as_slice(),
        [RestCall::EditOriginal(_)]
    ));
}

fn big_file_endpoint(len: usize) -> Endpoint {
    let mut handlers = yuyo_core::endpoint::Handlers::new();
    handlers
        .set_command(move |_ctx| async move {
            Ok(Some(
                Reply::message("big").with_file("big.bin", Bytes::from(vec![b'x'; len])),
            ))
        })
        .unwrap()
        .set_component(|_ctx| async move {
            Ok(Some(Reply::message("path").with_file_source(
                "disk.bin",
                FileSource::Path {
                    path: "/nonexistent".into(),
                    len: None,
                },
                None,
            )))
        })
        .unwrap();
    Endpoint::new(common::config(), handlers)
}

#[test]
fn oversized_files_go_through_the_callback_and_http_gets_202() {
    let routing = ReplyRouting {
        defer_after: None,
        inline_files_limit: Some(1000),
    };
    let mut d = driver(big_file_endpoint(1001), routing);
    let wait = dispatch(&mut d, &fixture("command_echo"));
    assert_eq!(wait.deadline, None, "no deferral deadline");
    assert_eq!(
        finish(&mut d),
        b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n"
    );
    let reply = only_rest_reply(&mut d);
    let [RestCall::CreateResponse(callback)] = reply.requests.as_slice() else {
        panic!("{reply:?}")
    };
    assert_eq!(callback.route().key().method(), http::Method::POST);
    assert_eq!(
        callback.route().path(),
        format!(
            "/interactions/1310213100000000002/{}/callback",
            token_of(&fixture("command_echo"))
        )
    );
    let RequestBody::Multipart(body) = callback.body() else {
        panic!("not multipart")
    };
    let bytes = String::from_utf8(body.to_bytes().unwrap().to_vec()).unwrap();
    assert!(bytes.contains(r#""type":4"#), "{bytes}");
    assert!(bytes.contains("filename=\"big.bin\""));
    assert!(bytes.contains(&"x".repeat(1001)));

    // A file of unknown length counts as oversized.
    dispatch(&mut d, &fixture("component"));
    assert!(finish(&mut d).starts_with(b"HTTP/1.1 202 Accepted\r\n"));
    assert_eq!(d.rest.len(), 1);
    assert!(d.wait.unwrap().read);
}

#[test]
fn files_at_the_limit_stay_inline() {
    let routing = ReplyRouting {
        defer_after: Some(Duration::from_secs(1)),
        inline_files_limit: Some(1000),
    };
    let mut d = driver(big_file_endpoint(1000), routing);
    let start = d.now.instant;
    let wait = dispatch(&mut d, &fixture("command_echo"));
    assert_eq!(wait.deadline, Some(start + Duration::from_secs(1)));
    let wait = d.finish_handler();
    assert!(wait.read, "{wait:?}");
    assert!(d.out.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert_eq!(d.statuses(), [200]);
    assert!(d.rest.is_empty());
}

fn token_of(body: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap();
    value["token"].as_str().unwrap().to_owned()
}

#[test]
fn modal_is_deferred_with_5_or_with_6_when_submitted_from_a_message() {
    let mut d = driver(common::endpoint(), ReplyRouting::enabled());
    dispatch(&mut d, &fixture("modal"));
    assert_eq!(written_after(&mut d, DEFAULT_DEFER_AFTER), DEFERRED_5);
    assert!(finish(&mut d).is_empty());
    let reply = only_rest_reply(&mut d);
    assert!(matches!(
        reply.requests.as_slice(),
        [RestCall::EditOriginal(_)]
    ));

    // The same modal, submitted from a component's message: 6, and its new message is
    // a follow-up (the original response is the component's message).
    let mut modal: serde_json::Value = serde_json::from_slice(&fixture("modal")).unwrap();
    let component: serde_json::Value = serde_json::from_slice(&fixture("component")).unwrap();
    modal["message"] = component["message"].clone();
    let body = serde_json::to_vec(&modal).unwrap();
    dispatch(&mut d, &body);
    assert_eq!(written_after(&mut d, DEFAULT_DEFER_AFTER), DEFERRED_6);
    assert!(finish(&mut d).is_empty());
    let reply = only_rest_reply(&mut d);
    let [RestCall::CreateFollowup(followup)] = reply.requests.as_slice() else {
        panic!("{reply:?}")
    };
    assert_eq!(
        json_of(followup.body())["content"],
        "submitted feedback_modal"
    );
}

/// The ephemeral late reply (DELETE, then a follow-up) with `after` work that records it ran.
fn two_call_reply() -> (RestReply, Arc<AtomicBool>) {
    let mut d = driver(common::endpoint(), ReplyRouting::enabled());
    dispatch(&mut d, &fixture("command_ephemeral"));
    assert_eq!(written_after(&mut d, DEFAULT_DEFER_AFTER), DEFERRED_5);
    finish(&mut d);
    let mut reply = only_rest_reply(&mut d);
    assert_eq!(reply.requests.len(), 2);
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    reply.after = Some(Box::pin(async move {
        flag.store(true, Ordering::SeqCst);
    }));
    (reply, ran)
}

#[test]
fn deliver_sends_in_order_then_runs_after() {
    let (reply, ran) = two_call_reply();
    let mut sent = Vec::new();
    futures::executor::block_on(reply.deliver(|request| {
        sent.push(request.route().method().clone());
        std::future::ready(Ok::<(), &str>(()))
    }));
    assert_eq!(sent, [http::Method::DELETE, http::Method::POST]);
    assert!(ran.load(Ordering::SeqCst));
}

#[test]
fn deliver_stops_at_the_first_failure_and_still_runs_after() {
    let (reply, ran) = two_call_reply();
    let mut sent = 0;
    futures::executor::block_on(reply.deliver(|_request| {
        sent += 1;
        std::future::ready(Err("mock failure"))
    }));
    assert_eq!(sent, 1, "the follow-up is not sent after a failed DELETE");
    assert!(ran.load(Ordering::SeqCst));
}
