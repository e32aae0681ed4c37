//! Rate limits shared by the processes of one bot through Redis, sans-IO: what to ask
//! Redis before a request goes and after it is answered, and what its replies mean.
//! The IO runs over the adapter's [`ClientRuntime`](super::runtime::ClientRuntime)
//! connections, like the REST transport's ([`RoundTrip`]).
//!
//! # Keys (under the key prefix `P`)
//! - `P:g`: the global limit's slots, a sorted set of slot id → release time (ms,
//!   Redis server time); `P:gh`: set while a global 429 holds every request.
//! - `P:r:{route}`: the bucket hash of a route (`""`: no bucket), kept an hour.
//! - `P:l:{route}:{major}`: the lease of the one request learning a route's bucket
//!   (`SET NX PX`, freed by its answer or after `in_flight_timeout`).
//! - `P:bs:{hash}:{major}`: a bucket's slots; `P:bm:{hash}:{major}`: its limit,
//!   window, whether the limit is confirmed, and until when it is held.
//!
//! # The rules
//! The local limiter's ([`ratelimit`](super::ratelimit)), each decision one Lua script
//! run atomically on Redis's clock: acquiring drops released slots, then adds one
//! (`f<id>`, released at `now + in_flight_timeout`) when fewer than the limit are used,
//! else answers how long to wait (until the earliest release, or a short poll while
//! that slot is still in flight). The answer re-stamps it (`a<id>`) to
//! `answer + max(reset_after, W) + 5 ms`, a global slot to `answer + 1 s + 20 ms`;
//! `Remaining: 0` and 429s hold the bucket (or the global limit); a request never sent
//! removes its slots. Routes exempt from the global limit (interaction and webhook
//! tokens) are limited locally only.
//!
//! # Failures
//! A round trip that fails or passes its deadline makes the client use its local limits
//! alone for a while (one warning). Its command may still have run: a report is kept,
//! and a lost acquire becomes a cancel of the slot it may have been granted; both go
//! (as `EVAL`, the server may be a new one) before the next command once Redis answers.

mod round_trip;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use redis::{Script, Value};
pub(crate) use round_trip::{Failure, Finished, RoundTrip};

use super::config::RestConfig;
use super::ratelimit::{RateLimitHeaders, WaitReason, WaitUntil, later};
use super::route::{Major, RateLimitKey};
use super::shared_limits::RedisAddress;

const ACQUIRE: &str = include_str!("acquire.lua");
const REPORT: &str = include_str!("report.lua");

/// How often a request waiting on an unanswered one elsewhere asks again.
const POLL: Duration = Duration::from_millis(25);

/// How long learned facts (route → bucket, limits) are kept without use.
const FACTS_TTL: Duration = Duration::from_secs(3600);

/// Idle Redis connections kept.
pub(crate) const MAX_IDLE: usize = 8;

/// The shared limits of one client: where Redis is, the key space and the scripts.
#[derive(Debug)]
pub(crate) struct SharedLimiter {
    address: RedisAddress,
    prefix: String,
    timeout: Duration,
    retry: Duration,
    global_limit: u32,
    in_flight_ms: u64,
    acquire: Script,
    report: Script,
    process: u64,
    next: AtomicU64,
}

impl std::fmt::Debug for RedisAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// A slot granted by Redis, handed back with [`SharedLimiter::report`].
#[derive(Debug, Clone)]
pub(crate) struct Ticket {
    id: String,
    route: String,
    major: String,
    /// The bucket it holds a slot of (`""`: none).
    hash: String,
    global: bool,
}

/// A ticket being asked for: Redis grants it or says how long to wait.
#[derive(Debug)]
pub(crate) enum Grant {
    /// The request may go.
    Granted(Ticket),
    /// Not before this.
    Wait(WaitUntil),
}

