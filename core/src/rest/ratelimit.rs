//! Discord's rate limits, sans-IO: per-route buckets learned from response
//! headers, the global limit, and 429s.
//!
//! # What Discord counts
//! Discord counts a request when it *arrives*, and a limit of `N` per window
//! `W` allows a request while fewer than `N` it accepted arrived in the last
//! `W` (a sliding window); some buckets use fixed windows instead (the first
//! request opens a window of `W`, all of it resets at its end). The client
//! never sees arrival times, only that a request sent at `s` and answered at
//! `r` arrived somewhere in `[s, r]`. Every rule below holds a request's
//! slot from `s` until a time that is *later than Discord can still count
//! it*, whatever the latency, so no arrival order makes `N + 1` land in one
//! window; and it frees the slot as soon as that is certain, so a sliding
//! bucket of 2 per second really sends 2 per second.
//!
//! # The rules
//! - **Buckets.** Discord names each per-route limit with `X-RateLimit-Bucket`
//!   (a hash shared by routes with the same limit) and counts it separately
//!   for each top-level resource ([`Major`]). The limiter keys its state by
//!   `(hash, major)` and learns which hash a route uses from its first answer.
//! - **Slots.** A bucket of limit `N` (`X-RateLimit-Limit`) lets a request go
//!   while fewer than `N` of its slots are used. A request uses one from the
//!   moment it is sent; once answered at `r` with `X-RateLimit-Reset-After`
//!   `d`, until `r + max(d, W) + 5 ms`, where `W` is the bucket's window: the
//!   longest `Reset-After` it ever answered (a request alone in a sliding
//!   window is told `W`). This is safe for both kinds of window: a sliding
//!   window frees the slot at arrival `+ W ≤ r + W`; a fixed window frees it
//!   at its end, which the answer says is `d` after it was written `≤ r + d`.
//!   The 5 ms cover `Reset-After`'s millisecond rounding and the time Discord
//!   takes between counting a request and writing its answer. Until a
//!   bucket's limit is known (a new resource) one request goes at a time.
//! - **What Discord says wins.** `X-RateLimit-Remaining: 0` holds the whole
//!   bucket until `r + d` (something frees by then, in either kind of
//!   window); slots Discord counts beyond ours (another process of the bot)
//!   stay used until `r + d`. Processes that share the bot's limits through
//!   Redis ([`SharedLimits`](super::SharedLimits)) also apply these rules there,
//!   together.
//! - **Unknown routes.** A route whose bucket is unknown sends one request at
//!   a time until an answer names its bucket; buckets of other routes never
//!   delay it (it may turn out to share none of them). Its answer then
//!   counts it in the bucket it names, with the slot rule above. The price:
//!   if it does share an exhausted bucket, that one request may be refused
//!   with a 429, once per route.
//! - **Failures.** A request that never left ([`RateLimiter::cancel`], e.g.
//!   connection refused) frees its slots at once. One that may have reached
//!   Discord ([`RateLimiter::release`], or unanswered after
//!   `in_flight_timeout`) keeps them for `W` (and one second of the global
//!   limit) from then.
//! - **Global limit.** At most `global_limit` (default 50) authenticated,
//!   non-interaction requests in any one-second span, counted as Discord
//!   does, by arrival: a request holds a global slot from sending until one
//!   second (plus 20 ms of margin) after its answer, which is always after
//!   its arrival. Stamping the send time instead lets latency jitter bring
//!   `N + 1` arrivals into one second. The cost is one round trip per second
//!   of throughput. A global 429 (`X-RateLimit-Global`,
//!   `X-RateLimit-Scope: global` or `"global": true`) holds them all for
//!   `retry_after`. Interaction and webhook-token routes are exempt.
//! - **429.** `retry_after` from the JSON body (precise), else the
//!   `Retry-After` header, else `Reset-After`; a route 429 (`user` or
//!   `shared` scope) holds the bucket that long.
//! - **Upstream durations are bounded.** Every duration read from an answer
//!   is clamped to [`MAX_UPSTREAM_WAIT`]: negative values count as zero,
//!   `NaN` and unreadable ones as absent, huge and infinite ones as the
//!   maximum; instants are computed with checked arithmetic. Nothing an
//!   answer holds can panic the limiter or make a wait unbounded; a wait
//!   longer than the call's `max_rate_limit` fails it with
//!   [`RestError::RateLimitTooLong`](super::RestError::RateLimitTooLong).
//! - **Liveness.** A request that is never answered (a driver that dropped
//!   its call without [`RateLimiter::release`]) stops holding others back
//!   after `in_flight_timeout`.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, StatusCode};

