//! A deterministic driver of `server::Session`: a fake clock, a fake socket whose write
//! room the test sets, handlers run to completion only when the test says so.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use yuyo_core::deferral::RestReply;
use yuyo_core::endpoint::{Endpoint, HandlerFuture};
use yuyo_core::http1;
use yuyo_core::server::{Input, Now, Output, Session, Wait};

/// Serialises a request the way Discord sends it.
pub fn request(body: &[u8]) -> Vec<u8> {
    let mut out = b"POST / HTTP/1.1\r\n".to_vec();
    for (name, value) in super::discord_headers(body) {
        out.extend(name.as_bytes());
        out.extend(b": ");
        out.extend(value);
        out.extend(b"\r\n");
    }
    out.extend(b"\r\n");
    out.extend(body);
    out
}

/// A response read back: status, headers, body.
pub type Response = (u16, Vec<(String, String)>, Vec<u8>);

/// The session and everything its outputs did.
pub struct Driver {
    pub session: Session,
    pub now: Now,
    /// Every byte written to the fake socket.
    pub out: Vec<u8>,
    /// The rest of the last `Transmit`, not taken by the socket yet.
    pub unsent: Bytes,
    /// How many more bytes the socket takes (`None`: unlimited).
    pub write_room: Option<usize>,
    /// The handler in flight, when handlers are not run at once.
    pub handler: Option<HandlerFuture>,
    /// Run handlers to completion as soon as they start.
    pub run_handlers: bool,
    /// What a streamed file supplies, in chunks of `file_chunk` bytes.
    pub file: Bytes,
    pub file_chunk: usize,
    file_left: Option<Bytes>,
    pub rest: Vec<RestReply>,
    /// `out.len()` when each after-response work ran.
    pub afters: Vec<usize>,
    pub shut_down_write: bool,
    /// How many times the session yielded its turn.
    pub yields: usize,
    pub closed: bool,
    /// The last wait.
    pub wait: Option<Wait>,
}

impl Driver {
    pub fn new(endpoint: Endpoint) -> Self {
        Self::with_config(endpoint, http1::Config::default())
    }

    pub fn with_config(endpoint: Endpoint, config: http1::Config) -> Self {
        let now = Now {
            instant: Instant::now(),
            unix_secs: super::NOW,
        };
        Self {
            session: Session::new(endpoint, config, now),
            now,
            out: Vec::new(),
            unsent: Bytes::new(),
            write_room: None,
            handler: None,
            run_handlers: true,
            file: Bytes::new(),
            file_chunk: 3,
            file_left: None,
            rest: Vec::new(),
            afters: Vec::new(),
            shut_down_write: false,
            yields: 0,
            closed: false,
            wait: None,
        }
    }

    /// Passes `input` now, then drains the outputs.
    pub fn input(&mut self, input: Input) -> Wait {
        self.session.handle_input(self.now, input).unwrap();
        self.run()
    }

    /// Bytes from the peer.
    pub fn receive(&mut self, bytes: &[u8]) -> Wait {
        self.session.receive(self.now, bytes);
        self.run()
    }

    /// Lets `by` pass and passes `Timeout`.
    pub fn advance(&mut self, by: Duration) -> Wait {
        self.now.instant += by;
        self.input(Input::Timeout)
    }

    /// Lets the peer read `n` more bytes, and writes what the socket then takes.
    pub fn peer_reads(&mut self, n: usize) -> Wait {
        self.write_room = Some(self.write_room.unwrap_or(0) + n);
        let written = self.write();
        self.input(Input::Written(written))
    }

    /// Runs the handler in flight to completion.
    pub fn finish_handler(&mut self) -> Wait {
        let handler = self.handler.take().expect("a handler in flight");
        let outcome = futures::executor::block_on(handler);
        self.input(Input::Handled(outcome))
    }

    fn write(&mut self) -> usize {
        let n = self
            .write_room
            .map_or(self.unsent.len(), |room| room.min(self.unsent.len()));
        self.out.extend_from_slice(&self.unsent[..n]);
        self.unsent.advance(n);
        if let Some(room) = &mut self.write_room {
            *room -= n;
        }
        n
    }

    /// Drains outputs until the session waits (or closes); returns the wait.
    pub fn run(&mut self) -> Wait {
        loop {
            let input = match self.session.poll_output() {
                Output::Transmit(bytes) => {
                    self.unsent = bytes;
                    Input::Written(self.write())
                }
                Output::Verify(ticket) => Input::Verified(futures::executor::block_on(ticket)),
                Output::Handle(handler) if self.run_handlers => {
                    Input::Handled(futures::executor::block_on(handler))
                }
                Output::Handle(handler) => {
                    self.handler = Some(handler);
                    continue;
                }
                Output::StreamFile(_) => {
                    self.file_left = Some(self.file.clone());
                    continue;
                }
                Output::Spawn(work) => {
                    self.afters.push(self.out.len());
                    futures::executor::block_on(work);
                    continue;
                }
                Output::RestReply(reply) => {
                    self.rest.push(reply);
                    continue;
                }
                Output::ShutdownWrite => {
                    self.shut_down_write = true;
                    continue;
                }
                Output::Yield => {
                    self.yields += 1;
                    continue;
                }
                Output::Close => {
                    self.closed = true;
                    return Wait {
                        deadline: None,
                        read: false,
                        write: false,
                        file: false,
                    };
                }
                Output::Timeout(wait) => {
                    self.wait = Some(wait);
                    match self.file_input(wait) {
                        Some(input) => input,
                        None => return wait,
                    }
                }
            };
            self.session.handle_input(self.now, input).unwrap();
        }
    }

    /// The next chunk of the streamed file, when the session wants one.
    fn file_input(&mut self, wait: Wait) -> Option<Input> {
        if !wait.file {
            return None;
        }
        let left = self.file_left.as_mut()?;
        if left.is_empty() {
            self.file_left = None;
            return Some(Input::FileEnd);
        }
        let n = self.file_chunk.min(left.len());
        Some(Input::FileData(left.split_to(n)))
    }

    /// Every response written so far: (status, headers, body), for `Content-Length` bodies.
    pub fn responses(&self) -> Vec<Response> {
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

    pub fn statuses(&self) -> Vec<u16> {
        self.responses().iter().map(|r| r.0).collect()
    }
}
