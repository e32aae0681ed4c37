//! The conformance cases. Each function is one case, generic over the adapter's
//! [`Harness`]; [`suite!`](crate::suite) makes a `#[test]` of each.
//!
//! Every case talks to a real server over TCP on `127.0.0.1` with the bounded
//! [`Client`], synchronises with the server through channels and [`Gate`]s (never
//! sleeps), and asserts status, key headers and body bytes. Cases marked *HTTP layer*
//! only assert what every HTTP/1.1 implementation agrees on (status, media type), since
//! that answer comes from the adapter's HTTP layer, not from the endpoint.
//!
//! Test-only behaviour comes from a probe service: the demo handlers plus the commands
//! `slow` (waits on a gate), `panic`, `after` (after-response work waiting on a gate),
//! `log` and `disk` (a file streamed from disk), sent as the `echo` fixture renamed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};
use yuyo_core::endpoint::{
    Context, Endpoint, EndpointConfig, Handler, HandlerError, HandlerResult, InteractionKind,
    OnConflict, Reply,
};
use yuyo_core::lifespan::CallbackError;
use yuyo_core::multipart::FileSource;
use yuyo_core::service::{ServeError, ServeOptions, Service};

use crate::client::{Client, IO_TIMEOUT, Request, Response};
use crate::demo::{self, demo_handlers, demo_verifier};
use crate::fixtures::{self, ECHO_TEXT, command_named};
use crate::{Gate, Harness, Running};

/// How long a server may take to stop once asked (the test services' grace period is
/// shorter).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// The grace period of the test services.
const GRACE: Duration = Duration::from_secs(10);
pub(crate) const TEXT: &str = "text/plain; charset=utf-8";
const HANDLER_FAILED: &str = "Internal Server Error: the interaction handler failed";

// ---------------------------------------------------------------------------------------
// Helpers

fn options() -> ServeOptions {
    ServeOptions {
        grace_period: GRACE,
        ..ServeOptions::default()
    }
}

pub(crate) fn service_for(endpoint: Endpoint) -> Service {
    Service::new(endpoint).with_options(options())
}

/// The demo service with the test options.
pub(crate) fn demo_service() -> Service {
    demo::demo_service(demo_verifier()).with_options(options())
}

pub(crate) fn start<H: Harness>(service: Service) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    H::spawn(service, listener)
}

/// Waits (bounded) for `running` to end, after triggering its shutdown if `trigger`.
pub(crate) fn finish(running: Running, trigger: bool) -> Result<(), ServeError> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let result = if trigger {
            running.stop()
        } else {
            running.join()
        };
        let _ = tx.send(result);
    });
    rx.recv_timeout(STOP_TIMEOUT)
        .unwrap_or_else(|_| panic!("the server did not stop within {STOP_TIMEOUT:?}"))
}

pub(crate) fn stop_ok(running: Running) {
    if let Err(error) = finish(running, true) {
        panic!("serve returned an error: {error}");
    }
}

pub(crate) fn connect(addr: SocketAddr) -> Client {
    Client::connect(addr).expect("connect to the server")
}

/// One request on a fresh connection.
pub(crate) fn ask(addr: SocketAddr, request: &Request) -> Response {
    connect(addr)
        .roundtrip(request)
        .unwrap_or_else(|e| panic!("no response to {} {}: {e}", request.method, request.target))
}

pub(crate) fn content_length_matches(response: &Response) {
    assert_eq!(
        response.header("content-length"),
        Some(response.body.len().to_string().as_str()),
        "content-length of {response:?}"
    );
}

#[track_caller]
pub(crate) fn assert_text(response: &Response, status: u16, text: &str) {
    assert_eq!(response.status, status, "status of {response:?}");
    assert_eq!(response.header("content-type"), Some(TEXT), "{response:?}");
    assert_eq!(response.text(), text, "body of {response:?}");
    content_length_matches(response);
}

#[track_caller]
fn assert_json(response: &Response, expected: &Value) {
    assert_eq!(response.status, 200, "status of {response:?}");
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "{response:?}"
    );
    assert_eq!(&response.json(), expected, "body of {response:?}");
    content_length_matches(response);
}

fn message(content: &str) -> Value {
    json!({"type": 4, "data": {"content": content}})
}

/// Runs `requests` against the demo service, each on its own connection, and checks
/// each response with `check`.
type Row<'a> = (Request, &'a dyn Fn(&Response));

fn table<H: Harness>(service: Service, rows: Vec<Row<'_>>) {
    let running = start::<H>(service);
    for (request, check) in rows {
        let response = ask(running.addr, &request);
        check(&response);
    }
    stop_ok(running);
}

fn text(status: u16, body: &'static str) -> impl Fn(&Response) {
    move |response: &Response| assert_text(response, status, body)
}