use super::config::RestConfig;
use super::route::{Major, RateLimitKey, RouteKey};

const ONE_SECOND: Duration = Duration::from_secs(1);

/// Acquires between sweeps of finished buckets.
const SWEEP_EVERY: u64 = 512;

/// Wait used for a 429 that says nothing about how long.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The longest wait an answer can impose: longer values (`1e19`, `inf`) are
/// read as this. Longer than any limit Discord documents, short enough that
/// a limiter told garbage recovers within the hour.
pub const MAX_UPSTREAM_WAIT: Duration = Duration::from_secs(3600);

/// Added to a bucket slot's release time (see the module docs).
const BUCKET_MARGIN: Duration = Duration::from_millis(5);

/// Added to a global slot's release time (see the module docs).
const GLOBAL_MARGIN: Duration = Duration::from_millis(20);

/// `now + wait` without overflow: saturates at `now + MAX_UPSTREAM_WAIT`
/// (and at `now` where even that overflows, which no real clock reaches).
#[must_use]
pub(crate) fn later(now: Instant, wait: Duration) -> Instant {
    now.checked_add(wait)
        .or_else(|| now.checked_add(MAX_UPSTREAM_WAIT))
        .unwrap_or(now)
}

/// An upstream duration in seconds, clamped to `[0, MAX_UPSTREAM_WAIT]`;
/// `None` for `NaN`.
fn clamp_seconds(secs: f64) -> Option<Duration> {
    if secs.is_nan() {
        None
    } else if secs <= 0.0 {
        Some(Duration::ZERO)
    } else {
        Some(
            Duration::try_from_secs_f64(secs)
                .map_or(MAX_UPSTREAM_WAIT, |d| d.min(MAX_UPSTREAM_WAIT)),
        )
    }
}

/// Which limit a 429 came from (`X-RateLimit-Scope`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The bot's own per-route limit.
    User,
    /// The bot's global limit.
    Global,
    /// A limit on the resource shared by everyone (not counted against the
    /// bot's invalid-request limit).
    Shared,
}

/// Why a request has to wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WaitReason {
    /// Its route bucket is exhausted or held after a 429.
    Bucket,
    /// The global limit is reached or held after a global 429.
    Global,
    /// Another request's answer is needed first (it is learning the bucket).
    /// Poll again when [`RateLimiter::version`] changes, or at the deadline.
    Pending,
    /// A call backing off before retrying after a 5xx or transport failure.
    Retry,
    /// A call waiting out a 429's `retry_after` before sending again.
    RetryAfter,
}

/// When to ask again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitUntil {
    /// Ask again at this instant.
    pub until: Instant,
    /// Why.
    pub reason: WaitReason,
}

impl WaitUntil {
    /// Whether the wait may end early: poll again as soon as another request
    /// is answered ([`RateLimiter::version`] changes), not only at `until`.
    #[must_use]
    pub fn wakes_on_update(&self) -> bool {
        matches!(self.reason, WaitReason::Pending)
    }
}

/// Leave to send one request. Hand it back with [`RateLimiter::update`] (an
/// answer came) or [`RateLimiter::release`] (none will).
#[must_use = "a permit must be handed back with update or release"]
#[derive(Debug, PartialEq, Eq)]
pub struct Permit {
    id: u64,
}

/// What a 429 asked for; returned by [`RateLimiter::update`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimited {
    /// How long to wait before sending again (at most [`MAX_UPSTREAM_WAIT`]).
    pub retry_after: Duration,
    /// Whether it was the global limit.
    pub global: bool,
    /// `X-RateLimit-Scope`, if sent.
    pub scope: Option<Scope>,
}

