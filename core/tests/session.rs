//! `server::Session`: the http1 connection wired to the endpoint, driven by a fake-clock
//! driver exactly as the module docs describe (`common::driver`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::type_complexity,
    missing_docs
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::driver::{Driver, request};
use common::{TIMESTAMP, fixture, sign};
use yuyo_core::endpoint::{Endpoint, Handlers, Reply};
use yuyo_core::http1;
use yuyo_core::multipart::FileSource;
use yuyo_core::server::{DriverError, Input, MAX_UNSENT, Slots};

#[test]
fn pipelined_interactions_are_answered_in_order() {
    let mut input = request(&fixture("command_echo"));
    input.extend(request(&fixture("ping")));
    input.extend(request(&fixture("command_none")));
    let mut d = Driver::new(common::endpoint());
    assert!(d.receive(&input).read);
    let responses = d.responses();
    let statuses: Vec<u16> = responses.iter().map(|r| r.0).collect();
    assert_eq!(statuses, [200, 200, 204]);
    let echo: serde_json::Value = serde_json::from_slice(&responses[0].2).unwrap();
    assert_eq!(echo["type"], 4);
    assert_eq!(
        echo["data"]["content"],
        "Hello from the conformance suite! ✓ café"
    );
    assert_eq!(responses[1].2, br#"{"type":1}"#);
}

#[test]
fn early_rejection_discards_the_body_and_serves_the_next_request() {
    let body = fixture("command_echo");
    let mut input = request(&body);
    // Wrong path: answered 404 from the head; the body that follows is skipped.
    input.splice(5..6, *b"/x");
    input.extend(request(&fixture("ping")));
    let mut d = Driver::new(common::endpoint());
    assert!(d.receive(&input).read);
    let statuses: Vec<u16> = d.responses().iter().map(|r| r.0).collect();
    assert_eq!(statuses, [404, 200]);
}

#[test]
fn bad_signature_is_401_and_the_connection_goes_on() {
    let body = fixture("command_echo");
    let mut input = request(&body);
    let good = sign(TIMESTAMP.as_bytes(), &body);
    let at = input
        .windows(good.len())
        .position(|w| w == good.as_bytes())
        .unwrap();
    input[at] = if input[at] == b'0' { b'1' } else { b'0' };
    input.extend(request(&fixture("ping")));
    let mut d = Driver::new(common::endpoint());
    assert!(d.receive(&input).read);
    let statuses: Vec<u16> = d.responses().iter().map(|r| r.0).collect();
    assert_eq!(statuses, [401, 200]);
}

fn file_endpoint(len: Option<u64>, ran: Arc<AtomicBool>) -> Endpoint {
    let mut handlers = Handlers::new();
    handlers
        .set_command(move |_ctx| {
            let ran = ran.clone();
            async move {
                Ok(Some(
                    Reply::message("file")
                        .with_file_source(
                            "big.bin",
                            FileSource::Path {
                                path: "/nonexistent/big.bin".into(),
                                len,
                            },
                            None,
                        )
                        .after(async move { ran.store(true, Ordering::SeqCst) }),
                ))
            }
        })
        .unwrap();
    Endpoint::new(common::config(), handlers)
}

#[test]
fn streamed_files_and_after_work() {
    for len in [Some(10), None] {
        let ran = Arc::new(AtomicBool::new(false));
        let mut d = Driver::new(file_endpoint(len, ran.clone()));
        d.file = Bytes::from_static(b"0123456789");
        assert!(d.receive(&request(&fixture("command_echo"))).read);
        assert!(ran.load(Ordering::SeqCst));
        // After-work started once the whole response had been written.
        assert_eq!(d.afters, [d.out.len()]);
        let text = String::from_utf8_lossy(&d.out).into_owned();
        if len.is_some() {
            assert!(text.contains("0123456789"), "{text}");
            let responses = d.responses();
            assert_eq!(responses.len(), 1);
            assert_eq!(responses[0].0, 200);
            assert!(responses[0].2.ends_with(b"--\r\n"));
        } else {
            // Unknown length: chunked framing.
            assert!(text.contains("transfer-encoding: chunked"), "{text}");
            assert!(text.contains("3\r\n012\r\n3\r\n345\r\n3\r\n678\r\n1\r\n9\r\n"));
            assert!(text.ends_with("0\r\n\r\n"));
        }
    }
}

#[test]
fn a_file_of_the_wrong_length_closes_the_connection() {
    let ran = Arc::new(AtomicBool::new(false));
    let mut d = Driver::new(file_endpoint(Some(4), ran.clone()));
    d.file = Bytes::from_static(b"12345");
    d.file_chunk = 5;
    d.session.receive(d.now, &request(&fixture("command_echo")));
    // The driver supplies 5 bytes for a file declared 4 long: a typed error, then close.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| d.run()));
    assert!(result.is_err(), "the driver's unwrap sees the error");
    assert!(d.session.is_closed());
    assert!(matches!(
        d.session.poll_output(),
        yuyo_core::server::Output::Close
    ));
    // The after-work of a response that never completed does not run.
    assert!(!ran.load(Ordering::SeqCst));
}

#[test]
fn driver_misuse_is_a_typed_error() {
    for (input, error) in [
        (Input::Handled(Ok(None)), DriverError::NotHandling),
        (Input::FileData(Bytes::new()), DriverError::NotStreaming),
        (Input::FileEnd, DriverError::NotStreaming),
    ] {
        let mut d = Driver::new(common::endpoint());
        assert_eq!(d.session.handle_input(d.now, input), Err(error));
        assert!(d.session.is_closed());
    }
}

#[test]
fn handler_panics_are_500_and_the_connection_goes_on() {
    let mut handlers = Handlers::new();
    handlers
        .set_command(|_ctx| async move {
            if true {
                panic!("handler bug");
            }
            Ok(None)
        })
        .unwrap();
    let mut input = request(&fixture("command_echo"));
    input.extend(request(&fixture("ping")));
    let mut d = Driver::new(Endpoint::new(common::config(), handlers));
    assert!(d.receive(&input).read);
    let statuses: Vec<u16> = d.responses().iter().map(|r| r.0).collect();
    assert_eq!(statuses, [500, 200]);
}

/// `n` pipelined `GET /` requests: each is answered 404 from its head.
fn pipelined_gets(n: usize) -> Vec<u8> {
    b"GET / HTTP/1.1\r\nhost: x\r\n\r\n".repeat(n)
}

#[test]
fn a_peer_that_does_not_read_stops_parsing_at_the_output_bound() {
    let mut d = Driver::new(common::endpoint());
    d.write_room = Some(0);
    let wait = d.receive(&pipelined_gets(4000));
    // The session parsed only as many requests as fit the bound, then stopped reading.
    assert!(!wait.read && wait.write, "{wait:?}");
    let unsent = d.unsent.len() + pending_bytes(&mut d);
    assert!(
        (MAX_UNSENT..MAX_UNSENT + 4096).contains(&unsent),
        "{unsent}"
    );
    // Reading the responses lets it parse further.
    let before = d.out.len();
    let wait = d.peer_reads(MAX_UNSENT);
    assert!(d.out.len() > before);
    assert!(wait.write || wait.read);
}

/// Bytes the session holds beyond the transmit in hand (drained by letting the peer
/// read without limit in a copy is not possible, so count by the wait's state).
fn pending_bytes(d: &mut Driver) -> usize {
    // What the driver holds is `d.unsent`; the session holds at least the rest of the
    // bound. The `Debug` output of the session names its unsent count.
    let debug = format!("{:?}", d.session);
    let at = debug.find("unsent: ").unwrap() + "unsent: ".len();
    let digits: String = debug[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse::<usize>().unwrap() - d.unsent.len()
}

#[test]
fn a_write_without_progress_closes_at_the_write_deadline() {
    let config = http1::Config {
        write_timeout: Duration::from_secs(10),
        ..http1::Config::default()
    };
    let mut d = Driver::with_config(common::endpoint(), config);
    d.write_room = Some(10);
    let wait = d.receive(&pipelined_gets(3));
    let deadline = wait.deadline.unwrap();
    assert_eq!(deadline, d.now.instant + Duration::from_secs(10));
    // Progress pushes the deadline on.
    d.now.instant += Duration::from_secs(5);
    let wait = d.peer_reads(10);
    assert_eq!(
        wait.deadline.unwrap(),
        d.now.instant + Duration::from_secs(10)
    );
    // No progress for the whole timeout: closed at once, no lingering close.
    let wait = d.advance(Duration::from_secs(10));
    assert!(d.closed && !d.shut_down_write, "{wait:?}");
}

#[test]
fn early_rejection_lingers_until_the_peer_closes() {
    let mut d = Driver::new(common::endpoint());
    // A declared body over the limit: 413 from the head, then a lingering close.
    let wait = d.receive(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 999999999\r\n\r\nxx");
    assert_eq!(d.statuses(), [413]);
    assert!(d.shut_down_write && !d.closed);
    assert!(wait.read && wait.deadline.is_some(), "{wait:?}");
    // What the peer still sends is discarded; its EOF ends the linger.
    d.receive(&[0; 1000]);
    assert!(!d.closed);
    d.input(Input::Eof);
    assert!(d.closed);
}

#[test]
fn the_linger_ends_at_its_deadline() {
    let mut d = Driver::new(common::endpoint());
    d.receive(b"GET /x HTTP/1.1\r\nhost: x\r\ncontent-length: 5000000\r\n\r\n");
    assert!(d.shut_down_write);
    d.advance(http1::Linger::default().timeout);
    assert!(d.closed);
}

#[test]
fn shutdown_while_a_handler_runs_answers_then_closes() {
    let mut d = Driver::new(common::endpoint());
    d.run_handlers = false;
    d.receive(&request(&fixture("command_echo")));
    assert!(d.handler.is_some());
    d.input(Input::Shutdown);
    assert!(d.out.is_empty(), "the handler's answer is awaited");
    d.finish_handler();
    let responses = d.responses();
    assert_eq!(responses[0].0, 200);
    assert!(
        responses[0]
            .1
            .contains(&("connection".into(), "close".into())),
        "{:?}",
        responses[0].1
    );
    assert!(d.closed || d.shut_down_write);
}

#[test]
fn shutdown_of_an_idle_connection_closes_at_once() {
    let mut d = Driver::new(common::endpoint());
    d.receive(&request(&fixture("ping")));
    assert_eq!(d.statuses(), [200]);
    d.input(Input::Shutdown);
    // A keep-alive peer may be sending its next request: a lingering close.
    assert!(d.shut_down_write);
    d.input(Input::Eof);
    assert!(d.closed);
}

#[test]
fn only_connections_waiting_on_their_peer_can_be_evicted() {
    let slots = Slots::new();
    let mut busy = Driver::new(common::endpoint());
    busy.run_handlers = false;
    let admitted = slots.admit(2).unwrap();
    busy.session =
        yuyo_core::server::Session::new(common::endpoint(), http1::Config::default(), busy.now)
            .with_slot(admitted.slot);
    let mut idle = Driver::new(common::endpoint());
    let admitted = slots.admit(2).unwrap();
    idle.session =
        yuyo_core::server::Session::new(common::endpoint(), http1::Config::default(), idle.now)
            .with_slot(admitted.slot);
    busy.receive(&request(&fixture("command_echo")));
    assert!(busy.handler.is_some());
    idle.run();
    // At the cap: the idle one goes, the one running a handler stays.
    let evicted = idle.session.eviction().unwrap();
    let _third = slots.admit(2).unwrap();
    assert!(futures::executor::block_on(futures::future::poll_immediate(evicted)).is_some());
    idle.input(Input::Evicted);
    assert!(idle.closed);
    // Now both slots are busy or fresh: the one running a handler is never taken.
    assert_eq!(slots.stats().evictions, 1);
    busy.finish_handler();
    assert_eq!(busy.statuses(), [200]);
}

#[test]
fn a_late_head_is_408_and_a_silent_keep_alive_closes() {
    let mut d = Driver::new(common::endpoint());
    let wait = d.receive(b"POST / HTTP/1.1\r\n");
    let head_deadline = wait.deadline.unwrap();
    d.now.instant = head_deadline;
    d.input(Input::Timeout);
    assert_eq!(d.statuses(), [408]);
    let mut d = Driver::new(common::endpoint());
    d.receive(&request(&fixture("ping")));
    let written = d.out.len();
    d.advance(http1::Config::default().idle_timeout);
    // Nothing more is written; the connection goes (through a lingering close).
    assert_eq!(d.out.len(), written);
    assert!(d.shut_down_write || d.closed);
}

#[test]
fn a_long_pipeline_yields_its_turn_and_is_answered_in_order() {
    let mut d = Driver::new(common::endpoint());
    let wait = d.receive(&pipelined_gets(100));
    assert!(wait.read);
    assert_eq!(d.statuses(), vec![405; 100]);
    // 100 answers, 16 a turn: the connection let others run between turns.
    assert_eq!(d.yields, 100 / 16);
}

#[test]
fn debug_output_never_shows_the_token_or_the_body() {
    let body = fixture("command_echo");
    let token = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut d = Driver::new(common::endpoint());
    let input = request(&body);
    // Everything but the last byte: the body sits in the receive buffer.
    d.receive(&input[..input.len() - 1]);
    let debug = format!("{:?}", d.session);
    assert!(!debug.contains(&token), "{debug}");
    assert!(debug.contains("buffered"), "{debug}");
}
