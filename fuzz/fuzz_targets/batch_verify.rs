//! Differential: a batch of requests verified through the endpoint's `VerifyQueue` must
//! get exactly the answers single verification gives each of them, and single
//! verification (`Verifier::verify`) exactly the answers of ed25519-dalek's
//! `verify_strict`, whatever mix of valid, corrupted and arbitrary signatures the
//! fuzzer builds.
#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use arbitrary::Arbitrary;
use bytes::Bytes;
use ed25519_dalek::{Signer, SigningKey};
use libfuzzer_sys::fuzz_target;
use yuyo_core::endpoint::{Endpoint, EndpointConfig, Finished, Handlers, Signed, Verifier};

#[derive(Arbitrary, Debug)]
enum Signature {
    /// Signed with the test key.
    Valid,
    /// Signed, then these bits flipped.
    Flipped(Vec<u16>),
    /// Signed, then `R` replaced.
    OtherR([u8; 32]),
    /// Arbitrary bytes.
    Raw([u8; 64]),
}

#[derive(Arbitrary, Debug)]
struct Request<'a> {
    body: &'a [u8],
    timestamp: u32,
    signature: Signature,
}

/// The request's signature, as sent, over `timestamp ‖ body`.
fn signature(key: &SigningKey, request: &Request<'_>) -> ([u8; 64], Vec<u8>) {
    let timestamp = request.timestamp.to_string();
    let message = [timestamp.as_bytes(), request.body].concat();
    let mut signature = key.sign(&message).to_bytes();
    match &request.signature {
        Signature::Valid => {}
        Signature::Flipped(bits) => {
            for bit in bits {
                let bit = usize::from(*bit) % 512;
                signature[bit / 8] ^= 1 << (bit % 8);
            }
        }
        Signature::OtherR(r) => signature[..32].copy_from_slice(r),
        Signature::Raw(raw) => signature = *raw,
    }
    (signature, message)
}

fn signed(endpoint: &Endpoint, key: &SigningKey, request: &Request<'_>) -> Option<Signed> {
    let timestamp = request.timestamp.to_string();
    let (signature, _) = signature(key, request);
    let hex: String = signature.iter().map(|b| format!("{b:02x}")).collect();
    let (head, ()) = http::Request::post("/")
        .header("content-type", "application/json")
        .header("x-signature-ed25519", hex)
        .header("x-signature-timestamp", timestamp)
        .body(())
        .ok()?
        .into_parts();
    let exchange = endpoint.begin(&head).ok()?;
    exchange.push(Bytes::copy_from_slice(request.body)).ok()?.end().ok()
}

/// What a request ends in, comparably.
fn answer(finished: Finished) -> (bool, u16) {
    match finished {
        Finished::Respond(immediate) => (false, immediate.status().as_u16()),
        Finished::Dispatch(dispatch) => (true, u16::from(dispatch.kind().type_number())),
        // No events path is configured here.
        Finished::Event(_) => (true, 0),
    }
}

fuzz_target!(|requests: Vec<Request<'_>>| {
    let key = SigningKey::from_bytes(&[7; 32]);
    let verifier = Verifier::from_bytes(key.verifying_key().as_bytes()).expect("test key");
    let mut handlers = Handlers::new();
    handlers.set_command(|_ctx| async { Ok(None) }).ok();
    let endpoint = Endpoint::new(EndpointConfig::new(verifier.clone()), handlers);

    let mut expected = Vec::new();
    let mut tickets = Vec::new();
    for request in requests.iter().take(64) {
        let (Some(alone), Some(batched)) =
            (signed(&endpoint, &key, request), signed(&endpoint, &key, request))
        else {
            continue;
        };
        let (sent, message) = signature(&key, request);
        let strict = key
            .verifying_key()
            .verify_strict(&message, &ed25519_dalek::Signature::from_bytes(&sent))
            .is_ok();
        assert_eq!(verifier.verify_message(&message, &sent).is_ok(), strict);
        expected.push(answer(alone.verify(0)));
        tickets.push(batched.enqueue(0));
    }
    // The first poll verifies the whole queue as one batch; every ticket is then ready.
    for (ticket, expected) in tickets.into_iter().zip(expected) {
        let mut ticket = pin!(ticket);
        let Poll::Ready(finished) = ticket.as_mut().poll(&mut Context::from_waker(Waker::noop()))
        else {
            panic!("a ticket of a drained queue is not ready")
        };
        assert_eq!(answer(finished), expected);
    }
});
