//! The fuzz oracle as a property test: arbitrary heads and bodies never
//! panic and always end in a status from the table. (The cargo-fuzz target
//! sketched in `fuzz_exchange.rs.txt` checks the same thing, unboundedly.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use common::*;
use proptest::prelude::*;
use yuyo_core::endpoint::{Endpoint, Finished};

const STATUSES: [u16; 10] = [200, 204, 400, 401, 404, 405, 413, 415, 500, 501];
const NAMES: [&str; 6] = [
    "content-type",
    "x-signature-ed25519",
    "x-signature-timestamp",
    "content-length",
    "host",
    "x-other",
];

fn status_of(endpoint: &Endpoint, head: &http::request::Parts, body: Bytes, now: u64) -> u16 {
    match endpoint.receive(head, [body], now) {
        Finished::Respond(immediate) => immediate.status().as_u16(),
        Finished::Dispatch(dispatch) => {
            let (responding, future) = dispatch.start();
            let mut future = pin!(future);
            let Poll::Ready(outcome) = future
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
            else {
                panic!("test handlers are always ready")
            };
            responding.complete(outcome).response.status().as_u16()
        }
        Finished::Event(event) => event.acknowledge().response.status().as_u16(),
    }
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"application/json".to_vec()),
        Just(TIMESTAMP.as_bytes().to_vec()),
        "[0-9a-fA-F]{128}".prop_map(String::into_bytes),
        "[0-9]{1,4}".prop_map(String::into_bytes),
        prop::collection::vec(0x20_u8..0x7f, 0..20),
    ]
}

fn json_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(fixture("command_echo").to_vec()),
        Just(fixture("ping").to_vec()),
        (-3_i64..10).prop_map(|t| format!(r#"{{"type":{t}}}"#).into_bytes()),
        prop::collection::vec(any::<u8>(), 0..64),
        "[\\[\\]{}\":,0-9a-z ]{0,40}".prop_map(String::into_bytes),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn always_a_status_from_the_table(
        method in prop_oneof![Just("POST"), Just("GET"), Just("PUT")],
        target in prop_oneof![Just("/"), Just("/x"), Just("/?a=b")],
        headers in prop::collection::vec((0..NAMES.len(), value()), 0..8),
        body in json_body(),
        sign_it in any::<bool>(),
        now in any::<u64>(),
    ) {
        let mut headers: HeaderList = headers
            .into_iter()
            .map(|(name, value)| (NAMES[name].to_owned(), value))
            .collect();
        if sign_it {
            headers.extend(discord_headers(&body));
        }
        let request = head(method, target, &headers);
        let status = status_of(&endpoint(), &request, Bytes::from(body.clone()), now);
        prop_assert!(STATUSES.contains(&status), "{status}");

        // Past the cryptography, too.
        #[cfg(feature = "fuzzing")]
        {
            let endpoint = Endpoint::new(
                yuyo_core::endpoint::EndpointConfig::new(yuyo_core::endpoint::Verifier::insecure_accept_all()),
                handlers(),
            );
            let status = status_of(&endpoint, &request, Bytes::from(body), now);
            prop_assert!(STATUSES.contains(&status), "{status}");
        }
    }
}
