//! Property: whatever the interleaving of calls, answers (in any order),
//! transport failures and clock advances, no bucket window of a model of
//! Discord's server ever receives more than `limit` requests, the global
//! limit is never exceeded, and every call finishes.
//!
//! One exception is inherent: a request whose answer is lost after Discord
//! counted it (an `Io` failure) tells the client nothing, so if it was the
//! probe of a window the next probe may be one too many. The property allows
//! each window one extra request per lost request counted in it; requests
//! refused before reaching Discord (`Connect`) and answered ones get no slack.
//!
//! The model server counts a request when it is sent (zero network latency
//! towards the server) and answers it later, in any order. A bucket's window
//! opens with the first request after the previous one ended and lasts its
//! period; answers carry `X-RateLimit-Remaining` and `-Reset-After` as
//! Discord's do.

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

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..ROUTES.len(), 1..=2_u64).prop_map(|(route, major)| Op::Start { route, major }),
        3 => (0..1500_u64).prop_map(Op::Advance),
        4 => any::<usize>().prop_map(Op::Deliver),
        1 => any::<usize>().prop_map(Op::Refuse),
        1 => any::<usize>().prop_map(Op::Lose),
    ]
}

#[derive(Clone, Copy, Debug)]
struct Window {
    start: u64,
    count: u32,
    lost: u32,
}

/// Which window counted a request: bucket, major, window start.
type Counted = Option<(usize, u64, u64)>;

struct Sim {
    rest: Rest,
    limiter: RateLimiter,
    now: u64,
    buckets: [(u32, u64); 2],
    calls: Vec<Option<Call<serde_json::Value>>>,
    in_flight: Vec<bool>,
    waits: Vec<Option<WaitUntil>>,
    pending: Vec<(usize, http::Response<Bytes>, Counted, u64)>,
    windows: HashMap<(usize, u64), Window>,
    closed: Vec<(usize, Window)>,
    global_sends: Vec<u64>,
    violations: Vec<String>,
}

impl Sim {
    fn new(buckets: [(u32, u64); 2]) -> Self {
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
            calls: Vec::new(),
            in_flight: Vec::new(),
            waits: Vec::new(),
            pending: Vec::new(),
            windows: HashMap::new(),
            closed: Vec::new(),
            global_sends: Vec::new(),
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

    /// Discord: count the request now, answer it later.
    fn serve(&mut self, request: &http::Request<RequestBody>) -> (http::Response<Bytes>, Counted) {
        let now = self.now;
        self.global_sends.push(now);
        let in_last_second = self
            .global_sends
            .iter()
            .filter(|sent| **sent + 1000 > now)
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
        let (limit, period) = self.buckets[bucket];
        let fresh = Window {
            start: now,
            count: 0,
            lost: 0,
        };
        let window = self.windows.entry((bucket, major)).or_insert(fresh);
        if now >= window.start + period {
            self.closed.push((limit as usize, *window));
            *window = fresh;
        }
        window.count += 1;
        let counted = Some((bucket, major, window.start));
        #[allow(clippy::cast_precision_loss)]
        let reset_after = (window.start + period - now) as f64 / 1000.0;
        let hash = format!("h{bucket}");
        if window.count > limit {
            let mut headers = limits(&hash, limit, 0, reset_after);
            headers.push(("x-ratelimit-scope", "user".to_owned()));
            let body = format!(r#"{{"retry_after":{reset_after},"global":false}}"#);
            return (reply(429, &headers, &body), counted);
        }
        (
            reply(
                200,
                &limits(&hash, limit, limit - window.count, reset_after),
                "{}",
            ),
            counted,
        )
    }

    /// Windows that saw more requests than allowed (plus one per lost request).
    fn check_windows(&mut self) {
        let open = self
            .windows
            .iter()
            .map(|((bucket, _), window)| (self.buckets[*bucket].0 as usize, *window));
        for (limit, window) in self.closed.iter().copied().chain(open) {
            if window.count as usize > limit + window.lost as usize {
                self.violations
                    .push(format!("{window:?} over its limit {limit}"));
            }
        }
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
                match call.poll(at(self.now), &mut self.limiter) {
                    Step::Send(request) => {
                        let (response, counted) = self.serve(&request);
                        self.pending.push((index, response, counted, self.now));
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

    fn answer(&mut self, pick: usize, failure: Option<TransportErrorKind>) {
        if self.pending.is_empty() {
            return;
        }
        let (index, response, counted, sent_at) = self.pending.remove(pick % self.pending.len());
        self.in_flight[index] = false;
        if failure == Some(TransportErrorKind::Connect)
            && let Some(at) = self.global_sends.iter().rposition(|sent| *sent == sent_at)
        {
            self.global_sends.remove(at);
        }
        let window = counted.and_then(|(bucket, major, start)| {
            self.windows
                .get_mut(&(bucket, major))
                .filter(|window| window.start == start)
        });
        match (failure, window) {
            (Some(TransportErrorKind::Connect), Some(window)) => window.count -= 1,
            (Some(TransportErrorKind::Io), Some(window)) => window.lost += 1,
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
            // sent at this very instant (the model counts on sending).
            Op::Refuse(pick) => self.answer(pick, Some(TransportErrorKind::Connect)),
            Op::Lose(pick) => self.answer(pick, Some(TransportErrorKind::Io)),
        }
        self.pump();
        self.check_windows();
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
        limit0 in 1..=3_u32,
        period0 in 1..=30_u64,
        limit1 in 1..=3_u32,
        period1 in 1..=30_u64,
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let mut sim = Sim::new([(limit0, period0 * 100), (limit1, period1 * 100)]);
        for op in &ops {
            sim.run(op);
            prop_assert!(sim.violations.is_empty(), "{:?} after {:?}", sim.violations, op);
        }
        sim.drain()?;
        sim.check_windows();
        prop_assert!(sim.violations.is_empty(), "{:?} while draining", sim.violations);
    }
}