/// How a request with a ticket ended.
pub(crate) enum Outcome<'a> {
    /// Answered with this status, headers and body.
    Answered(StatusCode, &'a HeaderMap, &'a [u8]),
    /// It may have reached Discord, but no answer came.
    Lost,
    /// It never left.
    Cancelled,
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn major_key(major: Major) -> String {
    match major {
        Major::None => "-".to_owned(),
        Major::Id(id) => id.to_string(),
        Major::IdToken(id, digest) => format!("{id}.{digest:x}"),
    }
}

impl SharedLimiter {
    /// The shared limits `config` asks for, if any.
    pub(crate) fn new(config: &RestConfig) -> Option<Self> {
        let limits = config.shared_limits()?;
        let address = limits.address().ok()?;
        let mut random = [0_u8; 8];
        let process = match getrandom::fill(&mut random) {
            Ok(()) => u64::from_le_bytes(random),
            Err(_) => u64::from(std::process::id()),
        };
        Some(Self {
            address,
            prefix: limits.prefix().unwrap_or("yuyo").to_owned(),
            timeout: limits.round_trip_timeout(),
            retry: limits.retry_delay(),
            global_limit: config.global_limit().map_or(0, std::num::NonZeroU32::get),
            in_flight_ms: millis(config.in_flight_timeout()).max(1),
            acquire: Script::new(ACQUIRE),
            report: Script::new(REPORT),
            process,
            next: AtomicU64::new(0),
        })
    }

    /// Whether requests for `key` are limited through Redis (not the exempt routes).
    pub(crate) fn applies(key: &RateLimitKey) -> bool {
        key.global && !matches!(key.major, Major::IdToken(..))
    }

    /// The key prefix (named in the warning when Redis fails).
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// How long Redis is left alone after a failure.
    pub(crate) fn retry_delay(&self) -> Duration {
        self.retry
    }

    /// A round trip starting at `now` on `stream` (or a new connection): `backlog`,
    /// then `command`.
    pub(crate) fn round_trip<S>(
        &self,
        stream: Option<S>,
        backlog: Vec<Bytes>,
        (command, fallback): (Vec<u8>, Vec<u8>),
        now: Instant,
    ) -> RoundTrip<S> {
        let deadline = later(now, self.timeout);
        let command = (command, Some(fallback));
        RoundTrip::new(&self.address, stream, backlog, command, deadline)
    }

    fn keys(&self, route: &str, major: &str) -> [String; 4] {
        let p = &self.prefix;
        [
            format!("{p}:g"),
            format!("{p}:gh"),
            format!("{p}:r:{route}"),
            format!("{p}:l:{route}:{major}"),
        ]
    }

    /// `EVALSHA` of `script` and the `EVAL` to send when the server lacks it.
    fn invoke(
        script: &Script,
        source: &str,
        keys: &[String],
        args: &[String],
    ) -> (Vec<u8>, Vec<u8>) {
        let build = |name: &str, body: &str| {
            let mut cmd = redis::cmd(name);
            cmd.arg(body).arg(keys.len()).arg(keys).arg(args);
            cmd.get_packed_command()
        };
        (build("EVALSHA", script.get_hash()), build("EVAL", source))
    }

