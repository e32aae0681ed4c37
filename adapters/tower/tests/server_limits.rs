//! `yuyo_tower::Server` over raw 127.0.0.1 sockets: which of the core's HTTP/1.1 rules
//! hyper is configured to follow, what the service adds on top, and what hyper does
//! instead where it cannot be made to follow one (asserted here, listed in the README).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use yuyo_conformance::client::{Client, Request, Response};
use yuyo_conformance::demo::{demo_service, demo_verifier};
use yuyo_conformance::{Running, fixtures};
use yuyo_core::endpoint::{Endpoint, EndpointConfig, Handlers, Reply};
use yuyo_tower::{ServeOptions, Server, Service};

/// Short deadline the timing tests configure; every wait on it is bounded by [`BOUND`].
const SHORT: Duration = Duration::from_millis(300);
/// Upper bound for anything that should happen after [`SHORT`].
const BOUND: Duration = Duration::from_secs(4);
/// How long a negative check ("not answered yet") watches a socket.
const QUIET: Duration = Duration::from_millis(300);

fn options() -> ServeOptions {
    ServeOptions {
        grace_period: Duration::from_secs(1),
        ..ServeOptions::default()
    }
}

/// Serves `service` with `yuyo_tower::Server` on a two-worker runtime thread.
fn serve(service: Service) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = Server::new(service);
    let handle = server.shutdown_handle();
    let thread = std::thread::spawn(move || {
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            server.serve(listener).await
        })
    });
    Running::new(
        addr,
        move || handle.shutdown(),
        move || thread.join().expect("the serving thread panicked"),
    )
}

fn serve_demo(options: ServeOptions) -> Running {
    serve(demo_service(demo_verifier()).with_options(options))
}

fn stop(running: Running) {
    running.stop().expect("serve returned an error");
}

fn connect(addr: SocketAddr) -> Client {
    Client::connect(addr).unwrap()
}

/// One request on a fresh connection.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> Response {
    roundtrip(&mut connect(addr), bytes)
}

/// One request on a fresh connection that the server is expected to close after its
/// response: the response, and whether it closed (bounded by the client's timeout).
fn exchange_then_close(addr: SocketAddr, bytes: &[u8]) -> (Response, bool) {
    let mut client = connect(addr);
    let response = roundtrip(&mut client, bytes);
    let closed = client.read_to_close().is_ok_and(|rest| rest.is_empty());
    (response, closed)
}

fn roundtrip(client: &mut Client, bytes: &[u8]) -> Response {
    client.send(bytes).unwrap();
    client.response().expect("a response")
}

fn ping() -> Request {
    Request::signed(fixtures::PING)
}

/// `request` with filler fields `X-Fill-<i>` appended until it has `fields` fields.
fn with_fields(mut request: Request, fields: usize) -> Request {
    let mut i = 0;
    while request.headers.len() < fields {
        request = request.add(&format!("X-Fill-{i}"), "f");
        i += 1;
    }
    request
}

/// `request` padded with one `X-Pad` field so that its head is exactly `size` bytes.
fn with_head_size(request: Request, size: usize) -> Request {
    let overhead = request.head_bytes().len() + "X-Pad: \r\n".len();
    let padded = request.add("X-Pad", "p".repeat(size - overhead));
    assert_eq!(padded.head_bytes().len(), size);
    padded
}

fn assert_pong(response: &Response) {
    assert_eq!(
        (response.status, response.text().as_str()),
        (200, r#"{"type":1}"#),
        "{response:?}"
    );
}

/// A peer error as the core answers it: status, text, `Connection: close`, then close.
fn assert_rejected(addr: SocketAddr, request: &[u8], status: u16, message: &str) {
    let (response, closed) = exchange_then_close(addr, request);
    assert_eq!(response.status, status, "{response:?}");
    assert_eq!(response.text(), format!("{message}\n"));
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert!(response.closes(), "{response:?}");
    assert!(closed, "the connection stays open after {status}");
}

#[test]
fn header_field_count_limit_is_431() {
    let running = serve_demo(options());
    let response = exchange(running.addr, &with_fields(ping(), 100).to_bytes());
    assert_pong(&response);
    // hyper answers 431 itself: empty body, then close.
    let (response, closed) =
        exchange_then_close(running.addr, &with_fields(ping(), 101).to_bytes());
    assert_eq!(response.status, 431, "{response:?}");
    assert!(closed);
    stop(running);
}

#[test]
fn head_size_limit_is_16_kib() {
    let running = serve_demo(options());
    let limit = ServeOptions::default().http.max_head_size;
    assert_eq!(limit, 16 * 1024);
    let response = exchange(running.addr, &with_head_size(ping(), limit).to_bytes());
    assert_pong(&response);
    let (response, closed) =
        exchange_then_close(running.addr, &with_head_size(ping(), limit + 1).to_bytes());
    assert_eq!(response.status, 431, "{response:?}");
    assert!(closed);
    stop(running);
}

#[test]
fn head_size_limit_follows_the_options() {
    let mut options = options();
    options.http.max_head_size = 4 * 1024;
    let running = serve_demo(options);
    let response = exchange(running.addr, &with_head_size(ping(), 4 * 1024).to_bytes());
    assert_pong(&response);
    let response = exchange(
        running.addr,
        &with_head_size(ping(), 4 * 1024 + 1).to_bytes(),
    );
    assert_eq!(response.status, 431, "{response:?}");
    stop(running);
}

/// Reads until the server closes `client`; what it sent meanwhile and how long it took.
fn until_closed(client: &mut Client) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let rest = client
        .read_to_close()
        .expect("the server closes the connection");
    (rest, started.elapsed())
}