/// The rate-limit facts of one answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RateLimitHeaders {
    /// `X-RateLimit-Bucket`.
    pub bucket: Option<String>,
    /// `X-RateLimit-Limit`.
    pub limit: Option<u32>,
    /// `X-RateLimit-Remaining`.
    pub remaining: Option<u32>,
    /// `X-RateLimit-Reset-After`, clamped to [`MAX_UPSTREAM_WAIT`].
    pub reset_after: Option<Duration>,
    /// `X-RateLimit-Global: true`.
    pub global: bool,
    /// `X-RateLimit-Scope`.
    pub scope: Option<Scope>,
    /// `Retry-After`, clamped to [`MAX_UPSTREAM_WAIT`].
    pub retry_after: Option<Duration>,
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
}

fn seconds(text: &str) -> Option<Duration> {
    text.parse::<f64>().ok().and_then(clamp_seconds)
}

impl RateLimitHeaders {
    /// Read the rate-limit headers; unreadable values count as absent.
    #[must_use]
    pub fn parse(headers: &HeaderMap) -> Self {
        Self {
            bucket: header_str(headers, "x-ratelimit-bucket")
                .filter(|hash| !hash.is_empty())
                .map(str::to_owned),
            limit: header_str(headers, "x-ratelimit-limit").and_then(|v| v.parse().ok()),
            remaining: header_str(headers, "x-ratelimit-remaining").and_then(|v| v.parse().ok()),
            reset_after: header_str(headers, "x-ratelimit-reset-after").and_then(seconds),
            global: header_str(headers, "x-ratelimit-global")
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
            scope: header_str(headers, "x-ratelimit-scope").and_then(|v| {
                match v.to_ascii_lowercase().as_str() {
                    "user" => Some(Scope::User),
                    "global" => Some(Scope::Global),
                    "shared" => Some(Scope::Shared),
                    _ => None,
                }
            }),
            retry_after: header_str(headers, "retry-after").and_then(seconds),
        }
    }

    /// What a 429 answer with these headers and `body` asks for; `None` for any
    /// other status.
    pub(crate) fn limited(&self, status: StatusCode, body: &[u8]) -> Option<RateLimited> {
        (status == StatusCode::TOO_MANY_REQUESTS).then(|| {
            let body = RateLimitBody::parse(body);
            RateLimited {
                retry_after: body
                    .retry_after
                    .or(self.retry_after)
                    .or(self.reset_after)
                    .unwrap_or(DEFAULT_RETRY_AFTER),
                global: self.global || self.scope == Some(Scope::Global) || body.global,
                scope: self.scope,
            }
        })
    }

    /// The bucket facts, when all three needed are there.
    pub(crate) fn window(&self) -> Option<(&str, u32, Duration)> {
        match (&self.bucket, self.remaining, self.reset_after) {
            (Some(bucket), Some(remaining), Some(reset_after)) => {
                Some((bucket, remaining, reset_after))
            }
            _ => None,
        }
    }
}

/// What the JSON body of a 429 says, each field read on its own (a field of
/// the wrong type is absent, not an error for the whole body).
struct RateLimitBody {
    retry_after: Option<Duration>,
    global: bool,
}

impl RateLimitBody {
    fn parse(body: &[u8]) -> Self {
        let value: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        let field = |name: &str| value.as_ref().and_then(|value| value.get(name));
        Self {
            retry_after: field("retry_after")
                .and_then(serde_json::Value::as_f64)
                .and_then(clamp_seconds),
            global: field("global").and_then(serde_json::Value::as_bool) == Some(true),
        }
    }
}

/// What a route's answers said about its bucket.
#[derive(Clone, Debug)]
enum RouteBucket {
    /// Answers carry this bucket hash.
    Known(Arc<str>),
    /// Answers carry no rate-limit headers: only the global limit applies.
    Unlimited,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct BucketKey {
    hash: Arc<str>,
    major: Major,
}

impl fmt::Debug for BucketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{:?}", self.hash, self.major)
    }
}

