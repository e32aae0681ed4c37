//! Arbitrary bytes in arbitrary splits, with random timeouts, EOF and early responses:
//! the connection must never panic, every peer error must carry a 4xx/5xx status, and
//! memory must stay bounded by the configured limits.
#![no_main]

use std::time::{Duration, Instant};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use yuyo_core::http1::{Config, Connection, Event};

const CONFIG: Config = Config {
    max_head_size: 2048,
    max_headers: 16,
    max_body_size: 4096,
    head_timeout: Duration::from_secs(10),
    body_timeout: Duration::from_secs(30),
    idle_timeout: Duration::from_secs(75),
    write_timeout: Duration::from_secs(10),
    linger: yuyo_core::http1::Linger {
        timeout: Duration::from_secs(2),
        max_bytes: 1 << 20,
    },
};

fuzz_target!(|data: &[u8]| {
    // The first bytes steer the driver; the rest is what the peer sends.
    let (control, input) = data.split_at(data.len().min(16));
    let mut now = Instant::now();
    let mut conn = Connection::new(CONFIG, now);
    let mut rest = input;
    let mut step = 0usize;
    loop {
        let steer = control.get(step % control.len().max(1)).copied().unwrap_or(0);
        step += 1;
        // One head plus one read is all a connection may hold, whatever the peer sends.
        assert!(conn.buffered_len() <= CONFIG.max_head_size + 97);
        assert!(step < 100_000, "driver made no progress");
        let event = match conn.next_event(now) {
            Ok(e) => e,
            Err(e) => {
                assert!(e.status().is_client_error() || e.status().is_server_error());
                continue;
            }
        };
        while conn.poll_transmit().is_some() {}
        match event {
            Event::Head(_) if steer & 0x80 != 0 => {
                // An early answer before the body is read.
                let (parts, ()) = http::Response::new(()).into_parts();
                let _ = conn.send_full_response(parts, Bytes::from_static(b"early"));
            }
            Event::Head(_) | Event::Data(_) => {}
            Event::End => {
                let (parts, ()) = http::Response::new(()).into_parts();
                let _ = conn.send_full_response(parts, Bytes::from_static(b"ok"));
            }
            Event::NeedData => {
                if steer & 0x40 != 0 {
                    now += Duration::from_secs(u64::from(steer & 0x3f) + 1);
                    conn.handle_timeout(now);
                    continue;
                }
                if rest.is_empty() {
                    conn.receive_eof();
                    if steer & 1 == 0 {
                        now += Duration::from_secs(100);
                        conn.handle_timeout(now);
                    }
                    continue;
                }
                let take = (usize::from(steer) % 97 + 1).min(rest.len());
                conn.receive(now, &rest[..take]);
                rest = &rest[take..];
            }
            Event::Paused => {
                // Finish whatever response is pending so reading resumes.
                let _ = conn.send_end();
                if conn.next_event(now).is_ok_and(|e| matches!(e, Event::Paused)) {
                    let (parts, ()) = http::Response::new(()).into_parts();
                    let _ = conn.send_full_response(parts, Bytes::new());
                }
            }
            Event::Closed => break,
        }
    }
});
