//! `server::Session`: the http1 connection wired to the endpoint, driven by a fake-clock
//! driver exactly as the module docs describe.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::type_complexity,
    missing_docs
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::Bytes;
use common::{TIMESTAMP, discord_headers, fixture, sign};
use yuyo_core::endpoint::{Endpoint, Handlers, Reply};
use yuyo_core::http1;
use yuyo_core::multipart::FileSource;
use yuyo_core::server::{Action, DriverError, Now, Session};

/// Serialises a request the way Discord sends it.
fn request(body: &[u8]) -> Vec<u8> {
    let mut out = b"POST / HTTP/1.1\r\n".to_vec();
    for (name, value) in discord_headers(body) {
        out.extend(name.as_bytes());
        out.extend(b": ");
        out.extend(value);
        out.extend(b"\r\n");
    }
    out.extend(b"\r\n");
    out.extend(body);
    out
}

struct Driver {
    session: Session,
    now: Now,
    out: Vec<u8>,
    /// Bytes a streamed file supplies.
    file: Bytes,
    afters: Vec<usize>,
}

impl Driver {
    fn new(endpoint: Endpoint) -> Self {
        let now = Now {
            instant: Instant::now(),
            unix_secs: common::NOW,
        };
        Self {
            session: Session::new(endpoint, http1::Config::default(), now.instant),
            now,
            out: Vec::new(),
            file: Bytes::new(),
            afters: Vec::new(),
        }
    }

    fn flush(&mut self) {
        while let Some(b) = self.session.poll_transmit() {
            self.out.extend_from_slice(&b);
        }
    }

    /// Runs the loop until the session needs bytes or closes; returns the last action.
    fn run(&mut self, input: &[u8]) -> &'static str {
        self.session.receive(self.now.instant, input);
        loop {
            self.flush();
            match self.session.poll(self.now) {
                Action::Read => {
                    self.flush();
                    return "read";
                }
                Action::Close => {
                    self.flush();
                    return "close";
                }
                Action::Verify(ticket) => {
                    let finished = futures::executor::block_on(ticket);
                    self.session.verified(self.now, finished).unwrap();
                }
                Action::Handle(handler) => {
                    let outcome = futures::executor::block_on(handler);
                    self.session.complete(self.now, outcome).unwrap();
                }
                Action::StreamFile(_) => {
                    let file = self.file.clone();
                    for piece in file.chunks(3) {
                        self.session
                            .send_file_data(Bytes::copy_from_slice(piece))
                            .unwrap();
                    }
                    self.session.finish_file().unwrap();
                }
                Action::RunAfter(work) => {
                    // As documented: the response is written out before after-work starts.
                    self.flush();
                    self.afters.push(self.out.len());
                    futures::executor::block_on(work);
                }
            }
        }
    }

    fn responses(&self) -> Vec<(u16, Vec<(String, String)>, Vec<u8>)> {
        let mut rest = &self.out[..];
        let mut all = Vec::new();
        while !rest.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut resp = httparse::Response::new(&mut headers);
            let httparse::Status::Complete(n) = resp.parse(rest).unwrap() else {
                panic!("partial response")
            };
            let headers: Vec<(String, String)> = resp
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_owned(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let len: usize = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .map_or(0, |(_, v)| v.parse().unwrap());
            all.push((resp.code.unwrap(), headers, rest[n..n + len].to_vec()));
            rest = &rest[n + len..];
        }
        all
    }
}

