//! The serving `Session`, fed arbitrary interleavings of inputs (bytes in arbitrary
//! splits, EOF, timeouts, write progress, shutdown): it must never panic and must always
//! end closed by its latest deadline once the peer goes silent. The property and its
//! fake-clock driver are the ones of core's tests (`tests/common/`), shared by path.
#![no_main]

#[allow(dead_code, clippy::unwrap_used, clippy::expect_used)]
#[path = "../../core/tests/common/driver.rs"]
mod driver;
#[allow(dead_code, clippy::unwrap_used, clippy::expect_used)]
#[path = "../../core/tests/common/interleaving.rs"]
mod interleaving;

use arbitrary::Arbitrary;
use interleaving::Event;
use libfuzzer_sys::fuzz_target;
use yuyo_core::endpoint::{Endpoint, EndpointConfig, Handlers, Reply, Verifier};

/// The Unix time the driver's clock starts at.
const NOW: u64 = 1_700_000_000;

/// Headers of a request as Discord sends it (the fuzzing verifier accepts any signature).
fn discord_headers(body: &[u8]) -> Vec<(String, Vec<u8>)> {
    vec![
        ("host".into(), b"x".to_vec()),
        ("content-type".into(), b"application/json".to_vec()),
        ("content-length".into(), body.len().to_string().into_bytes()),
        ("x-signature-ed25519".into(), vec![b'0'; 128]),
        ("x-signature-timestamp".into(), NOW.to_string().into_bytes()),
    ]
}

#[derive(Arbitrary, Debug)]
struct Case<'a> {
    stream: &'a [u8],
    /// A signed PING and command are mixed into the stream at these offsets.
    honest: Vec<(u16, bool)>,
    events: Vec<(u8, u16)>,
}

fn endpoint() -> Endpoint {
    let mut handlers = Handlers::new();
    let _ = handlers.set_command(|_ctx| async { Ok(Some(Reply::message("pong"))) });
    Endpoint::new(EndpointConfig::new(Verifier::insecure_accept_all()), handlers)
}

fuzz_target!(|case: Case<'_>| {
    let ping = driver::request(br#"{"type":1,"id":"1","application_id":"2","token":"t","version":1}"#);
    let mut stream = case.stream.to_vec();
    for (at, is_ping) in case.honest.iter().take(8) {
        let at = usize::from(*at).min(stream.len());
        let piece = if *is_ping { ping.clone() } else { b"GET / HTTP/1.1\r\nhost: x\r\n\r\n".to_vec() };
        stream.splice(at..at, piece);
    }
    let events: Vec<Event> = case
        .events
        .iter()
        .take(64)
        .map(|&(kind, arg)| match kind % 5 {
            0 => Event::Bytes(usize::from(arg) % 2048 + 1),
            1 => Event::Eof,
            2 => Event::Advance(u32::from(arg) % 1500),
            3 => Event::PeerReads(usize::from(arg)),
            _ => Event::Shutdown,
        })
        .collect();
    interleaving::check(endpoint(), &stream, &events);
});
