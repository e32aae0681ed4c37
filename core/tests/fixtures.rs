//! The real fixture payloads, signed with the fixed test key, reach the right
//! handler (or none, for PING) and come back as the handlers answer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::*;
use yuyo_core::endpoint::{Finished, Immediate, InteractionKind};

/// Which kind each fixture dispatches to (`None`: answered without a handler).
fn expected_kind(name: &str) -> Option<InteractionKind> {
    match name {
        "ping" | "unknown_type" => None,
        "autocomplete" => Some(InteractionKind::Autocomplete),
        "component" => Some(InteractionKind::Component),
        "modal" => Some(InteractionKind::Modal),
        _ => Some(InteractionKind::Command),
    }
}

#[test]
fn fixtures_dispatch_to_their_kind() {
    let endpoint = endpoint();
    for name in FIXTURES {
        let body = fixture(name);
        let head = head("POST", "/", &discord_headers(&body));
        match (
            endpoint.receive(&head, [body.clone()], NOW),
            expected_kind(name),
        ) {
            (Finished::Dispatch(dispatch), Some(kind)) => {
                assert_eq!(dispatch.kind(), kind, "{name}");
                assert_eq!(dispatch.context().kind(), kind, "{name}");
                // The raw body is handed over as received, next to the typed value.
                assert_eq!(dispatch.context().raw_body(), &body, "{name}");
                assert_eq!(
                    dispatch.context().interaction().kind as u8,
                    kind.type_number(),
                    "{name}"
                );
            }
            (Finished::Respond(immediate), None) => {
                let expected = if name == "ping" { 200 } else { 501 };
                assert_eq!(immediate.status(), expected, "{name}");
                if name == "ping" {
                    assert_eq!(immediate, Immediate::Pong);
                }
            }
            (other, kind) => panic!("{name}: expected {kind:?}, got {other:?}"),
        }
    }
}

#[test]
fn fixture_replies() {
    let endpoint = endpoint();
    let cases: &[(&str, u16, serde_json::Value)] = &[
        ("ping", 200, serde_json::json!({"type": 1})),
        (
            "command_echo",
            200,
            serde_json::json!({"type": 4, "data": {"content": "Hello from the conformance suite! ✓ café"}}),
        ),
        (
            "command_load",
            200,
            serde_json::json!({"type": 4, "data": {"content": "Hello from the conformance suite! ✓ café"}}),
        ),
        ("command_defer", 200, serde_json::json!({"type": 5})),
        (
            "command_ephemeral",
            200,
            serde_json::json!({"type": 4, "data": {"content": "secret", "flags": 64}}),
        ),
        (
            "component",
            200,
            serde_json::json!({"type": 7, "data": {"content": "clicked confirm_button"}}),
        ),
        (
            "autocomplete",
            200,
            serde_json::json!({"type": 8, "data": {"choices": [{"name": "one", "value": "1"}]}}),
        ),
    ];
    for (name, status, json) in cases {
        let got = post(&endpoint, &fixture(name));
        assert_eq!(got.status, *status, "{name}");
        assert_eq!(
            got.content_type.as_deref(),
            Some("application/json"),
            "{name}"
        );
        assert_eq!(&got.json(), json, "{name}");
    }

    let modal = post(&endpoint, &fixture("modal"));
    assert_eq!(modal.status, 200);
    assert!(
        modal.json()["data"]["content"]
            .as_str()
            .unwrap()
            .starts_with("submitted ")
    );

    assert_eq!(post(&endpoint, &fixture("command_none")).status, 204);
    assert_eq!(post(&endpoint, &fixture("command_boom")).status, 500);
    assert_eq!(post(&endpoint, &fixture("unknown_type")).status, 501);
}

#[test]
fn file_reply_is_multipart_with_attachment_metadata() {
    let got = post(&endpoint(), &fixture("command_file"));
    assert_eq!(got.status, 200);
    let content_type = got.content_type.clone().unwrap();
    let boundary = content_type
        .strip_prefix("multipart/form-data; boundary=")
        .unwrap()
        .to_owned();
    let fields = futures::executor::block_on(async move {
        let stream = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(got.body))]);
        let mut multipart = multer::Multipart::new(stream, boundary);
        let mut fields = Vec::new();
        while let Some(field) = multipart.next_field().await.unwrap() {
            let name = field.name().map(str::to_owned);
            let filename = field.file_name().map(str::to_owned);
            let content_type = field.content_type().map(ToString::to_string);
            fields.push((name, filename, content_type, field.bytes().await.unwrap()));
        }
        fields
    });
    assert_eq!(fields.len(), 2);
    assert_eq!(fields[0].0.as_deref(), Some("payload_json"));
    assert_eq!(fields[0].2.as_deref(), Some("application/json"));
    let payload: serde_json::Value = serde_json::from_slice(&fields[0].3).unwrap();
    assert_eq!(
        payload,
        serde_json::json!({"type": 4, "data": {
            "content": "file attached",
            "attachments": [{"id": 0, "filename": "hello world.txt"}]
        }})
    );
    assert_eq!(fields[1].0.as_deref(), Some("files[0]"));
    assert_eq!(fields[1].1.as_deref(), Some("hello%20world.txt"));
    assert_eq!(fields[1].2.as_deref(), Some("application/octet-stream"));
    assert_eq!(&fields[1].3[..], b"hello");
}

#[test]
fn chunked_fixture_bodies_verify() {
    // Several chunks take the accumulate-behind-the-timestamp path.
    let endpoint = endpoint();
    for name in FIXTURES {
        let body = fixture(name);
        let head = head("POST", "/", &discord_headers(&body));
        let one = drive(&endpoint, &head, vec![body.clone()], NOW);
        let chunks = body.chunks(100).map(Bytes::copy_from_slice).collect();
        let many = drive(&endpoint, &head, chunks, NOW);
        assert_eq!(one.fixed_boundary(), many.fixed_boundary(), "{name}");
    }
}
