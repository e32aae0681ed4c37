//! Property: no rate-limit header value or 429 body an upstream sends
//! (huge, negative, `NaN`, infinite, garbage) panics the limiter or a call,
//! every wait ends within a bound, and a fresh call still goes afterwards.

use std::time::Duration;

use http::Method;
use proptest::prelude::*;

use super::super::ratelimit::MAX_UPSTREAM_WAIT;
use super::super::*;
use super::{at, reply};

/// A number as text, from the plain to the absurd.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<f64>().prop_map(|n| n.to_string()),
        (0.0..100.0_f64).prop_map(|n| format!("{n:.3}")),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        prop_oneof![
            Just("1e19"),
            Just("1e308"),
            Just("1e400"),
            Just("NaN"),
            Just("nan"),
            Just("inf"),
            Just("-inf"),
            Just("-1"),
            Just("-0.0"),
            Just("0"),
            Just(""),
            Just("18446744073709551616"),
        ]
        .prop_map(str::to_owned),
        "[ -~]{0,12}",
    ]
}

#[derive(Clone, Debug)]
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

fn answer() -> impl Strategy<Value = Answer> {
    let names = prop_oneof![
        Just("x-ratelimit-bucket"),
        Just("x-ratelimit-limit"),
        Just("x-ratelimit-remaining"),
        Just("x-ratelimit-reset-after"),
        Just("x-ratelimit-reset"),
        Just("x-ratelimit-global"),
        Just("x-ratelimit-scope"),
        Just("retry-after"),
    ];
    let value = prop_oneof![
        number(),
        prop_oneof![
            Just("true"),
            Just("global"),
            Just("user"),
            Just("shared"),
            Just("b")
        ]
        .prop_map(str::to_owned),
    ];
    let body = prop_oneof![
        (number(), any::<bool>()).prop_map(|(n, global)| format!(
            r#"{{"message":"You are being rate limited.","retry_after":{n},"global":{global}}}"#
        )),
        number().prop_map(|n| format!(r#"{{"retry_after":"{n}","global":"yes"}}"#)),
        "[ -~]{0,24}",
    ];
    (
        prop_oneof![Just(200_u16), Just(429), Just(429), Just(500), Just(404)],
        prop::collection::vec((names, value), 0..8),
        body,
    )
        .prop_map(|(status, headers, body)| Answer {
            status,
            headers,
            body,
        })
}

#[derive(Clone, Debug)]
enum Op {
    Start(usize),
    Advance(u64),
    Answer(usize, Answer),
}

const PATHS: [&str; 3] = [
    "/channels/1/messages",
    "/channels/1/pins",
    "/guilds/2/roles",
];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..PATHS.len()).prop_map(Op::Start),
        1 => prop_oneof![0..2000_u64, Just(u64::from(u32::MAX))].prop_map(Op::Advance),
        3 => (any::<usize>(), answer()).prop_map(|(pick, answer)| Op::Answer(pick, answer)),
    ]
}

fn run(max_rate_limit: Option<Duration>, ops: &[Op]) -> Result<(), TestCaseError> {
    let config = RestConfig::builder()
        .token("t")
        .max_rate_limit(max_rate_limit)
        .max_retries(1)
        .build()
        .unwrap();
    let bound = max_rate_limit
        .unwrap_or(MAX_UPSTREAM_WAIT)
        .max(config.in_flight_timeout())
        + Duration::from_secs(2);
    let rest = Rest::new(config);
    let mut limiter = rest.rate_limiter();
    let mut now = 0_u64;
    let mut calls: Vec<(Call<serde_json::Value>, bool)> = Vec::new();
    for op in ops {
        match op {
            Op::Start(path) => {
                let route = Route::custom(Method::GET, PATHS[*path]).unwrap();
                calls.push((
                    rest.call(RestRequest::new(route, RequestBody::Empty)),
                    false,
                ));
            }
            Op::Advance(ms) => now += ms,
            Op::Answer(pick, answer) => {
                let sent: Vec<usize> = (0..calls.len()).filter(|i| calls[*i].1).collect();
                if let Some(&index) = sent.get(pick % sent.len().max(1)) {
                    let response = reply(answer.status, &answer.headers, &answer.body);
                    calls[index].0.on_response(at(now), response, &mut limiter);
                    calls[index].1 = false;
                }
            }
        }
        let mut index = 0;
        while index < calls.len() {
            let (call, in_flight) = &mut calls[index];
            if *in_flight {
                index += 1;
                continue;
            }
            match call.poll(at(now), &mut limiter) {
                Step::Send(_) => *in_flight = true,
                Step::Wait(wait) => {
                    let ahead = wait.until.saturating_duration_since(at(now));
                    prop_assert!(ahead <= bound, "{wait:?} is {ahead:?} ahead");
                    if let (Some(max), WaitReason::Bucket | WaitReason::Global) =
                        (max_rate_limit, wait.reason)
                    {
                        prop_assert!(ahead <= max, "{wait:?} beyond max_rate_limit");
                    }
                }
                Step::Done(_) => {
                    calls.swap_remove(index);
                    continue;
                }
                Step::InFlight => prop_assert!(false, "polled in flight"),
            }
            index += 1;
        }
    }
    // Not wedged: a route nothing was learned about goes at once.
    let fresh = Route::custom(Method::GET, "/webhooks/9/fresh-token").unwrap();
    let mut call = rest.call(RestRequest::<serde_json::Value>::new(
        fresh,
        RequestBody::Empty,
    ));
    prop_assert!(matches!(call.poll(at(now), &mut limiter), Step::Send(_)));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn any_upstream_answer_is_survived(
        max in prop_oneof![Just(None), Just(Some(Duration::from_secs(300)))],
        ops in prop::collection::vec(op(), 1..40),
    ) {
        run(max, &ops)?;
    }

    #[test]
    fn header_durations_are_clamped(text in number()) {
        let mut headers = http::HeaderMap::new();
        if let Ok(value) = http::HeaderValue::from_str(&text) {
            headers.insert("x-ratelimit-reset-after", value.clone());
            headers.insert("retry-after", value);
        }
        let parsed = RateLimitHeaders::parse(&headers);
        for duration in [parsed.reset_after, parsed.retry_after].into_iter().flatten() {
            prop_assert!(duration <= MAX_UPSTREAM_WAIT);
        }
    }
}
