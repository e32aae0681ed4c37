//! Replies through REST on yuyo-smol, end to end: a `Bot`'s server on 127.0.0.1
//! answering signed interactions, with the shared mock Discord REST API on 127.0.0.1
//! receiving the late replies and the callbacks of oversized files. Ported from
//! yuyo-tokio's `tests/reply_routing.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Duration;

use async_io::Timer;
use twilight_model::application::command::{CommandOptionChoice, CommandOptionChoiceValue};
use twilight_model::application::interaction::InteractionData;
use yuyo_conformance::client::{Client, Request, Response};
use yuyo_conformance::demo::DEMO_PUBLIC_KEY_HEX;
use yuyo_conformance::fixtures;
use yuyo_conformance::mock_discord::{MockDiscord, Reply as MockReply};
use yuyo_core::endpoint::{HandlerError, Handlers, Reply};
use yuyo_core::multipart::FileSource;
use yuyo_smol::ShutdownHandle;
use yuyo_smol::bot::Bot;

const ADAPTER: &str = "smol";

fn serve_bot(rest_url: &str, handlers: Handlers) -> Running {
    let bot = Bot::builder("tok")
        .public_key_hex(DEMO_PUBLIC_KEY_HEX)
        .rest_url(rest_url)
        .handlers(handlers)
        .defer_after(Some(DEFER_AFTER))
        .build()
        .unwrap();
    assert_eq!(bot.reply_routing().defer_after, Some(DEFER_AFTER));
    let server = async_io::block_on(bot.server()).unwrap();
    assert_eq!(server.reply_routing(), bot.reply_routing());
    let server = server.with_threads(NonZeroUsize::new(2).unwrap());
    let shutdown = server.shutdown_handle();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = async_net::TcpListener::try_from(listener).unwrap();
    let served = thread::spawn(move || async_io::block_on(server.serve(listener)).unwrap());
    Running {
        addr,
        shutdown,
        served,
    }
}

const LIMIT: Duration = Duration::from_secs(20);
/// The deferral deadline of these tests.
const DEFER_AFTER: Duration = Duration::from_millis(200);
/// How long the slow handlers take: well past the deadline (behaviour under test, not
/// synchronisation).
const SLOW: Duration = Duration::from_millis(600);

/// Runs `f` on a thread and fails the test if it takes longer than `LIMIT`.
fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(LIMIT) {
        Ok(value) => value,
        Err(RecvTimeoutError::Timeout) => panic!("test took too long"),
        Err(RecvTimeoutError::Disconnected) => panic!("the test thread panicked"),
    }
}

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
        let path = std::env::temp_dir().join(format!(
            "yuyo-{ADAPTER}-reply-routing-{}-{name}",
            std::process::id()
        ));
        std::fs::write(&path, &data).unwrap();
        Self { path, data }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Handlers: `echo` and components answer after [`SLOW`] (an async timer: the handler
/// yields while it waits); `boom` fails after it; `file` answers at once with the disk
/// file at `big` (an oversized reply); autocomplete answers after [`SLOW`] too.
fn handlers(big: Option<(PathBuf, u64)>) -> Handlers {
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
                        Timer::after(SLOW).await;
                        Ok(Some(Reply::message("late hello")))
                    }
                    "boom" => {
                        Timer::after(SLOW).await;
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
            Timer::after(SLOW).await;
            Ok(Some(Reply::update_message("updated late")))
        })
        .unwrap()
        .set_autocomplete(|_ctx| async move {
            Timer::after(SLOW).await;
            Ok(Some(Reply::autocomplete(vec![CommandOptionChoice {
                name: "one".to_owned(),
                name_localizations: None,
                value: CommandOptionChoiceValue::String("1".to_owned()),
            }])))
        })
        .unwrap();
    handlers
}

/// The mock Discord REST API: `204` for DELETE and the callback, else `200 {}`.
fn mock_discord() -> (MockDiscord, String) {
    let mock = MockDiscord::new();
    let url = mock.start().unwrap();
    (mock, url)
}

/// Scripts the mock's answer to the next request as `204 No Content`.
fn no_content(mock: &MockDiscord) {
    mock.push(MockReply::status(204, ""));
}

