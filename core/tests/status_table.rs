//! The check table of issue 3, row by row: status, `Allow`, `Content-Type`
//! and body for each.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use yuyo_core::endpoint::{Endpoint, Handlers, InteractionKind, Reply};

const TEXT: Option<&str> = Some("text/plain; charset=utf-8");
const JSON: Option<&str> = Some("application/json");

enum Body {
    Text(&'static str),
    Json(serde_json::Value),
    Empty,
    /// A multipart body; checked in `tests/multipart.rs`, here only its type.
    Multipart,
}

struct Row {
    name: &'static str,
    endpoint: Endpoint,
    method: &'static str,
    target: &'static str,
    headers: Vec<(String, Vec<u8>)>,
    chunks: Vec<Bytes>,
    now: u64,
    status: u16,
    allow: Option<&'static str>,
    content_type: Option<&'static str>,
    body: Body,
}

/// A valid signed request for `body`, to be spoiled by one change per row.
fn base(name: &'static str, body: &[u8]) -> Row {
    Row {
        name,
        endpoint: endpoint(),
        method: "POST",
        target: "/",
        headers: discord_headers(body),
        chunks: vec![Bytes::copy_from_slice(body)],
        now: NOW,
        status: 0,
        allow: None,
        content_type: None,
        body: Body::Empty,
    }
}

impl Row {
    fn expect(mut self, status: u16, content_type: Option<&'static str>, body: Body) -> Self {
        self.status = status;
        self.content_type = content_type;
        self.body = body;
        self
    }
    fn text(self, status: u16, text: &'static str) -> Self {
        self.expect(status, TEXT, Body::Text(text))
    }
    fn set(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers
            .push((name.to_owned(), value.as_ref().to_vec()));
        self
    }
    fn add(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.to_owned(), value.as_ref().to_vec()));
        self
    }
    fn remove(mut self, name: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }
    fn endpoint(mut self, endpoint: Endpoint) -> Self {
        self.endpoint = endpoint;
        self
    }
}

fn signed_for(timestamp: &str, body: &[u8]) -> String {
    sign(timestamp.as_bytes(), body)
}