/// The bucket facts of one answer.
struct Facts {
    /// Whether Discord counted the request (not a 429).
    counted: bool,
    limit: Option<u32>,
    remaining: u32,
    reset_after: Duration,
}

/// One bucket for one top-level resource: its slots (module docs).
#[derive(Debug, Default)]
struct Bucket {
    /// `X-RateLimit-Limit`, last seen; `None` until an answer says.
    limit: Option<u32>,
    /// The window's length, as far as known: the longest
    /// `X-RateLimit-Reset-After` seen (see [`Bucket::learn`]).
    window: Duration,
    /// Whether `window` was read from a request alone in its window
    /// (`Remaining` one less than the limit): until then, one request at a
    /// time.
    confirmed: bool,
    /// Requests sent in it and not answered yet.
    in_flight: u32,
    /// When the slots of answered (or lost) requests free, and when those
    /// were sent.
    holds: Vec<(Instant, Instant)>,
    /// When the latest request whose slot freed was sent.
    freed_sent: Option<Instant>,
    /// Slots Discord counted beyond ours, and until when.
    foreign: Option<(u32, Instant)>,
    /// Held (`Remaining: 0` or a 429) until this instant.
    blocked_until: Option<Instant>,
}

impl Bucket {
    /// Forget what is over at `now`.
    fn purge(&mut self, now: Instant) {
        let mut freed = self.freed_sent;
        self.holds.retain(|(until, sent)| {
            let keep = *until > now;
            if !keep {
                freed = Some(freed.map_or(*sent, |freed| freed.max(*sent)));
            }
            keep
        });
        self.freed_sent = freed;
        self.foreign = self.foreign.filter(|(_, until)| *until > now);
        self.blocked_until = self.blocked_until.filter(|until| *until > now);
    }

    /// Slots in use (call after `purge`).
    fn used(&self) -> u64 {
        let holds = u64::try_from(self.holds.len()).unwrap_or(u64::MAX);
        let foreign = self.foreign.map_or(0, |(count, _)| u64::from(count));
        u64::from(self.in_flight)
            .saturating_add(holds)
            .saturating_add(foreign)
    }

    /// Slots it has: one until the limit and the window are known.
    fn capacity(&self) -> u64 {
        match self.limit {
            Some(limit) if self.confirmed => u64::from(limit.max(1)),
            Some(_) | None => 1,
        }
    }

    /// When a slot frees, if a request may not go at `now`: `Ok(None)` when
    /// only an in-flight answer can tell.
    fn wait(&mut self, now: Instant) -> Result<(), Option<Instant>> {
        self.purge(now);
        if let Some(until) = self.blocked_until {
            return Err(Some(until));
        }
        if self.used() < self.capacity() {
            return Ok(());
        }
        let foreign = self.foreign.map(|(_, until)| until);
        let holds = self.holds.iter().map(|(until, _)| *until);
        Err(holds.chain(foreign).min())
    }

    /// Hold the slot of a request sent at `sent` that may have been
    /// counted, from `now`.
    fn hold(&mut self, now: Instant, reset_after: Duration, sent: Instant) {
        let keep = reset_after.max(self.window).saturating_add(BUCKET_MARGIN);
        self.holds.push((later(now, keep), sent));
    }

