//! Batch signature verification: a batch answers exactly as single
//! verification does, whatever mix of good and bad signatures it holds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use proptest::prelude::*;
use yuyo_core::endpoint::{BatchStats, Endpoint, FALLBACK_SIGNATURES, Finished, Signed};

/// A request with `body`, signature `signature` (hex) and `timestamp`, read
/// up to the **Signed** state.
fn signed_with(endpoint: &Endpoint, body: &[u8], signature: &str, timestamp: &str) -> Signed {
    let mut headers = discord_headers(body);
    for (name, value) in &mut headers {
        match name.as_str() {
            "X-Signature-Ed25519" => *value = signature.as_bytes().to_vec(),
            "X-Signature-Timestamp" => *value = timestamp.as_bytes().to_vec(),
            _ => {}
        }
    }
    let head = head("POST", "/", &headers);
    let exchange = endpoint.begin(&head).unwrap();
    exchange
        .push(Bytes::copy_from_slice(body))
        .unwrap()
        .end()
        .unwrap()
}

fn signed(endpoint: &Endpoint, body: &[u8]) -> Signed {
    signed_with(endpoint, body, &sign(TIMESTAMP.as_bytes(), body), TIMESTAMP)
}

/// A signature that fails in a way the cheap checks cannot see (`s` changed
/// but still canonical).
fn bad_signature(body: &[u8]) -> String {
    let mut raw = hex::decode(sign(TIMESTAMP.as_bytes(), body)).unwrap();
    raw[40] ^= 0x01;
    hex::encode(raw)
}

fn settle(finished: Finished) -> Outcome {
    match finished {
        Finished::Respond(immediate) => outcome(immediate.into_response(), false),
        Finished::Dispatch(dispatch) => {
            let (responding, future) = dispatch.start();
            let done = responding.complete(futures::executor::block_on(future));
            let has_after = done.after.is_some();
            outcome(done.response, has_after)
        }
        Finished::Event(event) => {
            let done = event.acknowledge();
            let has_after = done.after.is_some();
            outcome(done.response, has_after)
        }
    }
}

/// Enqueue every request, then await the tickets in order: the first poll
/// verifies the whole queue as one batch.
fn batch(requests: Vec<Signed>) -> Vec<Outcome> {
    let tickets: Vec<_> = requests.into_iter().map(|s| s.enqueue(NOW)).collect();
    tickets
        .into_iter()
        .map(|ticket| settle(futures::executor::block_on(ticket)))
        .collect()
}

const BODIES: [&str; 6] = [
    "command_echo",
    "command_load",
    "ping",
    "component",
    "autocomplete",
    "modal",
];

#[test]
fn good_signatures_pass_as_one_batch_with_the_single_answers() {
    let endpoint = endpoint();
    let bodies: Vec<Bytes> = BODIES.iter().map(|name| fixture(name)).collect();
    let expected: Vec<Outcome> = bodies.iter().map(|b| post(&endpoint, b)).collect();
    let outcomes = batch(bodies.iter().map(|b| signed(&endpoint, b)).collect());
    assert_eq!(outcomes, expected);
    assert_eq!(outcomes[2].json(), serde_json::json!({"type": 1}));
    let stats = endpoint.verify_queue().stats();
    assert_eq!((stats.batches, stats.batched_signatures), (1, 6));
    assert_eq!((stats.single_signatures, stats.failed_batches), (0, 0));
}

#[test]
fn one_bad_signature_fails_only_its_request_and_batching_pauses() {
    let endpoint = endpoint();
    let body = fixture("command_echo");
    let good = post(&endpoint, &body);
    let mut requests: Vec<Signed> = (0..8).map(|_| signed(&endpoint, &body)).collect();
    requests.insert(
        3,
        signed_with(&endpoint, &body, &bad_signature(&body), TIMESTAMP),
    );
    let outcomes = batch(requests);
    for (index, outcome) in outcomes.iter().enumerate() {
        if index == 3 {
            assert_eq!(outcome.status, 401);
            assert_eq!(outcome.text(), "Invalid request signature");
        } else {
            assert_eq!(outcome, &good, "request {index}");
        }
    }
    let after_failure = endpoint.verify_queue().stats();
    assert_eq!(after_failure.failed_batches, 1);
    assert_eq!(after_failure.single_signatures, 9);

    // The next signatures are checked singly, then batching resumes.
    let mut verified_singly = 0;
    while verified_singly < FALLBACK_SIGNATURES as usize {
        let outcomes = batch((0..4).map(|_| signed(&endpoint, &body)).collect());
        assert!(outcomes.iter().all(|o| o == &good));
        verified_singly += 4;
    }
    let before = endpoint.verify_queue().stats();
    assert_eq!(before.batches, 1, "no batch during the fallback");
    batch((0..4).map(|_| signed(&endpoint, &body)).collect());
    let after = endpoint.verify_queue().stats();
    assert_eq!(after.batches, 2);
    assert_eq!(after.batched_signatures, 4);
}

