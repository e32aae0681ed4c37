//! One exchange with Redis, sans-IO: connect (or reuse an idle connection), log in
//! and select the database on a fresh one, send the backlog (commands an earlier
//! exchange could not confirm), write a command, read its reply (RESP, parsed by the
//! `redis` crate); a script unknown to the server (`NOSCRIPT`) is sent again in full.
//! Every step is bounded by one deadline for the whole exchange.

use std::collections::VecDeque;
use std::fmt;
use std::time::Instant;

use bytes::Bytes;
use redis::{ServerErrorKind, Value};

use crate::rest::shared_limits::RedisAddress;
use crate::rest::transport::{Input, Io};

/// Bytes read at once.
const CHUNK: usize = 4096;

/// The largest reply accepted: the scripts answer a few short values.
const MAX_REPLY: usize = 64 * 1024;

/// Why an exchange failed (for the one warning).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Failure(pub(crate) String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a [`RoundTrip`] ended.
pub(crate) struct Finished<S> {
    /// The command's reply.
    pub(crate) reply: Result<Value, Failure>,
    /// The connection, to keep: it is clean.
    pub(crate) stream: Option<S>,
    /// The backlog, when it may not have been applied: to send again.
    pub(crate) unconfirmed: Vec<Bytes>,
}

enum Phase {
    Connect,
    Write,
    Read,
    Done(Option<Result<Value, Failure>>),
}

/// One command sent and its reply read; see the [module docs](self).
pub(crate) struct RoundTrip<S> {
    host: String,
    port: u16,
    deadline: Instant,
    stream: Option<S>,
    /// What to send, in order: the login on a fresh connection, the backlog, then the
    /// command.
    queue: VecDeque<Bytes>,
    /// Login commands still at the front of `queue` (their replies must be `OK`).
    logins: usize,
    /// Backlog commands after them (their replies are not looked at).
    backlog_left: usize,
    /// The backlog sent, handed back if the exchange fails.
    backlog: Vec<Bytes>,
    /// The command again in full (`EVAL`) for a `NOSCRIPT` answer.
    fallback: Option<Bytes>,
    phase: Phase,
    reply: Vec<u8>,
    buf: Box<[u8]>,
}

impl<S> RoundTrip<S> {
    /// `backlog`, then `command` (with `fallback` for `NOSCRIPT`) on `stream`, or on a
    /// new connection to `address`, before `deadline`.
    pub(crate) fn new(
        address: &RedisAddress,
        stream: Option<S>,
        backlog: Vec<Bytes>,
        (command, fallback): (Vec<u8>, Option<Vec<u8>>),
        deadline: Instant,
    ) -> Self {
        let mut queue = VecDeque::new();
        let phase = if stream.is_some() {
            Phase::Write
        } else {
            queue.extend(login(address));
            Phase::Connect
        };
        let logins = queue.len();
        queue.extend(backlog.iter().cloned());
        queue.push_back(Bytes::from(command));
        Self {
            host: address.host.clone(),
            port: address.port,
            deadline,
            stream,
            queue,
            logins,
            backlog_left: backlog.len(),
            backlog,
            fallback: fallback.map(Bytes::from),
            phase,
            reply: Vec::new(),
            buf: vec![0; CHUNK].into_boxed_slice(),
        }
    }

    /// Fails the exchange if `now` is past its deadline.
    pub(crate) fn expire(&mut self, now: Instant) {
        if now >= self.deadline && !matches!(self.phase, Phase::Done(_)) {
            self.fail("no answer in time");
        }
    }