    /// The ticket asked for a request for `key`, and the command asking for it.
    pub(crate) fn acquire(&self, key: &RateLimitKey) -> (Ticket, (Vec<u8>, Vec<u8>)) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let ticket = Ticket {
            id: format!("{:016x}.{n:x}", self.process),
            route: key.route.to_string(),
            major: major_key(key.major),
            hash: String::new(),
            global: self.global_limit > 0,
        };
        let keys = self.keys(&ticket.route, &ticket.major);
        let args = [
            self.prefix.clone(),
            ticket.major.clone(),
            ticket.id.clone(),
            if ticket.global { self.global_limit } else { 0 }.to_string(),
            self.in_flight_ms.to_string(),
            millis(POLL).to_string(),
        ];
        let command = Self::invoke(&self.acquire, ACQUIRE, &keys, &args);
        (ticket, command)
    }

    /// What Redis answered to [`SharedLimiter::acquire`] at `now`.
    ///
    /// # Errors
    /// A reply the script cannot have given.
    pub(crate) fn granted(ticket: &Ticket, reply: &Value, now: Instant) -> Result<Grant, Failure> {
        let bad = || Failure(format!("unexpected reply to the acquire script: {reply:?}"));
        let Value::Array(items) = reply else {
            return Err(bad());
        };
        let text = |item: Option<&Value>| match item {
            Some(Value::BulkString(bytes)) => String::from_utf8(bytes.clone()).ok(),
            Some(Value::SimpleString(text)) => Some(text.clone()),
            _ => None,
        };
        match (items.first(), items.get(1)) {
            (Some(Value::Int(1)), _) => Ok(Grant::Granted(Ticket {
                hash: text(items.get(3)).unwrap_or_default(),
                ..ticket.clone()
            })),
            (Some(Value::Int(0)), Some(Value::Int(wait))) => {
                let wait = Duration::from_millis(u64::try_from(*wait).unwrap_or(1).max(1));
                let reason = match text(items.get(2)).as_deref() {
                    Some("global") => WaitReason::Global,
                    Some("bucket") => WaitReason::Bucket,
                    _ => WaitReason::Pending,
                };
                Ok(Grant::Wait(WaitUntil {
                    until: later(now, wait),
                    reason,
                }))
            }
            _ => Err(bad()),
        }
    }

    /// The command handing `ticket` back after `outcome`.
    pub(crate) fn report(&self, ticket: &Ticket, outcome: &Outcome<'_>) -> (Vec<u8>, Vec<u8>) {
        let keys = self.keys(&ticket.route, &ticket.major);
        let absent = || "-1".to_owned();
        let ms =
            |duration: Option<Duration>| duration.map_or_else(absent, |d| millis(d).to_string());
        let flag = |on: bool| if on { "1" } else { "0" }.to_owned();
        let (name, facts) = match outcome {
            Outcome::Answered(status, headers, body) => {
                ("answered", answer_facts(*status, headers, body))
            }
            Outcome::Lost => (
                "lost",
                AnswerFacts {
                    counted: true,
                    ..AnswerFacts::default()
                },
            ),
            Outcome::Cancelled => ("cancelled", AnswerFacts::default()),
        };
        let args = [
            self.prefix.clone(),
            ticket.major.clone(),
            ticket.id.clone(),
            ticket.hash.clone(),
            flag(ticket.global),
            name.to_owned(),
            facts.headers.bucket.clone().unwrap_or_default(),
            facts.headers.limit.map_or_else(absent, |n| n.to_string()),
            facts
                .headers
                .remaining
                .map_or_else(absent, |n| n.to_string()),
            ms(facts.headers.reset_after),
            flag(facts.counted),
            ms(facts.hold_bucket),
            ms(facts.hold_global),
            flag(facts.unlimited),
            millis(FACTS_TTL).to_string(),
        ];
        Self::invoke(&self.report, REPORT, &keys, &args)
    }
}

/// What an answer tells Redis.
#[derive(Default)]
struct AnswerFacts {
    headers: RateLimitHeaders,
    counted: bool,
    unlimited: bool,
    hold_bucket: Option<Duration>,
    hold_global: Option<Duration>,
}

fn answer_facts(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> AnswerFacts {
    let headers = RateLimitHeaders::parse(headers);
    let limited = headers.limited(status, body);
    let (hold_bucket, hold_global) = match limited {
        Some(limited) if limited.global => (None, Some(limited.retry_after)),
        Some(limited) => (Some(limited.retry_after), None),
        None => (None, None),
    };
    let window = headers.window().is_some();
    AnswerFacts {
        counted: limited.is_none() && (window || !status.is_success()),
        unlimited: status.is_success() && !window,
        hold_bucket,
        hold_global,
        headers: if window || limited.is_some() {
            headers
        } else {
            RateLimitHeaders::default()
        },
    }
}
