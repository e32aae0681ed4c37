//! Replies through REST, end to end: a `Bot`'s server on 127.0.0.1 answering signed
//! interactions, with a mock Discord REST API on 127.0.0.1 receiving the late replies,
//! the callbacks of oversized files and streamed uploads.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use twilight_model::application::command::{CommandOptionChoice, CommandOptionChoiceValue};
use twilight_model::application::interaction::InteractionData;
use yuyo_conformance::demo::{DEMO_PUBLIC_KEY_HEX, DEMO_SECRET_SEED, DEMO_TIMESTAMP, sign};
use yuyo_conformance::fixtures;
use yuyo_core::endpoint::{HandlerError, Handlers, Reply};
use yuyo_core::multipart::{FilePart, FileSource};
use yuyo_core::rest::{Payload, RestConfig, RestRequest};
use yuyo_tokio::ShutdownHandle;
use yuyo_tokio::bot::Bot;
use yuyo_tokio::rest::{HttpSettings, RestClient};

const LIMIT: Duration = Duration::from_secs(20);
/// The deferral deadline of these tests.
const DEFER_AFTER: Duration = Duration::from_millis(200);
/// How long the slow handlers take: well past the deadline (behaviour under test, not
/// synchronisation).
const SLOW: Duration = Duration::from_millis(600);

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test took too long")
}

#[derive(Clone, Debug)]
struct Recorded {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A mock Discord REST API: answers every request `200 {}` (or `204` for DELETE and the
/// callback) and records it.
#[derive(Clone)]
struct Mock {
    log: Arc<Mutex<Vec<Recorded>>>,
    count: watch::Sender<usize>,
}

impl Mock {
    async fn start() -> (Self, String) {
        let mock = Self {
            log: Arc::default(),
            count: watch::Sender::new(0),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = mock.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let mock = serving.clone();
                tokio::spawn(async move { mock.serve(stream).await });
            }
        });
        (mock, format!("http://{addr}/api/v10"))
    }

    async fn serve(&self, mut stream: TcpStream) {
        let mut buf = Vec::new();
        while let Some(request) = read_request(&mut stream, &mut buf).await {
            let empty = request.method == "DELETE" || request.path.ends_with("/callback");
            self.log.lock().unwrap().push(request);
            self.count.send_modify(|count| *count += 1);
            let out: &[u8] = if empty {
                b"HTTP/1.1 204 No Content\r\n\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
            };
            if stream.write_all(out).await.is_err() {
                return;
            }
        }
    }

    /// Waits until `n` requests have arrived, then returns them all.
    async fn wait_for(&self, n: usize) -> Vec<Recorded> {
        let mut count = self.count.subscribe();
        bounded(count.wait_for(|&count| count >= n)).await.unwrap();
        self.log.lock().unwrap().clone()
    }

    fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }
}

/// Reads one request with a `Content-Length` or chunked body.
async fn read_request<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> Option<Recorded> {
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        fill(stream, buf).await?;
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let path = first.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    buf.drain(..head_end);
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(pos) = buf.windows(2).position(|w| w == b"\r\n") {
                    break pos;
                }
                fill(stream, buf).await?;
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).ok()?, 16).ok()?;
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                fill(stream, buf).await?;
            }
            body.extend(buf.drain(..size));
            buf.drain(..2);
            if size == 0 {
                break body;
            }
        }
    } else {
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < len {
            fill(stream, buf).await?;
        }
        buf.drain(..len).collect()
    };
    Some(Recorded {
        method,
        path,
        headers,
        body,
    })
}

async fn fill<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0_u8; 16 * 1024];
    let n = stream.read(&mut chunk).await.ok()?;
    if n == 0 {
        return None;
    }
    buf.extend_from_slice(&chunk[..n]);
    Some(())
}

