//! Property: arbitrary interleavings of inputs (bytes in random splits, EOF, timeouts,
//! write progress, shutdown) never panic a session and always end closed by its latest
//! deadline (`common::interleaving`). More cases with `PROPTEST_CASES`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::driver::request;
use common::fixture;
use common::interleaving::{Event, check};
use proptest::prelude::*;

/// Pieces of a peer's stream: honest requests, rejections, broken framing, noise.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(request(&fixture("ping"))),
        Just(request(&fixture("command_echo"))),
        Just(request(&fixture("command_file"))),
        Just(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n".to_vec()),
        Just(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 9999999\r\n\r\n".to_vec()),
        Just(b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec()),
        Just(b"POST / HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 3\r\n\r\n".to_vec()),
        Just(b"POST / HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..64),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        4 => (1usize..400).prop_map(Event::Bytes),
        1 => Just(Event::Eof),
        2 => (0u32..1200).prop_map(Event::Advance),
        2 => (0usize..2000).prop_map(Event::PeerReads),
        1 => Just(Event::Shutdown),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64)
    ))]

    #[test]
    fn every_interleaving_ends_closed_by_the_latest_deadline(
        pieces in proptest::collection::vec(piece(), 0..6),
        events in proptest::collection::vec(event(), 0..40),
    ) {
        check(common::endpoint(), &pieces.concat(), &events);
    }
}
