//! Property: whatever the interleaving of calls, answers (in any order),
//! transport failures and clock advances, a model of Discord's server never
//! has to refuse a request for a bucket (sliding or fixed windows), never
//! sees more than the global limit in one second, and every call finishes.
//!
//! The model counts a request when it *arrives*: either when it is sent, or
//! (the other extreme of latency) only when it is answered; the limiter is
//! told neither. Two exceptions are inherent, and excuse a refusal within two
//! periods after them: a request whose answer is lost after Discord counted
//! it (an `Io` failure) tells the client nothing about its bucket, and a
//! request of a route the client has not learned yet may land in an
//! exhausted bucket (buckets of other routes never hold it back).
//!
//! Answers carry `X-RateLimit-Limit`, `-Remaining` and `-Reset-After` as
//! Discord's do: for a sliding bucket, the time until its oldest counted
//! request leaves the window; for a fixed one, until the window ends.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use proptest::prelude::*;

use super::super::*;
use super::{at, limits, reply};

/// Route suffix under `/channels/{major}/` and its bucket (`None`: no limit).
const ROUTES: [(&str, Option<usize>); 4] =
    [("a", Some(0)), ("b", Some(0)), ("c", Some(1)), ("d", None)];
const GLOBAL: u32 = 4;

#[derive(Clone, Debug)]
enum Op {
    Start {
        route: usize,
        major: u64,
    },
    Advance(u64),
    Deliver(usize),
    /// Connection refused: Discord never saw it.
    Refuse(usize),
    /// Answer lost after Discord counted it.
    Lose(usize),
}

/// A bucket: limit, period (ms), kind.
fn bucket() -> impl Strategy<Value = (u32, u64, Kind)> {
    (
        1..=3_u32,
        (1..=30_u64).prop_map(|tenths| tenths * 100),
        prop_oneof![Just(Kind::Sliding), Just(Kind::Fixed)],
    )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..ROUTES.len(), 1..=2_u64).prop_map(|(route, major)| Op::Start { route, major }),
        3 => (0..1500_u64).prop_map(Op::Advance),
        4 => any::<usize>().prop_map(Op::Deliver),
        1 => any::<usize>().prop_map(Op::Refuse),
        1 => any::<usize>().prop_map(Op::Lose),
    ]
}

/// A bucket's kind of window.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Allows a request while fewer than `limit` accepted ones arrived in the
    /// last `period`.
    Sliding,
    /// The first request opens a window of `period`; all of it resets then.
    Fixed,
}

/// One bucket of one major, as Discord keeps it.
#[derive(Debug, Default)]
struct ServerBucket {
    /// Accepted arrivals: time, and whether the client is excused for what
    /// follows (a request of a route it had not learned, or a lost answer).
    accepted: Vec<(u64, bool)>,
    /// The fixed window's start.
    window_start: Option<u64>,
}

/// An answer Discord made, and the bucket (index, major id) that counted it.
type Served = (http::Response<Bytes>, Option<(usize, u64)>);

/// A request the model has not answered (or, arriving late, not even seen).
struct Pending {
    call: usize,
    request: http::Request<RequestBody>,
    excused: bool,
    /// When it was sent.
    sent: u64,
    /// Its answer, when Discord counted it at sending.
    served: Option<Served>,
}

struct Sim {
    rest: Rest,
    limiter: RateLimiter,
    now: u64,
    buckets: [(u32, u64, Kind); 2],
    /// Whether requests arrive when answered (else when sent).
    late: bool,
    calls: Vec<Option<Call<serde_json::Value>>>,
    in_flight: Vec<bool>,
    waits: Vec<Option<WaitUntil>>,
    pending: Vec<Pending>,
    server: HashMap<(usize, u64), ServerBucket>,
    global_arrivals: Vec<u64>,
    violations: Vec<String>,
}

impl Sim {
    fn new(buckets: [(u32, u64, Kind); 2], late: bool) -> Self {
        let config = RestConfig::builder()
            .token("t")
            .global_limit(NonZeroU32::new(GLOBAL))
            .in_flight_timeout(Duration::from_secs(3600))
            .build()
            .unwrap();
        let rest = Rest::new(config);
        let limiter = rest.rate_limiter();
        Self {
            rest,
            limiter,
            now: 0,
            buckets,
            late,
            calls: Vec::new(),
            in_flight: Vec::new(),
            waits: Vec::new(),
            pending: Vec::new(),
            server: HashMap::new(),
            global_arrivals: Vec::new(),
            violations: Vec::new(),
        }
    }