/// The bytes of file part `name` in a multipart body.
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
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Handlers: `echo` and components answer after [`SLOW`]; `boom` fails after it; `file`
/// answers at once with the disk file at `big` (an oversized reply); autocomplete answers
/// after [`SLOW`] too.
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
                        tokio::time::sleep(SLOW).await;
                        Ok(Some(Reply::message("late hello")))
                    }
                    "boom" => {
                        tokio::time::sleep(SLOW).await;
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
            tokio::time::sleep(SLOW).await;
            Ok(Some(Reply::update_message("updated late")))
        })
        .unwrap()
        .set_autocomplete(|_ctx| async move {
            tokio::time::sleep(SLOW).await;
            Ok(Some(Reply::autocomplete(vec![CommandOptionChoice {
                name: "one".to_owned(),
                name_localizations: None,
                value: CommandOptionChoiceValue::String("1".to_owned()),
            }])))
        })
        .unwrap();
    handlers
}

struct Running {
    addr: std::net::SocketAddr,
    shutdown: ShutdownHandle,
    served: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        self.shutdown.shutdown();
        bounded(self.served).await.unwrap();
    }
}

async fn serve_bot(rest_url: &str, handlers: Handlers) -> Running {
    let bot = Bot::builder("tok")
        .public_key_hex(DEMO_PUBLIC_KEY_HEX)
        .rest_url(rest_url)
        .handlers(handlers)
        .defer_after(Some(DEFER_AFTER))
        .build()
        .unwrap();
    let server = bot.server().await.unwrap();
    assert_eq!(server.reply_routing().defer_after, Some(DEFER_AFTER));
    let shutdown = server.shutdown_handle();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = tokio::spawn(async move { server.serve(listener).await.unwrap() });
    Running {
        addr,
        shutdown,
        served,
    }
}