    /// The IO to perform next; `None` once over.
    pub(crate) fn io(&mut self) -> Option<Io<'_, S>> {
        let deadline = self.deadline;
        match (&self.phase, self.stream.as_mut()) {
            (Phase::Connect, _) => Some(Io::Connect {
                host: &self.host,
                port: self.port,
                deadline,
            }),
            (Phase::Write, Some(stream)) => Some(Io::Write {
                stream,
                bytes: self.queue.front().cloned().unwrap_or_default(),
                deadline,
            }),
            (Phase::Read, Some(stream)) => Some(Io::Read {
                stream,
                buf: &mut self.buf,
                deadline,
            }),
            (Phase::Done(_), _) | (Phase::Write | Phase::Read, None) => None,
        }
    }

    /// The outcome of the IO asked for.
    pub(crate) fn handle_input(&mut self, input: Input<S>) {
        match (&self.phase, input) {
            (Phase::Connect, Input::Connected(stream)) => {
                self.stream = Some(stream);
                self.phase = Phase::Write;
            }
            (Phase::Write, Input::Written) => {
                self.reply.clear();
                self.phase = Phase::Read;
            }
            (Phase::Read, Input::Read(0)) => self.fail("Redis closed the connection"),
            (Phase::Read, Input::Read(n)) => self.on_read(n),
            (_, Input::TimedOut) => self.fail("no answer in time"),
            (_, Input::Failed(error)) => self.fail(&error.to_string()),
            (_, _) => self.fail("unexpected IO outcome"),
        }
    }

    fn on_read(&mut self, n: usize) {
        let Some(bytes) = self.buf.get(..n) else {
            return self.fail("read past the buffer");
        };
        self.reply.extend_from_slice(bytes);
        match redis::parse_redis_value(&self.reply) {
            Ok(value) => self.on_reply(value),
            Err(error) if error.is_io_error() && self.reply.len() <= MAX_REPLY => {}
            Err(error) => self.fail(&format!("unreadable reply: {error}")),
        }
    }

    fn on_reply(&mut self, value: Value) {
        self.queue.pop_front();
        if self.logins == 0 && self.backlog_left > 0 {
            self.backlog_left -= 1;
            if let Value::ServerError(error) = &value {
                tracing::debug!(%error, "Redis refused a backlogged rate-limit report");
            }
            self.phase = Phase::Write;
            return;
        }
        self.logins = self.logins.saturating_sub(1);
        if let Value::ServerError(error) = &value {
            if error.kind() == Some(ServerErrorKind::NoScript)
                && self.queue.is_empty()
                && let Some(fallback) = self.fallback.take()
            {
                self.queue.push_back(fallback);
                self.phase = Phase::Write;
                return;
            }
            return self.fail(&format!("Redis error: {error}"));
        }
        if self.queue.is_empty() {
            self.phase = Phase::Done(Some(Ok(value)));
        } else {
            self.phase = Phase::Write;
        }
    }

    fn fail(&mut self, why: &str) {
        self.stream = None;
        self.phase = Phase::Done(Some(Err(Failure(why.to_owned()))));
    }

    /// How it ended (once, when over).
    pub(crate) fn take_outcome(&mut self) -> Option<Finished<S>> {
        match &mut self.phase {
            Phase::Done(outcome) => outcome.take().map(|reply| match reply {
                Ok(reply) => Finished {
                    reply: Ok(reply),
                    stream: self.stream.take(),
                    unconfirmed: Vec::new(),
                },
                Err(failure) => Finished {
                    reply: Err(failure),
                    stream: None,
                    unconfirmed: std::mem::take(&mut self.backlog),
                },
            }),
            Phase::Connect | Phase::Write | Phase::Read => None,
        }
    }
}