    /// Learn from an answer at `now` to a request sent at `sent`, counted
    /// here.
    fn learn(&mut self, facts: &Facts, now: Instant, sent: Instant) {
        self.purge(now);
        let limit = facts
            .limit
            .unwrap_or_else(|| facts.remaining.saturating_add(1))
            .max(1);
        self.limit = Some(limit);
        self.window = self.window.max(facts.reset_after);
        let reset = later(now, facts.reset_after);
        if facts.remaining == 0 {
            self.block(reset);
        }
        if !facts.counted {
            return;
        }
        // Alone in its window: `Reset-After` is the window's length (less
        // the instant between counting and answering, which the margin
        // covers).
        self.confirmed |= facts.remaining.saturating_add(1) >= limit;
        self.hold(now, facts.reset_after, sent);
        let counted = u64::from(limit.saturating_sub(facts.remaining));
        let ours = self
            .used()
            .saturating_sub(self.foreign.map_or(0, |(n, _)| u64::from(n)));
        let beyond = u32::try_from(counted.saturating_sub(ours)).unwrap_or(u32::MAX);
        if beyond > 0 {
            self.foreign = Some((beyond, reset));
            // Absent other processes, Discord still counts a request whose
            // slot we freed: the window is longer than any `Reset-After`
            // seen. The latest one freed was sent at `freed` and counts
            // until `reset` at least: the window is at least that long.
            if let Some(freed) = self.freed_sent {
                self.window = self.window.max(reset.saturating_duration_since(freed));
            }
        }
    }

    /// Held after a 429 until `until`.
    fn block(&mut self, until: Instant) {
        self.blocked_until = Some(self.blocked_until.map_or(until, |held| held.max(until)));
    }

    /// Whether it holds nothing a fresh bucket would not (but its limit).
    fn is_idle(&mut self, now: Instant) -> bool {
        self.purge(now);
        self.in_flight == 0
            && self.holds.is_empty()
            && self.foreign.is_none()
            && self.blocked_until.is_none()
    }
}

/// What an in-flight request was counted as.
#[derive(Debug)]
enum Role {
    /// Its route has no per-route limit.
    Unlimited,
    /// Counted in this bucket.
    Counted(BucketKey),
    /// The one request of a route whose bucket is unknown.
    Discovery,
}

#[derive(Debug)]
struct InFlight {
    route: RouteKey,
    major: Major,
    global: bool,
    role: Role,
    sent_at: Instant,
}

/// How a request ended, for its slots.
#[derive(Clone, Copy)]
enum End {
    /// Never sent: its slots free at once.
    Cancelled,
    /// May have reached Discord, no answer: its slots are kept.
    Lost,
    /// Answered: the answer says the rest.
    Answered,
}

/// What `acquire` decided for the route part.
enum Plan {
    Unlimited,
    Counted(BucketKey),
    Discovery,
}

/// The rate-limit state shared by every call of a client: `&mut self`
/// methods, to be held in the adapter's mutex.
///
/// See the [module docs](self) for the rules.
#[derive(Debug)]
pub struct RateLimiter {
    global_limit: Option<NonZeroU32>,
    /// When the global slots of answered (or lost) requests free.
    global_holds: Vec<Instant>,
    /// Global-limited requests in flight.
    global_in_flight: u32,
    global_blocked_until: Option<Instant>,
    routes: HashMap<RouteKey, RouteBucket>,
    buckets: HashMap<BucketKey, Bucket>,
    /// The request learning each unknown route's bucket, per major.
    discovering: HashMap<(RouteKey, Major), u64>,
    in_flight: HashMap<u64, InFlight>,
    in_flight_timeout: Duration,
    next_id: u64,
    version: u64,
    acquires: u64,
    /// The latest `now` seen, for [`RateLimiter::remaining`].
    clock: Option<Instant>,
}

impl RateLimiter {
    /// A limiter with nothing learned yet.
    #[must_use]
    pub fn new(global_limit: Option<NonZeroU32>, in_flight_timeout: Duration) -> Self {
        Self {
            global_limit,
            global_holds: Vec::new(),
            global_in_flight: 0,
            global_blocked_until: None,
            routes: HashMap::new(),
            buckets: HashMap::new(),
            discovering: HashMap::new(),
            in_flight: HashMap::new(),
            in_flight_timeout,
            next_id: 0,
            version: 0,
            acquires: 0,
            clock: None,
        }
    }

    /// A limiter with the configuration's global limit and in-flight timeout.
    #[must_use]
    pub fn from_config(config: &RestConfig) -> Self {
        Self::new(config.global_limit, config.in_flight_timeout)
    }

