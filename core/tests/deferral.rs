//! The sans-IO deferral hook and oversized-file routing of `server::Session`: exact bytes
//! on the connection, refusals, `complete` after `defer`, and the REST requests queued.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{discord_headers, fixture};
use yuyo_core::deferral::{
    DEFAULT_DEFER_AFTER, DeferError, DeferredKind, ReplyRouting, RestCall, RestReply,
};
use yuyo_core::endpoint::{Endpoint, HandlerFuture, Reply};
use yuyo_core::http1;
use yuyo_core::multipart::FileSource;
use yuyo_core::rest::RequestBody;
use yuyo_core::server::{Action, Now, Session};

fn request(body: &[u8]) -> Vec<u8> {
    let mut out = b"POST / HTTP/1.1\r\n".to_vec();
    for (name, value) in discord_headers(body) {
        out.extend(name.as_bytes());
        out.extend(b": ");
        out.extend(value);
        out.extend(b"\r\n");
    }
    out.extend(b"\r\n");
    out.extend(body);
    out
}

fn now() -> Now {
    Now {
        instant: Instant::now(),
        unix_secs: common::NOW,
    }
}

fn session(endpoint: Endpoint, routing: ReplyRouting) -> Session {
    let mut session = Session::new(endpoint, http1::Config::default(), Instant::now());
    session.set_reply_routing(routing);
    session
}

fn transmit(session: &mut Session) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = session.poll_transmit() {
        out.extend_from_slice(&chunk);
    }
    out
}

/// Polls the session, settling signature verification on the way.
fn poll(session: &mut Session, now: Now) -> Action {
    match session.poll(now) {
        Action::Verify(ticket) => {
            session
                .verified(now, futures::executor::block_on(ticket))
                .unwrap();
            session.poll(now)
        }
        action => action,
    }
}