#[test]
fn pipelined_interactions_are_answered_in_order() {
    let mut input = request(&fixture("command_echo"));
    input.extend(request(&fixture("ping")));
    input.extend(request(&fixture("command_none")));
    let mut d = Driver::new(common::endpoint());
    assert_eq!(d.run(&input), "read");
    let responses = d.responses();
    let statuses: Vec<u16> = responses.iter().map(|r| r.0).collect();
    assert_eq!(statuses, [200, 200, 204]);
    let echo: serde_json::Value = serde_json::from_slice(&responses[0].2).unwrap();
    assert_eq!(echo["type"], 4);
    assert_eq!(
        echo["data"]["content"],
        "Hello from the conformance suite! ✓ café"
    );
    assert_eq!(responses[1].2, br#"{"type":1}"#);
}

#[test]
fn early_rejection_discards_the_body_and_serves_the_next_request() {
    let body = fixture("command_echo");
    let mut input = request(&body);
    // Wrong path: answered 404 from the head; the body that follows is skipped.
    input.splice(5..6, *b"/x");
    input.extend(request(&fixture("ping")));
    let mut d = Driver::new(common::endpoint());
    assert_eq!(d.run(&input), "read");
    let statuses: Vec<u16> = d.responses().iter().map(|r| r.0).collect();
    assert_eq!(statuses, [404, 200]);
}

#[test]
fn bad_signature_is_401_and_the_connection_goes_on() {
    let body = fixture("command_echo");
    let mut input = request(&body);
    let good = sign(TIMESTAMP.as_bytes(), &body);
    let at = input
        .windows(good.len())
        .position(|w| w == good.as_bytes())
        .unwrap();
    input[at] = if input[at] == b'0' { b'1' } else { b'0' };
    input.extend(request(&fixture("ping")));
    let mut d = Driver::new(common::endpoint());
    assert_eq!(d.run(&input), "read");
    let statuses: Vec<u16> = d.responses().iter().map(|r| r.0).collect();
    assert_eq!(statuses, [401, 200]);
}

fn file_endpoint(len: Option<u64>, ran: Arc<AtomicBool>) -> Endpoint {
    let mut handlers = Handlers::new();
    handlers
        .set_command(move |_ctx| {
            let ran = ran.clone();
            async move {
                Ok(Some(
                    Reply::message("file")
                        .with_file_source(
                            "big.bin",
                            FileSource::Path {
                                path: "/nonexistent/big.bin".into(),
                                len,
                            },
                            None,
                        )
                        .after(async move { ran.store(true, Ordering::SeqCst) }),
                ))
            }
        })
        .unwrap();
    Endpoint::new(common::config(), handlers)
}

#[test]
fn streamed_files_and_after_work() {
    for len in [Some(10), None] {
        let ran = Arc::new(AtomicBool::new(false));
        let mut d = Driver::new(file_endpoint(len, ran.clone()));
        d.file = Bytes::from_static(b"0123456789");
        assert_eq!(d.run(&request(&fixture("command_echo"))), "read");
        assert!(ran.load(Ordering::SeqCst));
        // After-work started once the whole response had been written.
        assert_eq!(d.afters, [d.out.len()]);
        let text = String::from_utf8_lossy(&d.out).into_owned();
        if len.is_some() {
            assert!(text.contains("0123456789"), "{text}");
            let responses = d.responses();
            assert_eq!(responses.len(), 1);
            assert_eq!(responses[0].0, 200);
            assert!(responses[0].2.ends_with(b"--\r\n"));
        } else {
            // Unknown length: chunked framing.
            assert!(text.contains("transfer-encoding: chunked"), "{text}");
            assert!(text.contains("3\r\n012\r\n3\r\n345\r\n3\r\n678\r\n1\r\n9\r\n"));
            assert!(text.ends_with("0\r\n\r\n"));
        }
    }
}

#[test]
fn a_file_of_the_wrong_length_closes_the_connection() {
    let ran = Arc::new(AtomicBool::new(false));
    let mut d = Driver::new(file_endpoint(Some(4), ran.clone()));
    d.session
        .receive(d.now.instant, &request(&fixture("command_echo")));
    let Action::Verify(ticket) = d.session.poll(d.now) else {
        panic!("expected verification")
    };
    d.session
        .verified(d.now, futures::executor::block_on(ticket))
        .unwrap();
    let Action::Handle(handler) = d.session.poll(d.now) else {
        panic!("expected the handler")
    };
    d.session
        .complete(d.now, futures::executor::block_on(handler))
        .unwrap();
    d.flush();
    assert!(matches!(d.session.poll(d.now), Action::StreamFile(_)));
    assert_eq!(
        d.session.send_file_data(Bytes::from_static(b"12345")),
        Err(DriverError::FileLength {
            declared: 4,
            supplied: 5
        })
    );
    assert!(matches!(d.session.poll(d.now), Action::Close));
    // The after-work of a response that never completed does not run.
    assert!(!ran.load(Ordering::SeqCst));
}

#[test]
fn driver_misuse_is_a_typed_error() {
    let mut d = Driver::new(common::endpoint());
    assert_eq!(
        d.session.complete(d.now, Ok(None)),
        Err(DriverError::NotHandling)
    );
    assert_eq!(
        d.session.send_file_data(Bytes::new()),
        Err(DriverError::NotStreaming)
    );
    assert_eq!(d.session.finish_file(), Err(DriverError::NotStreaming));
}

#[test]
fn handler_panics_are_500_and_the_connection_goes_on() {
    let mut handlers = Handlers::new();
    handlers
        .set_command(|_ctx| async move {
            if true {
                panic!("handler bug");
            }
            Ok(None)
        })
        .unwrap();
    let mut input = request(&fixture("command_echo"));
    input.extend(request(&fixture("ping")));
    let mut d = Driver::new(Endpoint::new(common::config(), handlers));
    assert_eq!(d.run(&input), "read");
    let statuses: Vec<u16> = d.responses().iter().map(|r| r.0).collect();
    assert_eq!(statuses, [500, 200]);
}