struct Running {
    addr: std::net::SocketAddr,
    shutdown: ShutdownHandle,
    served: thread::JoinHandle<()>,
}

impl Running {
    /// Graceful shutdown, which waits for the REST replies: once this returns, every
    /// late reply has reached the mock.
    fn stop(self) {
        self.shutdown.shutdown();
        let served = self.served;
        bounded(move || served.join().expect("serve panicked"));
    }
}

fn post(client: &mut Client, body: &[u8]) -> Response {
    client.roundtrip(&Request::signed(body)).unwrap()
}

fn token_of(body: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap();
    value["token"].as_str().unwrap().to_owned()
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap()
}

#[test]
fn slow_command_is_deferred_and_its_reply_patches_the_original() {
    let (mock, url) = mock_discord();
    let running = serve_bot(&url, handlers(None));
    let mut client = Client::connect(running.addr).unwrap();

    let answer = post(&mut client, fixtures::COMMAND_ECHO);
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, br#"{"type":5}"#);

    // The same connection serves the next request while the handler runs on.
    let answer = post(&mut client, fixtures::PING);
    assert_eq!(answer.body, br#"{"type":1}"#);
    drop(client);
    running.stop();

    let requests = mock.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let patch = &requests[0];
    assert_eq!(patch.method, "PATCH");
    let token = token_of(fixtures::COMMAND_ECHO);
    assert_eq!(
        patch.path,
        format!("/api/v10/webhooks/1178812346128379904/{token}/messages/@original")
    );
    assert_eq!(patch.header("content-type"), Some("application/json"));
    assert_eq!(json(&patch.body)["content"], "late hello");
}

#[test]
fn slow_component_is_deferred_with_type_6() {
    let (mock, url) = mock_discord();
    let running = serve_bot(&url, handlers(None));
    let mut client = Client::connect(running.addr).unwrap();
    let answer = post(&mut client, fixtures::COMPONENT);
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, br#"{"type":6}"#);
    drop(client);
    running.stop();
    let requests = mock.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].method, "PATCH");
    assert!(requests[0].path.ends_with("/messages/@original"));
    assert_eq!(json(&requests[0].body)["content"], "updated late");
}

#[test]
fn autocomplete_is_never_deferred() {
    let (mock, url) = mock_discord();
    let running = serve_bot(&url, handlers(None));
    let mut client = Client::connect(running.addr).unwrap();
    let answer = post(&mut client, fixtures::AUTOCOMPLETE);
    assert_eq!(answer.status, 200);
    let body = json(&answer.body);
    assert_eq!(body["type"], 8);
    assert_eq!(body["data"]["choices"][0]["name"], "one");
    assert_eq!(post(&mut client, fixtures::PING).body, br#"{"type":1}"#);
    drop(client);
    running.stop();
    // Answered over HTTP after the handler's full delay; nothing went to REST.
    assert!(mock.requests().is_empty(), "{:?}", mock.requests());
}

#[test]
fn handler_error_after_deferral_deletes_the_deferred_message() {
    let (mock, url) = mock_discord();
    no_content(&mock);
    let running = serve_bot(&url, handlers(None));
    let mut client = Client::connect(running.addr).unwrap();
    let answer = post(&mut client, fixtures::COMMAND_BOOM);
    assert_eq!(answer.status, 200, "the deferral, not a 500");
    assert_eq!(answer.body, br#"{"type":5}"#);
    drop(client);
    running.stop();
    let requests = mock.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].method, "DELETE");
    assert!(requests[0].path.ends_with("/messages/@original"));
}

#[test]
fn oversized_file_goes_through_the_callback_endpoint() {
    let (mock, url) = mock_discord();
    no_content(&mock);
    let file = TempFile::new("big.bin", 200_000);
    let running = serve_bot(
        &url,
        handlers(Some((file.path.clone(), file.data.len() as u64))),
    );
    let mut client = Client::connect(running.addr).unwrap();
    let answer = post(&mut client, fixtures::COMMAND_FILE);
    assert_eq!(answer.status, 202);
    assert!(answer.body.is_empty());
    assert_eq!(answer.header("content-length"), Some("0"));
    drop(client);
    running.stop();

    let requests = mock.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
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
}