/// A multipart body split into its parts: (part headers, part body).
fn multipart_parts(response: &Response) -> Vec<(String, Vec<u8>)> {
    let content_type = response.header("content-type").expect("a content type");
    let boundary = content_type
        .strip_prefix("multipart/form-data; boundary=")
        .unwrap_or_else(|| panic!("not multipart: {content_type}"));
    let delimiter = format!("--{boundary}");
    let body = &response.body;
    let closing = format!("\r\n{delimiter}--\r\n");
    assert!(
        body.starts_with(delimiter.as_bytes()),
        "body starts with the boundary"
    );
    assert!(
        body.ends_with(closing.as_bytes()),
        "body ends with the closing boundary"
    );
    let inner = &body[delimiter.len()..body.len() - closing.len()];
    let separator = format!("\r\n{delimiter}");
    let mut parts = Vec::new();
    let mut rest = inner;
    loop {
        let end = find(rest, separator.as_bytes()).unwrap_or(rest.len());
        let part = &rest[..end];
        let part = part.strip_prefix(b"\r\n").expect("CRLF after a boundary");
        let split = find(part, b"\r\n\r\n").expect("part head and body");
        parts.push((
            String::from_utf8_lossy(&part[..split]).into_owned(),
            part[split + 4..].to_vec(),
        ));
        if end == rest.len() {
            break;
        }
        rest = &rest[end + separator.len()..];
    }
    parts
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

// ---------------------------------------------------------------------------------------
// The probe service

/// Test-only behaviour behind commands of the demo endpoint.
struct Probe {
    events: Mutex<mpsc::Sender<&'static str>>,
    gate: Gate,
    after_gate: Gate,
    after_done: AtomicBool,
    log: Mutex<Vec<&'static str>>,
    file: Mutex<Option<(PathBuf, Option<u64>)>>,
}

impl Probe {
    fn event(&self, event: &'static str) {
        let _ = self
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(event);
    }

    fn log(&self, entry: &'static str) {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(entry);
    }

    fn logged(&self) -> Vec<&'static str> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

async fn probe_command(probe: Arc<Probe>, ctx: Context) -> HandlerResult {
    use twilight_model::application::interaction::InteractionData;
    let name = match &ctx.interaction().data {
        Some(InteractionData::ApplicationCommand(data)) => data.name.clone(),
        _ => return Err(HandlerError::msg("not a command")),
    };
    match name.as_str() {
        "slow" => {
            probe.event("slow started");
            probe.gate.wait().await;
            Ok(Some(Reply::message("slow done")))
        }
        "panic" => panic!("the conformance suite's panicking handler"),
        "after" => {
            let work = Arc::clone(&probe);
            Ok(Some(Reply::message("after").after(async move {
                work.after_gate.wait().await;
                work.after_done.store(true, Ordering::SeqCst);
                work.event("after done");
            })))
        }
        "log" => {
            probe.log("request");
            Ok(Some(Reply::message("logged")))
        }
        "disk" => {
            let file = probe
                .file
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let (path, len) = file.ok_or_else(|| HandlerError::msg("no file set"))?;
            Ok(Some(Reply::message("disk").with_file_source(
                "data.bin",
                FileSource::Path { path, len },
                Some("application/octet-stream"),
            )))
        }
        _ => demo::command(ctx).await,
    }
}

/// The demo handlers plus the probe commands, and the probe's event receiver.
fn probe_service() -> (Service, Arc<Probe>, mpsc::Receiver<&'static str>) {
    let (tx, rx) = mpsc::channel();
    let probe = Arc::new(Probe {
        events: Mutex::new(tx),
        gate: Gate::new(),
        after_gate: Gate::new(),
        after_done: AtomicBool::new(false),
        log: Mutex::new(Vec::new()),
        file: Mutex::new(None),
    });
    let mut handlers = demo_handlers();
    let handler_probe = Arc::clone(&probe);
    let _ = handlers.set(
        InteractionKind::Command,
        Handler::new(move |ctx| probe_command(Arc::clone(&handler_probe), ctx)),
        OnConflict::Replace,
    );
    let service = service_for(Endpoint::new(
        EndpointConfig::new(demo_verifier()),
        handlers,
    ));
    (service, probe, rx)
}

fn wait_event(events: &mpsc::Receiver<&'static str>, expected: &str) {
    match events.recv_timeout(IO_TIMEOUT) {
        Ok(event) => assert_eq!(event, expected),
        Err(_) => panic!("no {expected:?} within {IO_TIMEOUT:?}"),
    }
}

/// A connection that made one request and is now idle: its closing shows that the
/// server has begun its graceful shutdown.
pub(crate) fn watcher(addr: SocketAddr) -> Client {
    let mut client = connect(addr);
    let response = client
        .roundtrip(&Request::signed(fixtures::PING))
        .expect("PING on the watcher connection");
    assert_json(&response, &json!({"type": 1}));
    assert!(!response.closes(), "the watcher connection stays open");
    client
}

/// A temporary file removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(contents: &[u8]) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "yuyo-conformance-{}-{}.bin",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, contents).expect("write a temporary file");
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// 200 000 bytes of a pattern that does not repeat at chunk-size periods.
fn disk_contents() -> Vec<u8> {
    (0..200_000_u32)
        .map(|i| (i.wrapping_mul(31) % 251) as u8)
        .collect()
}

fn disk_case<H: Harness>(declare_len: bool) {
    let contents = disk_contents();
    let file = TempFile::new(&contents);
    let (service, probe, _events) = probe_service();
    *probe.file.lock().unwrap() =
        Some((file.0.clone(), declare_len.then_some(contents.len() as u64)));
    let running = start::<H>(service);
    let mut client = connect(running.addr);
    let response = client
        .roundtrip(&Request::signed(&command_named("disk")))
        .expect("a response");
    assert_eq!(response.status, 200, "{:?}", response.headers);
    if declare_len {
        content_length_matches(&response);
    } else {
        assert_eq!(response.header("content-length"), None);
        assert_eq!(response.header("transfer-encoding"), Some("chunked"));
    }
    let parts = multipart_parts(&response);
    assert_eq!(parts.len(), 2, "payload_json and one file");
    let payload: Value = serde_json::from_slice(&parts[0].1).expect("payload_json is JSON");
    assert_eq!(payload["type"], 4);
    assert_eq!(payload["data"]["content"], "disk");
    assert!(
        parts[1]
            .0
            .contains(r#"name="files[0]"; filename="data.bin""#),
        "{}",
        parts[1].0
    );
    assert!(parts[1].1 == contents, "the file's bytes arrive unchanged");
    // The connection goes on.
    let again = client
        .roundtrip(&Request::signed(fixtures::COMMAND_ECHO))
        .expect("a second response");
    assert_json(&again, &message(ECHO_TEXT));
    drop(client);
    stop_ok(running);
}

// ---------------------------------------------------------------------------------------
// The status table of the endpoint issue, over real HTTP

/// 404 for another path (the query is ignored), before 405.
pub fn status_404_not_found<H: Harness>() {
    let echo = Request::signed(fixtures::COMMAND_ECHO);
    let not_found = text(404, "Not Found");
    table::<H>(
        demo_service(),
        vec![
            (echo.clone().target("/other"), &not_found),
            (echo.clone().target("/other?x=/"), &not_found),
            (echo.clone().target("/x").method("GET"), &not_found),
            (echo.target("/?foo=bar"), &|r| {
                assert_json(r, &message(ECHO_TEXT));
            }),
        ],
    );
}

/// 405 with `Allow: POST` for other methods, before 415.
pub fn status_405_method_not_allowed<H: Harness>() {
    let echo = Request::signed(fixtures::COMMAND_ECHO);
    let check = |r: &Response| {
        assert_text(r, 405, "Method Not Allowed: use POST");
        assert_eq!(r.header("allow"), Some("POST"));
    };
    table::<H>(
        demo_service(),
        vec![
            (echo.clone().method("GET"), &check),
            (echo.method("PUT").remove("content-type"), &check),
        ],
    );
}

/// 415 for a missing, repeated or other `Content-Type`; case and parameters are fine.
pub fn status_415_unsupported_media_type<H: Harness>() {
    let echo = Request::signed(fixtures::COMMAND_ECHO);
    let refused = text(
        415,
        "Unsupported Media Type: Content-Type must be application/json",
    );
    table::<H>(
        demo_service(),
        vec![
            (echo.clone().remove("content-type"), &refused),
            (echo.clone().set("content-type", "text/plain"), &refused),
            (
                echo.clone().add("content-type", "application/json"),
                &refused,
            ),
            (
                echo.clone()
                    .set("content-type", "application/xml")
                    .remove("x-signature-ed25519"),
                &refused,
            ),
            (
                echo.set("content-type", "Application/JSON ; charset=UTF-8"),
                &|r| assert_json(r, &message(ECHO_TEXT)),
            ),
        ],
    );
}

/// 401 for missing, repeated or malformed signature headers.
pub fn status_401_signature_headers<H: Harness>() {
    let echo = Request::signed(fixtures::COMMAND_ECHO);
    let signature = demo::sign(
        &demo::DEMO_SECRET_SEED,
        demo::DEMO_TIMESTAMP,
        fixtures::COMMAND_ECHO,
    );
    let missing_sig = text(401, "Missing X-Signature-Ed25519 header");
    let repeated_sig = text(401, "Repeated X-Signature-Ed25519 header");
    let malformed_sig = text(
        401,
        "X-Signature-Ed25519 must be exactly 128 hexadecimal digits",
    );
    let missing_ts = text(401, "Missing X-Signature-Timestamp header");
    let repeated_ts = text(401, "Repeated X-Signature-Timestamp header");
    let malformed_ts = text(401, "X-Signature-Timestamp must be non-empty visible ASCII");
    table::<H>(
        demo_service(),
        vec![
            (echo.clone().remove("x-signature-ed25519"), &missing_sig),
            (
                echo.clone().add("x-signature-ed25519", &signature),
                &repeated_sig,
            ),
            (
                echo.clone().set("x-signature-ed25519", "ab".repeat(63)),
                &malformed_sig,
            ),
            (
                echo.clone().set("x-signature-ed25519", "zz".repeat(64)),
                &malformed_sig,
            ),
            (echo.clone().remove("x-signature-timestamp"), &missing_ts),
            (
                echo.clone()
                    .add("x-signature-timestamp", demo::DEMO_TIMESTAMP),
                &repeated_ts,
            ),
            (
                echo.clone().set("x-signature-timestamp", "1700 000000"),
                &malformed_ts,
            ),
            (
                echo.set("x-signature-ed25519", signature.to_uppercase()),
                &|r| assert_json(r, &message(ECHO_TEXT)),
            ),
        ],
    );
}

/// 400 for a `Content-Length` that is not a number or repeated with another value
/// (*HTTP layer*: status and media type).
pub fn status_400_content_length<H: Harness>() {
    let echo = Request::signed(fixtures::COMMAND_ECHO);
    let check = |r: &Response| {
        assert_eq!(r.status, 400, "{r:?}");
    };
    table::<H>(
        demo_service(),
        vec![
            (echo.clone().set("content-length", "12a"), &check),
            (echo.add("content-length", "1"), &check),
        ],
    );
}

/// 413 for a declared `Content-Length` over the limit, answered without the body being
/// sent (*HTTP layer*: status and media type).
pub fn status_413_declared_length_without_body<H: Harness>() {
    let running = start::<H>(demo_service());
    let request = Request::signed(fixtures::COMMAND_ECHO)
        .set(
            "content-length",
            (yuyo_core::endpoint::DEFAULT_MAX_BODY_SIZE + 1).to_string(),
        )
        .body(b"");
    let mut client = connect(running.addr);
    client.send(&request.head_bytes()).expect("send the head");
    let response = client.response().expect("413 before the body");
    assert_eq!(response.status, 413, "{response:?}");
    assert_eq!(response.header("content-type"), Some(TEXT));
    drop(client);
    stop_ok(running);
}

/// 413 for a declared length over the limit while the client sends the body at once (no
/// `Expect`), read only after the client wrote half a MiB of body: the answer must still
/// reach it. (Servers linger before closing, so unread bytes do not turn the close into a
/// reset; Linux keeps already-received data readable after a reset, other stacks do not.)
pub fn status_413_declared_length_with_body_in_flight<H: Harness>() {
    let running = start::<H>(demo_service());
    let request = Request::signed(fixtures::COMMAND_ECHO)
        .set(
            "content-length",
            (2 * yuyo_core::endpoint::DEFAULT_MAX_BODY_SIZE).to_string(),
        )
        .body(b"");
    let mut client = connect(running.addr);
    let mut writer = client.writer().expect("a second socket handle");
    let head = request.head_bytes();
    let sender = std::thread::spawn(move || {
        use std::io::Write as _;
        let _ = writer.write_all(&head);
        // Part of the body, without waiting for an answer; once the server is done with
        // the connection, writes may fail, which is fine.
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..8 {
            if writer.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    // Read only once the body is out (or refused).
    let _ = sender.join();
    let response = client.response().expect("413, not a reset");
    assert_eq!(response.status, 413, "{response:?}");
    drop(client);
    stop_ok(running);
}

/// 413 for a chunked body that grows over the limit while it streams in
/// (*HTTP layer*: status and media type).
pub fn status_413_streamed_chunked_body<H: Harness>() {
    let small = service_for(Endpoint::new(
        EndpointConfig::new(demo_verifier()).max_body_size(64),
        demo_handlers(),
    ));
    let running = start::<H>(small);
    let request = Request::signed(fixtures::COMMAND_ECHO).chunked(10);
    let mut client = connect(running.addr);
    // The server may stop reading once it refuses; a failed write is fine.
    let _ = client.send(&request.to_bytes());
    let response = client.response().expect("413 while streaming");
    assert_eq!(response.status, 413, "{response:?}");
    assert_eq!(response.header("content-type"), Some(TEXT));
    drop(client);
    // A small body still goes through on a new connection.
    let ping = ask(running.addr, &Request::signed(br#"{"type":1}"#));
    assert_json(&ping, &json!({"type": 1}));
    stop_ok(running);
}

/// 400 for an empty body, with `Content-Length: 0` or chunked.
pub fn status_400_empty_body<H: Harness>() {
    let empty = Request::signed(b"");
    let check = text(400, "Empty request body");
    table::<H>(
        demo_service(),
        vec![(empty.clone(), &check), (empty.chunked(10), &check)],
    );
}

/// 401 for a signature that does not verify.
pub fn status_401_bad_signature<H: Harness>() {
    let echo = Request::signed(fixtures::COMMAND_ECHO);
    let other = demo::sign(&demo::DEMO_SECRET_SEED, demo::DEMO_TIMESTAMP, b"{}");
    let invalid = text(401, "Invalid request signature");
    table::<H>(
        demo_service(),
        vec![
            (echo.clone().set("x-signature-ed25519", &other), &invalid),
            (
                echo.clone().set("x-signature-timestamp", "1700000001"),
                &invalid,
            ),
            (echo.set("x-signature-ed25519", "00".repeat(64)), &invalid),
        ],
    );
}

/// 400 for an authentic body that is not a JSON object.
pub fn status_400_not_json<H: Harness>() {
    let check = text(400, "Body is not a JSON object");
    table::<H>(
        demo_service(),
        vec![
            (Request::signed(b"[1]"), &check),
            (Request::signed(b"nope"), &check),
            (Request::signed(br#"{"type":1}x"#), &check),
        ],
    );
}

/// 400 for a missing or non-integer `type`.
pub fn status_400_bad_type<H: Harness>() {
    let check = text(400, "Interaction type is missing or not an integer");
    table::<H>(
        demo_service(),
        vec![
            (Request::signed(b"{}"), &check),
            (Request::signed(br#"{"type":"2"}"#), &check),
            (Request::signed(br#"{"type":2.5}"#), &check),
        ],
    );
}

/// PING → 200 `{"type":1}` (`application/json`).
pub fn status_200_ping<H: Harness>() {
    let pong = |r: &Response| assert_json(r, &json!({"type": 1}));
    table::<H>(
        demo_service(),
        vec![
            (Request::signed(fixtures::PING), &pong),
            (Request::signed(br#"{"type":1}"#), &pong),
        ],
    );
}

/// 501 for interaction types other than 1–5.
pub fn status_501_unknown_type<H: Harness>() {
    table::<H>(
        demo_service(),
        vec![
            (
                Request::signed(fixtures::UNKNOWN_TYPE),
                &text(501, "Unsupported interaction type 99"),
            ),
            (
                Request::signed(br#"{"type":6}"#),
                &text(501, "Unsupported interaction type 6"),
            ),
        ],
    );
}

/// 501 for a kind without a handler (modal removed).
pub fn status_501_no_handler<H: Harness>() {
    let mut handlers = demo_handlers();
    let _ = handlers.remove(InteractionKind::Modal);
    let service = service_for(Endpoint::new(
        EndpointConfig::new(demo_verifier()),
        handlers,
    ));
    table::<H>(
        service,
        vec![(
            Request::signed(fixtures::MODAL),
            &text(501, "No handler for modal interactions"),
        )],
    );
}

/// 500 for an authentic interaction the typed model cannot read.
pub fn status_500_unreadable_interaction<H: Harness>() {
    table::<H>(
        demo_service(),
        vec![(
            Request::signed(br#"{"type":2}"#),
            &text(500, "Could not read the interaction"),
        )],
    );
}

// ---------------------------------------------------------------------------------------
// The demo handlers

/// Command `none` → 204, no body, no `Content-Length`.
pub fn demo_none_204<H: Harness>() {
    table::<H>(
        demo_service(),
        vec![(Request::signed(fixtures::COMMAND_NONE), &|r| {
            assert_eq!(r.status, 204, "{r:?}");
            assert_eq!(r.header("content-length"), None);
            assert!(r.body.is_empty());
        })],
    );
}

/// Command `echo` → 200 message with the string option.
pub fn demo_echo_200<H: Harness>() {
    table::<H>(
        demo_service(),
        vec![(Request::signed(fixtures::COMMAND_ECHO), &|r| {
            assert_json(r, &message(ECHO_TEXT));
        })],
    );
}

/// Command `echo` without options → 200 message `hello`.
pub fn demo_echo_default_text<H: Harness>() {
    table::<H>(
        demo_service(),
        vec![(
            Request::signed(&fixtures::command_echo_without_options()),
            &|r| assert_json(r, &message(demo::ECHO_DEFAULT)),
        )],
    );
}

/// Command `ephemeral` → message with the `EPHEMERAL` flag (64).
pub fn demo_ephemeral<H: Harness>() {
    table::<H>(
        demo_service(),
        vec![(Request::signed(fixtures::COMMAND_EPHEMERAL), &|r| {
            assert_json(
                r,
                &json!({"type": 4, "data": {"content": demo::EPHEMERAL_TEXT, "flags": 64}}),
            );
        })],
    );
}

/// Command `defer` → `{"type":5}`.
pub fn demo_defer<H: Harness>() {
    table::<H>(
        demo_service(),
        vec![(Request::signed(fixtures::COMMAND_DEFER), &|r| {
            assert_json(r, &json!({"type": 5}));
        })],
    );
}

/// Command `file` → `multipart/form-data`: `payload_json` naming the attachment, then
/// `files[0]` = `hello.txt` with `hello file`.
pub fn demo_file_multipart<H: Harness>() {
    table::<H>(
        demo_service(),
        vec![(Request::signed(fixtures::COMMAND_FILE), &|r| {
            assert_eq!(r.status, 200, "{r:?}");
            content_length_matches(r);
            let parts = multipart_parts(r);
            assert_eq!(parts.len(), 2);
            assert_eq!(
                parts[0].0,
                "Content-Disposition: form-data; name=\"payload_json\"\r\nContent-Type: application/json"
            );
            let payload: Value = serde_json::from_slice(&parts[0].1).unwrap();
            assert_eq!(payload["type"], 4);
            assert_eq!(payload["data"]["content"], demo::FILE_TEXT);
            assert_eq!(payload["data"]["attachments"][0]["filename"], "hello.txt");
            assert_eq!(payload["data"]["attachments"][0]["id"], 0);
            assert_eq!(
                parts[1].0,
                "Content-Disposition: form-data; name=\"files[0]\"; filename=\"hello.txt\"\r\nContent-Type: application/octet-stream"
            );
            assert_eq!(parts[1].1, demo::FILE_CONTENTS.as_bytes());
        })],
    );
}

/// Command `boom` → 500.
pub fn demo_boom_500<H: Harness>() {
    table::<H>(
        demo_service(),
        vec![(
            Request::signed(fixtures::COMMAND_BOOM),
            &text(500, HANDLER_FAILED),
        )],
    );
}

/// Autocomplete → two choices (type 8).
pub fn demo_autocomplete<H: Harness>() {
    table::<H>(
        demo_service(),
        vec![(Request::signed(fixtures::AUTOCOMPLETE), &|r| {
            assert_json(
                r,
                &json!({"type": 8, "data": {"choices": [
                    {"name": "alpha", "value": "alpha"},
                    {"name": "beta", "value": "beta"},
                ]}}),
            );
        })],
    );
}

/// Button → update message (type 7) `clicked confirm_button`.
pub fn demo_button<H: Harness>() {
    table::<H>(
        demo_service(),
        vec![(Request::signed(fixtures::COMPONENT), &|r| {
            assert_json(
                r,
                &json!({"type": 7, "data": {"content": "clicked confirm_button"}}),
            );
        })],
    );
}

/// Modal submit → message `modal feedback_modal`.
pub fn demo_modal<H: Harness>() {
    table::<H>(
        demo_service(),
        vec![(Request::signed(fixtures::MODAL), &|r| {
            assert_json(r, &message("modal feedback_modal"));
        })],
    );
}

/// Another command name → message ``unknown command `NAME` ``.
pub fn unknown_command<H: Harness>() {
    table::<H>(
        demo_service(),
        vec![(Request::signed(&command_named("nope")), &|r| {
            assert_json(r, &message("unknown command `nope`"));
        })],
    );
}

// ---------------------------------------------------------------------------------------
// Connections

/// Three requests written at once on one connection are answered in order.
pub fn pipelined_requests_in_order<H: Harness>() {
    let running = start::<H>(demo_service());
    let mut client = connect(running.addr);
    let mut bytes = Request::signed(fixtures::PING).to_bytes();
    bytes.extend(Request::signed(fixtures::COMMAND_ECHO).to_bytes());
    bytes.extend(Request::signed(fixtures::COMMAND_NONE).to_bytes());
    client.send(&bytes).expect("send three requests");
    assert_json(&client.response().unwrap(), &json!({"type": 1}));
    assert_json(&client.response().unwrap(), &message(ECHO_TEXT));
    assert_eq!(client.response().unwrap().status, 204);
    drop(client);
    stop_ok(running);
}

/// Requests completing together on many connections (verified as a batch by
/// the adapters that batch), a third of them with bad signatures: each gets
/// its own answer, and every connection goes on serving.
pub fn concurrent_mixed_signatures<H: Harness>() {
    let running = start::<H>(demo_service());
    let good = Request::signed(fixtures::COMMAND_ECHO);
    let forged = demo::sign(&demo::DEMO_SECRET_SEED, demo::DEMO_TIMESTAMP, b"{}");
    let bad = good.clone().set("x-signature-ed25519", &forged);
    let mut clients: Vec<Client> = (0..24).map(|_| connect(running.addr)).collect();
    for round in 0..2 {
        for (index, client) in clients.iter_mut().enumerate() {
            let request = if (index + round) % 3 == 0 {
                &bad
            } else {
                &good
            };
            client.send(&request.to_bytes()).expect("send a request");
        }
        for (index, client) in clients.iter_mut().enumerate() {
            let response = client.response().expect("a response");
            if (index + round) % 3 == 0 {
                assert_text(&response, 401, "Invalid request signature");
            } else {
                assert_json(&response, &message(ECHO_TEXT));
            }
        }
    }
    drop(clients);
    stop_ok(running);
}

/// `Expect: 100-continue`: `100 Continue` before the body is sent, then 200.
pub fn expect_100_continue<H: Harness>() {
    let running = start::<H>(demo_service());
    let mut client = connect(running.addr);
    let request = Request::signed(fixtures::COMMAND_ECHO).set("expect", "100-continue");
    client.send(&request.head_bytes()).expect("send the head");
    let interim = client.next_response().expect("100 Continue");
    assert_eq!(interim.status, 100, "{interim:?}");
    client.send(&request.body).expect("send the body");
    assert_json(&client.response().unwrap(), &message(ECHO_TEXT));
    drop(client);
    stop_ok(running);
}

/// A chunked request body (small chunks, one and many writes) is read whole.
pub fn chunked_request_body<H: Harness>() {
    let running = start::<H>(demo_service());
    let request = Request::signed(fixtures::COMMAND_ECHO).chunked(100);
    assert_json(&ask(running.addr, &request), &message(ECHO_TEXT));
    // The same, one chunk per write.
    let mut client = connect(running.addr);
    client.send(&request.head_bytes()).unwrap();
    for piece in request.body.chunks(107) {
        client.send(piece).unwrap();
    }
    assert_json(&client.response().unwrap(), &message(ECHO_TEXT));
    drop(client);
    stop_ok(running);
}

/// A client silent after the head is answered 408 and closed when the body deadline
/// (1 s here) passes (*HTTP layer*: status).
pub fn body_timeout_408<H: Harness>() {
    let mut options = options();
    options.http.body_timeout = Duration::from_secs(1);
    let running = start::<H>(demo::demo_service(demo_verifier()).with_options(options));
    let mut client = connect(running.addr);
    let request = Request::signed(fixtures::COMMAND_ECHO);
    client.send(&request.head_bytes()).unwrap();
    let response = client.response().expect("408 after the body deadline");
    assert_eq!(response.status, 408, "{response:?}");
    client.expect_closed();
    stop_ok(running);
}

/// 200 idle connections do not stop a signed command from being answered.
pub fn idle_connections_do_not_starve<H: Harness>() {
    let running = start::<H>(demo_service());
    let idle: Vec<Client> = (0..200).map(|_| connect(running.addr)).collect();
    let response = ask(running.addr, &Request::signed(fixtures::COMMAND_ECHO));
    assert_json(&response, &message(ECHO_TEXT));
    stop_ok(running);
    drop(idle);
}

/// A flood of silent sockets that fills the connection cap does not starve a real request:
/// connections accepted once half the cap is in use must send their head within the
/// pressure timeout (1 s), so a slot frees long before the usual 30 s head deadline here.
pub fn silent_flood_at_the_cap_does_not_starve<H: Harness>() {
    let mut options = options();
    options.max_connections = 8;
    options.http.head_timeout = Duration::from_secs(30);
    let running = start::<H>(demo::demo_service(demo_verifier()).with_options(options));
    let silent: Vec<Client> = (0..8).map(|_| connect(running.addr)).collect();
    // Waits in the listen backlog until a pressured silent socket is closed, well within
    // the client's 10 s timeout (a 30 s deadline everywhere would fail it).
    let response = ask(running.addr, &Request::signed(fixtures::COMMAND_ECHO));
    assert_json(&response, &message(ECHO_TEXT));
    drop(silent);
    stop_ok(running);
}

// ---------------------------------------------------------------------------------------
// Lifespan and shutdown

/// A failed startup: serve returns `ServeError::Startup` with every callback's message,
/// nothing is served (a connection made meanwhile gets no answer), and shutdown callbacks
/// do not run.
pub fn startup_failure<H: Harness>() {
    let shutdown_ran = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&shutdown_ran);
    let service = demo_service()
        .with_startup_callback(|| async { Ok(()) })
        .with_startup_callback(|| async { Err(CallbackError::new("database unreachable")) })
        .with_startup_callback(|| async { Err(CallbackError::new("cache unreachable")) })
        .with_shutdown_callback(move || {
            let flag = Arc::clone(&flag);
            async move {
                flag.store(true, Ordering::SeqCst);
                Ok(())
            }
        });
    let running = start::<H>(service);
    // Lands in the listen backlog (or is refused): it must never be answered.
    let early = Client::connect(running.addr).ok().map(|mut client| {
        let _ = client.send(&Request::signed(fixtures::PING).to_bytes());
        client
    });
    match finish(running, false) {
        Err(ServeError::Startup(error)) => {
            let message = error.to_string();
            assert!(message.contains("database unreachable"), "{message}");
            assert!(message.contains("cache unreachable"), "{message}");
        }
        Err(other) => panic!("expected a startup error, got {other}"),
        Ok(()) => panic!("serve succeeded although startup failed"),
    }
    if let Some(mut client) = early {
        // A timeout or another error is no answer either.
        if let Ok(bytes) = client.read_to_close() {
            assert!(
                bytes.is_empty(),
                "a failed server answered: {:?}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
    assert!(
        !shutdown_ran.load(Ordering::SeqCst),
        "no shutdown callbacks after a failed startup"
    );
}

/// Startup callbacks run before the first request, shutdown callbacks (once) after
/// serving stopped.
pub fn lifespan_order<H: Harness>() {
    let (service, probe, _events) = probe_service();
    let on_start = Arc::clone(&probe);
    let on_stop = Arc::clone(&probe);
    let service = service
        .with_startup_callback(move || {
            let probe = Arc::clone(&on_start);
            async move {
                probe.log("startup");
                Ok(())
            }
        })
        .with_shutdown_callback(move || {
            let probe = Arc::clone(&on_stop);
            async move {
                probe.log("shutdown");
                Ok(())
            }
        });
    let running = start::<H>(service);
    let response = ask(running.addr, &Request::signed(&command_named("log")));
    assert_json(&response, &message("logged"));
    stop_ok(running);
    assert_eq!(probe.logged(), ["startup", "request", "shutdown"]);
}

/// A failing shutdown callback makes serve return `ServeError::Shutdown` with its
/// message.
pub fn shutdown_callback_failure<H: Harness>() {
    let service = demo_service()
        .with_shutdown_callback(|| async { Err(CallbackError::new("could not flush")) });
    let running = start::<H>(service);
    let response = ask(running.addr, &Request::signed(fixtures::PING));
    assert_json(&response, &json!({"type": 1}));
    match finish(running, true) {
        Err(ServeError::Shutdown(error)) => {
            assert!(error.to_string().contains("could not flush"), "{error}");
        }
        Err(other) => panic!("expected a shutdown error, got {other}"),
        Ok(()) => panic!("serve succeeded although a shutdown callback failed"),
    }
}

/// Graceful shutdown: idle connections close at once, an in-flight slow handler still
/// gets its response (then its connection closes), and serve returns `Ok`.
pub fn graceful_shutdown_finishes_in_flight<H: Harness>() {
    let (service, probe, events) = probe_service();
    let mut running = start::<H>(service);
    let mut idle = watcher(running.addr);
    let mut busy = connect(running.addr);
    busy.send(&Request::signed(&command_named("slow")).to_bytes())
        .unwrap();
    wait_event(&events, "slow started");
    running.trigger_shutdown();
    // The idle connection closing shows the server is shutting down.
    idle.expect_closed();
    probe.gate.open();
    let response = busy.response().expect("the in-flight request is answered");
    assert_json(&response, &message("slow done"));
    busy.expect_closed();
    if let Err(error) = finish(running, false) {
        panic!("serve returned an error: {error}");
    }
}

/// The health check answers 200 while serving; once shutdown is requested it answers 503
/// (closing the connection) while the server still accepts and serves interactions, on
/// new and open connections, for the drain period.
pub fn health_503_during_the_drain_period<H: Harness>() {
    let service = demo_service().with_options(ServeOptions {
        drain_period: Duration::from_secs(30),
        ..options()
    });
    let mut running = start::<H>(service);
    let health = Request::new("GET", "/healthz");
    let serving = ask(running.addr, &health);
    assert_text(&serving, 200, "ok");
    assert!(!serving.closes(), "a healthy answer keeps the connection");
    let wrong_method = ask(running.addr, &Request::new("POST", "/healthz"));
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.header("allow"), Some("GET"));

    let mut idle = watcher(running.addr);
    running.trigger_shutdown();
    let draining = wait_for_draining(running.addr, &health);
    assert_text(&draining, 503, "draining");
    assert!(draining.closes(), "a draining answer closes the connection");
    // Still accepting and serving, on new connections and on open ones.
    let ping = ask(running.addr, &Request::signed(fixtures::PING));
    assert_json(&ping, &json!({"type": 1}));
    let again = idle
        .roundtrip(&Request::signed(fixtures::PING))
        .expect("the open connection is served while draining");
    assert_json(&again, &json!({"type": 1}));
    drop(idle);
    drop(running);
}

/// The health check's answer once it turns 503 (the shutdown request reaches the server
/// asynchronously); bounded by `IO_TIMEOUT`.
fn wait_for_draining(addr: SocketAddr, health: &Request) -> Response {
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    loop {
        let response = ask(addr, health);
        if response.status != 200 || std::time::Instant::now() >= deadline {
            return response;
        }
        thread::yield_now();
    }
}

/// A panicking handler gives 500, and the same connection serves the next request.
pub fn panicking_handler_500_then_next_request<H: Harness>() {
    let (service, _probe, _events) = probe_service();
    let running = start::<H>(service);
    let mut client = connect(running.addr);
    let response = client
        .roundtrip(&Request::signed(&command_named("panic")))
        .expect("a 500");
    assert_text(&response, 500, HANDLER_FAILED);
    assert!(!response.closes(), "the connection stays open");
    let response = client
        .roundtrip(&Request::signed(fixtures::COMMAND_ECHO))
        .expect("the next request");
    assert_json(&response, &message(ECHO_TEXT));
    drop(client);
    stop_ok(running);
}

/// After-response work runs after the response was written (the response arrives while
/// the work still waits on a gate), does not hold up the connection, and runs.
pub fn after_work_runs_after_response<H: Harness>() {
    let (service, probe, events) = probe_service();
    let running = start::<H>(service);
    let mut client = connect(running.addr);
    let response = client
        .roundtrip(&Request::signed(&command_named("after")))
        .expect("the response before the after-work");
    assert_json(&response, &message("after"));
    assert!(!probe.after_done.load(Ordering::SeqCst));
    let response = client
        .roundtrip(&Request::signed(fixtures::COMMAND_ECHO))
        .expect("the next request while the after-work waits");
    assert_json(&response, &message(ECHO_TEXT));
    probe.after_gate.open();
    wait_event(&events, "after done");
    drop(client);
    stop_ok(running);
}

/// Shutdown waits for pending after-response work before the shutdown callbacks run.
pub fn shutdown_waits_for_after_work<H: Harness>() {
    let (service, probe, events) = probe_service();
    let seen = Arc::new(Mutex::new(None));
    let on_stop = Arc::clone(&probe);
    let seen_by_callback = Arc::clone(&seen);
    let service = service.with_shutdown_callback(move || {
        let probe = Arc::clone(&on_stop);
        let seen = Arc::clone(&seen_by_callback);
        async move {
            *seen.lock().unwrap_or_else(PoisonError::into_inner) =
                Some(probe.after_done.load(Ordering::SeqCst));
            Ok(())
        }
    });
    let mut running = start::<H>(service);
    let mut idle = watcher(running.addr);
    let response = ask(running.addr, &Request::signed(&command_named("after")));
    assert_json(&response, &message("after"));
    running.trigger_shutdown();
    idle.expect_closed();
    probe.after_gate.open();
    if let Err(error) = finish(running, false) {
        panic!("serve returned an error: {error}");
    }
    wait_event(&events, "after done");
    assert_eq!(
        *seen.lock().unwrap(),
        Some(true),
        "the shutdown callback ran after the after-work finished"
    );
}

/// A file streamed from disk with a known length: `Content-Length` framing, exact bytes.
pub fn file_from_disk_known_length<H: Harness>() {
    disk_case::<H>(true);
}

/// A file streamed from disk with an unknown length: chunked framing, exact bytes.
pub fn file_from_disk_unknown_length<H: Harness>() {
    disk_case::<H>(false);
}

/// A file that cannot be read: the response is cut short and the connection closes
/// (never a wrong response); the server goes on.
pub fn file_from_disk_missing_closes<H: Harness>() {
    let (service, probe, _events) = probe_service();
    let missing = std::env::temp_dir().join(format!(
        "yuyo-conformance-{}-missing.bin",
        std::process::id()
    ));
    *probe.file.lock().unwrap() = Some((missing, Some(10)));
    let running = start::<H>(service);
    let mut client = connect(running.addr);
    client
        .send(&Request::signed(&command_named("disk")).to_bytes())
        .unwrap();
    assert!(
        client.response().is_err(),
        "a response with an unreadable file must not complete"
    );
    drop(client);
    let response = ask(running.addr, &Request::signed(fixtures::COMMAND_ECHO));
    assert_json(&response, &message(ECHO_TEXT));
    stop_ok(running);
}
