//! Replies through REST, end to end, each case generic over the adapter's
//! [`BotHarness`]; [`reply_routing_suite!`](crate::reply_routing_suite) makes a
//! `#[test]` of each.
//!
//! A managed bot's server on 127.0.0.1 answers signed interactions with handlers that
//! take longer than the deferral deadline, while the [`MockDiscord`] on 127.0.0.1
//! receives the late replies, the deletions after failures and the callbacks of
//! oversized files. Each case checks that the late reply is sent while the server
//! runs, and that once the graceful shutdown returned it is the only REST request.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use twilight_model::application::command::{CommandOptionChoice, CommandOptionChoiceValue};
use twilight_model::application::interaction::InteractionData;
use yuyo_core::endpoint::{EventHandlers, HandlerError, Handlers, Reply};
use yuyo_core::multipart::{FilePart, FileSource};
use yuyo_core::rest::bot::BotBuilder;
use yuyo_core::rest::transport::HttpSettings;
use yuyo_core::rest::{Payload, RestConfig, RestRequest, Route};

use crate::Running;
use crate::bot_harness::{BotHarness, LIMIT, bounded};
use crate::client::{Client, Request, Response};
use crate::demo::DEMO_PUBLIC_KEY_HEX;
use crate::fixtures;
use crate::mock_discord::{MockDiscord, Recorded, Reply as MockReply};

/// The deferral deadline of these cases.
const DEFER_AFTER: Duration = Duration::from_millis(200);
/// How long the slow handlers take: well past the deadline (behaviour under test, not
/// synchronisation).
const SLOW: Duration = Duration::from_millis(600);

// ---------------------------------------------------------------------------------------
// Helpers

/// The bytes of file part `filename` in a multipart body.
fn file_part<'a>(body: &'a [u8], content_type: &str, filename: &str) -> &'a [u8] {
    let boundary = content_type
        .split("boundary=")
        .nth(1)
        .expect("no boundary")
        .as_bytes();
    let marker = format!("filename=\"{filename}\"");
    let start = find(body, marker.as_bytes()).expect("no such file part");
    let data_start = start + find(&body[start..], b"\r\n\r\n").unwrap() + 4;
    let delimiter = [b"\r\n--", boundary].concat();
    let data_end = data_start + find(&body[data_start..], &delimiter).unwrap();
    &body[data_start..data_end]
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A file of `len` pseudo-random bytes in the temp directory, removed on drop.
struct TempFile {
    path: PathBuf,
    data: Vec<u8>,
}