/// Feeds `body` as a request and returns the handler the session hands out.
fn dispatch(session: &mut Session, body: &[u8], now: Now) -> HandlerFuture {
    session.receive(now.instant, &request(body));
    match poll(session, now) {
        Action::Handle(handler) => handler,
        other => panic!("expected a handler, got {other:?}"),
    }
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
    let mut s = session(common::endpoint(), ReplyRouting::enabled());
    assert_eq!(s.defer_deadline(), None);
    let at = now();
    let handler = dispatch(&mut s, &fixture("command_echo"), at);
    assert_eq!(s.defer_deadline(), Some(at.instant + DEFAULT_DEFER_AFTER));
    s.complete(at, futures::executor::block_on(handler))
        .unwrap();
    assert_eq!(s.defer_deadline(), None);

    // Autocomplete is never deferred: no deadline, and `defer` refuses.
    let handler = dispatch(&mut s, &fixture("autocomplete"), at);
    assert_eq!(s.defer_deadline(), None);
    assert_eq!(s.defer(at).unwrap_err(), DeferError::Autocomplete);
    assert!(transmit(&mut s).starts_with(b"HTTP/1.1 200 OK"));
    s.complete(at, futures::executor::block_on(handler))
        .unwrap();
    let out = String::from_utf8(transmit(&mut s)).unwrap();
    assert!(out.contains(r#""type":8"#), "{out}");
    assert!(s.poll_rest_reply().is_none());
}

#[test]
fn disabled_routing_never_defers() {
    let mut s = session(common::endpoint(), ReplyRouting::disabled());
    let at = now();
    let _handler = dispatch(&mut s, &fixture("command_echo"), at);
    assert_eq!(s.defer_deadline(), None);
    assert_eq!(s.defer(at).unwrap_err(), DeferError::NotHandling);
}

#[test]
fn defer_without_a_handler_is_refused() {
    let mut s = session(common::endpoint(), ReplyRouting::enabled());
    assert_eq!(s.defer(now()).unwrap_err(), DeferError::NotHandling);
}

#[test]
fn command_is_deferred_with_type_5_and_its_reply_edits_the_original() {
    let mut s = session(common::endpoint(), ReplyRouting::enabled());
    let at = now();
    let mut input = request(&fixture("command_echo"));
    input.extend(request(&fixture("ping")));
    s.receive(at.instant, &input);
    let Action::Handle(handler) = poll(&mut s, at) else {
        panic!("no handler")
    };
    let deferred = s.defer(at).unwrap();
    assert_eq!(deferred.kind(), DeferredKind::Message);
    assert_eq!(transmit(&mut s), DEFERRED_5);
    // Once deferred: no deadline, no second deferral.
    assert_eq!(s.defer_deadline(), None);
    assert_eq!(s.defer(at).unwrap_err(), DeferError::NotHandling);

    s.complete(at, futures::executor::block_on(handler))
        .unwrap();
    assert!(transmit(&mut s).is_empty(), "no second HTTP answer");
    let reply = s.poll_rest_reply().unwrap();
    assert!(s.poll_rest_reply().is_none());
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

    // The connection goes on with the next request.
    assert!(matches!(poll(&mut s, at), Action::Read));
    let out = transmit(&mut s);
    assert!(out.ends_with(br#"{"type":1}"#), "{out:?}");
}

#[test]
fn component_is_deferred_with_type_6_and_its_update_edits_the_message() {
    let mut s = session(common::endpoint(), ReplyRouting::enabled());
    let at = now();
    let handler = dispatch(&mut s, &fixture("component"), at);
    assert_eq!(s.defer(at).unwrap().kind(), DeferredKind::Update);
    assert_eq!(transmit(&mut s), DEFERRED_6);
    s.complete(at, futures::executor::block_on(handler))
        .unwrap();
    assert!(transmit(&mut s).is_empty());
    let reply = s.poll_rest_reply().unwrap();
    let [RestCall::EditOriginal(edit)] = reply.requests.as_slice() else {
        panic!("{reply:?}")
    };
    assert_eq!(json_of(edit.body())["content"], "clicked confirm_button");
}

#[test]
fn handler_failure_after_deferral_removes_thinking() {
    let mut s = session(common::endpoint(), ReplyRouting::enabled());
    let at = now();
    let handler = dispatch(&mut s, &fixture("command_boom"), at);
    s.defer(at).unwrap();
    assert_eq!(transmit(&mut s), DEFERRED_5);
    s.complete(at, futures::executor::block_on(handler))
        .unwrap();
    assert!(transmit(&mut s).is_empty(), "no 500 after the deferral");
    let reply = s.poll_rest_reply().unwrap();
    let [RestCall::DeleteOriginal(delete)] = reply.requests.as_slice() else {
        panic!("{reply:?}")
    };
    assert_eq!(delete.route().key().method(), http::Method::DELETE);
}

#[test]
fn ephemeral_reply_after_type_5_is_not_made_public() {
    let mut s = session(common::endpoint(), ReplyRouting::enabled());
    let at = now();
    let handler = dispatch(&mut s, &fixture("command_ephemeral"), at);
    s.defer(at).unwrap();
    s.complete(at, futures::executor::block_on(handler))
        .unwrap();
    let reply = s.poll_rest_reply().unwrap();
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
    let mut s = session(common::endpoint(), ReplyRouting::enabled());
    let at = now();
    let handler = dispatch(&mut s, &fixture("command_file"), at);
    s.defer(at).unwrap();
    s.complete(at, futures::executor::block_on(handler))
        .unwrap();
    let RestReply { requests, .. } = s.poll_rest_reply().unwrap();
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
    let mut s = session(big_file_endpoint(1001), routing);
    let at = now();
    let handler = dispatch(&mut s, &fixture("command_echo"), at);
    assert_eq!(s.defer_deadline(), None);
    s.complete(at, futures::executor::block_on(handler))
        .unwrap();
    assert_eq!(
        transmit(&mut s),
        b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n"
    );
    let reply = s.poll_rest_reply().unwrap();
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
    let handler = dispatch(&mut s, &fixture("component"), at);
    s.complete(at, futures::executor::block_on(handler))
        .unwrap();
    assert!(transmit(&mut s).starts_with(b"HTTP/1.1 202 Accepted\r\n"));
    assert!(s.poll_rest_reply().is_some());
}

#[test]
fn files_at_the_limit_stay_inline() {
    let routing = ReplyRouting {
        defer_after: Some(Duration::from_secs(1)),
        inline_files_limit: Some(1000),
    };
    let mut s = session(big_file_endpoint(1000), routing);
    let at = now();
    let handler = dispatch(&mut s, &fixture("command_echo"), at);
    s.complete(at, futures::executor::block_on(handler))
        .unwrap();
    assert!(matches!(poll(&mut s, at), Action::Read));
    let out = transmit(&mut s);
    assert!(out.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(s.poll_rest_reply().is_none());
}

fn token_of(body: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap();
    value["token"].as_str().unwrap().to_owned()
}

#[test]
fn modal_is_deferred_with_5_or_with_6_when_submitted_from_a_message() {
    let mut s = session(common::endpoint(), ReplyRouting::enabled());
    let at = now();
    let handler = dispatch(&mut s, &fixture("modal"), at);
    assert_eq!(s.defer(at).unwrap().kind(), DeferredKind::Message);
    assert_eq!(transmit(&mut s), DEFERRED_5);
    s.complete(at, futures::executor::block_on(handler))
        .unwrap();
    let reply = s.poll_rest_reply().unwrap();
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
    let handler = dispatch(&mut s, &body, at);
    assert_eq!(s.defer(at).unwrap().kind(), DeferredKind::Update);
    assert_eq!(transmit(&mut s), DEFERRED_6);
    s.complete(at, futures::executor::block_on(handler))
        .unwrap();
    let reply = s.poll_rest_reply().unwrap();
    let [RestCall::CreateFollowup(followup)] = reply.requests.as_slice() else {
        panic!("{reply:?}")
    };
    assert_eq!(
        json_of(followup.body())["content"],
        "submitted feedback_modal"
    );
}

/// The ephemeral late reply (DELETE, then a follow-up) with `after` work that records it ran.
fn two_call_reply() -> (RestReply, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let mut s = session(common::endpoint(), ReplyRouting::enabled());
    let at = now();
    let handler = dispatch(&mut s, &fixture("command_ephemeral"), at);
    s.defer(at).unwrap();
    s.complete(at, futures::executor::block_on(handler))
        .unwrap();
    let mut reply = s.poll_rest_reply().unwrap();
    assert_eq!(reply.requests.len(), 2);
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = ran.clone();
    reply.after = Some(Box::pin(async move {
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
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
    assert!(ran.load(std::sync::atomic::Ordering::SeqCst));
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
    assert!(ran.load(std::sync::atomic::Ordering::SeqCst));
}