    /// Changes each time an answer or failure is handed back: a call waiting
    /// with [`WaitReason::Pending`] should poll again when it does.
    #[must_use]
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The bucket hash learned for `route`, if any.
    #[must_use]
    pub fn learned_bucket(&self, route: &RouteKey) -> Option<&str> {
        match self.routes.get(route) {
            Some(RouteBucket::Known(hash)) => Some(hash),
            Some(RouteBucket::Unlimited) | None => None,
        }
    }

    /// Requests `key`'s bucket would still let go, as of the latest instant
    /// the limiter was given, when its limit is known (`0` while it is held).
    #[must_use]
    pub fn remaining(&self, key: &RateLimitKey) -> Option<u32> {
        let hash = match self.routes.get(&key.route) {
            Some(RouteBucket::Known(hash)) => hash.clone(),
            Some(RouteBucket::Unlimited) | None => return None,
        };
        let bucket = self.buckets.get(&BucketKey {
            hash,
            major: key.major,
        })?;
        let limit = bucket.limit?;
        let now = self.clock?;
        if bucket.blocked_until.is_some_and(|until| until > now) {
            return Some(0);
        }
        let holds = bucket
            .holds
            .iter()
            .filter(|(until, _)| *until > now)
            .count();
        let foreign = bucket
            .foreign
            .filter(|(_, until)| *until > now)
            .map_or(0, |(count, _)| count);
        let used = u32::try_from(holds)
            .unwrap_or(u32::MAX)
            .saturating_add(bucket.in_flight)
            .saturating_add(foreign);
        Some(limit.saturating_sub(used))
    }

