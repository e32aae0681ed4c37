#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::{CompositeKey, MetricKind};

use crate::rest::{
    Call, RateLimiter, RequestBody, Rest, RestConfig, RestRequest, Route, Step, WaitReason,
};

fn at(base: Instant, ms: u64) -> Instant {
    base + Duration::from_millis(ms)
}

fn get() -> RestRequest<serde_json::Value> {
    RestRequest::new(
        Route::custom(Method::GET, "/channels/1/messages").unwrap(),
        RequestBody::Empty,
    )
}

fn reply(status: u16, headers: &[(&str, &str)]) -> http::Response<Bytes> {
    let mut builder = http::Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Bytes::from_static(b"{}")).unwrap()
}

const WINDOW: [(&str, &str); 4] = [
    ("x-ratelimit-bucket", "b"),
    ("x-ratelimit-limit", "10"),
    ("x-ratelimit-remaining", "9"),
    ("x-ratelimit-reset-after", "1.0"),
];

fn send<T>(call: &mut Call<T>, now: Instant, limiter: &mut RateLimiter) {
    assert!(matches!(call.poll(now, limiter), Step::Send(_)));
}

fn wait<T>(call: &mut Call<T>, now: Instant, limiter: &mut RateLimiter) -> WaitReason {
    match call.poll(now, limiter) {
        Step::Wait(wait) => wait.reason,
        _ => panic!("expected a wait"),
    }
}

/// A shared-scope 429 on a known bucket: the call waits out `retry_after`, another
/// call on the bucket waits on the held bucket, both then succeed.
fn shared_429(base: Instant) {
    let rest = Rest::new(RestConfig::builder().token("a.b.c").build().unwrap());
    let mut limiter = rest.rate_limiter();
    let mut probe = rest.call(get());
    send(&mut probe, at(base, 0), &mut limiter);
    probe.on_response(at(base, 0), reply(200, &WINDOW), &mut limiter);
    let mut call = rest.call(get());
    send(&mut call, at(base, 0), &mut limiter);
    let mut limited = WINDOW.to_vec();
    limited.extend([("retry-after", "3"), ("x-ratelimit-scope", "shared")]);
    call.on_response(at(base, 0), reply(429, &limited), &mut limiter);
    assert_eq!(
        wait(&mut call, at(base, 0), &mut limiter),
        WaitReason::RetryAfter
    );
    let mut other = rest.call(get());
    assert_eq!(
        wait(&mut other, at(base, 1), &mut limiter),
        WaitReason::Bucket
    );
    send(&mut call, at(base, 3000), &mut limiter);
    call.on_response(at(base, 3001), reply(200, &WINDOW), &mut limiter);
    send(&mut other, at(base, 3001), &mut limiter);
    other.on_response(at(base, 3002), reply(200, &WINDOW), &mut limiter);
}

fn find<'a>(
    snapshot: &'a [(CompositeKey, DebugValue)],
    kind: MetricKind,
    name: &str,
    labels: &[(&str, &str)],
) -> &'a DebugValue {
    snapshot
        .iter()
        .find(|(key, _)| {
            let key_labels: Vec<(&str, &str)> =
                key.key().labels().map(|l| (l.key(), l.value())).collect();
            key.kind() == kind && key.key().name() == name && key_labels == labels
        })
        .map(|(_, value)| value)
        .unwrap_or_else(|| panic!("no {name} {labels:?} in {snapshot:#?}"))
}

fn snapshot(snapshotter: &Snapshotter) -> Vec<(CompositeKey, DebugValue)> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| (key, value))
        .collect()
}

#[test]
fn rest_429s_answers_and_bucket_waits_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    ::metrics::with_local_recorder(&recorder, || shared_429(Instant::now()));
    let snapshot = snapshot(&snapshotter);
    let route = "/channels/{channel_id}/messages";
    let counter =
        |name, labels: &[(&str, &str)]| match find(&snapshot, MetricKind::Counter, name, labels) {
            DebugValue::Counter(n) => *n,
            other => panic!("{name} is {other:?}"),
        };
    let waits = |reason| match find(
        &snapshot,
        MetricKind::Histogram,
        super::REST_WAIT,
        &[("reason", reason)],
    ) {
        DebugValue::Histogram(values) => values.iter().map(|v| v.0).collect::<Vec<f64>>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(counter(super::REST_RATE_LIMITED, &[("scope", "shared")]), 1);
    let answered = |status| {
        let labels = [("method", "GET"), ("route", route), ("status", status)];
        counter(super::REST_REQUESTS, &labels)
    };
    assert_eq!(answered("429"), 1);
    assert_eq!(answered("200"), 3);
    assert_eq!(waits("retry_after"), [3.0]);
    assert_eq!(waits("bucket"), [3.0]);
}

#[test]
fn open_connections_and_evictions_are_counted() {
    use crate::server::{Slots, Waiting};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let slots = ::metrics::with_local_recorder(&recorder, Slots::new);
    let a = slots.admit(2).unwrap().slot;
    let b = slots.admit(2).unwrap().slot;
    a.set_waiting(Waiting::Stalled(Instant::now()));
    let c = slots.admit(2).unwrap().slot;
    assert!(a.is_evicted());
    drop(a);
    drop(b);
    let snapshot = snapshot(&snapshotter);
    let open = find(&snapshot, MetricKind::Gauge, super::CONNECTIONS_OPEN, &[]);
    assert_eq!(*open, DebugValue::Gauge(1.0.into()));
    let evictions = find(
        &snapshot,
        MetricKind::Counter,
        super::CONNECTION_EVICTIONS,
        &[],
    );
    assert_eq!(*evictions, DebugValue::Counter(1));
    drop(c);
}
