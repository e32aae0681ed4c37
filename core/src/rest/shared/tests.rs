//! [`ClientCall`]s with shared limits, against a fake Redis and a fake Discord on a
//! fake clock: a slot granted and handed back, a wait Redis orders, and Redis refused
//! or silent (the call goes under the local limits, Redis is left alone for a while,
//! then the slot it may have granted is cancelled).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;

use crate::rest::client::{Client, ClientCall, Input, Output, PooledStream};
use crate::rest::transport::{HttpSettings, Input as IoInput, Io};
use crate::rest::{NoContent, RequestBody, RestConfig, RestRequest, Route, SharedLimits};

const REDIS_PORT: u16 = 6390;

#[derive(Debug, PartialEq)]
enum Conn {
    Redis,
    Rest,
}

impl PooledStream for Conn {
    fn is_reusable(&self) -> bool {
        true
    }
}

/// What the fake Redis does next.
enum Redis {
    Reply(&'static [u8]),
    Refuse,
    Silent,
}

#[derive(Default)]
struct Net {
    redis: VecDeque<Redis>,
    redis_connects: u32,
    redis_commands: Vec<String>,
    rest_requests: u32,
    deadlines: Vec<Instant>,
}

impl Net {
    fn perform(&mut self, io: Io<'_, Conn>) -> IoInput<Conn> {
        match io {
            Io::Connect {
                port: REDIS_PORT,
                deadline,
                ..
            } => {
                self.redis_connects += 1;
                self.deadlines.push(deadline);
                match self.redis.front() {
                    Some(Redis::Refuse) => {
                        self.redis.pop_front();
                        IoInput::Failed(io::ErrorKind::ConnectionRefused.into())
                    }
                    Some(Redis::Silent) => {
                        self.redis.pop_front();
                        IoInput::TimedOut
                    }
                    _ => IoInput::Connected(Conn::Redis),
                }
            }
            Io::Connect { .. } => IoInput::Connected(Conn::Rest),
            Io::Write { stream, bytes, .. } => {
                match stream {
                    Conn::Redis => self
                        .redis_commands
                        .push(String::from_utf8_lossy(&bytes).into_owned()),
                    Conn::Rest => self.rest_requests += 1,
                }
                IoInput::Written
            }
            Io::Read { stream, buf, .. } => {
                let reply: &[u8] = match stream {
                    Conn::Rest => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}",
                    Conn::Redis => match self.redis.pop_front() {
                        Some(Redis::Reply(reply)) => reply,
                        _ => return IoInput::TimedOut,
                    },
                };
                buf[..reply.len()].copy_from_slice(reply);
                IoInput::Read(reply.len())
            }
            Io::OpenFile { .. } | Io::ReadFile { .. } => IoInput::Failed(io::Error::other("no")),
        }
    }
}

/// Where a call stopped.
#[derive(Debug, PartialEq)]
enum Seen {
    Sleep(Instant),
    Done(bool),
}

fn drive(call: &mut ClientCall<NoContent, Conn>, net: &mut Net, now: Instant) -> Seen {
    loop {
        match call.poll_output(now) {
            Output::Io(io) => {
                let input = net.perform(io);
                call.handle_input(now, Input::Io(input));
            }
            Output::Notify(_) => {}
            Output::Sleep { until, .. } => return Seen::Sleep(until),
            Output::Done(result) => return Seen::Done(result.is_ok()),
        }
    }
}

fn client() -> Arc<Client<Conn>> {
    let limits = SharedLimits::redis(format!("redis://127.0.0.1:{REDIS_PORT}"));
    let config = RestConfig::builder()
        .token("tok")
        .rest_url("http://127.0.0.1:9/api/v10")
        .shared_limits(limits.key_prefix("p"))
        .build()
        .unwrap();
    Arc::new(Client::new(config, HttpSettings::default(), None).unwrap())
}

fn get(path: &str) -> RestRequest<NoContent> {
    RestRequest::new(
        Route::custom(Method::GET, path).unwrap(),
        RequestBody::Empty,
    )
}

