//! Discord's rate limits, sans-IO: per-route buckets learned from response
//! headers, the global limit, and 429s.
//!
//! # The rules
//! - **Buckets.** Discord names each per-route limit with `X-RateLimit-Bucket`
//!   (a hash shared by routes with the same limit) and counts it separately
//!   for each top-level resource ([`Major`]). The limiter keys its state by
//!   `(hash, major)` and learns which hash a route uses from the first answer.
//! - **Windows are learned, never guessed.** A bucket's window is known only
//!   from an answer to a request sent *in* it: the first request of a window
//!   (the *probe*) goes alone, and its `X-RateLimit-Remaining` /
//!   `-Reset-After` open the window locally; the next `remaining` requests may
//!   then go concurrently. When the window's reset time passes, the next
//!   request probes again. Answers from other requests can only lower
//!   `remaining`. This is what keeps the limiter exact when answers arrive
//!   late or out of order, or a request lands in a window it was not counted
//!   in (see the property test).
//! - **Unknown routes.** Until a route's bucket is known, its requests go one
//!   at a time per top-level resource (they may share a bucket with any route
//!   of that resource), each holding one permit of every open window of that
//!   resource, handed back when the answer names another bucket. While one is
//!   in flight, no window of that resource is probed (it may be landing there
//!   uncounted); its answer opens the window it landed in if none was open.
//! - **Failures.** A request that never left ([`RateLimiter::cancel`], e.g.
//!   connection refused) hands its permits back. One that may have reached
//!   Discord ([`RateLimiter::release`]) keeps them used; if it was a probe,
//!   the next probe may be one request too many for that window, since
//!   nothing tells how many requests the lost one used up. This is the only
//!   case where the limiter can exceed a limit (by one per lost request),
//!   and the property test checks exactly that bound.
//! - **Global limit.** At most `global_limit` (default 50) authenticated,
//!   non-interaction requests in any one-second span; a global 429
//!   (`X-RateLimit-Global`, `X-RateLimit-Scope: global` or `"global": true`)
//!   holds them all for `retry_after`. Interaction and webhook-token routes
//!   are exempt.
//! - **429.** `retry_after` from the JSON body (precise), else the
//!   `Retry-After` header; a route 429 (`user` or `shared` scope) holds the
//!   bucket that long.
//! - **Liveness.** A request that is never answered (a driver that dropped
//!   its call without [`RateLimiter::release`]) stops holding others back
//!   after `in_flight_timeout`.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, StatusCode};
use serde::Deserialize;

use super::config::RestConfig;
use super::route::{Major, RateLimitKey, RouteKey};

const ONE_SECOND: Duration = Duration::from_secs(1);

/// Acquires between sweeps of finished buckets.
const SWEEP_EVERY: u64 = 512;

/// Wait used for a 429 that says nothing about how long.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

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
    /// How long to wait before sending again.
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
    /// `X-RateLimit-Reset-After`.
    pub reset_after: Option<Duration>,
    /// `X-RateLimit-Global: true`.
    pub global: bool,
    /// `X-RateLimit-Scope`.
    pub scope: Option<Scope>,
    /// `Retry-After`.
    pub retry_after: Option<Duration>,
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
}

fn seconds(text: &str) -> Option<Duration> {
    text.parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
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

    /// The bucket facts, when all three needed are there.
    fn window(&self) -> Option<(&str, u32, Duration)> {
        match (&self.bucket, self.remaining, self.reset_after) {
            (Some(bucket), Some(remaining), Some(reset_after)) => {
                Some((bucket, remaining, reset_after))
            }
            _ => None,
        }
    }
}

