//! Arbitrary interleavings of what can happen to a served connection (bytes in any split,
//! EOF, time passing, the peer reading, shutdown), and the property every one of them
//! must have: no panic, and the session ends closed by its latest deadline once the
//! peer goes silent. Shared by the proptest (`tests/session_props.rs`) and the fuzz
//! target `session`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use yuyo_core::endpoint::Endpoint;
use yuyo_core::http1;
use yuyo_core::server::Input;

use super::driver::Driver;

/// One event of an interleaving.
#[derive(Debug, Clone)]
pub enum Event {
    /// The next `n` bytes of the peer's stream arrive.
    Bytes(usize),
    /// The peer closes its sending side.
    Eof,
    /// This many milliseconds pass.
    Advance(u32),
    /// The peer reads this many bytes.
    PeerReads(usize),
    /// Graceful shutdown.
    Shutdown,
}

/// Short deadlines, so that the property's bound is small.
pub fn config() -> http1::Config {
    http1::Config {
        head_timeout: Duration::from_millis(500),
        body_timeout: Duration::from_millis(700),
        idle_timeout: Duration::from_millis(900),
        write_timeout: Duration::from_millis(300),
        linger: http1::Linger {
            timeout: Duration::from_millis(200),
            max_bytes: 4096,
        },
        ..http1::Config::default()
    }
}

/// The longest a silent connection may take to close: every deadline in turn.
fn bound(config: &http1::Config) -> Duration {
    config.head_timeout
        + config.body_timeout
        + config.idle_timeout
        + config.write_timeout
        + config.linger.timeout
}

/// Plays `events` over `stream` against a session of `endpoint`, then checks that the
/// silent peer's connection closes by the latest deadline.
pub fn check(endpoint: Endpoint, stream: &[u8], events: &[Event]) {
    let config = config();
    let mut d = Driver::with_config(endpoint, config.clone());
    d.write_room = Some(0);
    d.run();
    let mut at = 0;
    for event in events {
        if d.closed {
            return;
        }
        match event {
            Event::Bytes(n) => {
                let end = (at + n).min(stream.len());
                d.receive(&stream[at..end]);
                at = end;
            }
            Event::Eof => {
                d.input(Input::Eof);
            }
            Event::Advance(ms) => {
                d.advance(Duration::from_millis(u64::from(*ms)));
            }
            Event::PeerReads(n) => {
                d.peer_reads(*n);
            }
            Event::Shutdown => {
                d.input(Input::Shutdown);
            }
        }
    }
    let started = d.now.instant;
    for _ in 0..64 {
        if d.closed {
            return;
        }
        let wait = d.wait.expect("the session waits or closes");
        let deadline = wait
            .deadline
            .unwrap_or_else(|| panic!("a silent connection waits with no deadline: {wait:?}"));
        assert!(
            deadline.saturating_duration_since(started) <= bound(&config),
            "deadline beyond the bound: {wait:?}"
        );
        d.now.instant = d.now.instant.max(deadline);
        d.input(Input::Timeout);
    }
    panic!("not closed after 64 deadlines: {:?}", d.session);
}