#[test]
fn silent_connection_is_closed_after_the_head_timeout() {
    let mut options = options();
    options.http.head_timeout = SHORT;
    let running = serve_demo(options);
    let mut silent = connect(running.addr);
    let (sent, elapsed) = until_closed(&mut silent);
    // hyper closes silently where the core answers 408.
    assert!(sent.is_empty(), "{:?}", String::from_utf8_lossy(&sent));
    assert!(elapsed >= SHORT / 2 && elapsed < BOUND, "{elapsed:?}");

    // A head that starts but never ends (slowloris): closed, again without a 408.
    let mut slow = connect(running.addr);
    slow.send(b"POST / HTTP/1.1\r\nHost: a\r\n").unwrap();
    let (sent, elapsed) = until_closed(&mut slow);
    assert!(sent.is_empty(), "{:?}", String::from_utf8_lossy(&sent));
    assert!(elapsed >= SHORT / 2 && elapsed < BOUND, "{elapsed:?}");
    stop(running);
}

#[test]
fn idle_keep_alive_connection_gets_the_head_timeout() {
    let mut options = options();
    options.http.head_timeout = SHORT;
    options.http.idle_timeout = Duration::from_secs(75);
    let running = serve_demo(options);
    let mut client = connect(running.addr);
    let response = client.roundtrip(&ping()).unwrap();
    assert_pong(&response);
    assert!(!response.closes());
    // hyper has no idle deadline of its own: the head deadline runs from the end of the
    // previous response, so an idle connection lasts `head_timeout`, not `idle_timeout`.
    let (sent, elapsed) = until_closed(&mut client);
    assert!(sent.is_empty());
    assert!(elapsed < BOUND, "{elapsed:?}");
    stop(running);
}

#[test]
fn missing_repeated_or_invalid_host_is_400() {
    let running = serve_demo(options());
    let addr = running.addr;
    let no_host = ping().remove("Host").to_bytes();
    assert_rejected(addr, &no_host, 400, "missing Host header");
    let two = ping().add("Host", "other.example.com").to_bytes();
    assert_rejected(addr, &two, 400, "more than one Host header");
    let invalid = ping().set("Host", "a b").to_bytes();
    assert_rejected(addr, &invalid, 400, "invalid Host header");
    // An empty Host is valid, and HTTP/1.0 needs none.
    assert_pong(&exchange(addr, &ping().set("Host", "").to_bytes()));
    let http10 = String::from_utf8(no_host)
        .unwrap()
        .replacen("HTTP/1.1", "HTTP/1.0", 1);
    assert_pong(&exchange(addr, http10.as_bytes()));
    stop(running);
}

#[test]
fn transfer_codings_other_than_chunked_are_refused() {
    let running = serve_demo(options());
    let addr = running.addr;
    let chunked = ping().chunked(16);
    assert_pong(&exchange(addr, &chunked.to_bytes()));
    // hyper only checks that the last coding is chunked.
    let gzip = chunked.clone().set("Transfer-Encoding", "gzip, chunked");
    assert_rejected(addr, &gzip.to_bytes(), 501, "unsupported transfer coding");
    let twice = chunked.clone().set("Transfer-Encoding", "chunked, chunked");
    assert_rejected(addr, &twice.to_bytes(), 400, "invalid Transfer-Encoding");
    let two_fields = chunked.add("Transfer-Encoding", "chunked");
    assert_rejected(
        addr,
        &two_fields.to_bytes(),
        400,
        "invalid Transfer-Encoding",
    );
    stop(running);
}

#[test]
fn unknown_expectation_is_417() {
    let running = serve_demo(options());
    let request = ping().set("Expect", "something-else");
    assert_rejected(
        running.addr,
        &request.to_bytes(),
        417,
        "unsupported expectation",
    );
    stop(running);
}

/// hyper drops `Content-Length` when `Transfer-Encoding` is present (in either order)
/// before the service sees the request, so it cannot be answered 400: the body is read as
/// chunked (RFC 9112 §6.3) and hyper closes the connection after the response.
#[test]
fn content_length_with_transfer_encoding_is_read_as_chunked_then_closed() {
    let running = serve_demo(options());
    let chunked = ping().chunked(16);
    let te_first = chunked.clone().add("Content-Length", "5");
    let cl_first = Request {
        headers: [("Content-Length".to_owned(), b"5".to_vec())]
            .into_iter()
            .chain(chunked.headers.clone())
            .collect(),
        ..chunked
    };
    for request in [te_first, cl_first] {
        let (response, closed) = exchange_then_close(running.addr, &request.to_bytes());
        assert_pong(&response);
        assert!(response.closes(), "{response:?}");
        assert!(closed);
    }
    stop(running);
}