/// The JSON body of a 429.
#[derive(Deserialize)]
struct RateLimitBody {
    retry_after: Option<f64>,
    #[serde(default)]
    global: bool,
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

/// One bucket for one top-level resource.
#[derive(Debug)]
struct Bucket {
    /// `X-RateLimit-Limit`, last seen.
    limit: u32,
    /// Requests that may still be sent in the current window.
    remaining: u32,
    /// When the current window ends; `None` until a probe's answer says.
    reset_at: Option<Instant>,
    /// Identifies the current window; unique across the limiter.
    generation: u64,
    /// The probe in flight for this window, if any.
    probe: Option<u64>,
    /// Requests that landed here uncounted while the probe was in flight.
    pending_strays: u32,
    /// Held after a 429 until this instant.
    blocked_until: Option<Instant>,
}

impl Bucket {
    fn new(generation: u64) -> Self {
        Self {
            limit: 0,
            remaining: 0,
            reset_at: None,
            generation,
            probe: None,
            pending_strays: 0,
            blocked_until: None,
        }
    }

    fn established(&self) -> bool {
        self.reset_at.is_some()
    }

    /// A request landed here without being counted.
    fn stray(&mut self, hdr_remaining: u32) {
        if self.established() {
            self.remaining = self.remaining.saturating_sub(1).min(hdr_remaining);
        } else {
            self.pending_strays = self.pending_strays.saturating_add(1);
        }
    }

    fn lower(&mut self, hdr_remaining: u32) {
        self.remaining = self.remaining.min(hdr_remaining);
    }

