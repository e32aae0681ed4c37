//! Header order, header-name case and body chunking never change an
//! exchange's outcome.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::*;
use proptest::prelude::*;

/// Requests to vary: each fixture signed properly, plus some spoiled ones.
fn requests() -> Vec<(HeaderList, Bytes)> {
    let mut requests = Vec::new();
    for name in FIXTURES {
        let body = fixture(name);
        requests.push((discord_headers(&body), body));
    }
    let echo = fixture("command_echo");
    let spoil = |f: &dyn Fn(&mut HeaderList)| {
        let mut headers = discord_headers(&echo);
        f(&mut headers);
        (headers, echo.clone())
    };
    requests.push(spoil(&|h| h.retain(|(n, _)| n != "X-Signature-Ed25519")));
    requests.push(spoil(&|h| {
        h.push(("X-Signature-Timestamp".into(), b"1".to_vec()))
    }));
    requests.push(spoil(&|h| {
        h.push(("Content-Type".into(), b"text/plain".to_vec()))
    }));
    requests.push(spoil(&|h| {
        for (n, v) in h.iter_mut() {
            if n == "X-Signature-Timestamp" {
                *v = b"1700000001".to_vec();
            }
        }
    }));
    requests.push(spoil(&|h| h.retain(|(n, _)| n != "Content-Length")));
    requests
}

/// `name` with each letter's case flipped where `flips` says so.
fn recase(name: &str, flips: &[bool]) -> String {
    name.chars()
        .zip(flips.iter().copied().chain(std::iter::repeat(false)))
        .map(|(c, flip)| {
            if flip {
                if c.is_ascii_uppercase() {
                    c.to_ascii_lowercase()
                } else {
                    c.to_ascii_uppercase()
                }
            } else {
                c
            }
        })
        .collect()
}

/// `body` cut at the given points (sorted, deduplicated, in range); empty
/// chunks included on purpose.
fn chunk(body: &Bytes, cuts: &[usize]) -> Vec<Bytes> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    cuts.sort_unstable();
    let mut chunks = Vec::new();
    let mut start = 0;
    for cut in cuts {
        chunks.push(body.slice(start..cut));
        start = cut;
    }
    chunks.push(body.slice(start..));
    chunks
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(128)
    ))]

    #[test]
    fn order_case_and_chunking_do_not_matter(
        index in any::<prop::sample::Index>(),
        order in any::<prop::sample::Index>(),
        flips in prop::collection::vec(any::<bool>(), 24),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
        endpoint_choice in 0_u8..2,
    ) {
        let requests = requests();
        let (headers, body) = &requests[index.index(requests.len())];
        let endpoint = match endpoint_choice {
            0 => endpoint(),
            _ => yuyo_core::endpoint::Endpoint::new(config().max_body_size(1700), handlers()),
        };
        let baseline = drive(&endpoint, &head("POST", "/", headers), vec![body.clone()], NOW);

        // A rotation plus a swap: a varied permutation that keeps repeated
        // headers' relative order half the time (the outcome for repeated
        // signature headers is "repeated" either way).
        let mut varied: Vec<(String, Vec<u8>)> = headers.clone();
        let len = varied.len();
        varied.rotate_left(order.index(len));
        if len > 1 {
            let at = order.index(len - 1);
            varied.swap(at, at + 1);
        }
        for (name, _) in &mut varied {
            *name = recase(name, &flips);
        }
        let got = drive(&endpoint, &head("POST", "/", &varied), chunk(body, &cuts), NOW);
        prop_assert_eq!(got.fixed_boundary(), baseline.fixed_boundary());
    }
}