#[test]
fn a_granted_slot_is_sent_and_handed_back_with_the_answer() {
    let client = client();
    let mut net = Net {
        redis: VecDeque::from([
            Redis::Reply(b"*4\r\n:1\r\n:0\r\n$6\r\nbucket\r\n$2\r\nb1\r\n"),
            Redis::Reply(b":1\r\n"),
        ]),
        ..Net::default()
    };
    let now = Instant::now();
    let mut call = client.call(get("/channels/1/messages"));
    assert_eq!(drive(&mut call, &mut net, now), Seen::Done(true));
    assert_eq!(net.rest_requests, 1);
    assert_eq!(net.redis_connects, 1, "the connection is kept");
    let [acquire, report] = &net.redis_commands[..] else {
        panic!("{:?}", net.redis_commands);
    };
    assert!(
        acquire.contains("EVALSHA") && acquire.contains("p:r:GET /channels/{channel_id}/messages")
    );
    assert!(report.contains("answered") && report.contains("\r\nb1\r\n"));
    assert!(net.deadlines[0] <= now + Duration::from_millis(250));
}

#[test]
fn a_wait_from_redis_sends_nothing_and_frees_the_local_permit() {
    let client = client();
    let mut net = Net {
        redis: VecDeque::from([Redis::Reply(b"*3\r\n:0\r\n:700\r\n$6\r\nglobal\r\n")]),
        ..Net::default()
    };
    let now = Instant::now();
    let mut call = client.call(get("/channels/1/messages"));
    assert_eq!(
        drive(&mut call, &mut net, now),
        Seen::Sleep(now + Duration::from_millis(700))
    );
    assert_eq!(net.rest_requests, 0);
    assert_eq!(client.with_limiter(|limiter| limiter.in_flight()), 0);
}

#[test]
fn exempt_routes_do_not_ask_redis() {
    let client = client();
    let mut net = Net::default();
    let mut call = client.call(get("/webhooks/1/token/messages/@original"));
    assert_eq!(drive(&mut call, &mut net, Instant::now()), Seen::Done(true));
    assert_eq!((net.redis_connects, net.rest_requests), (0, 1));
}

#[test]
fn redis_refused_or_silent_lets_the_call_go_and_is_left_alone_until_the_retry() {
    for failure in [Redis::Refuse, Redis::Silent, Redis::Reply(b"-ERR nope\r\n")] {
        let client = client();
        let mut net = Net {
            redis: VecDeque::from([failure]),
            ..Net::default()
        };
        let now = Instant::now();
        let mut call = client.call(get("/channels/1/messages"));
        assert_eq!(drive(&mut call, &mut net, now), Seen::Done(true));
        assert_eq!((net.redis_connects, net.rest_requests), (1, 1));

        let later = now + Duration::from_secs(1);
        let mut call = client.call(get("/channels/2/messages"));
        assert_eq!(drive(&mut call, &mut net, later), Seen::Done(true));
        assert_eq!(
            (net.redis_connects, net.rest_requests),
            (1, 2),
            "Redis left alone"
        );

        net.redis.extend([
            Redis::Reply(b":1\r\n"),
            Redis::Reply(b"*4\r\n:1\r\n:0\r\n$9\r\nunlimited\r\n$0\r\n\r\n"),
            Redis::Reply(b":1\r\n"),
        ]);
        let retry = now + Duration::from_secs(6);
        let mut call = client.call(get("/channels/3/messages"));
        assert_eq!(drive(&mut call, &mut net, retry), Seen::Done(true));
        assert_eq!(
            (net.redis_connects, net.rest_requests),
            (2, 3),
            "Redis asked again"
        );
        // The slot of the lost acquire is cancelled first, in full (the server may be new).
        let sent = &net.redis_commands[net.redis_commands.len() - 3..];
        assert!(sent[0].contains("\r\nEVAL\r\n") && sent[0].contains("cancelled"));
        assert!(sent[1].contains("EVALSHA") && sent[2].contains("answered"));
    }
}
