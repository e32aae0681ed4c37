//! The transport's [`Exchange`] driven by hand on a fake clock: numbered fake
//! connections, bytes fed in as a server would send them, no sockets or sleeps.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};

use super::*;
use crate::multipart::{FilePart, FileSource};
use crate::rest::request::{Payload, RequestBody};

static BASE: LazyLock<Instant> = LazyLock::new(Instant::now);

/// The fake clock: `ms` milliseconds after a fixed base.
fn at(ms: u64) -> Instant {
    *BASE + Duration::from_millis(ms)
}

/// A fake connection, known by its number.
#[derive(Debug, PartialEq, Eq)]
struct Conn(u32);

const CONNECT_MS: u64 = 1_000;
const READ_MS: u64 = 2_000;
const TOTAL_MS: u64 = 5_000;

fn settings() -> HttpSettings {
    HttpSettings {
        timeouts: Timeouts {
            connect: Duration::from_millis(CONNECT_MS),
            read: Duration::from_millis(READ_MS),
            total: Duration::from_millis(TOTAL_MS),
        },
        ..HttpSettings::default()
    }
}

fn transport() -> Transport {
    Transport::new(settings(), None).unwrap()
}

fn via_proxy() -> Transport {
    let proxy = ProxySettings::new("http://proxy.test:3128").unwrap();
    Transport::new(settings(), Some(proxy)).unwrap()
}

const URL: &str = "http://discord.test/api/v10/x";

fn request_to(url: &str, method: Method, body: RequestBody) -> http::Request<RequestBody> {
    http::Request::builder()
        .method(method)
        .uri(url)
        .body(body)
        .unwrap()
}

fn request(method: Method, body: RequestBody) -> http::Request<RequestBody> {
    request_to(URL, method, body)
}

fn get() -> http::Request<RequestBody> {
    request(Method::GET, RequestBody::Empty)
}

