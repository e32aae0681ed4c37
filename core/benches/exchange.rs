//! The whole verify → parse → dispatch-decision path for the signed
//! `command_echo.json`, beside `ed25519-dalek`'s `verify_strict` alone on the
//! same message, in the same run; then the same path with the signatures
//! verified in batches (the endpoint's `VerifyQueue`), and bytes in → bytes
//! out through one keep-alive `server::Session`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::{Signature, Signer, SigningKey};
use yuyo_core::endpoint::{Endpoint, EndpointConfig, Finished, Handlers, Reply, Verifier};
use yuyo_core::http1;
use yuyo_core::server::{Input, Now, Output, Session};

const TIMESTAMP: &[u8] = b"1700000000";

fn bench(c: &mut Criterion) {
    let body = Bytes::from(
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/interactions/command_echo.json"
        ))
        .unwrap(),
    );
    let signing_key = SigningKey::from_bytes(&[7; 32]);
    let message = [TIMESTAMP, &body].concat();
    let signature = signing_key.sign(&message);
    let verifying_key = signing_key.verifying_key();

    let mut handlers = Handlers::new();
    handlers
        .set_command(|_ctx| async { Ok(Some(Reply::message("hi"))) })
        .unwrap();
    let verifier = Verifier::from_bytes(verifying_key.as_bytes()).unwrap();
    let endpoint = Endpoint::new(EndpointConfig::new(verifier.clone()), handlers);
    let (head, ()) = http::Request::post("/")
        .header("host", "bot.example.com")
        .header(
            "user-agent",
            "Discord-Interactions/1.0 (+https://discord.com)",
        )
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .header("x-signature-ed25519", hex::encode(signature.to_bytes()))
        .header("x-signature-timestamp", "1700000000")
        .body(())
        .unwrap()
        .into_parts();
    assert!(matches!(
        endpoint.receive(&head, [body.clone()], 1_700_000_000),
        Finished::Dispatch(_)
    ));

    let mut group = c.benchmark_group("command_echo");
    group.bench_function("verify_strict", |b| {
        b.iter(|| {
            verifying_key
                .verify_strict(black_box(&message), black_box(&signature))
                .unwrap();
        });
    });
    // yuyo's own strict check: the same answers, hashed in place, no compression.
    let signature_bytes = signature.to_bytes();
    group.bench_function("verifier_verify", |b| {
        b.iter(|| {
            verifier
                .verify(
                    black_box(TIMESTAMP),
                    black_box(&body),
                    black_box(&signature_bytes),
                )
                .unwrap();
        });
    });
    group.bench_function("exchange_full_path", |b| {
        b.iter(|| {
            let finished =
                endpoint.receive(black_box(&head), [black_box(body.clone())], 1_700_000_000);
            black_box(matches!(finished, Finished::Dispatch(_)))
        });
    });
    group.bench_function("typed_parse", |b| {
        b.iter(|| {
            serde_json::from_slice::<twilight_model::application::interaction::Interaction>(
                black_box(&body),
            )
            .unwrap()
        });
    });
    let _: &Signature = &signature;
    group.finish();

    // Bytes in, bytes out: one keep-alive `Session` (http1 + endpoint) takes
    // the raw request through verification, the handler and the response.
    let mut raw = format!(
        "POST / HTTP/1.1\r\nhost: bot.example.com\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nx-signature-ed25519: {}\r\nx-signature-timestamp: 1700000000\r\n\r\n",
        body.len(),
        hex::encode(signature.to_bytes())
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    let now = Now {
        instant: Instant::now(),
        unix_secs: 1_700_000_000,
    };
    let mut session = Session::new(endpoint.clone(), http1::Config::default(), now);
    group_session(c, &mut session, &raw, now);

    // The same path with signatures verified in batches of `size` through the
    // endpoint's queue (throughput = requests).
    let mut group = c.benchmark_group("command_echo_batched");
    for size in [1_usize, 4, 16, 64] {
        group.throughput(criterion::Throughput::Elements(size as u64));
        group.bench_function(format!("exchange_full_path/{size}"), |b| {
            b.iter(|| {
                let tickets: Vec<_> = (0..size)
                    .map(|_| {
                        let exchange = endpoint.begin(black_box(&head)).unwrap();
                        let signed = exchange.push(body.clone()).unwrap().end().unwrap();
                        signed.enqueue(1_700_000_000)
                    })
                    .collect();
                for ticket in tickets {
                    let finished = futures::executor::block_on(ticket);
                    assert!(matches!(finished, Finished::Dispatch(_)));
                }
            });
        });
    }
    group.finish();
}

fn group_session(c: &mut Criterion, session: &mut Session, raw: &[u8], now: Now) {
    let mut group = c.benchmark_group("session");
    group.bench_function("request_response_keep_alive", |b| {
        b.iter(|| {
            session.receive(now, black_box(raw));
            let mut written = 0;
            // Drained as a driver does, until the session waits to read the next request.
            loop {
                let input = match session.poll_output() {
                    Output::Transmit(bytes) => {
                        written += bytes.len();
                        Input::Written(bytes.len())
                    }
                    Output::Verify(ticket) => Input::Verified(futures::executor::block_on(ticket)),
                    Output::Handle(handler) => Input::Handled(futures::executor::block_on(handler)),
                    Output::Timeout(wait) if wait.read && !wait.write => break,
                    other => panic!("unexpected {other:?}"),
                };
                session.handle_input(now, input).unwrap();
            }
            assert!(written > 0);
            black_box(written)
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
