//! The interaction endpoint, fed arbitrary head fields and a body in arbitrary chunks:
//! it must never panic and must always end in a status from the endpoint table.
//! With `Verifier::insecure_accept_all()` (feature `fuzzing`) it also reaches the JSON,
//! type and dispatch logic.
#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use yuyo_core::endpoint::{
    Endpoint, EndpointConfig, Finished, HandlerError, Handlers, Reply, Verifier,
};

/// Every status the table allows.
const STATUSES: [u16; 10] = [200, 204, 400, 401, 404, 405, 413, 415, 500, 501];

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    method: &'a str,
    target: &'a str,
    /// Names are drawn mostly from the headers the endpoint reads, so the
    /// fuzzer does not have to discover them.
    headers: Vec<(u8, &'a [u8])>,
    body: &'a [u8],
    cuts: Vec<u16>,
    now: u64,
    accept_all: bool,
    window_secs: Option<u16>,
    max_body_size: u16,
    /// What the handler answers: 0 none, 1 message, 2 with a file, 3 error, 4 panic.
    reply: u8,
}

const NAMES: [&str; 6] = [
    "content-type",
    "x-signature-ed25519",
    "x-signature-timestamp",
    "content-length",
    "host",
    "x-other",
];

fuzz_target!(|input: Input<'_>| {
    // Heads the `http` crate refuses (invalid method, URI or value) never
    // reach the core: the HTTP layer answers those.
    let mut builder = http::Request::builder().method(input.method).uri(input.target);
    for (name, value) in &input.headers {
        builder = builder.header(NAMES[usize::from(*name) % NAMES.len()], *value);
    }
    let Ok(request) = builder.body(()) else { return };
    let (head, ()) = request.into_parts();

    let verifier = if input.accept_all {
        Verifier::insecure_accept_all()
    } else {
        // The fixed test key (seed 0x07 × 32).
        Verifier::from_hex("ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c")
            .expect("valid test key")
    };
    let mut config = EndpointConfig::new(verifier).max_body_size(usize::from(input.max_body_size));
    if let Some(window) = input.window_secs {
        config = config.timestamp_window(Duration::from_secs(u64::from(window)));
    }
    let reply = input.reply % 5;
    let handler = move |_ctx| async move {
        match reply {
            0 => Ok(None),
            1 => Ok(Some(Reply::message("hi").ephemeral())),
            2 => Ok(Some(Reply::message("file").with_file("a b.txt", "x"))),
            3 => Err(HandlerError::msg("fuzz")),
            _ => panic!("fuzz panic"),
        }
    };
    let mut handlers = Handlers::new();
    // Leave modal unhandled so "no handler" (501) is reachable.
    handlers.set_command(handler).ok();
    handlers.set_component(handler).ok();
    handlers.set_autocomplete(handler).ok();
    let endpoint = Endpoint::new(config, handlers);

    // Arbitrary chunking of the body.
    let body = Bytes::copy_from_slice(input.body);
    let mut cuts: Vec<usize> = input.cuts.iter().map(|c| usize::from(*c) % (body.len() + 1)).collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for cut in cuts {
        chunks.push(body.slice(start..cut));
        start = cut;
    }
    chunks.push(body.slice(start..));

    let status = match endpoint.receive(&head, chunks, input.now) {
        Finished::Respond(immediate) => {
            let status = immediate.status();
            assert_eq!(immediate.into_response().status(), status);
            status
        }
        Finished::Dispatch(dispatch) => {
            let (responding, future) = dispatch.start();
            // The handlers above never wait, so one poll finishes them.
            let mut future = pin!(future);
            let Poll::Ready(outcome) = future.as_mut().poll(&mut Context::from_waker(Waker::noop()))
            else {
                panic!("fuzz handlers are always ready")
            };
            responding.complete(outcome).response.status()
        }
        Finished::Event(event) => event.acknowledge().response.status(),
    };
    assert!(STATUSES.contains(&status.as_u16()), "status {status} is not in the table");
});