    fn start(&mut self, route: usize, major: u64) {
        let path = format!("/channels/{major}/{}", ROUTES[route].0);
        let request = RestRequest::new(
            Route::custom(Method::GET, path).unwrap(),
            RequestBody::Empty,
        );
        self.calls.push(Some(self.rest.call(request)));
        self.in_flight.push(false);
        self.waits.push(None);
    }

    /// Discord: a request arrives now; the answer, and which bucket counted it.
    fn serve(
        &mut self,
        request: &http::Request<RequestBody>,
        excused: bool,
    ) -> (http::Response<Bytes>, Option<(usize, u64)>) {
        let now = self.now;
        self.global_arrivals.push(now);
        let in_last_second = self
            .global_arrivals
            .iter()
            .filter(|arrived| **arrived + 1000 > now)
            .count();
        if in_last_second > GLOBAL as usize {
            self.violations.push(format!(
                "{in_last_second} requests in the second before {now} ms"
            ));
        }
        let mut segments = request.uri().path().rsplit('/');
        let suffix = segments.next().unwrap_or_default();
        let major: u64 = segments.next().and_then(|m| m.parse().ok()).unwrap();
        let (_, bucket) = ROUTES
            .iter()
            .find(|(name, _)| *name == suffix)
            .copied()
            .unwrap();
        let Some(bucket) = bucket else {
            return (reply(200, &[], "{}"), None);
        };
        let (limit, period, kind) = self.buckets[bucket];
        let state = self.server.entry((bucket, major)).or_default();
        // The arrivals still counted, and when the next slot frees.
        let (counted, frees) = match kind {
            Kind::Sliding => {
                let live: Vec<u64> = state
                    .accepted
                    .iter()
                    .map(|(at, _)| *at)
                    .filter(|at| at + period > now)
                    .collect();
                let oldest = live.first().copied().unwrap_or(now);
                (live.len() as u32, oldest + period)
            }
            Kind::Fixed => {
                let start = state
                    .window_start
                    .filter(|start| start + period > now)
                    .unwrap_or(now);
                state.window_start = Some(start);
                let live = state.accepted.iter().filter(|(at, _)| *at >= start).count();
                (live as u32, start + period)
            }
        };
        let hash = format!("h{bucket}");
        if counted >= limit {
            let excuse = excused
                || state
                    .accepted
                    .iter()
                    .any(|(at, excused)| *excused && at + 2 * period > now);
            if !excuse {
                self.violations.push(format!(
                    "bucket {bucket} of {major} ({kind:?}, {limit} per {period} ms) refused {} at {now} ms; accepted {:?}",
                    request.uri().path(),
                    state.accepted
                ));
            }
            #[allow(clippy::cast_precision_loss)]
            let retry_after = (frees - now) as f64 / 1000.0;
            let mut headers = limits(&hash, limit, 0, retry_after);
            headers.push(("x-ratelimit-scope", "user".to_owned()));
            let body = format!(r#"{{"retry_after":{retry_after},"global":false}}"#);
            return (reply(429, &headers, &body), None);
        }
        state.accepted.push((now, excused));
        let frees = match kind {
            Kind::Sliding if counted == 0 => now + period,
            Kind::Sliding | Kind::Fixed => frees,
        };
        #[allow(clippy::cast_precision_loss)]
        let reset_after = (frees - now) as f64 / 1000.0;
        (
            reply(
                200,
                &limits(&hash, limit, limit - counted - 1, reset_after),
                "{}",
            ),
            Some((bucket, major)),
        )
    }

    /// Poll every call that is not waiting for an answer, as an eager driver.
    fn pump(&mut self) {
        loop {
            let mut progress = false;
            for index in 0..self.calls.len() {
                if self.in_flight[index] {
                    continue;
                }
                let Some(call) = self.calls[index].as_mut() else {
                    continue;
                };
                let route = call.request().route().key().clone();
                let excused = self.limiter.learned_bucket(&route).is_none();
                match call.poll(at(self.now), &mut self.limiter) {
                    Step::Send(request) => {
                        let served = (!self.late).then(|| self.serve(&request, excused));
                        self.pending.push(Pending {
                            call: index,
                            request,
                            excused,
                            sent: self.now,
                            served,
                        });
                        self.in_flight[index] = true;
                        progress = true;
                    }
                    Step::Wait(wait) => self.waits[index] = Some(wait),
                    Step::Done(_) => {
                        self.calls[index] = None;
                        progress = true;
                    }
                    Step::InFlight => panic!("polled while in flight"),
                }
            }
            if !progress {
                break;
            }
        }
    }

    /// Undo the counting of a request that never reached Discord.
    fn uncount(&mut self, counted: Option<(usize, u64)>, arrived: u64) {
        if let Some(at) = self.global_arrivals.iter().rposition(|a| *a == arrived) {
            self.global_arrivals.remove(at);
        }
        if let Some(state) = counted.and_then(|key| self.server.get_mut(&key))
            && let Some(at) = state.accepted.iter().rposition(|(a, _)| *a == arrived)
        {
            state.accepted.remove(at);
        }
    }

    /// Excuse what follows a request whose answer was lost.
    fn excuse(&mut self, counted: Option<(usize, u64)>, arrived: u64) {
        if let Some(state) = counted.and_then(|key| self.server.get_mut(&key))
            && let Some(entry) = state.accepted.iter_mut().rev().find(|(a, _)| *a == arrived)
        {
            entry.1 = true;
        }
    }

    fn answer(&mut self, pick: usize, failure: Option<TransportErrorKind>) {
        if self.pending.is_empty() {
            return;
        }
        let pending = self.pending.remove(pick % self.pending.len());
        let index = pending.call;
        self.in_flight[index] = false;
        // Early arrivals were counted at sending; late ones arrive now,
        // unless refused.
        let connect = failure == Some(TransportErrorKind::Connect);
        let (response, counted, arrived) = match pending.served {
            Some((response, counted)) => (response, counted, Some(pending.sent)),
            None if connect => (reply(200, &[], "{}"), None, None),
            None => {
                let (response, counted) = self.serve(&pending.request, pending.excused);
                (response, counted, Some(self.now))
            }
        };
        match (failure, arrived) {
            (Some(TransportErrorKind::Connect), Some(arrived)) => self.uncount(counted, arrived),
            (Some(TransportErrorKind::Io), Some(arrived)) => self.excuse(counted, arrived),
            _ => {}
        }
        let now = at(self.now);
        if let Some(call) = self.calls[index].as_mut() {
            match failure {
                Some(kind) => call.on_transport_error(
                    now,
                    TransportError::new(kind, "failed"),
                    &mut self.limiter,
                ),
                None => call.on_response(now, response, &mut self.limiter),
            }
        }
    }

    fn run(&mut self, op: &Op) {
        match *op {
            Op::Start { route, major } => self.start(route, major),
            Op::Advance(ms) => self.now += ms,
            Op::Deliver(pick) => self.answer(pick, None),
            // A refused request never reached Discord: only possible for one
            // sent at this very instant when Discord counts on sending.
            Op::Refuse(pick) => self.answer(pick, Some(TransportErrorKind::Connect)),
            Op::Lose(pick) => self.answer(pick, Some(TransportErrorKind::Io)),
        }
        self.pump();
    }

    /// Answer everything and let time pass until every call is done.
    fn drain(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..100_000 {
            self.pump();
            if self.calls.iter().all(Option::is_none) {
                return Ok(());
            }
            if !self.pending.is_empty() {
                self.answer(0, None);
                continue;
            }
            let next = (0..self.calls.len())
                .filter(|index| self.calls[*index].is_some())
                .filter_map(|index| self.waits[index])
                .min_by_key(|wait| wait.until)
                .ok_or_else(|| TestCaseError::fail("calls left but none waiting"))?;
            prop_assert_ne!(
                next.reason,
                WaitReason::Pending,
                "waiting for an answer that will never come"
            );
            let until = next.until.duration_since(at(0)).as_millis();
            self.now = self.now.max(u64::try_from(until).unwrap_or(u64::MAX));
            // Sub-millisecond reset times round up to the next tick.
            if next.until > at(self.now) {
                self.now += 1;
            }
        }
        Err(TestCaseError::fail("calls did not finish"))
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn never_more_than_discord_allows(
        bucket0 in bucket(),
        bucket1 in bucket(),
        late in any::<bool>(),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let mut sim = Sim::new([bucket0, bucket1], late);
        for op in &ops {
            sim.run(op);
            prop_assert!(sim.violations.is_empty(), "{:?} after {:?}", sim.violations, op);
        }
        sim.drain()?;
        prop_assert!(sim.violations.is_empty(), "{:?} while draining", sim.violations);
    }
}