#[test]
fn request_then_half_close_is_answered() {
    let running = serve_demo(options());
    let mut client = connect(running.addr);
    client.send(&ping().to_bytes()).unwrap();
    client.shutdown_write().unwrap();
    assert_pong(
        &client
            .response()
            .expect("an answer after the client half-closed"),
    );
    stop(running);
}

/// A raw socket that must not be answered within [`QUIET`].
fn assert_unanswered(stream: &mut TcpStream) {
    stream.set_read_timeout(Some(QUIET)).unwrap();
    let mut byte = [0_u8; 1];
    match stream.read(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("expected no answer yet, got {other:?}"),
    }
}

/// Reads one response's status line from a raw socket (bounded by [`BOUND`]).
fn status_of(stream: &mut TcpStream) -> String {
    stream.set_read_timeout(Some(BOUND)).unwrap();
    let mut head = Vec::new();
    let mut byte = [0_u8; 1];
    while !head.ends_with(b"\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "closed before a status");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

#[test]
fn at_the_cap_a_new_connection_evicts_the_longest_idle_one() {
    let mut options = options();
    options.max_connections = 2;
    // Keep the pressure deadline out of the way: this is about the cap alone.
    options.pressure_timeout = Duration::from_secs(30);
    let running = serve_demo(options);
    let mut first = connect(running.addr);
    assert_pong(&first.roundtrip(&ping()).unwrap());
    let mut second = connect(running.addr);
    assert_pong(&second.roundtrip(&ping()).unwrap());

    // The third takes the slot of the connection idle the longest (the first).
    let mut third = TcpStream::connect(running.addr).unwrap();
    third.write_all(&ping().to_bytes()).unwrap();
    assert_eq!(status_of(&mut third), "HTTP/1.1 200 OK\r\n");
    first.expect_closed();
    assert_pong(&second.roundtrip(&ping()).unwrap());
    stop(running);
}

#[test]
fn pressure_shortens_the_head_deadline_of_new_connections() {
    let mut options = options();
    options.max_connections = 2;
    options.http.head_timeout = Duration::from_secs(30);
    options.pressure_timeout = SHORT;
    let running = serve_demo(options);
    // Accepted with nothing else open: the usual 30 s.
    let mut calm = TcpStream::connect(running.addr).unwrap();
    // Accepted with one of two open: the pressure deadline.
    let mut pressed = connect(running.addr);
    let (sent, elapsed) = until_closed(&mut pressed);
    assert!(sent.is_empty());
    assert!(elapsed < BOUND, "{elapsed:?}");
    assert_unanswered(&mut calm);
    drop(calm);
    stop(running);
}

/// Bytes of the file the `big` handler replies with: more than the loopback socket
/// buffers hold, so a peer that does not read stalls the server's writes.
const BIG: usize = 16 * 1024 * 1024;

fn big_reply_service(options: ServeOptions) -> Service {
    let mut handlers = Handlers::new();
    handlers
        .set_command(|_ctx| async {
            Ok(Some(
                Reply::message("big").with_file("big.bin", vec![b'x'; BIG]),
            ))
        })
        .unwrap();
    let endpoint = Endpoint::new(EndpointConfig::new(demo_verifier()), handlers);
    Service::new(endpoint).with_options(options)
}

/// A peer that stops reading its response no longer holds its connection once writes
/// have made no progress for the write deadline: its slot frees.
#[test]
fn stalled_reader_is_dropped_after_the_write_deadline() {
    let mut options = options();
    options.http.write_timeout = SHORT;
    let service = big_reply_service(options);
    let slots = service.slots().clone();
    let running = serve(service);
    // Asks for the big reply and never reads.
    let mut stalled = TcpStream::connect(running.addr).unwrap();
    stalled
        .write_all(&Request::signed(fixtures::COMMAND_ECHO).to_bytes())
        .unwrap();
    // Admitted, then dropped by the server (bounded waits): its slot frees.
    let until = std::time::Instant::now() + BOUND;
    while slots.stats().open == 0 {
        assert!(std::time::Instant::now() < until, "never admitted");
        std::thread::sleep(Duration::from_millis(5));
    }
    while slots.stats().open > 0 {
        assert!(std::time::Instant::now() < until, "{:?}", slots.stats());
        std::thread::sleep(Duration::from_millis(20));
    }
    // The stalled peer gets what was already in the socket buffers, not the whole reply.
    stalled.set_read_timeout(Some(BOUND)).unwrap();
    let mut received = Vec::new();
    let _ = stalled.read_to_end(&mut received);
    assert!(received.len() < BIG, "{} bytes", received.len());
    stop(running);
}