/// A response as the HTTP client sees it.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Posts the signed interaction `body` on `stream` and reads the answer.
async fn post(stream: &mut TcpStream, body: &[u8]) -> Answer {
    let signature = sign(&DEMO_SECRET_SEED, DEMO_TIMESTAMP, body);
    let head = format!(
        "POST / HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-signature-ed25519: {signature}\r\nx-signature-timestamp: {DEMO_TIMESTAMP}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut buf = Vec::new();
    let recorded = bounded(read_response(stream, &mut buf)).await;
    assert!(buf.is_empty(), "bytes after the answer: {buf:?}");
    recorded
}

async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Answer {
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        fill(stream, buf).await.expect("connection closed");
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    buf.drain(..head_end);
    while buf.len() < len {
        fill(stream, buf).await.expect("connection closed");
    }
    let body = buf.drain(..len).collect();
    Answer {
        status,
        headers,
        body,
    }
}

fn token_of(body: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap();
    value["token"].as_str().unwrap().to_owned()
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap()
}

#[tokio::test]
async fn slow_command_is_deferred_and_its_reply_patches_the_original() {
    let (mock, url) = Mock::start().await;
    let running = serve_bot(&url, handlers(None)).await;
    let mut client = TcpStream::connect(running.addr).await.unwrap();

    let answer = post(&mut client, fixtures::COMMAND_ECHO).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, br#"{"type":5}"#);

    let requests = mock.wait_for(1).await;
    let patch = &requests[0];
    assert_eq!(patch.method, "PATCH");
    let token = token_of(fixtures::COMMAND_ECHO);
    assert_eq!(
        patch.path,
        format!("/api/v10/webhooks/1178812346128379904/{token}/messages/@original")
    );
    assert_eq!(patch.header("content-type"), Some("application/json"));
    assert_eq!(json(&patch.body)["content"], "late hello");

    // The same connection serves the next request.
    let answer = post(&mut client, fixtures::PING).await;
    assert_eq!(answer.body, br#"{"type":1}"#);
    drop(client);
    running.stop().await;
}

#[tokio::test]
async fn slow_component_is_deferred_with_type_6() {
    let (mock, url) = Mock::start().await;
    let running = serve_bot(&url, handlers(None)).await;
    let mut client = TcpStream::connect(running.addr).await.unwrap();
    let answer = post(&mut client, fixtures::COMPONENT).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, br#"{"type":6}"#);
    let requests = mock.wait_for(1).await;
    assert_eq!(requests[0].method, "PATCH");
    assert!(requests[0].path.ends_with("/messages/@original"));
    assert_eq!(json(&requests[0].body)["content"], "updated late");
    drop(client);
    running.stop().await;
}

#[tokio::test]
async fn autocomplete_is_never_deferred() {
    let (mock, url) = Mock::start().await;
    let running = serve_bot(&url, handlers(None)).await;
    let mut client = TcpStream::connect(running.addr).await.unwrap();
    let answer = post(&mut client, fixtures::AUTOCOMPLETE).await;
    assert_eq!(answer.status, 200);
    let body = json(&answer.body);
    assert_eq!(body["type"], 8);
    assert_eq!(body["data"]["choices"][0]["name"], "one");
    // Answered over HTTP after the handler's full delay, and nothing went to REST
    // (a PING after it is answered first, so any REST request would have been sent).
    assert_eq!(
        post(&mut client, fixtures::PING).await.body,
        br#"{"type":1}"#
    );
    drop(client);
    running.stop().await;
    assert!(mock.requests().is_empty(), "{:?}", mock.requests());
}

#[tokio::test]
async fn handler_error_after_deferral_deletes_the_deferred_message() {
    let (mock, url) = Mock::start().await;
    let running = serve_bot(&url, handlers(None)).await;
    let mut client = TcpStream::connect(running.addr).await.unwrap();
    let answer = post(&mut client, fixtures::COMMAND_BOOM).await;
    assert_eq!(answer.status, 200, "the deferral, not a 500");
    assert_eq!(answer.body, br#"{"type":5}"#);
    let requests = mock.wait_for(1).await;
    assert_eq!(requests[0].method, "DELETE");
    assert!(requests[0].path.ends_with("/messages/@original"));
    drop(client);
    running.stop().await;
    assert_eq!(mock.requests().len(), 1);
}

#[tokio::test]
async fn oversized_file_goes_through_the_callback_endpoint() {
    let (mock, url) = Mock::start().await;
    let file = TempFile::new("big.bin", 200_000);
    let running = serve_bot(
        &url,
        handlers(Some((file.path.clone(), file.data.len() as u64))),
    )
    .await;
    let mut client = TcpStream::connect(running.addr).await.unwrap();
    let answer = post(&mut client, fixtures::COMMAND_FILE).await;
    assert_eq!(answer.status, 202);
    assert!(answer.body.is_empty());
    assert_eq!(
        answer
            .headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.as_str()),
        Some("0")
    );

    let requests = mock.wait_for(1).await;
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
    running.stop().await;
}

#[tokio::test]
async fn streamed_upload_from_disk_arrives_intact() {
    let (mock, url) = Mock::start().await;
    let file = TempFile::new("upload.bin", 1_000_003);
    let config = RestConfig::builder()
        .token("tok")
        .rest_url(&url)
        .build()
        .unwrap();
    let client = RestClient::new(config, HttpSettings::default(), None).unwrap();
    let source = |len| FileSource::Path {
        path: file.path.clone(),
        len,
    };
    // Known length (Content-Length) and unknown length (chunked).
    for len in [Some(file.data.len() as u64), None] {
        let payload = Payload::raw_json(&br#"{"content":"upload"}"#[..])
            .with_file(FilePart::source("upload.bin", source(len)));
        let request =
            RestRequest::create_followup(twilight_model::id::Id::new(1), "itoken", payload);
        bounded(client.call(request)).await.unwrap();
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

    // A file shorter than declared fails the call instead of sending a broken body.
    let payload = Payload::raw_json(&b"{}"[..]).with_file(FilePart::source(
        "upload.bin",
        source(Some(file.data.len() as u64 + 1)),
    ));
    let request = RestRequest::create_followup(twilight_model::id::Id::new(1), "itoken", payload);
    let error = bounded(client.call(request)).await.unwrap_err();
    assert!(error.to_string().contains("declared length"), "{error}");
    assert_eq!(
        mock.requests().len(),
        2,
        "nothing complete reached the server"
    );
}