    /// Whether the bucket holds nothing a fresh bucket would not.
    fn is_idle(&self, now: Instant) -> bool {
        self.probe.is_none()
            && self.pending_strays == 0
            && self.blocked_until.is_none_or(|until| until <= now)
            && self.reset_at.is_none_or(|reset| reset <= now)
    }
}

/// What an in-flight request was counted as.
#[derive(Debug)]
enum Role {
    /// Its route has no per-route limit.
    Unlimited,
    /// Counted in `bucket`'s window `generation`.
    Counted { bucket: BucketKey, generation: u64 },
    /// The probe of `bucket`'s window `generation`.
    Probe { bucket: BucketKey, generation: u64 },
    /// A request on a route whose bucket is unknown, holding one permit of
    /// each listed window.
    Discovery { reserved: Vec<(BucketKey, u64)> },
}

#[derive(Debug)]
struct InFlight {
    route: RouteKey,
    major: Major,
    global: bool,
    role: Role,
    sent_at: Instant,
}

/// What `acquire` decided for the route part.
enum Plan {
    Unlimited,
    Counted(BucketKey, u64),
    Probe(BucketKey, u64),
    Discovery(Vec<BucketKey>),
}

/// The rate-limit state shared by every call of a client: `&mut self`
/// methods, to be held in the adapter's mutex.
///
/// See the [module docs](self) for the rules.
#[derive(Debug)]
pub struct RateLimiter {
    global_limit: Option<NonZeroU32>,
    global_sends: VecDeque<Instant>,
    global_blocked_until: Option<Instant>,
    routes: HashMap<RouteKey, RouteBucket>,
    buckets: HashMap<BucketKey, Bucket>,
    discovering: HashMap<Major, u64>,
    in_flight: HashMap<u64, InFlight>,
    in_flight_timeout: Duration,
    next_id: u64,
    next_generation: u64,
    version: u64,
    acquires: u64,
}

impl RateLimiter {
    /// A limiter with nothing learned yet.
    #[must_use]
    pub fn new(global_limit: Option<NonZeroU32>, in_flight_timeout: Duration) -> Self {
        Self {
            global_limit,
            global_sends: VecDeque::new(),
            global_blocked_until: None,
            routes: HashMap::new(),
            buckets: HashMap::new(),
            discovering: HashMap::new(),
            in_flight: HashMap::new(),
            in_flight_timeout,
            next_id: 0,
            next_generation: 0,
            version: 0,
            acquires: 0,
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

    /// Requests still allowed in the current window of `key`'s bucket, when
    /// that window is known.
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
        bucket.established().then_some(bucket.remaining)
    }

    /// Requests sent and not yet handed back.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    fn generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    /// Ask to send a request for `key` at `now`.
    ///
    /// # Errors
    /// [`WaitUntil`] when it may not be sent yet: ask again then (or, for
    /// [`WaitReason::Pending`], when [`version`](Self::version) changes).
    pub fn acquire(&mut self, key: &RateLimitKey, now: Instant) -> Result<Permit, WaitUntil> {
        self.expire(now);
        self.acquires += 1;
        if self.acquires.is_multiple_of(SWEEP_EVERY) {
            let discovering = &self.discovering;
            self.buckets
                .retain(|key, bucket| discovering.contains_key(&key.major) || !bucket.is_idle(now));
        }

        if key.global {
            self.check_global(now)?;
        }
        let plan = self.plan(key, now)?;

        let id = self.next_id;
        self.next_id += 1;
        if key.global && self.global_limit.is_some() {
            self.global_sends.push_back(now);
        }
        let role = match plan {
            Plan::Unlimited => Role::Unlimited,
            Plan::Counted(bucket_key, generation) => {
                if let Some(bucket) = self.buckets.get_mut(&bucket_key) {
                    bucket.remaining = bucket.remaining.saturating_sub(1);
                }
                Role::Counted {
                    bucket: bucket_key,
                    generation,
                }
            }
            Plan::Probe(bucket_key, generation) => {
                if let Some(bucket) = self.buckets.get_mut(&bucket_key) {
                    bucket.probe = Some(id);
                }
                Role::Probe {
                    bucket: bucket_key,
                    generation,
                }
            }
            Plan::Discovery(keys) => {
                let mut reserved = Vec::with_capacity(keys.len());
                for bucket_key in keys {
                    if let Some(bucket) = self.buckets.get_mut(&bucket_key) {
                        bucket.remaining = bucket.remaining.saturating_sub(1);
                        reserved.push((bucket_key, bucket.generation));
                    }
                }
                self.discovering.insert(key.major, id);
                Role::Discovery { reserved }
            }
        };
        tracing::trace!(route = %key.route, major = ?key.major, ?role, "rate limit permit");
        self.in_flight.insert(
            id,
            InFlight {
                route: key.route.clone(),
                major: key.major,
                global: key.global && self.global_limit.is_some(),
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
        while self
            .global_sends
            .front()
            .is_some_and(|sent| *sent + ONE_SECOND <= now)
        {
            self.global_sends.pop_front();
        }
        match self.global_sends.front() {
            Some(oldest) if self.global_sends.len() >= limit.get() as usize => Err(WaitUntil {
                until: *oldest + ONE_SECOND,
                reason: WaitReason::Global,
            }),
            Some(_) | None => Ok(()),
        }
    }

    /// When the answer to in-flight request `id` is overdue.
    fn pending(&self, id: u64, now: Instant) -> WaitUntil {
        let until = self
            .in_flight
            .get(&id)
            .map_or(now, |flight| flight.sent_at + self.in_flight_timeout);
        WaitUntil {
            until,
            reason: WaitReason::Pending,
        }
    }

    /// Start a new window for a bucket whose reset time has passed.
    fn roll(&mut self, bucket_key: &BucketKey, now: Instant) {
        let expired = self
            .buckets
            .get(bucket_key)
            .and_then(|bucket| bucket.reset_at)
            .is_some_and(|reset| reset <= now);
        if expired {
            let generation = self.generation();
            if let Some(bucket) = self.buckets.get_mut(bucket_key) {
                bucket.generation = generation;
                bucket.reset_at = None;
                bucket.remaining = 0;
                bucket.pending_strays = 0;
            }
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
                if !self.buckets.contains_key(&bucket_key) {
                    let generation = self.generation();
                    self.buckets
                        .insert(bucket_key.clone(), Bucket::new(generation));
                }
                self.roll(&bucket_key, now);
                let Some(bucket) = self.buckets.get(&bucket_key) else {
                    return Ok(Plan::Unlimited);
                };
                if let Some(until) = bucket.blocked_until.filter(|until| *until > now) {
                    return Err(WaitUntil {
                        until,
                        reason: WaitReason::Bucket,
                    });
                }
                match (bucket.probe, bucket.reset_at) {
                    (Some(probe), _) => Err(self.pending(probe, now)),
                    // A request of an unknown route may be landing in this
                    // window uncounted: probing now could be one too many.
                    (None, None) if self.discovering.contains_key(&key.major) => {
                        let id = self
                            .discovering
                            .get(&key.major)
                            .copied()
                            .unwrap_or_default();
                        Err(self.pending(id, now))
                    }
                    (None, None) => Ok(Plan::Probe(bucket_key.clone(), bucket.generation)),
                    (None, Some(_)) if bucket.remaining > 0 => {
                        Ok(Plan::Counted(bucket_key.clone(), bucket.generation))
                    }
                    (None, Some(reset)) => Err(WaitUntil {
                        until: reset,
                        reason: WaitReason::Bucket,
                    }),
                }
            }
            None => {
                if let Some(&id) = self.discovering.get(&key.major) {
                    return Err(self.pending(id, now));
                }
                let same_major: Vec<BucketKey> = self
                    .buckets
                    .keys()
                    .filter(|bucket_key| bucket_key.major == key.major)
                    .cloned()
                    .collect();
                let mut reserve = Vec::new();
                for bucket_key in same_major {
                    self.roll(&bucket_key, now);
                    let Some(bucket) = self.buckets.get(&bucket_key) else {
                        continue;
                    };
                    if let Some(until) = bucket.blocked_until.filter(|until| *until > now) {
                        return Err(WaitUntil {
                            until,
                            reason: WaitReason::Bucket,
                        });
                    }
                    match (bucket.probe, bucket.reset_at) {
                        (Some(probe), _) => return Err(self.pending(probe, now)),
                        // A window not yet probed: its probe will go later and
                        // count this request if it lands there.
                        (None, None) => {}
                        (None, Some(_)) if bucket.remaining > 0 => reserve.push(bucket_key),
                        (None, Some(reset)) => {
                            return Err(WaitUntil {
                                until: reset,
                                reason: WaitReason::Bucket,
                            });
                        }
                    }
                }
                Ok(Plan::Discovery(reserve))
            }
        }
    }

    /// Hand back requests whose answers are overdue (their calls were dropped).
    fn expire(&mut self, now: Instant) {
        let timeout = self.in_flight_timeout;
        let overdue: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, flight)| flight.sent_at + timeout <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in overdue {
            if let Some(flight) = self.in_flight.remove(&id) {
                tracing::debug!(route = %flight.route, "rate limiter: request unanswered, no longer waiting for it");
                self.forget(id, flight);
            }
        }
    }

    /// A request that will not be answered: what it held is not handed back
    /// (it may have reached Discord), but nothing waits for it any more.
    fn forget(&mut self, id: u64, flight: InFlight) {
        match flight.role {
            Role::Probe { bucket, .. } => {
                if let Some(bucket) = self.buckets.get_mut(&bucket)
                    && bucket.probe == Some(id)
                {
                    bucket.probe = None;
                }
            }
            Role::Discovery { .. } => {
                if self.discovering.get(&flight.major) == Some(&id) {
                    self.discovering.remove(&flight.major);
                }
            }
            Role::Unlimited | Role::Counted { .. } => {}
        }
    }

    /// The request of `permit` was never sent (e.g. the connection was
    /// refused): what it held is handed back.
    pub fn cancel(&mut self, permit: Permit, now: Instant) {
        let _ = now;
        if let Some(flight) = self.in_flight.remove(&permit.id) {
            if flight.global
                && let Some(at) = self
                    .global_sends
                    .iter()
                    .rposition(|sent| *sent == flight.sent_at)
            {
                self.global_sends.remove(at);
            }
            let refunds: Vec<(BucketKey, u64)> = match &flight.role {
                Role::Counted { bucket, generation } => vec![(bucket.clone(), *generation)],
                Role::Discovery { reserved } => reserved.clone(),
                Role::Unlimited | Role::Probe { .. } => Vec::new(),
            };
            for (bucket_key, generation) in refunds {
                if let Some(state) = self.buckets.get_mut(&bucket_key)
                    && state.generation == generation
                {
                    state.remaining = state.remaining.saturating_add(1);
                }
            }
            self.forget(permit.id, flight);
        }
        self.version += 1;
    }

    /// The request of `permit` failed without an answer after it may have
    /// reached Discord (transport failure mid-request, timeout): nothing it
    /// held is handed back.
    pub fn release(&mut self, permit: Permit, now: Instant) {
        let _ = now;
        if let Some(flight) = self.in_flight.remove(&permit.id) {
            self.forget(permit.id, flight);
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
        self.version += 1;
        let parsed = RateLimitHeaders::parse(headers);
        let flight = self.in_flight.remove(&permit.id);
        let major = flight.as_ref().map(|flight| flight.major);

        // What the 429 says, applied before the bucket facts.
        let limited = (status == StatusCode::TOO_MANY_REQUESTS).then(|| {
            let body: Option<RateLimitBody> = serde_json::from_slice(body).ok();
            let retry_after = body
                .as_ref()
                .and_then(|body| body.retry_after)
                .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
                .or(parsed.retry_after)
                .or(parsed.reset_after)
                .unwrap_or(DEFAULT_RETRY_AFTER);
            let global = parsed.global
                || parsed.scope == Some(Scope::Global)
                || body.as_ref().is_some_and(|body| body.global);
            RateLimited {
                retry_after,
                global,
                scope: parsed.scope,
            }
        });

        let Some(flight) = flight else {
            // Handed back earlier (expired): its role is forgotten; only a
            // global hold still applies (the call itself waits `retry_after`).
            if let Some(limited) = limited.filter(|limited| limited.global) {
                self.hold_global(now + limited.retry_after);
            }
            return limited;
        };
        let major = major.unwrap_or(Major::None);
        let id = permit.id;

        match parsed.window() {
            Some((hash, hdr_remaining, reset_after)) => {
                let hash: Arc<str> = Arc::from(hash);
                let target = BucketKey {
                    hash: hash.clone(),
                    major,
                };
                self.routes
                    .insert(flight.route.clone(), RouteBucket::Known(hash));
                match flight.role {
                    Role::Probe { bucket, generation } if bucket == target => {
                        if let Some(state) = self.buckets.get_mut(&bucket) {
                            if state.generation == generation && state.probe == Some(id) {
                                state.probe = None;
                                state.remaining =
                                    hdr_remaining.saturating_sub(state.pending_strays);
                                state.pending_strays = 0;
                                state.reset_at = Some(now + reset_after);
                                state.limit = parsed.limit.unwrap_or(state.limit);
                            } else {
                                state.lower(hdr_remaining);
                            }
                        }
                    }
                    Role::Probe { bucket, .. } => {
                        // The route moved to another bucket.
                        if let Some(state) = self.buckets.get_mut(&bucket)
                            && state.probe == Some(id)
                        {
                            state.probe = None;
                        }
                        if let Some(state) = self.buckets.get_mut(&target) {
                            state.stray(hdr_remaining);
                        }
                    }
                    Role::Counted { bucket, .. } if bucket == target => {
                        if let Some(state) = self.buckets.get_mut(&bucket) {
                            state.lower(hdr_remaining);
                        }
                    }
                    Role::Counted { .. } | Role::Unlimited => {
                        if let Some(state) = self.buckets.get_mut(&target) {
                            state.stray(hdr_remaining);
                        }
                    }
                    Role::Discovery { reserved } => {
                        let mut counted = false;
                        for (bucket_key, generation) in reserved {
                            let Some(state) = self.buckets.get_mut(&bucket_key) else {
                                continue;
                            };
                            if state.generation != generation {
                                counted |= bucket_key == target;
                                continue;
                            }
                            if bucket_key == target {
                                counted = true;
                                state.lower(hdr_remaining);
                            } else {
                                // It landed elsewhere: the permit was not used.
                                state.remaining = state.remaining.saturating_add(1);
                            }
                        }
                        if !counted {
                            match self.buckets.get_mut(&target) {
                                // A window nobody probed (probes wait for
                                // discoveries of their major): this answer is
                                // the only request sent in it, so it opens it.
                                Some(state) if state.probe.is_none() && !state.established() => {
                                    state.remaining =
                                        hdr_remaining.saturating_sub(state.pending_strays);
                                    state.pending_strays = 0;
                                    state.reset_at = Some(now + reset_after);
                                    state.limit = parsed.limit.unwrap_or(state.limit);
                                }
                                Some(state) => state.lower(hdr_remaining),
                                // Absent since before it was sent (buckets of
                                // a major being discovered are not swept), so
                                // nothing else was sent there meanwhile: the
                                // answer opens the window.
                                None => {
                                    let generation = self.generation();
                                    let mut state = Bucket::new(generation);
                                    state.remaining = hdr_remaining;
                                    state.reset_at = Some(now + reset_after);
                                    state.limit = parsed.limit.unwrap_or(hdr_remaining);
                                    self.buckets.insert(target.clone(), state);
                                }
                            }
                        }
                        if self.discovering.get(&major) == Some(&id) {
                            self.discovering.remove(&major);
                        }
                    }
                }
            }
            None => {
                // No bucket facts: a route without a per-route limit when the
                // answer is a success, otherwise nothing learned.
                let unlimited = status.is_success();
                if unlimited {
                    self.routes
                        .insert(flight.route.clone(), RouteBucket::Unlimited);
                }
                match flight.role {
                    Role::Discovery { reserved } => {
                        if unlimited {
                            for (bucket_key, generation) in reserved {
                                if let Some(state) = self.buckets.get_mut(&bucket_key)
                                    && state.generation == generation
                                {
                                    state.remaining = state.remaining.saturating_add(1);
                                }
                            }
                        }
                        if self.discovering.get(&major) == Some(&id) {
                            self.discovering.remove(&major);
                        }
                    }
                    Role::Probe { bucket, .. } => {
                        if let Some(state) = self.buckets.get_mut(&bucket)
                            && state.probe == Some(id)
                        {
                            state.probe = None;
                        }
                    }
                    Role::Counted { .. } | Role::Unlimited => {}
                }
            }
        }

        if let Some(limited) = limited {
            if limited.global {
                self.hold_global(now + limited.retry_after);
            } else {
                let bucket_key = match (parsed.bucket.as_deref(), self.routes.get(&flight.route)) {
                    (Some(hash), _) => Some(BucketKey {
                        hash: Arc::from(hash),
                        major,
                    }),
                    (None, Some(RouteBucket::Known(hash))) => Some(BucketKey {
                        hash: hash.clone(),
                        major,
                    }),
                    (None, Some(RouteBucket::Unlimited) | None) => None,
                };
                let until = now + limited.retry_after;
                match bucket_key {
                    Some(bucket_key) => {
                        if !self.buckets.contains_key(&bucket_key) {
                            let generation = self.generation();
                            self.buckets
                                .insert(bucket_key.clone(), Bucket::new(generation));
                        }
                        if let Some(state) = self.buckets.get_mut(&bucket_key) {
                            state.remaining = 0;
                            state.blocked_until =
                                Some(state.blocked_until.map_or(until, |held| held.max(until)));
                        }
                    }
                    // A 429 for a route never seen with headers: hold the
                    // route until then by treating it as unknown again.
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
        limited
    }

    fn hold_global(&mut self, until: Instant) {
        self.global_blocked_until = Some(
            self.global_blocked_until
                .map_or(until, |held| held.max(until)),
        );
    }
}
