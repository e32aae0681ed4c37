//! Parsing a realistic Discord interaction request with the `http1` connection, beside a
//! bare `httparse` parse of the same head, measured in the same run.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use yuyo_core::http1::{Config, Connection, Event};

const BODY: &[u8] = include_bytes!("../fixtures/interactions/command_echo.json");

/// The head as Discord sends it (header set and order from the fixtures' README).
fn request() -> (Vec<u8>, usize) {
    let head = format!(
        "POST /interactions HTTP/1.1\r\n\
         Host: bot.example.com\r\n\
         User-Agent: Discord-Interactions/1.0 (+https://discord.com)\r\n\
         Content-Length: {}\r\n\
         Content-Type: application/json\r\n\
         X-Signature-Ed25519: 5e8f9c3b2a1d4e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f\r\n\
         X-Signature-Timestamp: 1700000000\r\n\
         Accept-Encoding: gzip\r\n\
         \r\n",
        BODY.len()
    );
    let mut bytes = head.clone().into_bytes();
    bytes.extend_from_slice(BODY);
    (bytes, head.len())
}

fn bench(c: &mut Criterion) {
    let (input, head_len) = request();
    let mut group = c.benchmark_group("http1");
    group.throughput(Throughput::Elements(1));

    group.bench_function("httparse_head_only", |b| {
        b.iter(|| {
            let mut headers = [httparse::EMPTY_HEADER; 100];
            let mut req = httparse::Request::new(&mut headers);
            let status = req.parse(black_box(&input)).unwrap();
            black_box((status, req.headers.len()));
        })
    });

    // A keep-alive connection: receive the request, take head/body/end events, answer it,
    // drain the transmit buffer — everything a driver asks of the core per request.
    group.bench_function("connection_request_response", |b| {
        let now = Instant::now();
        let mut conn = Connection::new(Config::default(), now);
        let reply = Bytes::from_static(br#"{"type":4,"data":{"content":"hello"}}"#);
        b.iter(|| {
            conn.receive(now, black_box(&input));
            let mut body_len = 0;
            loop {
                match conn.next_event(now).unwrap() {
                    Event::Head(parts) => {
                        black_box(parts);
                    }
                    Event::Data(d) => body_len += d.len(),
                    Event::End => {
                        let (mut parts, ()) = http::Response::new(()).into_parts();
                        parts.headers.insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/json"),
                        );
                        conn.send_full_response(parts, reply.clone()).unwrap();
                    }
                    Event::NeedData => break,
                    Event::Paused | Event::Closed => unreachable!(),
                }
                while let Some(out) = conn.poll_transmit() {
                    black_box(out);
                }
            }
            assert_eq!(body_len, input.len() - head_len);
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
