//! `yuyo serve --metrics`: known traffic, then the exact counts scraped from `/metrics`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{BOUND, serve_lines};
use yuyo_conformance::client::{Client, Request};
use yuyo_conformance::fixtures::{COMMAND_ECHO, PING};

/// The address of the `metrics: http://ADDR/metrics` line, read within [`BOUND`].
fn metrics_addr(lines: &mpsc::Receiver<String>) -> SocketAddr {
    let deadline = Instant::now() + BOUND;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .expect("a metrics line within the bound");
        if let Some(rest) = line.strip_prefix("metrics: http://") {
            let addr = rest.strip_suffix("/metrics").expect("the /metrics path");
            return addr.parse().expect("a socket address");
        }
    }
}

/// `GET target` on `addr`: the status line and the body.
fn get(addr: SocketAddr, method: &str, target: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "{method} {target} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("a response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head");
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

/// The value of the series `name` with exactly `labels` in the text exposition.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, number) = line.rsplit_once(' ')?;
            let (series_name, rest) = series.split_once('{').unwrap_or((series, "}"));
            let mut found: Vec<(&str, &str)> = rest
                .trim_end_matches('}')
                .split("\",")
                .filter(|pair| !pair.is_empty())
                .filter_map(|pair| {
                    let (key, value) = pair.split_once("=\"")?;
                    Some((key, value.trim_end_matches('"')))
                })
                .collect();
            found.sort_unstable();
            let mut wanted = labels.to_vec();
            wanted.sort_unstable();
            (series_name == name && found == wanted).then(|| number.parse().ok())?
        })
}

fn post(addr: SocketAddr, request: &Request) -> u16 {
    let mut client = Client::connect(addr).expect("connect");
    client.roundtrip(request).expect("a response").status
}

fn counts_known_traffic(runtime: &str) {
    let (_server, addr, lines) = serve_lines(runtime, &["--metrics", "127.0.0.1:0"]);
    let metrics = metrics_addr(&lines);
    for _ in 0..3 {
        assert_eq!(post(addr, &Request::signed(PING)), 200);
    }
    for _ in 0..2 {
        assert_eq!(post(addr, &Request::signed(COMMAND_ECHO)), 200);
    }
    let forged = Request::signed(PING).set("X-Signature-Ed25519", "00".repeat(64));
    assert_eq!(post(addr, &forged), 401);
    assert_eq!(post(addr, &Request::signed(PING).target("/nope")), 404);
    assert_eq!(post(addr, &Request::new("GET", "/healthz")), 200);

    let (status, text) = get(metrics, "GET", "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{text}");
    let requests = |kind, status| {
        let labels = [("kind", kind), ("status", status)];
        value(&text, "yuyo_http_requests_total", &labels)
    };
    assert_eq!(requests("ping", "200"), Some(3.0), "{text}");
    assert_eq!(requests("command", "200"), Some(2.0), "{text}");
    assert_eq!(requests("rejected", "401"), Some(1.0), "{text}");
    assert_eq!(requests("rejected", "404"), Some(1.0), "{text}");
    assert_eq!(requests("health", "200"), Some(1.0), "{text}");
    let count = |name, kind| value(&text, name, &[("kind", kind)]);
    let duration = "yuyo_http_request_duration_seconds_count";
    assert_eq!(count(duration, "ping"), Some(3.0), "{text}");
    assert_eq!(count(duration, "command"), Some(2.0), "{text}");
    assert_eq!(count(duration, "rejected"), Some(2.0), "{text}");
    let handler = "yuyo_handler_duration_seconds_count";
    assert_eq!(count(handler, "command"), Some(2.0), "{text}");
    assert_eq!(count(handler, "ping"), None, "no handler runs for a PING");
    let verified = value(&text, "yuyo_verify_batch_size_sum", &[]);
    assert_eq!(verified, Some(6.0), "six signatures checked: {text}");
    assert_eq!(value(&text, "yuyo_verify_failures_total", &[]), Some(1.0));
    assert!(
        value(&text, "yuyo_connections_open", &[]).is_some(),
        "{text}"
    );

    assert_eq!(get(metrics, "GET", "/other").0, "HTTP/1.1 404 Not Found");
    assert_eq!(
        get(metrics, "POST", "/metrics").0,
        "HTTP/1.1 405 Method Not Allowed"
    );
}

#[test]
fn serve_smol_counts_requests_in_metrics() {
    counts_known_traffic("smol");
}

#[test]
fn serve_tokio_counts_requests_in_metrics() {
    counts_known_traffic("tokio");
}

#[test]
fn serve_blocking_counts_requests_in_metrics() {
    counts_known_traffic("blocking");
}

#[test]
fn serve_tower_counts_requests_in_metrics() {
    counts_known_traffic("tower");
}