#[test]
fn small_order_and_non_canonical_r_are_never_batched() {
    let endpoint = endpoint();
    let body = fixture("command_echo");
    let good = post(&endpoint, &body);
    // R = the identity (small order) with s = 0: satisfies the cofactored
    // equation for no message, and `verify_strict` refuses it outright.
    let mut identity = [0_u8; 64];
    identity[0] = 1;
    // R with y = p (non-canonical encoding of y = 0).
    let mut non_canonical = [0xff_u8; 64];
    non_canonical[0] = 0xed;
    non_canonical[31] = 0x7f;
    non_canonical[32..].fill(0);
    let mut requests: Vec<Signed> = (0..4).map(|_| signed(&endpoint, &body)).collect();
    requests.push(signed_with(
        &endpoint,
        &body,
        &hex::encode(identity),
        TIMESTAMP,
    ));
    requests.push(signed_with(
        &endpoint,
        &body,
        &hex::encode(non_canonical),
        TIMESTAMP,
    ));
    let outcomes = batch(requests);
    assert!(outcomes[..4].iter().all(|o| o == &good));
    assert_eq!(outcomes[4].status, 401);
    assert_eq!(outcomes[5].status, 401);
    let stats = endpoint.verify_queue().stats();
    // The four good ones still went through one combined check.
    assert_eq!(
        (
            stats.batches,
            stats.batched_signatures,
            stats.failed_batches
        ),
        (1, 4, 0)
    );
    assert_eq!(stats.single_signatures, 2);
}

#[test]
fn a_lone_request_is_verified_singly() {
    let endpoint = endpoint();
    let body = fixture("command_echo");
    let outcomes = batch(vec![signed(&endpoint, &body)]);
    assert_eq!(outcomes[0], post(&endpoint, &body));
    let stats = endpoint.verify_queue().stats();
    assert_eq!(
        (stats.batches, stats.single_signatures, stats.failed_batches),
        (0, 1, 0)
    );
    assert_ne!(stats, BatchStats::default());
}

#[test]
fn tickets_resolve_across_threads() {
    // Four threads enqueue and await concurrently: a ticket whose request
    // another thread's poll took must be woken, never lost.
    let endpoint = endpoint();
    let body = fixture("command_echo");
    let good = post(&endpoint, &body);
    let (done, results) = mpsc::channel();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let endpoint = endpoint.clone();
            let body = body.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    let ticket = signed(&endpoint, &body).enqueue(NOW);
                    std::thread::yield_now();
                    let outcome = settle(futures::executor::block_on(ticket));
                    done.send(outcome).unwrap();
                }
            })
        })
        .collect();
    drop(done);
    for _ in 0..100 {
        let outcome = results
            .recv_timeout(Duration::from_secs(30))
            .expect("a ticket was never resolved");
        assert_eq!(outcome, good);
    }
    for thread in threads {
        thread.join().unwrap();
    }
    let stats = endpoint.verify_queue().stats();
    assert_eq!(stats.batched_signatures + stats.single_signatures, 100);
}

#[derive(Debug, Clone)]
enum Damage {
    None,
    SignatureBit(usize),
    BodyByte(usize),
    Timestamp,
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        4 => Just(Damage::None),
        1 => (0..512_usize).prop_map(Damage::SignatureBit),
        1 => any::<usize>().prop_map(Damage::BodyByte),
        1 => Just(Damage::Timestamp),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(24)
    ))]

    /// Whatever the mix, every request gets exactly what single
    /// verification gives it.
    #[test]
    fn batches_answer_as_single_verification(
        requests in prop::collection::vec((0..BODIES.len(), damage()), 1..20),
    ) {
        let endpoint = endpoint();
        let mut batched = Vec::new();
        let mut expected = Vec::new();
        for (fixture_index, damage) in requests {
            let mut body = fixture(BODIES[fixture_index]).to_vec();
            let mut signature = hex::decode(sign(TIMESTAMP.as_bytes(), &body)).unwrap();
            let mut timestamp = TIMESTAMP.to_owned();
            match damage {
                Damage::None => {}
                Damage::SignatureBit(bit) => signature[bit / 8] ^= 1 << (bit % 8),
                Damage::BodyByte(at) => {
                    let at = at % body.len();
                    body[at] = body[at].wrapping_add(1);
                }
                Damage::Timestamp => timestamp = "1700000001".to_owned(),
            }
            let signature = hex::encode(signature);
            expected.push(settle(signed_with(&endpoint, &body, &signature, &timestamp).verify(NOW)));
            batched.push(signed_with(&endpoint, &body, &signature, &timestamp));
        }
        prop_assert_eq!(batch(batched), expected);
    }
}

#[test]
fn a_ticket_deep_in_a_long_queue_is_resolved_by_its_own_poll() {
    // More requests than one batch takes: polling the last ticket first runs
    // batches until its own request is done.
    let endpoint = endpoint();
    let body = fixture("command_echo");
    let good = post(&endpoint, &body);
    let count = yuyo_core::endpoint::MAX_BATCH + 5;
    let mut tickets: Vec<_> = (0..count)
        .map(|_| signed(&endpoint, &body).enqueue(NOW))
        .collect();
    let last = tickets.pop().unwrap();
    assert_eq!(settle(futures::executor::block_on(last)), good);
    for ticket in tickets {
        assert_eq!(settle(futures::executor::block_on(ticket)), good);
    }
    let stats = endpoint.verify_queue().stats();
    assert_eq!(stats.batches, 2);
    assert_eq!(stats.batched_signatures, count as u64);
}