impl TempFile {
    fn new(name: &str, len: usize) -> Self {
        let mut state: u32 = 0x1234_5678 ^ len as u32;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            })
            .collect();
        let path =
            std::env::temp_dir().join(format!("yuyo-reply-routing-{}-{name}", std::process::id()));
        std::fs::write(&path, &data).unwrap();
        Self { path, data }
    }

    fn len(&self) -> u64 {
        self.data.len() as u64
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Handlers: `echo` and components answer after [`SLOW`] (the adapter's timer: the
/// handler yields while it waits); `boom` fails after it; `file` answers at once with
/// the disk file at `big` (an oversized reply); autocomplete answers after [`SLOW`] too.
fn handlers<H: BotHarness>(big: Option<(PathBuf, u64)>) -> Handlers {
    let mut handlers = Handlers::new();
    handlers
        .set_command(move |ctx| {
            let big = big.clone();
            async move {
                let Some(InteractionData::ApplicationCommand(data)) = &ctx.interaction().data
                else {
                    return Err(HandlerError::msg("not a command"));
                };
                match data.name.as_str() {
                    "echo" => {
                        H::sleep(SLOW).await;
                        Ok(Some(Reply::message("late hello")))
                    }
                    "boom" => {
                        H::sleep(SLOW).await;
                        Err(HandlerError::msg("boom after the deadline"))
                    }
                    "file" => {
                        let (path, len) = big.ok_or_else(|| HandlerError::msg("no file"))?;
                        Ok(Some(Reply::message("big file").with_file_source(
                            "big.bin",
                            FileSource::Path {
                                path,
                                len: Some(len),
                            },
                            None,
                        )))
                    }
                    other => Err(HandlerError::msg(format!("unexpected command {other}"))),
                }
            }
        })
        .unwrap()
        .set_component(|_ctx| async move {
            H::sleep(SLOW).await;
            Ok(Some(Reply::update_message("updated late")))
        })
        .unwrap()
        .set_autocomplete(|_ctx| async move {
            H::sleep(SLOW).await;
            Ok(Some(Reply::autocomplete(vec![CommandOptionChoice {
                name: "one".to_owned(),
                name_localizations: None,
                value: CommandOptionChoiceValue::String("1".to_owned()),
            }])))
        })
        .unwrap();
    handlers
}

/// The mock Discord REST API (`200 {}` unless scripted) and its base URL.
fn mock_discord() -> (MockDiscord, String) {
    let mock = MockDiscord::new();
    let url = mock.start().unwrap();
    (mock, url)
}

/// Scripts the mock's answer to the next request as `204 No Content` (a DELETE, a
/// callback).
fn no_content(mock: &MockDiscord) {
    mock.push(MockReply::status(204, ""));
}

/// A managed bot with `handlers` and the [`DEFER_AFTER`] deadline, its REST API at
/// `rest_url`, served on 127.0.0.1; the server routes replies as the bot says.
fn serve_bot<H: BotHarness>(rest_url: &str, handlers: Handlers) -> Running {
    let bot = BotBuilder::<H::Bot>::new("tok")
        .public_key_hex(DEMO_PUBLIC_KEY_HEX)
        .rest_url(rest_url)
        .handlers(handlers)
        .defer_after(Some(DEFER_AFTER))
        .build()
        .unwrap();
    assert_eq!(H::reply_routing(&bot).defer_after, Some(DEFER_AFTER));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server_bot = bot.clone();
    let served = bounded(move || H::serve(&server_bot, listener)).unwrap();
    assert_eq!(served.reply_routing, H::reply_routing(&bot));
    served.running
}

/// Graceful shutdown, which waits for the REST replies: once this returns, every late
/// reply has reached the mock.
fn stop(running: Running) {
    bounded(move || running.stop()).expect("serve failed");
}

/// Waits (bounded) until the mock has received `n` requests while the server runs.
fn wait_for(mock: &MockDiscord, n: usize) -> Vec<Recorded> {
    mock.wait_for(n, LIMIT)
        .unwrap_or_else(|| panic!("{n} REST request(s) not sent: {:?}", mock.requests()))
}

/// Posts the signed interaction `body` and reads the answer, with nothing after it.
fn post(client: &mut Client, body: &[u8]) -> Response {
    let response = client.roundtrip(&Request::signed(body)).unwrap();
    assert!(
        client.buffered().is_empty(),
        "bytes after the answer: {:?}",
        client.buffered()
    );
    response
}

fn token_of(body: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap();
    value["token"].as_str().unwrap().to_owned()
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap()
}

// ---------------------------------------------------------------------------------------
// Cases

/// A slow command is deferred (`{"type":5}`), the connection serves the next request
/// while the handler runs on, and the late reply patches the original message.
pub fn slow_command_is_deferred_and_its_reply_patches_the_original<H: BotHarness>() {
    let (mock, url) = mock_discord();
    let running = serve_bot::<H>(&url, handlers::<H>(None));
    let mut client = Client::connect(running.addr).unwrap();

    let answer = post(&mut client, fixtures::COMMAND_ECHO);
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, br#"{"type":5}"#);

    // The same connection serves the next request while the handler runs on.
    let answer = post(&mut client, fixtures::PING);
    assert_eq!(answer.body, br#"{"type":1}"#);

    // The late reply is sent while the server runs, not only at shutdown.
    let requests = wait_for(&mock, 1);
    let patch = &requests[0];
    assert_eq!(patch.method, "PATCH");
    let token = token_of(fixtures::COMMAND_ECHO);
    assert_eq!(
        patch.path,
        format!("/api/v10/webhooks/1178812346128379904/{token}/messages/@original")
    );
    assert_eq!(patch.header("content-type"), Some("application/json"));
    assert_eq!(json(&patch.body)["content"], "late hello");

    // And the connection still serves after it.
    let answer = post(&mut client, fixtures::PING);
    assert_eq!(answer.body, br#"{"type":1}"#);
    drop(client);
    stop(running);
    let requests = mock.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
}

/// A slow component is deferred as an update (`{"type":6}`) and its late reply patches
/// the original message.
pub fn slow_component_is_deferred_with_type_6<H: BotHarness>() {
    let (mock, url) = mock_discord();
    let running = serve_bot::<H>(&url, handlers::<H>(None));
    let mut client = Client::connect(running.addr).unwrap();
    let answer = post(&mut client, fixtures::COMPONENT);
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, br#"{"type":6}"#);
    let requests = wait_for(&mock, 1);
    assert_eq!(requests[0].method, "PATCH");
    assert!(requests[0].path.ends_with("/messages/@original"));
    assert_eq!(json(&requests[0].body)["content"], "updated late");
    drop(client);
    stop(running);
    let requests = mock.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
}

/// Autocomplete is answered over HTTP after the handler's full delay, never deferred,
/// and nothing goes to REST.
pub fn autocomplete_is_never_deferred<H: BotHarness>() {
    let (mock, url) = mock_discord();
    let running = serve_bot::<H>(&url, handlers::<H>(None));
    let mut client = Client::connect(running.addr).unwrap();
    let answer = post(&mut client, fixtures::AUTOCOMPLETE);
    assert_eq!(answer.status, 200);
    let body = json(&answer.body);
    assert_eq!(body["type"], 8);
    assert_eq!(body["data"]["choices"][0]["name"], "one");
    // A PING after it is answered too, so any REST request would have been sent.
    assert_eq!(post(&mut client, fixtures::PING).body, br#"{"type":1}"#);
    drop(client);
    stop(running);
    assert!(mock.requests().is_empty(), "{:?}", mock.requests());
}

/// A handler failing after the deferral: the client got the deferral (not a 500), and
/// the deferred message is deleted.
pub fn handler_error_after_deferral_deletes_the_deferred_message<H: BotHarness>() {
    let (mock, url) = mock_discord();
    no_content(&mock);
    let running = serve_bot::<H>(&url, handlers::<H>(None));
    let mut client = Client::connect(running.addr).unwrap();
    let answer = post(&mut client, fixtures::COMMAND_BOOM);
    assert_eq!(answer.status, 200, "the deferral, not a 500");
    assert_eq!(answer.body, br#"{"type":5}"#);
    let requests = wait_for(&mock, 1);
    assert_eq!(requests[0].method, "DELETE");
    assert!(requests[0].path.ends_with("/messages/@original"));
    drop(client);
    stop(running);
    let requests = mock.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
}

/// A reply with a file over the inline limit is answered `202` (empty) over HTTP and
/// sent whole through the interaction callback endpoint.
pub fn oversized_file_goes_through_the_callback_endpoint<H: BotHarness>() {
    let (mock, url) = mock_discord();
    no_content(&mock);
    let file = TempFile::new("big.bin", 200_000);
    let running = serve_bot::<H>(&url, handlers::<H>(Some((file.path.clone(), file.len()))));
    let mut client = Client::connect(running.addr).unwrap();
    let answer = post(&mut client, fixtures::COMMAND_FILE);
    assert_eq!(answer.status, 202);
    assert!(answer.body.is_empty());
    assert_eq!(answer.header("content-length"), Some("0"));

    let requests = wait_for(&mock, 1);
    let callback = &requests[0];
    assert_eq!(callback.method, "POST");
    let token = token_of(fixtures::COMMAND_FILE);
    let id = json(fixtures::COMMAND_FILE)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        callback.path,
        format!("/api/v10/interactions/{id}/{token}/callback")
    );
    let content_type = callback.header("content-type").unwrap();
    assert!(content_type.starts_with("multipart/form-data; boundary="));
    assert_eq!(
        file_part(&callback.body, content_type, "big.bin"),
        &file.data[..]
    );
    let body = String::from_utf8_lossy(&callback.body);
    assert!(body.contains(r#""type":4"#), "payload_json");
    assert!(body.contains(r#""content":"big file""#));
    drop(client);
    stop(running);
    let requests = mock.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
}

/// A file streamed from disk by the REST client arrives intact, with a known length
/// (`Content-Length`) and an unknown one (chunked); a file shorter than declared fails
/// the call instead of sending a broken body.
pub fn streamed_upload_from_disk_arrives_intact<H: BotHarness>() {
    let (mock, url) = mock_discord();
    let file = TempFile::new("upload.bin", 1_000_003);
    let config = RestConfig::builder()
        .token("tok")
        .rest_url(&url)
        .build()
        .unwrap();
    let client = H::client(config, HttpSettings::default(), None);
    let source = |len| FileSource::Path {
        path: file.path.clone(),
        len,
    };
    for len in [Some(file.len()), None] {
        let payload = Payload::raw_json(&br#"{"content":"upload"}"#[..])
            .with_file(FilePart::source("upload.bin", source(len)));
        let request = followup(payload);
        let client = client.clone();
        bounded(move || H::call(&client, request)).unwrap();
    }
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests[0].header("content-length").is_some());
    assert_eq!(requests[1].header("transfer-encoding"), Some("chunked"));
    for request in &requests {
        let content_type = request.header("content-type").unwrap();
        assert_eq!(
            file_part(&request.body, content_type, "upload.bin"),
            &file.data[..]
        );
    }

    let payload = Payload::raw_json(&b"{}"[..])
        .with_file(FilePart::source("upload.bin", source(Some(file.len() + 1))));
    let request = followup(payload);
    let error = bounded(move || H::call(&client, request)).unwrap_err();
    assert!(error.to_string().contains("declared length"), "{error}");
    assert_eq!(
        mock.requests().len(),
        2,
        "nothing complete reached the server"
    );
}

/// A follow-up of interaction token `itoken` carrying `payload` as is.
fn followup(payload: Payload) -> RestRequest<twilight_model::channel::Message> {
    let route = Route::create_followup(twilight_model::id::Id::new(1), "itoken");
    RestRequest::new(route, payload.into_body())
}

/// A bot built with `BotBuilder::events` serves Webhook Events beside its interactions:
/// an event is acknowledged `204` and reaches the bot's handler.
pub fn bot_serves_webhook_events<H: BotHarness>() {
    let (_mock, url) = mock_discord();
    let (seen, names) = std::sync::mpsc::channel();
    let mut events = EventHandlers::new();
    events
        .on_any(move |ctx| {
            let _ = seen.send(ctx.name().to_owned());
            async { Ok(()) }
        })
        .unwrap();
    let bot = BotBuilder::<H::Bot>::new("tok")
        .public_key_hex(DEMO_PUBLIC_KEY_HEX)
        .rest_url(&url)
        .events("/events", events)
        .build()
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let running = bounded(move || H::serve(&bot, listener)).unwrap().running;
    let mut client = Client::connect(running.addr).unwrap();
    let request = Request::signed(fixtures::events::APPLICATION_AUTHORIZED).target("/events");
    let answer = client.roundtrip(&request).unwrap();
    assert_eq!(answer.status, 204, "{answer:?}");
    assert_eq!(names.recv_timeout(LIMIT).unwrap(), "APPLICATION_AUTHORIZED");
    assert_eq!(post(&mut client, fixtures::PING).body, br#"{"type":1}"#);
    drop(client);
    stop(running);
}