fn rows() -> Vec<Row> {
    let echo = fixture("command_echo");
    let small = Endpoint::new(config().max_body_size(64), handlers());
    let windowed = Endpoint::new(
        config().timestamp_window(Duration::from_secs(300)),
        handlers(),
    );
    let no_modal = {
        let mut handlers = handlers();
        handlers.remove(InteractionKind::Modal).unwrap();
        Endpoint::new(config(), handlers)
    };
    let custom_path = Endpoint::new(config().path("/interactions"), handlers());
    let echo_reply = serde_json::json!({
        "type": 4, "data": {"content": "Hello from the conformance suite! ✓ café"}
    });

    vec![
        // 404: path (query ignored)
        {
            let mut row = base("wrong path", &echo).text(404, "Not Found");
            row.target = "/other";
            row
        },
        {
            let mut row = base("wrong path, query ignored", &echo).text(404, "Not Found");
            row.target = "/other?x=/";
            row
        },
        {
            let mut row = base("path prefix is not the path", &echo)
                .endpoint(custom_path.clone())
                .text(404, "Not Found");
            row.target = "/interactions/x";
            row
        },
        {
            let mut row = base("404 before 405", &echo).text(404, "Not Found");
            row.target = "/x";
            row.method = "GET";
            row
        },
        {
            let mut row = base("query string on the right path", &echo).expect(
                200,
                JSON,
                Body::Json(echo_reply.clone()),
            );
            row.target = "/?foo=bar";
            row
        },
        {
            let mut row = base("custom path", &echo).endpoint(custom_path).expect(
                200,
                JSON,
                Body::Json(echo_reply.clone()),
            );
            row.target = "/interactions";
            row
        },
        // 405
        {
            let mut row = base("GET", &echo).text(405, "Method Not Allowed: use POST");
            row.method = "GET";
            row.allow = Some("POST");
            row
        },
        {
            let mut row = base("PUT, 405 before 415", &echo)
                .remove("content-type")
                .text(405, "Method Not Allowed: use POST");
            row.method = "PUT";
            row.allow = Some("POST");
            row
        },
        // 415
        base("no content type", &echo).remove("content-type").text(
            415,
            "Unsupported Media Type: Content-Type must be application/json",
        ),
        base("text/plain", &echo)
            .set("content-type", "text/plain")
            .text(
                415,
                "Unsupported Media Type: Content-Type must be application/json",
            ),
        base("repeated content type", &echo)
            .add("content-type", "application/json")
            .text(
                415,
                "Unsupported Media Type: Content-Type must be application/json",
            ),
        base("415 before 401", &echo)
            .set("content-type", "application/xml")
            .remove("x-signature-ed25519")
            .text(
                415,
                "Unsupported Media Type: Content-Type must be application/json",
            ),
        base("content type case and parameters", &echo)
            .set("content-type", "Application/JSON ; charset=UTF-8")
            .expect(200, JSON, Body::Json(echo_reply.clone())),
        // 401: headers
        base("missing signature", &echo)
            .remove("x-signature-ed25519")
            .text(401, "Missing X-Signature-Ed25519 header"),
        base("repeated signature", &echo)
            .add("x-signature-ed25519", signed_for(TIMESTAMP, &echo))
            .text(401, "Repeated X-Signature-Ed25519 header"),
        base("short signature", &echo)
            .set("x-signature-ed25519", "ab".repeat(63))
            .text(
                401,
                "X-Signature-Ed25519 must be exactly 128 hexadecimal digits",
            ),
        base("long signature", &echo)
            .set("x-signature-ed25519", "ab".repeat(65))
            .text(
                401,
                "X-Signature-Ed25519 must be exactly 128 hexadecimal digits",
            ),
        base("non-hex signature", &echo)
            .set("x-signature-ed25519", "zz".repeat(64))
            .text(
                401,
                "X-Signature-Ed25519 must be exactly 128 hexadecimal digits",
            ),
        base("upper-case signature", &echo)
            .set(
                "x-signature-ed25519",
                signed_for(TIMESTAMP, &echo).to_uppercase(),
            )
            .expect(200, JSON, Body::Json(echo_reply.clone())),
        base("missing timestamp", &echo)
            .remove("x-signature-timestamp")
            .text(401, "Missing X-Signature-Timestamp header"),
        base("repeated timestamp", &echo)
            .add("x-signature-timestamp", TIMESTAMP)
            .text(401, "Repeated X-Signature-Timestamp header"),
        base("empty timestamp", &echo)
            .set("x-signature-timestamp", "")
            .text(401, "X-Signature-Timestamp must be non-empty visible ASCII"),
        base("timestamp with a space", &echo)
            .set("x-signature-timestamp", "1700 000000")
            .text(401, "X-Signature-Timestamp must be non-empty visible ASCII"),
        base("non-ASCII timestamp", &echo)
            .set("x-signature-timestamp", b"17\xff")
            .text(401, "X-Signature-Timestamp must be non-empty visible ASCII"),
        base("401 before 413", &echo)
            .endpoint(small.clone())
            .remove("x-signature-timestamp")
            .text(401, "Missing X-Signature-Timestamp header"),
        // 413 / bad Content-Length
        base("declared length over the limit", &echo)
            .endpoint(small.clone())
            .text(413, "Content Too Large: the body may be at most 64 bytes"),
        {
            let mut row = base("streamed length over the limit", &echo)
                .endpoint(small.clone())
                .remove("content-length")
                .text(413, "Content Too Large: the body may be at most 64 bytes");
            row.chunks = echo.chunks(10).map(Bytes::copy_from_slice).collect();
            row
        },
        base("invalid content length", &echo)
            .set("content-length", "12a")
            .text(400, "Invalid Content-Length header"),
        base("repeated content length", &echo)
            .add("content-length", "1")
            .text(400, "Invalid Content-Length header"),
        // 400 empty
        {
            let mut row = base("empty body", b"").text(400, "Empty request body");
            row.chunks = vec![];
            row
        },
        {
            let mut row = base("empty chunks", b"").text(400, "Empty request body");
            row.chunks = vec![Bytes::new(), Bytes::new()];
            row
        },
        // 401 signature
        base("signature of another body", &echo)
            .set("x-signature-ed25519", signed_for(TIMESTAMP, b"{}"))
            .text(401, "Invalid request signature"),
        base("signature over another timestamp", &echo)
            .set("x-signature-timestamp", "1700000001")
            .text(401, "Invalid request signature"),
        base("well-formed garbage signature", &echo)
            .set("x-signature-ed25519", "00".repeat(64))
            .text(401, "Invalid request signature"),
        base("bad signature before window", &echo)
            .endpoint(windowed.clone())
            .set("x-signature-ed25519", signed_for(TIMESTAMP, b"{}"))
            .text(401, "Invalid request signature"),
        {
            let mut row = base("bad signature before empty-object checks", b"[]")
                .set("x-signature-ed25519", signed_for(TIMESTAMP, b"{}"))
                .text(401, "Invalid request signature");
            row.chunks = vec![Bytes::from_static(b"[]")];
            row
        },
        // 401 window
        {
            let mut row = base("timestamp too old", &echo)
                .endpoint(windowed.clone())
                .text(401, "X-Signature-Timestamp is outside the accepted window");
            row.now = NOW + 301;
            row
        },
        {
            let mut row = base("timestamp too far ahead", &echo)
                .endpoint(windowed.clone())
                .text(401, "X-Signature-Timestamp is outside the accepted window");
            row.now = NOW - 301;
            row
        },
        {
            let mut row = base("timestamp at the window's edge", &echo)
                .endpoint(windowed.clone())
                .expect(200, JSON, Body::Json(echo_reply.clone()));
            row.now = NOW + 300;
            row
        },
        base("non-integer timestamp with a window", &echo)
            .endpoint(windowed.clone())
            .set("x-signature-timestamp", "yesterday")
            .set("x-signature-ed25519", signed_for("yesterday", &echo))
            .text(401, "X-Signature-Timestamp is outside the accepted window"),
        {
            let mut row = base("no window: any time is fine", &echo).expect(
                200,
                JSON,
                Body::Json(echo_reply.clone()),
            );
            row.now = 0;
            row
        },
        base("no window: any visible timestamp is fine", &echo)
            .set("x-signature-timestamp", "yesterday")
            .set("x-signature-ed25519", signed_for("yesterday", &echo))
            .expect(200, JSON, Body::Json(echo_reply.clone())),
        // 400 JSON
        base("array", b"[1]").text(400, "Body is not a JSON object"),
        base("not JSON", b"nope").text(400, "Body is not a JSON object"),
        base("trailing data", br#"{"type":1}x"#).text(400, "Body is not a JSON object"),
        base("invalid UTF-8", b"{\"type\":1,\"a\":\"\xff\"}")
            .text(400, "Body is not a JSON object"),
        base("type missing", b"{}").text(400, "Interaction type is missing or not an integer"),
        base("type a string", br#"{"type":"2"}"#)
            .text(400, "Interaction type is missing or not an integer"),
        base("type a float", br#"{"type":2.5}"#)
            .text(400, "Interaction type is missing or not an integer"),
        // PING
        base("ping fixture", &fixture("ping")).expect(
            200,
            JSON,
            Body::Json(serde_json::json!({"type": 1})),
        ),
        base("minimal ping", br#"{"type":1}"#).expect(
            200,
            JSON,
            Body::Json(serde_json::json!({"type": 1})),
        ),
        base("ping without handlers", br#"{"type":1}"#)
            .endpoint(Endpoint::new(config(), Handlers::new()))
            .expect(200, JSON, Body::Json(serde_json::json!({"type": 1}))),
        // 501 type
        base("unknown type fixture", &fixture("unknown_type"))
            .text(501, "Unsupported interaction type 99"),
        base("type 0", br#"{"type":0}"#).text(501, "Unsupported interaction type 0"),
        base("type 6", br#"{"type":6}"#).text(501, "Unsupported interaction type 6"),
        base("type -2", br#"{"type":-2}"#).text(501, "Unsupported interaction type -2"),
        // 500 unreadable
        base("command the model cannot read", br#"{"type":2}"#)
            .text(500, "Could not read the interaction"),
        base("unreadable before no handler", br#"{"type":5}"#)
            .endpoint(no_modal.clone())
            .text(500, "Could not read the interaction"),
        // 501 no handler
        base("no modal handler", &fixture("modal"))
            .endpoint(no_modal)
            .text(501, "No handler for modal interactions"),
        base("no handlers at all", &echo)
            .endpoint(Endpoint::new(config(), Handlers::new()))
            .text(501, "No handler for command interactions"),
        // handler outcomes
        base("handler answers nothing", &fixture("command_none")).expect(204, None, Body::Empty),
        base("handler answers", &echo).expect(200, JSON, Body::Json(echo_reply.clone())),
        base("handler answers with a file", &fixture("command_file")).expect(
            200,
            None,
            Body::Multipart,
        ),
        base("handler fails", &fixture("command_boom"))
            .text(500, "Internal Server Error: the interaction handler failed"),
    ]
}

#[test]
fn status_table() {
    let mut failures = Vec::new();
    for row in rows() {
        let head = head(row.method, row.target, &row.headers);
        let got = drive(&row.endpoint, &head, row.chunks.clone(), row.now);
        let mut check = |what: &str, ok: bool, detail: String| {
            if !ok {
                failures.push(format!("{}: {what}: {detail}", row.name));
            }
        };
        check(
            "status",
            got.status == row.status,
            format!("{} != {}", got.status, row.status),
        );
        check(
            "allow",
            got.allow.as_deref() == row.allow,
            format!("{:?} != {:?}", got.allow, row.allow),
        );
        match &row.body {
            Body::Multipart => check(
                "content type",
                got.content_type
                    .as_deref()
                    .is_some_and(|ct| ct.starts_with("multipart/form-data; boundary=")),
                format!("{:?}", got.content_type),
            ),
            Body::Text(_) | Body::Json(_) | Body::Empty => check(
                "content type",
                got.content_type.as_deref() == row.content_type,
                format!("{:?} != {:?}", got.content_type, row.content_type),
            ),
        }
        match &row.body {
            Body::Text(text) => check(
                "body",
                got.body == text.as_bytes(),
                format!("{:?}", String::from_utf8_lossy(&got.body)),
            ),
            Body::Json(json) => check(
                "body",
                serde_json::from_slice::<serde_json::Value>(&got.body)
                    .ok()
                    .as_ref()
                    == Some(json),
                format!("{:?}", String::from_utf8_lossy(&got.body)),
            ),
            Body::Empty => check("body", got.body.is_empty(), format!("{:?}", got.body)),
            Body::Multipart => check("body", !got.body.is_empty(), String::new()),
        }
        // Content-Length matches the body whenever there is one; 204 has none.
        let expected_len = (got.status != 204).then(|| got.body.len().to_string());
        check(
            "content length",
            got.content_length == expected_len,
            format!("{:?} != {expected_len:?}", got.content_length),
        );
    }
    assert!(
        failures.is_empty(),
        "{} failing rows:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn head_rejections_need_no_body() {
    let endpoint = endpoint();
    let echo = fixture("command_echo");
    let head = head("GET", "/", &discord_headers(&echo));
    let rejection = endpoint.begin(&head).err().unwrap();
    assert_eq!(rejection.status(), 405);
}

#[test]
fn streaming_limit_is_checked_before_buffering() {
    let endpoint = Endpoint::new(config().max_body_size(10), handlers());
    let head = head(
        "POST",
        "/",
        &discord_headers(b"0123456789ab")
            .into_iter()
            .filter(|(n, _)| n != "Content-Length")
            .collect::<Vec<_>>(),
    );
    let exchange = endpoint.begin(&head).unwrap();
    let exchange = exchange.push(Bytes::from_static(b"0123456789")).unwrap();
    assert_eq!(exchange.received(), 10);
    let rejection = exchange.push(Bytes::from_static(b"a")).err().unwrap();
    assert_eq!(rejection.status(), 413);
}

#[test]
fn handler_panics_become_500() {
    let mut handlers = Handlers::new();
    handlers
        .set_command(|_ctx| async { panic!("handler bug") })
        .unwrap()
        .set_component(
            |_ctx| -> std::future::Ready<yuyo_core::endpoint::HandlerResult> {
                panic!("panics before returning a future")
            },
        )
        .unwrap();
    let endpoint = Endpoint::new(config(), handlers);
    for name in ["command_echo", "component"] {
        let got = post(&endpoint, &fixture(name));
        assert_eq!(got.status, 500, "{name}");
        assert_eq!(
            got.text(),
            "Internal Server Error: the interaction handler failed"
        );
    }
    // The endpoint goes on.
    let got = post(&endpoint, &fixture("ping"));
    assert_eq!(got.status, 200);
}

#[test]
fn after_work_is_handed_back() {
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = ran.clone();
    let mut handlers = Handlers::new();
    handlers
        .set_command(move |_ctx| {
            let flag = flag.clone();
            async move {
                Ok(Some(Reply::deferred().after(async move {
                    flag.store(true, std::sync::atomic::Ordering::SeqCst);
                })))
            }
        })
        .unwrap();
    let endpoint = Endpoint::new(config(), handlers);
    let echo = fixture("command_echo");
    let head = head("POST", "/", &discord_headers(&echo));
    let yuyo_core::endpoint::Finished::Dispatch(dispatch) = endpoint.receive(&head, [echo], NOW)
    else {
        panic!("expected a dispatch");
    };
    assert_eq!(dispatch.kind(), InteractionKind::Command);
    let (responding, future) = dispatch.start();
    let done = responding.complete(futures::executor::block_on(future));
    assert_eq!(done.response.status(), 200);
    assert!(
        !ran.load(std::sync::atomic::Ordering::SeqCst),
        "the core never runs after-work"
    );
    futures::executor::block_on(done.after.unwrap());
    assert!(ran.load(std::sync::atomic::Ordering::SeqCst));
}

#[test]
fn raw_json_reply_is_sent_as_is() {
    let mut handlers = Handlers::new();
    handlers
        .set_command(|_ctx| async {
            Ok(Some(Reply::raw_json(
                r#"{"type":4,"data":{"content":"raw"}}"#,
            )))
        })
        .unwrap();
    let got = post(&Endpoint::new(config(), handlers), &fixture("command_echo"));
    assert_eq!(got.status, 200);
    assert_eq!(got.content_type.as_deref(), Some("application/json"));
    assert_eq!(got.body, br#"{"type":4,"data":{"content":"raw"}}"#);
}

#[test]
fn registry_rules() {
    use yuyo_core::endpoint::{Handler, OnConflict};
    let mut handlers = Handlers::new();
    let h = || Handler::new(|_ctx| async { Ok(None) });
    assert!(
        handlers
            .set(InteractionKind::Modal, h(), OnConflict::Error)
            .unwrap()
            .is_none()
    );
    assert_eq!(
        handlers
            .set(InteractionKind::Modal, h(), OnConflict::Error)
            .err(),
        Some(yuyo_core::endpoint::AlreadySet(InteractionKind::Modal))
    );
    assert!(
        handlers
            .set(InteractionKind::Modal, h(), OnConflict::Replace)
            .unwrap()
            .is_some()
    );
    assert!(handlers.set_modal(|_ctx| async { Ok(None) }).is_err());
    assert!(handlers.remove(InteractionKind::Modal).is_some());
    assert!(handlers.remove(InteractionKind::Modal).is_none());
    assert!(handlers.get(InteractionKind::Modal).is_none());
    assert!(handlers.set_modal(|_ctx| async { Ok(None) }).is_ok());
}

#[test]
fn key_errors() {
    use yuyo_core::endpoint::{KeyError, Verifier};
    assert_eq!(
        Verifier::from_hex("zz").err(),
        Some(KeyError::WrongLength(1))
    );
    assert_eq!(
        Verifier::from_hex(&"g".repeat(64)).err(),
        Some(KeyError::InvalidHex)
    );
    // The identity point (small order) and an off-curve encoding.
    let mut identity = [0_u8; 32];
    identity[0] = 1;
    assert_eq!(
        Verifier::from_bytes(&identity).err(),
        Some(KeyError::WeakKey)
    );
    // About half of all y coordinates are not on the curve.
    let off_curve = (2_u8..64).any(|y| {
        let mut bytes = [0_u8; 32];
        bytes[0] = y;
        Verifier::from_bytes(&bytes).err() == Some(KeyError::InvalidPoint)
    });
    assert!(off_curve);
    assert!(
        Verifier::from_hex("EA4A6C63E29C520ABEF5507B132EC5F9954776AEBEBE7B92421EEA691446D22C")
            .is_ok()
    );
}

#[test]
fn health_check_answers_200_until_draining_then_503() {
    let endpoint = endpoint();
    let check = |method: &str, path: &str| {
        let immediate = endpoint.begin(&head(method, path, &[])).err().unwrap();
        immediate.into_response()
    };
    let serving = check("GET", "/healthz?probe=1");
    assert_eq!(serving.status(), 200);
    assert_eq!(serving.headers()["cache-control"], "no-store");
    assert!(serving.headers().get("connection").is_none());

    let wrong_method = check("POST", "/healthz");
    assert_eq!(wrong_method.status(), 405);
    assert_eq!(wrong_method.headers()["allow"], "GET");

    let clone = endpoint.clone();
    clone.health().begin_draining();
    assert!(
        !endpoint.health().is_serving(),
        "every clone shares the state"
    );
    let draining = check("GET", "/healthz");
    assert_eq!(draining.status(), 503);
    assert_eq!(draining.headers()["connection"], "close");
    // Interactions are still served while draining.
    let ping = fixture("ping");
    assert!(
        endpoint
            .begin(&head("POST", "/", &discord_headers(&ping)))
            .is_ok()
    );
}

#[test]
fn health_check_path_is_configurable_and_can_be_turned_off() {
    let moved = Endpoint::new(config().health_path("ready"), handlers());
    assert_eq!(moved.config().get_health_path(), Some("/ready"));
    let status = |endpoint: &Endpoint, path: &str| {
        endpoint
            .begin(&head("GET", path, &[]))
            .err()
            .unwrap()
            .status()
    };
    assert_eq!(status(&moved, "/ready"), 200);
    assert_eq!(status(&moved, "/healthz"), 404);
    let off = Endpoint::new(config().without_health_check(), handlers());
    assert_eq!(status(&off, "/healthz"), 404);
    // The interactions path wins over an equal health path.
    let shadowed = Endpoint::new(config().health_path("/"), handlers());
    assert_eq!(status(&shadowed, "/"), 405);
}