/// `AUTH` and `SELECT` for a fresh connection, as `address` needs.
fn login(address: &RedisAddress) -> Vec<Bytes> {
    let mut commands = Vec::new();
    if let Some(password) = &address.password {
        let mut auth = redis::cmd("AUTH");
        if let Some(user) = &address.user {
            auth.arg(user);
        }
        commands.push(Bytes::from(auth.arg(password).get_packed_command()));
    }
    if address.db != 0 {
        let select = redis::cmd("SELECT").arg(address.db).get_packed_command();
        commands.push(Bytes::from(select));
    }
    commands
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io;
    use std::time::Duration;

    use super::*;

    /// A fake connection: the test plays Redis.
    #[derive(Debug, PartialEq)]
    struct Fake;

    fn address(url: &str) -> RedisAddress {
        RedisAddress::parse(url).unwrap()
    }

    /// Runs `trip`, answering each read with the next of `replies` (split in two
    /// reads to exercise partial replies); returns what was written.
    fn play(trip: &mut RoundTrip<Fake>, replies: &[&[u8]], now: Instant) -> Vec<Vec<u8>> {
        let mut written = Vec::new();
        let mut replies = replies.iter();
        let mut half: Option<&[u8]> = None;
        trip.expire(now);
        while let Some(io) = trip.io() {
            let input = match io {
                Io::Connect { .. } => Input::Connected(Fake),
                Io::Write { bytes, .. } => {
                    written.push(bytes.to_vec());
                    Input::Written
                }
                Io::Read { buf, .. } => {
                    let chunk = match half.take() {
                        Some(rest) => rest,
                        None => {
                            let reply = replies.next().copied().unwrap_or_default();
                            let (first, rest) = reply.split_at(reply.len() / 2);
                            half = (!rest.is_empty()).then_some(rest);
                            first
                        }
                    };
                    buf[..chunk.len()].copy_from_slice(chunk);
                    Input::Read(chunk.len())
                }
                _ => Input::Failed(io::Error::other("unexpected")),
            };
            trip.handle_input(input);
        }
        written
    }

    #[test]
    fn a_fresh_connection_logs_in_and_selects_the_database() {
        let now = Instant::now();
        let command = redis::cmd("PING").get_packed_command();
        let mut trip = RoundTrip::new(
            &address("redis://u:pw@h:1/2"),
            None,
            vec![Bytes::from_static(b"OLD")],
            (command.clone(), None),
            now + Duration::from_secs(1),
        );
        let replies: [&[u8]; 4] = [b"+OK\r\n", b"+OK\r\n", b"-ERR old\r\n", b"+PONG\r\n"];
        let written = play(&mut trip, &replies, now);
        assert_eq!(written.len(), 4);
        assert!(written[0].starts_with(b"*3\r\n$4\r\nAUTH\r\n$1\r\nu\r\n$2\r\npw"));
        assert!(written[1].starts_with(b"*2\r\n$6\r\nSELECT"));
        assert_eq!(written[2], b"OLD");
        assert_eq!(written[3], command);
        let finished = trip.take_outcome().unwrap();
        assert_eq!(finished.reply.unwrap(), Value::SimpleString("PONG".into()));
        assert_eq!(finished.stream, Some(Fake));
        assert!(finished.unconfirmed.is_empty());
    }

    #[test]
    fn noscript_sends_the_script_in_full() {
        let now = Instant::now();
        let mut trip = RoundTrip::new(
            &address("redis://h"),
            Some(Fake),
            Vec::new(),
            (b"EVALSHA".to_vec(), Some(b"EVAL".to_vec())),
            now + Duration::from_secs(1),
        );
        let written = play(
            &mut trip,
            &[b"-NOSCRIPT No matching script.\r\n", b"*2\r\n:1\r\n:0\r\n"],
            now,
        );
        assert_eq!(written, vec![b"EVALSHA".to_vec(), b"EVAL".to_vec()]);
        assert_eq!(
            trip.take_outcome().unwrap().reply.unwrap(),
            Value::Array(vec![Value::Int(1), Value::Int(0)])
        );
    }

    #[test]
    fn errors_closed_connections_and_deadlines_fail_without_keeping_the_connection() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(1);
        let redis = address("redis://h");
        let x = || (b"X".to_vec(), None);
        let old = || vec![Bytes::from_static(b"OLD")];
        let mut trip = RoundTrip::new(&redis, Some(Fake), old(), x(), deadline);
        play(&mut trip, &[b":1\r\n", b"-ERR wrong\r\n"], now);
        let finished = trip.take_outcome().unwrap();
        assert!(finished.reply.unwrap_err().0.contains("wrong"));
        assert!(finished.stream.is_none());
        assert_eq!(finished.unconfirmed, old());

        let mut trip = RoundTrip::new(&redis, Some(Fake), Vec::new(), x(), deadline);
        play(&mut trip, &[b""], now);
        assert!(trip.take_outcome().unwrap().reply.is_err());

        let mut trip = RoundTrip::<Fake>::new(&redis, None, Vec::new(), x(), deadline);
        assert!(matches!(trip.io(), Some(Io::Connect { port: 6379, .. })));
        trip.expire(deadline);
        assert!(trip.io().is_none());
        assert!(trip.take_outcome().unwrap().reply.is_err());

        let mut trip = RoundTrip::new(&redis, Some(Fake), Vec::new(), x(), deadline);
        assert!(matches!(trip.io(), Some(Io::Write { .. })));
        trip.handle_input(Input::Written);
        trip.handle_input(Input::TimedOut);
        assert!(trip.take_outcome().unwrap().reply.is_err());
        assert!(trip.take_outcome().is_none());
    }
}