fn post() -> http::Request<RequestBody> {
    request(
        Method::POST,
        RequestBody::Json(Bytes::from_static(br#"{"content":"hi"}"#)),
    )
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// What the exchange asks for next (or its outcome).
#[derive(Debug)]
enum Next {
    Connect {
        host: String,
        port: u16,
        deadline: Instant,
    },
    Write {
        conn: u32,
        bytes: Bytes,
        deadline: Instant,
    },
    Read {
        conn: u32,
        deadline: Instant,
    },
    OpenFile(PathBuf),
    ReadFile,
    Done(Result<http::Response<Bytes>, TransportError>),
}

/// Moves the exchange on at `now` as the client does and says what it wants.
fn next(ex: &mut Exchange<Conn>, now: Instant) -> Next {
    ex.advance(now);
    if let Some(outcome) = ex.take_outcome() {
        return Next::Done(outcome);
    }
    match ex.io().expect("an unfinished exchange asks for IO") {
        Io::Connect {
            host,
            port,
            deadline,
        } => Next::Connect {
            host: host.to_owned(),
            port,
            deadline,
        },
        Io::Write {
            stream,
            bytes,
            deadline,
        } => Next::Write {
            conn: stream.0,
            bytes,
            deadline,
        },
        Io::Read {
            stream, deadline, ..
        } => Next::Read {
            conn: stream.0,
            deadline,
        },
        Io::OpenFile { path } => Next::OpenFile(path.to_owned()),
        Io::ReadFile { .. } => Next::ReadFile,
    }
}

/// Answers the pending read with `data` (empty: the end of the stream).
#[track_caller]
fn feed(ex: &mut Exchange<Conn>, now: Instant, data: &[u8]) {
    match ex.io() {
        Some(Io::Read { buf, .. }) => buf[..data.len()].copy_from_slice(data),
        other => panic!("expected Read, got {other:?}"),
    }
    ex.handle_input(now, Input::Read(data.len()));
}

/// Answers the pending file read with `data` (empty: the file's end).
#[track_caller]
fn feed_file(ex: &mut Exchange<Conn>, now: Instant, data: &[u8]) {
    match ex.io() {
        Some(Io::ReadFile { buf }) => buf[..data.len()].copy_from_slice(data),
        other => panic!("expected ReadFile, got {other:?}"),
    }
    ex.handle_input(now, Input::FileRead(data.len()));
}

#[track_caller]
fn connect(ex: &mut Exchange<Conn>, now: Instant, id: u32) {
    match next(ex, now) {
        Next::Connect { .. } => ex.handle_input(now, Input::Connected(Conn(id))),
        other => panic!("expected Connect, got {other:?}"),
    }
}

/// Accepts every write until the exchange reads: the connection and what was written.
#[track_caller]
fn write_all(ex: &mut Exchange<Conn>, now: Instant) -> (u32, Vec<u8>) {
    let mut written = Vec::new();
    loop {
        match next(ex, now) {
            Next::Write { bytes, .. } => {
                written.extend_from_slice(&bytes);
                ex.handle_input(now, Input::Written);
            }
            Next::Read { conn, .. } => return (conn, written),
            other => panic!("expected Write or Read, got {other:?}"),
        }
    }
}

#[track_caller]
fn done(ex: &mut Exchange<Conn>, now: Instant) -> Result<http::Response<Bytes>, TransportError> {
    match next(ex, now) {
        Next::Done(outcome) => outcome,
        other => panic!("expected the outcome, got {other:?}"),
    }
}

fn pooled_id(ex: Exchange<Conn>) -> Option<u32> {
    ex.into_pooled().map(|(_, pooled)| pooled.stream.0)
}

/// A pooled connection `id`: one GET answered with keep-alive on it.
fn pooled(id: u32) -> Pooled<Conn> {
    let mut ex = Exchange::new(&transport(), get(), at(0)).unwrap();
    connect(&mut ex, at(0), id);
    write_all(&mut ex, at(0));
    feed(&mut ex, at(0), OK);
    done(&mut ex, at(0)).unwrap();
    ex.into_pooled().expect("a keep-alive answer is pooled").1
}

/// An exchange of `request` on the pooled connection `id` at `now`.
fn reusing(request: http::Request<RequestBody>, id: u32, now: Instant) -> Exchange<Conn> {
    let mut ex = Exchange::new(&transport(), request, now).unwrap();
    ex.reuse(pooled(id), now);
    ex
}

// ---------------------------------------------------------------- connections and the pool

#[test]
fn fresh_get_connects_writes_reads_and_is_pooled() {
    let mut ex = Exchange::new(&transport(), get(), at(0)).unwrap();
    match next(&mut ex, at(0)) {
        Next::Connect {
            host,
            port,
            deadline,
        } => {
            assert_eq!((host.as_str(), port), ("discord.test", 80));
            assert_eq!(deadline, at(CONNECT_MS));
        }
        other => panic!("expected Connect, got {other:?}"),
    }
    ex.handle_input(at(10), Input::Connected(Conn(1)));
    let (conn, written) = write_all(&mut ex, at(10));
    assert_eq!(conn, 1);
    let head = String::from_utf8(written).unwrap();
    assert!(
        head.starts_with("GET /api/v10/x HTTP/1.1\r\nhost: discord.test\r\n"),
        "{head}"
    );
    assert!(head.ends_with("\r\n\r\n"), "{head}");
    feed(&mut ex, at(20), OK);
    let response = done(&mut ex, at(20)).unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.body().as_ref(), b"ok");
    let (origin, pooled) = ex.into_pooled().unwrap();
    assert_eq!(
        origin,
        Origin {
            tls: false,
            host: "discord.test".into(),
            port: 80
        }
    );
    assert_eq!(pooled.stream, Conn(1));
}

#[test]
fn pooled_connection_is_reused_without_connecting() {
    let mut ex = reusing(get(), 7, at(100));
    match next(&mut ex, at(100)) {
        Next::Write { conn, deadline, .. } => {
            assert_eq!(conn, 7);
            // Sending starts at once: the read (idle) limit applies, not the connect one.
            assert_eq!(deadline, at(100 + READ_MS));
        }
        other => panic!("expected a Write on the pooled connection, got {other:?}"),
    }
    let (conn, _) = write_all(&mut ex, at(100));
    assert_eq!(conn, 7);
    feed(&mut ex, at(150), OK);
    assert_eq!(done(&mut ex, at(150)).unwrap().body().as_ref(), b"ok");
    assert_eq!(pooled_id(ex), Some(7));
}

#[test]
fn stale_pooled_connection_eof_resends_get_on_a_fresh_one() {
    let mut ex = reusing(get(), 7, at(100));
    let (conn, first) = write_all(&mut ex, at(100));
    assert_eq!(conn, 7);
    // The server had closed it: the end before any answer byte.
    feed(&mut ex, at(200), b"");
    match next(&mut ex, at(200)) {
        Next::Connect { deadline, .. } => assert_eq!(deadline, at(200 + CONNECT_MS)),
        other => panic!("expected a reconnect, got {other:?}"),
    }
    ex.handle_input(at(300), Input::Connected(Conn(8)));
    match next(&mut ex, at(300)) {
        Next::Write { conn, deadline, .. } => {
            assert_eq!(conn, 8);
            assert_eq!(deadline, at(300 + READ_MS), "deadlines start afresh");
        }
        other => panic!("expected a Write on the fresh connection, got {other:?}"),
    }
    let (conn, second) = write_all(&mut ex, at(300));
    assert_eq!(conn, 8);
    assert_eq!(first, second, "the same request is sent again");
    feed(&mut ex, at(400), OK);
    assert_eq!(done(&mut ex, at(400)).unwrap().status(), StatusCode::OK);
    assert_eq!(pooled_id(ex), Some(8));
}

#[test]
fn stale_pooled_connection_write_failure_resends_get() {
    let mut ex = reusing(get(), 7, at(0));
    assert!(matches!(next(&mut ex, at(0)), Next::Write { conn: 7, .. }));
    ex.handle_input(at(1), Input::Failed(io::ErrorKind::BrokenPipe.into()));
    // A failed write still listens (an early answer is heard); the end follows.
    assert!(matches!(next(&mut ex, at(1)), Next::Read { conn: 7, .. }));
    feed(&mut ex, at(2), b"");
    connect(&mut ex, at(3), 8);
    let (conn, _) = write_all(&mut ex, at(3));
    assert_eq!(conn, 8);
    feed(&mut ex, at(4), OK);
    assert!(done(&mut ex, at(4)).is_ok());
    assert_eq!(pooled_id(ex), Some(8));
}

#[test]
fn stale_pooled_connection_reset_on_read_resends_get() {
    let mut ex = reusing(get(), 7, at(0));
    write_all(&mut ex, at(0));
    ex.handle_input(at(1), Input::Failed(io::ErrorKind::ConnectionReset.into()));
    connect(&mut ex, at(2), 8);
    write_all(&mut ex, at(2));
    feed(&mut ex, at(3), OK);
    assert!(done(&mut ex, at(3)).is_ok());
}

#[test]
fn other_read_errors_on_a_pooled_connection_are_not_resent() {
    let mut ex = reusing(get(), 7, at(0));
    write_all(&mut ex, at(0));
    ex.handle_input(at(1), Input::Failed(io::Error::other("boom")));
    let error = done(&mut ex, at(1)).unwrap_err();
    assert_eq!(error.kind, TransportErrorKind::Io);
}

#[test]
fn idempotent_methods_are_resent_after_a_stale_connection() {
    for method in [Method::GET, Method::PUT, Method::DELETE, Method::HEAD] {
        let mut ex = reusing(request(method.clone(), RequestBody::Empty), 7, at(0));
        write_all(&mut ex, at(0));
        feed(&mut ex, at(1), b"");
        assert!(
            matches!(next(&mut ex, at(1)), Next::Connect { .. }),
            "{method} is sent again"
        );
    }
}

#[test]
fn stale_post_and_patch_are_not_resent_by_the_transport() {
    for method in [Method::POST, Method::PATCH] {
        let body = RequestBody::Json(Bytes::from_static(b"{}"));
        let mut ex = reusing(request(method.clone(), body), 7, at(0));
        let (_, written) = write_all(&mut ex, at(0));
        assert!(written.ends_with(b"{}"));
        feed(&mut ex, at(1), b"");
        // It may have reached Discord: an I/O error (the call decides), no reconnect.
        let error = done(&mut ex, at(1)).unwrap_err();
        assert_eq!(error.kind, TransportErrorKind::Io, "{method}");
        assert!(error.message.contains("before any response"), "{error:?}");
        assert_eq!(pooled_id(ex), None);
    }
}

#[test]
fn stale_post_whose_write_failed_is_resent_on_a_fresh_connection() {
    let mut ex = reusing(post(), 7, at(0));
    assert!(matches!(next(&mut ex, at(0)), Next::Write { conn: 7, .. }));
    // The head's write fails: the server cannot have a complete request.
    ex.handle_input(at(1), Input::Failed(io::ErrorKind::BrokenPipe.into()));
    feed(&mut ex, at(2), b"");
    connect(&mut ex, at(3), 8);
    let (conn, written) = write_all(&mut ex, at(3));
    assert_eq!(conn, 8);
    assert!(written.starts_with(b"POST /api/v10/x HTTP/1.1\r\n"));
    feed(&mut ex, at(4), OK);
    assert!(done(&mut ex, at(4)).is_ok());
    assert_eq!(pooled_id(ex), Some(8));
}

#[test]
fn post_whose_connect_fails_reports_a_connect_error() {
    // Nothing left: the call may retry even a POST.
    let mut ex = Exchange::new(&transport(), post(), at(0)).unwrap();
    assert!(matches!(next(&mut ex, at(0)), Next::Connect { .. }));
    ex.handle_input(
        at(5),
        Input::Failed(io::ErrorKind::ConnectionRefused.into()),
    );
    let error = done(&mut ex, at(5)).unwrap_err();
    assert_eq!(error.kind, TransportErrorKind::Connect);
    assert_eq!(pooled_id(ex), None);
}

#[test]
fn end_on_a_fresh_connection_is_not_resent() {
    let mut ex = Exchange::new(&transport(), get(), at(0)).unwrap();
    connect(&mut ex, at(0), 1);
    write_all(&mut ex, at(0));
    feed(&mut ex, at(1), b"");
    let error = done(&mut ex, at(1)).unwrap_err();
    assert_eq!(error.kind, TransportErrorKind::Io);
    assert_eq!(pooled_id(ex), None);
}

#[test]
fn end_after_part_of_an_answer_on_a_pooled_connection_is_not_resent() {
    let mut ex = reusing(get(), 7, at(0));
    write_all(&mut ex, at(0));
    feed(&mut ex, at(1), b"HTTP/1.1 200");
    assert!(matches!(next(&mut ex, at(1)), Next::Read { conn: 7, .. }));
    feed(&mut ex, at(2), b"");
    // The server saw the request: no second send.
    let error = done(&mut ex, at(2)).unwrap_err();
    assert_eq!(error.kind, TransportErrorKind::Io);
}

#[test]
fn resent_request_is_pooled_when_whole_on_the_fresh_connection() {
    let mut ex = reusing(get(), 7, at(0));
    write_all(&mut ex, at(0));
    feed(&mut ex, at(1), b"");
    connect(&mut ex, at(2), 8);
    write_all(&mut ex, at(2));
    feed(&mut ex, at(3), OK);
    assert!(done(&mut ex, at(3)).is_ok());
    assert_eq!(pooled_id(ex), Some(8));
}

#[test]
fn resent_request_is_not_pooled_when_cut_short_on_the_fresh_connection() {
    // The whole request went out on the stale connection; on the fresh one the write
    // fails but an answer still comes: that connection is in an unknown state.
    let mut ex = reusing(get(), 7, at(0));
    write_all(&mut ex, at(0));
    feed(&mut ex, at(1), b"");
    connect(&mut ex, at(2), 8);
    assert!(matches!(next(&mut ex, at(2)), Next::Write { conn: 8, .. }));
    ex.handle_input(at(2), Input::Failed(io::ErrorKind::BrokenPipe.into()));
    assert!(matches!(next(&mut ex, at(2)), Next::Read { conn: 8, .. }));
    feed(
        &mut ex,
        at(3),
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n",
    );
    assert_eq!(
        done(&mut ex, at(3)).unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(pooled_id(ex), None);
}

#[test]
fn early_answer_after_a_failed_write_is_heard_but_not_pooled() {
    let mut ex = Exchange::new(&transport(), post(), at(0)).unwrap();
    connect(&mut ex, at(0), 1);
    assert!(matches!(next(&mut ex, at(0)), Next::Write { .. }));
    ex.handle_input(at(1), Input::Failed(io::ErrorKind::BrokenPipe.into()));
    feed(
        &mut ex,
        at(2),
        b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n",
    );
    assert_eq!(
        done(&mut ex, at(2)).unwrap().status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(pooled_id(ex), None);
}

// ---------------------------------------------------------------- deadlines

#[test]
fn connect_deadline_times_out_as_a_connect_error() {
    let mut ex = Exchange::new(&transport(), get(), at(0)).unwrap();
    assert!(matches!(
        next(&mut ex, at(0)),
        Next::Connect { deadline, .. } if deadline == at(CONNECT_MS)
    ));
    ex.handle_input(at(CONNECT_MS), Input::TimedOut);
    let error = done(&mut ex, at(CONNECT_MS)).unwrap_err();
    assert_eq!(error.kind, TransportErrorKind::Connect);
    assert!(error.message.contains("timed out"), "{error:?}");
}

#[test]
fn connect_deadline_counts_from_the_exchange_not_from_the_poll() {
    let mut ex = Exchange::new(&transport(), get(), at(0)).unwrap();
    // Polled late: the deadline is still the one set when the exchange began.
    assert!(matches!(
        next(&mut ex, at(600)),
        Next::Connect { deadline, .. } if deadline == at(CONNECT_MS)
    ));
}

#[test]
fn read_deadline_moves_with_progress() {
    let mut ex = Exchange::new(&transport(), get(), at(0)).unwrap();
    connect(&mut ex, at(0), 1);
    assert!(matches!(
        next(&mut ex, at(0)),
        Next::Write { deadline, .. } if deadline == at(READ_MS)
    ));
    ex.handle_input(at(500), Input::Written);
    assert!(matches!(
        next(&mut ex, at(500)),
        Next::Read { deadline, .. } if deadline == at(500 + READ_MS)
    ));
    feed(&mut ex, at(1_500), b"HTTP/1.1 200 OK\r\n");
    assert!(matches!(
        next(&mut ex, at(1_500)),
        Next::Read { deadline, .. } if deadline == at(1_500 + READ_MS)
    ));
    ex.handle_input(at(3_500), Input::TimedOut);
    let error = done(&mut ex, at(3_500)).unwrap_err();
    assert_eq!(error.kind, TransportErrorKind::Timeout);
    assert_eq!(pooled_id(ex), None);
}

#[test]
fn total_deadline_caps_a_slow_trickle() {
    let mut ex = Exchange::new(&transport(), get(), at(0)).unwrap();
    connect(&mut ex, at(0), 1);
    write_all(&mut ex, at(0));
    let mut expected = Vec::new();
    for (ms, data) in [
        (1_500, &b"HTTP/1.1 200 OK\r\n"[..]),
        (3_000, b"content-length: 10\r\n\r\n"),
        (4_500, b"01234"),
    ] {
        feed(&mut ex, at(ms), data);
        match next(&mut ex, at(ms)) {
            Next::Read { deadline, .. } => {
                expected.push((deadline, at((ms + READ_MS).min(TOTAL_MS))))
            }
            other => panic!("expected Read, got {other:?}"),
        }
    }
    for (deadline, wanted) in expected {
        assert_eq!(deadline, wanted);
    }
    ex.handle_input(at(TOTAL_MS), Input::TimedOut);
    assert_eq!(
        done(&mut ex, at(TOTAL_MS)).unwrap_err().kind,
        TransportErrorKind::Timeout
    );
}

// ---------------------------------------------------------------- keep-alive

#[test]
fn connection_close_answer_is_not_pooled() {
    let mut ex = Exchange::new(&transport(), get(), at(0)).unwrap();
    connect(&mut ex, at(0), 1);
    write_all(&mut ex, at(0));
    feed(
        &mut ex,
        at(1),
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
    );
    assert_eq!(done(&mut ex, at(1)).unwrap().body().as_ref(), b"ok");
    assert_eq!(pooled_id(ex), None);
}

#[test]
fn http10_answer_without_keep_alive_is_not_pooled() {
    let mut ex = Exchange::new(&transport(), get(), at(0)).unwrap();
    connect(&mut ex, at(0), 1);
    write_all(&mut ex, at(0));
    feed(
        &mut ex,
        at(1),
        b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
    );
    assert!(done(&mut ex, at(1)).is_ok());
    assert_eq!(pooled_id(ex), None);
}

#[test]
fn request_asking_to_close_is_not_pooled() {
    let mut request = get();
    request.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    let mut ex = Exchange::new(&transport(), request, at(0)).unwrap();
    connect(&mut ex, at(0), 1);
    let (_, written) = write_all(&mut ex, at(0));
    assert!(
        String::from_utf8(written)
            .unwrap()
            .contains("connection: close\r\n")
    );
    feed(&mut ex, at(1), OK);
    assert!(done(&mut ex, at(1)).is_ok());
    assert_eq!(pooled_id(ex), None);
}

#[test]
fn bytes_beyond_the_answer_keep_the_connection_out_of_the_pool() {
    let mut ex = Exchange::new(&transport(), get(), at(0)).unwrap();
    connect(&mut ex, at(0), 1);
    write_all(&mut ex, at(0));
    feed(
        &mut ex,
        at(1),
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1",
    );
    assert!(done(&mut ex, at(1)).is_ok());
    assert_eq!(pooled_id(ex), None);
}

// ---------------------------------------------------------------- proxy

#[test]
fn connect_through_a_proxy_then_send_the_request() {
    let mut ex = Exchange::new(&via_proxy(), get(), at(0)).unwrap();
    match next(&mut ex, at(0)) {
        Next::Connect { host, port, .. } => assert_eq!((host.as_str(), port), ("proxy.test", 3128)),
        other => panic!("expected Connect to the proxy, got {other:?}"),
    }
    ex.handle_input(at(10), Input::Connected(Conn(1)));
    match next(&mut ex, at(10)) {
        Next::Write {
            conn,
            bytes,
            deadline,
        } => {
            assert_eq!(conn, 1);
            assert!(
                bytes.starts_with(b"CONNECT discord.test:80 HTTP/1.1\r\n"),
                "{bytes:?}"
            );
            assert_eq!(deadline, at(CONNECT_MS), "the tunnel is part of connecting");
        }
        other => panic!("expected the CONNECT head, got {other:?}"),
    }
    ex.handle_input(at(20), Input::Written);
    assert!(matches!(
        next(&mut ex, at(20)),
        Next::Read { conn: 1, deadline } if deadline == at(CONNECT_MS)
    ));
    feed(
        &mut ex,
        at(30),
        b"HTTP/1.1 200 Connection established\r\n\r\n",
    );
    let (conn, written) = write_all(&mut ex, at(30));
    assert_eq!(conn, 1);
    assert!(written.starts_with(b"GET /api/v10/x HTTP/1.1\r\n"));
    feed(&mut ex, at(40), OK);
    assert_eq!(done(&mut ex, at(40)).unwrap().body().as_ref(), b"ok");
    assert_eq!(pooled_id(ex), Some(1));
}

#[test]
fn proxy_refusals_are_connect_errors() {
    for answer in [
        &b"HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n"[..],
        b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n",
    ] {
        let mut ex = Exchange::new(&via_proxy(), get(), at(0)).unwrap();
        connect(&mut ex, at(0), 1);
        let (_, written) = write_all(&mut ex, at(0));
        assert!(written.starts_with(b"CONNECT "));
        feed(&mut ex, at(1), answer);
        let error = done(&mut ex, at(1)).unwrap_err();
        assert_eq!(error.kind, TransportErrorKind::Connect);
        let status = std::str::from_utf8(&answer[9..12]).unwrap();
        assert!(error.message.contains(status), "{error:?}");
        assert_eq!(pooled_id(ex), None);
    }
}

#[test]
fn proxy_closing_during_the_tunnel_is_a_connect_error() {
    let mut ex = Exchange::new(&via_proxy(), get(), at(0)).unwrap();
    connect(&mut ex, at(0), 1);
    write_all(&mut ex, at(0));
    feed(&mut ex, at(1), b"");
    assert_eq!(
        done(&mut ex, at(1)).unwrap_err().kind,
        TransportErrorKind::Connect
    );
}

#[test]
fn proxy_tunnel_timeout_is_a_connect_error() {
    let mut ex = Exchange::new(&via_proxy(), get(), at(0)).unwrap();
    connect(&mut ex, at(0), 1);
    write_all(&mut ex, at(0));
    ex.handle_input(at(CONNECT_MS), Input::TimedOut);
    assert_eq!(
        done(&mut ex, at(CONNECT_MS)).unwrap_err().kind,
        TransportErrorKind::Connect
    );
}

#[test]
fn tls_origin_through_a_proxy_starts_the_handshake_in_the_tunnel() {
    let url = "https://discord.test/api/v10/x";
    let request = request_to(url, Method::GET, RequestBody::Empty);
    let mut ex = Exchange::new(&via_proxy(), request, at(0)).unwrap();
    connect(&mut ex, at(0), 1);
    let (_, written) = write_all(&mut ex, at(0));
    assert!(written.starts_with(b"CONNECT discord.test:443 HTTP/1.1\r\n"));
    feed(
        &mut ex,
        at(1),
        b"HTTP/1.1 200 Connection established\r\n\r\n",
    );
    match next(&mut ex, at(1)) {
        Next::Write {
            conn,
            bytes,
            deadline,
        } => {
            assert_eq!(conn, 1);
            assert_eq!(bytes[0], 0x16, "a TLS handshake record (ClientHello)");
            assert_eq!(deadline, at(CONNECT_MS));
        }
        other => panic!("expected the ClientHello, got {other:?}"),
    }
}

#[test]
fn tls_handshake_closed_early_is_a_connect_error() {
    let url = "https://discord.test/api/v10/x";
    let request = request_to(url, Method::GET, RequestBody::Empty);
    let mut ex = Exchange::new(&transport(), request, at(0)).unwrap();
    assert!(matches!(
        next(&mut ex, at(0)),
        Next::Connect { port: 443, .. }
    ));
    ex.handle_input(at(0), Input::Connected(Conn(1)));
    let (_, hello) = write_all(&mut ex, at(0));
    assert_eq!(hello[0], 0x16);
    feed(&mut ex, at(1), b"");
    let error = done(&mut ex, at(1)).unwrap_err();
    assert_eq!(error.kind, TransportErrorKind::Connect);
    assert_eq!(pooled_id(ex), None);
}

// ---------------------------------------------------------------- streamed files

fn with_file(len: Option<u64>) -> http::Request<RequestBody> {
    let source = FileSource::Path {
        path: PathBuf::from("/data/report.bin"),
        len,
    };
    let body = Payload::raw_json(r#"{"content":"x"}"#)
        .with_file(FilePart::source("report.bin", source))
        .into_body();
    request(Method::POST, body)
}

/// Writes the request, opening the file and reading it as `chunks` (then its end),
/// until the exchange reads or is over.
fn stream(ex: &mut Exchange<Conn>, now: Instant, chunks: &[&[u8]]) -> (Vec<u8>, Next) {
    let mut chunks = chunks.iter();
    let mut written = Vec::new();
    loop {
        match next(ex, now) {
            Next::Write { bytes, .. } => {
                written.extend_from_slice(&bytes);
                ex.handle_input(now, Input::Written);
            }
            Next::OpenFile(path) => {
                assert_eq!(path, PathBuf::from("/data/report.bin"));
                ex.handle_input(now, Input::FileOpened);
            }
            Next::ReadFile => feed_file(ex, now, chunks.next().copied().unwrap_or_default()),
            other => return (written, other),
        }
    }
}

#[test]
fn file_of_its_declared_length_is_streamed() {
    let mut ex = Exchange::new(&transport(), with_file(Some(10)), at(0)).unwrap();
    connect(&mut ex, at(0), 1);
    let (written, next_io) = stream(&mut ex, at(0), &[b"01234", b"56789"]);
    assert!(matches!(next_io, Next::Read { conn: 1, .. }), "{next_io:?}");
    let text = String::from_utf8(written).unwrap();
    assert!(text.contains("\r\n\r\n0123456789\r\n"), "{text}");
    let head_end = text.find("\r\n\r\n").unwrap() + 4;
    let length: usize = text
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        text.len() - head_end,
        length,
        "the declared Content-Length is kept"
    );
    feed(&mut ex, at(1), OK);
    assert!(done(&mut ex, at(1)).is_ok());
    assert_eq!(pooled_id(ex), Some(1));
}

#[test]
fn file_shorter_than_declared_fails_and_is_not_pooled() {
    let mut ex = Exchange::new(&transport(), with_file(Some(10)), at(0)).unwrap();
    connect(&mut ex, at(0), 1);
    let (_, outcome) = stream(&mut ex, at(0), &[b"01234"]);
    let Next::Done(Err(error)) = outcome else {
        panic!("expected a failure, got {outcome:?}");
    };
    assert_eq!(error.kind, TransportErrorKind::Io);
    assert!(error.message.contains("declared length"), "{error:?}");
    assert_eq!(pooled_id(ex), None);
}

#[test]
fn file_longer_than_declared_fails_and_is_not_pooled() {
    for chunks in [&[&b"0123456789AB"[..]][..], &[b"0123456789", b"AB"]] {
        let mut ex = Exchange::new(&transport(), with_file(Some(10)), at(0)).unwrap();
        connect(&mut ex, at(0), 1);
        let (written, outcome) = stream(&mut ex, at(0), chunks);
        let Next::Done(Err(error)) = outcome else {
            panic!("expected a failure, got {outcome:?}");
        };
        assert!(error.message.contains("declared length"), "{error:?}");
        assert!(
            !written.windows(2).any(|w| w == b"AB"),
            "no byte beyond the declared length is written"
        );
        assert_eq!(pooled_id(ex), None);
    }
}

#[test]
fn file_that_cannot_be_opened_fails() {
    let mut ex = Exchange::new(&transport(), with_file(Some(10)), at(0)).unwrap();
    connect(&mut ex, at(0), 1);
    loop {
        match next(&mut ex, at(0)) {
            Next::Write { .. } => ex.handle_input(at(0), Input::Written),
            Next::OpenFile(_) => break,
            other => panic!("expected OpenFile, got {other:?}"),
        }
    }
    ex.handle_input(at(0), Input::Failed(io::ErrorKind::NotFound.into()));
    let error = done(&mut ex, at(0)).unwrap_err();
    assert_eq!(error.kind, TransportErrorKind::Io);
    assert!(error.message.contains("request file"), "{error:?}");
    assert_eq!(pooled_id(ex), None);
}

#[test]
fn file_of_unknown_length_is_sent_chunked() {
    let mut ex = Exchange::new(&transport(), with_file(None), at(0)).unwrap();
    connect(&mut ex, at(0), 1);
    let (written, next_io) = stream(&mut ex, at(0), &[b"hello", b" world"]);
    assert!(matches!(next_io, Next::Read { .. }), "{next_io:?}");
    let text = String::from_utf8(written).unwrap();
    assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
    assert!(!text.contains("content-length"), "{text}");
    assert!(text.contains("5\r\nhello\r\n6\r\n world\r\n"), "{text}");
    assert!(text.ends_with("\r\n0\r\n\r\n"), "{text}");
    feed(&mut ex, at(1), OK);
    assert!(done(&mut ex, at(1)).is_ok());
    assert_eq!(pooled_id(ex), Some(1));
}

// ---------------------------------------------------------------- response framing

fn answered(parts: &[&[u8]]) -> (Result<http::Response<Bytes>, TransportError>, Option<u32>) {
    answered_to(get(), parts)
}

/// Feeds `parts` one read each (the last may be the end), checking the exchange waits
/// for more until the last.
fn answered_to(
    request: http::Request<RequestBody>,
    parts: &[&[u8]],
) -> (Result<http::Response<Bytes>, TransportError>, Option<u32>) {
    let mut ex = Exchange::new(&transport(), request, at(0)).unwrap();
    connect(&mut ex, at(0), 1);
    write_all(&mut ex, at(0));
    let (last, rest) = parts.split_last().unwrap();
    for part in rest {
        feed(&mut ex, at(1), part);
        assert!(
            matches!(next(&mut ex, at(1)), Next::Read { .. }),
            "complete too early"
        );
    }
    feed(&mut ex, at(1), last);
    let outcome = done(&mut ex, at(1));
    (outcome, pooled_id(ex))
}

#[test]
fn content_length_body_split_across_reads() {
    let whole = b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhello world";
    let parts: Vec<&[u8]> = whole.chunks(1).collect();
    let (outcome, pooled) = answered(&parts);
    assert_eq!(outcome.unwrap().body().as_ref(), b"hello world");
    assert_eq!(pooled, Some(1));
}

#[test]
fn chunked_body_is_decoded() {
    let (outcome, pooled) = answered(&[
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel",
        b"lo\r\n6\r\n world\r\n",
        b"0\r\n\r\n",
    ]);
    assert_eq!(outcome.unwrap().body().as_ref(), b"hello world");
    assert_eq!(pooled, Some(1));
}

#[test]
fn close_delimited_body_ends_at_the_end_of_the_stream() {
    let (outcome, pooled) = answered(&[b"HTTP/1.1 200 OK\r\n\r\nhello", b" world", b""]);
    assert_eq!(outcome.unwrap().body().as_ref(), b"hello world");
    assert_eq!(pooled, None, "the stream's end was the body's end");
}

#[test]
fn content_length_body_cut_short_is_an_error() {
    let (outcome, pooled) = answered(&[b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhello", b""]);
    assert_eq!(outcome.unwrap_err().kind, TransportErrorKind::Io);
    assert_eq!(pooled, None);
}

#[test]
fn head_answer_has_no_body_despite_its_content_length() {
    let request = request(Method::HEAD, RequestBody::Empty);
    let (outcome, pooled) =
        answered_to(request, &[b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n"]);
    assert!(outcome.unwrap().body().is_empty());
    assert_eq!(pooled, Some(1));
}

#[test]
fn interim_100_continue_is_skipped() {
    let (outcome, _) = answered(&[
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n",
    ]);
    assert_eq!(outcome.unwrap().status(), StatusCode::CREATED);
}

// ---------------------------------------------------------------- odds and ends

#[test]
fn a_stale_connection_is_replaced_once_only() {
    let mut ex = reusing(get(), 7, at(0));
    write_all(&mut ex, at(0));
    feed(&mut ex, at(1), b"");
    connect(&mut ex, at(2), 8);
    write_all(&mut ex, at(2));
    // The fresh connection closing too is a failure, not another reconnect.
    feed(&mut ex, at(3), b"");
    let error = done(&mut ex, at(3)).unwrap_err();
    assert_eq!(error.kind, TransportErrorKind::Io);
    assert_eq!(pooled_id(ex), None);
}

#[test]
fn unusable_url_is_refused_up_front() {
    let request = request_to("ftp://discord.test/x", Method::GET, RequestBody::Empty);
    let error = Exchange::<Conn>::new(&transport(), request, at(0))
        .err()
        .expect("no exchange for an ftp URL");
    assert_eq!(error.kind, TransportErrorKind::Connect);
}

#[test]
fn file_read_error_fails_the_exchange() {
    let mut ex = Exchange::new(&transport(), with_file(Some(10)), at(0)).unwrap();
    connect(&mut ex, at(0), 1);
    loop {
        match next(&mut ex, at(0)) {
            Next::Write { .. } => ex.handle_input(at(0), Input::Written),
            Next::OpenFile(_) => ex.handle_input(at(0), Input::FileOpened),
            Next::ReadFile => break,
            other => panic!("expected ReadFile, got {other:?}"),
        }
    }
    ex.handle_input(at(0), Input::Failed(io::Error::other("disk on fire")));
    let error = done(&mut ex, at(0)).unwrap_err();
    assert!(error.message.contains("disk on fire"), "{error:?}");
    assert_eq!(pooled_id(ex), None);
}