    /// Requests sent and not yet handed back.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    fn tick(&mut self, now: Instant) {
        self.clock = Some(self.clock.map_or(now, |clock| clock.max(now)));
    }

    /// Ask to send a request for `key` at `now`.
    ///
    /// # Errors
    /// [`WaitUntil`] when it may not be sent yet: ask again then (or, for
    /// [`WaitReason::Pending`], when [`version`](Self::version) changes).
    pub fn acquire(&mut self, key: &RateLimitKey, now: Instant) -> Result<Permit, WaitUntil> {
        self.tick(now);
        self.expire(now);
        self.acquires += 1;
        if self.acquires.is_multiple_of(SWEEP_EVERY) {
            self.buckets.retain(|_, bucket| !bucket.is_idle(now));
        }
        let global = key.global && self.global_limit.is_some();
        if key.global {
            self.check_global(now)?;
        }
        let plan = self.plan(key, now)?;

        let id = self.next_id;
        self.next_id += 1;
        if global {
            self.global_in_flight = self.global_in_flight.saturating_add(1);
        }
        let role = match plan {
            Plan::Unlimited => Role::Unlimited,
            Plan::Counted(bucket_key) => {
                if let Some(bucket) = self.buckets.get_mut(&bucket_key) {
                    bucket.in_flight = bucket.in_flight.saturating_add(1);
                }
                Role::Counted(bucket_key)
            }
            Plan::Discovery => {
                self.discovering.insert((key.route.clone(), key.major), id);
                Role::Discovery
            }
        };
        tracing::trace!(route = %key.route, major = ?key.major, ?role, "rate limit permit");
        self.in_flight.insert(
            id,
            InFlight {
                route: key.route.clone(),
                major: key.major,
                global,
                role,
                sent_at: now,
            },
        );
        Ok(Permit { id })
    }

    fn check_global(&mut self, now: Instant) -> Result<(), WaitUntil> {
        if let Some(until) = self.global_blocked_until {
            if until > now {
                return Err(WaitUntil {
                    until,
                    reason: WaitReason::Global,
                });
            }
            self.global_blocked_until = None;
        }
        let Some(limit) = self.global_limit else {
            return Ok(());
        };
        self.global_holds.retain(|until| *until > now);
        let used = self.global_holds.len() as u64 + u64::from(self.global_in_flight);
        if used < u64::from(limit.get()) {
            return Ok(());
        }
        match self.global_holds.iter().min() {
            Some(until) => Err(WaitUntil {
                until: *until,
                reason: WaitReason::Global,
            }),
            // Every slot is in flight: the first answer starts a release.
            None => Err(self.pending(|flight| flight.global, now)),
        }
    }

    /// Wait for an answer to the in-flight requests `which` picks (until the
    /// first of them is overdue).
    fn pending(&self, which: impl Fn(&InFlight) -> bool, now: Instant) -> WaitUntil {
        let until = self
            .in_flight
            .values()
            .filter(|flight| which(flight))
            .map(|flight| later(flight.sent_at, self.in_flight_timeout))
            .min()
            .map_or(later(now, self.in_flight_timeout), |until| until.max(now));
        WaitUntil {
            until,
            reason: WaitReason::Pending,
        }
    }

    /// Decide, without committing, how a request for `key` goes.
    fn plan(&mut self, key: &RateLimitKey, now: Instant) -> Result<Plan, WaitUntil> {
        match self.routes.get(&key.route) {
            Some(RouteBucket::Unlimited) => Ok(Plan::Unlimited),
            Some(RouteBucket::Known(hash)) => {
                let bucket_key = BucketKey {
                    hash: hash.clone(),
                    major: key.major,
                };
                let bucket = self.buckets.entry(bucket_key.clone()).or_default();
                match bucket.wait(now) {
                    Ok(()) => Ok(Plan::Counted(bucket_key)),
                    Err(Some(until)) => Err(WaitUntil {
                        until,
                        reason: WaitReason::Bucket,
                    }),
                    Err(None) => Err(self.pending(
                        |flight| matches!(&flight.role, Role::Counted(b) if *b == bucket_key),
                        now,
                    )),
                }
            }
            None => match self.discovering.get(&(key.route.clone(), key.major)) {
                Some(_) => Err(self.pending(
                    |flight| {
                        matches!(flight.role, Role::Discovery)
                            && flight.route == key.route
                            && flight.major == key.major
                    },
                    now,
                )),
                None => Ok(Plan::Discovery),
            },
        }
    }

    /// Hand back requests whose answers are overdue (their calls were dropped).
    fn expire(&mut self, now: Instant) {
        let timeout = self.in_flight_timeout;
        let overdue: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, flight)| {
                flight
                    .sent_at
                    .checked_add(timeout)
                    .is_some_and(|due| due <= now)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in overdue {
            if let Some(flight) = self.in_flight.remove(&id) {
                tracing::debug!(route = %flight.route, "rate limiter: request unanswered, no longer waiting for it");
                self.end(id, &flight, End::Lost, now);
            }
        }
    }

    /// Free or keep what `flight` held, as `end` says; an answered request's
    /// bucket slot is left to [`Self::update`].
    fn end(&mut self, id: u64, flight: &InFlight, end: End, now: Instant) {
        if flight.global {
            self.global_in_flight = self.global_in_flight.saturating_sub(1);
            if !matches!(end, End::Cancelled) {
                let keep = ONE_SECOND.saturating_add(GLOBAL_MARGIN);
                self.global_holds.push(later(now, keep));
            }
        }
        match &flight.role {
            Role::Counted(bucket_key) => {
                if let Some(bucket) = self.buckets.get_mut(bucket_key) {
                    bucket.in_flight = bucket.in_flight.saturating_sub(1);
                    if matches!(end, End::Lost) {
                        bucket.hold(now, Duration::ZERO, flight.sent_at);
                    }
                }
            }
            Role::Discovery => {
                let key = (flight.route.clone(), flight.major);
                if self.discovering.get(&key) == Some(&id) {
                    self.discovering.remove(&key);
                }
            }
            Role::Unlimited => {}
        }
    }

    /// The request of `permit` was never sent (e.g. the connection was
    /// refused): what it held is handed back.
    pub fn cancel(&mut self, permit: Permit, now: Instant) {
        self.tick(now);
        if let Some(flight) = self.in_flight.remove(&permit.id) {
            self.end(permit.id, &flight, End::Cancelled, now);
        }
        self.version += 1;
    }

    /// The request of `permit` failed without an answer after it may have
    /// reached Discord (transport failure mid-request, timeout): what it held
    /// stays used as if it had been answered now.
    pub fn release(&mut self, permit: Permit, now: Instant) {
        self.tick(now);
        if let Some(flight) = self.in_flight.remove(&permit.id) {
            self.end(permit.id, &flight, End::Lost, now);
        }
        self.version += 1;
    }

    /// The request of `permit` was answered with `status`, `headers` and
    /// `body` at `now`: learn from it.
    ///
    /// Returns what a 429 asked for (the caller retries after waiting, or
    /// fails if that is longer than its `max_rate_limit`).
    pub fn update(
        &mut self,
        permit: Permit,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
        now: Instant,
    ) -> Option<RateLimited> {
        self.tick(now);
        self.version += 1;
        let parsed = RateLimitHeaders::parse(headers);
        let limited = parsed.limited(status, body);
        let Some(flight) = self.in_flight.remove(&permit.id) else {
            // Handed back earlier (expired): its slots are accounted for;
            // only a global hold still applies (the call itself waits).
            if let Some(limited) = limited.filter(|limited| limited.global) {
                self.hold_global(later(now, limited.retry_after));
            }
            return limited;
        };
        self.end(permit.id, &flight, End::Answered, now);
        self.learn(&flight, status, &parsed, now);
        if let Some(limited) = limited {
            self.on_429(&flight, &parsed, limited, now);
        }
        limited
    }

    /// What an answer's headers say about the bucket of `flight`'s route.
    fn learn(
        &mut self,
        flight: &InFlight,
        status: StatusCode,
        parsed: &RateLimitHeaders,
        now: Instant,
    ) {
        let Some((hash, remaining, reset_after)) = parsed.window() else {
            if status.is_success() {
                // No per-route limit; had it counted anywhere, Discord would
                // have said.
                self.routes
                    .insert(flight.route.clone(), RouteBucket::Unlimited);
            } else if let Role::Counted(bucket_key) = &flight.role
                && let Some(bucket) = self.buckets.get_mut(bucket_key)
            {
                // An error without the facts: it may have been counted.
                bucket.hold(now, Duration::ZERO, flight.sent_at);
            }
            return;
        };
        let hash: Arc<str> = Arc::from(hash);
        self.routes
            .insert(flight.route.clone(), RouteBucket::Known(hash.clone()));
        let facts = Facts {
            counted: status != StatusCode::TOO_MANY_REQUESTS,
            limit: parsed.limit,
            remaining,
            reset_after,
        };
        let target = BucketKey {
            hash,
            major: flight.major,
        };
        self.buckets
            .entry(target)
            .or_default()
            .learn(&facts, now, flight.sent_at);
    }

    /// Hold what a 429 says to hold.
    fn on_429(
        &mut self,
        flight: &InFlight,
        parsed: &RateLimitHeaders,
        limited: RateLimited,
        now: Instant,
    ) {
        let until = later(now, limited.retry_after);
        if limited.global {
            self.hold_global(until);
        } else {
            let hash = match (parsed.bucket.as_deref(), self.routes.get(&flight.route)) {
                (Some(hash), _) => Some(Arc::from(hash)),
                (None, Some(RouteBucket::Known(hash))) => Some(hash.clone()),
                (None, Some(RouteBucket::Unlimited) | None) => None,
            };
            match hash {
                Some(hash) => {
                    let key = BucketKey {
                        hash,
                        major: flight.major,
                    };
                    self.buckets.entry(key).or_default().block(until);
                }
                // A 429 for a route never seen with headers: learn it again
                // (one request at a time); the call itself waits.
                None => {
                    self.routes.remove(&flight.route);
                }
            }
        }
        tracing::debug!(
            route = %flight.route,
            retry_after = ?limited.retry_after,
            global = limited.global,
            scope = ?limited.scope,
            "rate limited (429)"
        );
    }

    fn hold_global(&mut self, until: Instant) {
        self.global_blocked_until = Some(
            self.global_blocked_until
                .map_or(until, |held| held.max(until)),
        );
    }
}
